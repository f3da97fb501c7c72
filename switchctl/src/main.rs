//! switchctl: the control CLI for switchd, in the manner of ovs-vsctl and ovs-appctl.
//!
//! Every command is one JSON-RPC call; text output is rendered from the same JSON the
//! daemon returns, which `--format json` prints as is.
//! Exit codes: 0 success, 1 error (usage errors included), 2 `br-exists` on a
//! missing bridge.
//!
//! Like ovs-vsctl, commands can be chained with `--` (`switchctl add-br br0 --
//! add-port br0 veth1`); a chain is one transaction: all of it or none.

mod capture;
mod monitor;
mod ovs_vsctl;
mod stream;

use ovs_vsctl::Table;

use anyhow::{anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchd_proto::{
    call, AddNsPort, CaptureReply, CounterLine, FdbEntry, FdbStats, McastSnooping, MdbEntry,
    MdbStats, MirrorConfig, MirrorInfo, PortColumn, PortCounters, PortKind, Request, SetBr,
    ShowReply, TraceReply, VlanConfig, DEFAULT_SOCKET, SOCKET_ENV,
};

#[derive(Parser)]
#[command(name = "switchctl", version, about = "Control a running switchd")]
struct Cli {
    /// switchd's control socket.
    #[arg(long, global = true, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// With add-br and add-port: succeed if it already exists.
    #[arg(long, global = true)]
    may_exist: bool,
    /// With del-br and del-port: succeed if it does not exist.
    #[arg(long, global = true)]
    if_exists: bool,
    /// Seconds to wait for switchd's reply (0: as long as it takes).
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a bridge, with an internal port (a TAP) of the same name.
    AddBr {
        bridge: String,
        /// Do not create the internal port.
        #[arg(long)]
        no_internal: bool,
    },
    /// Delete a bridge and all its ports.
    DelBr { bridge: String },
    /// List bridges.
    ListBr,
    /// Exit 0 if the bridge exists, 2 if not.
    BrExists { bridge: String },
    /// Attach an interface to a bridge, with optional port columns:
    /// add-port BRIDGE INTERFACE [tag=VLAN] [trunks=VLAN,...] [vlan_mode=MODE].
    AddPort {
        bridge: String,
        interface: String,
        #[arg(value_name = "COLUMN=VALUE")]
        settings: Vec<String>,
    },
    /// Set a bridge's, port's or interface's columns, as ovs-vsctl does: set
    /// bridge BRIDGE mcast_snooping_enable=true|false other_config:KEY=VALUE (the
    /// keys of set-br); set port PORT
    /// tag=VLAN trunks=VLAN,... vlan_mode=access|trunk|native-tagged|native-untagged;
    /// set interface IFACE type=vxlan options:remote_ip=IP options:key=VNI
    /// [options:dst_port=N options:local_ip=IP options:ttl=N options:tos=N].
    Set {
        #[arg(value_name = "TABLE")]
        table: String,
        #[arg(value_name = "RECORD")]
        record: String,
        #[arg(required = true, value_name = "COLUMN=VALUE")]
        settings: Vec<String>,
    },
    /// Empty a port's columns: clear port PORT tag|trunks|vlan_mode...
    Clear {
        #[arg(value_name = "TABLE")]
        table: String,
        #[arg(value_name = "RECORD")]
        record: String,
        #[arg(required = true, value_name = "COLUMN")]
        columns: Vec<String>,
    },
    /// Find ports by their columns, as ovs-vsctl does: find interface|port
    /// [name=NAME] [external_ids:KEY=VALUE]... (ovs-vsctl's list layout).
    Find {
        #[arg(value_name = "TABLE")]
        table: String,
        #[arg(value_name = "COLUMN[:KEY]=VALUE")]
        conditions: Vec<String>,
    },
    /// Print columns of a record, as ovs-vsctl does: get interface IFACE
    /// external_ids[:KEY]|options[:KEY]|type|name|mtu, get port PORT
    /// tag|trunks|vlan_mode, get bridge BRIDGE name|protocols.
    Get {
        #[arg(value_name = "TABLE")]
        table: String,
        #[arg(value_name = "RECORD")]
        record: String,
        #[arg(required = true, value_name = "COLUMN[:KEY]")]
        columns: Vec<String>,
    },
    /// Detach an interface: del-port [BRIDGE] INTERFACE.
    DelPort {
        #[arg(num_args = 1..=2, value_names = ["BRIDGE", "INTERFACE"], required = true)]
        names: Vec<String>,
    },
    /// List a bridge's ports.
    ListPorts { bridge: String },
    /// Print the bridge an interface is a port of.
    PortToBr { interface: String },
    /// Show bridges, ports and their state.
    Show,
    /// Show a bridge's MAC learning table.
    FdbShow { bridge: String },
    /// Empty the MAC learning table of one bridge, or of all.
    FdbFlush {
        bridge: Option<String>,
        /// Only the entries of this VLAN.
        #[arg(long, value_name = "VLAN")]
        vlan: Option<u16>,
    },
    /// Show MAC learning table statistics.
    FdbStats { bridge: String },
    /// Show a bridge's multicast snooping table: the ports with members of each
    /// group, then the ports a multicast router (querier) is behind.
    MdbShow { bridge: String },
    /// Empty the multicast snooping table of one bridge, or of all.
    MdbFlush { bridge: Option<String> },
    /// Show multicast snooping statistics.
    MdbStats { bridge: String },
    /// Add a static MAC entry: fdb-add BRIDGE MAC PORT [VLAN], or ovs-appctl's
    /// order, fdb-add BRIDGE PORT VLAN MAC. It never ages and is saved.
    FdbAdd {
        bridge: String,
        #[arg(num_args = 2..=3, required = true, value_names = ["MAC", "PORT", "VLAN"])]
        args: Vec<String>,
    },
    /// Remove a static MAC entry: fdb-del BRIDGE MAC [VLAN], or ovs-appctl's
    /// order, fdb-del BRIDGE VLAN MAC.
    FdbDel {
        bridge: String,
        #[arg(num_args = 1..=2, required = true, value_names = ["MAC", "VLAN"])]
        args: Vec<String>,
    },
    /// What the bridge would do now with a frame, and why, without sending
    /// it (ovs-appctl ofproto/trace): trace BRIDGE in_port=PORT
    /// [dl_src=MAC] [dl_dst=MAC] [dl_vlan=VLAN] [dl_type=0x0800|ip|arp|ipv6];
    /// also as one argument, in_port=p1,dl_dst=...
    Trace {
        bridge: String,
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Print what changes, one line per event, until Ctrl-C: bridges and
    /// ports added and deleted, port states, MAC addresses learned, moved,
    /// aged, evicted and removed, a full MAC table (docs/OBSERVABILITY.md).
    Monitor { bridge: Option<String> },
    /// Stream the frames on a bridge's ports (every port when none is named),
    /// both directions, the kernel fast path's included, as tcpdump would see
    /// them: capture BRIDGE [PORT...] [-c COUNT] [-w FILE|-] [-s SNAPLEN]
    /// [FILTER]. The words after the bridge that name its ports are ports; the
    /// rest is a filter in tcpdump's language (pcap-filter(7)). Without -w, a
    /// line per frame; -w writes pcapng (one interface per port, a direction
    /// per frame), `-w -` to stdout for `| tcpdump -r -` or `| wireshark -k -i -`.
    /// Ends after COUNT frames or on Ctrl-C, then says how many were captured
    /// and dropped (the reader too slow) on stderr.
    Capture {
        bridge: String,
        #[arg(value_name = "PORT|FILTER")]
        words: Vec<String>,
        /// Stop after this many frames.
        #[arg(short = 'c', value_name = "COUNT")]
        count: Option<u64>,
        /// Write pcapng to FILE (`-` for stdout) instead of printing lines.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Bytes kept of each frame (default: all of it, up to 256 KiB).
        #[arg(short = 's', long, value_name = "BYTES")]
        snaplen: Option<u32>,
    },
    /// Add a port mirror, with Open vSwitch's Mirror columns: add-mirror
    /// BRIDGE NAME [select_all=true] [select_src_port=PORT,...]
    /// [select_dst_port=PORT,...] [select_vlan=VLAN,...] (output_port=PORT |
    /// output_vlan=VLAN). Selected frames (received on a src port, sent to a
    /// dst port, or all) are copied once each; the output port then takes no
    /// part in switching.
    AddMirror {
        bridge: String,
        name: String,
        #[arg(value_name = "COLUMN=VALUE")]
        settings: Vec<String>,
    },
    /// Remove a port mirror.
    DelMirror { bridge: String, name: String },
    /// List a bridge's mirrors with what each sent.
    ListMirrors { bridge: String },
    /// Show per-port packet counters.
    DumpPorts {
        bridge: String,
        interface: Option<String>,
    },
    /// Connect a network namespace: create a veth pair, move one end into NETNS
    /// (an `ip netns` name or a path like /proc/PID/ns/net), configure it, and add
    /// the other end to BRIDGE.
    AddNsPort {
        bridge: String,
        netns: String,
        /// Name of the interface inside the namespace.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Name of the host end (default NETNS-IFNAME, or a hash if too long).
        #[arg(long)]
        host_ifname: Option<String>,
        /// Address for the namespace's interface, ADDRESS/PREFIX.
        #[arg(long, value_name = "CIDR")]
        ip: Option<String>,
        /// Default route inside the namespace.
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// MAC address of the namespace's interface.
        #[arg(long)]
        mac: Option<String>,
        /// MTU of both ends.
        #[arg(long)]
        mtu: Option<u32>,
        /// The port's VLAN: an access port of this VLAN (or the native VLAN
        /// with --vlan-mode native-*).
        #[arg(long, value_name = "VLAN")]
        tag: Option<u16>,
        /// The VLANs a trunk port carries, comma-separated.
        #[arg(long, value_name = "VLAN,...", value_delimiter = ',')]
        trunks: Vec<u16>,
        /// access, trunk, native-tagged or native-untagged.
        #[arg(long, value_name = "MODE")]
        vlan_mode: Option<String>,
        /// Record KEY=VALUE in the port's external_ids (repeatable).
        #[arg(long = "external-id", value_name = "KEY=VALUE")]
        external_ids: Vec<String>,
    },
    /// Undo add-ns-port: remove the port and delete its veth pair.
    DelNsPort {
        bridge: String,
        netns: String,
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// Change bridge settings: set-br BRIDGE mac-aging-time=SECS mac-table-size=N
    /// forward-bpdu=true|false group-fwd-mask=MASK mcast-snooping-enable=true|false
    /// mcast-snooping-aging-time=SECS mcast-snooping-table-size=N
    /// mcast-snooping-disable-flood-unregistered=true|false.
    SetBr {
        bridge: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // exec() may pass no argv at all, not even the program's name.
    let (program, rest) = match args.split_first() {
        Some((program, rest)) => (program.as_str(), rest),
        None => ("switchctl", &[][..]),
    };
    // Installed (or linked) under that name, this binary is ovs-vsctl's
    // stand-in for the tools that call it.
    if std::path::Path::new(program).file_name() == Some("ovs-vsctl".as_ref()) {
        return ovs_vsctl::main(rest);
    }
    // Split the chain at `--`; each later part is parsed as a command line of its
    // own, of which only the command and its --may-exist/--if-exists count.
    let mut parts: Vec<Vec<&str>> = rest
        .split(|a| a == "--")
        .filter(|part| !part.is_empty())
        .map(|part| part.iter().map(String::as_str).collect())
        .collect();
    // ovs-vsctl's `[options] -- [options] command`: options alone go with the
    // command after them.
    if parts.len() > 1 && options_only(program, &parts[0]) {
        let options = parts.remove(0);
        parts[0].splice(0..0, options);
    }
    let parsed = parts
        .iter()
        .map(|part| Cli::try_parse_from(std::iter::once(program).chain(part.iter().copied())))
        .collect::<Result<Vec<Cli>, _>>();
    let clis = match parsed {
        Ok(clis) => clis,
        // Usage errors exit 1 like ovs-vsctl, not clap's 2, which `br-exists`
        // uses for "no such bridge".
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let result = if clis.len() == 1 {
        run(clis.into_iter().next().expect("one"))
    } else {
        run_chain(&clis)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `part` is a command line's options without a command.
fn options_only(program: &str, part: &[&str]) -> bool {
    use clap::error::ErrorKind;
    match Cli::try_parse_from(std::iter::once(program).chain(part.iter().copied())) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ),
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the output, not
/// in a panic.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

impl Cli {
    /// How long to wait for switchd: `--timeout`, 0 for as long as it takes
    /// (as ovs-vsctl; a day stands for that).
    fn wait(&self) -> Duration {
        match self.timeout {
            0 => ovs_vsctl::NO_TIMEOUT,
            secs => Duration::from_secs(secs),
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // find and get are ovs-vsctl's, with its output: its stand-in runs them.
    let words = match &cli.command {
        Command::Find { table, conditions } => Some(
            ["find", table.as_str()]
                .into_iter()
                .map(str::to_string)
                .chain(conditions.iter().cloned())
                .collect::<Vec<_>>(),
        ),
        Command::Get {
            table,
            record,
            columns,
        } => Some(
            ["get", table.as_str(), record.as_str()]
                .into_iter()
                .map(str::to_string)
                .chain(columns.iter().cloned())
                .collect(),
        ),
        _ => None,
    };
    if let Some(mut words) = words {
        if cli.if_exists {
            words.insert(0, "--if-exists".to_string());
        }
        words.insert(0, format!("--timeout={}", cli.timeout));
        if cli.format == Format::Json {
            words.insert(0, "--format=json".to_string());
        }
        return ovs_vsctl::run_with(&words, &cli.socket, cli.format == Format::Json);
    }
    if let Command::Capture {
        bridge,
        words,
        count,
        write,
        snaplen,
    } = &cli.command
    {
        return run_capture(&cli, bridge, words, *count, write.as_deref(), *snaplen);
    }
    let request = to_request(&cli)?;
    if let Command::Monitor { .. } = cli.command {
        let json = cli.format == Format::Json;
        return monitor::run(&cli.socket, &request, json, cli.wait());
    }
    let result = call(&cli.socket, &request, cli.wait())?;
    let exit = match (&cli.command, &result) {
        (Command::BrExists { .. }, Value::Bool(false)) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    };
    let text = match cli.format {
        Format::Json => format!("{result}\n"),
        Format::Text => render(&cli.command, result)?,
    };
    emit(&text)?;
    Ok(exit)
}

/// Sends a chain of commands as one batch and prints each one's output in turn.
fn run_chain(clis: &[Cli]) -> anyhow::Result<ExitCode> {
    let first = &clis[0];
    let commands = clis.iter().map(to_request).collect::<anyhow::Result<_>>()?;
    let result = call(&first.socket, &Request::Batch { commands }, first.wait())?;
    let results: Vec<Value> = serde_json::from_value(result.clone())?;
    // As one command: 2 if a bridge br-exists asked for is not there.
    let exit =
        if clis.iter().zip(&results).any(|(cli, r)| {
            matches!(cli.command, Command::BrExists { .. }) && *r == Value::Bool(false)
        }) {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    if first.format == Format::Json {
        emit(&format!("{result}\n"))?;
        return Ok(exit);
    }
    let mut text = String::new();
    for (cli, result) in clis.iter().zip(results) {
        text.push_str(&render(&cli.command, result)?);
    }
    emit(&text)?;
    Ok(exit)
}

fn to_request(cli: &Cli) -> anyhow::Result<Request> {
    let (may_exist, if_exists) = (cli.may_exist, cli.if_exists);
    Ok(match &cli.command {
        Command::AddBr {
            bridge,
            no_internal,
        } => Request::AddBr {
            bridge: bridge.clone(),
            may_exist,
            no_internal: *no_internal,
        },
        Command::AddNsPort {
            bridge,
            netns,
            ifname,
            host_ifname,
            ip,
            gateway,
            mac,
            mtu,
            tag,
            trunks,
            vlan_mode,
            external_ids,
        } => Request::AddNsPort(AddNsPort {
            bridge: bridge.clone(),
            netns: netns.clone(),
            ifname: Some(ifname.clone()),
            host_ifname: host_ifname.clone(),
            ip: ip.clone(),
            gateway: gateway.clone(),
            mac: mac.clone(),
            mtu: *mtu,
            may_exist,
            vlan: VlanConfig {
                tag: *tag,
                trunks: trunks.clone(),
                vlan_mode: vlan_mode
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e: String| anyhow!(e))?,
            },
            external_ids: external_ids
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("--external-id {kv:?}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?,
        }),
        Command::DelNsPort {
            bridge,
            netns,
            ifname,
        } => Request::DelNsPort {
            bridge: bridge.clone(),
            netns: netns.clone(),
            ifname: Some(ifname.clone()),
            if_exists,
        },
        Command::DelBr { bridge } => Request::DelBr {
            bridge: bridge.clone(),
            if_exists,
        },
        Command::ListBr => Request::ListBr {},
        Command::BrExists { bridge } => Request::BrExists {
            bridge: bridge.clone(),
        },
        Command::AddPort {
            bridge,
            interface,
            settings,
        } => Request::AddPort {
            bridge: bridge.clone(),
            interface: interface.clone(),
            may_exist,
            vlan: port_columns(settings)?,
            kind: PortKind::System,
            options: BTreeMap::new(),
            external_ids: BTreeMap::new(),
        },
        Command::Set {
            table,
            record,
            settings,
        } => {
            let table = match table.to_ascii_lowercase().as_str() {
                "bridge" => Table::Bridge,
                "interface" => Table::Interface,
                _ => {
                    port_table(table)?;
                    Table::Port
                }
            };
            set_request(table, record, settings)?
        }
        Command::Clear {
            table,
            record,
            columns,
        } => {
            port_table(table)?;
            Request::SetPort {
                port: record.clone(),
                set: VlanConfig::default(),
                clear: columns
                    .iter()
                    .map(|c| c.parse().map_err(|e: String| anyhow!(e)))
                    .collect::<anyhow::Result<_>>()?,
            }
        }
        Command::DelPort { names } => {
            let (bridge, interface) = match names.as_slice() {
                [iface] => (None, iface.clone()),
                [bridge, iface] => (Some(bridge.clone()), iface.clone()),
                _ => unreachable!("clap enforces one or two names"),
            };
            Request::DelPort {
                bridge,
                interface,
                if_exists,
            }
        }
        Command::ListPorts { bridge } => Request::ListPorts {
            bridge: bridge.clone(),
        },
        Command::PortToBr { interface } => Request::PortToBr {
            interface: interface.clone(),
        },
        Command::Show => Request::Show {},
        Command::FdbShow { bridge } => Request::FdbShow {
            bridge: bridge.clone(),
        },
        Command::FdbFlush { bridge, vlan } => Request::FdbFlush {
            bridge: bridge.clone(),
            vlan: *vlan,
        },
        Command::FdbStats { bridge } => Request::FdbStats {
            bridge: bridge.clone(),
        },
        Command::MdbShow { bridge } => Request::MdbShow {
            bridge: bridge.clone(),
        },
        Command::MdbFlush { bridge } => Request::MdbFlush {
            bridge: bridge.clone(),
        },
        Command::MdbStats { bridge } => Request::MdbStats {
            bridge: bridge.clone(),
        },
        Command::FdbAdd { bridge, args } => {
            // A MAC has colons; a port name cannot (the kernel's rule).
            let (mac, port, vlan) = match args.as_slice() {
                [mac, port] if mac.contains(':') => (mac, port, None),
                [mac, port, vlan] if mac.contains(':') => (mac, port, Some(vlan)),
                [port, vlan, mac] if mac.contains(':') => (mac, port, Some(vlan)),
                _ => bail!("usage: fdb-add BRIDGE MAC PORT [VLAN] (or BRIDGE PORT VLAN MAC)"),
            };
            Request::FdbAdd {
                bridge: bridge.clone(),
                port: port.clone(),
                mac: mac.clone(),
                vlan: vlan.map(|v| vlan_arg(v)).transpose()?.unwrap_or(0),
            }
        }
        Command::FdbDel { bridge, args } => {
            let (mac, vlan) = match args.as_slice() {
                [mac] => (mac, None),
                [mac, vlan] if mac.contains(':') => (mac, Some(vlan)),
                [vlan, mac] if mac.contains(':') => (mac, Some(vlan)),
                _ => bail!("usage: fdb-del BRIDGE MAC [VLAN] (or BRIDGE VLAN MAC)"),
            };
            Request::FdbDel {
                bridge: bridge.clone(),
                mac: mac.clone(),
                vlan: vlan.map(|v| vlan_arg(v)).transpose()?.unwrap_or(0),
                if_exists,
            }
        }
        Command::Trace { bridge, fields } => trace_request(bridge, fields)?,
        Command::Monitor { bridge } => Request::Monitor {
            bridge: bridge.clone(),
        },
        Command::DumpPorts { bridge, interface } => Request::DumpPorts {
            bridge: bridge.clone(),
            interface: interface.clone(),
        },
        Command::SetBr { bridge, settings } => bridge_settings(bridge, settings)?,
        Command::Find { .. } | Command::Get { .. } => {
            bail!("find and get cannot be chained with other commands in switchctl (ovs-vsctl can)")
        }
        Command::Capture { .. } => bail!("capture streams; it cannot be chained"),
        Command::AddMirror {
            bridge,
            name,
            settings,
        } => Request::AddMirror {
            bridge: bridge.clone(),
            mirror: mirror_columns(name, settings)?,
            may_exist,
        },
        Command::DelMirror { bridge, name } => Request::DelMirror {
            bridge: bridge.clone(),
            name: name.clone(),
            if_exists,
        },
        Command::ListMirrors { bridge } => Request::ListMirrors {
            bridge: bridge.clone(),
        },
    })
}

fn run_capture(
    cli: &Cli,
    bridge: &str,
    words: &[String],
    count: Option<u64>,
    write: Option<&std::path::Path>,
    snaplen: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let timeout = cli.wait();
    let names: Vec<String> = serde_json::from_value(call(
        &cli.socket,
        &Request::ListPorts {
            bridge: bridge.to_string(),
        },
        timeout,
    )?)?;
    let split = words
        .iter()
        .position(|w| !names.contains(w))
        .unwrap_or(words.len());
    let filter = words[split..].join(" ");
    let request = Request::Capture {
        bridge: bridge.to_string(),
        ports: words[..split].to_vec(),
        count,
        snaplen,
        filter: (!filter.is_empty()).then_some(filter),
    };
    // The file first: a capture is not started for output that cannot be written.
    let output = match write {
        None => capture::Output::Lines {
            json: cli.format == Format::Json,
        },
        Some(path) if path.as_os_str() == "-" => {
            capture::Output::Pcapng(Box::new(std::io::stdout()))
        }
        Some(path) => capture::Output::Pcapng(Box::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?,
        )),
    };
    let (reply, stream) =
        switchd_proto::open_stream(&cli.socket, &request, timeout).map_err(|e| {
            match (&e, words.get(split)) {
                (switchd_proto::CallError::Rpc(_), Some(word))
                    if e.to_string().contains("filter") =>
                {
                    anyhow!("{e} ({bridge} has no port named {word}, so it was read as a filter)")
                }
                _ => e.into(),
            }
        })?;
    let reply: CaptureReply = serde_json::from_value(reply)?;
    for (port, why) in &reply.skipped {
        eprintln!("switchctl: not capturing {port}: {why}");
    }
    eprintln!(
        "switchctl: capturing on {} ({}), snapshot length {} bytes",
        reply.ports.join(", "),
        bridge,
        reply.snaplen
    );
    let summary = capture::follow(stream, output)?;
    eprintln!(
        "{} packets captured\n{} packets received by filter\n{} packets dropped (reader too slow)",
        summary.captured, summary.accepted, summary.dropped
    );
    Ok(ExitCode::SUCCESS)
}

/// `in_port=p1 dl_dst=...`, or ovs-appctl's one flow argument `in_port=p1,dl_dst=...`.
fn trace_request(bridge: &str, fields: &[String]) -> anyhow::Result<Request> {
    let (mut in_port, mut dl_src, mut dl_dst, mut dl_vlan, mut dl_type) =
        (None, None, None, None, None);
    for field in fields.iter().flat_map(|f| f.split(',')) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| anyhow!("{field:?}: expected FIELD=VALUE"))?;
        let value = value.to_string();
        match key {
            "in_port" => in_port = Some(value),
            "dl_src" => dl_src = Some(value),
            "dl_dst" => dl_dst = Some(value),
            "dl_vlan" => {
                dl_vlan = Some(
                    value
                        .parse()
                        .map_err(|_| anyhow!("dl_vlan: {value:?} is not a VLAN id"))?,
                )
            }
            "dl_type" => dl_type = Some(value),
            _ => bail!("unknown field {key:?} (known: in_port, dl_src, dl_dst, dl_vlan, dl_type)"),
        }
    }
    Ok(Request::Trace {
        bridge: bridge.to_string(),
        in_port: in_port.ok_or_else(|| anyhow!("trace needs in_port=PORT"))?,
        dl_src,
        dl_dst,
        dl_vlan,
        dl_type,
    })
}

fn vlan_arg(v: &str) -> anyhow::Result<u16> {
    v.parse()
        .map_err(|_| anyhow!("VLAN {v:?} is not a VLAN id (0 to 4094)"))
}

/// `set TABLE RECORD COLUMN=VALUE...` once the table is known: switchctl's
/// `set` and ovs-vsctl's make the same request.
fn set_request(table: Table, record: &str, settings: &[String]) -> anyhow::Result<Request> {
    let record = record.to_string();
    Ok(match table {
        Table::Bridge => {
            let settings: Vec<String> = settings
                .iter()
                .map(|s| {
                    s.strip_prefix("other_config:")
                        .or_else(|| s.strip_prefix("other-config:"))
                        .unwrap_or(s)
                        .to_string()
                })
                .collect();
            bridge_settings(&record, &settings)?
        }
        Table::Port => {
            let (set, clear) = port_set(settings)?;
            Request::SetPort {
                port: record,
                set,
                clear,
            }
        }
        Table::Interface => {
            let (kind, options, external_ids) = interface_columns(settings)?;
            Request::SetInterface {
                interface: record,
                kind,
                options,
                external_ids,
            }
        }
    })
}

/// The tables `set` and `clear` know (ovs-vsctl's names, any case).
fn port_table(table: &str) -> anyhow::Result<()> {
    match table.to_ascii_lowercase().as_str() {
        "port" => Ok(()),
        _ => bail!(
            "table {table:?}: switchd sets the bridge, port and interface tables and clears \
             only the port table"
        ),
    }
}

/// An Interface's `type`, `options` and `external_ids` as a `set` gives them.
type InterfaceColumns = (
    Option<PortKind>,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

/// `type=vxlan options:remote_ip=192.0.2.2 options:key=42
/// external_ids:container_id=c1`, as ovs-vsctl writes the Interface table's
/// columns; the daemon checks the options.
fn interface_columns(settings: &[String]) -> anyhow::Result<InterfaceColumns> {
    let mut kind = None;
    let mut options = BTreeMap::new();
    let mut external_ids = BTreeMap::new();
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow!("{setting:?}: expected COLUMN=VALUE or options:KEY=VALUE"))?;
        // ovs-vsctl quotes values that need it: options:remote_ip="192.0.2.2".
        let value = value.trim().trim_matches('"');
        match key.split_once(':') {
            Some(("options", option)) => {
                options.insert(option.to_string(), value.to_string());
            }
            Some(("external_ids" | "external-ids", id)) => {
                external_ids.insert(id.to_string(), value.to_string());
            }
            None if key == "type" => kind = Some(value.parse().map_err(|e: String| anyhow!(e))?),
            _ => bail!(
                "unknown interface column {key:?} (known: type, options:KEY, external_ids:KEY)"
            ),
        }
    }
    Ok((kind, options, external_ids))
}

/// `tag=10 trunks=10,20 vlan_mode=native-untagged`, as ovs-vsctl writes the
/// Port table's columns (`trunks=[10,20]` too). The daemon checks them together.
/// `add-mirror`'s columns, named as in Open vSwitch's Mirror table.
fn mirror_columns(name: &str, settings: &[String]) -> anyhow::Result<MirrorConfig> {
    let list = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut m = MirrorConfig {
        name: name.to_string(),
        ..MirrorConfig::default()
    };
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow!("{setting:?}: expected COLUMN=VALUE"))?;
        match key.replace('-', "_").as_str() {
            "select_all" => {
                m.select_all = value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("select_all: {value:?} is not true or false"))?
            }
            "select_src_port" => m.select_src_port = list(value),
            "select_dst_port" => m.select_dst_port = list(value),
            "select_vlan" => {
                m.select_vlan = list(value)
                    .iter()
                    .map(|v| vlan_arg(v))
                    .collect::<anyhow::Result<_>>()?
            }
            "output_port" => m.output_port = Some(value.trim().to_string()),
            "output_vlan" => m.output_vlan = Some(vlan_arg(value.trim())?),
            _ => bail!(
                "unknown mirror column {key:?} (known: select_all, select_src_port, \
                 select_dst_port, select_vlan, output_port, output_vlan)"
            ),
        }
    }
    Ok(m)
}

fn port_columns(settings: &[String]) -> anyhow::Result<VlanConfig> {
    let vlan_id = |column: &str, v: &str| -> anyhow::Result<u16> {
        v.trim()
            .parse()
            .map_err(|_| anyhow!("{column}: {v:?} is not a VLAN id (0 to 4094)"))
    };
    let mut vlan = VlanConfig::default();
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow!("{setting:?}: expected COLUMN=VALUE"))?;
        match key.replace('-', "_").as_str() {
            "tag" => vlan.tag = Some(vlan_id("tag", value)?),
            "trunks" => {
                let list = value.trim().trim_start_matches('[').trim_end_matches(']');
                // LXC writes `trunks=10,20,`.
                let list = list.strip_suffix(',').unwrap_or(list);
                vlan.trunks = list
                    .split(',')
                    .map(|v| vlan_id("trunks", v))
                    .collect::<anyhow::Result<_>>()?;
            }
            "vlan_mode" => vlan.vlan_mode = Some(value.parse().map_err(|e: String| anyhow!(e))?),
            _ => bail!("unknown port column {key:?} (known: tag, trunks, vlan_mode)"),
        }
    }
    Ok(vlan)
}

/// `set port`'s columns: as `port_columns`, and `COLUMN=[]` empties one, as
/// in ovs-vsctl (`set port p vlan_mode=access tag=7 trunks=[]`).
fn port_set(settings: &[String]) -> anyhow::Result<(VlanConfig, Vec<PortColumn>)> {
    let mut clear = Vec::new();
    let mut set = Vec::new();
    for setting in settings {
        match setting.split_once('=') {
            Some((column, value)) if value.trim() == "[]" => {
                clear.push(column.parse().map_err(|e: String| anyhow!(e))?)
            }
            _ => set.push(setting.clone()),
        }
    }
    Ok((port_columns(&set)?, clear))
}

/// `set-br`'s KEY=VALUE settings (also `set bridge`'s columns) as a request.
fn bridge_settings(bridge: &str, settings: &[String]) -> anyhow::Result<Request> {
    let (mut mac_aging_time, mut mac_table_size) = (None, None);
    let (mut forward_bpdu, mut group_fwd_mask) = (None, None);
    let (mut mcast_snooping_enable, mut mcast_snooping_aging_time) = (None, None);
    let (mut mcast_snooping_table_size, mut mcast_snooping_disable_flood_unregistered) =
        (None, None);
    let boolean = |key: &str, value: &str| -> anyhow::Result<Option<bool>> {
        Ok(Some(value.parse().map_err(|_| {
            anyhow!("{key}: {value:?} is neither true nor false")
        })?))
    };
    let number = |key: &str, value: &str, what: &str, e: std::num::ParseIntError| {
        anyhow!("{key}: {value:?} is not a whole number{what}: {e}")
    };
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow!("{setting:?}: expected KEY=VALUE"))?;
        let key = key.replace('_', "-");
        match key.as_str() {
            "mac-aging-time" => {
                mac_aging_time = Some(
                    value
                        .parse()
                        .map_err(|e| number(&key, value, " of seconds", e))?,
                )
            }
            "mac-table-size" => {
                mac_table_size = Some(value.parse().map_err(|e| number(&key, value, "", e))?)
            }
            "forward-bpdu" => forward_bpdu = boolean(&key, value)?,
            "group-fwd-mask" => {
                let parsed = match value.strip_prefix("0x") {
                    Some(hex) => u16::from_str_radix(hex, 16),
                    None => value.parse(),
                };
                group_fwd_mask = Some(parsed.map_err(|_| {
                    anyhow!("group-fwd-mask: {value:?} is not a 16-bit mask (0 to 0xffff)")
                })?)
            }
            "mcast-snooping-enable" => mcast_snooping_enable = boolean(&key, value)?,
            "mcast-snooping-aging-time" => {
                mcast_snooping_aging_time = Some(
                    value
                        .parse()
                        .map_err(|e| number(&key, value, " of seconds", e))?,
                )
            }
            "mcast-snooping-table-size" => {
                mcast_snooping_table_size =
                    Some(value.parse().map_err(|e| number(&key, value, "", e))?)
            }
            "mcast-snooping-disable-flood-unregistered" => {
                mcast_snooping_disable_flood_unregistered = boolean(&key, value)?
            }
            _ => bail!(
                "unknown bridge setting {key:?} (known: mac-aging-time, mac-table-size, \
                 forward-bpdu, group-fwd-mask, mcast-snooping-enable, \
                 mcast-snooping-aging-time, mcast-snooping-table-size, \
                 mcast-snooping-disable-flood-unregistered)"
            ),
        }
    }
    Ok(Request::SetBr(SetBr {
        bridge: bridge.to_string(),
        mac_aging_time,
        mac_table_size,
        forward_bpdu,
        group_fwd_mask,
        mcast_snooping_enable,
        mcast_snooping_aging_time,
        mcast_snooping_table_size,
        mcast_snooping_disable_flood_unregistered,
    }))
}

