//! The ovs-vsctl stand-in, driven with the command lines that LXC, ovs-docker
//! and containerlab run, byte for byte, read from their sources:
//! - LXC, src/lxc/network.c: `lxc_ovs_attach_bridge`, `lxc_ovs_delete_port`,
//!   `lxc_ovs_setup_bridge_vlan_exec` (trunks end with a comma);
//! - Open vSwitch's utilities/ovs-docker: every call is `ovs-vsctl --timeout=60`;
//! - containerlab nodes/ovs via go-openvswitch's `vswitch.go`.
//!
//! Each runs the switchctl binary through a link named `ovs-vsctl`, as a user
//! who asked for it installs it.

use crate::util::netns::link_absent;
use crate::util::{bin, shared_machine, unique_name, Daemon, Host};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A private directory holding `ovs-vsctl` -> switchctl, removed on drop.
struct Vsctl {
    dir: PathBuf,
    socket: PathBuf,
}

impl Vsctl {
    fn new(d: &Daemon) -> Vsctl {
        let dir = std::env::temp_dir().join(unique_name("vsctl"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(bin("switchctl"), dir.join("ovs-vsctl")).unwrap();
        Vsctl {
            dir,
            socket: d.socket.clone(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.dir.join("ovs-vsctl"))
            .args(args)
            .env("SWITCHD_SOCKET", &self.socket)
            .output()
            .expect("run ovs-vsctl")
    }

    /// Runs it, expects success and nothing on stderr; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ovs-vsctl {args:?}: {stderr}");
        assert!(
            stderr.is_empty(),
            "ovs-vsctl {args:?} wrote to stderr: {stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], code: i32, message: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "ovs-vsctl {args:?}: {stderr}"
        );
        assert!(
            stderr.starts_with("ovs-vsctl: ") && stderr.contains(message),
            "ovs-vsctl {args:?}: {stderr:?} does not say {message:?}"
        );
    }
}

impl Drop for Vsctl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn port<'a>(show: &'a Value, name: &str) -> &'a Value {
    show["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["ports"].as_array().unwrap())
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name} in {show}"))
}

#[test]
fn lxc_attaches_sets_vlans_and_detaches_a_vanished_veth() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let ovs = Vsctl::new(&d);
    let br = unique_name("lxb");
    d.ctl_ok(&["add-br", &br]);
    let (a, b) = (Host::new("10.77.0.1/24"), Host::new("10.77.0.2/24"));

    // lxc_ovs_attach_bridge, then lxc_ovs_setup_bridge_vlan_exec with
    // vlan.id, vlan.tagged.id, and both.
    ovs.ok(&["add-port", &br, &a.port]);
    ovs.ok(&["add-port", &br, &b.port]);
    ovs.ok(&["set", "port", &a.port, "vlan_mode=access", "tag=10"]);
    ovs.ok(&["set", "port", &b.port, "vlan_mode=trunk", "trunks=10,20,"]);
    let show = d.ctl_json(&["show"]);
    assert_eq!(port(&show, &a.port)["tag"], 10);
    assert_eq!(port(&show, &b.port)["trunks"], serde_json::json!([10, 20]));
    assert_eq!(port(&show, &b.port)["vlan_mode"], "trunk");
    ovs.ok(&[
        "set",
        "port",
        &b.port,
        "vlan_mode=native-untagged",
        "tag=10",
        "trunks=20,30,",
    ]);
    // Both now carry VLAN 10 untagged: the containers reach each other.
    assert!(a.can_ping(&b.ip), "no ping across the ports LXC set up");
    assert_eq!(ovs.ok(&["get", "port", &b.port, "tag"]), "10\n");
    assert_eq!(ovs.ok(&["get", "port", &b.port, "trunks"]), "[20, 30]\n");
    assert_eq!(
        ovs.ok(&["get", "port", &b.port, "vlan_mode"]),
        "native-untagged\n"
    );

    // lxc_ovs_delete_port runs when the container stops, after its veth is gone.
    let gone = a.port.clone();
    drop(a);
    assert!(link_absent(&gone));
    ovs.ok(&["del-port", &br, &gone]);
    assert_eq!(ovs.ok(&["list-ports", &br]), format!("{}\n", b.port));
    ovs.fails(&["del-port", &br, &gone], 1, "does not have a port");
}

