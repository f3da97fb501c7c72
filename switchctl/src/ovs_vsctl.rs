//! `ovs-vsctl` for the tools that call it: LXC, ovs-docker, containerlab
//! (through go-openvswitch), scripts written for Open vSwitch. The switchctl
//! binary answers to that name (a link or a copy named `ovs-vsctl`) with
//! ovs-vsctl's argument syntax, output and exit codes, for the subset those
//! tools use; anything else fails with "not supported by switchd" and exit
//! code 1, never silently. docs/OVS-VSCTL.md lists the subset and the command
//! lines recorded from each tool's source (tests/ovs_vsctl.rs runs them).

use crate::{port_columns, set_request};
use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchd_proto::{call, FoundPort, PortKind, Request, ShowReply, DEFAULT_SOCKET, SOCKET_ENV};

/// What ovs-vsctl does with no `--timeout`: wait for the database as long as
/// it takes. A day stands for that, so a stuck daemon still ends the call.
pub const NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

const SUPPORTED: &str = "add-br, del-br, list-br, br-exists, add-port, del-port, list-ports, \
     iface-to-br, port-to-br, set (bridge, port, interface), get, find (interface, port)";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    List,
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    String,
    Bare,
    Json,
}

/// The global options that shape output, as ovs-vsctl's table printer has them.
struct Output {
    format: Format,
    data: Data,
    headings: bool,
    columns: Option<Vec<String>>,
}

