//! Start, stop, restart, vanishing interfaces and raw requests on the socket.

use crate::util::{cpu_ticks, datapath_ticks, shared_machine, wait_until, Daemon, Host};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// IFF_PROMISC as the kernel reports it: set while any socket holds a
/// promiscuous membership on the interface.
fn promiscuous(iface: &str) -> bool {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{iface}/flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    flags & libc::IFF_PROMISC as u32 != 0
}

#[test]
fn sigterm_cleans_up_and_restart_restores_config() {
    let _machine = shared_machine();
    let a = Host::new("10.20.0.1/24");
    let b = Host::new("10.20.0.2/24");
    let mut d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-br", "--no-internal", "br1"]);
    d.ctl_ok(&["set-br", "br0", "mac-aging-time=77", "mac-table-size=500"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    assert!(a.can_ping(&b.ip));
    // veth hands frames to a packet socket without it; a NIC would not.
    assert!(promiscuous(&a.port), "attached interface not promiscuous");

    let status = d.stop();
    assert!(status.success(), "switchd exited with {status}");
    assert!(!d.socket.exists(), "socket file left behind");
    assert!(!promiscuous(&a.port), "interface left promiscuous");
    assert!(!a.ping_once(&b.ip), "frames still forwarded after shutdown");

    d.restart();
    assert_eq!(d.ctl_ok(&["list-br"]), "br0\nbr1\n");
    let show = d.ctl_json(&["show"]);
    let br0 = &show["bridges"][0];
    assert_eq!(br0["mac_aging_time"], 77);
    assert_eq!(br0["mac_table_size"], 500);
    let ports: Vec<&str> = br0["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut expected = vec![a.port.as_str(), b.port.as_str()];
    expected.sort();
    assert_eq!(ports, expected);
    assert!(
        br0["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["error"].is_null()),
        "{show}"
    );
    assert!(a.can_ping(&b.ip), "no forwarding after restart");
}

#[test]
fn missing_interface_at_start_stays_configured() {
    let _machine = shared_machine();
    let a = Host::new("10.21.0.1/24");
    let gone = Host::new("10.21.0.2/24");
    let gone_port = gone.port.clone();
    let mut d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &gone_port]);
    d.stop();
    drop(gone);
    assert!(wait_until(Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/sys/class/net/{gone_port}")).exists()
    }));
    d.restart();
    assert_eq!(d.ctl_ok(&["port-to-br", &gone_port]), "br0\n");
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "    Port {gone_port}\n        state: error: no interface named {gone_port}\n"
        )),
        "{show}"
    );
    assert!(
        show.contains(&format!("    Port {}\n        state: up\n", a.port)),
        "{show}"
    );
    // The interface appears: the port attaches by itself and forwards.
    let back = Host::with_port(&gone_port, "10.21.0.2/24");
    let attached = wait_until(Duration::from_secs(5), || {
        d.ctl_ok(&["show"])
            .contains(&format!("    Port {gone_port}\n        state: up\n"))
    });
    assert!(attached, "{}", d.ctl_ok(&["show"]));
    assert!(a.can_ping(&back.ip));
    // Still removable, and the database keeps what was configured.
    d.ctl_ok(&["del-port", &gone_port]);
    assert_eq!(d.ctl_ok(&["list-ports", "br0"]), format!("{}\n", a.port));
}

