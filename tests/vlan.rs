//! VLANs as Open vSwitch documents them (ovs-vswitchd.conf.db(5), "VLAN
//! Configuration"), on both datapaths, and the reserved group addresses.
//!
//! This kernel has no 8021q module, so the far end of a trunk speaks 802.1Q
//! through something else: raw packet sockets inside namespaces (switchd's own
//! `sys` types, tags restored from the kernel's metadata), a second bridge over a
//! veth pair, and tcpdump reading the tags on the wire.

use crate::forwarding::{daemon, fast_path};
use crate::util::measure;
use crate::util::ovs::Ovs;
use crate::util::{
    exclusive_machine, frame, shared_machine, wait_until, ChildGuard, Daemon, Host, NsSocket, Wire,
};
use std::process::Command;
use std::time::Duration;

on_both_datapaths!(
    each_vlan_mode_sends_and_accepts_what_ovs_documents,
    access_vlans_stay_apart_on_a_bridge_and_across_a_trunk,
);

const BROADCAST: [u8; 6] = [0xff; 6];

/// A namespace whose eth0 is read and written raw.
struct Raw {
    host: Host,
    sock: NsSocket,
    mac: [u8; 6],
}

fn raw(i: u8) -> Raw {
    let host = Host::new(&format!("10.41.{i}.1/24"));
    let sock = host.ns.packet_socket("eth0");
    Raw {
        host,
        sock,
        mac: [2, 0x41, 0, 0, 0, i],
    }
}

/// The outer tag's TCI of a received frame, if it has one.
fn tci(frame: &[u8]) -> Option<u16> {
    (frame[12..14] == [0x81, 0x00]).then(|| u16::from_be_bytes([frame[14], frame[15]]))
}

/// The frames `r` received carrying `marker`, as their tags, waiting up to `wait`.
/// The tags of the frames carrying `marker` that reach `r`: waits up to 5 s
/// for `expected` of them (a busy machine may hold the datapath back), then
/// 30 ms more for any extra.
fn received(r: &mut Raw, marker: &[u8], expected: usize) -> Vec<Option<u16>> {
    let has = |f: &[u8]| f.windows(marker.len()).any(|w| w == marker);
    let mut frames = r.sock.recv_while(Duration::from_secs(5), |got| {
        got.iter().filter(|f| has(f)).count() >= expected
    });
    frames.extend(r.sock.recv_until(Duration::from_millis(30), |_| false));
    frames
        .into_iter()
        .filter(|f| has(f))
        .map(|f| tci(&f))
        .collect()
}

const A: usize = 0;
const T: usize = 1;
const NU: usize = 2;
const NT: usize = 3;
const B: usize = 4;
const NAMES: [&str; 5] = [
    "access 10",
    "trunk 10,20",
    "native-untagged 10 +20",
    "native-tagged 10 +20",
    "access 20",
];

/// A port, and the tag a frame reaches it with.
type Delivery = (usize, Option<u16>);

