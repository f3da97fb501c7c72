//! VXLAN tunnel ports, carried by the kernel's vxlan device.
//!
//! A tunnel port is a veth pair switchd makes: the datapath sees the end named
//! as the port (`vx1`) as any veth port, with its learning, VLANs, static MACs and
//! kernel fast path. The encapsulating program (`encap`) gives each frame sent
//! to the port its tunnel key (remote, VNI, TTL, TOS) and redirects it into an
//! external (collect_metadata) vxlan device, one per UDP port, which
//! encapsulates it, a GSO frame whole (UDP tunnel GSO: the kernel segments it,
//! if at all, after encapsulation). It runs on the port's TC egress, where the
//! kernel fast path's redirects and the userspace datapath's frames arrive (the
//! port's socket sends through the queueing layer: `send_through_tc`), so both
//! skip the veth hop, and on the far end's TC ingress, where what the first
//! one lets pass (to be dropped and counted there) arrives. What that device receives passes its TC ingress (`decap`),
//! which finds the port by (VNI, remote, local address, UDP port) and sends the
//! frame out of the port's far end, so it arrives on `vx1`. docs/ARCHITECTURE.md
//! ("Tunnels") has the designs this one was chosen over, with their numbers.

use super::lock;
use super::offload::{count, lookup, percpu_sum, Asm, SlotPool, COUNTER_BYTES};
use super::offload::{ETH_P_8021AD_LE, ETH_P_8021Q_LE, SKB_IFINDEX, SKB_PKT_TYPE};
use super::offload::{SKB_GSO_SIZE, SKB_LEN, SKB_VLAN_PRESENT, SLOT_KEY};
use crate::sys::bpf::{self, helper, Insn, Map, Program, Size, FP, R0, R1, R2, R3, R4, R5, R6};
use crate::sys::bpf::{R7, R8};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// Tunnel ports switchd can have at once.
const TUNNEL_SLOTS: u32 = 4096;
/// (VNI, remote, local or 0, UDP port), each a u32 in host order.
const REMOTE_KEY_BYTES: usize = 16;
/// Outer TTL when the port sets none, as Open vSwitch's default.
const DEFAULT_TTL: u8 = 64;

/// The BPF maps every tunnel port's programs share.
pub struct Tunnels {
    /// (VNI, remote, local, UDP port) -> the ifindex of the port's far end
    /// (u32), its tunnel slot (u32).
    remotes: Map,
    /// The same for the underlay's receiving program (`underlay`), keyed as
    /// the fields sit in the frame (`underlay_key`), with the local address
    /// the remote sends to; the value adds the interface the route to the
    /// remote leaves by (u32).
    underlay_remotes: Map,
    /// That program, attached to each such interface.
    underlay: Program,
    /// Per tunnel slot: the port's kernel fast path for what its remote sends
    /// (`Offload::tunnel_program`), tail called by the decapsulating program.
    fast_paths: Map,
    /// Per tunnel slot: 1 while the remote is reachable (u32), the tunnel's
    /// MTU (u32).
    states: Map,
    /// Per-CPU counters per tunnel slot: frames and bytes too big, frames and
    /// bytes dropped while the remote was unreachable.
    counters: Map,
    cpus: usize,
    slots: Mutex<SlotPool>,
}

/// One tunnel port's outer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelKey {
    pub vni: u32,
    pub remote: Ipv4Addr,
    pub local: Option<Ipv4Addr>,
    pub dst_port: u16,
    pub ttl: Option<u8>,
    pub tos: u8,
}

/// Drops on one tunnel port, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunnelDrops {
    pub too_big: u64,
    pub no_route: u64,
}

