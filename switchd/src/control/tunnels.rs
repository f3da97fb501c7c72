//! Tunnel ports (`type=vxlan`): the kernel devices switchd makes for them
//! (`datapath::tunnel` has the frames' path), and following the underlay.
//!
//! Per port: a veth pair, the end named as the port attached like any veth, the
//! far end (`sdt` and a hash of the name) carrying the encapsulating program.
//! Per UDP port in use: one external vxlan device, `vxlan_sys_PORT` as Open
//! vSwitch names its own. IPv6 is off on all of them, so none of them chatters
//! into the overlay or the underlay.

use super::netlink::{LinkState, NetlinkError, VethSpec};
use super::switch::{err, AttachError, RpcResult, Switch};
use crate::datapath::fdb::PortId;
use crate::datapath::tunnel::{TunnelDrops, TunnelEnd, TunnelKey, Tunnels};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchd_proto::{code, TunnelConfig};

/// IPv4, UDP, VXLAN and the inner Ethernet header.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The tunnel MTU while the underlay's is unknown (no route yet): a 1500-byte
/// underlay's.
const DEFAULT_TUNNEL_MTU: u32 = 1500 - VXLAN_OVERHEAD;
/// How long a refused underlay attach waits before it is tried again.
const ATTACH_RETRY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct TunnelState {
    /// Created with the first tunnel port.
    maps: Option<Arc<Tunnels>>,
    /// By UDP port.
    devices: BTreeMap<u16, Device>,
    /// By port name.
    pub(super) ports: BTreeMap<String, TunnelPort>,
    /// By ifindex: each underlay interface a tunnel's remote is reached by.
    underlays: BTreeMap<u32, UnderlayLink>,
}

/// The receiving program on an underlay interface.
struct UnderlayLink {
    name: String,
    /// Its link (`Tunnels::attach_underlay`), or when the kernel last refused
    /// it (the vxlan device receives there meanwhile).
    link: Result<OwnedFd, Instant>,
}

/// Where a remote's frames arrive: the route's interface, and this host's
/// address they are sent to.
struct Receive {
    ifindex: u32,
    name: String,
    local: Ipv4Addr,
}

struct Device {
    name: String,
    ifindex: u32,
    /// The decapsulating program's link.
    _link: OwnedFd,
}

pub(super) struct TunnelPort {
    end: TunnelEnd,
    config: TunnelConfig,
    name: String,
    far: String,
    far_index: u32,
    port_index: u32,
    /// Why frames cannot reach the remote now, if they cannot.
    pub(super) down: Option<String>,
    /// The largest inner frame's MTU.
    pub(super) mtu: u32,
    /// While there is a route.
    receive: Option<Receive>,
}

impl TunnelPort {
    pub(super) fn drops(&self) -> TunnelDrops {
        self.end.drops()
    }

    pub(super) fn remote(&self) -> Ipv4Addr {
        self.config.remote_ip
    }
}

/// The far end's name: stable, so a restart finds the pair it made.
fn far_name(port: &str) -> String {
    // FNV-1a, as add-ns-port's host names.
    let mut h: u32 = 0x811c_9dc5;
    for b in "tunnel".bytes().chain([0]).chain(port.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("sdt{h:08x}")
}

fn device_name(dst_port: u16) -> String {
    format!("vxlan_sys_{dst_port}")
}

/// Turns IPv6 off on an interface switchd made, before it is up: no link-local
/// address, no DAD, router solicitations or MLD reports from it.
fn disable_ipv6(name: &str) -> Result<(), AttachError> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        // A kernel without IPv6 has nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AttachError::Tunnel(format!("cannot write {path}: {e}"))),
    }
}

/// The tunnel's state and MTU as the route to the remote says.
struct Underlay {
    down: Option<String>,
    mtu: Option<u32>,
    /// The route's interface and source address.
    receive: Option<Receive>,
}

impl Switch {
    /// Refuses tunnel settings `config` for port `name` if another vxlan port
    /// of any bridge has the same remote, key, UDP port and local address (only
    /// one of them could receive).
    pub(super) fn check_tunnel_clash(&self, name: &str, config: &TunnelConfig) -> RpcResult<()> {
        let same = |c: &TunnelConfig| {
            (c.remote_ip, c.key, c.dst_port, c.local_ip)
                == (
                    config.remote_ip,
                    config.key,
                    config.dst_port,
                    config.local_ip,
                )
        };
        let other = self
            .db
            .bridges
            .values()
            .flat_map(|b| &b.ports)
            .find(|p| p.name != name && p.tunnel.as_ref().is_some_and(same));
        match other {
            Some(p) => Err(err(
                code::ALREADY_EXISTS,
                format!(
                    "interface {name}: port {} has the same remote_ip, key, dst_port and local_ip",
                    p.name
                ),
            )),
            None => Ok(()),
        }
    }

