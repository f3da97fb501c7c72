//! The switch's configuration and runtime state, with one method per request.
//!
//! Every change is validated, carried out, and saved to the database before the
//! reply; if any step fails nothing of it remains.

use super::netlink::{LinkEvent, Netlink, NetlinkError};
use crate::config::{BridgeConfig, Db};
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
        };
        for (name, config) in &db.bridges {
            switch.start_bridge(name, config);
            for iface in &config.ports {
                let state = match switch.attach(name, iface).await {
                    Ok(port) => PortState::Attached(port),
                    Err(e) => {
                        tracing::warn!(bridge = %name, port = %iface, "port not attached: {e}");
                        PortState::Failed(e.to_string())
                    }
                };
                switch.bridge_mut(name).ports.insert(iface.clone(), state);
            }
        }
        switch.db = db;
        switch
    }

    pub async fn handle(&mut self, request: Request) -> RpcResult {
        match request {
            Request::AddBr { bridge, may_exist } => self.add_br(&bridge, may_exist),
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
        if let Some(PortState::Attached(p)) = self.bridges[&bridge].ports.get(name) {
            if p.ifindex() == index {
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

    /// Saves `db` and makes it current, or leaves everything as it was.
    fn commit(&mut self, db: Db) -> Result<(), RpcError> {
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

    async fn detach(&self, bridge: &str, state: PortState) {
        if let PortState::Attached(port) = state {
            let generation = self.datapath.remove_port(bridge, port.id);
            self.wait_applied(generation).await;
            self.datapath.forget_port(bridge, port.id);
        }
    }

    fn add_br(&mut self, name: &str, may_exist: bool) -> RpcResult {
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
        let config = BridgeConfig::default();
        let mut db = self.db.clone();
        db.bridges.insert(name.to_string(), config.clone());
        self.commit(db)?;
        self.start_bridge(name, &config);
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
        db.bridges.remove(name);
        self.commit(db)?;
        self.bridges.remove(name);
        let generation = self.datapath.remove_bridge(name);
        self.wait_applied(generation).await;
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
        let mut db = self.db.clone();
        db.bridges
            .get_mut(&owner)
            .expect("bridge exists")
            .ports
            .retain(|p| p != iface);
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
                            ifindex: match state {
                                PortState::Attached(p) => Some(p.ifindex()),
                                PortState::Failed(_) => None,
                            },
                            error: Self::port_error(pname, state),
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
                PortState::Attached(p) => p.stats.snapshot(name),
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
