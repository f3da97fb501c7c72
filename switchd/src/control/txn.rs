//! Saving a change, and batches of changes (`--` chains) that take effect whole
//! or not at all.
//!
//! A handler carries a change out in the running state, then `change`s the
//! database; a batch defers the save to its end and, if anything fails, brings
//! the running state back to the saved database with the same `reconcile` that
//! builds it at start-up: one mechanism, two uses.

use super::switch::{err, PortState, RpcResult, Switch};
use crate::config::Db;
use crate::datapath::Port;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use switchd_proto::{code, PortColumn, Request, RpcError, VlanConfig};

/// Kernel objects a running batch created or wants gone, so that a failed batch
/// can leave the kernel as it found it.
#[derive(Default)]
pub(super) struct BatchState {
    /// veth pairs made by add-ns-port, deleted again if the batch fails.
    created_links: Vec<String>,
    /// veth pairs of del-ns-port and del-br, deleted only once the batch is saved.
    doomed_links: Vec<String>,
}

impl Switch {
    /// Edits a copy of the database and saves it, or leaves everything as it was.
    /// Within a batch it only becomes current; the batch saves once at its end.
    pub(super) fn change(&mut self, edit: impl FnOnce(&mut Db)) -> Result<(), RpcError> {
        let mut db = self.db.clone();
        edit(&mut db);
        if self.batch.is_none() {
            self.store
                .save(&db)
                .map_err(|e| err(code::FAILED, e.to_string()))?;
        }
        self.db = db;
        Ok(())
    }

    /// Saves a change that goes with a port attached just now: the port joins the
    /// running bridge if the change is saved, and is detached again if not.
    pub(super) async fn change_with_port(
        &mut self,
        bridge: &str,
        port: Arc<Port>,
        edit: impl FnOnce(&mut Db),
    ) -> Result<(), RpcError> {
        if let Err(e) = self.change(edit) {
            self.detach(bridge, PortState::Attached(port)).await;
            return Err(e);
        }
        self.bridge_mut(bridge)
            .ports
            .insert(port.name.clone(), PortState::Attached(port));
        Ok(())
    }

    /// Remembers a veth pair made by this request: a failed batch deletes it.
    pub(super) fn created_link(&mut self, host: &str) {
        if let Some(batch) = &mut self.batch {
            batch.created_links.push(host.to_string());
        }
    }

    /// Deletes a veth pair the configuration no longer has, now or, within a
    /// batch, once the batch is saved.
    pub(super) async fn doom_link(&mut self, host: String) {
        match &mut self.batch {
            Some(batch) => batch.doomed_links.push(host),
            None => self.delete_link(&host).await,
        }
    }

