//! Whatever arrives on a port: arbitrary bytes, stripped VLAN tags put back in,
//! frames not received whole, through the forwarding decision, the MAC table and
//! the egress stage, on ports of every VLAN mode, interleaved with what the
//! control plane does (aging, port removal, flush, new limits, VLAN settings,
//! the reserved addresses relayed, multicast snooping on or off with new bounds).
//! Checks that every frame goes nowhere, to one other port, or to all other
//! ports of its VLAN (IP multicast under snooping: to some of them); never back
//! to its ingress and never into another VLAN; that bad frames go nowhere; that each copy leaves
//! with the tag its port's mode says, its payload and virtio-net header intact
//! (offsets moved with the tag); and that the table keeps its bound and its
//! aging promise.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use switchd::datapath::decide::{
    index_by_id, is_withheld, send_order, Decider, FrameTag, FrameVlan, Ports,
};
use switchd::datapath::egress::{self, Egress};
use switchd::datapath::mcast::Mdb;
use switchd::datapath::vlan::PortVlan;
use switchd::datapath::{Fdb, FdbKey, PortId};
use switchd::wire::mcast::{self, Mcast};
use switchd::wire::{ethernet, vlan, vnet, EthernetFrame, VnetHeader};
use switchd_proto::{McastSnooping, VlanConfig, VlanMode};

const PORTS: u8 = 4;

#[derive(Arbitrary, Debug)]
enum Op {
    Batch {
        ingress: u8,
        advance_ms: u16,
        frames: Vec<Rx>,
    },
    Expire {
        advance_ms: u32,
    },
    RemovePort(u8),
    Flush,
    SetLimits {
        max_entries: u8,
        aging_secs: u8,
    },
    /// A port's VLAN columns; ones the control plane would refuse are skipped.
    SetVlan {
        port: u8,
        mode: Option<u8>,
        tag: Option<u16>,
        trunks: Vec<u16>,
    },
    GroupFwdMask(u16),
    Snooping {
        enable: bool,
        table_size: u8,
        aging_secs: u8,
        flood_unregistered: bool,
    },
}

/// One receive, as the sockets hand it over: a virtio-net header and a frame.
#[derive(Arbitrary, Debug)]
enum Rx {
    Whole(Vec<u8>),
    /// The kernel stripped this tag into metadata; the datapath puts it back.
    Tagged {
        q_in_q: bool,
        tci: u16,
        bytes: Vec<u8>,
    },
    Truncated,
}