fn lines(names: Value) -> anyhow::Result<String> {
    let names: Vec<String> = serde_json::from_value(names)?;
    Ok(names.iter().map(|n| format!("{n}\n")).collect())
}

fn render(command: &Command, result: Value) -> anyhow::Result<String> {
    Ok(match command {
        Command::ListBr | Command::ListPorts { .. } => lines(result)?,
        Command::PortToBr { .. } => format!("{}\n", result.as_str().unwrap_or_default()),
        Command::Show => render_show(&serde_json::from_value(result)?),
        Command::FdbShow { .. } => render_fdb(&serde_json::from_value::<Vec<_>>(result)?),
        Command::FdbFlush { .. } => "table successfully flushed\n".to_string(),
        Command::FdbStats { bridge } => render_fdb_stats(bridge, &serde_json::from_value(result)?),
        Command::MdbShow { .. } => render_mdb(&serde_json::from_value::<Vec<_>>(result)?),
        Command::MdbFlush { .. } => "table successfully flushed\n".to_string(),
        Command::MdbStats { bridge } => render_mdb_stats(bridge, &serde_json::from_value(result)?),
        Command::DumpPorts { bridge, .. } => {
            render_ports(bridge, &serde_json::from_value::<Vec<_>>(result)?)
        }
        Command::Trace { .. } => render_trace(&serde_json::from_value(result)?),
        Command::ListMirrors { .. } => {
            let mirrors: Vec<MirrorInfo> = serde_json::from_value(result)?;
            let mut out = String::new();
            for m in &mirrors {
                render_mirror(&mut out, m, "");
            }
            out
        }
        Command::AddBr { .. }
        | Command::DelBr { .. }
        | Command::BrExists { .. }
        | Command::AddPort { .. }
        | Command::Set { .. }
        | Command::Clear { .. }
        | Command::FdbAdd { .. }
        | Command::FdbDel { .. }
        | Command::DelPort { .. }
        | Command::AddNsPort { .. }
        | Command::DelNsPort { .. }
        | Command::SetBr { .. }
        | Command::Monitor { .. }
        | Command::Find { .. }
        | Command::Get { .. }
        | Command::Capture { .. }
        | Command::AddMirror { .. }
        | Command::DelMirror { .. } => String::new(),
    })
}

