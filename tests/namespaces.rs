//! The bridge's internal port, add-ns-port / del-ns-port, chained commands, and
//! a bridge with hundreds of namespaces.

use crate::util::{
    exclusive_machine, frame, run, shared_machine, unique_name, wait_until, ChildGuard, Daemon,
    Netns,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The interfaces inside a namespace, by name.
fn links_in(ns: &Netns) -> BTreeSet<String> {
    ns.exec_ok(&["ls", "/sys/class/net"])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn ports(d: &Daemon) -> Vec<Value> {
    let show = d.ctl_json(&["show"]);
    show["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["ports"].as_array().unwrap().clone())
        .collect()
}

fn assert_fails(out: std::process::Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in {stderr:?}"
    );
}

/// `args` run inside `ns`, or on the host for `None`.
fn command(ns: Option<&Netns>, args: &[&str]) -> Command {
    let mut cmd = match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.name, args[0]]);
            cmd
        }
        None => Command::new(args[0]),
    };
    cmd.args(&args[1..]);
    cmd
}

/// iperf3 TCP from `client` to a server on `server_ip` in `server` (`None`: the
/// host); Gbit/s.
fn tcp_gbits(server: Option<&Netns>, server_ip: &str, client: Option<&Netns>) -> f64 {
    let _server = ChildGuard(
        command(server, &["iperf3", "-s", "-1", "-B", server_ip])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listening = format!("{server_ip}:5201");
    let ready = wait_until(Duration::from_secs(5), || {
        let probe = command(server, &["ss", "-ltn"]).output().unwrap();
        String::from_utf8_lossy(&probe.stdout).contains(&listening)
    });
    assert!(ready, "iperf3 server did not start");
    let out = command(client, &["iperf3", "-c", server_ip, "-t", "2", "-J"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// The host gets an address on the bridge's internal port and reaches namespaces
/// through it, ICMP and TCP with offloads, both directions.
#[test]
fn host_reaches_namespaces_through_the_internal_port() {
    let _machine = exclusive_machine();
    let mut d = Daemon::start();
    let br = unique_name("int");
    let (ns1, ns2) = (Netns::new(), Netns::new());
    d.ctl_ok(&["add-br", &br]);
    assert!(link_exists(&br), "no TAP named {br}");
    let kind = std::fs::read_to_string(format!("/sys/class/net/{br}/tun_flags")).unwrap();
    assert!(!kind.is_empty(), "{br} is not a TUN/TAP device");
    d.ctl_ok(&["add-ns-port", &br, &ns1.name, "--ip", "10.231.1.1/24"]);
    d.ctl_ok(&["add-ns-port", &br, &ns2.name, "--ip", "10.231.1.2/24"]);
    run("ip", &["addr", "add", "10.231.1.254/24", "dev", &br]);

    let host_ping = |ip: &str| {
        wait_until(Duration::from_secs(5), || {
            Command::new("ping")
                .args(["-n", "-q", "-c", "1", "-W", "1", ip])
                .status()
                .unwrap()
                .success()
        })
    };
    assert!(host_ping("10.231.1.1"), "host -> ns1");
    assert!(host_ping("10.231.1.2"), "host -> ns2");
    assert!(
        ns1.exec(&["ping", "-c", "1", "-W", "2", "10.231.1.254"])
            .status
            .success(),
        "ns1 -> host"
    );

    // The host's MAC is learned on the internal port like any other.
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{br}/address")).unwrap();
    let fdb = d.ctl_json(&["fdb-show", &br]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["port"] == br.as_str() && e["mac"] == host_mac.trim()),
        "{fdb}"
    );

    // The TAP takes the host's offloads, so the host hands it 64 KB frames with
    // partial checksums, as a veth does.
    let features = run("ethtool", &["-k", &br]);
    for feature in ["tcp-segmentation-offload: on", "tx-checksumming: on"] {
        assert!(features.contains(feature), "{br}: no {feature}\n{features}");
    }
    // Bytes per frame through the internal port: far over an MTU when the
    // frames really are GSO frames, not segmented on the way.
    let per_frame = |dir: &str| {
        let c = d.port_counters(&br, &br);
        (
            c[format!("{dir}_bytes")].as_u64().unwrap(),
            c[format!("{dir}_packets")].as_u64().unwrap(),
        )
    };
    let average =
        |before: (u64, u64), after: (u64, u64)| (after.0 - before.0) / (after.1 - before.1).max(1);
    // A stall (unhandled offloads) would show as kbit/s, not a slightly low figure.
    let rx0 = per_frame("rx");
    let down = tcp_gbits(Some(&ns1), "10.231.1.1", None);
    assert!(down > 1.0, "host -> ns1 TCP at {down:.2} Gbit/s");
    let from_host = average(rx0, per_frame("rx"));
    assert!(
        from_host > 3000,
        "the host's frames averaged {from_host} bytes"
    );
    let tx0 = per_frame("tx");
    let up = tcp_gbits(None, "10.231.1.254", Some(&ns1));
    assert!(up > 1.0, "ns1 -> host TCP at {up:.2} Gbit/s");
    let to_host = average(tx0, per_frame("tx"));
    assert!(
        to_host > 3000,
        "frames to the host averaged {to_host} bytes"
    );

    let internal: Vec<Value> = ports(&d)
        .into_iter()
        .filter(|p| p["type"] == "internal")
        .collect();
    assert_eq!(internal.len(), 1, "{internal:?}");
    assert_eq!(internal[0]["name"], br.as_str());
    assert_fails(d.ctl(&["del-port", &br, &br]), "internal port");

    // Restart: the TAP goes with the daemon and comes back with the bridge.
    d.stop();
    assert!(
        wait_until(Duration::from_secs(2), || !link_exists(&br)),
        "TAP outlived switchd"
    );
    d.restart();
    assert!(link_exists(&br), "TAP not recreated at start");
    d.ctl_ok(&["del-br", &br]);
    assert!(
        wait_until(Duration::from_secs(2), || !link_exists(&br)),
        "TAP left after del-br"
    );

    let quiet = unique_name("noint");
    d.ctl_ok(&["add-br", "--no-internal", &quiet]);
    assert!(!link_exists(&quiet));
    assert!(ports(&d).is_empty());
}

/// A name taken by another interface cannot become a bridge with an internal port,
/// and the failure leaves no bridge behind.
#[test]
fn bridge_named_like_an_existing_interface() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let name = unique_name("clash");
    run(
        "ip",
        &[
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &unique_name("clp"),
        ],
    );
    let out = d.ctl(&["add-br", &name]);
    run("ip", &["link", "del", &name]);
    assert_fails(out, "an interface of that name exists");
    assert_eq!(d.ctl_ok(&["list-br"]), "");
}

#[test]
fn ns_port_sets_everything_up_and_undoes_it() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let (a, b) = (Netns::new(), Netns::new());
    let host_a = unique_name("ha");
    d.ctl_ok(&[
        "add-ns-port",
        "br0",
        &a.name,
        "--host-ifname",
        &host_a,
        "--ip",
        "10.232.0.1/24",
        "--mac",
        "02:00:00:23:20:01",
        "--mtu",
        "9000",
        "--gateway",
        "10.232.0.254",
    ]);
    let b_path = format!("/run/netns/{}", b.name);
    d.ctl_ok(&[
        "add-ns-port",
        "br0",
        &b_path,
        "--ifname",
        "lan0",
        "--ip",
        "10.232.0.2/24",
    ]);
    let addr = a.exec_ok(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.232.0.1/24"), "{addr}");
    let link = a.exec_ok(&["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(
        link.contains("mtu 9000") && link.contains("02:00:00:23:20:01"),
        "{link}"
    );
    assert!(link.contains("state UP"), "{link}");
    let route = a.exec_ok(&["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.232.0.254 dev eth0"), "{route}");
    assert!(links_in(&b).contains("lan0"));
    assert!(
        a.exec(&["ping", "-c", "1", "-W", "2", "10.232.0.2"])
            .status
            .success(),
        "a -> b"
    );
    // IPv6, its router at the usual link-local address: the route needs the
    // interface named.
    let c = Netns::new();
    for scope in ["all", "default"] {
        c.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{scope}.disable_ipv6=0"),
        ]);
    }
    d.ctl_ok(&[
        "add-ns-port",
        "br0",
        &c.name,
        "--ip",
        "fd00:232::3/64",
        "--gateway",
        "fe80::1",
    ]);
    let route = c.exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(route.contains("via fe80::1 dev eth0"), "{route}");
    d.ctl_ok(&["del-ns-port", "br0", &c.name]);

    // show says where each port leads.
    let shown = ports(&d);
    let pa = shown.iter().find(|p| p["name"] == host_a.as_str()).unwrap();
    assert_eq!(pa["netns"], a.name.as_str());
    assert_eq!(pa["peer"], "eth0");
    let pb = shown
        .iter()
        .find(|p| p["netns"] == b_path.as_str())
        .unwrap();
    assert_eq!(pb["peer"], "lan0");
    assert!(d
        .ctl_ok(&["show"])
        .contains(&format!("netns: {} (eth0)", a.name)));

    // Idempotence.
    assert_fails(d.ctl(&["add-ns-port", "br0", &a.name]), "is already port");
    d.ctl_ok(&["--may-exist", "add-ns-port", "br0", &a.name]);

    // Survives a restart as a port that knows its namespace.
    d.stop();
    d.restart();
    let pa = ports(&d)
        .into_iter()
        .find(|p| p["name"] == host_a.as_str())
        .unwrap();
    assert_eq!(pa["netns"], a.name.as_str());
    assert!(pa["error"].is_null(), "{pa}");

    d.ctl_ok(&["del-ns-port", "br0", &a.name]);
    assert!(!link_exists(&host_a), "host end left behind");
    assert!(!links_in(&a).contains("eth0"), "namespace end left behind");
    assert_fails(d.ctl(&["del-ns-port", "br0", &a.name]), "has no port");
    d.ctl_ok(&["--if-exists", "del-ns-port", "br0", &a.name]);
    d.ctl_ok(&["del-ns-port", "br0", &b_path, "--ifname", "lan0"]);
    assert!(ports(&d).is_empty());
}

/// Every failure is reported and leaves no interface, in the namespace or on the
/// host, and no port.
#[test]
fn ns_port_failures_leave_nothing_behind() {
    let _machine = shared_machine();
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let ns = Netns::new();
    let taken = unique_name("tkn");
    run(
        "ip",
        &[
            "link",
            "add",
            &taken,
            "type",
            "veth",
            "peer",
            "name",
            &unique_name("tkp"),
        ],
    );
    let before = links_in(&ns);
    let host = unique_name("fh");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["add-ns-port", "br0", "no-such-ns-x"],
            "no network namespace",
        ),
        (vec!["add-ns-port", "br9", &ns.name], "no bridge named br9"),
        (
            vec!["add-ns-port", "br0", &ns.name, "--ip", "10.1.2.300/24"],
            "invalid address",
        ),
        (
            vec!["add-ns-port", "br0", &ns.name, "--ip", "10.1.2.3"],
            "no prefix length",
        ),
        (
            vec!["add-ns-port", "br0", &ns.name, "--mac", "ff:ff:ff:ff:ff:ff"],
            "not a unicast address",
        ),
        (
            vec!["add-ns-port", "br0", &ns.name, "--mtu", "20"],
            "invalid MTU",
        ),
        (
            vec!["add-ns-port", "br0", &ns.name, "--host-ifname", &taken],
            "already exists",
        ),
        (
            vec!["add-ns-port", "br0", &ns.name, "--ifname", "lo"],
            "already exists in namespace",
        ),
        (
            vec![
                "add-ns-port",
                "br0",
                &ns.name,
                "--ifname",
                "this-is-too-long",
            ],
            "longer than 15",
        ),
        // Fails inside the namespace, after the pair exists.
        (
            vec!["add-ns-port", "br0", &ns.name, "--gateway", "10.233.9.1"],
            "cannot add default route",
        ),
    ];
    for (mut args, message) in cases {
        if !args.contains(&"--host-ifname") {
            args.extend(["--host-ifname", &host]);
        }
        assert_fails(d.ctl(&args), message);
        assert_eq!(
            links_in(&ns),
            before,
            "{args:?} left an interface in the namespace"
        );
        assert!(ports(&d).is_empty(), "{args:?} left a port");
        assert!(!link_exists(&host), "{args:?} left the host end");
    }
    run("ip", &["link", "del", &taken]);
}

