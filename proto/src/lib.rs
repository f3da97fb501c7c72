//! The control protocol between switchctl and switchd.
//!
//! JSON-RPC 2.0, one JSON object per line over a Unix stream socket. A request is
//! `{"jsonrpc":"2.0","id":1,"method":"add-br","params":{"bridge":"br0"}}`; the reply
//! carries either `result` (the JSON form of the types below) or `error`
//! (`{"code":..,"message":..}`). switchctl renders text from the same JSON, so
//! `--format json` prints exactly what the daemon said.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/switchd/switchd.sock";
pub const DEFAULT_DB: &str = "/var/lib/switchd/switchd.json";
/// Sets the socket path for both binaries.
pub const SOCKET_ENV: &str = "SWITCHD_SOCKET";
/// Longest request line the daemon reads; a longer one is skipped up to its newline
/// and answered with an error, and the connection stays usable.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Defines [`Request`] and its method names from one list, so a method cannot be
/// added to one and forgotten in the other.
macro_rules! requests {
    ($( $(#[$meta:meta])* $variant:ident = $name:literal $params:tt )*) => {
        /// Every request switchd understands.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "method", content = "params")]
        #[serde(deny_unknown_fields)]
        pub enum Request {
            $( $(#[$meta])* #[serde(rename = $name)] $variant $params, )*
        }

        impl Request {
            /// Method names, so the daemon can tell "unknown method" from "bad params".
            pub const METHODS: &'static [&'static str] = &[$($name),*];

            /// This request's method name.
            pub fn method(&self) -> &'static str {
                match self {
                    $( Request::$variant { .. } => $name, )*
                }
            }
        }
    };
}

requests! {
    /// Reply: nothing (null).
    AddBr = "add-br" {
        bridge: String,
        #[serde(default)]
        may_exist: bool,
        /// Do not create the bridge's internal port (the TAP named after it).
        #[serde(default)]
        no_internal: bool,
    }
    DelBr = "del-br" {
        bridge: String,
        #[serde(default)]
        if_exists: bool,
    }
    /// Reply: the bridges' names.
    ListBr = "list-br" {}
    /// Reply: a bool.
    BrExists = "br-exists" {
        bridge: String,
    }
    AddPort = "add-port" {
        bridge: String,
        interface: String,
        #[serde(default)]
        may_exist: bool,
        /// The port's VLAN columns (`tag=10`, `trunks=10,20`, `vlan_mode=...`).
        #[serde(default)]
        vlan: VlanConfig,
        /// The Interface's `type`: `system` (an interface that exists) or
        /// `vxlan` (switchd makes the tunnel).
        #[serde(default)]
        kind: PortKind,
        /// The Interface's `options` column (`remote_ip`, `key`, ... for vxlan).
        #[serde(default)]
        options: BTreeMap<String, String>,
        /// The Interface's `external_ids`: what the caller records about the
        /// port (a container's id, as ovs-docker and CNI runtimes do).
        #[serde(default)]
        external_ids: BTreeMap<String, String>,
    }
    /// Changes an interface's columns, as `ovs-vsctl set interface I
    /// type=vxlan options:remote_ip=...` does. Within a batch after the
    /// `add-port` of the same name, it becomes part of that add-port.
    SetInterface = "set-interface" {
        interface: String,
        #[serde(default)]
        kind: Option<PortKind>,
        /// Options to set; the others keep their values.
        #[serde(default)]
        options: BTreeMap<String, String>,
        /// `external_ids` keys to set; the others keep their values.
        #[serde(default)]
        external_ids: BTreeMap<String, String>,
    }
    /// Changes a port's columns, as `ovs-vsctl set port P k=v` and
    /// `clear port P col` do: `clear` first, then `set`.
    SetPort = "set-port" {
        port: String,
        #[serde(default)]
        set: VlanConfig,
        #[serde(default)]
        clear: Vec<PortColumn>,
    }
    DelPort = "del-port" {
        #[serde(default)]
        bridge: Option<String>,
        interface: String,
        #[serde(default)]
        if_exists: bool,
    }
    /// Reply: [`FoundPort`]s, every port whose `external_ids` hold all of
    /// these pairs (`ovs-vsctl find interface external_ids:K=V ...`).
    FindPorts = "find-ports" {
        #[serde(default)]
        external_ids: BTreeMap<String, String>,
    }
    /// Reply: [`TraceReply`]: what the bridge would do now with a frame of
    /// these fields arriving on `in_port`, and why, without sending anything
    /// (`ovs-appctl ofproto/trace`). Absent addresses are 00:00:00:00:00:00, an
    /// absent `dl_type` 0, as in Open vSwitch; `dl_vlan` makes the frame tagged.
    Trace = "trace" {
        bridge: String,
        in_port: String,
        #[serde(default)]
        dl_src: Option<String>,
        #[serde(default)]
        dl_dst: Option<String>,
        #[serde(default)]
        dl_vlan: Option<u16>,
        /// A number (`0x0800`, `2054`) or `ip`, `arp`, `ipv6`.
        #[serde(default)]
        dl_type: Option<String>,
    }
    /// Reply: the ports' names.
    ListPorts = "list-ports" {
        bridge: String,
    }
    /// Reply: the bridge's name.
    PortToBr = "port-to-br" {
        interface: String,
    }
    /// Reply: [`ShowReply`].
    Show = "show" {}
    /// Reply: a list of [`FdbEntry`].
    FdbShow = "fdb-show" {
        bridge: String,
    }
    /// Reply: [`FdbFlushReply`].
    FdbFlush = "fdb-flush" {
        #[serde(default)]
        bridge: Option<String>,
        /// Only the entries of this VLAN.
        #[serde(default)]
        vlan: Option<u16>,
    }
    /// Adds a static MAC entry, as `ovs-appctl fdb/add`: never ages, never
    /// moves, saved with the configuration; replaces one of the same MAC and VLAN.
    FdbAdd = "fdb-add" {
        bridge: String,
        port: String,
        mac: String,
        #[serde(default)]
        vlan: u16,
    }
    /// Removes a static MAC entry, as `ovs-appctl fdb/del`.
    FdbDel = "fdb-del" {
        bridge: String,
        mac: String,
        #[serde(default)]
        vlan: u16,
        #[serde(default)]
        if_exists: bool,
    }
    /// Reply: [`FdbStats`].
    FdbStats = "fdb-stats" {
        bridge: String,
    }
    /// Reply: a list of [`PortCounters`].
    DumpPorts = "dump-ports" {
        bridge: String,
        #[serde(default)]
        interface: Option<String>,
    }
    /// Changes bridge settings; each one absent is left as it is.
    SetBr = "set-br" (SetBr)
    /// Reply: a list of [`MdbEntry`].
    MdbShow = "mdb-show" {
        bridge: String,
    }
    /// Forgets the multicast groups and router ports of one bridge, or of all.
    /// Reply: [`FdbFlushReply`] (the rows that went).
    MdbFlush = "mdb-flush" {
        #[serde(default)]
        bridge: Option<String>,
    }
    /// Reply: [`MdbStats`].
    MdbStats = "mdb-stats" {
        bridge: String,
    }
    /// Reply: [`AddNsPortReply`] (null with `may_exist` when it already existed).
    AddNsPort = "add-ns-port" (AddNsPort)
    /// Removes a port made by `add-ns-port` and deletes its veth pair.
    DelNsPort = "del-ns-port" {
        bridge: String,
        netns: String,
        #[serde(default)]
        ifname: Option<String>,
        #[serde(default)]
        if_exists: bool,
    }
    /// Runs `commands` in order as one transaction: all of them take effect and are
    /// saved once, or none does. Reply: the list of their replies.
    Batch = "batch" {
        commands: Vec<Request>,
    }
    /// Adds a port mirror (Open vSwitch's Mirror table). Reply: nothing.
    AddMirror = "add-mirror" {
        bridge: String,
        mirror: MirrorConfig,
        #[serde(default)]
        may_exist: bool,
    }
    DelMirror = "del-mirror" {
        bridge: String,
        name: String,
        #[serde(default)]
        if_exists: bool,
    }
    /// Reply: a list of [`MirrorInfo`].
    ListMirrors = "list-mirrors" {
        bridge: String,
    }
    /// Streams the frames seen on `ports` (all of the bridge's when empty), both
    /// directions, fast path included. Reply: [`CaptureReply`]; then the
    /// connection carries pcapng (docs/OBSERVABILITY.md) until `count` frames,
    /// the client hanging up or sending anything (which ends it cleanly, with
    /// the statistics blocks), or the bridge going away.
    Capture = "capture" {
        bridge: String,
        #[serde(default)]
        ports: Vec<String>,
        #[serde(default)]
        count: Option<u64>,
        /// Bytes kept of each frame (default and most [`MAX_SNAPLEN`]).
        #[serde(default)]
        snaplen: Option<u32>,
        /// A filter in tcpdump's language (pcap-filter(7)).
        #[serde(default)]
        filter: Option<String>,
    }
    /// Streams what changes (bridges and ports added and removed, port states,
    /// MAC addresses learned, moved and removed), of one bridge or all, one
    /// [`MonitorEvent`] per line, until the client hangs up or sends anything.
    /// Reply: null.
    Monitor = "monitor" {
        #[serde(default)]
        bridge: Option<String>,
    }
}

impl Request {
    /// Whether the reply is followed by a stream (`capture`, `monitor`) that
    /// takes over the connection; such a request cannot be part of a batch.
    pub fn is_stream(&self) -> bool {
        matches!(self, Request::Capture { .. } | Request::Monitor { .. })
    }
}

/// A port mirror, with Open vSwitch's Mirror columns: the frames it selects
/// (every one with `select_all`; those received on `select_src_port` or sent
/// to `select_dst_port`; of those, only `select_vlan`'s when given) are copied,
/// once each, to `output_port` or, tagged, into `output_vlan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub select_all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select_src_port: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select_dst_port: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select_vlan: Vec<u16>,
    /// A port of the bridge that then does nothing but receive the copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_port: Option<String>,
    /// A VLAN the copies are flooded into, for a remote monitor (RSPAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_vlan: Option<u16>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A mirror and what it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    #[serde(flatten)]
    pub config: MirrorConfig,
    /// Copies sent, and their bytes (Open vSwitch's `statistics` column).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Copies lost on the way out (the output port's queue full, too big).
    #[serde(default)]
    pub tx_dropped: u64,
}

/// The longest capture snapshot (tcpdump's default): more than a whole 64 KB
/// GSO frame with its headers.
pub const MAX_SNAPLEN: u32 = 256 << 10;

/// `capture`'s reply, before the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureReply {
    /// The ports captured, in the order of the stream's interface blocks
    /// (interface id N is `ports[N]`).
    pub ports: Vec<String>,
    pub snaplen: u32,
    /// Ports of the bridge left out, with the reason (a tunnel port's frames
    /// never cross its interface; a port that is not running).
    #[serde(default)]
    pub skipped: Vec<(String, String)>,
}

