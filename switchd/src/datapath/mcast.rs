//! The multicast snooping table (group database) of one bridge: which ports have
//! members of which IP multicast group, per VLAN, and which ports lead to a
//! multicast router. Filled from the IGMP and MLD messages the datapath sees
//! (`wire::mcast`), read to send group traffic only where it is wanted.
//!
//! Bounded by a number of groups, and as many router ports (a report for one
//! more is not learned and is counted; the group's traffic is then treated as
//! unregistered: flooded, or with `disable-flood-unregistered` sent to the
//! router ports only) and aged:
//! a membership not reported again within the aging time is forgotten. It is
//! small (Open vSwitch's default bound is 2048 groups) and swept whole.
//!
//! Like the MAC table it is not synchronised itself; `datapath::Bridge` keeps it
//! behind its own lock, taken after the MAC table's by a datapath thread only
//! for a batch that holds IP multicast.

use super::fdb::PortId;
use std::collections::HashMap;
use std::net::IpAddr;
use switchd_proto::McastSnooping;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub vlan: u16,
    pub group: IpAddr,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    port: PortId,
    ms: u64,
}

/// A port a query came in on.
#[derive(Debug, Clone, Copy)]
struct Router {
    seen: Seen,
    /// When the querier behind it counts: its first query's maximum response
    /// time after it was first heard, so that every member has had the time to
    /// answer before traffic is constrained (the kernel bridge waits likewise).
    ready_ms: u64,
}

/// What the table has done since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MdbCounters {
    /// Memberships reported (new or refreshed).
    pub joins: u64,
    /// Memberships ended by a leave (IGMP leave, MLD done, an empty include).
    pub leaves: u64,
    /// Memberships and router ports that aged out.
    pub aged: u64,
    /// Reports for a group, or queries from a router port, not learned because
    /// the table was full.
    pub table_full: u64,
    /// Queries seen.
    pub queries: u64,
}

/// One row of `mdb-show`: a member port of a group, or (`group` None) a port a
/// multicast router is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdbRow {
    pub vlan: u16,
    pub group: Option<IpAddr>,
    pub port: PortId,
    pub age_ms: u64,
}

#[derive(Clone)]
pub struct Mdb {
    groups: HashMap<GroupKey, Vec<Seen>>,
    /// Per VLAN, the ports a query came in on; as many in all as groups at most.
    routers: HashMap<u16, Vec<Router>>,
    max_groups: usize,
    /// Snooping is on: read under the lock, so that a batch that saw it on just
    /// before it was turned off learns nothing after the flush.
    enabled: bool,
    aging_ms: u64,
    /// Traffic to a group nobody reported goes everywhere (true, the default)
    /// or to the router ports only.
    flood_unregistered: bool,
    counters: MdbCounters,
}

impl Mdb {
    pub fn new(settings: &McastSnooping) -> Self {
        let mut mdb = Mdb {
            groups: HashMap::new(),
            routers: HashMap::new(),
            max_groups: 0,
            enabled: true,
            aging_ms: 0,
            flood_unregistered: true,
            counters: MdbCounters::default(),
        };
        mdb.configure(settings);
        mdb
    }

    /// Takes new bounds. A smaller table keeps the groups it has: they age out,
    /// and new ones wait for room.
    pub fn configure(&mut self, settings: &McastSnooping) {
        self.max_groups = settings.table_size as usize;
        self.aging_ms = settings.aging_time.saturating_mul(1000);
        self.flood_unregistered = !settings.disable_flood_unregistered;
        self.enabled = settings.enable;
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn flood_unregistered(&self) -> bool {
        self.flood_unregistered
    }

    pub fn counters(&self) -> MdbCounters {
        self.counters
    }

    /// Groups in the table.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.routers.is_empty()
    }

    pub fn max_groups(&self) -> usize {
        self.max_groups
    }

    fn fresh(&self, seen: &Seen, now_ms: u64) -> bool {
        now_ms.saturating_sub(seen.ms) < self.aging_ms
    }

