//! The forwarding decision for a received batch, without any I/O: put each frame
//! in its VLAN (or drop it), learn each source, pick each frame's egress ports
//! among those carrying its VLAN, and group the result by egress port. The
//! datapath threads call it between receiving and sending; the criterion bench
//! and the fuzzer call it directly.

use super::egress::Egress;
use super::fdb::{Fdb, FdbKey, PortId};
use super::mcast::{GroupKey, Mdb};
use super::vlan::Refused;
use crate::wire::mcast::{self, Mcast};
use crate::wire::{ethernet, vlan, vnet, EthernetFrame, MacAddr, VnetHeader};
use std::sync::{Mutex, MutexGuard};
use switchd_proto::Counters;

/// The ports of a bridge as one batch's decision sees them.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    /// The port the batch came in on.
    pub ingress: PortId,
    /// Every port of the bridge, the ingress port included, in the order a
    /// flood sends to them (`send_order`).
    pub ids: &'a [PortId],
    /// Each of `ids` with its index there, sorted by id.
    pub by_id: &'a [(PortId, u32)],
    /// What each of `ids` does on egress (its VLAN policy), in the same order.
    pub egress: &'a [Egress],
    /// Reserved group addresses the bridge relays: bit N for 01:80:C2:00:00:0N.
    pub group_fwd_mask: u16,
    /// The bridge's multicast snooping table, when snooping is on. Locked (after
    /// the MAC table) only by a batch that holds IP multicast.
    pub mdb: Option<&'a Mutex<Mdb>>,
}

impl Ports<'_> {
    /// Where port `id` is in `ids`.
    pub fn index_of(&self, id: PortId) -> Option<usize> {
        position(self.by_id, id)
    }
}

/// Where port `id` is, by an index from `index_by_id`.
pub fn position(by_id: &[(PortId, u32)], id: PortId) -> Option<usize> {
    by_id
        .binary_search_by_key(&id, |&(id, _)| id)
        .ok()
        .map(|k| by_id[k].1 as usize)
}

/// The order a flood sends to the ports of a bridge, by their interface
/// index: grouped by the index's bucket in the kernel's table of a
/// namespace's interfaces (`dev_index_hash`: the low 8 bits), in index order
/// within one. A packet socket looks each message's interface up by walking
/// that bucket's chain, each entry a cache line; sent in id order, a flood
/// walks a different chain every message and finds it cold, while in this
/// order a chain is walked once and stays warm for the messages that follow.
/// With 4000 ports (chains 16 long) a flood costs switchd 13% less CPU per
/// delivery this way; at 1000, a few percent (docs/PERFORMANCE.md).
pub fn send_order(ifindex: u32) -> (u32, u32) {
    (ifindex & 0xff, ifindex)
}

/// `ids` with each one's index, sorted by id: `Ports::by_id`.
pub fn index_by_id(ids: &[PortId]) -> Vec<(PortId, u32)> {
    let mut by_id: Vec<(PortId, u32)> = ids.iter().zip(0..).map(|(&id, j)| (id, j)).collect();
    by_id.sort_unstable();
    by_id
}

/// A frame's VLAN as `decide` classified it, for the egress stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameVlan {
    /// The VLAN id, with the priority bits of the frame's tag (0 without one).
    pub tci: u16,
    pub tag: FrameTag,
}

/// The in-band tag a frame came with, against the VLAN it was put in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FrameTag {
    #[default]
    Untagged,
    /// A tag of that VLAN: what the frame leaves with through a port tagging it.
    Own,
    /// A tag of another id (a priority tag, VLAN id 0): rewritten or removed.
    Other,
}

/// The reserved group address 01:80:C2:00:00:0N (IEEE 802.1Q 8.6.3), as N.
#[inline]
fn reserved_group(dst: MacAddr) -> Option<u8> {
    let [a, b, c, d, e, n] = dst.0;
    ([a, b, c, d, e] == [0x01, 0x80, 0xc2, 0, 0] && n <= 0x0f).then_some(n)
}

