//! Every libc call switchd makes, behind safe RAII types.
//!
//! The afpacket crate was not used: it has no `PACKET_VNET_HDR` (without which TCP
//! from a namespace with default offloads stalls, DESIGN.md problem 1) and no
//! `recvmmsg`/`sendmmsg` batching (one syscall per frame caps out near 100-200k
//! frames/s, problem 2).
#![allow(unsafe_code)]

pub mod bpf;
mod capture;
mod mmsg;
mod packet_socket;
mod poll;
mod process;
mod ring;
mod tap;

pub use capture::{CaptureSocket, Captured, FilterInsn};
pub use mmsg::{RxBatch, RxFrame, TxBatch, TxFrame, TxOutcome};
pub use packet_socket::{PacketSocket, Sender};
pub use poll::{Epoll, EpollEvents, EventFd};
pub use process::{clock_ticks_per_sec, effective_uid, kill, CpuSet};
pub use ring::{RingBatch, RingSlot, RxRing, RING_FRAME_BYTES};
pub use tap::Tap;

use std::ffi::CString;
use std::io;

/// Turns a libc return value into `io::Result`, reading errno on -1.
fn cvt<T: PartialOrd + Default>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Raises the soft limit on open files to the hard limit. Each
/// port holds a socket and more (a TAP's fd, a tunnel's TC links); the usual
/// soft limit of 1024 would stop a bridge short of a thousand ports.
pub fn raise_fd_limit() -> io::Result<()> {
    // SAFETY: rlimit is plain old data; all-zero is a valid value.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is valid for writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; the soft limit does not exceed the hard one.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `Instant` and of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain old data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid for writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The MTU of interface `name` in this namespace, `None` if absent.
pub fn mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The current index of a network interface in this namespace, `None` if absent.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Moves the calling thread into the network namespace `ns` (an open
/// `/run/netns/NAME` or `/proc/PID/ns/net`). Sockets it opens afterwards belong to
/// that namespace. Only ever call it on a thread of its own.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a descriptor that `ns` keeps open.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// True if `file` is a network namespace (ioctl NS_GET_NSTYPE); false for any
/// other file, so a wrong path gets a clear error instead of setns's EINVAL.
pub fn is_netns(file: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    /// _IO(0xb7, 0x3) from linux/nsfs.h.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an argument-less ioctl on a descriptor `file` keeps open.
    match cvt(unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) }) {
        Ok(kind) => Ok(kind == libc::CLONE_NEWNET),
        // Not an nsfs file at all.
        Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The id of a group given by name or number; `None` if there is no such group.
pub fn group_id(group: &str) -> std::io::Result<Option<u32>> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Some(gid));
    }
    let name = CString::new(group).map_err(std::io::Error::other)?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: group is plain old data; all-zero is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf`'s
    // length is passed; the result points into `grp` or is null.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok((!result.is_null()).then_some(grp.gr_gid))
}

/// An exclusive `flock` on a file, held until dropped (or the process dies: the
/// kernel releases it with the descriptor, so a SIGKILLed holder leaves no stale
/// lock). The file holds the holder's pid, for the error a second taker gets.
pub struct LockFile {
    _file: std::fs::File,
}

impl LockFile {
    /// Takes the lock without waiting; `LockError::Held` when another process
    /// has it.
    pub fn try_lock(path: &std::path::Path) -> Result<LockFile, LockError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LockError::Io)?;
        // SAFETY: plain syscall on a descriptor `file` keeps open.
        if let Err(e) = cvt(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })
        {
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Io(e));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Held(pid.trim().parse().ok()));
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.map_err(LockError::Io)?;
        Ok(LockFile { _file: file })
    }
}

#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; its pid, if it wrote one.
    Held(Option<u32>),
    Io(io::Error),
}
