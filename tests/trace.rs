//! `switchctl trace`: its prediction, checked by sending the frame it describes
//! and seeing where it really goes.

use crate::util::{frame, shared_machine, Daemon, Host};
use serde_json::Value;
use std::time::Duration;

fn outputs(trace: &Value) -> Vec<String> {
    let mut ports: Vec<String> = serde_json::from_value(trace["output_ports"].clone()).unwrap();
    ports.sort();
    ports
}

/// Sends `count` frames from `from` to `dst` (marked with `marker`) and returns
/// which of `hosts` received them.
fn receivers(
    from: &Host,
    hosts: &[&Host],
    dst: [u8; 6],
    tag: Option<u16>,
    marker: &[u8],
) -> Vec<String> {
    let mut sockets: Vec<_> = hosts.iter().map(|h| h.ns.packet_socket("eth0")).collect();
    let mut out = from.ns.packet_socket("eth0");
    for _ in 0..10 {
        out.send(&frame(dst, from.mac_bytes(), tag, marker));
    }
    let mut got = Vec::new();
    for (h, s) in hosts.iter().zip(&mut sockets) {
        let frames = s.recv_until(Duration::from_millis(700), |_| false);
        let n = frames
            .iter()
            .filter(|f| f.windows(marker.len()).any(|w| w == marker))
            .count();
        assert!(n == 0 || n == 10, "{} got {n} of 10", h.port);
        if n == 10 {
            got.push(h.port.clone());
        }
    }
    got.sort();
    got
}

#[test]
fn trace_predicts_where_frames_go() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let (a, b, c) = (
        Host::new("10.81.0.1/24"),
        Host::new("10.81.0.2/24"),
        Host::new("10.81.0.3/24"),
    );
    let v = Host::new("10.81.1.4/24");
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    for h in [&a, &b, &c] {
        d.ctl_ok(&["add-port", "br0", &h.port]);
    }
    d.ctl_ok(&["add-port", "br0", &v.port, "tag=10"]);
    let trace = |fields: &[&str]| -> Value {
        let mut args = vec!["trace", "br0"];
        args.extend_from_slice(fields);
        d.ctl_json(&args)
    };
    let in_a = format!("in_port={}", a.port);
    let src_a = format!("dl_src={}", a.mac());

    // Unknown destination: flood within VLAN 0, not to the VLAN 10 port; the
    // trace learns nothing.
    let fdb_before = d.ctl_ok(&["fdb-show", "br0"]);
    let unknown = [2, 0, 0, 0x81, 0, 0x99];
    let t = trace(&[&in_a, &src_a, "dl_dst=02:00:00:81:00:99"]);
    assert_eq!(
        outputs(&t),
        {
            let mut p = vec![b.port.clone(), c.port.clone()];
            p.sort();
            p
        },
        "{t}"
    );
    assert_eq!(t["datapath"], "userspace");
    assert_eq!(
        d.ctl_ok(&["fdb-show", "br0"]),
        fdb_before,
        "trace learned something"
    );
    assert_eq!(
        receivers(&a, &[&b, &c, &v], unknown, None, b"trace-unknown"),
        outputs(&t)
    );

    // Known unicast: b's address learned (a ping), so one port, and once a's
    // source is on a's port too, the kernel fast path.
    assert!(a.can_ping(&b.ip));
    let dst_b = format!("dl_dst={}", b.mac());
    let t = trace(&[&in_a, &src_a, &dst_b, "dl_type=ip"]);
    assert_eq!(outputs(&t), vec![b.port.clone()], "{t}");
    assert_eq!(t["datapath"], "kernel", "{t}");
    let text = d.ctl_ok(&["trace", "br0", &format!("{in_a},{src_a},{dst_b}")]);
    assert!(text.starts_with(&format!("Flow: {in_a},")), "{text}");
    assert!(text.contains(&format!("hit on {}", b.port)), "{text}");
    assert!(
        text.contains(&format!("Output ports: {}", b.port)),
        "{text}"
    );
    assert_eq!(
        receivers(&a, &[&b, &c, &v], b.mac_bytes(), None, b"trace-known"),
        outputs(&t)
    );

    // Broadcast in VLAN 10 from a (no VLAN settings: a trunk of all VLANs):
    // to b and c, tagged, and to v, untagged.
    let t = trace(&[&in_a, &src_a, "dl_dst=ff:ff:ff:ff:ff:ff", "dl_vlan=10"]);
    let mut all = vec![b.port.clone(), c.port.clone(), v.port.clone()];
    all.sort();
    assert_eq!(outputs(&t), all, "{t}");
    assert!(
        t["steps"].as_array().unwrap().iter().any(|s| s
            .as_str()
            .unwrap()
            .contains(&format!("{} (access port of VLAN 10): untagged", v.port))),
        "{t}"
    );
    assert_eq!(
        receivers(&a, &[&b, &c, &v], [0xff; 6], Some(10), b"trace-vlan10"),
        outputs(&t)
    );

    // A tagged frame on the access port is dropped, and counted as such.
    let t = trace(&[&format!("in_port={}", v.port), "dl_vlan=20"]);
    assert!(t["output_ports"].as_array().unwrap().is_empty(), "{t}");
    assert!(
        t["drop"]
            .as_str()
            .unwrap()
            .contains("tagged frame on an access port"),
        "{t}"
    );
    let before = d.port_counters("br0", &v.port)["rx_vlan_tagged"]
        .as_u64()
        .unwrap();
    assert!(receivers(&v, &[&a, &b, &c], [0xff; 6], Some(20), b"trace-drop").is_empty());
    let after = d.port_counters("br0", &v.port)["rx_vlan_tagged"]
        .as_u64()
        .unwrap();
    assert_eq!(after - before, 10);

    // Bad input: clear errors.
    for (args, message) in [
        (
            vec!["trace", "br0", "in_port=nosuch0"],
            "bridge br0 does not have a port nosuch0",
        ),
        (vec!["trace", "br9", &in_a], "no bridge named br9"),
        (
            vec!["trace", "br0", &in_a, "dl_src=zz"],
            "not a MAC address",
        ),
        (
            vec!["trace", "br0", &in_a, "dl_type=tcp6"],
            "not an ethertype",
        ),
        (
            vec!["trace", "br0", &in_a, "nw_src=1.2.3.4"],
            "unknown field",
        ),
        (
            vec!["trace", "br0", "dl_vlan=3"],
            "trace needs in_port=PORT",
        ),
    ] {
        d.ctl_refused(&args, message);
    }
}
