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
//! Run as root: `scripts/bench` (installs iperf3, netsniff-ng and
//! openvswitch-switch if missing, builds the release binaries, runs this).
//! Environment: `COMPARE_ROUNDS` (default 3), `COMPARE_SECS` (seconds per
//! throughput test, default 4), `COMPARE_ONLY` (comma list of
//! veth,bridge,ovs,switchd,switchd-user),
//! `COMPARE_JSON` (results file, default target/compare/<unix time>.json),
//! `SWITCHD_ARGS` (extra switchd flags, e.g. `--datapath-threads 2 --spin-us 1000`).

#[allow(dead_code)]
#[path = "../tests/util/mod.rs"]
mod util;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use util::{run, wait_until, Daemon, Netns};

const A_IP: &str = "10.77.0.1";
const B_IP: &str = "10.77.0.2";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Veth,
    Bridge,
    Ovs,
    Switchd,
    SwitchdUser,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Veth,
        Kind::Bridge,
        Kind::Ovs,
        Kind::Switchd,
        Kind::SwitchdUser,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::Bridge => "bridge",
            Kind::Ovs => "ovs",
            Kind::Switchd => "switchd",
            Kind::SwitchdUser => "switchd-user",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Veth => "veth pair",
            Kind::Bridge => "kernel bridge",
            Kind::Ovs => "OVS netdev+TSO",
            Kind::Switchd => "switchd",
            Kind::SwitchdUser => "switchd-user",
        }
    }
}

/// A private Open vSwitch instance (its own database, sockets and logs in a temp
/// directory), stopped by pid on drop.
struct Ovs {
    dir: PathBuf,
    pids: Vec<i32>,
}

impl Ovs {
    fn start() -> Result<Ovs, String> {
        for tool in ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"] {
            if !Command::new("which")
                .arg(tool)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Err(format!(
                    "{tool} not installed (apt-get install openvswitch-switch)"
                ));
            }
        }
        let dir = std::env::temp_dir().join(format!("switchd-compare-ovs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut ovs = Ovs {
            dir,
            pids: Vec::new(),
        };
        let d = ovs.dir.display().to_string();
        let schema = "/usr/share/openvswitch/vswitch.ovsschema";
        ovs.sh("ovsdb-tool", &["create", &format!("{d}/conf.db"), schema])?;
        ovs.sh(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--pidfile={d}/ovsdb.pid"),
                "--detach",
                &format!("--log-file={d}/ovsdb.log"),
                &format!("{d}/conf.db"),
            ],
        )?;
        ovs.pids.push(ovs.pid("ovsdb.pid")?);
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.sh(
            "ovs-vswitchd",
            &[
                &format!("unix:{d}/db.sock"),
                &format!("--pidfile={d}/vswitchd.pid"),
                "--detach",
                &format!("--log-file={d}/vswitchd.log"),
            ],
        )?;
        ovs.pids.push(ovs.pid("vswitchd.pid")?);
        ovs.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ])?;
        Ok(ovs)
    }

    fn sh(&self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(cmd)
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .env("OVS_LOGDIR", &self.dir)
            .output()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        let mut full = vec![db.as_str()];
        full.extend_from_slice(args);
        self.sh("ovs-vsctl", &full)
    }

    fn pid(&self, file: &str) -> Result<i32, String> {
        std::fs::read_to_string(self.dir.join(file))
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{file}: {e}"))
    }

    /// ovs-vswitchd's pid, for CPU accounting.
    fn vswitchd_pid(&self) -> i32 {
        self.pids[1]
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            // SAFETY: kill(2) on the pids of the daemons this bench started.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM)
            };
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two namespaces, `a` and `b`, each with `eth0`, joined through one kind of switch.
struct Topology {
    kind: Kind,
    a: Netns,
    b: Netns,
    /// Root-namespace veth ends, deleted on drop.
    links: Vec<String>,
    daemon: Option<Daemon>,
    ovs_bridge: Option<String>,
    /// The process doing the switching in userspace, for CPU accounting.
    switch_pid: Option<i32>,
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
    let port = util::unique_name("cmp");
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
            let br = util::unique_name("cmpbr");
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
            let br = util::unique_name("cmpov");
            ovs.vsctl(&[
                "add-br",
                &br,
                "--",
                "set",
                "bridge",
                &br,
                "datapath_type=netdev",
            ])?;
            topo.ovs_bridge = Some(br.clone());
            for ns in [&topo.a, &topo.b] {
                let port = uplink(ns);
                ovs.vsctl(&["add-port", &br, &port])?;
                topo.links.push(port);
            }
            topo.switch_pid = Some(ovs.vswitchd_pid());
        }
        Kind::Switchd | Kind::SwitchdUser => {
            let extra = std::env::var("SWITCHD_ARGS").unwrap_or_default();
            let mut args = vec!["--log-level", "info"];
            args.extend(extra.split_whitespace());
            if kind == Kind::SwitchdUser {
                args.extend(["--offload", "none"]);
            }
            let daemon = Daemon::start_with(&args);
            daemon.ctl_ok(&["add-br", "--no-internal", "br0"]);
            for ns in [&topo.a, &topo.b] {
                let port = uplink(ns);
                daemon.ctl_ok(&["add-port", "br0", &port]);
                topo.links.push(port);
            }
            topo.switch_pid = Some(daemon.pid() as i32);
            topo.daemon = Some(daemon);
        }
    }
    address(&topo.a, A_IP);
    address(&topo.b, B_IP);
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

