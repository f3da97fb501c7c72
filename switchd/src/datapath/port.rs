use super::fdb::PortId;
use super::offload::PortOffload;
use crate::sys::{PacketSocket, Tap};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use switchd_proto::PortCounters;

/// How a port's frames come and go.
pub enum PortIo {
    /// A packet socket on an existing interface (a veth end, a NIC).
    Socket(PacketSocket),
    /// The bridge's internal port: a TAP device switchd created.
    Tap(Tap),
}

impl AsRawFd for PortIo {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            PortIo::Socket(s) => s.as_raw_fd(),
            PortIo::Tap(t) => t.as_raw_fd(),
        }
    }
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
    pub io: PortIo,
    pub stats: PortStats,
    pub loop_guard: LoopGuard,
    /// The port's kernel fast path, while it has one.
    pub(super) offload: Mutex<Option<PortOffload>>,
}

impl Port {
    pub fn ifindex(&self) -> u32 {
        match &self.io {
            PortIo::Socket(s) => s.ifindex(),
            PortIo::Tap(t) => t.ifindex(),
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self.io, PortIo::Tap(_))
    }

    pub(super) fn offload(&self) -> MutexGuard<'_, Option<PortOffload>> {
        self.offload.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the interface's MTU for the kernel fast path.
    pub fn refresh_mtu(&self) {
        if let Some(offload) = self.offload().as_ref() {
            if let Some(mtu) = crate::sys::mtu(&self.name) {
                offload.set_mtu(mtu);
            }
        }
    }

    /// The port's counters, frames the kernel forwarded for it included.
    pub fn counters(&self, name: &str) -> PortCounters {
        let mut c = self.stats.snapshot(name);
        if let Some(offload) = self.offload().as_ref() {
            let k = offload.counters();
            c.rx_packets += k.rx_packets;
            c.rx_bytes += k.rx_bytes;
            c.tx_packets += k.tx_packets;
            c.tx_bytes += k.tx_bytes;
            c.rx_kernel = k.rx_packets;
            c.tx_kernel = k.tx_packets;
        }
        c
    }
}

/// Written by the datapath with relaxed atomics (a batch at a time), read by `dump-ports`.
#[derive(Default)]
pub struct PortStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Valid frames we chose not to forward: the sum of the drop reasons below.
    pub rx_drops: AtomicU64,
    /// Frames that could not be read or were malformed: the sum of runts,
    /// truncated frames and receive failures.
    pub rx_errors: AtomicU64,
    /// Per reason: a multicast or broadcast source address.
    pub rx_group_src: AtomicU64,
    /// A virtio-net header that makes no sense for its frame.
    pub rx_bad_vnet: AtomicU64,
    /// Shorter than an Ethernet header.
    pub rx_runts: AtomicU64,
    /// Not received whole.
    pub rx_truncated: AtomicU64,
    /// Received while the port was blocked as part of a loop.
    pub rx_loop: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames lost because the port's socket or device queue was full.
    pub tx_drops: AtomicU64,
    /// Frames the kernel refused to send on this port.
    pub tx_errors: AtomicU64,
}

impl PortStats {
    pub fn snapshot(&self, port: &str) -> PortCounters {
        PortCounters {
            port: port.to_string(),
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            rx_drops: self.rx_drops.load(Relaxed),
            rx_errors: self.rx_errors.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_drops: self.tx_drops.load(Relaxed),
            tx_errors: self.tx_errors.load(Relaxed),
            rx_group_src: self.rx_group_src.load(Relaxed),
            rx_bad_vnet: self.rx_bad_vnet.load(Relaxed),
            rx_runts: self.rx_runts.load(Relaxed),
            rx_truncated: self.rx_truncated.load(Relaxed),
            rx_loop: self.rx_loop.load(Relaxed),
            rx_kernel: 0,
            tx_kernel: 0,
        }
    }
}

/// Adds to a counter unless there is nothing to add (saves a locked instruction).
pub(super) fn bump(counter: &AtomicU64, n: u64) {
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
