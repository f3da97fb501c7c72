//! Daemon settings and the persisted configuration database.
//!
//! The database is one JSON file holding the desired state (bridges, their settings,
//! their ports). It is replaced atomically on every change: written to a temporary
//! file, fsynced, renamed over the old one, and the directory fsynced, so a crash at
//! any moment leaves either the old or the new version, never a torn one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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

/// Version 2: each port is a [`PortConfig`] (name, kind, where an add-ns-port
/// port leads). Version 1 files (a list of names, an `internal` flag and an
/// `ns_ports` map per bridge) are migrated on load and saved as version 2 on the
/// next change.
pub const DB_VERSION: u32 = 2;

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
    /// In the order they were added; the internal port, if any, first.
    pub ports: Vec<PortConfig>,
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
        self.ports.iter().find(|p| p.name == name)
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
    #[error("cannot write database {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl Db {
    /// Loads the database; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Db, ConfigError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Db::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        // Check the version before the shape, so a newer file says so.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let parse_err = |source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        };
        let Version { version } = serde_json::from_slice(&bytes).map_err(parse_err)?;
        match version {
            1 => {
                let old: v1::Db = serde_json::from_slice(&bytes).map_err(parse_err)?;
                tracing::info!(db = %path.display(), "database version 1 migrated to {DB_VERSION}; saved as {DB_VERSION} on the next change");
                Ok(old.migrate())
            }
            DB_VERSION => serde_json::from_slice(&bytes).map_err(parse_err),
            found => Err(ConfigError::Version {
                path: path.to_owned(),
                found,
            }),
        }
    }

    /// Replaces the database file atomically and durably.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(write_err)?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let mut json = serde_json::to_vec_pretty(self).expect("the database always serializes");
        json.push(b'\n');
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchd-config-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn save_then_load() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("db.json");
        assert_eq!(Db::load(&path).unwrap(), Db::default());
        let mut db = Db::default();
        db.bridges.insert(
            "br0".into(),
            BridgeConfig {
                ports: vec![
                    PortConfig {
                        kind: PortKind::Internal,
                        ..PortConfig::system("br0")
                    },
                    PortConfig::system("veth1"),
                    PortConfig {
                        netns: Some(NsEnd {
                            netns: "/proc/1/ns/net".into(),
                            ifname: "eth1".into(),
                        }),
                        ..PortConfig::system("sd01234567")
                    },
                ],
                ..Default::default()
            },
        );
        db.save(&path).unwrap();
        assert_eq!(Db::load(&path).unwrap(), db);
        assert!(!dir.join("db.json.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_or_foreign_files_are_refused() {
        let dir = temp_dir("corrupt");
        let path = dir.join("db.json");
        fs::write(&path, b"{\"version\":2,\"bridges\":").unwrap();
        let err = Db::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("db.json") && err.contains("not valid"),
            "{err}"
        );
        fs::write(&path, b"{\"version\":7,\"bridges\":{}}").unwrap();
        let err = Db::load(&path).unwrap_err().to_string();
        assert!(err.contains("version 7"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// Files as switchd wrote them before version 2, byte for byte (one from
    /// before internal ports existed, one from before add-ns-port).
    #[test]
    fn version_1_files_load_with_nothing_lost() {
        let dir = temp_dir("v1");
        let path = dir.join("db.json");
        fs::write(
            &path,
            br#"{
  "version": 1,
  "bridges": {
    "br0": {
      "mac_aging_time": 30,
      "mac_table_size": 100,
      "ports": ["veth1", "ns1-eth0", "sd9f3a0c11"],
      "internal": true,
      "ns_ports": {
        "ns1-eth0": {"netns": "ns1", "ifname": "eth0"},
        "sd9f3a0c11": {"netns": "/proc/42/ns/net", "ifname": "eth1"}
      }
    },
    "old": {"mac_aging_time": 300, "mac_table_size": 8192, "ports": ["v2"]}
  }
}
"#,
        )
        .unwrap();
        let db = Db::load(&path).unwrap();
        assert_eq!(db.version, DB_VERSION);
        let br0 = &db.bridges["br0"];
        assert_eq!((br0.mac_aging_time, br0.mac_table_size), (30, 100));
        let ns = |netns: &str, ifname: &str| {
            Some(NsEnd {
                netns: netns.into(),
                ifname: ifname.into(),
            })
        };
        assert_eq!(
            br0.ports,
            vec![
                PortConfig {
                    kind: PortKind::Internal,
                    ..PortConfig::system("br0")
                },
                PortConfig::system("veth1"),
                PortConfig {
                    netns: ns("ns1", "eth0"),
                    ..PortConfig::system("ns1-eth0")
                },
                PortConfig {
                    netns: ns("/proc/42/ns/net", "eth1"),
                    ..PortConfig::system("sd9f3a0c11")
                },
            ]
        );
        assert_eq!(db.bridges["old"].ports, vec![PortConfig::system("v2")]);
        assert!(!db.bridges["old"].has_internal());
        // Saved as version 2, it reads back the same.
        db.save(&path).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("\"version\": 2"));
        assert_eq!(Db::load(&path).unwrap(), db);
        fs::remove_dir_all(dir).unwrap();
    }
}
