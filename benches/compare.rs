//! switchd against its peers, side by side, in one run.
//!
//! Sets up two namespaces joined through each of: a direct veth pair (the ceiling),
//! the Linux kernel bridge, Open vSwitch's userspace (netdev) datapath with
//! `userspace-tso-enable=true`, and switchd (as it runs by default, and with
//! `--offload none`: every frame through its userspace datapath); then measures each in alternating
//! rounds and prints the median of each figure with switchd's ratio to the kernel
//! bridge and to Open vSwitch. Machines here are shared and noisy: read the ratios,
//! not the absolute numbers.
//!
//! VXLAN: two hosts (namespaces joined by a veth underlay), a on one and b on
//! the other, a VXLAN tunnel between them: switchd on a's host and the kernel's
//! bridge and vxlan device on b's (`vxlan-switchd`), and the kernel's on both
//! (`vxlan-kernel`), and Open vSwitch's userspace datapath on both
//! (`vxlan-ovs`, with transmit checksumming off on the links into it, which it
//! needs); a third table gives the first's ratios to the other two.
//! Both namespaces' MTU is 1450, so that TCP segments fit the tunnel.
//!
//! VLANs: the same figures through two bridges joined by a veth trunk, once
//! untagged (`switchd-trunk`) and once access VLAN 10 -> trunk of 10,20 -> access
//! VLAN 10 (`switchd-vlan`), and that tagged topology on Open vSwitch
//! (`ovs-vlan`); a second table gives switchd-vlan's ratios to both. And
//! switchd with `--metrics` scraped every 100 ms throughout
//! (`switchd-scraped`), against switchd unscraped: what scraping costs; and
//! switchd with `switchctl capture` taking every frame of both ports to
//! /dev/null throughout (`switchd-captured`), or with the filter `arp`
//! (`switchd-capture-arp`): what a capture costs; and switchd mirroring
//! everything to a third port (`switchd-mirrored`).
//!
//! Run as root: `scripts/bench` (installs iperf3, netsniff-ng and
//! openvswitch-switch if missing, builds the release binaries, runs this).
//! Environment: `COMPARE_ROUNDS` (default 3), `COMPARE_SECS` (seconds per
//! throughput test, default 4), `COMPARE_ONLY` (comma list of
//! veth,bridge,ovs,switchd,switchd-user,switchd-trunk,switchd-vlan,ovs-vlan,
//! vxlan-switchd,vxlan-kernel,vxlan-ovs,switchd-scraped,switchd-captured,
//! switchd-capture-arp,switchd-mirrored),
//! `COMPARE_JSON` (results file, default target/compare/<unix time>.json),
//! `SWITCHD_ARGS` (extra switchd flags, e.g. `--datapath-threads 2 --spin-us 1000`).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchd_testkit::measure::{self, env_u64, median};
use switchd_testkit::ovs::Ovs;
use switchd_testkit::{run, unique_name, wait_until, Daemon, Netns, Wire};

const A_IP: &str = "10.77.0.1";
const B_IP: &str = "10.77.0.2";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Veth,
    Bridge,
    Ovs,
    Switchd,
    SwitchdUser,
    /// Two switchd bridges joined by a veth pair, nothing tagged.
    SwitchdTrunk,
    /// The same, a and b on access ports of VLAN 10, the veth a trunk.
    SwitchdVlan,
    /// That VLAN topology on Open vSwitch's userspace datapath.
    OvsVlan,
    /// Two hosts (namespaces on a veth underlay), VXLAN between them: a on
    /// switchd's host, b on a host with the kernel's bridge and vxlan device.
    VxlanSwitchd,
    /// The same with the kernel's bridge and vxlan device on both hosts.
    VxlanKernel,
    /// The same with Open vSwitch's userspace datapath on both hosts.
    VxlanOvs,
    /// `Switchd` with `--metrics`, scraped every 100 ms throughout.
    SwitchdScraped,
    /// `Switchd` with `switchctl capture` of both ports, every frame, to
    /// /dev/null, throughout.
    SwitchdCaptured,
    /// The same capture with the filter `arp`: what the kernel's taps and
    /// filter cost when little matches.
    SwitchdCaptureArp,
    /// `Switchd` with a mirror of everything (`select_all`) to a third port,
    /// into a namespace that discards it.
    SwitchdMirrored,
}

