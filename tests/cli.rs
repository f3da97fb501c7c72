//! switchctl's commands, messages and exit codes, as a user coming from ovs-vsctl sees them.

use crate::util::{bin, run_switchd, shared_machine, Daemon, Host};
use std::process::Output;

fn assert_fails(out: Output, code: i32, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr, format!("switchctl: {message}\n"));
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bridge_commands_and_their_errors() {
    let _machine = shared_machine();
    let d = Daemon::start();
    assert_eq!(d.ctl_ok(&["list-br"]), "");
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-br", "--no-internal", "br1"]);
    assert_fails(
        d.ctl(&["add-br", "--no-internal", "br0"]),
        1,
        "a bridge named br0 already exists",
    );
    d.ctl_ok(&["--may-exist", "add-br", "br0"]);
    d.ctl_ok(&["add-br", "--may-exist", "br0"]);
    assert_eq!(d.ctl_ok(&["list-br"]), "br0\nbr1\n");
    assert_eq!(d.ctl_json(&["list-br"]), serde_json::json!(["br0", "br1"]));

    assert_eq!(d.ctl(&["br-exists", "br0"]).status.code(), Some(0));
    // A usage error is not "absent".
    assert_eq!(d.ctl(&["br-exist", "br0"]).status.code(), Some(1));
    assert_eq!(d.ctl(&["br-exists"]).status.code(), Some(1));
    assert_eq!(d.ctl(&["--help"]).status.code(), Some(0));
    let absent = d.ctl(&["br-exists", "br9"]);
    assert_eq!(absent.status.code(), Some(2));
    assert!(absent.stderr.is_empty());

    assert_fails(d.ctl(&["del-br", "br9"]), 1, "no bridge named br9");
    d.ctl_ok(&["--if-exists", "del-br", "br9"]);
    d.ctl_ok(&["del-br", "br1"]);
    assert_eq!(d.ctl_ok(&["list-br"]), "br0\n");

    assert_fails(
        d.ctl(&["add-br", "a-name-that-is-too-long"]),
        1,
        "invalid bridge name \"a-name-that-is-too-long\": is longer than 15 bytes",
    );
    assert_fails(d.ctl(&["list-ports", "br9"]), 1, "no bridge named br9");
    assert_fails(d.ctl(&["fdb-show", "br9"]), 1, "no bridge named br9");
    assert_fails(d.ctl(&["fdb-flush", "br9"]), 1, "no bridge named br9");
    assert_fails(d.ctl(&["fdb-stats", "br9"]), 1, "no bridge named br9");
    assert_fails(d.ctl(&["dump-ports", "br9"]), 1, "no bridge named br9");
    assert_fails(
        d.ctl(&["set-br", "br9", "mac-aging-time=5"]),
        1,
        "no bridge named br9",
    );
}

