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

pub const VID_MASK: u16 = 0x0fff;
/// The longest head [`retag`] writes: a virtio-net header, two MAC addresses
/// and a tag.
pub const RETAG_HEAD_LEN: usize = vnet::HEADER_LEN + 12 + TAG_LEN;

/// The VLAN id of a frame that carries an 802.1Q or 802.1ad tag in-band; 0 if untagged.
pub fn vlan_id(frame: &[u8]) -> u16 {
    tag_of(frame).map_or(0, |(_, tci)| tci & VID_MASK)
}

/// The (TPID, TCI) of a frame's outer tag, if it carries one in-band.
#[inline]
pub fn tag_of(frame: &[u8]) -> Option<(u16, u16)> {
    let tag = frame.get(12..16)?;
    let tpid = u16::from_be_bytes([tag[0], tag[1]]);
    (tpid == TPID_8021Q || tpid == TPID_8021AD)
        .then(|| (tpid, u16::from_be_bytes([tag[2], tag[3]])))
}

/// Rewrites the outer tag of `bytes` (virtio-net header, then a frame) without
/// copying the frame: writes the new head into `head` (the header, its offsets
/// moved to where the L3 header now is, the MAC addresses and `tag` if any) and
/// returns its length and where in `bytes` the rest of the frame starts. The
/// frame's own tag, if any, is left out.
pub fn retag(
    bytes: &[u8],
    tag: Option<(u16, u16)>,
    head: &mut [u8; RETAG_HEAD_LEN],
) -> Result<(usize, usize), Truncated> {
    const MACS: usize = 12;
    if bytes.len() < vnet::HEADER_LEN + ethernet::HEADER_LEN {
        return Err(Truncated);
    }
    let had = tag_of(&bytes[vnet::HEADER_LEN..]).is_some();
    let tail = vnet::HEADER_LEN + MACS + if had { TAG_LEN } else { 0 };
    if bytes.len() < tail + 2 {
        return Err(Truncated);
    }
    head[..vnet::HEADER_LEN + MACS].copy_from_slice(&bytes[..vnet::HEADER_LEN + MACS]);
    let mut len = vnet::HEADER_LEN + MACS;
    if let Some((tpid, tci)) = tag {
        head[len..len + 2].copy_from_slice(&tpid.to_be_bytes());
        head[len + 2..len + 4].copy_from_slice(&tci.to_be_bytes());
        len += TAG_LEN;
    }
    let (grow, shrink) = match (had, tag.is_some()) {
        (false, true) => (TAG_LEN as u16, 0),
        (true, false) => (0, TAG_LEN as u16),
        _ => (0, 0),
    };
    // Offsets count from the frame start, so they move with the L3 header. One
    // that would point into the Ethernet header was bogus: the frame is refused.
    let mut hdr = VnetHeader::new_checked(&mut head[..vnet::HEADER_LEN])?;
    if hdr.flags() & vnet::FLAG_NEEDS_CSUM != 0 {
        let start = hdr.csum_start().saturating_add(grow);
        let start = start
            .checked_sub(shrink)
            .filter(|&s| usize::from(s) >= ethernet::HEADER_LEN);
        hdr.set_csum_start(start.ok_or(Truncated)?);
    }
    if hdr.hdr_len() != 0 {
        let hdr_len = hdr.hdr_len().saturating_add(grow).saturating_sub(shrink);
        hdr.set_hdr_len(hdr_len);
    }
    Ok((len, tail))
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

    /// A vnet header (NEEDS_CSUM, csum_start, hdr_len) and a frame, tagged
    /// with `tag` or not.
    fn vnet_frame(csum_start: u16, hdr_len: u16, tag: Option<u16>) -> Vec<u8> {
        let mut b = vec![0u8; vnet::HEADER_LEN];
        b[0] = vnet::FLAG_NEEDS_CSUM;
        b[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
        b[6..8].copy_from_slice(&csum_start.to_ne_bytes());
        b.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        if let Some(tci) = tag {
            b.extend_from_slice(&[0x81, 0x00]);
            b.extend_from_slice(&tci.to_be_bytes());
        }
        b.extend_from_slice(&[0x08, 0x00, 0x45, 0x00, 0xde, 0xad]);
        b
    }

    fn rebuilt(bytes: &[u8], tag: Option<(u16, u16)>) -> Result<Vec<u8>, Truncated> {
        let mut head = [0u8; RETAG_HEAD_LEN];
        let (len, tail) = retag(bytes, tag, &mut head)?;
        Ok([&head[..len], &bytes[tail..]].concat())
    }

    #[test]
    fn retag_pushes_pops_and_rewrites() {
        let untagged = vnet_frame(34, 54, None);
        let tagged = vnet_frame(38, 58, Some(0x2000 | 10));
        // Push: the same bytes insert_tag makes.
        assert_eq!(
            rebuilt(&untagged, Some((TPID_8021Q, 0x2000 | 10))),
            Ok(tagged.clone())
        );
        // Pop, and the offsets come back.
        assert_eq!(rebuilt(&tagged, None), Ok(untagged.clone()));
        // Rewrite a priority tag into VLAN 20, keeping the priority.
        let priority = vnet_frame(38, 58, Some(0x6000));
        assert_eq!(
            rebuilt(&priority, Some((TPID_8021Q, 0x6000 | 20))),
            Ok(vnet_frame(38, 58, Some(0x6000 | 20)))
        );
        // A checksum offset that would land inside the Ethernet header.
        assert_eq!(rebuilt(&vnet_frame(16, 0, Some(10)), None), Err(Truncated));
        assert_eq!(
            rebuilt(&untagged[..vnet::HEADER_LEN + 13], None),
            Err(Truncated)
        );
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
