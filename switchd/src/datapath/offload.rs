//! The in-kernel fast path for known unicast between veth ports.
//!
//! Every frame through the userspace datapath is copied twice (into our ring, out
//! through `sendmmsg`) and the receiving namespace's softirq runs on our thread;
//! that bounds TCP at ~0.7x the kernel bridge (docs/PERFORMANCE.md). So once both
//! ends of a conversation are learned, the datapath hands it to the kernel: a TC
//! program on each port's ingress looks the frame's source and destination up in a
//! BPF copy of the MAC table and redirects it out of the destination port.
//! Everything else (broadcast, multicast, unknown or moved addresses, frames
//! for the internal port) still reaches the userspace datapath, which learns;
//! the BPF table follows the `Fdb`'s journal of changes (`KernelFdb::apply`),
//! drained after each batch outside the table's lock.
//!
//! VLANs: the table is keyed by (MAC, bridge, VLAN) as the `Fdb` is. The
//! ingress port's program puts a frame in its VLAN as the port's mode says
//! (compiled in: an access port's tag, or the tag's VLAN id on a trunk); an
//! entry records whether its port sends that VLAN tagged, and the program pushes
//! or pops the tag (`bpf_skb_vlan_push`/`pop`, GSO intact) before redirecting.
//! Which VLANs a trunk carries needs no check here: the source's entry must be on
//! the ingress port in that VLAN, and the destination's on the egress port, and
//! userspace learns only frames a port accepts. To userspace go tagged frames
//! on access ports (dropped and counted there), priority tags, 802.1ad and
//! double tags.
//!
//! AF_PACKET sees a frame before TC does, so each port's socket carries a filter
//! generated from the same code: it skips exactly the frames the TC program takes.
//! Programs are generated per port with its ifindex, counter slot and bridge id as
//! constants, so they carry no per-port maps.

use super::fdb::{Fdb, FdbChange, FdbKey, PortId};
use super::lock;
use super::vlan::PortVlan;
use crate::sys::bpf::{self, helper, Insn, Map, Program, Size, FP, R0, R1, R2, R3, R4, R6, R7};
use crate::sys::bpf::{R8, R9};
use crate::sys::monotonic_ns;
use crate::sys::PacketSocket;
use crate::wire::vlan;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchd_proto::{VlanConfig, VlanMode};

/// Entries of the BPF MAC table, over all bridges. Past it, new addresses are
/// forwarded by the userspace datapath only.
const TABLE_ENTRIES: u32 = 65_536;
/// Ports that can have the kernel fast path, over all bridges (a slot is a u16
/// in the MAC table's entries). 4096 ports on one bridge, with room.
const PORT_SLOTS: u32 = 16_384;
/// The size of one port's counters on one CPU.
pub(super) const COUNTER_BYTES: usize = 32;
/// The TC program refreshes an entry's last-seen time at most this often, so a busy
/// address does not bounce the entry's cache line between CPUs on every frame.
const SEEN_REFRESH_NS: i32 = 100_000_000;

/// The BPF maps shared by every port's programs.
pub struct Offload {
    /// (MAC, bridge id, VLAN) -> (ifindex, counter slot, flags, last seen in
    /// CLOCK_MONOTONIC ns).
    table: Map,
    /// Per-CPU counters per port slot: rx packets, rx bytes, tx packets, tx bytes.
    counters: Map,
    /// The MTU of each port slot's interface.
    mtus: Map,
    cpus: usize,
    ids: Mutex<Ids>,
}

#[derive(Default)]
struct Ids {
    slots: SlotPool,
    free_bridges: Vec<u16>,
    next_bridge: u16,
}

/// Indexes into a BPF array of `limit` entries, given back when done with.
#[derive(Default)]
pub(super) struct SlotPool {
    free: Vec<u32>,
    next: u32,
}

impl SlotPool {
    /// A free index below `limit`, if any is left.
    pub(super) fn take(&mut self, limit: u32) -> Option<u32> {
        self.free.pop().or_else(|| {
            (self.next < limit).then(|| {
                self.next += 1;
                self.next - 1
            })
        })
    }

