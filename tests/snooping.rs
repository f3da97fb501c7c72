//! Multicast snooping with real group members: socat joins a group inside a
//! namespace and the namespace's own kernel sends the IGMP or MLD reports (and
//! the leave when socat ends); a querier is a raw socket sending general
//! queries, which those kernels answer. Group traffic is raw frames with a
//! marker, read back by a raw socket in every namespace.

use crate::forwarding::daemon;
use crate::util::{checksum, shared_machine, wait_until, ChildGuard, Daemon, Host, NsSocket};
use serde_json::Value;
use std::time::Duration;

const GROUP4: [u8; 4] = [239, 7, 7, 7];
const GROUP6: &str = "ff15::7777";

/// An IPv4 frame from `src` (MAC, address) to `dst` with the router alert
/// option, as IGMP sends it.
fn ipv4_frame(src: ([u8; 6], [u8; 4]), dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (24 + body.len()) as u16;
    let mut ip = vec![0x46, 0xc0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 1, proto, 0, 0]);
    ip.extend_from_slice(&src.1);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&[0x94, 0x04, 0, 0]);
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(body);
    f
}

/// An IGMPv3 general query (answers within a second), as a querier sends it.
fn igmp_query(src: ([u8; 6], [u8; 4])) -> Vec<u8> {
    let mut q = vec![0x11, 10, 0, 0, 0, 0, 0, 0, 0x02, 125, 0, 0];
    let sum = checksum(&[&q]);
    q[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(src, [224, 0, 0, 1], 2, &q)
}

/// An MLDv2 general query to ff02::1 from the link-local `src`, behind a
/// hop-by-hop header with the router alert.
fn mld_query(mac: [u8; 6], src: std::net::Ipv6Addr) -> Vec<u8> {
    let dst: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let mut mld = vec![130, 0, 0, 0, 0x03, 0xe8, 0, 0];
    mld.extend_from_slice(&[0; 16]);
    mld.extend_from_slice(&[0x02, 125, 0, 0]);
    let len = (mld.len() as u32).to_be_bytes();
    let sum = checksum(&[&src.octets(), &dst.octets(), &len, &[0, 0, 0, 58], &mld]);
    mld[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + mld.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
    f.extend_from_slice(&mld);
    f
}

/// UDP to the IPv4 group, `marker` in the payload.
fn data4(src: ([u8; 6], [u8; 4]), marker: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0];
    udp.extend_from_slice(marker);
    let len = udp.len() as u16;
    udp[4..6].copy_from_slice(&len.to_be_bytes());
    ipv4_frame(src, GROUP4, 17, &udp)
}

/// UDP to the IPv6 group, `marker` in the payload.
fn data6(mac: [u8; 6], src: std::net::Ipv6Addr, marker: &[u8]) -> Vec<u8> {
    let dst: std::net::Ipv6Addr = GROUP6.parse().unwrap();
    let o = dst.octets();
    let mut f = vec![0x33, 0x33, o[12], o[13], o[14], o[15]];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + marker.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[17, 1]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0]);
    f.extend_from_slice(marker);
    f
}

/// A namespace on the bridge with a raw socket on its eth0.
struct Member {
    host: Host,
    sock: NsSocket,
    mac: [u8; 6],
    ip4: [u8; 4],
}

fn member(d: &Daemon, i: u8, ipv6: bool) -> Member {
    let host = Host::new(&format!("10.47.0.{i}/24"));
    // Attached first, so that the switch hears the reports the kernel sends as
    // soon as IPv6 comes up.
    d.ctl_ok(&["add-port", "br0", &host.port]);
    if ipv6 {
        for conf in ["all", "default", "eth0"] {
            host.ns.exec_ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{conf}.disable_ipv6=0"),
            ]);
        }
    }
    let sock = host.ns.packet_socket("eth0");
    let mac = host.mac_bytes();
    Member {
        host,
        sock,
        mac,
        ip4: [10, 47, 0, i],
    }
}

impl Member {
    fn src4(&self) -> ([u8; 6], [u8; 4]) {
        (self.mac, self.ip4)
    }

