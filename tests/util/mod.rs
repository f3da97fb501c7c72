//! RAII guards for real namespaces, veth pairs and daemons. Every name is unique per
//! test process and per guard, and `Drop` removes what was created even when the
//! test panics.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
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

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process that is killed (by its pid) when the guard drops.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique_name("swt");
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        // IPv6 router and multicast-listener chatter would make the counters noisy.
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, args: &[&str]) -> ChildGuard {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.name));
        ChildGuard(child)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A namespace joined to the root namespace by a veth pair: `eth0` inside with an
/// address, `port` outside, ready to be added to a bridge.
pub struct Host {
    pub ns: Netns,
    pub port: String,
    pub ip: String,
}

impl Host {
    /// `cidr` like "192.168.0.1/24".
    pub fn new(cidr: &str) -> Host {
        Host::with_port(&unique_name("swv"), cidr)
    }

    /// A host whose root-namespace end is called `port`.
    pub fn with_port(port: &str, cidr: &str) -> Host {
        let ns = Netns::new();
        let port = port.to_string();
        run(
            "ip",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ],
        );
        let host = Host {
            ns,
            port,
            ip: cidr.split('/').next().unwrap().to_string(),
        };
        host.ns.exec_ok(&["ip", "addr", "add", cidr, "dev", "eth0"]);
        host.ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        host
    }

    pub fn mac(&self) -> String {
        let out = self.ns.exec_ok(&["cat", "/sys/class/net/eth0/address"]);
        out.trim().to_string()
    }

    /// One ping to `ip`, retried (the first may wait for ARP) for up to 5 s.
    pub fn can_ping(&self, ip: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.ping_once(ip))
    }

    pub fn ping_once(&self, ip: &str) -> bool {
        self.ns
            .exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", ip])
            .status
            .success()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace takes the pair with it; this covers a failed move.
        let _ = Command::new("ip")
            .args(["link", "del", &self.port])
            .stderr(Stdio::null())
            .status();
    }
}

/// Where cargo put the binaries: next to the `deps` folder this test runs from.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

/// A running switchd with its own socket and database in a private directory.
pub struct Daemon {
    child: Option<Child>,
    args: Vec<String>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub db: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&["--log-level", "debug"])
    }

    /// Starts switchd with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!("switchd-test-{}", unique_name("d")));
        std::fs::create_dir_all(&dir).unwrap();
        let mut daemon = Daemon {
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            socket: dir.join("switchd.sock"),
            db: dir.join("switchd.json"),
            dir,
        };
        daemon.restart();
        daemon
    }

    /// Starts the daemon again on the same socket and database.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("switchd.log"))
            .unwrap();
        let child = Command::new(bin("switchd"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--db")
            .arg(&self.db)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start switchd");
        self.child = Some(child);
        // The socket accepts connections before the saved configuration is
        // restored; requests are answered only after it. So an answer, not a
        // connection, means the bridges and their TAPs are back.
        let up = wait_until(Duration::from_secs(10), || {
            self.ctl(&["list-br"]).status.success()
        });
        assert!(
            up,
            "switchd did not answer on its socket; log:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("switchd ignored SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("switchd.log")).unwrap_or_default()
    }

    /// Runs switchctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("switchctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run switchctl")
    }

    /// Runs switchctl and returns its stdout, panicking if it fails.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "switchctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs switchctl with `--format json` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--format", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(&full)).expect("switchctl printed JSON")
    }

    /// Counters of one port, from `dump-ports --format json`.
    pub fn port_counters(&self, bridge: &str, port: &str) -> Value {
        self.ctl_json(&["dump-ports", bridge, port])[0].clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw packet socket on an interface inside a namespace, built from switchd's own
/// `sys` types (virtio-net header, batched I/O, VLAN tags restored from metadata).
pub struct NsSocket {
    sock: switchd::sys::PacketSocket,
    rx: switchd::sys::RxBatch,
    tx: switchd::sys::TxBatch,
}

const VNET_HDR: usize = 10;

impl Netns {
    pub fn packet_socket(&self, ifname: &str) -> NsSocket {
        let (ns, ifname) = (self.name.clone(), ifname.to_string());
        // A socket belongs to the namespace it was created in: create it on a
        // thread that has joined the namespace, and let the thread end.
        let sock = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: setns on a valid namespace fd affects only this thread.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let index = switchd::sys::ifindex(&ifname).expect("interface in namespace");
            switchd::sys::PacketSocket::open(index).expect("packet socket")
        })
        .join()
        .unwrap();
        NsSocket {
            sock,
            rx: switchd::sys::RxBatch::new(8),
            tx: switchd::sys::TxBatch::new(8),
        }
    }
}

impl NsSocket {
    pub fn send(&mut self, frame: &[u8]) {
        let mut bytes = vec![0u8; VNET_HDR];
        bytes.extend_from_slice(frame);
        let sent = self.tx.send(&self.sock, [&bytes[..]]);
        assert_eq!(sent.packets, 1, "send failed: {:?}", sent.last_error);
    }

    /// Sends every frame, a batch per syscall; returns how many the kernel took.
    pub fn send_all(&mut self, frames: impl Iterator<Item = Vec<u8>>) -> u64 {
        let bufs: Vec<Vec<u8>> = frames
            .map(|f| {
                let mut b = vec![0u8; VNET_HDR];
                b.extend_from_slice(&f);
                b
            })
            .collect();
        let mut sent = 0;
        for chunk in bufs.chunks(64) {
            sent += self
                .tx
                .send(&self.sock, chunk.iter().map(|b| &b[..]))
                .packets;
        }
        sent
    }

    /// Frames received until `stop` returns true for one (returned last) or `timeout`.
    pub fn recv_until(&mut self, timeout: Duration, stop: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.rx.recv(&self.sock) {
                Ok(n) => {
                    for i in 0..n {
                        let frame = self.rx.frame(i).bytes[VNET_HDR..].to_vec();
                        let done = stop(&frame);
                        frames.push(frame);
                        if done {
                            return frames;
                        }
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        frames
    }
}

/// An Ethernet frame of 60 bytes; `vlan` adds an 802.1Q tag with that TCI.
pub fn frame(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    // IEEE "local experimental" ethertype: nothing in a namespace reacts to it.
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// utime + stime from the text of a `/proc/.../stat` file, in clock ticks; 0 if
/// it cannot be read.
pub fn stat_ticks(stat: &str) -> u64 {
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields
        .get(11..13)
        .map_or(0, |f| f.iter().map(|v| v.parse::<u64>().unwrap_or(0)).sum())
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

/// CPU ticks used so far by switchd's datapath threads (named `datapath-N`) alone:
/// unlike the whole process, they do not pay for link events that tests running
/// in parallel cause in the root namespace.
pub fn datapath_ticks(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| stat.contains("(datapath-"))
        .map(|stat| stat_ticks(&stat))
        .sum()
}

/// Resident memory of a process in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// For a `harness = false` bench: false unless `cargo bench` runs it (so
/// `cargo test --benches` does not); exits if not root.
#[allow(dead_code)] // the benches' entry check; the tests use `require_root`
pub fn bench_should_run(name: &str) -> bool {
    if !std::env::args().any(|a| a == "--bench") {
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{name}: needs root (namespaces, veth pairs, bridges)");
        std::process::exit(1);
    }
    true
}
