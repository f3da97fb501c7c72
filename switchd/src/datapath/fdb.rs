//! The MAC learning table (forwarding database) of one bridge.
//!
//! Entries live in a slab; each port threads its entries on a doubly linked list in
//! the order they were last linked. An entry is re-linked at the tail when it is
//! seen again at least `RELINK_MS` after it was last linked, so a busy MAC costs a
//! hash probe and a store per frame, not list surgery; its last-seen time is always
//! within `RELINK_MS` of its link time. That makes every operation O(1) except
//! finding the port with the most entries on eviction (O(ports), only when full):
//! - aging walks each port's list from the head only as far as entries that could
//!   be stale (linked more than aging time minus `RELINK_MS` ago);
//! - a full table evicts the oldest entry of the port holding the most entries, as
//!   Open vSwitch does, so one port flooding random source MACs cannot push
//!   everybody else's entries out;
//! - deleting a port walks only that port's list.
//!
//! The table is not synchronised itself: the datapath locks it once per received
//! batch, never per frame (see `datapath::Bridge`).
//!
//! It does no I/O. When asked to (`record_changes`), it writes down every address
//! that is born, moves or dies in a journal ([`FdbChange`]), which its readers (the
//! kernel fast path's copy of the table, `datapath::kernel_fdb`) drain after the
//! lock is released: a MAC flood used to cost two bpf syscalls per frame under the
//! lock every datapath thread of the bridge needs.

use crate::wire::MacAddr;
use std::collections::HashMap;

pub type PortId = u32;

/// Open vSwitch's default.
pub const MAC_AGING_SECS: u64 = 300;
/// Open vSwitch's default.
pub const MAC_TABLE_SIZE: u32 = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbKey {
    pub vlan: u16,
    pub mac: MacAddr,
}

impl std::hash::Hash for FdbKey {
    /// One 64-bit word instead of a u16 and a 6-byte slice: a third less time per
    /// learn+lookup in the microbenchmark.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let m = self.mac.0;
        state.write_u64(u64::from_le_bytes([
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            self.vlan as u8,
            (self.vlan >> 8) as u8,
        ]));
    }
}

const NIL: u32 = u32::MAX;
/// How stale a list position may get before a refresh moves it to the tail.
const RELINK_MS: u64 = 1000;

/// What a lookup needs, stored in the hash table itself so the per-frame path
/// touches one cache line: a separate slab access cost ~5 ns per frame at 8192
/// entries in the microbenchmark.
#[derive(Clone, Copy)]
struct Entry {
    port: PortId,
    slot: u32,
    last_seen_ms: u64,
}

/// A node of a port's list, in `linked_ms` order.
#[derive(Clone, Copy)]
struct Slot {
    key: FdbKey,
    port: PortId,
    /// When this entry was put at the tail of its port's list.
    linked_ms: u64,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy)]
struct PortList {
    head: u32,
    tail: u32,
    len: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbCounters {
    pub learned: u64,
    pub aged: u64,
    pub evicted: u64,
    pub moved: u64,
}

/// A change to the table, in the order it happened. Refreshing a known address
/// (the per-frame case) is not a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbChange {
    Learned {
        key: FdbKey,
        port: PortId,
    },
    Moved {
        key: FdbKey,
        from: PortId,
        to: PortId,
    },
    Removed {
        key: FdbKey,
        port: PortId,
        reason: RemoveReason,
    },
    /// A new address found the table at its bound (`max` entries) and evicted
    /// one; recorded once until an address is learned without evicting.
    TableFull {
        max: u32,
    },
}

/// Why an address left the table (what `switchctl monitor` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    Aged,
    /// The table was full and this was the oldest entry of the fullest port.
    Evicted,
    Flushed,
    PortRemoved,
    /// Its port's VLAN settings changed.
    VlanChanged,
    /// `fdb-del`.
    Deleted,
    /// A static entry (`fdb-add`) took its place.
    MadeStatic,
    /// Its port became a mirror's output, which takes no part in switching.
    MirrorOutput,
}

impl RemoveReason {
    pub fn name(self) -> &'static str {
        match self {
            RemoveReason::Aged => "aged",
            RemoveReason::Evicted => "evicted",
            RemoveReason::Flushed => "flushed",
            RemoveReason::PortRemoved => "port-removed",
            RemoveReason::VlanChanged => "vlan-changed",
            RemoveReason::Deleted => "deleted",
            RemoveReason::MadeStatic => "made-static",
            RemoveReason::MirrorOutput => "mirror-output",
        }
    }
}

