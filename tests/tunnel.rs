//! VXLAN tunnel ports between hosts. Each host is a namespace on a shared
//! underlay (a kernel bridge in a namespace of its own); switchd runs inside a
//! host (`ip netns exec HOST switchd`), and its "containers" are namespaces whose
//! veths' host ends are in that host. The far host is the kernel's own bridge
//! and vxlan device, or another switchd.

use crate::util::ovs::Ovs;
use crate::util::{checksum, exclusive_machine, frame, shared_machine, wait_until, Daemon, Netns};
use serde_json::Value;
use std::time::Duration;

on_both_datapaths!(interoperates_with_the_kernel_vxlan_device);

/// The underlay: a bridge in a namespace, and hosts joined to it.
struct Underlay {
    ns: Netns,
}

impl Underlay {
    fn new() -> Underlay {
        let ns = Netns::new();
        ns.exec_ok(&["ip", "link", "add", "ubr", "type", "bridge"]);
        ns.exec_ok(&["ip", "link", "set", "ubr", "up"]);
        Underlay { ns }
    }

    /// A host with underlay address 10.200.0.`i`/24 on its eth0.
    fn host(&self, i: u8) -> Netns {
        let host = Netns::new();
        let port = format!("p{i}");
        self.ns.exec_ok(&[
            "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
        ]);
        self.ns
            .exec_ok(&["ip", "link", "set", &port, "master", "ubr", "up"]);
        host.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.200.0.{i}/24"),
            "dev",
            "eth0",
        ]);
        host.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        host
    }
}

fn underlay_ip(i: u8) -> String {
    format!("10.200.0.{i}")
}

/// switchd inside `host`, with bridge br0.
fn switchd_in(host: &Netns, flags: &[&str]) -> Daemon {
    let mut args = vec!["--log-level", "debug"];
    args.extend_from_slice(flags);
    let d = Daemon::start_under(&["ip", "netns", "exec", &host.name], &args);
    d.ctl_ok(&["add-br", "br0"]);
    d
}

/// A container on a switchd host: a namespace with eth0 at `cidr`.
fn container(d: &Daemon, cidr: &str) -> Netns {
    let c = Netns::new();
    d.ctl_ok(&["add-ns-port", "br0", &c.name, "--ip", cidr]);
    c
}

/// `host` gets the kernel's bridge `kbr` with a vxlan device for VNI `vni` to
/// `remote` (from `local`, if given) and a container at `cidr`.
fn kernel_host(host: &Netns, vni: u32, remote: &str, local: Option<&str>, cidr: &str) -> Netns {
    let sh = |args: &[&str]| host.exec_ok(args);
    sh(&["ip", "link", "add", "kbr", "type", "bridge"]);
    sh(&["ip", "link", "set", "kbr", "up"]);
    let vni = vni.to_string();
    let mut vxlan = vec![
        "ip", "link", "add", "vx", "type", "vxlan", "id", &vni, "remote", remote, "dstport",
        "4789", "dev", "eth0",
    ];
    if let Some(local) = local {
        vxlan.extend_from_slice(&["local", local]);
    }
    sh(&vxlan);
    sh(&["ip", "link", "set", "vx", "master", "kbr", "up"]);
    let c = Netns::new();
    sh(&[
        "ip", "link", "add", "cport", "type", "veth", "peer", "name", "eth0", "netns", &c.name,
    ]);
    sh(&["ip", "link", "set", "cport", "master", "kbr", "up"]);
    c.exec_ok(&["ip", "addr", "add", cidr, "dev", "eth0"]);
    c.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    c
}

fn add_tunnel(d: &Daemon, name: &str, options: &[&str]) {
    let mut args = vec![
        "add-port",
        "br0",
        name,
        "--",
        "set",
        "interface",
        name,
        "type=vxlan",
    ];
    args.extend_from_slice(options);
    d.ctl_ok(&args);
}

fn port(d: &Daemon, name: &str) -> Value {
    let show = d.ctl_json(&["show"]);
    show["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no port {name} in {show}"))
}

fn is_up(d: &Daemon, name: &str) -> bool {
    let p = port(d, name);
    p["error"].is_null() && p["down"].is_null()
}

