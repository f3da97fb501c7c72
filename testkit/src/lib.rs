//! What switchd's integration tests and benches share. Every name a guard makes
//! is unique per process and per guard, and `Drop` removes what was created even
//! when the test panics.
//!
//! - [`netns`]: network namespaces and hosts in them (`Netns`, `Host`), processes
//!   stopped on drop (`ChildGuard`);
//! - [`daemon`]: a private switchd and switchctl against it (`Daemon`);
//! - [`frames`]: raw frames, and packet sockets inside a namespace;
//! - [`procfs`]: CPU time and memory from /proc;
//! - [`ovs`]: a private Open vSwitch (userspace datapath) as a reference;
//! - [`measure`]: throughput, frame rate, latency and the statistics over rounds
//!   that the benches report.

pub mod daemon;
pub mod frames;
pub mod measure;
pub mod netns;
pub mod ovs;
pub mod procfs;

pub use daemon::{bin, run_switchd, Daemon};
pub use frames::{checksum, frame, NsSocket};
pub use netns::{ChildGuard, Host, Netns, Wire};
pub use procfs::{cpu_ticks, datapath_ticks, rss_kib, stat_ticks};

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Throughput tests take this exclusively so their floor is not measured against
/// other tests' traffic; every other test shares it.
static MACHINE: RwLock<()> = RwLock::new(());

pub fn shared_machine() -> RwLockReadGuard<'static, ()> {
    require_root();
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive_machine() -> RwLockWriteGuard<'static, ()> {
    require_root();
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

fn require_root() {
    assert_eq!(
        switchd::sys::effective_uid(),
        0,
        "these tests create network namespaces and veth pairs: run them as root"
    );
}

/// A name no other guard in any concurrently running test process uses; at most 15 bytes.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}-{n}", std::process::id());
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `request` to `stream` 100 at a time until a write fails (give the
/// stream a write timeout): the server has stopped reading, its replies having
/// filled the connection. Returns how many went.
pub fn send_until_refused(stream: &mut impl std::io::Write, request: &[u8]) -> usize {
    let batch = request.repeat(100);
    let mut sent = 0;
    while stream.write_all(&batch).is_ok() {
        sent += 100;
        assert!(sent < 10_000_000, "the server never stopped reading");
    }
    sent
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (is it installed?)"));
    stdout_of_success(out, || format!("{cmd} {args:?}"))
}

/// Runs `cmd` with `input` on its stdin (a script or batch too long for one
/// argument) and returns how it exited.
pub fn run_with_input(cmd: &str, args: &[&str], input: &str) -> std::process::ExitStatus {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (is it installed?)"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .unwrap_or_else(|e| panic!("writing to {cmd}: {e}"));
    child.wait().unwrap()
}

/// The stdout of a command that succeeded; panics with all of its output, and
/// `what` it was, if it did not.
pub fn stdout_of_success(out: Output, what: impl FnOnce() -> String) -> String {
    assert!(
        out.status.success(),
        "{} failed ({}): {}{}",
        what(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// For a `harness = false` bench: false unless `cargo bench` runs it (so
/// `cargo test --benches` does not); exits if not root.
pub fn bench_should_run(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        return false;
    }
    if switchd::sys::effective_uid() != 0 {
        eprintln!("{name}: needs root (namespaces, veth pairs, bridges)");
        std::process::exit(1);
    }
    true
}

/// Host settings that change what a bench measures, as /proc/sys has them:
/// the TCP and socket buffer sizes and the backlog queue. Mininet's runs raise
/// or overwrite all of them and leave them so (tests/mininet.rs puts them
/// back), and an administrator may have tuned them: results from machines or
/// moments with different values are not comparable.
pub fn host_settings() -> serde_json::Value {
    const SETTINGS: &[&str] = &[
        "net.core.netdev_max_backlog",
        "net.core.rmem_default",
        "net.core.rmem_max",
        "net.core.wmem_default",
        "net.core.wmem_max",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    ];
    SETTINGS
        .iter()
        .map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            let value = std::fs::read_to_string(path).unwrap_or_default();
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.to_string(), serde_json::Value::from(value))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Writes a bench's results, with the kernel, CPU count and `host_settings` added, to the file
/// `env` names or target/`bench`/<unix time>.json; returns the path.
pub fn write_results(env: &str, bench: &str, mut doc: serde_json::Value) -> std::path::PathBuf {
    let path = std::env::var(env)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            std::path::PathBuf::from(format!("target/{bench}/{t}.json"))
        });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let kernel = Command::new("uname").arg("-r").output().unwrap();
    doc["kernel"] = String::from_utf8_lossy(&kernel.stdout).trim().into();
    doc["cpus"] = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
        .into();
    doc["host_settings"] = host_settings();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    path
}