/// One entry as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbRow {
    pub key: FdbKey,
    pub port: PortId,
    pub age_ms: u64,
    /// Added by the operator (`fdb-add`): never ages, never moves.
    pub is_static: bool,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Clone: the fuzzer checks a batch's decision against a copy deciding one
/// frame at a time.
#[derive(Clone)]
pub struct Fdb {
    index: FastMap<FdbKey, Entry>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    ports: FastMap<PortId, PortList>,
    max_entries: usize,
    aging_ms: u64,
    counters: FdbCounters,
    /// Changes not yet drained, when someone reads them (`record_changes`).
    journal: Option<Vec<FdbChange>>,
    /// Entries the operator added (`fdb-add`): looked up before the learned
    /// ones, never learned over, aged, evicted or flushed; outside the bound.
    statics: FastMap<FdbKey, PortId>,
    /// Evicting since the last learn that found room (`FdbChange::TableFull`).
    full: bool,
}

impl Fdb {
    pub fn new(max_entries: u32, aging_secs: u64) -> Self {
        Fdb {
            index: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            ports: FastMap::default(),
            max_entries: max_entries.max(1) as usize,
            aging_ms: aging_secs.saturating_mul(1000),
            counters: FdbCounters::default(),
            journal: None,
            statics: FastMap::default(),
            full: false,
        }
    }

