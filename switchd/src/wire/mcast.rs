//! IP multicast as a snooping switch reads it (RFC 4541): whether a frame is an
//! IGMP/MLD query, a membership report or leave, data to a group, or something
//! every port must get. pnet_packet has no IGMP parser and its ICMPv6 stops at
//! the neighbour-discovery types (no MLDv2 records), so the few fields needed are
//! read here, bounds-checked, without allocating.

use super::vlan::{TPID_8021AD, TPID_8021Q};
use super::MacAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_IGMP: u8 = 2;
const NEXT_ICMPV6: u8 = 58;
/// IPv6 extension headers an MLD message may sit behind: hop-by-hop (where its
/// router alert is), destination options, routing.
const NEXT_SKIPPABLE: [u8; 3] = [0, 60, 43];

/// What a multicast frame is to the group table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mcast<'a> {
    /// Every port in the VLAN gets it: not IP, 224.0.0.0/24 or ff02::1 (which
    /// RFC 4541 says must not be constrained), an IGMP type snooping does not
    /// know, or a header that does not parse.
    Flood,
    /// Data to a group: its members and the multicast routers get it.
    Data(IpAddr),
    /// An IGMP or MLD query: it came from a multicast router (or a querier);
    /// members answer within its maximum response time.
    Query { max_response_ms: u64 },
    /// Membership reports and leaves: (group, joined) for each record.
    Report(Records<'a>),
}

/// The group records of one report or leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records<'a> {
    /// An IGMPv1/v2 report or leave, or an MLDv1 report or done: one record.
    one: Option<(IpAddr, bool)>,
    /// An IGMPv3 or MLDv2 report's records, not yet read.
    rest: &'a [u8],
    left: u16,
    v6: bool,
}

impl Records<'_> {
    fn one(group: IpAddr, joined: bool) -> Self {
        Records {
            one: Some((group, joined)),
            rest: &[],
            left: 0,
            v6: false,
        }
    }
}

impl Iterator for Records<'_> {
    type Item = (IpAddr, bool);

    fn next(&mut self) -> Option<(IpAddr, bool)> {
        if let Some(one) = self.one.take() {
            return Some(one);
        }
        while self.left > 0 {
            self.left -= 1;
            // Record type, aux data length (words), number of sources, group.
            let alen = if self.v6 { 16 } else { 4 };
            let head = self.rest.get(..4 + alen)?;
            let sources = u16::from_be_bytes([head[2], head[3]]) as usize;
            let len = 4 + alen + sources * alen + head[1] as usize * 4;
            let group = addr(&head[4..]);
            self.rest = self.rest.get(len..).unwrap_or(&[]);
            // An include filter with no sources (IS_IN {} / TO_IN {}) is a leave;
            // any other record means the host wants some of the group's traffic,
            // and without per-source filtering that is all of it (as Open vSwitch).
            let joined = match head[0] {
                1 | 3 => sources > 0,
                2 | 4..=6 => true,
                _ => continue,
            };
            return Some((group, joined));
        }
        None
    }
}

fn addr(b: &[u8]) -> IpAddr {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        _ => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&b[..16]).expect("16 bytes"),
        )),
    }
}

/// Whether `dst` is where IPv4 (01:00:5E, RFC 1112) or IPv6 (33:33, RFC 2464)
/// multicast goes: the frames snooping reads.
#[inline]
pub fn is_ip_multicast(dst: MacAddr) -> bool {
    let [a, b, c, d, ..] = dst.0;
    [a, b, c] == [0x01, 0x00, 0x5e] && d & 0x80 == 0 || [a, b] == [0x33, 0x33]
}

/// Whether snooping leaves `group` alone: every port gets its traffic and no
/// membership of it is kept.
pub fn is_unconstrained(group: IpAddr) -> bool {
    match group {
        IpAddr::V4(g) => g.octets()[..3] == [224, 0, 0] || !g.is_multicast(),
        IpAddr::V6(g) => g == Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1) || !g.is_multicast(),
    }
}