impl Tunnels {
    /// Creates the maps and checks that this kernel loads every program.
    pub fn new() -> io::Result<Arc<Tunnels>> {
        let underlay_remotes =
            Map::create(bpf::MAP_HASH, REMOTE_KEY_BYTES as u32, 12, TUNNEL_SLOTS)?;
        let fast_paths = Map::create(bpf::MAP_PROG_ARRAY, 4, 4, TUNNEL_SLOTS)?;
        let underlay = Program::load(
            bpf::PROG_SCHED_CLS,
            "switchd_underlay",
            &underlay(&underlay_remotes, &fast_paths),
        )?;
        let tunnels = Tunnels {
            remotes: Map::create(bpf::MAP_HASH, REMOTE_KEY_BYTES as u32, 8, TUNNEL_SLOTS)?,
            underlay_remotes,
            underlay,
            fast_paths,
            states: Map::create(bpf::MAP_ARRAY, 4, 8, TUNNEL_SLOTS)?,
            counters: Map::create(bpf::MAP_PERCPU_ARRAY, 4, COUNTER_BYTES as u32, TUNNEL_SLOTS)?,
            cpus: bpf::possible_cpus()?,
            slots: Mutex::default(),
        };
        let key = TunnelKey {
            vni: 1,
            remote: Ipv4Addr::new(192, 0, 2, 1),
            local: None,
            dst_port: 4789,
            ttl: None,
            tos: 0,
        };
        for hook in [EncapHook::PortEgress, EncapHook::FarIngress] {
            Program::load(
                bpf::PROG_SCHED_CLS,
                "switchd_encap",
                &tunnels.encap(hook, &key, 1, 0),
            )?;
        }
        Program::load(bpf::PROG_SCHED_CLS, "switchd_decap", &tunnels.decap(4789))?;
        Ok(Arc::new(tunnels))
    }

    /// Takes what the vxlan device `ifindex` (for UDP port `dst_port`) receives
    /// to the tunnel ports, for as long as the returned link is open.
    pub fn attach_device(&self, ifindex: u32, dst_port: u16) -> io::Result<OwnedFd> {
        Program::load(bpf::PROG_SCHED_CLS, "switchd_decap", &self.decap(dst_port))?
            .attach_tcx_ingress(ifindex)
    }

    /// Takes the VXLAN frames that arrive on underlay interface `ifindex` for a
    /// tunnel port with a receive address (`TunnelEnd::set_receive`) to that
    /// port, for as long as the returned link is open.
    pub fn attach_underlay(&self, ifindex: u32) -> io::Result<OwnedFd> {
        self.underlay.attach_tcx_ingress(ifindex)
    }

