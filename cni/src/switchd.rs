//! The requests this plugin makes of switchd, and what their failures mean to a
//! CNI runtime.

use crate::error::{code, CniError, CniResult};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use switchd_proto::FoundPort;
use switchd_proto::{AddNsPort, AddNsPortReply, CallError, Request, ShowReply, VlanConfig};

/// One add-ns-port takes tens of milliseconds, but switchd runs requests one at
/// a time, and a runtime starting many containers queues many.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The external_ids keys that mark a port as an attachment, as ovs-docker
/// names them.
pub const CONTAINER_ID: &str = "container_id";
pub const CONTAINER_IFACE: &str = "container_iface";

pub struct Switchd {
    socket: PathBuf,
}

/// What to make: a veth into `netns` named `ifname`, its host end `host` a
/// port of `bridge`.
pub struct Attachment<'a> {
    pub bridge: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub host: &'a str,
    pub container_id: &'a str,
    pub mac: Option<&'a str>,
    pub mtu: Option<u32>,
    pub vlan: &'a VlanConfig,
}

impl Switchd {
    pub fn new(socket: &Path) -> Switchd {
        Switchd {
            socket: socket.to_path_buf(),
        }
    }

    fn call(&self, request: &Request) -> CniResult<Value> {
        switchd_proto::call(&self.socket, request, TIMEOUT).map_err(|e| self.error(request, e))
    }

    fn error(&self, request: &Request, e: CallError) -> CniError {
        let details = e.to_string();
        match e {
            CallError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                CniError::new(code::TRY_AGAIN, "switchd is not running", details)
            }
            CallError::Timeout { .. } => {
                CniError::new(code::TRY_AGAIN, "switchd did not answer in time", details)
            }
            CallError::Io { .. } => CniError::new(code::IO, "cannot talk to switchd", details),
            CallError::BadReply(_) => {
                CniError::new(code::DECODE, "cannot decode switchd's reply", details)
            }
            CallError::Rpc(e) if e.code == switchd_proto::code::METHOD_NOT_FOUND => CniError::new(
                code::SWITCHD,
                "switchd is too old for this plugin",
                format!(
                    "{} ({} at {})",
                    e.message,
                    request.method(),
                    self.socket.display()
                ),
            ),
            CallError::Rpc(_) => {
                CniError::new(code::SWITCHD, "switchd refused the request", details)
            }
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, value: Value) -> CniResult<T> {
        serde_json::from_value(value).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode switchd's reply", e.to_string())
        })
    }

    /// The bridge (if missing) and the port in one transaction: on failure
    /// switchd has made neither.
    pub fn attach(&self, a: &Attachment) -> CniResult<AddNsPortReply> {
        let request = Request::Batch {
            commands: vec![
                Request::AddBr {
                    bridge: a.bridge.to_string(),
                    may_exist: true,
                    no_internal: false,
                },
                Request::AddNsPort(AddNsPort {
                    bridge: a.bridge.to_string(),
                    netns: a.netns.to_string(),
                    ifname: Some(a.ifname.to_string()),
                    host_ifname: Some(a.host.to_string()),
                    ip: None,
                    gateway: None,
                    mac: a.mac.map(str::to_string),
                    mtu: a.mtu,
                    may_exist: false,
                    vlan: a.vlan.clone(),
                    external_ids: attachment_ids(a.container_id, a.ifname),
                }),
            ],
        };
        let mut replies: Vec<Value> = self.decode(self.call(&request)?)?;
        if replies.len() != 2 {
            return Err(CniError::new(
                code::DECODE,
                "cannot decode switchd's reply",
                format!("{} replies to a batch of 2", replies.len()),
            ));
        }
        self.decode(replies.swap_remove(1))
    }

    /// The ports of the attachment (container id, ifname), on any bridge.
    pub fn find(&self, container_id: &str, ifname: &str) -> CniResult<Vec<FoundPort>> {
        let request = Request::FindPorts {
            external_ids: attachment_ids(container_id, ifname),
        };
        self.decode(self.call(&request)?)
    }

    /// Removes the port and deletes its veth; nothing if it is gone already.
    pub fn detach(&self, found: &FoundPort) -> CniResult<()> {
        let request = match (&found.netns, &found.ifname) {
            (Some(netns), ifname) => Request::DelNsPort {
                bridge: found.bridge.clone(),
                netns: netns.clone(),
                ifname: ifname.clone(),
                if_exists: true,
            },
            // Not made by add-ns-port: there is no veth of ours to delete.
            (None, _) => Request::DelPort {
                bridge: Some(found.bridge.clone()),
                interface: found.port.clone(),
                if_exists: true,
            },
        };
        self.call(&request).map(drop)
    }

    /// Why the port is not forwarding, if it is not (`show`'s error).
    pub fn port_error(&self, bridge: &str, port: &str) -> CniResult<Option<String>> {
        let show: ShowReply = self.decode(self.call(&Request::Show {})?)?;
        let info = show
            .bridges
            .iter()
            .filter(|b| b.name == bridge)
            .flat_map(|b| &b.ports)
            .find(|p| p.name == port);
        Ok(match info {
            None => Some(format!("bridge {bridge} has no port {port}")),
            Some(p) => p.error.clone(),
        })
    }
}

fn attachment_ids(container_id: &str, ifname: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CONTAINER_ID.to_string(), container_id.to_string()),
        (CONTAINER_IFACE.to_string(), ifname.to_string()),
    ])
}

/// The host end's name, stable per (container id, ifname) so that it can be
/// found again: `veth` and 8 hex digits of FNV-1a (the same hash switchd uses
/// for its own long names; std's hasher may change between releases).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("veth{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_and_short() {
        let a = host_ifname("4f1d2c7e9b", "eth0");
        assert_eq!(a, host_ifname("4f1d2c7e9b", "eth0"));
        assert_ne!(a, host_ifname("4f1d2c7e9b", "eth1"));
        assert_ne!(a, host_ifname("4f1d2c7e9", "beth0"));
        assert_eq!(a.len(), 12);
        // Only the separator: FNV-1a's published vector for one zero byte.
        assert_eq!(host_ifname("", ""), "veth050c5d1f");
    }

    #[test]
    fn a_missing_socket_is_try_again_later() {
        let s = Switchd::new(Path::new("/nonexistent/switchd.sock"));
        let e = s.find("c", "eth0").unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN, "{e}");
        assert!(e.details.contains("/nonexistent/switchd.sock"), "{e}");
    }
}
