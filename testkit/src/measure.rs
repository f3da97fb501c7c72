//! Measurements the benches share: TCP throughput, frame rates with trafgen, ping
//! latency, a thread wakeup's cost, idle CPU, and the median over rounds. Each
//! runs between namespaces the caller made; machines here are shared and noisy,
//! so benches report ratios between switches measured in the same rounds.

use crate::procfs::{cpu_secs, machine_ticks};
use crate::{wait_until, Netns};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchd::sys::CpuSet;

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

/// TCP throughput in Gbit/s, and how busy the whole machine was meanwhile (% of
/// all cores): a run at ~100% is bounded by CPU, not by the switch's design.
pub fn tcp(client: &Netns, server: &Netns, server_ip: &str, streams: u32, secs: u64) -> (f64, f64) {
    let _server = server.spawn(&["iperf3", "-s", "-1", "-p", "5201"]);
    assert!(wait_until(Duration::from_secs(5), || {
        server.exec_ok(&["ss", "-ltn"]).contains(":5201")
    }));
    let (busy0, total0) = machine_ticks();
    let out = client.exec(&[
        "iperf3",
        "-c",
        server_ip,
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
pub fn wakeup_us() -> f64 {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (mut here, mut there) = UnixStream::pair().expect("socketpair");
    // Everything the bench starts later inherits this thread's CPU mask: put the
    // one it had back afterwards, whatever it was.
    let mask = CpuSet::of_this_thread().expect("read the CPU mask");
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
    let _ = mask.apply_to_this_thread();
    median(&halves)
}

/// Pins the calling thread to `cpu` (no-op on a machine without it).
fn pin_to_cpu(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > cpu {
        let _ = CpuSet::single(cpu).apply_to_this_thread();
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
pub const SINK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x5e, 0xee, 0x01];

/// A trafgen configuration for one UDP/IPv4 frame of `size` bytes (without FCS)
/// from `src` to `dst`. With `new_source`, the last four bytes of the source
/// address are random in every frame: a MAC flood, where nearly every frame
/// teaches the switch a new address (and, once the table is full, evicts one).
pub fn trafgen_config(src: [u8; 6], dst: [u8; 6], size: usize, new_source: bool) -> String {
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

pub struct FrameResult {
    pub delivered_per_sec: f64,
    pub loss: f64,
    /// CPU time the switch process used meanwhile.
    pub switch_cpu_secs: f64,
}

/// Sends `size`-byte frames from `sender`'s eth0 to [`SINK_MAC`] for `secs`
/// seconds with trafgen, and counts what `receiver`'s eth0 got.
pub fn frames(
    sender: &Netns,
    receiver: &Netns,
    switch_pid: Option<u32>,
    size: usize,
    new_source: bool,
    secs: u64,
) -> FrameResult {
    let conf = std::env::temp_dir().join(format!("switchd-{}.cfg", crate::unique_name("tg")));
    std::fs::write(
        &conf,
        trafgen_config(mac(sender), SINK_MAC, size, new_source),
    )
    .unwrap();
    let sent0 = counter(sender, "tx_packets");
    let got0 = counter(receiver, "rx_packets");
    let cpu0 = switch_pid.map_or(0.0, cpu_secs);
    let conf_arg = conf.display().to_string();
    // trafgen forks a worker per CPU: run it in its own process group so one
    // signal stops all of it.
    let mut gen = Command::new("ip")
        .args(["netns", "exec", &sender.name])
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
    let sent = counter(sender, "tx_packets") - sent0;
    let got = counter(receiver, "rx_packets") - got0;
    let cpu = switch_pid.map_or(0.0, cpu_secs) - cpu0;
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
    let _ = switchd::sys::kill(-pgid, signal);
}

/// p50 and p99 of `count` pings, in microseconds.
pub fn ping_us(client: &Netns, ip: &str, count: u32) -> (f64, f64) {
    let out = client.exec(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        "0.002",
        "-W",
        "1",
        ip,
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

/// CPU a process uses over `secs` seconds, in % of one core.
pub fn idle_cpu_percent(pid: u32, secs: u64) -> f64 {
    let c0 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(secs));
    (cpu_secs(pid) - c0) / secs as f64 * 100.0
}

/// The median of the finite values; NaN if there are none.
pub fn median(values: &[f64]) -> f64 {
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

/// A whole number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
