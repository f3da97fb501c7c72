//! The database file, kept as Open vSwitch keeps its ovsdb files: the whole
//! state once (a snapshot), then a line per save since.
//!
//! A save appends one line (its changes, a JSON array; a chain of commands is
//! one save, so one line) and fsyncs before the request is answered, so it
//! costs what it changes rather than what the database holds: rewriting the
//! whole file was most of switchd's own share of one more port at 4096 ports
//! (docs/PERFORMANCE.md, "Many ports"). Once the lines outweigh the snapshot,
//! the next save writes a new snapshot instead: to a temporary file, fsynced,
//! renamed over the old one, the directory fsynced, so that a crash leaves the
//! old file or the new one. A crash in the middle of an append leaves a torn
//! last line, which loading ignores whole (that save was never answered); any
//! other line that does not read or apply is refused, as a corrupt file is.

use super::{BridgeConfig, ConfigError, Db, PortConfig, DB_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Lines are appended until they outweigh the snapshot, and at least this
/// many bytes of them, so that a snapshot's cost spreads over as many bytes of
/// changes as it has itself.
const MIN_LOG_BYTES: u64 = 64 * 1024;

/// One change; a line of the file is a save's changes, in order.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Change {
    /// A bridge's settings and lists other than its ports (`ports` is empty);
    /// a new bridge starts without ports.
    Bridge {
        name: String,
        settings: BridgeConfig,
    },
    DelBridge {
        name: String,
    },
    /// A port of `bridge`: it replaces the port of its name where it is, or
    /// comes after the others.
    Port {
        bridge: String,
        port: Arc<PortConfig>,
    },
    DelPort {
        bridge: String,
        name: String,
    },
}

impl Change {
    fn apply(self, db: &mut Db) -> Result<(), String> {
        fn bridge_of<'a>(db: &'a mut Db, name: &str) -> Result<&'a mut BridgeConfig, String> {
            db.bridges
                .get_mut(name)
                .ok_or_else(|| format!("names bridge {name}, which the lines before do not have"))
        }
        match self {
            Change::Bridge { name, mut settings } => {
                if !settings.ports.is_empty() {
                    return Err(format!("bridge {name}'s settings carry ports"));
                }
                settings.ports = db
                    .bridges
                    .remove(&name)
                    .map(|b| b.ports)
                    .unwrap_or_default();
                db.bridges.insert(name, settings);
            }
            Change::DelBridge { name } => {
                bridge_of(db, &name)?;
                db.bridges.remove(&name);
            }
            Change::Port { bridge, port } => {
                let ports = &mut bridge_of(db, &bridge)?.ports;
                match ports.iter_mut().find(|p| p.name == port.name) {
                    Some(p) => *p = port,
                    None => ports.push(port),
                }
            }
            Change::DelPort { bridge, name } => {
                let ports = &mut bridge_of(db, &bridge)?.ports;
                let at = ports
                    .iter()
                    .position(|p| p.name == name)
                    .ok_or_else(|| format!("deletes port {name}, which {bridge} does not have"))?;
                ports.remove(at);
            }
        }
        Ok(())
    }
}

/// The lines that take `old` to `new`, or None if lines cannot say it (the
/// version changed, or ports were reordered) and a snapshot must.
fn changes(old: &Db, new: &Db) -> Option<Vec<Change>> {
    if old.version != new.version {
        return None;
    }
    let mut out = Vec::new();
    for name in old.bridges.keys() {
        if !new.bridges.contains_key(name) {
            out.push(Change::DelBridge { name: name.clone() });
        }
    }
    for (name, bridge) in &new.bridges {
        let before = old.bridges.get(name);
        if before.is_none_or(|b| settings(b) != settings(bridge)) {
            out.push(Change::Bridge {
                name: name.clone(),
                settings: without_ports(bridge),
            });
        }
        let old_ports = before.map_or(&[][..], |b| &b.ports[..]);
        port_changes(name, old_ports, &bridge.ports, &mut out)?;
    }
    Some(out)
}