    /// Makes the veth pair `near` (the port) and `far` a tunnel to `key`
    /// through the vxlan device `device`. Refused if another port has the same
    /// key. The tunnel starts down (`TunnelEnd::set_state`).
    pub fn attach_end(
        self: &Arc<Self>,
        near: u32,
        far: u32,
        device: u32,
        key: &TunnelKey,
    ) -> io::Result<TunnelEnd> {
        let slot = lock(&self.slots)
            .take(TUNNEL_SLOTS)
            .ok_or_else(|| io::Error::other("no tunnel slot left"))?;
        let mut end = TunnelEnd {
            tunnels: self.clone(),
            slot,
            far,
            key: *key,
            remote_key: None,
            underlay_key: None,
            links: Vec::new(),
        };
        self.counters
            .update(&slot.to_ne_bytes(), &vec![0; COUNTER_BYTES * self.cpus])?;
        end.set_state(false, 0)?;
        let load = |hook| {
            Program::load(
                bpf::PROG_SCHED_CLS,
                "switchd_encap",
                &self.encap(hook, key, device, slot),
            )
        };
        end.links
            .push(load(EncapHook::FarIngress)?.attach_tcx_ingress(far)?);
        end.links
            .push(load(EncapHook::PortEgress)?.attach_tcx_egress(near)?);
        let remote_key = remote_key(key.vni, key.remote, key.local, key.dst_port);
        if self.remotes.lookup(&remote_key, &mut [0; 8])? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another tunnel port has the same remote, key and UDP port",
            ));
        }
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&far.to_ne_bytes());
        value[4..].copy_from_slice(&slot.to_ne_bytes());
        self.remotes.update(&remote_key, &value)?;
        end.remote_key = Some(remote_key);
        Ok(end)
    }

    /// Frames to the port: checked against the tunnel's MTU, given the port's
    /// tunnel key, sent into the vxlan device `device`.
    fn encap(&self, hook: EncapHook, key: &TunnelKey, device: u32, slot: u32) -> Vec<Insn> {
        const SHOT: usize = 0;
        const DOWN: usize = 1;
        const TOO_BIG: usize = 2;
        const FITS: usize = 3;
        const GSO: usize = 4;
        const V4: usize = 5;
        const L4: usize = 6;
        const UDP: usize = 7;
        const SEGMENT: usize = 8;
        const TAG: usize = 9;
        const CHECK: usize = 10;
        let mut a = Asm::default();
        a.op(Insn::mov(R6, R1));
        a.op(Insn::store_imm(Size::W, FP, SLOT_KEY, slot as i32));
        lookup(&mut a, &self.states, SLOT_KEY, SHOT);
        a.op(Insn::load(Size::W, R2, R0, 0));
        a.jeq(R2, 0, DOWN);
        // The tunnel's MTU, as userspace last found the underlay's. A frame must
        // fit it, tag included (a tag in metadata is not in skb->len but goes
        // inside the tunnel); a GSO frame, each segment the kernel will cut it
        // into: its headers (parsed here for TCP and UDP over IPv4 and IPv6)
        // plus gso_size. bpf_check_mtu does this but is GPL-only.
        a.op(Insn::load(Size::W, R7, R0, 4));
        a.op(Insn::add_imm(R7, 14));
        a.op(Insn::load(Size::W, R2, R6, SKB_GSO_SIZE));
        a.jne(R2, 0, GSO);
        a.op(Insn::load(Size::W, R8, R6, SKB_LEN));
        a.ja(TAG);
        a.label(GSO);
        load_bytes(&mut a, None, 0, 24);
        a.jne(R0, 0, FITS);
        a.op(Insn::load(Size::H, R2, FP, HDR + 12));
        a.jeq(R2, ETH_P_IP_LE, V4);
        a.jne(R2, ETH_P_IPV6_LE, FITS);
        a.op(Insn::load(Size::B, R2, FP, HDR + 20));
        a.op(Insn::mov_imm(R8, 14 + 40));
        a.ja(L4);
        a.label(V4);
        a.op(Insn::load(Size::B, R8, FP, HDR + 14));
        a.op(Insn::and_imm(R8, 0x0f));
        a.op(Insn::lsh_imm(R8, 2));
        a.op(Insn::add_imm(R8, 14));
        a.op(Insn::load(Size::B, R2, FP, HDR + 23));
        a.label(L4);
        a.jeq(R2, IPPROTO_UDP, UDP);
        a.jne(R2, IPPROTO_TCP, FITS);
        // TCP's data offset, in the 13th byte of its header.
        load_bytes(&mut a, Some(R8), 12, 1);
        a.jne(R0, 0, FITS);
        a.op(Insn::load(Size::B, R2, FP, HDR));
        a.op(Insn::and_imm(R2, 0xf0));
        a.op(Insn::rsh_imm(R2, 2));
        a.op(Insn::add(R8, R2));
        a.ja(SEGMENT);
        a.label(UDP);
        a.op(Insn::add_imm(R8, 8));
        a.label(SEGMENT);
        a.op(Insn::load(Size::W, R2, R6, SKB_GSO_SIZE));
        a.op(Insn::add(R8, R2));
        a.label(TAG);
        a.op(Insn::load(Size::W, R2, R6, SKB_VLAN_PRESENT));
        a.jeq(R2, 0, CHECK);
        a.op(Insn::add_imm(R8, 4));
        a.label(CHECK);
        a.jle(R8, R7, FITS);
        a.ja(TOO_BIG);
        a.label(FITS);
        for i in 0..11 {
            a.op(Insn::store_imm(Size::W, FP, KEY + 4 * i, 0));
        }
        a.op(Insn::store_imm(Size::W, FP, KEY, key.vni as i32));
        a.op(Insn::store_imm(
            Size::W,
            FP,
            KEY + 4,
            u32::from(key.remote) as i32,
        ));
        a.op(Insn::store_imm(Size::B, FP, KEY + 20, key.tos.into()));
        let ttl = key.ttl.unwrap_or(DEFAULT_TTL);
        a.op(Insn::store_imm(Size::B, FP, KEY + 21, ttl.into()));
        let local = key.local.map_or(0, u32::from);
        a.op(Insn::store_imm(Size::W, FP, KEY + 28, local as i32));
        a.op(Insn::mov(R1, R6));
        a.op(Insn::mov(R2, FP));
        a.op(Insn::add_imm(R2, KEY.into()));
        a.op(Insn::mov_imm(R3, TUNNEL_KEY_BYTES));
        // An outer UDP checksum, as the kernel's vxlan devices send by default
        // (without one, TCP measured no faster: 0.94x against 0.96x the kernel
        // pair, alternating runs), and DF: what does not fit is dropped here,
        // counted, rather than fragmented on the underlay.
        a.op(Insn::mov_imm(R4, BPF_F_DONT_FRAGMENT));
        a.op(Insn::call(helper::SKB_SET_TUNNEL_KEY));
        a.jne(R0, 0, SHOT);
        a.op(Insn::mov_imm(R1, device as i32));
        a.op(Insn::mov_imm(R2, 0));
        a.op(Insn::call(helper::REDIRECT));
        a.op(Insn::exit());
        if hook == EncapHook::PortEgress {
            // On to the veth, whose far end drops and counts it: a drop here
            // would fail the userspace datapath's sendmmsg for the rest of its
            // batch (ENOBUFS), and TCX has no "stolen".
            a.label(TOO_BIG);
            a.label(DOWN);
            a.label(SHOT);
            a.op(Insn::mov_imm(R0, TCX_NEXT));
            a.op(Insn::exit());
            return a.finish();
        }
        a.label(TOO_BIG);
        count(&mut a, &self.counters, 0, SHOT);
        a.ja(SHOT);
        a.label(DOWN);
        count(&mut a, &self.counters, 16, SHOT);
        a.label(SHOT);
        a.op(Insn::mov_imm(R0, TC_ACT_SHOT));
        a.op(Insn::exit());
        a.finish()
    }

    /// Frames the vxlan device of `dst_port` received: to the port with their
    /// (VNI, remote, local address), or the one with (VNI, remote) and no local
    /// address; dropped if there is none. The port's kernel fast path (tail
    /// called) forwards known unicast to its local port; the rest, or all
    /// without a fast path, leaves by the port's far end, to arrive on the port.
    fn decap(&self, dst_port: u16) -> Vec<Insn> {
        const SHOT: usize = 0;
        const ANY_LOCAL: usize = 1;
        const FOUND: usize = 2;
        const REMOTE: i16 = -16;
        let mut a = Asm::default();
        a.op(Insn::mov(R6, R1));
        for i in 0..11 {
            a.op(Insn::store_imm(Size::W, FP, KEY + 4 * i, 0));
        }
        a.op(Insn::mov(R1, R6));
        a.op(Insn::mov(R2, FP));
        a.op(Insn::add_imm(R2, KEY.into()));
        a.op(Insn::mov_imm(R3, TUNNEL_KEY_BYTES));
        a.op(Insn::mov_imm(R4, 0));
        a.op(Insn::call(helper::SKB_GET_TUNNEL_KEY));
        a.jne(R0, 0, SHOT);
        // On receive the key's remote is the outer source, its local the outer
        // destination.
        for (from, to) in [(0, 0), (4, 4), (28, 8)] {
            a.op(Insn::load(Size::W, R2, FP, KEY + from));
            a.op(Insn::store(Size::W, FP, REMOTE + to, R2));
        }
        a.op(Insn::store_imm(Size::W, FP, REMOTE + 12, dst_port.into()));
        lookup(&mut a, &self.remotes, REMOTE, ANY_LOCAL);
        a.ja(FOUND);
        a.label(ANY_LOCAL);
        a.op(Insn::store_imm(Size::W, FP, REMOTE + 8, 0));
        lookup(&mut a, &self.remotes, REMOTE, SHOT);
        a.label(FOUND);
        deliver(&mut a, &self.fast_paths);
        a.label(SHOT);
        a.op(Insn::mov_imm(R0, TC_ACT_SHOT));
        a.op(Insn::exit());
        a.finish()
    }
}