/// One bridge with a port of each mode, each a raw socket: every frame sent, with
/// or without a tag, reaches exactly the ports the modes say, with exactly the
/// tag they say; known unicast likewise, through the kernel fast path when there
/// is one (no copy twice), with tags pushed and popped there.
fn each_vlan_mode_sends_and_accepts_what_ovs_documents(flags: &[&str]) {
    let _machine = shared_machine();
    let mut ports: Vec<Raw> = (1..=5).map(raw).collect();
    let d = daemon(flags);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let columns: [&[&str]; 5] = [
        &["tag=10"],
        &["trunks=10,20"],
        &["vlan_mode=native-untagged", "tag=10", "trunks=20"],
        &["vlan_mode=native-tagged", "tag=10", "trunks=20"],
        &["tag=20"],
    ];
    for (p, cols) in ports.iter().zip(columns) {
        let mut args = vec!["add-port", "br0", &p.host.port];
        args.extend_from_slice(cols);
        d.ctl_ok(&args);
    }
    let port = |i: usize| ports[i].host.port.clone();
    let names: Vec<String> = (0..5).map(port).collect();

    // (sender, tag sent, who gets it and with what tag); everybody else nothing.
    let broadcasts: &[(usize, Option<u16>, &[Delivery])] = &[
        (A, None, &[(T, Some(10)), (NU, None), (NT, Some(10))]),
        (A, Some(20), &[]),
        // A priority tag is untagged; the priority stays.
        (
            A,
            Some(0xa000),
            &[(T, Some(0xa00a)), (NU, None), (NT, Some(0xa00a))],
        ),
        (T, Some(20), &[(NU, Some(20)), (NT, Some(20)), (B, None)]),
        (T, None, &[]),
        (T, Some(30), &[]),
        (T, Some(10), &[(A, None), (NU, None), (NT, Some(10))]),
        (NU, None, &[(A, None), (T, Some(10)), (NT, Some(10))]),
        (NU, Some(10), &[(A, None), (T, Some(10)), (NT, Some(10))]),
        (NT, Some(10), &[(A, None), (T, Some(10)), (NU, None)]),
        (NT, None, &[(A, None), (T, Some(10)), (NU, None)]),
        (B, None, &[(T, Some(20)), (NU, Some(20)), (NT, Some(20))]),
    ];
    for (case, &(from, tag, want)) in broadcasts.iter().enumerate() {
        let marker = format!("vlan-case-{case}");
        let f = frame(BROADCAST, ports[from].mac, tag, marker.as_bytes());
        ports[from].sock.send(&f);
        std::thread::sleep(Duration::from_millis(150));
        for (to, r) in ports.iter_mut().enumerate() {
            if to == from {
                continue;
            }
            let expected: Vec<Option<u16>> = want
                .iter()
                .filter(|(p, _)| *p == to)
                .map(|&(_, t)| t)
                .collect();
            let got = received(r, marker.as_bytes(), expected.len());
            assert_eq!(
                got, expected,
                "broadcast {case} from {} tagged {tag:?}, at {}",
                NAMES[from], NAMES[to]
            );
        }
    }
    let counter = |i: usize, name: &str| d.port_counters("br0", &names[i])[name].as_u64().unwrap();
    assert_eq!(
        counter(A, "rx_vlan_tagged"),
        1,
        "the tagged frame into the access port"
    );
    assert_eq!(
        counter(T, "rx_vlan_untrunked"),
        2,
        "untagged (VLAN 0) and VLAN 30 into the trunk"
    );

    // Known unicast, every address learned above: 20 frames each way, each
    // received exactly once with the tag the egress port's mode says.
    let unicasts: &[(usize, Option<u16>, usize, Option<u16>)] = &[
        (A, None, T, Some(10)),
        (T, Some(10), A, None),
        (NU, None, T, Some(10)),
        (T, Some(10), NU, None),
        (NT, Some(10), NU, None),
        (B, None, T, Some(20)),
        (T, Some(20), B, None),
    ];
    let kernel_before: Vec<u64> = (0..5).map(|i| counter(i, "rx_kernel")).collect();
    for (case, &(from, tag, to, want)) in unicasts.iter().enumerate() {
        let marker = format!("unicast-case-{case}");
        let f = frame(ports[to].mac, ports[from].mac, tag, marker.as_bytes());
        let sent = ports[from].sock.send_all(std::iter::repeat_n(f, 20));
        assert_eq!(sent, 20);
        std::thread::sleep(Duration::from_millis(150));
        for (i, r) in ports.iter_mut().enumerate() {
            if i == from {
                continue;
            }
            let expected = if i == to { vec![want; 20] } else { vec![] };
            let got = received(r, marker.as_bytes(), expected.len());
            assert_eq!(
                got, expected,
                "unicast {case} from {} tagged {tag:?} to {}, at {}",
                NAMES[from], NAMES[to], NAMES[i]
            );
        }
    }
    let in_kernel: Vec<u64> = (0..5)
        .map(|i| counter(i, "rx_kernel") - kernel_before[i])
        .collect();
    if fast_path(flags) {
        for i in [A, T, NU, NT, B] {
            assert!(
                in_kernel[i] > 0,
                "nothing from {} in the kernel: {in_kernel:?}",
                NAMES[i]
            );
        }
    } else {
        assert_eq!(in_kernel, vec![0; 5]);
    }
}

