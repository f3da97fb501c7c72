//! Flooding at scale (issue 17): `FLOOD_PORTS` namespaces (default 1000) on one
//! bridge, one of them broadcasting ARP requests, behind the kernel bridge,
//! switchd (`--offload tc`, the default, and `--offload none`) and Open
//! vSwitch's userspace datapath, on the same veths in the same run.
//!
//! Per switch: how busy the whole machine is while nothing is sent; then while
//! the first namespace sends `FLOOD_RATE` broadcasts a second (default 500) for
//! `FLOOD_SECS` (default 5): machine CPU, the switch process's CPU, and the loss
//! at a sample of eight ports (what each received against what was sent); then
//! with the sender as fast as one trafgen process goes: broadcasts delivered per
//! second per sampled port. Then multicast: the sampled ports join a group
//! (socat in each, so their kernels send the IGMP reports), the sender sends two
//! IGMPv3 general queries, as a starting querier does (each switch's snooping
//! acts only with a querier heard; Open vSwitch gets
//! `mcast_snooping_enable=true`), and sends UDP to the group at
//! the fixed rate and flat out: machine CPU, delivered per member, and what
//! leaked to eight ports that did not join. The table compares machine CPU per broadcast
//! delivered (% busy per 100 broadcasts a second reaching each port), since the
//! kernel bridge, flooding in the sender's context, slows its sender below the
//! rate. IPv6 is off in the namespaces and on both ends of
//! every veth, so the broadcasts are all there is to count (the growth bench has
//! IPv6 on as well). Nothing answers: no namespace has an address.
//!
//! A fifth row, `floor`, is no switch: a thread of the bench floods each frame
//! from the sender's port with one `sendmmsg` naming every other port (switchd's
//! `Sender` and `TxBatch`, nothing else), the least any switch flooding by
//! packet socket can pay; it has no multicast rows.
//!
//! Run as root: `scripts/bench flood`. Environment: `FLOOD_PORTS`, `FLOOD_RATE`,
//! `FLOOD_SECS`, `FLOOD_ONLY` (comma list of bridge, floor, switchd, switchd-user, ovs),
//! `SWITCHD_ARGS` (more switchd flags, e.g. `--spin-budget 0`),
//! `FLOOD_JSON` (results file, default target/flood/<unix time>.json).

use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchd::sys::{
    Epoll, EpollEvents, PacketSocket, RxBatch, Sender, TxBatch, TxFrame, TxOutcome,
};
use switchd_testkit::measure::env_u64;
use switchd_testkit::ovs::Ovs;
use switchd_testkit::procfs::{cpu_secs, machine_ticks};
use switchd_testkit::{
    checksum, run, run_with_input, unique_name, wait_until, ChildGuard, Daemon, Netns,
};

const KINDS: &[&str] = &["bridge", "floor", "switchd", "switchd-user", "ovs"];
const SAMPLES: usize = 8;
/// Who sends: a MAC nobody else has.
const SENDER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x5e, 0xf1, 0x01];

/// The group the sampled ports join.
const GROUP: [u8; 4] = [239, 241, 0, 1];

/// One frame as a trafgen configuration.
fn trafgen_frame(f: &[u8]) -> String {
    let bytes: Vec<String> = f.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("{{ {} }}\n", bytes.join(", "))
}

/// An ARP request for 10.241.0.2 from 10.241.0.1, which nobody has.
fn arp_config() -> String {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&SENDER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SENDER_MAC);
    f.extend_from_slice(&[10, 241, 0, 1, 0, 0, 0, 0, 0, 0, 10, 241, 0, 2]);
    trafgen_frame(&f)
}