    /// Makes the veth pair, the vxlan device and the programs of tunnel port
    /// `name`; the pair's near end is then attached as any veth. Undone on
    /// failure.
    pub(super) async fn open_tunnel(
        &mut self,
        name: &str,
        config: &TunnelConfig,
    ) -> Result<(), AttachError> {
        let maps = match &self.tunnels.maps {
            Some(maps) => maps.clone(),
            None => {
                let maps = Tunnels::new().map_err(|e| {
                    AttachError::Tunnel(format!(
                        "this kernel cannot run the tunnel's BPF programs: {e}"
                    ))
                })?;
                self.tunnels.maps = Some(maps.clone());
                maps
            }
        };
        let device = self.open_device(&maps, config.dst_port).await?;
        let far = far_name(name);
        let result = match self.make_pair(name, &far).await {
            Ok(created) => {
                let result = self.finish_open(&maps, name, &far, device, config).await;
                if result.is_err() && created {
                    self.delete_link(name).await;
                }
                result
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // A vxlan device made for this port alone goes too.
            self.prune_devices().await;
        }
        result
    }

    async fn finish_open(
        &mut self,
        maps: &Arc<Tunnels>,
        name: &str,
        far: &str,
        device: u32,
        config: &TunnelConfig,
    ) -> Result<(), AttachError> {
        let index = |found: Option<u32>, what: &str| {
            found.ok_or_else(|| AttachError::Tunnel(format!("{what} vanished while being set up")))
        };
        let port_index = index(self.netlink.link_index(name).await?, name)?;
        let far_index = index(self.netlink.link_index(far).await?, far)?;
        disable_ipv6(name)?;
        disable_ipv6(far)?;
        self.netlink.set_up(far, far_index).await?;
        let key = TunnelKey {
            vni: config.key,
            remote: config.remote_ip,
            local: config.local_ip,
            dst_port: config.dst_port,
            ttl: config.ttl,
            tos: config.tos.unwrap_or(0),
        };
        let end = maps
            .attach_end(port_index, far_index, device, &key)
            .map_err(|e| AttachError::Tunnel(format!("cannot set up the tunnel: {e}")))?;
        let mut port = TunnelPort {
            end,
            config: config.clone(),
            name: name.to_string(),
            far: far.to_string(),
            far_index,
            port_index,
            down: None,
            mtu: 0,
            receive: None,
        };
        self.follow_underlay(&mut port).await?;
        self.tunnels.ports.insert(name.to_string(), port);
        self.sync_underlays();
        Ok(())
    }

    /// The vxlan device for `dst_port`, made (or, after a restart, found) and
    /// given the decapsulating program.
    async fn open_device(&mut self, maps: &Tunnels, dst_port: u16) -> Result<u32, AttachError> {
        if let Some(d) = self.tunnels.devices.get(&dst_port) {
            return Ok(d.ifindex);
        }
        let name = device_name(dst_port);
        let (ifindex, created) = match self.netlink.link_index(&name).await? {
            Some(index) => {
                let state = self.netlink.link_state(index).await?;
                if state.as_ref().and_then(|s| s.kind.as_deref()) != Some("vxlan") {
                    return Err(AttachError::Tunnel(format!(
                        "{name} exists and is not a vxlan device"
                    )));
                }
                (index, false)
            }
            None => {
                self.netlink.create_vxlan(&name, dst_port).await?;
                let index = self.netlink.link_index(&name).await?.ok_or_else(|| {
                    AttachError::Tunnel(format!("{name} vanished while being set up"))
                })?;
                (index, true)
            }
        };
        let link = match self.start_device(maps, &name, ifindex, dst_port).await {
            Ok(link) => link,
            Err(e) => {
                if created {
                    self.delete_link(&name).await;
                }
                return Err(e);
            }
        };
        self.tunnels.devices.insert(
            dst_port,
            Device {
                name,
                ifindex,
                _link: link,
            },
        );
        Ok(ifindex)
    }

    async fn start_device(
        &self,
        maps: &Tunnels,
        name: &str,
        ifindex: u32,
        dst_port: u16,
    ) -> Result<OwnedFd, AttachError> {
        disable_ipv6(name)?;
        self.netlink.set_up(name, ifindex).await?;
        maps.attach_device(ifindex, dst_port).map_err(|e| {
            AttachError::Tunnel(format!("cannot attach the tunnel program to {name}: {e}"))
        })
    }

    /// The veth pair `name`/`far`: true if made now, false if it was there
    /// (switchd made it before a restart). An interface of that name that is
    /// not such a pair is someone else's, and refused.
    async fn make_pair(&mut self, name: &str, far: &str) -> Result<bool, AttachError> {
        // Names are hashed into 15 bytes: two ports can meet on one.
        let running = self.tunnels.ports.values().map(|p| p.name.as_str());
        let configured = self.db.bridges.values().flat_map(|b| {
            b.ports
                .iter()
                .filter(|p| p.tunnel.is_some())
                .map(|p| p.name.as_str())
        });
        if let Some(other) = running
            .chain(configured)
            .find(|&other| other != name && far_name(other) == far)
        {
            return Err(AttachError::Tunnel(format!(
                "port {other}'s tunnel end is named {far} too; give this port another name"
            )));
        }
        let near = self.netlink.link_index(name).await?;
        let peer = self.netlink.link_index(far).await?;
        if let Some(index) = near {
            let state = self.netlink.link_state(index).await?;
            if peer.is_some() && state.is_some_and(|s| s.kind.as_deref() == Some("veth")) {
                return Ok(false);
            }
            return Err(AttachError::Tunnel(format!(
                "an interface named {name} exists already; a vxlan port makes its own"
            )));
        }
        if peer.is_some() {
            // No port's: its pair's other end was renamed or moved away.
            self.delete_link(far).await;
        }
        let here = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| {
            AttachError::Tunnel(format!("cannot open switchd's own network namespace: {e}"))
        })?;
        self.netlink
            .create_veth(&VethSpec {
                host: name,
                peer: far,
                peer_netns: &here,
                peer_mac: None,
                mtu: Some(DEFAULT_TUNNEL_MTU),
            })
            .await?;
        self.created_link(name);
        Ok(true)
    }

