//! The forwarding plane: plain OS threads that move frames between port sockets.
//!
//! Never imports tokio and never waits on the control plane. The control plane
//! changes the topology through [`Datapath`], which builds a fresh immutable
//! [`WorkerView`] per thread and hands it over a channel; a thread picks it up
//! between batches (woken by an eventfd if it is blocked in epoll).
//!
//! Each port's receive side belongs to one thread (`port id % threads`); any thread
//! may send on any port (concurrent `sendmmsg` on one socket is safe).

pub mod decide;
pub mod egress;
pub mod events;
pub mod fdb;
pub mod mcast;
pub mod mirror;
pub mod offload;
mod port;
mod spin;
pub mod trace;
pub mod tunnel;
pub mod vlan;
mod worker;

pub use fdb::{
    Fdb, FdbChange, FdbKey, FdbRow, PortId, RemoveReason, MAC_AGING_SECS, MAC_TABLE_SIZE,
};
use port::PortIo;
pub use port::{Port, PortStats, LOOP_BLOCK_MS, LOOP_MOVES_PER_SEC};

use crate::sys::{EventFd, PacketSocket, Tap};
use decide::Ports;
use egress::Egress;
use events::{EventSink, EventTap, Watch, Watchers};
use mcast::Mdb;
use mirror::{MirrorOutput, MirrorRule};
use offload::{KernelFdb, Offload, PortOffload};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use switchd_proto::{McastSnooping, VlanConfig};
use trace::Traced;
use vlan::PortVlan;

/// Milliseconds on a monotonic clock shared by the datapath and the control plane.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("could not open network device {name}: {source}")]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("could not create internal port {name}: {}", tap_reason(.source))]
    CreateTap {
        name: String,
        source: std::io::Error,
    },
}

fn tap_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => "an interface of that name exists".to_string(),
        _ => e.to_string(),
    }
}

/// A bridge as the datapath sees it: its MAC table, and the kernel's copy of it.
pub struct Bridge {
    pub name: String,
    /// Locked by a datapath thread once per received batch, and by the control
    /// plane for show, flush and aging.
    fdb: Mutex<Fdb>,
    /// The kernel fast path's copy of `fdb`, following its journal. Locked before
    /// `fdb` (never the other way round), by whoever has changes to replay: a
    /// datapath thread after a batch that learned, the control plane after aging
    /// or a flush. Syscalls happen under this lock only.
    kernel: Option<Mutex<KernelFdb>>,
    /// Reserved group addresses relayed: bit N for 01:80:C2:00:00:0N.
    group_fwd_mask: AtomicU16,
    /// The multicast snooping table. Locked after `fdb` (never the other way
    /// round) by a datapath thread whose batch holds IP multicast, and alone by
    /// the control plane.
    mdb: Mutex<Mdb>,
    snooping: AtomicBool,
    /// Where the journal goes besides the kernel's copy: `switchctl monitor`.
    tap: EventTap,
}

impl Bridge {
    pub fn group_fwd_mask(&self) -> u16 {
        self.group_fwd_mask.load(Ordering::Relaxed)
    }

    pub fn set_group_fwd_mask(&self, mask: u16) {
        self.group_fwd_mask.store(mask, Ordering::Relaxed);
    }

