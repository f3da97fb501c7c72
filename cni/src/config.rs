//! The network configuration on stdin (SPEC.md section 1, and section 3's
//! derived fields), with this plugin's own keys.

use crate::error::{code, CniError, CniResult};
use crate::result::{Dns, Result as CniOutput};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use switchd_proto::{VlanConfig, VlanMode, MAX_VLAN};

/// The spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// What changes between the versions this plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 0.3.0 and 0.3.1: no CHECK; `ips[].version` in results.
    V03,
    /// 0.4.0: CHECK, and `prevResult` on DEL; still `ips[].version`.
    V04,
    /// 1.0.0: `ips[].version` is gone.
    V10,
}

impl Version {
    pub fn parse(version: &str) -> CniResult<Version> {
        match version {
            "0.3.0" | "0.3.1" => Ok(Version::V03),
            "0.4.0" => Ok(Version::V04),
            "1.0.0" => Ok(Version::V10),
            _ => Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {version:?} is not supported; this plugin supports {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )),
        }
    }
}

/// The keys this plugin reads; the rest of the object is ignored (and passed
/// unchanged to the IPAM plugin, which gets the whole document).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    bridge: Option<String>,
    socket: Option<PathBuf>,
    mtu: Option<u32>,
    mac: Option<String>,
    vlan: Option<u16>,
    trunks: Option<Vec<u16>>,
    ipam: Option<Ipam>,
    dns: Option<Dns>,
    ip_masq: Option<bool>,
    prev_result: Option<CniOutput>,
    runtime_config: Option<RuntimeConfig>,
}

#[derive(Debug, Deserialize)]
struct Ipam {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Capability arguments (CONVENTIONS.md): `mac` with `"capabilities": {"mac": true}`.
#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    mac: Option<String>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// As the request wrote it, echoed in every reply.
    pub cni_version: String,
    pub version: Version,
    pub bridge: String,
    pub socket: PathBuf,
    pub mtu: Option<u32>,
    /// `runtimeConfig.mac`, else CNI_ARGS `MAC=`, else `mac` (the tuning
    /// plugin's order); filled in by `with_mac`.
    pub mac: Option<String>,
    pub vlan: VlanConfig,
    /// The IPAM plugin's name (`ipam.type`), if addresses are wanted.
    pub ipam: Option<String>,
    pub dns: Dns,
    pub prev_result: Option<CniOutput>,
    runtime_mac: Option<String>,
}

/// The version a reply should carry even when the rest of the document is
/// broken: the request's, if it can be read, else this plugin's newest.
pub fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_string())
}

fn invalid(details: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "invalid network configuration",
        details,
    )
}

impl Config {
    pub fn parse(stdin: &[u8]) -> CniResult<Config> {
        let decode = |e: serde_json::Error| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        };
        let doc: Value = serde_json::from_slice(stdin).map_err(decode)?;
        if !doc.is_object() {
            return Err(decode(serde::de::Error::custom(
                "the network configuration is not a JSON object",
            )));
        }
        // Before the other keys: their meaning depends on it.
        let cni_version = match doc.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            // libcni's reading of a configuration without one.
            None => "0.1.0".to_string(),
            Some(other) => return Err(invalid(format!("cniVersion {other} is not a string"))),
        };
        let version = Version::parse(&cni_version)?;
        let raw: Raw = serde_json::from_value(doc).map_err(decode)?;
        if raw.ip_masq == Some(true) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field in network configuration",
                "ipMasq: true (switchd-cni does not masquerade; set up NAT on the host)",
            ));
        }
        let bridge = raw.bridge.ok_or_else(|| {
            invalid("\"bridge\" is missing: name the switchd bridge to attach to")
        })?;
        crate::env::check_ifname(&bridge).map_err(|why| invalid(format!("bridge: {why}")))?;
        if let Some(mtu) = raw.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(format!("mtu {mtu} is not between 68 and 65535")));
            }
        }
        let vlan = vlan_config(raw.vlan, raw.trunks.unwrap_or_default())?;
        let ipam = match raw.ipam {
            None => None,
            Some(Ipam { kind: None }) => return Err(invalid("ipam has no \"type\"")),
            Some(Ipam { kind: Some(kind) }) if kind.is_empty() || kind.contains('/') => {
                return Err(invalid(format!("ipam type {kind:?} is not a plugin name")))
            }
            Some(Ipam { kind: Some(kind) }) => Some(kind),
        };
        let config = Config {
            cni_version,
            version,
            bridge,
            socket: raw
                .socket
                .unwrap_or_else(|| PathBuf::from(switchd_proto::DEFAULT_SOCKET)),
            mtu: raw.mtu,
            mac: raw.mac,
            vlan,
            ipam,
            dns: raw.dns.unwrap_or_default(),
            prev_result: raw.prev_result,
            runtime_mac: raw.runtime_config.and_then(|r| r.mac),
        };
        if let Some(mac) = &config.mac {
            check_mac(mac).map_err(|why| invalid(format!("mac: {why}")))?;
        }
        Ok(config)
    }

    /// Applies CNI_ARGS `MAC=` and `runtimeConfig.mac`, which outrank `mac`.
    pub fn with_mac(mut self, args_mac: Option<&str>) -> CniResult<Config> {
        if let Some(mac) = args_mac {
            check_mac(mac).map_err(|why| {
                CniError::new(
                    code::INVALID_ENV,
                    "invalid environment variable CNI_ARGS",
                    format!("CNI_ARGS: MAC: {why}"),
                )
            })?;
            self.mac = Some(mac.to_string());
        }
        if let Some(mac) = self.runtime_mac.take() {
            check_mac(&mac).map_err(|why| invalid(format!("runtimeConfig.mac: {why}")))?;
            self.mac = Some(mac);
        }
        Ok(self)
    }
}

