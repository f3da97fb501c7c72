//! `switchctl monitor`: events in the order they happened, a MAC flood kept to
//! a bounded number of lines with the rest counted, and the monitor's end
//! (Ctrl-C, kill, switchd stopping) leaving the daemon serving.

use crate::util::{bin, frame, shared_machine, unique_name, wait_until, Daemon, Host};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `switchd::datapath::events::EVENTS_PER_SEC`, as the docs state it.
const EVENTS_PER_SEC: usize = 100;

/// A `switchctl monitor --format json` child and the events it printed.
struct Monitor {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading its output, which end when it does.
    readers: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Starts it and waits until it hears events (a probe bridge made and
    /// deleted until it does), so nothing after this is missed.
    fn start(d: &Daemon, args: &[&str]) -> Monitor {
        let mut child = Command::new(bin("switchctl"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["--format", "json", "monitor"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start switchctl monitor");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = events.clone();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("monitor printed {line:?}: {e}"));
                sink.lock().unwrap().push(event);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
            }
        });
        let monitor = Monitor {
            child,
            events,
            stderr,
            readers: vec![out_reader, err_reader],
        };
        if args.is_empty() {
            let probe = unique_name("mpr");
            let heard = wait_until(Duration::from_secs(10), || {
                d.ctl_ok(&["add-br", "--no-internal", &probe]);
                d.ctl_ok(&["del-br", &probe]);
                !monitor.find(|e| e["bridge"] == probe.as_str()).is_empty()
            });
            assert!(heard, "the monitor heard nothing");
        }
        monitor
    }

    /// Starts a monitor of `bridge` and waits until it hears events: `port`
    /// (an interface not on it) added and deleted until it does.
    fn start_on(d: &Daemon, bridge: &str, port: &str) -> Monitor {
        let monitor = Monitor::start(d, &[bridge]);
        let heard = wait_until(Duration::from_secs(10), || {
            d.ctl_ok(&["add-port", bridge, port]);
            d.ctl_ok(&["del-port", bridge, port]);
            !monitor
                .find(|e| is(e, "port-deleted") && e["port"] == port)
                .is_empty()
        });
        assert!(heard, "the monitor of {bridge} heard nothing");
        monitor
    }

    fn find(&self, f: impl Fn(&Value) -> bool) -> Vec<(usize, Value)> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| f(e))
            .map(|(i, e)| (i, e.clone()))
            .collect()
    }

    /// The index of the first event matching `f`, waiting up to 10 s for it.
    fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> usize {
        let mut found = None;
        wait_until(Duration::from_secs(10), || {
            found = self.find(&f).first().map(|(i, _)| *i);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {what} event; got:\n{}",
                self.events
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    /// Waits up to 5 s for the process to exit; its exit code, once all it
    /// wrote has been read.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    reader.join().unwrap();
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("switchctl monitor did not exit");
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(e: &Value, event: &str) -> bool {
    e["event"] == event
}

fn mac_bytes(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0x6d, b[0], b[1], b[2], b[3]]
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Sends a few frames from `mac` out of `host`'s eth0, to a destination nobody has.
fn send_from(host: &Host, mac: [u8; 6]) {
    let mut sock = host.ns.packet_socket("eth0");
    for _ in 0..3 {
        sock.send(&frame([0x02, 0x6d, 0xff, 0, 0, 1], mac, None, b"monitor"));
    }
}

fn events_in_order(offload: &[&str]) {
    let _machine = shared_machine();
    let d = Daemon::start_with(offload);
    let m = Monitor::start(&d, &[]);
    let br = unique_name("mbr");
    let (a, b) = (Host::new("10.82.0.1/24"), Host::new("10.82.0.2/24"));
    d.ctl_ok(&["add-br", "--no-internal", &br]);
    d.ctl_ok(&["add-port", &br, &a.port]);
    d.ctl_ok(&["add-port", &br, &b.port]);
    let on = |e: &Value, event: &str, port: &str| {
        is(e, event) && e["bridge"] == br.as_str() && e["port"] == port
    };
    let added = m.wait_for("bridge-added", |e| {
        is(e, "bridge-added") && e["bridge"] == br.as_str()
    });
    let a_added = m.wait_for("port-added a", |e| on(e, "port-added", &a.port));
    let b_added = m.wait_for("port-added b", |e| on(e, "port-added", &b.port));
    let (_, port) = &m.find(|e| on(e, "port-added", &a.port))[0];
    assert_eq!(port["state"], "up", "{port}");
    assert!(port["time"].as_str().unwrap().ends_with('Z'), "{port}");

    let mac = mac_bytes(0x0100_0001);
    let mac_s = mac_text(mac);
    let with_mac = |e: &Value, event: &str| is(e, event) && e["mac"] == mac_s.as_str();
    send_from(&a, mac);
    let learned = m.wait_for("mac-learned", |e| with_mac(e, "mac-learned"));
    send_from(&b, mac);
    let moved = m.wait_for("mac-moved", |e| with_mac(e, "mac-moved"));
    d.ctl_ok(&["del-port", &br, &b.port]);
    let removed = m.wait_for("mac-removed", |e| with_mac(e, "mac-removed"));
    let b_deleted = m.wait_for("port-deleted", |e| on(e, "port-deleted", &b.port));
    assert!(
        added < a_added
            && a_added < b_added
            && b_added < learned
            && learned < moved
            && moved < removed
            && removed < b_deleted,
        "out of order: {added} {a_added} {b_added} {learned} {moved} {removed} {b_deleted}"
    );
    let (_, e) = &m.find(|e| with_mac(e, "mac-learned"))[0];
    assert_eq!(
        (&e["port"], &e["vlan"], &e["bridge"]),
        (&a.port.as_str().into(), &0.into(), &br.as_str().into()),
        "{e}"
    );
    let (_, e) = &m.find(|e| with_mac(e, "mac-moved"))[0];
    assert_eq!(
        (&e["from_port"], &e["port"]),
        (&a.port.as_str().into(), &b.port.as_str().into()),
        "{e}"
    );
    let (_, e) = &m.find(|e| with_mac(e, "mac-removed"))[0];
    assert_eq!(
        (&e["port"], &e["reason"]),
        (&b.port.as_str().into(), &"port-removed".into()),
        "{e}"
    );

    // A port whose peer goes down, and comes back.
    a.ns.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    m.wait_for("port-down", |e| {
        on(e, "port-down", &a.port) && e["reason"] == "no carrier"
    });
    a.ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    m.wait_for("port-up", |e| on(e, "port-up", &a.port));

    // A flush says why.
    send_from(&a, mac);
    m.wait_for("mac-learned again", |e| {
        with_mac(e, "mac-learned") && e["port"] == a.port.as_str()
    });
    d.ctl_ok(&["fdb-flush", &br]);
    m.wait_for("flushed", |e| {
        with_mac(e, "mac-removed") && e["reason"] == "flushed"
    });

    // Another bridge's events do not reach a monitor of this one.
    let only = Monitor::start_on(&d, &br, &b.port);
    let other = unique_name("mbo");
    d.ctl_ok(&["add-br", "--no-internal", &other]);
    d.ctl_ok(&["del-port", &br, &a.port]);
    only.wait_for("port-deleted", |e| on(e, "port-deleted", &a.port));
    m.wait_for("other bridge", |e| e["bridge"] == other.as_str());
    assert!(only.find(|e| e["bridge"] != br.as_str()).is_empty());
    d.ctl_ok(&["del-br", &other]);
    d.ctl_ok(&["del-br", &br]);
    m.wait_for("bridge-deleted", |e| {
        is(e, "bridge-deleted") && e["bridge"] == br.as_str()
    });
}

fn flood_is_bounded(offload: &[&str]) {
    let _machine = shared_machine();
    let d = Daemon::start_with(offload);
    let br = unique_name("mbf");
    let a = Host::new("10.82.1.1/24");
    d.ctl_ok(&["add-br", "--no-internal", &br]);
    d.ctl_ok(&["set-br", &br, "mac-table-size=1000"]);
    d.ctl_ok(&["add-port", &br, &a.port]);
    let m = Monitor::start(&d, &[]);
    let stats = |what: &str| d.ctl_json(&["fdb-stats", &br])[what].as_u64().unwrap();
    let (learned0, evicted0) = (stats("learned"), stats("evicted"));

    const FLOOD: u32 = 5000;
    let mut sock = a.ns.packet_socket("eth0");
    let start = Instant::now();
    // In bursts the port's socket queue takes whole (it has no ring yet).
    for burst in (0..FLOOD).collect::<Vec<_>>().chunks(100) {
        let frames = burst
            .iter()
            .map(|&n| frame([0x02, 0x6d, 0xff, 0, 0, 1], mac_bytes(n), None, b"flood"));
        assert_eq!(sock.send_all(frames), burst.len() as u64);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The last second's suppressed counts come once it is over.
    let learned = |n: &u64| stats("learned") - learned0 == *n;
    wait_until(Duration::from_secs(5), || {
        let n = stats("learned") - learned0;
        std::thread::sleep(Duration::from_millis(200));
        learned(&n)
    });
    let seconds = start.elapsed().as_secs() as usize + 1;
    let learned_n = stats("learned") - learned0;
    let evicted_n = stats("evicted") - evicted0;
    assert!(
        learned_n > 1000 && evicted_n > 0,
        "{learned_n} learned, {evicted_n} evicted"
    );

    let on_br = |e: &Value| e["bridge"] == br.as_str();
    let lines = |event: &str| m.find(|e| on_br(e) && is(e, event)).len();
    let suppressed = |kind: &str| -> u64 {
        m.find(|e| on_br(e) && is(e, "suppressed") && e["kind"] == kind)
            .iter()
            .map(|(_, e)| e["count"].as_u64().unwrap())
            .sum()
    };
    // The last second's suppressed counts come with the next sweep.
    wait_until(Duration::from_secs(10), || {
        lines("mac-learned") as u64 + suppressed("mac-learned") == learned_n
            && lines("mac-evicted") as u64 + suppressed("mac-evicted") == evicted_n
    });
    let (learned_lines, evicted_lines) = (lines("mac-learned"), lines("mac-evicted"));
    // Bounded: at most the limit per kind per second the flood lasted (plus
    // the second it straddled).
    let bound = EVENTS_PER_SEC * (seconds + 1);
    assert!(
        learned_lines <= bound && evicted_lines <= bound,
        "{learned_lines} and {evicted_lines} lines in {seconds} s"
    );
    // Everything accounted for: a line or a count.
    assert_eq!(learned_lines as u64 + suppressed("mac-learned"), learned_n);
    assert_eq!(evicted_lines as u64 + suppressed("mac-evicted"), evicted_n);
    assert_eq!(lines("table-full"), 1, "one table-full per episode");
    let (_, full) = &m.find(|e| on_br(e) && is(e, "table-full"))[0];
    assert_eq!(full["max"], 1000);
    assert!(m.find(|e| is(e, "lost")).is_empty(), "nothing lost");
    d.ctl_ok(&["del-br", &br]);
}

on_both_datapaths!(events_in_order, flood_is_bounded);

/// The monitor's end: Ctrl-C exits 0, a kill leaves switchd serving (and
/// watching costs nothing once nobody watches), switchd stopping exits 1.
#[test]
fn ending_a_monitor() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    let mut m = Monitor::start(&d, &[]);
    switchd::sys::kill(m.child.id() as i32, libc::SIGINT).unwrap();
    assert_eq!(
        m.exit_code(),
        Some(0),
        "Ctrl-C: {}",
        m.stderr.lock().unwrap()
    );

    let mut killed = Monitor::start(&d, &[]);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let br = unique_name("mbe");
    d.ctl_ok(&["add-br", "--no-internal", &br]);
    assert!(d.ctl_ok(&["list-br"]).contains(&br));
    let fresh = Monitor::start(&d, &[]);
    d.ctl_ok(&["del-br", &br]);
    fresh.wait_for("bridge-deleted", |e| {
        is(e, "bridge-deleted") && e["bridge"] == br.as_str()
    });

    let mut last = Monitor::start(&d, &[]);
    d.stop();
    assert_eq!(last.exit_code(), Some(1));
    let stderr = last.stderr.lock().unwrap().clone();
    assert!(stderr.contains("switchd closed the connection"), "{stderr}");
    drop(fresh);
}
