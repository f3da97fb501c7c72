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

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// Group (name or id) whose members may use the control socket besides root.
    pub socket_group: Option<String>,
    pub db: PathBuf,
    pub datapath: crate::datapath::DatapathConfig,
}

pub const DB_VERSION: u32 = 1;

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
    /// Interface names, in the order they were added.
    pub ports: Vec<String>,
    /// Whether the bridge has its internal port (a TAP named after it). Absent in
    /// databases written before internal ports existed, hence the default.
    #[serde(default)]
    pub internal: bool,
    /// Ports made by `add-ns-port`, by host interface name (also in `ports`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ns_ports: BTreeMap<String, NsPort>,
}

/// Where an `add-ns-port` port leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsPort {
    pub netns: String,
    pub ifname: String,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            mac_aging_time: MAC_AGING_SECS,
            mac_table_size: MAC_TABLE_SIZE,
            ports: Vec::new(),
            internal: true,
            ns_ports: BTreeMap::new(),
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read database {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("database {path} is not valid (refusing to start rather than overwrite it): {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("database {path} has version {found}, this switchd understands version {DB_VERSION} (refusing to start rather than overwrite it)")]
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
        if version != DB_VERSION {
            return Err(ConfigError::Version {
                path: path.to_owned(),
                found: version,
            });
        }
        serde_json::from_slice(&bytes).map_err(parse_err)
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
                ports: vec!["veth1".into()],
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
        fs::write(&path, b"{\"version\":1,\"bridges\":").unwrap();
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
}
