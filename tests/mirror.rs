//! Port mirrors: copies of the selected frames, once each, at the output port
//! or in the output VLAN, counted on the mirror; gone when the mirror goes;
//! saved; following their ports; bad mirrors refused with nothing saved.

use crate::util::{frame, shared_machine, Daemon, Host, NsSocket};
use serde_json::Value;
use std::time::Duration;

/// Frames carrying `marker` that `sock` receives within a while (the others
/// it reads are lost).
fn received(sock: &mut NsSocket, marker: &[u8]) -> Vec<Vec<u8>> {
    with(&drain(sock), marker)
}

/// Everything `sock` receives within a while.
fn drain(sock: &mut NsSocket) -> Vec<Vec<u8>> {
    sock.recv_until(Duration::from_millis(700), |_| false)
}

/// The frames carrying `marker`.
fn with(frames: &[Vec<u8>], marker: &[u8]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| f.windows(marker.len()).any(|w| w == marker))
        .cloned()
        .collect()
}

/// Sends `n` frames from `from` to `to` carrying `marker`.
fn send(
    from: &mut NsSocket,
    src: [u8; 6],
    dst: [u8; 6],
    tag: Option<u16>,
    marker: &[u8],
    n: usize,
) {
    for _ in 0..n {
        from.send(&frame(dst, src, tag, marker));
    }
}

fn counter(d: &Daemon, port: &str, name: &str) -> u64 {
    d.port_counters("br0", port)[name].as_u64().unwrap()
}