impl Kind {
    const ALL: [Kind; 15] = [
        Kind::Veth,
        Kind::Bridge,
        Kind::Ovs,
        Kind::Switchd,
        Kind::SwitchdUser,
        Kind::SwitchdTrunk,
        Kind::SwitchdVlan,
        Kind::OvsVlan,
        Kind::VxlanSwitchd,
        Kind::VxlanKernel,
        Kind::VxlanOvs,
        Kind::SwitchdScraped,
        Kind::SwitchdCaptured,
        Kind::SwitchdCaptureArp,
        Kind::SwitchdMirrored,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::Bridge => "bridge",
            Kind::Ovs => "ovs",
            Kind::Switchd => "switchd",
            Kind::SwitchdUser => "switchd-user",
            Kind::SwitchdTrunk => "switchd-trunk",
            Kind::SwitchdVlan => "switchd-vlan",
            Kind::OvsVlan => "ovs-vlan",
            Kind::VxlanSwitchd => "vxlan-switchd",
            Kind::VxlanKernel => "vxlan-kernel",
            Kind::VxlanOvs => "vxlan-ovs",
            Kind::SwitchdScraped => "switchd-scraped",
            Kind::SwitchdCaptured => "switchd-captured",
            Kind::SwitchdCaptureArp => "switchd-capture-arp",
            Kind::SwitchdMirrored => "switchd-mirrored",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Veth => "veth pair",
            Kind::Bridge => "kernel bridge",
            Kind::Ovs => "OVS netdev+TSO",
            Kind::Switchd => "switchd",
            Kind::SwitchdUser => "switchd-user",
            Kind::SwitchdTrunk => "sd 2br untagged",
            Kind::SwitchdVlan => "sd 2br VLAN",
            Kind::OvsVlan => "OVS 2br VLAN",
            Kind::VxlanSwitchd => "vxlan sd-kernel",
            Kind::VxlanKernel => "vxlan kern-kern",
            Kind::VxlanOvs => "vxlan OVS-OVS",
            Kind::SwitchdScraped => "sd scraped",
            Kind::SwitchdCaptured => "sd captured",
            Kind::SwitchdCaptureArp => "sd capture arp",
            Kind::SwitchdMirrored => "sd mirrored",
        }
    }
}

/// Two namespaces, `a` and `b`, each with `eth0`, joined through one kind of switch.
struct Topology {
    kind: Kind,
    a: Netns,
    b: Netns,
    /// Root-namespace veth ends, deleted on drop.
    links: Vec<String>,
    /// The capture of `SwitchdCaptured`, ended before the daemon.
    capture: Option<CaptureRun>,
    daemon: Option<Daemon>,
    ovs_bridge: Option<String>,
    /// The process doing the switching in userspace, for CPU accounting.
    switch_pid: Option<u32>,
    /// The trunk between two bridges.
    _wire: Option<Wire>,
    /// Open vSwitch instances inside the hosts, stopped before the hosts go.
    _ovs: Vec<Ovs>,
    /// The hosts of a tunnel topology.
    _hosts: Vec<Netns>,
    /// The namespace behind a mirror's output port.
    _monitor: Option<Netns>,
    /// The metrics scraper of `SwitchdScraped`, stopped on drop.
    scraper: Option<Scraper>,
}

/// GETs `/metrics` every 100 ms, as a Prometheus scraping hard would, until
/// dropped; counts the scrapes that got a 200.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Scraper {
    fn start(addr: String) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ok = 0;
            while !flag.load(Ordering::Relaxed) {
                let reply = std::net::TcpStream::connect(&addr).and_then(|mut s| {
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                });
                if reply.is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if let Ok(n) = t.join() {
                eprintln!("metrics scraper: {n} scrapes answered");
            }
        }
    }
}

/// `switchctl capture BR -w /dev/null [FILTER]`: the frames of every port,
/// until dropped (Ctrl-C); then its figures go to stderr.
struct CaptureRun {
    child: std::process::Child,
}