struct State {
    fdb: Fdb,
    decider: Decider,
    present: [bool; PORTS as usize],
    egress: [Egress; PORTS as usize],
    group_fwd_mask: u16,
    now_ms: u64,
    aging_ms: u64,
    mdb: Mutex<Mdb>,
    snooping: McastSnooping,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut state = State {
        fdb: Fdb::new(16, 300),
        decider: Decider::default(),
        present: [true; PORTS as usize],
        egress: Default::default(),
        group_fwd_mask: 0,
        now_ms: 0,
        aging_ms: 300_000,
        mdb: Mutex::new(Mdb::new(&McastSnooping::default())),
        snooping: McastSnooping::default(),
    };
    for op in ops {
        match op {
            Op::Batch {
                ingress,
                advance_ms,
                frames,
            } => {
                state.now_ms += u64::from(advance_ms);
                batch(&mut state, PortId::from(ingress % PORTS), frames);
            }
            Op::Expire { advance_ms } => {
                state.now_ms += u64::from(advance_ms);
                state.fdb.expire(state.now_ms);
                for row in state.fdb.rows(state.now_ms) {
                    assert!(row.age_ms <= state.aging_ms, "{row:?} outlived aging");
                }
                let mut mdb = state.mdb.lock().unwrap();
                mdb.expire(state.now_ms);
                for row in mdb.rows(state.now_ms) {
                    assert!(
                        row.age_ms < state.snooping.aging_time * 1000,
                        "{row:?} outlived aging"
                    );
                }
            }
            Op::RemovePort(port) => {
                let port = port % PORTS;
                state.present[usize::from(port)] = false;
                state.fdb.remove_port(PortId::from(port));
                assert!(state.fdb.rows(0).all(|r| r.port != PortId::from(port)));
                let mut mdb = state.mdb.lock().unwrap();
                mdb.remove_port(PortId::from(port));
                assert!(mdb.rows(0).all(|r| r.port != PortId::from(port)));
            }
            Op::Flush => {
                state.fdb.flush();
                assert!(state.fdb.is_empty());
            }
            Op::SetLimits {
                max_entries,
                aging_secs,
            } => {
                state
                    .fdb
                    .set_limits(u32::from(max_entries), u64::from(aging_secs));
                state.aging_ms = u64::from(aging_secs) * 1000;
            }
            Op::SetVlan {
                port,
                mode,
                tag,
                trunks,
            } => {
                let config = VlanConfig {
                    tag: tag.map(|t| t % 4100),
                    trunks: trunks.into_iter().map(|t| t % 4100).collect(),
                    vlan_mode: mode.map(|m| VlanMode::ALL[usize::from(m) % 4]),
                };
                if let Ok(config) = config.check() {
                    let port = port % PORTS;
                    // As the datapath does: entries learned under the old settings go.
                    state.fdb.remove_port(PortId::from(port));
                    state.mdb.lock().unwrap().remove_port(PortId::from(port));
                    state.egress[usize::from(port)] = Egress {
                        vlan: PortVlan::new(&config),
                    };
                }
            }
            Op::GroupFwdMask(mask) => state.group_fwd_mask = mask,
            Op::Snooping {
                enable,
                table_size,
                aging_secs,
                flood_unregistered,
            } => {
                state.snooping = McastSnooping {
                    enable,
                    table_size: u32::from(table_size),
                    aging_time: u64::from(aging_secs).max(1),
                    disable_flood_unregistered: !flood_unregistered,
                };
                let mut mdb = state.mdb.lock().unwrap();
                mdb.configure(&state.snooping);
                if !enable {
                    mdb.flush();
                }
            }
        }

        assert!(state.fdb.len() <= state.fdb.max_entries());
        assert_eq!(state.fdb.rows(state.now_ms).count(), state.fdb.len());
    }
});

