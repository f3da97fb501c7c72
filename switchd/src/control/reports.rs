//! What the switch reports: `show`, `fdb-show`, `fdb-flush`, `fdb-stats`,
//! `dump-ports`. Read-only but for flush, and for aging the tables first so the
//! rows and the counters agree.

use super::monitor::PortStatus;
use super::switch::{err, PortState, RpcResult, Switch};
use super::tunnels::TunnelPort;
use crate::config::PortConfig;
use crate::datapath::mcast::MdbRow;
use crate::datapath::now_ms;
use switchd_proto::{
    code, BridgeInfo, FdbEntry, FdbFlushReply, FdbStats, MdbEntry, MdbStats, PortCounters,
    PortInfo, ShowReply, MAX_VLAN,
};

/// Why a configured port is not forwarding, if it is not: it failed to attach,
/// or its interface went away since.
fn port_error(name: &str, state: &PortState) -> Option<String> {
    match state {
        PortState::Failed(why) => Some(why.clone()),
        PortState::Attached(port) => match port.ifindex() {
            // Checked here because link notifications can be lost (an overrun).
            Some(index) if crate::sys::ifindex(name) != Some(index) => {
                Some("no such device".to_string())
            }
            _ => None,
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

/// A port's state for `monitor`: as `show` says it, without the loop guard's
/// countdown.
pub(super) fn port_state(name: &str, state: &PortState, tunnel: Option<&TunnelPort>) -> PortStatus {
    let (event, reason) = if let Some(why) = port_error(name, state) {
        ("port-error", Some(why))
    } else if state
        .port()
        .is_some_and(|p| p.loop_guard.is_blocked(now_ms()))
    {
        ("port-blocked", Some("loop suspected".to_string()))
    } else {
        match tunnel
            .and_then(|t| t.down.clone())
            .or_else(|| link_down(name))
        {
            Some(why) => ("port-down", Some(why)),
            None => ("port-up", None),
        }
    };
    PortStatus { event, reason }
}

fn port_info(
    name: &str,
    config: Option<&PortConfig>,
    state: &PortState,
    tunnel: Option<&TunnelPort>,
) -> PortInfo {
    let netns = config.and_then(|c| c.netns.as_ref());
    PortInfo {
        options: config
            .and_then(|c| c.tunnel.as_ref())
            .map(|t| t.options())
            .unwrap_or_default(),
        mtu: tunnel.map(|t| t.mtu),
        external_ids: config.map(|c| c.external_ids.clone()).unwrap_or_default(),
        name: name.to_string(),
        kind: config.map(|c| c.kind).unwrap_or_default(),
        netns: netns.map(|n| n.netns.clone()),
        peer: netns.map(|n| n.ifname.clone()),
        ifindex: state.port().and_then(|p| p.ifindex()),
        vlan: config.map(|c| c.vlan.clone()).unwrap_or_default(),
        error: port_error(name, state),
        down: state
            .port()
            .and_then(|p| match p.loop_guard.blocked_for_ms(now_ms()) {
                Some(ms) => Some(format!(
                    "blocked: loop suspected, {} s left",
                    ms.div_ceil(1000)
                )),
                None => tunnel
                    .and_then(|t| t.down.clone())
                    .or_else(|| link_down(name)),
            }),
    }
}

impl Switch {
    pub(super) fn show(&self) -> ShowReply {
        let bridges = self
            .bridges
            .iter()
            .map(|(name, b)| {
                let config = &self.db.bridges[name];
                BridgeInfo {
                    name: name.clone(),
                    mac_aging_time: config.mac_aging_time,
                    mac_table_size: config.mac_table_size,
                    group_fwd_mask: config.group_fwd_mask,
                    mcast_snooping: config.mcast_snooping,
                    mirrors: self.list_mirrors(name).unwrap_or_default(),
                    ports: b
                        .ports
                        .iter()
                        .map(|(port, state)| {
                            let tunnel = self.tunnels.ports.get(port);
                            port_info(port, config.port(port), state, tunnel)
                        })
                        .collect(),
                }
            })
            .collect();
        ShowReply { bridges }
    }

    pub(super) fn fdb_show(&self, bridge: &str) -> RpcResult<Vec<FdbEntry>> {
        let b = self.bridge(bridge)?;
        let names = b.port_names();
        let now = now_ms();
        b.dp.refresh_seen(now);
        // Sweep first so the rows and the counters agree.
        b.dp.expire(now);
        let mut rows: Vec<FdbEntry> =
            b.dp.fdb()
                .rows(now)
                .map(|r| FdbEntry {
                    port: names.get(&r.port).copied().unwrap_or("?").to_string(),
                    vlan: r.key.vlan,
                    mac: r.key.mac.to_string(),
                    age: r.age_ms / 1000,
                    is_static: r.is_static,
                    remote: None,
                })
                .collect();
        for row in &mut rows {
            row.remote = self
                .tunnels
                .ports
                .get(&row.port)
                .map(|t| t.remote().to_string());
        }
        rows.sort_by(|a, b| (&a.port, a.vlan, &a.mac).cmp(&(&b.port, b.vlan, &b.mac)));
        Ok(rows)
    }

    pub(super) fn fdb_flush(
        &self,
        bridge: Option<&str>,
        vlan: Option<u16>,
    ) -> RpcResult<FdbFlushReply> {
        if let Some(v) = vlan.filter(|&v| v > MAX_VLAN) {
            return Err(err(
                code::INVALID_PARAMS,
                format!("VLAN {v} is out of range: VLANs are 0 to {MAX_VLAN}"),
            ));
        }
        let flushed = match bridge {
            Some(name) => self.bridge(name)?.dp.flush(vlan),
            None => self.bridges.values().map(|b| b.dp.flush(vlan)).sum(),
        };
        Ok(FdbFlushReply {
            flushed: flushed as u64,
        })
    }

    pub(super) fn fdb_stats(&self, bridge: &str) -> RpcResult<FdbStats> {
        let b = self.bridge(bridge)?;
        b.dp.expire(now_ms());
        let fdb = b.dp.fdb();
        let c = fdb.counters();
        Ok(FdbStats {
            current: fdb.len() as u64,
            max: fdb.max_entries() as u64,
            learned: c.learned,
            aged: c.aged,
            evicted: c.evicted,
            moved: c.moved,
        })
    }

    pub(super) fn mdb_show(&self, bridge: &str) -> RpcResult<Vec<MdbEntry>> {
        let b = self.bridge(bridge)?;
        let names = b.port_names();
        let now = now_ms();
        // Names are looked up after the lock is let go: a datapath thread
        // waiting for it holds the bridge's MAC table.
        let rows: Vec<MdbRow> = {
            let mut mdb = b.dp.mdb();
            mdb.expire(now);
            mdb.rows(now).collect()
        };
        let mut rows: Vec<(MdbRow, MdbEntry)> = rows
            .into_iter()
            .map(|r| {
                let entry = MdbEntry {
                    port: names.get(&r.port).copied().unwrap_or("?").to_string(),
                    vlan: r.vlan,
                    group: r.group.map(|g| g.to_string()),
                    age: r.age_ms / 1000,
                };
                (r, entry)
            })
            .collect();
        // Groups first, by VLAN, address and port; then the router ports.
        rows.sort_by(|(a, x), (b, y)| {
            (a.group.is_none(), a.vlan, a.group, &x.port).cmp(&(
                b.group.is_none(),
                b.vlan,
                b.group,
                &y.port,
            ))
        });
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    }

    pub(super) fn mdb_flush(&self, bridge: Option<&str>) -> RpcResult<FdbFlushReply> {
        let flushed = match bridge {
            Some(name) => self.bridge(name)?.dp.mdb().flush(),
            None => self.bridges.values().map(|b| b.dp.mdb().flush()).sum(),
        };
        Ok(FdbFlushReply {
            flushed: flushed as u64,
        })
    }

    pub(super) fn mdb_stats(&self, bridge: &str) -> RpcResult<MdbStats> {
        let b = self.bridge(bridge)?;
        let mut mdb = b.dp.mdb();
        mdb.expire(now_ms());
        let c = mdb.counters();
        Ok(MdbStats {
            enabled: mdb.enabled(),
            current: mdb.len() as u64,
            max: mdb.max_groups() as u64,
            joins: c.joins,
            leaves: c.leaves,
            aged: c.aged,
            table_full: c.table_full,
            queries: c.queries,
        })
    }

    pub(super) fn dump_ports(
        &self,
        bridge: &str,
        iface: Option<&str>,
    ) -> RpcResult<Vec<PortCounters>> {
        let b = self.bridge(bridge)?;
        if let Some(iface) = iface {
            if !b.ports.contains_key(iface) {
                return Err(err(
                    code::NOT_FOUND,
                    format!("bridge {bridge} does not have a port {iface}"),
                ));
            }
        }
        Ok(b.ports
            .iter()
            .filter(|(name, _)| iface.is_none_or(|i| i == name.as_str()))
            .map(|(name, state)| {
                let mut counters = state.port().map(|p| p.counters()).unwrap_or_default();
                if let Some(t) = self.tunnels.ports.get(name) {
                    let drops = t.drops();
                    counters.tx_too_big += drops.too_big;
                    counters.tx_no_route += drops.no_route;
                    counters.tx_drops += drops.too_big + drops.no_route;
                }
                PortCounters {
                    port: name.clone(),
                    counters,
                }
            })
            .collect())
    }
}
