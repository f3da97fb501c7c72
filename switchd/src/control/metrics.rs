//! `switchd --metrics ADDR`: what switchd counts, at `http://ADDR/metrics`,
//! in the exposition format of Prometheus (OpenMetrics text, which Prometheus
//! and its client libraries read), written by Prometheus's own Rust client
//! (`prometheus-client`) and served by hyper on the control plane's runtime.
//!
//! A scrape reads what `dump-ports`, `fdb-stats` and `mdb-stats` read, by the
//! same functions, under the control plane's lock: the counters are atomics
//! and the tables' locks are held only to read their counts, so forwarding
//! does not wait for a scrape; a scrape waits at most `LOCK_WAIT` for a long
//! request (a chain of thousands of ports) and answers 503 past it.

use super::switch::Switch;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use switchd_proto::CounterLine;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Scrapers are few; more connections than this wait.
const MAX_CONNECTIONS: usize = 16;
/// A connection that has not sent its request headers by then is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that has taken none of an answer for this long is closed
/// (hyper bounds reading a request, not writing its answer).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Requests the control plane answered, by method and outcome, and how long
/// each took.
pub(super) struct RequestCounts {
    counts: BTreeMap<(&'static str, &'static str), u64>,
    /// Kept across scrapes (a histogram's buckets are its history); a scrape
    /// registers a clone, which shares them.
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for RequestCounts {
    fn default() -> Self {
        // 100 µs to 26 s, each bucket four times the last: a change at 10
        // ports, one at 4096, a chain of thousands.
        fn histogram() -> Histogram {
            Histogram::new(exponential_buckets(1e-4, 4.0, 10))
        }
        RequestCounts {
            counts: BTreeMap::new(),
            seconds: Family::new_with_constructor(histogram),
        }
    }
}

impl RequestCounts {
    pub(super) fn count(&mut self, method: &'static str, ok: bool, took: Duration) {
        *self
            .counts
            .entry((method, if ok { "ok" } else { "error" }))
            .or_default() += 1;
        self.seconds
            .get_or_create(&label(&[("method", method)]))
            .observe(took.as_secs_f64());
    }
}

/// Serves `/metrics` until the task is aborted.
pub(super) async fn serve(listener: TcpListener, switch: Arc<Mutex<Switch>>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let switch = switch.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let switch = switch.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request, &switch).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(WriteBound::new(stream)), service);
            if let Err(e) = connection.await {
                tracing::debug!("metrics connection: {e}");
            }
            drop(permit);
        });
    }
}

/// A stream whose writes fail once the peer has taken nothing for
/// `WRITE_TIMEOUT`.
struct WriteBound<S> {
    inner: S,
    /// Since the first write that could not go on.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteBound<S> {
    fn new(inner: S) -> Self {
        WriteBound {
            inner,
            stalled: None,
        }
    }

    /// What a write returns: progress ends a stall, a long stall is an error.
    fn bound<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stall = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the scraper took nothing of the answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteBound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bound(cx, poll)
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
}

async fn answer(request: Request<Incoming>, switch: &Mutex<Switch>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "switchd serves /metrics only");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics");
    }
    let registry = match tokio::time::timeout(LOCK_WAIT, switch.lock()).await {
        Ok(switch) => registry(&switch),
        Err(_) => {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "switchd is busy with a long request; scrape again",
            )
        }
    };
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        tracing::error!("metrics: cannot encode: {e}");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The member of family `name` (registered on first use) for `labels`. Metrics
/// are made per scrape because ports come and go; a fresh counter's `inc_by`
/// sets its value. A clone shares the registered member's value.
fn member<M>(
    registry: &mut Registry,
    families: &mut BTreeMap<String, Family<Labels, M>>,
    name: &str,
    help: &str,
    labels: &Labels,
) -> M
where
    M: Default + Clone,
    Family<Labels, M>: Metric + Clone,
{
    families
        .entry(name.to_string())
        .or_insert_with(|| {
            let family = Family::<Labels, M>::default();
            registry.register(name, help, family.clone());
            family
        })
        .get_or_create(labels)
        .clone()
}

fn counters(
    registry: &mut Registry,
    families: &mut BTreeMap<String, Family<Labels, Counter>>,
    name: &str,
    help: &str,
    labels: Labels,
    value: u64,
) {
    member(registry, families, name, help, &labels).inc_by(value);
}

