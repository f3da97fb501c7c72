//! The per-thread forwarding loop.
//!
//! Blocks in epoll when every port is idle (an idle switch costs no CPU). When a
//! port is readable it drains up to `MAX_BATCHES_PER_WAKEUP` batches before looking
//! at the others, so one busy port cannot starve the rest (epoll is level-triggered
//! and reports it again).

use super::decide::{Decider, Ports};
use super::egress;
use super::mirror::{self, MirrorOutput};
use super::port::Sink;
use super::spin::{Pass, Spin};
use super::{now_ms, Member, Port, ThreadTimes, WorkerMsg, WorkerView};
use crate::sys::{Epoll, EpollEvents, EventFd, RingBatch, RingSlot, RxBatch, RxRing, Sender};
use crate::sys::{TxBatch, TxFrame, TxOutcome};
use crate::wire::vnet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use switchd_proto::Counters;

/// Frames per ring pass or recvmmsg, and per sendmmsg call.
const BATCH: usize = 32;
/// Messages per `sendmmsg`: the kernel takes at most 1024 (UIO_MAXIOV) a call.
const TX_BATCH: usize = 1024;
const MAX_BATCHES_PER_WAKEUP: usize = 8;
const WAKE_TOKEN: u64 = u64::MAX;
/// While spinning on hot rings, epoll (control messages, other ports) is asked
/// after a pass that found nothing, and at least once per this many passes.
const PASSES_PER_EPOLL_CHECK: u32 = 64;
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a busy port's backlog is forwarded before its receive ring is
/// set up. What is still queued then is dropped and counted as `queue-full`
/// rather than forwarded late: unbounded, a backlog of broadcasts on a
/// 1000-port bridge (4 MB of small frames, about 2 ms each to flood) held the
/// thread for seconds while the other ports waited (docs/PERFORMANCE.md).
/// Checked after each batch, so a batch of such broadcasts may overrun it.
const RING_ATTACH_DRAIN: Duration = Duration::from_millis(2);
/// One failed receive.
const RX_ERROR: Counters = Counters {
    rx_errors: 1,
    ..Counters::ZERO
};

/// Per-thread scratch space and settings, allocated once.
struct Scratch {
    /// Frames from the socket queue: all of them for a port without a ring, the
    /// ones too big for a ring slot otherwise.
    rx: RxBatch,
    slots: Vec<RingSlot>,
    srcs: Vec<Src>,
    fwd: Forwarder,
    /// Ring slots for a port that turns out busy; 0: never use a ring.
    ring_frames: usize,
}

/// What forwarding needs besides the frames.
struct Forwarder {
    tx: TxBatch,
    /// Straight to the driver, and through the queueing layer (tunnel ports).
    direct: Sender,
    through_tc: Sender,
    /// What each of the last batch's egress ports got (`Decider::groups` order).
    sent: Vec<TxOutcome>,
    /// How each of them is sent to, read once per batch.
    sinks: Vec<SinkKind>,
    /// Frames received since the thread last took the count (for `Spin`).
    frames: u32,
    decider: Decider,
    /// The frames of the batch one mirror selected.
    mirrored: Vec<u32>,
    last_error_log: Option<Instant>,
}

/// Where frame `i` of a batch is.
#[derive(Clone, Copy)]
enum Src {
    /// In the ring batch: slot index.
    Ring(usize),
    /// In `Scratch::rx`: message index.
    Queue(usize),
    /// Truncated or lost: counted as an error, not forwarded.
    Bad,
}

/// A received batch, wherever its frames are.
struct Frames<'a> {
    ring: Option<&'a RingBatch<'a>>,
    rx: &'a RxBatch,
    srcs: &'a [Src],
}

impl<'a> Frames<'a> {
    fn len(&self) -> usize {
        self.srcs.len()
    }

    /// virtio-net header + frame, or `None` for a frame that cannot be forwarded.
    fn get(&self, i: usize) -> Option<&'a [u8]> {
        match self.srcs[i] {
            Src::Ring(slot) => self.ring.and_then(|r| r.bytes(slot)),
            Src::Queue(j) => Some(self.rx.frame(j).bytes),
            Src::Bad => None,
        }
    }
}