/// `ping -c 1` answered within a second, tried `tries` times.
fn reaches(from: &Host, ip: &str, tries: u32) -> bool {
    (0..tries).any(|_| from.ping_once(ip))
}

/// Two tenants with the same subnet on one bridge and on a second bridge behind
/// a trunk: each reaches its own VLAN only, floods stay inside it, the trunk
/// carries exactly the tags the modes say, and TCP with default offloads crosses
/// the trunk at speed.
fn access_vlans_stay_apart_on_a_bridge_and_across_a_trunk(flags: &[&str]) {
    // Alone: its TCP run fills both CPUs and their backlog queues, where other
    // tests' frames would be dropped.
    let _machine = exclusive_machine();
    let h: Vec<Host> = (1..=5)
        .map(|i| Host::new(&format!("10.42.0.{i}/24")))
        .collect();
    let wire = Wire::new();
    let d = daemon(flags);
    for br in ["br-a", "br-b"] {
        d.ctl_ok(&["add-br", "--no-internal", br]);
    }
    // br-a: h1 and h5 in VLAN 10, h2 in 20; br-b: h3 in 10, h4 in 20.
    for (i, br, tag) in [
        (0, "br-a", 10),
        (4, "br-a", 10),
        (1, "br-a", 20),
        (2, "br-b", 10),
        (3, "br-b", 20),
    ] {
        d.ctl_ok(&["add-port", br, &h[i].port, &format!("tag={tag}")]);
    }
    d.ctl_ok(&["add-port", "br-a", &wire.a, "trunks=10,20"]);
    d.ctl_ok(&["add-port", "br-b", &wire.b, "trunks=10,20"]);

    // tcpdump on both ends of the trunk, started before the first frame crosses
    // it. Each end shows what the other bridge sent (switchd's packet sockets
    // bypass the sending device's taps; the kernel fast path's redirects do not).
    let captures: Vec<_> = [&wire.a, &wire.b]
        .iter()
        .map(|end| {
            let path = std::env::temp_dir().join(format!("{end}.txt"));
            let log = std::env::temp_dir().join(format!("{end}.err"));
            let child = Command::new("tcpdump")
                .args(["-i", end, "-e", "-nn", "-l"])
                .stdout(std::fs::File::create(&path).unwrap())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("tcpdump (apt-get install tcpdump)");
            // It says so on stderr once it captures.
            assert!(
                wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("listening on"))),
                "tcpdump on {end} did not start"
            );
            let _ = std::fs::remove_file(&log);
            (path, ChildGuard(child))
        })
        .collect();

    assert!(h[0].can_ping("10.42.0.5"), "VLAN 10 on one bridge");
    assert!(h[0].can_ping("10.42.0.3"), "VLAN 10 across the trunk");
    assert!(h[1].can_ping("10.42.0.4"), "VLAN 20 across the trunk");
    for (from, to) in [
        (0, "10.42.0.2"),
        (0, "10.42.0.4"),
        (1, "10.42.0.3"),
        (1, "10.42.0.5"),
    ] {
        assert!(
            !reaches(&h[from], to, 2),
            "{} reached {to} in another VLAN",
            h[from].ip
        );
    }

    // A flood in VLAN 10 (ARP for an address nobody has) reaches h5 and not h2.
    let tx = |i: usize, br: &str| {
        d.port_counters(br, &h[i].port)["tx_packets"]
            .as_u64()
            .unwrap()
    };
    let (h2_before, h5_before) = (tx(1, "br-a"), tx(4, "br-a"));
    assert!(!reaches(&h[0], "10.42.0.99", 2));
    assert_eq!(tx(1, "br-a"), h2_before, "VLAN 10's flood reached VLAN 20");
    assert!(tx(4, "br-a") > h5_before, "VLAN 10's flood missed h5");

    // The trunk saw the pings of both VLANs, each with its own tag, none bare.
    assert!(h[0].ping_once("10.42.0.3") && h[1].ping_once("10.42.0.4"));
    std::thread::sleep(Duration::from_millis(300));
    let seen: String = captures
        .iter()
        .map(|(path, _)| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let _ = std::fs::remove_file(path);
            text
        })
        .collect();
    let lines: Vec<&str> = seen.lines().filter(|l| l.contains("ICMP echo")).collect();
    let with = |a: &str, b: &str, tag: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("{a} > {b}")))
            .all(|l| l.contains(tag))
            && lines.iter().any(|l| l.contains(&format!("{a} > {b}")))
    };
    assert!(with("10.42.0.1", "10.42.0.3", "vlan 10,"), "{seen}");
    assert!(with("10.42.0.3", "10.42.0.1", "vlan 10,"), "{seen}");
    assert!(with("10.42.0.2", "10.42.0.4", "vlan 20,"), "{seen}");
    let frames: Vec<&str> = seen.lines().filter(|l| l.contains(" > ")).collect();
    assert!(
        frames.iter().all(|l| l.contains("802.1Q")),
        "an untagged frame on the trunk:\n{seen}"
    );

    // TCP between access ports across the trunk, the namespaces' default offloads on.
    let port_kernel = |i: usize, br: &str| {
        d.port_counters(br, &h[i].port)["rx_kernel"]
            .as_u64()
            .unwrap()
    };
    let kernel_before = port_kernel(0, "br-a");
    let (gbps, _) = measure::tcp(&h[0].ns, &h[2].ns, "10.42.0.3", 1, 2);
    eprintln!("TCP access -> trunk -> access with {flags:?}: {gbps:.2} Gbit/s");
    assert!(
        gbps > 0.2,
        "TCP across the trunk moved {gbps:.3} Gbit/s; log:\n{}",
        d.log()
    );
    let in_kernel = port_kernel(0, "br-a") - kernel_before;
    assert_eq!(
        in_kernel > 0,
        fast_path(flags),
        "{in_kernel} frames in the kernel"
    );
}