/// One command of the chain, as far as its output and exit code go.
enum Op {
    /// Changes the switch; prints nothing.
    Change(Request),
    Names(Request),
    BrExists(String),
    PortToBr(String),
    Find(Vec<Condition>),
    Get {
        table: Table,
        record: String,
        columns: Vec<String>,
        if_exists: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Bridge,
    Port,
    Interface,
}

impl Table {
    fn parse(name: &str) -> anyhow::Result<Table> {
        // ovs-vsctl takes any unique prefix of a table's name, in any case.
        let lower = name.to_ascii_lowercase();
        let known = [
            ("bridge", Table::Bridge),
            ("port", Table::Port),
            ("interface", Table::Interface),
        ];
        match known
            .iter()
            .filter(|(n, _)| n.starts_with(&lower))
            .collect::<Vec<_>>()[..]
        {
            [(_, table)] if !lower.is_empty() => Ok(*table),
            _ => bail!("table {name}: not supported by switchd (known: Bridge, Port, Interface)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Bridge => "Bridge",
            Table::Port => "Port",
            Table::Interface => "Interface",
        }
    }
}

/// A `find` condition: `name=P` or `external_ids:K=V` (only `=` is supported).
/// switchd has one record per port, so a Port's and an Interface's
/// external_ids are the same map.
enum Condition {
    Name(String),
    ExternalId(String, String),
}

pub fn main(args: &[String]) -> ExitCode {
    let socket = std::env::var_os(SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    match run_with(args, &socket, false) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ovs-vsctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs an ovs-vsctl command line (without the program name) against `socket`.
/// With `json_values` (switchctl's `--format json`), `get` prints each value in
/// ovsdb's JSON notation; ovs-vsctl's own `get` ignores `--format`.
pub fn run_with(
    args: &[String],
    socket: &std::path::Path,
    json_values: bool,
) -> anyhow::Result<ExitCode> {
    let mut output = Output {
        format: Format::List,
        data: Data::String,
        headings: true,
        columns: None,
    };
    let mut timeout = None;
    let mut i = 0;
    // Global options come before the first command.
    while let Some(arg) = args.get(i) {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let takes_value = matches!(
            name,
            "-t" | "--timeout" | "-f" | "--format" | "-d" | "--data" | "--columns"
        );
        let value = match (&inline, takes_value) {
            (Some(v), _) => v.clone(),
            (None, true) => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| anyhow!("option '{name}' requires an argument"))?
            }
            (None, false) => String::new(),
        };
        match name {
            "-t" | "--timeout" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| anyhow!("value {value} on -t or --timeout is invalid"))?;
                timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "-f" | "--format" => {
                output.format = match value.as_str() {
                    "list" => Format::List,
                    "table" => Format::Table,
                    "json" => Format::Json,
                    other => {
                        bail!("--format={other}: not supported by switchd (list, table, json)")
                    }
                }
            }
            "-d" | "--data" => {
                output.data = match value.as_str() {
                    "string" => Data::String,
                    "bare" => Data::Bare,
                    "json" => Data::Json,
                    other => {
                        bail!("--data={other}: not supported by switchd (string, bare, json)")
                    }
                }
            }
            "--no-heading" | "--no-headings" => output.headings = false,
            "--columns" => output.columns = Some(value.split(',').map(str::to_string).collect()),
            "--bare" => {
                output.format = Format::List;
                output.data = Data::Bare;
                output.headings = false;
            }
            // Open vSwitch waits for ovs-vswitchd to apply a change; switchd
            // has applied it when it answers, so there is nothing to skip.
            "--no-wait" | "--pretty" => {}
            "-V" | "--version" => {
                println!(
                    "ovs-vsctl (switchd {}): the switchctl binary in ovs-vsctl's place",
                    env!("CARGO_PKG_VERSION")
                );
                return Ok(ExitCode::SUCCESS);
            }
            "-h" | "--help" => {
                println!(
                    "ovs-vsctl (switchd): ovs-vsctl's syntax over switchd's control socket \
                     (${SOCKET_ENV}, default {DEFAULT_SOCKET}).\nCommands: {SUPPORTED}.\n\
                     Options: --timeout=SECS, --format=list|table|json, --data=string|bare|json, \
                     --no-headings, --columns=COLS, --bare, --may-exist, --if-exists."
                );
                return Ok(ExitCode::SUCCESS);
            }
            // A command's own options start the command.
            "--may-exist" | "--if-exists" => break,
            "--" => {}
            _ if name.starts_with('-') => bail!("option {name}: not supported by switchd"),
            _ => break,
        }
        i += 1;
    }
    let rest = &args[i..];
    let ops = rest
        .split(|a| a == "--")
        .filter(|part| !part.is_empty())
        .map(parse_command)
        .collect::<anyhow::Result<Vec<Op>>>()?;
    if ops.is_empty() {
        bail!("missing command name (use --help for help)");
    }
    let requests: Vec<Request> = ops.iter().map(request_of).collect();
    let timeout = timeout.unwrap_or(NO_TIMEOUT);
    let results: Vec<Value> = if requests.len() == 1 {
        vec![call(socket, &requests[0], timeout)?]
    } else {
        let batch = call(socket, &Request::Batch { commands: requests }, timeout)?;
        serde_json::from_value(batch)?
    };
    let mut exit = ExitCode::SUCCESS;
    let mut out = String::new();
    for (op, result) in ops.iter().zip(results) {
        match op {
            Op::Change(_) => {}
            Op::Names(request) => {
                let mut names: Vec<String> = serde_json::from_value(result)?;
                // ovs-vsctl leaves the bridge's own (internal) port out.
                if let Request::ListPorts { bridge } = request {
                    names.retain(|n| n != bridge);
                }
                names.sort();
                names.iter().for_each(|n| {
                    let _ = writeln!(out, "{n}");
                });
            }
            Op::BrExists(_) => {
                if result == Value::Bool(false) {
                    exit = ExitCode::from(2);
                }
            }
            Op::PortToBr(_) => {
                let _ = writeln!(out, "{}", result.as_str().unwrap_or_default());
            }
            Op::Find(conditions) => {
                let found: Vec<FoundPort> = serde_json::from_value(result)?;
                let rows = found
                    .iter()
                    .filter(|p| {
                        conditions.iter().all(|c| match c {
                            Condition::Name(n) => &p.port == n,
                            Condition::ExternalId(..) => true,
                        })
                    })
                    .collect::<Vec<_>>();
                out.push_str(&render_found(&rows, &output)?);
            }
            Op::Get {
                table,
                record,
                columns,
                if_exists,
            } => {
                let show: ShowReply = serde_json::from_value(result)?;
                let data = if json_values {
                    Data::Json
                } else {
                    Data::String
                };
                out.push_str(&get(&show, *table, record, columns, *if_exists, data)?);
            }
        }
    }
    crate::emit(&out)?;
    Ok(exit)
}

/// One command and its own options (`--may-exist`, `--if-exists`).
fn parse_command(part: &[String]) -> anyhow::Result<Op> {
    let (mut may_exist, mut if_exists) = (false, false);
    let mut words = part;
    while let Some((first, tail)) = words.split_first() {
        match first.as_str() {
            "--may-exist" => may_exist = true,
            "--if-exists" => if_exists = true,
            o if o.starts_with("--") => bail!("option {o}: not supported by switchd"),
            _ => break,
        }
        words = tail;
    }
    let (command, args) = words
        .split_first()
        .ok_or_else(|| anyhow!("missing command name"))?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let want = |n: std::ops::RangeInclusive<usize>, usage: &str| -> anyhow::Result<()> {
        if n.contains(&args.len()) {
            Ok(())
        } else {
            bail!("'{command}' command requires arguments: {usage}")
        }
    };
    Ok(match command.as_str() {
        "add-br" => {
            want(1..=1, "BRIDGE")?;
            Op::Change(Request::AddBr {
                bridge: args[0].to_string(),
                may_exist,
                no_internal: false,
            })
        }
        "del-br" => {
            want(1..=1, "BRIDGE")?;
            Op::Change(Request::DelBr {
                bridge: args[0].to_string(),
                if_exists,
            })
        }
        "list-br" => {
            want(0..=0, "none")?;
            Op::Names(Request::ListBr {})
        }
        "br-exists" => {
            want(1..=1, "BRIDGE")?;
            Op::BrExists(args[0].to_string())
        }
        "list-ports" => {
            want(1..=1, "BRIDGE")?;
            Op::Names(Request::ListPorts {
                bridge: args[0].to_string(),
            })
        }
        "add-port" => {
            if args.len() < 2 {
                bail!("'add-port' command requires at least 2 arguments: BRIDGE PORT [COLUMN[:KEY]=VALUE]...");
            }
            let columns: Vec<String> = args[2..].iter().map(|s| s.to_string()).collect();
            Op::Change(Request::AddPort {
                bridge: args[0].to_string(),
                interface: args[1].to_string(),
                may_exist,
                vlan: port_columns(&columns)?,
                kind: PortKind::System,
                options: BTreeMap::new(),
                external_ids: BTreeMap::new(),
            })
        }
        "del-port" => {
            want(1..=2, "[BRIDGE] PORT")?;
            let (bridge, port) = match args[..] {
                [port] => (None, port),
                [bridge, port] => (Some(bridge.to_string()), port),
                _ => unreachable!("checked above"),
            };
            Op::Change(Request::DelPort {
                bridge,
                interface: port.to_string(),
                if_exists,
            })
        }
        "iface-to-br" | "port-to-br" => {
            want(1..=1, "NAME")?;
            Op::PortToBr(args[0].to_string())
        }
        "set" => {
            if args.len() < 3 {
                bail!("'set' command requires at least 3 arguments: TABLE RECORD COLUMN[:KEY]=VALUE...");
            }
            let settings: Vec<String> = args[2..].iter().map(|s| s.to_string()).collect();
            Op::Change(set_request(Table::parse(args[0])?, args[1], &settings)?)
        }
        "get" => {
            if args.len() < 3 {
                bail!("'get' command requires at least 3 arguments: TABLE RECORD COLUMN[:KEY]...");
            }
            Op::Get {
                table: Table::parse(args[0])?,
                record: args[1].to_string(),
                columns: args[2..].iter().map(|s| s.to_string()).collect(),
                if_exists,
            }
        }
        "find" => {
            if args.is_empty() {
                bail!("'find' command requires at least 1 argument: TABLE [COLUMN[:KEY]=VALUE]...");
            }
            match Table::parse(args[0])? {
                Table::Port | Table::Interface => {}
                Table::Bridge => {
                    bail!("find bridge: not supported by switchd (list-br lists them)")
                }
            }
            Op::Find(
                args[1..]
                    .iter()
                    .map(|c| condition(c))
                    .collect::<anyhow::Result<_>>()?,
            )
        }
        other => bail!("{other}: not supported by switchd (supported: {SUPPORTED})"),
    })
}

fn condition(text: &str) -> anyhow::Result<Condition> {
    let unsupported = || {
        anyhow!(
            "find condition {text:?}: not supported by switchd (name=NAME or external_ids:KEY=VALUE)"
        )
    };
    let (column, value) = text.split_once('=').ok_or_else(unsupported)?;
    if column.ends_with(['!', '<', '>', '{', '}']) {
        return Err(unsupported());
    }
    let value = unquote(value);
    match column.split_once(':') {
        None if column == "name" => Ok(Condition::Name(value)),
        Some(("external_ids" | "external-ids", key)) => {
            Ok(Condition::ExternalId(unquote(key), value))
        }
        _ => Err(unsupported()),
    }
}

/// ovs-vsctl reads `"a b"` as the string a b.
fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

fn request_of(op: &Op) -> Request {
    match op {
        Op::Change(r) | Op::Names(r) => r.clone(),
        Op::BrExists(bridge) => Request::BrExists {
            bridge: bridge.clone(),
        },
        Op::PortToBr(name) => Request::PortToBr {
            interface: name.clone(),
        },
        Op::Find(conditions) => Request::FindPorts {
            external_ids: conditions
                .iter()
                .filter_map(|c| match c {
                    Condition::ExternalId(k, v) => Some((k.clone(), v.clone())),
                    Condition::Name(_) => None,
                })
                .collect(),
        },
        Op::Get { .. } => Request::Show {},
    }
}

/// A string as ovsdb prints it (lib/ovsdb-data.c): bare when it looks like an
/// identifier, quoted otherwise, so `eth0` and `true` come out quoted.
pub fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.'))
        && s != "true"
        && s != "false";
    if identifier {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings serialize")
    }
}

