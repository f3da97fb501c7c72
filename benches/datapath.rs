//! Per-frame costs of the forwarding decision, in ns per frame.
//! Run: `cargo bench --bench datapath`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::vlan::VlanPacket;
use pnet_packet::Packet;
use std::hint::black_box;
use switchd::datapath::decide::Decider;
use switchd::datapath::decide::{index_by_id, Ports};
use switchd::datapath::egress::{self, Egress};
use switchd::datapath::vlan::PortVlan;
use switchd::datapath::{Fdb, FdbKey};
use switchd::sys::TxFrame;
use switchd::wire::{vlan, EthernetFrame, MacAddr};
use switchd_proto::VlanConfig;

/// Frames per batch, as the datapath receives them.
const BATCH: usize = 32;

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

/// A 60-byte IPv4 frame behind a 10-byte virtio-net header, as the sockets
/// deliver it.
fn received(dst: [u8; 6], src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(10 + 60, 0);
    f
}

/// What the datapath does per frame: learn the source, look up the destination.
/// The clock advances once per 32 frames, as the datapath reads it once per batch
/// (in real traffic it is a millisecond clock, so it advances far less often).
fn learn_and_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("fdb_learn_lookup");
    group.throughput(Throughput::Elements(1));
    for entries in [16u32, 1024, 8192] {
        let keys: Vec<FdbKey> = (0..entries)
            .map(|n| FdbKey {
                vlan: 0,
                mac: mac(n),
            })
            .collect();
        let mut fdb = Fdb::new(entries, 300);
        for (n, key) in keys.iter().enumerate() {
            fdb.learn(*key, n as u32 % 64, 0);
        }
        // Sizes are powers of two: index with a mask, not a division.
        let mask = entries as usize - 1;
        group.bench_with_input(BenchmarkId::from_parameter(entries), &entries, |b, _| {
            let mut n = 0usize;
            let mut now = 0u64;
            b.iter(|| {
                n = (n + 1) & mask;
                now += u64::from(n.is_multiple_of(32));
                fdb.learn(keys[n], n as u32 % 64, now);
                black_box(fdb.lookup(&keys[mask - n], now))
            })
        });
    }
    group.finish();
}

/// The whole per-batch decision (parse, learn, look up, group by egress) for
/// 32-frame batches of known unicast between 8 ports, in ns per frame.
fn forward_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_decision");
    group.throughput(Throughput::Elements(BATCH as u64));
    let peers: Vec<u32> = (0..8).collect();
    for entries in [16u32, 1024, 8192] {
        let mut fdb = Fdb::new(entries, 300);
        for n in 0..entries {
            fdb.learn(
                FdbKey {
                    vlan: 0,
                    mac: mac(n),
                },
                n % 8,
                0,
            );
        }
        // Frames from port 0's MACs to MACs spread over all ports.
        let frames: Vec<Vec<u8>> = (0..4096u32)
            .map(|n| received(mac((n * 7 + 3) % entries).0, mac(n * 8 % entries)))
            .collect();
        let mut decider = Decider::default();
        let egress = vec![Egress::default(); peers.len()];
        let by_id = index_by_id(&peers);
        let ports = Ports {
            ingress: 0,
            ids: &peers,
            by_id: &by_id,
            egress: &egress,
            group_fwd_mask: 0,
            mdb: None,
        };
        group.bench_with_input(BenchmarkId::from_parameter(entries), &entries, |b, _| {
            let mut start = 0;
            b.iter(|| {
                start = (start + BATCH) % (frames.len() - BATCH + 1);
                let batch = &frames[start..start + BATCH];
                black_box(decider.decide(&mut fdb, 1, &ports, batch.iter().map(|f| Some(&f[..]))))
            })
        });
    }
    group.finish();
}