/// One egress port's frames of the decided batch, as that port sends them.
fn staged<'a>(
    member: &'a Member,
    decider: &'a Decider,
    frames: &'a Frames<'a>,
    group: &'a [(u32, u32)],
) -> impl Iterator<Item = TxFrame<'a>> + 'a {
    let egress = &member.shared.peer_egress[group[0].0 as usize];
    group
        .iter()
        .filter_map(move |&(_, i)| egress::stage(egress, decider.vlan(i), frames.get(i as usize)?))
}

/// `spin`: after forwarding anything, poll without blocking for a while before
/// sleeping in epoll again, so the next frame does not pay a thread wakeup (tens
/// of microseconds on a VM); how long adapts to the traffic (`spin.rs`). An idle
/// switch still blocks: the window only opens when frames arrive.
///
/// `ring_frames`: a port starts out receiving with recvmmsg, which costs no memory
/// while it is idle; the first time it hands over a full batch it gets a receive
/// ring of this many slots (512 KiB at 256), which halves the CPU per frame. So a
/// bridge with a thousand mostly idle ports does not pin half a gigabyte of rings.
pub(super) fn run(
    rx: Receiver<WorkerMsg>,
    wake: &EventFd,
    (applied, signal): (&AtomicU64, &(dyn Fn() + Send + Sync)),
    times: &ThreadTimes,
    mut spin: Spin,
    ring_frames: usize,
) {
    let start = || {
        let epoll = Epoll::new()?;
        epoll.add(wake, WAKE_TOKEN)?;
        Ok::<_, io::Error>((epoll, Sender::open(false)?, Sender::open(true)?))
    };
    let (epoll, direct, through_tc) = match start() {
        Ok(started) => started,
        Err(e) => {
            tracing::error!("datapath thread cannot start: {e}");
            return;
        }
    };
    let mut view = WorkerView::default();
    let mut events = EpollEvents::new(64);
    let mut scratch = Scratch {
        rx: RxBatch::new(BATCH),
        slots: Vec::with_capacity(BATCH),
        srcs: Vec::with_capacity(BATCH),
        fwd: Forwarder {
            tx: TxBatch::new(TX_BATCH),
            direct,
            through_tc,
            sent: Vec::new(),
            sinks: Vec::new(),
            frames: 0,
            decider: Decider::default(),
            mirrored: Vec::new(),
            last_error_log: None,
        },
        ring_frames,
    };
    let mut ready = Vec::with_capacity(events.capacity());
    let mut spin_until: Option<Instant> = None;
    // When the last pass that forwarded ended: a sleep's gap is measured from it.
    let mut last_forward = Instant::now();
    // Ring ports taken out of epoll while the thread spins (indices into
    // `view.members`); see `poll_hot`.
    let mut hot: Vec<usize> = Vec::new();
    let mut passes = 0;
    loop {
        let mut start = Instant::now();
        let spinning = spin_until.is_some_and(|t| start < t);
        let mut forwarded = false;
        let mut slept = false;
        if spinning {
            forwarded = poll_hot(&view, &hot, &mut scratch);
            passes += 1;
        } else {
            rearm(&epoll, &view, &mut hot);
        }
        if !spinning || !forwarded || passes >= PASSES_PER_EPOLL_CHECK {
            passes = 0;
            ready.clear();
            let timeout = spinning.then_some(Duration::ZERO);
            match epoll.wait(&mut events, timeout) {
                Ok(tokens) => ready.extend(tokens),
                Err(e) => {
                    tracing::error!("datapath thread stops: epoll_wait: {e}");
                    return;
                }
            }
            if !spinning {
                slept = true;
                start = Instant::now();
            }
        } else {
            ready.clear();
        }
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
                            // `hot` indexes the old view, and switch_view expects
                            // every old port to be registered.
                            rearm(&epoll, &view, &mut hot);
                            switch_view(&epoll, &view, &next);
                            // The old view goes first: a removed port's last
                            // reference must be the control plane's, which
                            // closes it off this thread (`Datapath::retire`).
                            view = next;
                            applied.store(generation, Ordering::Release);
                            signal();
                        }
                    }
                }
            } else if let Ok(i) = view.index(token) {
                let member = &view.members[i];
                if process_port(member, &mut scratch) {
                    forwarded = true;
                    // Not registered, a port cannot be reported again: no duplicates.
                    if !spin.is_off()
                        && member.port.rx_ring().is_some()
                        && epoll.delete(&*member.port).is_ok()
                    {
                        hot.push(i);
                    }
                }
            }
        }
        let end = Instant::now();
        if forwarded {
            if slept {
                spin.woke_after(start.duration_since(last_forward));
            }
            let frames = std::mem::take(&mut scratch.fwd.frames);
            let took = end.duration_since(start);
            times
                .busy_ns
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            spin.account(Pass::Worked, took, frames, end);
            last_forward = end;
            spin_until = Some(end + spin.window());
        } else if spinning {
            let took = end.duration_since(start);
            times
                .poll_ns
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            spin.account(Pass::Polled, took, 0, end);
        } else {
            spin.account(Pass::Slept, Duration::ZERO, 0, end);
        }
    }
}

