//! The in-kernel fast path for known unicast between veth ports.
//!
//! Every frame through the userspace datapath is copied twice (into our ring, out
//! through `sendmmsg`) and the receiving namespace's softirq runs on our thread;
//! that bounds TCP at ~0.7x the kernel bridge (docs/PERFORMANCE.md). So once both
//! ends of a conversation are learned, the datapath hands it to the kernel: a TC
//! program on each port's ingress looks the frame's source and destination up in a
//! BPF copy of the MAC table and redirects it out of the destination port. Everything else (broadcast, multicast, unknown or moved addresses, tagged
//! frames, frames for the internal port) still reaches the userspace datapath,
//! which learns; the BPF table follows the `Fdb`'s journal of changes
//! (`KernelFdb::apply`), drained after each batch outside the table's lock.
//!
//! AF_PACKET sees a frame before TC does, so each port's socket carries a filter
//! generated from the same code: it skips exactly the frames the TC program takes.
//! Programs are generated per port with its ifindex, counter slot and bridge id as
//! constants, so they carry no per-port maps.

use super::fdb::{Fdb, FdbChange, FdbKey, PortId};
use super::lock;
use crate::sys::bpf::{self, helper, Insn, Map, Program, Size, FP, R0, R1, R2, R3, R4, R6, R7};
use crate::sys::bpf::{R8, R9};
use crate::sys::monotonic_ns;
use crate::sys::PacketSocket;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries of the BPF MAC table, over all bridges. Past it, new addresses are
/// forwarded by the userspace datapath only.
const TABLE_ENTRIES: u32 = 65_536;
/// Ports that can have their own counters in the kernel.
const PORT_SLOTS: u32 = 4096;
/// The size of one port's counters on one CPU.
const COUNTER_BYTES: usize = 32;
/// The TC program refreshes an entry's last-seen time at most this often, so a busy
/// address does not bounce the entry's cache line between CPUs on every frame.
const SEEN_REFRESH_NS: i32 = 100_000_000;

/// The BPF maps shared by every port's programs.
pub struct Offload {
    /// (MAC, bridge id) -> (ifindex, counter slot, last seen in CLOCK_MONOTONIC ns).
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
    free_slots: Vec<u32>,
    next_slot: u32,
    free_bridges: Vec<u16>,
    next_bridge: u16,
}

