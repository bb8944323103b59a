//! The scheduler's HTTP server: the live dashboard, `/metrics`, the JSON API and `/health`.
//! See `docs/observability.md` for every route and metric.
//!
//! It runs on the scheduler's (single-threaded) runtime, next to the core loop, and never waits
//! on it: handlers read the latest [`Snapshot`] the loop publishes every 250 ms, or send the
//! loop a [`Query`] through a small channel and await the answer (the loop answers between two
//! turns). Everything served is bounded: pages of at most 1,000 events, at most
//! [`STREAMS_MAX`] live dashboard streams.
use crate::metrics::{Metrics, Snapshot};
use anyhow::{Context, Result};
use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use rusk_proto::msg::EventRecord;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

/// Events in one answer of `/api/events` (clients page with `next`).
pub const EVENTS_PAGE_MAX: usize = 1000;
/// Events a new dashboard stream starts with (the recent history).
const STREAM_INITIAL_EVENTS: u64 = 500;
/// How often a dashboard stream sends what changed.
const STREAM_INTERVAL: Duration = Duration::from_millis(500);
/// Live dashboard streams at once; more get 503.
pub const STREAMS_MAX: usize = 64;
/// `/health` fails when the core loop has not published a snapshot for this long.
const HEALTH_STALE_AFTER: Duration = Duration::from_secs(5);
/// Queries waiting for the core loop.
pub const QUERY_QUEUE_MAX: usize = 256;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// A question for the core loop.
pub enum Query {
    /// Recovery events with sequence number >= `since`, at most `limit`.
    Events {
        since: u64,
        limit: usize,
        reply: oneshot::Sender<EventsPage>,
    },
}

/// One page of the recovery log.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    pub events: Vec<EventRecord>,
    /// Ask again with `since = next` for what follows.
    pub next: u64,
}

#[derive(Clone)]
pub struct HttpState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub queries: mpsc::Sender<Query>,
    pub metrics: Arc<Metrics>,
    streams: Arc<Semaphore>,
    /// When set, every route but `/health` needs the cluster token: `Authorization: Bearer
    /// TOKEN`, or `?token=TOKEN` once (a browser then keeps it in a cookie).
    token: Option<Arc<str>>,
}

impl HttpState {
    pub fn new(
        snapshot: watch::Receiver<Arc<Snapshot>>,
        queries: mpsc::Sender<Query>,
        metrics: Arc<Metrics>,
    ) -> HttpState {
        HttpState {
            snapshot,
            queries,
            metrics,
            streams: Arc::new(Semaphore::new(STREAMS_MAX)),
            token: None,
        }
    }

    /// Require the cluster token (done for any dashboard not bound to loopback: security is
    /// on by default, a cluster's status is nobody else's business).
    pub fn with_token(mut self, token: &str) -> HttpState {
        self.token = Some(Arc::from(token));
        self
    }
}

/// Constant-time comparison of a presented token with the cluster's.
fn token_matches(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(
    State(state): State<HttpState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = state.token.clone() else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("rusk_token="))
        });
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if bearer.or(cookie).is_some_and(|t| token_matches(t, &token)) {
        return next.run(request).await;
    }
    if query.is_some_and(|t| token_matches(t, &token)) {
        let mut response = next.run(request).await;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "rusk_token={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        "the cluster token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n",
    )
        .into_response()
}