/// Reads a frame (from its Ethernet header, up to two VLAN tags) to a group
/// address. Never panics, whatever the bytes.
pub fn classify(frame: &[u8]) -> Mcast<'_> {
    let mut at = 12;
    let mut ethertype = match frame.get(at..at + 2) {
        Some(t) => u16::from_be_bytes([t[0], t[1]]),
        None => return Mcast::Flood,
    };
    for _ in 0..2 {
        if ethertype != TPID_8021Q && ethertype != TPID_8021AD {
            break;
        }
        at += 4;
        ethertype = match frame.get(at..at + 2) {
            Some(t) => u16::from_be_bytes([t[0], t[1]]),
            None => return Mcast::Flood,
        };
    }
    let ip = &frame[at + 2..];
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip),
        ETHERTYPE_IPV6 => ipv6(ip),
        _ => None,
    }
    .unwrap_or(Mcast::Flood)
}

/// RFC 3376 4.1.1 and RFC 3810 5.1.3: a maximum response code of `exp_bits`
/// exponent and `mant_bits` mantissa bits, above `1 << (exp + mant)` a float.
fn response_code(code: u32, exp_bits: u32, mant_bits: u32) -> u32 {
    if code < 1 << (exp_bits + mant_bits) {
        return code;
    }
    let mant = code & ((1 << mant_bits) - 1);
    let exp = (code >> mant_bits) & ((1 << exp_bits) - 1);
    (mant | 1 << mant_bits) << (exp + 3)
}

/// An IGMPv1 query has no response time: RFC 2236 says 10 s.
const IGMPV1_RESPONSE_MS: u64 = 10_000;

fn ipv4(ip: &[u8]) -> Option<Mcast<'_>> {
    let head = ip.get(..20)?;
    let ihl = (head[0] & 0x0f) as usize * 4;
    if head[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let dst = addr(&head[16..20]);
    let first_fragment = u16::from_be_bytes([head[6], head[7]]) & 0x1fff == 0;
    if head[9] == PROTO_IGMP && first_fragment {
        // Up to the total length: a short frame's Ethernet padding would
        // otherwise make an IGMPv2 query look like a (12-byte) IGMPv3 one.
        let total = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let ip = if (ihl..ip.len()).contains(&total) {
            &ip[..total]
        } else {
            ip
        };
        let igmp = ip.get(ihl..)?;
        let group = || Some(addr(igmp.get(4..8)?));
        return match *igmp.first()? {
            0x11 => {
                // Tenths of a second; a float from IGMPv3 on (a 12-byte query).
                let code = u32::from(*igmp.get(1)?);
                let tenths = if igmp.len() >= 12 {
                    response_code(code, 3, 4)
                } else {
                    code
                };
                Some(Mcast::Query {
                    max_response_ms: match tenths {
                        0 => IGMPV1_RESPONSE_MS,
                        t => u64::from(t) * 100,
                    },
                })
            }
            0x12 | 0x16 => Some(Mcast::Report(Records::one(group()?, true))),
            0x17 => Some(Mcast::Report(Records::one(group()?, false))),
            0x22 => Some(Mcast::Report(Records {
                one: None,
                left: u16::from_be_bytes(igmp.get(6..8)?.try_into().ok()?),
                rest: igmp.get(8..)?,
                v6: false,
            })),
            _ => None,
        };
    }
    (!is_unconstrained(dst)).then_some(Mcast::Data(dst))
}