    /// Gives tunnel port `name` (attached as `port`) the kernel fast path for
    /// what its remote sends, as the port's fast path is now (after an attach
    /// or a VLAN change); without one, frames from the remote go through the
    /// port as any frame does.
    pub(super) fn refresh_tunnel_fast_path(&self, bridge: &str, name: &str, port: PortId) {
        let Some(tunnel) = self.tunnels.ports.get(name) else {
            return;
        };
        let program = self.datapath.tunnel_program(bridge, port, tunnel.far_index);
        if let Err(e) = tunnel.end.set_fast_path(program.as_ref()) {
            tracing::warn!(
                bridge,
                port = name,
                "tunnel: cannot set the fast path from the remote: {e}"
            );
        }
    }

    /// Takes the fast path from tunnel port `name`'s remote away, before its
    /// settings change.
    pub(super) fn drop_tunnel_fast_path(&self, name: &str) {
        if let Some(tunnel) = self.tunnels.ports.get(name) {
            if let Err(e) = tunnel.end.set_fast_path(None) {
                tracing::warn!(
                    port = name,
                    "tunnel: cannot remove the fast path from the remote: {e}"
                );
            }
        }
    }

    /// Takes tunnel port `name`'s programs away and deletes its veth pair (at
    /// the end of a batch, if in one), and the vxlan device no port uses any more.
    pub(super) async fn close_tunnel(&mut self, name: &str) {
        if self.tunnels.ports.remove(name).is_some() {
            self.doom_link(name.to_string()).await;
        }
        self.tidy_tunnels().await;
    }

    /// The tunnel ports sending through vxlan device `ifindex`, if that is one
    /// of switchd's, which is forgotten: it is gone (deleted from outside).
    pub(super) fn forget_device(&mut self, ifindex: u32) -> Vec<String> {
        let Some((&dst_port, _)) = self
            .tunnels
            .devices
            .iter()
            .find(|(_, d)| d.ifindex == ifindex)
        else {
            return Vec::new();
        };
        self.tunnels.devices.remove(&dst_port);
        self.tunnels
            .ports
            .values()
            .filter(|p| p.config.dst_port == dst_port)
            .map(|p| p.name.clone())
            .collect()
    }

    /// After tunnel ports went or changed: the receiving programs only where
    /// a remote is reached, and no vxlan device that no port uses.
    pub(super) async fn tidy_tunnels(&mut self) {
        self.sync_underlays();
        self.prune_devices().await;
    }

    /// Keeps the receiving program on exactly the underlay interfaces the
    /// tunnels' remotes are reached by.
    fn sync_underlays(&mut self) {
        let wanted: BTreeMap<u32, &str> = self
            .tunnels
            .ports
            .values()
            .filter_map(|p| p.receive.as_ref())
            .map(|r| (r.ifindex, r.name.as_str()))
            .collect();
        let underlays = &mut self.tunnels.underlays;
        underlays.retain(|oif, u| {
            let keep = wanted.contains_key(oif)
                && u.link
                    .as_ref()
                    .map_or_else(|at| at.elapsed() < ATTACH_RETRY, |_| true);
            if !keep && u.link.is_ok() {
                tracing::info!(underlay = %u.name, "tunnel: no longer receiving on this underlay");
            }
            keep
        });
        let Some(maps) = &self.tunnels.maps else {
            return;
        };
        for (oif, name) in wanted {
            underlays.entry(oif).or_insert_with(|| {
                let link = maps.attach_underlay(oif);
                match &link {
                    Ok(_) => tracing::info!(underlay = %name, "tunnel: receiving on this underlay"),
                    Err(e) => tracing::warn!(
                        underlay = %name,
                        "tunnel: cannot attach to this underlay interface, the vxlan device receives there: {e}"
                    ),
                }
                UnderlayLink {
                    name: name.to_string(),
                    link: link.map_err(|_| Instant::now()),
                }
            });
        }
    }

