//! Requests that answer with a stream (`capture`, `monitor`): after the one-line
//! reply, the connection carries the stream's bytes until the source ends or the
//! client hangs up. The source runs outside the control lock; the connection only
//! copies its chunks, so a stream never holds up other requests.

use tokio::sync::mpsc;

/// Chunks a stream may have waiting for the client before its source drops (and
/// counts) what it would add; a slow reader costs memory only up to this.
pub(super) const STREAM_BACKLOG: usize = 64;

/// What a streaming request hands its connection after the reply.
pub(super) struct Stream {
    /// The bytes to write, in order; the stream ends when every sender is gone.
    pub(super) chunks: mpsc::Receiver<Vec<u8>>,
    /// Asks the source to finish (the client hung up or asked to stop): it may
    /// still send its closing chunks, then drops its sender.
    pub(super) stop: Box<dyn FnOnce() + Send>,
}
