//! The switch's configuration and running state, and the dispatch of requests to
//! their handlers, which live by topic beside this file: `bridges`, `ports`,
//! `ns_ports`, `links` (interfaces coming and going), `reports` (show, fdb,
//! counters) and `txn` (saving a change, and batches).
//!
//! Every change is validated, carried out, and saved to the database before the
//! reply; if any step fails nothing of it remains.

use super::metrics::RequestCounts;
use super::mirrors::Applied;
use super::monitor::Monitors;
use super::netlink::{Netlink, NetlinkError};
use super::stream::Stream;
use super::tunnels::TunnelState;
use super::txn::BatchState;
use crate::config::{BridgeConfig, Db, PortConfig, PortKind, Store};
use crate::datapath::mirror::MirrorStats;
use crate::datapath::{now_ms, Bridge, Datapath, Port, PortError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchd_proto::{code, Request, RpcError};
use tokio::sync::Notify;

/// How long a request waits for the datapath threads to switch to a new topology.
const APPLY_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) type RpcResult<T = Value> = Result<T, RpcError>;

pub(super) fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

pub(super) fn no_bridge(name: &str) -> RpcError {
    err(code::NOT_FOUND, format!("no bridge named {name}"))
}

fn reply<T: serde::Serialize>(result: RpcResult<T>) -> RpcResult {
    result.map(|value| serde_json::to_value(value).expect("replies always serialize"))
}