    /// `port` has a member of `key`'s group (a report).
    pub fn join(&mut self, key: GroupKey, port: PortId, now_ms: u64) {
        let full = self.groups.len() >= self.max_groups;
        let members = match self.groups.get_mut(&key) {
            Some(members) => members,
            None if full => {
                self.counters.table_full += 1;
                return;
            }
            None => self.groups.entry(key).or_default(),
        };
        self.counters.joins += 1;
        match members.iter_mut().find(|m| m.port == port) {
            Some(m) => m.ms = now_ms,
            None => members.push(Seen { port, ms: now_ms }),
        }
    }

    /// `port`'s member left `key`'s group. It goes at once: there is no querier
    /// here to ask whether another member behind the same port still wants it.
    pub fn leave(&mut self, key: GroupKey, port: PortId) {
        if let Some(members) = self.groups.get_mut(&key) {
            let before = members.len();
            members.retain(|m| m.port != port);
            if members.len() < before {
                self.counters.leaves += 1;
            }
            if members.is_empty() {
                self.groups.remove(&key);
            }
        }
    }

    /// A query came in on `port`: a multicast router (or a querier) is behind
    /// it, and members answer within `max_response_ms`.
    pub fn query(&mut self, vlan: u16, port: PortId, now_ms: u64, max_response_ms: u64) {
        self.counters.queries += 1;
        let aging = self.aging_ms;
        let count: usize = self.routers.values().map(Vec::len).sum();
        let routers = self.routers.entry(vlan).or_default();
        match routers.iter_mut().find(|r| r.seen.port == port) {
            Some(r) => {
                if now_ms.saturating_sub(r.seen.ms) >= aging {
                    r.ready_ms = now_ms + max_response_ms;
                }
                r.seen.ms = now_ms;
            }
            None if count >= self.max_groups => self.counters.table_full += 1,
            None => routers.push(Router {
                seen: Seen { port, ms: now_ms },
                ready_ms: now_ms + max_response_ms,
            }),
        }
        if routers.is_empty() {
            self.routers.remove(&vlan);
        }
    }

    /// Whether a querier has been heard in `vlan`, long enough ago that the
    /// members have answered it: only then is its traffic constrained.
    pub fn has_querier(&self, vlan: u16, now_ms: u64) -> bool {
        self.routers.get(&vlan).is_some_and(|routers| {
            routers
                .iter()
                .any(|r| self.fresh(&r.seen, now_ms) && r.ready_ms <= now_ms)
        })
    }