impl CaptureRun {
    fn start(daemon: &Daemon, bridge: &str, filter: Option<&str>) -> CaptureRun {
        let child = Command::new(switchd_testkit::bin("switchctl"))
            .arg("--socket")
            .arg(&daemon.socket)
            .args(["capture", bridge, "-w", "/dev/null"])
            .args(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run switchctl capture");
        // Its sockets are open once it has said so.
        std::thread::sleep(Duration::from_millis(500));
        CaptureRun { child }
    }
}

impl Drop for CaptureRun {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        let _ = self.child.wait();
        eprintln!("capture: {}", text.replace('\n', "; "));
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn address(ns: &Netns, ip: &str) {
    ns.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
}

/// A veth pair with `eth0` inside `ns` and a fresh name outside; returns that name.
fn uplink(ns: &Netns) -> String {
    let port = unique_name("cmp");
    run(
        "ip",
        &[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ],
    );
    run("ip", &["link", "set", &port, "up"]);
    port
}

fn build(kind: Kind, ovs: Option<&Ovs>) -> Result<Topology, String> {
    let (a, b) = (Netns::new(), Netns::new());
    let mut topo = Topology {
        kind,
        a,
        b,
        links: Vec::new(),
        daemon: None,
        ovs_bridge: None,
        switch_pid: None,
        _wire: None,
        _ovs: Vec::new(),
        _hosts: Vec::new(),
        _monitor: None,
        scraper: None,
        capture: None,
    };
    match kind {
        Kind::Veth => {
            run(
                "ip",
                &[
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    &topo.a.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &topo.b.name,
                ],
            );
        }
        Kind::Bridge => {
            let br = unique_name("cmpbr");
            run("ip", &["link", "add", &br, "type", "bridge"]);
            run("ip", &["link", "set", &br, "up"]);
            topo.links.push(br.clone());
            for ns in [&topo.a, &topo.b] {
                let port = uplink(ns);
                run("ip", &["link", "set", &port, "master", &br]);
                topo.links.push(port);
            }
        }
        Kind::Ovs => {
            let ovs = ovs.ok_or("Open vSwitch did not start")?;
            let br = unique_name("cmpov");
            ovs.add_netdev_bridge(&br)?;
            topo.ovs_bridge = Some(br.clone());
            for ns in [&topo.a, &topo.b] {
                let port = uplink(ns);
                ovs.vsctl(&["add-port", &br, &port])?;
                topo.links.push(port);
            }
            topo.switch_pid = Some(ovs.vswitchd_pid());
        }
        Kind::Switchd
        | Kind::SwitchdUser
        | Kind::SwitchdScraped
        | Kind::SwitchdCaptured
        | Kind::SwitchdCaptureArp
        | Kind::SwitchdMirrored => {
            let mut args = switchd_args(kind == Kind::SwitchdUser);
            let addr = format!(
                "127.0.0.1:{}",
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| e.to_string())?
                    .port()
            );
            if kind == Kind::SwitchdScraped {
                args.extend(["--metrics", addr.clone().leak()]);
            }
            let daemon = Daemon::start_with(&args);
            daemon.ctl_ok(&["add-br", "--no-internal", "br0"]);
            for ns in [&topo.a, &topo.b] {
                let port = uplink(ns);
                daemon.ctl_ok(&["add-port", "br0", &port]);
                topo.links.push(port);
            }
            topo.switch_pid = Some(daemon.pid());
            topo.daemon = Some(daemon);
            if kind == Kind::SwitchdScraped {
                topo.scraper = Some(Scraper::start(addr));
            }
            let daemon = topo.daemon.as_ref().expect("just set");
            match kind {
                Kind::SwitchdCaptured => {
                    topo.capture = Some(CaptureRun::start(daemon, "br0", None))
                }
                Kind::SwitchdCaptureArp => {
                    topo.capture = Some(CaptureRun::start(daemon, "br0", Some("arp")))
                }
                Kind::SwitchdMirrored => {
                    let monitor = Netns::new();
                    let port = uplink(&monitor);
                    monitor.exec_ok(&["ip", "link", "set", "eth0", "up"]);
                    daemon.ctl_ok(&["add-port", "br0", &port]);
                    let output = format!("output_port={port}");
                    daemon.ctl_ok(&["add-mirror", "br0", "all", "select_all=true", &output]);
                    topo.links.push(port);
                    topo._monitor = Some(monitor);
                }
                _ => {}
            }
        }
        Kind::SwitchdTrunk | Kind::SwitchdVlan | Kind::OvsVlan => {
            let wire = Wire::new();
            let tagged = kind != Kind::SwitchdTrunk;
            let (access, trunk): (&[&str], &[&str]) = if tagged {
                (&["tag=10"], &["trunks=10,20"])
            } else {
                (&[], &[])
            };
            let bridges = [unique_name("cmpva"), unique_name("cmpvb")];
            let ports = [uplink(&topo.a), uplink(&topo.b)];
            if kind == Kind::OvsVlan {
                let ovs = ovs.ok_or("Open vSwitch did not start")?;
                for br in &bridges {
                    ovs.add_netdev_bridge(br)?;
                }
                for end in [&wire.a, &wire.b] {
                    run("ip", &["link", "set", end, "up"]);
                }
                topo.switch_pid = Some(ovs.vswitchd_pid());
            } else {
                let daemon = Daemon::start_with(&switchd_args(false));
                for br in &bridges {
                    daemon.ctl_ok(&["add-br", "--no-internal", br]);
                }
                topo.switch_pid = Some(daemon.pid());
                topo.daemon = Some(daemon);
            }
            let add_port = |br: &str, port: &str, cols: &[&str]| -> Result<(), String> {
                let mut args = vec!["add-port", br, port];
                args.extend_from_slice(cols);
                match &topo.daemon {
                    Some(d) => d.ctl_ok(&args),
                    None => ovs.ok_or("Open vSwitch did not start")?.vsctl(&args)?,
                };
                Ok(())
            };
            add_port(&bridges[0], &ports[0], access)?;
            add_port(&bridges[1], &ports[1], access)?;
            add_port(&bridges[0], &wire.a, trunk)?;
            add_port(&bridges[1], &wire.b, trunk)?;
            topo.links.extend(ports);
            topo._wire = Some(wire);
        }
        Kind::VxlanSwitchd | Kind::VxlanKernel | Kind::VxlanOvs => {
            let hosts = [Netns::new(), Netns::new()];
            run(
                "ip",
                &[
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    &hosts[0].name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &hosts[1].name,
                ],
            );
            for (i, (host, ns)) in hosts.iter().zip([&topo.a, &topo.b]).enumerate() {
                let ip = format!("10.78.0.{}/24", i + 1);
                host.exec_ok(&["ip", "addr", "add", &ip, "dev", "eth0"]);
                host.exec_ok(&["ip", "link", "set", "eth0", "up"]);
                host.exec_ok(&[
                    "ip", "link", "add", "c", "type", "veth", "peer", "name", "eth0", "netns",
                    &ns.name,
                ]);
                host.exec_ok(&["ip", "link", "set", "c", "up"]);
            }
            for (i, host) in hosts.iter().enumerate() {
                let remote = format!("10.78.0.{}", 2 - i);
                if kind == Kind::VxlanOvs {
                    // OVS 3.1 neither tunnels nor decapsulates packets whose
                    // checksums are left to offload (docs/TUNNELS.md).
                    host.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
                    let ovs = Ovs::start_in(Some(&host.name))?;
                    ovs.vxlan_host("eth0", &format!("10.78.0.{}/24", i + 1), "c", &remote, 42)?;
                    topo._ovs.push(ovs);
                    continue;
                }
                if i == 0 && kind == Kind::VxlanSwitchd {
                    let args = switchd_args(false);
                    let daemon = Daemon::start_under(&["ip", "netns", "exec", &host.name], &args);
                    daemon.ctl_ok(&["add-br", "--no-internal", "br0"]);
                    daemon.ctl_ok(&["add-port", "br0", "c"]);
                    let remote = format!("options:remote_ip={remote}");
                    daemon.ctl_ok(&[
                        "add-port",
                        "br0",
                        "vx",
                        "--",
                        "set",
                        "interface",
                        "vx",
                        "type=vxlan",
                        &remote,
                        "options:key=42",
                    ]);
                    topo.switch_pid = Some(daemon.pid());
                    topo.daemon = Some(daemon);
                    continue;
                }
                let sh = |args: &[&str]| host.exec_ok(args);
                sh(&["ip", "link", "add", "kbr", "type", "bridge"]);
                sh(&["ip", "link", "set", "kbr", "up"]);
                sh(&[
                    "ip", "link", "add", "vx", "type", "vxlan", "id", "42", "remote", &remote,
                    "dstport", "4789", "dev", "eth0",
                ]);
                sh(&["ip", "link", "set", "vx", "master", "kbr", "up"]);
                sh(&["ip", "link", "set", "c", "master", "kbr"]);
            }
            topo._hosts = hosts.into();
        }
    }
    address(&topo.a, A_IP);
    address(&topo.b, B_IP);
    if !topo._hosts.is_empty() {
        // Frames and TCP segments must fit the tunnel: what a user sets.
        for ns in [&topo.a, &topo.b] {
            ns.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1450"]);
            if kind == Kind::VxlanOvs {
                ns.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"]);
            }
        }
    }
    let reachable = wait_until(Duration::from_secs(10), || {
        topo.a
            .exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", B_IP])
            .status
            .success()
    });
    if !reachable {
        return Err(format!("{}: a cannot ping b", kind.name()));
    }
    Ok(topo)
}

/// switchd's flags: `SWITCHD_ARGS`, and `--offload none` for `user`.
fn switchd_args(user: bool) -> Vec<&'static str> {
    let extra: &'static str = std::env::var("SWITCHD_ARGS").unwrap_or_default().leak();
    let mut args = vec!["--log-level", "info"];
    args.extend(extra.split_whitespace());
    if user {
        args.extend(["--offload", "none"]);
    }
    args
}