    pub(super) fn give_back(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

/// Entry `slot` of a per-CPU array of four u64 per CPU, summed over `cpus`;
/// zeros if it cannot be read.
pub(super) fn percpu_sum(map: &Map, slot: u32, cpus: usize) -> [u64; 4] {
    let mut buf = vec![0u8; COUNTER_BYTES * cpus];
    let mut total = [0u64; 4];
    if !matches!(map.lookup(&slot.to_ne_bytes(), &mut buf), Ok(true)) {
        return total;
    }
    for cpu in buf.chunks_exact(COUNTER_BYTES) {
        for (i, sum) in total.iter_mut().enumerate() {
            *sum += u64::from_ne_bytes(cpu[i * 8..i * 8 + 8].try_into().unwrap());
        }
    }
    total
}

impl Offload {
    /// Creates the maps and checks that this kernel loads and attaches our programs.
    pub fn new() -> io::Result<Arc<Offload>> {
        let offload = Offload {
            table: Map::create(
                bpf::MAP_HASH,
                KEY_BYTES as u32,
                VALUE_BYTES as u32,
                TABLE_ENTRIES,
            )?,
            counters: Map::create(bpf::MAP_PERCPU_ARRAY, 4, COUNTER_BYTES as u32, PORT_SLOTS)?,
            mtus: Map::create(bpf::MAP_ARRAY, 4, 4, PORT_SLOTS)?,
            cpus: bpf::possible_cpus()?,
            ids: Mutex::default(),
        };
        // Fail here, once, rather than on every port.
        let access = PortVlan::new(&VlanConfig {
            tag: Some(1),
            ..VlanConfig::default()
        });
        for vlan in [&PortVlan::TRUNK_ALL, &access] {
            offload.load(Hook::Socket, 1, 0, 0, vlan)?;
            offload.load(Hook::Tc, 1, 0, 0, vlan)?;
        }
        Ok(Arc::new(offload))
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        lock(&self.ids)
    }

    /// A bridge id for the BPF table's keys; `None` when all 65536 are taken.
    pub fn add_bridge(self: &Arc<Self>) -> Option<KernelFdb> {
        let mut ids = self.ids();
        let id = match ids.free_bridges.pop() {
            Some(id) => id,
            None => {
                let id = ids.next_bridge;
                ids.next_bridge = id.checked_add(1)?;
                id
            }
        };
        Some(KernelFdb {
            offload: self.clone(),
            bridge: id,
            ports: HashMap::new(),
            changes: Vec::new(),
            pending: HashMap::default(),
            keys: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Starts the fast path on a port of MTU `mtu` and VLAN policy `vlan`:
    /// filters its socket `sock`, attaches the TC program to its interface. The
    /// port forwards nothing in the kernel until the bridge's table knows it
    /// (`KernelFdb::add_port`).
    pub fn attach(
        self: &Arc<Self>,
        bridge: u16,
        mtu: u32,
        sock: &PacketSocket,
        vlan: &PortVlan,
    ) -> io::Result<PortOffload> {
        let ifindex = sock.ifindex();
        let slot = self
            .ids()
            .slots
            .take(PORT_SLOTS)
            .ok_or_else(|| io::Error::other("no kernel counter slot left"))?;
        // From here on, dropping `port` gives the slot back.
        let mut port = PortOffload {
            offload: self.clone(),
            slot,
            ifindex,
            vlan: vlan.clone(),
            link: None,
        };
        // A slot may have counted for a port that is gone.
        self.counters
            .update(&slot.to_ne_bytes(), &vec![0; COUNTER_BYTES * self.cpus])?;
        port.set_mtu(mtu)?;
        self.load(Hook::Socket, ifindex, slot, bridge, vlan)?
            .attach_socket_filter(sock)?;
        port.link = Some(
            self.load(Hook::Tc, ifindex, slot, bridge, vlan)?
                .attach_tcx_ingress(ifindex)?,
        );
        Ok(port)
    }

    fn load(
        &self,
        hook: Hook,
        ifindex: u32,
        slot: u32,
        bridge: u16,
        vlan: &PortVlan,
    ) -> io::Result<Program> {
        let maps = [&self.table, &self.counters, &self.mtus];
        let me = ThisPort {
            ifindex,
            slot,
            bridge,
            ingress: Ingress::of(vlan),
            decline_to: None,
        };
        let insns = program(hook, &me, maps);
        let (kind, name) = match hook {
            Hook::Socket => (bpf::PROG_SOCKET_FILTER, "switchd_skip"),
            Hook::Tc => (bpf::PROG_SCHED_CLS, "switchd_fwd"),
        };
        Program::load(kind, name, &insns)
    }
}

impl Offload {
    /// The fast path of tunnel port `port` (of bridge `bridge`) for the frames
    /// its vxlan device receives: the port's own TC program, run there (tail
    /// called by the decapsulating program), so known unicast from the remote
    /// goes straight to its local port; what it does not forward it sends out
    /// of `far`, the port's veth peer, to arrive on the port as before.
    pub fn tunnel_program(&self, port: &PortOffload, bridge: u16, far: u32) -> io::Result<Program> {
        let me = ThisPort {
            ifindex: port.ifindex,
            slot: port.slot,
            bridge,
            ingress: Ingress::of(&port.vlan),
            decline_to: Some(far),
        };
        let insns = program(Hook::Tc, &me, [&self.table, &self.counters, &self.mtus]);
        Program::load(bpf::PROG_SCHED_CLS, "switchd_tunnel", &insns)
    }
}

/// A port's share of the fast path; dropping it detaches the TC program.
pub struct PortOffload {
    offload: Arc<Offload>,
    slot: u32,
    ifindex: u32,
    /// The policy the programs were built for; entries on the port follow it.
    vlan: PortVlan,
    link: Option<OwnedFd>,
}

/// Frames and bytes the kernel forwarded for one port.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl PortOffload {
    pub fn counters(&self) -> KernelCounters {
        let [rx_packets, rx_bytes, tx_packets, tx_bytes] =
            percpu_sum(&self.offload.counters, self.slot, self.offload.cpus);
        KernelCounters {
            rx_packets,
            rx_bytes,
            tx_packets,
            tx_bytes,
        }
    }

    /// Tells the programs the port's MTU (at attach, and when it changes).
    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        self.offload
            .mtus
            .update(&self.slot.to_ne_bytes(), &mtu.to_ne_bytes())
    }
}

impl Drop for PortOffload {
    fn drop(&mut self) {
        self.link.take();
        self.offload.ids().slots.give_back(self.slot);
    }
}

/// One bridge's share of the BPF MAC table: the kernel's copy of its `Fdb`.
///
/// Kept in step by replaying the table's journal in order (`apply`); the bridge
/// holds it behind its own lock, taken before the table's, so two threads never
/// replay out of order and the copy never goes back to an older state. The table's
/// lock is held only while the journal is taken, never across a syscall.
///
/// Invariant once the journal is replayed: the kernel has an entry for an address
/// exactly when the table does, its port is one of `ports` and carries its VLAN.
pub struct KernelFdb {
    offload: Arc<Offload>,
    bridge: u16,
    /// Ports with the fast path.
    ports: HashMap<PortId, KernelPort>,
    /// Scratch, kept between calls so replaying allocates only while growing:
    /// the journal last taken from the table (kept until the next one, for
    /// `replayed`), each key's last state in it (a value to
    /// write, or `None` to delete), and the batches for the syscalls.
    changes: Vec<FdbChange>,
    /// Filled for every learned address in a MAC flood: foldhash, as the FDB's.
    pending: HashMap<[u8; KEY_BYTES], Option<[u8; VALUE_BYTES]>, foldhash::fast::RandomState>,
    keys: Vec<u8>,
    values: Vec<u8>,
}

struct KernelPort {
    ifindex: u32,
    slot: u32,
    vlan: PortVlan,
}

/// A BPF table key: MAC, bridge id, VLAN.
const KEY_BYTES: usize = 10;
/// A BPF table value: ifindex (u32), counter slot (u16), flags (u16), last seen (u64).
const VALUE_BYTES: usize = 16;
/// Value flag: the port sends this VLAN tagged.
const FLAG_TAGGED: u16 = 1;

impl KernelFdb {
    fn key(&self, key: &FdbKey) -> [u8; KEY_BYTES] {
        let mut k = [0; KEY_BYTES];
        k[..6].copy_from_slice(&key.mac.0);
        k[6..8].copy_from_slice(&self.bridge.to_ne_bytes());
        k[8..].copy_from_slice(&key.vlan.to_ne_bytes());
        k
    }

    pub fn bridge(&self) -> u16 {
        self.bridge
    }

    pub fn has_port(&self, port: PortId) -> bool {
        self.ports.contains_key(&port)
    }

    /// Lets the kernel forward to and from `port`: copies its entries there.
    pub fn add_port(&mut self, fdb: &Mutex<Fdb>, port: PortId, offload: &PortOffload) {
        self.sync(fdb);
        self.ports.insert(
            port,
            KernelPort {
                ifindex: offload.ifindex,
                slot: offload.slot,
                vlan: offload.vlan.clone(),
            },
        );
        let keys: Vec<FdbKey> = lock(fdb).keys_on(port).collect();
        for key in keys {
            self.stage_set(&key, port);
        }
        self.flush();
    }

    /// Stops the kernel forwarding to and from `port`: removes its entries there.
    /// The journal and the port's keys are taken under one lock of the table, and
    /// the journal replayed while the port is still known: a key that left the
    /// port in between would otherwise stay in the kernel pointing at it.
    pub fn remove_port(&mut self, fdb: &Mutex<Fdb>, port: PortId) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        let keys: Vec<FdbKey> = {
            let mut fdb = lock(fdb);
            fdb.take_changes(&mut changes);
            fdb.keys_on(port).collect()
        };
        self.apply(&changes);
        self.changes = changes;
        if self.ports.remove(&port).is_some() {
            for key in keys {
                self.stage_delete(&key);
            }
            self.flush();
        }
    }

    /// Replays what `fdb` recorded since the last call, outside its lock.
    pub fn sync(&mut self, fdb: &Mutex<Fdb>) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        lock(fdb).take_changes(&mut changes);
        self.apply(&changes);
        self.changes = changes;
    }

    /// What the last call that took the journal (`sync`, `add_port`,
    /// `remove_port`, `expire`) replayed, for the monitors (`datapath::events`).
    pub fn replayed(&self) -> &[FdbChange] {
        &self.changes
    }

    /// Carries `changes` out in the kernel's table, with one batch syscall for
    /// what is written and one for what is deleted.
    pub fn apply(&mut self, changes: &[FdbChange]) {
        for change in changes {
            match *change {
                FdbChange::Learned { key, port } => self.stage_set(&key, port),
                FdbChange::Moved { key, from, to } => {
                    if self.has_port(to) {
                        self.stage_set(&key, to);
                    } else if self.has_port(from) {
                        self.stage_delete(&key);
                    }
                }
                FdbChange::Removed { key, port, .. } => {
                    if self.has_port(port) {
                        self.stage_delete(&key);
                    }
                }
                FdbChange::TableFull { .. } => {}
            }
        }
        self.flush();
    }

    /// `key` is now on `port`. If the kernel cannot forward to it there (no fast
    /// path, or a static entry on a port without its VLAN), any older entry of
    /// the key goes.
    fn stage_set(&mut self, key: &FdbKey, port: PortId) {
        let Some(p) = self.ports.get(&port).filter(|p| p.vlan.carries(key.vlan)) else {
            self.stage_delete(key);
            return;
        };
        let flags = if p.vlan.tags(key.vlan) {
            FLAG_TAGGED
        } else {
            0
        };
        let mut value = [0u8; VALUE_BYTES];
        value[..4].copy_from_slice(&p.ifindex.to_ne_bytes());
        // Slots are below PORT_SLOTS, which fits a u16.
        value[4..6].copy_from_slice(&(p.slot as u16).to_ne_bytes());
        value[6..8].copy_from_slice(&flags.to_ne_bytes());
        value[8..].copy_from_slice(&monotonic_ns().to_ne_bytes());
        self.pending.insert(self.key(key), Some(value));
    }

    fn stage_delete(&mut self, key: &FdbKey) {
        self.pending.insert(self.key(key), None);
    }

    /// Writes the staged keys' last states.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let table = &self.offload.table;
        // Deletes first: on a full table they make the room the adds need.
        self.keys.clear();
        for (key, value) in &self.pending {
            if value.is_none() {
                self.keys.extend_from_slice(key);
            }
        }
        // Keys that are absent already (a full table refused them) are skipped.
        if let Err(e) = table.delete_batch(&self.keys) {
            tracing::debug!("kernel MAC table: cannot delete an address: {e}");
        }
        self.keys.clear();
        self.values.clear();
        for (key, value) in &self.pending {
            if let Some(value) = value {
                self.keys.extend_from_slice(key);
                self.values.extend_from_slice(value);
            }
        }
        // A full table leaves the rest to the userspace datapath.
        if let Err(e) = table.update_batch(&self.keys, &self.values) {
            tracing::debug!("kernel MAC table: cannot add an address: {e}");
        }
        self.pending.clear();
    }