/// The vendors' control-protocol addresses Open vSwitch also keeps to itself
/// unless `forward-bpdu` is on (lib/packets.c `eth_addr_is_reserved`): Cisco
/// ISL, CDP/VTP/DTP/PAgP/UDLD, PVST+, STP UplinkFast, CFM; Extreme EDP and EAPS.
fn vendor_reserved(dst: MacAddr) -> bool {
    match dst.0 {
        [0x01, 0x00, 0x0c, 0x00, 0x00, 0x00]
        | [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc]
        | [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcd]
        | [0x01, 0x00, 0x0c, 0xcd, 0xcd, 0xcd]
        | [0x00, 0xe0, 0x2b, 0x00, 0x00, 0x00 | 0x04 | 0x06] => true,
        [0x01, 0x00, 0x0c, 0xcc, 0xcc, n] => (0xc0..=0xc7).contains(&n),
        _ => false,
    }
}

/// Whether a bridge relaying the reserved addresses of `mask` drops a frame to
/// `dst`. `forward-bpdu=true` is the mask of all sixteen, and relays the vendors'
/// addresses too.
#[inline]
pub fn is_withheld(dst: MacAddr, mask: u16) -> bool {
    match reserved_group(dst) {
        Some(n) => mask & (1 << n) == 0,
        None => mask != u16::MAX && vendor_reserved(dst),
    }
}

/// What a batch did to the ingress port's counters, and how many of its sources
/// moved there from another port.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxCounts {
    /// The rx counters only: packets, bytes, drops and errors by reason.
    pub port: Counters,
    /// Sources learned on the ingress port that were on another port before.
    pub moves: u64,
}

impl RxCounts {
    fn count_drop(&mut self, reason: fn(&mut Counters) -> &mut u64) {
        *reason(&mut self.port) += 1;
        self.port.rx_drops += 1;
    }

    fn count_error(&mut self, reason: fn(&mut Counters) -> &mut u64) {
        *reason(&mut self.port) += 1;
        self.port.rx_errors += 1;
    }
}

/// Reusable per-thread state for deciding batches; allocates only while growing.
#[derive(Default)]
pub struct Decider {
    /// (egress index into the peer list, frame index), sorted after `decide`.
    out: Vec<(u32, u32)>,
    flood: Vec<u32>,
    /// Per frame: its VLAN (VLAN 0, untagged, for a dropped one).
    vlans: Vec<FrameVlan>,
    /// Per frame: not dropped on the way in (mirrors copy only these).
    accepted: Vec<bool>,
    /// One snooped frame's egress ports.
    targets: Vec<PortId>,
}

