//! Frames between namespaces: learning, flooding, isolation, TCP with offloads.

use crate::util::{
    exclusive_machine, frame, rss_kib, shared_machine, unique_name, wait_until, Daemon, Host,
};
use serde_json::Value;
use std::time::Duration;

fn hosts(subnet: &str, n: usize) -> Vec<Host> {
    (1..=n)
        .map(|i| Host::new(&format!("{subnet}.{i}/24")))
        .collect()
}

fn attach(daemon: &Daemon, bridge: &str, hosts: &[Host]) {
    for h in hosts {
        daemon.ctl_ok(&["add-port", bridge, &h.port]);
    }
}

on_both_datapaths!(
    eight_namespaces_every_pair_pings,
    learned_unicast_reaches_only_its_port,
    short_aging_empties_the_table,
    del_port_stops_forwarding,
    bridges_are_isolated,
    counters_match_traffic,
    mac_flood_is_bounded_and_fair,
    static_entries_are_used_never_learned_over_and_kept,
    a_ports_queueing_discipline_shapes_what_it_forwards,
);

/// Whether switchd runs with `flags` forward known unicast in the kernel.
pub(crate) fn fast_path(flags: &[&str]) -> bool {
    !flags.windows(2).any(|w| w == ["--offload", "none"])
}

/// A fresh switchd on the datapath `flags` choose, logging at debug.
pub(crate) fn daemon(flags: &[&str]) -> Daemon {
    let mut args = vec!["--log-level", "debug"];
    args.extend_from_slice(flags);
    Daemon::start_with(&args)
}

/// `n` hosts on `subnet`.1.. attached to bridge br0 of a fresh switchd.
fn switched(flags: &[&str], subnet: &str, n: usize) -> (Vec<Host>, Daemon) {
    let hosts = hosts(subnet, n);
    let d = daemon(flags);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    attach(&d, "br0", &hosts);
    (hosts, d)
}

fn counter(daemon: &Daemon, bridge: &str, port: &str, name: &str) -> u64 {
    daemon.port_counters(bridge, port)[name].as_u64().unwrap()
}

/// The Open vSwitch tutorial: two namespaces, one bridge, ping both ways.
#[test]
fn tutorial_flow_two_namespaces_ping() {
    let _machine = shared_machine();
    let ns1 = Host::new("192.168.0.1/24");
    let ns2 = Host::new("192.168.0.2/24");
    let d = Daemon::start();
    // With its internal port, as a user gets it; named uniquely since that port
    // is an interface on the host.
    let br = unique_name("tut");
    d.ctl_ok(&["add-br", &br]);
    d.ctl_ok(&["add-port", &br, &ns1.port]);
    d.ctl_ok(&["add-port", &br, &ns2.port]);

    let show = d.ctl_ok(&["show"]);
    let expected = format!("Bridge {br}\n    mac-aging-time: 300\n    mac-table-size: 8192\n");
    assert!(show.starts_with(&expected), "{show}");
    assert!(
        show.contains(&format!(
            "    Port {br}\n        type: internal\n        state: up\n"
        )),
        "{show}"
    );
    for port in [&ns1.port, &ns2.port] {
        assert!(
            show.contains(&format!("    Port {port}\n        state: up\n")),
            "{show}"
        );
    }

    assert!(ns1.can_ping("192.168.0.2"), "ns1 -> ns2");
    assert!(ns2.can_ping("192.168.0.1"), "ns2 -> ns1");
}

fn eight_namespaces_every_pair_pings(flags: &[&str]) {
    let _machine = shared_machine();
    let (hosts, d) = switched(flags, "10.8.0", 8);
    for a in &hosts {
        for b in &hosts {
            if a.ip != b.ip {
                assert!(a.can_ping(&b.ip), "{} -> {}", a.ip, b.ip);
            }
        }
    }
    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    assert_eq!(fdb.as_array().unwrap().len(), 8, "{fdb}");
}