fn mac(ns: &Netns) -> [u8; 6] {
    let text = ns.exec_ok(&["cat", "/sys/class/net/eth0/address"]);
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(text.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

fn counter(ns: &Netns, name: &str) -> u64 {
    ns.exec_ok(&["cat", &format!("/sys/class/net/eth0/statistics/{name}")])
        .trim()
        .parse()
        .unwrap()
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    util::stat_ticks(&stat) as f64 / hz
}

/// Busy and total jiffies of the whole machine, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// TCP throughput in Gbit/s, and how busy the whole machine was meanwhile (% of
/// all cores): a run at ~100% is bounded by CPU, not by the switch's design.
fn tcp(topo: &Topology, streams: u32, secs: u64) -> (f64, f64) {
    let _server = topo.b.spawn(&["iperf3", "-s", "-1", "-p", "5201"]);
    assert!(wait_until(Duration::from_secs(5), || {
        topo.b.exec_ok(&["ss", "-ltn"]).contains(":5201")
    }));
    let (busy0, total0) = machine_ticks();
    let out = topo.a.exec(&[
        "iperf3",
        "-c",
        B_IP,
        "-p",
        "5201",
        "-t",
        &secs.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ]);
    let (busy1, total1) = machine_ticks();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let gbps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    let busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0;
    (gbps, busy)
}

/// p50 of one thread waking another that sleeps in a blocking read on the other
/// CPU (half a round trip over a socket pair), in microseconds. A userspace switch pays at
/// least one such wakeup per ping that the kernel bridge does not: the bridge
/// answers inside the sender's system call, switchd must wake ping's process
/// from another thread.
fn wakeup_us() -> f64 {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (mut here, mut there) = UnixStream::pair().expect("socketpair");
    // Everything the bench starts later inherits this thread's CPU mask: put the
    // one it had back afterwards, whatever it was.
    let mask = affinity();
    // On different CPUs, as ping and switchd's thread are when the ping runs on
    // the other core: the wakeup then needs an interrupt to the sleeping CPU.
    pin_to_cpu(1);
    let echo = std::thread::spawn(move || {
        pin_to_cpu(0);
        let mut b = [0u8; 1];
        while there.read_exact(&mut b).is_ok() && b[0] != 0 {
            there.write_all(&b).expect("echo");
        }
    });
    let mut halves = Vec::with_capacity(500);
    let mut b = [1u8; 1];
    for _ in 0..500 {
        // Idle as long as between two pings of `ping_us`, so the CPUs get as deep
        // into their idle state as they do there.
        std::thread::sleep(Duration::from_millis(2));
        let t = Instant::now();
        here.write_all(&[1]).expect("write");
        here.read_exact(&mut b).expect("read");
        halves.push(t.elapsed().as_secs_f64() * 1e6 / 2.0);
    }
    here.write_all(&[0]).expect("stop");
    echo.join().expect("echo thread");
    set_affinity(&mask);
    median(&halves)
}

/// Pins the calling thread to `cpu` (no-op on a single-CPU machine).
fn pin_to_cpu(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > cpu {
        // SAFETY: cpu_set_t is plain old data and all-zero is the empty set;
        // CPU_SET writes inside it.
        #[allow(unsafe_code)]
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            set
        };
        set_affinity(&set);
    }
}

/// The calling thread's CPU mask.
fn affinity() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain old data; sched_getaffinity writes at most its
    // size.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        set
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity reads exactly the size of the set it is given.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A MAC address nobody owns. Every switch floods frames to it out of its only
/// other port, b's, and b's kernel drops them as not-for-this-host right at
/// `ip_rcv` after counting them. Frames addressed to b itself would make b's UDP
/// stack (and its ICMP port-unreachable replies) part of the measurement, charged
/// to whichever context delivers the frame: the generator's for the kernel bridge,
/// the switch's for a userspace switch.
const SINK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x5e, 0xee, 0x01];

