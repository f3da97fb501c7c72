//! A TPACKET_V2 receive ring: the kernel copies each frame into memory shared with
//! us, so receiving costs no syscall and no copy on the datapath thread.
//!
//! V2 rather than V3: V3 hands frames over a block at a time and holds a block
//! until it fills or a timeout (milliseconds) passes, which adds that latency to a
//! lone ping. V2 hands over each frame as soon as it is written.
//!
//! Ring slots are `RING_FRAME_BYTES`; a frame that does not fit (a 64 KB GSO
//! frame, a jumbo frame) is cut short in the ring and flagged `TP_STATUS_COPY`,
//! and the kernel queues the whole frame on the socket, where `RxBatch` reads it.

use super::PacketSocket;
use crate::wire::{vlan, vnet};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Room for a 1500-byte-MTU frame with its VLAN tag, virtio-net header and the
/// ring's own header.
pub const RING_FRAME_BYTES: usize = 2048;
const FRAMES_PER_BLOCK: usize = 16;

/// Where a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSlot {
    /// In the ring: byte offset and length of virtio-net header + frame.
    Ring { offset: usize, len: usize },
    /// Too big for a slot; the whole frame waits on the socket's receive queue.
    Copy,
    /// Cut short and no copy was queued (the socket buffer was full).
    Truncated,
}

/// The receive ring of one socket. Only the datapath thread that owns the port's
/// receive side calls `recv` and `release`; the kernel and that thread hand each
/// slot back and forth through its `tp_status` word (acquire/release).
pub struct RxRing {
    map: NonNull<u8>,
    map_len: usize,
    frames: usize,
    /// Next slot to read; written only by the owning thread.
    head: AtomicUsize,
    /// A `RingBatch` is outstanding: its slots must not be collected again.
    lent: AtomicBool,
}

/// Slots collected by `RxRing::recv`; they go back to the kernel when this drops,
/// so no slice of them can outlive their ownership.
pub struct RingBatch<'a> {
    ring: &'a RxRing,
    slots: &'a [RingSlot],
    /// False for the empty batch handed out while another is outstanding.
    owner: bool,
}

// SAFETY: the mapping is memory owned by this value, shared only with the kernel,
// which hands slots over through their status words (acquire/release).
unsafe impl Send for RxRing {}
// SAFETY: slots are only read through a `RingBatch`, and `lent` lets at most one
// batch exist at a time, whichever thread asks.
unsafe impl Sync for RxRing {}

impl RxRing {
    /// Attaches a ring of `frames` slots to `sock`. Must come after the socket's
    /// `PACKET_VNET_HDR` and `PACKET_VERSION` options.
    pub fn attach(sock: &PacketSocket, frames: usize) -> io::Result<RxRing> {
        let frames = frames
            .next_multiple_of(FRAMES_PER_BLOCK)
            .max(FRAMES_PER_BLOCK);
        let req = libc::tpacket_req {
            tp_block_size: (RING_FRAME_BYTES * FRAMES_PER_BLOCK) as u32,
            tp_block_nr: (frames / FRAMES_PER_BLOCK) as u32,
            tp_frame_size: RING_FRAME_BYTES as u32,
            tp_frame_nr: frames as u32,
        };
        sock.set_opt_raw(libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let map_len = frames * RING_FRAME_BYTES;
        // SAFETY: maps the ring the kernel just allocated for this socket; the
        // result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                sock.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // Unmapped, the ring would take every frame where nobody reads
            // them: take it away, so the socket's queue is used again.
            let none = libc::tpacket_req {
                tp_block_size: 0,
                tp_block_nr: 0,
                tp_frame_size: 0,
                tp_frame_nr: 0,
            };
            if let Err(undo) = sock.set_opt_raw(libc::SOL_PACKET, libc::PACKET_RX_RING, &none) {
                return Err(io::Error::other(format!(
                    "{e}; and the unmapped ring stayed: {undo}"
                )));
            }
            return Err(e);
        }
        Ok(RxRing {
            map: NonNull::new(ptr.cast()).expect("mmap never returns null on success"),
            map_len,
            frames,
            head: AtomicUsize::new(0),
            lent: AtomicBool::new(false),
        })
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: slot < frames, so the header lies inside the mapping; tp_status is
        // the first, 4-byte aligned, field of the slot and is shared with the kernel,
        // hence accessed atomically.
        unsafe { &*(self.map.as_ptr().add(slot * RING_FRAME_BYTES) as *const AtomicU32) }
    }