/// With r0 at a remote's entry (far end, tunnel slot) and r6 the frame: the
/// port's fast path from the remote (tail called), or out of the far end.
fn deliver(a: &mut Asm, fast_paths: &Map) {
    a.op(Insn::load(Size::W, R7, R0, 0));
    a.op(Insn::load(Size::W, R3, R0, 4));
    a.op(Insn::mov(R1, R6));
    a.ops(&Insn::load_map(R2, fast_paths));
    // Returns only if the slot has no program.
    a.op(Insn::call(helper::TAIL_CALL));
    a.op(Insn::mov(R1, R7));
    a.op(Insn::mov_imm(R2, 0));
    a.op(Insn::call(helper::REDIRECT));
    a.op(Insn::exit());
}

/// VXLAN frames on an underlay interface's TC ingress, before the kernel's
/// vxlan device: one for a tunnel port's (VNI, remote, local address, UDP
/// port) loses its outer headers here and goes on as `decap` sends it. The
/// external device allocates a metadata dst for every frame it receives,
/// freed through `call_rcu_hurry`, and the grace periods that forces cost
/// a TCP stream a quarter of its rate (its ACKs come this way;
/// docs/PERFORMANCE.md "VXLAN"). Everything else goes on to the kernel
/// (TCX_NEXT), and the device takes it as before: GSO and GRO frames,
/// tagged ones, IP options or fragments, an ECN CE mark, other flags or
/// reserved bits, tagged inner frames, a bad IP header checksum, lengths that
/// disagree, a remote's frames on another interface than its route's.
fn underlay(underlay_remotes: &Map, fast_paths: &Map) -> Vec<Insn> {
    const NEXT: usize = 0;
    const SHOT: usize = 1;
    const DEC: usize = 2;
    const RESET: usize = 3;
    const APPLY: usize = 4;
    const DELIVER: usize = 5;
    let mut a = Asm::default();
    a.op(Insn::mov(R6, R1));
    a.op(Insn::load(Size::W, R2, R6, SKB_GSO_SIZE));
    a.jne(R2, 0, NEXT);
    a.op(Insn::load(Size::W, R2, R6, SKB_VLAN_PRESENT));
    a.jne(R2, 0, NEXT);
    a.op(Insn::load(Size::W, R2, R6, SKB_PKT_TYPE));
    a.jne(R2, PACKET_HOST, NEXT);
    a.op(Insn::mov(R1, R6));
    a.op(Insn::mov_imm(R2, 0));
    a.op(Insn::mov(R3, FP));
    a.op(Insn::add_imm(R3, FRAME.into()));
    a.op(Insn::mov_imm(R4, UNDERLAY_HEADERS));
    a.op(Insn::call(helper::SKB_LOAD_BYTES));
    a.jne(R0, 0, NEXT);
    expect(&mut a, Size::H, 12, ETH_P_IP_LE, NEXT);
    expect(&mut a, Size::B, 14, 0x45, NEXT);
    // Congestion experienced: the device copies the mark to the inner
    // packet (or drops it if that cannot carry it).
    a.op(Insn::load(Size::B, R2, FP, FRAME + 15));
    a.op(Insn::and_imm(R2, 3));
    a.jeq(R2, 3, NEXT);
    // More fragments, or a fragment offset (0x3fff as read little-endian).
    a.op(Insn::load(Size::H, R2, FP, FRAME + 20));
    a.op(Insn::and_imm(R2, 0xff3f));
    a.jne(R2, 0, NEXT);
    expect(&mut a, Size::B, 23, IPPROTO_UDP, NEXT);
    // Only the I flag, reserved bits zero: no group policy or other
    // extension (the VNI's reserved byte is checked by the key).
    expect(&mut a, Size::W, 42, 0x08, NEXT);
    // A tagged inner frame: the device's path moves the tag to metadata
    // before the port's fast path, which needs it there.
    a.op(Insn::load(Size::H, R2, FP, FRAME + 62));
    a.jeq(R2, ETH_P_8021Q_LE, NEXT);
    a.jeq(R2, ETH_P_8021AD_LE, NEXT);
    // The IP total length must be the frame's (no padding, nothing cut),
    // and the UDP length what it leaves.
    be16(&mut a, R7, 16);
    a.op(Insn::mov(R2, R7));
    a.op(Insn::add_imm(R2, 14));
    a.op(Insn::load(Size::W, R3, R6, SKB_LEN));
    a.op(Insn::sub(R2, R3));
    a.jne(R2, 0, NEXT);
    be16(&mut a, R2, 38);
    a.op(Insn::add_imm(R2, 20));
    a.op(Insn::sub(R2, R7));
    a.jne(R2, 0, NEXT);
    // The IP header checksum, which the kernel would have checked.
    a.op(Insn::mov_imm(R1, 0));
    a.op(Insn::mov_imm(R2, 0));
    a.op(Insn::mov(R3, FP));
    a.op(Insn::add_imm(R3, (FRAME + 14).into()));
    a.op(Insn::mov_imm(R4, 20));
    a.op(Insn::mov_imm(R5, 0));
    a.op(Insn::call(helper::CSUM_DIFF));
    for _ in 0..2 {
        a.op(Insn::mov(R2, R0));
        a.op(Insn::rsh_imm(R2, 16));
        a.op(Insn::and_imm(R0, 0xffff));
        a.op(Insn::add(R0, R2));
    }
    a.jne(R0, 0xffff, NEXT);
    // The key as the fields sit in the frame: VNI and its reserved byte
    // (zero in every key), outer source, outer destination, UDP
    // destination port.
    a.op(Insn::load(Size::W, R2, FP, FRAME + 46));
    a.op(Insn::store(Size::W, FP, UKEY, R2));
    a.op(Insn::load(Size::W, R2, FP, FRAME + 26));
    a.op(Insn::store(Size::W, FP, UKEY + 4, R2));
    a.op(Insn::load(Size::W, R2, FP, FRAME + 30));
    a.op(Insn::store(Size::W, FP, UKEY + 8, R2));
    a.op(Insn::load(Size::H, R2, FP, FRAME + 36));
    a.op(Insn::store(Size::W, FP, UKEY + 12, R2));
    lookup(&mut a, underlay_remotes, UKEY, NEXT);
    a.op(Insn::mov(R8, R0));
    // Only by the interface the route to the remote leaves by, as a
    // strict reverse-path filter would have it.
    a.op(Insn::load(Size::W, R2, R8, 8));
    a.op(Insn::load(Size::W, R3, R6, SKB_IFINDEX));
    a.op(Insn::sub(R2, R3));
    a.jne(R2, 0, NEXT);
    // Outer IP, UDP, VXLAN and the inner Ethernet header go; the outer
    // Ethernet header stays, and the inner one is written over it.
    a.op(Insn::mov(R1, R6));
    a.op(Insn::mov_imm(R2, -(VXLAN_HEADERS + 14)));
    a.op(Insn::mov_imm(R3, BPF_ADJ_ROOM_MAC));
    // The checksum state is ours to adjust (below).
    a.op(Insn::mov_imm(R4, BPF_F_ADJ_ROOM_NO_CSUM_RESET));
    a.op(Insn::call(helper::SKB_ADJUST_ROOM));
    a.jne(R0, 0, NEXT);
    a.op(Insn::mov(R1, R6));
    a.op(Insn::mov_imm(R2, 0));
    a.op(Insn::mov(R3, FP));
    a.op(Insn::add_imm(
        R3,
        (FRAME + 14 + VXLAN_HEADERS as i16).into(),
    ));
    a.op(Insn::mov_imm(R4, 14));
    a.op(Insn::mov_imm(R5, 0));
    a.op(Insn::call(helper::SKB_STORE_BYTES));
    a.jne(R0, 0, SHOT);
    // A checksum the interface validated: the outermost was the outer
    // UDP one, so one level less, and none left at level 0.
    a.op(Insn::mov(R1, R6));
    a.op(Insn::mov_imm(R2, BPF_CSUM_LEVEL_QUERY));
    a.op(Insn::call(helper::CSUM_LEVEL));
    a.jeq(R0, 0, RESET);
    // Not CHECKSUM_UNNECESSARY (an error, negative): nothing to change.
    a.jlt(R0, 8, DEC);
    a.ja(DELIVER);
    a.label(DEC);
    a.op(Insn::mov_imm(R2, BPF_CSUM_LEVEL_DEC));
    a.ja(APPLY);
    a.label(RESET);
    a.op(Insn::mov_imm(R2, BPF_CSUM_LEVEL_RESET));
    a.label(APPLY);
    a.op(Insn::mov(R1, R6));
    a.op(Insn::call(helper::CSUM_LEVEL));
    a.label(DELIVER);
    a.op(Insn::mov(R0, R8));
    deliver(&mut a, fast_paths);
    a.label(NEXT);
    a.op(Insn::mov_imm(R0, TCX_NEXT));
    a.op(Insn::exit());
    a.label(SHOT);
    a.op(Insn::mov_imm(R0, TC_ACT_SHOT));
    a.op(Insn::exit());
    a.finish()
}

