use super::{cvt, RxRing};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::OnceLock;

/// Socket buffer size forced on every port. The default (~200 KB) holds only three
/// 64 KB GSO frames, so a burst from a TCP sender overflows it and TCP backs off.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// An AF_PACKET socket bound to one interface, non-blocking, with a virtio-net header
/// on every frame. It only receives: frames leave through a `Sender`.
pub struct PacketSocket {
    /// Declared before `fd` so the mapping goes before the socket closes. Set
    /// once, by the thread that receives on the socket, when the port gets busy.
    rx_ring: OnceLock<RxRing>,
    /// Registered in a datapath thread's epoll.
    fd: OwnedFd,
    ifindex: u32,
    /// While non-zero, what is sent to this interface goes through its queueing
    /// layer (`Sender::open`) rather than straight to the driver: one hold for
    /// good by a tunnel port, one by each capture running on it.
    through_tc: AtomicU32,
}

/// An AF_PACKET socket bound to no interface: each message names the one it
/// leaves by (`sll_ifindex`), so one `sendmmsg` floods a frame out of a thousand
/// ports (it was a call per port). It receives nothing (protocol 0), and is in no
/// epoll: sending on a socket epoll waits on cost a locked wakeup per frame (~13%
/// of switchd's CPU forwarding 64-byte frames, perf).
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    /// Straight to the driver (veth has no queue worth going through), or, with
    /// `through_tc`, through the interface's queueing layer so that its TC egress
    /// programs see the frames (a tunnel port's encapsulation takes them there,
    /// skipping the veth).
    pub fn open(through_tc: bool) -> io::Result<Sender> {
        let fd = new_socket()?;
        set_opt(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            i32::from(!through_tc),
        )?;
        set_opt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            SOCKET_BUFFER_BYTES,
        )?;
        Ok(Sender { fd })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    /// Frames for this interface go through its queueing layer (`Sender::open`)
    /// until a matching `release_through_tc`, so its TC egress programs and its
    /// packet taps (a capture) see them.
    pub fn send_through_tc(&self) {
        self.through_tc.fetch_add(1, Relaxed);
    }

    pub fn release_through_tc(&self) {
        self.through_tc.fetch_sub(1, Relaxed);
    }

    pub fn sends_through_tc(&self) -> bool {
        self.through_tc.load(Relaxed) > 0
    }

    /// Opens a socket on `ifindex`, puts the interface into promiscuous mode for as
    /// long as the socket lives, and starts receiving into the socket queue (for
    /// `RxBatch`) until `attach_ring`.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let sock = PacketSocket {
            rx_ring: OnceLock::new(),
            fd: new_socket()?,
            ifindex,
            through_tc: AtomicU32::new(0),
        };
        set_opt(&sock.fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        // The kernel strips VLAN tags into metadata; this hands them back to us.
        set_opt(&sock.fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
        // We never want to read back what we (or anyone) sent out of this port.
        set_opt(&sock.fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        set_opt(
            &sock.fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            SOCKET_BUFFER_BYTES,
        )?;
        bind(&sock.fd, ifindex, libc::ETH_P_ALL as u16)?;

        // Promiscuous mode as a socket membership rather than the IFF_PROMISC flag:
        // the kernel counts it per socket and drops it when the socket closes, so a
        // crashed or killed switchd leaves no interface stuck in promiscuous mode.
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        sock.set_opt_raw(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        Ok(sock)
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn rx_ring(&self) -> Option<&RxRing> {
        self.rx_ring.get()
    }

    /// Switches receiving to a TPACKET_V2 ring of `frames` slots. The kernel
    /// drops whatever is queued on the socket (drain it with `RxBatch` first)
    /// and delivers nothing to it for an RCU grace period while it sets the ring
    /// up. Only the thread that receives on this socket may call it.
    pub fn attach_ring(&self, frames: usize) -> io::Result<&RxRing> {
        if let Some(ring) = self.rx_ring.get() {
            return Ok(ring);
        }
        self.set_opt(
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )?;
        // Frames too big for a ring slot are queued whole on the socket as well.
        self.set_opt(libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
        let ring = RxRing::attach(self, frames)?;
        Ok(self.rx_ring.get_or_init(|| ring))
    }

    /// Frames the kernel dropped for this socket (ring or queue full) since the
    /// last call: reading the statistics resets them.
    pub fn take_drops(&self) -> u64 {
        take_drops(&self.fd)
    }

    /// Reads and clears a pending socket error (`ENETDOWN` when the interface went
    /// down or away). Until it is read, epoll keeps reporting the socket.
    pub fn take_error(&self) -> Option<io::Error> {
        take_error(&self.fd)
    }

    fn set_opt(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        set_opt(&self.fd, level, name, value)
    }

    /// Sets an option on the receiving socket.
    pub(super) fn set_opt_raw<T>(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: &T,
    ) -> io::Result<()> {
        set_opt_raw(&self.fd, level, name, value)
    }
}

/// A non-blocking packet socket with protocol 0: it receives nothing until bind()
/// names an interface and a protocol, so no frame from another interface slips in
/// between socket() and bind().
pub(super) fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn bind(fd: &OwnedFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll and the length matches it.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    })?;
    Ok(())
}

pub(super) fn set_opt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_opt_raw(fd, level, name, &value)
}

pub(super) fn set_opt_raw<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T and the length passed is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Frames the kernel dropped for a packet socket since the last call (reading
/// the statistics resets them).
pub(super) fn take_drops(fd: &OwnedFd) -> u64 {
    // SAFETY: tpacket_stats is plain old data; all-zero is a valid value.
    let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are valid for writes and `len` is its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        stats.tp_drops.into()
    } else {
        0
    }
}

/// Reads and clears a socket's pending error.
pub(super) fn take_error(fd: &OwnedFd) -> Option<io::Error> {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes and `len` is err's size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match (rc, err) {
        (0, 0) => None,
        (0, code) => Some(io::Error::from_raw_os_error(code)),
        _ => Some(io::Error::last_os_error()),
    }
}

/// The receiving socket, for epoll.
impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
