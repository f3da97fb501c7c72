//! Link lookups and settings over rtnetlink.

use futures::TryStreamExt;
use std::future::Future;
use std::io;
use std::time::Duration;

/// The longest one netlink round trip may take. The control plane waits for it
/// with the switch locked, so a kernel that never answers must not hang every
/// client.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(io::Error),
    #[error("cannot look up interface {name}: {source}")]
    Lookup { name: String, source: io::Error },
    #[error("cannot bring interface {name} up: {source}")]
    SetUp { name: String, source: io::Error },
    #[error("cannot create veth pair {host}/{peer}: {source}")]
    CreateVeth {
        host: String,
        peer: String,
        source: io::Error,
    },
    #[error("cannot delete interface {name}: {source}")]
    Delete { name: String, source: io::Error },
    #[error("cannot create vxlan device {name}: {source}")]
    CreateVxlan { name: String, source: io::Error },
    #[error("cannot set the MTU of {name}: {source}")]
    SetMtu { name: String, source: io::Error },
    #[error("cannot look up the route to {name}: {source}")]
    Route { name: String, source: io::Error },
    #[error("no answer from the kernel within {} s to {what} {name}", NETLINK_TIMEOUT.as_secs())]
    Timeout { what: &'static str, name: String },
}

/// Sends one rtnetlink request about interface `name` and waits, within
/// NETLINK_TIMEOUT, for the kernel's answer; `error` says what failed.
async fn request(
    what: &'static str,
    name: &str,
    request: impl Future<Output = Result<(), rtnetlink::Error>>,
    error: impl FnOnce(io::Error) -> NetlinkError,
) -> Result<(), NetlinkError> {
    bounded(what, name, async {
        request.await.map_err(|e| error(to_io(e)))
    })
    .await
}

/// Runs one netlink round trip for `what` on interface `name`, within NETLINK_TIMEOUT.
async fn bounded<T>(
    what: &'static str,
    name: &str,
    call: impl Future<Output = Result<T, NetlinkError>>,
) -> Result<T, NetlinkError> {
    tokio::time::timeout(NETLINK_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(NetlinkError::Timeout {
                what,
                name: name.to_string(),
            })
        })
}

/// A veth pair with one end in another namespace.
pub struct VethSpec<'a> {
    pub host: &'a str,
    pub peer: &'a str,
    /// The namespace the peer is created in.
    pub peer_netns: &'a std::fs::File,
    pub peer_mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

pub(super) fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens the socket and spawns its connection task on the current runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The interface's index in switchd's namespace, `None` if there is none of that name.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        bounded("look up", name, self.link_index_unbounded(name)).await
    }

    async fn link_index_unbounded(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = to_io(e);
                if e.raw_os_error() == Some(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(NetlinkError::Lookup {
                        name: name.to_string(),
                        source: e,
                    })
                }
            }
        }
    }

    /// Sets IFF_UP on the interface; a port that is down neither sends nor receives.
    pub async fn set_up(&self, name: &str, index: u32) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        let set = self.handle.link().set(msg).execute();
        request("bring up", name, set, |source| NetlinkError::SetUp {
            name: name.to_string(),
            source,
        })
        .await
    }
}

impl Netlink {
    /// Creates a veth pair in one request, the peer end directly in its namespace
    /// (so it never appears in ours). Both ends start down.
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
        use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
        use std::os::fd::AsRawFd;
        let mut peer = rtnetlink::LinkUnspec::new_with_name(spec.peer)
            .setns_by_fd(spec.peer_netns.as_raw_fd());
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        let mut host = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkVeth>::new_with_info_kind(
            InfoKind::Veth,
        )
        .name(spec.host.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = spec.mtu {
            host = host.mtu(mtu);
        }
        let add = self.handle.link().add(host.build()).execute();
        request("create veth pair", spec.host, add, |source| {
            NetlinkError::CreateVeth {
                host: spec.host.to_string(),
                peer: spec.peer.to_string(),
                source,
            }
        })
        .await
    }

    /// Deletes an interface (for a veth, both ends).
    pub async fn delete_link(&self, name: &str, index: u32) -> Result<(), NetlinkError> {
        let del = self.handle.link().del(index).execute();
        request("delete", name, del, |source| NetlinkError::Delete {
            name: name.to_string(),
            source,
        })
        .await
    }
}

/// What a route lookup found: the interface frames leave by, and the route's
/// own MTU if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTo {
    pub oif: u32,
    pub mtu: Option<u32>,
    /// The source address frames on it leave with.
    pub src: Option<std::net::Ipv4Addr>,
}

/// An interface's kind, MTU and whether it can pass frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub name: String,
    /// `veth`, `vxlan`, ...; `None` for a plain device.
    pub kind: Option<String>,
    /// Its frames start with an Ethernet header (not a tun, WireGuard or IP
    /// tunnel device, whose packets start at the IP header).
    pub ethernet: bool,
    /// The kind of its root queueing discipline (`noqueue`, `htb`, `netem`...).
    pub qdisc: Option<String>,
    pub mtu: u32,
    /// Up, with carrier (operstate up or unknown).
    pub running: bool,
}

