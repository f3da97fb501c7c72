//! `trace`: what the switch would do with a frame now, and why, without
//! sending it. It runs the same `Decider::decide` the datapath threads run, on
//! copies of the bridge's MAC and snooping tables, so nothing is learned, no
//! counter moves, and the answer is the threads' answer by construction.

use super::decide::{Decider, FrameTag, Ports};
use super::fdb::{Fdb, FdbKey, PortId};
use super::mcast::Mdb;
use crate::wire::{vlan, vnet, EthernetFrame, MacAddr};
use std::sync::Mutex;

/// Why the ingress port refused the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    GroupSource,
    TaggedOnAccess,
    VlanNotTrunked,
    ReservedDestination,
    Malformed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::GroupSource => "the source is a group address (never learned)",
            Refusal::TaggedOnAccess => "a tagged frame on an access port",
            Refusal::VlanNotTrunked => "the port does not carry the frame's VLAN",
            Refusal::ReservedDestination => {
                "a reserved group destination the bridge does not relay (forward-bpdu, group-fwd-mask)"
            }
            Refusal::Malformed => "not a whole frame",
        }
    }
}

/// What learning the source does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    New,
    /// Already on the ingress port: its age starts again.
    Refresh,
    /// On another port until now.
    Moved {
        from: PortId,
    },
    /// A static entry elsewhere keeps it (`fdb-add`): not learned over.
    KeptStatic {
        on: PortId,
    },
}

/// What the destination lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit {
        port: PortId,
        age_ms: Option<u64>,
    },
    /// Behind the ingress port itself: the frame goes nowhere.
    BehindIngress,
    /// An entry on a port that does not carry the VLAN: flooded instead.
    Unusable {
        port: PortId,
    },
    Miss,
    /// A broadcast or multicast destination.
    Group,
}

/// One output: the port and whether the frame leaves it tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub port: PortId,
    pub tagged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The VLAN the ingress port puts the frame in, or why it refused it.
    pub vlan: Result<u16, Refusal>,
    /// The frame's own tag was another VLAN id than the one it is put in (a
    /// priority tag): the kernel fast path leaves such frames to userspace.
    pub retagged: bool,
    pub learn: Option<Learn>,
    pub lookup: Option<Lookup>,
    pub outputs: Vec<Output>,
}