/// Commands chained with `--` are one transaction.
#[test]
fn chained_commands_are_all_or_nothing() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    let nss: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
    let hosts: Vec<String> = (0..3).map(|_| unique_name("ch")).collect();
    let mut args: Vec<String> = vec!["add-br".into(), "--no-internal".into(), "br0".into()];
    for (i, ns) in nss.iter().enumerate() {
        args.extend(["--", "add-ns-port", "br0", &ns.name, "--ip"].map(String::from));
        args.push(format!("10.234.0.{}/24", i + 1));
        args.extend(["--host-ifname".to_string(), hosts[i].clone()]);
    }
    // The last command fails: nothing of the chain may remain.
    let mut failing = args.clone();
    failing.extend(["--", "add-port", "br0", "no-such-iface"].map(String::from));
    let refs: Vec<&str> = failing.iter().map(String::as_str).collect();
    assert_fails(
        d.ctl(&refs),
        "command 5 (add-port): no interface named no-such-iface",
    );
    assert_eq!(d.ctl_ok(&["list-br"]), "");
    for (ns, host) in nss.iter().zip(&hosts) {
        assert!(!links_in(ns).contains("eth0"), "veth left in {}", ns.name);
        assert!(!link_exists(host), "{host} left behind");
    }
    let db = std::fs::read_to_string(&d.db).unwrap_or_default();
    assert!(!db.contains("br0"), "{db}");

    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ctl_ok(&refs);
    assert_eq!(ports(&d).len(), 3);
    assert!(nss[0]
        .exec(&["ping", "-c", "1", "-W", "2", "10.234.0.3"])
        .status
        .success());
    // Saved once, whole.
    d.stop();
    d.restart();
    assert_eq!(ports(&d).len(), 3);
}

