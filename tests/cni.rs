//! The CNI plugin (`switchd-cni`, cni/) driven as a runtime drives it: CNI_*
//! variables and the configuration on stdin, real namespaces, Debian's
//! host-local IPAM (containernetworking-plugins) with a private dataDir, a
//! private switchd.

use crate::util::netns::link_absent;
use crate::util::{bin, shared_machine, unique_name, wait_until, Daemon, Netns};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// A directory removed on drop (host-local's dataDir, a missing socket's home).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("switchd-cni-{}", unique_name("t")));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the plugin printed and how it exited.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    /// stdout as JSON; Null when it printed nothing.
    out: Value,
    stderr: String,
}

impl Outcome {
    fn ok(self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.out,
            self.stderr
        );
        self.out
    }

    /// A CNI error result with `code`, exit status 1.
    fn error(self, code: u64) -> Value {
        assert_eq!(self.code, Some(1), "{self:?}");
        assert_eq!(self.out["code"], code, "{self:?}");
        for key in ["cniVersion", "msg", "details"] {
            assert!(self.out[key].is_string(), "no {key}: {self:?}");
        }
        self.out
    }
}

/// Runs the plugin with only `vars` in its environment and `stdin`.
fn plugin(vars: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut child = Command::new(bin("switchd-cni"))
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchd-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Outcome {
        code: out.status.code(),
        out: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// CNI_PATH as a runtime sets it: the system's plugins and ours.
fn cni_path() -> String {
    let ours = bin("switchd-cni");
    format!("/usr/lib/cni:{}", ours.parent().unwrap().display())
}

/// A network (a bridge of a private switchd, host-local's allocations in a
/// private directory) and the containers attached to it.
struct Network {
    daemon: Daemon,
    scratch: Scratch,
    bridge: String,
    /// The configuration's `name`: host-local keeps its files under it.
    name: String,
}

impl Network {
    fn new() -> Network {
        assert!(
            Path::new(HOST_LOCAL).exists(),
            "{HOST_LOCAL} is missing: apt-get install containernetworking-plugins"
        );
        Network {
            daemon: Daemon::start(),
            scratch: Scratch::new(),
            bridge: unique_name("cnb"),
            name: unique_name("net"),
        }
    }

    /// The configuration a runtime derives for this plugin from a conflist of
    /// `version`, with `extra` keys added (or replaced).
    fn config(&self, version: &str, extra: Value) -> Value {
        let mut config = json!({
            "cniVersion": version,
            "name": self.name,
            "type": "switchd-cni",
            "bridge": self.bridge,
            "socket": self.daemon.socket,
            "ipam": {
                "type": "host-local",
                "dataDir": self.scratch.0.join("ipam"),
                "ranges": [[{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
            "dns": {"nameservers": ["10.99.0.1"], "search": ["example.test"]},
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    }

    fn allocated(&self, ip: &str) -> bool {
        self.scratch
            .0
            .join("ipam")
            .join(&self.name)
            .join(ip)
            .exists()
    }

    /// Every port of every bridge, from `show`.
    fn ports(&self) -> Vec<Value> {
        let show = self.daemon.ctl_json(&["show"]);
        show["bridges"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["ports"].as_array().unwrap().clone())
            .filter(|p| p["type"] != "internal")
            .collect()
    }
}

/// A container: a namespace and the runtime's id for it.
struct Container {
    ns: Netns,
    id: String,
    netns: String,
}

impl Container {
    fn new() -> Container {
        let ns = Netns::new();
        let netns = format!("/run/netns/{}", ns.name);
        Container {
            id: format!("{}c0ffee", ns.name),
            ns,
            netns,
        }
    }

    /// With IPv6 on inside, as a container has it (testkit turns it off).
    fn with_ipv6() -> Container {
        let c = Container::new();
        for key in ["all", "default"] {
            c.ns.exec_ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=0"),
            ]);
        }
        c
    }

    /// Runs `command` for this container's eth0 with `config`.
    fn run(&self, command: &str, config: &Value) -> Outcome {
        self.run_with(command, config, &[])
    }

    fn run_with(&self, command: &str, config: &Value, extra: &[(&str, &str)]) -> Outcome {
        let path = cni_path();
        let mut vars = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", self.id.as_str()),
            ("CNI_NETNS", self.netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", path.as_str()),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=test"),
        ];
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k, v));
        }
        plugin(&vars, &config.to_string())
    }

    fn inside(&self, path: &str) -> String {
        self.ns
            .exec_ok(&["cat", &format!("/sys/class/net/eth0/{path}")])
            .trim()
            .to_string()
    }

    fn can_ping(&self, ip: &str) -> bool {
        wait_until(Duration::from_secs(5), || {
            self.ns
                .exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", ip])
                .status
                .success()
        })
    }
}

/// `config` with the ADD's result as `prevResult`, as CHECK and DEL get it.
fn with_prev(config: &Value, result: &Value) -> Value {
    let mut config = config.clone();
    config["prevResult"] = result.clone();
    config
}

/// The result of an ADD, field by field, in 1.0.0's shape.
#[test]
fn add_check_and_del_twice() {
    let _machine = shared_machine();
    let net = Network::new();
    let c = Container::new();
    let config = net.config("1.0.0", json!({}));

    let result = c.run("ADD", &config).ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2, "{result}");
    let host = interfaces[0]["name"].as_str().unwrap().to_string();
    assert!(host.starts_with("veth") && host.len() == 12, "{host}");
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{host}/address")).unwrap();
    assert_eq!(interfaces[0]["mac"], host_mac.trim());
    assert!(interfaces[0].get("sandbox").is_none(), "{result}");
    assert_eq!(
        interfaces[1],
        json!({"name": "eth0", "mac": c.inside("address"), "sandbox": c.netns})
    );
    assert_eq!(
        result["ips"],
        json!([{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 1}])
    );
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0"}]));
    assert_eq!(
        result["dns"],
        json!({"nameservers": ["10.99.0.1"], "search": ["example.test"]})
    );
    assert!(net.allocated("10.99.0.2"));

    // Inside: the address, the route through the gateway, the link up.
    let addrs =
        c.ns.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.99.0.2/24"), "{addrs}");
    let routes = c.ns.exec_ok(&["ip", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.99.0.1 dev eth0"),
        "{routes}"
    );
    assert_eq!(c.inside("operstate"), "up");

    // The port carries the attachment's ids.
    let ports = net.ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["name"], host.as_str());
    assert_eq!(
        ports[0]["external_ids"],
        json!({"container_id": c.id, "container_iface": "eth0"})
    );

    let prev = with_prev(&config, &result);
    assert_eq!(c.run("CHECK", &prev).ok(), Value::Null);

    for round in 0..2 {
        let del = c.run("DEL", &prev);
        assert_eq!(del.ok(), Value::Null, "DEL {round}");
        assert!(!net.allocated("10.99.0.2"), "DEL {round}: still allocated");
        assert!(net.ports().is_empty(), "DEL {round}");
        assert!(link_absent(&host), "DEL {round}: {host} is still there");
        let inside = c.ns.exec_ok(&["ls", "/sys/class/net"]);
        assert!(!inside.contains("eth0"), "DEL {round}: {inside}");
    }
    // After DEL, CHECK says what is missing.
    let e = c.run("CHECK", &prev).error(102);
    assert!(
        e["details"].as_str().unwrap().contains("has no port"),
        "{e}"
    );
}

/// Two dual-stack containers get their addresses from host-local and reach
/// each other over both families; the routes of both families are in place.
#[test]
fn two_containers_ping_each_other() {
    let _machine = shared_machine();
    let net = Network::new();
    let config = net.config(
        "1.0.0",
        json!({"ipam": {
            "type": "host-local",
            "dataDir": net.scratch.0.join("ipam"),
            "ranges": [
                [{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}],
                [{"subnet": "fd99::/64", "gateway": "fd99::1"}],
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "192.0.2.0/24", "gw": "10.99.0.254"}],
        }}),
    );
    let (a, b) = (Container::with_ipv6(), Container::with_ipv6());
    let ra = a.run("ADD", &config).ok();
    let rb = b.run("ADD", &config).ok();
    let ips = |r: &Value| -> Vec<String> {
        r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| ip["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ips(&ra), ["10.99.0.2/24", "fd99::2/64"]);
    assert_eq!(ips(&rb), ["10.99.0.3/24", "fd99::3/64"]);
    assert_eq!(rb["ips"][1]["gateway"], "fd99::1");
    assert_eq!(rb["ips"][1]["interface"], 1);

    assert!(a.can_ping("10.99.0.3"), "a -> b over IPv4");
    assert!(b.can_ping("10.99.0.2"), "b -> a over IPv4");
    assert!(a.can_ping("fd99::3"), "a -> b over IPv6");
    let v6 = a.ns.exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(v6.contains("via fd99::1 dev eth0"), "{v6}");
    let v4 = a.ns.exec_ok(&["ip", "-4", "route"]);
    assert!(v4.contains("192.0.2.0/24 via 10.99.0.254 dev eth0"), "{v4}");

    for (c, r) in [(&a, &ra), (&b, &rb)] {
        let prev = with_prev(&config, r);
        c.run("CHECK", &prev).ok();
        c.run("DEL", &prev).ok();
    }
    assert!(net.ports().is_empty());
    assert!(!net.allocated("10.99.0.2") && !net.allocated("fd99::3"));
}

/// DEL succeeds once the namespace is gone (the runtime deleted it first), and
/// with no CNI_NETNS at all; both release the address and remove the port.
#[test]
fn del_without_the_namespace() {
    let _machine = shared_machine();
    let net = Network::new();
    let config = net.config("1.0.0", json!({}));

    let gone = Container::new();
    let result = gone.run("ADD", &config).ok();
    let host = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let Container { ns, id, netns } = gone;
    drop(ns);
    assert!(
        wait_until(Duration::from_secs(5), || link_absent(&host)),
        "the veth outlived its namespace"
    );
    let vars = |netns: &str| {
        vec![
            ("CNI_COMMAND".to_string(), "DEL".to_string()),
            ("CNI_CONTAINERID".to_string(), id.clone()),
            ("CNI_NETNS".to_string(), netns.to_string()),
            ("CNI_IFNAME".to_string(), "eth0".to_string()),
            ("CNI_PATH".to_string(), cni_path()),
        ]
    };
    let del = |netns: &str, config: &Value| {
        let vars = vars(netns);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        plugin(&vars, &config.to_string())
    };
    del(&netns, &with_prev(&config, &result)).ok();
    assert!(net.ports().is_empty(), "{:?}", net.ports());
    assert!(!net.allocated("10.99.0.2"));
    del(&netns, &config).ok();

    // CNI_NETNS empty: the namespace is still there, the veth goes anyway.
    let kept = Container::new();
    let result = kept.run("ADD", &config).ok();
    let host = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    kept.run_with("DEL", &config, &[("CNI_NETNS", "")]).ok();
    assert!(net.ports().is_empty());
    assert!(link_absent(&host));
    assert!(!net.allocated("10.99.0.2"));
    kept.run_with("DEL", &config, &[("CNI_NETNS", "")]).ok();
}

/// Broken requests get the spec's codes and leave no port, veth or allocation;
/// so do ADDs that fail halfway (IPAM missing or failing, a route the kernel
/// refuses): what was made is undone.
#[test]
fn broken_requests_leave_nothing() {
    let _machine = shared_machine();
    let net = Network::new();
    let c = Container::new();
    let good = net.config("1.0.0", json!({}));
    let mut no_bridge = good.clone();
    no_bridge.as_object_mut().unwrap().remove("bridge");

    let path = cni_path();
    for (what, config, vars, code) in [
        ("no bridge", no_bridge.to_string(), vec![], 7),
        (
            "bad JSON",
            "{\"cniVersion\": \"1.0.0\",".to_string(),
            vec![],
            6,
        ),
        (
            "unknown cniVersion",
            net.config("7.0.0", json!({})).to_string(),
            vec![],
            1,
        ),
        (
            "bad vlan",
            net.config("1.0.0", json!({"vlan": 4095})).to_string(),
            vec![],
            7,
        ),
        ("no CNI_COMMAND", good.to_string(), vec!["CNI_COMMAND"], 4),
        (
            "no CNI_CONTAINERID",
            good.to_string(),
            vec!["CNI_CONTAINERID"],
            4,
        ),
        ("no CNI_NETNS", good.to_string(), vec!["CNI_NETNS"], 4),
        ("no CNI_IFNAME", good.to_string(), vec!["CNI_IFNAME"], 4),
    ] {
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", c.id.as_str()),
            ("CNI_NETNS", c.netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", path.as_str()),
        ];
        env.retain(|(k, _)| !vars.contains(k));
        let e = plugin(&env, &config).error(code);
        if let Some(var) = vars.first() {
            assert!(e["details"].as_str().unwrap().contains(var), "{what}: {e}");
        }
        if what == "unknown cniVersion" {
            assert_eq!(e["cniVersion"], "7.0.0", "the error echoes the version");
        }
    }
    let missing_ns = c.run_with("ADD", &good, &[("CNI_NETNS", "/run/netns/no-such-ns")]);
    missing_ns.error(4);

    // Failing halfway: switchd made the port, then something after it failed.
    for (what, config, code) in [
        (
            "IPAM plugin not in CNI_PATH",
            net.config("1.0.0", json!({"ipam": {"type": "no-such-ipam"}})),
            103,
        ),
        (
            "IPAM plugin refuses its configuration",
            net.config(
                "1.0.0",
                json!({"ipam": {"type": "host-local", "dataDir": net.scratch.0.join("ipam"),
                                "ranges": [[{"subnet": "10.99.0.0/33"}]]}}),
            ),
            999, // host-local's code for all of its errors, passed on
        ),
        (
            "a route the kernel refuses",
            net.config(
                "1.0.0",
                json!({"ipam": {"type": "host-local", "dataDir": net.scratch.0.join("ipam"),
                                "ranges": [[{"subnet": "10.99.0.0/24"}]],
                                "routes": [{"dst": "192.0.2.0/24", "gw": "203.0.113.1"}]}}),
            ),
            101,
        ),
    ] {
        let e = c.run("ADD", &config).error(code);
        assert!(net.ports().is_empty(), "{what}: {:?}", net.ports());
        let inside = c.ns.exec_ok(&["ls", "/sys/class/net"]);
        assert!(!inside.contains("eth0"), "{what}: {inside}");
        assert!(!net.allocated("10.99.0.2"), "{what}: {e}");
    }

    // An interface of that name in the container already: refused, and left alone.
    // (A veth pair inside: this kernel has no dummy module.)
    c.ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let e = c.run("ADD", &good).error(100);
    assert!(
        e["details"].as_str().unwrap().contains("already exists"),
        "{e}"
    );
    assert!(net.ports().is_empty());
    c.ns.exec_ok(&["ip", "link", "show", "eth0", "type", "veth"]);
    assert!(!net.allocated("10.99.0.2"));
}

/// No switchd on the socket: "try again later", and no address allocated.
#[test]
fn daemon_not_running_is_try_again_later() {
    let _machine = shared_machine();
    let net = Network::new();
    let c = Container::new();
    let config = net.config(
        "1.0.0",
        json!({"socket": net.scratch.0.join("no-switchd.sock")}),
    );
    let e = c.run("ADD", &config).error(11);
    assert!(
        e["details"].as_str().unwrap().contains("no-switchd.sock"),
        "{e}"
    );
    assert!(!net.allocated("10.99.0.2"));
    c.run("DEL", &config).error(11);
}

/// What podman sends for a 0.4.0 conflist: the result in 0.4.0's shape (with
/// `ips[].version`), CHECK and DEL with prevResult. 0.3.1 too, without CHECK.
#[test]
fn older_spec_versions() {
    let _machine = shared_machine();
    let net = Network::new();
    let c = Container::new();
    let config = net.config("0.4.0", json!({}));
    let result = c.run("ADD", &config).ok();
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(
        result["ips"],
        json!([{"version": "4", "address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 1}])
    );
    assert_eq!(result["interfaces"][1]["sandbox"], c.netns.as_str());
    let prev = with_prev(&config, &result);
    c.run("CHECK", &prev).ok();
    c.run("DEL", &prev).ok();
    assert!(net.ports().is_empty());

    let config = net.config("0.3.1", json!({}));
    let result = c.run("ADD", &config).ok();
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(result["ips"][0]["version"], "4");
    let e = c.run("CHECK", &with_prev(&config, &result)).error(1);
    assert_eq!(e["cniVersion"], "0.3.1");
    c.run("DEL", &config).ok();
    assert!(net.ports().is_empty());

    let version = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#).ok();
    assert_eq!(
        version,
        json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    );
}

/// `vlan` makes an access port, `trunks` a trunk, both a native VLAN; `mac`
/// (or CNI_ARGS MAC=) and `mtu` reach the container's end.
#[test]
fn port_settings_from_the_configuration() {
    let _machine = shared_machine();
    let net = Network::new();
    let no_ipam = |extra: Value| {
        let mut config = net.config("1.0.0", extra);
        config.as_object_mut().unwrap().remove("ipam");
        config
    };
    let port_of = |result: &Value| {
        let name = result["interfaces"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        net.ports()
            .into_iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no port {name}"))
    };

    let access = Container::new();
    let config = no_ipam(json!({"vlan": 42, "mtu": 1400, "mac": "02:00:5e:00:00:42"}));
    let result = access.run("ADD", &config).ok();
    let port = port_of(&result);
    assert_eq!(port["tag"], 42, "{port}");
    assert!(port.get("trunks").is_none(), "{port}");
    assert_eq!(access.inside("mtu"), "1400");
    assert_eq!(access.inside("address"), "02:00:5e:00:00:42");
    assert_eq!(result["interfaces"][1]["mac"], "02:00:5e:00:00:42");
    assert!(
        result.get("ips").is_none(),
        "no IPAM, no addresses: {result}"
    );

    let trunk = Container::new();
    let result = trunk
        .run_with(
            "ADD",
            &no_ipam(json!({"trunks": [20, 10]})),
            &[("CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:5e:00:00:10")],
        )
        .ok();
    let port = port_of(&result);
    assert_eq!(port["trunks"], json!([10, 20]), "{port}");
    assert!(port.get("tag").is_none(), "{port}");
    assert_eq!(trunk.inside("address"), "02:00:5e:00:00:10");

    let native = Container::new();
    let result = native
        .run("ADD", &no_ipam(json!({"vlan": 5, "trunks": [6]})))
        .ok();
    let port = port_of(&result);
    assert_eq!(
        (&port["tag"], &port["trunks"], &port["vlan_mode"]),
        (&json!(5), &json!([6]), &json!("native-untagged")),
        "{port}"
    );

    for c in [&access, &trunk, &native] {
        c.run("DEL", &no_ipam(json!({}))).ok();
    }
    assert!(net.ports().is_empty());
}

/// A runtime starting several containers at once on a bridge that does not
/// exist yet: each ADD creates it if missing, in its own transaction.
#[test]
fn concurrent_adds_on_a_new_bridge() {
    let _machine = shared_machine();
    let net = Network::new();
    let config = net.config("1.0.0", json!({}));
    let containers: Vec<Container> = (0..4).map(|_| Container::new()).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|c| s.spawn(|| c.run("ADD", &config).ok()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses: Vec<&str> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    assert_eq!(
        addresses,
        [
            "10.99.0.2/24",
            "10.99.0.3/24",
            "10.99.0.4/24",
            "10.99.0.5/24"
        ]
    );
    assert_eq!(net.ports().len(), 4);
    assert!(containers[0].can_ping(
        results[3]["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
    ));
    for (c, r) in containers.iter().zip(&results) {
        c.run("DEL", &with_prev(&config, r)).ok();
    }
    assert!(net.ports().is_empty());
}

/// Runs podman (Debian's 4.3, CNI backend) on private storage and a private
/// network directory, bounded in time.
struct Podman {
    scratch: Scratch,
}

impl Podman {
    /// A containers.conf that finds the plugin where cargo built it.
    fn new(network: &Value) -> Podman {
        let scratch = Scratch::new();
        let dir = &scratch.0;
        let plugin_dir = bin("switchd-cni").parent().unwrap().to_path_buf();
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::write(
            dir.join("net.d").join("switchd.conflist"),
            serde_json::to_string_pretty(network).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [{:?}, \"/usr/lib/cni\"]\n\
                 network_config_dir = {:?}\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n",
                plugin_dir,
                dir.join("net.d")
            ),
        )
        .unwrap();
        // An image-less container: busybox-static and its applets.
        let rootfs = dir.join("rootfs");
        for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "ip", "ping", "sleep", "true", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        Podman { scratch }
    }

    fn rootfs(&self) -> String {
        self.scratch.0.join("rootfs").display().to_string()
    }

    /// `podman GLOBAL_FLAGS args...` within 120 s.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let dir = &self.scratch.0;
        let (root, runroot) = (dir.join("storage"), dir.join("run"));
        Command::new("timeout")
            .args(["120", "podman", "--root"])
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            // runc: crun refuses this machine's hybrid cgroup hierarchy.
            .args(["--runtime", "runc", "--events-backend", "file"])
            .args(args)
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .output()
            .expect("run podman")
    }

    /// `run` with what every container here needs: explicit limits, as root
    /// here lacks CAP_SYS_RESOURCE to raise them to podman's defaults.
    fn container(&self, args: &[&str], command: &[&str]) -> std::process::Output {
        let rootfs = self.rootfs();
        let mut all = vec![
            "run",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--rootfs", &rootfs]);
        all.extend_from_slice(command);
        self.run(&all)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}

/// Debian's podman 4.3 with a conflist naming switchd-cni: a container gets an
/// address, another pings it, and removing them leaves no port or address.
#[test]
fn podman_containers_on_a_switchd_network() {
    let _machine = shared_machine();
    for (tool, package) in [
        ("/usr/bin/podman", "podman"),
        ("/usr/sbin/runc", "runc"),
        ("/bin/busybox", "busybox-static"),
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install {package}"
        );
    }
    let net = Network::new();
    let mut plugin_config = net.config("1.0.0", json!({}));
    let plugin_config = plugin_config.as_object_mut().unwrap();
    plugin_config.remove("cniVersion");
    plugin_config.remove("name");
    let conflist = json!({"cniVersion": "1.0.0", "name": net.name, "plugins": [plugin_config]});
    let podman = Podman::new(&conflist);

    let probe = podman.container(&["--rm", "--network", "none"], &["/bin/true"]);
    assert!(
        probe.status.success(),
        "podman cannot run a container here (docs/CNI.md says what it needs): {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let web = unique_name("web");
    let out = podman.container(
        &["-d", "--name", &web, "--network", &net.name],
        &["/bin/sleep", "600"],
    );
    let id = crate::util::stdout_of_success(out, || "podman run -d".into());
    let id = id.trim();
    let ports = net.ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["external_ids"]["container_id"], id);
    let ip = crate::util::stdout_of_success(
        podman.run(&[
            "inspect",
            &web,
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks {:?}).IPAddress}}}}",
                net.name
            ),
        ]),
        || "podman inspect".into(),
    );
    assert_eq!(ip.trim(), "10.99.0.2");
    assert!(net.allocated("10.99.0.2"));

    let ping = podman.container(
        &["--rm", "--network", &net.name],
        &["/bin/ping", "-c", "1", "-W", "2", "10.99.0.2"],
    );
    let ping = crate::util::stdout_of_success(ping, || "ping from a second container".into());
    assert!(ping.contains("1 packets received"), "{ping}");
    // The pinging container is gone with --rm: its port and address too.
    assert_eq!(net.ports().len(), 1);
    assert!(!net.allocated("10.99.0.3"));

    crate::util::stdout_of_success(podman.run(&["rm", "--force", "--time", "0", &web]), || {
        "podman rm".into()
    });
    assert!(net.ports().is_empty(), "{:?}", net.ports());
    assert!(!net.allocated("10.99.0.2"));
}