/// Jumps to `otherwise` unless the frame's bytes at `off` (as read on this
/// little-endian CPU) are `value`.
fn expect(a: &mut Asm, size: Size, off: i16, value: i32, otherwise: usize) {
    a.op(Insn::load(size, R2, FP, FRAME + off));
    a.jne(R2, value, otherwise);
}

/// `dst` = the frame's big-endian u16 at `off`; clobbers r3.
fn be16(a: &mut Asm, dst: bpf::Reg, off: i16) {
    a.op(Insn::load(Size::B, dst, FP, FRAME + off));
    a.op(Insn::lsh_imm(dst, 8));
    a.op(Insn::load(Size::B, R3, FP, FRAME + off + 1));
    a.op(Insn::add(dst, R3));
}

// The underlay program's stack: the frame's first 64 bytes at fp-66 (so that
// the outer addresses and the VNI are 4-byte aligned), the key at fp-84.
const FRAME: i16 = -66;
const UKEY: i16 = -84;
/// Outer Ethernet, IPv4 (no options), UDP, VXLAN, inner Ethernet.
const UNDERLAY_HEADERS: i32 = 64;
/// Outer IPv4, UDP and VXLAN headers.
const VXLAN_HEADERS: i32 = 36;
const BPF_F_ADJ_ROOM_NO_CSUM_RESET: i32 = 1 << 5;
const PACKET_HOST: i32 = 0;
const BPF_ADJ_ROOM_MAC: i32 = 1;
const BPF_CSUM_LEVEL_QUERY: i32 = 0;
const BPF_CSUM_LEVEL_DEC: i32 = 2;
const BPF_CSUM_LEVEL_RESET: i32 = 3;