    /// Keeps a journal of changes from now on, for `take_changes`.
    pub fn record_changes(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// Stops keeping the journal and drops what it holds.
    pub fn stop_recording(&mut self) {
        self.journal = None;
    }

    /// Whether a journal is kept.
    pub fn is_recording(&self) -> bool {
        self.journal.is_some()
    }

    /// True if changes wait in the journal.
    pub fn has_changes(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// Moves the journal's changes, oldest first, to the end of `into`.
    pub fn take_changes(&mut self, into: &mut Vec<FdbChange>) {
        if let Some(journal) = &mut self.journal {
            into.append(journal);
        }
    }

    fn record(&mut self, change: FdbChange) {
        if let Some(journal) = &mut self.journal {
            journal.push(change);
        }
    }

    /// The addresses on `port`: learned ones oldest first, then static ones.
    pub fn keys_on(&self, port: PortId) -> impl Iterator<Item = FdbKey> + '_ {
        let mut idx = self.ports.get(&port).map_or(NIL, |list| list.head);
        let learned = std::iter::from_fn(move || {
            let slot = self.slots.get(idx as usize)?;
            idx = slot.next;
            Some(slot.key)
        });
        learned.chain(
            self.statics
                .iter()
                .filter(move |(_, &p)| p == port)
                .map(|(key, _)| *key),
        )
    }

    /// Puts `key` on `port` for good (replacing a learned entry or another
    /// static one of the same key).
    pub fn add_static(&mut self, key: FdbKey, port: PortId) {
        if let Some(entry) = self.index.get(&key) {
            let idx = entry.slot;
            self.remove(idx, RemoveReason::MadeStatic);
        }
        match self.statics.insert(key, port) {
            None => self.record(FdbChange::Learned { key, port }),
            Some(from) if from != port => self.record(FdbChange::Moved {
                key,
                from,
                to: port,
            }),
            Some(_) => {}
        }
    }

    /// Removes a static entry; false if there was none for `key`.
    pub fn remove_static(&mut self, key: &FdbKey) -> bool {
        self.remove_static_for(key, RemoveReason::Deleted)
    }

    fn remove_static_for(&mut self, key: &FdbKey, reason: RemoveReason) -> bool {
        match self.statics.remove(key) {
            Some(port) => {
                self.record(FdbChange::Removed {
                    key: *key,
                    port,
                    reason,
                });
                true
            }
            None => false,
        }
    }

    /// Entries the aging time would remove at `now_ms`, as (key, port).
    pub fn stale(&self, now_ms: u64) -> Vec<(FdbKey, PortId)> {
        let mut stale = Vec::new();
        self.walk_stale(now_ms, |key, port| stale.push((key, port)));
        stale
    }

    /// Calls `f` for every entry older than the aging time; walks only list heads
    /// that can be stale.
    fn walk_stale(&self, now_ms: u64, mut f: impl FnMut(FdbKey, PortId)) {
        // Only entries linked before this can be stale: last seen is at most
        // RELINK_MS after linked.
        let horizon = now_ms.saturating_sub(self.aging_ms) + RELINK_MS;
        for (&port, list) in &self.ports {
            let mut idx = list.head;
            while idx != NIL {
                let slot = &self.slots[idx as usize];
                if slot.linked_ms >= horizon {
                    break;
                }
                if now_ms.saturating_sub(self.index[&slot.key].last_seen_ms) > self.aging_ms {
                    f(slot.key, port);
                }
                idx = slot.next;
            }
        }
    }

    /// Moves `key`'s last-seen time forward to `seen_ms` if it is still on `port`
    /// (frames the kernel forwarded for it). It is linked at that time, not now:
    /// linked now, it would not be looked at again until a whole aging time
    /// from now, when it may have been stale for most of one.
    pub fn touch(&mut self, key: FdbKey, port: PortId, seen_ms: u64, now_ms: u64) {
        if let Some(entry) = self.index.get_mut(&key) {
            if entry.port == port && seen_ms > entry.last_seen_ms {
                let seen_ms = seen_ms.min(now_ms);
                entry.last_seen_ms = seen_ms;
                let idx = entry.slot;
                self.unlink(idx);
                self.link(idx, port, seen_ms);
            }
        }
    }

    /// Changes the bounds; a smaller table evicts down to its new size at once.
    pub fn set_limits(&mut self, max_entries: u32, aging_secs: u64) {
        self.max_entries = max_entries.max(1) as usize;
        self.aging_ms = aging_secs.saturating_mul(1000);
        while self.index.len() > self.max_entries {
            self.evict_one();
        }
        self.full = false;
    }

    /// Entries, static ones included.
    pub fn len(&self) -> usize {
        self.index.len() + self.statics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.statics.is_empty()
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn counters(&self) -> FdbCounters {
        self.counters
    }

    /// Records that `key` was seen on `port` at `now_ms`. The caller filters out
    /// multicast sources.
    pub fn learn(&mut self, key: FdbKey, port: PortId, now_ms: u64) {
        if !self.statics.is_empty() && self.statics.contains_key(&key) {
            return;
        }
        if let Some(entry) = self.index.get_mut(&key) {
            entry.last_seen_ms = now_ms;
            let idx = entry.slot;
            if entry.port == port {
                let slot = &self.slots[idx as usize];
                if now_ms.saturating_sub(slot.linked_ms) < RELINK_MS || slot.next == NIL {
                    return;
                }
            } else {
                let from = entry.port;
                entry.port = port;
                self.counters.moved += 1;
                self.record(FdbChange::Moved {
                    key,
                    from,
                    to: port,
                });
            }
            self.unlink(idx);
            self.link(idx, port, now_ms);
            return;
        }
        if self.index.len() >= self.max_entries {
            if !self.full {
                self.full = true;
                self.record(FdbChange::TableFull {
                    max: self.max_entries as u32,
                });
            }
            self.evict_one();
        } else {
            self.full = false;
        }
        let slot = Slot {
            key,
            port,
            linked_ms: now_ms,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx as usize] = slot;
                idx
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(
            key,
            Entry {
                port,
                slot: idx,
                last_seen_ms: now_ms,
            },
        );
        self.link(idx, port, now_ms);
        self.counters.learned += 1;
        self.record(FdbChange::Learned { key, port });
    }

    /// The port `key` was last seen on, unless that was longer ago than the aging time.
    pub fn lookup(&self, key: &FdbKey, now_ms: u64) -> Option<PortId> {
        if !self.statics.is_empty() {
            if let Some(&port) = self.statics.get(key) {
                return Some(port);
            }
        }
        let entry = self.index.get(key)?;
        (now_ms.saturating_sub(entry.last_seen_ms) <= self.aging_ms).then_some(entry.port)
    }

    /// Removes entries older than the aging time; returns how many. Entries the
    /// kernel forwarded for are `touch`ed first by the caller.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut expired = Vec::new();
        self.walk_stale(now_ms, |key, _| expired.push(key));
        for key in &expired {
            let idx = self.index[key].slot;
            self.remove(idx, RemoveReason::Aged);
        }
        self.counters.aged += expired.len() as u64;
        expired.len()
    }

    /// Forgets the learned entries on `port` (its VLAN settings changed; the
    /// static ones are configuration and stay); returns how many.
    pub fn remove_learned_on(&mut self, port: PortId) -> usize {
        self.remove_learned_for(port, RemoveReason::VlanChanged)
    }

    /// Forgets what was learned on a port that became a mirror's output.
    pub fn remove_learned_on_mirror_output(&mut self, port: PortId) -> usize {
        self.remove_learned_for(port, RemoveReason::MirrorOutput)
    }

    fn remove_learned_for(&mut self, port: PortId, reason: RemoveReason) -> usize {
        let mut removed = 0;
        while let Some(list) = self.ports.get(&port) {
            self.remove(list.head, reason);
            removed += 1;
        }
        removed
    }

    /// Forgets a learned entry; false if there was none.
    pub fn forget(&mut self, key: &FdbKey) -> bool {
        match self.index.get(key) {
            Some(entry) => {
                let idx = entry.slot;
                self.remove(idx, RemoveReason::Deleted);
                true
            }
            None => false,
        }
    }

    /// Forgets every entry on `port`, static ones too; returns how many.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let removed = self.remove_learned_for(port, RemoveReason::PortRemoved);
        let statics: Vec<FdbKey> = self
            .statics
            .iter()
            .filter(|(_, &p)| p == port)
            .map(|(key, _)| *key)
            .collect();
        for key in &statics {
            self.remove_static_for(key, RemoveReason::PortRemoved);
        }
        removed + statics.len()
    }

