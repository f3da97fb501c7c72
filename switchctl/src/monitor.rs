//! `switchctl monitor`: prints switchd's events as they come, one per line, until
//! Ctrl-C (exit 0) or switchd goes away (exit 1).

use anyhow::Context;
use std::io::{BufRead, ErrorKind, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchd_proto::{open_stream, MonitorEvent, Request};

pub fn run(
    socket: &Path,
    request: &Request,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let (_, reader) = open_stream(socket, request, timeout)?;
    // Ctrl-C ends the stream; the loop below ends with it.
    let stopping = crate::stream::end_on_signal(reader.get_ref())?;
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let line = match line {
            Ok(line) => line,
            Err(_) if stopping.load(Ordering::SeqCst) => break,
            Err(e) => return Err(e).context("reading switchd's events"),
        };
        let text = if json {
            line
        } else {
            let event: MonitorEvent = serde_json::from_str(&line)
                .with_context(|| format!("bad event from switchd: {line}"))?;
            render(&event)
        };
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`| head`): done.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
        }
    }
    if stopping.load(Ordering::SeqCst) {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("switchd closed the connection (did it stop?)")
    }
}

/// `TIME BRIDGE EVENT FIELD=VALUE...`, in the order of the JSON's fields, as
/// ovs-appctl writes flows; a value with spaces is quoted.
pub fn render(e: &MonitorEvent) -> String {
    let bridge = e.bridge.as_deref().unwrap_or("-");
    match (e.event.as_str(), &e.kind, e.count) {
        ("suppressed", Some(kind), Some(count)) => {
            return format!("{} {bridge} suppressed {count} {kind} events", e.time)
        }
        ("lost", _, Some(count)) => {
            return format!("{} {bridge} lost {count} events (read too slowly)", e.time)
        }
        _ => {}
    }
    let mut line = format!("{} {bridge} {}", e.time, e.event);
    let vlan = e.vlan.map(|v| v.to_string());
    let max = e.max.map(|m| m.to_string());
    let fields = [
        ("mac", e.mac.as_deref()),
        ("vlan", vlan.as_deref()),
        ("from_port", e.from_port.as_deref()),
        ("port", e.port.as_deref()),
        ("state", e.state.as_deref()),
        ("reason", e.reason.as_deref()),
        ("max", max.as_deref()),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            if value.contains(' ') {
                line.push_str(&format!(" {name}=\"{value}\""));
            } else {
                line.push_str(&format!(" {name}={value}"));
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_ovs_appctl() {
        let event = |json: &str| render(&serde_json::from_str(json).unwrap());
        assert_eq!(
            event(
                r#"{"time":"T","bridge":"br0","event":"mac-moved","mac":"02:00:00:00:00:01","vlan":0,"from_port":"v1","port":"v2"}"#
            ),
            "T br0 mac-moved mac=02:00:00:00:00:01 vlan=0 from_port=v1 port=v2"
        );
        assert_eq!(
            event(
                r#"{"time":"T","bridge":"br0","event":"port-down","port":"v1","reason":"no carrier"}"#
            ),
            "T br0 port-down port=v1 reason=\"no carrier\""
        );
        assert_eq!(
            event(
                r#"{"time":"T","bridge":"br0","event":"suppressed","kind":"mac-learned","count":4900}"#
            ),
            "T br0 suppressed 4900 mac-learned events"
        );
        assert_eq!(
            event(r#"{"time":"T","event":"lost","count":3}"#),
            "T - lost 3 events (read too slowly)"
        );
    }
}
