//! What `switchctl monitor` hears from the datapath: the MAC table's journal
//! (`Fdb::take_changes`, the same one the kernel's copy replays) as events with
//! port names, rate-limited per kind.
//!
//! The datapath never waits for a monitor. Whoever drains a bridge's journal
//! (a datapath thread after a batch that changed the table, the control plane
//! after aging or a flush) hands it to the bridge's [`EventTap`], which passes at
//! most [`EVENTS_PER_SEC`] events of each kind a second to a sink the control
//! plane installs (a bounded broadcast channel whose send never blocks) and
//! counts the rest, reported as one `Suppressed` event per kind once the second
//! is over. A MAC flood changes the table 800k times a second (a birth and an
//! eviction per frame); the sink sees a few hundred events.
//!
//! Without a monitor it costs nothing: the journal is kept only for the kernel
//! fast path or while a monitor watches, and `EventTap::publish` is one relaxed load.
//! Port names are resolved here, as `Arc<str>` clones (no allocation), because
//! a port's addresses go (`port-removed`) after the control plane has forgotten
//! the port.

use super::fdb::{Fdb, FdbChange, FdbKey, PortId, RemoveReason};
use super::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Events of one kind (`MacKind`) a bridge passes to monitors per second.
pub const EVENTS_PER_SEC: u32 = 100;

/// A monitor's event kinds from the MAC table, each rate-limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacKind {
    Learned,
    Moved,
    Aged,
    Evicted,
    /// Flushed, deleted, its port removed or changed.
    Removed,
    TableFull,
}

const KINDS: usize = 6;

impl MacKind {
    pub fn name(self) -> &'static str {
        match self {
            MacKind::Learned => "mac-learned",
            MacKind::Moved => "mac-moved",
            MacKind::Aged => "mac-aged",
            MacKind::Evicted => "mac-evicted",
            MacKind::Removed => "mac-removed",
            MacKind::TableFull => "table-full",
        }
    }

    /// Aging and eviction are watched for on their own: each has its kind.
    pub fn of_removal(reason: RemoveReason) -> MacKind {
        match reason {
            RemoveReason::Aged => MacKind::Aged,
            RemoveReason::Evicted => MacKind::Evicted,
            _ => MacKind::Removed,
        }
    }

    fn of(change: &FdbChange) -> MacKind {
        match change {
            FdbChange::Learned { .. } => MacKind::Learned,
            FdbChange::Moved { .. } => MacKind::Moved,
            FdbChange::Removed { reason, .. } => MacKind::of_removal(*reason),
            FdbChange::TableFull { .. } => MacKind::TableFull,
        }
    }
}

/// What happened, with port names.
#[derive(Debug, Clone)]
pub enum MacWhat {
    Learned {
        key: FdbKey,
        port: Arc<str>,
    },
    Moved {
        key: FdbKey,
        from: Arc<str>,
        to: Arc<str>,
    },
    Removed {
        key: FdbKey,
        port: Arc<str>,
        reason: RemoveReason,
    },
    TableFull {
        max: u32,
    },
    /// Events of `kind` not passed on in the second before `time`.
    Suppressed {
        kind: MacKind,
        count: u64,
    },
}

#[derive(Debug, Clone)]
pub struct MacEvent {
    pub time: SystemTime,
    pub bridge: Arc<str>,
    pub what: MacWhat,
}

/// Where events go: called with no lock of the datapath's held but the tap's;
/// must not block.
pub type EventSink = Box<dyn Fn(MacEvent) + Send + Sync>;

/// The monitors, as every bridge's tap sees them.
#[derive(Default)]
pub struct Watchers {
    count: AtomicUsize,
    sink: OnceLock<EventSink>,
}

impl Watchers {
    fn is_on(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0 && self.sink.get().is_some()
    }

    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(super) fn set_sink(&self, sink: EventSink) {
        let _ = self.sink.set(sink);
    }
}

/// One monitor connected; events flow while any is held.
pub struct Watch(Arc<Watchers>);

