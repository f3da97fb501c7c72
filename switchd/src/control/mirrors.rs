//! Port mirrors: `add-mirror`, `del-mirror`, `list-mirrors`, and keeping the
//! datapath's copy of them (port ids, the ports off the fast path) in step with
//! the database and the running ports (`apply_mirrors`, after every request
//! and link event).

use super::switch::{err, PortState, RpcResult, Switch};
use crate::config::{BridgeConfig, MirrorConfig, PortConfig, PortKind};
use crate::datapath::mirror::{MirrorOutput, MirrorRule, MirrorStats, Selection};
use crate::datapath::PortId;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use switchd_proto::{code, MirrorInfo};

/// Longest mirror name.
const MAX_NAME: usize = 64;

/// What a bridge's datapath runs now, to skip re-applying what did not change.
#[derive(Default, PartialEq, Eq)]
pub(super) struct Applied {
    /// Each mirror's name (whose statistics the datapath counts into) and selection.
    selections: Vec<(String, Selection)>,
    slow: Vec<PortId>,
}

/// Checks a mirror against its bridge's ports.
fn check(config: &BridgeConfig, m: &MirrorConfig) -> RpcResult<()> {
    let invalid = |why: String| {
        Err(err(
            code::INVALID_PARAMS,
            format!("mirror {}: {why}", m.name),
        ))
    };
    if m.name.is_empty() || m.name.len() > MAX_NAME || m.name.chars().any(char::is_control) {
        return Err(err(
            code::INVALID_PARAMS,
            format!(
                "invalid mirror name {:?}: 1 to {MAX_NAME} printable characters",
                m.name
            ),
        ));
    }
    match (&m.output_port, m.output_vlan) {
        (Some(_), Some(_)) => {
            return invalid("output_port and output_vlan exclude each other".into())
        }
        (None, None) => return invalid("needs output_port or output_vlan".into()),
        (None, Some(v)) if !(1..=4094).contains(&v) => {
            return invalid(format!("output_vlan {v}: must be 1 to 4094"))
        }
        _ => {}
    }
    if !m.select_all && m.select_src_port.is_empty() && m.select_dst_port.is_empty() {
        return invalid(
            "selects nothing: give select_all=true, select_src_port or select_dst_port".into(),
        );
    }
    if let Some(v) = m.select_vlan.iter().find(|&&v| v > 4094) {
        return invalid(format!("select_vlan {v}: must be 0 to 4094"));
    }
    let named = m
        .select_src_port
        .iter()
        .chain(&m.select_dst_port)
        .chain(&m.output_port);
    for name in named {
        match config.port(name) {
            None => {
                return Err(err(
                    code::NOT_FOUND,
                    format!("mirror {}: no port named {name} on the bridge", m.name),
                ))
            }
            Some(p) if p.kind == PortKind::Vxlan => {
                return invalid(format!(
                    "{name} is a tunnel port, whose frames the kernel fast path carries \
                     past the userspace datapath; mirror the local ports"
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(out) = &m.output_port {
        if m.select_src_port.contains(out) || m.select_dst_port.contains(out) {
            return invalid(format!(
                "{out} is the output port; it cannot be selected too"
            ));
        }
        if let Some(other) = config
            .mirrors
            .iter()
            .filter(|o| o.name != m.name)
            .find(|o| o.select_src_port.contains(out) || o.select_dst_port.contains(out))
        {
            return invalid(format!("{out} is selected by mirror {}", other.name));
        }
    }
    for other in config.mirrors.iter().filter(|o| o.name != m.name) {
        if let Some(p) = m
            .select_src_port
            .iter()
            .chain(&m.select_dst_port)
            .find(|p| other.output_port.as_ref() == Some(*p))
        {
            return invalid(format!("{p} is the output port of mirror {}", other.name));
        }
    }
    Ok(())
}

/// Takes a port out of a bridge's mirrors, as Open vSwitch does when it goes:
/// a mirror whose output port it was, or that selects nothing without it, goes.
pub(super) fn forget_port(config: &mut BridgeConfig, port: &str) {
    config.mirrors.retain_mut(|m| {
        m.select_src_port.retain(|p| p != port);
        m.select_dst_port.retain(|p| p != port);
        m.output_port.as_deref() != Some(port)
            && (m.select_all || !m.select_src_port.is_empty() || !m.select_dst_port.is_empty())
    });
}

impl Switch {
    pub(super) async fn add_mirror(
        &mut self,
        bridge: &str,
        mirror: MirrorConfig,
        may_exist: bool,
    ) -> RpcResult<()> {
        let config = self.bridge_config(bridge)?;
        if config.mirrors.iter().any(|m| m.name == mirror.name) {
            if may_exist {
                return Ok(());
            }
            return Err(err(
                code::ALREADY_EXISTS,
                format!("bridge {bridge} has a mirror named {}", mirror.name),
            ));
        }
        check(config, &mirror)?;
        self.change(|db| {
            db.bridges
                .get_mut(bridge)
                .expect("checked above")
                .mirrors
                .push(mirror)
        })?;
        self.apply_mirrors(bridge).await;
        Ok(())
    }

    pub(super) async fn del_mirror(
        &mut self,
        bridge: &str,
        name: &str,
        if_exists: bool,
    ) -> RpcResult<()> {
        let config = self.bridge_config(bridge)?;
        if !config.mirrors.iter().any(|m| m.name == name) {
            if if_exists {
                return Ok(());
            }
            return Err(err(
                code::NOT_FOUND,
                format!("bridge {bridge} has no mirror named {name}"),
            ));
        }
        self.change(|db| {
            db.bridges
                .get_mut(bridge)
                .expect("checked above")
                .mirrors
                .retain(|m| m.name != name)
        })?;
        self.apply_mirrors(bridge).await;
        Ok(())
    }

    pub(super) fn list_mirrors(&self, bridge: &str) -> RpcResult<Vec<MirrorInfo>> {
        let running = self.bridge(bridge)?;
        let config = self.bridge_config(bridge)?;
        Ok(config
            .mirrors
            .iter()
            .map(|m| {
                let stats = running.mirror_stats.get(&m.name);
                MirrorInfo {
                    config: m.clone(),
                    tx_packets: stats.map_or(0, |s| s.tx_packets.load(Relaxed)),
                    tx_bytes: stats.map_or(0, |s| s.tx_bytes.load(Relaxed)),
                    tx_dropped: stats.map_or(0, |s| s.tx_dropped.load(Relaxed)),
                }
            })
            .collect())
    }

    /// Brings every bridge's datapath mirrors in step with the database and the
    /// running ports.
    pub(super) async fn apply_all_mirrors(&mut self) {
        let bridges: Vec<String> = self.bridges.keys().cloned().collect();
        for bridge in bridges {
            self.apply_mirrors(&bridge).await;
        }
    }

    /// Resolves a bridge's mirrors to the ports running now (a mirror whose
    /// output port is not running does nothing meanwhile) and hands them to
    /// the datapath if that changes anything.
    pub(super) async fn apply_mirrors(&mut self, bridge: &str) {
        let (Some(config), Some(running)) =
            (self.db.bridges.get(bridge), self.bridges.get_mut(bridge))
        else {
            return;
        };
        if config.mirrors.is_empty() && running.mirrors_applied == Applied::default() {
            return;
        }
        let id_of = |name: &String| match running.ports.get(name) {
            Some(PortState::Attached(p)) => Some(p.id),
            _ => None,
        };
        let ids = |names: &[String]| {
            let mut ids: Vec<PortId> = names.iter().filter_map(id_of).collect();
            ids.sort_unstable();
            ids
        };
        let mut rules = Vec::new();
        let mut names = Vec::new();
        let mut slow = Vec::new();
        for m in &config.mirrors {
            let output = match (&m.output_port, m.output_vlan) {
                (Some(port), _) => match id_of(port) {
                    Some(id) => MirrorOutput::Port(id),
                    None => continue,
                },
                (None, Some(vlan)) => MirrorOutput::Vlan(vlan),
                (None, None) => continue,
            };
            let mut vlans = m.select_vlan.clone();
            vlans.sort_unstable();
            let selection = Selection {
                select_all: m.select_all,
                src: ids(&m.select_src_port),
                dst: ids(&m.select_dst_port),
                vlans,
                output,
            };
            if m.select_all {
                slow.extend(
                    config
                        .ports
                        .iter()
                        .filter(|p| p.kind != PortKind::Vxlan)
                        .filter_map(|p| id_of(&p.name)),
                );
            }
            slow.extend(&selection.src);
            slow.extend(&selection.dst);
            if let MirrorOutput::Port(id) = output {
                slow.push(id);
            }
            let stats: Arc<MirrorStats> = running
                .mirror_stats
                .entry(m.name.clone())
                .or_default()
                .clone();
            names.push(m.name.clone());
            rules.push(MirrorRule { selection, stats });
        }
        running
            .mirror_stats
            .retain(|name, _| config.mirrors.iter().any(|m| &m.name == name));
        slow.sort_unstable();
        slow.dedup();
        let applied = Applied {
            selections: names
                .into_iter()
                .zip(rules.iter().map(|r| r.selection.clone()))
                .collect(),
            slow: slow.clone(),
        };
        if applied == running.mirrors_applied {
            return;
        }
        running.mirrors_applied = applied;
        let generation = self.datapath.set_mirrors(bridge, rules, slow);
        self.wait_applied(generation).await;
        self.datapath.finish_set_mirrors(bridge);
    }

    /// Whether a mirror names port `port` of `bridge` (all of its ports but
    /// tunnel ports, for `select_all`): such a port goes without the kernel
    /// fast path.
    pub(super) fn mirrored(&self, bridge: &str, port: &PortConfig) -> bool {
        self.db.bridges.get(bridge).is_some_and(|config| {
            config.mirrors.iter().any(|m| {
                (m.select_all && port.kind != PortKind::Vxlan)
                    || m.select_src_port.contains(&port.name)
                    || m.select_dst_port.contains(&port.name)
                    || m.output_port.as_ref() == Some(&port.name)
            })
        })
    }
}