    /// Ages `fdb` out at `now_ms`, keeping the entries the kernel forwarded frames
    /// for within the aging time; returns how many went. The kernel is asked
    /// without the table's lock.
    pub fn expire(&mut self, fdb: &Mutex<Fdb>, now_ms: u64) -> usize {
        let stale = lock(fdb).stale(now_ms);
        let seen = self.seen_ms(&stale, now_ms);
        let expired = {
            let mut fdb = lock(fdb);
            for &(key, port, seen_ms) in &seen {
                fdb.touch(key, port, seen_ms, now_ms);
            }
            fdb.expire(now_ms)
        };
        self.sync(fdb);
        expired
    }

    /// Brings `fdb`'s last-seen times up to date with the frames the kernel
    /// forwarded (for `fdb-show`).
    pub fn refresh_seen(&mut self, fdb: &Mutex<Fdb>, now_ms: u64) {
        let entries: Vec<(FdbKey, PortId)> = {
            let fdb = lock(fdb);
            self.ports
                .keys()
                .flat_map(|&port| fdb.keys_on(port).map(move |key| (key, port)))
                .collect()
        };
        let seen = self.seen_ms(&entries, now_ms);
        let mut fdb = lock(fdb);
        for (key, port, seen_ms) in seen {
            fdb.touch(key, port, seen_ms, now_ms);
        }
    }

