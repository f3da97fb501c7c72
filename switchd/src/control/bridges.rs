//! `add-br`, `del-br`, `set-br`.

use super::switch::{err, no_bridge, validate_name, PortState, RpcResult, Switch};
use crate::config::{BridgeConfig, McastSnooping, PortConfig, PortKind};
use std::sync::Arc;
use switchd_proto::{code, SetBr};

const MAX_MAC_AGING_SECS: u64 = 1_000_000;
const MAX_MAC_TABLE_SIZE: u32 = 1_000_000;

impl Switch {
    pub(super) async fn add_br(
        &mut self,
        name: &str,
        may_exist: bool,
        no_internal: bool,
    ) -> RpcResult<()> {
        validate_name("bridge", name)?;
        if self.bridges.contains_key(name) {
            if may_exist {
                return Ok(());
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
        let internal = (!no_internal).then(|| PortConfig {
            kind: PortKind::Internal,
            ..PortConfig::system(name)
        });
        let config = BridgeConfig {
            ports: internal.iter().cloned().map(Arc::new).collect(),
            ..BridgeConfig::default()
        };
        self.start_bridge(name, &config);
        let attached = match &internal {
            Some(port) => match self.attach(name, port).await {
                Ok(port) => Some(port),
                Err(e) => {
                    self.stop_bridge(name).await;
                    return Err(err(code::FAILED, e.to_string()));
                }
            },
            None => None,
        };
        if let Err(e) = self.change(|db| {
            db.bridges.insert(name.to_string(), config);
        }) {
            self.stop_bridge(name).await;
            return Err(e);
        }
        if let Some(port) = attached {
            self.bridge_mut(name)
                .ports
                .insert(name.to_string(), PortState::Attached(port));
        }
        tracing::info!(bridge = name, "bridge added");
        Ok(())
    }

    pub(super) async fn del_br(&mut self, name: &str, if_exists: bool) -> RpcResult<()> {
        let Some(config) = self.db.bridges.get(name).cloned() else {
            return if if_exists {
                Ok(())
            } else {
                Err(no_bridge(name))
            };
        };
        self.change(|db| {
            db.bridges.remove(name);
        })?;
        self.stop_bridge(name).await;
        // Its add-ns-port veths go with it, as `del-ns-port` would take them.
        for port in config.ports {
            if port.netns.is_some() {
                self.doom_link(port.name.clone()).await;
            } else if port.kind == PortKind::Vxlan {
                self.close_tunnel(&port.name).await;
            }
        }
        tracing::info!(bridge = name, "bridge deleted");
        Ok(())
    }

    pub(super) fn set_br(&mut self, settings: SetBr) -> RpcResult<()> {
        let SetBr {
            bridge,
            mac_aging_time: aging,
            mac_table_size: size,
            forward_bpdu,
            group_fwd_mask,
            mcast_snooping_enable,
            mcast_snooping_aging_time,
            mcast_snooping_table_size,
            mcast_snooping_disable_flood_unregistered,
        } = settings;
        let bridge = bridge.as_str();
        self.bridge(bridge)?;
        let mask = match (forward_bpdu, group_fwd_mask) {
            (Some(_), Some(_)) => return Err(err(
                code::INVALID_PARAMS,
                "forward-bpdu and group-fwd-mask both set the reserved addresses relayed: give one",
            )),
            (Some(all), None) => Some(if all { u16::MAX } else { 0 }),
            (None, mask) => mask,
        };
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
        if let Some(aging) = mcast_snooping_aging_time {
            let range = McastSnooping::MIN_AGING_TIME..=McastSnooping::MAX_AGING_TIME;
            if !range.contains(&aging) {
                return Err(err(
                    code::INVALID_PARAMS,
                    format!(
                        "mcast-snooping-aging-time must be {} to {} seconds",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        if let Some(size) = mcast_snooping_table_size {
            if !(1..=McastSnooping::MAX_TABLE_SIZE).contains(&size) {
                return Err(err(
                    code::INVALID_PARAMS,
                    format!(
                        "mcast-snooping-table-size must be 1 to {}",
                        McastSnooping::MAX_TABLE_SIZE
                    ),
                ));
            }
        }
        let mut applied = (0, 0, 0, McastSnooping::default());
        self.change(|db| {
            let config = db.bridges.get_mut(bridge).expect("bridge exists");
            config.mac_aging_time = aging.unwrap_or(config.mac_aging_time);
            config.mac_table_size = size.unwrap_or(config.mac_table_size);
            config.group_fwd_mask = mask.unwrap_or(config.group_fwd_mask);
            let m = &mut config.mcast_snooping;
            m.enable = mcast_snooping_enable.unwrap_or(m.enable);
            m.aging_time = mcast_snooping_aging_time.unwrap_or(m.aging_time);
            m.table_size = mcast_snooping_table_size.unwrap_or(m.table_size);
            m.disable_flood_unregistered =
                mcast_snooping_disable_flood_unregistered.unwrap_or(m.disable_flood_unregistered);
            applied = (
                config.mac_table_size,
                config.mac_aging_time,
                config.group_fwd_mask,
                config.mcast_snooping,
            );
        })?;
        let dp = &self.bridges[bridge].dp;
        dp.set_limits(applied.0, applied.1);
        dp.set_group_fwd_mask(applied.2);
        dp.set_snooping(&applied.3);
        Ok(())
    }
}
