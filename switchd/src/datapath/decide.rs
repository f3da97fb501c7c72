//! The forwarding decision for a received batch, without any I/O: learn each
//! source, pick each frame's egress ports, and group the result by egress port.
//! The datapath threads call it between receiving and sending; the criterion
//! bench calls it directly.

use super::fdb::{Fdb, FdbKey, PortId};
use crate::wire::{ethernet, vlan, vnet, EthernetFrame, VnetHeader};
use switchd_proto::Counters;

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
}

impl Decider {
    /// Decides a batch. `frames` yields each frame (virtio-net header included), or
    /// `None` for one that could not be received whole. `peers` are the ids of
    /// every port of the bridge, ingress included, sorted. Afterwards `pairs()`
    /// lists what to send where, grouped by egress in arrival order.
    pub fn decide<'a>(
        &mut self,
        fdb: &mut Fdb,
        now_ms: u64,
        ingress: PortId,
        peers: &[PortId],
        frames: impl Iterator<Item = Option<&'a [u8]>>,
    ) -> RxCounts {
        let mut counts = RxCounts::default();
        let moved_before = fdb.counters().moved;
        self.out.clear();
        self.flood.clear();
        for (i, frame) in frames.enumerate() {
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
            let vlan = vlan::vlan_id(eth.into_inner());
            fdb.learn(FdbKey { vlan, mac: src }, ingress, now_ms);
            let dst = eth.dst_addr();
            if dst.is_multicast() {
                self.flood.push(i as u32);
                continue;
            }
            match fdb.lookup(&FdbKey { vlan, mac: dst }, now_ms) {
                // The destination sits behind the port the frame came in on: filter it.
                Some(port) if port == ingress => {}
                Some(port) => match peers.binary_search(&port) {
                    Ok(j) => self.out.push((j as u32, i as u32)),
                    Err(_) => self.flood.push(i as u32),
                },
                None => self.flood.push(i as u32),
            }
        }
        if !self.flood.is_empty() {
            for (j, &peer) in peers.iter().enumerate() {
                if peer != ingress {
                    self.out.extend(self.flood.iter().map(|&i| (j as u32, i)));
                }
            }
        }
        // Grouping by egress port keeps each port's frames in arrival order.
        self.out.sort_unstable();
        counts.moves = fdb.counters().moved - moved_before;
        counts
    }

    /// Runs of (egress index, frame index) pairs, one run per egress port.
    pub fn groups(&self) -> impl Iterator<Item = &[(u32, u32)]> {
        self.out.chunk_by(|a, b| a.0 == b.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

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

    fn decide(d: &mut Decider, fdb: &mut Fdb, ingress: PortId, frames: &[Vec<u8>]) -> RxCounts {
        d.decide(
            fdb,
            0,
            ingress,
            &[10, 20, 30],
            frames.iter().map(|f| Some(&f[..])),
        )
    }

    fn sent(d: &Decider) -> Vec<(u32, u32)> {
        d.groups().flatten().copied().collect()
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
            10,
            &[10, 20],
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
}