/// The VLAN columns: what is refused and leaves nothing behind, `set`/`clear`
/// and `--` chains, `show` in text and JSON, fdb-show's and fdb-flush's VLANs,
/// changes on a running port, and restart and kill -9.
#[test]
fn vlan_settings_are_checked_shown_changed_and_kept() {
    let _machine = shared_machine();
    let (h1, h2) = (Host::new("10.43.0.1/24"), Host::new("10.43.0.2/24"));
    let mut d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let refused = |d: &Daemon, args: &[&str], why: &str| d.ctl_refused(args, why);
    let p1 = h1.port.as_str();
    refused(&d, &["add-port", "br0", p1, "tag=4095"], "4095 is reserved");
    refused(&d, &["add-port", "br0", p1, "tag=ten"], "not a VLAN id");
    refused(
        &d,
        &["add-port", "br0", p1, "trunks=10,4096"],
        "out of range",
    );
    refused(
        &d,
        &["add-port", "br0", p1, "tag=10", "trunks=20"],
        "an access port has no trunks",
    );
    refused(
        &d,
        &["add-port", "br0", p1, "vlan_mode=access"],
        "needs a tag",
    );
    refused(
        &d,
        &["add-port", "br0", p1, "vlan_mode=trunk", "tag=3"],
        "a trunk port has no tag",
    );
    refused(
        &d,
        &["add-port", "br0", p1, "vlan_mode=hybrid"],
        "not one of",
    );
    assert_eq!(
        d.ctl_ok(&["list-ports", "br0"]),
        "",
        "a refused add-port left a port"
    );
    refused(
        &d,
        &["set", "port", "nosuch", "tag=1"],
        "no port named nosuch",
    );
    refused(
        &d,
        &["set", "bridge", "br0", "tag=1"],
        "unknown bridge setting \"tag\"",
    );
    refused(
        &d,
        &["set", "qos", "q0", "tag=1"],
        "clears only the port table",
    );
    refused(
        &d,
        &["clear", "bridge", "br0", "tag"],
        "clears only the port table",
    );

    // One transaction: the port is born in VLAN 10.
    d.ctl_ok(&["add-port", "br0", p1, "--", "set", "port", p1, "tag=10"]);
    d.ctl_ok(&["add-port", "br0", &h2.port, "tag=20"]);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!("    Port {p1}\n        tag: 10\n")),
        "{show}"
    );
    assert!(!h1.can_ping(&h2.ip), "VLANs 10 and 20 are apart");

    // Live changes: into one VLAN, then a native-untagged port, then untagged.
    d.ctl_ok(&["set", "port", &h2.port, "tag=10"]);
    assert!(h1.can_ping(&h2.ip), "both in VLAN 10 now");
    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    assert!(
        fdb.as_array().unwrap().iter().all(|e| e["vlan"] == 10),
        "{fdb}"
    );
    assert_eq!(
        d.ctl_ok(&["fdb-show", "br0"])
            .lines()
            .filter(|l| l.contains("  10  "))
            .count(),
        2
    );
    d.ctl_ok(&[
        "set",
        "port",
        &h2.port,
        "vlan_mode=native-untagged",
        "trunks=20,30",
    ]);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "    Port {}\n        tag: 10\n        trunks: [20, 30]\n        vlan_mode: native-untagged\n",
            h2.port
        )),
        "{show}"
    );
    let json = d.ctl_json(&["show"]);
    let p2 = json["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == h2.port.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (p2["tag"].clone(), p2["trunks"].clone()),
        (10.into(), serde_json::json!([20, 30]))
    );
    assert_eq!(p2["vlan_mode"], "native-untagged");
    assert!(h1.can_ping(&h2.ip), "the native VLAN is 10");
    refused(&d, &["clear", "port", &h2.port, "tag"], "needs a tag");
    refused(
        &d,
        &["clear", "port", &h2.port, "color"],
        "unknown port column",
    );
    assert!(
        d.ctl_ok(&["show"]).contains("vlan_mode: native-untagged"),
        "a refused clear changed nothing"
    );
    // In a chain only the end state must make sense, as in an ovsdb transaction.
    d.ctl_ok(&[
        "clear",
        "port",
        &h2.port,
        "tag",
        "--",
        "set",
        "port",
        &h2.port,
        "vlan_mode=trunk",
    ]);
    assert!(d
        .ctl_ok(&["show"])
        .contains("        trunks: [20, 30]\n        vlan_mode: trunk\n"));
    d.ctl_ok(&["clear", "port", &h2.port, "tag", "trunks", "vlan_mode"]);
    assert!(
        !h1.can_ping(&h2.ip),
        "VLAN 10 and the untagged VLAN 0 are apart"
    );
    let p2 = &d.ctl_json(&["show"])["bridges"][0]["ports"];
    assert!(
        p2.to_string().matches("\"tag\"").count() == 1,
        "only p1 has a tag: {p2}"
    );

    // A failed chain takes its `set port` back, in the database and on the port.
    refused(
        &d,
        &[
            "set", "port", &h2.port, "tag=30", "--", "add-port", "br0", "nosuch0",
        ],
        "command 2 (add-port)",
    );
    assert!(!d.ctl_ok(&["show"]).contains("tag: 30"));
    assert!(
        !reaches(&h1, &h2.ip, 1),
        "h2 is still untagged, h1 in VLAN 10"
    );

    // fdb-flush of one VLAN.
    d.ctl_ok(&["set", "port", &h2.port, "tag=10"]);
    assert!(h1.can_ping(&h2.ip));
    d.ctl_ok(&["fdb-flush", "br0", "--vlan", "20"]);
    assert_eq!(
        d.ctl_json(&["fdb-show", "br0"]).as_array().unwrap().len(),
        2
    );
    refused(&d, &["fdb-flush", "br0", "--vlan", "4095"], "out of range");
    d.ctl_ok(&["fdb-flush", "br0", "--vlan", "10"]);
    assert_eq!(d.ctl_json(&["fdb-show", "br0"]), serde_json::json!([]));

    // Kept across a restart and a kill -9.
    d.ctl_ok(&["set", "port", &h2.port, "tag=20"]);
    for crash in [false, true] {
        if crash {
            d.kill9();
        } else {
            d.stop();
        }
        d.restart();
        let show = d.ctl_ok(&["show"]);
        assert!(
            show.contains(&format!("    Port {}\n        tag: 20\n", h2.port)),
            "{show}"
        );
        assert!(
            !reaches(&h1, &h2.ip, 2),
            "isolated after restart (crash: {crash})"
        );
    }
    d.ctl_ok(&["set", "port", p1, "tag=20"]);
    assert!(h1.can_ping(&h2.ip));
}

