//! Following interfaces as they appear, change, are renamed or go away
//! (rtnetlink link notifications, `control::follow_links`).

use super::netlink::LinkEvent;
use super::switch::{PortState, Switch};
use crate::config::PortKind;
use crate::datapath::Port;

impl Switch {
    /// A configured port attaches when its interface appears and detaches when it
    /// goes, without touching the other ports.
    pub async fn process_link_event(&mut self, event: LinkEvent) {
        self.follow_link(event).await;
        // A port that went or came back changes what its mirrors do.
        self.apply_all_mirrors().await;
    }

    async fn follow_link(&mut self, event: LinkEvent) {
        let (name, index, present) = match &event {
            LinkEvent::Present { name, index } => (name.as_str(), *index, true),
            LinkEvent::Gone { name, index } => (name.as_str(), *index, false),
            LinkEvent::Qdisc { index } => {
                let ports: Vec<_> = self
                    .bridges
                    .values()
                    .flat_map(|b| b.ports.values())
                    .filter_map(|state| match state {
                        PortState::Attached(p) if p.ifindex() == Some(*index) => Some(p.clone()),
                        _ => None,
                    })
                    .collect();
                for port in ports {
                    self.follow_qdisc(&port).await;
                }
                return;
            }
        };
        // An attached port whose interface went away, or now has another name.
        let lost: Vec<(String, String)> = self
            .bridges
            .iter()
            .flat_map(|(bridge, b)| {
                b.ports.iter().filter_map(move |(port, state)| match state {
                    PortState::Attached(p)
                        if p.ifindex() == Some(index) && (!present || port != name) =>
                    {
                        Some((bridge.clone(), port.clone()))
                    }
                    _ => None,
                })
            })
            .collect();
        // Ports that go through a vxlan device that went are lost as well.
        let mut lost = lost;
        if !present {
            for port in self.forget_device(index) {
                if let Some(bridge) = self.bridge_of(&port).map(str::to_string) {
                    lost.push((bridge, port));
                }
            }
        }
        let any_lost = !lost.is_empty();
        for (bridge, port) in lost.clone() {
            let failed = PortState::Failed("no such device".to_string());
            let state = std::mem::replace(
                self.bridge_mut(&bridge)
                    .ports
                    .get_mut(&port)
                    .expect("port exists"),
                failed,
            );
            self.detach(&bridge, state).await;
            // A tunnel's veth went: its programs go with it; a restart makes it anew.
            self.tunnels.ports.remove(&port);
            tracing::warn!(bridge = %bridge, port = %port, "interface gone; port detached");
        }
        if any_lost {
            self.tidy_tunnels().await;
        }
        // An internal port's or a tunnel's interfaces are switchd's own: it
        // makes them again, as a restart would.
        for (bridge, port) in lost {
            self.remake_own_port(&bridge, &port).await;
        }
        if !present {
            return;
        }
        // A configured port whose interface (re)appeared under its name.
        let Some(bridge) = self.bridge_of(name).map(str::to_string) else {
            return;
        };
        let Some(config) = self.port_config(&bridge, name).cloned() else {
            return;
        };
        if let Some(PortState::Attached(p)) = self.bridges[&bridge].ports.get(name) {
            if p.ifindex() == Some(index) {
                // Some other change, perhaps the MTU (a tunnel's follows its underlay).
                if let Err(e) = p.refresh_mtu() {
                    tracing::warn!(bridge = %bridge, port = name, "kernel fast path: cannot set the new MTU: {e}");
                }
                return;
            }
        }
        // Only a system port's interface is someone else's to create: one that
        // appears under an internal or tunnel port's name is not what switchd makes.
        if config.kind != PortKind::System {
            return;
        }
        self.reattach_port(&bridge, name, "interface appeared; port attached")
            .await;
    }

    /// Sends what `port` forwards through its interface's root queueing
    /// discipline if the user set one up, past it if not (the default's cost is
    /// saved; a veth has none).
    pub(super) async fn follow_qdisc(&self, port: &Port) {
        let Some(index) = port.ifindex() else {
            return;
        };
        let kind = match self.netlink.link_state(index).await {
            Ok(Some(link)) => link.qdisc,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(port = %port.name, "cannot read the interface's queueing discipline: {e}");
                return;
            }
        };
        let queued = users_qdisc(kind.as_deref());
        if port.set_queued(queued) {
            match &kind {
                Some(kind) if queued => {
                    tracing::info!(port = %port.name, qdisc = %kind, "port sends through its queueing discipline")
                }
                _ => {
                    tracing::info!(port = %port.name, "port sends past the default queueing discipline")
                }
            }
        }
    }

    /// Internal or tunnel port `port`, lost with one of its interfaces, made
    /// again.
    async fn remake_own_port(&mut self, bridge: &str, port: &str) {
        if self
            .port_config(bridge, port)
            .is_some_and(|c| matches!(c.kind, PortKind::Internal | PortKind::Vxlan))
        {
            self.reattach_port(bridge, port, "interface deleted from outside; made again")
                .await;
        }
    }

    /// Attaches configured port `name` anew in place of its present state.
    async fn reattach_port(&mut self, bridge: &str, name: &str, done: &str) {
        let Some(config) = self.port_config(bridge, name).cloned() else {
            return;
        };
        let new_state = match self.attach(bridge, &config).await {
            Ok(port) => {
                tracing::info!(bridge, port = name, "{done}");
                PortState::Attached(port)
            }
            Err(e) => {
                tracing::warn!(bridge, port = name, "cannot attach: {e}");
                PortState::Failed(e.to_string())
            }
        };
        let old = std::mem::replace(
            self.bridge_mut(bridge)
                .ports
                .get_mut(name)
                .expect("port exists"),
            new_state,
        );
        self.detach(bridge, old).await;
        let statics = self.db.bridges[bridge].static_macs.clone();
        self.install_statics(bridge, &statics, Some(name));
    }
}

/// Whether root qdisc `kind` is one a user set up: not none, `noqueue` (a veth's),
/// `mq` (a multiqueue NIC's) or `net.core.default_qdisc`.
fn users_qdisc(kind: Option<&str>) -> bool {
    let Some(kind) = kind else {
        return false;
    };
    if matches!(kind, "noqueue" | "mq") {
        return false;
    }
    let default = std::fs::read_to_string("/proc/sys/net/core/default_qdisc").unwrap_or_default();
    kind != default.trim()
}