#[test]
fn interface_vanishing_under_traffic_is_survived() {
    let _machine = shared_machine();
    let a = Host::new("10.22.0.1/24");
    let b = Host::new("10.22.0.2/24");
    let c = Host::new("10.22.0.3/24");
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    for h in [&a, &b, &c] {
        d.ctl_ok(&["add-port", "br0", &h.port]);
    }
    assert!(a.can_ping(&c.ip));
    let c_port = c.port.clone();
    let sent_to_c = || {
        d.port_counters("br0", &c_port)["tx_packets"]
            .as_u64()
            .unwrap()
    };
    let tx0 = sent_to_c();
    let flood = a.ns.spawn(&["ping", "-n", "-q", "-f", &c.ip]);
    // The interface goes while the flood is going through switchd to it, and
    // the flood goes on a moment after.
    assert!(
        wait_until(Duration::from_secs(5), || sent_to_c() - tx0 > 1000),
        "the flood did not get going: {} frames to c",
        sent_to_c() - tx0
    );
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    drop(flood);
    let show_says_gone = wait_until(Duration::from_secs(5), || {
        d.ctl_ok(&["show"]).contains(&format!(
            "    Port {c_port}\n        state: error: no such device\n"
        ))
    });
    assert!(show_says_gone, "{}", d.ctl_ok(&["show"]));
    assert!(a.can_ping(&b.ip), "other ports stopped forwarding");
    // The dead port's socket error must not keep the datapath busy.
    let before = datapath_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = datapath_ticks(d.pid()) - before;
    assert!(
        used <= 3,
        "the datapath used {used} ticks in 2 s after a port vanished"
    );
    // Nor must an interface that goes down.
    crate::util::run("ip", &["link", "set", &b.port, "down"]);
    std::thread::sleep(Duration::from_millis(500));
    let before = datapath_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = datapath_ticks(d.pid()) - before;
    assert!(
        used <= 3,
        "the datapath used {used} ticks in 2 s after a port went down"
    );
    crate::util::run("ip", &["link", "set", &b.port, "up"]);
    assert!(
        a.can_ping(&b.ip),
        "no forwarding after the port came back up"
    );
    // The interface comes back under the same name: the port re-attaches.
    let c = Host::with_port(&c_port, "10.22.0.3/24");
    // The new namespace has a new MAC; a must not keep using the old one.
    a.ns.exec_ok(&["ip", "neigh", "flush", "all"]);
    assert!(
        a.can_ping(&c.ip),
        "no forwarding to the re-created interface"
    );
    assert!(d
        .ctl_ok(&["show"])
        .contains(&format!("    Port {c_port}\n        state: up\n")));
    d.ctl_ok(&["del-port", "br0", &c_port]);
    assert!(a.can_ping(&b.ip));
    assert!(!a.ping_once(&c.ip), "forwarded to a deleted port");
}

#[test]
fn renamed_interface_detaches_and_its_name_can_return() {
    let _machine = shared_machine();
    let a = Host::new("10.24.0.1/24");
    let b = Host::new("10.24.0.2/24");
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    assert!(a.can_ping(&b.ip));
    let renamed = crate::util::unique_name("swr");
    crate::util::run("ip", &["link", "set", &b.port, "down"]);
    crate::util::run("ip", &["link", "set", &b.port, "name", &renamed]);
    crate::util::run("ip", &["link", "set", &renamed, "up"]);
    let detached = wait_until(Duration::from_secs(5), || {
        d.ctl_ok(&["show"]).contains(&format!(
            "    Port {}\n        state: error: no such device\n",
            b.port
        ))
    });
    assert!(detached, "{}", d.ctl_ok(&["show"]));
    assert!(
        !a.ping_once(&b.ip),
        "still forwarding to the renamed interface"
    );
    crate::util::run("ip", &["link", "set", &renamed, "down"]);
    crate::util::run("ip", &["link", "set", &renamed, "name", &b.port]);
    crate::util::run("ip", &["link", "set", &b.port, "up"]);
    assert!(a.can_ping(&b.ip), "no forwarding once the name came back");
}

fn raw_call(socket: &std::path::Path, line: &[u8]) -> Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply {reply:?}: {e}"))
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let cases: &[(&[u8], i64, &str)] = &[
        (b"this is not json\n", -32700, "parse error"),
        (b"[1,2,3]\n", -32600, "JSON object"),
        (
            br#"{"id":1,"method":"list-br"}"# as &[u8],
            -32600,
            "jsonrpc",
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"frobnicate"}"#,
            -32601,
            "unknown method",
        ),
        (
            br#"{"jsonrpc":"2.0","id":2,"method":"add-br","params":{"bridge":7}}"#,
            -32602,
            "invalid params",
        ),
        (
            br#"{"jsonrpc":"2.0","id":3,"method":"add-br","params":{}}"#,
            -32602,
            "bridge",
        ),
        (
            br#"{"jsonrpc":"2.0","id":4,"method":"add-br","params":{"bridge":"b","bogus":1}}"#,
            -32602,
            "bogus",
        ),
        (
            br#"{"jsonrpc":"2.0","id":5,"method":"add-br","params":{"bridge":"a/b"}}"#,
            -32602,
            "invalid bridge name",
        ),
    ];
    for (line, code, text) in cases {
        let mut line = line.to_vec();
        line.push(b'\n');
        let reply = raw_call(&d.socket, &line);
        assert_eq!(reply["jsonrpc"], "2.0");
        assert_eq!(reply["error"]["code"], *code, "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    // Ids come back; a good request on the same daemon still works.
    let reply = raw_call(
        &d.socket,
        b"{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"list-br\"}\n",
    );
    assert_eq!(reply["id"], "x");
    assert_eq!(reply["result"], serde_json::json!([]));

    // Oversized: an error, and the same connection serves the next request.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut big = vec![b'x'; 3 * switchd_proto::MAX_REQUEST_BYTES];
    big.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"list-br\"}\n");
    s.write_all(&big).unwrap();
    let mut replies = BufReader::new(&s).lines();
    let first: Value = serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["error"]["code"], -32600, "{first}");
    assert!(first["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than"));
    let second: Value = serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["id"], 9, "{second}");

    // A client that disconnects mid-request does no harm.
    {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(br#"{"jsonrpc":"2.0","id":1,"meth"#).unwrap();
    }
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    assert_eq!(d.ctl_ok(&["list-br"]), "br0\n");
}