#[test]
fn ovs_docker_adds_finds_tags_and_deletes_by_container() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let ovs = Vsctl::new(&d);
    let br = unique_name("odb");
    let h = Host::new("10.78.0.1/24");
    let container = "5f4d0c1a2b3c";

    // ovs-docker add-port BRIDGE eth1 CONTAINER: the bridge is made if absent.
    let absent = ovs.run(&["--timeout=60", "br-exists", &br]);
    assert_eq!(absent.status.code(), Some(2));
    assert!(absent.stderr.is_empty() && absent.stdout.is_empty());
    ovs.ok(&["--timeout=60", "add-br", &br]);
    assert!(ovs
        .run(&["--timeout=60", "br-exists", &br])
        .status
        .success());
    let find = [
        "--timeout=60",
        "--data=bare",
        "--no-heading",
        "--columns=name",
        "find",
        "interface",
        &format!("external_ids:container_id={container}"),
        "external_ids:container_iface=eth1",
    ];
    assert_eq!(ovs.ok(&find), "", "nothing attached yet");
    ovs.ok(&[
        "--timeout=60",
        "--may-exist",
        "add-port",
        &br,
        &h.port,
        "--",
        "set",
        "interface",
        &h.port,
        &format!("external_ids:container_id={container}"),
        "external_ids:container_iface=eth1",
    ]);
    assert_eq!(ovs.ok(&find), format!("{}\n", h.port));
    // Another interface of the same container is not this one.
    let other = find.map(|a| a.replace("container_iface=eth1", "container_iface=eth2"));
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    assert_eq!(ovs.ok(&other), "");
    // show says whose port it is.
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains(&format!(
            "external_ids: {{container_id=\"{container}\", container_iface=\"eth1\"}}"
        )),
        "{show}"
    );
    assert_eq!(
        ovs.ok(&["get", "interface", &h.port, "external_ids:container_id"]),
        format!("\"{container}\"\n")
    );
    ovs.fails(
        &["get", "interface", &h.port, "external_ids:nope"],
        1,
        "no key \"nope\" in Interface record",
    );
    // ovs-docker set-vlan.
    ovs.ok(&["--timeout=60", "set", "port", &h.port, "tag=5"]);
    assert_eq!(port(&d.ctl_json(&["show"]), &h.port)["tag"], 5);
    // A second add-port of the same port changes nothing and fails nothing.
    ovs.ok(&["--timeout=60", "--may-exist", "add-port", &br, &h.port]);
    // The ids survive a restart.
    let mut d = d;
    d.stop();
    d.restart();
    assert_eq!(ovs.ok(&find), format!("{}\n", h.port));
    // ovs-docker del-port: the one-argument form, twice.
    ovs.ok(&["--timeout=60", "--if-exists", "del-port", &h.port]);
    ovs.ok(&["--timeout=60", "--if-exists", "del-port", &h.port]);
    assert_eq!(ovs.ok(&find), "");
}

#[test]
fn containerlab_lists_adds_and_deletes() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let ovs = Vsctl::new(&d);
    let br = unique_name("clb");
    let h = Host::new("10.79.0.1/24");
    ovs.ok(&["add-br", &br]);
    // go-openvswitch's ListBridges splits stdout on newlines; it merges
    // stderr in, so nothing may be written there.
    assert_eq!(ovs.ok(&["list-br"]), format!("{br}\n"));
    ovs.ok(&["--may-exist", "add-port", &br, &h.port]);
    ovs.ok(&["--may-exist", "add-port", &br, &h.port]);
    assert_eq!(ovs.ok(&["list-ports", &br]), format!("{}\n", h.port));
    assert_eq!(ovs.ok(&["iface-to-br", &h.port]), format!("{br}\n"));
    assert_eq!(ovs.ok(&["port-to-br", &h.port]), format!("{br}\n"));
    // Older containerlab reads the bridge's OpenFlow versions as JSON.
    let protocols = ovs.ok(&["--format=json", "get", "bridge", &br, "protocols"]);
    assert_eq!(
        serde_json::from_str::<Value>(&protocols).unwrap(),
        serde_json::json!([])
    );
    ovs.ok(&["--if-exists", "del-port", &br, &h.port]);
    ovs.ok(&["--if-exists", "del-port", &br, &h.port]);
    assert_eq!(ovs.ok(&["list-ports", &br]), "");
    ovs.ok(&["del-br", &br]);
    assert_eq!(ovs.ok(&["list-br"]), "");
}