fn mirror(d: &Daemon, name: &str) -> Value {
    let mirrors = d.ctl_json(&["list-mirrors", "br0"]);
    mirrors
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_mirror_copies_what_it_selects_once_and_stops_when_removed() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let (a, b, c) = (
        Host::new("10.86.0.1/24"),
        Host::new("10.86.0.2/24"),
        Host::new("10.86.0.3/24"),
    );
    let monitor = Host::new("10.86.0.9/24");
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    for h in [&a, &b, &c, &monitor] {
        d.ctl_ok(&["add-port", "br0", &h.port]);
    }
    let (ma, mb, mmon) = (a.mac_bytes(), b.mac_bytes(), monitor.mac_bytes());
    let (mut sa, mut sb, mut sc) = (
        a.ns.packet_socket("eth0"),
        b.ns.packet_socket("eth0"),
        c.ns.packet_socket("eth0"),
    );
    let mut smon = monitor.ns.packet_socket("eth0");
    // Learn a and b, so that their unicast takes the kernel fast path.
    assert!(a.can_ping(&b.ip));
    let kernel = counter(&d, &a.port, "rx_kernel");
    send(&mut sa, ma, mb, None, b"before-mirror", 5);
    assert_eq!(received(&mut sb, b"before-mirror").len(), 5);
    assert!(counter(&d, &a.port, "rx_kernel") >= kernel + 5);
    assert!(received(&mut smon, b"before-mirror").is_empty());

    let output = format!("output_port={}", monitor.port);
    d.ctl_ok(&["add-mirror", "br0", "all", "select_all=true", &output]);
    // trace says so, and that the ports have left the fast path.
    let t = d.ctl_json(&[
        "trace",
        "br0",
        &format!("in_port={}", a.port),
        &format!("dl_src={}", a.mac()),
        &format!("dl_dst={}", b.mac()),
    ]);
    assert_eq!(t["mirrors"], serde_json::json!(["all"]), "{t}");
    assert_eq!(t["datapath"], "userspace", "{t}");
    let monitor_tx = counter(&d, &monitor.port, "tx_packets");
    // Known unicast and a broadcast flooded to two ports: one copy each.
    send(&mut sa, ma, mb, None, b"all-unicast", 10);
    send(&mut sb, mb, [0xff; 6], None, b"all-broadcast", 10);
    assert_eq!(received(&mut sb, b"all-unicast").len(), 10);
    assert_eq!(received(&mut sa, b"all-broadcast").len(), 10);
    assert_eq!(received(&mut sc, b"all-broadcast").len(), 10);
    let copies = drain(&mut smon);
    assert_eq!(with(&copies, b"all-unicast").len(), 10);
    assert_eq!(with(&copies, b"all-broadcast").len(), 10);
    let m = mirror(&d, "all");
    assert!(m["tx_packets"].as_u64().unwrap() >= 20, "{m}");
    assert!(m["tx_bytes"].as_u64().unwrap() >= 20 * 60, "{m}");
    assert_eq!(
        counter(&d, &monitor.port, "tx_packets"),
        monitor_tx,
        "copies count on the mirror, not as the output port's traffic"
    );
    // The output port takes no part in switching: what it sends goes nowhere,
    // counted, and it learns nothing.
    send(&mut smon, mmon, [0xff; 6], None, b"from-monitor", 5);
    assert!(received(&mut sa, b"from-monitor").is_empty());
    assert!(counter(&d, &monitor.port, "rx_mirror_output") >= 5);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains("    Mirror all\n        select_all: true\n"),
        "{show}"
    );

    // Received on a only.
    d.ctl_ok(&["del-mirror", "br0", "all"]);
    let src = format!("select_src_port={}", a.port);
    d.ctl_ok(&["add-mirror", "br0", "from-a", &src, &output]);
    send(&mut sa, ma, mb, None, b"src-a-to-b", 4);
    send(&mut sb, mb, ma, None, b"src-b-to-a", 4);
    let copies = drain(&mut smon);
    assert_eq!(with(&copies, b"src-a-to-b").len(), 4);
    assert!(with(&copies, b"src-b-to-a").is_empty());
    // Sent to a only: a flood to a and c is copied once.
    d.ctl_ok(&["del-mirror", "br0", "from-a"]);
    let dst = format!("select_dst_port={},{}", a.port, c.port);
    d.ctl_ok(&["add-mirror", "br0", "to-a", &dst, &output]);
    send(&mut sa, ma, mb, None, b"dst-a-to-b", 4);
    send(&mut sb, mb, ma, None, b"dst-b-to-a", 4);
    send(&mut sb, mb, [0xff; 6], None, b"dst-flood", 4);
    let copies = drain(&mut smon);
    assert!(with(&copies, b"dst-a-to-b").is_empty());
    assert_eq!(with(&copies, b"dst-b-to-a").len(), 4);
    assert_eq!(with(&copies, b"dst-flood").len(), 4);

    // Gone: no more copies, the fast path back, the monitor an ordinary port.
    d.ctl_ok(&["del-mirror", "br0", "to-a"]);
    assert_eq!(mirror(&d, "to-a"), Value::Null);
    assert!(a.can_ping(&b.ip));
    let kernel = counter(&d, &a.port, "rx_kernel");
    send(&mut sa, ma, mb, None, b"after-mirror", 5);
    assert_eq!(received(&mut sb, b"after-mirror").len(), 5);
    assert!(received(&mut smon, b"after-mirror").is_empty());
    assert!(counter(&d, &a.port, "rx_kernel") >= kernel + 5);
    send(&mut smon, mmon, [0xff; 6], None, b"monitor-again", 3);
    assert_eq!(received(&mut sa, b"monitor-again").len(), 3);
}

#[test]
fn a_mirror_into_a_vlan_reaches_the_ports_that_carry_it_tagged() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let (a, b) = (Host::new("10.87.0.1/24"), Host::new("10.87.0.2/24"));
    let (trunk, other) = (Host::new("10.87.0.8/24"), Host::new("10.87.0.9/24"));
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port, "tag=10"]);
    d.ctl_ok(&["add-port", "br0", &b.port, "tag=10"]);
    d.ctl_ok(&["add-port", "br0", &other.port, "tag=20"]);
    d.ctl_ok(&["add-port", "br0", &trunk.port, "trunks=20,99"]);
    d.ctl_ok(&[
        "add-mirror",
        "br0",
        "rspan",
        "select_all=true",
        "select_vlan=10",
        "output_vlan=99",
    ]);
    let (ma, mb, mo) = (a.mac_bytes(), b.mac_bytes(), other.mac_bytes());
    let (mut sa, mut sb) = (a.ns.packet_socket("eth0"), b.ns.packet_socket("eth0"));
    let (mut st, mut so) = (
        trunk.ns.packet_socket("eth0"),
        other.ns.packet_socket("eth0"),
    );
    send(&mut sa, ma, mb, None, b"vlan10", 6);
    send(&mut so, mo, [0xff; 6], None, b"vlan20", 6);
    assert_eq!(received(&mut sb, b"vlan10").len(), 6);
    let trunk_got = drain(&mut st);
    let copies = with(&trunk_got, b"vlan10");
    assert_eq!(copies.len(), 6, "one copy each, into VLAN 99");
    for f in &copies {
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 99], "tagged 99: {f:02x?}");
        assert_eq!(&f[..12], &[&mb[..], &ma[..]].concat()[..], "addresses kept");
    }
    // VLAN 20 is not selected: the trunk gets its broadcast, tagged 20, only.
    let vlan20 = with(&trunk_got, b"vlan20");
    assert_eq!(vlan20.len(), 6);
    assert!(vlan20.iter().all(|f| f[12..16] == [0x81, 0x00, 0x00, 20]));
    assert!(received(&mut sa, b"vlan20").is_empty());
    let m = mirror(&d, "rspan");
    assert_eq!(m["tx_packets"].as_u64().unwrap(), 6, "{m}");
}