/// The egress stage over what `decide` sent where: 32-frame batches flooded to
/// 8 ports (7 copies each), walking the groups without the stage, with it on
/// ports without VLAN settings, and with it pushing a tag on every copy (an
/// access port of VLAN 10 flooding to 7 trunks), in ns per frame received.
fn egress_stage(c: &mut Criterion) {
    let peers: Vec<u32> = (0..8).collect();
    let mut group = c.benchmark_group("egress_stage");
    group.throughput(Throughput::Elements(BATCH as u64));
    let frames: Vec<Vec<u8>> = (0..BATCH as u32)
        .map(|n| received([0xff; 6], mac(n)))
        .collect();
    let access = Egress {
        vlan: PortVlan::new(&VlanConfig {
            tag: Some(10),
            ..VlanConfig::default()
        }),
    };
    for (name, staged, first) in [
        ("decide", false, Egress::default()),
        ("decide+stage", true, Egress::default()),
        ("decide+stage push-tag", true, access),
    ] {
        let mut fdb = Fdb::new(8192, 300);
        let mut decider = Decider::default();
        let mut egress = vec![Egress::default(); peers.len()];
        egress[0] = first;
        let by_id = index_by_id(&peers);
        let ports = Ports {
            ingress: 0,
            ids: &peers,
            by_id: &by_id,
            egress: &egress,
            group_fwd_mask: 0,
            mdb: None,
        };
        let mut head = [0; vlan::RETAG_HEAD_LEN];
        group.bench_function(name, |b| {
            b.iter(|| {
                decider.decide(&mut fdb, 1, &ports, frames.iter().map(|f| Some(&f[..])));
                let mut bytes = 0;
                for out in decider.groups() {
                    for &(j, i) in out {
                        let frame = &frames[i as usize][..];
                        bytes += if staged {
                            match egress::stage(&egress[j as usize], decider.vlan(i), frame) {
                                Some(TxFrame::Whole(b)) => b.len(),
                                // The head the send writes into its own buffer.
                                Some(TxFrame::Retag { bytes, tag }) => {
                                    vlan::retag(bytes, tag, &mut head)
                                        .map_or(0, |(len, tail)| len + bytes.len() - tail)
                                }
                                None => 0,
                            }
                        } else {
                            frame.len()
                        };
                    }
                }
                black_box(bytes)
            })
        });
    }
    group.finish();
}

/// What the datapath reads of every frame (destination, source, ethertype, and
/// the VLAN id of a tagged one), from a checked view: our `wire` views against
/// pnet_packet's, which the design card named. Per frame, untagged and 802.1Q.
fn parse(c: &mut Criterion) {
    let mut untagged = [0u8; 64];
    untagged[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    untagged[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    untagged[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut tagged = [0u8; 68];
    tagged[..12].copy_from_slice(&untagged[..12]);
    tagged[12..18].copy_from_slice(&[0x81, 0x00, 0x20, 0x0a, 0x08, 0x00]);
    let mut group = c.benchmark_group("ethernet_parse");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in [("untagged", &untagged[..]), ("802.1q", &tagged[..])] {
        group.bench_function(BenchmarkId::new("wire", name), |b| {
            b.iter(|| {
                let bytes = black_box(frame);
                let eth = EthernetFrame::new_checked(bytes).unwrap();
                let vid = vlan::vlan_id(bytes);
                black_box((eth.dst_addr(), eth.src_addr(), eth.ethertype(), vid))
            })
        });
        group.bench_function(BenchmarkId::new("pnet_packet", name), |b| {
            b.iter(|| {
                let eth = EthernetPacket::new(black_box(frame)).unwrap();
                let ethertype = eth.get_ethertype();
                let vid = match ethertype {
                    EtherTypes::Vlan | EtherTypes::QinQ => {
                        VlanPacket::new(eth.payload()).map_or(0, |v| v.get_vlan_identifier())
                    }
                    _ => 0,
                };
                black_box((eth.get_destination(), eth.get_source(), ethertype, vid))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    learn_and_lookup,
    forward_decision,
    egress_stage,
    parse
);
criterion_main!(benches);
