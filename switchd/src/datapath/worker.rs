//! The per-thread forwarding loop.
//!
//! Blocks in epoll when every port is idle (an idle switch costs no CPU). When a
//! port is readable it drains up to `MAX_BATCHES_PER_WAKEUP` batches before looking
//! at the others, so one busy port cannot starve the rest (epoll is level-triggered
//! and reports it again).

use super::fdb::FdbKey;
use super::port::bump;
use super::{now_ms, Member, WorkerMsg, WorkerView};
use crate::sys::{Epoll, EventFd, RxBatch, TxBatch};
use crate::wire::{ethernet, vlan, vnet, EthernetFrame};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Frames per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
const MAX_BATCHES_PER_WAKEUP: usize = 8;
const WAKE_TOKEN: u64 = u64::MAX;
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Per-thread scratch space, allocated once.
struct Scratch {
    rx: RxBatch,
    tx: TxBatch,
    /// (index into `Member::peers`, frame index) pairs to send.
    out: Vec<(u32, u32)>,
    /// Frames of the batch to send to every port but the ingress one.
    flood: Vec<u32>,
    last_error_log: Option<Instant>,
}

/// `spin`: after forwarding anything, poll without blocking for this long before
/// sleeping in epoll again, so the next frame does not pay a thread wakeup (tens
/// of microseconds on a VM). An idle switch still blocks: the window only opens
/// when frames arrive.
pub(super) fn run(rx: Receiver<WorkerMsg>, wake: &EventFd, applied: &AtomicU64, spin: Duration) {
    let epoll = match Epoll::new().and_then(|e| e.add(wake, WAKE_TOKEN).map(|()| e)) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("datapath thread cannot start: epoll: {e}");
            return;
        }
    };
    let mut view = WorkerView::default();
    // Port id (the epoll token) to its index in `view.members`.
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut scratch = Scratch {
        rx: RxBatch::new(BATCH),
        tx: TxBatch::new(BATCH),
        out: Vec::new(),
        flood: Vec::new(),
        last_error_log: None,
    };
    let mut ready = Vec::with_capacity(events.len());
    let mut spin_until: Option<Instant> = None;
    loop {
        ready.clear();
        let timeout = spin_until
            .filter(|&t| Instant::now() < t)
            .map(|_| Duration::ZERO);
        match epoll.wait(&mut events, timeout) {
            Ok(tokens) => ready.extend(tokens),
            Err(e) => {
                tracing::error!("datapath thread stops: epoll_wait: {e}");
                return;
            }
        }
        let mut forwarded = false;
        for &token in &ready {
            if token == WAKE_TOKEN {
                wake.drain();
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        WorkerMsg::Stop => return,
                        WorkerMsg::Update {
                            generation,
                            view: next,
                        } => {
                            switch_view(&epoll, &view, &next);
                            view = next;
                            index = view
                                .members
                                .iter()
                                .enumerate()
                                .map(|(i, m)| (u64::from(m.port.id), i))
                                .collect();
                            applied.store(generation, Ordering::Release);
                        }
                    }
                }
            } else if let Some(&i) = index.get(&token) {
                forwarded |= process_port(&view.members[i], &mut scratch);
            }
        }
        if forwarded {
            spin_until = Some(Instant::now() + spin);
        }
    }
}

/// Moves epoll registrations from the ports of `old` to those of `new`.
fn switch_view(epoll: &Epoll, old: &WorkerView, new: &WorkerView) {
    use std::os::fd::AsRawFd;
    let keep =
        |m: &Member, other: &WorkerView| other.members.iter().any(|o| o.port.id == m.port.id);
    for m in &old.members {
        if !keep(m, new) {
            let _ = epoll.delete(m.port.sock.as_raw_fd());
        }
    }
    for m in &new.members {
        if !keep(m, old) {
            if let Err(e) = epoll.add(&m.port.sock, u64::from(m.port.id)) {
                tracing::error!(port = %m.port.name, "cannot poll port: {e}");
            }
        }
    }
}