fn batch(state: &mut State, ingress: PortId, rx: Vec<Rx>) {
    // A port that receives is attached (again, if it was removed).
    state.present[ingress as usize] = true;
    let mut peers: Vec<PortId> = (0..PORTS)
        .filter(|&p| state.present[usize::from(p)])
        .map(PortId::from)
        .collect();
    // As a view lists them: in send order, which is not the order of ids
    // (interface indexes made up so that it differs).
    peers.sort_by_key(|&p| send_order(p * 97));
    let by_id = index_by_id(&peers);
    let egress: Vec<Egress> = peers
        .iter()
        .map(|&p| state.egress[p as usize].clone())
        .collect();
    let ports = Ports {
        ingress,
        ids: &peers,
        by_id: &by_id,
        egress: &egress,
        group_fwd_mask: state.group_fwd_mask,
        mdb: state.snooping.enable.then_some(&state.mdb),
    };
    let frames: Vec<Option<Vec<u8>>> = rx.into_iter().map(receive).collect();
    // The same frames decided one at a time on a copy of the tables: the batch
    // must send each frame exactly where that says.
    let mut reference = state.fdb.clone();
    let reference_mdb = Mutex::new(state.mdb.lock().unwrap().clone());
    let groups_before = reference_mdb.lock().unwrap().len();
    let alone = Ports {
        mdb: ports.mdb.map(|_| &reference_mdb),
        ..ports
    };
    let expected: Vec<Vec<PortId>> = frames
        .iter()
        .map(|frame| expected_egress(&mut reference, state.now_ms, &alone, frame))
        .collect();
    let counts = state.decider.decide(
        &mut state.fdb,
        state.now_ms,
        &ports,
        frames.iter().map(Option::as_deref),
    );
    let n = frames.len();
    assert_eq!(
        counts.port.rx_packets + counts.port.rx_runts + counts.port.rx_truncated,
        n as u64,
        "every frame is counted once"
    );
    assert!(counts.port.rx_drops <= counts.port.rx_packets);
    let c = &counts.port;
    assert_eq!(
        c.rx_drops,
        c.rx_group_src + c.rx_bad_vnet + c.rx_vlan_tagged + c.rx_vlan_untrunked + c.rx_reserved
    );
    let ingress_vlan = &state.egress[ingress as usize].vlan;

    // Where each frame went, checking the grouping on the way.
    let mut egress_ports: Vec<Vec<PortId>> = vec![Vec::new(); n];
    let mut last_group = None;
    for group in state.decider.groups() {
        let j = group[0].0;
        assert!(last_group < Some(j), "one run per egress port, ascending");
        last_group = Some(j);
        assert!(
            group.windows(2).all(|w| w[0].1 < w[1].1),
            "arrival order kept"
        );
        let port = peers[j as usize];
        assert_ne!(port, ingress, "a frame never goes back out of its ingress");
        for &(_, i) in group {
            egress_ports[i as usize].push(port);
            let bytes = frames[i as usize]
                .as_deref()
                .expect("a sent frame was received");
            check_egress(&egress[j as usize], state.decider.vlan(i), bytes);
        }
    }

    let mut last_learned = None;
    for (i, frame) in frames.iter().enumerate() {
        let out = &egress_ports[i];
        let Some(bytes) = frame
            .as_deref()
            .filter(|b| b.len() >= vnet::HEADER_LEN + 14)
        else {
            assert!(out.is_empty(), "runt or truncated frame {i} was sent");
            continue;
        };
        let (header, body) = bytes.split_at(vnet::HEADER_LEN);
        let eth = EthernetFrame::new_unchecked(body);
        let tag = vlan::tag_of(body).map(|(_, tci)| tci & vlan::VID_MASK);
        let classified = ingress_vlan.classify(tag);
        let reserved = is_withheld(eth.dst_addr(), state.group_fwd_mask);
        let valid = !eth.src_addr().is_multicast()
            && VnetHeader::new_unchecked(header).is_valid_for(body.len())
            && classified.is_ok()
            && !reserved;
        let Some(vid) = classified.ok().filter(|_| valid) else {
            assert!(
                out.is_empty(),
                "frame {i} with a group source, a bad header, a refused VLAN or a reserved destination was sent"
            );
            continue;
        };
        let fv = state.decider.vlan(i as u32);
        assert_eq!(fv.tci & vlan::VID_MASK, vid);
        let own = tag.is_some_and(|t| t == vid);
        assert_eq!(fv.tag == FrameTag::Own, own, "{fv:?}");
        assert_eq!(fv.tag == FrameTag::Untagged, tag.is_none(), "{fv:?}");
        last_learned = Some(FdbKey {
            vlan: vid,
            mac: eth.src_addr(),
        });
        let members = peers
            .iter()
            .zip(&egress)
            .filter(|(p, e)| **p != ingress && e.vlan.carries(vid))
            .count();
        let snooped = state.snooping.enable
            && mcast::is_ip_multicast(eth.dst_addr())
            && !matches!(mcast::classify(body), Mcast::Flood);
        if eth.dst_addr().is_multicast() && !snooped {
            assert_eq!(
                out.len(),
                members,
                "group destination {i} is flooded in its VLAN"
            );
        } else if eth.dst_addr().is_multicast() {
            assert!(out.len() <= members, "snooped {i} went to {out:?}");
        } else {
            assert!(
                out.len() <= 1 || out.len() == members,
                "frame {i} went to {out:?}: neither one port nor a flood of its VLAN"
            );
        }
    }
    for (i, (out, want)) in egress_ports.iter().zip(&expected).enumerate() {
        let mut out = out.clone();
        out.sort_unstable();
        assert_eq!(&out, want, "frame {i} went to {out:?}, not to {want:?}");
    }
    let mdb = state.mdb.lock().unwrap();
    assert!(
        mdb.len() <= groups_before.max(mdb.max_groups()),
        "reports grew the group table past its bound"
    );
    drop(mdb);
    // The newest source is never the one evicted to make room.
    if let Some(key) = last_learned {
        assert_eq!(state.fdb.lookup(&key, state.now_ms), Some(ingress));
    }
}