fn gauge(
    registry: &mut Registry,
    families: &mut BTreeMap<String, Family<Labels, Gauge>>,
    name: &str,
    help: &str,
    labels: Labels,
    value: u64,
) {
    member(registry, families, name, help, &labels).set(i64::try_from(value).unwrap_or(i64::MAX));
}

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One scrape: every port's counters as `dump-ports` has them, every bridge's
/// MAC and snooping tables' counts, the control requests, the build.
fn registry(switch: &Switch) -> Registry {
    let mut registry = Registry::default();
    let mut c = BTreeMap::new();
    let mut g = BTreeMap::new();
    let mut f = BTreeMap::new();
    gauge(
        &mut registry,
        &mut g,
        "switchd_build_info",
        "switchd's version (the value is 1)",
        label(&[("version", env!("CARGO_PKG_VERSION"))]),
        1,
    );
    registry.register(
        "switchd_control_request_seconds",
        "Time a control request took, from its turn at the control lock to its answer, by method",
        switch.requests.seconds.clone(),
    );
    for ((method, outcome), n) in &switch.requests.counts {
        counters(
            &mut registry,
            &mut c,
            "switchd_control_requests",
            "Control requests answered, by method and outcome",
            label(&[("method", method), ("outcome", outcome)]),
            *n,
        );
    }
    let seconds = |ns: u64| ns as f64 / 1e9;
    for (i, (busy, poll)) in switch.datapath.thread_times().into_iter().enumerate() {
        let thread = label(&[("thread", &i.to_string())]);
        for (name, help, value) in [
            (
                "switchd_datapath_busy_seconds",
                "Time a datapath thread spent in passes that forwarded frames",
                busy,
            ),
            (
                "switchd_datapath_poll_seconds",
                "Time a datapath thread spent polling without finding frames (--spin-us)",
                poll,
            ),
        ] {
            let counter: Counter<f64, AtomicU64> =
                member(&mut registry, &mut f, name, help, &thread);
            counter.inc_by(seconds(value));
        }
    }
    for bridge in switch.bridges.keys() {
        let b = |extra: &[(&str, &str)]| {
            let mut l = label(&[("bridge", bridge)]);
            l.extend(label(extra));
            l
        };
        if let Ok(ports) = switch.dump_ports(bridge, None) {
            for p in ports {
                for (field, line, reason, value) in p.counters.fields() {
                    let port = p.port.as_str();
                    let (name, help, labels) = match line {
                        CounterLine::Totals => (
                            format!("switchd_port_{field}"),
                            "Port counters as dump-ports has them (kernel fast path included)",
                            b(&[("port", port)]),
                        ),
                        CounterLine::Kernel => (
                            format!("switchd_port_{field}"),
                            "Of the port's packets, those the kernel fast path forwarded",
                            b(&[("port", port)]),
                        ),
                        CounterLine::Reasons if matches!(field, "rx_runts" | "rx_truncated") => (
                            "switchd_port_rx_error_reasons".to_string(),
                            "Receive errors by reason (part of rx_errors)",
                            b(&[("port", port), ("reason", reason)]),
                        ),
                        CounterLine::Reasons => (
                            "switchd_port_rx_drop_reasons".to_string(),
                            "Receive drops by reason (part of rx_drops)",
                            b(&[("port", port), ("reason", reason)]),
                        ),
                        CounterLine::TxReasons => (
                            "switchd_port_tx_drop_reasons".to_string(),
                            "Transmit drops by reason (part of tx_drops)",
                            b(&[("port", port), ("reason", reason)]),
                        ),
                    };
                    counters(&mut registry, &mut c, &name, help, labels, value);
                }
            }
        }
        if let Ok(s) = switch.fdb_stats(bridge) {
            gauge(
                &mut registry,
                &mut g,
                "switchd_fdb_entries",
                "MAC table entries now",
                b(&[]),
                s.current,
            );
            gauge(
                &mut registry,
                &mut g,
                "switchd_fdb_max_entries",
                "MAC table size (mac-table-size)",
                b(&[]),
                s.max,
            );
            for (name, help, v) in [
                ("switchd_fdb_learned", "MAC entries learned", s.learned),
                ("switchd_fdb_aged", "MAC entries that aged out", s.aged),
                (
                    "switchd_fdb_evicted",
                    "MAC entries evicted from a full table",
                    s.evicted,
                ),
                (
                    "switchd_fdb_moved",
                    "MAC entries moved to another port",
                    s.moved,
                ),
            ] {
                counters(&mut registry, &mut c, name, help, b(&[]), v);
            }
        }
        if let Ok(s) = switch.mdb_stats(bridge) {
            gauge(
                &mut registry,
                &mut g,
                "switchd_mdb_groups",
                "Multicast snooping groups now",
                b(&[]),
                s.current,
            );
            for (name, help, v) in [
                (
                    "switchd_mdb_joins",
                    "Multicast memberships reported",
                    s.joins,
                ),
                ("switchd_mdb_leaves", "Multicast memberships left", s.leaves),
                (
                    "switchd_mdb_aged",
                    "Multicast memberships and router ports aged out",
                    s.aged,
                ),
                (
                    "switchd_mdb_table_full",
                    "Reports not learned: the table was full",
                    s.table_full,
                ),
                ("switchd_mdb_queries", "IGMP/MLD queries seen", s.queries),
            ] {
                counters(&mut registry, &mut c, name, help, b(&[]), v);
            }
        }
        for m in switch.list_mirrors(bridge).unwrap_or_default() {
            for (name, help, v) in [
                (
                    "switchd_mirror_tx_packets",
                    "Copies a mirror sent",
                    m.tx_packets,
                ),
                (
                    "switchd_mirror_tx_bytes",
                    "Bytes of the copies a mirror sent",
                    m.tx_bytes,
                ),
                (
                    "switchd_mirror_tx_dropped",
                    "Copies a mirror lost on the way out",
                    m.tx_dropped,
                ),
            ] {
                counters(
                    &mut registry,
                    &mut c,
                    name,
                    help,
                    b(&[("mirror", &m.config.name)]),
                    v,
                );
            }
        }
    }
    registry
}