fn ipv6(ip: &[u8]) -> Option<Mcast<'_>> {
    let head = ip.get(..40)?;
    if head[0] >> 4 != 6 {
        return None;
    }
    let dst = addr(&head[24..40]);
    let (mut next, mut at) = (head[6], 40);
    for _ in 0..4 {
        if !NEXT_SKIPPABLE.contains(&next) {
            break;
        }
        let ext = ip.get(at..at + 2)?;
        next = ext[0];
        at += (ext[1] as usize + 1) * 8;
    }
    if next == NEXT_ICMPV6 {
        let icmp = ip.get(at..).unwrap_or(&[]);
        let group = || Some(addr(icmp.get(8..24)?));
        match icmp.first() {
            Some(130) => {
                // Milliseconds; a float in an MLDv2 query (28 bytes or more).
                let code = u32::from(u16::from_be_bytes(icmp.get(4..6)?.try_into().ok()?));
                let ms = if icmp.len() >= 28 {
                    response_code(code, 3, 12)
                } else {
                    code
                };
                return Some(Mcast::Query {
                    max_response_ms: u64::from(ms),
                });
            }
            Some(131) => return Some(Mcast::Report(Records::one(group()?, true))),
            Some(132) => return Some(Mcast::Report(Records::one(group()?, false))),
            Some(143) => {
                return Some(Mcast::Report(Records {
                    one: None,
                    left: u16::from_be_bytes(icmp.get(6..8)?.try_into().ok()?),
                    rest: icmp.get(8..)?,
                    v6: true,
                }))
            }
            _ => {}
        }
    }
    (!is_unconstrained(dst)).then_some(Mcast::Data(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x01, 0x00, 0x5e, 0, 0, 1, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4_packet(proto: u8, dst: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x46, 0, 0, 0, 0, 0, 0, 0, 1, proto, 0, 0, 10, 0, 0, 1];
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&[0x94, 4, 0, 0]); // router alert option
        ip.extend_from_slice(body);
        let total = (ip.len() as u16).to_be_bytes();
        ip[2..4].copy_from_slice(&total);
        ip
    }

    fn ipv6_packet(dst: Ipv6Addr, hop_by_hop: bool, icmp: &[u8]) -> Vec<u8> {
        let next = if hop_by_hop { 0 } else { 58 };
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, next, 1];
        ip.extend_from_slice(&Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets());
        ip.extend_from_slice(&dst.octets());
        if hop_by_hop {
            ip.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
        }
        ip.extend_from_slice(icmp);
        ip
    }

    fn records(m: Mcast<'_>) -> Vec<(IpAddr, bool)> {
        match m {
            Mcast::Report(r) => r.collect(),
            other => panic!("not a report: {other:?}"),
        }
    }

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }

    #[test]
    fn igmp_v2_report_leave_and_query() {
        let g = [239, 1, 2, 3];
        let report = eth(0x0800, &ipv4_packet(2, g, &[0x16, 0, 0, 0, 239, 1, 2, 3]));
        assert_eq!(records(classify(&report)), vec![(v4(g), true)]);
        let leave = eth(
            0x0800,
            &ipv4_packet(2, [224, 0, 0, 2], &[0x17, 0, 0, 0, 239, 1, 2, 3]),
        );
        assert_eq!(records(classify(&leave)), vec![(v4(g), false)]);
        let query = eth(
            0x0800,
            &ipv4_packet(2, [224, 0, 0, 1], &[0x11, 100, 0, 0, 0, 0, 0, 0]),
        );
        assert_eq!(
            classify(&query),
            Mcast::Query {
                max_response_ms: 10_000
            }
        );
        // IGMPv1: no response time, 10 s.
        let v1 = eth(
            0x0800,
            &ipv4_packet(2, [224, 0, 0, 1], &[0x11, 0, 0, 0, 0, 0, 0, 0]),
        );
        assert_eq!(
            classify(&v1),
            Mcast::Query {
                max_response_ms: 10_000
            }
        );
        // IGMPv3, code 0x8f: mantissa 15 | 16, exponent 0, << 3: 248 tenths.
        let v3 = eth(
            0x0800,
            &ipv4_packet(
                2,
                [224, 0, 0, 1],
                &[0x11, 0x8f, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0],
            ),
        );
        assert_eq!(
            classify(&v3),
            Mcast::Query {
                max_response_ms: 24_800
            }
        );
    }

    #[test]
    fn ethernet_padding_is_not_igmp() {
        // An IGMPv2 query for 20 s in a 60-byte frame: 14 bytes of padding
        // after its 8, which read as IGMPv3 would be a float code (307 s).
        let mut ip = ipv4_packet(2, [224, 0, 0, 1], &[0x11, 200, 0, 0, 0, 0, 0, 0]);
        ip.resize(46, 0);
        assert_eq!(
            classify(&eth(0x0800, &ip)),
            Mcast::Query {
                max_response_ms: 20_000
            }
        );
    }

    #[test]
    fn igmp_v3_records_join_leave_and_skip_unknown_types() {
        let mut body = vec![0x22, 0, 0, 0, 0, 0, 0, 4];
        body.extend_from_slice(&[4, 0, 0, 0, 239, 0, 0, 1]); // TO_EX {}: join
        body.extend_from_slice(&[3, 0, 0, 0, 239, 0, 0, 2]); // TO_IN {}: leave
        body.extend_from_slice(&[9, 0, 0, 0, 239, 0, 0, 3]); // unknown: skipped
                                                             // IS_IN {one source} with one aux word: join.
        body.extend_from_slice(&[1, 1, 0, 1, 239, 0, 0, 4, 10, 0, 0, 9, 0, 0, 0, 0]);
        let f = eth(0x0800, &ipv4_packet(2, [224, 0, 0, 22], &body));
        assert_eq!(
            records(classify(&f)),
            vec![
                (v4([239, 0, 0, 1]), true),
                (v4([239, 0, 0, 2]), false),
                (v4([239, 0, 0, 4]), true)
            ]
        );
        // A count larger than the records present stops at the end.
        let mut short = body.clone();
        short[7] = 200;
        let f = eth(0x0800, &ipv4_packet(2, [224, 0, 0, 22], &short));
        assert_eq!(records(classify(&f)).len(), 3);
    }

    #[test]
    fn data_link_local_and_non_ip() {
        let udp = [0u8; 8];
        let f = eth(0x0800, &ipv4_packet(17, [239, 9, 9, 9], &udp));
        assert_eq!(classify(&f), Mcast::Data(v4([239, 9, 9, 9])));
        let f = eth(0x0800, &ipv4_packet(17, [224, 0, 0, 251], &udp));
        assert_eq!(classify(&f), Mcast::Flood);
        assert_eq!(classify(&eth(0x0806, &[0; 28])), Mcast::Flood);
        // Tagged twice (802.1ad then 802.1Q), still read.
        let mut tagged = eth(0x88a8, &[0, 10, 0x81, 0, 0, 20, 0x08, 0x00]);
        tagged.extend_from_slice(&ipv4_packet(17, [239, 9, 9, 9], &udp));
        assert_eq!(classify(&tagged), Mcast::Data(v4([239, 9, 9, 9])));
        // A later fragment of an IGMP packet is data, not a report.
        let mut frag = ipv4_packet(2, [239, 1, 1, 1], &[0x16, 0, 0, 0, 239, 1, 1, 1]);
        frag[7] = 1;
        assert_eq!(
            classify(&eth(0x0800, &frag)),
            Mcast::Data(v4([239, 1, 1, 1]))
        );
    }

    #[test]
    fn mld_through_hop_by_hop() {
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let g = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
        let mut q = vec![130, 0, 0, 0, 0x27, 0x10, 0, 0];
        q.extend_from_slice(&[0; 20]);
        let query = eth(0x86dd, &ipv6_packet(all, true, &q));
        assert_eq!(
            classify(&query),
            Mcast::Query {
                max_response_ms: 10_000
            }
        );
        let mut v1 = vec![131, 0, 0, 0, 0, 0, 0, 0];
        v1.extend_from_slice(&g.octets());
        let f = eth(0x86dd, &ipv6_packet(g, true, &v1));
        assert_eq!(records(classify(&f)), vec![(IpAddr::V6(g), true)]);
        v1[0] = 132;
        let f = eth(0x86dd, &ipv6_packet(g, false, &v1));
        assert_eq!(records(classify(&f)), vec![(IpAddr::V6(g), false)]);
        let mut v2 = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
        v2.extend_from_slice(&g.octets());
        let f = eth(
            0x86dd,
            &ipv6_packet(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16), true, &v2),
        );
        assert_eq!(records(classify(&f)), vec![(IpAddr::V6(g), true)]);
        // Neighbour solicitation to a solicited-node group: data.
        let f = eth(0x86dd, &ipv6_packet(g, false, &[135, 0, 0, 0]));
        assert_eq!(classify(&f), Mcast::Data(IpAddr::V6(g)));
        // Router solicitation to all-nodes' sibling all-routers: data; to all-nodes: flood.
        let f = eth(0x86dd, &ipv6_packet(all, false, &[134, 0, 0, 0]));
        assert_eq!(classify(&f), Mcast::Flood);
    }

    #[test]
    fn every_truncation_is_flood_or_data_never_a_panic() {
        let mut v2 = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
        v2.extend_from_slice(&[0xff; 16]);
        let f = eth(0x86dd, &ipv6_packet(Ipv6Addr::UNSPECIFIED, true, &v2));
        for n in 0..f.len() {
            if let Mcast::Report(r) = classify(&f[..n]) {
                r.for_each(drop);
            }
        }
    }
}