/// Drains a readable port, a batch at a time; true if it received anything.
fn process_port(member: &Member, s: &mut Scratch) -> bool {
    let mut received = false;
    for _ in 0..MAX_BATCHES_PER_WAKEUP {
        match s.rx.recv(&member.port.sock) {
            Ok(n) => {
                received = true;
                forward_batch(member, s);
                if n < BATCH {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ENETDOWN when the interface went down or away: the kernel reports it
                // once, so this does not spin.
                bump(&member.port.stats.rx_errors, 1);
                log_error(s, &member.port.name, "receive", &e);
                break;
            }
        }
    }
    received
}

/// Learns, decides and sends one received batch.
fn forward_batch(member: &Member, s: &mut Scratch) {
    let ingress = &member.port;
    let peers = &member.peers;
    let now = now_ms();
    let (mut rx_packets, mut rx_bytes, mut rx_drops, mut rx_errors) = (0, 0, 0, 0);
    s.out.clear();
    s.flood.clear();
    {
        let mut fdb = member.bridge.fdb();
        for i in 0..s.rx.len() {
            let frame = s.rx.frame(i);
            if frame.truncated || frame.bytes.len() < vnet::HEADER_LEN + ethernet::HEADER_LEN {
                rx_errors += 1;
                continue;
            }
            let eth = EthernetFrame::new_unchecked(&frame.bytes[vnet::HEADER_LEN..]);
            rx_packets += 1;
            rx_bytes += (frame.bytes.len() - vnet::HEADER_LEN) as u64;
            let src = eth.src_addr();
            if src.is_multicast() {
                rx_drops += 1;
                continue;
            }
            let vlan = vlan::vlan_id(eth.into_inner());
            fdb.learn(FdbKey { vlan, mac: src }, ingress.id, now);
            let dst = eth.dst_addr();
            if dst.is_multicast() {
                s.flood.push(i as u32);
                continue;
            }
            match fdb.lookup(&FdbKey { vlan, mac: dst }, now) {
                // The destination sits behind the port the frame came in on: filter it.
                Some(port) if port == ingress.id => {}
                Some(port) => match peers.binary_search_by_key(&port, |p| p.id) {
                    Ok(j) => s.out.push((j as u32, i as u32)),
                    Err(_) => s.flood.push(i as u32),
                },
                None => s.flood.push(i as u32),
            }
        }
    }
    let stats = &ingress.stats;
    bump(&stats.rx_packets, rx_packets);
    bump(&stats.rx_bytes, rx_bytes);
    bump(&stats.rx_drops, rx_drops);
    bump(&stats.rx_errors, rx_errors);

    if !s.flood.is_empty() {
        for (j, peer) in peers.iter().enumerate() {
            if peer.id != ingress.id {
                s.out.extend(s.flood.iter().map(|&i| (j as u32, i)));
            }
        }
    }
    // Grouping by egress port keeps each port's frames in arrival order.
    s.out.sort_unstable();
    let Scratch { rx, tx, out, .. } = s;
    let mut failed = None;
    for group in out.chunk_by(|a, b| a.0 == b.0) {
        let peer = &peers[group[0].0 as usize];
        let sent = tx.send(
            &peer.sock,
            group.iter().map(|&(_, i)| rx.frame(i as usize).bytes),
        );
        let stats = &peer.stats;
        bump(&stats.tx_packets, sent.packets);
        bump(
            &stats.tx_bytes,
            sent.bytes - sent.packets * vnet::HEADER_LEN as u64,
        );
        bump(&stats.tx_drops, sent.dropped);
        bump(&stats.tx_errors, sent.errors);
        if let Some(e) = sent.last_error {
            failed = Some((peer.name.clone(), e));
        }
    }
    if let Some((name, e)) = failed {
        log_error(s, &name, "send", &e);
    }
}

fn log_error(s: &mut Scratch, port: &str, what: &str, e: &io::Error) {
    let now = Instant::now();
    if s.last_error_log
        .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL)
    {
        s.last_error_log = Some(now);
        tracing::warn!(
            port,
            "{what} failed: {e} (further errors this second not logged)"
        );
    }
}