/// ovs-vsctl's forms at the edges: options alone before the first `--`, a
/// trailing `--`, `--timeout 0` (no limit), br-exists in a chain, values as JSON,
/// and a reader that closes the pipe early.
#[test]
fn chains_timeouts_json_values_and_closed_pipes() {
    let _machine = shared_machine();
    let d = Daemon::start();
    // With its internal port, so named uniquely.
    let br = crate::util::unique_name("cle");
    d.ctl_ok(&["--timeout", "5", "--", "--may-exist", "add-br", &br]);
    d.ctl_ok(&["add-br", "--no-internal", "bre1", "--"]);
    let mut both = [br.as_str(), "bre1"];
    both.sort();
    let listed = format!("{}\n{}\n", both[0], both[1]);
    assert_eq!(d.ctl_ok(&["--timeout", "0", "list-br"]), listed);
    assert_eq!(
        d.ctl_ok(&["--timeout", "0", "list-br", "--", "list-br"]),
        listed.repeat(2)
    );
    let chained = d.ctl(&["br-exists", "nosuch", "--", "list-br"]);
    assert_eq!(chained.status.code(), Some(2), "{chained:?}");
    assert_eq!(
        d.ctl(&["br-exists", "bre1", "--", "list-br"]).status.code(),
        Some(0)
    );

    d.ctl_ok(&["set", "interface", &br, "external_ids:owner=lab"]);
    assert_eq!(
        d.ctl_json(&["get", "interface", &br, "external_ids"]),
        serde_json::json!(["map", [["owner", "lab"]]])
    );
    assert_eq!(
        d.ctl_ok(&[
            "--if-exists",
            "get",
            "interface",
            &br,
            "external_ids:k",
            "external_ids:owner"
        ]),
        "\nlab\n",
        "a missing key keeps its line"
    );
    let found = d.ctl_json(&["find", "interface", "external_ids:owner=lab"]);
    assert_eq!(
        found["data"],
        serde_json::json!([[["map", [["owner", "lab"]]], br]]),
        "{found}"
    );

    // Nobody reads what it prints: it ends quietly, as ovs-vsctl does.
    let mut child = std::process::Command::new(bin("switchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("list-br")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn port_commands_and_their_errors() {
    let _machine = shared_machine();
    let a = Host::new("10.30.0.1/24");
    let b = Host::new("10.30.0.2/24");
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["add-br", "--no-internal", "br1"]);

    assert_fails(
        d.ctl(&["add-port", "br9", &a.port]),
        1,
        "no bridge named br9",
    );
    assert_fails(
        d.ctl(&["add-port", "br0", "swnosuch0"]),
        1,
        "no interface named swnosuch0",
    );
    d.ctl_ok(&["add-port", "br1", &a.port]);
    let taken = format!("{} is already a port of br1", a.port);
    assert_fails(d.ctl(&["add-port", "br0", &a.port]), 1, &taken);
    assert_fails(
        d.ctl(&["--may-exist", "add-port", "br0", &a.port]),
        1,
        &taken,
    );
    assert_fails(d.ctl(&["add-port", "br1", &a.port]), 1, &taken);
    d.ctl_ok(&["--may-exist", "add-port", "br1", &a.port]);
    d.ctl_ok(&["add-port", "br0", &b.port]);

    assert_eq!(d.ctl_ok(&["port-to-br", &a.port]), "br1\n");
    assert_eq!(d.ctl_json(&["port-to-br", &a.port]), "br1");
    assert_fails(
        d.ctl(&["port-to-br", "swnosuch0"]),
        1,
        "no port named swnosuch0",
    );
    assert_eq!(d.ctl_ok(&["list-ports", "br1"]), format!("{}\n", a.port));

    assert_fails(
        d.ctl(&["del-port", "br0", &a.port]),
        1,
        &format!("bridge br0 does not have a port {}", a.port),
    );
    assert_fails(
        d.ctl(&["del-port", "swnosuch0"]),
        1,
        "no port named swnosuch0",
    );
    d.ctl_ok(&["--if-exists", "del-port", "swnosuch0"]);
    d.ctl_ok(&["del-port", &a.port]);
    assert_eq!(d.ctl_ok(&["list-ports", "br1"]), "");

    assert_fails(
        d.ctl(&["dump-ports", "br0", &a.port]),
        1,
        &format!("bridge br0 does not have a port {}", a.port),
    );
    // Deleting a bridge frees its ports' interfaces.
    d.ctl_ok(&["del-br", "br0"]);
    d.ctl_ok(&["add-port", "br1", &b.port]);
    assert_eq!(d.ctl_ok(&["port-to-br", &b.port]), "br1\n");
}

#[test]
fn set_br_validates_and_applies() {
    let _machine = shared_machine();
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "br0"]);
    d.ctl_ok(&["set-br", "br0", "mac-aging-time=30", "mac-table-size=100"]);
    let stats = d.ctl_json(&["fdb-stats", "br0"]);
    assert_eq!(stats["max"], 100);
    let show = d.ctl_ok(&["show"]);
    assert!(
        show.contains("    mac-aging-time: 30\n    mac-table-size: 100\n"),
        "{show}"
    );
    assert_fails(
        d.ctl(&["set-br", "br0", "mac-aging-time=0"]),
        1,
        "mac-aging-time must be 1 to 1000000 seconds",
    );
    assert_fails(
        d.ctl(&["set-br", "br0", "colour=blue"]),
        1,
        "unknown bridge setting \"colour\" (known: mac-aging-time, mac-table-size, forward-bpdu, \
         group-fwd-mask, mcast-snooping-enable, mcast-snooping-aging-time, \
         mcast-snooping-table-size, mcast-snooping-disable-flood-unregistered)",
    );
    assert_fails(
        d.ctl(&["set-br", "br0", "mac-table-size=lots"]),
        1,
        "mac-table-size: \"lots\" is not a whole number: invalid digit found in string",
    );
    assert_eq!(
        d.ctl_json(&["fdb-stats", "br0"])["max"],
        100,
        "a failed set-br changed nothing"
    );
}

#[test]
fn daemon_not_running_names_the_socket() {
    let _machine = shared_machine();
    let socket = std::env::temp_dir().join(format!("switchd-none-{}.sock", std::process::id()));
    let out = std::process::Command::new(bin("switchctl"))
        .arg("--socket")
        .arg(&socket)
        .arg("list-br")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "switchctl: cannot connect to switchd at {}",
            socket.display()
        )) && stderr.contains("is switchd running?"),
        "{stderr}"
    );
    // SWITCHD_SOCKET is honoured the same way.
    let out = std::process::Command::new(bin("switchctl"))
        .env("SWITCHD_SOCKET", &socket)
        .arg("show")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&socket.display().to_string()));
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let _machine = shared_machine();
    let d = Daemon::start();
    let out = run_switchd(&d.socket, d.dir.join("other.json"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another switchd is already listening on"),
        "{stderr}"
    );
    assert_eq!(d.ctl_ok(&["list-br"]), "");
}

#[test]
fn corrupt_database_is_refused_and_kept() {
    let _machine = shared_machine();
    let dir = std::env::temp_dir().join(format!("switchd-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("db.json");
    std::fs::write(&db, "{\"version\": 1, \"bridges\": {").unwrap();
    let out = run_switchd(dir.join("s.sock"), &db);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = std::fs::read_to_string(&db).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("database {} is not valid", db.display())),
        "{stderr}"
    );
    assert_eq!(kept, "{\"version\": 1, \"bridges\": {");
}

#[test]
fn second_daemon_on_the_same_database_is_refused() {
    let _machine = shared_machine();
    let d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "rpA"]);
    let other = d.dir.join("other.sock");
    let out = run_switchd(&other, &d.db);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "database {} is in use by another switchd (pid {})",
            d.db.display(),
            d.pid()
        )),
        "{stderr}"
    );
    assert!(!other.exists(), "the refused daemon left a socket");
    // The first daemon's acknowledged bridge is still there, running and saved.
    assert_eq!(d.ctl_ok(&["list-br"]), "rpA\n");
    assert!(std::fs::read_to_string(&d.db).unwrap().contains("rpA"));
}

#[test]
fn a_killed_daemon_leaves_its_database_free() {
    let _machine = shared_machine();
    let mut d = Daemon::start();
    d.ctl_ok(&["add-br", "--no-internal", "rpB"]);
    d.kill9();
    d.restart();
    assert_eq!(d.ctl_ok(&["list-br"]), "rpB\n");
}