impl Watch {
    pub(super) fn new(watchers: &Arc<Watchers>) -> Watch {
        watchers.count.fetch_add(1, Ordering::Relaxed);
        Watch(watchers.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The limit of one kind in the current second.
#[derive(Default, Clone, Copy)]
struct Limit {
    second: u64,
    sent: u32,
    suppressed: u64,
}

impl Limit {
    /// Whether one more event may go out in `second`, and how many were
    /// suppressed in an earlier second now over.
    fn admit(&mut self, second: u64) -> (bool, u64) {
        let ended = self.roll(second);
        if self.sent < EVENTS_PER_SEC {
            self.sent += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }

    /// Starts `second` if it is a new one; returns what the old one suppressed.
    fn roll(&mut self, second: u64) -> u64 {
        if second == self.second {
            return 0;
        }
        self.second = second;
        self.sent = 0;
        std::mem::take(&mut self.suppressed)
    }
}

/// A bridge's events on their way to the monitors. Its lock is taken after the
/// kernel copy's and before the table's, and only while a monitor watches or
/// the journal is kept for one that just left.
pub struct EventTap {
    watchers: Arc<Watchers>,
    state: Mutex<TapState>,
}

struct TapState {
    bridge: Arc<str>,
    /// Every port the bridge has had since its ids were last forgotten.
    names: HashMap<PortId, Arc<str>>,
    /// For an id without a name (none should be seen).
    unknown: Arc<str>,
    limits: [Limit; KINDS],
    /// The journal, when no kernel copy takes it.
    scratch: Vec<FdbChange>,
}

impl EventTap {
    pub(super) fn new(bridge: &str, watchers: Arc<Watchers>) -> EventTap {
        EventTap {
            watchers,
            state: Mutex::new(TapState {
                bridge: bridge.into(),
                names: HashMap::new(),
                unknown: "?".into(),
                limits: [Limit::default(); KINDS],
                scratch: Vec::new(),
            }),
        }
    }

    pub(super) fn is_on(&self) -> bool {
        self.watchers.is_on()
    }

    pub(super) fn name_port(&self, id: PortId, name: &str) {
        lock(&self.state).names.insert(id, name.into());
    }

    /// Call once the port's addresses are gone from the table and published.
    pub(super) fn forget_port(&self, id: PortId) {
        lock(&self.state).names.remove(&id);
    }

    /// Passes on `changes`, drained from the table's journal in order.
    pub(super) fn publish(&self, changes: &[FdbChange]) {
        if changes.is_empty() || !self.is_on() {
            return;
        }
        let mut state = lock(&self.state);
        self.publish_locked(&mut state, changes);
    }

    /// Drains the journal of a table without a kernel copy and passes it on;
    /// without a monitor, only empties it.
    pub(super) fn drain(&self, fdb: &Mutex<Fdb>) {
        let mut state = lock(&self.state);
        let mut scratch = std::mem::take(&mut state.scratch);
        lock(fdb).take_changes(&mut scratch);
        if self.is_on() {
            self.publish_locked(&mut state, &scratch);
        }
        scratch.clear();
        state.scratch = scratch;
    }

    /// Reports what was suppressed in seconds that are over (called once a
    /// second, so a flood that stopped is still accounted for).
    pub(super) fn tick(&self, now_ms: u64) {
        if !self.is_on() {
            return;
        }
        let mut state = lock(&self.state);
        let second = now_ms / 1000;
        let time = SystemTime::now();
        for (n, kind) in ALL_KINDS.iter().enumerate() {
            let count = state.limits[n].roll(second);
            self.suppressed(&state, time, *kind, count);
        }
    }

    fn publish_locked(&self, state: &mut TapState, changes: &[FdbChange]) {
        let time = SystemTime::now();
        let second = super::now_ms() / 1000;
        for change in changes {
            let kind = MacKind::of(change);
            let (admitted, ended) = state.limits[kind as usize].admit(second);
            self.suppressed(state, time, kind, ended);
            if admitted {
                let what = state.what(change);
                self.send(MacEvent {
                    time,
                    bridge: state.bridge.clone(),
                    what,
                });
            }
        }
    }

    fn suppressed(&self, state: &TapState, time: SystemTime, kind: MacKind, count: u64) {
        if count > 0 {
            self.send(MacEvent {
                time,
                bridge: state.bridge.clone(),
                what: MacWhat::Suppressed { kind, count },
            });
        }
    }

    fn send(&self, event: MacEvent) {
        if let Some(sink) = self.watchers.sink.get() {
            sink(event);
        }
    }
}

const ALL_KINDS: [MacKind; KINDS] = [
    MacKind::Learned,
    MacKind::Moved,
    MacKind::Aged,
    MacKind::Evicted,
    MacKind::Removed,
    MacKind::TableFull,
];

impl TapState {
    fn name(&self, id: PortId) -> Arc<str> {
        self.names.get(&id).unwrap_or(&self.unknown).clone()
    }

    fn what(&self, change: &FdbChange) -> MacWhat {
        match *change {
            FdbChange::Learned { key, port } => MacWhat::Learned {
                key,
                port: self.name(port),
            },
            FdbChange::Moved { key, from, to } => MacWhat::Moved {
                key,
                from: self.name(from),
                to: self.name(to),
            },
            FdbChange::Removed { key, port, reason } => MacWhat::Removed {
                key,
                port: self.name(port),
                reason,
            },
            FdbChange::TableFull { max } => MacWhat::TableFull { max },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    fn tap() -> (EventTap, Watch, Arc<Mutex<Vec<MacEvent>>>) {
        let watchers = Arc::new(Watchers::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        watchers.set_sink(Box::new(move |e| sink.lock().unwrap().push(e)));
        let watch = Watch::new(&watchers);
        (EventTap::new("br0", watchers), watch, seen)
    }

    fn learned(n: u32) -> FdbChange {
        let b = n.to_be_bytes();
        FdbChange::Learned {
            key: FdbKey {
                vlan: 0,
                mac: MacAddr([2, 0, b[0], b[1], b[2], b[3]]),
            },
            port: 1,
        }
    }

    #[test]
    fn names_ports_and_keeps_order() {
        let (tap, _watch, seen) = tap();
        tap.name_port(1, "veth1");
        tap.name_port(2, "veth2");
        let key = FdbKey {
            vlan: 10,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
        };
        tap.publish(&[
            FdbChange::Learned { key, port: 1 },
            FdbChange::Moved {
                key,
                from: 1,
                to: 2,
            },
        ]);
        let seen = seen.lock().unwrap();
        assert!(matches!(&seen[0].what, MacWhat::Learned { port, .. } if &**port == "veth1"));
        assert!(
            matches!(&seen[1].what, MacWhat::Moved { from, to, .. } if &**from == "veth1" && &**to == "veth2")
        );
        assert_eq!(&*seen[0].bridge, "br0");
    }

    #[test]
    fn a_flood_is_limited_per_kind_and_counted() {
        let (tap, _watch, seen) = tap();
        tap.name_port(1, "veth1");
        let flood: Vec<FdbChange> = (0..1000).map(learned).collect();
        let aged = FdbChange::Removed {
            key: FdbKey {
                vlan: 0,
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
            },
            port: 1,
            reason: RemoveReason::Aged,
        };
        let now = crate::datapath::now_ms();
        tap.publish(&flood);
        tap.publish(&[aged]);
        // The second is not over: nothing to report yet.
        tap.tick(now);
        {
            let seen = seen.lock().unwrap();
            let learned = seen
                .iter()
                .filter(|e| matches!(e.what, MacWhat::Learned { .. }))
                .count();
            assert_eq!(learned, EVENTS_PER_SEC as usize);
            assert!(
                matches!(seen.last().unwrap().what, MacWhat::Removed { .. }),
                "another kind has its own limit"
            );
        }
        tap.tick(now + 2000);
        let seen = seen.lock().unwrap();
        let suppressed: Vec<(MacKind, u64)> = seen
            .iter()
            .filter_map(|e| match e.what {
                MacWhat::Suppressed { kind, count } => Some((kind, count)),
                _ => None,
            })
            .collect();
        // Unless the publish straddled a second, in which case the split differs.
        let total: u64 = suppressed.iter().map(|(_, c)| c).sum();
        assert!(suppressed.iter().all(|(k, _)| *k == MacKind::Learned));
        assert!(total >= 1000 - 2 * EVENTS_PER_SEC as u64, "{suppressed:?}");
    }

    #[test]
    fn nothing_goes_out_without_a_watch() {
        let (tap, watch, seen) = tap();
        drop(watch);
        tap.publish(&[learned(1)]);
        assert!(seen.lock().unwrap().is_empty());
    }
}
