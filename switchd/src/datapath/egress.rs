//! The egress stage: what a frame needs on its way out of one particular port,
//! between `decide` (which picked the ports) and the send.
//!
//! Today that is the port's VLAN encoding: a frame leaves a port only if the port
//! carries its VLAN, and with exactly the tag the port's mode says (pushed,
//! popped or rewritten here). It is the one place for per-egress work, each a
//! field of [`Egress`] and a step of [`stage`]; next come VXLAN encapsulation for
//! a tunnel port, copies for mirrors and captures. A rewrite never touches the
//! received frame, which other ports may send too: the new head goes into the
//! [`TxFrame`] and the rest of the frame is sent from where it is, so a 64 KB GSO
//! frame costs a 26-byte copy to tag, not 64 KB. Like `decide` it does no I/O,
//! so unit tests, criterion and the fuzzer share it.

use super::decide::{FrameTag, FrameVlan};
use super::vlan::PortVlan;
use crate::sys::TxFrame;
use crate::wire::vlan;

/// What one port needs done to the frames it sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    pub vlan: PortVlan,
}

/// The frame to send for `bytes` (virtio-net header first), which `decide` put
/// in `frame`'s VLAN, leaving through a port with `egress`; `None` if it does not
/// leave through that port. Reads nothing of the frame: `decide` said what tag
/// it has.
#[inline]
pub fn stage<'a>(egress: &Egress, frame: FrameVlan, bytes: &'a [u8]) -> Option<TxFrame<'a>> {
    // Destructured so that a new field cannot be left out here.
    let Egress { vlan: policy } = egress;
    let vid = frame.tci & vlan::VID_MASK;
    if !policy.carries(vid) {
        return None;
    }
    let tagged = policy.tags(vid);
    Some(match (tagged, frame.tag) {
        // A tag of the frame's own VLAN stays as it came (its TPID too).
        (false, FrameTag::Untagged) | (true, FrameTag::Own) => TxFrame::Whole(bytes),
        (false, _) => TxFrame::Retag { bytes, tag: None },
        (true, _) => TxFrame::Retag {
            bytes,
            tag: Some((vlan::TPID_8021Q, frame.tci)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet;
    use switchd_proto::VlanMode;

    fn egress(tag: Option<u16>, trunks: &[u16], vlan_mode: Option<VlanMode>) -> Egress {
        Egress {
            vlan: PortVlan::checked(tag, trunks, vlan_mode),
        }
    }

    fn frame(tag: Option<u16>) -> Vec<u8> {
        let mut f = vec![0u8; vnet::HEADER_LEN];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        if let Some(tci) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(f.len() + 46, 7);
        f
    }

    /// What `bytes` leaves as, received with `tag` in-band and put in VLAN
    /// (and priority) `tci`.
    fn sent(e: &Egress, tci: u16, bytes: &[u8]) -> Option<Vec<u8>> {
        let tag = match vlan::tag_of(&bytes[vnet::HEADER_LEN..]) {
            None => FrameTag::Untagged,
            Some((_, t)) if t & vlan::VID_MASK == tci & vlan::VID_MASK => FrameTag::Own,
            Some(_) => FrameTag::Other,
        };
        stage(e, FrameVlan { tci, tag }, bytes).map(|f| f.to_vec().unwrap())
    }

    #[test]
    fn untagged_ports_pass_frames_through_uncopied() {
        let f = frame(None);
        let Some(TxFrame::Whole(out)) = stage(&Egress::default(), FrameVlan::default(), &f) else {
            panic!("not passed whole");
        };
        assert!(std::ptr::eq(out, &f[..]));
        let own = FrameVlan {
            tci: 10,
            tag: FrameTag::Own,
        };
        assert!(matches!(
            stage(&Egress::default(), own, &frame(Some(10))),
            Some(TxFrame::Whole(_))
        ));
    }

    #[test]
    fn each_mode_sends_the_tag_it_says() {
        let access = egress(Some(10), &[], None);
        let trunk = egress(None, &[10, 20], None);
        let native_untagged = egress(Some(10), &[20], Some(VlanMode::NativeUntagged));
        let native_tagged = egress(Some(10), &[20], Some(VlanMode::NativeTagged));
        // A frame of VLAN 10 that came in untagged (an access port) or tagged.
        for f in [frame(None), frame(Some(10))] {
            assert_eq!(sent(&access, 10, &f), Some(frame(None)));
            assert_eq!(sent(&trunk, 10, &f), Some(frame(Some(10))));
            assert_eq!(sent(&native_untagged, 10, &f), Some(frame(None)));
            assert_eq!(sent(&native_tagged, 10, &f), Some(frame(Some(10))));
        }
        // VLAN 20 leaves every trunk tagged and no access port of 10.
        let f = frame(Some(20));
        assert_eq!(sent(&access, 20, &f), None);
        assert_eq!(sent(&native_untagged, 20, &f), Some(frame(Some(20))));
        // VLAN 30 is nobody's.
        assert_eq!(sent(&trunk, 30, &frame(Some(30))), None);
        // A priority-tagged frame classified into VLAN 10 keeps its priority.
        let priority = frame(Some(0xa000));
        assert_eq!(
            sent(&trunk, 0xa000 | 10, &priority),
            Some(frame(Some(0xa000 | 10)))
        );
        assert_eq!(sent(&access, 0xa000 | 10, &priority), Some(frame(None)));
    }
}