/// The datapath blocks in epoll when there is no traffic: an idle switch with
/// ports attached uses (next to) no CPU.
#[test]
fn idle_switch_uses_no_cpu() {
    let _machine = shared_machine();
    let a = Host::new("10.23.0.1/24");
    let b = Host::new("10.23.0.2/24");
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    assert!(a.can_ping(&b.ip));
    // The daemon does follow every interface change on the host, and other tests
    // (or the kernel cleaning up their namespaces) make plenty: wait for a quiet
    // window, up to 10 of them. A daemon that is busy on its own never gets one.
    let mut used = u64::MAX;
    for _ in 0..10 {
        let before = cpu_ticks(d.pid());
        std::thread::sleep(Duration::from_secs(2));
        used = used.min(cpu_ticks(d.pid()) - before);
        if used <= 2 {
            break;
        }
    }
    // 2 s at 100 ticks/s: 2 ticks is 1% of a core. A spinning thread would use ~200.
    assert!(used <= 2, "idle switchd used {used} ticks in 2 s");
}

/// Runs switchctl as the unprivileged user nobody (uid 65534), in group `gid`.
fn ctl_as_nobody(d: &Daemon, gid: u32, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .arg(crate::util::bin("switchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn control_socket_admits_only_root_and_its_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _machine = shared_machine();
    let d = Daemon::start();
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);

    // The file mode keeps others out...
    let out = ctl_as_nobody(&d, 65534, &["list-br"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    // ...and so do the peer credentials when the mode is opened by mistake.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = ctl_as_nobody(&d, 65534, &["add-br", "evil"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "switchctl: permission denied: uid 65534 is neither root nor in switchd's socket group\n"
    );
    assert_eq!(
        d.ctl_ok(&["list-br"]),
        "",
        "the refused request changed nothing"
    );

    // With --socket-group, that group's members get in.
    let g = Daemon::start_with(&["--socket-group", "nogroup"]);
    assert_eq!(std::fs::metadata(&g.socket).unwrap().gid(), 65534);
    let out = ctl_as_nobody(&g, 65534, &["add-br", "--no-internal", "br0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(g.ctl_ok(&["list-br"]), "br0\n");
}

/// Every change switchctl acknowledged survives a SIGKILL at any moment.
#[test]
fn acknowledged_changes_survive_kill_9() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut next = 0;
    for round in 0..15u64 {
        let socket = d.socket.clone();
        let start = next;
        let writer = std::thread::spawn(move || {
            let mut done = Vec::new();
            for n in start..start + 1000 {
                let name = format!("k{n}");
                let ok = std::process::Command::new(crate::util::bin("switchctl"))
                    .arg("--socket")
                    .arg(&socket)
                    .args(["add-br", &name])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    break;
                }
                done.push(name);
            }
            done
        });
        // Kill at a different point of the write sequence each round, once at
        // least one change was acknowledged (the writer asks for the second
        // only after the first one's reply).
        let second = format!("\"k{}\"", start + 1);
        let ready = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&d.db).is_ok_and(|db| db.contains(&second))
        });
        assert!(ready, "round {round}: nothing acknowledged within 5 s");
        std::thread::sleep(Duration::from_millis(round * 7));
        d.kill9();
        let done = writer.join().unwrap();
        assert!(!done.is_empty(), "round {round}: no change acknowledged");
        next += 1000;
        acknowledged.extend(done);
        d.restart();
        let present = d.ctl_ok(&["list-br"]);
        let present: std::collections::HashSet<&str> = present.lines().collect();
        for name in &acknowledged {
            assert!(
                present.contains(name.as_str()),
                "round {round}: {name} acknowledged but lost"
            );
        }
    }
}

#[test]
fn hundred_clients_at_once_and_a_silent_one() {
    let _machine = shared_machine();
    let d = Daemon::start();
    // A client that connects and never speaks must not hold anyone up.
    let _silent = UnixStream::connect(&d.socket).unwrap();
    let socket = d.socket.clone();
    let clients: Vec<_> = (0..100)
        .map(|n| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let req = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{n},\"method\":\"add-br\",\"params\":{{\"bridge\":\"c{n}\",\"no_internal\":true}}}}\n"
                );
                raw_call(&socket, req.as_bytes())
            })
        })
        .collect();
    for (n, client) in clients.into_iter().enumerate() {
        let reply = client.join().unwrap();
        assert_eq!(reply["id"], n, "{reply}");
        assert!(reply["result"].is_null(), "{reply}");
    }
    assert_eq!(d.ctl_ok(&["list-br"]).lines().count(), 100);
}