#[test]
fn what_switchd_does_not_do_fails_loudly_and_changes_nothing() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let ovs = Vsctl::new(&d);
    let br = unique_name("nsb");
    ovs.ok(&["add-br", &br]);
    let before = d.ctl_json(&["show"]);
    for (args, message) in [
        (
            vec!["add-bond", &br, "bond0", "a", "b"],
            "add-bond: not supported by switchd",
        ),
        (
            vec!["set-controller", &br, "tcp:127.0.0.1:6653"],
            "set-controller: not supported by switchd",
        ),
        (
            vec!["--db=unix:/tmp/x", "list-br"],
            "option --db: not supported by switchd",
        ),
        (
            vec!["list", "Open_vSwitch"],
            "list: not supported by switchd",
        ),
        (
            vec!["set", "Open_vSwitch", ".", "other_config:x=y"],
            "not supported by switchd",
        ),
        (
            vec!["find", "interface", "ofport>1"],
            "not supported by switchd",
        ),
        (
            vec!["get", "bridge", &br, "fail_mode"],
            "not supported by switchd",
        ),
        (vec!["add-br"], "requires arguments"),
        (vec![], "missing command name"),
    ] {
        ovs.fails(&args, 1, message);
    }
    // A chain fails whole: the bridge of its first command is not left made.
    let nb = unique_name("nsc");
    ovs.fails(
        &["add-br", &nb, "--", "add-port", &nb, "no-such-if0"],
        1,
        "no-such-if0",
    );
    assert_eq!(ovs.run(&["br-exists", &nb]).status.code(), Some(2));
    assert_eq!(d.ctl_json(&["show"]), before);
    // switchctl itself has find and get too.
    assert_eq!(d.ctl_ok(&["get", "bridge", &br, "protocols"]), "[]\n");
    assert_eq!(d.ctl_ok(&["find", "interface", "external_ids:x=y"]), "");
}

#[test]
fn get_and_external_ids_follow_ovs_vsctl_at_the_edges() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let ovs = Vsctl::new(&d);
    let br = unique_name("edb");
    let h = Host::new("10.80.0.1/24");
    ovs.ok(&["add-br", &br, "--", "add-port", &br, &h.port]);
    // A set column is bracketed even with one member; a scalar is not.
    ovs.ok(&["set", "port", &h.port, "vlan_mode=trunk", "trunks=10"]);
    assert_eq!(ovs.ok(&["get", "port", &h.port, "trunks"]), "[10]\n");
    assert_eq!(ovs.ok(&["get", "port", &h.port, "tag"]), "[]\n");
    // switchd refuses trunks on an access port (docs/VLANS.md); `[]` empties.
    ovs.fails(
        &["set", "port", &h.port, "vlan_mode=access", "tag=7"],
        1,
        "an access port has no trunks",
    );
    ovs.ok(&[
        "set",
        "port",
        &h.port,
        "vlan_mode=access",
        "tag=7",
        "trunks=[]",
    ]);
    assert_eq!(ovs.ok(&["get", "port", &h.port, "tag"]), "7\n");
    // --if-exists: a missing record or key prints nothing and succeeds.
    assert_eq!(
        ovs.ok(&["--if-exists", "get", "interface", "nosuch0", "name"]),
        ""
    );
    assert_eq!(
        ovs.ok(&["--if-exists", "get", "bridge", "nosuch0", "name"]),
        ""
    );
    // A missing key keeps its (empty) line, as ovs-vsctl's cmd_get.
    assert_eq!(
        ovs.ok(&["--if-exists", "get", "interface", &h.port, "external_ids:k"]),
        "\n"
    );
    ovs.fails(
        &["get", "interface", "nosuch0", "name"],
        1,
        "no row \"nosuch0\" in table Interface",
    );
    // The bridge's internal port takes external_ids like any other.
    ovs.ok(&["set", "interface", &br, "external_ids:owner=lab"]);
    assert_eq!(
        ovs.ok(&["get", "interface", &br, "external_ids:owner"]),
        "lab\n"
    );
    assert_eq!(
        ovs.ok(&[
            "--if-exists",
            "get",
            "interface",
            &br,
            "external_ids:k",
            "external_ids:owner"
        ]),
        "\nlab\n"
    );
    // JSON tables hold ovsdb JSON cells whatever --data says.
    let found = ovs.ok(&[
        "--format=json",
        "--columns=name,external_ids",
        "find",
        "interface",
        "external_ids:owner=lab",
    ]);
    let found: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(
        found["data"],
        serde_json::json!([[br, ["map", [["owner", "lab"]]]]]),
        "{found}"
    );
    // Keys are merged; the bound is on what the port keeps, not one request.
    let big = "x".repeat(1500);
    for k in ["a", "b"] {
        ovs.ok(&[
            "set",
            "interface",
            &h.port,
            &format!("external_ids:{k}={big}"),
        ]);
    }
    ovs.fails(
        &[
            "set",
            "interface",
            &h.port,
            &format!("external_ids:c={big}"),
        ],
        1,
        "more than the 4096 a port may keep",
    );
    let ids = ovs.ok(&["get", "interface", &h.port, "external_ids"]);
    assert!(
        ids.contains("a=") && ids.contains("b=") && !ids.contains("c="),
        "{ids}"
    );
    ovs.fails(
        &["set", "interface", &h.port, "external_ids:=v"],
        1,
        "a key cannot be empty",
    );
}