/// A trafgen configuration for one UDP/IPv4 frame of `size` bytes (without FCS)
/// from `src` to `dst`. With `new_source`, the last four bytes of the source
/// address are random in every frame: a MAC flood, where nearly every frame
/// teaches the switch a new address (and, once the table is full, evicts one).
fn trafgen_config(src: [u8; 6], dst: [u8; 6], size: usize, new_source: bool) -> String {
    let mut f = Vec::with_capacity(size);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (size - 14) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
    ];
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    // UDP to the discard port, no checksum.
    let udp_len = ip_len - 20;
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x09]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(size, 0xa5);
    let mut bytes: Vec<String> = f.iter().map(|b| format!("0x{b:02x}")).collect();
    if new_source {
        bytes.splice(8..12, ["drnd(4)".to_string()]);
    }
    format!("{{ {} }}\n", bytes.join(", "))
}

struct FrameResult {
    delivered_per_sec: f64,
    loss: f64,
    switch_cpu_secs: f64,
}

fn frames(topo: &Topology, size: usize, new_source: bool, secs: u64) -> FrameResult {
    let conf =
        std::env::temp_dir().join(format!("switchd-compare-{}-{size}.cfg", std::process::id()));
    std::fs::write(
        &conf,
        trafgen_config(mac(&topo.a), SINK_MAC, size, new_source),
    )
    .unwrap();
    let sent0 = counter(&topo.a, "tx_packets");
    let got0 = counter(&topo.b, "rx_packets");
    let cpu0 = topo.switch_pid.map_or(0.0, cpu_secs);
    let conf_arg = conf.display().to_string();
    // trafgen forks a worker per CPU: run it in its own process group so one
    // signal stops all of it.
    let mut gen = Command::new("ip")
        .args(["netns", "exec", &topo.a.name])
        .args([
            "trafgen",
            "--dev",
            "eth0",
            "--conf",
            &conf_arg,
            "--cpus",
            "1",
            "--no-sock-mem",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start trafgen");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop_group(gen.id() as i32, libc::SIGINT);
    if !wait_until(Duration::from_secs(5), || {
        gen.try_wait().is_ok_and(|s| s.is_some())
    }) {
        stop_group(gen.id() as i32, libc::SIGKILL);
        let _ = gen.wait();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let queued frames drain before reading the counters.
    std::thread::sleep(Duration::from_millis(300));
    let sent = counter(&topo.a, "tx_packets") - sent0;
    let got = counter(&topo.b, "rx_packets") - got0;
    let cpu = topo.switch_pid.map_or(0.0, cpu_secs) - cpu0;
    let _ = std::fs::remove_file(&conf);
    FrameResult {
        delivered_per_sec: got as f64 / elapsed,
        loss: if sent == 0 {
            0.0
        } else {
            1.0 - (got.min(sent) as f64 / sent as f64)
        },
        switch_cpu_secs: cpu,
    }
}

/// Signals every process in the group led by `pgid` (a group this bench created).
fn stop_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, signal)
    };
}

