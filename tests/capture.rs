//! `switchctl capture`: what it writes is read back by tcpdump and tshark and
//! compared with the frames the test sent, fast path included; a reader that
//! falls behind loses counted frames while forwarding goes on; bad requests are
//! refused; nothing stays behind.

use crate::util::{bin, frame, shared_machine, unique_name, wait_until, Daemon, Host};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `switchctl capture`, its stderr read line by line.
struct Capture {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts it and waits until switchd has opened its sockets.
    fn start(d: &Daemon, bridge: &str, args: &[&str], stdout: Stdio) -> Capture {
        let mut child = Command::new(bin("switchctl"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["capture", bridge])
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run switchctl capture");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let capture = Capture { child, stderr: rx };
        let first = capture
            .stderr
            .recv_timeout(Duration::from_secs(10))
            .expect("capture started");
        assert!(first.contains("capturing on"), "{first}");
        capture
    }

    /// Reads its stdout to the end, then waits for it to end by itself.
    fn stdout(mut self) -> String {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.wait();
        out
    }

    /// Waits for it to end by itself; returns its stderr.
    fn wait(mut self) -> String {
        assert!(
            wait_until(Duration::from_secs(10), || self
                .child
                .try_wait()
                .unwrap()
                .is_some()),
            "capture did not end"
        );
        assert!(self.child.wait().unwrap().success());
        // The reader thread may still hold the last lines: read until it sees
        // the pipe close, not just what it has passed on so far.
        let mut lines = Vec::new();
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(5)) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr still open: {lines:?}"),
            }
        }
        lines.join("\n")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tshark_fields(file: &std::path::Path, fields: &[&str]) -> Vec<String> {
    let mut args = vec!["-r".to_string(), file.display().to_string()];
    args.extend(["-T", "fields"].map(String::from));
    for f in fields {
        args.push("-e".into());
        args.push(f.to_string());
    }
    let out = Command::new("tshark")
        .args(&args)
        .stderr(Stdio::null())
        .output()
        .expect("tshark is installed (scripts/test installs it)");
    assert!(out.status.success(), "tshark failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn counter(d: &Daemon, bridge: &str, port: &str, name: &str) -> u64 {
    d.port_counters(bridge, port)[name].as_u64().unwrap()
}

/// The bridge of the tests that need no internal port (so no interface of its name).
const BR: &str = "br0";

/// The daemon's capture threads and packet sockets, to see that a capture
/// leaves none behind.
fn footprint(d: &Daemon) -> (usize, usize) {
    let proc = format!("/proc/{}", d.pid());
    let threads = std::fs::read_dir(format!("{proc}/task"))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "capture")
        })
        .count();
    let packet = std::fs::read_to_string(format!("{proc}/net/packet")).unwrap();
    let packet_inodes: Vec<&str> = packet
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let sockets = std::fs::read_dir(format!("{proc}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|link| {
            let link = link.to_string_lossy();
            link.strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
                .is_some_and(|inode| packet_inodes.contains(&inode))
        })
        .count();
    (threads, sockets)
}