/// As `ovs-appctl ofproto/trace` lays a trace out: the flow, the bridge's
/// numbered steps, then the outcome.
fn render_trace(t: &TraceReply) -> String {
    let mut out = format!("Flow: {}\n\n", t.flow);
    let title = format!("bridge(\"{}\")", t.bridge);
    let _ = writeln!(out, "{title}\n{}", "-".repeat(title.len()));
    for (i, step) in t.steps.iter().enumerate() {
        let _ = writeln!(out, "{:2}. {step}", i + 1);
    }
    out.push('\n');
    match (&t.drop, t.output_ports.is_empty()) {
        (Some(why), _) => {
            let _ = writeln!(out, "Output ports: none (drop: {why})");
        }
        (None, true) => {
            let _ = writeln!(out, "Output ports: none");
        }
        (None, false) => {
            let _ = writeln!(out, "Output ports: {}", t.output_ports.join(", "));
        }
    }
    if let Some(datapath) = &t.datapath {
        let _ = writeln!(out, "Datapath: {datapath}");
    }
    out
}

/// A tree like `ovs-vsctl show`, 4-space indents.
fn render_show(show: &ShowReply) -> String {
    let mut out = String::new();
    for b in &show.bridges {
        let _ = writeln!(out, "Bridge {}", b.name);
        let _ = writeln!(out, "    mac-aging-time: {}", b.mac_aging_time);
        let _ = writeln!(out, "    mac-table-size: {}", b.mac_table_size);
        let (m, default) = (&b.mcast_snooping, McastSnooping::default());
        if !m.enable {
            let _ = writeln!(out, "    mcast-snooping-enable: false");
        }
        if m.aging_time != default.aging_time {
            let _ = writeln!(out, "    mcast-snooping-aging-time: {}", m.aging_time);
        }
        if m.table_size != default.table_size {
            let _ = writeln!(out, "    mcast-snooping-table-size: {}", m.table_size);
        }
        if m.disable_flood_unregistered {
            let _ = writeln!(out, "    mcast-snooping-disable-flood-unregistered: true");
        }
        match b.group_fwd_mask {
            0 => {}
            u16::MAX => {
                let _ = writeln!(out, "    forward-bpdu: true");
            }
            mask => {
                let _ = writeln!(out, "    group-fwd-mask: {mask:#06x}");
            }
        }
        for p in &b.ports {
            let _ = writeln!(out, "    Port {}", p.name);
            if p.kind != PortKind::System {
                let _ = writeln!(out, "        type: {}", p.kind.as_str());
            }
            if !p.options.is_empty() {
                let options: Vec<String> = p
                    .options
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                let _ = writeln!(out, "        options: {{{}}}", options.join(", "));
            }
            if let Some(mtu) = p.mtu {
                let _ = writeln!(out, "        mtu: {mtu}");
            }
            if !p.external_ids.is_empty() {
                let _ = writeln!(
                    out,
                    "        external_ids: {}",
                    ovs_vsctl::map(&p.external_ids)
                );
            }
            if let (Some(netns), Some(peer)) = (&p.netns, &p.peer) {
                let _ = writeln!(out, "        netns: {netns} ({peer})");
            }
            if let Some(tag) = p.vlan.tag {
                let _ = writeln!(out, "        tag: {tag}");
            }
            if !p.vlan.trunks.is_empty() {
                let trunks: Vec<String> = p.vlan.trunks.iter().map(u16::to_string).collect();
                let _ = writeln!(out, "        trunks: [{}]", trunks.join(", "));
            }
            if let Some(mode) = p.vlan.vlan_mode {
                let _ = writeln!(out, "        vlan_mode: {}", mode.as_str());
            }
            match (&p.error, &p.down) {
                (None, None) => {
                    let _ = writeln!(out, "        state: up");
                }
                (None, Some(why)) => {
                    let _ = writeln!(out, "        state: down ({why})");
                }
                (Some(why), _) => {
                    let _ = writeln!(out, "        state: error: {why}");
                }
            }
        }
        for m in &b.mirrors {
            render_mirror(&mut out, m, "    ");
        }
    }
    out
}