    async fn prune_devices(&mut self) {
        let used: Vec<u16> = self
            .tunnels
            .ports
            .values()
            .map(|p| p.config.dst_port)
            .collect();
        let unused: Vec<u16> = self
            .tunnels
            .devices
            .keys()
            .filter(|p| !used.contains(p))
            .copied()
            .collect();
        for dst_port in unused {
            let device = self.tunnels.devices.remove(&dst_port).expect("listed");
            self.delete_link(&device.name).await;
        }
    }

    /// Looks the route to every tunnel's remote up again: a tunnel comes up
    /// when its remote becomes reachable, goes down (dropping and counting
    /// what it is sent) when it is not, and takes the underlay's MTU less 50.
    pub async fn check_tunnels(&mut self) {
        let names: Vec<String> = self.tunnels.ports.keys().cloned().collect();
        for name in names {
            let Some(mut port) = self.tunnels.ports.remove(&name) else {
                continue;
            };
            if let Err(e) = self.follow_underlay(&mut port).await {
                tracing::warn!(port = %name, "tunnel: {e}");
            }
            self.tunnels.ports.insert(name, port);
        }
        self.sync_underlays();
    }

    async fn follow_underlay(&self, port: &mut TunnelPort) -> Result<(), AttachError> {
        let underlay = self.underlay(&port.config).await?;
        let mtu = underlay.mtu.map_or(DEFAULT_TUNNEL_MTU, |m| {
            m.saturating_sub(VXLAN_OVERHEAD).max(68)
        });
        if mtu != port.mtu {
            // The far end first: the near end's MTU is what the datapath reads.
            self.netlink.set_mtu(&port.far, port.far_index, mtu).await?;
            self.netlink
                .set_mtu("tunnel port", port.port_index, mtu)
                .await?;
            port.mtu = mtu;
        }
        if underlay.down != port.down {
            match &underlay.down {
                Some(why) => {
                    tracing::warn!(port = %port.name, remote = %port.config.remote_ip, "tunnel down: {why}")
                }
                None => {
                    tracing::info!(port = %port.name, remote = %port.config.remote_ip, "tunnel up")
                }
            }
        }
        port.end
            .set_state(underlay.down.is_none(), mtu)
            .map_err(|e| AttachError::Tunnel(format!("cannot set the tunnel's state: {e}")))?;
        port.down = underlay.down;
        let receive = underlay.receive.as_ref().map(|r| (r.ifindex, r.local));
        port.end.set_receive(receive).map_err(|e| {
            AttachError::Tunnel(format!("cannot set where the tunnel receives: {e}"))
        })?;
        port.receive = underlay.receive;
        Ok(())
    }

    async fn underlay(&self, config: &TunnelConfig) -> Result<Underlay, NetlinkError> {
        let remote = config.remote_ip;
        let route = match self.netlink.route_to(remote, config.local_ip).await? {
            Ok(route) => route,
            Err(e) => {
                let why = match (e.raw_os_error(), config.local_ip) {
                    (Some(libc::EINVAL), Some(local)) => {
                        format!("local_ip {local} is not an address of this host")
                    }
                    _ => format!("no route to {remote}"),
                };
                return Ok(Underlay {
                    down: Some(why),
                    mtu: None,
                    receive: None,
                });
            }
        };
        let link: Option<LinkState> = self.netlink.link_state(route.oif).await?;
        let Some(link) = link else {
            return Ok(Underlay {
                down: Some(format!("no route to {remote}")),
                mtu: None,
                receive: None,
            });
        };
        if route.oif == 1 || link.kind.as_deref() == Some("vxlan") {
            return Ok(Underlay {
                down: Some(format!(
                    "the route to {remote} leaves by {}, not an underlay",
                    link.name
                )),
                mtu: None,
                receive: None,
            });
        }
        let mtu = Some(route.mtu.unwrap_or(link.mtu).min(link.mtu));
        let down = (!link.running).then(|| format!("underlay interface {} is down", link.name));
        // A route looked up from a given source names none. The underlay's
        // program reads Ethernet frames: elsewhere the device receives.
        let receive = config
            .local_ip
            .or(route.src)
            .filter(|_| link.ethernet)
            .map(|local| Receive {
                ifindex: route.oif,
                name: link.name.clone(),
                local,
            });
        Ok(Underlay { down, mtu, receive })
    }
}