/// A bridge's internal port is switchd's own interface: deleted from outside,
/// it is made again, up, and floods reach it again.
#[test]
fn an_internal_port_deleted_from_outside_is_made_again() {
    let _machine = shared_machine();
    let a = Host::new("10.26.0.1/24");
    let d = Daemon::start();
    // With its internal port, so named uniquely.
    let br = crate::util::unique_name("ibr");
    d.ctl_ok(&["add-br", &br]);
    d.ctl_ok(&["add-port", &br, &a.port]);
    crate::util::run("ip", &["link", "del", &br]);
    let rx = || {
        std::fs::read_to_string(format!("/sys/class/net/{br}/statistics/rx_packets"))
            .ok()
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(5), || rx().is_some()),
        "{br} was not made again: {}",
        d.ctl_ok(&["show"])
    );
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!("    Port {br}\n        type: internal\n")),
        "{show}"
    );
    assert!(!show.contains("error"), "{show}");
    // Nobody has 10.26.0.9: a's ARP request floods, to the internal port too.
    let before = rx().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            a.ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", "10.26.0.9"]);
            rx().unwrap_or(0) > before
        }),
        "nothing reached {br} after it was made again"
    );
}

/// Changing a port's MTU or setting it down under a running switch: the daemon
/// keeps forwarding between the other ports, `show` says what is going on, and
/// the port works again once it is back.
#[test]
fn mtu_change_and_link_down_under_traffic() {
    let _machine = shared_machine();
    let (a, b, c) = (
        Host::new("10.25.0.1/24"),
        Host::new("10.25.0.2/24"),
        Host::new("10.25.0.3/24"),
    );
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    for h in [&a, &b, &c] {
        d.ctl_ok(&["add-port", "br0", &h.port]);
    }
    assert!(a.can_ping(&b.ip));

    // Jumbo frames on a's link only: a and b still talk with normal frames; a
    // jumbo frame for c does not fit c's link, so it is dropped and counted (a
    // switch does not fragment; the kernel bridge drops it too).
    crate::util::run("ip", &["link", "set", &a.port, "mtu", "9000"]);
    a.ns.exec_ok(&["ip", "link", "set", "eth0", "mtu", "9000"]);
    assert!(a.can_ping(&b.ip), "after the MTU change");
    assert!(a.can_ping(&c.ip));
    let too_big = |d: &Daemon| {
        d.port_counters("br0", &c.port)["tx_too_big"]
            .as_u64()
            .unwrap()
    };
    let before = too_big(&d);
    let big = a.ns.exec(&[
        "ping", "-c", "1", "-W", "1", "-M", "dont", "-s", "8000", &c.ip,
    ]);
    assert!(
        !big.status.success(),
        "a 8 KB frame crossed a 1500-byte link"
    );
    assert!(too_big(&d) > before, "oversized frame not counted");
    assert!(a.can_ping(&c.ip), "normal frames after the jumbo one");
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!("    Port {}\n        state: up\n", a.port)),
        "{show}"
    );

    // The egress side, under traffic: b's link grows to 9000 while a pings it.
    // Link events carry the new MTU to the fast path, so a's jumbo frames to b
    // are then forwarded by the kernel, not left to userspace.
    let kernel_rx = |d: &Daemon| {
        d.port_counters("br0", &a.port)["rx_kernel"]
            .as_u64()
            .unwrap()
    };
    let jumbo = |count: &str| {
        a.ns.exec(&[
            "ping", "-n", "-q", "-c", count, "-i", "0.01", "-W", "1", "-M", "dont", "-s", "8000",
            &b.ip,
        ])
    };
    let background = a.ns.spawn(&["ping", "-n", "-q", "-i", "0.005", &b.ip]);
    crate::util::run("ip", &["link", "set", &b.port, "mtu", "9000"]);
    b.ns.exec_ok(&["ip", "link", "set", "eth0", "mtu", "9000"]);
    std::thread::sleep(Duration::from_millis(200));
    drop(background);
    // The link event reaches the fast path a little later.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let k = kernel_rx(&d);
            jumbo("1").status.success() && kernel_rx(&d) > k
        }),
        "no jumbo frame to b forwarded by the kernel after b's MTU grew"
    );
    let k0 = kernel_rx(&d);
    assert!(jumbo("20").status.success());
    let in_kernel = kernel_rx(&d) - k0;
    assert!(
        in_kernel >= 20,
        "{in_kernel} of 20 jumbo requests forwarded by the kernel: its MTU for b is stale"
    );
    // And back, under traffic again: the kernel stops taking jumbo frames for b,
    // userspace refuses them on b's 1500-byte link and counts them.
    let background = a.ns.spawn(&["ping", "-n", "-q", "-i", "0.005", &b.ip]);
    b.ns.exec_ok(&["ip", "link", "set", "eth0", "mtu", "1500"]);
    crate::util::run("ip", &["link", "set", &b.port, "mtu", "1500"]);
    std::thread::sleep(Duration::from_millis(200));
    drop(background);
    let b_errors = |d: &Daemon| {
        d.port_counters("br0", &b.port)["tx_too_big"]
            .as_u64()
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(5), || {
            let k = kernel_rx(&d);
            !jumbo("1").status.success() && kernel_rx(&d) == k
        }),
        "the kernel still forwards jumbo frames to b"
    );
    let (k1, e1) = (kernel_rx(&d), b_errors(&d));
    assert!(
        !jumbo("3").status.success(),
        "a jumbo frame crossed b's 1500-byte link"
    );
    // (A unicast ARP probe may pass through the kernel meanwhile; 3 jumbo
    // requests would count 3.)
    assert!(
        kernel_rx(&d) - k1 < 3,
        "the kernel still forwards jumbo frames to b"
    );
    assert!(b_errors(&d) > e1, "oversized frames for b not counted");
    assert!(a.can_ping(&b.ip), "normal frames to b after its MTU shrank");

    // Set down: show says so, the others keep forwarding.
    crate::util::run("ip", &["link", "set", &a.port, "down"]);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "    Port {}\n        state: down (interface is down)\n",
            a.port
        )),
        "{show}"
    );
    assert!(b.can_ping(&c.ip), "b -> c while a is down");
    assert!(!a.ping_once(&b.ip), "a forwarded while down");
    // Its peer is down now: carrier gone on the namespace side, not ours.
    a.ns.exec_ok(&["ip", "link", "set", "eth0", "down"]);
    crate::util::run("ip", &["link", "set", &a.port, "up"]);
    let show = d.ctl_json(&["show"]);
    let port = show["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == a.port.as_str())
        .unwrap()
        .clone();
    assert_eq!(port["down"], "no carrier", "{port}");
    a.ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    assert!(a.can_ping(&b.ip), "a -> b once back up");
    assert!(d.ctl_json(&["show"])["bridges"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["down"].is_null() && p["error"].is_null()));
}