#[test]
fn a_capture_holds_exactly_the_frames_sent_both_ways_fast_path_included() {
    let _machine = shared_machine();
    let d = Daemon::start();
    // With its internal port, so named uniquely.
    let br = unique_name("cbr");
    let (a, b) = (Host::new("10.82.0.1/24"), Host::new("10.82.0.2/24"));
    d.ctl_ok(&["add-br", &br]);
    d.ctl_ok(&["add-port", &br, &a.port]);
    d.ctl_ok(&["add-port", &br, &b.port]);
    // Both ends learned: from now on the kernel forwards their unicast.
    assert!(a.can_ping(&b.ip));
    let before = footprint(&d);
    let kernel = counter(&d, &br, &a.port, "rx_kernel");

    let file = d.dir.join("icmp.pcapng");
    let capture = Capture::start(
        &d,
        &br,
        &[
            &a.port,
            &b.port,
            "-c",
            "20",
            "-w",
            file.to_str().unwrap(),
            "icmp",
        ],
        Stdio::null(),
    );
    a.ns.exec_ok(&["ping", "-n", "-q", "-c", "5", "-i", "0.2", &b.ip]);
    let summary = capture.wait();
    assert!(summary.contains("20 packets captured"), "{summary}");
    assert!(
        counter(&d, &br, &a.port, "rx_kernel") >= kernel + 5,
        "the pings took the kernel fast path"
    );

    let tcpdump = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&file)
        .stderr(Stdio::null())
        .output()
        .expect("tcpdump is installed");
    let lines = String::from_utf8(tcpdump.stdout).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 20, "{lines:#?}");
    let requests = format!("{} > {}: ICMP echo request", a.ip, b.ip);
    let replies = format!("{} > {}: ICMP echo reply", b.ip, a.ip);
    assert_eq!(lines.iter().filter(|l| l.contains(&requests)).count(), 10);
    assert_eq!(lines.iter().filter(|l| l.contains(&replies)).count(), 10);

    // Each request enters on a's port and leaves on b's; each reply the other
    // way: port and direction per frame, as pcapng carries them.
    let mut seen = tshark_fields(
        &file,
        &[
            "frame.interface_name",
            "frame.packet_flags_direction",
            "icmp.type",
        ],
    );
    seen.sort();
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.push(format!("{}\t0x00000001\t8", a.port));
        expected.push(format!("{}\t0x00000002\t8", b.port));
        expected.push(format!("{}\t0x00000001\t0", b.port));
        expected.push(format!("{}\t0x00000002\t0", a.port));
    }
    expected.sort();
    assert_eq!(seen, expected);
    // In time order across the ports: each request before its reply.
    let types = tshark_fields(&file, &["icmp.type"]);
    assert_eq!(types[..4], ["8", "8", "0", "0"]);

    // The capture's thread and sockets are gone.
    assert!(
        wait_until(Duration::from_secs(3), || footprint(&d) == before),
        "{before:?} then {:?}",
        footprint(&d)
    );
    // Without a port named, every port, the internal one included; a frame
    // flooded there leaves by it.
    // (Only that address: b may probe a's by ARP meanwhile.)
    let text = Capture::start(
        &d,
        &br,
        &["-c", "3", "arp", "host", "10.82.0.9"],
        Stdio::piped(),
    );
    // Nobody has 10.82.0.9: a's ARP request floods.
    a.ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", "10.82.0.9"]);
    let out = text.stdout();
    let out: Vec<&str> = out.lines().collect();
    assert_eq!(out.len(), 3, "{out:#?}");
    assert!(out[0].contains(&format!(" {} in ", a.port)), "{}", out[0]);
    assert!(
        out[0].contains(&format!("ARP, Request who-has 10.82.0.9 tell {}", a.ip)),
        "{}",
        out[0]
    );
    for port in [&b.port, &br] {
        assert!(
            out[1..]
                .iter()
                .any(|l| l.contains(&format!(" {port} out ")) && l.contains("Request")),
            "{out:#?}"
        );
    }
}