/// IEEE 802.1Q's reserved group addresses 01:80:C2:00:00:00 to 0F (STP, PAUSE,
/// LACP, 802.1X, LLDP...) are not relayed, and are counted; `forward-bpdu=true`
/// relays them all, `group-fwd-mask` the chosen ones.
#[test]
fn reserved_group_addresses_are_dropped_unless_relayed() {
    let _machine = shared_machine();
    let (mut from, mut to) = (raw(61), raw(62));
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &from.host.port]);
    d.ctl_ok(&["add-port", "br0", &to.host.port]);
    let mut round = 0;
    let mut relayed = |from: &mut Raw, to: &mut Raw| -> Vec<u8> {
        round += 1;
        for n in 0..=0x0f_u8 {
            let marker = format!("reserved-{round}-{n}");
            from.sock.send(&frame(
                [0x01, 0x80, 0xc2, 0, 0, n],
                from.mac,
                None,
                marker.as_bytes(),
            ));
        }
        // A broadcast after them: once it is through, so is what came before.
        let end = format!("reserved-{round}-end");
        from.sock
            .send(&frame(BROADCAST, from.mac, None, end.as_bytes()));
        let frames = to.sock.recv_until(Duration::from_secs(5), |f| {
            f.windows(end.len()).any(|w| w == end.as_bytes())
        });
        assert!(
            frames
                .last()
                .is_some_and(|f| f.windows(end.len()).any(|w| w == end.as_bytes())),
            "the broadcast after the reserved frames did not arrive"
        );
        (0..=0x0f_u8)
            .filter(|n| {
                let marker = format!("reserved-{round}-{n}");
                frames.iter().any(|f| {
                    f[..6] == [0x01, 0x80, 0xc2, 0, 0, *n]
                        && f.windows(marker.len()).any(|w| w == marker.as_bytes())
                })
            })
            .collect()
    };
    assert_eq!(relayed(&mut from, &mut to), Vec::<u8>::new());
    assert_eq!(d.port_counters("br0", &from.host.port)["rx_reserved"], 16);

    d.ctl_ok(&["set-br", "br0", "forward-bpdu=true"]);
    assert!(d.ctl_ok(&["show"]).contains("    forward-bpdu: true\n"));
    assert_eq!(relayed(&mut from, &mut to), (0..=0x0f).collect::<Vec<u8>>());

    d.ctl_ok(&["set-br", "br0", "group-fwd-mask=0x4008"]);
    assert!(d.ctl_ok(&["show"]).contains("    group-fwd-mask: 0x4008\n"));
    assert_eq!(relayed(&mut from, &mut to), vec![0x03, 0x0e]);
    assert_eq!(
        d.port_counters("br0", &from.host.port)["rx_reserved"],
        16 + 14
    );

    let out = d.ctl(&["set-br", "br0", "forward-bpdu=maybe"]);
    assert!(!out.status.success());
    let out = d.ctl(&["set-br", "br0", "forward-bpdu=true", "group-fwd-mask=1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give one"));
    d.ctl_ok(&["set-br", "br0", "forward-bpdu=false"]);
    assert!(!d.ctl_ok(&["show"]).contains("forward-bpdu"));
    assert_eq!(relayed(&mut from, &mut to), Vec::<u8>::new());
}