impl Offload {
    /// Creates the maps and checks that this kernel loads and attaches our programs.
    pub fn new() -> io::Result<Arc<Offload>> {
        let offload = Offload {
            table: Map::create(bpf::MAP_HASH, 8, 16, TABLE_ENTRIES)?,
            counters: Map::create(bpf::MAP_PERCPU_ARRAY, 4, COUNTER_BYTES as u32, PORT_SLOTS)?,
            mtus: Map::create(bpf::MAP_ARRAY, 4, 4, PORT_SLOTS)?,
            cpus: bpf::possible_cpus()?,
            ids: Mutex::default(),
        };
        // Fail here, once, rather than on every port.
        offload.load(Hook::Socket, 1, 0, 0)?;
        offload.load(Hook::Tc, 1, 0, 0)?;
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

    /// Starts the fast path on a port of MTU `mtu`: filters its socket `sock`,
    /// attaches the TC program to `ifindex`. The port forwards nothing in the
    /// kernel until the bridge's table knows it (`KernelFdb::add_port`).
    pub fn attach(
        self: &Arc<Self>,
        bridge: u16,
        ifindex: u32,
        mtu: u32,
        sock: &PacketSocket,
    ) -> io::Result<PortOffload> {
        let slot = {
            let mut ids = self.ids();
            match ids.free_slots.pop() {
                Some(slot) => slot,
                None if ids.next_slot < PORT_SLOTS => {
                    ids.next_slot += 1;
                    ids.next_slot - 1
                }
                None => return Err(io::Error::other("no kernel counter slot left")),
            }
        };
        // From here on, dropping `port` gives the slot back.
        let mut port = PortOffload {
            offload: self.clone(),
            slot,
            ifindex,
            link: None,
        };
        // A slot may have counted for a port that is gone.
        self.counters
            .update(&slot.to_ne_bytes(), &vec![0; COUNTER_BYTES * self.cpus])?;
        port.set_mtu(mtu)?;
        self.load(Hook::Socket, ifindex, slot, bridge)?
            .attach_socket_filter(sock)?;
        port.link = Some(
            self.load(Hook::Tc, ifindex, slot, bridge)?
                .attach_tcx_ingress(ifindex)?,
        );
        Ok(port)
    }

    fn load(&self, hook: Hook, ifindex: u32, slot: u32, bridge: u16) -> io::Result<Program> {
        let maps = [&self.table, &self.counters, &self.mtus];
        let insns = program(hook, ifindex, slot, bridge, maps);
        let (kind, name) = match hook {
            Hook::Socket => (bpf::PROG_SOCKET_FILTER, "switchd_skip"),
            Hook::Tc => (bpf::PROG_SCHED_CLS, "switchd_fwd"),
        };
        Program::load(kind, name, &insns)
    }
}

/// A port's share of the fast path; dropping it detaches the TC program.
pub struct PortOffload {
    offload: Arc<Offload>,
    slot: u32,
    ifindex: u32,
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
        let mut buf = vec![0u8; COUNTER_BYTES * self.offload.cpus];
        let mut total = KernelCounters::default();
        if !matches!(
            self.offload
                .counters
                .lookup(&self.slot.to_ne_bytes(), &mut buf),
            Ok(true)
        ) {
            return total;
        }
        let word =
            |cpu: &[u8], i: usize| u64::from_ne_bytes(cpu[i * 8..i * 8 + 8].try_into().unwrap());
        for cpu in buf.chunks_exact(COUNTER_BYTES) {
            total.rx_packets += word(cpu, 0);
            total.rx_bytes += word(cpu, 1);
            total.tx_packets += word(cpu, 2);
            total.tx_bytes += word(cpu, 3);
        }
        total
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
        self.offload.ids().free_slots.push(self.slot);
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
/// exactly when the table does, its VLAN is 0 (untagged) and its port is one of
/// `ports`.
pub struct KernelFdb {
    offload: Arc<Offload>,
    bridge: u16,
    /// Ports with the fast path: id -> (ifindex, counter slot).
    ports: HashMap<PortId, (u32, u32)>,
    /// Scratch, kept between calls so replaying allocates only while growing:
    /// the journal taken from the table, each key's last state in it (a value to
    /// write, or `None` to delete), and the batches for the syscalls.
    changes: Vec<FdbChange>,
    /// Filled for every learned address in a MAC flood: foldhash, as the FDB's.
    pending: HashMap<[u8; 8], Option<[u8; VALUE_BYTES]>, foldhash::fast::RandomState>,
    keys: Vec<u8>,
    values: Vec<u8>,
}

/// A BPF table value: ifindex, counter slot, last seen.
const VALUE_BYTES: usize = 16;

impl KernelFdb {
    fn key(&self, key: &FdbKey) -> [u8; 8] {
        let mut k = [0; 8];
        k[..6].copy_from_slice(&key.mac.0);
        k[6..].copy_from_slice(&self.bridge.to_ne_bytes());
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
        self.ports.insert(port, (offload.ifindex, offload.slot));
        let keys: Vec<FdbKey> = lock(fdb).keys_on(port).collect();
        for key in keys {
            self.stage_set(&key, port);
        }
        self.flush();
    }

    /// Stops the kernel forwarding to and from `port`: removes its entries there.
    pub fn remove_port(&mut self, fdb: &Mutex<Fdb>, port: PortId) {
        self.sync(fdb);
        if self.ports.remove(&port).is_some() {
            let keys: Vec<FdbKey> = lock(fdb).keys_on(port).collect();
            for key in keys {
                self.stage_delete(&key);
            }
            self.flush();
        }
    }

