//! The switch's configuration and runtime state, with one method per request.
//!
//! Every change is validated, carried out, and saved to the database before the
//! reply; if any step fails nothing of it remains.

use super::netlink::{LinkEvent, Netlink, NetlinkError, VethSpec};
use super::netns;
use crate::config::{BridgeConfig, Db, NsPort};
use crate::datapath::{now_ms, Bridge, Datapath, Port, PortError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchd_proto::{
    code, BridgeInfo, FdbEntry, FdbStats, PortCounters, PortInfo, Request, RpcError, ShowReply,
};

/// How long a request waits for the datapath threads to switch to a new topology.
const APPLY_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_MAC_AGING_SECS: u64 = 1_000_000;
const MAX_MAC_TABLE_SIZE: u32 = 1_000_000;

type RpcResult = Result<Value, RpcError>;

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

fn no_bridge(name: &str) -> RpcError {
    err(code::NOT_FOUND, format!("no bridge named {name}"))
}

fn ok<T: serde::Serialize>(value: T) -> RpcResult {
    Ok(serde_json::to_value(value).expect("replies always serialize"))
}

/// Checks a bridge or interface name the way the kernel does (`dev_valid_name`).
fn validate_name(kind: &str, name: &str) -> Result<(), RpcError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not a valid name")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("contains '/', ':', NUL or white space")
    } else {
        None
    };
    match why {
        Some(why) => Err(err(
            code::INVALID_PARAMS,
            format!("invalid {kind} name {name:?}: {why}"),
        )),
        None => Ok(()),
    }
}

enum PortState {
    Attached(Arc<Port>),
    /// Configured but not forwarding, with the reason.
    Failed(String),
}

struct BridgeState {
    dp: Arc<Bridge>,
    ports: BTreeMap<String, PortState>,
}

pub struct Switch {
    db_path: PathBuf,
    db: Db,
    bridges: BTreeMap<String, BridgeState>,
    datapath: Datapath,
    netlink: Netlink,
    /// Set while a `batch` runs: changes are saved once at its end.
    batch: Option<BatchState>,
}

/// Kernel objects a running batch created or wants gone, so that a failed batch
/// can leave the kernel as it found it.
#[derive(Default)]
struct BatchState {
    /// veth pairs made by add-ns-port, deleted again if the batch fails.
    created_links: Vec<String>,
    /// veth pairs of del-ns-port, deleted only once the batch is saved.
    doomed_links: Vec<String>,
}

/// The default host-side name of an add-ns-port veth: `NETNS-IFNAME` when that is
/// a valid interface name, otherwise a stable hash of both.
fn host_ifname(netns: &str, ifname: &str) -> String {
    let readable = format!("{netns}-{ifname}");
    if validate_name("interface", &readable).is_ok() {
        return readable;
    }
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in netns.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("sd{h:08x}")
}

#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Port(#[from] PortError),
}

impl Switch {
    /// Recreates the bridges and ports of `db`. A port that cannot attach stays
    /// configured and shows why.
    pub async fn restore(db: Db, db_path: PathBuf, datapath: Datapath, netlink: Netlink) -> Self {
        let mut switch = Switch {
            db_path,
            db: Db::default(),
            bridges: BTreeMap::new(),
            datapath,
            netlink,
            batch: None,
        };
        switch.reconcile(&db).await;
        switch.db = db;
        switch
    }

