//! Link lookups and settings over rtnetlink.

use futures::TryStreamExt;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(io::Error),
    #[error("cannot look up interface {name}: {source}")]
    Lookup { name: String, source: io::Error },
    #[error("cannot bring interface {name} up: {source}")]
    SetUp { name: String, source: io::Error },
}

fn to_io(e: rtnetlink::Error) -> io::Error {
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
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::SetUp {
                name: name.to_string(),
                source: to_io(e),
            })
    }
}

/// An interface appeared, changed (same index) or was renamed, or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Present { name: String, index: u32 },
    Gone { name: String, index: u32 },
}

/// Subscribes to link notifications (the `ip monitor link` feed). Events that
/// happen after this returns are delivered in order on the receiver.
pub fn watch_links() -> Result<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>, NetlinkError> {
    use futures::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
    use rtnetlink::packet_route::RouteNetlinkMessage;

    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
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
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let event = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    describe(&link).map(|(name, index)| LinkEvent::Present { name, index })
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    describe(&link).map(|(name, index)| LinkEvent::Gone { name, index })
                }
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