/// One line of `monitor`'s stream. `event` says which fields it has:
/// `bridge-added`, `bridge-deleted`; `port-added` (`port`, `state`),
/// `port-deleted` (`port`), `port-up`, `port-down`, `port-error`,
/// `port-blocked` (`port`, `reason`); `mac-learned`, `mac-aged`,
/// `mac-evicted` (`mac`, `vlan`, `port`), `mac-moved` (and `from_port`),
/// `mac-removed` (and `reason`: `flushed`, `deleted`, `port-removed`,
/// `vlan-changed`, `made-static`, `mirror-output`); `table-full` (`max`); `suppressed` (`kind`,
/// `count`: events of that kind over the rate limit in the second before);
/// `lost` (`count`: events this monitor read too slowly to get; no `bridge`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// RFC 3339, UTC, to the microsecond.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// `set-br`'s settings (also `set bridge`'s columns); each `None` is left as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBr {
    pub bridge: String,
    #[serde(default)]
    pub mac_aging_time: Option<u64>,
    #[serde(default)]
    pub mac_table_size: Option<u32>,
    /// Open vSwitch's `other_config:forward-bpdu`: relay every reserved
    /// group address (sets `group_fwd_mask` to all ones, or to none).
    #[serde(default)]
    pub forward_bpdu: Option<bool>,
    /// The kernel bridge's `group_fwd_mask`: bit N relays 01:80:C2:00:00:0N.
    #[serde(default)]
    pub group_fwd_mask: Option<u16>,
    /// [`McastSnooping::enable`].
    #[serde(default)]
    pub mcast_snooping_enable: Option<bool>,
    /// [`McastSnooping::aging_time`].
    #[serde(default)]
    pub mcast_snooping_aging_time: Option<u64>,
    /// [`McastSnooping::table_size`].
    #[serde(default)]
    pub mcast_snooping_table_size: Option<u32>,
    /// [`McastSnooping::disable_flood_unregistered`].
    #[serde(default)]
    pub mcast_snooping_disable_flood_unregistered: Option<bool>,
}

