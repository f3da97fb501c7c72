//! How switchd's costs grow with the number of ports on one bridge.
//!
//! For each size (default 10, 100, 1000 namespaces) on a fresh switchd: time to
//! attach all of them with one chained `add-ns-port` command, the time of one more
//! `add-ns-port` once they are attached (median of 5, to compare port 11 with port
//! 1001; and the mean of those requests' time inside switchd, read from its
//! `--metrics` request-time histogram, the rest being switchctl's start and the
//! kernel's share), switchd's RSS and RSS per port, its CPU while idle, and TCP between two
//! of the namespaces while all the others stay attached. Then it checks the
//! bridge works at that size: the host pings every namespace through the
//! internal port (each ARP request is a broadcast that must reach that namespace),
//! the MAC table then holds every namespace, and 200 random pairs ping.
//!
//! Run as root: `scripts/bench growth` (or `cargo bench --bench growth` after
//! `cargo build --release --workspace --bins`). Environment: `GROWTH_SIZES` (comma
//! list, default `2,10,100,1000`: 2 is the baseline, the two TCP ends and no
//! other port), `GROWTH_IPV6` (`off,on` by default: each size with the
//! namespaces' IPv6 off, then on, as containers keep it), `SWITCHD_ARGS` (more
//! switchd flags), `GROWTH_JSON` (results file, default
//! target/growth/<unix time>.json). The 1000-port round takes a few minutes,
//! mostly creating and deleting namespaces.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use switchd_testkit::{cpu_ticks, measure, rss_kib, run_with_input, unique_name, Daemon, Netns};