    /// Forgets the entries of one VLAN; returns how many. O(entries): an
    /// operator's request, not a per-frame path.
    pub fn flush_vlan(&mut self, vlan: u16) -> usize {
        let slots: Vec<u32> = self
            .index
            .iter()
            .filter(|(key, _)| key.vlan == vlan)
            .map(|(_, e)| e.slot)
            .collect();
        for &idx in &slots {
            self.remove(idx, RemoveReason::Flushed);
        }
        slots.len()
    }

    /// Forgets every learned entry (static ones stay: they are configuration);
    /// returns how many there were.
    pub fn flush(&mut self) -> usize {
        let n = self.index.len();
        if let Some(journal) = &mut self.journal {
            journal.extend(self.index.iter().map(|(&key, e)| FdbChange::Removed {
                key,
                port: e.port,
                reason: RemoveReason::Flushed,
            }));
        }
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.ports.clear();
        n
    }

    pub fn rows(&self, now_ms: u64) -> impl Iterator<Item = FdbRow> + '_ {
        let learned = self.index.iter().map(move |(key, entry)| FdbRow {
            key: *key,
            port: entry.port,
            age_ms: now_ms.saturating_sub(entry.last_seen_ms),
            is_static: false,
        });
        learned.chain(self.statics.iter().map(|(key, &port)| FdbRow {
            key: *key,
            port,
            age_ms: 0,
            is_static: true,
        }))
    }

    fn evict_one(&mut self) {
        let victim = self
            .ports
            .iter()
            .max_by_key(|(port, list)| (list.len, std::cmp::Reverse(**port)))
            .map(|(_, list)| list.head);
        if let Some(idx) = victim {
            self.remove(idx, RemoveReason::Evicted);
            self.counters.evicted += 1;
        }
    }

    fn remove(&mut self, idx: u32, reason: RemoveReason) {
        self.unlink(idx);
        let Slot { key, port, .. } = self.slots[idx as usize];
        self.index.remove(&key);
        self.free.push(idx);
        self.record(FdbChange::Removed { key, port, reason });
    }

    fn unlink(&mut self, idx: u32) {
        let Slot {
            port, prev, next, ..
        } = self.slots[idx as usize];
        let list = self.ports.get_mut(&port).expect("slot's port has a list");
        if prev == NIL {
            list.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        list.len -= 1;
        if list.len == 0 {
            self.ports.remove(&port);
        }
    }

    /// Links `idx` into `port`'s list at its place by `linked_ms`, found from
    /// the tail: at the tail itself when it is now.
    fn link(&mut self, idx: u32, port: PortId, linked_ms: u64) {
        let list = self.ports.entry(port).or_insert(PortList {
            head: NIL,
            tail: NIL,
            len: 0,
        });
        let mut after = list.tail;
        while after != NIL && self.slots[after as usize].linked_ms > linked_ms {
            after = self.slots[after as usize].prev;
        }
        let next = match after {
            NIL => list.head,
            after => self.slots[after as usize].next,
        };
        let slot = &mut self.slots[idx as usize];
        slot.port = port;
        slot.linked_ms = linked_ms;
        slot.prev = after;
        slot.next = next;
        match after {
            NIL => list.head = idx,
            after => self.slots[after as usize].next = idx,
        }
        match next {
            NIL => list.tail = idx,
            next => self.slots[next as usize].prev = idx,
        }
        list.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FdbKey {
        let b = n.to_be_bytes();
        FdbKey {
            vlan: 0,
            mac: MacAddr([0x02, 0, b[0], b[1], b[2], b[3]]),
        }
    }

    fn port_len(fdb: &Fdb, port: PortId) -> usize {
        fdb.rows(0).filter(|r| r.port == port).count()
    }

    #[test]
    fn an_entry_the_kernel_forwarded_for_ages_from_when_it_last_did() {
        let mut fdb = Fdb::new(16, 300);
        fdb.learn(key(1), 7, 0);
        fdb.learn(key(2), 7, 200_000);
        // Its frames went through the kernel until 10 s; the sweep at 301 s
        // finds that out.
        assert_eq!(fdb.stale(301_000), vec![(key(1), 7)]);
        fdb.touch(key(1), 7, 10_000, 301_000);
        assert_eq!(fdb.expire(301_000), 0);
        assert_eq!(fdb.expire(310_000), 0);
        assert_eq!(
            fdb.expire(311_000),
            1,
            "kept past 300 s after it was last seen"
        );
        assert_eq!(fdb.lookup(&key(1), 311_000), None);
        // Linked between older and newer entries, the lists stay in order.
        fdb.learn(key(3), 7, 400_000);
        fdb.touch(key(2), 7, 350_000, 400_000);
        assert_eq!(fdb.expire(501_000), 0);
        assert_eq!(fdb.expire(651_000), 1);
        assert_eq!(fdb.lookup(&key(3), 651_000), Some(7));
        assert_eq!(fdb.expire(701_000), 1);
        assert_eq!(fdb.len(), 0);
    }

    #[test]
    fn learn_then_lookup() {
        let mut fdb = Fdb::new(16, 300);
        assert_eq!(fdb.lookup(&key(1), 0), None);
        fdb.learn(key(1), 7, 0);
        assert_eq!(fdb.lookup(&key(1), 10), Some(7));
        assert_eq!(fdb.counters().learned, 1);
        fdb.learn(key(1), 7, 20);
        assert_eq!(fdb.counters().learned, 1, "refresh is not a new entry");
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn static_entries_win_and_stay() {
        let mut fdb = Fdb::new(2, 1);
        fdb.record_changes();
        let key = |n: u8| FdbKey {
            vlan: 0,
            mac: MacAddr([2, 0, 0, 0, 0, n]),
        };
        fdb.learn(key(1), 7, 0);
        fdb.add_static(key(1), 8);
        // Learning does not move it, aging and flushing do not remove it, and it
        // takes no room from learned entries.
        fdb.learn(key(1), 7, 10);
        fdb.learn(key(2), 7, 10);
        fdb.learn(key(3), 7, 10);
        assert_eq!(fdb.lookup(&key(1), 10), Some(8));
        assert_eq!(fdb.expire(100_000), 2);
        assert_eq!(fdb.flush(), 0);
        assert_eq!(fdb.lookup(&key(1), 100_000), Some(8));
        assert_eq!(fdb.keys_on(8).collect::<Vec<_>>(), vec![key(1)]);
        let rows: Vec<FdbRow> = fdb.rows(0).collect();
        assert!(rows.len() == 1 && rows[0].is_static, "{rows:?}");
        // Its port going takes it; the journal says so.
        assert_eq!(fdb.remove_port(8), 1);
        assert!(fdb.is_empty());
        let mut changes = Vec::new();
        fdb.take_changes(&mut changes);
        assert!(changes.contains(&FdbChange::Removed {
            key: key(1),
            port: 8,
            reason: RemoveReason::PortRemoved,
        }));
        assert!(!fdb.remove_static(&key(1)));
    }

    #[test]
    fn one_vlan_can_be_flushed() {
        let mut fdb = Fdb::new(16, 300);
        fdb.record_changes();
        for vlan in [1, 1, 2] {
            let n = fdb.len() as u8;
            fdb.learn(
                FdbKey {
                    vlan,
                    mac: MacAddr([2, 0, 0, 0, 0, n]),
                },
                7,
                0,
            );
        }
        assert_eq!(fdb.flush_vlan(1), 2);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.keys_on(7).map(|k| k.vlan).collect::<Vec<_>>(), vec![2]);
        let mut changes = Vec::new();
        fdb.take_changes(&mut changes);
        let removed = changes
            .iter()
            .filter(|c| matches!(c, FdbChange::Removed { .. }))
            .count();
        assert_eq!(removed, 2, "the kernel's copy hears of it");
    }

    #[test]
    fn vlans_are_separate() {
        let mut fdb = Fdb::new(16, 300);
        let mut k10 = key(1);
        k10.vlan = 10;
        fdb.learn(key(1), 1, 0);
        fdb.learn(k10, 2, 0);
        assert_eq!(fdb.lookup(&key(1), 0), Some(1));
        assert_eq!(fdb.lookup(&k10, 0), Some(2));
    }

    #[test]
    fn move_repoints_and_counts() {
        let mut fdb = Fdb::new(16, 300);
        fdb.learn(key(1), 1, 0);
        fdb.learn(key(2), 1, 0);
        fdb.learn(key(1), 2, 5);
        assert_eq!(fdb.lookup(&key(1), 5), Some(2));
        assert_eq!(fdb.counters().moved, 1);
        assert_eq!(port_len(&fdb, 1), 1);
        assert_eq!(port_len(&fdb, 2), 1);
        assert_eq!(fdb.remove_port(1), 1);
        assert_eq!(fdb.lookup(&key(1), 5), Some(2));
    }

    #[test]
    fn aging_removes_only_stale_entries() {
        let mut fdb = Fdb::new(16, 2);
        fdb.learn(key(1), 1, 0);
        fdb.learn(key(2), 1, 1_000);
        fdb.learn(key(3), 2, 1_500);
        // Refreshed soon after linking: stays in place, only its time changes.
        fdb.learn(key(1), 1, 800);
        // Refreshed later: moves to the tail of port 1's list.
        fdb.learn(key(2), 1, 2_500);
        assert_eq!(
            fdb.lookup(&key(1), 2_801),
            None,
            "stale entries miss at once"
        );
        assert_eq!(fdb.expire(2_801), 1);
        assert_eq!(fdb.lookup(&key(2), 2_801), Some(1));
        assert_eq!(fdb.lookup(&key(3), 2_801), Some(2));
        // key(3) is stale after 3_500, key(2) after 4_500: each exactly on time.
        assert_eq!(fdb.expire(3_500), 0);
        assert_eq!(fdb.expire(3_501), 1);
        assert_eq!(fdb.expire(4_500), 0);
        assert_eq!(fdb.expire(4_501), 1);
        assert!(fdb.is_empty());
        assert_eq!(fdb.counters().aged, 3);
    }

    #[test]
    fn busy_entries_refreshed_often_never_age() {
        let mut fdb = Fdb::new(16, 2);
        for t in (0..20_000).step_by(100) {
            fdb.learn(key(1), 1, t);
            fdb.learn(key(2), 1, t / 1_500 * 1_500);
            fdb.expire(t);
            assert_eq!(fdb.lookup(&key(1), t), Some(1), "at {t}");
            assert_eq!(fdb.lookup(&key(2), t), Some(1), "at {t}");
        }
        assert_eq!(fdb.counters().aged, 0);
    }

    #[test]
    fn full_table_evicts_from_the_biggest_port() {
        let mut fdb = Fdb::new(10, 300);
        // Ports 1 and 2 own two entries each; port 9 floods.
        for (n, port) in [(1, 1), (2, 1), (3, 2), (4, 2)] {
            fdb.learn(key(n), port, 0);
        }
        for n in 100..1_000 {
            fdb.learn(key(n), 9, n as u64);
        }
        assert_eq!(fdb.len(), 10);
        for n in 1..=4 {
            assert!(fdb.lookup(&key(n), 1_000).is_some(), "entry {n} survived");
        }
        assert_eq!(port_len(&fdb, 9), 6);
        // The flooder keeps its newest entries.
        assert_eq!(fdb.lookup(&key(999), 1_000), Some(9));
        assert_eq!(fdb.lookup(&key(100), 1_000), None);
        assert_eq!(fdb.counters().evicted, 900 - 6);
    }

    #[test]
    fn shrinking_the_table_evicts_at_once() {
        let mut fdb = Fdb::new(100, 300);
        for n in 0..50 {
            fdb.learn(key(n), n % 5, 0);
        }
        fdb.set_limits(20, 300);
        assert_eq!(fdb.len(), 20);
        for port in 0..5 {
            assert_eq!(port_len(&fdb, port), 4, "eviction spread evenly");
        }
    }

    #[test]
    fn slots_are_reused() {
        let mut fdb = Fdb::new(4, 1);
        for round in 0..100u64 {
            for n in 0..4 {
                fdb.learn(key(n + round as u32 * 4), 1, round * 10_000);
            }
            fdb.expire(round * 10_000 + 5_000);
        }
        assert!(fdb.slots.len() <= 4);
        assert!(fdb.is_empty());
    }

    #[test]
    fn flush_and_remove_port() {
        let mut fdb = Fdb::new(16, 300);
        for n in 0..6 {
            fdb.learn(key(n), n % 2, 0);
        }
        assert_eq!(fdb.remove_port(0), 3);
        assert_eq!(fdb.len(), 3);
        assert_eq!(fdb.flush(), 3);
        assert!(fdb.is_empty());
        fdb.learn(key(1), 1, 0);
        assert_eq!(fdb.lookup(&key(1), 0), Some(1));
    }

    #[test]
    fn the_journal_records_births_moves_and_deaths_only() {
        let mut fdb = Fdb::new(2, 1);
        fdb.learn(key(9), 1, 0);
        assert!(!fdb.has_changes(), "nothing is recorded until asked");
        fdb.record_changes();
        fdb.learn(key(1), 1, 0);
        fdb.learn(key(1), 1, 5_000);
        fdb.learn(key(1), 2, 5_001);
        // The table holds 2: a third address evicts the oldest of the fullest port.
        fdb.learn(key(2), 2, 5_002);
        let mut changes = Vec::new();
        fdb.take_changes(&mut changes);
        use FdbChange::*;
        assert_eq!(
            changes,
            vec![
                Learned {
                    key: key(1),
                    port: 1
                },
                Moved {
                    key: key(1),
                    from: 1,
                    to: 2
                },
                TableFull { max: 2 },
                Removed {
                    key: key(9),
                    port: 1,
                    reason: RemoveReason::Evicted,
                },
                Learned {
                    key: key(2),
                    port: 2
                },
            ]
        );
        assert!(!fdb.has_changes());
        fdb.expire(10_000);
        fdb.learn(key(3), 3, 10_000);
        fdb.flush();
        changes.clear();
        fdb.take_changes(&mut changes);
        assert_eq!(
            changes,
            vec![
                Removed {
                    key: key(1),
                    port: 2,
                    reason: RemoveReason::Aged,
                },
                Removed {
                    key: key(2),
                    port: 2,
                    reason: RemoveReason::Aged,
                },
                Learned {
                    key: key(3),
                    port: 3
                },
                Removed {
                    key: key(3),
                    port: 3,
                    reason: RemoveReason::Flushed,
                },
            ]
        );
    }

    #[test]
    fn a_full_table_is_recorded_once_per_episode() {
        let mut fdb = Fdb::new(2, 300);
        fdb.record_changes();
        let full = |fdb: &mut Fdb| {
            let mut changes = Vec::new();
            fdb.take_changes(&mut changes);
            changes
                .iter()
                .filter(|c| matches!(c, FdbChange::TableFull { max: 2 }))
                .count()
        };
        for n in 0..10 {
            fdb.learn(key(n), 1, 0);
        }
        assert_eq!(full(&mut fdb), 1, "one episode, eight evictions");
        fdb.forget(&key(9));
        fdb.learn(key(20), 1, 0);
        assert_eq!(full(&mut fdb), 0, "learned into room: the episode ends");
        fdb.learn(key(21), 1, 0);
        assert_eq!(full(&mut fdb), 1);
    }

    #[test]
    fn stale_lists_what_expire_removes() {
        let mut fdb = Fdb::new(16, 1);
        fdb.learn(key(1), 1, 0);
        fdb.learn(key(2), 2, 1_500);
        assert_eq!(fdb.stale(2_000), vec![(key(1), 1)]);
        assert_eq!(fdb.expire(2_000), 1);
        assert_eq!(fdb.keys_on(2).collect::<Vec<_>>(), vec![key(2)]);
        assert_eq!(fdb.keys_on(1).count(), 0);
    }
}
