//! Mininet over switchd (integrations/mininet.py): real `mn` runs, pingall on
//! linear and tree topologies, TCP between two hosts, a daemon the class owns,
//! and failed and killed runs that must leave every other link on the machine
//! alone. Mininet's interface names (s1-eth1, h1-eth0) are global, so every
//! test here takes the machine exclusively, and a lock file besides, against
//! another test process on the same machine.

use crate::util::{bin, exclusive_machine, unique_name, wait_until, ChildGuard, Daemon};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MN: &str = "/usr/bin/mn";
/// Also taken by integrations/mininet_bench.py.
const LOCK: &str = "/run/lock/switchd-mininet-tests.lock";
const PYTHON: &str = "/usr/bin/python3";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn custom() -> PathBuf {
    repo().join("integrations/mininet.py")
}

fn require_mininet() {
    assert!(
        Path::new(MN).exists(),
        "Mininet is not installed ({MN} missing): apt-get install mininet \
         (scripts/test installs it)"
    );
}

/// Interfaces in the root namespace named as Mininet names them (s1-eth1).
fn mininet_links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| is_mininet_name(name))
        .collect()
}

fn is_mininet_name(name: &str) -> bool {
    let Some((node, port)) = name.split_once("-eth") else {
        return false;
    };
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    node.strip_prefix(['s', 'h']).is_some_and(number) && number(port)
}

/// Pids of Mininet's node shells (`bash ... mininet:h1`).
fn mininet_shells() -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("mininet:"))
        })
        .collect()
}

/// A veth pair named as Mininet names links (`zz<unique>-eth0`), which
/// Mininet's own cleanup would delete and ours must not; deleted on drop.
struct Decoy(String);

impl Decoy {
    fn new() -> Decoy {
        let name = format!("{}-eth0", unique_name("zz"));
        let peer = name.replace("-eth0", "-eth1");
        crate::util::run(
            "ip",
            &["link", "add", &name, "type", "veth", "peer", "name", &peer],
        );
        Decoy(name)
    }

    fn exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.0).exists()
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// The host settings Mininet's `fixLimits` (mininet/util.py, run by every
/// `Mininet` and so by every `mn`) raises or overwrites and never puts back.
/// Left behind, they change the conditions of whatever runs on the machine
/// later: TCP's buffer sizes (its default receive buffer shrinks from 128 KiB
/// to 85 KiB) and the backlog queue the kernel bridge floods into. So each
/// test puts back what it found.
const MININET_SYSCTLS: &[&str] = &[
    "fs/file-max",
    "kernel/pty/max",
    "net/core/netdev_max_backlog",
    "net/core/rmem_max",
    "net/core/wmem_max",
    "net/ipv4/neigh/default/gc_thresh1",
    "net/ipv4/neigh/default/gc_thresh2",
    "net/ipv4/neigh/default/gc_thresh3",
    "net/ipv4/route/max_size",
    "net/ipv4/tcp_rmem",
    "net/ipv4/tcp_wmem",
];

/// Each of `MININET_SYSCTLS` with its value now.
fn host_sysctls() -> Vec<(PathBuf, String)> {
    MININET_SYSCTLS
        .iter()
        .map(|name| {
            let path = Path::new("/proc/sys").join(name);
            let value = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path, value)
        })
        .collect()
}

/// What a test checks before and after a Mininet run: no Mininet links or
/// shells, and a private directory for the class's state files; and the host
/// settings, put back as the run found them.
struct Run {
    state_dir: PathBuf,
    shells_before: BTreeSet<u32>,
    sysctls_before: Vec<(PathBuf, String)>,
    /// The machine's own settings, where `new_with` changed some first.
    sysctls_original: Vec<(PathBuf, String)>,
    _lock: switchd::sys::LockFile,
}

impl Run {
    fn new() -> Run {
        Run::new_with(&[])
    }

