//! The JSON-RPC socket server (tokio-rs/mini-redis's listener shape).
//!
//! One request per line, each line at most `MAX_REQUEST_BYTES`. A bad request gets
//! a JSON-RPC error and the connection stays usable; an oversized one is skipped up
//! to its newline without being buffered, and answered with an error. Requests run one
//! at a time against the switch, so configuration changes never interleave.

use super::Switch;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchd_proto::{code, Request, RpcError, MAX_REQUEST_BYTES};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// A client that sends nothing for this long is disconnected.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn serve(
    listener: &UnixListener,
    switch: Arc<Mutex<Switch>>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept = async {
        loop {
            let permit = limit
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            match listener.accept().await {
                Ok((stream, _)) => {
                    let switch = switch.clone();
                    tokio::spawn(async move {
                        handle_connection(stream, switch).await;
                        drop(permit);
                    });
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

async fn handle_connection(stream: UnixStream, switch: Arc<Mutex<Switch>>) {
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
            dispatch(&line, &switch).await
        };
        let mut bytes = serde_json::to_vec(&reply).expect("replies always serialize");
        bytes.push(b'\n');
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
    }
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

/// Decodes one request line and runs it.
async fn dispatch(line: &[u8], switch: &Mutex<Switch>) -> Value {
    let request: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return error_reply(Value::Null, code::PARSE_ERROR, format!("parse error: {e}")),
    };
    let Some(object) = request.as_object() else {
        return error_reply(
            Value::Null,
            code::INVALID_REQUEST,
            "a request must be a JSON object".into(),
        );
    };
    let id = object.get("id").cloned().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return error_reply(
            id,
            code::INVALID_REQUEST,
            "\"jsonrpc\" must be \"2.0\"".into(),
        );
    }
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        return error_reply(
            id,
            code::INVALID_REQUEST,
            "\"method\" must be a string".into(),
        );
    };
    if !Request::METHODS.contains(&method) {
        return error_reply(
            id,
            code::METHOD_NOT_FOUND,
            format!("unknown method {method:?}"),
        );
    }
    let params = object.get("params").cloned().unwrap_or_else(|| json!({}));
    let request: Request = match serde_json::from_value(json!({"method": method, "params": params}))
    {
        Ok(r) => r,
        Err(e) => {
            return error_reply(
                id,
                code::INVALID_PARAMS,
                format!("invalid params for {method}: {e}"),
            )
        }
    };
    tracing::debug!(?request, "request");
    match switch.lock().await.handle(request).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
    }
}