/// The underlay program's key: each field as it sits in the frame.
fn underlay_key(vni: u32, remote: Ipv4Addr, local: Ipv4Addr, dst_port: u16) -> [u8; 16] {
    let mut k = [0; 16];
    k[..3].copy_from_slice(&vni.to_be_bytes()[1..]);
    k[4..8].copy_from_slice(&remote.octets());
    k[8..12].copy_from_slice(&local.octets());
    k[12..14].copy_from_slice(&dst_port.to_be_bytes());
    k
}

// `struct bpf_tunnel_key` on the stack at fp-100 (44 bytes): tunnel_id at 0,
// remote_ipv4 at 4, tos at 20, ttl at 21, local_ipv4 at 28, all host order.
const KEY: i16 = -100;
const TUNNEL_KEY_BYTES: i32 = 44;
const BPF_F_DONT_FRAGMENT: i32 = 1 << 2;
const TC_ACT_SHOT: i32 = 2;
const TCX_NEXT: i32 = -1;

/// Where an encapsulating program runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EncapHook {
    /// The port's TC egress: the fast path's and the userspace datapath's frames.
    PortEgress,
    /// The far end's TC ingress: what crossed the veth.
    FarIngress,
}
// Headers read for the MTU check, at fp-128 (24 bytes).
const HDR: i16 = -128;
const ETH_P_IP_LE: i32 = 0x0008;
const ETH_P_IPV6_LE: i32 = 0xdd86;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;