/// Forwards what the hot rings hold; true if there was anything.
///
/// While a ring port is registered in epoll, every frame the kernel writes into
/// its ring runs epoll's wakeup callback under the socket's wait-queue lock (with
/// interrupts off, in the sender's context), and every `epoll_wait` of ours polls
/// the socket under its receive-queue lock, which the kernel holds while filling
/// the ring. perf at 64-byte frames: 14% of the datapath thread's CPU in
/// `epoll_wait`, 5% of the sender's in that callback. So a port that has just
/// received leaves epoll for as long as the thread spins, and the thread reads its
/// ring's next status word instead: no syscall, no shared lock.
fn poll_hot(view: &WorkerView, hot: &[usize], s: &mut Scratch) -> bool {
    let mut forwarded = false;
    for &i in hot {
        let member = &view.members[i];
        if member.port.rx_ring().is_some_and(RxRing::ready) {
            forwarded |= process_port(member, s);
        }
    }
    forwarded
}

/// Puts the hot ports back into epoll before the thread blocks or changes view.
/// Level-triggered: a port whose ring filled meanwhile is reported at once.
fn rearm(epoll: &Epoll, view: &WorkerView, hot: &mut Vec<usize>) {
    for i in hot.drain(..) {
        let Member { port, shared, .. } = &view.members[i];
        match epoll.add(&**port, u64::from(port.id)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                tracing::error!(bridge = %shared.bridge.name, port = %port.name, "cannot poll port: {e}")
            }
        }
    }
}

/// Moves epoll registrations from the ports of `old` to those of `new`: one
/// walk of both, as both are sorted by port id.
fn switch_view(epoll: &Epoll, old: &WorkerView, new: &WorkerView) {
    let (mut olds, mut news) = (old.members.iter().peekable(), new.members.iter().peekable());
    loop {
        let (gone, added) = match (olds.peek(), news.peek()) {
            (None, None) => return,
            (Some(o), Some(n)) if o.port.id == n.port.id => {
                olds.next();
                news.next();
                continue;
            }
            (Some(o), Some(n)) if o.port.id < n.port.id => (olds.next(), None),
            (Some(_), None) => (olds.next(), None),
            (_, Some(_)) => (None, news.next()),
        };
        if let Some(m) = gone {
            let _ = epoll.delete(&*m.port);
        }
        if let Some(m) = added {
            if let Err(e) = epoll.add(&*m.port, u64::from(m.port.id)) {
                tracing::error!(bridge = %m.shared.bridge.name, port = %m.port.name, "cannot poll port: {e}");
            }
        }
    }
}

/// Drains a readable port, a batch at a time; true if it received anything.
fn process_port(member: &Member, s: &mut Scratch) -> bool {
    let port = &member.port;
    if let Some(ring) = port.rx_ring() {
        return process_ring(member, ring, s);
    }
    let drained = process_queue(member, s, MAX_BATCHES_PER_WAKEUP, || true);
    if drained.busy && s.ring_frames > 0 {
        attach_ring(member, s);
    }
    drained.received
}