/// p50 and p99 of `count` pings, in microseconds.
fn ping_us(topo: &Topology, count: u32) -> (f64, f64) {
    let out = topo.a.exec(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.002",
        "-W",
        "1",
        B_IP,
    ]);
    let mut rtts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if rtts.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    (pct(0.50), pct(0.99))
}

fn idle_cpu_percent(pid: i32, secs: u64) -> f64 {
    let c0 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(secs));
    (cpu_secs(pid) - c0) / secs as f64 * 100.0
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Figures in table order: key, label, higher is better.
const FIGURES: &[(&str, &str, bool)] = &[
    ("tcp1_gbps", "TCP 1 stream, Gbit/s", true),
    ("tcp1_busy_pct", "machine CPU busy in TCP 1, %", false),
    ("tcp4_gbps", "TCP 4 streams, Gbit/s", true),
    ("f64_kfps", "64B frames delivered, k/s", true),
    ("f64_loss_pct", "64B loss, %", false),
    ("f1500_kfps", "1500B frames delivered, k/s", true),
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
    if !util::bench_should_run("compare") {
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

    let ovs = if kinds.contains(&Kind::Ovs) {
        match Ovs::start() {
            Ok(ovs) => Some(ovs),
            Err(e) => {
                println!("skipping Open vSwitch: {e}");
                kinds.retain(|k| *k != Kind::Ovs);
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
        wakeups.push(wakeup_us());
        // Alternate the order so no topology always runs first on a warm machine.
        let n = topologies.len();
        for i in 0..n {
            let topo = &topologies[(i + round as usize) % n];
            eprintln!("round {}/{rounds}: {}", round + 1, topo.kind.title());
            let s = samples.entry(topo.kind).or_default();
            let mut add = |k: &'static str, v: f64| s.entry(k).or_default().push(v);
            let (gbps, busy) = tcp(topo, 1, secs);
            add("tcp1_gbps", gbps);
            add("tcp1_busy_pct", busy);
            add("tcp4_gbps", tcp(topo, 4, secs).0);
            let f64r = frames(topo, 60, false, secs);
            add("f64_kfps", f64r.delivered_per_sec / 1e3);
            add("f64_loss_pct", f64r.loss * 100.0);
            if topo.switch_pid.is_some() {
                let mframes = f64r.delivered_per_sec * secs as f64 / 1e6;
                add(
                    "cpu_s_per_mframes",
                    f64r.switch_cpu_secs / mframes.max(1e-9),
                );
            }
            add(
                "f1500_kfps",
                frames(topo, 1500, false, secs).delivered_per_sec / 1e3,
            );
            let flood = frames(topo, 60, true, secs);
            add("flood_kfps", flood.delivered_per_sec / 1e3);
            if topo.switch_pid.is_some() {
                let mframes = flood.delivered_per_sec * secs as f64 / 1e6;
                add(
                    "flood_cpu_s_per_mframes",
                    flood.switch_cpu_secs / mframes.max(1e-9),
                );
            }
            let (p50, p99) = ping_us(topo, 500);
            add("ping_p50_us", p50);
            add("ping_p99_us", p99);
            if let Some(pid) = topo.switch_pid {
                add("idle_cpu_pct", idle_cpu_percent(pid, 3));
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
    let s = *medians.get(&Kind::Switchd)?.get(fig)?;
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
