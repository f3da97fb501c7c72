//! Per-frame costs of the forwarding decision, in ns per frame.
//! Run: `cargo bench --bench datapath`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
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

criterion_group!(benches, learn_and_lookup, parse);
criterion_main!(benches);