/// iperf3 with the namespaces' default offloads (partial checksums, 64 KB GSO
/// frames): the case that stalls a userspace switch forwarding raw bytes. On
/// both paths, each carrying the stream's data: the kernel fast path (the
/// default) and the userspace datapath passing GSO frames and partial checksums
/// through with their virtio-net header (`--offload none`). Speed is the benches'
/// business; the floor here is one only a stall misses.
#[test]
fn tcp_with_default_offloads_is_not_stalled_on_either_path() {
    let _machine = exclusive_machine();
    let hosts = hosts("10.9.0", 2);
    for h in &hosts {
        let features = h.ns.exec_ok(&["ethtool", "-k", "eth0"]);
        assert!(
            features.contains("tcp-segmentation-offload: on")
                && features.contains("tx-checksumming: on"),
            "offloads are not at their defaults:\n{features}"
        );
    }
    for flags in [&[][..], &["--offload", "none"][..]] {
        let d = daemon(flags);
        d.ctl_ok(&["add-br", "--no-internal", "br0"]);
        attach(&d, "br0", &hosts);
        let (client, server) = (&hosts[0], &hosts[1]);
        assert!(client.can_ping(&server.ip));

        let _server = server.ns.spawn(&["iperf3", "-s", "-1", "-p", "5201"]);
        assert!(wait_until(Duration::from_secs(5), || {
            server.ns.exec_ok(&["ss", "-ltn"]).contains(":5201")
        }));
        let frames = |name| counter(&d, "br0", &client.port, name);
        let (total0, kernel0) = (frames("rx_packets"), frames("rx_kernel"));
        let out = client
            .ns
            .exec_ok(&["iperf3", "-c", &server.ip, "-p", "5201", "-t", "3", "-J"]);
        let report: Value = serde_json::from_str(&out).expect("iperf3 -J prints JSON");
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("iperf3 reports received bits/s");
        let total = frames("rx_packets") - total0;
        let kernel = frames("rx_kernel") - kernel0;
        eprintln!(
            "TCP through switchd {flags:?}: {:.2} Gbit/s, {kernel} of {total} frames in the kernel",
            bps / 1e9
        );
        // Bad checksums or EMSGSIZE on GSO frames leave a few kbit/s.
        assert!(
            bps > 2e8,
            "TCP moved only {:.3} Gbit/s with {flags:?}; switchd log:\n{}",
            bps / 1e9,
            d.log()
        );
        assert!(total > 1000, "only {total} frames from the client");
        if fast_path(flags) {
            // All but the first frames, before both ends were learned, and
            // whatever the control connection sent first.
            assert!(
                kernel * 10 >= total * 9,
                "{kernel} of {total} frames in the kernel"
            );
        } else {
            assert_eq!(
                kernel, 0,
                "{kernel} frames in the kernel with --offload none"
            );
        }
    }
}

