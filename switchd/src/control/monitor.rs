//! `monitor`: what changes, streamed to a client one JSON object per line
//! ([`MonitorEvent`]), as `bridge monitor` and `ovsdb-client monitor` do.
//!
//! Two sources feed one broadcast channel, so a monitor sees them in the order
//! they happened:
//! - the datapath's MAC events (`datapath::events`: the MAC table's journal,
//!   already rate-limited per kind and bridge, with port names), sent by whoever
//!   drained the journal, a datapath thread included: a broadcast send never
//!   blocks and its ring is allocated once;
//! - the switch's own: after every request, link event and aging sweep (once a
//!   second), while someone watches, the bridges, ports and port states are
//!   compared with what was last published, and the differences sent. One
//!   mechanism covers every way a port comes, goes, attaches, fails, loses its
//!   carrier or is blocked by the loop guard (seen within a second), however
//!   the request that caused it was made. It reads each port's link state from
//!   sysfs as `show` does (two small files a port), only while a monitor is connected.
//!
//! Each monitor's task turns events into lines outside the control lock. A
//! monitor that reads too slowly loses events (the channel's lag, or its
//! connection's full queue) and is told how many (`lost`), never slowing the
//! datapath or the other monitors.

use super::reports::port_state;
use super::stream::{Stream, STREAM_BACKLOG};
use super::switch::{RpcResult, Switch};
use crate::datapath::events::{MacEvent, MacKind, MacWhat};
use crate::datapath::{Datapath, FdbKey};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use switchd_proto::MonitorEvent;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Events the channel holds for a monitor that has not read them yet. The MAC
/// events are at most `EVENTS_PER_SEC` per kind, bridge and second, so this is
/// seconds of a busy switch.
const EVENT_BACKLOG: usize = 4096;

#[derive(Debug, Clone)]
pub(super) enum Event {
    Mac(MacEvent),
    Switch(Arc<MonitorEvent>),
}

/// A port's state as monitors see it: the event that announces it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PortStatus {
    pub(super) event: &'static str,
    pub(super) reason: Option<String>,
}

/// Bridges, their ports and the ports' states.
type Snapshot = BTreeMap<String, BTreeMap<String, PortStatus>>;

pub(super) struct Monitors {
    events: broadcast::Sender<Event>,
    /// What was last published, while anyone watches.
    seen: Option<Snapshot>,
}

impl Monitors {
    /// Installs the datapath's sink into the channel.
    pub(super) fn new(datapath: &Datapath) -> Monitors {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let sink = events.clone();
        datapath.set_event_sink(Box::new(move |event| {
            // No receiver: nobody to tell.
            let _ = sink.send(Event::Mac(event));
        }));
        Monitors { events, seen: None }
    }
}

impl Switch {
    pub(super) fn monitor(&mut self, bridge: Option<String>) -> RpcResult<(Value, Stream)> {
        if let Some(bridge) = &bridge {
            self.bridge(bridge)?;
        }
        let events = self.monitors.events.subscribe();
        if self.monitors.seen.is_none() {
            self.monitors.seen = Some(self.snapshot());
        }
        let watch = self.datapath.watch();
        let (chunks_tx, chunks) = mpsc::channel(STREAM_BACKLOG);
        let (stop_tx, stop) = oneshot::channel();
        tokio::spawn(async move {
            forward(events, chunks_tx, stop, bridge).await;
            drop(watch);
        });
        let stop = Box::new(move || {
            let _ = stop_tx.send(());
        });
        Ok((Value::Null, Stream { chunks, stop }))
    }

