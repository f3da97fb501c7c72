//! Network namespaces, hosts in them, and processes started there.

use crate::{run, unique_name, wait_until};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A process that is killed (by its pid) when the guard drops.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    // Not `Default`: making one creates a namespace in the kernel.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Netns {
        let name = unique_name("swt");
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        // IPv6 router and multicast-listener chatter would make the counters noisy.
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        crate::stdout_of_success(self.exec(args), || format!("{args:?} in {}", self.name))
    }

    pub fn spawn(&self, args: &[&str]) -> ChildGuard {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.name));
        ChildGuard(child)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A namespace joined to the root namespace by a veth pair: `eth0` inside with an
/// address, `port` outside, ready to be added to a bridge.
pub struct Host {
    pub ns: Netns,
    pub port: String,
    pub ip: String,
}

impl Host {
    /// `cidr` like "192.168.0.1/24".
    pub fn new(cidr: &str) -> Host {
        Host::with_port(&unique_name("swv"), cidr)
    }

    /// A host whose root-namespace end is called `port`.
    pub fn with_port(port: &str, cidr: &str) -> Host {
        let ns = Netns::new();
        let port = port.to_string();
        run(
            "ip",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ],
        );
        let host = Host {
            ns,
            port,
            ip: cidr.split('/').next().unwrap().to_string(),
        };
        host.ns.exec_ok(&["ip", "addr", "add", cidr, "dev", "eth0"]);
        host.ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        host
    }

    pub fn mac(&self) -> String {
        let out = self.ns.exec_ok(&["cat", "/sys/class/net/eth0/address"]);
        out.trim().to_string()
    }

    /// `mac()` as bytes, for building frames.
    pub fn mac_bytes(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        for (b, part) in mac.iter_mut().zip(self.mac().split(':')) {
            *b = u8::from_str_radix(part, 16).expect("a MAC address");
        }
        mac
    }

    /// One ping to `ip`, retried (the first may wait for ARP) for up to 5 s.
    pub fn can_ping(&self, ip: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.ping_once(ip))
    }

    pub fn ping_once(&self, ip: &str) -> bool {
        self.ns
            .exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", ip])
            .status
            .success()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace takes the pair with it; this covers a failed move.
        let _ = Command::new("ip")
            .args(["link", "del", &self.port])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair with both ends in the root namespace (a patch cable between two
/// bridges, a loop), deleted on drop.
pub struct Wire {
    pub a: String,
    pub b: String,
}

impl Wire {
    // Not `Default`: making one creates a veth pair in the kernel.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Wire {
        let (a, b) = (unique_name("swa"), unique_name("swb"));
        run(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        );
        // IPv6 off on both ends: no DAD or router solicitations on the wire.
        for end in [&a, &b] {
            run(
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{end}.disable_ipv6=1")],
            );
        }
        Wire { a, b }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.a])
            .stderr(Stdio::null())
            .status();
    }
}

/// True if no interface called `name` exists in the root namespace.
pub fn link_absent(name: &str) -> bool {
    !std::path::Path::new("/sys/class/net").join(name).exists()
}