    /// When the kernel last forwarded a frame from each of `entries` on a port
    /// with the fast path, on the `now_ms` clock; one lookup per entry.
    fn seen_ms(&self, entries: &[(FdbKey, PortId)], now_ms: u64) -> Vec<(FdbKey, PortId, u64)> {
        entries
            .iter()
            .filter(|(_, port)| self.has_port(*port))
            .filter_map(|&(key, port)| {
                let idle = self.idle(&key)?.as_millis() as u64;
                Some((key, port, now_ms.saturating_sub(idle)))
            })
            .collect()
    }

    /// How long ago the kernel last forwarded a frame from `key`, if it has it.
    pub fn idle(&self, key: &FdbKey) -> Option<Duration> {
        let mut value = [0u8; VALUE_BYTES];
        matches!(
            self.offload.table.lookup(&self.key(key), &mut value),
            Ok(true)
        )
        .then(|| {
            let seen = u64::from_ne_bytes(value[8..].try_into().unwrap());
            Duration::from_nanos(monotonic_ns().saturating_sub(seen))
        })
    }
}

impl Drop for KernelFdb {
    fn drop(&mut self) {
        self.offload.ids().free_bridges.push(self.bridge);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// The port socket's filter: keep every frame the TC program will not take.
    Socket,
    /// TC ingress: forward known unicast, let the rest go on.
    Tc,
}

/// How the ingress port puts an untagged or 802.1Q-tagged frame in its VLAN.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ingress {
    /// Untagged frames are in this VLAN; tagged ones go to userspace (which
    /// drops them).
    Access(u16),
    /// The tag's VLAN, or 0 untagged.
    Trunk,
    /// The tag's VLAN, or this one untagged.
    Native(u16),
}

impl Ingress {
    fn of(vlan: &PortVlan) -> Ingress {
        match vlan.mode() {
            VlanMode::Access => Ingress::Access(vlan.tag()),
            VlanMode::Trunk => Ingress::Trunk,
            VlanMode::NativeTagged | VlanMode::NativeUntagged => Ingress::Native(vlan.tag()),
        }
    }

    /// The VLAN of an untagged frame.
    fn untagged(self) -> u16 {
        match self {
            Ingress::Access(v) | Ingress::Native(v) => v,
            Ingress::Trunk => 0,
        }
    }
}

/// What a port's programs are built for, as constants.
struct ThisPort {
    ifindex: u32,
    slot: u32,
    bridge: u16,
    ingress: Ingress,
    /// Where TC sends a frame it does not forward: on (`None`), or out of
    /// this interface (a tunnel port's veth peer, for the program that runs on
    /// the vxlan device: `tunnel_program`).
    decline_to: Option<u32>,
}

// Stack layout: the Ethernet header at fp-16..fp-2; the source key at fp-32 and
// the destination key at fp-48 (MAC, bridge id, VLAN: KEY_BYTES each); a
// counter slot or MTU key at fp-52.
const ETH: i16 = -16;
const SRC_KEY: i16 = -32;
const DST_KEY: i16 = -48;
pub(super) const SLOT_KEY: i16 = -52;
// __sk_buff fields.
pub(super) const SKB_LEN: i16 = 0;
pub(super) const SKB_PKT_TYPE: i16 = 4;
pub(super) const SKB_VLAN_PRESENT: i16 = 20;
const SKB_VLAN_TCI: i16 = 24;
const SKB_VLAN_PROTO: i16 = 28;
pub(super) const SKB_IFINDEX: i16 = 40;
pub(super) const SKB_GSO_SIZE: i16 = 176;
/// 0x8100 as the kernel stores it (network order), read on a little-endian CPU.
pub(super) const ETH_P_8021Q_LE: i32 = 0x0081;
pub(super) const ETH_P_8021AD_LE: i32 = 0xa888;

