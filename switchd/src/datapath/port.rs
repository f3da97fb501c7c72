use super::fdb::PortId;
use super::offload::PortOffload;
use crate::sys::{PacketSocket, RxBatch, RxRing, Tap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use switchd_proto::Counters;

/// How a port's frames come and go. Only this file looks inside: the worker asks
/// the `Port`, so a new kind of port (a tunnel's UDP socket) is a variant here and
/// its arms below.
pub(super) enum PortIo {
    /// A packet socket on an existing interface (a veth end, a NIC).
    Socket(PacketSocket),
    /// The bridge's internal port: a TAP device switchd created.
    Tap(Tap),
}

/// See `Port::sink`.
pub(super) enum Sink<'a> {
    Direct(u32),
    ThroughTc(u32),
    Tap(&'a Tap),
}

/// More MAC moves onto one port than this in a second means a loop: frames the
/// switch sent come back in on another port. Hosts moving between ports do it a
/// few times, not a thousand.
pub const LOOP_MOVES_PER_SEC: u64 = 1000;
/// How long a port suspected of closing a loop drops what it receives before it
/// is tried again.
pub const LOOP_BLOCK_MS: u64 = 10_000;

/// Loop detection state of a port. Written only by the thread that receives on
/// the port; `blocked_until_ms` is also read by `show`.
#[derive(Default)]
pub struct LoopGuard {
    window_start_ms: AtomicU64,
    window_moves: AtomicU64,
    blocked_until_ms: AtomicU64,
}

impl LoopGuard {
    pub fn is_blocked(&self, now_ms: u64) -> bool {
        now_ms < self.blocked_until_ms.load(Relaxed)
    }

    /// Milliseconds the port stays blocked, if it is.
    pub fn blocked_for_ms(&self, now_ms: u64) -> Option<u64> {
        let until = self.blocked_until_ms.load(Relaxed);
        (now_ms < until).then(|| until - now_ms)
    }

    /// Counts `moves` MAC moves onto the port; true if that makes it blocked.
    pub fn note_moves(&self, moves: u64, now_ms: u64) -> bool {
        if moves == 0 {
            return false;
        }
        let start = self.window_start_ms.load(Relaxed);
        let total = if now_ms.saturating_sub(start) >= 1000 {
            self.window_start_ms.store(now_ms, Relaxed);
            moves
        } else {
            self.window_moves.load(Relaxed) + moves
        };
        self.window_moves.store(total, Relaxed);
        if total > LOOP_MOVES_PER_SEC {
            self.blocked_until_ms.store(now_ms + LOOP_BLOCK_MS, Relaxed);
            self.window_moves.store(0, Relaxed);
            return true;
        }
        false
    }
}

/// One switch port: its I/O plus its counters.
///
/// Shared between the control plane (counters, name) and the datapath threads: the
/// thread that owns the port's receive side and every thread that forwards to it.
pub struct Port {
    pub id: PortId,
    pub name: String,
    pub(super) io: PortIo,
    pub stats: PortStats,
    pub loop_guard: LoopGuard,
    /// The port's kernel fast path, while it has one.
    pub(super) offload: Mutex<Option<PortOffload>>,
    /// Its interface has a queueing discipline of the user's (`set_queued`).
    pub(super) queued: AtomicBool,
}

/// The descriptor epoll waits on for the port's frames.
impl AsFd for Port {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.io {
            PortIo::Socket(s) => s.as_fd(),
            PortIo::Tap(t) => t.as_fd(),
        }
    }
}

impl Port {
    /// The interface the port is bound to; `None` for a kind of port that has no
    /// interface of its own.
    pub fn ifindex(&self) -> Option<u32> {
        match &self.io {
            PortIo::Socket(s) => Some(s.ifindex()),
            PortIo::Tap(t) => Some(t.ifindex()),
        }
    }

    /// What the port sends passes its interface's TC egress and packet taps
    /// (`PacketSocket::send_through_tc`), until `release_through_tc`.
    pub fn send_through_tc(&self) {
        if let Some(s) = self.socket() {
            s.send_through_tc();
        }
    }

    pub fn release_through_tc(&self) {
        if let Some(s) = self.socket() {
            s.release_through_tc();
        }
    }

    /// Whether the interface has a queueing discipline the user set up (`tc
    /// qdisc add ... root`, Mininet's TCLink): what the port sends then goes
    /// through it, as the kernel's own forwarding does, instead of past it.
    /// True if that changed anything.
    pub fn set_queued(&self, queued: bool) -> bool {
        if self.queued.swap(queued, Relaxed) == queued {
            return false;
        }
        if queued {
            self.send_through_tc();
        } else {
            self.release_through_tc();
        }
        true
    }

    /// The bridge's internal port (a TAP): what the host sends is what the
    /// switch receives from it.
    pub fn is_internal(&self) -> bool {
        matches!(self.io, PortIo::Tap(_))
    }

    /// The packet socket, for a port that has one.
    pub(super) fn socket(&self) -> Option<&PacketSocket> {
        match &self.io {
            PortIo::Socket(s) => Some(s),
            PortIo::Tap(_) => None,
        }
    }