/// `r0 = bpf_skb_load_bytes(skb, base + off, fp + HDR, len)`, `base` a register
/// or 0.
fn load_bytes(a: &mut Asm, base: Option<bpf::Reg>, off: i32, len: i32) {
    a.op(Insn::mov(R1, R6));
    match base {
        Some(reg) => {
            a.op(Insn::mov(R2, reg));
            a.op(Insn::add_imm(R2, off));
        }
        None => a.op(Insn::mov_imm(R2, off)),
    }
    a.op(Insn::mov(R3, FP));
    a.op(Insn::add_imm(R3, HDR.into()));
    a.op(Insn::mov_imm(R4, len));
    a.op(Insn::call(helper::SKB_LOAD_BYTES));
}

fn remote_key(
    vni: u32,
    remote: Ipv4Addr,
    local: Option<Ipv4Addr>,
    dst_port: u16,
) -> [u8; REMOTE_KEY_BYTES] {
    let mut k = [0; REMOTE_KEY_BYTES];
    k[..4].copy_from_slice(&vni.to_ne_bytes());
    k[4..8].copy_from_slice(&u32::from(remote).to_ne_bytes());
    k[8..12].copy_from_slice(&local.map_or(0, u32::from).to_ne_bytes());
    k[12..].copy_from_slice(&u32::from(dst_port).to_ne_bytes());
    k
}

/// One tunnel port's programs and map entries; dropping it takes them away.
pub struct TunnelEnd {
    tunnels: Arc<Tunnels>,
    slot: u32,
    /// The port's far end.
    far: u32,
    key: TunnelKey,
    remote_key: Option<[u8; REMOTE_KEY_BYTES]>,
    underlay_key: Option<[u8; REMOTE_KEY_BYTES]>,
    links: Vec<OwnedFd>,
}