/// Two ports of the bridge patched to each other: the broadcast storm is detected
/// by the MAC moves it causes and the looping ports are blocked, the daemon
/// answers throughout, the other ports keep forwarding, and the storm dies.
#[test]
fn a_loop_is_detected_and_cut() {
    let _machine = crate::util::exclusive_machine();
    let (a, b) = (Host::new("10.26.0.1/24"), Host::new("10.26.0.2/24"));
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    let wire = crate::util::Wire::new();
    let (la, lb) = (wire.a.clone(), wire.b.clone());
    d.ctl_ok(&["add-port", "br0", &la]);
    d.ctl_ok(&["add-port", "br0", &lb]);

    let loop_drops = |d: &Daemon| {
        [&la, &lb]
            .iter()
            .map(|p| d.port_counters("br0", p)["rx_loop"].as_u64().unwrap())
            .sum::<u64>()
    };
    // A client keeps asking for `show` from before the storm until after it is
    // cut; the slowest answer is the one that came during the storm.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (detected, slowest, answers) = std::thread::scope(|scope| {
        let asker = scope.spawn(|| {
            let (mut slowest, mut answers) = (Duration::ZERO, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                d.ctl_ok(&["show"]);
                slowest = slowest.max(started.elapsed());
                answers += 1;
            }
            (slowest, answers)
        });
        // An ARP broadcast for an address nobody has starts the storm.
        a.ping_once("10.26.0.99");
        let detected = wait_until(Duration::from_secs(5), || loop_drops(&d) > 0);
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (slowest, answers) = asker.join().unwrap();
        (detected, slowest, answers)
    });
    assert!(detected, "the loop was not detected");
    assert!(answers > 10, "only {answers} answers to show");
    assert!(
        slowest < Duration::from_secs(2),
        "switchctl took {slowest:?} during the storm"
    );
    let show = d.ctl_ok(&["show"]);
    assert!(show.contains("blocked: loop suspected"), "{show}");
    assert!(a.can_ping(&b.ip), "a -> b next to the loop");

    // The storm is over, not just survived: the daemon is idle again.
    let used = (0..3)
        .map(|_| {
            let before = cpu_ticks(d.pid());
            std::thread::sleep(Duration::from_secs(1));
            cpu_ticks(d.pid()) - before
        })
        .min()
        .unwrap();
    assert!(
        used <= 5,
        "switchd used {used} ticks a second after the loop was cut"
    );

    // After LOOP_BLOCK_MS the ports are tried again; the loop is still there, so
    // the next broadcast trips it again.
    let blocked = |d: &Daemon| d.ctl_ok(&["show"]).contains("blocked: loop suspected");
    assert!(
        wait_until(Duration::from_secs(12), || !blocked(&d)),
        "the ports were not tried again after 10 s"
    );
    let drops = loop_drops(&d);
    a.ping_once("10.26.0.98");
    assert!(
        wait_until(Duration::from_secs(5), || blocked(&d)
            && loop_drops(&d) > drops),
        "the loop was not caught again"
    );
}