/// Builds the program for one port. Both hooks share the decision, so the socket
/// skips exactly what TC forwards:
///
/// a frame untagged or tagged 802.1Q (a VLAN id other than 0; not on an access
/// port) with a unicast destination, whose source the table puts on this port and
/// whose destination on another port of the same bridge, both in the frame's
/// VLAN; TC then gives it the tag the destination's entry says and redirects it.
fn program(hook: Hook, me: &ThisPort, [table, counters, mtus]: [&Map; 3]) -> Vec<Insn> {
    let mut a = Asm::default();
    const PASS: usize = 0;
    const TX: usize = 1;
    const SEND: usize = 2;
    const FRESH: usize = 3;
    const FITS: usize = 4;
    const TAGGED: usize = 5;
    const CLASSIFIED: usize = 6;
    const TAG_OK: usize = 7;
    const SHOT: usize = 8;
    const WANT_TAG: usize = 9;
    const OUT: usize = 10;
    let ifindex = me.ifindex as i32;
    let vlan_at = |key: i16| key + 8;
    a.op(Insn::mov(R6, R1));
    // The VLAN: the kernel moved a tag, if any, into metadata.
    a.op(Insn::load(Size::W, R2, R6, SKB_VLAN_PRESENT));
    a.jne(R2, 0, TAGGED);
    let untagged = i32::from(me.ingress.untagged());
    a.op(Insn::store_imm(Size::H, FP, vlan_at(SRC_KEY), untagged));
    a.op(Insn::store_imm(Size::H, FP, vlan_at(DST_KEY), untagged));
    a.ja(CLASSIFIED);
    a.label(TAGGED);
    if let Ingress::Access(_) = me.ingress {
        a.ja(PASS);
    } else {
        a.op(Insn::load(Size::W, R2, R6, SKB_VLAN_PROTO));
        a.jne(R2, ETH_P_8021Q_LE, PASS);
        a.op(Insn::load(Size::W, R2, R6, SKB_VLAN_TCI));
        a.op(Insn::and_imm(R2, i32::from(vlan::VID_MASK)));
        // A priority tag: userspace decides what VLAN 0 means here.
        a.jeq(R2, 0, PASS);
        a.op(Insn::store(Size::H, FP, vlan_at(SRC_KEY), R2));
        a.op(Insn::store(Size::H, FP, vlan_at(DST_KEY), R2));
    }
    a.label(CLASSIFIED);
    a.op(Insn::mov(R1, R6));
    a.op(Insn::mov_imm(R2, 0));
    a.op(Insn::mov(R3, FP));
    a.op(Insn::add_imm(R3, ETH.into()));
    a.op(Insn::mov_imm(R4, 14));
    a.op(Insn::call(helper::SKB_LOAD_BYTES));
    a.jne(R0, 0, PASS);
    // A tag left in the frame (802.1Q, 802.1ad): an inner tag, or an outer one
    // the kernel did not take.
    a.op(Insn::load(Size::H, R2, FP, ETH + 12));
    a.jeq(R2, ETH_P_8021Q_LE, PASS);
    a.jeq(R2, ETH_P_8021AD_LE, PASS);
    a.op(Insn::load(Size::B, R2, FP, ETH));
    a.op(Insn::and_imm(R2, 1));
    a.jne(R2, 0, PASS);
    for i in 0..6 {
        a.op(Insn::load(Size::B, R2, FP, ETH + 6 + i));
        a.op(Insn::store(Size::B, FP, SRC_KEY + i, R2));
        a.op(Insn::load(Size::B, R2, FP, ETH + i));
        a.op(Insn::store(Size::B, FP, DST_KEY + i, R2));
    }
    a.op(Insn::store_imm(Size::H, FP, SRC_KEY + 6, me.bridge.into()));
    a.op(Insn::store_imm(Size::H, FP, DST_KEY + 6, me.bridge.into()));
    // Destination first: flooded traffic (unknown destinations) then costs one
    // lookup per hook, not two.
    lookup(&mut a, table, DST_KEY, PASS);
    a.op(Insn::mov(R8, R0));
    a.op(Insn::load(Size::W, R9, R8, 0));
    // The destination is behind this port: the userspace datapath filters it.
    a.jeq(R9, ifindex, PASS);
    lookup(&mut a, table, SRC_KEY, PASS);
    a.op(Insn::mov(R7, R0));
    a.op(Insn::load(Size::W, R2, R7, 0));
    a.jne(R2, ifindex, PASS);
    if me.ingress == Ingress::Trunk {
        // An untagged frame is VLAN 0, which no port sends tagged; should an
        // entry say otherwise, userspace decides.
        a.op(Insn::load(Size::W, R2, R6, SKB_VLAN_PRESENT));
        a.jne(R2, 0, TAG_OK);
        a.op(Insn::load(Size::H, R2, R8, 6));
        a.jne(R2, 0, PASS);
        a.label(TAG_OK);
    }
    // A frame longer than the destination's MTU (plus Ethernet header and a tag's
    // slack, as veth allows) goes to userspace, which counts it as a tx error when
    // the kernel refuses it; a GSO frame is cut to size on the way.
    a.op(Insn::load(Size::H, R2, R8, 4));
    a.op(Insn::store(Size::W, FP, SLOT_KEY, R2));
    lookup(&mut a, mtus, SLOT_KEY, PASS);
    a.op(Insn::load(Size::W, R1, R0, 0));
    a.op(Insn::add_imm(R1, 18));
    a.op(Insn::load(Size::W, R2, R6, SKB_LEN));
    a.jle(R2, R1, FITS);
    a.op(Insn::load(Size::W, R2, R6, SKB_GSO_SIZE));
    a.jeq(R2, 0, PASS);
    a.label(FITS);
    if hook == Hook::Socket {
        a.op(Insn::mov_imm(R0, 0));
        a.op(Insn::exit());
    } else {
        a.op(Insn::call(helper::KTIME_GET_NS));
        a.op(Insn::load(Size::DW, R1, R7, 8));
        a.op(Insn::mov(R2, R0));
        a.op(Insn::sub(R2, R1));
        a.jlt(R2, SEEN_REFRESH_NS, FRESH);
        a.op(Insn::store(Size::DW, R7, 8, R0));
        a.label(FRESH);
        // Counters: rx on this port's slot, tx on the destination's.
        a.op(Insn::store_imm(Size::W, FP, SLOT_KEY, me.slot as i32));
        count(&mut a, counters, 0, TX);
        a.label(TX);
        a.op(Insn::load(Size::H, R2, R8, 4));
        a.op(Insn::store(Size::W, FP, SLOT_KEY, R2));
        count(&mut a, counters, 16, SEND);
        a.label(SEND);
        // The tag the destination port sends this VLAN with: pop the frame's, or
        // push the ingress port's VLAN (an untagged frame is in a constant one).
        a.op(Insn::load(Size::H, R2, R8, 6));
        a.op(Insn::load(Size::W, R3, R6, SKB_VLAN_PRESENT));
        a.op(Insn::mov(R1, R6));
        a.jne(R2, 0, WANT_TAG);
        a.jeq(R3, 0, OUT);
        a.op(Insn::call(helper::SKB_VLAN_POP));
        a.jne(R0, 0, SHOT);
        a.ja(OUT);
        a.label(WANT_TAG);
        if me.ingress != Ingress::Trunk {
            a.jne(R3, 0, OUT);
            a.op(Insn::mov_imm(R2, ETH_P_8021Q_LE));
            a.op(Insn::mov_imm(R3, untagged));
            a.op(Insn::call(helper::SKB_VLAN_PUSH));
            a.jne(R0, 0, SHOT);
        }
        a.label(OUT);
        a.op(Insn::mov(R1, R9));
        a.op(Insn::mov_imm(R2, 0));
        // Out of the destination port, as the kernel bridge sends: its taps
        // (tcpdump) and counters see the frame. bpf_redirect_peer (straight into
        // the peer's namespace) measured close in a prototype, would hide the
        // frame from both, and drops frames whose peer is in our own namespace.
        a.op(Insn::call(helper::REDIRECT));
        a.op(Insn::exit());
        a.label(SHOT);
        // TC_ACT_SHOT: the tag could not be changed (no memory).
        a.op(Insn::mov_imm(R0, 2));
        a.op(Insn::exit());
    }
    a.label(PASS);
    if let (Hook::Tc, Some(far)) = (hook, me.decline_to) {
        a.op(Insn::mov_imm(R1, far as i32));
        a.op(Insn::mov_imm(R2, 0));
        a.op(Insn::call(helper::REDIRECT));
        a.op(Insn::exit());
        return a.finish();
    }
    // TCX_NEXT for TC; for the socket, keep the whole frame (u32 max).
    a.op(Insn::mov_imm(R0, -1));
    a.op(Insn::exit());
    a.finish()
}

