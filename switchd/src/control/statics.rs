//! `fdb-add` and `fdb-del`: static MAC entries, as `ovs-appctl fdb/add` and
//! `fdb/del` make them. They are configuration: saved in the database with their
//! bridge, put in the table whenever their port attaches, gone with their port.
//! A control plane that knows where remote addresses are (EVPN) adds them the
//! same way.

use super::switch::{err, PortState, RpcResult, Switch};
use crate::config::StaticMac;
use crate::datapath::vlan::PortVlan;
use crate::datapath::FdbKey;
use crate::wire::MacAddr;
use switchd_proto::{code, MAX_VLAN};

/// The table key of a static entry as the user wrote it, or why it is not one.
fn key(mac: &str, vlan: u16) -> RpcResult<FdbKey> {
    let invalid = |m: String| err(code::INVALID_PARAMS, m);
    let mac: MacAddr = mac.parse().map_err(|_| {
        invalid(format!(
            "{mac:?} is not a MAC address (like 02:00:00:00:00:01)"
        ))
    })?;
    if mac.is_multicast() {
        return Err(invalid(format!(
            "{mac} is a group address: frames to it are flooded, never looked up"
        )));
    }
    if vlan > MAX_VLAN {
        return Err(invalid(format!(
            "VLAN {vlan} is out of range: VLANs are 0 to {MAX_VLAN}"
        )));
    }
    Ok(FdbKey { vlan, mac })
}

/// Whether database entry `s` is the static entry for `key` (compared parsed:
/// a hand-edited file may spell the MAC in capitals).
fn is_entry(s: &StaticMac, key: &FdbKey) -> bool {
    s.vlan == key.vlan && s.mac.parse::<MacAddr>() == Ok(key.mac)
}

impl Switch {
    pub(super) fn fdb_add(
        &mut self,
        bridge: &str,
        port: &str,
        mac: &str,
        vlan: u16,
    ) -> RpcResult<()> {
        let key = key(mac, vlan)?;
        let running = self.bridge(bridge)?;
        let Some(state) = running.ports.get(port) else {
            return Err(err(
                code::NOT_FOUND,
                format!("bridge {bridge} does not have a port {port}"),
            ));
        };
        let id = state.port().map(|p| p.id);
        let vlans = self
            .port_config(bridge, port)
            .map(|c| PortVlan::new(&c.vlan))
            .unwrap_or_default();
        if !vlans.carries(vlan) {
            return Err(err(
                code::INVALID_PARAMS,
                format!(
                    "port {port} does not carry VLAN {vlan} (see its tag, trunks and vlan_mode)"
                ),
            ));
        }
        let entry = StaticMac {
            mac: key.mac.to_string(),
            vlan,
            port: port.to_string(),
        };
        self.change(|db| {
            let statics = &mut db
                .bridges
                .get_mut(bridge)
                .expect("bridge exists")
                .static_macs;
            statics.retain(|s| !is_entry(s, &key));
            statics.push(entry);
        })?;
        // A port that is not attached gets it when it is.
        if let Some(id) = id {
            self.bridges[bridge].dp.add_static(key, id);
        }
        Ok(())
    }

    pub(super) fn fdb_del(
        &mut self,
        bridge: &str,
        mac: &str,
        vlan: u16,
        if_exists: bool,
    ) -> RpcResult<()> {
        let key = key(mac, vlan)?;
        let dp = self.bridge(bridge)?.dp.clone();
        let configured = self.db.bridges[bridge]
            .static_macs
            .iter()
            .any(|s| is_entry(s, &key));
        if configured {
            self.change(|db| {
                let statics = &mut db
                    .bridges
                    .get_mut(bridge)
                    .expect("bridge exists")
                    .static_macs;
                statics.retain(|s| !is_entry(s, &key));
            })?;
            dp.remove_static(&key);
            return Ok(());
        }
        // As `ovs-appctl fdb/del`, a learned entry may go too (until it is
        // learned again).
        if dp.forget(&key) || if_exists {
            return Ok(());
        }
        Err(err(
            code::NOT_FOUND,
            format!(
                "bridge {bridge} has no entry for {} in VLAN {vlan}",
                key.mac
            ),
        ))
    }

    /// Puts the static entries of `statics` whose port is attached (only
    /// `port`'s, if given) into the running bridge's table.
    pub(super) fn install_statics(&self, bridge: &str, statics: &[StaticMac], port: Option<&str>) {
        let Some(running) = self.bridges.get(bridge) else {
            return;
        };
        for s in statics.iter().filter(|s| port.is_none_or(|p| p == s.port)) {
            let (Ok(key), Some(PortState::Attached(p))) =
                (key(&s.mac, s.vlan), running.ports.get(&s.port))
            else {
                continue;
            };
            running.dp.add_static(key, p.id);
        }
    }

    /// Takes out of the running bridge the static entries of `old` that `new`
    /// does not have (undoing a batch's `fdb-add`).
    pub(super) fn uninstall_statics(&self, bridge: &str, old: &[StaticMac], new: &[StaticMac]) {
        let Some(running) = self.bridges.get(bridge) else {
            return;
        };
        for s in old.iter().filter(|s| !new.contains(s)) {
            if let Ok(key) = key(&s.mac, s.vlan) {
                running.dp.remove_static(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn static_keys_are_checked() {
        assert_eq!(key("02:00:00:00:00:01", 10).unwrap().vlan, 10);
        assert!(key("02:00:00:00:00", 0)
            .unwrap_err()
            .message
            .contains("not a MAC"));
        assert!(key("01:00:5e:00:00:01", 0)
            .unwrap_err()
            .message
            .contains("group address"));
        assert!(key("02:00:00:00:00:01", 4095)
            .unwrap_err()
            .message
            .contains("out of range"));
    }
}
