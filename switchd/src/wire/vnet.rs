//! The virtio-net header that `PACKET_VNET_HDR` puts in front of every frame.
//!
//! It carries the offload state of the frame (partial checksum, GSO type and
//! segment size). The datapath hands it back to the kernel untouched on send, so a
//! 64 KB TCP super-frame with a partial checksum leaves as it came in and the
//! kernel finishes the work only where needed (see ../shared/DESIGN.md, problem 1).

use super::{Field, Truncated};

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
}

/// `struct virtio_net_hdr` without the mergeable-buffers count.
pub const HEADER_LEN: usize = 10;
pub const FLAG_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit in the GSO type: the TCP stream uses ECN.
pub const GSO_ECN: u8 = 0x80;

/// A view of a virtio-net header. Multi-byte fields are in host byte order
/// (the kernel writes them with `virtio16` in little-endian mode on x86 and arm64).
#[derive(Debug, Clone, Copy)]
pub struct VnetHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VnetHeader<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Truncated);
        }
        Ok(VnetHeader { buffer })
    }

    /// For a buffer whose length was checked already; accessors panic otherwise.
    pub fn new_unchecked(buffer: T) -> Self {
        VnetHeader { buffer }
    }

    fn u16_at(&self, f: Field) -> u16 {
        let b = &self.buffer.as_ref()[f];
        u16::from_ne_bytes([b[0], b[1]])
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    pub fn hdr_len(&self) -> u16 {
        self.u16_at(field::HDR_LEN)
    }

    pub fn gso_size(&self) -> u16 {
        self.u16_at(field::GSO_SIZE)
    }

    pub fn csum_start(&self) -> u16 {
        self.u16_at(field::CSUM_START)
    }

    pub fn csum_offset(&self) -> u16 {
        self.u16_at(field::CSUM_OFFSET)
    }

    /// A GSO frame may be longer than the MTU; the kernel segments it on the way out.
    pub fn is_gso(&self) -> bool {
        self.gso_type() != GSO_NONE
    }

    /// Whether the header makes sense for a frame of `frame_len` bytes (header
    /// excluded): a known GSO type with a segment size, and a checksum field
    /// inside the frame. The kernel writes these headers itself, so a bad one
    /// means a bug somewhere; such a frame is dropped rather than passed on.
    pub fn is_valid_for(&self, frame_len: usize) -> bool {
        let gso_ok = match self.gso_type() & !GSO_ECN {
            GSO_NONE => true,
            GSO_TCPV4 | GSO_UDP | GSO_TCPV6 | GSO_UDP_L4 => self.gso_size() > 0,
            _ => false,
        };
        let csum_ok = self.flags() & FLAG_NEEDS_CSUM == 0
            || usize::from(self.csum_start()) + usize::from(self.csum_offset()) + 2 <= frame_len;
        gso_ok && csum_ok
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VnetHeader<T> {
    fn set_u16_at(&mut self, f: Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_ne_bytes());
    }

    pub fn set_hdr_len(&mut self, v: u16) {
        self.set_u16_at(field::HDR_LEN, v);
    }

    pub fn set_csum_start(&mut self, v: u16) {
        self.set_u16_at(field::CSUM_START, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tcp4_gso_header() {
        // NEEDS_CSUM, GSO_TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
        let mut bytes = [0u8; 10];
        bytes[0] = FLAG_NEEDS_CSUM;
        bytes[1] = 1;
        bytes[2..4].copy_from_slice(&66u16.to_ne_bytes());
        bytes[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        bytes[6..8].copy_from_slice(&34u16.to_ne_bytes());
        bytes[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let h = VnetHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(h.flags(), FLAG_NEEDS_CSUM);
        assert!(h.is_gso());
        assert_eq!(h.hdr_len(), 66);
        assert_eq!(h.gso_size(), 1448);
        assert_eq!(h.csum_start(), 34);
        assert_eq!(h.csum_offset(), 16);
    }

    #[test]
    fn bogus_headers_are_invalid() {
        let header = |flags: u8, gso: u8, gso_size: u16, start: u16, off: u16| {
            let mut b = [0u8; 10];
            b[0] = flags;
            b[1] = gso;
            b[4..6].copy_from_slice(&gso_size.to_ne_bytes());
            b[6..8].copy_from_slice(&start.to_ne_bytes());
            b[8..10].copy_from_slice(&off.to_ne_bytes());
            b
        };
        let valid = |b: [u8; 10], len| VnetHeader::new_checked(&b[..]).unwrap().is_valid_for(len);
        assert!(valid(header(0, GSO_NONE, 0, 0, 0), 60));
        assert!(valid(
            header(FLAG_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 1448, 34, 16),
            9000
        ));
        assert!(!valid(header(0, 2, 1448, 0, 0), 9000), "unknown GSO type");
        assert!(
            !valid(header(0, GSO_TCPV6, 0, 0, 0), 9000),
            "GSO without a size"
        );
        assert!(
            !valid(header(FLAG_NEEDS_CSUM, GSO_NONE, 0, 50, 16), 60),
            "checksum past the end"
        );
    }

    #[test]
    fn short_header_is_rejected() {
        assert!(VnetHeader::new_checked(&[0u8; 9][..]).is_err());
    }
}