/// Figures in table order: key, label, higher is better.
const FIGURES: &[(&str, &str, bool)] = &[
    ("tcp1_gbps", "TCP 1 stream, Gbit/s", true),
    ("tcp1_busy_pct", "machine CPU busy in TCP 1, %", false),
    ("tcp4_gbps", "TCP 4 streams, Gbit/s", true),
    ("f64_kfps", "64B frames delivered, k/s", true),
    ("f64_loss_pct", "64B loss, %", false),
    ("f1500_kfps", "1500B (tunnels 1464B) frames, k/s", true),
    ("flood_kfps", "64B MAC flood delivered, k/s", true),
    ("ping_p50_us", "ping p50, us", false),
    ("ping_p99_us", "ping p99, us", false),
    (
        "cpu_s_per_mframes",
        "switch CPU s per M frames (64B)",
        false,
    ),
    (
        "flood_cpu_s_per_mframes",
        "switch CPU s per M frames (MAC flood)",
        false,
    ),
    ("idle_cpu_pct", "switch idle CPU, % of a core", false),
];

fn main() {
    if !switchd_testkit::bench_should_run("compare") {
        return;
    }
    let rounds = env_u64("COMPARE_ROUNDS", 3).max(1);
    let secs = env_u64("COMPARE_SECS", 4).max(1);
    let only: Option<Vec<String>> = std::env::var("COMPARE_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let mut kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == k.name()))
        })
        .collect();

    let ovs = if kinds.contains(&Kind::Ovs) || kinds.contains(&Kind::OvsVlan) {
        match Ovs::start() {
            Ok(ovs) => Some(ovs),
            Err(e) => {
                println!("skipping Open vSwitch: {e}");
                kinds.retain(|k| !matches!(k, Kind::Ovs | Kind::OvsVlan));
                None
            }
        }
    } else {
        None
    };
    let mut topologies = Vec::new();
    for &kind in &kinds {
        match build(kind, ovs.as_ref()) {
            Ok(t) => topologies.push(t),
            Err(e) => println!("skipping {}: {e}", kind.title()),
        }
    }

    // samples[kind][figure] = one value per round.
    let mut samples: BTreeMap<Kind, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut wakeups = Vec::new();
    for round in 0..rounds {
        wakeups.push(measure::wakeup_us());
        // Alternate the order so no topology always runs first on a warm machine.
        let n = topologies.len();
        for i in 0..n {
            let topo = &topologies[(i + round as usize) % n];
            eprintln!("round {}/{rounds}: {}", round + 1, topo.kind.title());
            let s = samples.entry(topo.kind).or_default();
            let mut add = |k: &'static str, v: f64| s.entry(k).or_default().push(v);
            let tcp = |streams| measure::tcp(&topo.a, &topo.b, B_IP, streams, secs);
            let frames = |size, new_source| {
                measure::frames(&topo.a, &topo.b, topo.switch_pid, size, new_source, secs)
            };
            let (gbps, busy) = tcp(1);
            add("tcp1_gbps", gbps);
            add("tcp1_busy_pct", busy);
            add("tcp4_gbps", tcp(4).0);
            let f64r = frames(60, false);
            add("f64_kfps", f64r.delivered_per_sec / 1e3);
            add("f64_loss_pct", f64r.loss * 100.0);
            if topo.switch_pid.is_some() {
                let mframes = f64r.delivered_per_sec * secs as f64 / 1e6;
                add(
                    "cpu_s_per_mframes",
                    f64r.switch_cpu_secs / mframes.max(1e-9),
                );
            }
            // The largest frame the topology carries: a tunnel's is 50 bytes less.
            let full = if topo._hosts.is_empty() { 1500 } else { 1464 };
            add("f1500_kfps", frames(full, false).delivered_per_sec / 1e3);
            let flood = frames(60, true);
            add("flood_kfps", flood.delivered_per_sec / 1e3);
            if topo.switch_pid.is_some() {
                let mframes = flood.delivered_per_sec * secs as f64 / 1e6;
                add(
                    "flood_cpu_s_per_mframes",
                    flood.switch_cpu_secs / mframes.max(1e-9),
                );
            }
            let (p50, p99) = measure::ping_us(&topo.a, B_IP, 500);
            add("ping_p50_us", p50);
            add("ping_p99_us", p99);
            if let Some(pid) = topo.switch_pid {
                add("idle_cpu_pct", measure::idle_cpu_percent(pid, 3));
            }
        }
    }

    let medians: BTreeMap<Kind, BTreeMap<&str, f64>> = samples
        .iter()
        .map(|(k, figs)| (*k, figs.iter().map(|(f, v)| (*f, median(v))).collect()))
        .collect();
    let wakeup = median(&wakeups);
    print_table(&medians, rounds);
    println!("one thread waking another on the other CPU after 2 ms idle, p50: {wakeup:.1} us");
    write_json(&samples, &medians, rounds, secs, wakeup);
}