/// A mirror as `ovs-vsctl list mirror` would name its columns.
fn render_mirror(out: &mut String, m: &MirrorInfo, indent: &str) {
    let c = &m.config;
    let _ = writeln!(out, "{indent}Mirror {}", c.name);
    let ports = |names: &[String]| format!("[{}]", names.join(", "));
    if c.select_all {
        let _ = writeln!(out, "{indent}    select_all: true");
    }
    if !c.select_src_port.is_empty() {
        let _ = writeln!(
            out,
            "{indent}    select_src_port: {}",
            ports(&c.select_src_port)
        );
    }
    if !c.select_dst_port.is_empty() {
        let _ = writeln!(
            out,
            "{indent}    select_dst_port: {}",
            ports(&c.select_dst_port)
        );
    }
    if !c.select_vlan.is_empty() {
        let vlans: Vec<String> = c.select_vlan.iter().map(u16::to_string).collect();
        let _ = writeln!(out, "{indent}    select_vlan: [{}]", vlans.join(", "));
    }
    if let Some(p) = &c.output_port {
        let _ = writeln!(out, "{indent}    output_port: {p}");
    }
    if let Some(v) = c.output_vlan {
        let _ = writeln!(out, "{indent}    output_vlan: {v}");
    }
    let dropped = match m.tx_dropped {
        0 => String::new(),
        n => format!(", tx_dropped={n}"),
    };
    let _ = writeln!(
        out,
        "{indent}    statistics: {{tx_bytes={}{dropped}, tx_packets={}}}",
        m.tx_bytes, m.tx_packets
    );
}

