//! `add-port` and `del-port`.

use super::switch::{err, validate_name, AttachError, PortState, RpcResult, Switch};
use crate::config::{PortConfig, PortKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use switchd_proto::{code, FoundPort, PortColumn, TunnelConfig, VlanConfig};

/// A port's tunnel settings from its `type` and `options`, checked.
fn tunnel_of(
    iface: &str,
    kind: PortKind,
    options: &BTreeMap<String, String>,
) -> RpcResult<Option<TunnelConfig>> {
    let invalid = |m: String| err(code::INVALID_PARAMS, format!("interface {iface}: {m}"));
    match kind {
        PortKind::Vxlan => TunnelConfig::from_options(options)
            .map(Some)
            .map_err(invalid),
        PortKind::Internal => Err(invalid(
            "type=internal: a bridge has one internal port, made with it (add-br)".into(),
        )),
        PortKind::System if !options.is_empty() => Err(invalid(format!(
            "options apply to tunnel ports (type=vxlan), not to type={}",
            kind.as_str()
        ))),
        PortKind::System => Ok(None),
    }
}

impl Switch {
    /// Refuses a port name that is taken: by a port of any bridge (`may_exist`
    /// allows one of `bridge` itself; true then) or by a bridge.
    pub(super) fn check_port_name(
        &self,
        bridge: &str,
        name: &str,
        may_exist: bool,
    ) -> RpcResult<bool> {
        if let Some(owner) = self.bridge_of(name) {
            if may_exist && owner == bridge {
                return Ok(true);
            }
            return Err(err(
                code::ALREADY_EXISTS,
                format!("{name} is already a port of {owner}"),
            ));
        }
        if self.bridges.contains_key(name) {
            return Err(err(
                code::ALREADY_EXISTS,
                format!("{name} is a bridge, not an interface"),
            ));
        }
        Ok(false)
    }

    /// `add-port`: `config` as the request gave it (name, kind, VLAN columns,
    /// external_ids); its tunnel comes from `options`.
    pub(super) async fn add_port(
        &mut self,
        bridge: &str,
        may_exist: bool,
        mut config: PortConfig,
        options: BTreeMap<String, String>,
    ) -> RpcResult<()> {
        let iface = config.name.clone();
        let iface = iface.as_str();
        validate_name("interface", iface)?;
        config.vlan = config
            .vlan
            .check()
            .map_err(|m| err(code::INVALID_PARAMS, format!("port {iface}: {m}")))?;
        check_external_ids(&config.external_ids)?;
        config.tunnel = tunnel_of(iface, config.kind, &options)?;
        self.bridge(bridge)?;
        if self.check_port_name(bridge, iface, may_exist)? {
            return Ok(());
        }
        if let Some(t) = &config.tunnel {
            self.check_tunnel_clash(iface, t)?;
        }
        let port = self.attach(bridge, &config).await.map_err(|e| match e {
            AttachError::NoSuchInterface(_) => err(code::NOT_FOUND, e.to_string()),
            _ => err(code::FAILED, e.to_string()),
        })?;
        let saved = self
            .change_with_port(bridge, port, |db| {
                db.bridges
                    .get_mut(bridge)
                    .expect("bridge exists")
                    .ports
                    .push(Arc::new(config));
            })
            .await;
        if saved.is_err() {
            self.close_tunnel(iface).await;
        }
        saved?;
        tracing::info!(bridge, port = iface, "port added");
        Ok(())
    }

    /// `set interface I type=.. options:k=v external_ids:k=v`: a tunnel port's
    /// options change (the tunnel is made anew, and the old one kept if the new
    /// one fails); a port's type cannot; external_ids given are merged into the
    /// port's, without touching the running port.
    pub(super) async fn set_interface(
        &mut self,
        iface: &str,
        kind: Option<PortKind>,
        options: BTreeMap<String, String>,
        external_ids: BTreeMap<String, String>,
    ) -> RpcResult<()> {
        let Some(bridge) = self.bridge_of(iface).map(str::to_string) else {
            return Err(err(code::NOT_FOUND, format!("no interface named {iface}")));
        };
        let old = self
            .port_config(&bridge, iface)
            .cloned()
            .unwrap_or_else(|| PortConfig::system(iface));
        let mut ids = old.external_ids.clone();
        ids.extend(external_ids);
        check_external_ids(&ids)?;
        if let Some(kind) = kind.filter(|k| *k != old.kind) {
            return Err(err(
                code::INVALID_PARAMS,
                format!(
                    "interface {iface} is type={}; its type cannot change to {} (del-port it and add-port it again)",
                    old.kind.as_str(),
                    kind.as_str()
                ),
            ));
        }
        // No options: no tunnel to check or remake (any kind, the internal
        // port's included), only bookkeeping.
        let tunnel = if options.is_empty() {
            old.tunnel.clone()
        } else {
            let mut merged = old
                .tunnel
                .as_ref()
                .map(TunnelConfig::options)
                .unwrap_or_default();
            merged.extend(options);
            tunnel_of(iface, old.kind, &merged)?
        };
        if tunnel == old.tunnel {
            // The running port stays as it is.
            if ids == old.external_ids {
                return Ok(());
            }
            return self.change(|db| {
                let b = db.bridges.get_mut(&bridge).expect("bridge exists");
                if let Some(p) = b.port_mut(iface) {
                    p.external_ids = ids;
                }
            });
        }
        let old_with_ids = PortConfig {
            external_ids: ids,
            ..old.clone()
        };
        if let Some(t) = &tunnel {
            self.check_tunnel_clash(iface, t)?;
        }
        let config = PortConfig {
            tunnel,
            ..old_with_ids
        };
        if let Some(state) = self.bridge_mut(&bridge).ports.remove(iface) {
            self.detach(&bridge, state).await;
        }
        self.tunnels.ports.remove(iface);
        let (state, result) = match self.attach(&bridge, &config).await {
            Ok(port) => {
                let saved = self.change(|db| {
                    let b = db.bridges.get_mut(&bridge).expect("bridge exists");
                    if let Some(p) = b.port_mut(iface) {
                        *p = config.clone();
                    }
                });
                match saved {
                    Ok(()) => (PortState::Attached(port), Ok(())),
                    Err(e) => {
                        self.detach(&bridge, PortState::Attached(port)).await;
                        self.tunnels.ports.remove(iface);
                        (self.reattach(&bridge, &old).await, Err(e))
                    }
                }
            }
            Err(e) => (
                self.reattach(&bridge, &old).await,
                Err(err(code::FAILED, e.to_string())),
            ),
        };
        self.bridge_mut(&bridge)
            .ports
            .insert(iface.to_string(), state);
        // A new UDP port leaves the old one's device unused.
        self.tidy_tunnels().await;
        if result.is_ok() {
            let statics = self.db.bridges[&bridge].static_macs.clone();
            self.install_statics(&bridge, &statics, Some(iface));
            tracing::info!(bridge, port = iface, "interface options changed");
        }
        result
    }

    /// `find-ports`: the ports whose external_ids hold every pair of `wanted`.
    pub(super) fn find_ports(&self, wanted: &BTreeMap<String, String>) -> Vec<FoundPort> {
        self.db
            .bridges
            .iter()
            .flat_map(|(bridge, config)| config.ports.iter().map(move |p| (bridge, p)))
            .filter(|(_, p)| wanted.iter().all(|(k, v)| p.external_ids.get(k) == Some(v)))
            .map(|(bridge, p)| FoundPort {
                bridge: bridge.clone(),
                port: p.name.clone(),
                netns: p.netns.as_ref().map(|n| n.netns.clone()),
                ifname: p.netns.as_ref().map(|n| n.ifname.clone()),
                external_ids: p.external_ids.clone(),
            })
            .collect()
    }

    async fn reattach(&mut self, bridge: &str, config: &PortConfig) -> PortState {
        match self.attach(bridge, config).await {
            Ok(port) => {
                let statics = self.db.bridges[bridge].static_macs.clone();
                self.install_statics(bridge, &statics, Some(&config.name));
                PortState::Attached(port)
            }
            Err(e) => PortState::Failed(e.to_string()),
        }
    }

    /// `set port` and `clear port`: changes a port's VLAN columns, checked as a
    /// whole, saved, then applied to the running port.
    pub(super) async fn set_port(
        &mut self,
        port: &str,
        set: &VlanConfig,
        clear: &[PortColumn],
    ) -> RpcResult<()> {
        let Some(bridge) = self.bridge_of(port).map(str::to_string) else {
            return Err(err(code::NOT_FOUND, format!("no port named {port}")));
        };
        let old = self
            .port_config(&bridge, port)
            .map(|p| p.vlan.clone())
            .unwrap_or_default();
        let vlan = old
            .changed(set, clear)
            .check()
            .map_err(|m| err(code::INVALID_PARAMS, format!("port {port}: {m}")))?;
        if vlan == old {
            return Ok(());
        }
        self.change(|db| {
            let config = db.bridges.get_mut(&bridge).expect("bridge exists");
            if let Some(p) = config.port_mut(port) {
                p.vlan = vlan.clone();
            }
        })?;
        self.apply_vlan(&bridge, port, &vlan).await;
        tracing::info!(bridge, port, ?vlan, "port VLAN settings changed");
        Ok(())
    }

    /// Gives a running port new VLAN settings (a port that is not attached
    /// takes them when it is).
    pub(super) async fn apply_vlan(&self, bridge: &str, port: &str, vlan: &VlanConfig) {
        let Some(running) = self.bridges[bridge]
            .ports
            .get(port)
            .and_then(PortState::port)
        else {
            return;
        };
        self.drop_tunnel_fast_path(port);
        let generation = self.datapath.set_vlan(bridge, running.id, vlan);
        self.wait_applied(generation).await;
        self.datapath.finish_set_vlan(bridge, running.id);
        self.refresh_tunnel_fast_path(bridge, port, running.id);
    }

    pub(super) async fn del_port(
        &mut self,
        bridge: Option<&str>,
        iface: &str,
        if_exists: bool,
    ) -> RpcResult<()> {
        if let Some(bridge) = bridge {
            self.bridge(bridge)?;
        }
        let owner = match (self.bridge_of(iface), bridge) {
            (Some(owner), Some(bridge)) if owner != bridge => None,
            (owner, _) => owner.map(str::to_string),
        };
        let Some(owner) = owner else {
            if if_exists {
                return Ok(());
            }
            return Err(err(
                code::NOT_FOUND,
                match bridge {
                    Some(bridge) => format!("bridge {bridge} does not have a port {iface}"),
                    None => format!("no port named {iface}"),
                },
            ));
        };
        if self
            .port_config(&owner, iface)
            .is_some_and(|p| p.kind == PortKind::Internal)
        {
            return Err(err(
                code::FAILED,
                format!(
                    "cannot delete port {iface}: it is the internal port of bridge {owner} (delete the bridge instead)"
                ),
            ));
        }
        // An add-ns-port veth stays (del-ns-port removes it); it simply stops
        // being a port.
        self.change(|db| {
            let config = db.bridges.get_mut(&owner).expect("bridge exists");
            config.ports.retain(|p| p.name != iface);
            config.static_macs.retain(|s| s.port != iface);
            super::mirrors::forget_port(config, iface);
        })?;
        let state = self
            .bridge_mut(&owner)
            .ports
            .remove(iface)
            .expect("port exists");
        self.detach(&owner, state).await;
        self.close_tunnel(iface).await;
        tracing::info!(bridge = %owner, port = iface, "port deleted");
        Ok(())
    }
}

/// external_ids are the caller's; switchd only refuses what no caller can
/// mean (an empty key) and what would bloat every save of the database.
pub(super) fn check_external_ids(ids: &BTreeMap<String, String>) -> RpcResult<()> {
    const MAX_BYTES: usize = 4096;
    if ids.keys().any(String::is_empty) {
        return Err(err(
            code::INVALID_PARAMS,
            "external_ids: a key cannot be empty",
        ));
    }
    let bytes: usize = ids.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_BYTES {
        return Err(err(
            code::INVALID_PARAMS,
            format!("external_ids: {bytes} bytes, more than the {MAX_BYTES} a port may keep"),
        ));
    }
    Ok(())
}
