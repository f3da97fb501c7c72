//! The JSON-RPC socket server (tokio-rs/mini-redis's listener shape).
//!
//! One request per line, each line at most `MAX_REQUEST_BYTES`. A bad request gets
//! a JSON-RPC error and the connection stays usable; an oversized one is skipped up
//! to its newline without being buffered, and answered with an error. Requests run one
//! at a time against the switch, so configuration changes never interleave.

use super::stream::Stream;
use super::Switch;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchd_proto::{code, decode_request, Rejected, RpcError, MAX_REQUEST_BYTES};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Streams (captures, monitors) open at once. A stream gives its connection's
/// place back, so that open streams never keep requests out.
const MAX_STREAMS: usize = 64;
/// A client that sends nothing for this long, or takes this long to read a
/// reply, is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Who may use the socket: root, switchd's own user, and members of `group`.
/// Checked on every connection with SO_PEERCRED, on top of the socket file's
/// 0660 mode, so a socket made world-writable by mistake still lets no one in.
pub struct Access {
    pub group: Option<u32>,
}

impl Access {
    fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 || uid == current_uid() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        gid == group || pid.is_some_and(|pid| supplementary_groups(pid).contains(&group))
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

/// A process's supplementary groups, from /proc (empty if it is gone).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub async fn serve(
    listener: &UnixListener,
    access: Access,
    switch: Arc<Mutex<Switch>>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(Semaphore::new(MAX_STREAMS));
    let accept = async {
        loop {
            let permit = limit
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(refusal) = admit(&stream, &access) {
                        tracing::warn!("{refusal}");
                        tokio::spawn(refuse(stream, refusal));
                        continue;
                    }
                    let switch = switch.clone();
                    let streams = streams.clone();
                    tokio::spawn(handle_connection(stream, switch, permit, streams));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
}

/// Checks the peer's credentials.
fn admit(stream: &UnixStream, access: &Access) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("refused a client: cannot read its credentials: {e}"))?;
    if access.allows(cred.uid(), cred.gid(), cred.pid()) {
        return Ok(());
    }
    Err(format!(
        "permission denied: uid {} is neither root nor in switchd's socket group",
        cred.uid()
    ))
}

/// Tells a refused client why, then hangs up.
async fn refuse(mut stream: UnixStream, why: String) {
    let reply = error_reply(Value::Null, code::FAILED, why);
    let mut bytes = serde_json::to_vec(&reply).expect("replies always serialize");
    bytes.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
}

async fn handle_connection(
    stream: UnixStream,
    switch: Arc<Mutex<Switch>>,
    permit: OwnedSemaphorePermit,
    streams: Arc<Semaphore>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        match tokio::time::timeout(IDLE_TIMEOUT, read).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let reply = if line.len() > MAX_REQUEST_BYTES {
            if !skip_line(&mut reader, &mut line).await {
                return;
            }
            error_reply(
                Value::Null,
                code::INVALID_REQUEST,
                format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            )
        } else if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        } else {
            match dispatch(&line, &switch, &streams).await {
                Answer::Reply(reply) => reply,
                Answer::Stream(reply, stream, _place) => {
                    drop(permit);
                    if write_line(&mut writer, &reply).await {
                        run_stream(reader, writer, stream).await;
                    }
                    return;
                }
            }
        };
        if !write_line(&mut writer, &reply).await {
            return;
        }
    }
}

/// Writes a reply; false if the client is gone or has not taken it whole
/// within `IDLE_TIMEOUT` (it would hold its connection's place for ever).
async fn write_line<W: AsyncWriteExt + Unpin>(writer: &mut W, reply: &Value) -> bool {
    let mut bytes = serde_json::to_vec(reply).expect("replies always serialize");
    bytes.push(b'\n');
    let write = tokio::time::timeout(IDLE_TIMEOUT, writer.write_all(&bytes));
    matches!(write.await, Ok(Ok(())))
}

/// Copies a stream to the client until its source ends. Anything the client sends,
/// or its hanging up, asks the source to stop; its closing chunks still go out,
/// for at most `STOP_GRACE`. A client that reads nothing for `IDLE_TIMEOUT` ends it.
async fn run_stream<R, W>(mut reader: R, mut writer: W, stream: Stream)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    const STOP_GRACE: Duration = Duration::from_secs(2);
    let Stream { mut chunks, stop } = stream;
    let mut stop = Some(stop);
    let mut deadline = None;
    let mut scratch = [0u8; 256];
    loop {
        let listening = stop.is_some();
        let at = deadline;
        let client = async {
            if listening {
                let _ = reader.read(&mut scratch).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let grace = async {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = chunks.recv() => {
                let Some(chunk) = chunk else { break };
                let write = tokio::time::timeout(IDLE_TIMEOUT, writer.write_all(&chunk));
                if !matches!(write.await, Ok(Ok(()))) {
                    break;
                }
            }
            () = client => {
                if let Some(stop) = stop.take() {
                    stop();
                }
                deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            () = grace => break,
        }
    }
    if let Some(stop) = stop.take() {
        stop();
    }
    let _ = writer.shutdown().await;
}

/// Discards the rest of an oversized line in bounded chunks; false if the client
/// went away or stalled first.
async fn skip_line<R: AsyncBufReadExt + Unpin>(reader: &mut R, scratch: &mut Vec<u8>) -> bool {
    while scratch.last() != Some(&b'\n') {
        scratch.clear();
        let mut chunk = (&mut *reader).take(64 * 1024);
        match tokio::time::timeout(IDLE_TIMEOUT, chunk.read_until(b'\n', scratch)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

fn error_reply(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": RpcError { code, message }})
}

enum Answer {
    Reply(Value),
    /// The reply, the stream, and the stream's place among `MAX_STREAMS`.
    Stream(Value, Stream, OwnedSemaphorePermit),
}

/// Decodes one request line and runs it.
async fn dispatch(line: &[u8], switch: &Mutex<Switch>, streams: &Arc<Semaphore>) -> Answer {
    let (id, request) = match decode_request(line) {
        Ok(decoded) => decoded,
        Err(Rejected { id, error }) => {
            return Answer::Reply(error_reply(id, error.code, error.message))
        }
    };
    tracing::debug!(?request, "request");
    if request.is_stream() {
        let Ok(place) = streams.clone().try_acquire_owned() else {
            let why = format!("{MAX_STREAMS} streams (captures, monitors) are open; end one first");
            return Answer::Reply(error_reply(id, code::FAILED, why));
        };
        return match switch.lock().await.open_stream(request).await {
            Ok((result, stream)) => Answer::Stream(
                json!({"jsonrpc": "2.0", "id": id, "result": result}),
                stream,
                place,
            ),
            Err(e) => Answer::Reply(json!({"jsonrpc": "2.0", "id": id, "error": e})),
        };
    }
    let mut switch = switch.lock().await;
    Answer::Reply(match switch.handle(request).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    })
}