/// `r0 = map[key at fp+key]`; jumps to `missing` if there is no such entry.
pub(super) fn lookup(a: &mut Asm, map: &Map, key: i16, missing: usize) {
    a.ops(&Insn::load_map(R1, map));
    a.op(Insn::mov(R2, FP));
    a.op(Insn::add_imm(R2, key.into()));
    a.op(Insn::call(helper::MAP_LOOKUP_ELEM));
    a.jeq(R0, 0, missing);
}

/// Adds one frame of `skb->len` bytes to the counters of the slot at
/// `SLOT_KEY`, at byte `off`; jumps to `done` if the slot is missing.
pub(super) fn count(a: &mut Asm, counters: &Map, off: i16, done: usize) {
    lookup(a, counters, SLOT_KEY, done);
    a.op(Insn::load(Size::DW, R1, R0, off));
    a.op(Insn::add_imm(R1, 1));
    a.op(Insn::store(Size::DW, R0, off, R1));
    a.op(Insn::load(Size::W, R2, R6, 0));
    a.op(Insn::load(Size::DW, R1, R0, off + 8));
    a.op(Insn::add(R1, R2));
    a.op(Insn::store(Size::DW, R0, off + 8, R1));
}

/// Instructions with forward jumps to labels, resolved by `finish`.
#[derive(Default)]
pub(super) struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<usize, usize>,
    jumps: Vec<(usize, usize)>,
}

