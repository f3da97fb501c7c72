//! `add-ns-port` and `del-ns-port`: a veth pair per namespace, made, configured
//! inside the namespace and attached in one request (the in-namespace steps are
//! in `netns`).

use super::netlink::{NetlinkError, VethSpec};
use super::netns;
use super::ports::check_external_ids;
use super::switch::{err, validate_name, RpcResult, Switch};
use crate::config::{NsEnd, PortConfig};
use crate::wire::MacAddr;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use switchd_proto::{code, AddNsPort, AddNsPortReply, VlanConfig};

/// add-ns-port's parameters, names resolved, the rest still as the user wrote it.
struct NsPortSpec {
    netns: String,
    ifname: String,
    host: String,
    ip: Option<String>,
    gateway: Option<String>,
    mac: Option<String>,
    mtu: Option<u32>,
    vlan: VlanConfig,
    external_ids: BTreeMap<String, String>,
}

impl NsPortSpec {
    fn new(params: AddNsPort) -> NsPortSpec {
        let ifname = params.ifname.unwrap_or_else(|| "eth0".to_string());
        NsPortSpec {
            host: params
                .host_ifname
                .unwrap_or_else(|| host_ifname(&params.netns, &ifname)),
            netns: params.netns,
            ifname,
            ip: params.ip,
            gateway: params.gateway,
            mac: params.mac,
            mtu: params.mtu,
            vlan: params.vlan,
            external_ids: params.external_ids,
        }
    }
}

/// The parsed settings for the namespace's end.
struct Inside {
    ip: Option<(IpAddr, u8)>,
    gateway: Option<IpAddr>,
    mac: Option<[u8; 6]>,
}

/// The default host-side name of an add-ns-port veth: `NETNS-IFNAME` when that is
/// a valid interface name, otherwise a stable hash of both.
pub(super) fn host_ifname(netns: &str, ifname: &str) -> String {
    let readable = format!("{netns}-{ifname}");
    if validate_name("interface", &readable).is_ok() {
        return readable;
    }
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in netns.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("sd{h:08x}")
}

fn parse_inside(spec: &NsPortSpec) -> Result<Inside, String> {
    let ip = spec.ip.as_deref().map(netns::parse_cidr).transpose()?;
    let gateway = spec
        .gateway
        .as_deref()
        .map(|g| {
            g.parse::<IpAddr>()
                .map_err(|_| format!("invalid gateway {g:?}: not an IP address"))
        })
        .transpose()?;
    let mac = spec
        .mac
        .as_deref()
        .map(|m| match m.parse::<MacAddr>() {
            Ok(mac) if !mac.is_multicast() && mac.0 != [0; 6] => Ok(mac.0),
            Ok(_) => Err(format!("invalid MAC {m:?}: not a unicast address")),
            Err(_) => Err(format!("invalid MAC {m:?}: expected xx:xx:xx:xx:xx:xx")),
        })
        .transpose()?;
    if let Some(mtu) = spec.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(format!("invalid MTU {mtu}: must be 68 to 65535"));
        }
    }
    Ok(Inside { ip, gateway, mac })
}

impl Switch {
    /// Null with `may_exist` when the port is there already.
    pub(super) async fn add_ns_port(
        &mut self,
        params: AddNsPort,
    ) -> RpcResult<Option<AddNsPortReply>> {
        let (bridge, may_exist) = (params.bridge.clone(), params.may_exist);
        let bridge = bridge.as_str();
        let mut spec = NsPortSpec::new(params);
        let invalid = |message: String| err(code::INVALID_PARAMS, message);
        spec.vlan = spec.vlan.clone().check().map_err(invalid)?;
        check_external_ids(&spec.external_ids)?;
        self.bridge(bridge)?;
        validate_name("interface", &spec.ifname)?;
        validate_name("interface", &spec.host)?;
        netns::resolve(&spec.netns).map_err(invalid)?;
        if let Some((owner, host)) = self.ns_port(&spec.netns, &spec.ifname) {
            if may_exist && owner == bridge {
                return Ok(None);
            }
            return Err(err(
                code::ALREADY_EXISTS,
                format!(
                    "{} in namespace {} is already port {host} of bridge {owner}",
                    spec.ifname, spec.netns
                ),
            ));
        }
        let inside = parse_inside(&spec).map_err(invalid)?;
        self.check_port_name(bridge, &spec.host, false)?;
        // On a bridge with tunnels, a namespace whose frames fit them.
        if spec.mtu.is_none() {
            spec.mtu = self.bridges[bridge]
                .ports
                .keys()
                .filter_map(|p| self.tunnels.ports.get(p))
                .map(|t| t.mtu)
                .min();
        }
        let failed = |e: NetlinkError| err(code::FAILED, e.to_string());
        if self
            .netlink
            .link_index(&spec.host)
            .await
            .map_err(failed)?
            .is_some()
        {
            return Err(err(
                code::ALREADY_EXISTS,
                format!("an interface named {} already exists", spec.host),
            ));
        }
        let ns = netns::open(&spec.netns)
            .await
            .map_err(|m| err(code::NOT_FOUND, m))?;
        let veth = VethSpec {
            host: &spec.host,
            peer: &spec.ifname,
            peer_netns: &ns,
            peer_mac: inside.mac,
            mtu: spec.mtu,
        };
        match self.netlink.create_veth(&veth).await {
            Ok(()) => {}
            Err(NetlinkError::CreateVeth { source, .. })
                if source.raw_os_error() == Some(libc::EEXIST) =>
            {
                return Err(err(
                    code::ALREADY_EXISTS,
                    format!(
                        "an interface named {} already exists in namespace {}",
                        spec.ifname, spec.netns
                    ),
                ));
            }
            Err(e) => return Err(failed(e)),
        }
        // From here on, a failure deletes the pair again.
        let result = self.finish_ns_port(bridge, &spec, ns, &inside).await;
        match &result {
            Err(_) => self.delete_link(&spec.host).await,
            Ok(_) => self.created_link(&spec.host),
        }
        result.map(Some)
    }