    /// Runs requests as one transaction: saved once at the end, or, if one fails,
    /// undone (the running state reconciled back to the saved database) and the
    /// error says which.
    pub(super) async fn batch(&mut self, commands: Vec<Request>) -> RpcResult<Vec<Value>> {
        if self.batch.is_some() || commands.iter().any(|c| matches!(c, Request::Batch { .. })) {
            return Err(err(code::INVALID_PARAMS, "batches cannot be nested"));
        }
        if let Some(stream) = commands.iter().find(|c| c.is_stream()) {
            return Err(err(
                code::INVALID_PARAMS,
                format!(
                    "{} streams its answer; it cannot be part of a batch",
                    stream.method()
                ),
            ));
        }
        let saved = self.db.clone();
        self.batch = Some(BatchState::default());
        let mut results = Vec::with_capacity(commands.len());
        let mut failure = None;
        for (i, command) in fold_port_settings(commands).into_iter().enumerate() {
            let Some(command) = command else {
                results.push(Value::Null);
                continue;
            };
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
            if let Err(e) = self.store.save(&self.db) {
                failure = Some(err(code::FAILED, e.to_string()));
            }
        }
        let delete = match failure {
            Some(_) => {
                self.reconcile(&saved).await;
                self.db = saved;
                state.created_links
            }
            // A tunnel port the batch made again under the same name has taken
            // its pair over (`--if-exists del-port vx1 -- add-port vx1 -- set
            // interface vx1 type=vxlan ...`); no other kind of port can.
            None => {
                let mut doomed = state.doomed_links;
                doomed.retain(|host| !self.tunnels.ports.contains_key(host));
                doomed
            }
        };
        for host in delete {
            self.delete_link(&host).await;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }
}

/// `add-port br0 p -- set port p tag=10`: the settings go into the add-port
/// (or add-ns-port), and consecutive `set`/`clear`s of one port become one, so
/// that a port never forwards, not even for a moment, with the settings it
/// would have had in between, and only the end state must make sense (as in an
/// ovsdb transaction). A folded command becomes `None`, which answers null.
fn fold_port_settings(commands: Vec<Request>) -> Vec<Option<Request>> {
    let mut out: Vec<Option<Request>> = Vec::with_capacity(commands.len());
    // Ports added or set earlier in the batch: name -> index in `out`; one map
    // for the Port table's columns, one for the Interface table's.
    let mut added: HashMap<String, usize> = HashMap::new();
    let mut interfaces: HashMap<String, usize> = HashMap::new();
    for command in commands {
        match command {
            Request::SetPort { port, set, clear } => match added.get(&port) {
                Some(&i) => {
                    match &mut out[i] {
                        Some(Request::AddPort { vlan, .. }) => *vlan = vlan.changed(&set, &clear),
                        Some(Request::AddNsPort(params)) => {
                            params.vlan = params.vlan.changed(&set, &clear)
                        }
                        Some(Request::SetPort {
                            set: first,
                            clear: cleared,
                            ..
                        }) => (*first, *cleared) = then(first, cleared, &set, &clear),
                        _ => {}
                    }
                    out.push(None);
                }
                None => {
                    added.insert(port.clone(), out.len());
                    out.push(Some(Request::SetPort { port, set, clear }));
                }
            },
            Request::SetInterface {
                interface,
                kind,
                options,
                external_ids,
            } => match interfaces.get(&interface) {
                Some(&i) => {
                    match &mut out[i] {
                        Some(Request::AddPort {
                            kind: first,
                            options: opts,
                            external_ids: ids,
                            ..
                        }) => {
                            *first = kind.unwrap_or(*first);
                            opts.extend(options);
                            ids.extend(external_ids);
                        }
                        Some(Request::SetInterface {
                            kind: first,
                            options: opts,
                            external_ids: ids,
                            ..
                        }) => {
                            *first = kind.or(*first);
                            opts.extend(options);
                            ids.extend(external_ids);
                        }
                        _ => {}
                    }
                    out.push(None);
                }
                None => {
                    interfaces.insert(interface.clone(), out.len());
                    out.push(Some(Request::SetInterface {
                        interface,
                        kind,
                        options,
                        external_ids,
                    }));
                }
            },
            Request::AddNsPort(params) => {
                let ifname = params.ifname.as_deref().unwrap_or("eth0");
                let host = params
                    .host_ifname
                    .clone()
                    .unwrap_or_else(|| super::ns_ports::host_ifname(&params.netns, ifname));
                if !params.may_exist {
                    added.insert(host, out.len());
                }
                out.push(Some(Request::AddNsPort(params)));
            }
            Request::AddPort {
                bridge,
                interface,
                may_exist,
                vlan,
                kind,
                options,
                external_ids,
            } => {
                // --may-exist on a port that exists leaves it as it is; a later
                // `set` must then change it for real.
                if !may_exist {
                    added.insert(interface.clone(), out.len());
                    interfaces.insert(interface.clone(), out.len());
                }
                out.push(Some(Request::AddPort {
                    bridge,
                    interface,
                    may_exist,
                    vlan,
                    kind,
                    options,
                    external_ids,
                }));
            }
            other => {
                // Anything else may remove or replace a port added above.
                added.clear();
                interfaces.clear();
                out.push(Some(other));
            }
        }
    }
    out
}

/// One `set`/`clear` doing what (`set`, `clear`) and then (`set2`, `clear2`) do.
fn then(
    set: &VlanConfig,
    clear: &[PortColumn],
    set2: &VlanConfig,
    clear2: &[PortColumn],
) -> (VlanConfig, Vec<PortColumn>) {
    let mut merged = set.changed(&VlanConfig::default(), clear2);
    let mut cleared: Vec<PortColumn> = clear.iter().chain(clear2).copied().collect();
    merged = merged.changed(set2, &[]);
    // A column set after all is not cleared.
    cleared.retain(|c| match c {
        PortColumn::Tag => merged.tag.is_none(),
        PortColumn::Trunks => merged.trunks.is_empty(),
        PortColumn::VlanMode => merged.vlan_mode.is_none(),
    });
    cleared.sort_unstable_by_key(|c| *c as u8);
    cleared.dedup();
    (merged, cleared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use switchd_proto::{PortColumn, PortKind, VlanConfig};

    fn add(name: &str, tag: Option<u16>) -> Request {
        Request::AddPort {
            bridge: "br0".into(),
            interface: name.into(),
            may_exist: false,
            vlan: VlanConfig {
                tag,
                ..VlanConfig::default()
            },
            kind: PortKind::System,
            options: BTreeMap::new(),
            external_ids: BTreeMap::new(),
        }
    }

    fn set_interface(name: &str, kind: Option<PortKind>, options: &[(&str, &str)]) -> Request {
        Request::SetInterface {
            interface: name.into(),
            kind,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external_ids: BTreeMap::new(),
        }
    }

    /// `add-port br0 vx1 -- set interface vx1 type=vxlan options:...`: the
    /// tunnel is made with its options, never as a plain port first.
    #[test]
    fn set_interface_folds_into_the_add_port() {
        let folded = fold_port_settings(vec![
            add("vx1", None),
            set_interface("vx1", Some(PortKind::Vxlan), &[("remote_ip", "192.0.2.2")]),
            set_interface("vx1", None, &[("key", "42")]),
            set_interface("other", None, &[("key", "1")]),
        ]);
        let Some(Request::AddPort { kind, options, .. }) = &folded[0] else {
            panic!("{folded:?}");
        };
        assert_eq!(*kind, PortKind::Vxlan);
        assert_eq!(options.len(), 2);
        assert_eq!(folded[1..3], [None, None]);
        assert_eq!(
            folded[3],
            Some(set_interface("other", None, &[("key", "1")]))
        );
    }

    fn set(name: &str, tag: Option<u16>, clear: &[PortColumn]) -> Request {
        Request::SetPort {
            port: name.into(),
            set: VlanConfig {
                tag,
                ..VlanConfig::default()
            },
            clear: clear.to_vec(),
        }
    }

    #[test]
    fn settings_for_a_port_added_in_the_batch_go_into_its_add_port() {
        let folded = fold_port_settings(vec![
            add("p1", None),
            set("p1", Some(10), &[]),
            set("p2", Some(20), &[]),
            set("p1", None, &[PortColumn::Tag]),
            set("p1", Some(30), &[]),
        ]);
        assert_eq!(
            folded,
            vec![
                Some(add("p1", Some(30))),
                None,
                Some(set("p2", Some(20), &[])),
                None,
                None,
            ]
        );
        // Consecutive set/clear of one port: only the end state counts.
        let native = VlanConfig {
            vlan_mode: Some(switchd_proto::VlanMode::Trunk),
            ..VlanConfig::default()
        };
        let folded = fold_port_settings(vec![
            set("p3", None, &[PortColumn::Tag]),
            Request::SetPort {
                port: "p3".into(),
                set: native.clone(),
                clear: vec![],
            },
        ]);
        assert_eq!(
            folded,
            vec![
                Some(Request::SetPort {
                    port: "p3".into(),
                    set: native,
                    clear: vec![PortColumn::Tag],
                }),
                None
            ]
        );
        let folded = fold_port_settings(vec![
            set("p4", None, &[PortColumn::Tag]),
            set("p4", Some(5), &[]),
        ]);
        assert_eq!(
            folded,
            vec![Some(set("p4", Some(5), &[])), None],
            "set after clear"
        );

        // Not across another command, which might delete the port.
        let del = Request::DelPort {
            bridge: None,
            interface: "p1".into(),
            if_exists: false,
        };
        let folded =
            fold_port_settings(vec![add("p1", None), del.clone(), set("p1", Some(1), &[])]);
        assert_eq!(
            folded,
            vec![
                Some(add("p1", None)),
                Some(del),
                Some(set("p1", Some(1), &[]))
            ]
        );
    }
}