/// Checks a bridge or interface name the way the kernel does (`dev_valid_name`).
pub(super) fn validate_name(kind: &str, name: &str) -> Result<(), RpcError> {
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

pub(super) enum PortState {
    Attached(Arc<Port>),
    /// Configured but not forwarding, with the reason.
    Failed(String),
}

impl PortState {
    pub(super) fn port(&self) -> Option<&Arc<Port>> {
        match self {
            PortState::Attached(port) => Some(port),
            PortState::Failed(_) => None,
        }
    }
}

/// A running bridge: its datapath handle and the state of each configured port.
pub(super) struct RunningBridge {
    pub(super) dp: Arc<Bridge>,
    pub(super) ports: BTreeMap<String, PortState>,
    /// What each mirror sent, by name (`mirrors.rs`).
    pub(super) mirror_stats: BTreeMap<String, Arc<MirrorStats>>,
    pub(super) mirrors_applied: Applied,
}

impl RunningBridge {
    /// Each attached port's name by its datapath id, for the tables that key by id.
    pub(super) fn port_names(&self) -> BTreeMap<u32, &str> {
        self.ports
            .iter()
            .filter_map(|(name, state)| Some((state.port()?.id, name.as_str())))
            .collect()
    }
}

pub struct Switch {
    pub(super) store: Store,
    /// The desired state, as saved (or, within a batch, as it will be saved).
    pub(super) db: Db,
    pub(super) bridges: BTreeMap<String, RunningBridge>,
    pub(super) datapath: Datapath,
    /// Signalled by the datapath threads whenever one switches views.
    applied: Arc<Notify>,
    pub(super) netlink: Netlink,
    /// Set while a `batch` runs: changes are saved once at its end.
    pub(super) batch: Option<BatchState>,
    /// The kernel side of the tunnel ports.
    pub(super) tunnels: TunnelState,
    /// What `--metrics` reports of the requests answered.
    pub(super) requests: RequestCounts,
    /// The `monitor` streams' channel, and what they were last told.
    pub(super) monitors: Monitors,
    /// Captures running (`capture.rs`), which end on their own.
    pub(super) captures: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum AttachError {
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Port(#[from] PortError),
    /// A database edited by hand can hold what no request would have saved.
    #[error("invalid VLAN settings in the database: {0}")]
    BadVlan(String),
    #[error("{0}")]
    Tunnel(String),
}

impl Switch {
    /// Recreates the bridges and ports of `db`. A port that cannot attach stays
    /// configured and shows why.
    /// `applied` is what `datapath`'s threads signal when they switch views.
    pub async fn restore(
        db: Db,
        store: Store,
        (datapath, applied): (Datapath, Arc<Notify>),
        netlink: Netlink,
    ) -> Self {
        let mut switch = Switch {
            applied,
            monitors: Monitors::new(&datapath),
            store,
            db: Db::default(),
            bridges: BTreeMap::new(),
            datapath,
            netlink,
            batch: None,
            tunnels: TunnelState::default(),
            requests: RequestCounts::default(),
            captures: Arc::default(),
        };
        switch.reconcile(&db).await;
        switch.db = db;
        switch
    }

    /// Makes the running bridges and ports match `target` as far as the kernel
    /// lets it: at start, and to undo a failed batch.
    pub(super) async fn reconcile(&mut self, target: &Db) {
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
            let dp = &self.bridges[name].dp;
            dp.set_limits(config.mac_table_size, config.mac_aging_time);
            dp.set_group_fwd_mask(config.group_fwd_mask);
            dp.set_snooping(&config.mcast_snooping);
            let unwanted: Vec<String> = self.bridges[name]
                .ports
                .keys()
                .filter(|p| config.port(p).is_none())
                .cloned()
                .collect();
            for port in unwanted {
                let state = self.bridge_mut(name).ports.remove(&port).expect("listed");
                self.detach(name, state).await;
                self.close_tunnel(&port).await;
            }
            for port in &config.ports {
                let running_tunnel = self.port_config(name, &port.name).map(|p| &p.tunnel);
                if running_tunnel.is_some_and(|t| *t != port.tunnel) {
                    // Undoing a batch's `set interface`: the tunnel is made anew.
                    if let Some(state) = self.bridge_mut(name).ports.remove(&port.name) {
                        self.detach(name, state).await;
                    }
                    self.close_tunnel(&port.name).await;
                }
                if self.bridges[name].ports.contains_key(&port.name) {
                    // Undoing a batch's `set port`.
                    let running = self.port_config(name, &port.name).map(|p| &p.vlan);
                    if running.is_some_and(|v| *v != port.vlan) {
                        self.apply_vlan(name, &port.name, &port.vlan).await;
                    }
                    continue;
                }
                let state = match self.attach(name, port).await {
                    Ok(p) => PortState::Attached(p),
                    Err(e) => {
                        tracing::warn!(bridge = %name, port = %port.name, "port not attached: {e}");
                        PortState::Failed(e.to_string())
                    }
                };
                self.bridge_mut(name).ports.insert(port.name.clone(), state);
            }
            let old = self
                .db
                .bridges
                .get(name)
                .map(|b| b.static_macs.clone())
                .unwrap_or_default();
            self.uninstall_statics(name, &old, &config.static_macs);
            self.install_statics(name, &config.static_macs, None);
        }
        self.apply_all_mirrors().await;
    }

    pub async fn handle(&mut self, request: Request) -> RpcResult {
        let method = request.method();
        let start = Instant::now();
        let result = self.run(request).await;
        // Mirrors follow their ports, whatever the request did to them.
        self.apply_all_mirrors().await;
        self.publish_changes();
        self.requests.count(method, result.is_ok(), start.elapsed());
        result
    }

    /// Runs a streaming request (`Request::is_stream`): its reply, and the stream
    /// its connection carries after it.
    pub(super) async fn open_stream(&mut self, request: Request) -> RpcResult<(Value, Stream)> {
        let method = request.method();
        let start = Instant::now();
        let result = match request {
            Request::Capture {
                bridge,
                ports,
                count,
                snaplen,
                filter,
            } => self
                .capture(&bridge, &ports, count, snaplen, filter.as_deref())
                .map(|(reply, stream)| (serde_json::to_value(reply).expect("serializes"), stream)),
            Request::Monitor { bridge } => self.monitor(bridge),
            other => Err(err(
                code::INVALID_REQUEST,
                format!("{} does not stream", other.method()),
            )),
        };
        self.requests.count(method, result.is_ok(), start.elapsed());
        result
    }

    async fn run(&mut self, request: Request) -> RpcResult {
        match request {
            // Only `open_stream` runs these (batches refuse them).
            stream @ (Request::Capture { .. } | Request::Monitor { .. }) => Err(err(
                code::INVALID_REQUEST,
                format!("{} streams its answer", stream.method()),
            )),
            Request::AddBr {
                bridge,
                may_exist,
                no_internal,
            } => reply(self.add_br(&bridge, may_exist, no_internal).await),
            Request::DelBr { bridge, if_exists } => reply(self.del_br(&bridge, if_exists).await),
            Request::ListBr {} => reply(Ok(self.bridges.keys().collect::<Vec<_>>())),
            Request::BrExists { bridge } => reply(Ok(self.bridges.contains_key(&bridge))),
            Request::AddPort {
                bridge,
                interface,
                may_exist,
                vlan,
                kind,
                options,
                external_ids,
            } => {
                let config = PortConfig {
                    vlan,
                    kind,
                    external_ids,
                    ..PortConfig::system(&interface)
                };
                reply(self.add_port(&bridge, may_exist, config, options).await)
            }
            Request::SetInterface {
                interface,
                kind,
                options,
                external_ids,
            } => reply(
                self.set_interface(&interface, kind, options, external_ids)
                    .await,
            ),
            Request::SetPort { port, set, clear } => {
                reply(self.set_port(&port, &set, &clear).await)
            }
            Request::DelPort {
                bridge,
                interface,
                if_exists,
            } => reply(
                self.del_port(bridge.as_deref(), &interface, if_exists)
                    .await,
            ),
            Request::ListPorts { bridge } => reply(
                self.bridge(&bridge)
                    .map(|b| b.ports.keys().collect::<Vec<_>>()),
            ),
            Request::FindPorts { external_ids } => reply(Ok(self.find_ports(&external_ids))),
            Request::Trace {
                bridge,
                in_port,
                dl_src,
                dl_dst,
                dl_vlan,
                dl_type,
            } => reply(self.trace(
                &bridge,
                &in_port,
                super::trace::TraceFields {
                    dl_src,
                    dl_dst,
                    dl_vlan,
                    dl_type,
                },
            )),
            Request::PortToBr { interface } => reply(
                self.bridge_of(&interface)
                    .ok_or_else(|| err(code::NOT_FOUND, format!("no port named {interface}"))),
            ),
            Request::Show {} => reply(Ok(self.show())),
            Request::FdbShow { bridge } => reply(self.fdb_show(&bridge)),
            Request::FdbFlush { bridge, vlan } => reply(self.fdb_flush(bridge.as_deref(), vlan)),
            Request::FdbStats { bridge } => reply(self.fdb_stats(&bridge)),
            Request::FdbAdd {
                bridge,
                port,
                mac,
                vlan,
            } => reply(self.fdb_add(&bridge, &port, &mac, vlan)),
            Request::FdbDel {
                bridge,
                mac,
                vlan,
                if_exists,
            } => reply(self.fdb_del(&bridge, &mac, vlan, if_exists)),
            Request::DumpPorts { bridge, interface } => {
                reply(self.dump_ports(&bridge, interface.as_deref()))
            }
            Request::SetBr(settings) => reply(self.set_br(settings)),
            Request::MdbShow { bridge } => reply(self.mdb_show(&bridge)),
            Request::MdbFlush { bridge } => reply(self.mdb_flush(bridge.as_deref())),
            Request::MdbStats { bridge } => reply(self.mdb_stats(&bridge)),
            Request::AddNsPort(params) => reply(self.add_ns_port(params).await),
            Request::DelNsPort {
                bridge,
                netns,
                ifname,
                if_exists,
            } => {
                let ifname = ifname.unwrap_or_else(|| "eth0".to_string());
                reply(self.del_ns_port(&bridge, &netns, &ifname, if_exists).await)
            }
            Request::Batch { commands } => reply(self.batch(commands).await),
            Request::AddMirror {
                bridge,
                mirror,
                may_exist,
            } => reply(self.add_mirror(&bridge, mirror, may_exist).await),
            Request::DelMirror {
                bridge,
                name,
                if_exists,
            } => reply(self.del_mirror(&bridge, &name, if_exists).await),
            Request::ListMirrors { bridge } => reply(self.list_mirrors(&bridge)),
        }
    }

    /// Drops aged-out MAC entries on every bridge; tells monitors what changed
    /// meanwhile without a request (a port blocked, a carrier lost).
    pub fn expire_fdbs(&mut self) {
        let now = now_ms();
        for bridge in self.bridges.values() {
            bridge.dp.expire(now);
        }
        self.publish_changes();
    }

    pub(super) fn bridge(&self, name: &str) -> Result<&RunningBridge, RpcError> {
        self.bridges.get(name).ok_or_else(|| no_bridge(name))
    }

    /// A bridge's configuration, as saved.
    pub(super) fn bridge_config(&self, name: &str) -> Result<&BridgeConfig, RpcError> {
        self.db.bridges.get(name).ok_or_else(|| no_bridge(name))
    }

    pub(super) fn bridge_mut(&mut self, name: &str) -> &mut RunningBridge {
        self.bridges.get_mut(name).expect("bridge exists")
    }

    /// The bridge that has a port named `port`.
    pub(super) fn bridge_of(&self, port: &str) -> Option<&str> {
        self.bridges
            .iter()
            .find(|(_, b)| b.ports.contains_key(port))
            .map(|(name, _)| name.as_str())
    }

    /// A port's configuration.
    pub(super) fn port_config(&self, bridge: &str, port: &str) -> Option<&PortConfig> {
        self.db.bridges.get(bridge)?.port(port)
    }

    pub(super) fn start_bridge(&mut self, name: &str, config: &BridgeConfig) {
        let dp = self
            .datapath
            .add_bridge(name, config.mac_table_size, config.mac_aging_time);
        dp.set_group_fwd_mask(config.group_fwd_mask);
        dp.set_snooping(&config.mcast_snooping);
        self.bridges.insert(
            name.to_string(),
            RunningBridge {
                dp,
                ports: BTreeMap::new(),
                mirror_stats: BTreeMap::new(),
                mirrors_applied: Applied::default(),
            },
        );
    }

    pub(super) async fn stop_bridge(&mut self, name: &str) {
        // Held until no thread runs a view with them, so that they close off
        // the datapath threads, as `detach` does.
        let ports: Vec<Arc<Port>> = self
            .bridges
            .remove(name)
            .map(|b| {
                b.ports
                    .into_values()
                    .filter_map(|state| state.port().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let generation = self.datapath.remove_bridge(name);
        self.wait_applied(generation).await;
        for port in ports {
            self.datapath.retire(port);
        }
    }

    pub(super) async fn wait_applied(&self, generation: u64) {
        // Woken by the threads rather than polled: a timer's tick (a
        // millisecond) was most of what a port change cost.
        let applied = async {
            loop {
                let signalled = self.applied.notified();
                tokio::pin!(signalled);
                // Registered before the check, so a switch right after it still wakes us.
                signalled.as_mut().enable();
                if self.datapath.is_applied(generation) {
                    return;
                }
                signalled.await;
            }
        };
        if tokio::time::timeout(APPLY_TIMEOUT, applied).await.is_err() {
            tracing::warn!("datapath threads slow to apply a topology change");
        }
    }

    /// Starts forwarding on a configured port, as its kind says: a packet socket
    /// on an interface that exists, or the bridge's own TAP.
    pub(super) async fn attach(
        &mut self,
        bridge: &str,
        port: &PortConfig,
    ) -> Result<Arc<Port>, AttachError> {
        port.vlan.clone().check().map_err(AttachError::BadVlan)?;
        match port.kind {
            PortKind::System => self.attach_system(bridge, port).await,
            PortKind::Internal => self.attach_internal(bridge, port).await,
            PortKind::Vxlan => {
                let tunnel = port.tunnel.as_ref().ok_or_else(|| {
                    AttachError::Tunnel("a vxlan port without options in the database".into())
                })?;
                self.open_tunnel(&port.name, tunnel).await?;
                let attached = self.attach_system(bridge, port).await;
                match &attached {
                    Ok(p) => {
                        self.refresh_tunnel_fast_path(bridge, &port.name, p.id);
                        p.send_through_tc();
                    }
                    Err(_) => self.close_tunnel(&port.name).await,
                }
                attached
            }
        }
    }

    async fn attach_system(
        &self,
        bridge: &str,
        port: &PortConfig,
    ) -> Result<Arc<Port>, AttachError> {
        let iface = port.name.as_str();
        let index = self
            .netlink
            .link_index(iface)
            .await?
            .ok_or_else(|| AttachError::NoSuchInterface(iface.to_string()))?;
        self.netlink.set_up(iface, index).await?;
        let fast_path = !self.mirrored(bridge, port);
        let (port, generation) = self
            .datapath
            .add_port(bridge, iface, index, &port.vlan, fast_path)?;
        self.follow_qdisc(&port).await;
        self.wait_applied(generation).await;
        Ok(port)
    }

    /// Creates the TAP and forwards on it.
    async fn attach_internal(
        &self,
        bridge: &str,
        config: &PortConfig,
    ) -> Result<Arc<Port>, AttachError> {
        let name = config.name.as_str();
        let (port, generation) = self
            .datapath
            .add_internal_port(bridge, name, &config.vlan)?;
        self.wait_applied(generation).await;
        let set_up = match port.ifindex() {
            Some(index) => self.netlink.set_up(name, index).await,
            None => Ok(()),
        };
        if let Err(e) = set_up {
            self.detach(bridge, PortState::Attached(port)).await;
            return Err(e.into());
        }
        Ok(port)
    }

    /// Stops forwarding on a port, if it was.
    pub(super) async fn detach(&self, bridge: &str, state: PortState) {
        if let PortState::Attached(port) = state {
            let generation = self.datapath.remove_port(bridge, port.id);
            self.wait_applied(generation).await;
            self.datapath.forget_port(bridge, port.id);
            self.datapath.retire(port);
        }
    }

    /// Deletes an interface if it is still there; failures are only logged, as
    /// the configuration no longer refers to it.
    pub(super) async fn delete_link(&self, name: &str) {
        let result = match self.netlink.link_index(name).await {
            Ok(Some(index)) => self.netlink.delete_link(name, index).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_name;

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