/// A map column as ovs-vsctl prints it: `{k1=v1, k2="v 2"}`.
pub fn map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// One column's value in each of ovs-vsctl's data formats.
#[derive(Clone)]
enum Cell {
    Str(String),
    Map(BTreeMap<String, String>),
    /// An optional integer column (`tag`, `mtu`): bare when set.
    Int(u64),
    /// A set column (`trunks`): always bracketed, as ovsdb prints any column
    /// that may hold more than one value.
    Ints(Vec<u64>),
    /// An optional column with no value (`[]`).
    Empty,
}

impl Cell {
    fn text(&self, data: Data) -> String {
        match (self, data) {
            (_, Data::Json) => self.json().to_string(),
            (Cell::Str(s), Data::String) => quote(s),
            (Cell::Str(s), Data::Bare) => s.clone(),
            (Cell::Map(m), Data::String) => map(m),
            (Cell::Map(m), Data::Bare) => m
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            (Cell::Int(i), _) => i.to_string(),
            (Cell::Ints(v), Data::String) => format!(
                "[{}]",
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ),
            (Cell::Ints(v), Data::Bare) => {
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
            }
            (Cell::Empty, Data::String) => "[]".to_string(),
            (Cell::Empty, Data::Bare) => String::new(),
        }
    }

    /// ovsdb's JSON notation (RFC 7047): atoms as themselves, sets and maps
    /// tagged.
    fn json(&self) -> Value {
        match self {
            Cell::Str(s) => json!(s),
            Cell::Map(m) => json!([
                "map",
                m.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
            ]),
            Cell::Int(i) => json!(i),
            // A set of one is its member (ovsdb_datum_to_json).
            Cell::Ints(v) if v.len() == 1 => json!(v[0]),
            Cell::Ints(v) => json!(["set", v]),
            Cell::Empty => json!(["set", []]),
        }
    }
}

