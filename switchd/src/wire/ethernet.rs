use super::{Field, MacAddr, Truncated};

mod field {
    use super::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Arp,
    Vlan,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    pub fn check_len(&self) -> Result<(), Truncated> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::DESTINATION].try_into().unwrap())
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::SOURCE].try_into().unwrap())
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]]).into()
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let v: u16 = ethertype.into();
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 02:00:00:00:00:01 to broadcast, trimmed after the ethertype + 2 bytes.
    static ARP_FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];

    #[test]
    fn parse() {
        let frame = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(frame.ethertype(), EtherType::Arp);
        assert_eq!(frame.payload(), &[0x00, 0x01]);
    }

    #[test]
    fn build() {
        let mut bytes = [0u8; 16];
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        frame.set_ethertype(EtherType::Arp);
        bytes[14..].copy_from_slice(&[0x00, 0x01]);
        assert_eq!(bytes, ARP_FRAME);
    }

    #[test]
    fn runt_is_rejected() {
        assert_eq!(
            EthernetFrame::new_checked(&ARP_FRAME[..13]).unwrap_err(),
            Truncated
        );
        assert!(EthernetFrame::new_checked(&[][..]).is_err());
    }

    #[test]
    fn ethertype_round_trip() {
        for v in [0x0800u16, 0x0806, 0x8100, 0x86dd, 0x88cc] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
    }
}