const SPARE: usize = 5;

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A loopback address no one listens on now.
fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The seconds switchd spent in `add-ns-port` requests so far, and how many:
/// the sum and count of its request-time histogram.
fn add_ns_port_seconds(metrics: &str) -> (f64, f64) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {metrics}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let value = |what: &str| {
        let name = format!("switchd_control_request_seconds_{what}{{method=\"add-ns-port\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    (value("sum"), value("count"))
}

fn ip(i: usize) -> String {
    format!("10.236.{}.{}", i / 250, i % 250 + 1)
}

fn measure(n: usize, ipv6: bool) -> Value {
    eprintln!(
        "growth: {n} ports, IPv6 {}: creating namespaces",
        on_off(ipv6)
    );
    let nss: Vec<Netns> = (0..n + SPARE).map(|_| Netns::new()).collect();
    if ipv6 {
        // As containers and Mininet hosts keep it: DAD, router solicitations and
        // MLD reports, every one of them flooded.
        let script = nss
            .iter()
            .map(|ns| {
                format!(
                    "ip netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=0 \
                     net.ipv6.conf.default.disable_ipv6=0",
                    ns.name
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        run_with_input("sh", &[], &script);
    }
    let extra = std::env::var("SWITCHD_ARGS").unwrap_or_default();
    // The metrics endpoint times each request inside switchd.
    let metrics = free_local_addr();
    let mut args = vec!["--log-level", "warn", "--metrics", &metrics];
    args.extend(extra.split_whitespace());
    let d = Daemon::start_with(&args);
    let br = unique_name("gr");
    d.ctl_ok(&["add-br", &br]);
    let rss_empty = rss_kib(d.pid());

    // Thousands of ports in one transaction take longer than switchctl's
    // default 30 s.
    let mut args: Vec<String> = vec!["--timeout".into(), "1800".into()];
    for (i, ns) in nss[..n].iter().enumerate() {
        if i > 0 {
            args.push("--".into());
        }
        args.extend(["add-ns-port", &br, &ns.name, "--ip"].map(String::from));
        args.push(format!("{}/16", ip(i)));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    eprintln!("growth: {n} ports: attaching");
    let start = Instant::now();
    d.ctl_ok(&refs);
    let attach_all = start.elapsed().as_secs_f64();

    // Resolve neighbours first so the table is warm, then let it settle.
    nss[0].exec(&["ping", "-c", "1", "-W", "2", &ip(1)]);
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(d.pid());
    let idle_secs = 5.0;
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs_f64(idle_secs));
    let idle_cpu = (cpu_ticks(d.pid()) - before) as f64
        / switchd::sys::clock_ticks_per_sec() as f64
        / idle_secs
        * 100.0;
    let tcp = measure::tcp(&nss[0], &nss[1], &ip(1), 1, 3).0;

    // One more port, now that n are attached; after RSS is read, since a
    // scrape of thousands of ports' counters leaves the allocator holding
    // tens of MiB.
    let inside_before = add_ns_port_seconds(&metrics);
    let mut one = Vec::new();
    for (i, ns) in nss[n..].iter().enumerate() {
        let start = Instant::now();
        d.ctl_ok(&[
            "add-ns-port",
            &br,
            &ns.name,
            "--ip",
            &format!("{}/16", ip(n + i)),
        ]);
        one.push(start.elapsed().as_secs_f64() * 1e3);
        d.ctl_ok(&["del-ns-port", &br, &ns.name]);
    }
    let inside = add_ns_port_seconds(&metrics);
    let add_one_in_switchd_ms = (inside.0 - inside_before.0) * 1e3 / (inside.1 - inside_before.1);
    one.sort_by(f64::total_cmp);
    let add_one_ms = one[one.len() / 2];

    // list-ports includes the internal port.
    let ports = d.ctl_json(&["list-ports", &br]).as_array().unwrap().len();
    assert_eq!(ports, n + 1, "not every port attached");

    eprintln!("growth: {n} ports: checking reachability");
    let tx = |dump: &Value| -> std::collections::BTreeMap<String, u64> {
        dump.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let name = p["port"].as_str().unwrap().to_string();
                (name, p["tx_packets"].as_u64().unwrap())
            })
            .collect()
    };
    let before = tx(&d.ctl_json(&["dump-ports", &br]));
    // An address nobody has: each namespace broadcasts an ARP request for it.
    let script = nss[..n]
        .iter()
        .map(|ns| {
            format!(
                "ip netns exec {} ping -q -c 1 -W 0.1 10.236.254.1 >/dev/null",
                ns.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Fed on stdin: at thousands of namespaces the script is longer than one
    // argument may be. Its pings fail by design (nobody has the address).
    run_with_input("sh", &[], &script);
    std::thread::sleep(Duration::from_secs(1));
    let after = tx(&d.ctl_json(&["dump-ports", &br]));
    // Every port but the sender's sends each broadcast: at least n - 1 each.
    let broadcast_short = after
        .iter()
        .filter(|(port, &count)| count - before.get(*port).copied().unwrap_or(0) < (n - 1) as u64)
        .count();
    let fdb = d.ctl_json(&["fdb-show", &br]);
    let learned_ports = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["port"].as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 33) as usize % m
    };
    let pairs = 200;
    let mut pair_failures = 0;
    for _ in 0..pairs {
        let (a, b) = (next(n), next(n));
        let ok = a == b
            || nss[a]
                .exec(&["ping", "-n", "-q", "-c", "1", "-W", "2", &ip(b)])
                .status
                .success();
        pair_failures += usize::from(!ok);
    }

    eprintln!("growth: {n} ports: cleaning up");
    drop(d);
    drop(nss);
    json!({
        "ports": n,
        "ipv6": ipv6,
        "attach_all_s": attach_all,
        "attach_per_port_ms": attach_all * 1e3 / n as f64,
        "add_one_more_ms": add_one_ms,
        "add_one_more_in_switchd_ms": add_one_in_switchd_ms,
        "rss_empty_kib": rss_empty,
        "rss_kib": rss,
        "rss_per_port_kib": (rss.saturating_sub(rss_empty)) as f64 / n as f64,
        "idle_cpu_percent": idle_cpu,
        "tcp_gbps": tcp,
        "ports_missing_broadcasts": broadcast_short,
        "ports_in_mac_table": learned_ports,
        "random_pairs": pairs,
        "random_pair_failures": pair_failures,
    })
}

fn main() {
    if !switchd_testkit::bench_should_run("growth") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("GROWTH_SIZES")
        .unwrap_or_else(|_| "2,10,100,1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("GROWTH_SIZES: comma list of numbers")
        })
        .collect();
    let ipv6: Vec<bool> = std::env::var("GROWTH_IPV6")
        .unwrap_or_else(|_| "off,on".into())
        .split(',')
        .map(|s| match s.trim() {
            "on" => true,
            "off" => false,
            other => panic!("GROWTH_IPV6: a comma list of on and off, not {other:?}"),
        })
        .collect();
    let rows: Vec<Value> = ipv6
        .iter()
        .flat_map(|&v6| sizes.iter().map(move |&n| measure(n, v6)))
        .collect();

    println!();
    println!(
        "{:>6} {:>5} {:>10} {:>9} {:>11} {:>10} {:>9} {:>10} {:>9} {:>9} {:>12} {:>9} {:>10}",
        "ports",
        "IPv6",
        "attach s",
        "ms/port",
        "1 more ms",
        "in switchd",
        "RSS MiB",
        "KiB/port",
        "idle %",
        "TCP Gb/s",
        "bcast ok",
        "in FDB",
        "pairs ok"
    );
    for r in &rows {
        println!(
            "{:>6} {:>5} {:>10.2} {:>9.2} {:>11.1} {:>10.1} {:>9.1} {:>10.1} {:>9.2} {:>9.2} {:>12} {:>9} {:>10}",
            r["ports"].as_u64().unwrap(),
            on_off(r["ipv6"].as_bool().unwrap()),
            r["attach_all_s"].as_f64().unwrap(),
            r["attach_per_port_ms"].as_f64().unwrap(),
            r["add_one_more_ms"].as_f64().unwrap(),
            r["add_one_more_in_switchd_ms"].as_f64().unwrap(),
            r["rss_kib"].as_f64().unwrap() / 1024.0,
            r["rss_per_port_kib"].as_f64().unwrap(),
            r["idle_cpu_percent"].as_f64().unwrap(),
            r["tcp_gbps"].as_f64().unwrap(),
            format!(
                "{}/{}",
                r["ports"].as_u64().unwrap() + 1 - r["ports_missing_broadcasts"].as_u64().unwrap(),
                r["ports"].as_u64().unwrap() + 1
            ),
            r["ports_in_mac_table"],
            format!(
                "{}/{}",
                r["random_pairs"].as_u64().unwrap() - r["random_pair_failures"].as_u64().unwrap(),
                r["random_pairs"]
            ),
        );
    }
    let path = switchd_testkit::write_results(
        "GROWTH_JSON",
        "growth",
        json!({
            "rows": rows,
        }),
    );
    println!("\nresults: {}", path.display());
}
