//! `capture`: the frames on a bridge's ports, as pcapng, to a streaming client.
//!
//! Each captured port gets a packet socket of its own on its interface
//! (`sys::CaptureSocket`), as tcpdump opens one, so the kernel hands the capture
//! what the interface receives and sends whoever forwards it: the userspace
//! datapath, the TC fast path's redirects, the host. The datapath sends to a
//! captured port through the interface's queueing layer for as long as the
//! capture runs (it bypasses it otherwise, and with it the packet taps). The
//! filter is tcpdump's language compiled by libpcap and runs in the kernel, before
//! anything is queued. A thread per capture reads the sockets and writes pcapng
//! chunks to the connection's bounded queue; what a slow reader leaves behind is
//! dropped and counted, by the kernel (socket buffer full) or here (queue full),
//! and reported in the stream's closing statistics blocks.

use super::stream::{Stream, STREAM_BACKLOG};
use super::switch::{err, PortState, RpcResult, Switch};
use crate::config::PortKind;
use crate::datapath::Port;
use crate::sys::{CaptureSocket, Epoll, EpollEvents, FilterInsn};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchd_proto::{code, CaptureReply, MAX_SNAPLEN};
use tokio::sync::mpsc::{self, error::TrySendError};

/// Captures running at once; each is a thread and a socket per port.
pub(super) const MAX_CAPTURES: usize = 8;
/// What the kernel may queue for one capture, shared by its ports, each between
/// the bounds below.
const CAPTURE_BUFFER_BYTES: usize = 32 << 20;
const PORT_BUFFER_BYTES: (usize, usize) = (256 << 10, 4 << 20);
/// A chunk is sent once it holds this much (or when the sockets are empty).
const CHUNK_BYTES: usize = 64 << 10;
/// Frames read from one socket before the next socket's turn.
const FRAMES_PER_TURN: usize = 64;
/// Frames are held this long before they are written, so that those of several
/// ports go out in time order (each port's socket is in order, the sockets
/// among them are not); held frames past `HELD_BYTES` or `HELD_FRAMES` go out
/// at once, which also bounds the sorting each wakeup does.
const REORDER_WINDOW: Duration = Duration::from_millis(20);
const HELD_BYTES: usize = 4 << 20;
const HELD_FRAMES: usize = 4096;
/// How often the thread checks for a stop and for ports that went away.
const TICK: Duration = Duration::from_millis(100);
/// pcapng's `epb_flags` direction bits.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;

