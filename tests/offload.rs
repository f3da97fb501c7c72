//! The kernel fast path (`--offload tc`, the default): known unicast between
//! ports is forwarded by a TC program from a BPF copy of the MAC table. Each test
//! checks that the kernel did the work (its counters) and that the copy follows
//! every change the userspace table goes through.

use crate::util::{shared_machine, wait_until, Daemon, Host};
use std::time::Duration;

fn hosts(subnet: &str, n: usize) -> Vec<Host> {
    (1..=n)
        .map(|i| Host::new(&format!("{subnet}.{i}/24")))
        .collect()
}

fn switched_with(args: &[&str], subnet: &str, n: usize) -> (Vec<Host>, Daemon) {
    let hosts = hosts(subnet, n);
    let d = Daemon::start_with(args);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    for h in &hosts {
        d.ctl_ok(&["add-port", "br0", &h.port]);
    }
    (hosts, d)
}

fn counter(d: &Daemon, port: &str, name: &str) -> u64 {
    d.port_counters("br0", port)[name].as_u64().unwrap()
}

fn pings(from: &Host, to: &Host, count: u32) {
    from.ns.exec_ok(&[
        "ping",
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.002",
        &to.ip,
    ]);
}

#[test]
fn known_unicast_is_forwarded_and_counted_by_the_kernel() {
    let _machine = shared_machine();
    let (hosts, d) = switched_with(&[], "10.40.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    assert!(a.can_ping(&b.ip));
    let rx0 = counter(&d, &a.port, "rx_packets");
    let tx0 = counter(&d, &b.port, "tx_packets");
    let k0 = counter(&d, &a.port, "rx_kernel");
    pings(a, b, 200);
    let kernel = counter(&d, &a.port, "rx_kernel") - k0;
    assert!(
        kernel >= 195,
        "the kernel forwarded {kernel} of 200 requests"
    );
    // Kernel-forwarded frames count in the totals, once.
    let rx = counter(&d, &a.port, "rx_packets") - rx0;
    let tx = counter(&d, &b.port, "tx_packets") - tx0;
    assert!((200..=204).contains(&rx), "rx {rx}");
    assert!((200..=204).contains(&tx), "tx {tx}");
    assert!(counter(&d, &b.port, "tx_kernel") >= 195);
    let text = d.ctl_ok(&["dump-ports", "br0"]);
    assert!(text.contains("kernel fast path: rx pkts="), "{text}");
}

#[test]
fn offload_none_forwards_everything_in_userspace() {
    let _machine = shared_machine();
    let (hosts, d) = switched_with(&["--offload", "none"], "10.41.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    assert!(a.can_ping(&b.ip));
    // What a's and b's interfaces counted is what switchd must have moved.
    let sent = |h: &Host| {
        h.ns.exec_ok(&["cat", "/sys/class/net/eth0/statistics/tx_packets"])
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let (a0, b0) = (sent(a), sent(b));
    let (rx_a0, tx_b0) = (
        counter(&d, &a.port, "rx_packets"),
        counter(&d, &b.port, "tx_packets"),
    );
    let (rx_b0, tx_a0) = (
        counter(&d, &b.port, "rx_packets"),
        counter(&d, &a.port, "tx_packets"),
    );
    pings(a, b, 50);
    let (a_sent, b_sent) = (sent(a) - a0, sent(b) - b0);
    assert!(a_sent >= 50 && b_sent >= 50, "{a_sent} {b_sent}");
    // Every frame a sent entered switchd on a's port and left on b's, and the
    // other way round (read until the last send is counted, right after it).
    let moved = || {
        (
            counter(&d, &a.port, "rx_packets") - rx_a0,
            counter(&d, &b.port, "tx_packets") - tx_b0,
            counter(&d, &b.port, "rx_packets") - rx_b0,
            counter(&d, &a.port, "tx_packets") - tx_a0,
        )
    };
    let all = (a_sent, a_sent, b_sent, b_sent);
    assert!(
        wait_until(Duration::from_secs(2), || moved() == all),
        "switchd counted {:?}, the interfaces sent {all:?}",
        moved()
    );
    for h in [a, b] {
        assert_eq!(counter(&d, &h.port, "rx_kernel"), 0);
        assert_eq!(counter(&d, &h.port, "tx_kernel"), 0);
    }
}

/// After a flush the kernel must not know the addresses either: the next frame
/// to b is unknown unicast and floods, so c sees it.
#[test]
fn fdb_flush_empties_the_kernel_table() {
    let _machine = shared_machine();
    let (hosts, d) = switched_with(&[], "10.42.0", 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    assert!(a.can_ping(&b.ip));
    pings(a, b, 20);
    let c0 = counter(&d, &c.port, "tx_packets");
    pings(a, b, 20);
    assert!(
        counter(&d, &c.port, "tx_packets") - c0 <= 2,
        "a<->b unicast reached c before the flush"
    );
    d.ctl_ok(&["fdb-flush", "br0"]);
    let c1 = counter(&d, &c.port, "tx_packets");
    assert!(a.ping_once(&b.ip));
    assert!(
        counter(&d, &c.port, "tx_packets") > c1,
        "the first frame after the flush was not flooded: the kernel kept the entry"
    );
}

/// A host that shows up on another port (its MAC now behind c's port) must get
/// its frames there; the kernel must not keep sending them to the old port.
#[test]
fn a_moved_address_follows_its_host() {
    let _machine = shared_machine();
    let (hosts, d) = switched_with(&[], "10.43.0", 3);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    assert!(a.can_ping(&b.ip));
    pings(a, b, 20);
    // a's address and MAC move to c's namespace; a's interface goes quiet.
    let mac = a.mac();
    a.ns.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    c.ns.exec_ok(&["ip", "addr", "flush", "dev", "eth0"]);
    c.ns.exec_ok(&["ip", "link", "set", "eth0", "address", &mac]);
    c.ns.exec_ok(&["ip", "addr", "add", "10.43.0.1/24", "dev", "eth0"]);
    let a_tx = counter(&d, &a.port, "tx_packets");
    assert!(c.can_ping(&b.ip), "the moved host cannot reach b");
    pings(c, b, 100);
    assert!(
        counter(&d, &a.port, "tx_packets") - a_tx <= 2,
        "replies still go to the old port"
    );
    assert!(counter(&d, &c.port, "tx_kernel") >= 95);
    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|r| r["mac"] == mac.as_str() && r["port"] == c.port.as_str()),
        "{fdb}"
    );
}

/// Frames the kernel forwards keep their addresses learned; once they stop,
/// the addresses age out of both tables.
#[test]
fn kernel_traffic_keeps_entries_alive_until_it_stops() {
    let _machine = shared_machine();
    let (hosts, d) = switched_with(&[], "10.44.0", 2);
    d.ctl_ok(&["set-br", "br0", "mac-aging-time=2"]);
    let (a, b) = (&hosts[0], &hosts[1]);
    assert!(a.can_ping(&b.ip));
    // 5 s of pings, 2.5 aging times, all forwarded by the kernel.
    let k0 = counter(&d, &a.port, "rx_kernel");
    let _pinger =
        a.ns.spawn(&["ping", "-n", "-q", "-c", "60", "-i", "0.1", &b.ip]);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let fdb = d.ctl_json(&["fdb-show", "br0"]);
        let rows = fdb.as_array().unwrap();
        assert_eq!(rows.len(), 2, "an active address aged out: {fdb}");
        assert!(
            rows.iter().all(|r| r["age"].as_u64().unwrap() <= 1),
            "{fdb}"
        );
    }
    assert!(counter(&d, &a.port, "rx_kernel") - k0 >= 40);
    assert!(
        wait_until(Duration::from_secs(12), || d
            .ctl_json(&["fdb-show", "br0"])
            .as_array()
            .unwrap()
            .is_empty()),
        "entries did not age out after the traffic stopped"
    );
    // Aged out of the kernel too: the next frame floods and relearns.
    let learned = d.ctl_json(&["fdb-stats", "br0"])["learned"]
        .as_u64()
        .unwrap();
    assert!(a.can_ping(&b.ip));
    assert!(
        d.ctl_json(&["fdb-stats", "br0"])["learned"]
            .as_u64()
            .unwrap()
            > learned
    );
}

/// The programs hang on links owned by switchd's descriptors: a killed switchd
/// leaves nothing that keeps forwarding from a table nobody maintains.
#[test]
fn nothing_is_left_in_the_kernel_when_switchd_dies() {
    let _machine = shared_machine();
    let (hosts, mut d) = switched_with(&[], "10.45.0", 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    assert!(a.can_ping(&b.ip));
    pings(a, b, 20);
    assert!(counter(&d, &a.port, "rx_kernel") >= 15);
    d.kill9();
    for _ in 0..3 {
        assert!(!a.ping_once(&b.ip), "forwarded with switchd dead");
    }
}

/// Without the right to load BPF programs (here: CAP_BPF and CAP_SYS_ADMIN out
/// of switchd's bounding set; likewise a kernel without TCX), switchd says so once
/// and forwards everything in userspace.
#[test]
fn without_bpf_the_userspace_datapath_forwards_everything() {
    let _machine = shared_machine();
    let (a, b) = (Host::new("10.46.0.1/24"), Host::new("10.46.0.2/24"));
    let d = Daemon::start_under(
        &[
            "setpriv",
            "--bounding-set",
            "-bpf,-sys_admin,-perfmon",
            "--",
        ],
        &["--log-level", "info"],
    );
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    assert!(a.can_ping(&b.ip));
    pings(&a, &b, 50);
    assert!(counter(&d, &a.port, "rx_packets") >= 50);
    assert_eq!(counter(&d, &a.port, "rx_kernel"), 0);
    let log = d.log();
    assert_eq!(
        log.matches("kernel fast path unavailable").count(),
        1,
        "{log}"
    );
}

/// The kernel's table is keyed by MAC and bridge: the same MAC on two bridges
/// (one namespace given another's address) must not send one bridge's frames out
/// of the other's port.
#[test]
fn the_same_mac_on_two_bridges_stays_apart_in_the_kernel() {
    let _machine = shared_machine();
    let hosts: Vec<Host> = [
        "10.47.0.1/24",
        "10.47.0.2/24",
        "10.47.0.1/24",
        "10.47.0.2/24",
    ]
    .iter()
    .map(|ip| Host::new(ip))
    .collect();
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br-a"]);
    d.ctl_ok(&["add-br", "--no-internal", "br-b"]);
    for (h, br) in hosts.iter().zip(["br-a", "br-a", "br-b", "br-b"]) {
        d.ctl_ok(&["add-port", br, &h.port]);
    }
    // Bridge b's pair is a copy of bridge a's: same addresses, same MACs.
    for (copy, original) in [(&hosts[2], &hosts[0]), (&hosts[3], &hosts[1])] {
        copy.ns
            .exec_ok(&["ip", "link", "set", "eth0", "address", &original.mac()]);
    }
    let tx = |br: &str, port: &str| d.port_counters(br, port)["tx_packets"].as_u64().unwrap();
    let kernel = |br: &str, port: &str| d.port_counters(br, port)["rx_kernel"].as_u64().unwrap();
    assert!(hosts[0].can_ping(&hosts[1].ip));
    assert!(hosts[2].can_ping(&hosts[3].ip));
    let (b0, k0) = (tx("br-b", &hosts[2].port), kernel("br-a", &hosts[1].port));
    // hosts[1] answers hosts[0] in the kernel; its frames to that MAC stay on br-a.
    pings(&hosts[0], &hosts[1], 100);
    assert!(
        kernel("br-a", &hosts[1].port) - k0 >= 95,
        "br-a's replies not in the kernel"
    );
    assert!(
        tx("br-b", &hosts[2].port) - b0 <= 2,
        "br-a's frames for the shared MAC went out of br-b"
    );
    assert!(
        hosts[2].can_ping(&hosts[3].ip),
        "br-b's pair after br-a's traffic"
    );
}

/// Two addresses behind one port (a segment beyond it): a frame from one to the
/// other comes in on that port and must go nowhere. The TC program leaves it to
/// userspace (its destination is behind the ingress port), which filters it.
#[test]
fn a_frame_for_its_own_port_goes_nowhere() {
    let _machine = shared_machine();
    let (hosts, d) = switched_with(&[], "10.48.0", 2);
    let (p, q) = (&hosts[0], &hosts[1]);
    assert!(p.can_ping(&q.ip));
    let (x, y) = ([0x02, 0, 0, 0x48, 0, 1], [0x02, 0, 0, 0x48, 0, 2]);
    let mut sock = p.ns.packet_socket("eth0");
    // Both are learned on p's port.
    sock.send(&crate::util::frame([0xff; 6], x, None, b"x is here"));
    sock.send(&crate::util::frame([0xff; 6], y, None, b"y is here"));
    assert!(wait_until(Duration::from_secs(2), || {
        let fdb = d.ctl_json(&["fdb-show", "br0"]).to_string();
        fdb.contains("02:00:00:48:00:01") && fdb.contains("02:00:00:48:00:02")
    }));
    // A burst first gives the port its receive ring: frames that arrive while
    // the kernel attaches one are lost (the closing note of 2026-12-02).
    for _ in 0..40 {
        sock.send(&crate::util::frame(y, x, None, b"warm-up"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rx0, k0, q0) = (
        counter(&d, &p.port, "rx_packets"),
        counter(&d, &p.port, "rx_kernel"),
        counter(&d, &q.port, "tx_packets"),
    );
    for _ in 0..50 {
        sock.send(&crate::util::frame(y, x, None, b"x to y"));
    }
    // Bounded generously: under the whole suite's load a datapath thread can
    // wait long for a CPU.
    assert!(
        wait_until(Duration::from_secs(10), || counter(
            &d,
            &p.port,
            "rx_packets"
        ) - rx0
            >= 50),
        "switchd did not see the frames: {} of 50",
        counter(&d, &p.port, "rx_packets") - rx0
    );
    assert_eq!(
        counter(&d, &p.port, "rx_kernel"),
        k0,
        "the kernel forwarded them"
    );
    assert_eq!(
        counter(&d, &q.port, "tx_packets"),
        q0,
        "they went out of another port"
    );
}