/// A database as switchd wrote it before ports had kinds (version 1) loads with
/// nothing lost, forwards, and is saved as version 2 on the next change.
#[test]
fn a_version_1_database_is_migrated() {
    let _machine = shared_machine();
    let a = Host::new("10.20.9.1/24");
    let b = Host::new("10.20.9.2/24");
    let mut d = Daemon::start();
    d.stop();
    let v1 = serde_json::json!({
        "version": 1,
        "bridges": {
            "br0": {
                "mac_aging_time": 42,
                "mac_table_size": 1000,
                "ports": [a.port, b.port],
                "internal": false,
                "ns_ports": {},
            }
        }
    });
    std::fs::write(&d.db, v1.to_string()).unwrap();
    d.restart();
    let show = d.ctl_json(&["show"]);
    let br0 = &show["bridges"][0];
    assert_eq!(
        (
            br0["mac_aging_time"].as_u64(),
            br0["mac_table_size"].as_u64()
        ),
        (Some(42), Some(1000))
    );
    let mut names: Vec<&str> = br0["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![a.port.as_str(), b.port.as_str()];
    expected.sort();
    assert_eq!(names, expected, "{show}");
    assert!(a.can_ping(&b.ip));
    assert!(
        std::fs::read_to_string(&d.db)
            .unwrap()
            .contains("\"version\":1"),
        "loading alone does not rewrite the file"
    );
    d.ctl_ok(&["set-br", "br0", "mac-aging-time=43"]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&d.db).unwrap()).unwrap();
    assert_eq!(saved["version"], 3);
    assert_eq!(saved["bridges"]["br0"]["ports"][0]["name"], a.port.as_str());
    assert_eq!(saved["bridges"]["br0"]["ports"][0]["type"], "system");
}

#[test]
fn a_killed_switchd_leaves_no_interface_promiscuous() {
    let _machine = shared_machine();
    let a = Host::new("10.20.8.1/24");
    let mut d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    assert!(!promiscuous(&a.port));
    d.ctl_ok(&["add-port", "br0", &a.port]);
    assert!(promiscuous(&a.port), "attached interface not promiscuous");
    d.kill9();
    // The kernel drops a socket's membership when the socket closes.
    assert!(
        wait_until(Duration::from_secs(2), || !promiscuous(&a.port)),
        "interface left promiscuous after SIGKILL"
    );
}