    pub fn fdb(&self) -> MutexGuard<'_, Fdb> {
        lock(&self.fdb)
    }

    pub fn mdb(&self) -> MutexGuard<'_, Mdb> {
        lock(&self.mdb)
    }

    /// The snooping table while snooping is on: what a batch's decision reads.
    pub fn snooping_table(&self) -> Option<&Mutex<Mdb>> {
        self.snooping.load(Ordering::Relaxed).then_some(&self.mdb)
    }

    /// Applies snooping settings; turning it off forgets the table, so that it
    /// starts afresh when turned on again.
    pub fn set_snooping(&self, settings: &McastSnooping) {
        let mut mdb = self.mdb();
        mdb.configure(settings);
        self.snooping.store(settings.enable, Ordering::Relaxed);
        if !settings.enable {
            mdb.flush();
        }
    }

    fn kernel(&self) -> Option<MutexGuard<'_, KernelFdb>> {
        self.kernel.as_ref().map(lock)
    }

    /// Replays the table's recorded changes into the kernel's copy and passes
    /// them to the monitors, in the order they happened.
    pub fn sync_kernel(&self) {
        match self.kernel() {
            Some(mut kernel) => {
                kernel.sync(&self.fdb);
                self.tap.publish(kernel.replayed());
            }
            None => self.tap.drain(&self.fdb),
        }
    }

    /// Drops aged-out MAC entries (returns how many) and group memberships.
    pub fn expire(&self, now_ms: u64) -> usize {
        let aged = match self.kernel() {
            Some(mut kernel) => {
                let aged = kernel.expire(&self.fdb, now_ms);
                self.tap.publish(kernel.replayed());
                aged
            }
            None => {
                let aged = self.fdb().expire(now_ms);
                self.tap.drain(&self.fdb);
                aged
            }
        };
        self.tap.tick(now_ms);
        if self.kernel.is_none() && !self.tap.is_on() {
            // The last monitor left: nobody reads the journal any more.
            self.fdb().stop_recording();
        }
        self.mdb().expire(now_ms);
        aged
    }

    /// Brings last-seen times up to date with what the kernel forwarded.
    pub fn refresh_seen(&self, now_ms: u64) {
        if let Some(mut kernel) = self.kernel() {
            kernel.refresh_seen(&self.fdb, now_ms);
        }
    }

    /// Forgets every entry, or those of one VLAN; returns how many there were.
    pub fn flush(&self, vlan: Option<u16>) -> usize {
        let flushed = match vlan {
            Some(vlan) => self.fdb().flush_vlan(vlan),
            None => self.fdb().flush(),
        };
        self.sync_kernel();
        flushed
    }

    /// Puts `key` on `port` for good (`fdb-add`); the kernel's copy follows.
    pub fn add_static(&self, key: FdbKey, port: PortId) {
        self.fdb().add_static(key, port);
        self.sync_kernel();
    }

    /// Forgets a learned entry (`fdb-del` of an address that is not static).
    pub fn forget(&self, key: &FdbKey) -> bool {
        let forgotten = self.fdb().forget(key);
        self.sync_kernel();
        forgotten
    }

    /// Removes a static entry; false if there was none.
    pub fn remove_static(&self, key: &FdbKey) -> bool {
        let removed = self.fdb().remove_static(key);
        self.sync_kernel();
        removed
    }

    /// Changes the table's bounds (a smaller one evicts at once).
    pub fn set_limits(&self, max_entries: u32, aging_secs: u64) {
        self.fdb().set_limits(max_entries, aging_secs);
        self.sync_kernel();
    }

    /// Takes the kernel fast path away from a port: its addresses first, so no
    /// other port sends it frames, then its own program.
    fn unoffload(&self, port: &Port) {
        if let Some(mut kernel) = self.kernel() {
            kernel.remove_port(&self.fdb, port.id);
            self.tap.publish(kernel.replayed());
        }
        // What the kernel forwarded for it stays counted.
        if let Some(offload) = port.offload().take() {
            let k = offload.counters();
            port.stats.add(&switchd_proto::Counters {
                rx_packets: k.rx_packets,
                rx_bytes: k.rx_bytes,
                tx_packets: k.tx_packets,
                tx_bytes: k.tx_bytes,
                rx_kernel: k.rx_packets,
                tx_kernel: k.tx_packets,
                ..Default::default()
            });
        }
    }
}

/// Locks a mutex whose holder may have panicked. A panic while holding one of the
/// datapath's locks cannot leave its data half-updated in a way that matters more
/// than losing the switch, so keep using it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port a thread receives from, with what it needs to forward its frames.
struct Member {
    port: Arc<Port>,
    /// One per bridge and view, so that a view costs two pointers a port.
    shared: Arc<Shared>,
    /// This port is a mirror's output: what it receives is dropped.
    mirror_output: bool,
}

/// What the members of one bridge share in a view.
struct Shared {
    bridge: Arc<Bridge>,
    /// Every port of the bridge, the ingress port included, in the order a
    /// flood sends to them (`decide::send_order`).
    peers: Box<[Arc<Port>]>,
    /// The ids of `peers`, in the same order.
    peer_ids: Box<[PortId]>,
    /// Each of `peer_ids` with its index there, sorted by id.
    peer_by_id: Box<[(PortId, u32)]>,
    /// What each of `peers` does to the frames it sends, in the same order.
    peer_egress: Box<[Egress]>,
    /// The bridge's mirrors.
    mirrors: Arc<[MirrorRule]>,
}