/// Where one frame must go, deciding it alone against `fdb`: nowhere if it is
/// bad; for a unicast destination, to the port the table has it on (nowhere if
/// that is the ingress port), else to every other port.
fn expected_egress(
    fdb: &mut Fdb,
    now_ms: u64,
    ports: &Ports,
    frame: &Option<Vec<u8>>,
) -> Vec<PortId> {
    let (ingress, peers) = (ports.ingress, ports.ids);
    let mut one = Decider::default();
    let counts = one.decide(fdb, now_ms, ports, std::iter::once(frame.as_deref()));
    let sent: Vec<PortId> = one
        .groups()
        .flatten()
        .map(|&(j, _)| peers[j as usize])
        .collect();
    let Some(bytes) = frame.as_deref() else {
        return sent;
    };
    let forwarded = counts.port.rx_packets == 1 && counts.port.rx_drops == 0;
    if !forwarded || counts.port.rx_errors > 0 {
        assert!(sent.is_empty(), "a dropped frame was sent");
        return sent;
    }
    let vid = one.vlan(0).tci & vlan::VID_MASK;
    let flood: Vec<PortId> = peers
        .iter()
        .zip(ports.egress)
        .filter(|(p, e)| **p != ingress && e.vlan.carries(vid))
        .map(|(p, _)| *p)
        .collect();
    let body = &bytes[vnet::HEADER_LEN..];
    let eth = EthernetFrame::new_unchecked(body);
    let snooped = ports.mdb.is_some()
        && mcast::is_ip_multicast(eth.dst_addr())
        && !matches!(mcast::classify(body), Mcast::Flood);
    let want = if eth.dst_addr().is_multicast() && snooped {
        // Some of the VLAN's other ports, whichever the table says.
        assert!(
            sent.iter().all(|p| flood.contains(p)),
            "{sent:?} outside {flood:?}"
        );
        sent.clone()
    } else if eth.dst_addr().is_multicast() {
        flood
    } else {
        let key = FdbKey {
            vlan: vid,
            mac: eth.dst_addr(),
        };
        match fdb.lookup(&key, now_ms) {
            Some(port) if port == ingress => Vec::new(),
            Some(port) => match peers.iter().position(|&p| p == port) {
                Some(j) if ports.egress[j].vlan.carries(vid) => vec![port],
                Some(_) => flood,
                None => flood,
            },
            _ => flood,
        }
    };
    assert_eq!(sent, want, "one frame alone went to {sent:?}, not {want:?}");
    // By id, as the batch's are compared: a flood's order is the send order.
    let mut want = want;
    want.sort_unstable();
    want
}