/// Who reaches whom in the two-bridge, two-VLAN topology above, as a matrix of
/// (from, to, reached).
fn reachability(h: &[Host]) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    for from in [0, 1] {
        for to in 0..h.len() {
            if to != from {
                out.push((from, to, reaches(&h[from], &h[to].ip, 3)));
            }
        }
    }
    out
}

/// The same access/trunk topology and the same pings through Open vSwitch's
/// userspace datapath and through switchd give the same answers.
#[test]
fn vlans_answer_as_open_vswitch_does() {
    let _machine = exclusive_machine();
    let ovs = match Ovs::start() {
        Ok(ovs) => ovs,
        Err(why) => {
            eprintln!("SKIPPED: Open vSwitch cannot start here: {why}");
            return;
        }
    };
    let h: Vec<Host> = (1..=5)
        .map(|i| Host::new(&format!("10.44.0.{i}/24")))
        .collect();
    let wire = Wire::new();
    // h1, h5 VLAN 10 and h2 VLAN 20 on one bridge; h3 native-untagged 10 (+20)
    // and h4 VLAN 20 on the other; the trunk between carries 10 and 20.
    let topology = |add_br: &dyn Fn(&str), add_port: &dyn Fn(&str, &str, &[&str])| {
        let (a, b) = (
            crate::util::unique_name("vla"),
            crate::util::unique_name("vlb"),
        );
        add_br(&a);
        add_br(&b);
        add_port(&a, &h[0].port, &["tag=10"]);
        add_port(&a, &h[4].port, &["tag=10"]);
        add_port(&a, &h[1].port, &["tag=20"]);
        add_port(
            &b,
            &h[2].port,
            &["vlan_mode=native-untagged", "tag=10", "trunks=20"],
        );
        add_port(&b, &h[3].port, &["tag=20"]);
        add_port(&a, &wire.a, &["trunks=10,20"]);
        add_port(&b, &wire.b, &["trunks=10,20"]);
    };
    // Open vSwitch, unlike switchd, does not set its ports up.
    for port in h.iter().map(|h| &h.port).chain([&wire.a, &wire.b]) {
        crate::util::run("ip", &["link", "set", port, "up"]);
    }
    let vsctl = |args: &[&str]| ovs.vsctl(args).unwrap_or_else(|e| panic!("ovs-vsctl: {e}"));
    topology(
        &|br| {
            ovs.add_netdev_bridge(br)
                .unwrap_or_else(|e| panic!("ovs-vsctl: {e}"));
        },
        &|br, port, cols| {
            let mut args = vec!["add-port", br, port];
            args.extend_from_slice(cols);
            vsctl(&args);
        },
    );
    // Open vSwitch learns a port's interface asynchronously: wait for a known pair.
    wait_until(Duration::from_secs(10), || h[0].ping_once(&h[4].ip));
    let reference = reachability(&h);
    drop(ovs);

    let d = Daemon::start();
    topology(
        &|br| {
            d.ctl_ok(&["add-br", "--no-internal", br]);
        },
        &|br, port, cols| {
            let mut args = vec!["add-port", br, port];
            args.extend_from_slice(cols);
            d.ctl_ok(&args);
        },
    );
    let ours = reachability(&h);
    eprintln!("Open vSwitch: {reference:?}\nswitchd:      {ours:?}");
    assert!(reference.iter().any(|r| r.2) && reference.iter().any(|r| !r.2));
    assert_eq!(ours, reference);
}

