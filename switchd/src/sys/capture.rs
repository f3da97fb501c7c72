//! `CaptureSocket`: what `switchctl capture` reads a port with, a packet socket of
//! its own on the port's interface, as tcpdump opens one. The kernel hands it
//! every frame the interface receives and sends, whoever forwards it (the
//! userspace datapath, the TC fast path, the host), after running the capture's
//! filter on it, and drops and counts what a slow reader leaves queued beyond the
//! socket's buffer.

use super::cvt;
use super::packet_socket::{bind, new_socket, set_opt, set_opt_raw, take_drops};
use crate::wire::vlan;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// One classic BPF instruction, as `tcpdump -ddd` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// What one receive got.
#[derive(Clone, Copy, Debug)]
pub struct Captured {
    /// Bytes written to the buffer (the frame up to the buffer's length).
    pub len: usize,
    /// The frame's length on the wire, a stripped VLAN tag included.
    pub orig_len: usize,
    /// Sent out of the interface (`PACKET_OUTGOING`), rather than received by it.
    pub outgoing: bool,
    /// When the kernel saw it, since the epoch.
    pub time: Duration,
}

pub struct CaptureSocket {
    fd: OwnedFd,
}

/// Room for a `PACKET_AUXDATA` and a `SCM_TIMESTAMPNS` control message.
const CONTROL_BYTES: usize = 128;

impl CaptureSocket {
    /// Opens a non-blocking socket on `ifindex` that queues at most about
    /// `buffer_bytes` of frames, keeping only those `filter` accepts (all, when it
    /// is empty). The filter is attached before the socket is bound, so no frame
    /// it would refuse is ever queued.
    pub fn open(ifindex: u32, filter: &[FilterInsn], buffer_bytes: usize) -> io::Result<Self> {
        let fd = new_socket()?;
        if !filter.is_empty() {
            let insns: Vec<libc::sock_filter> = filter
                .iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect();
            let prog = libc::sock_fprog {
                len: u16::try_from(insns.len())
                    .map_err(|_| io::Error::other("filter longer than 65535 instructions"))?,
                filter: insns.as_ptr().cast_mut(),
            };
            // The kernel copies the program during the call; `insns` outlives it.
            set_opt_raw(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        }
        let buffer = libc::c_int::try_from(buffer_bytes).unwrap_or(libc::c_int::MAX);
        set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, buffer)?;
        set_opt(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        set_opt(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        bind(&fd, ifindex, libc::ETH_P_ALL as u16)?;
        Ok(CaptureSocket { fd })
    }

    /// Receives one frame into `buf`, leaving its first 4 bytes free and putting
    /// back there a VLAN tag the kernel stripped into metadata, so the frame
    /// starts at `buf[0]` as it was on the wire. `None` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Captured>> {
        const HEAD: usize = 4;
        let mut control = [0u64; CONTROL_BYTES / 8];
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf[HEAD..].as_mut_ptr().cast(),
            iov_len: buf.len() - HEAD,
        };
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_BYTES;
        // SAFETY: every pointer in `msg` points to a live buffer of the length given.
        let n = unsafe {
            libc::recvmsg(
                self.fd.as_raw_fd(),
                &mut msg,
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        let orig = match cvt(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: `msg` is what recvmsg just filled, its control buffer live.
        let (tag, time) = unsafe { read_control(&msg) };
        let mut len = orig.min(buf.len() - HEAD);
        let (start, orig_len) = match tag {
            Some((tpid, tci)) if len >= 12 => {
                buf.copy_within(HEAD..HEAD + 12, 0);
                buf[12..14].copy_from_slice(&tpid.to_be_bytes());
                buf[14..16].copy_from_slice(&tci.to_be_bytes());
                len += HEAD;
                (0, orig + HEAD)
            }
            _ => (HEAD, orig),
        };
        if start != 0 {
            buf.copy_within(start..start + len, 0);
        }
        Ok(Some(Captured {
            len,
            orig_len,
            outgoing: addr.sll_pkttype == libc::PACKET_OUTGOING,
            time,
        }))
    }

    /// Frames the kernel dropped because the socket's buffer was full, since the
    /// last call.
    pub fn take_drops(&self) -> u64 {
        take_drops(&self.fd)
    }

    /// Reads and clears a pending socket error (`ENETDOWN`, the interface went away).
    pub fn take_error(&self) -> Option<io::Error> {
        super::packet_socket::take_error(&self.fd)
    }
}

/// The stripped VLAN tag and the kernel's timestamp of a received frame.
///
/// # Safety
/// `h.msg_control` must point to `h.msg_controllen` readable bytes, as
/// `recvmsg` leaves them.
unsafe fn read_control(h: &libc::msghdr) -> (Option<(u16, u16)>, Duration) {
    let mut tag = None;
    let mut time = Duration::ZERO;
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG_*
    // helpers stay within that, and each payload is read unaligned after its
    // length was checked.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let len = (*c).cmsg_len;
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == libc::PACKET_AUXDATA
                && len >= libc::CMSG_LEN(size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        vlan::TPID_8021Q
                    };
                    tag = Some((tpid, aux.tp_vlan_tci));
                }
            } else if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                && len >= libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                time = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (tag, time)
}

impl AsFd for CaptureSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
