//! Batched receive and send: one `recvmmsg`/`sendmmsg` moves up to a whole batch.

use super::{PacketSocket, Sender, Tap};
use crate::wire::vlan;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};

/// Room for the largest frame a port can hand us: a 64 KB GSO super-frame plus its
/// Ethernet and virtio-net headers.
pub const FRAME_BUF_BYTES: usize = 65536 + 512;

/// Headroom in front of each receive buffer, so a VLAN tag the kernel stripped can
/// be put back without copying the frame.
const HEADROOM: usize = vlan::TAG_LEN;
const SLOT_BYTES: usize = HEADROOM + FRAME_BUF_BYTES;
/// Room for one `PACKET_AUXDATA` control message (40 bytes on 64-bit), 8-byte aligned.
type Control = [u64; 8];

/// Preallocated receive buffers, iovecs, control buffers and message headers for one
/// batch, built once per datapath thread.
pub struct RxBatch {
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    controls: Box<[Control]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Per message: where the header and frame start in `bufs`, their length, and
    /// whether the frame was cut short.
    frames: Box<[(usize, usize, bool)]>,
    len: usize,
}

/// One received message.
pub struct RxFrame<'a> {
    /// virtio-net header followed by the Ethernet frame, VLAN tag restored.
    pub bytes: &'a [u8],
    /// The frame did not fit the buffer and was cut short.
    pub truncated: bool,
}

/// Message headers with one iovec each; the pointers are filled in per call.
fn headers(capacity: usize) -> Box<[libc::mmsghdr]> {
    (0..capacity)
        .map(|_| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    }
}

fn iovecs(capacity: usize) -> Box<[libc::iovec]> {
    (0..capacity)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect()
}