/// Adds the lines that take bridge `bridge`'s ports from `old` to `new`.
fn port_changes(
    bridge: &str,
    old: &[Arc<PortConfig>],
    new: &[Arc<PortConfig>],
    out: &mut Vec<Change>,
) -> Option<()> {
    // A change shares every port it did not touch with the saved database:
    // what is shared at both ends is skipped by pointer, so one more port at
    // 4096 compares pointers, not ports.
    let same = |(a, b): &(&Arc<PortConfig>, &Arc<PortConfig>)| Arc::ptr_eq(a, b);
    let head = old.iter().zip(new).take_while(same).count();
    let (old, new) = (&old[head..], &new[head..]);
    let tail = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(same)
        .count();
    let (old, new) = (&old[..old.len() - tail], &new[..new.len() - tail]);
    let at: HashMap<&str, usize> = old
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let kept: HashSet<&str> = new.iter().map(|p| p.name.as_str()).collect();
    for p in old.iter().filter(|p| !kept.contains(p.name.as_str())) {
        out.push(Change::DelPort {
            bridge: bridge.to_string(),
            name: p.name.clone(),
        });
    }
    // Replayed, a line replaces a port in place or adds it after all others:
    // the ports kept must be in their old order, and new ones after them all.
    let mut last = None;
    let mut added = false;
    for p in new {
        match at.get(p.name.as_str()) {
            Some(&i) => {
                if added || last.is_some_and(|l| l > i) {
                    return None;
                }
                last = Some(i);
                if old[i] == *p {
                    continue;
                }
            }
            None if tail > 0 => return None,
            None => added = true,
        }
        out.push(Change::Port {
            bridge: bridge.to_string(),
            port: p.clone(),
        });
    }
    Some(())
}

/// Everything of a bridge but its ports, to compare.
fn settings(b: &BridgeConfig) -> impl PartialEq + '_ {
    let BridgeConfig {
        mac_aging_time,
        mac_table_size,
        group_fwd_mask,
        mcast_snooping,
        ports: _,
        static_macs,
        mirrors,
    } = b;
    (
        mac_aging_time,
        mac_table_size,
        group_fwd_mask,
        mcast_snooping,
        static_macs,
        mirrors,
    )
}

fn without_ports(b: &BridgeConfig) -> BridgeConfig {
    BridgeConfig {
        mac_aging_time: b.mac_aging_time,
        mac_table_size: b.mac_table_size,
        group_fwd_mask: b.group_fwd_mask,
        mcast_snooping: b.mcast_snooping,
        ports: Vec::new(),
        static_macs: b.static_macs.clone(),
        mirrors: b.mirrors.clone(),
    }
}

/// The database file and what it says.
pub struct Store {
    path: PathBuf,
    /// The snapshot with every line after it applied.
    saved: Db,
    /// Open for appending; None when the next save must write a snapshot (the
    /// file is missing, of an older version, or ends in a torn line).
    log: Option<File>,
    snapshot_bytes: u64,
    log_bytes: u64,
    /// `MIN_LOG_BYTES`, but for tests.
    min_log_bytes: u64,
}