/// `add-ns-port --tag`: the one-command path, refused whole when the VLAN is bad.
#[test]
fn add_ns_port_takes_vlan_settings() {
    let _machine = shared_machine();
    let (ns1, ns2) = (crate::util::Netns::new(), crate::util::Netns::new());
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let host = |ns: &crate::util::Netns| format!("h{}", &ns.name[3..]);
    let (p1, p2) = (host(&ns1), host(&ns2));
    let out = d.ctl(&[
        "add-ns-port",
        "br0",
        &ns1.name,
        "--ip",
        "10.45.0.1/24",
        "--host-ifname",
        &p1,
        "--tag",
        "4095",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("4095 is reserved"));
    assert!(
        crate::util::netns::link_absent(&p1),
        "a refused add-ns-port left its veth"
    );
    d.ctl_ok(&[
        "add-ns-port",
        "br0",
        &ns1.name,
        "--ip",
        "10.45.0.1/24",
        "--host-ifname",
        &p1,
        "--tag",
        "10",
    ]);
    d.ctl_ok(&[
        "add-ns-port",
        "br0",
        &ns2.name,
        "--ip",
        "10.45.0.2/24",
        "--host-ifname",
        &p2,
        "--vlan-mode",
        "native-untagged",
        "--tag",
        "10",
        "--trunks",
        "20,30",
    ]);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "    Port {p1}\n        netns: {} (eth0)\n        tag: 10\n",
            ns1.name
        )),
        "{show}"
    );
    assert!(
        show.contains("        trunks: [20, 30]\n        vlan_mode: native-untagged\n"),
        "{show}"
    );
    let ping = ns1.exec(&["ping", "-c", "1", "-W", "2", "10.45.0.2"]);
    assert!(ping.status.success(), "the native VLAN of p2 is p1's");
}