    /// Collects up to `max` filled slots from the head, restoring stripped VLAN
    /// tags in place. The slots stay ours until the returned batch drops. While a
    /// batch is outstanding the ring yields an empty one.
    pub fn recv<'a>(&'a self, out: &'a mut Vec<RingSlot>, max: usize) -> RingBatch<'a> {
        out.clear();
        if self.lent.swap(true, Ordering::Acquire) {
            return RingBatch {
                ring: self,
                slots: &[],
                owner: false,
            };
        }
        let head = self.head.load(Ordering::Relaxed);
        while out.len() < max {
            let slot = (head + out.len()) % self.frames;
            let status = self.status(slot).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let taken = self.take(slot, status);
            out.push(taken);
        }
        RingBatch {
            ring: self,
            slots: out,
            owner: true,
        }
    }

    /// True if the next slot holds a frame: one load, no syscall, for polling
    /// the ring instead of asking epoll.
    pub fn ready(&self) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        self.status(head).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    fn take(&self, slot: usize, status: u32) -> RingSlot {
        let base = slot * RING_FRAME_BYTES;
        // SAFETY: the kernel set TP_STATUS_USER (read with acquire), so the slot's
        // header and data are written and ours until released; the header lies at
        // the start of the slot, inside the mapping.
        let hdr: libc::tpacket2_hdr =
            unsafe { std::ptr::read(self.map.as_ptr().add(base) as *const libc::tpacket2_hdr) };
        if status & libc::TP_STATUS_COPY != 0 {
            return RingSlot::Copy;
        }
        let mac = usize::from(hdr.tp_mac);
        let snap = hdr.tp_snaplen as usize;
        if snap < hdr.tp_len as usize
            || mac < libc::TPACKET2_HDRLEN + vnet::HEADER_LEN + vlan::TAG_LEN
            || mac + snap > RING_FRAME_BYTES
        {
            return RingSlot::Truncated;
        }
        let start = mac - vnet::HEADER_LEN;
        let len = vnet::HEADER_LEN + snap;
        if status & libc::TP_STATUS_VLAN_VALID == 0 {
            return RingSlot::Ring {
                offset: base + start,
                len,
            };
        }
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            hdr.tp_vlan_tpid
        } else {
            vlan::TPID_8021Q
        };
        // SAFETY: the slot is ours (see above); the range starts after the ring
        // header and sockaddr_ll (checked against TPACKET2_HDRLEN) and ends inside
        // the slot (checked against RING_FRAME_BYTES).
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_ptr().add(base + start - vlan::TAG_LEN),
                vlan::TAG_LEN + len,
            )
        };
        match vlan::insert_tag(bytes, tpid, hdr.tp_vlan_tci) {
            Ok(()) => RingSlot::Ring {
                offset: base + start - vlan::TAG_LEN,
                len: len + vlan::TAG_LEN,
            },
            Err(_) => RingSlot::Truncated,
        }
    }

    fn release(&self, n: usize) {
        let head = self.head.load(Ordering::Relaxed);
        for i in 0..n {
            self.status((head + i) % self.frames)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
        self.head.store((head + n) % self.frames, Ordering::Relaxed);
    }
}

impl RingBatch<'_> {
    pub fn slots(&self) -> &[RingSlot] {
        self.slots
    }

    /// The virtio-net header and frame of slot `i` of this batch, if it is in the ring.
    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        let RingSlot::Ring { offset, len } = *self.slots.get(i)? else {
            return None;
        };
        debug_assert!(offset + len <= self.ring.map_len);
        // SAFETY: `take` produced this range inside one of this batch's slots,
        // which stay ours until this batch drops; the borrow of `self` outlives
        // the slice.
        Some(unsafe { std::slice::from_raw_parts(self.ring.map.as_ptr().add(offset), len) })
    }
}

impl Drop for RingBatch<'_> {
    fn drop(&mut self) {
        if self.owner {
            self.ring.release(self.slots.len());
            self.ring.lent.store(false, Ordering::Release);
        }
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `attach`, once.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// `tpacket2_hdr` is what the kernel writes at the start of each slot.
const _: () = assert!(size_of::<libc::tpacket2_hdr>() == 32);
