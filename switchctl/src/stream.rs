//! What `capture` and `monitor` share: how Ctrl-C ends a stream.

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long switchd gets, after Ctrl-C, to send what it sends last (a
/// capture's statistics) and close.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// On SIGINT or SIGTERM, asks switchd to end the stream on `stream` (our
/// writing side shut down) and, if it has not within `STOP_GRACE`, stops
/// reading: either way the reader then sees the stream's end. The flag says
/// that a signal came.
pub fn end_on_signal(stream: &UnixStream) -> anyhow::Result<Arc<AtomicBool>> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot handle Ctrl-C")?;
    let stream = stream.try_clone()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            flag.store(true, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Write);
            std::thread::sleep(STOP_GRACE);
            let _ = stream.shutdown(Shutdown::Read);
        }
    });
    Ok(stopping)
}
