//! Port mirrors (Open vSwitch's Mirror table): after a batch is decided and
//! sent, the frames each mirror selects are copied, once each, to its output
//! port or into its output VLAN. No I/O here: which frames, and what each copy
//! looks like; the worker sends them.
//!
//! The kernel fast path does not mirror, so the control plane keeps every port
//! a mirror names (all of them for `select_all`) off it while the mirror
//! exists: their frames all pass through the userspace datapath, where this
//! runs. A mirror's output port takes no part in switching: nothing is
//! forwarded to it (its egress policy carries no VLAN) and what it receives is
//! dropped, counted as `mirror-output`.

use super::decide::{Decider, FrameTag, FrameVlan};
use super::fdb::PortId;
use crate::sys::TxFrame;
use crate::wire::vlan;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What a mirror selects and where its copies go, with port ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub select_all: bool,
    /// Sorted: frames received on these ports.
    pub src: Vec<PortId>,
    /// Sorted: frames sent to these ports.
    pub dst: Vec<PortId>,
    /// Sorted; empty: every VLAN.
    pub vlans: Vec<u16>,
    pub output: MirrorOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorOutput {
    Port(PortId),
    Vlan(u16),
}

/// Copies a mirror sent, their bytes, and the copies lost on the way out
/// (an output port's queue full, a copy too big for it).
#[derive(Debug, Default)]
pub struct MirrorStats {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
}

impl MirrorStats {
    pub fn add(&self, packets: u64, bytes: u64, dropped: u64) {
        self.tx_packets.fetch_add(packets, Relaxed);
        self.tx_bytes.fetch_add(bytes, Relaxed);
        self.tx_dropped.fetch_add(dropped, Relaxed);
    }
}

/// One mirror as the datapath threads run it.
#[derive(Debug, Clone)]
pub struct MirrorRule {
    pub selection: Selection,
    pub stats: Arc<MirrorStats>,
}

impl Selection {
    /// The frames of a decided batch received on `ingress` that this mirror
    /// selects, by index, into `into`: those the decision accepted (a frame
    /// dropped on the way in is not mirrored), in arrival order.
    pub fn select(
        &self,
        ingress: PortId,
        peer_ids: &[PortId],
        decider: &Decider,
        into: &mut Vec<u32>,
    ) {
        into.clear();
        if self.select_all || self.src.binary_search(&ingress).is_ok() {
            into.extend((0..decider.len() as u32).filter(|&i| decider.accepted(i)));
        } else if !self.dst.is_empty() {
            for group in decider.groups() {
                if self
                    .dst
                    .binary_search(&peer_ids[group[0].0 as usize])
                    .is_ok()
                {
                    into.extend(group.iter().map(|&(_, i)| i));
                }
            }
            // A flood to several selected ports is one copy.
            into.sort_unstable();
            into.dedup();
        }
        if !self.vlans.is_empty() {
            into.retain(|&i| {
                let vid = decider.vlan(i).tci & vlan::VID_MASK;
                self.vlans.binary_search(&vid).is_ok()
            });
        }
    }
}

/// A frame's copy for an output port: tagged with the VLAN it was in (untagged
/// in VLAN 0), so that the monitor can tell the VLANs apart.
pub fn to_port(frame: FrameVlan, bytes: &[u8]) -> TxFrame<'_> {
    let vid = frame.tci & vlan::VID_MASK;
    match (vid, frame.tag) {
        (0, FrameTag::Untagged) | (_, FrameTag::Own) => TxFrame::Whole(bytes),
        (0, _) => TxFrame::Retag { bytes, tag: None },
        _ => TxFrame::Retag {
            bytes,
            tag: Some((vlan::TPID_8021Q, frame.tci)),
        },
    }
}

/// A frame's copy put in output VLAN `out` (its priority kept), for the
/// egress stage of each port that carries `out`.
pub fn into_vlan(frame: FrameVlan, out: u16) -> FrameVlan {
    FrameVlan {
        tci: frame.tci & !vlan::VID_MASK | out,
        tag: match frame.tag {
            FrameTag::Untagged => FrameTag::Untagged,
            FrameTag::Own | FrameTag::Other => FrameTag::Other,
        },
    }
}