/// `vlan` alone is an access port, `trunks` alone a trunk; both make `vlan` the
/// trunk's native VLAN, untagged on the container's side.
fn vlan_config(tag: Option<u16>, trunks: Vec<u16>) -> CniResult<VlanConfig> {
    let vlan_mode = (tag.is_some() && !trunks.is_empty()).then_some(VlanMode::NativeUntagged);
    if tag == Some(0) {
        return Err(invalid(format!("vlan 0 is not a VLAN (1 to {MAX_VLAN})")));
    }
    VlanConfig {
        tag,
        trunks,
        vlan_mode,
    }
    .check()
    .map_err(invalid)
}

/// A unicast `xx:xx:xx:xx:xx:xx`.
fn check_mac(mac: &str) -> Result<(), String> {
    let octets: Vec<u8> = mac
        .split(':')
        .map(|o| {
            (o.len() == 2)
                .then(|| u8::from_str_radix(o, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()
        .filter(|o: &Vec<u8>| o.len() == 6)
        .ok_or_else(|| format!("{mac:?} is not a MAC address (xx:xx:xx:xx:xx:xx)"))?;
    if octets[0] & 1 == 1 || octets.iter().all(|&o| o == 0) {
        return Err(format!("{mac:?} is not a unicast address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> CniResult<Config> {
        Config::parse(json.as_bytes())
    }

    #[test]
    fn a_full_configuration_parses_and_unknown_keys_are_ignored() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","type":"switchd-cni","bridge":"br0",
                "socket":"/tmp/s.sock","mtu":1400,"mac":"02:00:00:00:00:01","vlan":10,
                "ipam":{"type":"host-local","subnet":"10.0.0.0/24"},
                "dns":{"nameservers":["10.0.0.1"]},"someoneElses":{"x":1},
                "runtimeConfig":{"mac":"02:00:00:00:00:02"}}"#,
        )
        .unwrap();
        assert_eq!((c.version, c.bridge.as_str()), (Version::V10, "br0"));
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!((c.mtu, c.vlan.tag), (Some(1400), Some(10)));
        assert_eq!(c.ipam.as_deref(), Some("host-local"));
        assert_eq!(c.dns.nameservers, vec!["10.0.0.1".to_string()]);
        assert_eq!(c.mac.as_deref(), Some("02:00:00:00:00:01"));
        let c = c.with_mac(Some("02:00:00:00:00:03")).unwrap();
        assert_eq!(
            c.mac.as_deref(),
            Some("02:00:00:00:00:02"),
            "runtimeConfig wins"
        );
        let c = parse(r#"{"cniVersion":"0.4.0","bridge":"br0"}"#).unwrap();
        assert_eq!(c.socket, PathBuf::from(switchd_proto::DEFAULT_SOCKET));
        assert_eq!(
            c.with_mac(Some("02:00:00:00:00:03"))
                .unwrap()
                .mac
                .as_deref(),
            Some("02:00:00:00:00:03")
        );
    }

    #[test]
    fn broken_configurations_get_the_spec_codes() {
        for (json, code) in [
            ("{", code::DECODE),
            ("[]", code::DECODE),
            (r#"{"cniVersion":"1.0.0","bridge":7}"#, code::DECODE),
            (
                r#"{"cniVersion":"9.9.9","bridge":"br0"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (r#"{"bridge":"br0"}"#, code::INCOMPATIBLE_VERSION),
            (r#"{"cniVersion":"1.0.0"}"#, code::INVALID_CONFIG),
            (
                r#"{"cniVersion":"1.0.0","bridge":"a/b"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","vlan":4095}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","vlan":0}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","trunks":[5000]}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","mtu":20}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","mac":"01:00:00:00:00:01"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","mac":"zz"}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","ipam":{}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","ipam":{"type":"../x"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                r#"{"cniVersion":"1.0.0","bridge":"b","ipMasq":true}"#,
                code::UNSUPPORTED_FIELD,
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.code, code, "{json}: {e}");
        }
    }

    #[test]
    fn vlan_and_trunks_make_a_native_vlan() {
        let c = parse(r#"{"cniVersion":"1.0.0","bridge":"b","vlan":10,"trunks":[30,20]}"#).unwrap();
        assert_eq!(c.vlan.mode(), VlanMode::NativeUntagged);
        assert_eq!(c.vlan.trunks, vec![20, 30]);
        let c = parse(r#"{"cniVersion":"0.3.1","bridge":"b","trunks":[20]}"#).unwrap();
        assert_eq!((c.version, c.vlan.mode()), (Version::V03, VlanMode::Trunk));
    }

    #[test]
    fn the_reply_version_survives_a_broken_document() {
        assert_eq!(
            reply_version(br#"{"cniVersion":"0.4.0","bridge":1}"#),
            "0.4.0"
        );
        assert_eq!(reply_version(b"{"), "1.0.0");
    }
}
