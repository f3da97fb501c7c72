//! A private switchd (its own socket, database and log in a temporary
//! directory), and switchctl run against it.

use crate::{unique_name, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where cargo put the binaries: next to the `deps` folder this test runs from.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --workspace)",
        path.display()
    );
    path
}

/// Runs switchd on `socket` and `db` until it exits by itself: for a daemon
/// expected to refuse to start.
pub fn run_switchd(socket: impl AsRef<Path>, db: impl AsRef<Path>) -> Output {
    Command::new(bin("switchd"))
        .arg("--socket")
        .arg(socket.as_ref())
        .arg("--db")
        .arg(db.as_ref())
        .output()
        .expect("run switchd")
}

/// A running switchd with its own socket and database in a private directory.
pub struct Daemon {
    child: Option<Child>,
    /// A command switchd runs under (`setpriv ... --`), if any.
    wrapper: Vec<String>,
    args: Vec<String>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub db: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&["--log-level", "debug"])
    }

    /// Starts switchd with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_under(&[], args)
    }

    /// Starts switchd as the last argument of `wrapper` (which must exec it, so
    /// the pid stays switchd's), e.g. `setpriv --bounding-set -bpf --`.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!("switchd-test-{}", unique_name("d")));
        std::fs::create_dir_all(&dir).unwrap();
        let mut daemon = Daemon {
            child: None,
            wrapper: wrapper.iter().map(|a| a.to_string()).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            socket: dir.join("switchd.sock"),
            db: dir.join("switchd.json"),
            dir,
        };
        daemon.restart();
        daemon
    }

    /// Starts the daemon again on the same socket and database.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("switchd.log"))
            .unwrap();
        let mut command = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(bin("switchd"));
                c
            }
            None => Command::new(bin("switchd")),
        };
        let child = command
            .arg("--socket")
            .arg(&self.socket)
            .arg("--db")
            .arg(&self.db)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start switchd");
        self.child = Some(child);
        // The socket accepts connections before the saved configuration is
        // restored; requests are answered only after it. So an answer, not a
        // connection, means the bridges and their TAPs are back.
        let up = wait_until(Duration::from_secs(10), || {
            self.ctl(&["list-br"]).status.success()
        });
        assert!(
            up,
            "switchd did not answer on its socket; log:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal`, then waits (up to 10 s) for the daemon to exit.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // Our own child, not reaped yet: the pid is still its.
        switchd::sys::kill(child.id() as i32, signal).expect("signal switchd");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("switchd ignored signal {signal}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("switchd.log")).unwrap_or_default()
    }

    /// Runs switchctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("switchctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run switchctl")
    }

    /// Runs switchctl and returns its stdout, panicking if it fails.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        crate::stdout_of_success(self.ctl(args), || format!("switchctl {args:?}"))
    }

    /// Runs switchctl expecting a refusal: exit code 1 and `why` on stderr.
    pub fn ctl_refused(&self, args: &[&str], why: &str) {
        let out = self.ctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }

    /// Runs switchctl with `--format json` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--format", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(&full)).expect("switchctl printed JSON")
    }

    /// Counters of one port, from `dump-ports --format json`.
    pub fn port_counters(&self, bridge: &str, port: &str) -> Value {
        self.ctl_json(&["dump-ports", bridge, port])[0].clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