impl Store {
    /// Reads the database; a missing file is an empty configuration.
    pub fn open(path: &Path) -> Result<(Store, Db), ConfigError> {
        let mut store = Store {
            path: path.to_owned(),
            saved: Db::default(),
            log: None,
            snapshot_bytes: 0,
            log_bytes: 0,
            min_log_bytes: MIN_LOG_BYTES,
        };
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((store, Db::default())),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let parse_err = |source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        };
        let mut values = serde_json::Deserializer::from_slice(&bytes).into_iter();
        let snapshot: serde_json::Value = match values.next() {
            Some(value) => value.map_err(parse_err)?,
            // Empty: let the parser say so.
            None => return Err(parse_err(serde_json::from_slice::<()>(&bytes).unwrap_err())),
        };
        let end = values.byte_offset();
        // Check the version before the shape, so a newer file says so.
        let version = snapshot.get("version").and_then(serde_json::Value::as_u64);
        let mut db = match version {
            Some(1) => {
                let old: super::v1::Db = serde_json::from_value(snapshot).map_err(parse_err)?;
                old.migrate()
            }
            Some(2) | Some(3) => serde_json::from_value(snapshot).map_err(parse_err)?,
            Some(found) => {
                return Err(ConfigError::Version {
                    path: path.to_owned(),
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                })
            }
            None => serde_json::from_value(snapshot).map_err(parse_err)?,
        };
        let mut current = version == Some(u64::from(DB_VERSION));
        if !current {
            tracing::info!(db = %path.display(), "database version {} read; written as {DB_VERSION} on the next change", version.unwrap_or_default());
            db.version = DB_VERSION;
        }
        let first = 1 + bytes[..end].iter().filter(|b| **b == b'\n').count();
        for (line, text) in (first..).zip(bytes[end..].split_inclusive(|b| *b == b'\n')) {
            if text.last() != Some(&b'\n') {
                if !text.trim_ascii().is_empty() {
                    tracing::warn!(db = %path.display(), line, "the database's last line was cut short (a crash while it was written); that change is ignored");
                    current = false;
                }
                break;
            }
            let text = text.trim_ascii();
            if !text.is_empty() {
                let line_err = |why: String| ConfigError::Line {
                    path: path.to_owned(),
                    line,
                    why,
                };
                if version != Some(u64::from(DB_VERSION)) {
                    return Err(line_err(
                        "a version 1 or 2 database has one document".into(),
                    ));
                }
                let saved: Vec<Change> =
                    serde_json::from_slice(text).map_err(|e| line_err(e.to_string()))?;
                for change in saved {
                    change.apply(&mut db).map_err(line_err)?;
                }
            }
        }
        store.snapshot_bytes = end as u64;
        store.log_bytes = (bytes.len() - end) as u64;
        if current {
            // Without a handle, the next save writes a snapshot: no worse.
            store.log = OpenOptions::new().append(true).open(path).ok();
        }
        store.saved = db.clone();
        Ok((store, db))
    }

    /// Makes the file say `db`, durably: a line per change, or a new snapshot.
    pub fn save(&mut self, db: &Db) -> Result<(), ConfigError> {
        if *db == self.saved {
            return Ok(());
        }
        if self.log.is_some() {
            if let Some(changes) = changes(&self.saved, db) {
                // One line, so that a crash keeps all of a save or none of it.
                let mut line = serde_json::to_vec(&changes).expect("a change always serializes");
                line.push(b'\n');
                let size = self.log_bytes + line.len() as u64;
                if size <= self.snapshot_bytes.max(self.min_log_bytes) {
                    self.append(&line)?;
                    self.saved = db.clone();
                    return Ok(());
                }
            }
        }
        self.snapshot(db)
    }

    fn append(&mut self, line: &[u8]) -> Result<(), ConfigError> {
        let log = self.log.as_mut().expect("checked by save");
        let written = log.write_all(line).and_then(|()| log.sync_data());
        if let Err(source) = written {
            // A part of a line would read as torn and hide the lines after it:
            // cut it off, or write a snapshot next time.
            let cut = log
                .set_len(self.snapshot_bytes + self.log_bytes)
                .and_then(|()| log.sync_data());
            if cut.is_err() {
                self.log = None;
            }
            return Err(self.write_err(source));
        }
        self.log_bytes += line.len() as u64;
        Ok(())
    }

    /// Replaces the file atomically and durably with a snapshot of `db`.
    fn snapshot(&mut self, db: &Db) -> Result<(), ConfigError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let mut json = serde_json::to_vec_pretty(db).expect("the database always serializes");
        json.push(b'\n');
        let result = (|| {
            fs::create_dir_all(dir)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(source) = result {
            let _ = fs::remove_file(&tmp);
            // The rename may have happened: the append handle may be on the
            // file it replaced, and the file may hold this failed change. The
            // next save writes a snapshot of what is current then.
            self.log = None;
            return Err(self.write_err(source));
        }
        self.log = OpenOptions::new().append(true).open(&self.path).ok();
        self.snapshot_bytes = json.len() as u64;
        self.log_bytes = 0;
        self.saved = db.clone();
        Ok(())
    }

    fn write_err(&self, source: io::Error) -> ConfigError {
        ConfigError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NsEnd, PortKind, StaticMac};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switchd-config-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open(path: &Path) -> (Store, Db) {
        Store::open(path).unwrap()
    }

    fn port(name: &str) -> Arc<PortConfig> {
        Arc::new(PortConfig::system(name))
    }

    fn bridge(ports: &[&str]) -> BridgeConfig {
        BridgeConfig {
            ports: ports.iter().map(|p| port(p)).collect(),
            ..Default::default()
        }
    }

    /// A new database at `path` with bridge br0 of `ports`, saved.
    fn saved_bridge(path: &Path, ports: &[&str]) -> (Store, Db) {
        let (mut store, mut db) = open(path);
        db.bridges.insert("br0".into(), bridge(ports));
        store.save(&db).unwrap();
        (store, db)
    }

    #[test]
    fn save_then_load() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("db.json");
        let (mut store, mut db) = open(&path);
        assert_eq!(db, Db::default());
        db.bridges.insert(
            "br0".into(),
            BridgeConfig {
                ports: vec![
                    Arc::new(PortConfig {
                        kind: PortKind::Internal,
                        ..PortConfig::system("br0")
                    }),
                    port("veth1"),
                    Arc::new(PortConfig {
                        netns: Some(NsEnd {
                            netns: "/proc/1/ns/net".into(),
                            ifname: "eth1".into(),
                        }),
                        ..PortConfig::system("sd01234567")
                    }),
                ],
                ..Default::default()
            },
        );
        store.save(&db).unwrap();
        assert_eq!(open(&path).1, db);
        assert!(!dir.join("db.json.tmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    /// Every kind of change, each saved as lines after the first snapshot, and
    /// each read back as the state it left.
    #[test]
    fn changes_are_lines_that_read_back_as_the_state() {
        let dir = temp_dir("lines");
        let path = dir.join("db.json");
        let (mut store, mut db) = saved_bridge(&path, &["a", "b", "c"]);
        let snapshot = fs::read(&path).unwrap().len();
        type Edit = Box<dyn Fn(&mut Db)>;
        let edits: Vec<Edit> = vec![
            Box::new(|db| db.bridges.get_mut("br0").unwrap().ports.push(port("d"))),
            Box::new(|db| {
                db.bridges
                    .get_mut("br0")
                    .unwrap()
                    .ports
                    .retain(|p| p.name != "b")
            }),
            Box::new(|db| {
                let p = db.bridges.get_mut("br0").unwrap().port_mut("c").unwrap();
                p.external_ids.insert("k".into(), "v".into());
            }),
            Box::new(|db| db.bridges.get_mut("br0").unwrap().mac_aging_time = 42),
            Box::new(|db| {
                db.bridges
                    .get_mut("br0")
                    .unwrap()
                    .static_macs
                    .push(StaticMac {
                        mac: "02:00:00:00:00:01".into(),
                        vlan: 0,
                        port: "a".into(),
                    })
            }),
            Box::new(|db| {
                db.bridges.insert("br1".into(), bridge(&["x", "y"]));
            }),
            Box::new(|db| {
                let ports = &mut db.bridges.get_mut("br0").unwrap().ports;
                let a = ports.remove(0);
                db.bridges.get_mut("br1").unwrap().ports.push(a);
            }),
            Box::new(|db| {
                db.bridges.remove("br1");
            }),
            // The same name again, other ports.
            Box::new(|db| {
                db.bridges.insert("br0".into(), bridge(&["z"]));
            }),
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut next = db.clone();
            edit(&mut next);
            store.save(&next).unwrap();
            db = next;
            assert_eq!(open(&path).1, db, "after edit {i}");
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.len() > snapshot && text[snapshot..].lines().count() >= 9,
            "{text}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    /// Reordered ports cannot be lines; a snapshot says it, and the order holds.
    #[test]
    fn a_reorder_is_a_snapshot() {
        let dir = temp_dir("reorder");
        let path = dir.join("db.json");
        let (mut store, db) = saved_bridge(&path, &["a", "b", "c"]);
        let mut next = db.clone();
        next.bridges.get_mut("br0").unwrap().ports.swap(0, 2);
        assert!(changes(&db, &next).is_none());
        store.save(&next).unwrap();
        let (_, read) = open(&path);
        let names: Vec<&str> = read.bridges["br0"]
            .ports
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["c", "b", "a"]);
        // A new port before one kept cannot be a line either.
        let mut inserted = next.clone();
        inserted
            .bridges
            .get_mut("br0")
            .unwrap()
            .ports
            .insert(1, port("n"));
        assert!(changes(&next, &inserted).is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    /// One more port at 4096 is one line, and lines give way to a snapshot once
    /// they outweigh it.
    #[test]
    fn one_more_port_is_one_line_until_the_lines_outweigh_the_snapshot() {
        let dir = temp_dir("compact");
        let path = dir.join("db.json");
        let names: Vec<String> = (0..4096).map(|i| format!("p{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (mut store, db) = saved_bridge(&path, &names);
        let snapshot = fs::read(&path).unwrap().len() as u64;
        let mut next = db.clone();
        next.bridges
            .get_mut("br0")
            .unwrap()
            .ports
            .push(port("extra"));
        let lines = changes(&db, &next).unwrap();
        assert_eq!(lines.len(), 1);
        store.save(&next).unwrap();
        let grown = fs::read(&path).unwrap().len() as u64;
        assert!(
            grown - snapshot < 100,
            "{} bytes for one port",
            grown - snapshot
        );
        assert_eq!(open(&path).1, next);

        let path = dir.join("small.json");
        let (mut store, mut db) = saved_bridge(&path, &names[..20]);
        store.min_log_bytes = 0;
        let snapshot = fs::read(&path).unwrap().len();
        let mut saves = 0;
        let mut size = snapshot;
        loop {
            let mut next = db.clone();
            let ports = &mut next.bridges.get_mut("br0").unwrap().ports;
            let extra = ports.iter().position(|p| p.name == "extra");
            match extra {
                Some(i) => drop(ports.remove(i)),
                None => ports.push(port("extra")),
            }
            store.save(&next).unwrap();
            db = next;
            saves += 1;
            let grown = fs::read(&path).unwrap().len();
            if grown < size {
                break;
            }
            size = grown;
            assert!(size < 3 * snapshot, "never compacted");
        }
        // Lines of ~60 bytes against a snapshot of ~20 ports.
        assert!(saves > 10, "compacted after {saves} saves");
        assert_eq!(open(&path).1, db);
        fs::remove_dir_all(dir).unwrap();
    }

    /// A crash in the middle of an append: the torn line (a save of several
    /// changes, cut short) is ignored whole, the next save writes a snapshot,
    /// and nothing before the tear is lost.
    #[test]
    fn a_torn_last_line_is_ignored_and_the_next_save_writes_a_snapshot() {
        let dir = temp_dir("torn");
        let path = dir.join("db.json");
        let (mut store, db) = saved_bridge(&path, &["a"]);
        let mut next = db.clone();
        next.bridges.get_mut("br0").unwrap().ports.push(port("b"));
        store.save(&next).unwrap();
        let saved = fs::read(&path).unwrap();
        // A chain of three changes is one line; cut it anywhere but its end.
        let mut chain = next.clone();
        chain.bridges.get_mut("br0").unwrap().mac_aging_time = 99;
        chain.bridges.get_mut("br0").unwrap().ports.push(port("c"));
        chain.bridges.insert("br1".into(), bridge(&["d"]));
        assert!(changes(&next, &chain).unwrap().len() >= 3);
        store.save(&chain).unwrap();
        let whole = fs::read(&path).unwrap();
        assert_eq!(
            whole[saved.len()..].iter().filter(|b| **b == b'\n').count(),
            1
        );
        for cut in [
            saved.len() + 1,
            (saved.len() + whole.len()) / 2,
            whole.len() - 1,
        ] {
            fs::write(&path, &whole[..cut]).unwrap();
            assert_eq!(open(&path).1, next, "cut at {cut} of {}", whole.len());
        }
        let (mut store, read) = open(&path);
        let mut last = read.clone();
        last.bridges.get_mut("br0").unwrap().ports.push(port("e"));
        store.save(&last).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines = r#"[{""#;
        assert!(
            !text.contains(lines) && text.contains("\"version\": 3"),
            "{text}"
        );
        assert_eq!(open(&path).1, last);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_or_foreign_files_are_refused() {
        let dir = temp_dir("corrupt");
        let path = dir.join("db.json");
        let refused = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            Store::open(&path).err().expect("refused").to_string()
        };
        for bad in [&b"{\"version\":2,\"bridges\":"[..], b"", b"[1]"] {
            let err = refused(bad);
            assert!(
                err.contains("db.json") && err.contains("not valid"),
                "{err}"
            );
        }
        let err = refused(b"{\"version\":7,\"bridges\":{}}");
        assert!(err.contains("version 7"), "{err}");
        // A whole line that does not read, or names what is not there.
        let snapshot = "{\"version\":3,\"bridges\":{}}\n";
        for (line, why) in [
            ("[{\"port\":{\"bridge\":\"br0\"}}]", "missing field"),
            ("[{\"del_bridge\":{\"name\":\"br9\"}}]", "br9"),
            ("[{\"launch\":{}}]", "unknown variant"),
            ("{\"del_bridge\":{\"name\":\"x\"}}", "expected a sequence"),
        ] {
            let err = refused(
                format!("{snapshot}{line}\n[{{\"del_bridge\":{{\"name\":\"x\"}}}}]\n").as_bytes(),
            );
            assert!(err.contains("line 2") && err.contains(why), "{err}");
        }
        // Lines after a version 2 document are not version 2.
        let err = refused(b"{\"version\":2,\"bridges\":{}}\n[{\"del_bridge\":{\"name\":\"x\"}}]\n");
        assert!(err.contains("line 2"), "{err}");
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
        let (mut store, db) = open(&path);
        assert_eq!(db.version, DB_VERSION);
        let br0 = &db.bridges["br0"];
        assert_eq!((br0.mac_aging_time, br0.mac_table_size), (30, 100));
        let ns = |netns: &str, ifname: &str| {
            Some(NsEnd {
                netns: netns.into(),
                ifname: ifname.into(),
            })
        };
        let expected: Vec<Arc<PortConfig>> = vec![
            Arc::new(PortConfig {
                kind: PortKind::Internal,
                ..PortConfig::system("br0")
            }),
            port("veth1"),
            Arc::new(PortConfig {
                netns: ns("ns1", "eth0"),
                ..PortConfig::system("ns1-eth0")
            }),
            Arc::new(PortConfig {
                netns: ns("/proc/42/ns/net", "eth1"),
                ..PortConfig::system("sd9f3a0c11")
            }),
        ];
        assert_eq!(br0.ports, expected);
        assert_eq!(db.bridges["old"].ports, vec![port("v2")]);
        assert!(!db.bridges["old"].has_internal());
        // The next change writes it as version 3, and it reads back the same.
        let mut next = db.clone();
        next.bridges.get_mut("old").unwrap().mac_aging_time = 301;
        store.save(&next).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("\"version\": 3"));
        assert_eq!(open(&path).1, next);
        fs::remove_dir_all(dir).unwrap();
    }
}