/// `add-ns-port`: creates a veth pair, moves one end into `netns` as `ifname`
/// (default `eth0`), configures it there, and adds the other end as a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNsPort {
    pub bridge: String,
    /// An `ip netns` name, or a path such as `/proc/PID/ns/net`.
    pub netns: String,
    #[serde(default)]
    pub ifname: Option<String>,
    /// Name of the end that stays on the host; derived from netns and ifname
    /// when absent.
    #[serde(default)]
    pub host_ifname: Option<String>,
    /// `ADDRESS/PREFIX` for the namespace's end.
    #[serde(default)]
    pub ip: Option<String>,
    /// Default route inside the namespace.
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub may_exist: bool,
    /// The port's VLAN columns, as `add-port` takes them.
    #[serde(default)]
    pub vlan: VlanConfig,
    /// [`PortConfig::external_ids`].
    #[serde(default)]
    pub external_ids: BTreeMap<String, String>,
}

/// A request line that cannot be run: the request's `id` (null when it could not
/// be read) and the error to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub id: Value,
    pub error: RpcError,
}

/// Decodes one JSON-RPC request line into its `id` and request. Pure, so the
/// daemon's only parser of untrusted input can be fuzzed on its own (fuzz/).
pub fn decode_request(line: &[u8]) -> Result<(Value, Request), Rejected> {
    let reject = |id: &Value, code, message: String| Rejected {
        id: id.clone(),
        error: RpcError { code, message },
    };
    let request: Value = serde_json::from_slice(line)
        .map_err(|e| reject(&Value::Null, code::PARSE_ERROR, format!("parse error: {e}")))?;
    let Some(object) = request.as_object() else {
        return Err(reject(
            &Value::Null,
            code::INVALID_REQUEST,
            "a request must be a JSON object".into(),
        ));
    };
    let id = object.get("id").cloned().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(reject(
            &id,
            code::INVALID_REQUEST,
            "\"jsonrpc\" must be \"2.0\"".into(),
        ));
    }
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        return Err(reject(
            &id,
            code::INVALID_REQUEST,
            "\"method\" must be a string".into(),
        ));
    };
    if !Request::METHODS.contains(&method) {
        return Err(reject(
            &id,
            code::METHOD_NOT_FOUND,
            format!("unknown method {method:?}"),
        ));
    }
    let params = object
        .get("params")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let mut tagged = serde_json::Map::new();
    tagged.insert("method".into(), Value::String(method.into()));
    tagged.insert("params".into(), params);
    match serde_json::from_value(Value::Object(tagged)) {
        Ok(request) => Ok((id, request)),
        Err(e) => Err(reject(
            &id,
            code::INVALID_PARAMS,
            format!("invalid params for {method}: {e}"),
        )),
    }
}

/// JSON-RPC error codes. The negative ones are JSON-RPC 2.0's own.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A named bridge, port or interface does not exist.
    pub const NOT_FOUND: i64 = 1;
    /// The name is already taken.
    pub const ALREADY_EXISTS: i64 = 2;
    /// The request is well formed but cannot be carried out.
    pub const FAILED: i64 = 3;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `show`: every bridge with its settings and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowReply {
    pub bridges: Vec<BridgeInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    pub name: String,
    pub mac_aging_time: u64,
    pub mac_table_size: u32,
    /// Reserved group addresses (01:80:C2:00:00:0N) relayed: bit N. 0, the
    /// default, relays none, as the kernel bridge and Open vSwitch do.
    #[serde(default)]
    pub group_fwd_mask: u16,
    #[serde(default)]
    pub mcast_snooping: McastSnooping,
    pub ports: Vec<PortInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorInfo>,
}

/// What a port is, as Open vSwitch's Interface `type` column names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortKind {
    /// An interface that exists without switchd (a veth end, a NIC, a TAP): a
    /// packet socket on it.
    #[default]
    System,
    /// The bridge's own interface: a TAP named after the bridge, created and
    /// removed with it.
    Internal,
    /// A VXLAN tunnel to one remote host (RFC 7348), made by switchd.
    Vxlan,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::System => "system",
            PortKind::Internal => "internal",
            PortKind::Vxlan => "vxlan",
        }
    }
}

impl std::str::FromStr for PortKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "system" => Ok(PortKind::System),
            "internal" => Ok(PortKind::Internal),
            "vxlan" => Ok(PortKind::Vxlan),
            _ => Err(format!(
                "interface type {s:?} is not supported (supported: system, internal, vxlan)"
            )),
        }
    }
}

/// VXLAN's UDP port (IANA, RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// A VXLAN port's `options`, as Open vSwitch's Interface table has them for
/// `type=vxlan`: one remote per port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    pub remote_ip: Ipv4Addr,
    /// The VNI (24 bits); 0 when not given, as in Open vSwitch.
    #[serde(default)]
    pub key: u32,
    #[serde(default = "vxlan_port")]
    pub dst_port: u16,
    /// The source address of outer packets; the route's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<Ipv4Addr>,
    /// Outer TTL; 64 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// Outer TOS (DSCP and ECN); 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos: Option<u8>,
}

fn vxlan_port() -> u16 {
    VXLAN_PORT
}

/// The options a VXLAN port takes.
pub const TUNNEL_OPTIONS: [&str; 6] = ["remote_ip", "key", "dst_port", "local_ip", "ttl", "tos"];