/// An IPv4 frame from the sender (10.241.0.1) to `dst`; `ra` adds the router
/// alert option IGMP carries.
fn ipv4_frame(dst: [u8; 4], proto: u8, ra: bool, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]];
    f.extend_from_slice(&SENDER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let head = if ra { 24 } else { 20 };
    let mut ip = vec![if ra { 0x46 } else { 0x45 }, 0];
    ip.extend_from_slice(&((head + body.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 1, proto, 0, 0, 10, 241, 0, 1]);
    ip.extend_from_slice(&dst);
    if ra {
        ip.extend_from_slice(&[0x94, 0x04, 0, 0]);
    }
    let sum = checksum(&[&ip]).to_be_bytes();
    ip[10..12].copy_from_slice(&sum);
    f.extend_from_slice(&ip);
    f.extend_from_slice(body);
    f
}

/// An IGMPv3 general query, answered within a second.
fn query_config() -> String {
    let mut q = vec![0x11, 10, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0];
    let sum = checksum(&[&q]).to_be_bytes();
    q[2..4].copy_from_slice(&sum);
    trafgen_frame(&ipv4_frame([224, 0, 0, 1], 2, true, &q))
}

/// 18 bytes of UDP to the group's discard port: a 60-byte frame.
fn group_config() -> String {
    let mut udp = vec![0x13, 0x88, 0, 9, 0, 26, 0, 0];
    udp.extend_from_slice(&[0; 18]);
    trafgen_frame(&ipv4_frame(GROUP, 17, false, &udp))
}

/// The namespaces and the root ends of their veths (`hosts[i]` into `nss[i]`).
struct Topology {
    nss: Vec<Netns>,
    hosts: Vec<String>,
}

impl Topology {
    fn new(n: usize) -> Topology {
        eprintln!("flood: creating {n} namespaces");
        let nss: Vec<Netns> = (0..n).map(|_| Netns::new()).collect();
        let tag = unique_name("f");
        let hosts: Vec<String> = (0..n).map(|i| format!("{tag}{i}")).collect();
        let batch: String = hosts
            .iter()
            .zip(&nss)
            .map(|(h, ns)| format!("link add {h} type veth peer name eth0 netns {}\n", ns.name))
            .collect();
        ip_batch(&batch);
        for h in &hosts {
            // No DAD, router solicitations or MLD from our side either.
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{h}/disable_ipv6"), "1").unwrap();
        }
        ip_batch(
            &hosts
                .iter()
                .map(|h| format!("link set {h} up\n"))
                .collect::<String>(),
        );
        for ns in &nss {
            ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        }
        Topology { nss, hosts }
    }

    fn samples(&self) -> Vec<&Netns> {
        let n = self.nss.len();
        (1..=SAMPLES)
            .map(|k| &self.nss[(k * (n - 1) / SAMPLES).max(1)])
            .collect()
    }

    /// Ports that never join the group: the ones after each sample.
    fn others(&self) -> Vec<&Netns> {
        let n = self.nss.len();
        (1..=SAMPLES)
            .map(|k| &self.nss[((k * (n - 1) / SAMPLES).max(1) + 1) % n])
            .filter(|ns| !std::ptr::eq(*ns, &self.nss[0]))
            .collect()
    }

    /// socat joined to the group in every sampled namespace (each given an
    /// address so that its reports have a source).
    fn join(&self) -> Vec<ChildGuard> {
        let g = GROUP.map(|b| b.to_string()).join(".");
        self.samples()
            .iter()
            .enumerate()
            .map(|(k, ns)| {
                ns.exec_ok(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.242.0.{}/24", k + 1),
                    "dev",
                    "eth0",
                ]);
                ns.spawn(&[
                    "socat",
                    "-u",
                    &format!("UDP4-RECV:5000,reuseaddr,ip-add-membership={g}:eth0"),
                    "/dev/null",
                ])
            })
            .collect()
    }
}

fn ip_batch(commands: &str) {
    assert!(
        run_with_input("ip", &["-batch", "-"], commands).success(),
        "ip -batch failed"
    );
}

fn counter(ns: &Netns, name: &str) -> u64 {
    ns.exec_ok(&["cat", &format!("/sys/class/net/eth0/statistics/{name}")])
        .trim()
        .parse()
        .unwrap()
}

/// A switch with every host end attached, and the pid whose CPU is its cost.
enum Switch {
    Bridge(String),
    Switchd(Daemon),
    Ovs(Ovs),
    Floor(Floor),
}