impl TunnelEnd {
    /// Lets frames out (the remote is reachable) or drops and counts them;
    /// `mtu` is the largest inner frame's, less its Ethernet header.
    pub fn set_state(&self, up: bool, mtu: u32) -> io::Result<()> {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&u32::from(up).to_ne_bytes());
        value[4..].copy_from_slice(&mtu.to_ne_bytes());
        self.tunnels.states.update(&self.slot.to_ne_bytes(), &value)
    }

    /// Gives the port a kernel fast path for what its remote sends, or takes
    /// it away (`None`).
    pub fn set_fast_path(&self, program: Option<&Program>) -> io::Result<()> {
        let key = self.slot.to_ne_bytes();
        match program {
            Some(p) => self.tunnels.fast_paths.update(&key, &p.array_value()),
            None => self.tunnels.fast_paths.delete(&key).map(drop),
        }
    }

    /// Lets the underlay's receiving program (`Tunnels::attach_underlay`) take
    /// what the remote sends to `local` (this host's address it sends to) on
    /// interface `ifindex` (the one the route to it leaves by), or leaves it
    /// all to the vxlan device (`None`). Called again every time the route is
    /// looked up.
    ///
    /// As the vxlan device's program prefers a port whose `local_ip` is set
    /// over one without for the same remote, so does this: a port without one
    /// leaves the key to a port that has it, and takes it once that one is gone.
    pub fn set_receive(&mut self, via: Option<(u32, Ipv4Addr)>) -> io::Result<()> {
        let key =
            via.map(|(_, l)| underlay_key(self.key.vni, self.key.remote, l, self.key.dst_port));
        let mut value = [0u8; 12];
        value[..4].copy_from_slice(&self.far.to_ne_bytes());
        value[4..8].copy_from_slice(&self.slot.to_ne_bytes());
        value[8..].copy_from_slice(&via.map_or(0, |(i, _)| i).to_ne_bytes());
        let map = &self.tunnels.underlay_remotes;
        let mut found = [0u8; 12];
        if self.underlay_key != key {
            if let Some(old) = self.underlay_key.take() {
                // Ours unless a port with `local_ip` took it over.
                if map.lookup(&old, &mut found)? && found[..8] == value[..8] {
                    map.delete(&old)?;
                }
            }
        }
        self.underlay_key = None;
        if let Some(key) = key {
            let present = map.lookup(&key, &mut found)?;
            if present && found == value {
                self.underlay_key = Some(key);
            } else if self.key.local.is_some() || !present || found[..8] == value[..8] {
                map.update(&key, &value)?;
                self.underlay_key = Some(key);
            }
        }
        Ok(())
    }

    pub fn drops(&self) -> TunnelDrops {
        let [too_big, _, no_route, _] =
            percpu_sum(&self.tunnels.counters, self.slot, self.tunnels.cpus);
        TunnelDrops { too_big, no_route }
    }
}

impl Drop for TunnelEnd {
    fn drop(&mut self) {
        if let Some(key) = self.remote_key {
            if let Err(e) = self.tunnels.remotes.delete(&key) {
                tracing::warn!("tunnel map: cannot remove a remote: {e}");
            }
        }
        if let Err(e) = self.set_receive(None) {
            tracing::warn!("tunnel map: cannot remove a remote from the underlay's: {e}");
        }
        if let Err(e) = self.set_fast_path(None) {
            tracing::warn!("tunnel map: cannot remove a fast path: {e}");
        }
        self.links.clear();
        lock(&self.tunnels.slots).give_back(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program passes the verifier, with every option set and none.
    #[test]
    fn programs_load() {
        // Needs root (CAP_BPF), as switchd does.
        let tunnels = Tunnels::new().expect("load both tunnel programs");
        let key = TunnelKey {
            vni: (1 << 24) - 1,
            remote: Ipv4Addr::new(10, 255, 0, 2),
            local: Some(Ipv4Addr::new(10, 255, 0, 1)),
            dst_port: 65535,
            ttl: Some(255),
            tos: 0xb8,
        };
        for hook in [EncapHook::PortEgress, EncapHook::FarIngress] {
            Program::load(
                bpf::PROG_SCHED_CLS,
                "t",
                &tunnels.encap(hook, &key, 7, 4095),
            )
            .unwrap();
        }
        Program::load(bpf::PROG_SCHED_CLS, "t", &tunnels.decap(65535)).unwrap();
        let program = underlay(&tunnels.underlay_remotes, &tunnels.fast_paths);
        Program::load(bpf::PROG_SCHED_CLS, "t", &program).unwrap();
    }

    #[test]
    fn underlay_keys_are_the_frames_bytes() {
        let k = underlay_key(
            0x0a_0b_0c,
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(192, 0, 2, 1),
            4789,
        );
        assert_eq!(
            k,
            [0x0a, 0x0b, 0x0c, 0, 192, 0, 2, 2, 192, 0, 2, 1, 0x12, 0xb5, 0, 0]
        );
    }

    #[test]
    fn remote_keys_differ_by_every_field() {
        let ip = Ipv4Addr::new(192, 0, 2, 2);
        let base = remote_key(42, ip, None, 4789);
        assert_ne!(base, remote_key(43, ip, None, 4789));
        assert_ne!(
            base,
            remote_key(42, Ipv4Addr::new(192, 0, 2, 3), None, 4789)
        );
        assert_ne!(base, remote_key(42, ip, Some(ip), 4789));
        assert_ne!(base, remote_key(42, ip, None, 4790));
    }
}