impl TunnelConfig {
    /// Parses `options` as `ovs-vsctl set interface ... options:K=V` gives them.
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<TunnelConfig, String> {
        if let Some(unknown) = options
            .keys()
            .find(|k| !TUNNEL_OPTIONS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown vxlan option {unknown:?} (known: {})",
                TUNNEL_OPTIONS.join(", ")
            ));
        }
        let get = |k: &str| options.get(k).map(|v| v.trim());
        let address = |k: &str, v: &str| -> Result<Ipv4Addr, String> {
            if v == "flow" {
                return Err(format!(
                    "options:{k}=flow is not supported: a tunnel port has one remote"
                ));
            }
            let ip: Ipv4Addr = v.parse().map_err(|_| {
                if v.parse::<std::net::Ipv6Addr>().is_ok() {
                    format!("options:{k}={v}: IPv6 underlays are not supported yet")
                } else {
                    format!("options:{k}={v:?} is not an IPv4 address")
                }
            })?;
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                return Err(format!("options:{k}={v} is not a unicast address"));
            }
            Ok(ip)
        };
        let number = |k: &str, v: &str, max: u32| -> Result<u32, String> {
            if v == "flow" {
                return Err(format!("options:{k}=flow is not supported"));
            }
            v.parse::<u32>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("options:{k}={v:?} is not a number from 0 to {max}"))
        };
        let remote_ip = match get("remote_ip") {
            Some(v) => address("remote_ip", v)?,
            None => return Err("a vxlan port needs options:remote_ip".into()),
        };
        let dst_port = get("dst_port")
            .map(|v| number("dst_port", v, u16::MAX.into()))
            .transpose()?
            .unwrap_or(VXLAN_PORT.into()) as u16;
        if dst_port == 0 {
            return Err("options:dst_port=0 is not a UDP port".into());
        }
        Ok(TunnelConfig {
            remote_ip,
            key: get("key")
                .map(|v| number("key", v, (1 << 24) - 1))
                .transpose()?
                .unwrap_or(0),
            dst_port,
            local_ip: get("local_ip")
                .map(|v| address("local_ip", v))
                .transpose()?,
            ttl: get("ttl")
                .map(|v| number("ttl", v, 255).map(|n| n as u8))
                .transpose()?
                .filter(|&t| t != 0),
            tos: get("tos")
                .map(|v| number("tos", v, 255).map(|n| n as u8))
                .transpose()?,
        })
    }

    /// The options column as `ovs-vsctl show` prints it (defaults left out).
    pub fn options(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("remote_ip".into(), self.remote_ip.to_string());
        out.insert("key".into(), self.key.to_string());
        if self.dst_port != VXLAN_PORT {
            out.insert("dst_port".into(), self.dst_port.to_string());
        }
        if let Some(ip) = self.local_ip {
            out.insert("local_ip".into(), ip.to_string());
        }
        if let Some(ttl) = self.ttl {
            out.insert("ttl".into(), ttl.to_string());
        }
        if let Some(tos) = self.tos {
            out.insert("tos".into(), tos.to_string());
        }
        out
    }
}

/// A port as configured: what the database stores and `show` reports. Settings a
/// port kind or a feature needs (VLAN mode and tags, a tunnel's remote) are fields
/// here, defaulted so that older databases still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: PortKind,
    /// For a port made by `add-ns-port`: where its veth's other end is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NsEnd>,
    #[serde(default, skip_serializing_if = "VlanConfig::is_default")]
    pub vlan: VlanConfig,
    /// For a vxlan port: its remote and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelConfig>,
    /// Open vSwitch's Interface `external_ids`: keys and values switchd keeps
    /// for the caller and never interprets (`container_id`, `container_iface`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
}

impl PortConfig {
    pub fn system(name: &str) -> Self {
        PortConfig {
            name: name.to_string(),
            kind: PortKind::System,
            netns: None,
            vlan: VlanConfig::default(),
            tunnel: None,
            external_ids: BTreeMap::new(),
        }
    }
}

/// Open vSwitch's `vlan_mode` (ovs-vswitchd.conf.db(5), "VLAN Configuration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VlanMode {
    /// One VLAN (`tag`), untagged on the wire; tagged frames are dropped.
    Access,
    /// The VLANs of `trunks` (all when empty), tagged on the wire; untagged
    /// frames are VLAN 0.
    Trunk,
    /// A trunk whose untagged frames are in VLAN `tag`; every frame leaves tagged.
    NativeTagged,
    /// A trunk whose untagged frames are in VLAN `tag`; frames of `tag` leave
    /// untagged.
    NativeUntagged,
}

impl VlanMode {
    pub const ALL: [VlanMode; 4] = [
        VlanMode::Access,
        VlanMode::Trunk,
        VlanMode::NativeTagged,
        VlanMode::NativeUntagged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VlanMode::Access => "access",
            VlanMode::Trunk => "trunk",
            VlanMode::NativeTagged => "native-tagged",
            VlanMode::NativeUntagged => "native-untagged",
        }
    }
}

impl std::str::FromStr for VlanMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        VlanMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "vlan_mode {s:?} is not one of access, trunk, native-tagged, native-untagged"
                )
            })
    }
}

/// The highest VLAN id a port may use: 4095 is reserved by IEEE 802.1Q.
pub const MAX_VLAN: u16 = 4094;

/// A port's VLAN columns as Open vSwitch's Port table has them. All empty: a
/// trunk of every VLAN, which is what a port without VLAN settings is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    /// Sorted, without duplicates, once checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_mode: Option<VlanMode>,
}

/// A column `clear port` can empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortColumn {
    Tag,
    Trunks,
    VlanMode,
}

impl std::str::FromStr for PortColumn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.replace('-', "_").as_str() {
            "tag" => Ok(PortColumn::Tag),
            "trunks" => Ok(PortColumn::Trunks),
            "vlan_mode" => Ok(PortColumn::VlanMode),
            _ => Err(format!(
                "unknown port column {s:?} (known: tag, trunks, vlan_mode)"
            )),
        }
    }
}

impl VlanConfig {
    pub fn is_default(&self) -> bool {
        *self == VlanConfig::default()
    }

    /// The mode in effect: `vlan_mode`, or as Open vSwitch picks it when that is
    /// empty (access with a tag, trunk without).
    pub fn mode(&self) -> VlanMode {
        self.vlan_mode.unwrap_or(if self.tag.is_some() {
            VlanMode::Access
        } else {
            VlanMode::Trunk
        })
    }