impl Switch {
    pub(super) fn capture(
        &mut self,
        bridge: &str,
        ports: &[String],
        count: Option<u64>,
        snaplen: Option<u32>,
        filter: Option<&str>,
    ) -> RpcResult<(CaptureReply, Stream)> {
        let snaplen = snaplen.unwrap_or(MAX_SNAPLEN);
        if !(1..=MAX_SNAPLEN).contains(&snaplen) {
            return Err(err(
                code::INVALID_PARAMS,
                format!("snaplen {snaplen}: must be 1 to {MAX_SNAPLEN}"),
            ));
        }
        if count == Some(0) {
            return Err(err(code::INVALID_PARAMS, "count must be at least 1"));
        }
        let program = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(filter) => compile_filter(filter)
                .map_err(|e| err(code::INVALID_PARAMS, format!("filter {filter:?}: {e}")))?,
            None => Vec::new(),
        };
        let running = self.bridge(bridge)?;
        let config = self.bridge_config(bridge)?;
        for name in ports {
            if !running.ports.contains_key(name) {
                return Err(err(
                    code::NOT_FOUND,
                    format!("bridge {bridge} has no port named {name}"),
                ));
            }
        }
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        for port in &config.ports {
            if !ports.is_empty() && !ports.contains(&port.name) {
                continue;
            }
            let why = match (&port.kind, running.ports.get(&port.name)) {
                (PortKind::Vxlan, _) => Some(
                    "a tunnel port: its frames never cross its interface (capture the local \
                     ports, or the underlay's UDP port)"
                        .to_string(),
                ),
                (_, Some(PortState::Attached(p))) => {
                    chosen.push((port.name.clone(), p.clone()));
                    None
                }
                (_, Some(PortState::Failed(why))) => Some(format!("not running: {why}")),
                (_, None) => Some("not running".to_string()),
            };
            if let Some(why) = why {
                if !ports.is_empty() {
                    return Err(err(
                        code::FAILED,
                        format!("cannot capture {}: {why}", port.name),
                    ));
                }
                skipped.push((port.name.clone(), why));
            }
        }
        if chosen.is_empty() {
            return Err(err(
                code::FAILED,
                format!("bridge {bridge} has no port to capture"),
            ));
        }
        if self.captures.load(Relaxed) >= MAX_CAPTURES {
            return Err(err(
                code::FAILED,
                format!("{MAX_CAPTURES} captures are running already; end one first"),
            ));
        }
        let buffer =
            (CAPTURE_BUFFER_BYTES / chosen.len()).clamp(PORT_BUFFER_BYTES.0, PORT_BUFFER_BYTES.1);
        let mut taps = Vec::with_capacity(chosen.len());
        for (name, port) in &chosen {
            let ifindex = port
                .ifindex()
                .ok_or_else(|| err(code::FAILED, format!("cannot capture {name}: no interface")))?;
            let socket = CaptureSocket::open(ifindex, &program, buffer)
                .map_err(|e| err(code::FAILED, format!("cannot capture {name}: {e}")))?;
            taps.push(Tap::new(name.clone(), port, socket));
        }
        let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let capture = Capture {
            taps,
            tx,
            stop: stop.clone(),
            count,
            snaplen,
            counted: 0,
            _running: Running::start(self.captures.clone()),
        };
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture.run())
            .map_err(|e| err(code::FAILED, format!("cannot start the capture: {e}")))?;
        let reply = CaptureReply {
            ports: chosen.into_iter().map(|(name, _)| name).collect(),
            snaplen,
            skipped,
        };
        let stream = Stream {
            chunks: rx,
            stop: Box::new(move || stop.store(true, Relaxed)),
        };
        Ok((reply, stream))
    }
}

/// Compiles a tcpdump filter for Ethernet with libpcap. Its accepting returns
/// carry libpcap's default snapshot length, which would cut a 64 KB GSO frame
/// short in the kernel: they are widened, and the capture cuts to its own.
fn compile_filter(expr: &str) -> Result<Vec<FilterInsn>, String> {
    const BPF_RET_K: u16 = 0x06;
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| e.to_string())?;
    let program = dead.compile(expr, true).map_err(|e| e.to_string())?;
    program
        .get_instructions()
        .iter()
        .map(|insn| {
            // pcap offers an instruction's fields only as "code jt jf k" text.
            let text = insn.to_string();
            let mut fields = text.split(' ').map(str::parse::<u32>);
            let mut next = || -> Result<u32, String> {
                fields
                    .next()
                    .and_then(Result::ok)
                    .ok_or_else(|| format!("unexpected instruction from libpcap: {text}"))
            };
            let (code, jt, jf, k) = (next()?, next()?, next()?, next()?);
            let code = u16::try_from(code).map_err(|_| format!("bad opcode: {text}"))?;
            let k = if code == BPF_RET_K && k != 0 {
                u32::MAX
            } else {
                k
            };
            Ok(FilterInsn {
                code,
                jt: jt as u8,
                jf: jf as u8,
                k,
            })
        })
        .collect()
}

/// Counts a capture among the running ones for as long as it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Relaxed);
        Running(count)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One captured port.
