//! `switchd --metrics`: scraped over HTTP, parsed by the Prometheus client
//! library's own OpenMetrics parser (Debian's python3-prometheus-client), and
//! held against `dump-ports` and `fdb-stats`.

use crate::util::{shared_machine, Daemon, Host};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

/// Parses what `url` serves with prometheus_client's OpenMetrics parser, and
/// returns every sample as {"name": ..., "labels": {...}, "value": ...}.
fn scrape(url: &str) -> Vec<Value> {
    let script = r#"
import json, sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
r = urllib.request.urlopen(sys.argv[1], timeout=10)
assert r.headers["Content-Type"].startswith("application/openmetrics-text"), r.headers["Content-Type"]
out = []
for family in text_string_to_metric_families(r.read().decode()):
    for s in family.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let out = Command::new(PYTHON)
        .args(["-c", script, url])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scrape failed (python3-prometheus-client installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap() as u64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn metrics_parse_and_equal_dump_ports() {
    let _machine = shared_machine();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&["--metrics", &addr]);
    let (a, b) = (Host::new("10.83.0.1/24"), Host::new("10.83.0.2/24"));
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-port", "br0", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);
    assert!(d.ctl(&["add-port", "br0", "nosuch0"]).status.code() == Some(1));
    // Traffic the userspace datapath (ARP, the first frames) and the kernel
    // fast path (the rest) carry.
    assert!(a.can_ping(&b.ip));
    a.ns.exec_ok(&["ping", "-c", "20", "-i", "0.01", "-q", &b.ip]);

    let before = d.ctl_json(&["dump-ports", "br0"]);
    let samples = scrape(&format!("http://{addr}/metrics"));
    let after = d.ctl_json(&["dump-ports", "br0"]);
    for (i, port) in before.as_array().unwrap().iter().enumerate() {
        let name = port["port"].as_str().unwrap();
        let counters = port.as_object().unwrap();
        for (field, value) in counters.iter().filter(|(k, _)| *k != "port") {
            let low = value.as_u64().unwrap();
            let high = after[i][field].as_u64().unwrap();
            let (metric, labels): (String, Vec<(&str, &str)>) = match field.as_str() {
                f if f.starts_with("rx_") || f.starts_with("tx_") => {
                    let reason = match f {
                        "rx_group_src" => Some(("rx_drop_reasons", "multicast-src")),
                        "rx_bad_vnet" => Some(("rx_drop_reasons", "bad-vnet-hdr")),
                        "rx_loop" => Some(("rx_drop_reasons", "loop")),
                        "rx_vlan_tagged" => Some(("rx_drop_reasons", "vlan-tagged")),
                        "rx_vlan_untrunked" => Some(("rx_drop_reasons", "vlan-not-trunked")),
                        "rx_reserved" => Some(("rx_drop_reasons", "reserved-dst")),
                        "rx_queue_full" => Some(("rx_drop_reasons", "queue-full")),
                        "rx_mirror_output" => Some(("rx_drop_reasons", "mirror-output")),
                        "rx_runts" => Some(("rx_error_reasons", "runt")),
                        "rx_truncated" => Some(("rx_error_reasons", "truncated")),
                        "tx_too_big" => Some(("tx_drop_reasons", "too-big")),
                        "tx_no_route" => Some(("tx_drop_reasons", "no-route")),
                        _ => None,
                    };
                    match reason {
                        Some((family, reason)) => (
                            format!("switchd_port_{family}_total"),
                            vec![("bridge", "br0"), ("port", name), ("reason", reason)],
                        ),
                        None => (
                            format!("switchd_port_{f}_total"),
                            vec![("bridge", "br0"), ("port", name)],
                        ),
                    }
                }
                other => panic!("dump-ports has a counter {other} the test does not know"),
            };
            let got = sample(&samples, &metric, &labels)
                .unwrap_or_else(|| panic!("no {metric} {labels:?} in the scrape"));
            assert!(
                (low..=high).contains(&got),
                "{metric} {labels:?} = {got}, dump-ports said {low} then {high}"
            );
        }
    }
    // Something really was counted, on both paths.
    let rx_a = sample(
        &samples,
        "switchd_port_rx_packets_total",
        &[("port", &a.port)],
    )
    .unwrap();
    assert!(rx_a >= 21, "{rx_a}");
    let fdb = d.ctl_json(&["fdb-stats", "br0"]);
    let learned = sample(&samples, "switchd_fdb_learned_total", &[("bridge", "br0")]).unwrap();
    assert!(learned >= 2 && learned <= fdb["learned"].as_u64().unwrap());
    assert_eq!(
        sample(&samples, "switchd_fdb_max_entries", &[("bridge", "br0")]),
        Some(8192)
    );
    assert_eq!(
        sample(
            &samples,
            "switchd_control_requests_total",
            &[("method", "add-port"), ("outcome", "error")]
        ),
        Some(1)
    );
    assert!(sample(&samples, "switchd_build_info", &[]).is_some());
    // Every answered add-port was timed, each in some bucket.
    let add_ports: u64 = ["ok", "error"]
        .iter()
        .filter_map(|outcome| {
            sample(
                &samples,
                "switchd_control_requests_total",
                &[("method", "add-port"), ("outcome", outcome)],
            )
        })
        .sum();
    let timed = [("method", "add-port")];
    assert_eq!(
        sample(&samples, "switchd_control_request_seconds_count", &timed),
        Some(add_ports)
    );
    let all = [("method", "add-port"), ("le", "+Inf")];
    assert_eq!(
        sample(&samples, "switchd_control_request_seconds_bucket", &all),
        Some(add_ports)
    );
    let took = samples
        .iter()
        .find(|s| {
            s["name"] == "switchd_control_request_seconds_sum"
                && s["labels"]["method"] == "add-port"
        })
        .map(|s| s["value"].as_f64().unwrap())
        .unwrap();
    assert!(took > 0.0 && took < 60.0, "{took}");
    // The thread forwarded the ARP and the first frames of the pings.
    let busy = samples
        .iter()
        .find(|s| {
            s["name"] == "switchd_datapath_busy_seconds_total" && s["labels"]["thread"] == "0"
        })
        .map(|s| s["value"].as_f64().unwrap())
        .expect("no busy time for datapath thread 0");
    assert!(busy > 0.0 && busy < 60.0, "{busy}");
    assert!(samples
        .iter()
        .any(|s| s["name"] == "switchd_datapath_poll_seconds_total"));

    // A mirror's copies, as list-mirrors counts them.
    let src = format!("select_src_port={}", a.port);
    d.ctl_ok(&["add-mirror", "br0", "m1", &src, "output_vlan=5"]);
    assert!(a.can_ping(&b.ip));
    let mirrors = d.ctl_json(&["list-mirrors", "br0"]);
    let sent = mirrors[0]["tx_packets"].as_u64().unwrap();
    assert!(sent >= 1, "{mirrors}");
    let samples = scrape(&format!("http://{addr}/metrics"));
    let labels = [("bridge", "br0"), ("mirror", "m1")];
    let scraped = sample(&samples, "switchd_mirror_tx_packets_total", &labels).unwrap();
    assert!(scraped >= sent, "{scraped} < {sent}");
    assert!(sample(&samples, "switchd_mirror_tx_bytes_total", &labels).unwrap() >= 60 * scraped);

    // Only /metrics, only reads.
    assert!(http(
        &addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .starts_with("HTTP/1.1 404"));
    assert!(http(
        &addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .starts_with("HTTP/1.1 405"));
    // A request that is not HTTP closes its connection and hurts nothing.
    let _ = http(&addr, "\x00\x01garbage\r\n\r\n");
    assert!(!scrape(&format!("http://{addr}/metrics")).is_empty());

    // An address that is taken: switchd refuses to start, and says why.
    let dir = std::env::temp_dir().join(crate::util::unique_name("mtr"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(crate::util::bin("switchd"))
        .args(["--socket", dir.join("s").to_str().unwrap()])
        .args(["--db", dir.join("db.json").to_str().unwrap()])
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}")),
        "{stderr}"
    );
}

/// A scraper that sends requests but reads none of the answers is let go once
/// it has taken nothing for 10 s, and scrapes go on.
#[test]
fn a_scraper_that_reads_nothing_is_let_go() {
    let _machine = shared_machine();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&["--metrics", &addr]);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let mut deaf = TcpStream::connect(&addr).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    // Requests until the answers fill the connection and switchd stops reading.
    let sent =
        crate::util::send_until_refused(&mut deaf, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let stalled = Instant::now();
    assert!(!scrape(&format!("http://{addr}/metrics")).is_empty());
    // Reading any answer before switchd gives up would let it go on. (Its
    // writes stalled before this one's; the margin is for a busy machine.)
    std::thread::sleep(Duration::from_secs(20).saturating_sub(stalled.elapsed()));
    deaf.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 1 << 16];
    let mut answers = 0;
    let mut tail = Vec::new();
    let end = loop {
        assert!(
            Instant::now() < deadline,
            "still connected, {answers} of {sent} answers read"
        );
        match deaf.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                answers += tail.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
                let keep = tail.len().saturating_sub(14);
                tail.drain(..keep);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(answers < sent, "{end} after all {sent} answers");
    assert!(!scrape(&format!("http://{addr}/metrics")).is_empty());
}
