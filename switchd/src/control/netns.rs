//! `add-ns-port`: a veth pair with one end in a network namespace, configured there.
//!
//! Addresses and routes can only be set through a netlink socket that lives in the
//! namespace, and a socket belongs to the namespace its thread was in when it was
//! opened. So the in-namespace steps run on a short-lived thread of their own that
//! enters the namespace; the daemon's own threads never change namespace.

use super::netlink::{to_io, NETLINK_TIMEOUT};
use futures::TryStreamExt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where `ip netns add NAME` puts its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A namespace as the user named it: an `ip netns` name or a path.
pub fn resolve(netns: &str) -> Result<PathBuf, String> {
    if netns.starts_with('/') {
        return Ok(PathBuf::from(netns));
    }
    if netns.is_empty() || netns == "." || netns == ".." || netns.contains(['/', '\0']) {
        return Err(format!("invalid network namespace name {netns:?}"));
    }
    Ok(PathBuf::from(NETNS_DIR).join(netns))
}

/// Opens a namespace for `setns`. Runs off the control plane's thread and within
/// NETLINK_TIMEOUT: the path is the user's, and a FIFO there (open blocks until a
/// writer comes) or a hung filesystem must not stall every other client.
pub async fn open(netns: &str) -> Result<File, String> {
    let path = resolve(netns)?;
    let name = netns.to_string();
    let opening = tokio::task::spawn_blocking(move || open_blocking(&name, &path));
    match tokio::time::timeout(NETLINK_TIMEOUT, opening).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("cannot open network namespace {netns}: {e}")),
        Err(_) => Err(format!(
            "cannot open network namespace {netns}: no answer within {} s",
            NETLINK_TIMEOUT.as_secs()
        )),
    }
}

fn open_blocking(netns: &str, path: &std::path::Path) -> Result<File, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let not_ns = |what: &str| {
        format!(
            "{} is not a network namespace (it is {what})",
            path.display()
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "no network namespace {netns} ({} does not exist)",
            path.display()
        ),
        _ => format!("cannot open network namespace {}: {e}", path.display()),
    })?;
    // A namespace file (nsfs, also behind /run/netns bind mounts) is a regular file.
    let kind = meta.file_type();
    if kind.is_fifo() {
        return Err(not_ns("a FIFO"));
    }
    if kind.is_dir() {
        return Err(not_ns("a directory"));
    }
    if kind.is_socket() || kind.is_char_device() || kind.is_block_device() {
        return Err(not_ns("a device or socket"));
    }
    // O_NONBLOCK: should it have become a FIFO since, the open still returns.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
    match crate::sys::is_netns(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(not_ns("another kind of namespace or file")),
        Err(e) => Err(format!(
            "cannot open network namespace {}: {e}",
            path.display()
        )),
    }
}

/// `ADDR/LEN`, IPv4 or IPv6.
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let bad = |why: &str| format!("invalid address {cidr:?}: {why} (expected ADDRESS/PREFIX)");
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| bad("no prefix length"))?;
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|&l| l <= max)
        .ok_or_else(|| bad("bad prefix length"))?;
    Ok((addr, len))
}

/// What to set up on the namespace's end once it is there.
#[derive(Debug, Clone)]
pub struct InsideConfig {
    pub ifname: String,
    pub ip: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
}

/// Brings `ifname` up inside `ns` and gives it its address and default route;
/// returns its MAC address.
pub async fn configure_inside(ns: File, config: InsideConfig) -> Result<[u8; 6], String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("netns-config".into())
        .spawn(move || {
            let result = crate::sys::enter_netns(&ns)
                .map_err(|e| format!("cannot enter the namespace: {e}"))
                .and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(|e| e.to_string())
                })
                .and_then(|rt| rt.block_on(configure(&config)));
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    // Three round trips at most (link up, address, route).
    let result = match tokio::time::timeout(3 * NETLINK_TIMEOUT, rx).await {
        Ok(result) => result.unwrap_or_else(|_| Err("namespace setup thread failed".into())),
        // The thread is left to finish on its own; it holds nothing of ours.
        Err(_) => {
            return Err(format!(
                "no answer from the kernel within {} s",
                3 * NETLINK_TIMEOUT.as_secs()
            ))
        }
    };
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result
}

/// Runs inside the namespace.
async fn configure(config: &InsideConfig) -> Result<[u8; 6], String> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("cannot open netlink: {e}"))?;
    tokio::spawn(conn);
    let name = &config.ifname;
    let link = handle
        .link()
        .get()
        .match_name(name.clone())
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("cannot find {name} in the namespace: {}", to_io(e)))?
        .ok_or_else(|| format!("{name} is not in the namespace"))?;
    let index = link.header.index;
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            rtnetlink::packet_route::link::LinkAttribute::Address(mac) => {
                <[u8; 6]>::try_from(mac.as_slice()).ok()
            }
            _ => None,
        })
        .ok_or_else(|| format!("{name} has no MAC address"))?;
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| format!("cannot bring {name} up: {}", to_io(e)))?;
    if let Some((addr, len)) = config.ip {
        handle
            .address()
            .add(index, addr, len)
            .execute()
            .await
            .map_err(|e| format!("cannot add address {addr}/{len} to {name}: {}", to_io(e)))?;
    }
    if let Some(gateway) = config.gateway {
        use rtnetlink::RouteMessageBuilder;
        // Out of this interface: an IPv6 router's usual link-local address
        // names none without it, and an IPv4 gateway could be found on another.
        let route = match gateway {
            IpAddr::V4(g) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
            IpAddr::V6(g) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
        };
        handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| format!("cannot add default route via {gateway}: {}", to_io(e)))?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap(),
            ("10.0.0.1".parse().unwrap(), 24)
        );
        assert_eq!(parse_cidr("fd00::1/64").unwrap().1, 64);
        for bad in [
            "10.0.0.1",
            "10.0.0.300/24",
            "10.0.0.1/33",
            "fd00::1/129",
            "x/1",
            "1.2.3.4/",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_names() {
        assert_eq!(resolve("ns1").unwrap(), PathBuf::from("/run/netns/ns1"));
        assert_eq!(
            resolve("/proc/1/ns/net").unwrap(),
            PathBuf::from("/proc/1/ns/net")
        );
        for bad in ["", ".", "..", "a/b"] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
    }
}
