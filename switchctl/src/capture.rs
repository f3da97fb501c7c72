//! `switchctl capture`: reads the pcapng stream switchd sends (one interface
//! block per port, a direction flag per frame, statistics blocks at the end) and
//! writes it out as it is (`-w FILE`, `-w -`), or prints a line per frame.

use anyhow::{anyhow, Context};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::PcapError;
use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket};
use pnet_packet::icmp::IcmpPacket;
use pnet_packet::icmpv6::Icmpv6Packet;
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::{TcpFlags, TcpPacket};
use pnet_packet::udp::UdpPacket;
use pnet_packet::vlan::VlanPacket;
use pnet_packet::Packet;
use serde_json::json;
use std::io::{BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;

/// Where the frames go.
pub enum Output {
    /// A line per frame, as text or JSON.
    Lines { json: bool },
    /// The pcapng stream as switchd sends it, to a file or stdout.
    Pcapng(Box<dyn Write>),
}

/// What the closing statistics blocks said, summed over the ports.
#[derive(Default)]
pub struct Summary {
    pub captured: u64,
    pub accepted: u64,
    pub dropped: u64,
}

/// Copies or prints the stream until switchd ends it. Ctrl-C (SIGINT, SIGTERM)
/// asks switchd to stop, and the statistics it then sends are still read.
pub fn follow(mut reader: BufReader<UnixStream>, mut output: Output) -> anyhow::Result<Summary> {
    crate::stream::end_on_signal(reader.get_ref())?;
    let mut pending: Vec<u8> = Vec::new();
    let mut parser: Option<PcapNgParser> = None;
    let mut ports: Vec<String> = Vec::new();
    let mut summary = Summary::default();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the capture from switchd"),
        };
        if let Output::Pcapng(out) = &mut output {
            if let Err(e) = out.write_all(&chunk[..n]).and_then(|()| out.flush()) {
                // A reader that went away (`| head`) ends the capture quietly.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    break;
                }
                return Err(e).context("writing the capture");
            }
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut rest: &[u8] = &pending;
        if parser.is_none() {
            match PcapNgParser::new(rest) {
                Ok((after, p)) => {
                    rest = after;
                    parser = Some(p);
                }
                Err(PcapError::IncompleteBuffer) => continue,
                Err(e) => return Err(anyhow!("bad capture stream from switchd: {e}")),
            }
        }
        let p = parser.as_mut().expect("set above");
        loop {
            match p.next_block(rest) {
                Ok((after, block)) => {
                    rest = after;
                    match block {
                        Block::InterfaceDescription(idb) => ports.push(
                            idb.options
                                .iter()
                                .find_map(|o| match o {
                                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                                    _ => None,
                                })
                                .unwrap_or_else(|| format!("if{}", ports.len())),
                        ),
                        Block::EnhancedPacket(epb) => {
                            summary.captured += 1;
                            if let Output::Lines { json } = output {
                                let port = ports
                                    .get(epb.interface_id as usize)
                                    .map_or("?", String::as_str);
                                print_line(port, &epb, json)?;
                            }
                        }
                        Block::InterfaceStatistics(isb) => {
                            for option in &isb.options {
                                match option {
                                    InterfaceStatisticsOption::IsbFilterAccept(n) => {
                                        summary.accepted += n
                                    }
                                    InterfaceStatisticsOption::IsbOsDrop(n) => summary.dropped += n,
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Err(PcapError::IncompleteBuffer) => break,
                Err(e) => return Err(anyhow!("bad capture stream from switchd: {e}")),
            }
        }
        let used = pending.len() - rest.len();
        pending.drain(..used);
    }
    Ok(summary)
}

fn print_line(port: &str, epb: &EnhancedPacketBlock, json: bool) -> anyhow::Result<()> {
    let direction = epb
        .options
        .iter()
        .find_map(|o| match o {
            EnhancedPacketOption::Flags(f) => Some(match f & 3 {
                1 => "in",
                2 => "out",
                _ => "?",
            }),
            _ => None,
        })
        .unwrap_or("?");
    let frame = describe(&epb.data);
    let line = if json {
        let mut v = json!({
            "time": epb.timestamp.as_secs_f64(),
            "port": port,
            "direction": direction,
            "length": epb.original_len,
            "summary": frame.summary,
        });
        if let Some((src, dst)) = &frame.macs {
            v["src"] = json!(src);
            v["dst"] = json!(dst);
        }
        if let Some(vlan) = frame.vlan {
            v["vlan"] = json!(vlan);
        }
        if let Some(ethertype) = frame.ethertype {
            v["ethertype"] = json!(format!("0x{ethertype:04x}"));
        }
        v.to_string()
    } else {
        let secs = epb.timestamp.as_secs();
        let mut line = format!(
            "{:02}:{:02}:{:02}.{:06} {port} {direction:<3} ",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            epb.timestamp.subsec_micros()
        );
        if let Some((src, dst)) = &frame.macs {
            line.push_str(&format!("{src} > {dst}, "));
        }
        if let Some(vlan) = frame.vlan {
            line.push_str(&format!("vlan {vlan}, "));
        }
        line.push_str(&format!("length {}: {}", epb.original_len, frame.summary));
        line
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

struct Described {
    macs: Option<(String, String)>,
    vlan: Option<u16>,
    ethertype: Option<u16>,
    summary: String,
}

/// A tcpdump-like short decode of a frame.
fn describe(data: &[u8]) -> Described {
    let Some(eth) = EthernetPacket::new(data) else {
        return Described {
            macs: None,
            vlan: None,
            ethertype: None,
            summary: "truncated frame".into(),
        };
    };
    let macs = Some((
        eth.get_source().to_string(),
        eth.get_destination().to_string(),
    ));
    let (mut ethertype, mut payload) = (eth.get_ethertype(), eth.payload().to_vec());
    let mut vlan = None;
    if matches!(ethertype, EtherTypes::Vlan | EtherTypes::QinQ) {
        if let Some(tag) = VlanPacket::new(&payload) {
            vlan = Some(tag.get_vlan_identifier());
            ethertype = tag.get_ethertype();
            payload = tag.payload().to_vec();
        }
    }
    Described {
        macs,
        vlan,
        ethertype: Some(ethertype.0),
        summary: network(ethertype, &payload),
    }
}

fn network(ethertype: EtherType, payload: &[u8]) -> String {
    match ethertype {
        EtherTypes::Arp => match ArpPacket::new(payload) {
            Some(arp) if arp.get_operation() == ArpOperations::Request => format!(
                "ARP, Request who-has {} tell {}",
                arp.get_target_proto_addr(),
                arp.get_sender_proto_addr()
            ),
            Some(arp) if arp.get_operation() == ArpOperations::Reply => format!(
                "ARP, Reply {} is-at {}",
                arp.get_sender_proto_addr(),
                arp.get_sender_hw_addr()
            ),
            Some(arp) => format!("ARP, operation {}", arp.get_operation().0),
            None => "ARP, truncated".into(),
        },
        EtherTypes::Ipv4 => match Ipv4Packet::new(payload) {
            Some(ip) => transport(
                "IP",
                ip.get_source().into(),
                ip.get_destination().into(),
                ip.get_next_level_protocol(),
                ip.payload(),
            ),
            None => "IP, truncated".into(),
        },
        EtherTypes::Ipv6 => match Ipv6Packet::new(payload) {
            Some(ip) => transport(
                "IP6",
                ip.get_source().into(),
                ip.get_destination().into(),
                ip.get_next_header(),
                ip.payload(),
            ),
            None => "IP6, truncated".into(),
        },
        other => format!("ethertype 0x{:04x}", other.0),
    }
}

fn transport(
    family: &str,
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNextHeaderProtocol,
    payload: &[u8],
) -> String {
    match protocol {
        IpNextHeaderProtocols::Tcp => match TcpPacket::new(payload) {
            Some(tcp) => format!(
                "{family} {src}.{} > {dst}.{}: Flags [{}], seq {}, length {}",
                tcp.get_source(),
                tcp.get_destination(),
                tcp_flags(tcp.get_flags()),
                tcp.get_sequence(),
                tcp.payload().len()
            ),
            None => format!("{family} {src} > {dst}: TCP, truncated"),
        },
        IpNextHeaderProtocols::Udp => match UdpPacket::new(payload) {
            Some(udp) => format!(
                "{family} {src}.{} > {dst}.{}: UDP, length {}",
                udp.get_source(),
                udp.get_destination(),
                udp.get_length().saturating_sub(8)
            ),
            None => format!("{family} {src} > {dst}: UDP, truncated"),
        },
        IpNextHeaderProtocols::Icmp => match IcmpPacket::new(payload) {
            Some(icmp) => format!(
                "{family} {src} > {dst}: ICMP {}",
                match icmp.get_icmp_type().0 {
                    0 => "echo reply".to_string(),
                    8 => "echo request".to_string(),
                    3 => "destination unreachable".to_string(),
                    11 => "time exceeded".to_string(),
                    t => format!("type {t}"),
                }
            ),
            None => format!("{family} {src} > {dst}: ICMP, truncated"),
        },
        IpNextHeaderProtocols::Icmpv6 => match Icmpv6Packet::new(payload) {
            Some(icmp) => format!(
                "{family} {src} > {dst}: ICMP6, {}",
                match icmp.get_icmpv6_type().0 {
                    128 => "echo request".to_string(),
                    129 => "echo reply".to_string(),
                    133 => "router solicitation".to_string(),
                    134 => "router advertisement".to_string(),
                    135 => "neighbor solicitation".to_string(),
                    136 => "neighbor advertisement".to_string(),
                    143 => "multicast listener report v2".to_string(),
                    t => format!("type {t}"),
                }
            ),
            None => format!("{family} {src} > {dst}: ICMP6, truncated"),
        },
        other => format!("{family} {src} > {dst}: ip-proto-{}", other.0),
    }
}

fn tcp_flags(flags: u8) -> String {
    let names = [
        (TcpFlags::SYN, 'S'),
        (TcpFlags::FIN, 'F'),
        (TcpFlags::RST, 'R'),
        (TcpFlags::PSH, 'P'),
        (TcpFlags::ACK, '.'),
    ];
    let s: String = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}