    /// The ports with a live member of `key`'s group, or None for a group
    /// nobody (still) reports.
    pub fn members(
        &self,
        key: &GroupKey,
        now_ms: u64,
    ) -> Option<impl Iterator<Item = PortId> + '_> {
        let members = self.groups.get(key)?;
        members.iter().any(|m| self.fresh(m, now_ms)).then(move || {
            members
                .iter()
                .filter(move |m| self.fresh(m, now_ms))
                .map(|m| m.port)
        })
    }

    /// The ports leading to a multicast router in `vlan`.
    pub fn mrouters(&self, vlan: u16, now_ms: u64) -> impl Iterator<Item = PortId> + '_ {
        self.routers
            .get(&vlan)
            .into_iter()
            .flatten()
            .filter(move |r| self.fresh(&r.seen, now_ms))
            .map(|r| r.seen.port)
    }

    /// Forgets what aged out; returns how many memberships and router ports.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let aging = self.aging_ms;
        let fresh = |m: &Seen| now_ms.saturating_sub(m.ms) < aging;
        let mut gone = 0;
        self.groups.retain(|_, members| {
            let before = members.len();
            members.retain(fresh);
            gone += before - members.len();
            !members.is_empty()
        });
        self.routers.retain(|_, routers| {
            let before = routers.len();
            routers.retain(|r| fresh(&r.seen));
            gone += before - routers.len();
            !routers.is_empty()
        });
        self.counters.aged += gone as u64;
        gone
    }

    /// Forgets everything on `port` (it left the bridge or changed VLANs).
    pub fn remove_port(&mut self, port: PortId) {
        self.groups.retain(|_, members| {
            members.retain(|m| m.port != port);
            !members.is_empty()
        });
        self.routers.retain(|_, routers| {
            routers.retain(|r| r.seen.port != port);
            !routers.is_empty()
        });
    }

    /// Forgets every group and router port; returns how many rows there were.
    pub fn flush(&mut self) -> usize {
        let rows = self.groups.values().map(Vec::len).sum::<usize>()
            + self.routers.values().map(Vec::len).sum::<usize>();
        self.groups.clear();
        self.routers.clear();
        rows
    }

    pub fn rows(&self, now_ms: u64) -> impl Iterator<Item = MdbRow> + '_ {
        let age = move |m: &Seen| now_ms.saturating_sub(m.ms);
        let groups = self.groups.iter().flat_map(move |(key, members)| {
            members.iter().map(move |m| MdbRow {
                vlan: key.vlan,
                group: Some(key.group),
                port: m.port,
                age_ms: age(m),
            })
        });
        let routers = self.routers.iter().flat_map(move |(vlan, routers)| {
            routers.iter().map(move |r| MdbRow {
                vlan: *vlan,
                group: None,
                port: r.seen.port,
                age_ms: age(&r.seen),
            })
        });
        groups.chain(routers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mdb(table_size: u32, aging_time: u64) -> Mdb {
        Mdb::new(&McastSnooping {
            table_size,
            aging_time,
            ..McastSnooping::default()
        })
    }

    fn key(last: u8) -> GroupKey {
        GroupKey {
            vlan: 0,
            group: IpAddr::from([239, 0, 0, last]),
        }
    }

    fn members(mdb: &Mdb, k: &GroupKey, now: u64) -> Option<Vec<PortId>> {
        mdb.members(k, now).map(Iterator::collect)
    }

    #[test]
    fn joins_leaves_and_ages() {
        let mut mdb = mdb(16, 15);
        mdb.join(key(1), 10, 0);
        mdb.join(key(1), 20, 5_000);
        mdb.join(key(1), 10, 6_000);
        assert_eq!(members(&mdb, &key(1), 6_000), Some(vec![10, 20]));
        assert_eq!(members(&mdb, &key(2), 6_000), None);
        // 20 was last heard at 5 s: gone at 20 s, before the sweep too.
        assert_eq!(members(&mdb, &key(1), 20_000), Some(vec![10]));
        assert_eq!(mdb.expire(20_000), 1);
        mdb.leave(key(1), 10);
        assert_eq!(members(&mdb, &key(1), 20_000), None);
        assert!(mdb.is_empty());
        assert_eq!(
            mdb.counters(),
            MdbCounters {
                joins: 3,
                leaves: 1,
                aged: 1,
                ..MdbCounters::default()
            }
        );
    }

    #[test]
    fn a_full_table_refreshes_known_groups_and_counts_new_ones() {
        let mut mdb = mdb(2, 300);
        mdb.join(key(1), 10, 0);
        mdb.join(key(2), 10, 0);
        mdb.join(key(3), 10, 0);
        mdb.join(key(2), 20, 0);
        assert_eq!(mdb.len(), 2);
        assert_eq!(members(&mdb, &key(2), 0), Some(vec![10, 20]));
        assert_eq!(mdb.counters().table_full, 1);
    }

    #[test]
    fn router_ports_are_per_vlan_count_after_the_response_time_and_age() {
        let mut mdb = mdb(2, 15);
        mdb.query(10, 7, 0, 1_000);
        assert!(!mdb.has_querier(10, 999), "members have not answered yet");
        mdb.query(10, 7, 1_000, 1_000);
        assert!(
            mdb.has_querier(10, 1_000),
            "a refresh does not restart the wait"
        );
        mdb.query(20, 8, 0, 1_000);
        assert!(!mdb.has_querier(30, 5_000));
        // The bound covers router ports too.
        mdb.query(30, 9, 0, 1_000);
        assert_eq!(mdb.counters().table_full, 1);
        assert_eq!(mdb.mrouters(10, 1_000).collect::<Vec<_>>(), vec![7]);
        assert_eq!(mdb.mrouters(20, 15_000).count(), 0);
        assert!(!mdb.has_querier(20, 15_000));
        assert_eq!(mdb.expire(15_500), 1);
        mdb.remove_port(7);
        assert!(mdb.is_empty());
    }
}