#[test]
fn mirrors_are_saved_follow_their_ports_and_bad_ones_are_refused() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    let (a, b, mon) = (
        Host::new("10.88.0.1/24"),
        Host::new("10.88.0.2/24"),
        Host::new("10.88.0.9/24"),
    );
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    for h in [&a, &b, &mon] {
        d.ctl_ok(&["add-port", "br0", &h.port]);
    }
    let output = format!("output_port={}", mon.port);
    let src = format!("select_src_port={},{}", a.port, b.port);
    let refused = |args: &[&str], why: &str| {
        let mut full = vec!["add-mirror", "br0"];
        full.extend_from_slice(args);
        d.ctl_refused(&full, why);
    };
    refused(&["m"], "needs output_port or output_vlan");
    refused(&["m", &output], "selects nothing");
    refused(
        &["m", "select_all=true", &output, "output_vlan=5"],
        "exclude each other",
    );
    refused(
        &["m", "select_all=true", "output_port=ghost"],
        "no port named ghost",
    );
    refused(
        &["m", "select_all=true", "output_vlan=4095"],
        "must be 1 to 4094",
    );
    let selected_output = format!("select_src_port={}", mon.port);
    refused(&["m", &selected_output, &output], "cannot be selected too");
    refused(
        &["m", "select_all=true", "colour=red"],
        "unknown mirror column",
    );
    assert_eq!(d.ctl_json(&["list-mirrors", "br0"]), serde_json::json!([]));

    d.ctl_ok(&["add-mirror", "br0", "m", &src, &output]);
    refused(&["m", "select_all=true", &output], "has a mirror named m");
    d.ctl_ok(&[
        "--may-exist",
        "add-mirror",
        "br0",
        "m",
        "select_all=true",
        &output,
    ]);
    let out = d.ctl(&["del-mirror", "br0", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    d.ctl_ok(&["--if-exists", "del-mirror", "br0", "nosuch"]);

    // Saved: after a restart it is there and copies again.
    d.stop();
    d.restart();
    let m = mirror(&d, "m");
    assert_eq!(m["select_src_port"], serde_json::json!([a.port, b.port]));
    let (ma, mb) = (a.mac_bytes(), b.mac_bytes());
    let (mut sa, mut smon) = (a.ns.packet_socket("eth0"), mon.ns.packet_socket("eth0"));
    send(&mut sa, ma, mb, None, b"after-restart", 3);
    assert_eq!(received(&mut smon, b"after-restart").len(), 3);

    // A selected port that goes leaves the selection; the output port going
    // takes the mirror with it, as in Open vSwitch.
    d.ctl_ok(&["del-port", "br0", &a.port]);
    assert_eq!(
        mirror(&d, "m")["select_src_port"],
        serde_json::json!([b.port])
    );
    d.ctl_ok(&["del-port", "br0", &mon.port]);
    assert_eq!(d.ctl_json(&["list-mirrors", "br0"]), serde_json::json!([]));
    // And saved so.
    d.stop();
    d.restart();
    assert_eq!(d.ctl_json(&["list-mirrors", "br0"]), serde_json::json!([]));
}