    /// `self` after `clear`, then with the columns `set` gives.
    pub fn changed(&self, set: &VlanConfig, clear: &[PortColumn]) -> VlanConfig {
        let mut next = self.clone();
        for column in clear {
            match column {
                PortColumn::Tag => next.tag = None,
                PortColumn::Trunks => next.trunks.clear(),
                PortColumn::VlanMode => next.vlan_mode = None,
            }
        }
        if set.tag.is_some() {
            next.tag = set.tag;
        }
        if !set.trunks.is_empty() {
            next.trunks = set.trunks.clone();
        }
        if set.vlan_mode.is_some() {
            next.vlan_mode = set.vlan_mode;
        }
        next
    }

    /// Checks the columns against each other and sorts `trunks`. Where Open
    /// vSwitch silently ignores a column that does not fit the mode, this says
    /// so instead: a tenant meant to be isolated should not end up on a trunk.
    pub fn check(mut self) -> Result<VlanConfig, String> {
        let reserved = |what: &str, v: u16| {
            format!("{what} {v} is out of range: VLANs are 0 to {MAX_VLAN} (4095 is reserved by 802.1Q)")
        };
        if let Some(tag) = self.tag.filter(|&t| t > MAX_VLAN) {
            return Err(reserved("tag", tag));
        }
        if let Some(&v) = self.trunks.iter().find(|&&v| v > MAX_VLAN) {
            return Err(reserved("trunk VLAN", v));
        }
        self.trunks.sort_unstable();
        self.trunks.dedup();
        match (self.mode(), self.tag) {
            (VlanMode::Access, None) => Err("vlan_mode=access needs a tag".into()),
            (VlanMode::Access, Some(_)) if !self.trunks.is_empty() => Err(
                "an access port has no trunks: for a port with both, set vlan_mode=native-untagged or native-tagged"
                    .into(),
            ),
            (VlanMode::Trunk, Some(_)) => Err(
                "a trunk port has no tag: for a trunk with a native VLAN, set vlan_mode=native-untagged or native-tagged"
                    .into(),
            ),
            (VlanMode::NativeTagged | VlanMode::NativeUntagged, None) => Err(format!(
                "vlan_mode={} needs a tag (the native VLAN)",
                self.mode().as_str()
            )),
            _ => Ok(self),
        }
    }
}

/// The namespace end of an `add-ns-port` veth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsEnd {
    /// As the user named it: an `ip netns` name or a path.
    pub netns: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: PortKind,
    /// For a port made by `add-ns-port`: the namespace and the name inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Kernel interface index the port is bound to, when attached.
    pub ifindex: Option<u32>,
    /// `None` when the port is attached.
    pub error: Option<String>,
    /// For an attached port whose interface cannot pass frames: why (set down,
    /// no carrier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
    /// `tag`, `trunks` and `vlan_mode`, each present only when set.
    #[serde(flatten)]
    pub vlan: VlanConfig,
    /// The Interface's `options` (a vxlan port's remote_ip, key, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// For a tunnel: the largest inner frame's MTU (the underlay's minus 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// [`PortConfig::external_ids`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
}

/// What `trace` found, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReply {
    pub bridge: String,
    /// The frame traced, as `ovs-appctl ofproto/trace` writes a flow.
    pub flow: String,
    /// One line per stage: ingress, learn, lookup, egress, datapath.
    pub steps: Vec<String>,
    /// The VLAN the frame is in; absent when the ingress port refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Where the frame would go, in port order; empty when it goes nowhere.
    pub output_ports: Vec<String>,
    /// `kernel` (the TC fast path forwards it) or `userspace`; absent when
    /// the frame goes nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<String>,
    /// Why the frame goes nowhere, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<String>,
    /// The mirrors that would copy it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// One answer of `find-ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundPort {
    pub bridge: String,
    /// The port's (and its host interface's) name.
    pub port: String,
    /// For an `add-ns-port` port: its namespace, as given, and the name inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default)]
    pub external_ids: BTreeMap<String, String>,
}

/// What `add-ns-port` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNsPortReply {
    pub bridge: String,
    /// The host end, now a port of `bridge`.
    pub port: String,
    pub netns: String,
    /// The namespace end's name and MAC address.
    pub ifname: String,
    pub mac: String,
    /// `ADDRESS/PREFIX`, as given.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// `fdb-flush`: how many entries went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbFlushReply {
    pub flushed: u64,
}

/// One row of `fdb-show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub port: String,
    pub vlan: u16,
    pub mac: String,
    /// Seconds since a frame from this MAC was last seen (0 for a static entry).
    pub age: u64,
    /// Added with `fdb-add`: never ages.
    #[serde(rename = "static", default)]
    pub is_static: bool,
    /// On a tunnel port: the remote host the address is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// A static MAC entry as the database keeps it (`fdb-add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMac {
    /// As `MacAddr` prints it: lower case, colons.
    pub mac: String,
    #[serde(default)]
    pub vlan: u16,
    pub port: String,
}

/// A bridge's multicast snooping settings, as Open vSwitch's Bridge table names
/// them (`mcast_snooping_enable`, `other_config:mcast-snooping-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McastSnooping {
    /// On by default, as on the kernel bridge (Open vSwitch's default is off).
    pub enable: bool,
    /// Seconds a membership or router port lasts without being heard again.
    pub aging_time: u64,
    /// Groups kept at most; reports for more are counted, their traffic flooded.
    pub table_size: u32,
    /// Traffic to a group no port reported goes to router ports only, not everywhere.
    pub disable_flood_unregistered: bool,
}

impl McastSnooping {
    /// Open vSwitch's bounds and defaults, seconds.
    pub const MIN_AGING_TIME: u64 = 15;
    pub const MAX_AGING_TIME: u64 = 1_000_000;
    pub const MAX_TABLE_SIZE: u32 = 1_000_000;

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for McastSnooping {
    /// Open vSwitch's aging time (300 s) and table size (2048).
    fn default() -> Self {
        McastSnooping {
            enable: true,
            aging_time: 300,
            table_size: 2048,
            disable_flood_unregistered: false,
        }
    }
}

/// One row of `mdb-show`: a port with a member of a group, or one a multicast
/// router (a querier) is behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbEntry {
    pub port: String,
    pub vlan: u16,
    /// The group address; none for a router port.
    pub group: Option<String>,
    /// Seconds since the membership was last reported (or the last query).
    pub age: u64,
}