/// 200 namespaces on one bridge, attached in one chained command: all attach,
/// broadcasts reach every one exactly once, the MAC table holds them all, and
/// random pairs ping.
#[test]
fn two_hundred_namespaces_on_one_bridge() {
    const N: usize = 200;
    let _machine = exclusive_machine();
    let d = Daemon::start();
    let br = unique_name("big");
    let nss: Vec<Netns> = (0..N).map(|_| Netns::new()).collect();
    let ip = |i: usize| format!("10.235.{}.{}", i / 250, i % 250 + 1);
    let mut args: Vec<String> = vec!["add-br".into(), br.clone()];
    for (i, ns) in nss.iter().enumerate() {
        args.extend(["--", "add-ns-port", &br, &ns.name, "--ip"].map(String::from));
        args.push(format!("{}/16", ip(i)));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ctl_ok(&refs);
    let shown = ports(&d);
    assert_eq!(shown.len(), N + 1);
    assert!(shown.iter().all(|p| p["error"].is_null()), "a port failed");

    // Broadcasts from the first namespace reach every other namespace exactly
    // once: seen there, byte for byte, not just counted (the host's own IPv6
    // chatter on the internal port bumps every port's tx counter too). One
    // flood is a few sendmmsg calls, each message naming its port: each port
    // gets each frame once, in order, and the sender none.
    const K: u8 = 10;
    let mut listeners: Vec<_> = nss.iter().map(|ns| ns.packet_socket("eth0")).collect();
    let src = [0x02, 0, 0, 0x23, 0x50, 0x01];
    let broadcasts: Vec<Vec<u8>> = (0..=K)
        .map(|k| frame([0xff; 6], src, None, &[b'b', b'c', k]))
        .collect();
    let last = broadcasts[K as usize].clone();
    let mut sender = nss[0].packet_socket("eth0");
    for b in &broadcasts {
        sender.send(b);
    }
    let mut wrong = Vec::new();
    for (sock, ns) in listeners[1..].iter_mut().zip(&nss[1..]) {
        let got: Vec<Vec<u8>> = sock
            .recv_until(Duration::from_secs(2), |f| f == &last[..])
            .into_iter()
            .filter(|f| f.len() == last.len() && f[..14] == last[..14])
            .collect();
        if got != broadcasts {
            wrong.push((ns.name.as_str(), got.len()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} namespaces did not get the {} broadcasts once each, in order: {wrong:?}",
        wrong.len(),
        N - 1,
        K + 1
    );
    let echoed = listeners[0].recv_until(Duration::from_millis(200), |f| f == &last[..]);
    assert!(
        !echoed
            .iter()
            .any(|f| f.len() == last.len() && f[..14] == last[..14]),
        "the sender got its own broadcast back"
    );
    drop(listeners);
    let hosts: Vec<String> = shown
        .iter()
        .filter(|p| p["netns"].is_string() && p["netns"] != nss[0].name.as_str())
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.len(), N - 1);

    // Every namespace answers the host once: the table learns all of them.
    run("ip", &["addr", "add", "10.235.255.254/16", "dev", &br]);
    let script = (0..N)
        .map(|i| {
            format!(
                "ping -n -q -c 1 -W 2 {} >/dev/null || echo {}",
                ip(i),
                ip(i)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let unreachable = String::from_utf8_lossy(&out.stdout);
    assert!(unreachable.trim().is_empty(), "unreachable: {unreachable}");
    let fdb = d.ctl_json(&["fdb-show", &br]);
    let learned: BTreeSet<&str> = fdb
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["port"].as_str().unwrap())
        .collect();
    for h in &hosts {
        assert!(learned.contains(h.as_str()), "{h} not in the MAC table");
    }

    // Random pairs (a fixed-seed LCG: reproducible, no extra crate).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 33) as usize % n
    };
    for _ in 0..N {
        let (a, b) = (next(N), next(N));
        if a == b {
            continue;
        }
        assert!(
            nss[a]
                .exec(&["ping", "-n", "-q", "-c", "1", "-W", "2", &ip(b)])
                .status
                .success(),
            "{} -> {}",
            ip(a),
            ip(b)
        );
    }
}

#[test]
fn add_ns_port_says_what_it_made() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let br = unique_name("br");
    d.ctl_ok(&["add-br", &br]);
    let ns = Netns::new();
    let made = d.ctl_json(&[
        "add-ns-port",
        &br,
        &ns.name,
        "--ip",
        "10.233.0.1/24",
        "--gateway",
        "10.233.0.254",
    ]);
    let mac = ns.exec_ok(&["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(made["bridge"], br.as_str());
    let port = made["port"].as_str().unwrap();
    assert_eq!(d.ctl_ok(&["port-to-br", port]), format!("{br}\n"));
    assert!(link_exists(port), "{made}");
    assert_eq!(made["netns"], ns.name.as_str());
    assert_eq!(made["ifname"], "eth0");
    assert_eq!(made["mac"], mac.trim(), "{made}");
    assert_eq!(made["addresses"], serde_json::json!(["10.233.0.1/24"]));
    assert_eq!(made["gateway"], "10.233.0.254");
    // A MAC the user chose is the one reported, and the one the namespace has.
    let made = d.ctl_json(&[
        "add-ns-port",
        &br,
        &ns.name,
        "--ifname",
        "eth1",
        "--mac",
        "02:00:00:33:00:01",
    ]);
    assert_eq!(made["mac"], "02:00:00:33:00:01");
    assert_eq!(
        ns.exec_ok(&["cat", "/sys/class/net/eth1/address"]).trim(),
        "02:00:00:33:00:01"
    );
    assert_eq!(made["addresses"], serde_json::json!([]));
}

/// A namespace path is the user's: a FIFO there used to block the control plane
/// in open(2) until a writer came, and every other client with it.
#[test]
fn a_namespace_path_that_is_no_namespace_is_refused_at_once() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let br = unique_name("br");
    d.ctl_ok(&["add-br", "--no-internal", &br]);
    let fifo = d.dir.join("not-a-netns");
    run("mkfifo", &[fifo.to_str().unwrap()]);
    let file = d.dir.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let cases = [
        (fifo.display().to_string(), "(it is a FIFO)"),
        (
            file.display().to_string(),
            "(it is another kind of namespace or file)",
        ),
        (d.dir.display().to_string(), "(it is a directory)"),
        (
            "/proc/self/ns/uts".to_string(),
            "(it is another kind of namespace or file)",
        ),
    ];
    for (path, why) in cases {
        let started = std::time::Instant::now();
        // Meanwhile another client is served.
        let other = std::thread::scope(|s| {
            let served = s.spawn(|| d.ctl(&["--timeout", "5", "list-br"]));
            let out = d.ctl(&["--timeout", "5", "add-ns-port", &br, &path]);
            assert_eq!(served.join().unwrap().status.code(), Some(0));
            out
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        let stderr = String::from_utf8_lossy(&other.stderr);
        assert_eq!(other.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{path} is not a network namespace {why}")),
            "{path}: {stderr}"
        );
    }
    let show = d.ctl_json(&["show"]);
    assert_eq!(
        show["bridges"][0]["ports"],
        serde_json::json!([]),
        "nothing half-made"
    );
}
