//! Whatever arrives on a port: arbitrary bytes, stripped VLAN tags put back in,
//! frames not received whole, through the forwarding decision and the MAC table,
//! interleaved with what the control plane does to the table (aging, port removal,
//! flush, new limits). Checks that every frame goes nowhere, to one other port, or
//! to all other ports; never back to its ingress; that bad frames go nowhere; and
//! that the table keeps its bound and its aging promise.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use switchd::datapath::decide::Decider;
use switchd::datapath::{Fdb, FdbKey, PortId};
use switchd::wire::{ethernet, vlan, vnet, EthernetFrame, VnetHeader};

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
    now_ms: u64,
    aging_ms: u64,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut state = State {
        fdb: Fdb::new(16, 300),
        decider: Decider::default(),
        present: [true; PORTS as usize],
        now_ms: 0,
        aging_ms: 300_000,
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
            }
            Op::RemovePort(port) => {
                let port = port % PORTS;
                state.present[usize::from(port)] = false;
                state.fdb.remove_port(PortId::from(port));
                assert!(state.fdb.rows(0).all(|r| r.port != PortId::from(port)));
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
        }
        assert!(state.fdb.len() <= state.fdb.max_entries());
        assert_eq!(state.fdb.rows(state.now_ms).count(), state.fdb.len());
    }
});

fn batch(state: &mut State, ingress: PortId, rx: Vec<Rx>) {
    // A port that receives is attached (again, if it was removed).
    state.present[ingress as usize] = true;
    let peers: Vec<PortId> = (0..PORTS)
        .filter(|&p| state.present[usize::from(p)])
        .map(PortId::from)
        .collect();
    let frames: Vec<Option<Vec<u8>>> = rx.into_iter().map(receive).collect();
    // The same frames decided one at a time on a copy of the table: the batch
    // must send each frame exactly where that says.
    let mut reference = state.fdb.clone();
    let expected: Vec<Vec<PortId>> = frames
        .iter()
        .map(|frame| expected_egress(&mut reference, state.now_ms, ingress, &peers, frame))
        .collect();
    let counts = state.decider.decide(
        &mut state.fdb,
        state.now_ms,
        ingress,
        &peers,
        frames.iter().map(Option::as_deref),
    );
    let n = frames.len();
    assert_eq!(
        counts.port.rx_packets + counts.port.rx_runts + counts.port.rx_truncated,
        n as u64,
        "every frame is counted once"
    );
    assert!(counts.port.rx_drops <= counts.port.rx_packets);
    assert_eq!(
        counts.port.rx_drops,
        counts.port.rx_group_src + counts.port.rx_bad_vnet
    );

    // Where each frame went, checking the grouping on the way.
    let mut egress: Vec<Vec<PortId>> = vec![Vec::new(); n];
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
            egress[i as usize].push(port);
        }
    }

    let others = peers.len() - 1;
    let mut last_learned = None;
    for (i, frame) in frames.iter().enumerate() {
        let out = &egress[i];
        let Some(bytes) = frame
            .as_deref()
            .filter(|b| b.len() >= vnet::HEADER_LEN + 14)
        else {
            assert!(out.is_empty(), "runt or truncated frame {i} was sent");
            continue;
        };
        let (header, body) = bytes.split_at(vnet::HEADER_LEN);
        let eth = EthernetFrame::new_unchecked(body);
        let valid = !eth.src_addr().is_multicast()
            && VnetHeader::new_unchecked(header).is_valid_for(body.len());
        if !valid {
            assert!(
                out.is_empty(),
                "frame {i} with a group source or bad header was sent"
            );
            continue;
        }
        last_learned = Some(FdbKey {
            vlan: vlan::vlan_id(body),
            mac: eth.src_addr(),
        });
        if eth.dst_addr().is_multicast() {
            assert_eq!(out.len(), others, "group destination {i} is flooded");
        } else {
            assert!(
                out.len() <= 1 || out.len() == others,
                "frame {i} went to {out:?}: neither one port nor a flood"
            );
        }
    }
    for (i, (out, want)) in egress.iter().zip(&expected).enumerate() {
        let mut out = out.clone();
        out.sort_unstable();
        assert_eq!(&out, want, "frame {i} went to {out:?}, not to {want:?}");
    }
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
    ingress: PortId,
    peers: &[PortId],
    frame: &Option<Vec<u8>>,
) -> Vec<PortId> {
    let mut one = Decider::default();
    let counts = one.decide(
        fdb,
        now_ms,
        ingress,
        peers,
        std::iter::once(frame.as_deref()),
    );
    let sent: Vec<PortId> = one
        .groups()
        .flatten()
        .map(|&(j, _)| peers[j as usize])
        .collect();
    let flood: Vec<PortId> = peers.iter().copied().filter(|&p| p != ingress).collect();
    let Some(bytes) = frame.as_deref() else {
        return sent;
    };
    let forwarded = counts.port.rx_packets == 1 && counts.port.rx_drops == 0;
    if !forwarded || counts.port.rx_errors > 0 {
        assert!(sent.is_empty(), "a dropped frame was sent");
        return sent;
    }
    let body = &bytes[vnet::HEADER_LEN..];
    let eth = EthernetFrame::new_unchecked(body);
    let want = if eth.dst_addr().is_multicast() {
        flood
    } else {
        let key = FdbKey {
            vlan: vlan::vlan_id(body),
            mac: eth.dst_addr(),
        };
        match fdb.lookup(&key, now_ms) {
            Some(port) if port == ingress => Vec::new(),
            Some(port) if peers.contains(&port) => vec![port],
            _ => flood,
        }
    };
    assert_eq!(sent, want, "one frame alone went to {sent:?}, not {want:?}");
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