/// Moves a busy port to a receive ring. Setting one up purges the socket's
/// queue (`packet_set_ring`), so the queue is drained right before, for at most
/// `RING_ATTACH_DRAIN`, and what is left is counted as lost; the kernel
/// also unhooks the socket for an RCU grace period meanwhile, and what the
/// interface receives then never reaches it: a one-off loss per port, in the
/// first burst that fills a batch (docs/ARCHITECTURE.md, "Receive rings").
fn attach_ring(member: &Member, s: &mut Scratch) {
    let port = &member.port;
    // Bounded by rounds too: 512 batches are more than the 4 MB queue holds
    // of the smallest frames.
    let deadline = Instant::now() + RING_ATTACH_DRAIN;
    process_queue(member, s, 64 * MAX_BATCHES_PER_WAKEUP, || {
        Instant::now() < deadline
    });
    match port.attach_ring(s.ring_frames) {
        Ok(false) => {}
        Ok(true) => {
            tracing::debug!(bridge = %member.shared.bridge.name, port = %port.name, "busy port moved to a receive ring");
        }
        Err(e) => s.fwd.log_error(
            &member.shared.bridge.name,
            &port.name,
            "receive ring setup",
            &e,
        ),
    }
}

/// Forwards the `n` frames just received into `s.rx`.
fn forward_received(member: &Member, s: &mut Scratch, n: usize) {
    s.srcs.clear();
    s.srcs.extend((0..n).map(|i| {
        if s.rx.frame(i).truncated {
            Src::Bad
        } else {
            Src::Queue(i)
        }
    }));
    let frames = Frames {
        ring: None,
        rx: &s.rx,
        srcs: &s.srcs,
    };
    s.fwd.forward_batch(member, &frames);
}

/// What one `process_queue` call saw.
struct Drained {
    received: bool,
    /// At least one receive filled a whole batch.
    busy: bool,
}

fn process_ring(member: &Member, ring: &RxRing, s: &mut Scratch) -> bool {
    let mut received = false;
    for _ in 0..MAX_BATCHES_PER_WAKEUP {
        let Scratch {
            rx,
            slots,
            srcs,
            fwd,
            ..
        } = s;
        let batch = ring.recv(slots, BATCH);
        let n = batch.slots().len();
        if n == 0 {
            if !received {
                // Woken with nothing in the ring: an error is pending (ENETDOWN when
                // the interface went down or away). Reading it stops epoll from
                // reporting the socket again and again.
                if let Some(e) = member.port.take_error() {
                    member.port.stats.add(&RX_ERROR);
                    fwd.log_error(&member.shared.bridge.name, &member.port.name, "receive", &e);
                }
            }
            break;
        }
        received = true;
        // Frames too big for a slot wait whole on the socket queue, in order.
        let copies = batch
            .slots()
            .iter()
            .filter(|slot| **slot == RingSlot::Copy)
            .count();
        let mut queued = 0;
        if copies > 0 {
            // A pending socket error is reported once instead of the frames: read
            // it, then the frames, so later batches do not pair slots with the
            // wrong queued frames.
            for _ in 0..2 {
                match member.port.recv_overflow(rx, copies) {
                    Ok(got) => {
                        queued = got;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        fwd.log_error(&member.shared.bridge.name, &member.port.name, "receive", &e)
                    }
                }
            }
        }
        let mut next_copy = 0;
        srcs.clear();
        srcs.extend(
            batch
                .slots()
                .iter()
                .enumerate()
                .map(|(i, slot)| match *slot {
                    RingSlot::Ring { .. } => Src::Ring(i),
                    RingSlot::Copy if next_copy < queued => {
                        next_copy += 1;
                        // Even the queued copy can be cut short (a frame over 64 KB).
                        if rx.frame(next_copy - 1).truncated {
                            Src::Bad
                        } else {
                            Src::Queue(next_copy - 1)
                        }
                    }
                    RingSlot::Copy | RingSlot::Truncated => Src::Bad,
                }),
        );
        let frames = Frames {
            ring: Some(&batch),
            rx,
            srcs,
        };
        fwd.forward_batch(member, &frames);
        drop(batch);
        if n < BATCH {
            break;
        }
    }
    received
}

/// Receives a port's socket queue (or TAP) a batch at a time, at most `batches`
/// batches, until it is empty. Each batch is forwarded while `forward()` says
/// so; after that, what is read is dropped and counted as lost to a full queue
/// (the ring setup that follows would purge it unseen).
fn process_queue(
    member: &Member,
    s: &mut Scratch,
    batches: usize,
    forward: impl Fn() -> bool,
) -> Drained {
    let mut received = false;
    let mut busy = false;
    let mut dropped = 0;
    for _ in 0..batches {
        match member.port.recv(&mut s.rx) {
            Ok(n) => {
                received = true;
                busy |= n == BATCH;
                if forward() {
                    forward_received(member, s, n);
                } else {
                    dropped += n as u64;
                }
                if n < BATCH {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ENETDOWN when the interface went down or away: the kernel reports it
                // once, so this does not spin.
                member.port.stats.add(&RX_ERROR);
                s.fwd
                    .log_error(&member.shared.bridge.name, &member.port.name, "receive", &e);
                break;
            }
        }
    }
    if dropped > 0 {
        member.port.stats.add(&Counters {
            rx_drops: dropped,
            rx_queue_full: dropped,
            ..Counters::ZERO
        });
    }
    Drained { received, busy }
}

/// A port's `Sink`, without the TAP it borrows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SinkKind {
    Direct(u32),
    ThroughTc(u32),
    Tap,
}