/// `find`'s rows, each an Interface (or Port) record of switchd's model.
fn render_found(rows: &[&FoundPort], output: &Output) -> anyhow::Result<String> {
    let all = ["external_ids", "name"];
    let columns: Vec<String> = match &output.columns {
        Some(c) => c.clone(),
        None => all.iter().map(|c| c.to_string()).collect(),
    };
    if let Some(c) = columns.iter().find(|c| !all.contains(&c.as_str())) {
        bail!(
            "column {c}: not supported by switchd in find (known: {})",
            all.join(", ")
        );
    }
    let cells = |p: &FoundPort| -> Vec<Cell> {
        columns
            .iter()
            .map(|c| match c.as_str() {
                "name" => Cell::Str(p.port.clone()),
                _ => Cell::Map(p.external_ids.clone()),
            })
            .collect()
    };
    Ok(table(
        &columns,
        rows.iter().map(|p| cells(p)).collect(),
        output,
    ))
}

/// Rows in ovs-vsctl's list, table or JSON layout (lib/table.c).
fn table(columns: &[String], rows: Vec<Vec<Cell>>, output: &Output) -> String {
    let mut out = String::new();
    match output.format {
        Format::Json => {
            let data: Vec<Value> = rows
                .iter()
                .map(|r| {
                    Value::Array(
                        // ovs-vsctl's JSON table holds each cell as ovsdb
                        // JSON, whatever --data says.
                        r.iter().map(Cell::json).collect(),
                    )
                })
                .collect();
            let _ = writeln!(out, "{}", json!({"data": data, "headings": columns}));
        }
        Format::List => {
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                for (column, cell) in columns.iter().zip(row) {
                    if output.headings {
                        let _ = write!(out, "{column:<20}: ");
                    }
                    let _ = writeln!(out, "{}", cell.text(output.data));
                }
            }
        }
        Format::Table => {
            let texts: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(|c| c.text(output.data)).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    texts
                        .iter()
                        .map(|r| r[i].len())
                        .chain([if output.headings { c.len() } else { 0 }])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("{}\n", padded.join(" ").trim_end())
            };
            if output.headings {
                out.push_str(&line(columns));
                let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&line(&dashes));
            }
            for row in &texts {
                out.push_str(&line(row));
            }
        }
    }
    out
}