    /// The receive ring, once the port has one (only packet sockets can).
    pub(super) fn rx_ring(&self) -> Option<&RxRing> {
        match &self.io {
            PortIo::Socket(s) => s.rx_ring(),
            PortIo::Tap(_) => None,
        }
    }

    /// Moves receiving to a ring of `frames` slots; `Ok(false)` for a port that
    /// cannot have one.
    pub(super) fn attach_ring(&self, frames: usize) -> io::Result<bool> {
        match &self.io {
            PortIo::Socket(s) => s.attach_ring(frames).map(|_| true),
            PortIo::Tap(_) => Ok(false),
        }
    }

    /// Receives a batch from the socket queue (or the TAP) into `rx`.
    pub(super) fn recv(&self, rx: &mut RxBatch) -> io::Result<usize> {
        match &self.io {
            PortIo::Socket(s) => rx.recv(s),
            PortIo::Tap(t) => rx.recv_tap(t),
        }
    }

    /// Receives at most `max` frames from the socket queue: those too big for a
    /// ring slot.
    pub(super) fn recv_overflow(&self, rx: &mut RxBatch, max: usize) -> io::Result<usize> {
        match &self.io {
            PortIo::Socket(s) => rx.recv_up_to(s, max),
            PortIo::Tap(_) => Ok(0),
        }
    }

    /// A pending receive error (ENETDOWN when the interface went away).
    pub(super) fn take_error(&self) -> Option<io::Error> {
        match &self.io {
            PortIo::Socket(s) => s.take_error(),
            PortIo::Tap(_) => None,
        }
    }

    /// Where a datapath thread sends this port's frames: a `Sender` (the
    /// direct one, or the one through TC) with the interface's index, or the TAP.
    pub(super) fn sink(&self) -> Sink<'_> {
        match &self.io {
            PortIo::Socket(s) if s.sends_through_tc() => Sink::ThroughTc(s.ifindex()),
            PortIo::Socket(s) => Sink::Direct(s.ifindex()),
            PortIo::Tap(t) => Sink::Tap(t),
        }
    }

    pub(super) fn offload(&self) -> MutexGuard<'_, Option<PortOffload>> {
        super::lock(&self.offload)
    }

    /// Re-reads the interface's MTU for the kernel fast path.
    pub fn refresh_mtu(&self) -> std::io::Result<()> {
        match (self.offload().as_ref(), crate::sys::mtu(&self.name)) {
            (Some(offload), Some(mtu)) => offload.set_mtu(mtu),
            _ => Ok(()),
        }
    }

    /// The port's counters, frames the kernel forwarded for it included.
    pub fn counters(&self) -> Counters {
        if let Some(drops) = self.socket().map(PacketSocket::take_drops) {
            self.stats.add(&Counters {
                rx_drops: drops,
                rx_queue_full: drops,
                ..Counters::ZERO
            });
        }
        let mut c = self.stats.snapshot();
        if let Some(offload) = self.offload().as_ref() {
            let k = offload.counters();
            c.rx_packets += k.rx_packets;
            c.rx_bytes += k.rx_bytes;
            c.tx_packets += k.tx_packets;
            c.tx_bytes += k.tx_bytes;
            // Added: the counters hold what earlier programs of the port forwarded.
            c.rx_kernel += k.rx_packets;
            c.tx_kernel += k.tx_packets;
        }
        c
    }
}

macro_rules! define_port_stats {
    ($( $(#[$doc:meta])* $name:ident: $line:ident $label:literal, )*) => {
        /// The port's [`Counters`] as relaxed atomics: written by the datapath a
        /// batch at a time, read by `dump-ports`. Generated from proto's list, so a
        /// new counter is one line there.
        #[derive(Default)]
        pub struct PortStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl PortStats {
            /// Adds a batch's counts.
            pub fn add(&self, c: &Counters) {
                $( bump(&self.$name, c.$name); )*
            }

            pub fn snapshot(&self) -> Counters {
                Counters { $( $name: self.$name.load(Relaxed), )* }
            }
        }
    };
}

switchd_proto::with_port_counters!(define_port_stats);

/// Adds to a counter unless there is nothing to add (saves a locked instruction).
fn bump(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_guard_blocks_on_a_burst_of_moves_only() {
        let g = LoopGuard::default();
        // A host moving now and then never trips it, even over many seconds.
        for s in 0..100 {
            assert!(!g.note_moves(5, s * 1000));
        }
        assert!(!g.is_blocked(100_000));
        // A storm does, within its first second, for LOOP_BLOCK_MS.
        let t = 200_000;
        assert!(!g.note_moves(LOOP_MOVES_PER_SEC / 2, t));
        assert!(g.note_moves(LOOP_MOVES_PER_SEC, t + 10));
        assert!(g.is_blocked(t + 10 + LOOP_BLOCK_MS - 1));
        assert_eq!(g.blocked_for_ms(t + 10), Some(LOOP_BLOCK_MS));
        assert!(!g.is_blocked(t + 10 + LOOP_BLOCK_MS));
    }
}