impl SinkKind {
    fn of(sink: &Sink) -> SinkKind {
        match sink {
            Sink::Direct(ifindex) => SinkKind::Direct(*ifindex),
            Sink::ThroughTc(ifindex) => SinkKind::ThroughTc(*ifindex),
            Sink::Tap(_) => SinkKind::Tap,
        }
    }
}

/// Sends frames out of one port, whatever its kind.
fn send_to<'a>(
    tx: &mut TxBatch,
    direct: &Sender,
    through_tc: &Sender,
    port: &Port,
    frames: impl Iterator<Item = TxFrame<'a>>,
) -> TxOutcome {
    let mut sent = [TxOutcome::default()];
    match port.sink() {
        Sink::Direct(ifindex) => tx.send(direct, frames.map(|f| (0, ifindex, f)), &mut sent),
        Sink::ThroughTc(ifindex) => tx.send(through_tc, frames.map(|f| (0, ifindex, f)), &mut sent),
        Sink::Tap(tap) => sent[0] = tx.send_tap(tap, frames),
    }
    let [sent] = sent;
    sent
}

impl Forwarder {
    /// Learns, decides and sends one received batch.
    fn forward_batch(&mut self, member: &Member, frames: &Frames) {
        let ingress = &member.port;
        let peers = &member.shared.peers;
        let now = now_ms();
        self.frames = self.frames.saturating_add(frames.len() as u32);
        let stats = &ingress.stats;
        if member.mirror_output {
            let n = frames.len() as u64;
            stats.add(&Counters {
                rx_packets: n,
                rx_drops: n,
                rx_mirror_output: n,
                ..Counters::default()
            });
            return;
        }
        if ingress.loop_guard.is_blocked(now) {
            // Neither learned from nor forwarded: that is what ends the storm.
            let n = frames.len() as u64;
            stats.add(&Counters {
                rx_packets: n,
                rx_drops: n,
                rx_loop: n,
                ..Counters::default()
            });
            return;
        }
        let ports = Ports {
            ingress: ingress.id,
            ids: &member.shared.peer_ids,
            by_id: &member.shared.peer_by_id,
            egress: &member.shared.peer_egress,
            group_fwd_mask: member.shared.bridge.group_fwd_mask(),
            mdb: member.shared.bridge.snooping_table(),
        };
        let (counts, learned) = {
            let mut fdb = member.shared.bridge.fdb();
            let counts = self.decider.decide(
                &mut fdb,
                now,
                &ports,
                (0..frames.len()).map(|i| frames.get(i)),
            );
            (counts, fdb.has_changes())
        };
        // New, moved or evicted addresses reach the kernel's copy outside the
        // table's lock.
        if learned {
            member.shared.bridge.sync_kernel();
        }
        if ingress.loop_guard.note_moves(counts.moves, now) {
            tracing::warn!(
                bridge = %member.shared.bridge.name,
                port = %ingress.name,
                "more than {} MAC moves a second onto this port: a loop? \
                 dropping what it receives for {} s",
                super::LOOP_MOVES_PER_SEC,
                super::LOOP_BLOCK_MS / 1000
            );
        }
        stats.add(&counts.port);

        self.send(member, frames);
        let mut failed = None;
        for (group, sent) in self.decider.groups().zip(&mut self.sent) {
            let peer = &peers[group[0].0 as usize];
            peer.stats.add(&Counters {
                tx_packets: sent.packets,
                tx_bytes: sent.bytes - sent.packets * vnet::HEADER_LEN as u64,
                tx_drops: sent.dropped + sent.too_big,
                tx_too_big: sent.too_big,
                tx_errors: sent.errors,
                ..Counters::default()
            });
            if let Some(e) = sent.last_error.take() {
                failed = Some((peer.name.clone(), e));
            }
        }
        if let Some((name, e)) = failed {
            self.log_error(&member.shared.bridge.name, &name, "send", &e);
        }
        if !member.shared.mirrors.is_empty() {
            self.mirror(member, frames);
        }
    }