fn counter(d: &Daemon, port: &str, name: &str) -> u64 {
    d.port_counters("br0", port)[name].as_u64().unwrap()
}

fn can_ping(from: &Netns, ip: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        from.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", ip])
            .status
            .success()
    })
}

fn ping_size(from: &Netns, ip: &str, payload: u32, count: u32) -> bool {
    let (payload, count) = (payload.to_string(), count.to_string());
    from.exec(&[
        "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", "-M", "do", "-s", &payload, ip,
    ])
    .status
    .success()
}

/// Bytes iperf3 received in a short TCP run from `client` to `server_ip`.
fn tcp_bytes(server: &Netns, client: &Netns, server_ip: &str) -> u64 {
    let _server = server.spawn(&["iperf3", "-s", "-1", "-p", "5251"]);
    assert!(
        wait_until(Duration::from_secs(10), || server
            .exec_ok(&["ss", "-ltn"])
            .contains(":5251")),
        "iperf3 -s did not listen"
    );
    let out = client.exec(&[
        "timeout", "20", "iperf3", "-c", server_ip, "-p", "5251", "-t", "2", "-J",
    ]);
    assert!(
        out.status.success(),
        "iperf3 over the tunnel failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["end"]["sum_received"]["bytes"].as_u64().unwrap()
}

/// switchd on host A, the kernel's bridge and vxlan device on host B: ARP,
/// ping, TCP both ways with the default offloads (GSO through the tunnel), a
/// full-size inner frame, and one byte more dropped and counted, not fragmented.
fn interoperates_with_the_kernel_vxlan_device(flags: &[&str]) {
    let _machine = exclusive_machine();
    let underlay = Underlay::new();
    let (a, b) = (underlay.host(1), underlay.host(2));
    let c2 = kernel_host(&b, 42, &underlay_ip(1), None, "10.0.0.2/24");
    let d = switchd_in(&a, flags);
    let c1 = container(&d, "10.0.0.1/24");
    add_tunnel(
        &d,
        "vx1",
        &["options:remote_ip=10.200.0.2", "options:key=42"],
    );
    let vx1 = port(&d, "vx1");
    assert_eq!(vx1["type"], "vxlan");
    assert_eq!(vx1["options"]["remote_ip"], "10.200.0.2");
    assert_eq!(vx1["options"]["key"], "42");
    assert_eq!(vx1["mtu"], 1450, "{vx1}");
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains("        type: vxlan\n        options: {key=\"42\", remote_ip=\"10.200.0.2\"}\n        mtu: 1450\n        state: up\n"),
        "{show}"
    );

    assert!(can_ping(&c1, "10.0.0.2"), "no ping across the tunnel");
    assert!(can_ping(&c2, "10.0.0.1"), "no ping back");
    // c2's MAC was learned on the tunnel port, from its remote.
    let c2_mac = c2
        .exec_ok(&["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string();
    let fdb = d.ctl_json(&["fdb-show", "br0"]);
    let row = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mac"] == c2_mac.as_str())
        .unwrap_or_else(|| panic!("{c2_mac} not learned: {fdb}"));
    assert_eq!(row["port"], "vx1");
    assert_eq!(row["remote"], "10.200.0.2");

    // What the remote sends is taken off the underlay by switchd's program,
    // before the vxlan device (which would allocate metadata for each frame).
    let device_rx = || -> u64 {
        let n = a.exec_ok(&["cat", "/sys/class/net/vxlan_sys_4789/statistics/rx_packets"]);
        n.trim().parse().unwrap()
    };
    let device_before = device_rx();
    // 1450 bytes of IP is the largest inner packet a 1500-byte underlay carries.
    assert!(
        ping_size(&c1, "10.0.0.2", 1450 - 28, 3),
        "full-size frames lost"
    );
    assert_eq!(
        device_rx() - device_before,
        0,
        "the replies went through the vxlan device, not the underlay's program"
    );
    let too_big = counter(&d, "vx1", "tx_too_big");
    assert!(
        !ping_size(&c1, "10.0.0.2", 1450 - 28 + 1, 3),
        "a frame 1 byte too big for the tunnel got through (fragmented?)"
    );
    assert_eq!(
        counter(&d, "vx1", "tx_too_big") - too_big,
        3,
        "{:?}",
        d.port_counters("br0", "vx1")
    );

    // TCP segments must fit the tunnel too: the namespaces' MTU is what a user
    // sets (docs/TUNNELS.md).
    for c in [&c1, &c2] {
        c.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1450"]);
    }
    let kernel_before = (
        counter(&d, "vx1", "tx_kernel"),
        counter(&d, "vx1", "rx_kernel"),
    );
    let veth_rx = || -> u64 {
        let n = a.exec_ok(&["cat", "/sys/class/net/vx1/statistics/rx_packets"]);
        n.trim().parse().unwrap()
    };
    let veth_before = veth_rx();
    let device_before = device_rx();
    let to_b = tcp_bytes(&c2, &c1, "10.0.0.2");
    // Its ACKs came by the underlay's program (GSO frames would not).
    assert!(
        device_rx() - device_before < 10,
        "{} frames through the vxlan device",
        device_rx() - device_before
    );
    let to_a = tcp_bytes(&c1, &c2, "10.0.0.1");
    assert!(to_b > 0 && to_a > 0, "TCP moved {to_b} and {to_a} bytes");
    if flags.is_empty() {
        let sent = counter(&d, "vx1", "tx_kernel") - kernel_before.0;
        let received = counter(&d, "vx1", "rx_kernel") - kernel_before.1;
        assert!(
            sent > 1000 && received > 1000,
            "TCP over the tunnel did not take the kernel fast path: {:?}",
            d.port_counters("br0", "vx1")
        );
        // From the remote, known unicast goes from the vxlan device straight to
        // its local port, not through the tunnel's veth.
        let through_veth = veth_rx() - veth_before;
        assert!(
            through_veth < received / 10,
            "{through_veth} frames through the veth, {received} forwarded in the kernel"
        );
    }
    assert_eq!(counter(&d, "vx1", "tx_no_route"), 0);

    // With its local address given, the tunnel still receives off the
    // underlay (a route looked up from a source names none of its own).
    d.ctl_ok(&["set", "interface", "vx1", "options:local_ip=10.200.0.1"]);
    assert!(can_ping(&c1, "10.0.0.2"), "no ping with local_ip set");
    let device_before = device_rx();
    assert!(
        ping_size(&c1, "10.0.0.2", 100, 3),
        "pings lost with local_ip set"
    );
    assert_eq!(
        device_rx() - device_before,
        0,
        "with local_ip set, the replies went through the vxlan device"
    );
}

/// switchd on host A, Open vSwitch's userspace datapath with a vxlan port on
/// host B: ARP, ping and TCP both ways. Open vSwitch 3.1 neither tunnels nor
/// decapsulates packets whose checksums are left to offload: B's container and
/// A's underlay link send with `tx off`, as anyone running it over veths must.
#[test]
fn interoperates_with_open_vswitch() {
    let _machine = exclusive_machine();
    let underlay = Underlay::new();
    let (a, b) = (underlay.host(1), underlay.host(2));
    let ovs = match Ovs::start_in(Some(&b.name)) {
        Ok(ovs) => ovs,
        Err(why) => {
            eprintln!("SKIPPED: Open vSwitch cannot start here: {why}");
            return;
        }
    };
    let c2 = Netns::new();
    b.exec_ok(&[
        "ip", "link", "add", "c", "type", "veth", "peer", "name", "eth0", "netns", &c2.name,
    ]);
    c2.exec_ok(&["ip", "addr", "add", "10.3.0.2/24", "dev", "eth0"]);
    c2.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1450", "up"]);
    c2.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    ovs.vxlan_host("eth0", "10.200.0.2/24", "c", &underlay_ip(1), 42)
        .unwrap_or_else(|e| panic!("Open vSwitch: {e}"));
    a.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
    let d = switchd_in(&a, &[]);
    add_tunnel(
        &d,
        "vx1",
        &["options:remote_ip=10.200.0.2", "options:key=42"],
    );
    let c1 = container(&d, "10.3.0.1/24");
    assert!(
        can_ping(&c1, "10.3.0.2"),
        "no ping to Open vSwitch's side; {}",
        ovs.appctl(&["tnl/arp/show"]).unwrap_or_default()
    );
    assert!(can_ping(&c2, "10.3.0.1"), "no ping back");
    let to_b = tcp_bytes(&c2, &c1, "10.3.0.2");
    let to_a = tcp_bytes(&c1, &c2, "10.3.0.1");
    assert!(to_b > 0 && to_a > 0, "TCP moved {to_b} and {to_a} bytes");
}

/// Three switchd hosts, one VNI: A has a tunnel to B and one to C, B and C one
/// to A each. Every container reaches every other (B to C through A); C going
/// away does not disturb A and B.
#[test]
fn two_remotes_with_one_vni() {
    let _machine = shared_machine();
    let underlay = Underlay::new();
    let hosts: Vec<Netns> = (1..=3).map(|i| underlay.host(i)).collect();
    let mut daemons: Vec<Daemon> = hosts.iter().map(|h| switchd_in(h, &[])).collect();
    let key = "options:key=7";
    add_tunnel(&daemons[0], "vxb", &["options:remote_ip=10.200.0.2", key]);
    add_tunnel(&daemons[0], "vxc", &["options:remote_ip=10.200.0.3", key]);
    add_tunnel(&daemons[1], "vxa", &["options:remote_ip=10.200.0.1", key]);
    add_tunnel(&daemons[2], "vxa", &["options:remote_ip=10.200.0.1", key]);
    // add-ns-port on a bridge with tunnels gives the namespace the tunnels' MTU.
    let containers: Vec<Netns> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| container(d, &format!("10.1.0.{}/24", i + 1)))
        .collect();
    for c in &containers {
        let mtu = c.exec_ok(&["cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(mtu.trim(), "1450");
    }
    for (i, from) in containers.iter().enumerate() {
        for j in 0..3 {
            if i != j {
                let ip = format!("10.1.0.{}", j + 1);
                assert!(can_ping(from, &ip), "container {i} cannot reach {ip}");
            }
        }
    }
    // Two ports with the same remote and key would both claim its frames.
    let clash = daemons[0].ctl(&[
        "add-port",
        "br0",
        "vxb2",
        "--",
        "set",
        "interface",
        "vxb2",
        "type=vxlan",
        "options:remote_ip=10.200.0.2",
        key,
    ]);
    assert!(!clash.status.success());
    assert!(
        String::from_utf8_lossy(&clash.stderr).contains("vxb has the same"),
        "{clash:?}"
    );
    assert!(hosts[0].exec(&["ip", "link", "show", "vxb2"]).status.code() != Some(0));

    // A remote host's address installed instead of learned: on its tunnel,
    // with its remote, kept.
    daemons[0].ctl_ok(&["fdb-add", "br0", "02:00:00:00:07:07", "vxb"]);
    let fdb = daemons[0].ctl_json(&["fdb-show", "br0"]);
    let row = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mac"] == "02:00:00:00:07:07")
        .cloned()
        .unwrap_or_else(|| panic!("{fdb}"));
    assert_eq!(
        (&row["port"], &row["static"], &row["remote"]),
        (&"vxb".into(), &true.into(), &"10.200.0.2".into())
    );

    daemons[2].kill9();
    hosts[2].exec_ok(&["ip", "link", "set", "eth0", "down"]);
    assert!(
        can_ping(&containers[0], "10.1.0.2"),
        "A and B lost each other when C went away"
    );
    assert!(can_ping(&containers[1], "10.1.0.1"));
    assert!(is_up(&daemons[0], "vxb") && is_up(&daemons[0], "vxc"));

    // A bridge goes with its tunnels' devices.
    daemons[0].ctl_ok(&["del-br", "br0"]);
    let links = hosts[0].exec_ok(&["ip", "-o", "link", "show"]);
    for name in ["vxb", "vxc", "vxlan_sys_4789", "sdt"] {
        assert!(
            !links.contains(&format!(": {name}")),
            "{name} left: {links}"
        );
    }
}

/// Bad options are refused with nothing made; a tunnel whose remote has no
/// route is down (and counts what it drops) until the route appears; the
/// tunnel comes back after SIGTERM and kill -9; del-port takes every device
/// away; no device switchd made speaks IPv6.
#[test]
fn tunnels_follow_the_underlay_persist_and_refuse_bad_options() {
    let _machine = shared_machine();
    let underlay = Underlay::new();
    let (a, b) = (underlay.host(1), underlay.host(2));
    // Devices made from now on would have IPv6 on, were switchd not to turn it off.
    a.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"]);
    // B's tunnel end is 10.201.0.2, to which A has no route yet.
    b.exec_ok(&["ip", "addr", "add", "10.201.0.2/32", "dev", "eth0"]);
    let c2 = kernel_host(&b, 99, &underlay_ip(1), Some("10.201.0.2"), "10.2.0.2/24");
    let mut d = switchd_in(&a, &[]);
    let c1 = container(&d, "10.2.0.1/24");
    // Someone else's interface, under the name a tunnel would take.
    a.exec_ok(&[
        "ip", "link", "add", "vxx", "type", "veth", "peer", "name", "vxy",
    ]);
    let before = d.ctl_json(&["show"]);
    let links_before = a.exec_ok(&["ip", "-o", "link", "show"]);
    for (options, why) in [
        (
            vec!["type=vxlan", "options:key=99"],
            "needs options:remote_ip",
        ),
        (
            vec!["type=vxlan", "options:remote_ip=10.200.0.256"],
            "not an IPv4 address",
        ),
        (
            vec![
                "type=vxlan",
                "options:remote_ip=10.200.0.2",
                "options:key=16777216",
            ],
            "0 to 16777215",
        ),
        (
            vec!["type=gre", "options:remote_ip=10.200.0.2"],
            "not supported",
        ),
        (
            vec!["options:remote_ip=10.200.0.2"],
            "options apply to tunnel ports",
        ),
        (
            vec![
                "type=vxlan",
                "options:remote_ip=10.200.0.2",
                "options:psk=x",
            ],
            "unknown vxlan option",
        ),
    ] {
        let mut args = vec!["add-port", "br0", "vx1", "--", "set", "interface", "vx1"];
        args.extend_from_slice(&options);
        let out = d.ctl(&args);
        assert!(!out.status.success(), "{options:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{options:?}: {stderr}");
        assert_eq!(d.ctl_json(&["show"]), before, "{options:?} left a port");
        assert_eq!(
            a.exec_ok(&["ip", "-o", "link", "show"]),
            links_before,
            "{options:?} left an interface"
        );
    }

    let taken = d.ctl(&[
        "add-port",
        "br0",
        "vxx",
        "--",
        "set",
        "interface",
        "vxx",
        "type=vxlan",
        "options:remote_ip=10.200.0.2",
    ]);
    assert!(!taken.status.success());
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("exists already"),
        "{taken:?}"
    );
    assert_eq!(d.ctl_json(&["show"]), before);
    assert_eq!(
        a.exec_ok(&["ip", "-o", "link", "show"]),
        links_before,
        "a refused tunnel left its vxlan device"
    );

    // No route to 10.201.0.2 yet: down, dropping and counting.
    add_tunnel(
        &d,
        "vx1",
        &["options:remote_ip=10.201.0.2", "options:key=99"],
    );
    let down = port(&d, "vx1")["down"].clone();
    assert_eq!(down, "no route to 10.201.0.2", "{}", port(&d, "vx1"));
    assert!(!c1
        .exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", "10.2.0.2"])
        .status
        .success());
    assert!(counter(&d, "vx1", "tx_no_route") > 0);
    // The route appears: the tunnel comes up by itself.
    a.exec_ok(&["ip", "route", "add", "10.201.0.2/32", "via", "10.200.0.2"]);
    assert!(
        wait_until(Duration::from_secs(5), || is_up(&d, "vx1")),
        "{}",
        port(&d, "vx1")
    );
    assert!(can_ping(&c1, "10.2.0.2"), "no ping once the route appeared");

    for name in ["vx1", "vxlan_sys_4789"] {
        let v6 = a.exec_ok(&[
            "cat",
            &format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"),
        ]);
        assert_eq!(v6.trim(), "1", "IPv6 on for {name}");
    }
    let far: Vec<String> = a
        .exec_ok(&["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| n.starts_with("sdt"))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect();
    assert_eq!(far.len(), 1, "{far:?}");
    let v6 = a.exec_ok(&[
        "cat",
        &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", far[0]),
    ]);
    assert_eq!(v6.trim(), "1", "IPv6 on for {}", far[0]);

    // The bridge's TAP is made anew; everything else is as it was.
    let shown = |d: &Daemon| {
        let mut show = d.ctl_json(&["show"]);
        for p in show["bridges"][0]["ports"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("ifindex");
        }
        show
    };
    let before = shown(&d);
    d.stop();
    d.restart();
    assert_eq!(shown(&d), before);
    assert!(can_ping(&c2, "10.2.0.1"), "after a restart");
    d.kill9();
    d.restart();
    assert!(
        wait_until(Duration::from_secs(5), || is_up(&d, "vx1")),
        "{}",
        d.ctl_ok(&["show"])
    );
    assert!(can_ping(&c2, "10.2.0.1"), "after kill -9");

    // Options change live, saved; the type does not change.
    d.ctl_ok(&["set", "interface", "vx1", "options:key=100"]);
    assert_eq!(port(&d, "vx1")["options"]["key"], "100");
    assert!(
        !c1.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", "10.2.0.2"])
            .status
            .success(),
        "VNI 100 reached B's VNI 99"
    );
    d.ctl_ok(&["set", "interface", "vx1", "options:key=99"]);
    assert!(can_ping(&c1, "10.2.0.2"), "back on VNI 99");
    let retype = d.ctl(&["set", "interface", "vx1", "type=system"]);
    assert!(!retype.status.success());
    assert!(String::from_utf8_lossy(&retype.stderr).contains("cannot change"));
    assert!(can_ping(&c1, "10.2.0.2"), "after a refused type change");
    let devices = a.exec_ok(&["ip", "-o", "link", "show", "type", "vxlan"]);
    assert_eq!(devices.lines().count(), 1, "{devices}");
    // Another UDP port: its own device, and the old one goes.
    let vxlan_devices = || -> Vec<String> {
        a.exec_ok(&["ip", "-o", "link", "show", "type", "vxlan"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    };
    d.ctl_ok(&["set", "interface", "vx1", "options:dst_port=4790"]);
    assert_eq!(vxlan_devices(), ["vxlan_sys_4790"]);
    d.ctl_ok(&["set", "interface", "vx1", "options:dst_port=4789"]);
    assert_eq!(vxlan_devices(), ["vxlan_sys_4789"]);
    assert!(can_ping(&c1, "10.2.0.2"), "back on UDP port 4789");

    // The underlay's receiving program follows the route, and goes only on an
    // Ethernet interface: a tun device's packets start at the IP header.
    let since = |mark: usize, line: &str| d.log()[mark..].contains(line);
    assert!(
        since(0, "tunnel: receiving on this underlay underlay=eth0"),
        "{}",
        d.log()
    );
    let mark = d.log().len();
    a.exec_ok(&["ip", "tuntap", "add", "tun0", "mode", "tun"]);
    a.exec_ok(&["ip", "link", "set", "tun0", "up"]);
    a.exec_ok(&["ip", "route", "replace", "10.201.0.2/32", "dev", "tun0"]);
    assert!(
        wait_until(Duration::from_secs(5), || since(
            mark,
            "tunnel: no longer receiving on this underlay underlay=eth0"
        )),
        "the receiving program stayed on eth0: {}",
        &d.log()[mark..]
    );
    assert_eq!(
        port(&d, "vx1")["down"],
        "underlay interface tun0 is down",
        "{}",
        port(&d, "vx1")
    );
    a.exec_ok(&[
        "ip",
        "route",
        "replace",
        "10.201.0.2/32",
        "via",
        "10.200.0.2",
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || is_up(&d, "vx1")),
        "{}",
        port(&d, "vx1")
    );
    assert!(can_ping(&c1, "10.2.0.2"), "back over eth0");
    let log = &d.log()[mark..];
    assert!(!log.contains("underlay=tun0"), "{log}");

    // Made again in one batch, as scripts do: the add-port takes over the
    // interfaces the del-port let go, which must then stay.
    d.ctl_ok(&[
        "--if-exists",
        "del-port",
        "br0",
        "vx1",
        "--",
        "add-port",
        "br0",
        "vx1",
        "--",
        "set",
        "interface",
        "vx1",
        "type=vxlan",
        "options:remote_ip=10.201.0.2",
        "options:key=99",
    ]);
    assert!(can_ping(&c1, "10.2.0.2"), "after the port was made again");
    std::thread::sleep(Duration::from_millis(500));
    assert!(is_up(&d, "vx1"), "{}", port(&d, "vx1"));
    assert!(can_ping(&c1, "10.2.0.2"), "a moment later");

    // Two names whose tunnel ends' hashed names meet (sdtf86fec42): the second
    // is refused, and the first keeps its pair.
    add_tunnel(
        &d,
        "vt149599",
        &["options:remote_ip=10.201.0.2", "options:key=98"],
    );
    let before = d.ctl_json(&["show"]);
    let links_before = a.exec_ok(&["ip", "-o", "link", "show"]);
    let clash = d.ctl(&[
        "add-port",
        "br0",
        "vt312382",
        "--",
        "set",
        "interface",
        "vt312382",
        "type=vxlan",
        "options:remote_ip=10.201.0.2",
        "options:key=97",
    ]);
    assert!(!clash.status.success());
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.contains("port vt149599's tunnel end is named sdtf86fec42 too"),
        "{stderr}"
    );
    assert_eq!(d.ctl_json(&["show"]), before);
    assert_eq!(a.exec_ok(&["ip", "-o", "link", "show"]), links_before);
    assert!(is_up(&d, "vt149599"), "{}", port(&d, "vt149599"));
    d.ctl_ok(&["del-port", "br0", "vt149599"]);
    assert!(can_ping(&c1, "10.2.0.2"), "vx1 after the clash");
    assert!(
        log.contains("tunnel: receiving on this underlay underlay=eth0"),
        "{log}"
    );

    d.ctl_ok(&["del-port", "br0", "vx1"]);
    let links = a.exec_ok(&["ip", "-o", "link", "show"]);
    for name in [far[0].as_str(), "vx1", "vxlan_sys_4789"] {
        assert!(
            !links.contains(&format!(": {name}")),
            "{name} left: {links}"
        );
    }
}

/// The kernel objects of a tunnel deleted from outside switchd (the shared
/// vxlan device, the port's own veth pair): switchd makes them again and the
/// tunnel carries frames again, as it does after a restart.
#[test]
fn a_tunnel_whose_interfaces_are_deleted_comes_back() {
    let _machine = shared_machine();
    let underlay = Underlay::new();
    let (a, b) = (underlay.host(1), underlay.host(2));
    let _c2 = kernel_host(&b, 42, &underlay_ip(1), None, "10.4.0.2/24");
    let d = switchd_in(&a, &[]);
    let c1 = container(&d, "10.4.0.1/24");
    add_tunnel(
        &d,
        "vx1",
        &["options:remote_ip=10.200.0.2", "options:key=42"],
    );
    assert!(can_ping(&c1, "10.4.0.2"));
    for gone in ["vxlan_sys_4789", "vx1"] {
        a.exec_ok(&["ip", "link", "del", gone]);
        assert!(
            wait_until(Duration::from_secs(10), || is_up(&d, "vx1")
                && can_ping(&c1, "10.4.0.2")),
            "after {gone} was deleted: {}\n{}",
            port(&d, "vx1"),
            a.exec_ok(&["ip", "-o", "link", "show"])
        );
    }
    let devices = a.exec_ok(&["ip", "-o", "link", "show", "type", "vxlan"]);
    assert_eq!(devices.lines().count(), 1, "{devices}");
}

/// A VXLAN frame from `src` (an underlay address, `src_mac`) to host A
/// (`dst`, `dst_mac`) carrying `inner`, built by hand so that each field can
/// be made wrong: `tos`, the VXLAN word after the flags, `vni`, and whether the
/// IP header checksum is right.
struct Outer {
    src: [u8; 4],
    tos: u8,
    reserved: u8,
    vni: u32,
    good_checksum: bool,
}

fn vxlan_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    dst: [u8; 4],
    o: &Outer,
    inner: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + 8 + inner.len();
    let mut ip = vec![0x45, o.tos];
    ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&o.src);
    ip.extend_from_slice(&dst);
    let sum = checksum(&[&ip]) ^ u16::from(!o.good_checksum);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0xc0, 0x01, 0x12, 0xb5]);
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x08, o.reserved, 0, 0]);
    f.extend_from_slice(&(o.vni << 8).to_be_bytes());
    f.extend_from_slice(inner);
    f
}

fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let text = ns.exec_ok(&["cat", &format!("/sys/class/net/{ifname}/address")]);
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *m = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// The underlay's receiving program takes only plain VXLAN frames from a
/// tunnel's remote; what it leaves goes to the vxlan device and the host's IP
/// stack, which deliver or drop it as they would without the program: an
/// outer ECN mark (delivered by the device, which copies it inward where the
/// inner packet can carry it), reserved bits, a bad IP header checksum, a
/// source that is no tunnel's remote, an unknown VNI (dropped).
#[test]
fn the_underlay_program_takes_only_plain_frames_from_a_remote() {
    let _machine = shared_machine();
    let underlay = Underlay::new();
    let (a, b) = (underlay.host(1), underlay.host(2));
    let d = switchd_in(&a, &[]);
    let c1 = container(&d, "10.0.0.1/24");
    add_tunnel(
        &d,
        "vx1",
        &["options:remote_ip=10.200.0.2", "options:key=42"],
    );
    assert!(is_up(&d, "vx1"), "{}", port(&d, "vx1"));
    let (a_mac, b_mac) = (mac_of(&a, "eth0"), mac_of(&b, "eth0"));
    let device_rx = || -> u64 {
        let n = a.exec_ok(&["cat", "/sys/class/net/vxlan_sys_4789/statistics/rx_packets"]);
        n.trim().parse().unwrap()
    };
    let mut from_b = b.packet_socket("eth0");
    let mut at_c1 = c1.packet_socket("eth0");
    let plain = Outer {
        src: [10, 200, 0, 2],
        tos: 0,
        reserved: 0,
        vni: 42,
        good_checksum: true,
    };
    // Delivered by the program (the device sees nothing), by the device, or
    // dropped (which the program, had it taken the frame, would not have).
    #[derive(PartialEq, Debug)]
    enum Fate {
        Program,
        Device,
        Dropped,
    }
    let cases = [
        ("a plain frame", Outer { ..plain }, Fate::Program),
        (
            "an outer ECN CE mark",
            Outer { tos: 3, ..plain },
            Fate::Device,
        ),
        (
            "a reserved bit set",
            Outer {
                reserved: 1,
                ..plain
            },
            Fate::Dropped,
        ),
        (
            "a bad IP header checksum",
            Outer {
                good_checksum: false,
                ..plain
            },
            Fate::Dropped,
        ),
        (
            "a source that is no tunnel's remote",
            Outer {
                src: [10, 200, 0, 9],
                ..plain
            },
            Fate::Dropped,
        ),
        ("an unknown VNI", Outer { vni: 43, ..plain }, Fate::Dropped),
        ("a plain frame again", Outer { ..plain }, Fate::Program),
    ];
    for (marker, (what, outer, fate)) in cases.iter().enumerate() {
        let marker = marker as u8 + 1;
        let inner = frame([0xff; 6], [2, 0, 0, 0x42, 0, 1], None, &[0x5a, marker]);
        let before = device_rx();
        from_b.send(&vxlan_frame(a_mac, b_mac, [10, 200, 0, 1], outer, &inner));
        let wanted = |f: &[u8]| f.len() > 15 && f[12..16] == [0x88, 0xb5, 0x5a, marker];
        let wait = Duration::from_secs(if *fate == Fate::Dropped { 1 } else { 3 });
        let seen = at_c1.recv_until(wait, wanted);
        let arrived = seen.last().is_some_and(|f| wanted(f));
        let got = match (arrived, device_rx() - before) {
            (false, _) => Fate::Dropped,
            (true, 0) => Fate::Program,
            (true, _) => Fate::Device,
        };
        assert_eq!(&got, fate, "{what}");
    }
}
