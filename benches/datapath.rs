//! Per-frame costs of the forwarding decision, in ns per frame.
//! Run: `cargo bench --bench datapath`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use switchd::datapath::decide::Decider;
use switchd::datapath::egress::{self, Egress};
use switchd::datapath::{Fdb, FdbKey};
use switchd::wire::{EthernetFrame, MacAddr};

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
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
    const BATCH: usize = 32;
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
        // Frames from port 0's MACs to MACs spread over all ports; 10-byte
        // virtio-net header in front, as the sockets deliver them.
        let frames: Vec<Vec<u8>> = (0..4096u32)
            .map(|n| {
                let mut f = vec![0u8; 10];
                f.extend_from_slice(&mac((n * 7 + 3) % entries).0);
                f.extend_from_slice(&mac(n * 8 % entries).0);
                f.extend_from_slice(&[0x08, 0x00]);
                f.resize(10 + 60, 0);
                f
            })
            .collect();
        let mut decider = Decider::default();
        group.bench_with_input(BenchmarkId::from_parameter(entries), &entries, |b, _| {
            let mut start = 0;
            b.iter(|| {
                start = (start + BATCH) % (frames.len() - BATCH + 1);
                let batch = &frames[start..start + BATCH];
                black_box(decider.decide(
                    &mut fdb,
                    1,
                    0,
                    &peers,
                    batch.iter().map(|f| Some(&f[..])),
                ))
            })
        });
    }
    group.finish();
}

/// The egress stage over what `decide` sent where: 32-frame batches flooded to
/// 8 ports (7 copies each), walking the groups with and without the stage, in ns
/// per frame received.
fn egress_stage(c: &mut Criterion) {
    const BATCH: usize = 32;
    let mut group = c.benchmark_group("egress_stage");
    group.throughput(Throughput::Elements(BATCH as u64));
    let peers: Vec<u32> = (0..8).collect();
    let egress = Egress::default();
    let frames: Vec<Vec<u8>> = (0..BATCH as u32)
        .map(|n| {
            let mut f = vec![0u8; 10];
            f.extend_from_slice(&[0xff; 6]);
            f.extend_from_slice(&mac(n).0);
            f.extend_from_slice(&[0x08, 0x00]);
            f.resize(10 + 60, 0);
            f
        })
        .collect();
    for staged in [false, true] {
        let mut fdb = Fdb::new(8192, 300);
        let mut decider = Decider::default();
        let name = if staged { "decide+stage" } else { "decide" };
        group.bench_function(name, |b| {
            b.iter(|| {
                decider.decide(&mut fdb, 1, 0, &peers, frames.iter().map(|f| Some(&f[..])));
                let mut bytes = 0;
                for out in decider.groups() {
                    for &(_, i) in out {
                        let frame = &frames[i as usize][..];
                        bytes += if staged {
                            egress::stage(&egress, frame).map_or(0, <[u8]>::len)
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

fn parse(c: &mut Criterion) {
    let mut frame = [0u8; 64];
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut group = c.benchmark_group("ethernet_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("checked", |b| {
        b.iter(|| {
            let eth = EthernetFrame::new_checked(black_box(&frame[..])).unwrap();
            black_box((eth.src_addr(), eth.dst_addr(), eth.ethertype()))
        })
    });
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