/// The least a userspace switch on packet sockets can pay per broadcast: a
/// thread of this bench reads each frame from the sender's port and sends it
/// to every other port in one `sendmmsg` naming each, through switchd's own
/// `Sender` and `TxBatch`, and does nothing else (no learning, no decision, no
/// counters, no polling, no snooping). Its cost per delivery against the
/// bridge's is the kernel's price of delivering by packet socket rather than
/// by cloning in softirq, whoever the switch.
struct Floor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Floor {
    fn start(topo: &Topology) -> Result<Floor, String> {
        let ifindex = |h: &String| switchd::sys::ifindex(h).ok_or(format!("no interface {h}"));
        let ingress = ifindex(&topo.hosts[0])?;
        let mut egress: Vec<u32> = topo.hosts[1..]
            .iter()
            .map(ifindex)
            .collect::<Result<_, _>>()?;
        // In the order switchd sends a flood, the cheapest for the kernel.
        egress.sort_by_key(|&i| switchd::datapath::decide::send_order(i));
        let io = |e: std::io::Error| e.to_string();
        let sock = PacketSocket::open(ingress).map_err(io)?;
        let sender = Sender::open(false).map_err(io)?;
        let epoll = Epoll::new().map_err(io)?;
        epoll.add(&sock, 0).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rx, mut tx) = (RxBatch::new(32), TxBatch::new(1024));
            let mut events = EpollEvents::new(1);
            let mut outcome = [TxOutcome::default()];
            while !stopped.load(Ordering::Relaxed) {
                if epoll
                    .wait(&mut events, Some(Duration::from_millis(100)))
                    .is_err()
                {
                    return;
                }
                loop {
                    let n = match rx.recv(&sock) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // The port went away: nothing more to flood.
                        Err(_) => return,
                    };
                    for i in 0..n {
                        let frame = TxFrame::Whole(rx.frame(i).bytes);
                        tx.send(&sender, egress.iter().map(|&e| (0, e, frame)), &mut outcome);
                    }
                }
            }
        });
        Ok(Floor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Floor {
    /// This process: its main thread only sleeps while the phases run.
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Switch {
    fn attach(kind: &str, topo: &Topology) -> Result<Switch, String> {
        let br = unique_name("fb");
        let start = Instant::now();
        let switch = match kind {
            "bridge" => {
                run("ip", &["link", "add", &br, "type", "bridge"]);
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1").unwrap();
                run("ip", &["link", "set", &br, "up"]);
                let batch: String = topo
                    .hosts
                    .iter()
                    .map(|h| format!("link set {h} master {br}\n"))
                    .collect();
                ip_batch(&batch);
                Switch::Bridge(br)
            }
            "switchd" | "switchd-user" => {
                let extra: &'static str = std::env::var("SWITCHD_ARGS").unwrap_or_default().leak();
                let mut args = vec!["--log-level", "warn"];
                args.extend(extra.split_whitespace());
                if kind == "switchd-user" {
                    args.extend(["--offload", "none"]);
                }
                let d = Daemon::start_with(&args);
                let mut cmd: Vec<&str> = vec!["add-br", "--no-internal", &br];
                for h in &topo.hosts {
                    cmd.extend(["--", "add-port", &br, h]);
                }
                d.ctl_ok(&cmd);
                Switch::Switchd(d)
            }
            "ovs" => {
                let ovs = Ovs::start()?;
                ovs.add_netdev_bridge(&br)?;
                ovs.vsctl(&["set", "bridge", &br, "mcast_snooping_enable=true"])?;
                let mut cmd: Vec<&str> = Vec::new();
                for h in &topo.hosts {
                    cmd.extend(["--", "add-port", &br, h]);
                }
                ovs.vsctl(&cmd[1..])?;
                Switch::Ovs(ovs)
            }
            "floor" => Switch::Floor(Floor::start(topo)?),
            other => return Err(format!("unknown kind {other}")),
        };
        eprintln!(
            "flood: {kind}: {} ports attached in {:.1} s",
            topo.hosts.len(),
            start.elapsed().as_secs_f64()
        );
        Ok(switch)
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Switch::Bridge(_) => None,
            Switch::Floor(f) => Some(f.pid()),
            Switch::Switchd(d) => Some(d.pid()),
            Switch::Ovs(o) => Some(o.vswitchd_pid()),
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Switch::Bridge(br) = self {
            let _ = Command::new("ip").args(["link", "del", br]).status();
        }
    }
}

/// What one phase measured.
struct Phase {
    machine_busy_pct: f64,
    switch_cpu_pct: f64,
    sent_per_sec: f64,
    /// Per sampled port, the mean.
    delivered_per_sec: f64,
    /// 1 - received / sent, the worst sampled port.
    worst_loss: f64,
}

#[derive(Clone, Copy)]
enum Load {
    Idle,
    Rate(u64),
    FlatOut,
}

/// trafgen (one process, in its own group so that one signal stops it) sending
/// the ARP broadcast out of the first namespace, `rate` a second evenly spaced,
/// or flat out. Not trafgen's `--rate`: it sends a second's worth at once (500
/// frames in one burst, of which a port's 256-slot receive ring takes 256).
fn trafgen(sender: &Netns, conf: &str, rate: Option<u64>) -> std::process::Child {
    let gap = rate.map(|r| format!("{}us", 1_000_000 / r));
    let mut args = vec![
        "netns",
        "exec",
        &sender.name,
        "trafgen",
        "--dev",
        "eth0",
        "--conf",
        conf,
        "--cpus",
        "1",
        "-q",
    ];
    if let Some(g) = &gap {
        args.extend(["--gap", g.as_str()]);
    }
    Command::new("ip")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start trafgen")
}

fn stop(mut gen: std::process::Child) {
    let _ = switchd::sys::kill(-(gen.id() as i32), libc::SIGINT);
    if !wait_until(Duration::from_secs(5), || {
        gen.try_wait().is_ok_and(|s| s.is_some())
    }) {
        let _ = switchd::sys::kill(-(gen.id() as i32), libc::SIGKILL);
        let _ = gen.wait();
    }
}

/// The sender sends `frame` (a trafgen configuration) once.
fn send_once(topo: &Topology, frame: &str) {
    let conf = std::env::temp_dir().join(format!("{}.cfg", unique_name("flood")));
    std::fs::write(&conf, frame).unwrap();
    topo.nss[0].exec_ok(&[
        "trafgen",
        "--dev",
        "eth0",
        "--conf",
        &conf.display().to_string(),
        "--num",
        "1",
        "-q",
    ]);
    let _ = std::fs::remove_file(&conf);
}

/// `load` of `frame` from the first namespace for `secs`, counted at `samples`.
fn phase(
    topo: &Topology,
    pid: Option<u32>,
    load: Load,
    secs: u64,
    frame: &str,
    samples: &[&Netns],
) -> Phase {
    let sender = &topo.nss[0];
    let conf = std::env::temp_dir().join(format!("{}.cfg", unique_name("flood")));
    std::fs::write(&conf, frame).unwrap();
    let gen = match load {
        Load::Idle => None,
        Load::Rate(r) => Some(trafgen(sender, &conf.display().to_string(), Some(r))),
        Load::FlatOut => Some(trafgen(sender, &conf.display().to_string(), None)),
    };
    // Let the sender reach its rate before counting.
    std::thread::sleep(Duration::from_millis(500));
    let sent0 = counter(sender, "tx_packets");
    let got0: Vec<u64> = samples.iter().map(|ns| counter(ns, "rx_packets")).collect();
    let (busy0, total0) = machine_ticks();
    let cpu0 = pid.map_or(0.0, cpu_secs);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let window = start.elapsed().as_secs_f64();
    let (busy1, total1) = machine_ticks();
    let cpu1 = pid.map_or(0.0, cpu_secs);
    if let Some(g) = gen {
        stop(g);
    }
    let sending = start.elapsed().as_secs_f64();
    let sent = counter(sender, "tx_packets") - sent0;
    let _ = std::fs::remove_file(&conf);
    // What was sent arrives; then every sampled port must have had all of it.
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<u64> = samples
        .iter()
        .zip(&got0)
        .map(|(ns, g0)| counter(ns, "rx_packets") - g0)
        .collect();
    let worst_loss = got
        .iter()
        .map(|&g| {
            if sent == 0 {
                0.0
            } else {
                1.0 - g.min(sent) as f64 / sent as f64
            }
        })
        .fold(0.0, f64::max);
    Phase {
        machine_busy_pct: (busy1 - busy0) as f64 * 100.0 / (total1 - total0).max(1) as f64,
        switch_cpu_pct: (cpu1 - cpu0) * 100.0 / window,
        sent_per_sec: sent as f64 / sending,
        delivered_per_sec: got.iter().sum::<u64>() as f64 / got.len() as f64 / sending,
        worst_loss,
    }
}

fn main() {
    if !switchd_testkit::bench_should_run("flood") {
        return;
    }
    let n = env_u64("FLOOD_PORTS", 1000).max(2) as usize;
    let rate = env_u64("FLOOD_RATE", 500).max(1);
    let secs = env_u64("FLOOD_SECS", 5).max(1);
    let only: Option<Vec<String>> = std::env::var("FLOOD_ONLY")
        .ok()
        .map(|s| s.split(',').map(|k| k.trim().to_string()).collect());
    let topo = Topology::new(n);
    let _members = topo.join();
    let (arp, group) = (arp_config(), group_config());
    let mut rows = Vec::new();
    for kind in KINDS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|k| k == kind)) {
            continue;
        }
        let switch = match Switch::attach(kind, &topo) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("flood: {kind}: skipped: {e}");
                continue;
            }
        };
        std::thread::sleep(Duration::from_secs(3));
        let pid = switch.pid();
        eprintln!("flood: {kind}: idle, {rate}/s, flat out");
        let (samples, others) = (topo.samples(), topo.others());
        let idle = phase(&topo, pid, Load::Idle, secs, &arp, &samples);
        let fixed = phase(&topo, pid, Load::Rate(rate), secs, &arp, &samples);
        let top = phase(&topo, pid, Load::FlatOut, secs, &arp, &samples);
        // The floor floods everything: it has no multicast of its own to show.
        let mcast = (*kind != "floor").then(|| {
            eprintln!("flood: {kind}: a query, then the group at {rate}/s and flat out");
            // Two queries, as a querier starts (RFC 3376 8.7, Startup Query Count:
            // the robustness variable, 2), after a pause for the flat-out phase.
            // A switch still flooding that phase's backlog sees them late and
            // leaks meanwhile (docs/PERFORMANCE.md, "a busy port's backlog").
            std::thread::sleep(Duration::from_secs(2));
            for _ in 0..2 {
                send_once(&topo, &query_config());
                std::thread::sleep(Duration::from_secs(1));
            }
            std::thread::sleep(Duration::from_secs(1));
            let m_fixed = phase(&topo, pid, Load::Rate(rate), secs, &group, &samples);
            let m_top = phase(&topo, pid, Load::FlatOut, secs, &group, &samples);
            let m_leak = phase(&topo, pid, Load::Rate(rate), secs, &group, &others);
            json!({
                "mcast_rate_machine_busy_pct": m_fixed.machine_busy_pct,
                "mcast_rate_switch_cpu_pct": m_fixed.switch_cpu_pct,
                "mcast_rate_sent_per_sec": m_fixed.sent_per_sec,
                "mcast_rate_delivered_per_member_per_sec": m_fixed.delivered_per_sec,
                "mcast_rate_worst_loss": m_fixed.worst_loss,
                "mcast_top_machine_busy_pct": m_top.machine_busy_pct,
                "mcast_top_sent_per_sec": m_top.sent_per_sec,
                "mcast_top_delivered_per_member_per_sec": m_top.delivered_per_sec,
                "mcast_leak_per_non_member_per_sec": m_leak.delivered_per_sec,
            })
        });
        drop(switch);
        rows.push(json!({
            "kind": kind,
            "idle_machine_busy_pct": idle.machine_busy_pct,
            "rate_machine_busy_pct": fixed.machine_busy_pct,
            "rate_switch_cpu_pct": fixed.switch_cpu_pct,
            "rate_sent_per_sec": fixed.sent_per_sec,
            "rate_delivered_per_port_per_sec": fixed.delivered_per_sec,
            "rate_worst_loss": fixed.worst_loss,
            "top_machine_busy_pct": top.machine_busy_pct,
            "top_switch_cpu_pct": top.switch_cpu_pct,
            "top_sent_per_sec": top.sent_per_sec,
            "top_delivered_per_port_per_sec": top.delivered_per_sec,
            "top_worst_loss": top.worst_loss,
        }));
        if let (Some(row), Some(Value::Object(m))) = (rows.last_mut(), mcast) {
            row.as_object_mut().unwrap().extend(m);
        }
    }
    report(n, rate, &rows);
}