    /// Sends each mirror's copies of the batch just forwarded, counted on the
    /// mirror (not on the ports they leave by).
    fn mirror(&mut self, member: &Member, frames: &Frames) {
        let Forwarder {
            tx,
            direct,
            through_tc,
            decider,
            mirrored,
            ..
        } = self;
        for rule in member.shared.mirrors.iter() {
            let selection = &rule.selection;
            selection.select(member.port.id, &member.shared.peer_ids, decider, mirrored);
            if mirrored.is_empty() {
                continue;
            }
            let decider = &*decider;
            let picked = &*mirrored;
            let mut total = TxOutcome::default();
            match selection.output {
                MirrorOutput::Port(id) => {
                    if let Some(j) = member.shared.index_of(id) {
                        let copies = picked.iter().filter_map(|&i| {
                            Some(mirror::to_port(decider.vlan(i), frames.get(i as usize)?))
                        });
                        total = send_to(tx, direct, through_tc, &member.shared.peers[j], copies);
                    }
                }
                MirrorOutput::Vlan(vid) => {
                    for (j, peer) in member.shared.peers.iter().enumerate() {
                        let egress = &member.shared.peer_egress[j];
                        if peer.id == member.port.id || !egress.vlan.carries(vid) {
                            continue;
                        }
                        let copies = picked.iter().filter_map(|&i| {
                            let copy = mirror::into_vlan(decider.vlan(i), vid);
                            egress::stage(egress, copy, frames.get(i as usize)?)
                        });
                        let sent = send_to(tx, direct, through_tc, peer, copies);
                        total.packets += sent.packets;
                        total.bytes += sent.bytes;
                        total.dropped += sent.dropped + sent.too_big + sent.errors;
                    }
                }
            }
            rule.stats.add(
                total.packets,
                total.bytes - total.packets * vnet::HEADER_LEN as u64,
                total.dropped + total.too_big + total.errors,
            );
        }
    }

    /// Sends the decided batch: every packet-socket port's frames together, up
    /// to `TX_BATCH` a call (a broadcast to a thousand ports is a few calls, not
    /// a thousand), each port's in order; a TAP's by its own writes.
    fn send(&mut self, member: &Member, frames: &Frames) {
        let Forwarder {
            tx,
            direct,
            through_tc,
            sent,
            sinks,
            decider,
            ..
        } = self;
        let decider = &*decider;
        sent.clear();
        sent.resize_with(decider.groups().count(), TxOutcome::default);
        let peers = &member.shared.peers;
        // Each port's way out is read once: a capture starting or ending flips
        // it, and reading it once per pass would send a group twice or never.
        sinks.clear();
        sinks.extend(
            decider
                .groups()
                .map(|group| SinkKind::of(&peers[group[0].0 as usize].sink())),
        );
        let sinks = &*sinks;
        let through = |tc: bool| {
            decider.groups().enumerate().flat_map(move |(k, group)| {
                let ifindex = match sinks[k] {
                    SinkKind::Direct(ifindex) if !tc => Some(ifindex),
                    SinkKind::ThroughTc(ifindex) if tc => Some(ifindex),
                    _ => None,
                };
                ifindex.into_iter().flat_map(move |ifindex| {
                    staged(member, decider, frames, group).map(move |f| (k, ifindex, f))
                })
            })
        };
        tx.send(direct, through(false), sent);
        tx.send(through_tc, through(true), sent);
        for (k, group) in decider.groups().enumerate() {
            if sinks[k] != SinkKind::Tap {
                continue;
            }
            if let Sink::Tap(tap) = peers[group[0].0 as usize].sink() {
                sent[k] = tx.send_tap(tap, staged(member, decider, frames, group));
            }
        }
    }

    fn log_error(&mut self, bridge: &str, port: &str, what: &str, e: &io::Error) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL)
        {
            self.last_error_log = Some(now);
            tracing::warn!(
                bridge,
                port,
                "{what} failed: {e} (further errors this second not logged)"
            );
        }
    }
}