    /// The link-local address, once it is no longer tentative.
    fn link_local(&self) -> std::net::Ipv6Addr {
        let mut addr = None;
        assert!(
            wait_until(Duration::from_secs(10), || {
                let out = self.host.ns.exec_ok(&[
                    "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
                ]);
                addr = out
                    .split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)
                    .filter(|_| !out.contains("tentative"))
                    .map(|a| a.split('/').next().unwrap().parse().unwrap());
                addr.is_some()
            }),
            "no link-local address in {}",
            self.host.ns.name
        );
        addr.unwrap()
    }

    /// How many frames with `marker` arrive within `wait`.
    fn count(&mut self, marker: &[u8], wait: Duration) -> usize {
        self.sock
            .recv_until(wait, |_| false)
            .iter()
            .filter(|f| f.windows(marker.len()).any(|w| w == marker))
            .count()
    }

    fn drain(&mut self) {
        self.sock.recv_until(Duration::from_millis(50), |_| false);
    }

    /// socat listening on the group, which makes the kernel join it.
    fn join4(&self) -> ChildGuard {
        let g = GROUP4.map(|b| b.to_string()).join(".");
        self.host.ns.spawn(&[
            "socat",
            "-u",
            &format!("UDP4-RECV:5000,reuseaddr,ip-add-membership={g}:eth0"),
            "/dev/null",
        ])
    }

    fn join6(&self) -> ChildGuard {
        self.host.ns.spawn(&[
            "socat",
            "-u",
            &format!("UDP6-RECV:5000,reuseaddr,ipv6-join-group=[{GROUP6}]:eth0"),
            "/dev/null",
        ])
    }
}

/// `mdb-show --format json` rows as (port, group) pairs; "querier" for a router port.
fn mdb(d: &Daemon) -> Vec<(String, String)> {
    let rows = d.ctl_json(&["mdb-show", "br0"]);
    let mut rows: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let group = match &r["group"] {
                Value::String(g) => g.clone(),
                _ => "querier".to_string(),
            };
            (r["port"].as_str().unwrap().to_string(), group)
        })
        .collect();
    rows.sort();
    rows
}

fn has(d: &Daemon, port: &str, group: &str) -> bool {
    mdb(d).iter().any(|(p, g)| p == port && g == group)
}

/// Sends `n` marked frames from `from`, then counts them at every other member.
fn deliveries(
    members: &mut [Member],
    from: usize,
    marker: &[u8],
    frame: impl Fn(&Member) -> Vec<u8>,
) -> Vec<usize> {
    for m in members.iter_mut() {
        m.drain();
    }
    let f = frame(&members[from]);
    for _ in 0..10 {
        members[from].sock.send(&f);
    }
    members
        .iter_mut()
        .enumerate()
        .map(|(i, m)| {
            if i == from {
                0
            } else {
                m.count(marker, Duration::from_millis(400))
            }
        })
        .collect()
}

/// IGMP: with no querier everything floods; once a querier asks, the group's
/// traffic reaches its members and the querier only, and a member whose socat
/// ends (its kernel sends the leave) stops getting it at once.
#[test]
fn igmp_members_get_the_group_and_others_do_not() {
    let _machine = shared_machine();
    let d = daemon(&[]);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    // 0 sender, 1 querier, 2 and 3 members, 4 not a member.
    let mut ms: Vec<Member> = (1..=5).map(|i| member(&d, i, false)).collect();
    let _join2 = ms[2].join4();
    let mut join3 = Some(ms[3].join4());
    let (p2, p3) = (ms[2].host.port.clone(), ms[3].host.port.clone());
    assert!(
        wait_until(Duration::from_secs(5), || has(&d, &p2, "239.7.7.7")
            && has(&d, &p3, "239.7.7.7")),
        "the joins' reports were not learned: {:?}",
        mdb(&d)
    );
    let data = |m: &Member| data4(m.src4(), b"snoop-v4-a");
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-v4-a", data),
        vec![0, 10, 10, 10, 10],
        "without a querier the group floods"
    );

    let query = igmp_query(ms[1].src4());
    ms[1].sock.send(&query);
    let p1 = ms[1].host.port.clone();
    assert!(
        wait_until(Duration::from_secs(3), || has(&d, &p1, "querier")),
        "{:?}",
        mdb(&d)
    );
    // The query allows a second for the answers before traffic is constrained.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-v4-b", |m| data4(
            m.src4(),
            b"snoop-v4-b"
        )),
        vec![0, 10, 10, 10, 0],
        "members and the querier only"
    );
    let text = d.ctl_ok(&["mdb-show", "br0"]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with("port  VLAN  GROUP                Age"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&p1) && l.contains("querier")),
        "{text}"
    );
    let stats = d.ctl_json(&["mdb-stats", "br0"]);
    assert_eq!(stats["current"], 1, "{stats}");
    assert!(stats["queries"].as_u64().unwrap() >= 1, "{stats}");

    // Member 3 leaves: socat ends, its kernel reports TO_IN {}.
    drop(join3.take());
    assert!(
        wait_until(Duration::from_secs(5), || !has(&d, &p3, "239.7.7.7")),
        "the leave was not seen: {:?}",
        mdb(&d)
    );
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-v4-c", |m| data4(
            m.src4(),
            b"snoop-v4-c"
        )),
        vec![0, 10, 10, 0, 0]
    );
    assert!(
        d.ctl_json(&["mdb-stats", "br0"])["leaves"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // mdb-flush forgets it all: the group floods again until the next query.
    d.ctl_ok(&["mdb-flush", "br0"]);
    assert!(mdb(&d).is_empty());
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-v4-d", |m| data4(
            m.src4(),
            b"snoop-v4-d"
        )),
        vec![0, 10, 10, 10, 10]
    );
}