fn ratio(medians: &BTreeMap<Kind, BTreeMap<&str, f64>>, fig: &str, of: Kind) -> Option<f64> {
    ratio_of(medians, fig, Kind::Switchd, of)
}

fn ratio_of(
    medians: &BTreeMap<Kind, BTreeMap<&str, f64>>,
    fig: &str,
    which: Kind,
    of: Kind,
) -> Option<f64> {
    let s = *medians.get(&which)?.get(fig)?;
    let o = *medians.get(&of)?.get(fig)?;
    (o.is_finite() && o != 0.0 && s.is_finite()).then_some(s / o)
}

fn print_table(medians: &BTreeMap<Kind, BTreeMap<&str, f64>>, rounds: u64) {
    let kinds: Vec<Kind> = medians.keys().copied().collect();
    println!();
    println!("median of {rounds} rounds; ratios are switchd (default flags) / peer");
    print!("{:<34}", "");
    for k in &kinds {
        print!("{:>15}", k.title());
    }
    println!("{:>12}{:>12}", "sd/bridge", "sd/ovs");
    for (key, label, _) in FIGURES {
        print!("{label:<34}");
        for k in &kinds {
            match medians[k].get(key) {
                Some(v) if v.is_finite() => print!("{v:>15.2}"),
                _ => print!("{:>15}", "-"),
            }
        }
        for peer in [Kind::Bridge, Kind::Ovs] {
            match ratio(medians, key, peer) {
                Some(r) => print!("{:>11.2}x", r),
                None => print!("{:>12}", "-"),
            }
        }
        println!();
    }
    print_ratios(
        medians,
        "VXLAN: a on switchd's host, b on a kernel bridge+vxlan host, / both hosts kernel, / both hosts OVS",
        Kind::VxlanSwitchd,
        [(Kind::VxlanKernel, "sd/kernel"), (Kind::VxlanOvs, "sd/ovs")],
    );
    print_ratios(
        medians,
        "VLANs: switchd access 10 -> trunk -> access 10 over two bridges, / the same untagged, / Open vSwitch tagged",
        Kind::SwitchdVlan,
        [(Kind::SwitchdTrunk, "vlan/untagged"), (Kind::OvsVlan, "vlan/ovs-vlan")],
    );
    print_ratios(
        medians,
        "Metrics: switchd scraped every 100 ms, / switchd unscraped, / the kernel bridge",
        Kind::SwitchdScraped,
        [
            (Kind::Switchd, "scraped/not"),
            (Kind::Bridge, "scraped/bridge"),
        ],
    );
    print_ratios(
        medians,
        "Capture: switchd with every frame of both ports captured to /dev/null, / switchd uncaptured, / the kernel bridge",
        Kind::SwitchdCaptured,
        [
            (Kind::Switchd, "captured/not"),
            (Kind::Bridge, "captured/bridge"),
        ],
    );
    print_ratios(
        medians,
        "Capture filtered: the same capture taking ARP only, / switchd uncaptured, / the kernel bridge",
        Kind::SwitchdCaptureArp,
        [
            (Kind::Switchd, "arp/not"),
            (Kind::Bridge, "arp/bridge"),
        ],
    );
    print_ratios(
        medians,
        "Mirror: switchd mirroring everything to a third port, / switchd unmirrored, / the kernel bridge",
        Kind::SwitchdMirrored,
        [
            (Kind::Switchd, "mirrored/not"),
            (Kind::Bridge, "mirrored/bridge"),
        ],
    );
}