struct Tap {
    name: String,
    port: Weak<Port>,
    socket: Option<CaptureSocket>,
    /// The internal port: the host's sending is the switch's receiving.
    inverted: bool,
    /// Frames written to the stream, and dropped because the stream was full.
    written: u64,
    dropped: u64,
    /// Frames in the chunk being filled.
    pending: u64,
}

impl Tap {
    fn new(name: String, port: &Arc<Port>, socket: CaptureSocket) -> Self {
        port.send_through_tc();
        Tap {
            name,
            port: Arc::downgrade(port),
            socket: Some(socket),
            inverted: port.is_internal(),
            written: 0,
            dropped: 0,
            pending: 0,
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(port) = self.port.upgrade() {
            port.release_through_tc();
        }
    }
}

/// A frame read, before it is written out in time order.
struct Frame {
    time: Duration,
    tap: u32,
    outbound: bool,
    orig_len: u32,
    data: Vec<u8>,
}

struct Capture {
    taps: Vec<Tap>,
    tx: mpsc::Sender<Vec<u8>>,
    stop: Arc<AtomicBool>,
    count: Option<u64>,
    snaplen: u32,
    /// Frames written and not dropped since, for `count`.
    counted: u64,
    _running: Running,
}

fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Capture {
    fn run(mut self) {
        let start = now();
        let mut out = match self.header() {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("capture: {e}");
                return;
            }
        };
        let epoll = match Epoll::new() {
            Ok(epoll) => epoll,
            Err(e) => {
                tracing::warn!("capture: {e}");
                return;
            }
        };
        for (i, tap) in self.taps.iter().enumerate() {
            if let Some(socket) = &tap.socket {
                let _ = epoll.add(socket, i as u64);
            }
        }
        let mut events = EpollEvents::new(self.taps.len().min(256));
        let mut buf = vec![0u8; self.snaplen as usize + 4];
        let mut ready = Vec::new();
        let mut held = Vec::new();
        let mut held_bytes = 0;
        loop {
            if self.stop.load(Relaxed) || self.tx.is_closed() {
                break;
            }
            ready.clear();
            let wait = if held.is_empty() {
                TICK
            } else {
                REORDER_WINDOW
            };
            match epoll.wait(&mut events, Some(wait)) {
                Ok(tokens) => ready.extend(tokens),
                Err(e) => {
                    tracing::warn!("capture: {e}");
                    break;
                }
            }
            for &i in &ready {
                let tap = &mut self.taps[i as usize];
                for _ in 0..FRAMES_PER_TURN {
                    if held_bytes >= HELD_BYTES || held.len() >= HELD_FRAMES {
                        break;
                    }
                    let Some(socket) = &tap.socket else { break };
                    let got = match socket.recv(&mut buf) {
                        Ok(Some(got)) => got,
                        Ok(None) => break,
                        // ENETDOWN: the interface went down. Its port going away
                        // is noticed below; a link that comes back up is read on.
                        Err(e) => {
                            tracing::debug!(port = %tap.name, "capture: {e}");
                            break;
                        }
                    };
                    let len = got.len.min(self.snaplen as usize);
                    held_bytes += len;
                    held.push(Frame {
                        time: if got.time.is_zero() { now() } else { got.time },
                        tap: i as u32,
                        outbound: got.outgoing != tap.inverted,
                        orig_len: u32::try_from(got.orig_len).unwrap_or(u32::MAX),
                        data: buf[..len].to_vec(),
                    });
                }
                if let Some(e) = tap.socket.as_ref().and_then(CaptureSocket::take_error) {
                    tracing::debug!(port = %tap.name, "capture: {e}");
                }
            }
            let cutoff = if held_bytes >= HELD_BYTES || held.len() >= HELD_FRAMES {
                Duration::MAX
            } else {
                now().saturating_sub(REORDER_WINDOW)
            };
            if !self.write_held(&mut out, &mut held, &mut held_bytes, cutoff) {
                break;
            }
            if self.count.is_some_and(|c| self.counted >= c) {
                break;
            }
            self.flush(&mut out);
            for tap in &mut self.taps {
                if tap.socket.is_some() && tap.port.strong_count() == 0 {
                    tap.socket = None;
                }
            }
            if self.taps.iter().all(|t| t.socket.is_none()) {
                break;
            }
        }
        self.write_held(&mut out, &mut held, &mut held_bytes, Duration::MAX);
        self.flush(&mut out);
        self.finish(&mut out, start);
        let closing = std::mem::take(out.get_mut());
        let _ = self.tx.blocking_send(closing);
    }