/// MLD through the hop-by-hop header, with IPv6 on in every namespace (their
/// own chatter included): the same as IGMP, and a membership that is not
/// reported again ages out, after which the group floods again.
#[test]
fn mld_members_get_the_group_and_memberships_age_out() {
    let _machine = shared_machine();
    let d = daemon(&[]);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["set-br", "br0", "mcast-snooping-aging-time=15"]);
    let mut ms: Vec<Member> = (11..=14).map(|i| member(&d, i, true)).collect();
    // 0 sender, 1 querier, 2 member, 3 not a member.
    let lls: Vec<_> = ms.iter().map(Member::link_local).collect();
    let _join = ms[2].join6();
    let (p1, p2) = (ms[1].host.port.clone(), ms[2].host.port.clone());
    let query = mld_query(ms[1].mac, lls[1]);
    ms[1].sock.send(&query);
    assert!(
        wait_until(Duration::from_secs(5), || has(&d, &p2, GROUP6)
            && has(&d, &p1, "querier")),
        "{:?}",
        mdb(&d)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let send = |m: &Member| data6(m.mac, "fe80::1".parse().unwrap(), b"snoop-v6-a");
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-v6-a", send),
        vec![0, 10, 10, 0]
    );
    // The namespaces' solicited-node groups were reported too (the querier's
    // own kernel never hears its raw query, so it may not have answered).
    let solicited = mdb(&d)
        .iter()
        .filter(|(_, g)| g.starts_with("ff02::1:ff"))
        .count();
    assert!(solicited >= 3, "{:?}", mdb(&d));

    // No more queries: after 15 s nothing is left, and the group floods again.
    assert!(
        wait_until(Duration::from_secs(25), || mdb(&d).is_empty()),
        "{:?}",
        mdb(&d)
    );
    assert!(d.ctl_json(&["mdb-stats", "br0"])["aged"].as_u64().unwrap() >= 2);
    let send = |m: &Member| data6(m.mac, "fe80::1".parse().unwrap(), b"snoop-v6-b");
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-v6-b", send),
        vec![0, 10, 10, 10]
    );
}

/// Snooping off (as `set bridge ... mcast_snooping_enable=false` writes it):
/// nothing is learned and group traffic floods even with a querier; the
/// setting is shown, kept over a restart, and bad settings are refused with
/// nothing changed.
#[test]
fn snooping_off_floods_and_settings_are_checked_and_kept() {
    let _machine = shared_machine();
    let mut d = daemon(&[]);
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    let mut ms: Vec<Member> = (21..=24).map(|i| member(&d, i, false)).collect();
    d.ctl_ok(&[
        "set",
        "bridge",
        "br0",
        "mcast_snooping_enable=false",
        "other_config:mcast-snooping-table-size=100",
    ]);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains("    mcast-snooping-enable: false\n"),
        "{show}"
    );
    assert!(
        show.contains("    mcast-snooping-table-size: 100\n"),
        "{show}"
    );
    let _join = ms[2].join4();
    let query = igmp_query(ms[1].src4());
    ms[1].sock.send(&query);
    std::thread::sleep(Duration::from_secs(2));
    assert!(mdb(&d).is_empty(), "{:?}", mdb(&d));
    assert_eq!(
        deliveries(&mut ms, 0, b"snoop-off", |m| data4(m.src4(), b"snoop-off")),
        vec![0, 10, 10, 10]
    );
    assert_eq!(d.ctl_json(&["mdb-stats", "br0"])["enabled"], false);

    for (bad, says) in [
        ("mcast-snooping-aging-time=14", "15 to"),
        ("mcast-snooping-table-size=0", "1 to"),
        ("mcast-snooping-enable=maybe", "neither true nor false"),
        ("mcast-snooping-aging-time=soon", "not a whole number"),
        ("mcast-snooping-querier=true", "unknown bridge setting"),
    ] {
        let out = d.ctl(&["set-br", "br0", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{bad}: {err}");
    }
    let out = d.ctl(&["mdb-show", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    assert_eq!(
        d.ctl_ok(&["show"]),
        show,
        "a refused setting changed something"
    );

    d.stop();
    d.restart();
    assert_eq!(d.ctl_json(&["mdb-stats", "br0"])["enabled"], false);
    assert_eq!(d.ctl_json(&["mdb-stats", "br0"])["max"], 100);
    d.ctl_ok(&["set-br", "br0", "mcast-snooping-enable=true"]);
    assert_eq!(d.ctl_json(&["mdb-stats", "br0"])["enabled"], true);
}