impl Asm {
    pub(super) fn op(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    pub(super) fn ops(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }

    pub(super) fn jump(&mut self, insn: Insn, label: usize) {
        self.jumps.push((self.insns.len(), label));
        self.insns.push(insn);
    }

    pub(super) fn jeq(&mut self, reg: bpf::Reg, imm: i32, label: usize) {
        self.jump(Insn::jeq_imm(reg, imm, 0), label);
    }

    pub(super) fn jne(&mut self, reg: bpf::Reg, imm: i32, label: usize) {
        self.jump(Insn::jne_imm(reg, imm, 0), label);
    }

    pub(super) fn jle(&mut self, a: bpf::Reg, b: bpf::Reg, label: usize) {
        self.jump(Insn::jle(a, b, 0), label);
    }

    pub(super) fn ja(&mut self, label: usize) {
        self.jump(Insn::ja(0), label);
    }

    pub(super) fn jlt(&mut self, reg: bpf::Reg, imm: i32, label: usize) {
        self.jump(Insn::jlt_imm(reg, imm, 0), label);
    }

    pub(super) fn label(&mut self, label: usize) {
        let old = self.labels.insert(label, self.insns.len());
        debug_assert!(old.is_none(), "label {label} placed twice");
    }

    pub(super) fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.jumps {
            let target = self.labels[&label];
            self.insns[at].set_offset((target - at - 1) as i16);
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_pass_the_verifier() {
        // Needs root (CAP_BPF), as switchd does.
        let offload = Offload::new().expect("load the socket filter and the TC program");
        let kernel = offload.add_bridge().unwrap();
        assert_eq!(kernel.bridge(), 0);
        assert_eq!(offload.add_bridge().unwrap().bridge(), 1);
        drop(kernel);
        // Ids come back for the next bridge.
        assert_eq!(offload.add_bridge().unwrap().bridge(), 0);
    }

    #[test]
    fn programs_for_every_vlan_mode_pass_the_verifier() {
        let offload = Offload::new().unwrap();
        for mode in VlanMode::ALL {
            let config = VlanConfig {
                tag: (mode != VlanMode::Trunk).then_some(10),
                trunks: if mode == VlanMode::Access {
                    vec![]
                } else {
                    vec![20]
                },
                vlan_mode: Some(mode),
            };
            let vlan = PortVlan::new(&config.check().unwrap());
            for hook in [Hook::Socket, Hook::Tc] {
                offload
                    .load(hook, 1, 0, 0, &vlan)
                    .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            }
            // A tunnel port's, run on its vxlan device.
            let port = PortOffload {
                offload: offload.clone(),
                slot: 0,
                ifindex: 1,
                vlan: vlan.clone(),
                link: None,
            };
            offload
                .tunnel_program(&port, 0, 1)
                .unwrap_or_else(|e| panic!("{mode:?} tunnel: {e}"));
            // Its slot was never taken from the free list: not given back.
            std::mem::forget(port);
        }
    }

    #[test]
    fn entries_say_whether_their_port_tags_the_vlan() {
        let offload = Offload::new().unwrap();
        let mut fdb = Fdb::new(16, 300);
        fdb.record_changes();
        let fdb = Mutex::new(fdb);
        let mut kernel = offload.add_bridge().unwrap();
        let native = VlanConfig {
            tag: Some(10),
            trunks: vec![20],
            vlan_mode: Some(VlanMode::NativeUntagged),
        };
        let mut p = port(&offload, 101, 1);
        p.vlan = PortVlan::new(&native);
        kernel.add_port(&fdb, 1, &p);
        for vlan in [10, 20, 30] {
            lock(&fdb).learn(
                FdbKey {
                    vlan,
                    ..key(vlan as u8)
                },
                1,
                0,
            );
        }
        kernel.sync(&fdb);
        let flags = |vlan: u16| {
            let mut value = [0u8; VALUE_BYTES];
            let k = kernel.key(&FdbKey {
                vlan,
                ..key(vlan as u8)
            });
            offload
                .table
                .lookup(&k, &mut value)
                .unwrap()
                .then(|| value[6])
        };
        assert_eq!(flags(10), Some(0), "the native VLAN leaves untagged");
        assert_eq!(flags(20), Some(FLAG_TAGGED as u8));
        assert_eq!(
            flags(30),
            None,
            "a VLAN the port does not carry is never offloaded"
        );
    }

    fn key(last: u8) -> FdbKey {
        FdbKey {
            vlan: 0,
            mac: crate::wire::MacAddr([2, 0, 0, 0, 0, last]),
        }
    }

    /// A port's share without a program attached, for the table alone.
    fn port(offload: &Arc<Offload>, ifindex: u32, slot: u32) -> PortOffload {
        PortOffload {
            offload: offload.clone(),
            slot,
            ifindex,
            vlan: PortVlan::TRUNK_ALL,
            link: None,
        }
    }

    /// A bridge's table of `max` entries and its kernel copy, with ports 1 and 2
    /// (ifindex 101 and 102) on the fast path.
    struct Bridge {
        offload: Arc<Offload>,
        fdb: Mutex<Fdb>,
        kernel: KernelFdb,
        ports: [PortOffload; 2],
    }

    fn bridge(max: u32, aging: u64) -> Bridge {
        let offload = Offload::new().unwrap();
        let mut fdb = Fdb::new(max, aging);
        fdb.record_changes();
        let fdb = Mutex::new(fdb);
        let mut kernel = offload.add_bridge().unwrap();
        let ports = [port(&offload, 101, 1), port(&offload, 102, 2)];
        kernel.add_port(&fdb, 1, &ports[0]);
        kernel.add_port(&fdb, 2, &ports[1]);
        Bridge {
            offload,
            fdb,
            kernel,
            ports,
        }
    }

    #[test]
    fn the_kernel_table_follows_every_change_of_the_fdb() {
        let Bridge {
            fdb,
            mut kernel,
            ports,
            ..
        } = bridge(4, 300);
        let learn = |kernel: &mut KernelFdb, key: FdbKey, port: PortId, now: u64| {
            lock(&fdb).learn(key, port, now);
            kernel.sync(&fdb);
        };
        let in_kernel = |kernel: &KernelFdb, k: u8| kernel.idle(&key(k)).is_some();

        learn(&mut kernel, key(1), 1, 0);
        learn(&mut kernel, key(2), 2, 0);
        // Port 3 has no fast path; VLAN 5 is a key of its own.
        learn(&mut kernel, key(3), 3, 0);
        let vlan5 = FdbKey { vlan: 5, ..key(4) };
        learn(&mut kernel, vlan5, 1, 0);
        assert!(in_kernel(&kernel, 1) && in_kernel(&kernel, 2));
        assert!(!in_kernel(&kernel, 3) && !in_kernel(&kernel, 4));
        assert!(kernel.idle(&vlan5).is_some());

        // A move to a port without the fast path takes it out; back in on return.
        learn(&mut kernel, key(1), 3, 10);
        assert!(!in_kernel(&kernel, 1));
        learn(&mut kernel, key(1), 2, 20);
        assert!(in_kernel(&kernel, 1));

        // Eviction (the table holds 4: port 2's oldest goes), port removal, flush.
        learn(&mut kernel, key(5), 2, 30);
        assert_eq!(lock(&fdb).len(), 4);
        assert!(!in_kernel(&kernel, 2) && in_kernel(&kernel, 5));
        kernel.remove_port(&fdb, 2);
        assert!(!in_kernel(&kernel, 1) && !in_kernel(&kernel, 5));
        kernel.add_port(&fdb, 2, &ports[1]);
        assert!(in_kernel(&kernel, 1) && in_kernel(&kernel, 5));
        lock(&fdb).flush();
        kernel.sync(&fdb);
        assert!(!in_kernel(&kernel, 1) && !in_kernel(&kernel, 5));
    }

    #[test]
    fn a_full_kernel_table_takes_an_address_that_replaces_one() {
        let Bridge {
            offload,
            fdb,
            mut kernel,
            ports: _ports,
        } = bridge(1, 300);
        lock(&fdb).learn(key(1), 1, 0);
        kernel.sync(&fdb);
        // Other bridges' addresses fill the rest of the shared table.
        let other = kernel.bridge().wrapping_add(1).to_ne_bytes();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for n in 1..TABLE_ENTRIES {
            let mut k = [0u8; KEY_BYTES];
            k[..4].copy_from_slice(&n.to_be_bytes());
            k[6..8].copy_from_slice(&other);
            keys.extend_from_slice(&k);
            values.extend_from_slice(&[0u8; VALUE_BYTES]);
        }
        offload.table.update_batch(&keys, &values).unwrap();
        // The one-entry table evicts key 1 for key 2: one replay deletes and adds.
        lock(&fdb).learn(key(2), 1, 10);
        kernel.sync(&fdb);
        assert!(kernel.idle(&key(1)).is_none());
        assert!(kernel.idle(&key(2)).is_some(), "refused by the full table");
    }

    #[test]
    fn a_journal_replayed_late_ends_in_the_tables_state() {
        let Bridge {
            offload,
            fdb,
            mut kernel,
            ports: _ports,
        } = bridge(100, 300);
        // Born, moved, moved back, gone, born again: one replay, last state wins.
        {
            let mut f = lock(&fdb);
            f.learn(key(1), 1, 0);
            f.learn(key(1), 2, 1);
            f.learn(key(2), 1, 1);
            f.learn(key(1), 1, 2);
            f.flush();
            f.learn(key(1), 2, 3);
        }
        kernel.sync(&fdb);
        assert!(kernel.idle(&key(1)).is_some());
        assert!(kernel.idle(&key(2)).is_none());
        let mut value = [0u8; VALUE_BYTES];
        assert!(offload
            .table
            .lookup(&kernel.key(&key(1)), &mut value)
            .unwrap());
        assert_eq!(value[..4], 102u32.to_ne_bytes(), "on port 2's interface");
        assert!(!lock(&fdb).has_changes());
    }

    #[test]
    fn aging_keeps_what_the_kernel_forwards() {
        let Bridge {
            offload,
            fdb,
            mut kernel,
            ports: _ports,
        } = bridge(100, 1);
        lock(&fdb).learn(key(1), 1, 0);
        lock(&fdb).learn(key(2), 1, 0);
        kernel.sync(&fdb);
        // Key 2's kernel entry was last refreshed long ago; key 1's just now.
        let mut stale = [0u8; VALUE_BYTES];
        stale[..4].copy_from_slice(&101u32.to_ne_bytes());
        offload.table.update(&kernel.key(&key(2)), &stale).unwrap();
        assert_eq!(kernel.expire(&fdb, 5000), 1);
        assert_eq!(lock(&fdb).lookup(&key(1), 5000), Some(1));
        assert_eq!(lock(&fdb).lookup(&key(2), 5000), None);
        assert!(kernel.idle(&key(2)).is_none());
    }

    #[test]
    fn jumps_land_on_their_labels() {
        let mut a = Asm::default();
        a.jeq(R0, 0, 7);
        a.op(Insn::mov_imm(R0, 1));
        a.jne(R0, 0, 7);
        a.op(Insn::exit());
        a.label(7);
        a.op(Insn::exit());
        let insns = a.finish();
        assert_eq!(insns[0].offset(), 3);
        assert_eq!(insns[2].offset(), 1);
    }
}