    /// Replays what `fdb` recorded since the last call, outside its lock.
    pub fn sync(&mut self, fdb: &Mutex<Fdb>) {
        let mut changes = std::mem::take(&mut self.changes);
        lock(fdb).take_changes(&mut changes);
        self.apply(&changes);
        changes.clear();
        self.changes = changes;
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
                FdbChange::Removed { key, port } => {
                    if self.has_port(port) {
                        self.stage_delete(&key);
                    }
                }
            }
        }
        self.flush();
    }

    /// `key` is now on `port`.
    fn stage_set(&mut self, key: &FdbKey, port: PortId) {
        let Some(&(ifindex, slot)) = self.ports.get(&port) else {
            return;
        };
        if key.vlan != 0 {
            return;
        }
        let mut value = [0u8; VALUE_BYTES];
        value[..4].copy_from_slice(&ifindex.to_ne_bytes());
        value[4..8].copy_from_slice(&slot.to_ne_bytes());
        value[8..].copy_from_slice(&monotonic_ns().to_ne_bytes());
        self.pending.insert(self.key(key), Some(value));
    }

    fn stage_delete(&mut self, key: &FdbKey) {
        if key.vlan == 0 {
            self.pending.insert(self.key(key), None);
        }
    }

    /// Writes the staged keys' last states.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let table = &self.offload.table;
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
        if key.vlan != 0 {
            return None;
        }
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

/// Builds the program for one port. Both hooks share the decision, so the socket
/// skips exactly what TC forwards:
///
/// an untagged frame with a unicast destination, whose source the table puts on
/// this port and whose destination on another port of the same bridge.
fn program(
    hook: Hook,
    ifindex: u32,
    slot: u32,
    bridge: u16,
    [table, counters, mtus]: [&Map; 3],
) -> Vec<Insn> {
    let mut a = Asm::default();
    const PASS: usize = 0;
    const TX: usize = 1;
    const SEND: usize = 2;
    const FRESH: usize = 3;
    const FITS: usize = 4;
    // The Ethernet header goes to fp-32..fp-18, the source key to fp-8, the
    // destination key to fp-16 (MAC, then bridge id), a counter slot to fp-36, an
    // MTU check's length to fp-40.
    a.op(Insn::mov(R6, R1));
    // __sk_buff.vlan_present: the kernel moved a tag into metadata.
    a.op(Insn::load(Size::W, R2, R6, 20));
    a.jne(R2, 0, PASS);
    a.op(Insn::mov(R1, R6));
    a.op(Insn::mov_imm(R2, 0));
    a.op(Insn::mov(R3, FP));
    a.op(Insn::add_imm(R3, -32));
    a.op(Insn::mov_imm(R4, 14));
    a.op(Insn::call(helper::SKB_LOAD_BYTES));
    a.jne(R0, 0, PASS);
    // A tag left in the frame (802.1Q, 802.1ad), read as a little-endian u16.
    a.op(Insn::load(Size::H, R2, FP, -20));
    a.jeq(R2, 0x0081, PASS);
    a.jeq(R2, 0xa888, PASS);
    a.op(Insn::load(Size::B, R2, FP, -32));
    a.op(Insn::and_imm(R2, 1));
    a.jne(R2, 0, PASS);
    for i in 0..6 {
        a.op(Insn::load(Size::B, R2, FP, -26 + i));
        a.op(Insn::store(Size::B, FP, -8 + i, R2));
        a.op(Insn::load(Size::B, R2, FP, -32 + i));
        a.op(Insn::store(Size::B, FP, -16 + i, R2));
    }
    a.op(Insn::store_imm(Size::H, FP, -2, bridge.into()));
    a.op(Insn::store_imm(Size::H, FP, -10, bridge.into()));
    // Destination first: flooded traffic (unknown destinations) then costs one
    // lookup per hook, not two.
    lookup(&mut a, table, -16, PASS);
    a.op(Insn::mov(R8, R0));
    a.op(Insn::load(Size::W, R9, R8, 0));
    // The destination is behind this port: the userspace datapath filters it.
    a.jeq(R9, ifindex as i32, PASS);
    lookup(&mut a, table, -8, PASS);
    a.op(Insn::mov(R7, R0));
    a.op(Insn::load(Size::W, R2, R7, 0));
    a.jne(R2, ifindex as i32, PASS);
    // A frame longer than the destination's MTU (plus Ethernet header and a tag's
    // slack, as veth allows) goes to userspace, which counts it as a tx error when
    // the kernel refuses it; a GSO frame is cut to size on the way.
    a.op(Insn::load(Size::W, R2, R8, 4));
    a.op(Insn::store(Size::W, FP, -36, R2));
    lookup(&mut a, mtus, -36, PASS);
    a.op(Insn::load(Size::W, R1, R0, 0));
    a.op(Insn::add_imm(R1, 18));
    a.op(Insn::load(Size::W, R2, R6, 0));
    a.jle(R2, R1, FITS);
    // __sk_buff.gso_size
    a.op(Insn::load(Size::W, R2, R6, 176));
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
        a.op(Insn::store_imm(Size::W, FP, -36, slot as i32));
        count(&mut a, counters, 0, TX);
        a.label(TX);
        a.op(Insn::load(Size::W, R2, R8, 4));
        a.op(Insn::store(Size::W, FP, -36, R2));
        count(&mut a, counters, 16, SEND);
        a.label(SEND);
        a.op(Insn::mov(R1, R9));
        a.op(Insn::mov_imm(R2, 0));
        // Out of the destination port, as the kernel bridge sends: its taps
        // (tcpdump) and counters see the frame. bpf_redirect_peer (straight into
        // the peer's namespace) measured close in a prototype, would hide the
        // frame from both, and drops frames whose peer is in our own namespace.
        a.op(Insn::call(helper::REDIRECT));
        a.op(Insn::exit());
    }
    a.label(PASS);
    // TCX_NEXT for TC; for the socket, keep the whole frame (u32 max).
    a.op(Insn::mov_imm(R0, -1));
    a.op(Insn::exit());
    a.finish()
}