impl RxBatch {
    pub fn new(capacity: usize) -> Self {
        RxBatch {
            bufs: vec![0u8; capacity * SLOT_BYTES].into_boxed_slice(),
            iovs: iovecs(capacity),
            controls: vec![[0u64; 8]; capacity].into_boxed_slice(),
            hdrs: headers(capacity),
            frames: vec![(0, 0, false); capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// Receives up to a batch without blocking. `WouldBlock` means the socket is empty.
    pub fn recv(&mut self, sock: &PacketSocket) -> io::Result<usize> {
        self.recv_up_to(sock, self.hdrs.len())
    }

    /// Receives at most `max` messages (and at most a batch) without blocking.
    pub fn recv_up_to(&mut self, sock: &PacketSocket, max: usize) -> io::Result<usize> {
        self.len = 0;
        // Pointers are taken afresh for every call: ones kept from construction
        // would be invalidated by the `&mut self.bufs[..]` borrows in between.
        let bufs = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            // SAFETY: i < capacity, so the offset stays inside `bufs`.
            iov.iov_base = unsafe { bufs.add(i * SLOT_BYTES + HEADROOM) }.cast();
            iov.iov_len = FRAME_BUF_BYTES;
        }
        let (iovs, controls) = (self.iovs.as_mut_ptr(), self.controls.as_mut_ptr());
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            // SAFETY: i < capacity, so the offsets stay inside `iovs` and `controls`.
            unsafe {
                h.msg_hdr.msg_iov = iovs.add(i);
                h.msg_hdr.msg_control = controls.add(i).cast();
            }
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_controllen = size_of::<Control>();
            h.msg_len = 0;
        }
        debug_assert_eq!(self.iovs.len(), self.hdrs.len());
        debug_assert_eq!(self.controls.len(), self.hdrs.len());
        // SAFETY: every header points at an iovec of this batch, which points at a
        // FRAME_BUF_BYTES region of `bufs`, and at a control buffer of the size given;
        // all of it lives as long as `self`.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_fd().as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                max.min(self.hdrs.len()) as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.len = super::cvt(n)? as usize;
        for i in 0..self.len {
            let h = &self.hdrs[i].msg_hdr;
            let len = (self.hdrs[i].msg_len as usize).min(FRAME_BUF_BYTES);
            let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
            let slot = i * SLOT_BYTES;
            self.frames[i] = match stripped_vlan(h) {
                Some((tpid, tci))
                    if !truncated
                        && vlan::insert_tag(
                            &mut self.bufs[slot..slot + HEADROOM + len],
                            tpid,
                            tci,
                        )
                        .is_ok() =>
                {
                    (slot, HEADROOM + len, false)
                }
                _ => (slot + HEADROOM, len, truncated),
            };
        }
        Ok(self.len)
    }

    /// Reads up to a batch from a TAP device, one `read` per frame (a TAP has no
    /// batched receive). `WouldBlock` means it is empty.
    pub fn recv_tap(&mut self, tap: &Tap) -> io::Result<usize> {
        self.len = 0;
        while self.len < self.frames.len() {
            let slot = self.len * SLOT_BYTES + HEADROOM;
            match tap.read(&mut self.bufs[slot..slot + FRAME_BUF_BYTES]) {
                Ok(n) => {
                    // A TAP cuts longer frames short silently; ours is bigger than
                    // anything it can hand over.
                    self.frames[self.len] = (slot, n, n == FRAME_BUF_BYTES);
                    self.len += 1;
                }
                // Hand over what was read; an error comes back on the next call.
                Err(_) if self.len > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th message of the last `recv`; `i` must be below `len()`.
    pub fn frame(&self, i: usize) -> RxFrame<'_> {
        let (start, len, truncated) = self.frames[i];
        RxFrame {
            bytes: &self.bufs[start..start + len],
            truncated,
        }
    }
}

/// The VLAN tag (TPID, TCI) the kernel stripped from a received frame, from its
/// `PACKET_AUXDATA` control message.
fn stripped_vlan(h: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG_*
    // helpers stay within that, and the payload is read unaligned after its length
    // was checked.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == libc::PACKET_AUXDATA
                && (*c).cmsg_len
                    >= libc::CMSG_LEN(size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    vlan::TPID_8021Q
                };
                return Some((tpid, aux.tp_vlan_tci));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// What one port got from a `TxBatch::send`, or a `send_tap`.
#[derive(Debug, Default)]
pub struct TxOutcome {
    pub packets: u64,
    /// Bytes handed to the kernel, headers included.
    pub bytes: u64,
    /// Frames not sent because the socket or the device queue was full.
    pub dropped: u64,
    /// Frames the kernel refused (device gone, ...).
    pub errors: u64,
    /// Frames longer than the device's MTU, which the kernel refused.
    pub too_big: u64,
    pub last_error: Option<io::Error>,
}

/// A frame to send (virtio-net header first): a received one as it is, or with
/// its outer VLAN tag replaced by `tag` (`None`: removed). The new head is
/// written at send time into the batch's own buffers, and the rest of the frame
/// is sent from where it is: the frame itself, up to 64 KB, is never copied, and
/// a frame sent as it is costs no more than its slice.
#[derive(Clone, Copy, Debug)]
pub enum TxFrame<'a> {
    Whole(&'a [u8]),
    Retag {
        bytes: &'a [u8],
        tag: Option<(u16, u16)>,
    },
}

impl TxFrame<'_> {
    /// The bytes that go on the wire, or `None` for a frame whose virtio-net
    /// header does not survive the change (one the send counts as an error).
    /// For tests; the send path writes no copy.
    pub fn to_vec(&self) -> Option<Vec<u8>> {
        match *self {
            TxFrame::Whole(bytes) => Some(bytes.to_vec()),
            TxFrame::Retag { bytes, tag } => {
                let mut head = [0; vlan::RETAG_HEAD_LEN];
                let (len, tail) = vlan::retag(bytes, tag, &mut head).ok()?;
                Some([&head[..len], &bytes[tail..]].concat())
            }
        }
    }
}

/// Preallocated iovecs (two per message: a head and the rest), heads, addresses
/// and message headers for sending a batch of borrowed frames.
pub struct TxBatch {
    iovs: Box<[libc::iovec]>,
    heads: Box<[[u8; vlan::RETAG_HEAD_LEN]]>,
    addrs: Box<[libc::sockaddr_ll]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Bytes of each message.
    lens: Box<[usize]>,
    /// The outcome each message counts in.
    dests: Box<[usize]>,
}

impl TxBatch {
    pub fn new(capacity: usize) -> Self {
        TxBatch {
            iovs: iovecs(2 * capacity),
            heads: vec![[0; vlan::RETAG_HEAD_LEN]; capacity].into_boxed_slice(),
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { std::mem::zeroed::<libc::sockaddr_ll>() }; capacity]
                .into_boxed_slice(),
            hdrs: headers(capacity),
            lens: vec![0; capacity].into_boxed_slice(),
            dests: vec![0; capacity].into_boxed_slice(),
        }
    }

    /// Sends every `(outcome, ifindex, frame)` in order out of interface
    /// `ifindex`, up to a whole batch per syscall whatever the interfaces, without
    /// blocking, and counts it in `outcomes[outcome]`. The pointers to the frames
    /// do not outlive this call.
    pub fn send<'a>(
        &mut self,
        sender: &Sender,
        frames: impl IntoIterator<Item = (usize, u32, TxFrame<'a>)>,
        outcomes: &mut [TxOutcome],
    ) {
        let mut frames = frames.into_iter();
        let capacity = self.hdrs.len();
        // One pointer for every head: a fresh `&mut self.heads[n]` per frame would
        // re-borrow the whole slice under the iovecs already pointing into it.
        let heads = self.heads.as_mut_ptr();
        loop {
            let (mut n, mut done) = (0, false);
            while n < capacity {
                let Some((dest, ifindex, frame)) = frames.next() else {
                    done = true;
                    break;
                };
                let (first, second) = self.iovs[2 * n..2 * n + 2].split_at_mut(1);
                let (first, second) = (&mut first[0], &mut second[0]);
                let (iovlen, len) = match frame {
                    TxFrame::Whole(bytes) => {
                        *first = iovec(bytes);
                        (1, bytes.len())
                    }
                    TxFrame::Retag { bytes, tag } => {
                        // SAFETY: n < capacity = heads.len(); no other reference to
                        // this head exists while it is written.
                        let head = unsafe { &mut *heads.add(n) };
                        let Ok((len, tail)) = vlan::retag(bytes, tag, head) else {
                            outcomes[dest].errors += 1;
                            continue;
                        };
                        *first = iovec(&head[..len]);
                        *second = iovec(&bytes[tail..]);
                        (2, len + bytes.len() - tail)
                    }
                };
                let addr = &mut self.addrs[n];
                addr.sll_family = libc::AF_PACKET as u16;
                // Protocol 0: the kernel reads it from the frame, as for a bound
                // socket of protocol 0.
                addr.sll_ifindex = ifindex as i32;
                self.hdrs[n].msg_hdr.msg_iovlen = iovlen;
                self.lens[n] = len;
                self.dests[n] = dest;
                n += 1;
            }
            if n > 0 {
                self.flush(sender, n, outcomes);
            }
            if done {
                return;
            }
        }
    }

    /// Writes every frame to a TAP device, one `write` each.
    pub fn send_tap<'a>(
        &mut self,
        tap: &Tap,
        frames: impl IntoIterator<Item = TxFrame<'a>>,
    ) -> TxOutcome {
        let mut out = TxOutcome::default();
        let mut head = [0; vlan::RETAG_HEAD_LEN];
        for frame in frames {
            let parts = match frame {
                TxFrame::Whole(bytes) => [bytes, &[][..]],
                TxFrame::Retag { bytes, tag } => match vlan::retag(bytes, tag, &mut head) {
                    Ok((len, tail)) => [&head[..len], &bytes[tail..]],
                    Err(_) => {
                        out.errors += 1;
                        continue;
                    }
                },
            };
            match tap.write(parts) {
                Ok(n) => {
                    out.packets += 1;
                    out.bytes += n as u64;
                }
                // EIO: the device is down, which is the host's choice, not a fault.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::ENOBUFS | libc::EIO)
                    ) =>
                {
                    out.dropped += 1;
                }
                Err(e) => {
                    out.errors += 1;
                    out.last_error = Some(e);
                }
            }
        }
        out
    }