impl Netlink {
    /// An external (collect_metadata) vxlan device listening on `dst_port`,
    /// learning off: the remote of each frame comes from the TC program that
    /// sends it. Created down.
    pub async fn create_vxlan(&self, name: &str, dst_port: u16) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkMessageBuilder::<rtnetlink::LinkVxlan>::new(name)
            .port(dst_port)
            .collect_metadata(true)
            .learning(false)
            // As large as vxlan allows: the tunnel ports' veths carry the MTU.
            .mtu(65_000)
            .build();
        let add = self.handle.link().add(msg).execute();
        request("create vxlan device", name, add, |source| {
            NetlinkError::CreateVxlan {
                name: name.to_string(),
                source,
            }
        })
        .await
    }

    pub async fn set_mtu(&self, name: &str, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkUnspec::new_with_index(index)
            .mtu(mtu)
            .build();
        let set = self.handle.link().set(msg).execute();
        request("set the MTU of", name, set, |source| NetlinkError::SetMtu {
            name: name.to_string(),
            source,
        })
        .await
    }

    /// Interface `index`'s state, `None` if there is no such interface.
    pub async fn link_state(&self, index: u32) -> Result<Option<LinkState>, NetlinkError> {
        use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, State};
        let what = index.to_string();
        bounded("look up", &what, async {
            let mut links = self.handle.link().get().match_index(index).execute();
            let link = match links.try_next().await {
                Ok(Some(link)) => link,
                Ok(None) => return Ok(None),
                Err(e) => {
                    let e = to_io(e);
                    if e.raw_os_error() == Some(libc::ENODEV) {
                        return Ok(None);
                    }
                    return Err(NetlinkError::Lookup {
                        name: format!("#{index}"),
                        source: e,
                    });
                }
            };
            let mut state = LinkState {
                name: String::new(),
                kind: None,
                ethernet: link.header.link_layer_type
                    == rtnetlink::packet_route::link::LinkLayerType::Ether,
                qdisc: None,
                mtu: 0,
                running: false,
            };
            for attr in link.attributes {
                match attr {
                    LinkAttribute::IfName(name) => state.name = name,
                    LinkAttribute::Mtu(mtu) => state.mtu = mtu,
                    LinkAttribute::Qdisc(kind) => state.qdisc = Some(kind),
                    LinkAttribute::OperState(s) => {
                        state.running = matches!(s, State::Up | State::Unknown)
                    }
                    LinkAttribute::LinkInfo(infos) => {
                        for info in infos {
                            if let LinkInfo::Kind(kind) = info {
                                state.kind = Some(kind.to_string());
                            }
                        }
                    }
                    _ => {}
                }
            }
            let up = link
                .header
                .flags
                .contains(rtnetlink::packet_route::link::LinkFlags::Up);
            state.running &= up;
            Ok(Some(state))
        })
        .await
    }

    /// The route frames to `dst` (from `src`, if given) would take: `Ok(Err)`
    /// with the kernel's reason when there is none (no route, `src` not an
    /// address of this host).
    pub async fn route_to(
        &self,
        dst: std::net::Ipv4Addr,
        src: Option<std::net::Ipv4Addr>,
    ) -> Result<Result<RouteTo, io::Error>, NetlinkError> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMetric};
        let what = dst.to_string();
        bounded("look up the route to", &what, async {
            let mut msg = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(dst, 32);
            if let Some(src) = src {
                msg = msg.source_prefix(src, 32);
            }
            let mut routes = self.handle.route().get(msg.build()).execute();
            match routes.try_next().await {
                Ok(Some(route)) => {
                    let mut found = RouteTo {
                        oif: 0,
                        mtu: None,
                        src: None,
                    };
                    for attr in route.attributes {
                        match attr {
                            RouteAttribute::Oif(oif) => found.oif = oif,
                            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => {
                                found.src = Some(a)
                            }
                            RouteAttribute::Metrics(metrics) => {
                                for m in metrics {
                                    if let RouteMetric::Mtu(mtu) = m {
                                        found.mtu = Some(mtu);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok(Ok(found))
                }
                Ok(None) => Ok(Err(io::Error::from_raw_os_error(libc::ENETUNREACH))),
                Err(rtnetlink::Error::NetlinkError(msg)) => Ok(Err(msg.to_io())),
                Err(e) => Err(NetlinkError::Route {
                    name: what.clone(),
                    source: to_io(e),
                }),
            }
        })
        .await
    }
}

/// An interface appeared, changed (same index) or was renamed, or went away,
/// or its root queueing discipline changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Present { name: String, index: u32 },
    Gone { name: String, index: u32 },
    Qdisc { index: u32 },
}

/// Subscribes to link and root qdisc notifications (the `ip monitor link` and
/// `tc monitor` feeds). Events that happen after this returns are delivered in
/// order on the receiver.
pub fn watch_links() -> Result<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>, NetlinkError> {
    use futures::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
    use rtnetlink::packet_route::tc::{TcHandle, TcMessage};
    use rtnetlink::packet_route::RouteNetlinkMessage;

    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        rtnetlink::MulticastGroup::Link,
        rtnetlink::MulticastGroup::Tc,
    ])
    .map_err(NetlinkError::Connect)?;
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let describe = |link: &LinkMessage| {
        let name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })?;
        Some((name, link.header.index))
    };
    let root = |tc: &TcMessage| {
        (tc.header.parent == TcHandle::ROOT).then_some(LinkEvent::Qdisc {
            index: tc.header.index as u32,
        })
    };
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let event = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    describe(&link).map(|(name, index)| LinkEvent::Present { name, index })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    describe(&link).map(|(name, index)| LinkEvent::Gone { name, index })
                }
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewQueueDiscipline(tc)
                    | RouteNetlinkMessage::DelQueueDiscipline(tc),
                ) => root(&tc),
                // The socket buffer overflowed: events were lost. Nothing to replay
                // them from, so say so; `show` still checks each port's interface.
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!(
                        "link notifications overran; some interface changes were missed"
                    );
                    None
                }
                _ => None,
            };
            if let Some(event) = event {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