/// Traces one Ethernet frame (no virtio-net header) arriving on
/// `ports.ingress`, against copies of `fdb` and `mdb`.
pub fn trace(fdb: &Fdb, mdb: Option<Mdb>, ports: &Ports, frame: &[u8], now_ms: u64) -> Traced {
    let mut bytes = vec![0u8; vnet::HEADER_LEN];
    bytes.extend_from_slice(frame);
    let mut after = fdb.clone();
    let mdb = mdb.map(Mutex::new);
    let ports = Ports {
        mdb: mdb.as_ref(),
        ..*ports
    };
    let mut decider = Decider::default();
    let counts = decider.decide(
        &mut after,
        now_ms,
        &ports,
        std::iter::once(Some(&bytes[..])),
    );
    let c = counts.port;
    let refused = if c.rx_group_src > 0 {
        Some(Refusal::GroupSource)
    } else if c.rx_vlan_tagged > 0 {
        Some(Refusal::TaggedOnAccess)
    } else if c.rx_vlan_untrunked > 0 {
        Some(Refusal::VlanNotTrunked)
    } else if c.rx_reserved > 0 {
        Some(Refusal::ReservedDestination)
    } else if c.rx_drops + c.rx_errors > 0 {
        Some(Refusal::Malformed)
    } else {
        None
    };
    if let Some(why) = refused {
        return Traced {
            vlan: Err(why),
            retagged: false,
            learn: None,
            lookup: None,
            outputs: Vec::new(),
        };
    }
    let frame_vlan = decider.vlan(0);
    let vid = frame_vlan.tci & vlan::VID_MASK;
    let eth = EthernetFrame::new_unchecked(frame);
    let (src, dst) = (eth.src_addr(), eth.dst_addr());
    let key = |mac: MacAddr| FdbKey { vlan: vid, mac };
    let learn = match fdb.lookup(&key(src), now_ms) {
        None => Learn::New,
        Some(p) if p == ports.ingress => Learn::Refresh,
        Some(p) if after.lookup(&key(src), now_ms) == Some(ports.ingress) => {
            Learn::Moved { from: p }
        }
        Some(p) => Learn::KeptStatic { on: p },
    };
    let lookup = if dst.is_multicast() {
        Lookup::Group
    } else {
        match after.lookup(&key(dst), now_ms) {
            None => Lookup::Miss,
            Some(p) if p == ports.ingress => Lookup::BehindIngress,
            Some(p) => match ports.index_of(p) {
                Some(j) if ports.egress[j].vlan.carries(vid) => Lookup::Hit {
                    port: p,
                    age_ms: after
                        .rows(now_ms)
                        .find(|r| r.key == key(dst) && !r.is_static)
                        .map(|r| r.age_ms),
                },
                _ => Lookup::Unusable { port: p },
            },
        }
    };
    let mut outputs: Vec<Output> = decider
        .groups()
        .map(|group| {
            let j = group[0].0 as usize;
            Output {
                port: ports.ids[j],
                tagged: ports.egress[j].vlan.tags(vid),
            }
        })
        .collect();
    // Shown by port id, not in the order a flood sends.
    outputs.sort_by_key(|o| o.port);
    Traced {
        vlan: Ok(vid),
        retagged: frame_vlan.tag == FrameTag::Other,
        learn: Some(learn),
        lookup: Some(lookup),
        outputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::egress::Egress;
    use crate::datapath::vlan::PortVlan;
    use switchd_proto::{VlanConfig, VlanMode};

    fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        if let Some(t) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(f.len() + 46, 0);
        f
    }

    fn access(tag: u16) -> Egress {
        Egress {
            vlan: PortVlan::new(&VlanConfig {
                tag: Some(tag),
                trunks: vec![],
                vlan_mode: Some(VlanMode::Access),
            }),
        }
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn a_flood_is_shown_by_port_id_whatever_the_send_order() {
        let egress = [Egress::default(), Egress::default(), Egress::default()];
        let ports = Ports {
            ingress: 1,
            ids: &[3, 1, 2],
            by_id: &[(1, 1), (2, 2), (3, 0)],
            egress: &egress,
            group_fwd_mask: 0,
            mdb: None,
        };
        let t = trace(&Fdb::new(64, 300), None, &ports, &frame(B, A, None), 1000);
        let ports: Vec<_> = t.outputs.iter().map(|o| o.port).collect();
        assert_eq!(ports, [2, 3]);
    }

    #[test]
    fn a_trace_predicts_and_changes_nothing() {
        let egress = [Egress::default(), Egress::default(), access(10)];
        let ids = [1, 2, 3];
        let by_id = [(1, 0), (2, 1), (3, 2)];
        let ports = |ingress| Ports {
            ingress,
            ids: &ids,
            by_id: &by_id,
            egress: &egress,
            group_fwd_mask: 0,
            mdb: None,
        };
        let mut fdb = Fdb::new(64, 300);
        // Unknown destination: flooded to the ports carrying VLAN 0 (not the
        // access port of VLAN 10), the source new.
        let t = trace(&fdb, None, &ports(1), &frame(B, A, None), 1000);
        assert_eq!(t.vlan, Ok(0));
        assert_eq!(t.learn, Some(Learn::New));
        assert_eq!(t.lookup, Some(Lookup::Miss));
        assert_eq!(
            t.outputs,
            vec![Output {
                port: 2,
                tagged: false
            }]
        );
        assert_eq!(fdb.len(), 0, "the trace learned");

        fdb.learn(
            FdbKey {
                vlan: 0,
                mac: MacAddr(A),
            },
            1,
            1000,
        );
        fdb.learn(
            FdbKey {
                vlan: 0,
                mac: MacAddr(B),
            },
            2,
            1000,
        );
        let t = trace(&fdb, None, &ports(1), &frame(B, A, None), 4000);
        assert_eq!(t.learn, Some(Learn::Refresh));
        assert_eq!(
            t.lookup,
            Some(Lookup::Hit {
                port: 2,
                age_ms: Some(3000)
            })
        );
        assert_eq!(
            t.outputs,
            vec![Output {
                port: 2,
                tagged: false
            }]
        );
        // From the other side, A moves; B is behind the ingress port.
        let t = trace(&fdb, None, &ports(2), &frame(B, A, None), 4000);
        assert_eq!(t.learn, Some(Learn::Moved { from: 1 }));
        assert_eq!(t.lookup, Some(Lookup::BehindIngress));
        assert!(t.outputs.is_empty());
        // Broadcast from a trunk in VLAN 10: to the access port, untagged.
        let t = trace(&fdb, None, &ports(1), &frame([0xff; 6], A, Some(10)), 4000);
        assert_eq!(t.vlan, Ok(10));
        assert_eq!(t.lookup, Some(Lookup::Group));
        assert_eq!(
            t.outputs,
            vec![
                Output {
                    port: 2,
                    tagged: true
                },
                Output {
                    port: 3,
                    tagged: false
                }
            ]
        );
        // Refusals.
        let t = trace(&fdb, None, &ports(3), &frame(B, A, Some(10)), 4000);
        assert_eq!(t.vlan, Err(Refusal::TaggedOnAccess));
        let t = trace(
            &fdb,
            None,
            &ports(1),
            &frame(B, [1, 0, 0, 0, 0, 1], None),
            4000,
        );
        assert_eq!(t.vlan, Err(Refusal::GroupSource));
        let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
        let t = trace(&fdb, None, &ports(1), &frame(stp, A, None), 4000);
        assert_eq!(t.vlan, Err(Refusal::ReservedDestination));
        assert_eq!(fdb.len(), 2, "the traces changed the table");
    }
}