    /// A run that starts from the host settings `set` (name under
    /// /proc/sys, value), changed once the lock is held; the machine's own
    /// come back when the run goes.
    fn new_with(set: &[(&str, &str)]) -> Run {
        require_mininet();
        let mut lock = None;
        let mut holder = None;
        wait_until(Duration::from_secs(900), || {
            match switchd::sys::LockFile::try_lock(Path::new(LOCK)) {
                Ok(l) => lock = Some(l),
                Err(switchd::sys::LockError::Held(pid)) => holder = pid,
                Err(e) => panic!("cannot lock {LOCK}: {e:?}"),
            }
            lock.is_some()
        });
        let lock = lock.unwrap_or_else(|| {
            panic!("another process (pid {holder:?}) held {LOCK} for 15 minutes")
        });
        let before = mininet_links();
        assert!(
            before.is_empty(),
            "Mininet links exist before the test (left by an earlier run?): {before:?}"
        );
        let state_dir = std::env::temp_dir().join(format!("switchd-mn-{}", unique_name("st")));
        std::fs::create_dir_all(&state_dir).unwrap();
        let sysctls_original = if set.is_empty() {
            Vec::new()
        } else {
            host_sysctls()
        };
        for (name, value) in set {
            std::fs::write(Path::new("/proc/sys").join(name), value).unwrap();
        }
        Run {
            state_dir,
            shells_before: mininet_shells(),
            sysctls_before: host_sysctls(),
            sysctls_original,
            _lock: lock,
        }
    }

