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
use switchd_proto::{code, Request, RpcError};

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
            db.save(&self.db_path)
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
            if let Err(e) = self.db.save(&self.db_path) {
                failure = Some(err(code::FAILED, e.to_string()));
            }
        }
        let delete = match failure {
            Some(_) => {
                self.reconcile(&saved).await;
                self.db = saved;
                state.created_links
            }
            None => state.doomed_links,
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
/// (the `set` itself becomes `None`, which answers null), so the port never
/// forwards, not even for a moment, with the settings it would have had between
/// the two.
fn fold_port_settings(commands: Vec<Request>) -> Vec<Option<Request>> {
    let mut out: Vec<Option<Request>> = Vec::with_capacity(commands.len());
    // Ports added earlier in the batch: name -> index in `out`.
    let mut added: HashMap<String, usize> = HashMap::new();
    for command in commands {
        match command {
            Request::SetPort { port, set, clear } => match added.get(&port) {
                Some(&i) => {
                    if let Some(Request::AddPort { vlan, .. }) = &mut out[i] {
                        *vlan = vlan.changed(&set, &clear);
                    }
                    out.push(None);
                }
                None => out.push(Some(Request::SetPort { port, set, clear })),
            },
            Request::AddPort {
                bridge,
                interface,
                may_exist,
                vlan,
            } => {
                // --may-exist on a port that exists leaves it as it is; a later
                // `set` must then change it for real.
                if !may_exist {
                    added.insert(interface.clone(), out.len());
                }
                out.push(Some(Request::AddPort {
                    bridge,
                    interface,
                    may_exist,
                    vlan,
                }));
            }
            other => {
                // Anything else may remove or replace a port added above.
                added.clear();
                out.push(Some(other));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchd_proto::{PortColumn, VlanConfig};

    fn add(name: &str, tag: Option<u16>) -> Request {
        Request::AddPort {
            bridge: "br0".into(),
            interface: name.into(),
            may_exist: false,
            vlan: VlanConfig {
                tag,
                ..VlanConfig::default()
            },
        }
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