impl Decider {
    /// Decides a batch. `frames` yields each frame (virtio-net header included,
    /// its VLAN tag in the frame), or `None` for one that could not be received
    /// whole. Afterwards `groups()` lists what to send where, grouped by egress
    /// in arrival order, and `vlan()` each frame's VLAN for the egress stage.
    pub fn decide<'a>(
        &mut self,
        fdb: &mut Fdb,
        now_ms: u64,
        ports: &Ports,
        frames: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> RxCounts {
        let mut counts = RxCounts::default();
        let moved_before = fdb.counters().moved;
        let ingress = ports.ingress;
        let peers = ports.ids;
        self.out.clear();
        self.flood.clear();
        self.vlans.clear();
        self.accepted.clear();
        let Some(me) = ports.index_of(ingress) else {
            return counts;
        };
        let policy = &ports.egress[me].vlan;
        let mut mdb: Option<MutexGuard<Mdb>> = None;
        for (i, frame) in frames.enumerate() {
            self.vlans.push(FrameVlan::default());
            self.accepted.push(false);
            let Some(bytes) = frame else {
                counts.count_error(|c| &mut c.rx_truncated);
                continue;
            };
            if bytes.len() < vnet::HEADER_LEN + ethernet::HEADER_LEN {
                counts.count_error(|c| &mut c.rx_runts);
                continue;
            }
            let (header, frame) = bytes.split_at(vnet::HEADER_LEN);
            let eth = EthernetFrame::new_unchecked(frame);
            counts.port.rx_packets += 1;
            counts.port.rx_bytes += frame.len() as u64;
            let src = eth.src_addr();
            if src.is_multicast() {
                counts.count_drop(|c| &mut c.rx_group_src);
                continue;
            }
            if !VnetHeader::new_unchecked(header).is_valid_for(frame.len()) {
                counts.count_drop(|c| &mut c.rx_bad_vnet);
                continue;
            }
            let tag = vlan::tag_of(frame).map(|(_, tci)| tci);
            let vlan = match policy.classify(tag.map(|t| t & vlan::VID_MASK)) {
                Ok(vlan) => vlan,
                Err(Refused::Tagged) => {
                    counts.count_drop(|c| &mut c.rx_vlan_tagged);
                    continue;
                }
                Err(Refused::Untrunked) => {
                    counts.count_drop(|c| &mut c.rx_vlan_untrunked);
                    continue;
                }
            };
            let dst = eth.dst_addr();
            if is_withheld(dst, ports.group_fwd_mask) {
                counts.count_drop(|c| &mut c.rx_reserved);
                continue;
            }
            self.accepted[i] = true;
            self.vlans[i] = FrameVlan {
                tci: tag.unwrap_or(0) & !vlan::VID_MASK | vlan,
                tag: match tag {
                    None => FrameTag::Untagged,
                    Some(t) if t & vlan::VID_MASK == vlan => FrameTag::Own,
                    Some(_) => FrameTag::Other,
                },
            };
            fdb.learn(FdbKey { vlan, mac: src }, ingress, now_ms);
            if dst.is_multicast() {
                if let Some(table) = ports.mdb.filter(|_| mcast::is_ip_multicast(dst)) {
                    let mdb = mdb.get_or_insert_with(|| super::lock(table));
                    if self.snoop(mdb, ports, i as u32, vlan, frame, now_ms) {
                        continue;
                    }
                }
                self.flood.push(i as u32);
                continue;
            }
            match fdb.lookup(&FdbKey { vlan, mac: dst }, now_ms) {
                // The destination sits behind the port the frame came in on: filter it.
                Some(port) if port == ingress => {}
                Some(port) => match ports.index_of(port) {
                    // Learned in this VLAN, so the port carries it; checked anyway,
                    // so that no stale or static entry can let a frame cross
                    // VLANs. One that points at a port without the VLAN is no
                    // better than none: flood, in the VLAN.
                    Some(j) if ports.egress[j].vlan.carries(vlan) => {
                        self.out.push((j as u32, i as u32))
                    }
                    Some(_) | None => self.flood.push(i as u32),
                },
                None => self.flood.push(i as u32),
            }
        }
        if !self.flood.is_empty() {
            for (j, (&peer, egress)) in peers.iter().zip(ports.egress).enumerate() {
                if peer == ingress {
                    continue;
                }
                if egress.vlan.carries_all() {
                    self.out.extend(self.flood.iter().map(|&i| (j as u32, i)));
                } else {
                    let vlans = &self.vlans;
                    self.out.extend(
                        self.flood
                            .iter()
                            .filter(|&&i| {
                                egress.vlan.carries(vlans[i as usize].tci & vlan::VID_MASK)
                            })
                            .map(|&i| (j as u32, i)),
                    );
                }
            }
        }
        // Grouping by egress port keeps each port's frames in arrival order.
        self.out.sort_unstable();
        counts.moves = fdb.counters().moved - moved_before;
        counts
    }

