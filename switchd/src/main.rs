use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use switchd_proto::{DEFAULT_DB, DEFAULT_SOCKET, SOCKET_ENV};

/// Userspace Ethernet switch daemon. Runs in the foreground; control it with switchctl.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Control socket path.
    #[arg(long, env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Group (name or id) that may use the control socket besides root; the
    /// socket gets this group and mode 0660.
    #[arg(long)]
    socket_group: Option<String>,
    /// Configuration database path.
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
    /// Datapath threads; each port's receive side belongs to one of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    datapath_threads: u16,
    /// The longest a datapath thread keeps polling after forwarding before it
    /// blocks, in microseconds. The window adapts between 50 µs and this to the
    /// gaps between frames; 0 always blocks.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    spin_us: u64,
    /// Polling that finds nothing may cost at most this percentage of the CPU time
    /// spent forwarding; past it a thread polls only 50 µs. Raise it (e.g. 1000000)
    /// to poll through every gap up to --spin-us, for the lowest latency.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    spin_budget: u32,
    /// Receive ring slots (2 KiB each) given to a port once it gets busy; 0 always
    /// receives with recvmmsg.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=65536))]
    rx_ring_frames: u32,
    /// Who forwards known unicast between ports once both addresses are learned:
    /// `tc`, a BPF program on each port's ingress (kernel 6.6 or later; falls back
    /// to `none` with a warning where it cannot load), or `none`, the userspace
    /// datapath for every frame.
    #[arg(long, value_enum, default_value = "tc")]
    offload: Offload,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477);
    /// off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Offload {
    Tc,
    None,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        // Which datapath thread (datapath-N) or the control plane (main) said it.
        .with_thread_names(true)
        // Colour codes only for a person watching, not in a log file or journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = switchd::sys::raise_fd_limit() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    let config = switchd::Config {
        socket: args.socket,
        socket_group: args.socket_group,
        db: args.db,
        datapath: switchd::datapath::DatapathConfig {
            threads: args.datapath_threads.into(),
            spin: std::time::Duration::from_micros(args.spin_us),
            spin_budget_pct: args.spin_budget,
            ring_frames: args.rx_ring_frames as usize,
            offload: matches!(args.offload, Offload::Tc),
        },
        metrics: args.metrics,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchd: cannot start the control plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(switchd::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop switchd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
