//! CNI success results (SPEC.md section 5), as IPAM plugins return them, as
//! `prevResult` brings them, and as this plugin prints them in the request's
//! version. Keys this plugin does not know are kept (`extra`), so a result
//! passes through a chain unchanged.

use crate::config::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Result {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The namespace path for a container's interface; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `ADDRESS/PREFIX`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`; IPAM plugins leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// 0.3.x/0.4.0's `"4"`/`"6"`: read and dropped, and written again from the
    /// address when the request's version has it.
    #[serde(default, skip_serializing)]
    pub version: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// `ADDRESS/PREFIX`, IPv4 or IPv6.
pub fn parse_cidr(cidr: &str) -> std::result::Result<(IpAddr, u8), String> {
    let bad = || format!("{cidr:?} is not ADDRESS/PREFIX");
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len.parse().ok().filter(|&l| l <= max).ok_or_else(bad)?;
    Ok((addr, len))
}

impl Result {
    /// This result as the request's version writes it.
    pub fn to_json(&self, cni_version: &str, version: Version) -> Value {
        let mut json = serde_json::to_value(self).expect("results always serialize");
        json["cniVersion"] = Value::from(cni_version);
        if version < Version::V10 {
            for (ip, out) in self.ips.iter().zip(
                json["ips"]
                    .as_array_mut()
                    .map(|a| a.iter_mut())
                    .into_iter()
                    .flatten(),
            ) {
                let v6 = matches!(parse_cidr(&ip.address), Ok((IpAddr::V6(_), _)));
                out["version"] = Value::from(if v6 { "6" } else { "4" });
            }
        }
        json
    }

    /// `ours` after what earlier plugins in the chain made (`prev`): theirs
    /// first, so their `interface` indices stay valid, ours shifted past them.
    /// Our DNS, if any, replaces theirs.
    pub fn chain(prev: Option<Result>, mut ours: Result) -> Result {
        let Some(mut prev) = prev else {
            return ours;
        };
        let shift = prev.interfaces.len();
        for ip in &mut ours.ips {
            ip.interface = ip.interface.map(|i| i + shift);
        }
        prev.interfaces.append(&mut ours.interfaces);
        prev.ips.append(&mut ours.ips);
        prev.routes.append(&mut ours.routes);
        if !ours.dns.is_empty() {
            prev.dns = ours.dns;
        }
        prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> Result {
        Result {
            interfaces: vec![
                Interface {
                    name: "veth1".into(),
                    mac: "02:00:00:00:00:01".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    sandbox: "/run/netns/x".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.0.2/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    interface: Some(1),
                    ..IpConfig::default()
                },
                IpConfig {
                    address: "fd00::2/64".into(),
                    interface: Some(1),
                    ..IpConfig::default()
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                ..Route::default()
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn each_version_gets_its_shape() {
        let v1 = ours().to_json("1.0.0", Version::V10);
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert_eq!(
            v1["ips"][0],
            json!({"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 1})
        );
        assert_eq!(v1["interfaces"][1]["sandbox"], "/run/netns/x");
        assert!(v1["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v1["dns"], json!({}));
        let v04 = ours().to_json("0.4.0", Version::V04);
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert_eq!(v04["routes"], json!([{"dst": "0.0.0.0/0"}]));
    }

    #[test]
    fn unknown_keys_and_legacy_versions_pass_through() {
        let prev: Result = serde_json::from_value(json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "x", "mtu": 9000}],
            "ips": [{"version": "4", "address": "10.1.0.2/16", "interface": 0}],
            "routes": [{"dst": "10.2.0.0/16", "gw": "10.1.0.1", "priority": 5}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }))
        .unwrap();
        let json = prev.to_json("1.0.0", Version::V10);
        assert_eq!(json["interfaces"][0]["mtu"], 9000);
        assert_eq!(json["routes"][0]["priority"], 5);
        assert!(json["ips"][0].get("version").is_none());
    }

    #[test]
    fn a_chained_result_keeps_what_came_before() {
        let prev = Result {
            interfaces: vec![Interface {
                name: "other0".into(),
                ..Interface::default()
            }],
            ips: vec![IpConfig {
                address: "192.0.2.1/32".into(),
                interface: Some(0),
                ..IpConfig::default()
            }],
            dns: Dns {
                nameservers: vec!["192.0.2.53".into()],
                ..Dns::default()
            },
            ..Result::default()
        };
        let merged = Result::chain(Some(prev), ours());
        let names: Vec<_> = merged.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["other0", "veth1", "eth0"]);
        let indices: Vec<_> = merged.ips.iter().map(|i| i.interface).collect();
        assert_eq!(indices, [Some(0), Some(2), Some(2)]);
        assert_eq!(merged.dns.nameservers, ["192.0.2.53"]);
        assert_eq!(Result::chain(None, ours()), ours());
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap(),
            ("10.0.0.1".parse().unwrap(), 24)
        );
        for bad in ["10.0.0.1", "10.0.0.1/33", "fd00::1/129", "x/1"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
