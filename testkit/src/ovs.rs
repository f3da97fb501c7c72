//! A private Open vSwitch with the userspace (netdev) datapath, the only one this
//! kernel allows: its own database, sockets and logs in a temporary directory,
//! stopped by pid on drop. A reference to compare switchd against.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A private Open vSwitch instance (its own database, sockets and logs in a temp
/// directory), stopped by pid on drop.
pub struct Ovs {
    dir: PathBuf,
    pids: Vec<i32>,
    /// The namespace its daemons run in, if not ours.
    netns: Option<String>,
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd with `userspace-tso-enable=true`, or
    /// says why it cannot (not installed, failed to start).
    pub fn start() -> Result<Ovs, String> {
        Ovs::start_in(None)
    }

    /// The same, its daemons inside network namespace `netns` (a host of a
    /// tunnel topology: its routes and addresses are the ones OVS sees).
    pub fn start_in(netns: Option<&str>) -> Result<Ovs, String> {
        for tool in ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"] {
            if !Command::new("which")
                .arg(tool)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Err(format!(
                    "{tool} not installed (apt-get install openvswitch-switch)"
                ));
            }
        }
        let dir = std::env::temp_dir().join(format!("switchd-{}", crate::unique_name("ovs")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut ovs = Ovs {
            dir,
            pids: Vec::new(),
            netns: netns.map(str::to_string),
        };
        let d = ovs.dir.display().to_string();
        let schema = "/usr/share/openvswitch/vswitch.ovsschema";
        ovs.sh("ovsdb-tool", &["create", &format!("{d}/conf.db"), schema])?;
        ovs.sh(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--pidfile={d}/ovsdb.pid"),
                "--detach",
                &format!("--log-file={d}/ovsdb.log"),
                &format!("{d}/conf.db"),
            ],
        )?;
        ovs.pids.push(ovs.pid("ovsdb.pid")?);
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.sh(
            "ovs-vswitchd",
            &[
                &format!("unix:{d}/db.sock"),
                &format!("--pidfile={d}/vswitchd.pid"),
                "--detach",
                &format!("--log-file={d}/vswitchd.log"),
            ],
        )?;
        ovs.pids.push(ovs.pid("vswitchd.pid")?);
        ovs.vsctl(&[
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ])?;
        Ok(ovs)
    }

    fn sh(&self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, cmd]);
                c
            }
            None => Command::new(cmd),
        };
        let out = command
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .env("OVS_LOGDIR", &self.dir)
            .output()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ovs-appctl -t ovs-vswitchd ARGS`.
    pub fn appctl(&self, args: &[&str]) -> Result<String, String> {
        let ctl = self
            .dir
            .join(format!("ovs-vswitchd.{}.ctl", self.pids[1]))
            .display()
            .to_string();
        let mut full = vec!["-t", ctl.as_str()];
        full.extend_from_slice(args);
        self.sh("ovs-appctl", &full)
    }

    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        let mut full = vec![db.as_str()];
        full.extend_from_slice(args);
        self.sh("ovs-vsctl", &full)
    }

    fn pid(&self, file: &str) -> Result<i32, String> {
        std::fs::read_to_string(self.dir.join(file))
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{file}: {e}"))
    }

    /// A bridge on the userspace datapath, the only one this kernel allows.
    pub fn add_netdev_bridge(&self, br: &str) -> Result<String, String> {
        self.vsctl(&[
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ])
    }

    /// Makes this instance's namespace a VXLAN host the way Open vSwitch's
    /// userspace tunnelling needs it: bridge `br-int` with `port` and a vxlan
    /// port `vx` to `remote` for VNI `key`; the underlay interface `uplink` a
    /// port of bridge `br-phy`, whose own interface takes the underlay address
    /// `cidr`, so OVS routes and resolves the outer packets itself.
    pub fn vxlan_host(
        &self,
        uplink: &str,
        cidr: &str,
        port: &str,
        remote: &str,
        key: u32,
    ) -> Result<(), String> {
        for br in ["br-int", "br-phy"] {
            self.add_netdev_bridge(br)?;
        }
        self.vsctl(&["add-port", "br-int", port])?;
        self.vsctl(&[
            "add-port",
            "br-int",
            "vx",
            "--",
            "set",
            "interface",
            "vx",
            "type=vxlan",
            &format!("options:remote_ip={remote}"),
            &format!("options:key={key}"),
        ])?;
        self.vsctl(&["add-port", "br-phy", uplink])?;
        self.sh("ip", &["addr", "flush", "dev", uplink])?;
        self.sh("ip", &["addr", "add", cidr, "dev", "br-phy"])?;
        for dev in ["br-phy", "br-int", uplink, port] {
            self.sh("ip", &["link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// ovs-vswitchd's pid, for CPU accounting.
    pub fn vswitchd_pid(&self) -> u32 {
        self.pids[1] as u32
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // ovs-vswitchd stopped by a signal leaves its netdev bridges' TAPs and
        // `ovs-netdev` on the machine; `exit --cleanup` deletes them first.
        let mut pids = self.pids.clone();
        if let Some(&vswitchd) = pids.get(1) {
            let ctl = self.dir.join(format!("ovs-vswitchd.{vswitchd}.ctl"));
            let ctl = ctl.display().to_string();
            if self
                .sh("ovs-appctl", &["-t", &ctl, "exit", "--cleanup"])
                .is_ok()
            {
                // It has exited: its pid is no longer ours to signal.
                pids.remove(1);
            }
        }
        // The daemons this instance started, by the pids they wrote.
        for &pid in pids.iter().rev() {
            let _ = switchd::sys::kill(pid, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
