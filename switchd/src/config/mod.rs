//! Daemon settings and the persisted configuration database: the desired state
//! (bridges, their settings, their ports), kept in one file by `store`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

mod store;
pub use store::Store;

use crate::datapath::{MAC_AGING_SECS, MAC_TABLE_SIZE};
pub use switchd_proto::{McastSnooping, MirrorConfig, NsEnd, PortConfig, PortKind, StaticMac};

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// Group (name or id) whose members may use the control socket besides root.
    pub socket_group: Option<String>,
    pub db: PathBuf,
    pub datapath: crate::datapath::DatapathConfig,
    /// Where to serve Prometheus metrics (`--metrics`); nowhere by default.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Version 3: the file is a snapshot followed by a line per change (`store`).
/// Version 2 (a snapshot alone; each port a [`PortConfig`]: name, kind, where an
/// add-ns-port port leads) and version 1 (a list of names, an `internal` flag
/// and an `ns_ports` map per bridge) load, and are written anew as version 3 on
/// the next change.
pub const DB_VERSION: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Db {
    pub version: u32,
    pub bridges: BTreeMap<String, BridgeConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub mac_aging_time: u64,
    pub mac_table_size: u32,
    /// Reserved group addresses relayed (bit N: 01:80:C2:00:00:0N); none by default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub group_fwd_mask: u16,
    /// Kept only where it differs from the default (on, 300 s, 2048 groups).
    #[serde(default, skip_serializing_if = "McastSnooping::is_default")]
    pub mcast_snooping: McastSnooping,
    /// In the order they were added; the internal port, if any, first. Shared
    /// so that a copy of the database costs a pointer per port and a change
    /// shows which ports it touched (`store`).
    pub ports: Vec<Arc<PortConfig>>,
    /// `fdb-add`'s entries, each on one of `ports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_macs: Vec<StaticMac>,
    /// `add-mirror`'s mirrors, naming only `ports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorConfig>,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

impl BridgeConfig {
    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name).map(|p| &**p)
    }

    /// Port `name`'s settings to change in place; the copy a change edits
    /// gets its own (`Arc::make_mut`), so the saved database keeps its own.
    pub fn port_mut(&mut self, name: &str) -> Option<&mut PortConfig> {
        self.ports
            .iter_mut()
            .find(|p| p.name == name)
            .map(Arc::make_mut)
    }

    /// Whether the bridge has its internal port (the TAP named after it).
    pub fn has_internal(&self) -> bool {
        self.ports.iter().any(|p| p.kind == PortKind::Internal)
    }
}

impl Default for BridgeConfig {
    /// A bridge with Open vSwitch's MAC table defaults and no ports.
    fn default() -> Self {
        BridgeConfig {
            mac_aging_time: MAC_AGING_SECS,
            mac_table_size: MAC_TABLE_SIZE,
            group_fwd_mask: 0,
            mcast_snooping: McastSnooping::default(),
            ports: Vec::new(),
            static_macs: Vec::new(),
            mirrors: Vec::new(),
        }
    }
}

impl Default for Db {
    fn default() -> Self {
        Db {
            version: DB_VERSION,
            bridges: BTreeMap::new(),
        }
    }
}

/// The database as switchd wrote it before ports had kinds (until 2026-12).
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Db {
        #[serde(rename = "version")]
        _version: u32,
        pub bridges: BTreeMap<String, BridgeConfig>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BridgeConfig {
        pub mac_aging_time: u64,
        pub mac_table_size: u32,
        pub ports: Vec<String>,
        /// Absent in files from before internal ports existed.
        #[serde(default)]
        pub internal: bool,
        #[serde(default)]
        pub ns_ports: BTreeMap<String, NsEnd>,
    }

    impl Db {
        pub fn migrate(self) -> super::Db {
            let bridges = self
                .bridges
                .into_iter()
                .map(|(name, mut b)| {
                    let internal = b.internal.then(|| PortConfig {
                        kind: PortKind::Internal,
                        ..PortConfig::system(&name)
                    });
                    let ports = internal
                        .into_iter()
                        .chain(b.ports.into_iter().map(|port| PortConfig {
                            netns: b.ns_ports.remove(&port),
                            ..PortConfig::system(&port)
                        }))
                        .map(Arc::new)
                        .collect();
                    let config = super::BridgeConfig {
                        mac_aging_time: b.mac_aging_time,
                        mac_table_size: b.mac_table_size,
                        group_fwd_mask: 0,
                        mcast_snooping: McastSnooping::default(),
                        ports,
                        static_macs: Vec::new(),
                        mirrors: Vec::new(),
                    };
                    (name, config)
                })
                .collect();
            super::Db {
                version: DB_VERSION,
                bridges,
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read database {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("database {path} is not valid (refusing to start rather than overwrite it): {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("database {path} has version {found}, this switchd understands versions 1 to {DB_VERSION} (refusing to start rather than overwrite it)")]
    Version { path: PathBuf, found: u32 },
    #[error("database {path} line {line}: {why} (refusing to start rather than overwrite it)")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("cannot write database {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}