fn report(n: usize, rate: u64, rows: &[Value]) {
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let bridge = rows.iter().find(|r| r["kind"] == "bridge");
    println!();
    println!("{n} ports, one namespace broadcasting ARP: {rate}/s, then flat out");
    // The kernel bridge floods in the sender's context, which slows the sender
    // (it cannot keep the rate at 1000 ports): compare CPU per broadcast
    // delivered, not per second.
    let per_delivery =
        |r: &Value| f(r, "rate_machine_busy_pct") / f(r, "rate_delivered_per_port_per_sec") * 100.0;
    println!(
        "{:>13} {:>7} {:>7} {:>11} {:>8} {:>8} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "",
        "idle %",
        "sent/s",
        "delivered/s",
        "busy %",
        "switch %",
        "loss %",
        "% per 100",
        "/ bridge",
        "top deliv/s",
        "/ bridge"
    );
    for r in rows {
        let top = |r: &Value| f(r, "top_delivered_per_port_per_sec");
        println!(
            "{:>13} {:>7.1} {:>7.0} {:>11.0} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>8.2}x {:>11.0} {:>8.2}x",
            r["kind"].as_str().unwrap(),
            f(r, "idle_machine_busy_pct"),
            f(r, "rate_sent_per_sec"),
            f(r, "rate_delivered_per_port_per_sec"),
            f(r, "rate_machine_busy_pct"),
            f(r, "rate_switch_cpu_pct"),
            f(r, "rate_worst_loss") * 100.0,
            per_delivery(r),
            bridge.map_or(f64::NAN, |b| per_delivery(r) / per_delivery(b)),
            top(r),
            bridge.map_or(f64::NAN, |b| top(r) / top(b)),
        );
    }
    println!();
    println!(
        "the same sender to a group {SAMPLES} ports joined, after two IGMP queries: {rate}/s, then flat out"
    );
    println!(
        "{:>13} {:>7} {:>11} {:>8} {:>9} {:>8} {:>9} {:>11} {:>9} {:>11}",
        "",
        "sent/s",
        "delivered/s",
        "busy %",
        "/ bridge",
        "loss %",
        "top sent/s",
        "top deliv/s",
        "/ bridge",
        "leaked/s"
    );
    for r in rows
        .iter()
        .filter(|r| r.get("mcast_rate_sent_per_sec").is_some())
    {
        let ratio = |k: &str| bridge.map_or(f64::NAN, |b| f(r, k) / f(b, k));
        println!(
            "{:>13} {:>7.0} {:>11.0} {:>8.1} {:>8.2}x {:>8.2} {:>9.0} {:>11.0} {:>8.2}x {:>11.1}",
            r["kind"].as_str().unwrap(),
            f(r, "mcast_rate_sent_per_sec"),
            f(r, "mcast_rate_delivered_per_member_per_sec"),
            f(r, "mcast_rate_machine_busy_pct"),
            ratio("mcast_rate_machine_busy_pct"),
            f(r, "mcast_rate_worst_loss") * 100.0,
            f(r, "mcast_top_sent_per_sec"),
            f(r, "mcast_top_delivered_per_member_per_sec"),
            ratio("mcast_top_delivered_per_member_per_sec"),
            f(r, "mcast_leak_per_non_member_per_sec"),
        );
    }
    let path = switchd_testkit::write_results(
        "FLOOD_JSON",
        "flood",
        json!({
            "ports": n,
            "rate": rate,
            "rows": rows,
        }),
    );
    println!("\nresults: {}", path.display());
}
