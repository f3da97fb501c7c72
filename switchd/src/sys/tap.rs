//! TAP devices: a bridge's internal port, through which the host itself sits on
//! the bridge (Open vSwitch's userspace datapath does the same).
//!
//! Frames the host sends on the TAP are read from its file descriptor, frames
//! written to it enter the host's stack. Both carry the same 10-byte virtio-net
//! header as our packet sockets, and the device offers checksum and TSO offloads,
//! so a TCP stream between the host and a namespace moves 64 KB super-frames end
//! to end instead of being segmented and checksummed by the kernel twice.
//!
//! The device is not persistent: it goes away when the descriptor closes, so a
//! switchd that dies leaves nothing behind (and recreates it at start).

use super::cvt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub struct Tap {
    fd: OwnedFd,
    ifindex: u32,
}

impl Tap {
    /// Creates TAP device `name`; fails with `EBUSY` if an interface of that name
    /// exists already.
    pub fn create(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let path = c"/dev/net/tun";
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = cvt(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by open() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // EXCL: never attach to someone else's device that happens to have our name.
        ifr.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_TUN_EXCL) as i16;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })?;
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        cvt(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offloads),
            )
        })?;
        let ifindex =
            super::ifindex(name).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        Ok(Tap { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reads one frame (virtio-net header first) without blocking.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length for the whole call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        Ok(cvt(n)? as usize)
    }

    /// Hands one frame (virtio-net header first), given in two parts, to the
    /// host's stack.
    pub fn write(&self, parts: [&[u8]; 2]) -> io::Result<usize> {
        let iovs = parts.map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        });
        // SAFETY: each iovec points at a part valid for reads of its length for
        // the whole call; the kernel only reads them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iovs.as_ptr(), iovs.len() as i32) };
        Ok(cvt(n)? as usize)
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