/// `get TABLE RECORD COLUMN[:KEY]...`, one line per column.
fn get(
    show: &ShowReply,
    table: Table,
    record: &str,
    columns: &[String],
    if_exists: bool,
    data: Data,
) -> anyhow::Result<String> {
    let no_row = || anyhow!("no row \"{record}\" in table {}", table.name());
    let mut out = String::new();
    if table == Table::Bridge {
        if !show.bridges.iter().any(|b| b.name == record) {
            // As ovs-vsctl's get: --if-exists makes a missing record print nothing.
            return if if_exists { Ok(out) } else { Err(no_row()) };
        }
        for column in columns {
            let cell = match column.as_str() {
                "name" => Cell::Str(record.to_string()),
                // switchd speaks no OpenFlow.
                "protocols" => Cell::Empty,
                "datapath_type" => Cell::Str("netdev".to_string()),
                _ => bail!(
                    "get bridge {column}: not supported by switchd (name, protocols, datapath_type)"
                ),
            };
            let _ = writeln!(out, "{}", cell.text(data));
        }
        return Ok(out);
    }
    let Some(port) = show
        .bridges
        .iter()
        .flat_map(|b| &b.ports)
        .find(|p| p.name == record)
    else {
        return if if_exists { Ok(out) } else { Err(no_row()) };
    };
    for column in columns {
        let (name, key) = match column.split_once(':') {
            Some((n, k)) => (n, Some(unquote(k))),
            None => (column.as_str(), None),
        };
        let cell = match (table, name) {
            (_, "name") => Cell::Str(port.name.clone()),
            (Table::Interface, "external_ids" | "external-ids") => {
                Cell::Map(port.external_ids.clone())
            }
            (Table::Interface, "options") => Cell::Map(port.options.clone()),
            (Table::Interface, "type") => Cell::Str(match port.kind {
                PortKind::System => String::new(),
                kind => kind.as_str().to_string(),
            }),
            (Table::Interface, "mtu") => match port.mtu {
                Some(mtu) => Cell::Int(u64::from(mtu)),
                None => Cell::Empty,
            },
            (Table::Port, "tag") => match port.vlan.tag {
                Some(tag) => Cell::Int(u64::from(tag)),
                None => Cell::Empty,
            },
            (Table::Port, "trunks") => {
                Cell::Ints(port.vlan.trunks.iter().map(|&t| u64::from(t)).collect())
            }
            (Table::Port, "vlan_mode") => match port.vlan.vlan_mode {
                Some(mode) => Cell::Str(mode.as_str().to_string()),
                None => Cell::Empty,
            },
            _ => bail!(
                "get {} {name}: not supported by switchd (Interface: name, type, options, \
                 external_ids, mtu; Port: name, tag, trunks, vlan_mode)",
                table.name().to_ascii_lowercase()
            ),
        };
        let cell = match (key, cell) {
            (None, cell) => cell,
            (Some(key), Cell::Map(m)) => match m.get(&key) {
                Some(v) => Cell::Str(v.clone()),
                // As ovs-vsctl: the value is left out, not its line.
                None if if_exists => {
                    out.push_str(if data == Data::Json { "null\n" } else { "\n" });
                    continue;
                }
                None => bail!(
                    "no key \"{key}\" in {} record \"{record}\" column {name}",
                    table.name()
                ),
            },
            (Some(_), _) => bail!("cannot specify key to get for non-map column {name}"),
        };
        let _ = writeln!(out, "{}", cell.text(data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_as_ovsdb_prints_them() {
        assert_eq!(quote("access"), "access");
        assert_eq!(quote("native-untagged"), "native-untagged");
        assert_eq!(quote("eth0"), "\"eth0\"");
        assert_eq!(quote("true"), "\"true\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a b"), "\"a b\"");
        let ids = BTreeMap::from([
            ("container_id".to_string(), "c1".to_string()),
            ("container_iface".to_string(), "eth0".to_string()),
        ]);
        assert_eq!(map(&ids), "{container_id=\"c1\", container_iface=\"eth0\"}");
    }

    #[test]
    fn ovs_docker_find_prints_bare_names() {
        let output = Output {
            format: Format::List,
            data: Data::Bare,
            headings: false,
            columns: Some(vec!["name".to_string()]),
        };
        let p = FoundPort {
            bridge: "br0".into(),
            port: "1a2b_l".into(),
            netns: None,
            ifname: None,
            external_ids: BTreeMap::new(),
        };
        assert_eq!(
            render_found(&[&p, &p], &output).unwrap(),
            "1a2b_l\n\n1a2b_l\n"
        );
    }

    #[test]
    fn unsupported_commands_and_options_say_so() {
        let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        for bad in [
            "add-bond br0 bond0 a b",
            "emer-reset",
            "find bridge name=br0",
        ] {
            let e = parse_command(&words(bad)).err().unwrap().to_string();
            assert!(e.contains("not supported by switchd"), "{bad}: {e}");
        }
        assert!(condition("external_ids:a!=b").is_err());
        assert!(matches!(
            condition("external_ids:container_id=\"c 1\"").unwrap(),
            Condition::ExternalId(k, v) if k == "container_id" && v == "c 1"
        ));
    }
}