    fn flush(&mut self, sender: &Sender, n: usize, outcomes: &mut [TxOutcome]) {
        let iovs = self.iovs.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            // SAFETY: i < capacity and `iovs` holds two per message, so the offset
            // stays inside it.
            h.msg_hdr.msg_iov = unsafe { iovs.add(2 * i) };
            // SAFETY: i < capacity = addrs.len().
            h.msg_hdr.msg_name = unsafe { addrs.add(i) }.cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        }
        let mut off = 0;
        while off < n {
            // SAFETY: headers off..n point at their iovecs and addresses, which
            // point at frames borrowed for the duration of `send` or at `heads`;
            // the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    sender.fd(),
                    self.hdrs.as_mut_ptr().add(off),
                    (n - off) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                for i in off..off + r as usize {
                    let out = &mut outcomes[self.dests[i]];
                    out.packets += 1;
                    out.bytes += self.lens[i] as u64;
                }
                off += r as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            let out = &mut outcomes[self.dests[off]];
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The socket's buffer is full: so it is for the rest.
                Some(libc::EAGAIN) => {
                    for i in off..n {
                        outcomes[self.dests[i]].dropped += 1;
                    }
                    return;
                }
                // This message's device queue is full or stopped.
                Some(libc::ENOBUFS) => out.dropped += 1,
                Some(libc::EMSGSIZE) => out.too_big += 1,
                // This frame is bad for this port (device gone): skip it.
                _ => {
                    out.errors += 1;
                    out.last_error = Some(err);
                }
            }
            off += 1;
        }
    }
}
