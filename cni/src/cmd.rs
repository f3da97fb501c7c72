//! ADD, DEL, CHECK and VERSION.

use crate::config::{reply_version, Config, Version, SUPPORTED_VERSIONS};
use crate::env::{self, Command, Env};
use crate::error::{code, CniError, CniResult};
use crate::ipam;
use crate::netns::{self, Plan, RoutePlan};
use crate::result::{parse_cidr, Interface, Result as CniOutput};
use crate::switchd::{host_ifname, Attachment, FoundPort, Switchd};
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;

/// Runs the request; Some(JSON) for the commands that print a result.
pub fn run(stdin: &[u8], var: impl Fn(&str) -> Option<String>) -> CniResult<Option<Value>> {
    let env = env::parse(var)?;
    if env.command == Command::Version {
        return Ok(Some(serde_json::json!({
            "cniVersion": reply_version(stdin),
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let config = Config::parse(stdin)?.with_mac(env.mac.as_deref())?;
    match env.command {
        Command::Add => add(&env, &config, stdin).map(Some),
        Command::Del => del(&env, &config, stdin).map(|()| None),
        Command::Check => check(&env, &config, stdin).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

fn add(env: &Env, config: &Config, stdin: &[u8]) -> CniResult<Value> {
    let netns = env
        .netns
        .as_deref()
        .expect("env::parse requires CNI_NETNS for ADD");
    // A namespace that is not there is the runtime's mistake, not switchd's.
    std::fs::metadata(netns).map_err(|e| {
        CniError::new(
            code::INVALID_ENV,
            "invalid environment variable CNI_NETNS",
            format!("CNI_NETNS: {netns}: {e}"),
        )
    })?;
    let switchd = Switchd::new(&config.socket);
    let host = host_ifname(&env.container_id, &env.ifname);
    let reply = switchd.attach(&Attachment {
        bridge: &config.bridge,
        netns,
        ifname: &env.ifname,
        host: &host,
        container_id: &env.container_id,
        mac: config.mac.as_deref(),
        mtu: config.mtu,
        vlan: &config.vlan,
    })?;
    // From here on a failure undoes the port and the allocation.
    let made = FoundPort {
        bridge: reply.bridge.clone(),
        port: reply.port.clone(),
        netns: Some(reply.netns.clone()),
        ifname: Some(reply.ifname.clone()),
        external_ids: Default::default(),
    };
    let addressed = allocate_and_apply(env, config, stdin, netns);
    let ipam_result = match addressed {
        Ok(r) => r,
        Err(e) => {
            undo(env, config, stdin, &switchd, &made);
            return Err(e);
        }
    };
    let ours = CniOutput {
        interfaces: vec![
            Interface {
                name: reply.port.clone(),
                mac: host_mac(&reply.port),
                ..Interface::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: reply.mac.clone(),
                sandbox: netns.to_string(),
                ..Interface::default()
            },
        ],
        ips: ipam_result
            .ips
            .into_iter()
            .map(|mut ip| {
                ip.interface = Some(1);
                ip
            })
            .collect(),
        routes: ipam_result.routes,
        dns: if ipam_result.dns.is_empty() {
            config.dns.clone()
        } else {
            ipam_result.dns
        },
    };
    let result = CniOutput::chain(config.prev_result.clone(), ours);
    Ok(result.to_json(&config.cni_version, config.version))
}

/// IPAM ADD, then its addresses and routes inside the namespace. An empty
/// result without IPAM: the container gets a link and nothing more.
fn allocate_and_apply(
    env: &Env,
    config: &Config,
    stdin: &[u8],
    netns: &str,
) -> CniResult<CniOutput> {
    let Some(plugin) = &config.ipam else {
        return Ok(CniOutput::default());
    };
    let allocated = ipam::add(plugin, &env.path, stdin)?;
    let plan = plan(&env.ifname, &allocated).map_err(|why| {
        CniError::new(
            code::DECODE,
            format!("cannot use the result of IPAM plugin {plugin}"),
            why,
        )
    })?;
    netns::apply(Path::new(netns), plan).map_err(|why| {
        CniError::new(
            code::NETNS,
            format!("cannot configure {} in the container", env.ifname),
            why,
        )
    })?;
    Ok(allocated)
}

/// What `allocated` asks for: every address, and every route, through the
/// gateway of its family when it names none (SPEC.md: "If unset, a value in
/// gateway in the ips array may be used").
fn plan(ifname: &str, allocated: &CniOutput) -> Result<Plan, String> {
    let mut addresses = Vec::new();
    let (mut gw4, mut gw6) = (None, None);
    for ip in &allocated.ips {
        let (addr, len) = parse_cidr(&ip.address)?;
        addresses.push((addr, len));
        if let Some(gw) = &ip.gateway {
            let gw: IpAddr = gw
                .parse()
                .map_err(|_| format!("gateway {gw:?} is not an IP address"))?;
            if gw.is_ipv4() != addr.is_ipv4() {
                return Err(format!(
                    "gateway {gw} is not of the family of {}",
                    ip.address
                ));
            }
            let slot = if gw.is_ipv4() { &mut gw4 } else { &mut gw6 };
            slot.get_or_insert(gw);
        }
    }
    let mut routes = Vec::new();
    for route in &allocated.routes {
        let dst = parse_cidr(&route.dst)?;
        let gw = match &route.gw {
            Some(gw) => Some(
                gw.parse::<IpAddr>()
                    .map_err(|_| format!("route gw {gw:?} is not an IP address"))?,
            ),
            None if dst.0.is_ipv4() => gw4,
            None => gw6,
        };
        routes.push(RoutePlan { dst, gw });
    }
    Ok(Plan {
        ifname: ifname.to_string(),
        addresses,
        routes,
    })
}

/// After a failed ADD: gives the allocation back and removes the port and its
/// veth. Its own failures go to stderr; the runtime gets the ADD's error, and
/// its DEL (which it sends after a failed ADD) tries again.
fn undo(env: &Env, config: &Config, stdin: &[u8], switchd: &Switchd, made: &FoundPort) {
    if let Some(plugin) = &config.ipam {
        if let Err(e) = ipam::del(plugin, &env.path, stdin) {
            eprintln!("switchd-cni: undoing ADD: releasing the IPAM allocation: {e}");
        }
    }
    if let Err(e) = switchd.detach(made) {
        eprintln!("switchd-cni: undoing ADD: removing port {}: {e}", made.port);
    }
}

/// The host end's MAC, from sysfs: the plugin runs in the host's namespace.
fn host_mac(ifname: &str) -> String {
    std::fs::read_to_string(Path::new("/sys/class/net").join(ifname).join("address"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Removes every port of the attachment and releases its addresses. Whatever
/// is already gone is not an error; each step is tried even if another
/// failed, and the first failure is reported.
fn del(env: &Env, config: &Config, stdin: &[u8]) -> CniResult<()> {
    let switchd = Switchd::new(&config.socket);
    let mut first = None;
    match switchd.find(&env.container_id, &env.ifname) {
        Ok(ports) => {
            for port in ports {
                if let Err(e) = switchd.detach(&port) {
                    first.get_or_insert(e);
                }
            }
        }
        Err(e) => {
            first.get_or_insert(e);
        }
    }
    if let Some(plugin) = &config.ipam {
        if let Err(e) = ipam::del(plugin, &env.path, stdin) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn mismatch(details: String) -> CniError {
    CniError::new(code::CHECK, "the attachment is not as ADD left it", details)
}

/// The port is on the bridge and forwarding, the interface is in the namespace,
/// up, with prevResult's MAC and addresses; then the IPAM plugin's own CHECK.
fn check(env: &Env, config: &Config, stdin: &[u8]) -> CniResult<()> {
    if config.version < Version::V04 {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!("CHECK is not part of cniVersion {}", config.cni_version),
        ));
    }
    let netns = env
        .netns
        .as_deref()
        .expect("env::parse requires CNI_NETNS for CHECK");
    let prev = config.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "CHECK needs prevResult",
        )
    })?;
    let (index, iface) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == env.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            mismatch(format!(
                "prevResult has no interface {} in a sandbox",
                env.ifname
            ))
        })?;
    if iface.sandbox != netns {
        return Err(mismatch(format!(
            "prevResult has {} in {}, CNI_NETNS is {netns}",
            env.ifname, iface.sandbox
        )));
    }
    let switchd = Switchd::new(&config.socket);
    let ports = switchd.find(&env.container_id, &env.ifname)?;
    let port = ports
        .iter()
        .find(|p| p.bridge == config.bridge)
        .ok_or_else(|| {
            mismatch(format!(
                "bridge {} has no port for container {} interface {}",
                config.bridge, env.container_id, env.ifname
            ))
        })?;
    if port.netns.as_deref() != Some(netns) {
        return Err(mismatch(format!(
            "port {} leads to namespace {}, not {netns}",
            port.port,
            port.netns.as_deref().unwrap_or("(none)")
        )));
    }
    if let Some(why) = switchd.port_error(&port.bridge, &port.port)? {
        return Err(mismatch(format!("port {}: {why}", port.port)));
    }
    let inside = netns::inspect(Path::new(netns), &env.ifname)
        .map_err(|why| {
            CniError::new(
                code::NETNS,
                format!("cannot read {} in the container", env.ifname),
                why,
            )
        })?
        .ok_or_else(|| mismatch(format!("{netns} has no interface {}", env.ifname)))?;
    if !iface.mac.is_empty() && !iface.mac.eq_ignore_ascii_case(&inside.mac) {
        return Err(mismatch(format!(
            "{} has MAC {}, prevResult says {}",
            env.ifname, inside.mac, iface.mac
        )));
    }
    if !inside.up {
        return Err(mismatch(format!("{} is down", env.ifname)));
    }
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(index)) {
        let want = parse_cidr(&ip.address)
            .map_err(|why| CniError::new(code::DECODE, "cannot decode prevResult", why))?;
        if !inside.addresses.contains(&want) {
            return Err(mismatch(format!(
                "{} does not have address {}",
                env.ifname, ip.address
            )));
        }
    }
    if let Some(plugin) = &config.ipam {
        ipam::check(plugin, &env.path, stdin)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{IpConfig, Route};

    #[test]
    fn routes_without_a_gateway_take_their_familys() {
        let allocated = CniOutput {
            ips: vec![
                IpConfig {
                    address: "10.0.0.2/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    ..IpConfig::default()
                },
                IpConfig {
                    address: "fd00::2/64".into(),
                    gateway: Some("fd00::1".into()),
                    ..IpConfig::default()
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".into(),
                    ..Route::default()
                },
                Route {
                    dst: "::/0".into(),
                    ..Route::default()
                },
                Route {
                    dst: "192.0.2.0/24".into(),
                    gw: Some("10.0.0.254".into()),
                    ..Route::default()
                },
            ],
            ..CniOutput::default()
        };
        let plan = plan("eth0", &allocated).unwrap();
        assert_eq!(plan.addresses.len(), 2);
        let gws: Vec<String> = plan
            .routes
            .iter()
            .map(|r| r.gw.unwrap().to_string())
            .collect();
        assert_eq!(gws, ["10.0.0.1", "fd00::1", "10.0.0.254"]);
    }

    #[test]
    fn a_route_with_no_gateway_anywhere_goes_out_of_the_interface() {
        let allocated = CniOutput {
            ips: vec![IpConfig {
                address: "10.0.0.2/24".into(),
                ..IpConfig::default()
            }],
            routes: vec![Route {
                dst: "10.9.0.0/16".into(),
                ..Route::default()
            }],
            ..CniOutput::default()
        };
        assert_eq!(plan("eth0", &allocated).unwrap().routes[0].gw, None);
        let mut bad = allocated.clone();
        bad.ips[0].address = "10.0.0.2".into();
        assert!(plan("eth0", &bad).is_err());
    }

    #[test]
    fn version_needs_only_the_command() {
        let out = run(br#"{"cniVersion":"0.4.0"}"#, |k| {
            (k == "CNI_COMMAND").then(|| "VERSION".to_string())
        })
        .unwrap()
        .unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["supportedVersions"][3], "1.0.0");
    }
}