    /// `mn` (or python3) with `args`, bounded by `timeout`, with the binaries
    /// under test, the state directory, and `SWITCHD_SOCKET` only if `socket`
    /// is given.
    fn command(&self, program: &str, socket: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "10", "300", program]).args(args);
        self.environment(&mut cmd, socket);
        cmd
    }

    fn environment(&self, cmd: &mut Command, socket: Option<&Path>) {
        cmd.current_dir(repo())
            .env("SWITCHCTL", bin("switchctl"))
            .env("SWITCHD", bin("switchd"))
            .env("SWITCHD_MININET_STATE_DIR", &self.state_dir)
            .env_remove("SWITCHD_SOCKET")
            .env_remove("SWITCHD_BRIDGE_PREFIX")
            .env_remove("SWITCHD_ARGS")
            .stdin(Stdio::null());
        if let Some(socket) = socket {
            cmd.env("SWITCHD_SOCKET", socket);
        }
    }

    /// Runs `mn --custom integrations/mininet.py --controller none ARGS`;
    /// returns its exit status and output (stdout and stderr).
    fn mn(&self, socket: Option<&Path>, args: &[&str]) -> (Output, String) {
        let custom = custom();
        let mut full = vec!["--custom", custom.to_str().unwrap(), "--controller", "none"];
        full.extend_from_slice(args);
        let out = self
            .command(MN, socket, &full)
            .output()
            .expect("run mn under timeout");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, text)
    }

    /// `mn --switch SWITCH --topo TOPO --test TEST`, with a `--post` script
    /// of `post` lines if there are any.
    fn mn_test(
        &self,
        socket: Option<&Path>,
        switch: &str,
        topo: &str,
        test: &str,
        post: &[&str],
    ) -> (Output, String) {
        let script = (!post.is_empty()).then(|| self.script(post));
        let mut args = vec!["--switch", switch, "--topo", topo, "--test", test];
        if let Some(script) = &script {
            args.extend(["--post", script.to_str().unwrap()]);
        }
        self.mn(socket, &args)
    }

    /// A CLI script for `mn --post`: `lines` written to the state directory.
    fn script(&self, lines: &[&str]) -> PathBuf {
        let path = self.state_dir.join(unique_name("cli"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// The class's state files (PID.json) in the state directory.
    fn state_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.state_dir)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.strip_suffix(".json")
                            .is_some_and(|pid| pid.parse::<u32>().is_ok())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The host settings as the run found them.
    fn put_back_host_settings(&self) {
        put_back(&self.sysctls_before);
    }

    /// Nothing of the run is left: no Mininet links, no new node shells, no
    /// state file.
    fn assert_clean(&self, output: &str) {
        assert!(
            wait_until(Duration::from_secs(5), || mininet_links().is_empty()),
            "Mininet links left after the run: {:?}\n{output}",
            mininet_links()
        );
        // Mininet hangs its node shells up without waiting for them.
        let left = || -> Vec<u32> {
            mininet_shells()
                .difference(&self.shells_before)
                .copied()
                .collect()
        };
        assert!(
            wait_until(Duration::from_secs(5), || left().is_empty()),
            "node shells left: {:?}\n{output}",
            left()
        );
        let states = self.state_files();
        assert!(states.is_empty(), "state files left: {states:?}\n{output}");
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A test that failed half way (a killed mn) left a state file: finish
        // its cleanup the safe way before the file goes.
        if !self.state_files().is_empty() {
            let custom = custom();
            let _ = self
                .command(MN, None, &["--custom", custom.to_str().unwrap(), "-c"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
        self.put_back_host_settings();
        put_back(&self.sysctls_original);
    }
}

fn put_back(sysctls: &[(PathBuf, String)]) {
    for (path, value) in sysctls {
        if let Err(e) = std::fs::write(path, value) {
            eprintln!("could not put back {}: {e}", path.display());
        }
    }
}

fn assert_pingall_ok(out: &Output, text: &str) {
    assert!(out.status.success(), "mn failed ({}):\n{text}", out.status);
    assert!(
        text.contains("Results: 0% dropped"),
        "pingall dropped packets:\n{text}"
    );
    assert!(
        !text.contains("Caught exception"),
        "mn caught an exception:\n{text}"
    );
}

/// The owned daemon `mn` reported starting: (pid, socket).
fn owned_daemon(text: &str) -> (u32, PathBuf) {
    // Mininet prints switch names without a newline: it may follow them.
    let (_, rest) = text
        .split_once("*** switchd: started pid ")
        .unwrap_or_else(|| panic!("no owned switchd started:\n{text}"));
    let line = rest.lines().next().unwrap();
    let (pid, socket) = line.split_once(" on ").unwrap();
    (pid.parse().unwrap(), PathBuf::from(socket))
}

/// True while `pid` is a switchd serving `socket`.
fn switchd_running(pid: u32, socket: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(socket.to_str().unwrap()))
}

#[test]
fn pingall_linear_3_over_a_shared_daemon() {
    let _machine = exclusive_machine();
    // Below the 5000 Mininet sets, so that this run changes it.
    const BACKLOG: &str = "net/core/netdev_max_backlog";
    let run = Run::new_with(&[(BACKLOG, "1000")]);
    let d = Daemon::start();
    let (out, text) = run.mn_test(
        Some(&d.socket),
        "switchd",
        "linear,3",
        "pingall",
        &["sh \"$SWITCHCTL\" show"],
    );
    assert_pingall_ok(&out, &text);
    // During the run (after pingall, before stop): three bridges, each with
    // its host's port and the links between switches, all up.
    for (bridge, ports) in [
        ("s1", &["s1-eth1", "s1-eth2"][..]),
        ("s2", &["s2-eth1", "s2-eth2", "s2-eth3"][..]),
        ("s3", &["s3-eth1", "s3-eth2"][..]),
    ] {
        assert!(
            text.contains(&format!("Bridge {bridge}\n")),
            "no {bridge}:\n{text}"
        );
        for port in ports {
            assert!(
                text.contains(&format!("Port {port}\n        state: up")),
                "port {port} not up:\n{text}"
            );
        }
    }
    assert!(
        !text.contains("*** switchd: started"),
        "started a daemon:\n{text}"
    );
    assert_eq!(d.ctl_ok(&["list-br"]), "", "bridges left in switchd");
    run.assert_clean(&text);
    let backlog = std::fs::read_to_string(Path::new("/proc/sys").join(BACKLOG)).unwrap();
    assert_eq!(backlog.trim(), "5000", "Mininet did not raise the backlog");
    run.put_back_host_settings();
    assert_eq!(
        host_sysctls(),
        run.sysctls_before,
        "Mininet's settings were left on the host"
    );
}

#[test]
fn pingall_tree_2_3_with_a_prefix_beside_another_users_bridge() {
    let _machine = exclusive_machine();
    let run = Run::new();
    let d = Daemon::start();
    // Someone else's bridge named like a Mininet switch: the prefix keeps
    // the run off it, and nothing of the run touches it.
    d.ctl_ok(&["add-br", "s1", "--no-internal"]);
    let (out, text) = run.mn_test(
        Some(&d.socket),
        "switchd,prefix=t1-",
        "tree,2,3",
        "pingall",
        &["sh \"$SWITCHCTL\" list-br"],
    );
    assert_pingall_ok(&out, &text);
    assert!(
        text.contains("*** Results: 0% dropped (72/72 received)"),
        "not all 9 hosts pinged each other:\n{text}"
    );
    assert!(
        text.contains("s1\nt1-s1\nt1-s2\nt1-s3\nt1-s4\n"),
        "bridges during the run were not s1 and t1-s1..t1-s4:\n{text}"
    );
    assert_eq!(d.ctl_ok(&["list-br"]), "s1\n", "bridges after the run");
    run.assert_clean(&text);
}

#[test]
fn owned_daemon_starts_and_stops_with_the_run() {
    let _machine = exclusive_machine();
    let run = Run::new();
    // While the owned daemon runs, SWITCHD_SOCKET names it for commands
    // started from the run.
    let (out, text) = run.mn_test(
        None,
        "switchd",
        "linear,2",
        "pingall",
        &["sh \"$SWITCHCTL\" show"],
    );
    assert_pingall_ok(&out, &text);
    let (pid, socket) = owned_daemon(&text);
    assert!(
        text.contains("Bridge s1\n") && text.contains("Bridge s2\n"),
        "bridges not shown during the run:\n{text}"
    );
    assert!(
        text.contains(&format!("*** switchd: stopped pid {pid}")),
        "owned switchd not stopped:\n{text}"
    );
    assert!(
        !switchd_running(pid, &socket),
        "owned switchd {pid} still running"
    );
    let dir = socket.parent().unwrap();
    assert!(
        !dir.exists(),
        "owned daemon's directory {} left",
        dir.display()
    );
    run.assert_clean(&text);
}

#[test]
fn tcp_between_two_hosts() {
    let _machine = exclusive_machine();
    let run = Run::new();
    // Not `mn --test iperf`: Mininet 2.3.0 hangs on Debian 12's iperf 2.1
    // output. The bench measures iperf3 through Mininet's Python API.
    let json = run.state_dir.join("bench.json");
    let bench = repo().join("integrations/mininet_bench.py");
    let out = run
        .command(
            PYTHON,
            None,
            &[
                bench.to_str().unwrap(),
                "--switch",
                "switchd",
                "--topo",
                "linear,2",
                "--rounds",
                "1",
                "--seconds",
                "2",
                "--json",
                json.to_str().unwrap(),
                "--no-lock",
            ],
        )
        .output()
        .expect("run mininet_bench.py under timeout");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "bench failed ({}):\n{text}",
        out.status
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = &doc["results"]["switchd"]["linear,2"];
    assert!(rows.is_object(), "switchd not measured: {doc}\n{text}");
    assert_eq!(rows["median"]["dropped"], 0.0, "{doc}");
    let gbps = rows["median"]["tcp_gbps"].as_f64().unwrap();
    // A stalled TCP (bad checksums, dropped GSO frames) moves next to nothing;
    // veth through the kernel fast path moves several Gbit/s here.
    assert!(gbps > 0.5, "TCP between h1 and h2: {gbps} Gbit/s\n{text}");
    run.assert_clean(&text);
}

/// `--link tc,bw=10`: the shaping Mininet puts on the switch's end of a link
/// holds what switchd forwards, on the userspace path too (the host's own end
/// unshaped, so only the switch's can hold it). `switch s1 start` on a running
/// switch changes nothing, and stop then start brings it back.
#[test]
fn tclink_shapes_the_switch_end_and_switch_start_stop_work() {
    let _machine = exclusive_machine();
    let run = Run::new();
    let d = Daemon::start_with(&["--offload", "none"]);
    let script = run.script(&[
        "switch s1 start",
        "switch s1 stop",
        "switch s1 start",
        "h1 tc qdisc del dev h1-eth0 root",
        "h2 iperf3 -s -1 -D -p 5299",
        "h1 sleep 1",
        "h1 iperf3 -c 10.0.0.2 -p 5299 -t 2 -f m",
    ]);
    let (out, text) = run.mn(
        Some(&d.socket),
        &[
            "--switch",
            "switchd",
            "--topo",
            "single,2",
            "--link",
            "tc,bw=10",
            "--test",
            "pingall",
            "--post",
            script.to_str().unwrap(),
        ],
    );
    assert_pingall_ok(&out, &text);
    let mbits = text
        .lines()
        .filter(|l| l.contains("receiver"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "Mbits/sec")?;
            words.get(at.checked_sub(1)?)?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no iperf3 result:\n{text}"));
    assert!(
        mbits < 15.0,
        "{mbits} Mbit/s through a 10 Mbit/s link\n{text}"
    );
    assert_eq!(d.ctl_ok(&["list-br"]), "", "bridges left in switchd");
    run.assert_clean(&text);
}

#[test]
fn a_failed_run_removes_only_what_it_made() {
    let _machine = exclusive_machine();
    let run = Run::new();
    let decoy = Decoy::new();

    // Fails at start: a bridge named s1 is someone else's. The message says
    // so; their bridge and its port stay.
    let d = Daemon::start();
    let peer = decoy.0.replace("-eth0", "-eth1");
    d.ctl_ok(&[
        "add-br",
        "s1",
        "--no-internal",
        "--",
        "add-port",
        "s1",
        &peer,
    ]);
    let (_, text) = run.mn_test(Some(&d.socket), "switchd", "linear,3", "pingall", &[]);
    assert!(
        text.contains("Caught exception") && text.contains("a bridge named s1 already exists"),
        "no clash reported:\n{text}"
    );
    assert!(text.contains("prefix"), "no hint about a prefix:\n{text}");
    assert_eq!(d.ctl_ok(&["list-br"]), "s1\n");
    assert_eq!(d.ctl_ok(&["list-ports", "s1"]), format!("{peer}\n"));
    assert!(decoy.exists(), "{} deleted:\n{text}", decoy.0);
    run.assert_clean(&text);

    // Fails after the switches started (an unknown test): mn calls cleanup()
    // instead of stopping the network, and gets ours.
    let (_, text) = run.mn_test(None, "switchd", "linear,3", "pingall+nosuchtest", &[]);
    assert!(
        text.contains("Results: 0% dropped") && text.contains("Test nosuchtest is unknown"),
        "run did not fail after pingall:\n{text}"
    );
    assert!(
        text.contains("*** switchd: cleaning up only what this run made"),
        "Mininet's own cleanup ran:\n{text}"
    );
    let (pid, socket) = owned_daemon(&text);
    assert!(!switchd_running(pid, &socket), "owned switchd {pid} left");
    assert!(decoy.exists(), "{} deleted:\n{text}", decoy.0);
    assert!(Path::new("/sys/class/net").join(&peer).exists());
    run.assert_clean(&text);
}

/// Starts `mn ... --topo linear,3 --test pingall` with a CLI that waits, on
/// `socket` (or a daemon of its own), and returns it once in the CLI, with its
/// log: the caller SIGKILLs it, so nothing of the run's own cleanup runs.
fn mn_in_cli(run: &Run, socket: Option<&Path>, switch: &str) -> (ChildGuard, PathBuf) {
    let post = run.script(&["py __import__('time').sleep(120)"]);
    let log = run.state_dir.join("mn.log");
    let custom = custom();
    // No timeout wrapper: the pid to kill is mn's. Bounded by the wait below
    // and by the guard.
    let mut mn = Command::new(MN);
    run.environment(&mut mn, socket);
    mn.args([
        "--custom",
        custom.to_str().unwrap(),
        "--controller",
        "none",
        "--switch",
        switch,
        "--topo",
        "linear,3",
        "--test",
        "pingall",
        "--post",
        post.to_str().unwrap(),
    ]);
    let file = std::fs::File::create(&log).unwrap();
    let child = mn
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start mn");
    let guard = ChildGuard(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(120), || read().contains("Starting CLI")),
        "mn did not reach its CLI:\n{}",
        read()
    );
    (guard, log)
}

#[test]
fn a_killed_run_is_finished_by_a_safe_mn_c() {
    let _machine = exclusive_machine();
    let run = Run::new();
    let decoy = Decoy::new();
    // The run is SIGKILLed in its CLI after pingall. Its switchd dies with
    // it; its links between switches stay until
    // `mn --custom integrations/mininet.py -c`.
    let (mut guard, log) = mn_in_cli(&run, None, "switchd");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let (pid, socket) = owned_daemon(&read());
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    assert!(
        wait_until(Duration::from_secs(10), || !switchd_running(pid, &socket)),
        "owned switchd {pid} outlived a killed mn"
    );
    assert!(
        !mininet_links().is_empty(),
        "expected the killed run's links between switches to remain"
    );

    let (out, text) = run.mn(None, &["-c"]);
    assert!(out.status.success(), "mn -c failed:\n{text}");
    assert!(
        text.contains("cleaning up after dead run"),
        "the dead run was not cleaned up:\n{text}"
    );
    assert!(decoy.exists(), "{} deleted:\n{text}", decoy.0);
    assert!(
        !socket.parent().unwrap().exists(),
        "owned daemon's directory left"
    );
    run.assert_clean(&format!("{}\n{text}", read()));
}

/// A killed run on a shared daemon leaves its bridges there; the safe `mn -c`
/// deletes those whose every port is a link the run made, and leaves a bridge
/// of the same name that someone made since (here empty, as a new one is).
#[test]
fn a_killed_run_on_a_shared_daemon_takes_only_its_own_bridges() {
    let _machine = exclusive_machine();
    let run = Run::new();
    let d = Daemon::start();
    let (mut guard, log) = mn_in_cli(&run, Some(&d.socket), "switchd,prefix=k-");
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    assert_eq!(
        d.ctl_ok(&["list-br"]),
        "k-s1\nk-s2\nk-s3\n",
        "a killed run's bridges stay on the shared daemon"
    );
    // Someone takes the name k-s2 for a bridge of their own.
    d.ctl_ok(&["del-br", "k-s2"]);
    d.ctl_ok(&["add-br", "k-s2", "--no-internal"]);

    let (out, text) = run.mn(Some(&d.socket), &["-c"]);
    assert!(out.status.success(), "mn -c failed:\n{text}");
    assert_eq!(
        d.ctl_ok(&["list-br"]),
        "k-s2\n",
        "mn -c took a bridge that was not the run's, or left one that was:\n{text}"
    );
    let read = std::fs::read_to_string(&log).unwrap_or_default();
    run.assert_clean(&format!("{read}\n{text}"));
}