impl Shared {
    /// Where port `id` is in `peers`.
    fn index_of(&self, id: PortId) -> Option<usize> {
        decide::position(&self.peer_by_id, id)
    }
}

/// Everything one thread needs; replaced whole on every topology change.
#[derive(Default)]
struct WorkerView {
    /// Sorted by port id.
    members: Vec<Member>,
}

impl WorkerView {
    /// Where port `id` (an epoll token) is in `members`.
    fn index(&self, id: u64) -> Result<usize, usize> {
        self.members
            .binary_search_by_key(&id, |m| u64::from(m.port.id))
    }
}

enum WorkerMsg {
    Update { generation: u64, view: WorkerView },
    Stop,
}

/// Where a datapath thread's time went, for `--metrics`: written by the
/// thread once per pass of its loop, read by a scrape.
#[derive(Default)]
pub struct ThreadTimes {
    /// Passes that forwarded frames.
    pub busy_ns: AtomicU64,
    /// Passes that polled and found nothing (`--spin-us`).
    pub poll_ns: AtomicU64,
}

struct WorkerHandle {
    tx: mpsc::Sender<WorkerMsg>,
    wake: Arc<EventFd>,
    /// Last topology generation the thread has switched to.
    applied: Arc<AtomicU64>,
    times: Arc<ThreadTimes>,
    thread: Option<JoinHandle<()>>,
}

struct BridgeState {
    bridge: Arc<Bridge>,
    ports: Vec<(Arc<Port>, Egress)>,
    mirrors: Arc<[MirrorRule]>,
    /// Sorted: ports kept off the kernel fast path for the mirrors.
    slow: Vec<PortId>,
}

impl BridgeState {
    fn port(&self, id: PortId) -> Option<&(Arc<Port>, Egress)> {
        self.ports.iter().find(|(p, _)| p.id == id)
    }

    fn is_mirror_output(&self, id: PortId) -> bool {
        self.mirrors
            .iter()
            .any(|m| m.selection.output == MirrorOutput::Port(id))
    }

    /// The ports in the order a flood sends to them (`decide::send_order`),
    /// with their egress as forwarding sees it: a mirror's output port carries
    /// no VLAN, so nothing is forwarded to it.
    fn ports_in_send_order(&self) -> Vec<(Arc<Port>, Egress)> {
        let mut ports: Vec<(Arc<Port>, Egress)> = self
            .ports
            .iter()
            .map(|(p, e)| {
                let egress = if self.is_mirror_output(p.id) {
                    Egress {
                        vlan: PortVlan::NONE,
                    }
                } else {
                    e.clone()
                };
                (p.clone(), egress)
            })
            .collect();
        ports.sort_by_key(|(p, _)| decide::send_order(p.ifindex().unwrap_or(0)));
        ports
    }
}

#[derive(Default)]
struct Topology {
    bridges: HashMap<String, BridgeState>,
    next_port_id: PortId,
    generation: u64,
}

/// How the datapath runs.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// Forwarding threads; each port's receive side belongs to one of them.
    pub threads: usize,
    /// The longest a thread keeps polling after forwarding before it blocks.
    pub spin: Duration,
    /// Polling that finds nothing may cost at most this percentage of the time
    /// spent forwarding.
    pub spin_budget_pct: u32,
    /// Receive ring slots per busy port; 0 always receives with recvmmsg.
    pub ring_frames: usize,
    /// Let the kernel forward known unicast between ports (`offload`).
    pub offload: bool,
}

/// Lets the kernel forward to and from `port` of `bridge`.
fn add_kernel_port(bridge: &Bridge, port: PortId, offload: &PortOffload) {
    if let Some(mut kernel) = bridge.kernel() {
        kernel.add_port(&bridge.fdb, port, offload);
        bridge.tap.publish(kernel.replayed());
    }
}

/// The control plane's handle on the datapath threads.
pub struct Datapath {
    topology: Mutex<Topology>,
    workers: Vec<WorkerHandle>,
    offload: Option<Arc<Offload>>,
    /// The monitors connected, and where MAC events go for them.
    watchers: Arc<Watchers>,
    /// Where removed ports go to close (`retire`); None once shutting down.
    closer: Option<(mpsc::Sender<Arc<Port>>, JoinHandle<()>)>,
}

/// Called by a thread each time it has switched to a new generation (the
/// control plane wakes a waiting request with it).
pub type OnApplied = Arc<dyn Fn() + Send + Sync>;