    /// Sends what changed in the bridges, ports and port states since the last
    /// call, if anyone watches.
    pub(super) fn publish_changes(&mut self) {
        if self.monitors.events.receiver_count() == 0 {
            self.monitors.seen = None;
            return;
        }
        let now = self.snapshot();
        let old = self.monitors.seen.replace(now.clone()).unwrap_or_default();
        let time = rfc3339(SystemTime::now());
        for event in diff(&old, &now) {
            let event = MonitorEvent {
                time: time.clone(),
                ..event
            };
            let _ = self.monitors.events.send(Event::Switch(Arc::new(event)));
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.bridges
            .iter()
            .map(|(name, b)| {
                let ports = b
                    .ports
                    .iter()
                    .map(|(port, state)| {
                        let tunnel = self.tunnels.ports.get(port);
                        (port.clone(), port_state(port, state, tunnel))
                    })
                    .collect();
                (name.clone(), ports)
            })
            .collect()
    }
}

/// The events that take a monitor from `old` to `new`, without times.
fn diff(old: &Snapshot, new: &Snapshot) -> Vec<MonitorEvent> {
    let event = |bridge: &str, event: &str| MonitorEvent {
        bridge: Some(bridge.to_string()),
        event: event.to_string(),
        ..Default::default()
    };
    let on_port = |bridge: &str, kind: &str, port: &str| MonitorEvent {
        port: Some(port.to_string()),
        ..event(bridge, kind)
    };
    let empty = BTreeMap::new();
    let mut events = Vec::new();
    for (bridge, ports) in old {
        if !new.contains_key(bridge) {
            for port in ports.keys() {
                events.push(on_port(bridge, "port-deleted", port));
            }
            events.push(event(bridge, "bridge-deleted"));
        }
    }
    for (bridge, ports) in new {
        let before = match old.get(bridge) {
            Some(before) => before,
            None => {
                events.push(event(bridge, "bridge-added"));
                &empty
            }
        };
        for port in before.keys().filter(|p| !ports.contains_key(*p)) {
            events.push(on_port(bridge, "port-deleted", port));
        }
        for (port, status) in ports {
            match before.get(port) {
                None => events.push(MonitorEvent {
                    state: Some(status.event.trim_start_matches("port-").to_string()),
                    reason: status.reason.clone(),
                    ..on_port(bridge, "port-added", port)
                }),
                Some(was) if was != status => events.push(MonitorEvent {
                    reason: status.reason.clone(),
                    ..on_port(bridge, status.event, port)
                }),
                Some(_) => {}
            }
        }
    }
    events
}

/// Copies one monitor's events to its connection until it stops or the switch
/// goes away. What is waiting goes as one chunk; while the connection's queue is
/// full this waits, and the channel counts what it misses meanwhile (`lost`).
async fn forward(
    mut events: broadcast::Receiver<Event>,
    chunks: mpsc::Sender<Vec<u8>>,
    mut stop: oneshot::Receiver<()>,
    bridge: Option<String>,
) {
    let mut lost = 0;
    loop {
        let first = tokio::select! {
            _ = &mut stop => return,
            event = events.recv() => event,
        };
        let mut chunk = Vec::new();
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match event {
                Ok(event) => {
                    let event = match event {
                        Event::Mac(event) => mac_event(&event),
                        Event::Switch(event) => (*event).clone(),
                    };
                    if bridge.is_none() || event.bridge == bridge {
                        if lost > 0 {
                            let report = MonitorEvent {
                                time: event.time.clone(),
                                event: "lost".to_string(),
                                count: Some(std::mem::take(&mut lost)),
                                ..Default::default()
                            };
                            push_line(&mut chunk, &report);
                        }
                        push_line(&mut chunk, &event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => lost += n,
                Err(broadcast::error::RecvError::Closed) => break,
            }
            if chunk.len() < CHUNK_BYTES {
                next = match events.try_recv() {
                    Ok(event) => Some(Ok(event)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => None,
                };
            }
        }
        if chunk.is_empty() {
            if events.is_closed() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = &mut stop => return,
            sent = chunks.send(chunk) => if sent.is_err() { return },
        }
    }
}

/// A chunk is sent once it holds this much, or nothing more is waiting.
const CHUNK_BYTES: usize = 64 << 10;

fn push_line(chunk: &mut Vec<u8>, event: &MonitorEvent) {
    serde_json::to_writer(&mut *chunk, event).expect("events serialize");
    chunk.push(b'\n');
}

fn mac_event(event: &MacEvent) -> MonitorEvent {
    let base = MonitorEvent {
        time: rfc3339(event.time),
        bridge: Some(event.bridge.to_string()),
        ..Default::default()
    };
    let on = |key: &FdbKey, event: &str, port: &str| MonitorEvent {
        event: event.to_string(),
        mac: Some(key.mac.to_string()),
        vlan: Some(key.vlan),
        port: Some(port.to_string()),
        ..base.clone()
    };
    match &event.what {
        MacWhat::Learned { key, port } => on(key, "mac-learned", port),
        MacWhat::Moved { key, from, to } => MonitorEvent {
            from_port: Some(from.to_string()),
            ..on(key, "mac-moved", to)
        },
        MacWhat::Removed { key, port, reason } => {
            let kind = MacKind::of_removal(*reason);
            MonitorEvent {
                reason: (kind.name() == "mac-removed").then(|| reason.name().to_string()),
                ..on(key, kind.name(), port)
            }
        }
        MacWhat::TableFull { max } => MonitorEvent {
            event: "table-full".to_string(),
            max: Some(*max),
            ..base
        },
        MacWhat::Suppressed { kind, count } => MonitorEvent {
            event: "suppressed".to_string(),
            kind: Some(kind.name().to_string()),
            count: Some(*count),
            ..base
        },
    }
}

/// `2026-12-05T06:01:02.123456Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339() {
        let at = |secs: u64, micros: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_796_450_462, 123_456), "2026-12-05T06:01:02.123456Z");
    }

    fn status(event: &'static str, reason: Option<&str>) -> PortStatus {
        PortStatus {
            event,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn differences_become_events() {
        let snapshot = |bridges: &[(&str, &[(&str, PortStatus)])]| -> Snapshot {
            bridges
                .iter()
                .map(|(b, ports)| {
                    let ports = ports
                        .iter()
                        .map(|(p, s)| (p.to_string(), s.clone()))
                        .collect();
                    (b.to_string(), ports)
                })
                .collect()
        };
        let up = status("port-up", None);
        let old = snapshot(&[
            ("br0", &[("p1", up.clone()), ("p2", up.clone())]),
            ("br1", &[("q1", up.clone())]),
        ]);
        let new = snapshot(&[
            (
                "br0",
                &[
                    ("p1", status("port-down", Some("no carrier"))),
                    ("p3", status("port-error", Some("no such device"))),
                ],
            ),
            ("br2", &[]),
        ]);
        let got: Vec<String> = diff(&old, &new)
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {}",
                    e.bridge.as_deref().unwrap(),
                    e.event,
                    e.port.as_deref().unwrap_or("-"),
                    e.state.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "br1 port-deleted q1 - -",
                "br1 bridge-deleted - - -",
                "br0 port-deleted p2 - -",
                "br0 port-down p1 - no carrier",
                "br0 port-added p3 error no such device",
                "br2 bridge-added - - -",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