/// Listen on `addr`. When the port is taken (another scheduler on this host has the default
/// one), take any free port on the same host instead, as Dask does, and say so.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let host = addr
                .rsplit_once(':')
                .map_or(addr, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let l = TcpListener::bind((host, 0))
                .await
                .with_context(|| format!("cannot serve the dashboard on {host}"))?;
            warn!(wanted = %addr, using = %l.local_addr()?, "dashboard port in use; serving the dashboard on another port");
            Ok(l)
        }
        Err(e) => Err(e).with_context(|| format!("cannot serve the dashboard on {addr}")),
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/api/status", get(api_status))
        .route("/api/overview", get(api_overview))
        .route("/api/events", get(api_events))
        .route("/api/stream", get(api_stream))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Serve on `listener` until the process ends: over HTTPS with `tls` (the dashboard of a
/// cluster that encrypts), plain HTTP otherwise.
pub fn spawn(listener: TcpListener, state: HttpState, tls: Option<Arc<rustls::ServerConfig>>) {
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(dashboard = %format!("{scheme}://{address}/"), "dashboard and metrics served");
    tokio::spawn(async move {
        let served = match tls {
            None => axum::serve(listener, router(state)).await,
            Some(config) => axum::serve(TlsListener::new(listener, config), router(state)).await,
        };
        if let Err(e) = served {
            warn!(error = %e, "the dashboard server stopped");
        }
    });
}

/// HTTPS handshakes in progress at once, at most; more connections wait in the kernel's
/// backlog.
pub const HTTPS_HANDSHAKES_MAX: usize = 64;
/// How long a browser has to complete the TLS handshake.
const HTTPS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener whose connections are TLS: handshakes run beside the accept loop (a slow one
/// holds up no other), under a deadline, and at most [`HTTPS_HANDSHAKES_MAX`] at once.
struct TlsListener {
    local: std::io::Result<std::net::SocketAddr>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        let local = listener.local_addr();
        let (tx, ready) = mpsc::channel(HTTPS_HANDSHAKES_MAX);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let turns = Arc::new(Semaphore::new(HTTPS_HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(turn) = turns.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake =
                        tokio::time::timeout(HTTPS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match shake.await {
                        Ok(Ok(tls)) => {
                            drop(turn);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "dashboard TLS handshake failed"),
                        Err(_) => debug!(%peer, "dashboard TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { local, ready }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept loop ended (it never does while the runtime runs): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

fn with_type(body: impl Into<axum::body::Body>, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json(body: Bytes) -> Response {
    with_type(body, "application/json")
}

async fn index() -> Response {
    with_type(INDEX_HTML, "text/html; charset=utf-8")
}

async fn script() -> Response {
    with_type(DASHBOARD_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    with_type(DASHBOARD_CSS, "text/css; charset=utf-8")
}

async fn metrics(State(st): State<HttpState>) -> Response {
    with_type(
        st.metrics.encode(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
}

#[derive(Serialize)]
struct Health {
    /// `ok`, or `stalled` when the core loop stopped publishing.
    status: &'static str,
    uptime_s: f64,
    workers: usize,
    unhealthy_workers: u64,
    snapshot_age_ms: u64,
    loop_lag_ms: f64,
}

async fn health(State(st): State<HttpState>) -> Response {
    let snap = st.snapshot.borrow().clone();
    let age = snap.taken.elapsed();
    let stalled = snap.seq == 0 || age > HEALTH_STALE_AFTER;
    let body = Health {
        status: if stalled { "stalled" } else { "ok" },
        uptime_s: snap.overview.uptime_ms as f64 / 1000.0,
        workers: snap.status.workers.len(),
        unhealthy_workers: snap
            .overview
            .workers_by_state
            .get("unhealthy")
            .copied()
            .unwrap_or(0),
        snapshot_age_ms: age.as_millis() as u64,
        loop_lag_ms: st.metrics.loop_lag().as_secs_f64() * 1000.0,
    };
    let code = if stalled {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        json(Bytes::from(serde_json::to_vec(&body).expect("serialises"))),
    )
        .into_response()
}

async fn api_status(State(st): State<HttpState>) -> Response {
    let snap = st.snapshot.borrow().clone();
    json(snap.status_json())
}

async fn api_overview(State(st): State<HttpState>) -> Response {
    let snap = st.snapshot.borrow().clone();
    json(snap.overview_json())
}

#[derive(Deserialize)]
struct EventsParams {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn ask_events(st: &HttpState, since: u64, limit: usize) -> Option<EventsPage> {
    let (reply, rx) = oneshot::channel();
    st.queries
        .send(Query::Events {
            since,
            limit: limit.clamp(1, EVENTS_PAGE_MAX),
            reply,
        })
        .await
        .ok()?;
    rx.await.ok()
}

async fn api_events(State(st): State<HttpState>, UrlQuery(p): UrlQuery<EventsParams>) -> Response {
    match ask_events(
        &st,
        p.since.unwrap_or(0),
        p.limit.unwrap_or(EVENTS_PAGE_MAX),
    )
    .await
    {
        Some(page) => json(Bytes::from(serde_json::to_vec(&page).expect("serialises"))),
        None => (StatusCode::SERVICE_UNAVAILABLE, "scheduler shutting down").into_response(),
    }
}

#[derive(Deserialize)]
struct StreamParams {
    /// First event to send (default: the last 500).
    since: Option<u64>,
}

struct StreamState {
    st: HttpState,
    rx: watch::Receiver<Arc<Snapshot>>,
    since: u64,
    last_seq: u64,
    first: bool,
    tick: tokio::time::Interval,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Server-sent events: `status` (`{"status": ..., "overview": ...}`) whenever a new snapshot
/// is out, `events` (`{"events": [...], "next": N}`) when the recovery log grew; both checked
/// every 500 ms.
async fn api_stream(State(st): State<HttpState>, UrlQuery(p): UrlQuery<StreamParams>) -> Response {
    let Ok(permit) = st.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dashboard streams open",
        )
            .into_response();
    };
    let rx = st.snapshot.clone();
    let since = p.since.unwrap_or_else(|| {
        rx.borrow()
            .overview
            .events_next
            .saturating_sub(STREAM_INITIAL_EVENTS)
    });
    let mut tick = tokio::time::interval(STREAM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = StreamState {
        st,
        rx,
        since,
        last_seq: 0,
        first: true,
        tick,
        _permit: permit,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            s.tick.tick().await;
            let started = Instant::now();
            let snap = s.rx.borrow().clone();
            let mut out: Vec<Result<SseEvent, Infallible>> = Vec::new();
            if snap.seq != s.last_seq && snap.seq != 0 {
                s.last_seq = snap.seq;
                let body = snap.stream_json();
                out.push(Ok(SseEvent::default()
                    .event("status")
                    .data(std::str::from_utf8(&body).expect("JSON is UTF-8"))));
            }
            // Ask at least once at the start: the snapshot may be older than the log.
            if s.first || snap.overview.events_next > s.since {
                s.first = false;
                let page = ask_events(&s.st, s.since, EVENTS_PAGE_MAX).await?;
                s.since = page.next;
                if !page.events.is_empty() {
                    let body = serde_json::to_string(&page).expect("serialises");
                    out.push(Ok(SseEvent::default().event("events").data(body)));
                }
            }
            tracing::trace!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "stream tick"
            );
            if !out.is_empty() {
                return Some((futures::stream::iter(out), s));
            }
        }
    })
    .flatten();
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod auth_tests {
    use super::token_matches;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("abc123", "abc123"));
        assert!(!token_matches("abc124", "abc123"));
        assert!(!token_matches("abc12", "abc123"));
        assert!(!token_matches("", "abc123"));
    }
}