    /// Makes the running bridges and ports match `target` as far as the kernel
    /// lets it: at start, and to undo a failed batch.
    async fn reconcile(&mut self, target: &Db) {
        let gone: Vec<String> = self
            .bridges
            .keys()
            .filter(|b| !target.bridges.contains_key(*b))
            .cloned()
            .collect();
        for bridge in gone {
            self.stop_bridge(&bridge).await;
        }
        for (name, config) in &target.bridges {
            if !self.bridges.contains_key(name) {
                self.start_bridge(name, config);
            }
            self.bridges[name]
                .dp
                .fdb()
                .set_limits(config.mac_table_size, config.mac_aging_time);
            let wanted: Vec<(&String, bool)> = config
                .internal
                .then_some((name, true))
                .into_iter()
                .chain(config.ports.iter().map(|p| (p, false)))
                .collect();
            let unwanted: Vec<String> = self.bridges[name]
                .ports
                .keys()
                .filter(|p| !wanted.iter().any(|(w, _)| w == p))
                .cloned()
                .collect();
            for port in unwanted {
                let state = self.bridge_mut(name).ports.remove(&port).expect("listed");
                self.detach(name, state).await;
            }
            for (port, internal) in wanted {
                if self.bridges[name].ports.contains_key(port) {
                    continue;
                }
                let attached = if internal {
                    self.attach_internal(name).await
                } else {
                    self.attach(name, port).await
                };
                let state = match attached {
                    Ok(port) => PortState::Attached(port),
                    Err(e) => {
                        tracing::warn!(bridge = %name, port = %port, "port not attached: {e}");
                        PortState::Failed(e.to_string())
                    }
                };
                self.bridge_mut(name).ports.insert(port.clone(), state);
            }
        }
    }

    pub async fn handle(&mut self, request: Request) -> RpcResult {
        match request {
            Request::AddBr {
                bridge,
                may_exist,
                no_internal,
            } => self.add_br(&bridge, may_exist, no_internal).await,
            Request::DelBr { bridge, if_exists } => self.del_br(&bridge, if_exists).await,
            Request::ListBr {} => ok(self.bridges.keys().collect::<Vec<_>>()),
            Request::BrExists { bridge } => ok(self.bridges.contains_key(&bridge)),
            Request::AddPort {
                bridge,
                interface,
                may_exist,
            } => self.add_port(&bridge, &interface, may_exist).await,
            Request::DelPort {
                bridge,
                interface,
                if_exists,
            } => {
                self.del_port(bridge.as_deref(), &interface, if_exists)
                    .await
            }
            Request::ListPorts { bridge } => {
                ok(self.bridge(&bridge)?.ports.keys().collect::<Vec<_>>())
            }
            Request::PortToBr { interface } => match self.bridge_of(&interface) {
                Some(bridge) => ok(bridge),
                None => Err(err(code::NOT_FOUND, format!("no port named {interface}"))),
            },
            Request::Show {} => ok(self.show()),
            Request::FdbShow { bridge } => self.fdb_show(&bridge),
            Request::FdbFlush { bridge } => self.fdb_flush(bridge.as_deref()),
            Request::FdbStats { bridge } => self.fdb_stats(&bridge),
            Request::DumpPorts { bridge, interface } => {
                self.dump_ports(&bridge, interface.as_deref())
            }
            Request::SetBr {
                bridge,
                mac_aging_time,
                mac_table_size,
            } => self.set_br(&bridge, mac_aging_time, mac_table_size),
            Request::AddNsPort {
                bridge,
                netns,
                ifname,
                host_ifname,
                ip,
                gateway,
                mac,
                mtu,
                may_exist,
            } => {
                let ifname = ifname.unwrap_or_else(|| "eth0".to_string());
                let host = host_ifname.unwrap_or_else(|| self::host_ifname(&netns, &ifname));
                let spec = NsPortSpec {
                    netns,
                    ifname,
                    host,
                    ip,
                    gateway,
                    mac,
                    mtu,
                };
                self.add_ns_port(&bridge, spec, may_exist).await
            }
            Request::DelNsPort {
                bridge,
                netns,
                ifname,
                if_exists,
            } => {
                let ifname = ifname.unwrap_or_else(|| "eth0".to_string());
                self.del_ns_port(&bridge, &netns, &ifname, if_exists).await
            }
            Request::Batch { commands } => self.batch(commands).await,
        }
    }