/// What the receive path hands the decision: a tag goes back into the frame when
/// there is room for it, as `sys::mmsg` does.
fn receive(rx: Rx) -> Option<Vec<u8>> {
    match rx {
        Rx::Whole(bytes) => Some(bytes),
        Rx::Truncated => None,
        Rx::Tagged { q_in_q, tci, bytes } => {
            let tpid = if q_in_q {
                vlan::TPID_8021AD
            } else {
                vlan::TPID_8021Q
            };
            let mut buf = vec![0; vlan::TAG_LEN];
            buf.extend_from_slice(&bytes);
            match vlan::insert_tag(&mut buf, tpid, tci) {
                Ok(()) => {
                    assert_eq!(buf.len(), bytes.len() + vlan::TAG_LEN);
                    let (before, after) = (&bytes[vnet::HEADER_LEN..], &buf[vnet::HEADER_LEN..]);
                    assert_eq!(after[..12], before[..12], "MAC addresses kept");
                    assert_eq!(
                        after[12 + vlan::TAG_LEN..],
                        before[12..],
                        "rest shifted by 4"
                    );
                    let old = VnetHeader::new_unchecked(&bytes[..vnet::HEADER_LEN]);
                    let new = VnetHeader::new_unchecked(&buf[..vnet::HEADER_LEN]);
                    assert_eq!(
                        (
                            old.flags(),
                            old.gso_type(),
                            old.gso_size(),
                            old.csum_offset()
                        ),
                        (
                            new.flags(),
                            new.gso_type(),
                            new.gso_size(),
                            new.csum_offset()
                        )
                    );
                    assert_eq!(vlan::vlan_id(&buf[vnet::HEADER_LEN..]), tci & 0x0fff);
                    Some(buf)
                }
                Err(_) => {
                    assert!(bytes.len() < vnet::HEADER_LEN + ethernet::HEADER_LEN);
                    Some(bytes)
                }
            }
        }
    }
}

/// One copy of `bytes` leaving through a port with `egress`, in VLAN/priority
/// `tci`: the port carries the VLAN, the copy has exactly the tag the port's
/// mode says, the MACs and everything after the tag as received, and the
/// virtio-net header's offsets moved by the tag's change.
fn check_egress(egress: &Egress, frame: FrameVlan, bytes: &[u8]) {
    let vid = frame.tci & vlan::VID_MASK;
    assert!(
        egress.vlan.carries(vid),
        "a frame of VLAN {vid} went to a port without it"
    );
    let out = egress::stage(egress, frame, bytes).expect("a port carrying the VLAN sends it");
    let Some(out) = out.to_vec() else {
        // Refused (counted as a send error) only for an offset that would point
        // into the Ethernet header, or a tag with nothing after it.
        let hdr = VnetHeader::new_unchecked(&bytes[..vnet::HEADER_LEN]);
        let bogus_offset =
            hdr.flags() & vnet::FLAG_NEEDS_CSUM != 0 && usize::from(hdr.csum_start()) < 18;
        let bare_tag = bytes.len() < vnet::HEADER_LEN + 18;
        assert!(
            bogus_offset || bare_tag,
            "a good frame could not be retagged"
        );
        return;
    };
    let (old, new) = (&bytes[vnet::HEADER_LEN..], &out[vnet::HEADER_LEN..]);
    assert_eq!(new[..12], old[..12], "MAC addresses kept");
    let had = vlan::tag_of(old);
    let has = vlan::tag_of(new);
    let after = |f: &[u8], tagged: bool| f[12 + if tagged { vlan::TAG_LEN } else { 0 }..].to_vec();
    assert_eq!(
        after(new, has.is_some()),
        after(old, had.is_some()),
        "payload kept"
    );
    if egress.vlan.tags(vid) {
        let (_, t) = has.expect("a tag where the mode says one");
        assert_eq!(t & vlan::VID_MASK, vid);
    } else {
        assert!(
            has.is_none(),
            "a tag on a port that sends VLAN {vid} untagged"
        );
    }
    let (h0, h1) = (
        VnetHeader::new_unchecked(&bytes[..vnet::HEADER_LEN]),
        VnetHeader::new_unchecked(&out[..vnet::HEADER_LEN]),
    );
    assert_eq!(
        (h0.flags(), h0.gso_type(), h0.gso_size(), h0.csum_offset()),
        (h1.flags(), h1.gso_type(), h1.gso_size(), h1.csum_offset())
    );
    let delta = has.is_some() as i32 - had.is_some() as i32;
    if h0.flags() & vnet::FLAG_NEEDS_CSUM != 0 && h0.csum_start() < u16::MAX - 4 {
        assert_eq!(
            i32::from(h1.csum_start()),
            i32::from(h0.csum_start()) + 4 * delta
        );
    }
}