    /// Writes the held frames up to `cutoff`, in time order, within the count;
    /// false if the stream cannot take more.
    fn write_held(
        &mut self,
        out: &mut PcapNgWriter<Vec<u8>>,
        held: &mut Vec<Frame>,
        held_bytes: &mut usize,
        cutoff: Duration,
    ) -> bool {
        held.sort_by_key(|f| f.time);
        let ready = held.partition_point(|f| f.time <= cutoff);
        for frame in held.drain(..ready) {
            *held_bytes -= frame.data.len();
            if self.count.is_some_and(|c| self.counted >= c) {
                break;
            }
            let packet = EnhancedPacketBlock {
                interface_id: frame.tap,
                timestamp: frame.time,
                original_len: frame.orig_len,
                data: Cow::Owned(frame.data),
                options: vec![EnhancedPacketOption::Flags(if frame.outbound {
                    OUTBOUND
                } else {
                    INBOUND
                })],
            };
            if out.write_pcapng_block(packet).is_err() {
                return false;
            }
            self.taps[frame.tap as usize].pending += 1;
            self.counted += 1;
            if out.get_ref().len() >= CHUNK_BYTES {
                self.flush(out);
            }
        }
        true
    }

    /// The section header and one interface block per port.
    fn header(&self) -> Result<PcapNgWriter<Vec<u8>>, String> {
        let mut out = PcapNgWriter::new(Vec::new()).map_err(|e| e.to_string())?;
        for tap in &self.taps {
            let interface = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: self.snaplen,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(tap.name.clone())),
                    // pcap-file writes packet times in nanoseconds.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            out.write_pcapng_block(interface)
                .map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// Sends what `out` holds; if the client is behind, drops it and counts
    /// its frames on their ports.
    fn flush(&mut self, out: &mut PcapNgWriter<Vec<u8>>) {
        if out.get_ref().is_empty() {
            return;
        }
        let chunk = std::mem::take(out.get_mut());
        let sent = match self.tx.try_send(chunk) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => false,
        };
        for tap in &mut self.taps {
            if sent {
                tap.written += tap.pending;
            } else {
                tap.dropped += tap.pending;
                // `-c` counts what the client gets.
                self.counted -= tap.pending;
            }
            tap.pending = 0;
        }
    }

    /// A statistics block per port: frames written, and dropped by the kernel
    /// (socket buffer full) or by switchd (the client behind).
    fn finish(&mut self, out: &mut PcapNgWriter<Vec<u8>>, start: Duration) {
        let end = now();
        for (i, tap) in self.taps.iter().enumerate() {
            let kernel = tap.socket.as_ref().map_or(0, CaptureSocket::take_drops);
            let stats = InterfaceStatisticsBlock {
                interface_id: i as u32,
                timestamp: nanos(end),
                options: vec![
                    InterfaceStatisticsOption::IsbStartTime(nanos(start)),
                    InterfaceStatisticsOption::IsbEndTime(nanos(end)),
                    InterfaceStatisticsOption::IsbFilterAccept(tap.written + tap.dropped + kernel),
                    InterfaceStatisticsOption::IsbOsDrop(kernel + tap.dropped),
                    InterfaceStatisticsOption::IsbUsrDeliv(tap.written),
                ],
            };
            let _ = out.write_pcapng_block(stats);
        }
    }
}