    async fn finish_ns_port(
        &mut self,
        bridge: &str,
        spec: &NsPortSpec,
        ns: std::fs::File,
        inside: &Inside,
    ) -> RpcResult<AddNsPortReply> {
        let config = netns::InsideConfig {
            ifname: spec.ifname.clone(),
            ip: inside.ip,
            gateway: inside.gateway,
        };
        let mac = netns::configure_inside(ns, config)
            .await
            .map_err(|m| err(code::FAILED, format!("namespace {}: {m}", spec.netns)))?;
        let port_config = PortConfig {
            netns: Some(NsEnd {
                netns: spec.netns.clone(),
                ifname: spec.ifname.clone(),
            }),
            vlan: spec.vlan.clone(),
            external_ids: spec.external_ids.clone(),
            ..PortConfig::system(&spec.host)
        };
        let port = self
            .attach(bridge, &port_config)
            .await
            .map_err(|e| err(code::FAILED, e.to_string()))?;
        self.change_with_port(bridge, port, |db| {
            let config = db.bridges.get_mut(bridge).expect("bridge exists");
            config.ports.push(Arc::new(port_config));
        })
        .await?;
        tracing::info!(bridge, port = %spec.host, netns = %spec.netns, "namespace port added");
        Ok(AddNsPortReply {
            bridge: bridge.to_string(),
            port: spec.host.clone(),
            netns: spec.netns.clone(),
            ifname: spec.ifname.clone(),
            mac: MacAddr(mac).to_string(),
            addresses: spec.ip.iter().cloned().collect(),
            gateway: spec.gateway.clone(),
            mtu: spec.mtu,
        })
    }

    pub(super) async fn del_ns_port(
        &mut self,
        bridge: &str,
        netns: &str,
        ifname: &str,
        if_exists: bool,
    ) -> RpcResult<()> {
        self.bridge(bridge)?;
        let host = match self.ns_port(netns, ifname) {
            Some((owner, host)) if owner == bridge => host.to_string(),
            _ if if_exists => return Ok(()),
            _ => {
                return Err(err(
                    code::NOT_FOUND,
                    format!("bridge {bridge} has no port to {ifname} in namespace {netns}"),
                ))
            }
        };
        self.change(|db| {
            let config = db.bridges.get_mut(bridge).expect("bridge exists");
            config.ports.retain(|p| p.name != host);
            config.static_macs.retain(|s| s.port != host);
            super::mirrors::forget_port(config, &host);
        })?;
        let state = self
            .bridge_mut(bridge)
            .ports
            .remove(&host)
            .expect("port exists");
        self.detach(bridge, state).await;
        self.doom_link(host.clone()).await;
        tracing::info!(bridge, port = %host, netns, "namespace port deleted");
        Ok(())
    }

    /// The bridge and host interface of the add-ns-port port to `ifname` in `netns`.
    fn ns_port(&self, netns: &str, ifname: &str) -> Option<(&str, &str)> {
        self.db.bridges.iter().find_map(|(bridge, config)| {
            config
                .ports
                .iter()
                .find(|p| {
                    p.netns
                        .as_ref()
                        .is_some_and(|n| n.netns == netns && n.ifname == ifname)
                })
                .map(|p| (bridge.as_str(), p.name.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::host_ifname;
    use crate::control::switch::validate_name;

    #[test]
    fn host_names_are_valid_and_stable() {
        assert_eq!(host_ifname("ns1", "eth0"), "ns1-eth0");
        let long = host_ifname("/proc/1234/ns/net", "eth0");
        assert!(validate_name("interface", &long).is_ok(), "{long}");
        assert_eq!(long, host_ifname("/proc/1234/ns/net", "eth0"));
        assert_ne!(long, host_ifname("/proc/1234/ns/net", "eth1"));
    }
}