/// The application error codes a JSON-RPC client can act on: 1 not found,
/// 2 already exists, 3 cannot be carried out.
#[test]
fn errors_carry_their_json_rpc_codes() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let call = |method: &str, params: &str| {
        let line = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{params}}}"#);
        let reply = raw_call(&d.socket, format!("{line}\n").as_bytes());
        assert_eq!(reply["id"], 7, "{reply}");
        reply
    };
    let code = |reply: &Value| reply["error"]["code"].as_i64();
    assert_eq!(code(&call("del-br", r#"{"bridge":"nope"}"#)), Some(1));
    assert_eq!(
        code(&call("add-port", r#"{"bridge":"nope","interface":"x"}"#)),
        Some(1)
    );
    assert!(call("add-br", r#"{"bridge":"c1"}"#)["error"].is_null());
    assert_eq!(code(&call("add-br", r#"{"bridge":"c1"}"#)), Some(2));
    // The internal port cannot be deleted on its own: well formed, refused.
    assert_eq!(code(&call("del-port", r#"{"interface":"c1"}"#)), Some(3));
    // fdb-flush without a bridge empties every table and says how much it took.
    let (a, b) = (Host::new("10.20.7.1/24"), Host::new("10.20.7.2/24"));
    d.ctl_ok(&["add-br", "--no-internal", "c2"]);
    d.ctl_ok(&["add-port", "c2", &a.port]);
    d.ctl_ok(&["add-port", "c2", &b.port]);
    assert!(a.can_ping(&b.ip));
    let learned = d.ctl_json(&["fdb-show", "c2"]).as_array().unwrap().len();
    assert!(learned >= 2, "{learned}");
    let flushed = call("fdb-flush", "{}");
    assert!(
        flushed["result"]["flushed"].as_u64() >= Some(learned as u64),
        "{flushed}"
    );
    assert_eq!(d.ctl_json(&["fdb-show", "c2"]), serde_json::json!([]));
}

#[test]
fn sigint_stops_cleanly_too() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    let br = crate::util::unique_name("si");
    let tap = std::path::PathBuf::from("/sys/class/net").join(&br);
    d.ctl_ok(&["add-br", &br]);
    assert!(tap.exists());
    let status = d.stop_with(libc::SIGINT);
    assert!(status.success(), "switchd exited with {status}");
    assert!(!d.socket.exists(), "socket file left behind");
    assert!(d.log().contains("SIGINT: shutting down"), "{}", d.log());
    assert!(!tap.exists(), "the internal port's TAP outlived switchd");
    d.restart();
    assert_eq!(d.ctl_ok(&["list-br"]), format!("{br}\n"));
    assert!(tap.exists(), "the internal port is back after a restart");
}

/// A client that connects and sends nothing is disconnected after 60 s
/// (IDLE_TIMEOUT), and so is one that sends requests but never reads the
/// replies; others are served meanwhile.
#[test]
fn a_silent_client_is_let_go_after_60_s() {
    use std::io::Read;
    let _machine = shared_machine();
    let d = Daemon::start();
    let mut silent = UnixStream::connect(&d.socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let started = std::time::Instant::now();
    // Requests until the daemon's replies fill the socket and it stops reading.
    let mut deaf = UnixStream::connect(&d.socket).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    crate::util::send_until_refused(
        &mut deaf,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"list-br\"}\n",
    );
    let deaf_since = std::time::Instant::now();
    assert_eq!(
        d.ctl_ok(&["list-br"]),
        "",
        "another client waits on the silent one"
    );
    let mut buf = [0u8; 16];
    let read = silent.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)),
        "expected the daemon to hang up: {read:?}"
    );
    assert!(
        (Duration::from_secs(59)..Duration::from_secs(70)).contains(&waited),
        "hung up after {waited:?}"
    );
    // Reading any of its replies before the daemon gives up would unblock it.
    // (Its writes stalled before this one's; the margin is for a busy machine.)
    std::thread::sleep(Duration::from_secs(70).saturating_sub(deaf_since.elapsed()));
    // The replies it has, then the end (or a reset: it left requests unread).
    deaf.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut replies = Vec::new();
    let end = deaf.read_to_end(&mut replies);
    assert!(
        end.is_ok() || end.as_ref().unwrap_err().kind() == std::io::ErrorKind::ConnectionReset,
        "still connected after {:?}, {} bytes of replies: {end:?}",
        started.elapsed(),
        replies.len()
    );
    assert_eq!(d.ctl_ok(&["list-br"]), "");
}

/// The reply to a change comes after its database is durable: written to the
/// temporary file, that file fsynced, renamed over the database, the directory
/// fsynced. Read from the daemon's own system calls (strace), since a SIGKILL
/// keeps the page cache and cannot tell a save that skips fsync from one that
/// does not.
#[test]
fn a_change_is_fsynced_before_its_reply() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let trace = d.dir.join("trace");
    let pid = d.pid().to_string();
    let _strace = crate::util::ChildGuard(
        std::process::Command::new("strace")
            .args(["-f", "-qq", "-s", "64", "-p", &pid, "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=openat,fsync,fdatasync,rename,renameat,renameat2,sendto",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strace (apt-get install strace)"),
    );
    // Attached once a reply shows in the trace.
    let read = || std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || {
            d.ctl_ok(&["list-br"]);
            read().contains("jsonrpc")
        }),
        "strace did not attach"
    );
    let before = read().lines().count();
    d.ctl_ok(&["add-br", "--no-internal", "durable0"]);
    // add-br's reply is the one whose result is null (strace escapes quotes);
    // strace may write its line a moment after the client has the reply.
    let add_br_reply = r#"\"result\":null"#;
    assert!(wait_until(Duration::from_secs(5), || read().contains(add_br_reply)));
    let trace = read();
    let lines: Vec<&str> = trace.lines().skip(before).collect();
    let find = |from: usize, what: &dyn Fn(&str) -> bool| {
        lines[from..].iter().position(|l| what(l)).map(|i| i + from)
    };
    let db = d.db.display().to_string();
    let tmp = format!("{db}.tmp");
    // The fd a line's call returned (`... = 7`).
    let fd_of = |line: &str| line.rsplit("= ").next().unwrap_or("").trim().to_string();
    let open_tmp = find(0, &|l| {
        l.contains("openat(") && l.contains(&format!("\"{tmp}\""))
    })
    .unwrap_or_else(|| panic!("no open of {tmp}:\n{}", lines.join("\n")));
    let tmp_fd = fd_of(lines[open_tmp]);
    let synced = find(open_tmp, &|l| {
        l.contains(&format!("fsync({tmp_fd})")) || l.contains(&format!("fdatasync({tmp_fd})"))
    })
    .unwrap_or_else(|| panic!("{tmp} never fsynced:\n{}", lines.join("\n")));
    let renamed = find(synced, &|l| {
        l.contains("rename") && l.contains(&format!("\"{tmp}\""))
    })
    .unwrap_or_else(|| panic!("not renamed after the fsync:\n{}", lines.join("\n")));
    let dir = d.dir.display().to_string();
    let open_dir = find(renamed, &|l| {
        l.contains("openat(") && l.contains(&format!("\"{dir}\""))
    })
    .unwrap_or_else(|| {
        panic!(
            "directory not opened after the rename:\n{}",
            lines.join("\n")
        )
    });
    let dir_fd = fd_of(lines[open_dir]);
    let dir_synced = find(open_dir, &|l| l.contains(&format!("fsync({dir_fd})")))
        .unwrap_or_else(|| panic!("directory never fsynced:\n{}", lines.join("\n")));
    let reply = find(0, &|l| l.contains("sendto(") && l.contains(add_br_reply))
        .unwrap_or_else(|| panic!("no reply in the trace:\n{}", lines.join("\n")));
    assert!(
        reply > dir_synced,
        "the reply (line {reply}) went before the directory's fsync (line {dir_synced}):\n{}",
        lines.join("\n")
    );

    // The next change is a line appended to the file the snapshot became, and
    // synced before its reply.
    let open_log = find(dir_synced, &|l| {
        l.contains("openat(") && l.contains(&format!("\"{db}\"")) && l.contains("O_APPEND")
    })
    .unwrap_or_else(|| panic!("{db} not opened to append:\n{}", lines.join("\n")));
    let log_fd = fd_of(lines[open_log]);
    let before = trace.lines().count();
    d.ctl_ok(&["set-br", "durable0", "mac-aging-time=77"]);
    assert!(wait_until(Duration::from_secs(5), || read()
        .lines()
        .skip(before)
        .any(|l| l.contains(add_br_reply))));
    let trace = read();
    let lines: Vec<&str> = trace.lines().skip(before).collect();
    let synced = lines
        .iter()
        .position(|l| l.contains(&format!("fdatasync({log_fd})")))
        .unwrap_or_else(|| panic!("the appended line never synced:\n{}", lines.join("\n")));
    let reply = lines
        .iter()
        .position(|l| l.contains("sendto(") && l.contains(add_br_reply))
        .expect("seen above");
    assert!(
        reply > synced && !lines.iter().any(|l| l.contains(&tmp)),
        "set-br: the reply (line {reply}) before the sync (line {synced}), or a snapshot:\n{}",
        lines.join("\n")
    );
    assert!(std::fs::read_to_string(&d.db)
        .unwrap()
        .ends_with("\"mac_aging_time\":77,\"mac_table_size\":8192,\"ports\":[]}}}]\n"));
}

/// A bridge deleted and made again at once, with its internal port and its
/// ports: the TAP's name is free again, the ports forward, and the deleted
/// bridge's sockets close (off the request, within a grace period each).
#[test]
fn a_bridge_deleted_and_made_again_at_once_works() {
    let _machine = shared_machine();
    let a = Host::new("10.20.9.1/24");
    let b = Host::new("10.20.9.2/24");
    let d = Daemon::start();
    let br = crate::util::unique_name("rb");
    for round in 0..5 {
        d.ctl_ok(&[
            "add-br", &br, "--", "add-port", &br, &a.port, "--", "add-port", &br, &b.port,
        ]);
        assert!(a.can_ping(&b.ip), "round {round}: no forwarding");
        let show = d.ctl_json(&["show"]);
        let ports = show["bridges"][0]["ports"].as_array().unwrap().clone();
        assert_eq!(ports.len(), 3, "round {round}: {show}");
        assert!(
            ports.iter().all(|p| p["error"].is_null()),
            "round {round}: {show}"
        );
        d.ctl_ok(&["del-br", &br]);
    }
    assert!(
        wait_until(Duration::from_secs(5), || !promiscuous(&a.port)
            && !promiscuous(&b.port)),
        "a deleted bridge's ports stayed promiscuous"
    );
    assert!(!a.ping_once(&b.ip), "forwarded after del-br");
}