/// Columns as `ovs-appctl fdb/show`, with port names instead of numbers.
/// A MAC behind a tunnel gets its remote in a last column.
fn render_fdb(rows: &[FdbEntry]) -> String {
    let width = rows.iter().map(|r| r.port.len()).max().unwrap_or(0).max(4);
    let remotes = rows.iter().any(|r| r.remote.is_some());
    let mut out = format!("{:>width$}  VLAN  MAC                Age", "port");
    out.push_str(if remotes { "  Remote\n" } else { "\n" });
    for r in rows {
        let age = if r.is_static {
            "static".to_string()
        } else {
            r.age.to_string()
        };
        let mut line = format!("{:>width$}  {:>4}  {}  {:>3}", r.port, r.vlan, r.mac, age);
        if let Some(remote) = &r.remote {
            let _ = write!(line, "  {remote}");
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The layout of `ovs-appctl mdb/show`: member ports, then router ports as
/// `querier`.
fn render_mdb(rows: &[MdbEntry]) -> String {
    let width = rows.iter().map(|r| r.port.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:>width$}  VLAN  GROUP                Age\n", "port");
    for r in rows {
        let group = r.group.as_deref().unwrap_or("querier");
        let _ = writeln!(
            out,
            "{:>width$}  {:>4}  {group:<19}  {:>3}",
            r.port, r.vlan, r.age
        );
    }
    out
}

/// In the layout of `fdb-stats`.
fn render_mdb_stats(bridge: &str, s: &MdbStats) -> String {
    format!(
        "Statistics for bridge \"{bridge}\":\n  \
         Multicast snooping                       : {}\n  \
         Current/maximum groups in the table      : {}/{}\n  \
         Total number of membership reports       : {}\n  \
         Total number of leaves                   : {}\n  \
         Total number of expired entries          : {}\n  \
         Reports not learned, the table full      : {}\n  \
         Total number of queries                  : {}\n",
        if s.enabled { "enabled" } else { "disabled" },
        s.current,
        s.max,
        s.joins,
        s.leaves,
        s.aged,
        s.table_full,
        s.queries
    )
}

/// The layout of `ovs-appctl fdb/stats-show`.
fn render_fdb_stats(bridge: &str, s: &FdbStats) -> String {
    format!(
        "Statistics for bridge \"{bridge}\":\n  \
         Current/maximum MAC entries in the table: {}/{}\n  \
         Total number of learned MAC entries     : {}\n  \
         Total number of expired MAC entries     : {}\n  \
         Total number of evicted MAC entries     : {}\n  \
         Total number of port moved MAC entries  : {}\n",
        s.current, s.max, s.learned, s.aged, s.evicted, s.moved
    )
}

/// The layout of `ovs-ofctl dump-ports`, then one line each for the drop and
/// error reasons and the kernel fast path's share; every counter proto lists is on
/// one of them.
fn render_ports(bridge: &str, ports: &[PortCounters]) -> String {
    let mut out = format!("bridge {bridge}: {} ports\n", ports.len());
    for p in ports {
        let head = format!("  port {}: ", p.port);
        let fields = p.counters.fields();
        let line = |title: &str, keep: &dyn Fn(&str, CounterLine) -> bool| {
            let values: Vec<String> = fields
                .iter()
                .filter(|(name, line, _, _)| keep(name, *line))
                .map(|(_, _, label, value)| format!("{label}={value}"))
                .collect();
            format!("{title}{}", values.join(", "))
        };
        let lines = [
            line("", &|name, l| {
                l == CounterLine::Totals && name.starts_with("rx_")
            }),
            line("", &|name, l| {
                l == CounterLine::Totals && name.starts_with("tx_")
            }),
            line("rx drop/err reasons: ", &|_, l| l == CounterLine::Reasons),
            line("tx drop reasons: ", &|_, l| l == CounterLine::TxReasons),
            line("kernel fast path: ", &|_, l| l == CounterLine::Kernel),
        ];
        for (i, text) in lines.iter().enumerate() {
            let indent = if i == 0 {
                head.clone()
            } else {
                " ".repeat(head.len())
            };
            let _ = writeln!(out, "{indent}{text}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchd_proto::Counters;

    /// Methods reached through ovs-vsctl's generic commands, not one of their own.
    const GENERIC: &[(&str, &[&str])] = &[
        ("set-port", &["set", "clear"]),
        ("set-interface", &["set"]),
        ("find-ports", &["find"]),
        ("show", &["show", "get"]),
    ];

    /// The CLI's grammar is ovs-vsctl's, not the wire's (`del-port [BR] IF`,
    /// `set-br BR KEY=VALUE`, `set port P k=v`), so it is written apart from
    /// proto's request list; this keeps the two from drifting.
    #[test]
    fn every_method_has_a_command() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut commands = std::collections::BTreeSet::new();
        for method in Request::METHODS.iter().filter(|m| **m != "batch") {
            let names = GENERIC
                .iter()
                .find(|(m, _)| m == method)
                .map_or(vec![*method], |(_, names)| names.to_vec());
            for name in names {
                assert!(
                    cli.find_subcommand(name).is_some(),
                    "no switchctl command {name} for method {method}"
                );
                commands.insert(name);
            }
        }
        assert_eq!(cli.get_subcommands().count(), commands.len());
    }

    #[test]
    fn port_columns_parse_as_ovs_vsctl_writes_them() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let vlan = port_columns(&strings(&[
            "tag=10",
            "trunks=[10, 20]",
            "vlan_mode=native-untagged",
        ]))
        .unwrap();
        assert_eq!(vlan.tag, Some(10));
        assert_eq!(vlan.trunks, vec![10, 20]);
        assert_eq!(
            vlan.vlan_mode,
            Some(switchd_proto::VlanMode::NativeUntagged)
        );
        assert_eq!(
            port_columns(&strings(&["trunks=10,20,30"])).unwrap().trunks,
            vec![10, 20, 30]
        );
        assert_eq!(
            port_columns(&strings(&["trunks=10,20,"])).unwrap().trunks,
            vec![10, 20]
        );
        for (bad, why) in [
            ("tag=ten", "not a VLAN id"),
            ("tag=70000", "not a VLAN id"),
            ("trunks=1,,2", "not a VLAN id"),
            ("vlan_mode=hybrid", "not one of"),
            ("color=red", "unknown port column"),
            ("tag", "expected COLUMN=VALUE"),
        ] {
            let e = port_columns(&strings(&[bad])).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(port_table("Port").is_ok());
        assert!(port_table("bridge").is_err());
    }

    #[test]
    fn interface_columns_parse_as_ovs_vsctl_writes_them() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (kind, options, ids) = interface_columns(&strings(&[
            "type=vxlan",
            "options:remote_ip=\"192.0.2.2\"",
            "options:key=42",
            "external_ids:container_id=c1",
        ]))
        .unwrap();
        assert_eq!(kind, Some(PortKind::Vxlan));
        assert_eq!(options["remote_ip"], "192.0.2.2");
        assert_eq!(options["key"], "42");
        assert_eq!(ids["container_id"], "c1");
        assert!(interface_columns(&strings(&["type=gre"])).is_err());
        assert!(interface_columns(&strings(&["mtu_request=9000"])).is_err());
        assert!(interface_columns(&strings(&["options:key"])).is_err());
    }

    #[test]
    fn dump_ports_has_the_ovs_ofctl_layout() {
        let port = PortCounters {
            port: "veth-ns1".into(),
            counters: Counters {
                rx_packets: 5,
                rx_bytes: 426,
                tx_packets: 5,
                tx_bytes: 426,
                rx_drops: 2,
                rx_group_src: 1,
                rx_loop: 1,
                rx_kernel: 3,
                tx_kernel: 3,
                ..Counters::default()
            },
        };
        assert_eq!(
            render_ports("br0", &[port]),
            "bridge br0: 1 ports
  port veth-ns1: rx pkts=5, bytes=426, drop=2, errs=0
                 tx pkts=5, bytes=426, drop=0, errs=0
                 rx drop/err reasons: multicast-src=1, bad-vnet-hdr=0, loop=1, vlan-tagged=0, vlan-not-trunked=0, reserved-dst=0, queue-full=0, mirror-output=0, runt=0, truncated=0
                 tx drop reasons: too-big=0, no-route=0
                 kernel fast path: rx pkts=3, tx pkts=3
"
        );
    }
}
