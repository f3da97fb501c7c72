//! 802.1Q tags.
//!
//! The kernel strips the tag of every received frame into metadata before a packet
//! socket sees it (`skb_vlan_untag`); the datapath reads it back from
//! `PACKET_AUXDATA` and puts it back in the frame with [`insert_tag`], so tagged
//! frames keep their VLAN through the switch and are learned per VLAN.

use super::{ethernet, vnet, Truncated, VnetHeader};

pub const TAG_LEN: usize = 4;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;
const VID_MASK: u16 = 0x0fff;

/// The VLAN id of a frame that carries an 802.1Q or 802.1ad tag in-band; 0 if untagged.
pub fn vlan_id(frame: &[u8]) -> u16 {
    let Some(tag) = frame.get(12..16) else {
        return 0;
    };
    let tpid = u16::from_be_bytes([tag[0], tag[1]]);
    if tpid == TPID_8021Q || tpid == TPID_8021AD {
        u16::from_be_bytes([tag[2], tag[3]]) & VID_MASK
    } else {
        0
    }
}

/// `buf` is `TAG_LEN` bytes of headroom, a virtio-net header, then an untagged
/// Ethernet frame. Moves the header and MAC addresses into the headroom and writes
/// the tag after them; afterwards `buf` is the header and the tagged frame.
pub fn insert_tag(buf: &mut [u8], tpid: u16, tci: u16) -> Result<(), Truncated> {
    const MACS: usize = 12;
    let moved = TAG_LEN..TAG_LEN + vnet::HEADER_LEN + MACS;
    if buf.len() < moved.end + ethernet::HEADER_LEN - MACS {
        return Err(Truncated);
    }
    buf.copy_within(moved, 0);
    let tag = vnet::HEADER_LEN + MACS;
    buf[tag..tag + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[tag + 2..tag + 4].copy_from_slice(&tci.to_be_bytes());
    // Offsets in the header count from the frame start: the L3 header moved by 4.
    // Saturating: an offset that no longer fits was bogus, and one past any frame
    // is what `VnetHeader::is_valid_for` rejects, so the frame is dropped, not wrapped.
    let mut hdr = VnetHeader::new_checked(&mut buf[..vnet::HEADER_LEN])?;
    if hdr.flags() & vnet::FLAG_NEEDS_CSUM != 0 {
        hdr.set_csum_start(hdr.csum_start().saturating_add(TAG_LEN as u16));
    }
    if hdr.hdr_len() != 0 {
        hdr.set_hdr_len(hdr.hdr_len().saturating_add(TAG_LEN as u16));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_then_read_tag() {
        let mut buf = vec![0u8; TAG_LEN];
        // virtio-net header: NEEDS_CSUM, csum_start 34, hdr_len 54.
        let mut hdr = [0u8; vnet::HEADER_LEN];
        hdr[0] = vnet::FLAG_NEEDS_CSUM;
        hdr[2..4].copy_from_slice(&54u16.to_ne_bytes());
        hdr[6..8].copy_from_slice(&34u16.to_ne_bytes());
        buf.extend_from_slice(&hdr);
        let frame: [u8; 16] = [
            0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0x00,
        ];
        buf.extend_from_slice(&frame);
        insert_tag(&mut buf, TPID_8021Q, 0x2000 | 10).unwrap();

        let tagged = &buf[vnet::HEADER_LEN..];
        assert_eq!(&tagged[..12], &frame[..12]);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x20, 0x0a]);
        assert_eq!(&tagged[16..], &frame[12..]);
        assert_eq!(vlan_id(tagged), 10);
        let hdr = VnetHeader::new_checked(&buf[..vnet::HEADER_LEN]).unwrap();
        assert_eq!(hdr.csum_start(), 38);
        assert_eq!(hdr.hdr_len(), 58);
    }

    /// Found by fuzz/frames: offsets near u16::MAX overflowed (a panic in debug builds).
    #[test]
    fn bogus_offsets_are_rejected_not_wrapped() {
        let mut buf = vec![0u8; TAG_LEN];
        let mut hdr = [0u8; vnet::HEADER_LEN];
        hdr[0] = vnet::FLAG_NEEDS_CSUM;
        hdr[2..4].copy_from_slice(&u16::MAX.to_ne_bytes());
        hdr[6..8].copy_from_slice(&(u16::MAX - 1).to_ne_bytes());
        buf.extend_from_slice(&hdr);
        buf.extend_from_slice(&[0x02; 60]);
        insert_tag(&mut buf, TPID_8021AD, 0xffff).unwrap();
        let hdr = VnetHeader::new_checked(&buf[..vnet::HEADER_LEN]).unwrap();
        assert_eq!(hdr.csum_start(), u16::MAX);
        assert!(!hdr.is_valid_for(buf.len() - vnet::HEADER_LEN));
    }

    #[test]
    fn untagged_and_short_frames() {
        let frame = [0u8; 14];
        assert_eq!(vlan_id(&frame), 0);
        assert_eq!(vlan_id(&[0x81, 0x00]), 0);
        let mut short = [0u8; TAG_LEN + vnet::HEADER_LEN + 13];
        assert_eq!(insert_tag(&mut short, TPID_8021Q, 1), Err(Truncated));
    }
}