impl Datapath {
    pub fn start(config: &DatapathConfig, on_applied: OnApplied) -> std::io::Result<Self> {
        let ring_frames = config.ring_frames;
        let closer = {
            let (tx, rx) = mpsc::channel::<Arc<Port>>();
            let thread = std::thread::Builder::new()
                .name("port-closer".into())
                .spawn(move || rx.into_iter().for_each(drop))?;
            (tx, thread)
        };
        let mut workers = Vec::new();
        for n in 0..config.threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let wake = Arc::new(EventFd::new()?);
            let applied = Arc::new(AtomicU64::new(0));
            let times = Arc::new(ThreadTimes::default());
            let thread = {
                let wake = wake.clone();
                let applied = applied.clone();
                let signal = on_applied.clone();
                let times = times.clone();
                let spin = spin::Spin::new(config.spin, config.spin_budget_pct, Instant::now());
                std::thread::Builder::new()
                    .name(format!("datapath-{n}"))
                    .spawn(move || {
                        worker::run(rx, &wake, (&applied, &*signal), &times, spin, ring_frames)
                    })?
            };
            workers.push(WorkerHandle {
                tx,
                wake,
                applied,
                times,
                thread: Some(thread),
            });
        }
        let offload = if config.offload {
            match Offload::new() {
                Ok(offload) => Some(offload),
                Err(e) => {
                    tracing::warn!(
                        "kernel fast path unavailable, forwarding every frame in userspace: {e}"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Datapath {
            topology: Mutex::default(),
            workers,
            offload,
            watchers: Arc::default(),
            closer: Some(closer),
        })
    }

    /// Where MAC events go while a monitor watches (`watch`); set once.
    pub fn set_event_sink(&self, sink: EventSink) {
        self.watchers.set_sink(sink);
    }

    /// Passes every bridge's MAC table changes to the event sink until the
    /// returned guard is dropped.
    pub fn watch(&self) -> Watch {
        let watch = Watch::new(&self.watchers);
        for state in self.topology().bridges.values() {
            state.bridge.fdb().record_changes();
        }
        watch
    }

    fn topology(&self) -> MutexGuard<'_, Topology> {
        lock(&self.topology)
    }

    /// Creates an empty bridge, or returns the one of that name.
    pub fn add_bridge(&self, name: &str, max_entries: u32, aging_secs: u64) -> Arc<Bridge> {
        let mut topo = self.topology();
        let state = topo.bridges.entry(name.to_string()).or_insert_with(|| {
            let mut fdb = Fdb::new(max_entries, aging_secs);
            let kernel = self.offload.as_ref().and_then(|o| o.add_bridge());
            if kernel.is_some() || self.watchers.count() > 0 {
                fdb.record_changes();
            }
            BridgeState {
                bridge: Arc::new(Bridge {
                    name: name.to_string(),
                    fdb: Mutex::new(fdb),
                    kernel: kernel.map(Mutex::new),
                    group_fwd_mask: AtomicU16::new(0),
                    mdb: Mutex::new(Mdb::new(&McastSnooping::default())),
                    snooping: AtomicBool::new(true),
                    tap: EventTap::new(name, self.watchers.clone()),
                }),
                ports: Vec::new(),
                mirrors: Arc::new([]),
                slow: Vec::new(),
            }
        });
        state.bridge.clone()
    }

    /// Removes a bridge and all its ports; returns the generation to wait for.
    pub fn remove_bridge(&self, name: &str) -> u64 {
        let mut topo = self.topology();
        if let Some(state) = topo.bridges.remove(name) {
            for (port, _) in &state.ports {
                state.bridge.unoffload(port);
            }
        }
        self.publish(&mut topo)
    }

    /// Opens a socket on `ifindex` and starts forwarding on it as a port of
    /// `bridge` with the VLAN settings `vlan` (checked by the control plane),
    /// on the kernel fast path if `fast_path` (a port a mirror names has none).
    pub fn add_port(
        &self,
        bridge: &str,
        name: &str,
        ifindex: u32,
        vlan: &VlanConfig,
        fast_path: bool,
    ) -> Result<(Arc<Port>, u64), PortError> {
        let sock = PacketSocket::open(ifindex).map_err(|source| PortError::Open {
            name: name.to_string(),
            source,
        })?;
        let egress = Egress {
            vlan: PortVlan::new(vlan),
        };
        let bridge_id = self
            .topology()
            .bridges
            .get(bridge)
            .and_then(|s| s.bridge.kernel().map(|k| k.bridge()));
        let offload = bridge_id
            .filter(|_| fast_path)
            .and_then(|id| self.offload(id, bridge, name, &sock, &egress));
        Ok(self.insert_port(bridge, name, PortIo::Socket(sock), egress, offload))
    }

    /// The kernel fast path for a port on `sock`, if this kernel and the port's
    /// settings allow it.
    fn offload(
        &self,
        bridge_id: u16,
        bridge: &str,
        name: &str,
        sock: &PacketSocket,
        egress: &Egress,
    ) -> Option<PortOffload> {
        let mtu = crate::sys::mtu(name).unwrap_or(1500);
        match self
            .offload
            .as_ref()?
            .attach(bridge_id, mtu, sock, &egress.vlan)
        {
            Ok(port) => Some(port),
            Err(e) => {
                tracing::warn!(
                    bridge,
                    port = name,
                    "no kernel fast path, forwarding in userspace: {e}"
                );
                None
            }
        }
    }

    /// Creates TAP device `name` and forwards on it as the internal port of `bridge`.
    pub fn add_internal_port(
        &self,
        bridge: &str,
        name: &str,
        vlan: &VlanConfig,
    ) -> Result<(Arc<Port>, u64), PortError> {
        let tap = Tap::create(name).map_err(|source| PortError::CreateTap {
            name: name.to_string(),
            source,
        })?;
        let egress = Egress {
            vlan: PortVlan::new(vlan),
        };
        Ok(self.insert_port(bridge, name, PortIo::Tap(tap), egress, None))
    }

    /// Changes a port's VLAN settings. Its learned MAC entries go (they were
    /// learned under the old ones; static ones stay, checked against the new
    /// settings wherever they are used), and so does its kernel fast path until
    /// `finish_set_vlan`, called once the threads run the returned generation.
    pub fn set_vlan(&self, bridge: &str, id: PortId, vlan: &VlanConfig) -> u64 {
        let mut topo = self.topology();
        if let Some(state) = topo.bridges.get_mut(bridge) {
            if let Some(entry) = state.ports.iter_mut().find(|(p, _)| p.id == id) {
                // Kernel entries first, so that no frame is forwarded in the kernel
                // under the old settings while the threads switch.
                state.bridge.unoffload(&entry.0);
                entry.1 = Egress {
                    vlan: PortVlan::new(vlan),
                };
                state.bridge.fdb().remove_learned_on(id);
                state.bridge.mdb().remove_port(id);
                state.bridge.sync_kernel();
            }
        }
        self.publish(&mut topo)
    }

    /// The kernel fast path's program for what tunnel port `id`'s vxlan device
    /// receives (`Offload::tunnel_program`), if the port has the fast path.
    pub fn tunnel_program(
        &self,
        bridge: &str,
        id: PortId,
        far: u32,
    ) -> Option<crate::sys::bpf::Program> {
        let topo = self.topology();
        let state = topo.bridges.get(bridge)?;
        let (port, _) = state.port(id)?;
        let bridge_id = state.bridge.kernel().map(|k| k.bridge())?;
        let offload = port.offload();
        let result = self
            .offload
            .as_ref()?
            .tunnel_program(offload.as_ref()?, bridge_id, far);
        match result {
            Ok(program) => Some(program),
            Err(e) => {
                tracing::warn!(bridge, port = %port.name, "tunnel: no kernel fast path from the remote: {e}");
                None
            }
        }
    }

    /// Completes `set_vlan`: drops what the threads learned under the old settings
    /// meanwhile, and gives the port its kernel fast path back.
    pub fn finish_set_vlan(&self, bridge: &str, id: PortId) {
        let topo = self.topology();
        let Some(state) = topo.bridges.get(bridge) else {
            return;
        };
        let Some((port, egress)) = state.port(id) else {
            return;
        };
        state.bridge.fdb().remove_learned_on(id);
        state.bridge.mdb().remove_port(id);
        state.bridge.sync_kernel();
        if state.slow.binary_search(&id).is_err() {
            self.reoffload(state, bridge, port, egress);
        }
    }

    /// Completes `set_mirrors`: forgets what the threads learned on the
    /// mirrors' output ports under their old views.
    pub fn finish_set_mirrors(&self, bridge: &str) {
        let topo = self.topology();
        let Some(state) = topo.bridges.get(bridge) else {
            return;
        };
        for (port, _) in &state.ports {
            if state.is_mirror_output(port.id) {
                state.bridge.fdb().remove_learned_on_mirror_output(port.id);
                state.bridge.mdb().remove_port(port.id);
            }
        }
        state.bridge.sync_kernel();
    }

    /// Gives a port its kernel fast path back.
    fn reoffload(&self, state: &BridgeState, bridge: &str, port: &Port, egress: &Egress) {
        let (Some(bridge_id), Some(sock)) =
            (state.bridge.kernel().map(|k| k.bridge()), port.socket())
        else {
            return;
        };
        // Attached without the kernel table's lock, which the datapath threads
        // take after every batch that learns: a TCX attach takes ~10 ms.
        if let Some(offload) = self.offload(bridge_id, bridge, &port.name, sock, egress) {
            add_kernel_port(&state.bridge, port.id, &offload);
            *port.offload() = Some(offload);
        }
    }

    /// Runs `mirrors` on a bridge from now on, with the ports of `slow` (sorted)
    /// off the kernel fast path: those it takes off lose it before the threads
    /// switch, those it gives back get it after. A port that becomes a mirror's
    /// output forgets the addresses learned on it (again with
    /// `finish_set_mirrors`, once the threads run the returned generation).
    /// Returns that generation.
    pub fn set_mirrors(&self, bridge: &str, mirrors: Vec<MirrorRule>, slow: Vec<PortId>) -> u64 {
        let mut topo = self.topology();
        let Some(state) = topo.bridges.get_mut(bridge) else {
            return self.publish(&mut topo);
        };
        state.mirrors = mirrors.into();
        let before = std::mem::replace(&mut state.slow, slow);
        for (port, _) in &state.ports {
            if state.slow.binary_search(&port.id).is_ok() && before.binary_search(&port.id).is_err()
            {
                state.bridge.unoffload(port);
            }
            if state.is_mirror_output(port.id) {
                state.bridge.fdb().remove_learned_on_mirror_output(port.id);
                state.bridge.mdb().remove_port(port.id);
            }
        }
        state.bridge.sync_kernel();
        let generation = self.publish(&mut topo);
        let state = &topo.bridges[bridge];
        for (port, egress) in &state.ports {
            if before.binary_search(&port.id).is_ok()
                && state.slow.binary_search(&port.id).is_err()
                && port.offload().is_none()
            {
                self.reoffload(state, bridge, port, egress);
            }
        }
        generation
    }

    fn insert_port(
        &self,
        bridge: &str,
        name: &str,
        io: PortIo,
        egress: Egress,
        offload: Option<PortOffload>,
    ) -> (Arc<Port>, u64) {
        let mut topo = self.topology();
        let id = topo.next_port_id;
        topo.next_port_id += 1;
        let port = Arc::new(Port {
            id,
            name: name.to_string(),
            io,
            stats: PortStats::default(),
            loop_guard: Default::default(),
            offload: Mutex::new(None),
            queued: Default::default(),
        });
        let state = topo
            .bridges
            .get_mut(bridge)
            .expect("control plane adds ports to existing bridges only");
        state.bridge.tap.name_port(id, name);
        if let Some(offload) = offload {
            add_kernel_port(&state.bridge, id, &offload);
            *port.offload() = Some(offload);
        }
        state.ports.push((port.clone(), egress));
        let generation = self.publish(&mut topo);
        (port, generation)
    }

    /// Stops forwarding on a port; the socket closes once the threads have let go
    /// of it. Returns the generation to wait for; after it, `forget_port`.
    pub fn remove_port(&self, bridge: &str, id: PortId) -> u64 {
        let mut topo = self.topology();
        if let Some(state) = topo.bridges.get_mut(bridge) {
            if let Some((port, _)) = state.port(id) {
                state.bridge.unoffload(port);
            }
            state.ports.retain(|(p, _)| p.id != id);
        }
        self.publish(&mut topo)
    }

    /// Drops a removed port's MAC entries. Call it once no thread runs a view with
    /// the port any more: earlier, frames still arriving on it would learn again.
    pub fn forget_port(&self, bridge: &str, id: PortId) {
        if let Some(state) = self.topology().bridges.get(bridge) {
            state.bridge.fdb().remove_port(id);
            state.bridge.mdb().remove_port(id);
            state.bridge.sync_kernel();
            state.bridge.tap.forget_port(id);
        }
    }

    /// Takes a removed port to close once nothing else holds it. Closing a
    /// packet socket waits out an RCU grace period (`synchronize_net` in the
    /// kernel's `packet_release`, ~15 ms on this VM), which was most of what a
    /// `del-port` cost; the request need not wait for it. A TAP closes here:
    /// its device must be gone before a bridge of that name can be made again.
    pub fn retire(&self, port: Arc<Port>) {
        match &self.closer {
            Some((tx, _)) if !port.is_internal() => {
                let _ = tx.send(port);
            }
            _ => drop(port),
        }
    }

    /// What bridge `bridge` would do now with `frame` arriving on port
    /// `ingress` (`trace`), and whether the frame's ports both have the kernel
    /// fast path. The tables are copied under their locks (a MAC table of 8192
    /// entries in well under a millisecond), so forwarding waits no longer.
    pub fn trace(&self, bridge: &str, ingress: PortId, frame: &[u8]) -> Option<(Traced, bool)> {
        let (bridge, ports) = {
            let topo = self.topology();
            let state = topo.bridges.get(bridge)?;
            (state.bridge.clone(), state.ports_in_send_order())
        };
        let ids: Vec<PortId> = ports.iter().map(|(p, _)| p.id).collect();
        let by_id = decide::index_by_id(&ids);
        let egress: Vec<Egress> = ports.iter().map(|(_, e)| e.clone()).collect();
        let fdb = bridge.fdb().clone();
        let mdb = bridge.snooping_table().map(|m| lock(m).clone());
        let view = Ports {
            ingress,
            ids: &ids,
            by_id: &by_id,
            egress: &egress,
            group_fwd_mask: bridge.group_fwd_mask(),
            mdb: None,
        };
        let traced = trace::trace(&fdb, mdb, &view, frame, now_ms());
        let offloaded = |id: PortId| {
            ports
                .iter()
                .any(|(p, _)| p.id == id && p.offload().is_some())
        };
        let kernel = bridge.kernel.is_some()
            && offloaded(ingress)
            && traced.outputs.iter().all(|o| offloaded(o.port));
        Some((traced, kernel))
    }

    /// Each datapath thread's busy and polling time so far, in nanoseconds.
    pub fn thread_times(&self) -> Vec<(u64, u64)> {
        self.workers
            .iter()
            .map(|w| {
                (
                    w.times.busy_ns.load(Ordering::Relaxed),
                    w.times.poll_ns.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// True once every thread runs generation `generation` or later.
    pub fn is_applied(&self, generation: u64) -> bool {
        self.workers
            .iter()
            .all(|w| w.applied.load(Ordering::Acquire) >= generation)
    }

    fn publish(&self, topo: &mut Topology) -> u64 {
        topo.generation += 1;
        let mut views: Vec<WorkerView> =
            self.workers.iter().map(|_| WorkerView::default()).collect();
        for state in topo.bridges.values() {
            let ports = state.ports_in_send_order();
            let peer_ids: Box<[PortId]> = ports.iter().map(|(p, _)| p.id).collect();
            let shared = Arc::new(Shared {
                bridge: state.bridge.clone(),
                peers: ports.iter().map(|(p, _)| p.clone()).collect(),
                peer_by_id: decide::index_by_id(&peer_ids).into(),
                peer_ids,
                peer_egress: ports.into_iter().map(|(_, e)| e).collect(),
                mirrors: state.mirrors.clone(),
            });
            for port in shared.peers.iter() {
                views[port.id as usize % self.workers.len()]
                    .members
                    .push(Member {
                        port: port.clone(),
                        shared: shared.clone(),
                        mirror_output: state.is_mirror_output(port.id),
                    });
            }
        }
        for view in &mut views {
            view.members.sort_by_key(|m| m.port.id);
        }
        for (worker, view) in self.workers.iter().zip(views) {
            // A closed channel means the thread is gone; shutdown will notice.
            let _ = worker.tx.send(WorkerMsg::Update {
                generation: topo.generation,
                view,
            });
            worker.wake.notify();
        }
        topo.generation
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Closed before exit, so no interface stays promiscuous a moment longer.
        if let Some((tx, thread)) = self.closer.take() {
            drop(tx);
            let _ = thread.join();
        }
        for worker in &self.workers {
            let _ = worker.tx.send(WorkerMsg::Stop);
            worker.wake.notify();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