    /// Runs requests as one transaction: saved once at the end, or, if one fails,
    /// undone (the running state reconciled back to the saved database) and the
    /// error says which.
    async fn batch(&mut self, commands: Vec<Request>) -> RpcResult {
        if self.batch.is_some() || commands.iter().any(|c| matches!(c, Request::Batch { .. })) {
            return Err(err(code::INVALID_PARAMS, "batches cannot be nested"));
        }
        let saved = self.db.clone();
        self.batch = Some(BatchState::default());
        let mut results = Vec::with_capacity(commands.len());
        let mut failure = None;
        for (i, command) in commands.into_iter().enumerate() {
            let method = command.method();
            match Box::pin(self.handle(command)).await {
                Ok(result) => results.push(result),
                Err(e) => {
                    failure = Some(err(
                        e.code,
                        format!("command {} ({method}): {}", i + 1, e.message),
                    ));
                    break;
                }
            }
        }
        let state = self.batch.take().expect("set above");
        if failure.is_none() && self.db != saved {
            if let Err(e) = self.db.save(&self.db_path) {
                failure = Some(err(code::FAILED, e.to_string()));
            }
        }
        let (undo, delete) = match failure {
            Some(_) => (true, state.created_links),
            None => (false, state.doomed_links),
        };
        if undo {
            self.reconcile(&saved).await;
            self.db = saved;
        }
        for host in delete {
            self.delete_link(&host).await;
        }
        match failure {
            Some(e) => Err(e),
            None => ok(results),
        }
    }

    /// Follows an interface appearing, being renamed or going away: a configured
    /// port attaches when its interface appears and detaches when it goes, without
    /// touching the other ports.
    pub async fn process_link_event(&mut self, event: LinkEvent) {
        let (name, index, present) = match &event {
            LinkEvent::Present { name, index } => (name.as_str(), *index, true),
            LinkEvent::Gone { name, index } => (name.as_str(), *index, false),
        };
        // An attached port whose interface went away, or now has another name.
        let lost: Vec<(String, String)> = self
            .bridges
            .iter()
            .flat_map(|(bridge, b)| {
                b.ports.iter().filter_map(move |(port, state)| match state {
                    PortState::Attached(p)
                        if p.ifindex() == index && (!present || port != name) =>
                    {
                        Some((bridge.clone(), port.clone()))
                    }
                    _ => None,
                })
            })
            .collect();
        for (bridge, port) in lost {
            let failed = PortState::Failed("no such device".to_string());
            let state = std::mem::replace(
                self.bridge_mut(&bridge)
                    .ports
                    .get_mut(&port)
                    .expect("port exists"),
                failed,
            );
            self.detach(&bridge, state).await;
            tracing::warn!(bridge = %bridge, port = %port, "interface gone; port detached");
        }
        if !present {
            return;
        }
        // A configured port whose interface (re)appeared under its name.
        let Some(bridge) = self.bridge_of(name).map(str::to_string) else {
            return;
        };
        // An internal port's interface is the TAP switchd makes; one that appears
        // under its name is someone else's.
        if bridge == name && self.db.bridges.get(&bridge).is_some_and(|c| c.internal) {
            return;
        }
        if let Some(PortState::Attached(p)) = self.bridges[&bridge].ports.get(name) {
            if p.ifindex() == index {
                // Some other change, perhaps the MTU.
                p.refresh_mtu();
                return;
            }
        }
        let new_state = match self.attach(&bridge, name).await {
            Ok(port) => {
                tracing::info!(bridge = %bridge, port = name, "interface appeared; port attached");
                PortState::Attached(port)
            }
            Err(e) => PortState::Failed(e.to_string()),
        };
        let old = std::mem::replace(
            self.bridge_mut(&bridge)
                .ports
                .get_mut(name)
                .expect("port exists"),
            new_state,
        );
        self.detach(&bridge, old).await;
    }

    /// Drops aged-out MAC entries on every bridge.
    pub fn expire_fdbs(&self) {
        let now = now_ms();
        for bridge in self.bridges.values() {
            bridge.dp.fdb().expire(now);
        }
    }

    fn bridge(&self, name: &str) -> Result<&BridgeState, RpcError> {
        self.bridges.get(name).ok_or_else(|| no_bridge(name))
    }

    fn bridge_mut(&mut self, name: &str) -> &mut BridgeState {
        self.bridges.get_mut(name).expect("bridge exists")
    }

    fn bridge_of(&self, iface: &str) -> Option<&str> {
        self.bridges
            .iter()
            .find(|(_, b)| b.ports.contains_key(iface))
            .map(|(name, _)| name.as_str())
    }

    /// Saves `db` and makes it current, or leaves everything as it was. Within a
    /// batch it only becomes current; the batch saves once at its end.
    fn commit(&mut self, db: Db) -> Result<(), RpcError> {
        if self.batch.is_some() {
            self.db = db;
            return Ok(());
        }
        db.save(&self.db_path)
            .map_err(|e| err(code::FAILED, e.to_string()))?;
        self.db = db;
        Ok(())
    }