/// A table of `which`'s ratios to two peers, if `which` ran.
fn print_ratios(
    medians: &BTreeMap<Kind, BTreeMap<&str, f64>>,
    title: &str,
    which: Kind,
    peers: [(Kind, &str); 2],
) {
    if !medians.contains_key(&which) {
        return;
    }
    println!();
    println!("{title}");
    println!("{:<34}{:>15}{:>15}", "", peers[0].1, peers[1].1);
    for (key, label, _) in FIGURES {
        print!("{label:<34}");
        for (peer, _) in peers {
            match ratio_of(medians, key, which, peer) {
                Some(r) => print!("{:>14.2}x", r),
                None => print!("{:>15}", "-"),
            }
        }
        println!();
    }
}

fn write_json(
    samples: &BTreeMap<Kind, BTreeMap<&str, Vec<f64>>>,
    medians: &BTreeMap<Kind, BTreeMap<&str, f64>>,
    rounds: u64,
    secs: u64,
    wakeup_us: f64,
) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = std::env::var("COMPARE_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/compare")
                .join(format!("{now}.json"))
        });
    let mut ratios = serde_json::Map::new();
    for (key, _, _) in FIGURES {
        ratios.insert(
            key.to_string(),
            json!({
                "vs_bridge": ratio(medians, key, Kind::Bridge),
                "vs_ovs": ratio(medians, key, Kind::Ovs),
                "vlan_vs_untagged": ratio_of(medians, key, Kind::SwitchdVlan, Kind::SwitchdTrunk),
                "vlan_vs_ovs_vlan": ratio_of(medians, key, Kind::SwitchdVlan, Kind::OvsVlan),
                "vxlan_vs_kernel": ratio_of(medians, key, Kind::VxlanSwitchd, Kind::VxlanKernel),
                "vxlan_vs_ovs": ratio_of(medians, key, Kind::VxlanSwitchd, Kind::VxlanOvs),
            }),
        );
    }
    let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let doc = json!({
        "unix_time": now,
        "rounds": rounds,
        "seconds_per_test": secs,
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": run("uname", &["-r"]).trim(),
            "thread_wakeup_us_p50": finite(wakeup_us),
            "host_settings": switchd_testkit::host_settings(),
        },
        "switchd_args": std::env::var("SWITCHD_ARGS").unwrap_or_default(),
        "median": medians.iter().map(|(k, f)| (k.name().to_string(),
            f.iter().map(|(n, v)| (n.to_string(), finite(*v))).collect::<serde_json::Map<_, _>>().into()))
            .collect::<serde_json::Map<_, _>>(),
        "samples": samples.iter().map(|(k, f)| (k.name().to_string(),
            f.iter().map(|(n, v)| (n.to_string(), v.iter().map(|x| finite(*x)).collect::<Vec<_>>().into()))
                .collect::<serde_json::Map<_, _>>().into()))
            .collect::<serde_json::Map<_, _>>(),
        "ratios": ratios,
    });
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()) {
        Ok(()) => println!("\nresults: {}", path.display()),
        Err(e) => println!("\ncannot write {}: {e}", path.display()),
    }
}