#[test]
fn a_slow_reader_loses_counted_frames_and_forwarding_goes_on() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let (a, b) = (Host::new("10.83.0.1/24"), Host::new("10.83.0.2/24"));
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    assert!(a.can_ping(&b.ip));
    let before = footprint(&d);

    // Nobody reads the capture's stdout until the traffic is over.
    let mut capture = Capture::start(&d, BR, &["-w", "-"], Stdio::piped());
    let _server = b.ns.spawn(&["iperf3", "-s", "-1", "-p", "5283"]);
    assert!(wait_until(Duration::from_secs(5), || a
        .ns
        .exec(&["iperf3", "-c", &b.ip, "-p", "5283", "-t", "2"])
        .status
        .success()));
    assert!(a.can_ping(&b.ip), "forwarding goes on");
    assert!(
        d.ctl(&["show"]).status.success(),
        "the control socket answers"
    );

    // Now read, and end it as Ctrl-C does.
    let mut stdout = capture.child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = stdout.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    crate::util::run("kill", &["-INT", &capture.child.id().to_string()]);
    let summary = capture.wait();
    assert!(drain.join().unwrap() > 0);
    let figure = |what: &str| -> u64 {
        summary
            .lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {what:?} in {summary}"))
    };
    let (captured, accepted, dropped) = (
        figure("packets captured"),
        figure("received by filter"),
        figure("dropped"),
    );
    assert!(captured > 0 && dropped > 0, "{summary}");
    assert!(captured + dropped <= accepted, "{summary}");
    assert!(
        wait_until(Duration::from_secs(3), || footprint(&d) == before),
        "{before:?} then {:?}",
        footprint(&d)
    );
}

#[test]
fn a_capture_shows_vlan_tags_as_they_were_on_the_wire() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let (trunk, access) = (Host::new("10.84.0.1/24"), Host::new("10.84.0.2/24"));
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &trunk.port, "trunks=10"]);
    d.ctl_ok(&["add-port", "br0", &access.port, "tag=10"]);
    let capture = Capture::start(
        &d,
        BR,
        &[
            "--format",
            "json",
            "-c",
            "2",
            "ether",
            "host",
            "02:00:00:84:00:01",
        ],
        Stdio::piped(),
    );
    let mut sock = trunk.ns.packet_socket("eth0");
    sock.send(&frame(
        [0xff; 6],
        [2, 0, 0, 0x84, 0, 1],
        Some(10),
        b"tagged",
    ));
    let out = capture.stdout();
    let frames: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2, "{out}");
    assert_eq!(frames[0]["port"], trunk.port.as_str());
    assert_eq!(frames[0]["direction"], "in");
    assert_eq!(
        frames[0]["vlan"], 10,
        "the kernel strips the tag; capture puts it back"
    );
    let tagged = frames[0]["length"].as_u64().unwrap();
    assert_eq!(frames[1]["port"], access.port.as_str());
    assert_eq!(frames[1]["direction"], "out");
    assert_eq!(
        frames[1]["vlan"],
        Value::Null,
        "an access port sends untagged"
    );
    assert_eq!(frames[1]["length"].as_u64().unwrap(), tagged - 4);
}

#[test]
fn bad_captures_are_refused_and_leave_nothing() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let a = Host::new("10.85.0.1/24");
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    let before = footprint(&d);
    let refused = |args: &[&str], why: &str| {
        let mut full = vec!["capture"];
        full.extend_from_slice(args);
        d.ctl_refused(&full, why);
    };
    refused(&["nosuchbr"], "no bridge named nosuchbr");
    refused(&["br0", "tcp", "port"], "filter \"tcp port\"");
    refused(&["br0", "-s", "0"], "snaplen 0");
    refused(&["br0", "-c", "0"], "count must be at least 1");
    refused(&["br0", "nosuchport"], "nosuchport");
    refused(&["br0", "-w", "/nonexistent/dir/x.pcapng"], "cannot write");
    // A capture cannot be part of a chain (one transaction of replies).
    let out = d.ctl(&["show", "--", "capture", "br0"]);
    assert_eq!(out.status.code(), Some(1));
    // Over the socket, an unknown port is named as such.
    let out = Command::new("socat")
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", d.socket.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                br#"{"jsonrpc":"2.0","id":7,"method":"capture","params":{"bridge":"br0","ports":["ghost"]}}
"#,
            )?;
            c.wait_with_output()
        })
        .expect("socat is installed");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bridge br0 has no port named ghost"),
        "{reply}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || footprint(&d) == before),
        "{before:?} then {:?}",
        footprint(&d)
    );
    assert!(d.ctl(&["show"]).status.success());
}