    fn start_bridge(&mut self, name: &str, config: &BridgeConfig) {
        let dp = self
            .datapath
            .add_bridge(name, config.mac_table_size, config.mac_aging_time);
        self.bridges.insert(
            name.to_string(),
            BridgeState {
                dp,
                ports: BTreeMap::new(),
            },
        );
    }

    async fn stop_bridge(&mut self, name: &str) {
        self.bridges.remove(name);
        let generation = self.datapath.remove_bridge(name);
        self.wait_applied(generation).await;
    }

    async fn wait_applied(&self, generation: u64) {
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        while !self.datapath.is_applied(generation) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("datapath threads slow to apply a topology change");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn attach(&self, bridge: &str, iface: &str) -> Result<Arc<Port>, AttachError> {
        let index = self
            .netlink
            .link_index(iface)
            .await?
            .ok_or_else(|| AttachError::NoSuchInterface(iface.to_string()))?;
        self.netlink.set_up(iface, index).await?;
        let (port, generation) = self.datapath.add_port(bridge, iface, index)?;
        self.wait_applied(generation).await;
        Ok(port)
    }

    /// Creates the bridge's TAP and forwards on it.
    async fn attach_internal(&self, bridge: &str) -> Result<Arc<Port>, AttachError> {
        let (port, generation) = self.datapath.add_internal_port(bridge, bridge)?;
        self.wait_applied(generation).await;
        if let Err(e) = self.netlink.set_up(bridge, port.ifindex()).await {
            self.detach(bridge, PortState::Attached(port)).await;
            return Err(e.into());
        }
        Ok(port)
    }

    /// Deletes an interface if it is still there; failures are only logged, as
    /// the configuration no longer refers to it.
    async fn delete_link(&self, name: &str) {
        let result = match self.netlink.link_index(name).await {
            Ok(Some(index)) => self.netlink.delete_link(name, index).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("{e}");
        }
    }

    async fn detach(&self, bridge: &str, state: PortState) {
        if let PortState::Attached(port) = state {
            let generation = self.datapath.remove_port(bridge, port.id);
            self.wait_applied(generation).await;
            self.datapath.forget_port(bridge, port.id);
        }
    }

    async fn add_br(&mut self, name: &str, may_exist: bool, no_internal: bool) -> RpcResult {
        validate_name("bridge", name)?;
        if self.bridges.contains_key(name) {
            if may_exist {
                return ok(());
            }
            return Err(err(
                code::ALREADY_EXISTS,
                format!("a bridge named {name} already exists"),
            ));
        }
        if let Some(owner) = self.bridge_of(name) {
            return Err(err(
                code::ALREADY_EXISTS,
                format!(
                    "cannot create bridge {name}: a port named {name} exists on bridge {owner}"
                ),
            ));
        }
        let config = BridgeConfig {
            internal: !no_internal,
            ..BridgeConfig::default()
        };
        self.start_bridge(name, &config);
        let internal = if config.internal {
            match self.attach_internal(name).await {
                Ok(port) => Some(port),
                Err(e) => {
                    self.stop_bridge(name).await;
                    return Err(err(code::FAILED, e.to_string()));
                }
            }
        } else {
            None
        };
        let mut db = self.db.clone();
        db.bridges.insert(name.to_string(), config);
        if let Err(e) = self.commit(db) {
            self.stop_bridge(name).await;
            return Err(e);
        }
        if let Some(port) = internal {
            self.bridge_mut(name)
                .ports
                .insert(name.to_string(), PortState::Attached(port));
        }
        tracing::info!(bridge = name, "bridge added");
        ok(())
    }

    async fn del_br(&mut self, name: &str, if_exists: bool) -> RpcResult {
        if !self.bridges.contains_key(name) {
            return if if_exists {
                ok(())
            } else {
                Err(no_bridge(name))
            };
        }
        let mut db = self.db.clone();
        let config = db.bridges.remove(name).expect("bridge exists");
        self.commit(db)?;
        self.stop_bridge(name).await;
        // Its add-ns-port veths go with it, as `del-ns-port` would take them.
        for host in config.ns_ports.into_keys() {
            match &mut self.batch {
                Some(batch) => batch.doomed_links.push(host),
                None => self.delete_link(&host).await,
            }
        }
        tracing::info!(bridge = name, "bridge deleted");
        ok(())
    }

    async fn add_port(&mut self, bridge: &str, iface: &str, may_exist: bool) -> RpcResult {
        validate_name("interface", iface)?;
        self.bridge(bridge)?;
        if let Some(owner) = self.bridge_of(iface) {
            if may_exist && owner == bridge {
                return ok(());
            }
            return Err(err(
                code::ALREADY_EXISTS,
                format!("{iface} is already a port of {owner}"),
            ));
        }
        if self.bridges.contains_key(iface) {
            return Err(err(
                code::ALREADY_EXISTS,
                format!("{iface} is a bridge, not an interface"),
            ));
        }
        let port = self.attach(bridge, iface).await.map_err(|e| match e {
            AttachError::NoSuchInterface(_) => err(code::NOT_FOUND, e.to_string()),
            _ => err(code::FAILED, e.to_string()),
        })?;
        let mut db = self.db.clone();
        db.bridges
            .get_mut(bridge)
            .expect("bridge exists")
            .ports
            .push(iface.to_string());
        if let Err(e) = self.commit(db) {
            self.detach(bridge, PortState::Attached(port)).await;
            return Err(e);
        }
        self.bridge_mut(bridge)
            .ports
            .insert(iface.to_string(), PortState::Attached(port));
        tracing::info!(bridge, port = iface, "port added");
        ok(())
    }

    async fn del_port(&mut self, bridge: Option<&str>, iface: &str, if_exists: bool) -> RpcResult {
        if let Some(bridge) = bridge {
            self.bridge(bridge)?;
        }
        let owner = match (self.bridge_of(iface), bridge) {
            (Some(owner), Some(bridge)) if owner != bridge => None,
            (owner, _) => owner.map(str::to_string),
        };
        let Some(owner) = owner else {
            if if_exists {
                return ok(());
            }
            return Err(err(
                code::NOT_FOUND,
                match bridge {
                    Some(bridge) => format!("bridge {bridge} does not have a port {iface}"),
                    None => format!("no port named {iface}"),
                },
            ));
        };
        if owner == iface {
            return Err(err(
                code::FAILED,
                format!(
                    "cannot delete port {iface}: it is the internal port of bridge {owner} (delete the bridge instead)"
                ),
            ));
        }
        let mut db = self.db.clone();
        let config = db.bridges.get_mut(&owner).expect("bridge exists");
        config.ports.retain(|p| p != iface);
        // The veth stays (del-ns-port removes it); the port simply stops being one.
        config.ns_ports.remove(iface);
        self.commit(db)?;
        let state = self
            .bridge_mut(&owner)
            .ports
            .remove(iface)
            .expect("port exists");
        self.detach(&owner, state).await;
        tracing::info!(bridge = %owner, port = iface, "port deleted");
        ok(())
    }

    async fn add_ns_port(&mut self, bridge: &str, spec: NsPortSpec, may_exist: bool) -> RpcResult {
        let invalid = |message: String| err(code::INVALID_PARAMS, message);
        self.bridge(bridge)?;
        validate_name("interface", &spec.ifname)?;
        validate_name("interface", &spec.host)?;
        netns::resolve(&spec.netns).map_err(invalid)?;
        if let Some((owner, host)) = self.ns_port(&spec.netns, &spec.ifname) {
            if may_exist && owner == bridge {
                return ok(());
            }
            return Err(err(
                code::ALREADY_EXISTS,
                format!(
                    "{} in namespace {} is already port {host} of bridge {owner}",
                    spec.ifname, spec.netns
                ),
            ));
        }
        let ip = spec
            .ip
            .as_deref()
            .map(netns::parse_cidr)
            .transpose()
            .map_err(invalid)?;
        let gateway = spec
            .gateway
            .as_deref()
            .map(|g| {
                g.parse::<std::net::IpAddr>()
                    .map_err(|_| format!("invalid gateway {g:?}: not an IP address"))
            })
            .transpose()
            .map_err(invalid)?;
        let mac = spec
            .mac
            .as_deref()
            .map(|m| match m.parse::<crate::wire::MacAddr>() {
                Ok(mac) if !mac.is_multicast() && mac.0 != [0; 6] => Ok(mac.0),
                Ok(_) => Err(format!("invalid MAC {m:?}: not a unicast address")),
                Err(_) => Err(format!("invalid MAC {m:?}: expected xx:xx:xx:xx:xx:xx")),
            })
            .transpose()
            .map_err(invalid)?;
        if let Some(mtu) = spec.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(format!("invalid MTU {mtu}: must be 68 to 65535")));
            }
        }
        if let Some(owner) = self.bridge_of(&spec.host) {
            return Err(err(
                code::ALREADY_EXISTS,
                format!("{} is already a port of {owner}", spec.host),
            ));
        }
        if self.bridges.contains_key(&spec.host) {
            return Err(err(
                code::ALREADY_EXISTS,
                format!("{} is a bridge, not an interface", spec.host),
            ));
        }
        let failed = |e: NetlinkError| err(code::FAILED, e.to_string());
        if self
            .netlink
            .link_index(&spec.host)
            .await
            .map_err(failed)?
            .is_some()
        {
            return Err(err(
                code::ALREADY_EXISTS,
                format!("an interface named {} already exists", spec.host),
            ));
        }
        let ns = netns::open(&spec.netns).map_err(|m| err(code::NOT_FOUND, m))?;
        let veth = VethSpec {
            host: &spec.host,
            peer: &spec.ifname,
            peer_netns: &ns,
            peer_mac: mac,
            mtu: spec.mtu,
        };
        match self.netlink.create_veth(&veth).await {
            Ok(()) => {}
            Err(NetlinkError::CreateVeth { source, .. })
                if source.raw_os_error() == Some(libc::EEXIST) =>
            {
                return Err(err(
                    code::ALREADY_EXISTS,
                    format!(
                        "an interface named {} already exists in namespace {}",
                        spec.ifname, spec.netns
                    ),
                ));
            }
            Err(e) => return Err(failed(e)),
        }
        // From here on, a failure deletes the pair again.
        let result = self.finish_ns_port(bridge, &spec, ns, ip, gateway).await;
        match (&result, &mut self.batch) {
            (Err(_), _) => self.delete_link(&spec.host).await,
            (Ok(_), Some(batch)) => batch.created_links.push(spec.host.clone()),
            (Ok(_), None) => {}
        }
        result
    }

    async fn finish_ns_port(
        &mut self,
        bridge: &str,
        spec: &NsPortSpec,
        ns: std::fs::File,
        ip: Option<(std::net::IpAddr, u8)>,
        gateway: Option<std::net::IpAddr>,
    ) -> RpcResult {
        let inside = netns::InsideConfig {
            ifname: spec.ifname.clone(),
            ip,
            gateway,
        };
        netns::configure_inside(ns, inside)
            .await
            .map_err(|m| err(code::FAILED, format!("namespace {}: {m}", spec.netns)))?;
        let port = self
            .attach(bridge, &spec.host)
            .await
            .map_err(|e| err(code::FAILED, e.to_string()))?;
        let mut db = self.db.clone();
        let config = db.bridges.get_mut(bridge).expect("bridge exists");
        config.ports.push(spec.host.clone());
        config.ns_ports.insert(
            spec.host.clone(),
            NsPort {
                netns: spec.netns.clone(),
                ifname: spec.ifname.clone(),
            },
        );
        if let Err(e) = self.commit(db) {
            self.detach(bridge, PortState::Attached(port)).await;
            return Err(e);
        }
        self.bridge_mut(bridge)
            .ports
            .insert(spec.host.clone(), PortState::Attached(port));
        tracing::info!(bridge, port = %spec.host, netns = %spec.netns, "namespace port added");
        ok(())
    }

    async fn del_ns_port(
        &mut self,
        bridge: &str,
        netns: &str,
        ifname: &str,
        if_exists: bool,
    ) -> RpcResult {
        self.bridge(bridge)?;
        let host = match self.ns_port(netns, ifname) {
            Some((owner, host)) if owner == bridge => host.to_string(),
            _ if if_exists => return ok(()),
            _ => {
                return Err(err(
                    code::NOT_FOUND,
                    format!("bridge {bridge} has no port to {ifname} in namespace {netns}"),
                ))
            }
        };
        let mut db = self.db.clone();
        let config = db.bridges.get_mut(bridge).expect("bridge exists");
        config.ports.retain(|p| *p != host);
        config.ns_ports.remove(&host);
        self.commit(db)?;
        let state = self
            .bridge_mut(bridge)
            .ports
            .remove(&host)
            .expect("port exists");
        self.detach(bridge, state).await;
        match &mut self.batch {
            Some(batch) => batch.doomed_links.push(host.clone()),
            None => self.delete_link(&host).await,
        }
        tracing::info!(bridge, port = %host, netns, "namespace port deleted");
        ok(())
    }

    /// The bridge and host interface of the add-ns-port port to `ifname` in `netns`.
    fn ns_port(&self, netns: &str, ifname: &str) -> Option<(&str, &str)> {
        self.db.bridges.iter().find_map(|(bridge, config)| {
            config
                .ns_ports
                .iter()
                .find(|(_, p)| p.netns == netns && p.ifname == ifname)
                .map(|(host, _)| (bridge.as_str(), host.as_str()))
        })
    }

    fn port_error(name: &str, state: &PortState) -> Option<String> {
        match state {
            PortState::Failed(why) => Some(why.clone()),
            // The interface may have gone since it attached.
            PortState::Attached(port) => match crate::sys::ifindex(name) {
                Some(index) if index == port.ifindex() => None,
                _ => Some("no such device".to_string()),
            },
        }
    }

    /// Why an attached port's interface cannot pass frames right now, if it
    /// cannot: set down, or no carrier (a veth whose peer is down or gone).
    fn link_down(name: &str) -> Option<String> {
        let read = |attr: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"));
        let flags = read("flags").ok()?;
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
        if flags & libc::IFF_UP as u32 == 0 {
            return Some("interface is down".to_string());
        }
        match read("carrier").map(|c| c.trim() == "0") {
            Ok(true) => Some("no carrier".to_string()),
            _ => None,
        }
    }

    fn show(&self) -> ShowReply {
        let bridges = self
            .bridges
            .iter()
            .map(|(name, b)| {
                let config = &self.db.bridges[name];
                BridgeInfo {
                    name: name.clone(),
                    mac_aging_time: config.mac_aging_time,
                    mac_table_size: config.mac_table_size,
                    ports: b
                        .ports
                        .iter()
                        .map(|(pname, state)| PortInfo {
                            name: pname.clone(),
                            kind: if config.internal && pname == name {
                                "internal"
                            } else {
                                "system"
                            }
                            .to_string(),
                            netns: config.ns_ports.get(pname).map(|n| n.netns.clone()),
                            peer: config.ns_ports.get(pname).map(|n| n.ifname.clone()),
                            ifindex: match state {
                                PortState::Attached(p) => Some(p.ifindex()),
                                PortState::Failed(_) => None,
                            },
                            error: Self::port_error(pname, state),
                            down: match state {
                                PortState::Attached(p) => {
                                    match p.loop_guard.blocked_for_ms(now_ms()) {
                                        Some(ms) => Some(format!(
                                            "blocked: loop suspected, {} s left",
                                            ms.div_ceil(1000)
                                        )),
                                        None => Self::link_down(pname),
                                    }
                                }
                                PortState::Failed(_) => None,
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        ShowReply { bridges }
    }

    fn fdb_show(&self, bridge: &str) -> RpcResult {
        let b = self.bridge(bridge)?;
        let names: BTreeMap<u32, &str> = b
            .ports
            .iter()
            .filter_map(|(name, state)| match state {
                PortState::Attached(p) => Some((p.id, name.as_str())),
                PortState::Failed(_) => None,
            })
            .collect();
        let now = now_ms();
        let mut fdb = b.dp.fdb();
        fdb.sync_kernel_seen(now);
        // Sweep first so the rows and the counters agree.
        fdb.expire(now);
        let mut rows: Vec<FdbEntry> = fdb
            .rows(now)
            .map(|r| FdbEntry {
                port: names.get(&r.port).copied().unwrap_or("?").to_string(),
                vlan: r.key.vlan,
                mac: r.key.mac.to_string(),
                age: r.age_ms / 1000,
            })
            .collect();
        rows.sort_by(|a, b| (&a.port, a.vlan, &a.mac).cmp(&(&b.port, b.vlan, &b.mac)));
        ok(rows)
    }

    fn fdb_flush(&self, bridge: Option<&str>) -> RpcResult {
        let mut flushed = 0;
        match bridge {
            Some(name) => flushed += self.bridge(name)?.dp.fdb().flush(),
            None => {
                for b in self.bridges.values() {
                    flushed += b.dp.fdb().flush();
                }
            }
        }
        ok(json!({ "flushed": flushed }))
    }

    fn fdb_stats(&self, bridge: &str) -> RpcResult {
        let mut fdb = self.bridge(bridge)?.dp.fdb();
        fdb.expire(now_ms());
        let c = fdb.counters();
        ok(FdbStats {
            current: fdb.len() as u64,
            max: fdb.max_entries() as u64,
            learned: c.learned,
            aged: c.aged,
            evicted: c.evicted,
            moved: c.moved,
        })
    }

    fn dump_ports(&self, bridge: &str, iface: Option<&str>) -> RpcResult {
        let b = self.bridge(bridge)?;
        if let Some(iface) = iface {
            if !b.ports.contains_key(iface) {
                return Err(err(
                    code::NOT_FOUND,
                    format!("bridge {bridge} does not have a port {iface}"),
                ));
            }
        }
        let rows: Vec<PortCounters> = b
            .ports
            .iter()
            .filter(|(name, _)| iface.is_none_or(|i| i == name.as_str()))
            .map(|(name, state)| match state {
                PortState::Attached(p) => p.counters(name),
                PortState::Failed(_) => PortCounters {
                    port: name.clone(),
                    ..Default::default()
                },
            })
            .collect();
        ok(rows)
    }

    fn set_br(&mut self, bridge: &str, aging: Option<u64>, size: Option<u32>) -> RpcResult {
        self.bridge(bridge)?;
        if let Some(aging) = aging {
            if !(1..=MAX_MAC_AGING_SECS).contains(&aging) {
                return Err(err(
                    code::INVALID_PARAMS,
                    format!("mac-aging-time must be 1 to {MAX_MAC_AGING_SECS} seconds"),
                ));
            }
        }
        if let Some(size) = size {
            if !(1..=MAX_MAC_TABLE_SIZE).contains(&size) {
                return Err(err(
                    code::INVALID_PARAMS,
                    format!("mac-table-size must be 1 to {MAX_MAC_TABLE_SIZE}"),
                ));
            }
        }
        let mut db = self.db.clone();
        let config = db.bridges.get_mut(bridge).expect("bridge exists");
        config.mac_aging_time = aging.unwrap_or(config.mac_aging_time);
        config.mac_table_size = size.unwrap_or(config.mac_table_size);
        let (size, aging) = (config.mac_table_size, config.mac_aging_time);
        self.commit(db)?;
        self.bridges[bridge].dp.fdb().set_limits(size, aging);
        ok(())
    }
}

/// add-ns-port's parameters, names resolved, the rest still as the user wrote it.
struct NsPortSpec {
    netns: String,
    ifname: String,
    host: String,
    ip: Option<String>,
    gateway: Option<String>,
    mac: Option<String>,
    mtu: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::{host_ifname, validate_name};

    #[test]
    fn host_names_are_valid_and_stable() {
        assert_eq!(host_ifname("ns1", "eth0"), "ns1-eth0");
        let long = host_ifname("/proc/1234/ns/net", "eth0");
        assert!(validate_name("interface", &long).is_ok(), "{long}");
        assert_eq!(long, host_ifname("/proc/1234/ns/net", "eth0"));
        assert_ne!(long, host_ifname("/proc/1234/ns/net", "eth1"));
    }

    #[test]
    fn names_follow_the_kernel_rules() {
        for good in ["br0", "veth-ns1", "a", "fifteen-chars-x"] {
            assert!(validate_name("bridge", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "sixteen-chars-xx",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\0b",
        ] {
            assert!(validate_name("bridge", bad).is_err(), "{bad:?}");
        }
    }
}