/// `mdb-stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbStats {
    pub enabled: bool,
    /// Groups in the table now, and at most.
    pub current: u64,
    pub max: u64,
    pub joins: u64,
    pub leaves: u64,
    pub aged: u64,
    pub table_full: u64,
    pub queries: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbStats {
    pub current: u64,
    pub max: u64,
    pub learned: u64,
    pub aged: u64,
    pub evicted: u64,
    pub moved: u64,
}

/// Calls `$then!` with the list of per-port counters: doc, name, the
/// [`CounterLine`] of `dump-ports` that shows it, and its label there. The one
/// place a counter is declared: [`Counters`], the datapath's atomic copy of it and
/// switchctl's rendering are all generated from this list.
#[macro_export]
macro_rules! with_port_counters {
    ($then:ident) => {
        $then! {
            /// Frames received, the kernel fast path's included.
            rx_packets: Totals "rx pkts",
            rx_bytes: Totals "bytes",
            /// Valid frames not forwarded: the sum of the drop reasons.
            rx_drops: Totals "drop",
            /// Frames that could not be read or were malformed: runts, truncated
            /// frames and receive failures.
            rx_errors: Totals "errs",
            tx_packets: Totals "tx pkts",
            tx_bytes: Totals "bytes",
            /// Frames lost because the port's socket or device queue was full.
            tx_drops: Totals "drop",
            /// Frames the kernel refused to send on this port.
            tx_errors: Totals "errs",
            /// Part of `rx_drops`: a multicast or broadcast source address.
            rx_group_src: Reasons "multicast-src",
            /// Part of `rx_drops`: a virtio-net header that makes no sense for its frame.
            rx_bad_vnet: Reasons "bad-vnet-hdr",
            /// Part of `rx_drops`: received while the port was blocked as part of a loop.
            rx_loop: Reasons "loop",
            /// Part of `rx_drops`: a frame with a VLAN tag on an access port.
            rx_vlan_tagged: Reasons "vlan-tagged",
            /// Part of `rx_drops`: a frame of a VLAN the port does not carry.
            rx_vlan_untrunked: Reasons "vlan-not-trunked",
            /// Part of `rx_drops`: to a reserved group address (01:80:C2:00:00:0X:
            /// STP, PAUSE, LACP, 802.1X, LLDP...) the bridge does not relay.
            rx_reserved: Reasons "reserved-dst",
            /// Part of `rx_drops`: lost before switchd could read them, the port's
            /// receive ring or socket queue full (a burst faster than the
            /// datapath thread: the kernel's PACKET_STATISTICS).
            rx_queue_full: Reasons "queue-full",
            /// Part of `rx_drops`: received on a mirror's output port, which
            /// takes no part in switching.
            rx_mirror_output: Reasons "mirror-output",
            /// Part of `rx_errors`: shorter than an Ethernet header.
            rx_runts: Reasons "runt",
            /// Part of `rx_errors`: not received whole.
            rx_truncated: Reasons "truncated",
            /// Part of `rx_packets`: frames the kernel fast path forwarded without
            /// the userspace datapath.
            rx_kernel: Kernel "rx pkts",
            /// Part of `tx_packets`, likewise.
            tx_kernel: Kernel "tx pkts",
            /// Part of `tx_drops`: longer than the port's MTU (on a tunnel port, the
            /// inner frame plus 50 bytes of encapsulation does not fit the
            /// underlay's MTU). Dropped, never fragmented.
            tx_too_big: TxReasons "too-big",
            /// Part of `tx_drops`, on a tunnel port: no route to the remote, or the
            /// underlay interface is down.
            tx_no_route: TxReasons "no-route",
        }
    };
}

