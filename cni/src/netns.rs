//! Addresses and routes inside the container's network namespace.
//!
//! rtnetlink in this process, not `nsenter --net=PATH ip ...`: a thread of our
//! own enters the namespace (nix's `setns`, no unsafe code here) and talks
//! netlink there, so ADD needs neither iproute2 nor util-linux on the host
//! (runtimes run plugins on minimal hosts), starts no process per address or
//! route, and gets the kernel's errno back instead of `ip`'s text. The crate is
//! the one switchd already uses. The veth itself is made by switchd, which
//! brings both ends up and sets the MAC and MTU.

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, RouteMessageBuilder};
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

/// A request the kernel does not answer within this is reported, not waited on.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(10);

/// What IPAM allocated, ready to apply to `ifname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ifname: String,
    pub addresses: Vec<(IpAddr, u8)>,
    pub routes: Vec<RoutePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    pub dst: (IpAddr, u8),
    /// None: a route straight out of the interface.
    pub gw: Option<IpAddr>,
}

/// An interface inside the namespace, as CHECK compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inside {
    pub mac: String,
    pub up: bool,
    pub addresses: Vec<(IpAddr, u8)>,
}

/// Adds the plan's addresses and then its routes (a route's gateway must be
/// reachable through an address first).
pub fn apply(netns: &Path, plan: Plan) -> Result<(), String> {
    in_netns(netns, move |handle| configure(handle, plan))
}

/// The interface `ifname` in `netns`, or None if there is no such interface.
pub fn inspect(netns: &Path, ifname: &str) -> Result<Option<Inside>, String> {
    let ifname = ifname.to_string();
    in_netns(netns, move |handle| read_link(handle, ifname))
}

/// Runs `job` with a netlink handle inside `netns`, on a thread that entered it
/// and ends with the job: a netlink socket belongs to the namespace its thread
/// was in when it was opened, and no other thread of ours changes namespace.
fn in_netns<T, F, Fut>(netns: &Path, job: F) -> Result<T, String>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
    T: Send + 'static,
{
    let file = File::open(netns)
        .map_err(|e| format!("cannot open network namespace {}: {e}", netns.display()))?;
    let shown = netns.display().to_string();
    let thread = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter network namespace {shown}: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| format!("cannot start an event loop: {e}"))?;
            rt.block_on(async {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|e| format!("cannot open netlink: {e}"))?;
                tokio::spawn(conn);
                tokio::time::timeout(NETLINK_TIMEOUT, job(handle))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer from the kernel within {} s",
                            NETLINK_TIMEOUT.as_secs()
                        ))
                    })
            })
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    thread
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
}

/// The kernel's errno, if that is what failed.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn describe(e: rtnetlink::Error) -> String {
    match errno(&e) {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    }
}

async fn link_index(handle: &Handle, ifname: &str) -> Result<Option<(u32, Vec<u8>, bool)>, String> {
    match handle
        .link()
        .get()
        .match_name(ifname.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(link)) => {
            let mac = link
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(mac) => Some(mac.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let up = link.header.flags.contains(LinkFlags::Up);
            Ok(Some((link.header.index, mac, up)))
        }
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(None),
        Err(e) => Err(format!("cannot look up {ifname}: {}", describe(e))),
    }
}

async fn configure(handle: Handle, plan: Plan) -> Result<(), String> {
    let ifname = &plan.ifname;
    let (index, _, _) = link_index(&handle, ifname)
        .await?
        .ok_or_else(|| format!("{ifname} is not in the namespace"))?;
    for &(addr, len) in &plan.addresses {
        let mut request = handle.address().add(index, addr, len);
        if addr.is_ipv6() {
            // No duplicate address detection: IPAM hands out each address
            // once, and until DAD ends (a second or more) the address is
            // tentative and cannot be a source, so the container would start
            // without IPv6.
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await.map_err(|e| {
            format!(
                "cannot add address {addr}/{len} to {ifname}: {}",
                describe(e)
            )
        })?;
    }
    for route in &plan.routes {
        let (dst, len) = route.dst;
        let shown = match route.gw {
            Some(gw) => format!("{dst}/{len} via {gw}"),
            None => format!("{dst}/{len} dev {ifname}"),
        };
        let message = match (dst, route.gw) {
            (IpAddr::V4(d), gw) => {
                let b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(d, len)
                    .output_interface(index);
                match gw {
                    Some(IpAddr::V4(g)) => b.gateway(g),
                    None => b.scope(RouteScope::Link),
                    Some(IpAddr::V6(_)) => return Err(format!("route {shown}: mixed families")),
                }
                .build()
            }
            (IpAddr::V6(d), gw) => {
                let b = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(d, len)
                    .output_interface(index);
                match gw {
                    Some(IpAddr::V6(g)) => b.gateway(g),
                    None => b,
                    Some(IpAddr::V4(_)) => return Err(format!("route {shown}: mixed families")),
                }
                .build()
            }
        };
        match handle.route().add(message).execute().await {
            Ok(()) => {}
            // A route to the interface's own subnet: the kernel made it with
            // the address.
            Err(e) if route.gw.is_none() && errno(&e) == Some(nix::libc::EEXIST) => {}
            Err(e) => return Err(format!("cannot add route {shown}: {}", describe(e))),
        }
    }
    Ok(())
}

async fn read_link(handle: Handle, ifname: String) -> Result<Option<Inside>, String> {
    let Some((index, mac, up)) = link_index(&handle, &ifname).await? else {
        return Ok(None);
    };
    let mut addresses = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(message) = stream
        .try_next()
        .await
        .map_err(|e| format!("cannot list the addresses of {ifname}: {}", describe(e)))?
    {
        // IPv4 has the interface's own address in Local (Address is the peer
        // of a point-to-point link); IPv6 only in Address.
        let local = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            addresses.push((ip, message.header.prefix_len));
        }
    }
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Some(Inside { mac, up, addresses }))
}
