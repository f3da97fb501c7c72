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
fn learn_and_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("fdb_learn_lookup");
    group.throughput(Throughput::Elements(1));
    for entries in [16u32, 1024, 8192] {
        let mut fdb = Fdb::new(entries, 300);
        for n in 0..entries {
            fdb.learn(
                FdbKey {
                    vlan: 0,
                    mac: mac(n),
                },
                n % 64,
                0,
            );
        }
        group.bench_with_input(
            BenchmarkId::from_parameter(entries),
            &entries,
            |b, &entries| {
                let mut n = 0u32;
                let mut now = 0u64;
                b.iter(|| {
                    n = (n + 1) % entries;
                    now += 1;
                    let src = FdbKey {
                        vlan: 0,
                        mac: mac(n),
                    };
                    let dst = FdbKey {
                        vlan: 0,
                        mac: mac(entries - 1 - n),
                    };
                    fdb.learn(src, n % 64, now);
                    black_box(fdb.lookup(&dst, now))
                })
            },
        );
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