macro_rules! define_counters {
    ($( $(#[$doc:meta])* $name:ident: $group:ident $label:literal, )*) => {
        /// A port's counters. Fields absent from an older daemon's reply read as 0.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Counters {
            $( $(#[$doc])* #[serde(default)] pub $name: u64, )*
        }

        impl Counters {
            /// All zero, for `..Counters::ZERO` in constants.
            pub const ZERO: Counters = Counters { $( $name: 0, )* };

            /// Every counter as (name, `dump-ports` line, label, value), in order.
            pub fn fields(&self) -> [(&'static str, CounterLine, &'static str, u64); [$(stringify!($name)),*].len()] {
                [$( (stringify!($name), CounterLine::$group, $label, self.$name), )*]
            }

            /// Adds every counter of `other`.
            pub fn add(&mut self, other: &Counters) {
                $( self.$name += other.$name; )*
            }
        }
    };
}

/// The line of `dump-ports` a counter is shown on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterLine {
    /// The rx and tx lines of `ovs-ofctl dump-ports`.
    Totals,
    /// `rx drop/err reasons:`.
    Reasons,
    /// `kernel fast path:`.
    Kernel,
    /// `tx drop reasons:`.
    TxReasons,
}

with_port_counters!(define_counters);

/// One row of `dump-ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    pub port: String,
    #[serde(flatten)]
    pub counters: Counters,
}

/// Why a call did not produce a result.
#[derive(Debug)]
pub enum CallError {
    /// The daemon could not be reached or the connection broke.
    Io { socket: String, source: io::Error },
    /// The daemon answered with a JSON-RPC error.
    Rpc(RpcError),
    /// The daemon's answer was not valid JSON-RPC.
    BadReply(String),
    /// No answer within the time the caller gave.
    Timeout { socket: String, after: Duration },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Io { socket, source } => match source.kind() {
                io::ErrorKind::PermissionDenied => write!(
                    f,
                    "cannot connect to switchd at {socket}: permission denied (root or switchd's --socket-group only)"
                ),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => write!(
                    f,
                    "cannot connect to switchd at {socket}: {source} (is switchd running?)"
                ),
                _ => write!(f, "talking to switchd at {socket}: {source}"),
            },
            CallError::Rpc(e) => f.write_str(&e.message),
            CallError::BadReply(why) => write!(f, "bad reply from switchd: {why}"),
            CallError::Timeout { socket, after } => write!(
                f,
                "no reply from switchd at {socket} within {} s (--timeout); it may still carry \
                 out the request",
                after.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for CallError {}

/// Sends one request over a fresh connection and waits for its reply.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Value, CallError> {
    exchange(socket, request, timeout).map(|(reply, _)| reply)
}

/// Sends a streaming request ([`Request::is_stream`]) and waits for its reply;
/// then the stream follows on the returned reader (no read timeout). Sending
/// anything on it, or shutting down its writing side, asks switchd to end the
/// stream cleanly.
pub fn open_stream(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(Value, BufReader<UnixStream>), CallError> {
    let (reply, reader) = exchange(socket, request, timeout)?;
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|source| CallError::Io {
            socket: socket.display().to_string(),
            source,
        })?;
    Ok((reply, reader))
}

fn exchange(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(Value, BufReader<UnixStream>), CallError> {
    let io_err = |source| CallError::Io {
        socket: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    let mut envelope = serde_json::to_value(request).expect("requests always serialize");
    envelope["jsonrpc"] = Value::from("2.0");
    envelope["id"] = Value::from(1);
    let mut line = serde_json::to_vec(&envelope).expect("values always serialize");
    line.push(b'\n');
    // A daemon that refuses the connection answers and closes without reading,
    // so the write can fail while its answer waits to be read: read it anyway.
    let written = stream.write_all(&line);
    let mut reply = String::new();
    let mut reader = BufReader::new(stream);
    let read = reader.read_line(&mut reply);
    match (written, read) {
        (Err(e), _) if reply.is_empty() => return Err(io_err(e)),
        (_, Err(e))
            if reply.is_empty()
                && matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
        {
            return Err(CallError::Timeout {
                socket: socket.display().to_string(),
                after: timeout,
            })
        }
        (_, Err(e)) if reply.is_empty() => return Err(io_err(e)),
        _ => {}
    }
    if reply.is_empty() {
        return Err(CallError::BadReply(
            "connection closed without a reply".into(),
        ));
    }
    Ok((parse_reply(&reply)?, reader))
}

/// Splits a JSON-RPC reply line into its result or error.
pub fn parse_reply(line: &str) -> Result<Value, CallError> {
    let mut reply: Value =
        serde_json::from_str(line).map_err(|e| CallError::BadReply(e.to_string()))?;
    if let Some(error) = reply.get("error") {
        let error: RpcError = serde_json::from_value(error.clone())
            .map_err(|e| CallError::BadReply(e.to_string()))?;
        return Err(CallError::Rpc(error));
    }
    match reply.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(CallError::BadReply("neither result nor error".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_that_does_not_answer_in_time_is_a_timeout() {
        let dir =
            std::env::temp_dir().join(format!("switchd-proto-timeout-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let hold = std::thread::spawn(move || listener.accept().map(|(conn, _)| conn));
        let err = call(&dir, &Request::Show {}, Duration::from_millis(200)).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
        assert!(
            err.to_string().contains("within 0.2 s (--timeout)"),
            "{err}"
        );
        drop(hold.join());
    }

    #[test]
    fn an_id_too_big_for_an_integer_comes_back_the_same() {
        let line = br#"{"jsonrpc":"2.0","id":46666666666666666666666666666666666666666666,"method":"list-br"}"#;
        let (id, _) = decode_request(line).expect("decodes");
        let again = serde_json::to_vec(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "list-br"}),
        )
        .expect("serializes");
        assert_eq!(decode_request(&again).expect("decodes").0, id);
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tunnel_options_parse_as_ovs_takes_them() {
        let t = TunnelConfig::from_options(&options(&[
            ("remote_ip", "192.0.2.2"),
            ("key", "16777215"),
            ("dst_port", "8472"),
            ("local_ip", "192.0.2.1"),
            ("ttl", "9"),
            ("tos", "184"),
        ]))
        .unwrap();
        assert_eq!(t.remote_ip, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(
            (t.key, t.dst_port, t.ttl, t.tos),
            (16_777_215, 8472, Some(9), Some(184))
        );
        assert_eq!(TunnelConfig::from_options(&t.options()).unwrap(), t);
        let defaults = TunnelConfig::from_options(&options(&[("remote_ip", "10.0.0.2")])).unwrap();
        assert_eq!((defaults.key, defaults.dst_port), (0, VXLAN_PORT));
        assert_eq!(
            defaults.options(),
            options(&[("key", "0"), ("remote_ip", "10.0.0.2")])
        );
        for (bad, why) in [
            (vec![("key", "1")], "needs options:remote_ip"),
            (vec![("remote_ip", "10.0.0.300")], "not an IPv4 address"),
            (vec![("remote_ip", "fd00::1")], "IPv6"),
            (vec![("remote_ip", "224.0.0.1")], "not a unicast"),
            (vec![("remote_ip", "flow")], "one remote"),
            (
                vec![("remote_ip", "10.0.0.2"), ("key", "16777216")],
                "0 to 16777215",
            ),
            (
                vec![("remote_ip", "10.0.0.2"), ("key", "flow")],
                "not supported",
            ),
            (
                vec![("remote_ip", "10.0.0.2"), ("dst_port", "0")],
                "not a UDP port",
            ),
            (vec![("remote_ip", "10.0.0.2"), ("ttl", "256")], "0 to 255"),
            (
                vec![("remote_ip", "10.0.0.2"), ("csum", "true")],
                "unknown vxlan option",
            ),
        ] {
            let e = TunnelConfig::from_options(&options(&bad)).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn request_json_shape() {
        let req = Request::AddPort {
            bridge: "br0".into(),
            interface: "veth1".into(),
            may_exist: true,
            vlan: VlanConfig::default(),
            kind: PortKind::Vxlan,
            options: options(&[("remote_ip", "192.0.2.2")]),
            external_ids: options(&[("container_id", "c1")]),
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["params"]["external_ids"]["container_id"], "c1");
        assert_eq!(json["params"]["kind"], "vxlan");
        assert_eq!(json["params"]["options"]["remote_ip"], "192.0.2.2");
        assert_eq!(json["method"], "add-port");
        assert_eq!(json["params"]["interface"], "veth1");
        assert_eq!(serde_json::from_value::<Request>(json).unwrap(), req);
    }

    #[test]
    fn optional_params_default() {
        let req: Request =
            serde_json::from_str(r#"{"method":"del-port","params":{"interface":"v1"}}"#).unwrap();
        assert_eq!(
            req,
            Request::DelPort {
                bridge: None,
                interface: "v1".into(),
                if_exists: false
            }
        );
    }

    #[test]
    fn every_method_is_listed() {
        // Every listed name reaches its parameters: with none given it either
        // decodes or is refused for them, never as an unknown method.
        for method in Request::METHODS {
            let line = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{}}}}"#);
            match decode_request(line.as_bytes()) {
                Ok((_, request)) => assert_eq!(request.method(), *method),
                Err(r) => assert_eq!(r.error.code, code::INVALID_PARAMS, "{method}: {r:?}"),
            }
        }
        // And each request says the name it was decoded from.
        let line =
            br#"{"jsonrpc":"2.0","method":"add-ns-port","params":{"bridge":"b","netns":"n"}}"#;
        assert_eq!(decode_request(line).unwrap().1.method(), "add-ns-port");
    }

    #[test]
    fn reply_error_is_split_out() {
        let err = parse_reply(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"no bridge named br9"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no bridge named br9");
        let ok = parse_reply(r#"{"jsonrpc":"2.0","id":1,"result":[1]}"#).unwrap();
        assert_eq!(ok, serde_json::json!([1]));
    }

    #[test]
    fn request_lines_decode_or_say_why() {
        let (id, request) = decode_request(
            br#"{"jsonrpc":"2.0","id":"a","method":"del-br","params":{"bridge":"b"}}"#,
        )
        .unwrap();
        assert_eq!(id, serde_json::json!("a"));
        assert_eq!(
            request,
            Request::DelBr {
                bridge: "b".into(),
                if_exists: false
            }
        );
        // `params` may be left out when every parameter has a default.
        let (id, request) = decode_request(br#"{"jsonrpc":"2.0","method":"show"}"#).unwrap();
        assert_eq!((id, request), (Value::Null, Request::Show {}));

        let rejected = |line: &str| {
            let r = decode_request(line.as_bytes()).unwrap_err();
            (r.id, r.error.code)
        };
        assert_eq!(rejected("{"), (Value::Null, code::PARSE_ERROR));
        assert_eq!(rejected("[1]"), (Value::Null, code::INVALID_REQUEST));
        assert_eq!(
            rejected(r#"{"id":5,"method":"show"}"#),
            (serde_json::json!(5), code::INVALID_REQUEST)
        );
        assert_eq!(
            rejected(r#"{"jsonrpc":"2.0","id":6,"method":"reboot"}"#),
            (serde_json::json!(6), code::METHOD_NOT_FOUND)
        );
        assert_eq!(
            rejected(r#"{"jsonrpc":"2.0","id":7,"method":"add-br","params":{"bridge":1}}"#),
            (serde_json::json!(7), code::INVALID_PARAMS)
        );
    }

    #[test]
    fn port_counters_keep_their_flat_json_shape() {
        let row = PortCounters {
            port: "v1".into(),
            counters: Counters {
                rx_packets: 3,
                tx_kernel: 1,
                ..Counters::default()
            },
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["port"], "v1");
        assert_eq!(json["rx_packets"], 3);
        assert_eq!(json["tx_kernel"], 1);
        assert_eq!(
            json.as_object().unwrap().len(),
            1 + Counters::ZERO.fields().len()
        );
        // A reply from a daemon that did not have a counter yet reads it as 0.
        let old: PortCounters =
            serde_json::from_str(r#"{"port":"v1","rx_packets":3,"rx_bytes":9}"#).unwrap();
        assert_eq!((old.counters.rx_packets, old.counters.rx_kernel), (3, 0));
    }

    #[test]
    fn vlan_columns_are_checked_against_each_other() {
        let cfg = |tag: Option<u16>, trunks: &[u16], mode: Option<VlanMode>| VlanConfig {
            tag,
            trunks: trunks.to_vec(),
            vlan_mode: mode,
        };
        assert_eq!(cfg(Some(10), &[], None).mode(), VlanMode::Access);
        assert_eq!(cfg(None, &[10], None).mode(), VlanMode::Trunk);
        assert_eq!(
            cfg(None, &[20, 10, 20], None).check().unwrap().trunks,
            vec![10, 20]
        );
        let native = cfg(Some(10), &[10, 20], Some(VlanMode::NativeUntagged));
        assert_eq!(native.clone().check(), Ok(native));
        for (bad, why) in [
            (cfg(Some(4095), &[], None), "4095 is reserved"),
            (cfg(None, &[1, 4096], None), "trunk VLAN 4096"),
            (cfg(Some(10), &[20], None), "an access port has no trunks"),
            (cfg(None, &[], Some(VlanMode::Access)), "needs a tag"),
            (
                cfg(Some(3), &[], Some(VlanMode::Trunk)),
                "a trunk port has no tag",
            ),
            (cfg(None, &[], Some(VlanMode::NativeTagged)), "needs a tag"),
        ] {
            let e = bad.clone().check().unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // clear, then set; the wire names of the columns.
        let access = cfg(Some(10), &[], None);
        let set = cfg(Some(20), &[], None);
        assert_eq!(access.changed(&set, &[]).tag, Some(20));
        assert!(access
            .changed(&VlanConfig::default(), &[PortColumn::Tag])
            .is_default());
        assert_eq!("vlan-mode".parse(), Ok(PortColumn::VlanMode));
        assert_eq!("native-untagged".parse(), Ok(VlanMode::NativeUntagged));
        assert!("hybrid".parse::<VlanMode>().is_err());
        let json = serde_json::to_value(cfg(Some(1), &[], Some(VlanMode::NativeTagged))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"tag": 1, "vlan_mode": "native-tagged"})
        );
    }

    #[test]
    fn methods_are_the_requests_names() {
        assert_eq!(Request::METHODS.len(), 31);
        let show = Request::Show {};
        assert_eq!(show.method(), "show");
        let json = serde_json::to_value(&show).unwrap();
        assert_eq!(json["method"], show.method());
        assert!(Request::METHODS.contains(&"add-ns-port"));
    }
}
