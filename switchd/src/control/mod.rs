//! The control plane: a tokio runtime serving JSON-RPC on a Unix socket, owning the
//! configuration and the rtnetlink connection. It never touches a packet; it
//! changes what the datapath threads do through [`crate::datapath::Datapath`].

mod bridges;
mod capture;
mod links;
mod metrics;
mod mirrors;
mod monitor;
mod netlink;
mod netns;
mod ns_ports;
mod ports;
mod reports;
mod server;
mod statics;
mod stream;
mod switch;
mod trace;
mod tunnels;
mod txn;

use crate::config::{Config, Db, Store};
use crate::datapath::Datapath;
use anyhow::Context;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{Mutex, Notify};

pub use switch::Switch;

/// How often the MAC tables are swept for aged-out entries. Lookups ignore stale
/// entries on their own, so this bounds memory, not correctness.
const AGING_SWEEP: Duration = Duration::from_secs(1);

/// Runs switchd until `shutdown` resolves, then closes the socket and removes its file.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _lock = lock_db(&config.db)?;
    let (store, db) = Store::open(&config.db)?;
    let group = match &config.socket_group {
        Some(name) => Some(
            crate::sys::group_id(name)
                .with_context(|| format!("cannot look up group {name}"))?
                .with_context(|| format!("no group named {name}"))?,
        ),
        None => None,
    };
    // Bound before anything runs, so a taken address is an error at start.
    let metrics = match config.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    let listener = bind(&config.socket, group)?;
    let socket = config.socket.clone();
    let result = serve(config, (store, db), &listener, metrics, shutdown).await;
    let _ = std::fs::remove_file(&socket);
    result
}

async fn serve(
    config: Config,
    (store, db): (Store, Db),
    listener: &UnixListener,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let applied = Arc::new(Notify::new());
    let signal = applied.clone();
    let datapath = Datapath::start(&config.datapath, Arc::new(move || signal.notify_waiters()))
        .context("cannot start the datapath")?;
    let netlink = netlink::Netlink::connect()?;
    // Subscribe before restoring, so an interface that appears meanwhile is not missed.
    let links = netlink::watch_links()?;
    let switch = Arc::new(Mutex::new(
        Switch::restore(db, store, (datapath, applied), netlink).await,
    ));
    tracing::info!(socket = %config.socket.display(), db = %config.db.display(), "switchd ready");
    let aging = tokio::spawn(age_out(switch.clone()));
    let follow = tokio::spawn(follow_links(switch.clone(), links));
    let underlay = tokio::spawn(follow_underlay(switch.clone()));
    let metrics = metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics");
        }
        tokio::spawn(metrics::serve(listener, switch.clone()))
    });
    let access = server::Access {
        group: match &config.socket_group {
            Some(name) => crate::sys::group_id(name)?,
            None => None,
        },
    };
    server::serve(listener, access, switch.clone(), shutdown).await;
    aging.abort();
    follow.abort();
    underlay.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
        let _ = metrics.await;
    }
    // Dropping the last handle stops and joins the datapath threads.
    let _ = aging.await;
    let _ = follow.await;
    let _ = underlay.await;
    drop(switch);
    Ok(())
}

/// Holds `DB.lock` for the daemon's life, as ovsdb-server locks its database: two
/// switchds on one database would each save their own view over the other's
/// (one's `add-br` erased the bridge the other had acknowledged) and both attach
/// the same interfaces.
fn lock_db(db: &Path) -> anyhow::Result<crate::sys::LockFile> {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    let path = db.with_file_name(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create database directory {}", dir.display()))?;
    }
    crate::sys::LockFile::try_lock(&path).map_err(|e| match e {
        crate::sys::LockError::Held(pid) => anyhow::anyhow!(
            "database {} is in use by another switchd{} (lock {})",
            db.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            path.display()
        ),
        crate::sys::LockError::Io(e) => {
            anyhow::anyhow!(
                "cannot lock database {}: {}: {e}",
                db.display(),
                path.display()
            )
        }
    })
}

/// Binds the control socket, replacing a stale file but never a live daemon's
/// socket. Mode 0660, group `group` if given.
fn bind(path: &Path, group: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another switchd is already listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions on {}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
    }
    Ok(listener)
}

async fn follow_links(
    switch: Arc<Mutex<Switch>>,
    mut links: tokio::sync::mpsc::UnboundedReceiver<netlink::LinkEvent>,
) {
    while let Some(event) = links.recv().await {
        let mut guard = switch.lock().await;
        guard.process_link_event(event).await;
        guard.publish_changes();
    }
    tracing::error!("link notifications stopped; ports will not follow interface changes");
}

/// How often tunnel ports look the route to their remote up again: an underlay
/// route, address or interface that comes or goes takes up to this long to show.
const UNDERLAY_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

async fn follow_underlay(switch: Arc<Mutex<Switch>>) {
    let mut tick = tokio::time::interval(UNDERLAY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        switch.lock().await.check_tunnels().await;
    }
}

async fn age_out(switch: Arc<Mutex<Switch>>) {
    let mut tick = tokio::time::interval(AGING_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        switch.lock().await.expire_fdbs();
    }
}