    /// Learns from an IP multicast frame and, unless it is to be flooded (false),
    /// sends it only to the ports that want it.
    fn snoop(
        &mut self,
        mdb: &mut Mdb,
        ports: &Ports,
        i: u32,
        vlan: u16,
        frame: &[u8],
        now_ms: u64,
    ) -> bool {
        let ingress = ports.ingress;
        self.targets.clear();
        if !mdb.enabled() {
            return false;
        }
        // Without a querier in the VLAN, everything floods, as on the kernel
        // bridge: hosts report only when they join, so the table cannot know
        // the members that joined before it listened (a restart, a port added
        // later) and would cut them off; and a switch behind any port learns
        // the members from the flooded reports too.
        match mcast::classify(frame) {
            Mcast::Flood => return false,
            Mcast::Query { max_response_ms } => {
                mdb.query(vlan, ingress, now_ms, max_response_ms);
                return false;
            }
            Mcast::Report(records) => {
                for (group, joined) in records {
                    if mcast::is_unconstrained(group) {
                        continue;
                    }
                    let key = GroupKey { vlan, group };
                    if joined {
                        mdb.join(key, ingress, now_ms);
                    } else {
                        mdb.leave(key, ingress);
                    }
                }
                if !mdb.has_querier(vlan, now_ms) {
                    return false;
                }
                // Reports are for the routers (RFC 4541 2.1.1).
                self.targets.extend(mdb.mrouters(vlan, now_ms));
            }
            Mcast::Data(group) => {
                if !mdb.has_querier(vlan, now_ms) {
                    return false;
                }
                match mdb.members(&GroupKey { vlan, group }, now_ms) {
                    Some(members) => self.targets.extend(members),
                    None if mdb.flood_unregistered() => return false,
                    None => {}
                }
                self.targets.extend(mdb.mrouters(vlan, now_ms));
            }
        }
        self.targets.sort_unstable();
        self.targets.dedup();
        for &port in &self.targets {
            if port == ingress {
                continue;
            }
            // A port that left the bridge, or no longer carries the VLAN, gets nothing.
            if let Some(j) = ports.index_of(port) {
                if ports.egress[j].vlan.carries(vlan) {
                    self.out.push((j as u32, i));
                }
            }
        }
        true
    }

    /// Runs of (egress index, frame index) pairs, one run per egress port.
    pub fn groups(&self) -> impl Iterator<Item = &[(u32, u32)]> {
        self.out.chunk_by(|a, b| a.0 == b.0)
    }

    /// The VLAN of frame `i` of the last batch.
    #[inline]
    pub fn vlan(&self, i: u32) -> FrameVlan {
        self.vlans[i as usize]
    }

    /// Whether frame `i` of the last batch passed the ingress checks (it may
    /// still go nowhere: its destination behind its own port).
    #[inline]
    pub fn accepted(&self, i: u32) -> bool {
        self.accepted[i as usize]
    }