/// A port that is receiving leaves epoll while its thread spins and is polled
/// through its ring instead (worker::poll_hot). Topology changes under load and
/// the end of the load must hand it back to epoll: a port left out goes deaf, a
/// thread that never stops polling burns a core.
#[test]
fn ports_polled_under_load_survive_changes_and_sleep_after() {
    let _machine = exclusive_machine();
    let hosts = hosts("10.31.0", 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    // The kernel fast path would carry the TCP stream past the datapath.
    let d = Daemon::start_with(&["--log-level", "debug", "--offload", "none"]);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    attach(&d, "br0", &hosts[..2]);
    assert!(a.can_ping(&b.ip));

    let _server = b.ns.spawn(&["iperf3", "-s", "-1", "-p", "5201"]);
    assert!(wait_until(Duration::from_secs(5), || {
        b.ns.exec_ok(&["ss", "-ltn"]).contains(":5201")
    }));
    // Only a port with a ring is polled. A port gets one when a receive fills
    // a batch: a burst of raw frames does that for certain (a TCP stream did
    // only as often as switchd fell behind it).
    let burst = frame(
        [0x02, 0, 0, 0x31, 0, 0xfe],
        [0x02, 0, 0, 0x31, 0, 1],
        None,
        b"warm",
    );
    a.ns.packet_socket("eth0")
        .send_all((0..256).map(|_| burst.clone()));
    let mut client =
        a.ns.spawn(&["iperf3", "-c", &b.ip, "-p", "5201", "-t", "4"]);
    let has_ring = |port: &str| {
        d.log().lines().any(|l| {
            l.contains("busy port moved to a receive ring") && l.ends_with(&format!(" port={port}"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(3), || has_ring(&a.port)),
        "a's port never got a ring; log:\n{}",
        d.log()
    );
    // Each change hands the threads a new view while a's port is being polled.
    for _ in 0..5 {
        d.ctl_ok(&["add-port", "br0", &c.port]);
        d.ctl_ok(&["del-port", "br0", &c.port]);
    }
    d.ctl_ok(&["add-port", "br0", &c.port]);
    let finished = client.0.wait().expect("iperf3 client");
    assert!(finished.success(), "TCP failed during the changes");

    // Once the load is gone the ports are asleep in epoll again, and wake for a
    // lone frame.
    std::thread::sleep(Duration::from_millis(500));
    for (from, to) in [(a, b), (a, c), (b, c), (b, a)] {
        assert!(from.can_ping(&to.ip), "{} cannot reach {}", from.ip, to.ip);
    }
    let before = crate::util::datapath_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = crate::util::datapath_ticks(d.pid()) - before;
    assert!(used <= 3, "the datapath used {used} ticks in 2 s of quiet");
}

/// Datapath CPU ticks (100 a second) while `from` pings `to` 1500 times 1 ms
/// apart, and the seconds that took.
fn ticks_during_pings(d: &Daemon, from: &Host, to: &Host) -> (u64, f64) {
    let start = std::time::Instant::now();
    let before = crate::util::datapath_ticks(d.pid());
    from.ns
        .exec_ok(&["ping", "-n", "-q", "-c", "1500", "-i", "0.001", &to.ip]);
    let used = crate::util::datapath_ticks(d.pid()) - before;
    (used, start.elapsed().as_secs_f64())
}

/// Pings 1 ms apart fall within the default 1 ms poll ceiling, so the window
/// grows to cover them; the budget (polling at most 3x the forwarding time) must
/// stop that from turning a trickle of frames into a busy core. The same pings
/// with the budget lifted show the test can tell.
#[test]
fn a_trickle_of_frames_does_not_keep_a_core_busy() {
    let _machine = exclusive_machine();
    let hosts = hosts("10.32.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut used = Vec::new();
    // Without the kernel fast path, which would forward the pings itself.
    for flags in [
        &["--offload", "none"][..],
        &["--offload", "none", "--spin-budget", "1000000"][..],
    ] {
        let d = Daemon::start_with(flags);
        d.ctl_ok(&["add-br", "--no-internal", "br0"]);
        attach(&d, "br0", &hosts);
        assert!(a.can_ping(&b.ip));
        let (ticks, secs) = ticks_during_pings(&d, a, b);
        used.push(ticks as f64 / secs);
    }
    let (budgeted, unbudgeted) = (used[0], used[1]);
    assert!(
        budgeted < 50.0,
        "the datapath used {budgeted:.0}% of a core for 1000 pings a second"
    );
    assert!(
        unbudgeted > 70.0,
        "without a budget the thread should poll through every gap, used {unbudgeted:.0}%"
    );
}

fn learned_unicast_reaches_only_its_port(flags: &[&str]) {
    let _machine = shared_machine();
    let (hosts, d) = switched(flags, "10.10.0", 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    assert!(a.can_ping(&b.ip));

    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    for h in [a, b] {
        let mac = h.mac();
        let row = fdb
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["mac"] == mac.as_str())
            .unwrap_or_else(|| panic!("{mac} not learned: {fdb}"));
        assert_eq!(row["port"], h.port.as_str(), "{fdb}");
        assert_eq!(row["vlan"], 0);
    }
    let text = d.ctl_ok(&["fdb-show", "br0"]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with("port  VLAN  MAC                Age"),
        "{text}"
    );
    assert!(text.contains(&a.mac()) && text.contains(&a.port), "{text}");

    let c_before = counter(&d, "br0", &c.port, "tx_packets");
    let b_before = counter(&d, "br0", &b.port, "tx_packets");
    a.ns.exec_ok(&["ping", "-n", "-q", "-c", "200", "-i", "0.002", &b.ip]);
    let b_got = || counter(&d, "br0", &b.port, "tx_packets") - b_before;
    // Counted once the send returns, maybe after ping had its reply.
    wait_until(Duration::from_secs(2), || b_got() >= 200);
    let b_got = b_got();
    let c_got = counter(&d, "br0", &c.port, "tx_packets") - c_before;
    assert!(b_got >= 200, "b received {b_got} frames");
    // ARP refreshes are broadcast and may reach c; 400 unicast frames must not.
    assert!(c_got <= 4, "c received {c_got} frames of a<->b unicast");
}

fn short_aging_empties_the_table(flags: &[&str]) {
    let _machine = shared_machine();
    let hosts = hosts("10.11.0", 2);
    let d = daemon(flags);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["set-br", "br0", "mac-aging-time=2"]);
    attach(&d, "br0", &hosts);
    assert!(hosts[0].can_ping(&hosts[1].ip));
    assert_eq!(
        d.ctl_json(&["fdb-show", "br0"]).as_array().unwrap().len(),
        2
    );
    let emptied = wait_until(Duration::from_secs(10), || {
        d.ctl_json(&["fdb-show", "br0"])
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert!(emptied, "entries did not age out");
    let stats = d.ctl_json(&["fdb-stats", "br0"]);
    assert_eq!(stats["current"], 0, "{stats}");
    // A neighbour probe may re-learn both MACs just before the check.
    assert!(stats["learned"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["aged"].as_u64().unwrap() >= 2, "{stats}");
    let text = d.ctl_ok(&["fdb-stats", "br0"]);
    assert!(
        text.contains("Current/maximum MAC entries in the table: 0/8192"),
        "{text}"
    );
}

fn del_port_stops_forwarding(flags: &[&str]) {
    let _machine = shared_machine();
    let (hosts, d) = switched(flags, "10.12.0", 2);
    assert!(hosts[0].can_ping(&hosts[1].ip));

    d.ctl_ok(&["del-port", "br0", &hosts[1].port]);
    assert_eq!(
        d.ctl_ok(&["list-ports", "br0"]),
        format!("{}\n", hosts[0].port)
    );
    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .all(|r| r["port"] != hosts[1].port.as_str() && r["port"] != "?"),
        "entries of a deleted port remain: {fdb}"
    );
    for _ in 0..3 {
        assert!(
            !hosts[0].ping_once(&hosts[1].ip),
            "forwarded after del-port"
        );
    }
    // The interface is free again: it can be re-added and forwards.
    d.ctl_ok(&["add-port", "br0", &hosts[1].port]);
    assert!(hosts[0].can_ping(&hosts[1].ip));
}

fn bridges_are_isolated(flags: &[&str]) {
    let _machine = shared_machine();
    let hosts = hosts("10.13.0", 4);
    let d = daemon(flags);
    d.ctl_ok(&["add-br", "--no-internal", "br-a"]);
    d.ctl_ok(&["add-br", "--no-internal", "br-b"]);
    attach(&d, "br-a", &hosts[..2]);
    attach(&d, "br-b", &hosts[2..]);
    assert!(hosts[0].can_ping(&hosts[1].ip));
    assert!(hosts[2].can_ping(&hosts[3].ip));
    for target in [&hosts[2].ip, &hosts[3].ip] {
        assert!(!hosts[0].ping_once(target), "br-a reached {target} on br-b");
    }
    // hosts[0]'s ARP broadcasts for .3 and .4 must not have reached br-b: neither
    // br-b's table nor the br-b namespaces ever saw hosts[0].
    let mac0 = hosts[0].mac();
    let fdb_b = d.ctl_json(&["fdb-show", "br-b"]);
    assert!(
        fdb_b
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["mac"] != mac0.as_str()),
        "{fdb_b}"
    );
    for h in &hosts[2..] {
        let neigh = h.ns.exec_ok(&["ip", "neigh", "show"]);
        assert!(
            !neigh.contains(&hosts[0].ip),
            "{} learned of hosts[0]: {neigh}",
            h.ip
        );
    }
}

fn counters_match_traffic(flags: &[&str]) {
    let _machine = shared_machine();
    let (hosts, d) = switched(flags, "10.14.0", 2);
    assert!(hosts[0].can_ping(&hosts[1].ip));
    let rx0 = counter(&d, "br0", &hosts[0].port, "rx_packets");
    let tx1 = counter(&d, "br0", &hosts[1].port, "tx_packets");
    hosts[0].ns.exec_ok(&[
        "ping",
        "-n",
        "-q",
        "-c",
        "50",
        "-i",
        "0.002",
        "-s",
        "1000",
        &hosts[1].ip,
    ]);
    let rx = counter(&d, "br0", &hosts[0].port, "rx_packets") - rx0;
    // A port's tx counts are added once its send returns, which may be after
    // the reply reached ping when the two ports have different threads.
    let tx = || counter(&d, "br0", &hosts[1].port, "tx_packets") - tx1;
    wait_until(Duration::from_secs(2), || tx() >= 50);
    let tx = tx();
    assert!((50..=54).contains(&rx), "rx {rx}");
    assert!((50..=54).contains(&tx), "tx {tx}");
    let all = d.ctl_json(&["dump-ports", "br0"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let p = &all[0];
    assert!(p["rx_bytes"].as_u64().unwrap() >= 50 * 1042, "{p}");
    let text = d.ctl_ok(&["dump-ports", "br0"]);
    assert!(text.starts_with("bridge br0: 2 ports\n"), "{text}");
    assert!(
        text.contains(&format!("  port {}: rx pkts=", hosts[0].port)),
        "{text}"
    );
}

fn mac_of(bytes: [u8; 6]) -> String {
    bytes.map(|b| format!("{b:02x}")).join(":")
}

fn fdb_has(d: &Daemon, mac: [u8; 6], vlan: u16, port: &str) -> bool {
    d.ctl_json(&["fdb-show", "br0"])
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["mac"] == mac_of(mac).as_str() && r["vlan"] == vlan && r["port"] == port)
}

/// The kernel strips 802.1Q tags before a packet socket sees a frame; switchd must
/// put them back (byte for byte) and learn per VLAN.
#[test]
fn vlan_tagged_frames_keep_their_tag_and_learn_per_vlan() {
    let _machine = shared_machine();
    let (hosts, d) = switched(&[], "10.15.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut sa = a.ns.packet_socket("eth0");
    let mut sb = b.ns.packet_socket("eth0");
    let (ma, mb) = ([2, 0, 0, 0, 0x15, 1], [2, 0, 0, 0, 0x15, 2]);

    // Unknown destination: flooded to b, tag (priority 5, VLAN 10) intact.
    let tagged = frame(mb, ma, Some(5 << 13 | 10), b"switchd vlan test");
    sa.send(&tagged);
    let got = sb.recv_until(Duration::from_secs(5), |f| f[6..12] == ma);
    assert_eq!(got.last(), Some(&tagged), "tagged frame changed or lost");
    assert!(fdb_has(&d, ma, 10, &a.port));

    // Known destination on VLAN 10: unicast back to a.
    let reply = frame(ma, mb, Some(10), b"reply");
    sb.send(&reply);
    let got = sa.recv_until(Duration::from_secs(5), |f| f[6..12] == mb);
    assert_eq!(got.last(), Some(&reply));
    assert!(fdb_has(&d, mb, 10, &b.port));

    // The same MAC on another VLAN is another entry, not a move.
    sb.send(&frame(mb, ma, Some(20), b"other vlan"));
    assert!(wait_until(Duration::from_secs(5), || fdb_has(
        &d, ma, 20, &b.port
    )));
    assert!(fdb_has(&d, ma, 10, &a.port));
    assert_eq!(d.ctl_json(&["fdb-stats", "br0"])["moved"], 0);

    // An untagged frame from the same MAC is learned on VLAN 0.
    sa.send(&frame(mb, ma, None, b"untagged"));
    assert!(wait_until(Duration::from_secs(5), || fdb_has(
        &d, ma, 0, &a.port
    )));
}

#[test]
fn multicast_source_is_dropped_and_not_learned() {
    let _machine = shared_machine();
    let (hosts, d) = switched(&[], "10.16.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let mut sa = a.ns.packet_socket("eth0");
    let mut sb = b.ns.packet_socket("eth0");
    let drops = counter(&d, "br0", &a.port, "rx_drops");

    let bad_src = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let good_src = [2, 0, 0, 0, 0x16, 1];
    sa.send(&frame([0xff; 6], bad_src, None, b"bad"));
    sa.send(&frame([0xff; 6], [0xff; 6], None, b"bad"));
    // Frames from one port keep their order, so once the marker is through, the
    // bad frames would have been too.
    sa.send(&frame([0xff; 6], good_src, None, b"marker"));
    let got = sb.recv_until(Duration::from_secs(5), |f| f[6..12] == good_src);
    assert_eq!(
        got.last().map(|f| &f[6..12]),
        Some(&good_src[..]),
        "marker lost"
    );
    assert!(
        got.iter().all(|f| f[6] & 1 == 0),
        "a frame with a group source address was forwarded"
    );
    assert_eq!(counter(&d, "br0", &a.port, "rx_drops") - drops, 2);
    assert_eq!(
        counter(&d, "br0", &a.port, "rx_group_src"),
        2,
        "drop reason"
    );
    let text = d.ctl_ok(&["dump-ports", "br0", &a.port]);
    assert!(text.contains("multicast-src=2,"), "{text}");
    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .all(|r| r["mac"] != mac_of(bad_src).as_str() && r["mac"] != "ff:ff:ff:ff:ff:ff"),
        "{fdb}"
    );
    assert!(fdb_has(&d, good_src, 0, &a.port));
}

/// One namespace sends 100k frames from random source MACs: the table stays within
/// its bound, the other ports keep their entries (eviction takes from the port
/// holding the most), two other namespaces keep talking, and memory stays flat.
fn mac_flood_is_bounded_and_fair(flags: &[&str]) {
    let _machine = exclusive_machine();
    let (hosts, d) = switched(flags, "10.24.0", 3);
    d.ctl_ok(&["set-br", "br0", "mac-table-size=1000"]);
    assert!(hosts[1].can_ping(&hosts[2].ip));
    let rss_before = rss_kib(d.pid());

    let dst: Vec<u8> = hosts[1]
        .mac()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let dst: [u8; 6] = dst.try_into().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let frames = (0..100_000).map(|_| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 16).to_be_bytes();
        // Locally administered unicast: a valid source the table must learn.
        let src = [0x02, r[3], r[4], r[5], r[6], r[7]];
        frame(dst, src, None, b"mac flood")
    });
    let mut sock = hosts[0].ns.packet_socket("eth0");
    let sent = sock.send_all(frames);
    assert!(sent > 50_000, "only {sent} frames left the namespace");

    let settled = wait_until(Duration::from_secs(10), || {
        d.ctl_json(&["fdb-stats", "br0"])["learned"]
            .as_u64()
            .unwrap()
            > 10_000
    });
    let stats = d.ctl_json(&["fdb-stats", "br0"]);
    assert!(settled, "the flood was not learned: {stats}");
    assert!(stats["current"].as_u64().unwrap() <= 1000, "{stats}");
    assert!(stats["evicted"].as_u64().unwrap() > 0, "{stats}");

    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    for h in &hosts[1..] {
        assert!(
            fdb.as_array()
                .unwrap()
                .iter()
                .any(|e| e["port"] == h.port.as_str() && e["mac"] == h.mac().as_str()),
            "{} lost its entry to the flood",
            h.port
        );
    }
    assert!(hosts[1].can_ping(&hosts[2].ip), "b -> c after the flood");
    assert!(hosts[2].can_ping(&hosts[1].ip), "c -> b after the flood");
    // The kernel's copy came through the flood's journal intact: b and c are
    // still forwarded there.
    let kernel0 = counter(&d, "br0", &hosts[1].port, "rx_kernel");
    hosts[1]
        .ns
        .exec_ok(&["ping", "-n", "-q", "-c", "20", "-i", "0.002", &hosts[2].ip]);
    let kernel = counter(&d, "br0", &hosts[1].port, "rx_kernel") - kernel0;
    if fast_path(flags) {
        assert!(
            kernel >= 18,
            "{kernel} of 20 pings in the kernel after the flood"
        );
    } else {
        assert_eq!(kernel, 0);
    }
    // 100k entries would take several MiB; a bounded table, the rings and the
    // batch buffers take well under this.
    let grown = rss_kib(d.pid()).saturating_sub(rss_before);
    assert!(grown < 4 * 1024, "RSS grew {grown} KiB during the flood");
}

/// `fdb-add`: a static entry sends unicast to its port only, without any frame
/// from that address; learning never moves it; it survives a restart; `fdb-del`
/// and deleting its port take it away; bad entries are refused.
fn static_entries_are_used_never_learned_over_and_kept(flags: &[&str]) {
    let _machine = shared_machine();
    let hosts: Vec<Host> = (1..=3)
        .map(|i| Host::new(&format!("10.46.0.{i}/24")))
        .collect();
    let mut socks: Vec<_> = hosts.iter().map(|h| h.ns.packet_socket("eth0")).collect();
    let mut d = daemon(flags);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    attach(&d, "br0", &hosts);
    let (a, b) = (hosts[0].port.as_str(), hosts[1].port.as_str());
    // A remote address behind b, which never sends from it.
    let remote = "02:46:00:00:00:99";
    let remote_mac = [2, 0x46, 0, 0, 0, 0x99];
    let a_mac = [2, 0x46, 0, 0, 0, 1];
    d.ctl_ok(&["fdb-add", "br0", remote, b]);
    let fdb = d.ctl_ok(&["fdb-show", "br0"]);
    assert!(
        fdb.contains(&format!("{b}     0  {remote}  static")),
        "{fdb}"
    );

    // 20 frames from a to the remote address reach b only.
    let mut round = 0;
    let mut deliveries = |socks: &mut Vec<crate::util::NsSocket>| -> Vec<usize> {
        round += 1;
        let marker = format!("static-{round}");
        let f = frame(remote_mac, a_mac, None, marker.as_bytes());
        assert_eq!(socks[0].send_all(std::iter::repeat_n(f, 20)), 20);
        // A broadcast after them: a port that should get none has got what it
        // would have once that is through (the kernel's path and switchd's may
        // deliver in either order, so b also waits for its 20).
        let end = format!("fence-{round}");
        socks[0].send(&frame([0xff; 6], a_mac, None, end.as_bytes()));
        let has = |f: &[u8], m: &str| f.windows(m.len()).any(|w| w == m.as_bytes());
        let count = |got: &[Vec<u8>]| got.iter().filter(|f| has(f, &marker)).count();
        socks[1..]
            .iter_mut()
            .zip([20, 0])
            .map(|(s, want)| {
                let got = s.recv_while(Duration::from_secs(5), |got| {
                    count(got) >= want && got.iter().any(|f| has(f, &end))
                });
                assert!(
                    got.iter().any(|f| has(f, &end)),
                    "the broadcast after the frames did not arrive"
                );
                count(&got)
            })
            .collect()
    };
    // a's own address learned first, so the kernel can take a's frames.
    socks[0].send(&frame([0xff; 6], a_mac, None, b"hello"));
    assert!(wait_until(Duration::from_secs(5), || d
        .ctl_ok(&["fdb-show", "br0"])
        .contains("02:46:00:00:00:01")));
    let kernel_before = counter(&d, "br0", a, "rx_kernel");
    assert_eq!(
        deliveries(&mut socks),
        vec![20, 0],
        "to b only, not flooded"
    );
    let in_kernel = counter(&d, "br0", a, "rx_kernel") - kernel_before;
    assert_eq!(
        in_kernel > 0,
        fast_path(flags),
        "{in_kernel} frames in the kernel"
    );
    // c sending from the remote address does not move it.
    socks[2].send(&frame([0xff; 6], remote_mac, None, b"spoof"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        deliveries(&mut socks),
        vec![20, 0],
        "a learned frame moved a static entry"
    );

    d.stop();
    d.restart();
    assert!(
        d.ctl_ok(&["fdb-show", "br0"]).contains("static"),
        "lost in a restart"
    );
    assert_eq!(deliveries(&mut socks), vec![20, 0], "after a restart");

    let refused = |args: &[&str], why: &str| d.ctl_refused(args, why);
    refused(
        &["fdb-add", "br0", remote, "nosuch"],
        "does not have a port nosuch",
    );
    refused(
        &["fdb-add", "br0", "02:46:00:00:99", b],
        "not a MAC address",
    );
    refused(&["fdb-add", "br0", "01:00:5e:00:00:01", b], "group address");
    refused(&["fdb-add", "br0", remote, b, "4095"], "out of range");
    refused(&["fdb-del", "br0", remote, "7"], "has no entry");
    d.ctl_ok(&["--if-exists", "fdb-del", "br0", remote, "7"]);

    // ovs-appctl's argument order, VLAN 7 (b made a trunk of it).
    d.ctl_ok(&["set", "port", b, "trunks=0,7"]);
    assert_eq!(
        deliveries(&mut socks),
        vec![20, 0],
        "a set port kept the static entry"
    );
    refused(&["fdb-add", "br0", remote, b, "9"], "does not carry VLAN 9");
    d.ctl_ok(&["fdb-add", "br0", b, "7", remote]);
    let rows = d.ctl_json(&["fdb-show", "br0"]);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["vlan"] == 7 && r["static"] == true),
        "{rows}"
    );
    d.ctl_ok(&["fdb-del", "br0", "7", remote]);

    d.ctl_ok(&["fdb-del", "br0", remote]);
    assert_eq!(
        deliveries(&mut socks),
        vec![20, 20],
        "flooded once the entry is gone"
    );
    d.ctl_ok(&["fdb-add", "br0", remote, b]);
    d.ctl_ok(&["del-port", "br0", b]);
    d.ctl_ok(&["add-port", "br0", b]);
    assert!(
        !d.ctl_ok(&["fdb-show", "br0"]).contains("static"),
        "went with its port"
    );
}

/// Frames the kernel drops because switchd is not reading fast enough (here it
/// is stopped) are counted on their port as `queue-full`, not lost unseen: what
/// the port's interface received is what switchd read plus what it counts lost.
#[test]
fn frames_lost_before_the_datapath_reads_them_are_counted() {
    let _machine = exclusive_machine();
    let (hosts, d) = switched(&["--offload", "none"], "10.31.9", 2);
    let port = &hosts[0].port;
    let received = || -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{port}/statistics/rx_packets"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = received() - counter(&d, "br0", port, "rx_packets");
    const SENT: u64 = 20_000;
    let dst = [0x02, 0, 0, 0x31, 0x09, 0xff];
    let f = frame(dst, [0x02, 0, 0, 0x31, 0x09, 0x01], None, b"burst");
    let mut sock = hosts[0].ns.packet_socket("eth0");
    let pid = d.pid() as i32;
    switchd::sys::kill(pid, libc::SIGSTOP).unwrap();
    let sent = sock.send_all((0..SENT).map(|_| f.clone()));
    switchd::sys::kill(pid, libc::SIGCONT).unwrap();
    assert_eq!(sent, SENT);
    let accounted = || {
        let c = d.port_counters("br0", port);
        c["rx_packets"].as_u64().unwrap() + c["rx_queue_full"].as_u64().unwrap() + before
    };
    wait_until(Duration::from_secs(10), || accounted() >= received());
    let c = d.port_counters("br0", port);
    let lost = c["rx_queue_full"].as_u64().unwrap();
    assert!(lost > 0, "{SENT} frames fit while switchd was stopped: {c}");
    assert_eq!(
        c["rx_packets"].as_u64().unwrap() + lost + before,
        received(),
        "{c}"
    );
    assert!(c["rx_drops"].as_u64().unwrap() >= lost, "{c}");
    let text = d.ctl_ok(&["dump-ports", "br0", port]);
    assert!(text.contains(&format!("queue-full={lost}")), "{text}");
}

/// TCP from `from` to `to` for 2 s, in Mbit/s.
fn tcp_mbits(from: &Host, to: &Host) -> f64 {
    crate::util::measure::tcp(&from.ns, &to.ns, &to.ip, 1, 2).0 * 1000.0
}

/// A queueing discipline the user puts on a port's interface (`tc qdisc add
/// ... root`, as Mininet's TCLink does) holds what switchd forwards out of it,
/// userspace path included, as it holds what the kernel bridge forwards: set
/// before the port is added, taken away, and set again while it runs.
fn a_ports_queueing_discipline_shapes_what_it_forwards(flags: &[&str]) {
    let _machine = shared_machine();
    let hosts = hosts("10.27.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let d = daemon(flags);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    // 20 Mbit/s out of b's port (this kernel has no netem for a delay).
    let tbf = [
        "qdisc", "add", "dev", &b.port, "root", "tbf", "rate", "20mbit", "burst", "64kb",
        "latency", "50ms",
    ];
    crate::util::run("tc", &tbf);
    attach(&d, "br0", &hosts);
    assert!(a.can_ping(&b.ip));
    let shaped = tcp_mbits(a, b);
    assert!(shaped < 30.0, "{shaped} Mbit/s through 20 Mbit/s");
    assert!(
        d.log().contains(&format!(
            "port sends through its queueing discipline port={} qdisc=tbf",
            b.port
        )),
        "{}",
        d.log()
    );

    crate::util::run("tc", &["qdisc", "del", "dev", &b.port, "root"]);
    let mut last = 0.0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = tcp_mbits(a, b);
            last > 200.0
        }),
        "{last} Mbit/s once the qdisc went"
    );
    crate::util::run("tc", &tbf);
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = tcp_mbits(a, b);
            last < 30.0
        }),
        "{last} Mbit/s once the qdisc came back"
    );
}