/// `r0 = map[key at fp+key]`; jumps to `missing` if there is no such entry.
fn lookup(a: &mut Asm, map: &Map, key: i16, missing: usize) {
    a.ops(&Insn::load_map(R1, map));
    a.op(Insn::mov(R2, FP));
    a.op(Insn::add_imm(R2, key.into()));
    a.op(Insn::call(helper::MAP_LOOKUP_ELEM));
    a.jeq(R0, 0, missing);
}

/// Adds one frame of `skb->len` bytes to the counters at fp-36, at byte `off`;
/// jumps to `done` if the slot is missing.
fn count(a: &mut Asm, counters: &Map, off: i16, done: usize) {
    lookup(a, counters, -36, done);
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
struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<usize, usize>,
    jumps: Vec<(usize, usize)>,
}

impl Asm {
    fn op(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    fn ops(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }

    fn jump(&mut self, insn: Insn, label: usize) {
        self.jumps.push((self.insns.len(), label));
        self.insns.push(insn);
    }

    fn jeq(&mut self, reg: bpf::Reg, imm: i32, label: usize) {
        self.jump(Insn::jeq_imm(reg, imm, 0), label);
    }

    fn jne(&mut self, reg: bpf::Reg, imm: i32, label: usize) {
        self.jump(Insn::jne_imm(reg, imm, 0), label);
    }

    fn jle(&mut self, a: bpf::Reg, b: bpf::Reg, label: usize) {
        self.jump(Insn::jle(a, b, 0), label);
    }

    fn jlt(&mut self, reg: bpf::Reg, imm: i32, label: usize) {
        self.jump(Insn::jlt_imm(reg, imm, 0), label);
    }

    fn label(&mut self, label: usize) {
        self.labels.insert(label, self.insns.len());
    }

    fn finish(mut self) -> Vec<Insn> {
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
        // Port 3 has no fast path; VLAN 5 is never offloaded.
        learn(&mut kernel, key(3), 3, 0);
        learn(&mut kernel, FdbKey { vlan: 5, ..key(4) }, 1, 0);
        assert!(in_kernel(&kernel, 1) && in_kernel(&kernel, 2));
        assert!(!in_kernel(&kernel, 3) && !in_kernel(&kernel, 4));

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