    /// Frames in the last batch.
    pub fn len(&self) -> usize {
        self.vlans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vlans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::vlan::PortVlan;
    use switchd_proto::VlanMode;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; vnet::HEADER_LEN];
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(vnet::HEADER_LEN + 60, 0);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 3];

    const EGRESS: [Egress; 3] = [DEFAULT, DEFAULT, DEFAULT];
    const DEFAULT: Egress = Egress {
        vlan: PortVlan::TRUNK_ALL,
    };

    fn ports(ingress: PortId, egress: &[Egress]) -> Ports<'_> {
        Ports {
            ingress,
            ids: &[10, 20, 30][..egress.len()],
            by_id: &[(10, 0), (20, 1), (30, 2)][..egress.len()],
            egress,
            group_fwd_mask: 0,
            mdb: None,
        }
    }

    fn decide(d: &mut Decider, fdb: &mut Fdb, ingress: PortId, frames: &[Vec<u8>]) -> RxCounts {
        d.decide(
            fdb,
            0,
            &ports(ingress, &EGRESS),
            frames.iter().map(|f| Some(&f[..])),
        )
    }

    fn sent(d: &Decider) -> Vec<(u32, u32)> {
        d.groups().flatten().copied().collect()
    }

    #[test]
    fn ports_in_send_order_are_found_by_id() {
        // Interfaces 1, 257 and 513 share a bucket of the kernel's table, 2 and
        // 258 another: each bucket's together, in index order.
        let mut ifindexes = [258, 513, 1, 2, 257];
        ifindexes.sort_by_key(|&i| send_order(i));
        assert_eq!(ifindexes, [1, 257, 513, 2, 258]);
        // A view lists its ports in that order, not by id.
        let ids = [30, 10, 20];
        let by_id = index_by_id(&ids);
        assert_eq!(by_id, [(10, 1), (20, 2), (30, 0)]);
        let ports = |ingress| Ports {
            ingress,
            ids: &ids,
            by_id: &by_id,
            egress: &EGRESS,
            group_fwd_mask: 0,
            mdb: None,
        };
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        let run = |d: &mut Decider, fdb: &mut Fdb, ingress, f: Vec<u8>| {
            d.decide(fdb, 0, &ports(ingress), std::iter::once(Some(&f[..])))
        };
        // A on port 10 (index 1) to unknown B: to 30 and 20, in that order.
        run(&mut d, &mut fdb, 10, frame(B, A));
        assert_eq!(sent(&d), [(0, 0), (2, 0)]);
        // B on port 20 answers A: to port 10 only.
        run(&mut d, &mut fdb, 20, frame(A, B));
        assert_eq!(sent(&d), [(1, 0)]);
        // A port that is not the bridge's sends nothing.
        run(&mut d, &mut fdb, 40, frame(A, C));
        assert_eq!(sent(&d), []);
    }

    #[test]
    fn unknown_floods_known_goes_to_its_port_only() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        // A (on port 10) to unknown B: flood to peers 1 and 2, not back to 0.
        let counts = decide(&mut d, &mut fdb, 10, &[frame(B, A)]);
        assert_eq!(counts.port.rx_packets, 1);
        assert_eq!(sent(&d), vec![(1, 0), (2, 0)]);
        // B answers from port 20: A is known, so only port 10 gets it.
        decide(&mut d, &mut fdb, 20, &[frame(A, B)]);
        assert_eq!(sent(&d), vec![(0, 0)]);
        assert_eq!(
            fdb.lookup(
                &FdbKey {
                    vlan: 0,
                    mac: MacAddr(B)
                },
                0
            ),
            Some(20)
        );
    }

    #[test]
    fn batch_is_grouped_by_egress_in_order() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        fdb.learn(
            FdbKey {
                vlan: 0,
                mac: MacAddr(B),
            },
            20,
            0,
        );
        fdb.learn(
            FdbKey {
                vlan: 0,
                mac: MacAddr(C),
            },
            30,
            0,
        );
        let frames = [frame(C, A), frame(B, A), frame([0xff; 6], A), frame(C, A)];
        decide(&mut d, &mut fdb, 10, &frames);
        let groups: Vec<Vec<(u32, u32)>> = d.groups().map(<[_]>::to_vec).collect();
        assert_eq!(
            groups,
            vec![vec![(1, 1), (1, 2)], vec![(2, 0), (2, 2), (2, 3)]]
        );
    }

    #[test]
    fn bad_frames_are_counted_not_sent() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        let runt = [0u8; vnet::HEADER_LEN + 13];
        let group_src = frame(B, [0x01, 0, 0x5e, 0, 0, 1]);
        let mut bad_vnet = frame(B, A);
        bad_vnet[1] = 0x42; // no such GSO type
        let counts = d.decide(
            &mut fdb,
            0,
            &ports(10, &EGRESS[..2]),
            [
                Some(&runt[..]),
                None,
                Some(&group_src[..]),
                Some(&bad_vnet[..]),
            ]
            .into_iter(),
        );
        assert_eq!(
            counts,
            RxCounts {
                port: Counters {
                    rx_packets: 2,
                    rx_bytes: 120,
                    rx_group_src: 1,
                    rx_bad_vnet: 1,
                    rx_runts: 1,
                    rx_truncated: 1,
                    rx_drops: 2,
                    rx_errors: 2,
                    ..Counters::default()
                },
                moves: 0,
            }
        );
        assert_eq!(d.groups().count(), 0);
        assert!(fdb.is_empty(), "dropped frames are never learned");
    }

    #[test]
    fn destination_behind_ingress_is_filtered() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        fdb.learn(
            FdbKey {
                vlan: 0,
                mac: MacAddr(B),
            },
            10,
            0,
        );
        decide(&mut d, &mut fdb, 10, &[frame(B, A)]);
        assert_eq!(d.groups().count(), 0);
    }

    fn tagged(dst: [u8; 6], src: [u8; 6], vid: u16) -> Vec<u8> {
        let mut f = frame(dst, src);
        f.splice(
            vnet::HEADER_LEN + 12..vnet::HEADER_LEN + 12,
            [0x81, 0x00, 0, 0],
        );
        f[vnet::HEADER_LEN + 14..vnet::HEADER_LEN + 16].copy_from_slice(&vid.to_be_bytes());
        f
    }

    fn port(tag: Option<u16>, trunks: &[u16], vlan_mode: Option<VlanMode>) -> Egress {
        Egress {
            vlan: PortVlan::checked(tag, trunks, vlan_mode),
        }
    }

    #[test]
    fn frames_stay_in_their_vlan() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        // Port 10 access VLAN 1, 20 access VLAN 2, 30 a trunk of 1 and 2.
        let egress = [
            port(Some(1), &[], None),
            port(Some(2), &[], None),
            port(None, &[1, 2], None),
        ];
        let mut run = |ingress, frames: &[Vec<u8>]| {
            let counts = d.decide(
                &mut fdb,
                0,
                &ports(ingress, &egress),
                frames.iter().map(|f| Some(&f[..])),
            );
            let sent: Vec<(u32, u32, u16)> = d
                .groups()
                .flatten()
                .map(|&(j, i)| (j, i, d.vlan(i).tci))
                .collect();
            (counts, sent)
        };
        // A broadcast on access VLAN 1 reaches the trunk only, as VLAN 1.
        let (_, sent) = run(10, &[frame([0xff; 6], A)]);
        assert_eq!(sent, vec![(2, 0, 1)]);
        // A broadcast tagged 2 from the trunk reaches VLAN 2's access port only.
        let (_, sent) = run(30, &[tagged([0xff; 6], B, 0x2000 | 2)]);
        assert_eq!(sent, vec![(1, 0, 0x2000 | 2)]);
        // A is known in VLAN 1 only: unicast to it in VLAN 2 floods VLAN 2.
        let (_, sent) = run(30, &[tagged(A, B, 2)]);
        assert_eq!(sent, vec![(1, 0, 2)]);
        let (_, sent) = run(30, &[tagged(A, B, 1)]);
        assert_eq!(sent, vec![(0, 0, 1)]);
        // Hopping: a tagged frame into an access port, a VLAN the trunk lacks.
        let (counts, sent) = run(10, &[tagged(B, A, 2), tagged(B, A, 1)]);
        assert_eq!((counts.port.rx_vlan_tagged, counts.port.rx_drops), (2, 2));
        assert!(sent.is_empty());
        let (counts, sent) = run(30, &[tagged(A, C, 3), frame(A, C)]);
        assert_eq!(
            counts.port.rx_vlan_untrunked, 2,
            "VLAN 3, and VLAN 0 untagged"
        );
        assert!(sent.is_empty());
        assert!(fdb
            .lookup(
                &FdbKey {
                    vlan: 3,
                    mac: MacAddr(C)
                },
                0
            )
            .is_none());
    }

    #[test]
    fn reserved_group_addresses_are_relayed_only_when_asked() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        for n in 0..=0x0f_u8 {
            let stp = frame([0x01, 0x80, 0xc2, 0, 0, n], A);
            let mut p = ports(10, &EGRESS);
            let counts = d.decide(&mut fdb, 0, &p, std::iter::once(Some(&stp[..])));
            assert_eq!(counts.port.rx_reserved, 1, "01:80:c2:00:00:{n:02x}");
            assert_eq!(d.groups().count(), 0);
            p.group_fwd_mask = 1 << n;
            let counts = d.decide(&mut fdb, 0, &p, std::iter::once(Some(&stp[..])));
            assert_eq!(counts.port.rx_reserved, 0);
            assert_eq!(d.groups().count(), 2);
        }
        // :10 is not reserved.
        let f = frame([0x01, 0x80, 0xc2, 0, 0, 0x10], A);
        let counts = d.decide(
            &mut fdb,
            0,
            &ports(10, &EGRESS),
            std::iter::once(Some(&f[..])),
        );
        assert_eq!(counts.port.rx_reserved, 0);
        // Cisco's CDP address, as Open vSwitch: held back unless forward-bpdu.
        let cdp = frame([0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc], A);
        let mut p = ports(10, &EGRESS);
        let counts = d.decide(&mut fdb, 0, &p, std::iter::once(Some(&cdp[..])));
        assert_eq!(counts.port.rx_reserved, 1);
        p.group_fwd_mask = u16::MAX;
        let counts = d.decide(&mut fdb, 0, &p, std::iter::once(Some(&cdp[..])));
        assert_eq!(counts.port.rx_reserved, 0);
    }

    /// An IPv4 frame from `src` to group 239.1.1.`g` carrying `igmp` (IGMP) or,
    /// when it is empty, UDP.
    fn to_group(src: [u8; 6], g: u8, igmp: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; vnet::HEADER_LEN];
        f.extend_from_slice(&[0x01, 0x00, 0x5e, 1, 1, g]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        let proto = if igmp.is_empty() { 17 } else { 2 };
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 1, proto, 0, 0, 10, 0, 0, 1]);
        f.extend_from_slice(&[239, 1, 1, g]);
        f.extend_from_slice(igmp);
        f.resize(vnet::HEADER_LEN + 60, 0);
        f
    }

    /// Where `f` goes, decided at `now_ms`.
    fn snooping_at(
        d: &mut Decider,
        fdb: &mut Fdb,
        mdb: &Mutex<Mdb>,
        ingress: PortId,
        f: &[u8],
        now_ms: u64,
    ) -> Vec<u32> {
        let p = Ports {
            mdb: Some(mdb),
            ..ports(ingress, &EGRESS)
        };
        d.decide(fdb, now_ms, &p, std::iter::once(Some(f)));
        d.groups().flatten().map(|&(j, _)| j).collect()
    }

    /// Where `f` goes, decided once the members have answered a query sent
    /// with `query` (at 0, answered within 10 s).
    fn snooping(
        d: &mut Decider,
        fdb: &mut Fdb,
        mdb: &Mutex<Mdb>,
        ingress: PortId,
        f: &[u8],
    ) -> Vec<u32> {
        snooping_at(d, fdb, mdb, ingress, f, 20_000)
    }

    /// An IGMP general query from `src`.
    fn query(src: [u8; 6]) -> Vec<u8> {
        let mut q = to_group(src, 7, &[0x11, 0, 0, 0, 0, 0, 0, 0]);
        q[vnet::HEADER_LEN + 30..vnet::HEADER_LEN + 34].copy_from_slice(&[224, 0, 0, 1]);
        q
    }

    #[test]
    fn snooped_group_traffic_goes_to_members_and_routers_only() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        let mdb = Mutex::new(Mdb::new(&switchd_proto::McastSnooping::default()));
        let data = to_group(A, 7, &[]);
        // C (port 30) joins 239.1.1.7; with no querier heard yet, its report
        // and the group's traffic go everywhere.
        let report = to_group(C, 7, &[0x16, 0, 0, 0, 239, 1, 1, 7]);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 30, &report), vec![0, 1]);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 10, &data), vec![1, 2]);
        // A query from port 20: flooded, and 20 is a router port from now on.
        assert_eq!(
            snooping_at(&mut d, &mut fdb, &mdb, 20, &query(B), 0),
            vec![0, 2]
        );
        // Not before the members have had the time to answer it.
        assert_eq!(
            snooping_at(&mut d, &mut fdb, &mdb, 10, &data, 9_000),
            vec![1, 2]
        );
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 10, &data), vec![1, 2]);
        // From the router itself, only to the member.
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 20, &data), vec![2]);
        // Reports now go to the router only.
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 30, &report), vec![1]);
        // An unregistered group floods.
        assert_eq!(
            snooping(&mut d, &mut fdb, &mdb, 20, &to_group(A, 8, &[])),
            vec![0, 2]
        );
        // C leaves: the group has no member left, so it floods again.
        let leave = to_group(C, 7, &[0x17, 0, 0, 0, 239, 1, 1, 7]);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 30, &leave), vec![1]);
        let m = mdb.lock().unwrap();
        assert_eq!(
            (m.len(), m.mrouters(0, 0).collect::<Vec<_>>()),
            (0, vec![20])
        );
        drop(m);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 20, &data), vec![0, 2]);
        // Without snooping the same frame floods.
        let counts = decide(&mut d, &mut fdb, 10, &[data]);
        assert_eq!(counts.port.rx_drops, 0);
        assert_eq!(d.groups().count(), 2);
    }

    #[test]
    fn unregistered_groups_can_go_to_routers_only() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        let mdb = Mutex::new(Mdb::new(&switchd_proto::McastSnooping {
            disable_flood_unregistered: true,
            ..Default::default()
        }));
        let data = to_group(A, 9, &[]);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 10, &data), vec![1, 2]);
        snooping_at(&mut d, &mut fdb, &mdb, 20, &query(B), 0);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 10, &data), vec![1]);
        // 224.0.0.0/24 always floods.
        let mut local = data.clone();
        local[vnet::HEADER_LEN + 30..vnet::HEADER_LEN + 34].copy_from_slice(&[224, 0, 0, 251]);
        assert_eq!(snooping(&mut d, &mut fdb, &mdb, 10, &local), vec![1, 2]);
    }

    #[test]
    fn members_are_per_vlan() {
        let (mut d, mut fdb) = (Decider::default(), Fdb::new(16, 300));
        let mdb = Mutex::new(Mdb::new(&switchd_proto::McastSnooping::default()));
        let in_vlan = |f: Vec<u8>, vid: u8| {
            let mut f = f;
            f.splice(
                vnet::HEADER_LEN + 12..vnet::HEADER_LEN + 12,
                [0x81, 0, 0, vid],
            );
            f
        };
        // Queriers in VLANs 5 and 6 behind port 20; C (port 30) joins in VLAN 5.
        for vid in [5, 6] {
            snooping_at(&mut d, &mut fdb, &mdb, 20, &in_vlan(query(B), vid), 0);
        }
        let report = to_group(C, 7, &[0x16, 0, 0, 0, 239, 1, 1, 7]);
        assert_eq!(
            snooping(&mut d, &mut fdb, &mdb, 30, &in_vlan(report, 5)),
            vec![1]
        );
        // From the router: in VLAN 5 to C only; in VLAN 6 the group is unknown.
        let data = to_group(B, 7, &[]);
        assert_eq!(
            snooping(&mut d, &mut fdb, &mdb, 20, &in_vlan(data.clone(), 5)),
            vec![2]
        );
        assert_eq!(
            snooping(&mut d, &mut fdb, &mdb, 20, &in_vlan(data, 6)),
            vec![0, 2]
        );
    }
}
