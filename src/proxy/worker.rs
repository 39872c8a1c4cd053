//! One proxy worker: a thread with its own `current_thread` runtime, its own `SO_REUSEPORT`
//! listener, and its own upstream connection pool, so a request never wakes another thread.
//!
//! Clients are served by hyper (HTTP/1.1 and h2c); upstreams by the proxy's own HTTP/1.1 client
//! ([`super::client`]), driven by the same task, so a forwarded request costs no task, channel or
//! timer of its own.
//!
//! Everything a worker owns is `Rc`/`RefCell`: no lock and no atomic reference count is touched on
//! the request path except the instance's [`Meter`](super::meter::Meter) (one shared `fetch_add`)
//! and the worker's own in-flight slot (uncontended). Per request, beyond what hyper's server
//! allocates itself: the response's `HeaderMap` (one allocation; its values are slices of the read
//! buffer), a `HeaderName` for a response field that is not a standard one, and nothing for
//! routing, counting, the pool, the request head (written into the upstream connection's reused
//! buffer) or `X-Forwarded-For` (the client's address is a `'static` value the worker made once
//! for that address); the route table is read through an `arc_swap::Cache` (one atomic load when
//! it has not changed). A request the proxy answers itself bumps one counter resolved when the
//! worker started. HTTP/2 and absolute-form requests pay one allocation for the `Host` they are
//! given.
//!
//! Per connection: a place under the worker's connection cap, the connection's state (its route
//! memo holds the host bytes inline), and a watchdog ([`net::supervise`]) that closes it when it
//! is silent, idle, or its client stops taking a response. Per upstream connection: one box with
//! its socket, buffers and response timer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use bytes::{Bytes, BytesMut};
use http::header::{HOST, VIA};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus::IntCounter;
use prometheus::local::LocalHistogram;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout, timeout_at};

use super::ProxyEvent;
use super::body::{ClientBody, ProxyBody};
use super::client::{RequestBody, UpstreamConn};
use super::error::{KINDS, ProxyError};
use super::framing::{Decoder, Expect, Head};
use super::h1;
use super::headers::{self, VIA_2, VIA_10, VIA_11};
use super::meter::{Admission, Ask, Meter};
use super::request::{Limits, RequestError};
use super::route::{Route, RouteMemo, RouteTable, Upstream};
use crate::config::{Balance, ProxyConfig};
use crate::metrics::Metrics;
use crate::net::{self, Accepted, Activity, Busy, Timeouts, Watched};

/// The data-path settings a worker needs, taken from [`ProxyConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub header_read_timeout: Duration,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub pool_idle: usize,
    pub shutdown_grace: Duration,
    pub idle_timeout: Duration,
    pub request_body_timeout: Duration,
    pub response_write_timeout: Duration,
    /// Connections this worker serves at once.
    pub max_connections: usize,
    /// What a request head may be (HTTP/1).
    pub limits: Limits,
    /// Largest request body of an instance that sets no limit of its own (HTTP/1); `u64::MAX`
    /// = no limit.
    pub max_body: u64,
    /// Requests one HTTP/1 connection carries before the proxy closes it; 0 = no limit.
    pub max_requests_per_connection: u64,
}

impl Settings {
    pub(crate) fn new(
        cfg: &ProxyConfig,
        shutdown_grace: Duration,
        max_connections: usize,
    ) -> Settings {
        Settings {
            header_read_timeout: cfg.header_read_timeout,
            connect_timeout: cfg.upstream_connect_timeout,
            upstream_timeout: cfg.upstream_timeout,
            pool_idle: cfg.pool_idle_per_instance,
            shutdown_grace,
            idle_timeout: cfg.idle_timeout,
            request_body_timeout: cfg.request_body_timeout,
            response_write_timeout: cfg.response_write_timeout,
            max_connections,
            limits: Limits {
                max_head: cfg.max_header_bytes,
                max_fields: cfg.max_header_fields,
                max_uri: cfg.max_uri_bytes,
            },
            max_body: cfg.max_body_bytes.unwrap_or(u64::MAX),
            max_requests_per_connection: cfg.max_requests_per_connection,
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            silent: self.header_read_timeout,
            idle: self.idle_timeout,
            stalled: self.response_write_timeout,
        }
    }
}

/// A worker's view of one upstream: the shared [`Upstream`] and this worker's idle connections to it.
#[derive(Debug)]
pub(crate) struct LocalUpstream {
    upstream: Arc<Upstream>,
    /// Most recently pooled last, taken first (its socket and buffers are the warmest). Boxed:
    /// a connection moves between the pool, a request and a response body as one pointer.
    #[allow(clippy::vec_box)]
    idle: RefCell<Vec<Box<UpstreamConn>>>,
    /// The upstream has left the route table: a connection that comes back from a request is
    /// handed to [`close_after_peer`] rather than pooled.
    left_table: Cell<bool>,
}

/// How long a connection to an instance that left the route table waits for the instance to
/// close it.
const PEER_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Closes connections to an instance that has left the route table once the instance has closed
/// them (it does when its process exits), or after [`PEER_CLOSE_WAIT`]. Closing them first would wake
/// every dying instance to read its end-of-stream: in a kill storm, hundreds of processes
/// running at the server's priority while the proxy serves the others (`benches/kill_storm.sh`).
/// One task per call, on the worker's `LocalSet`.
#[allow(clippy::vec_box)] // the pool's own boxes, moved as they are
fn close_after_peer(conns: Vec<Box<UpstreamConn>>) {
    if conns.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + PEER_CLOSE_WAIT;
    tokio::task::spawn_local(async move {
        for conn in conns {
            let _ = tokio::time::timeout_at(deadline, conn.closed_by_peer()).await;
        }
    });
}

/// The table a worker last synchronised with, and its [`LocalUpstream`]s by the table's slots.
struct Synced {
    table: *const RouteTable,
    locals: Vec<Option<Rc<LocalUpstream>>>,
}

/// The worker's side of the upstream in `slot`. A target only names filled slots; an empty one
/// is answered as an instance that is not running.
#[inline]
fn local_at(locals: &[Option<Rc<LocalUpstream>>], slot: usize) -> Option<&Rc<LocalUpstream>> {
    locals.get(slot).and_then(Option::as_ref)
}

/// Most client addresses a worker keeps a ready-made `X-Forwarded-For` value for; they are never
/// freed (a `'static` value is what makes the per-request copy free), so their number is bounded.
const MAX_CLIENTS: usize = 1024;

/// The state of one worker thread.
pub(crate) struct Worker {
    index: usize,
    table: RefCell<Cache<Arc<ArcSwap<RouteTable>>, Arc<RouteTable>>>,
    synced: RefCell<Synced>,
    /// Round-robin cursor, per worker: workers need not agree for the spread to be even.
    cursor: Cell<usize>,
    events: mpsc::UnboundedSender<ProxyEvent>,
    /// The settings a reload may change ([`crate::proxy::ProxySettings`]), taken up by the
    /// worker's tick; connections and requests read them through [`Worker::settings`].
    shared_settings: Arc<ArcSwap<Settings>>,
    settings: RefCell<(Rc<Settings>, *const Settings)>,
    histogram: LocalHistogram,
    /// One counter per [`ProxyError`] kind, indexed by [`ProxyError::index`], resolved once.
    errors: Box<[IntCounter]>,
    accept_errors: IntCounter,
    /// `X-Forwarded-For` values by client address (see [`MAX_CLIENTS`]).
    clients: RefCell<HashMap<IpAddr, HeaderValue>>,
    /// The worker is shutting down: connections close after their current request.
    closing: Cell<bool>,
    /// Which listener the worker accepts on: bumped each time the proxy moves to another
    /// address, so that connections of an older one close as at shutdown.
    listener: Cell<u32>,
    /// Open HTTP/1 connections, so that a shutdown can wake those waiting between requests
    /// (pruned of closed ones as it grows).
    conns: RefCell<Vec<Weak<ConnInfo>>>,
}

/// What happens when a request that was admitted ends (its response body ended or was dropped,
/// or it failed): a request that never reached the instance gives its budget back, the in-flight
/// slot is released, the duration observed, and a connection whose response was read to the end
/// goes back to the pool.
pub(crate) struct Finish {
    local: Rc<LocalUpstream>,
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    start: Instant,
    /// The request was written to an upstream connection (from then on it may have been seen).
    sent: bool,
    /// A body frame was handed to the client and it has not asked for the next yet.
    handed: bool,
}

impl std::fmt::Debug for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field("instance", &self.local.upstream.name)
            .finish()
    }
}

impl Finish {
    /// A request admitted to `local` at `start`, not sent yet.
    pub(crate) fn new(
        local: Rc<LocalUpstream>,
        worker: Rc<Worker>,
        conn: Rc<ConnInfo>,
        start: Instant,
    ) -> Finish {
        Finish {
            local,
            worker,
            conn,
            start,
            sent: false,
            handed: false,
        }
    }

    /// The response was read to its end on `conn`, which may carry another request: back to
    /// the pool (if it has room, and the upstream is still in the table), and the request
    /// finishes.
    pub(crate) fn pool(self, conn: Box<UpstreamConn>) {
        if self.local.left_table.get() {
            close_after_peer(vec![conn]);
            return;
        }
        let mut idle = self.local.idle.borrow_mut();
        if idle.len() < self.worker.settings().pool_idle {
            idle.push(conn);
        }
    }

    /// The largest request body the instance takes (`default`: the proxy's limit).
    #[inline]
    pub(crate) fn max_body(&self, default: u64) -> u64 {
        self.local.upstream.max_body(default)
    }

    /// A body frame went to the client: until it asks for the next, the response waits for it.
    pub(crate) fn handed_to_client(&mut self) {
        if !self.handed {
            self.handed = true;
            self.conn.waiting.set(self.conn.waiting.get() + 1);
        }
    }

    /// The client asked for the next frame.
    pub(crate) fn client_took(&mut self) {
        if self.handed {
            self.handed = false;
            self.conn.waiting.set(self.conn.waiting.get() - 1);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.client_took();
        let upstream = &self.local.upstream;
        if self.sent {
            self.worker
                .histogram
                .observe(self.start.elapsed().as_secs_f64());
        } else {
            // Never handed to the instance: "the count is the number forwarded". Before the slot
            // is released, so that a drain that sees the slot empty sees the refund too.
            upstream.meter.unadmit();
        }
        upstream.leave(self.worker.index);
    }
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        table: Arc<ArcSwap<RouteTable>>,
        events: mpsc::UnboundedSender<ProxyEvent>,
        settings: Arc<ArcSwap<Settings>>,
        metrics: Metrics,
    ) -> Worker {
        let first = settings.load_full();
        let errors = KINDS
            .iter()
            .map(|&(kind, upstream)| {
                if upstream {
                    metrics.upstream_errors.with_label_values(&[kind])
                } else {
                    metrics.refused.with_label_values(&[kind])
                }
            })
            .collect();
        Worker {
            index,
            table: RefCell::new(Cache::new(table)),
            synced: RefCell::new(Synced {
                table: std::ptr::null(),
                locals: Vec::new(),
            }),
            cursor: Cell::new(index),
            events,
            settings: RefCell::new((Rc::new((*first).clone()), Arc::as_ptr(&first))),
            shared_settings: settings,
            histogram: metrics.request_duration.local(),
            errors,
            accept_errors: metrics.accept_errors.with_label_values(&["proxy"]),
            clients: RefCell::new(HashMap::new()),
            closing: Cell::new(false),
            listener: Cell::new(0),
            conns: RefCell::new(Vec::new()),
        }
    }

    /// The settings now: those of the last reload this worker's tick took up. A connection
    /// reads them per request (one non-atomic reference count), so a reload applies to the next
    /// request, not only to new connections.
    #[inline]
    pub(crate) fn settings(&self) -> Rc<Settings> {
        Rc::clone(&self.settings.borrow().0)
    }

    /// Takes up settings a reload published since the last look (a pointer compare when none).
    fn sync_settings(&self) {
        let latest = self.shared_settings.load();
        let mut settings = self.settings.borrow_mut();
        if !std::ptr::eq(settings.1, Arc::as_ptr(&latest)) {
            *settings = (Rc::new((**latest).clone()), Arc::as_ptr(&latest));
        }
    }

    /// `conn` closes after its current request: the worker is shutting down, or the proxy
    /// moved to another address since `conn` was accepted (one `Cell` compare more).
    #[inline]
    pub(crate) fn closing(&self, conn: &ConnInfo) -> bool {
        self.closing.get() || conn.listener != self.listener.get()
    }

    /// The proxy moved to another address ([`run`] swapped the listener): the connections
    /// accepted on the old one close after their current request, as at shutdown, and those
    /// waiting between requests are woken to close now.
    fn moved(&self) {
        self.listener.set(self.listener.get().wrapping_add(1));
        for conn in self.conns.borrow().iter() {
            if let Some(waker) = conn.upgrade().and_then(|c| c.waker.borrow_mut().take()) {
                waker.wake();
            }
        }
    }

    /// A connection waits between requests: a shutdown wakes it through `waker` (stored once per
    /// connection; its task's waker does not change).
    #[inline]
    pub(crate) fn watch_idle(&self, conn: &ConnInfo, waker: &Waker) {
        let mut slot = conn.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Notes a new connection for [`Worker::shut_down`].
    fn track(&self, conn: &Rc<ConnInfo>) {
        let mut conns = self.conns.borrow_mut();
        if conns.len() == conns.capacity() {
            conns.retain(|c| c.strong_count() > 0);
        }
        conns.push(Rc::downgrade(conn));
    }

    /// Starts the shutdown: connections close after their current request (which says
    /// `Connection: close`), and those waiting between requests are woken to close now.
    fn shut_down(&self) {
        self.closing.set(true);
        for conn in self.conns.borrow_mut().drain(..) {
            if let Some(waker) = conn.upgrade().and_then(|c| c.waker.borrow_mut().take()) {
                waker.wake();
            }
        }
    }

    /// Counts a request the proxy answered itself (one shared counter bump).
    pub(crate) fn count_refusal(&self, err: &ProxyError) {
        self.errors[err.index()].inc();
    }

    /// Routes and admits a request for `host` whose body announces `length` bytes (0 when
    /// none is announced), waiting (bounded by [`RESERVE_WAIT`] from `start`) while the
    /// instance's durable reservation is used up. `max_body` is the proxy's body limit, for an
    /// instance that sets none.
    pub(crate) async fn route_waiting(
        &self,
        host: &[u8],
        conn: &ConnInfo,
        start: Instant,
        length: u64,
        max_body: u64,
    ) -> Result<Rc<LocalUpstream>, ProxyError> {
        loop {
            match self.route(host, conn, length, max_body) {
                Ok(local) => return Ok(local),
                Err(Unrouted::Refuse(err)) => return Err(err),
                // One deadline for the whole wait, however often the ceiling rises in between.
                Err(Unrouted::Wait(meter, seen)) => {
                    if timeout_at(start + RESERVE_WAIT, meter.wait_raised(seen))
                        .await
                        .is_err()
                    {
                        return Err(ProxyError::Unavailable);
                    }
                }
            }
        }
    }

    /// Takes up the published table if it changed, without waiting for a request: the idle
    /// connections of instances no longer in it are closed (a worker without traffic would
    /// otherwise keep them, half-closed, until its next request).
    fn sync(&self) {
        let mut cache = self.table.borrow_mut();
        sync_with(&mut self.synced.borrow_mut(), cache.load());
        self.sync_settings();
    }

    /// Picks the instance for `host` and admits the request against its budget. A body of
    /// `length` bytes above the instance's limit (its own or its group's, else `max_body`) is
    /// refused with 413 before it is counted; a group passes it to a member that takes it.
    fn route(
        &self,
        host: &[u8],
        conn: &ConnInfo,
        length: u64,
        max_body: u64,
    ) -> Result<Rc<LocalUpstream>, Unrouted> {
        let mut cache = self.table.borrow_mut();
        let table = cache.load();
        let mut synced = self.synced.borrow_mut();
        sync_with(&mut synced, table);
        let target = conn
            .route
            .borrow_mut()
            .resolve(table, host)
            .map_err(|_| Unrouted::Refuse(ProxyError::BadHost))?;
        match target.ok_or(Unrouted::Refuse(ProxyError::NoRoute))? {
            Route::Instance(None) => Err(Unrouted::Refuse(ProxyError::Unavailable)),
            Route::Instance(Some(running)) => {
                // The route's incarnation is the local's (`sync_with` above): the request is
                // counted through the route's incarnation and meter, which a keep-alive
                // connection's memo holds, while the worker's slot is read beside them.
                let up = running.upstream;
                let local = local_at(&synced.locals, running.slot)
                    .ok_or(Unrouted::Refuse(ProxyError::Unavailable))?;
                debug_assert!(std::ptr::eq(&*local.upstream, up));
                if length > up.max_body(max_body) {
                    return Err(Unrouted::Refuse(TOO_LARGE));
                }
                match self.admit(up, running.meter) {
                    Admit::Go => Ok(Rc::clone(local)),
                    Admit::Refused => Err(Unrouted::Refuse(ProxyError::Exhausted)),
                    Admit::Wait(seen) => Err(Unrouted::Wait(Arc::clone(&up.meter), seen)),
                }
            }
            Route::Group(group) => {
                let n = group.members.len();
                let first = match group.balance {
                    Balance::RoundRobin => {
                        let c = self.cursor.get();
                        self.cursor.set(c.wrapping_add(1));
                        c
                    }
                    Balance::LeastInflight => least_inflight(&group.members, &synced.locals),
                };
                // An exhausted member (its drain not yet published) passes the request on; one
                // waiting for its reservation is waited for only if no other member can take it.
                let mut wait = None;
                let mut too_large = false;
                for k in 0..n {
                    let slot = group.members[first.wrapping_add(k) % n];
                    let Some(local) = local_at(&synced.locals, slot) else {
                        continue;
                    };
                    if length > local.upstream.max_body(max_body) {
                        too_large = true;
                        continue;
                    }
                    match self.admit(&local.upstream, &local.upstream.meter) {
                        Admit::Go => return Ok(Rc::clone(local)),
                        Admit::Refused => {}
                        Admit::Wait(seen) => {
                            wait.get_or_insert_with(|| {
                                Unrouted::Wait(Arc::clone(&local.upstream.meter), seen)
                            });
                        }
                    }
                }
                Err(wait.unwrap_or(Unrouted::Refuse(if too_large {
                    TOO_LARGE
                } else {
                    ProxyError::Unavailable
                })))
            }
        }
    }

    /// Counts the request on the instance's meter (`meter`, which is `up`'s: passed on its own
    /// so that a route that holds it saves the load). The in-flight slot is taken first so that a
    /// drain that sees the budget spent also sees this request in flight (the meter's module
    /// docs give the argument).
    #[inline]
    fn admit(&self, up: &Upstream, meter: &Meter) -> Admit {
        up.inflight.enter(self.index);
        // The control channel is unbounded so the hot path never waits on it; what it holds is
        // bounded by the meter's asks: at most one Reserve and one LimitReached per instance on
        // their way, however many requests wait or the controller lags (the meter's module
        // docs give the argument).
        match meter.admit() {
            Admission::Admitted => Admit::Go,
            Admission::Refill => {
                self.ask(up, Ask::Reserve);
                Admit::Go
            }
            Admission::Last => {
                self.ask(up, Ask::LimitReached);
                Admit::Go
            }
            Admission::Refused => {
                up.leave(self.index);
                Admit::Refused
            }
            Admission::Wait(seen) => {
                up.leave(self.index);
                self.ask(up, Ask::Reserve);
                Admit::Wait(seen)
            }
        }
    }

    /// Tells the controller `ask` about `up`, unless the same ask is already on its way
    /// ([`Meter::ask`]).
    #[inline]
    fn ask(&self, up: &Upstream, ask: Ask) {
        if up.meter.ask(ask) {
            let event = match ask {
                Ask::Reserve => ProxyEvent::Reserve { id: up.id },
                Ask::LimitReached => ProxyEvent::LimitReached { id: up.id },
            };
            let _ = self.events.send(event);
        }
    }

    /// Answers a request the proxy could not forward, and counts why (one shared counter bump).
    fn refuse(&self, err: ProxyError) -> Response<ProxyBody> {
        self.count_refusal(&err);
        err.response()
    }

    /// The `X-Forwarded-For` value of a client at `ip`: made once per address (see
    /// [`MAX_CLIENTS`]), so that each request copies it without touching a reference count.
    fn client_value(&self, ip: IpAddr) -> HeaderValue {
        let ip = ip.to_canonical();
        let mut clients = self.clients.borrow_mut();
        if let Some(value) = clients.get(&ip) {
            return value.clone();
        }
        let text = ip.to_string();
        let unknown = || HeaderValue::from_static("unknown");
        if clients.len() >= MAX_CLIENTS {
            return HeaderValue::from_str(&text).unwrap_or_else(|_| unknown());
        }
        let text: &'static str = Box::leak(text.into_boxed_str());
        let value = HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes()))
            .unwrap_or_else(|_| unknown());
        clients.insert(ip, value.clone());
        value
    }

    /// Writes the request head (`encode` puts it into the connection's buffer) on a pooled
    /// connection, or a new one. A connection that fails before the head left moves the request on
    /// unharmed, so this is never a retry of a request the upstream saw. Upgrades always get a
    /// connection of their own.
    pub(crate) async fn send_head(
        &self,
        finish: &mut Finish,
        upgrade: bool,
        encode: impl Fn(&mut UpstreamConn),
    ) -> Result<Box<UpstreamConn>, ProxyError> {
        loop {
            let pooled = if upgrade {
                None
            } else {
                finish.local.idle.borrow_mut().pop()
            };
            let fresh = pooled.is_none();
            let mut conn = match pooled {
                Some(conn) if !conn.is_usable() => continue,
                Some(conn) => conn,
                None => {
                    UpstreamConn::connect(
                        finish.local.upstream.addr,
                        self.settings().connect_timeout,
                    )
                    .await?
                }
            };
            encode(&mut conn);
            match conn.send_head().await {
                Ok(()) => {
                    finish.sent = true;
                    return Ok(conn);
                }
                Err(failed) if failed.sent || fresh => {
                    finish.sent = failed.sent;
                    return Err(failed.error);
                }
                Err(_) => {}
            }
        }
    }

    /// Forwards the request and waits for the response head (by the request's deadline).
    async fn forward(
        &self,
        finish: &mut Finish,
        parts: &Parts,
        body: ClientBody,
        via: &HeaderValue,
        upgrade: bool,
    ) -> Result<(Head, Box<UpstreamConn>), ProxyError> {
        let framing = RequestBody::of(parts, &body);
        let client = finish.conn.client.clone();
        let mut conn = self
            .send_head(finish, upgrade, |c| {
                c.encode_head(parts, &client, via, framing)
            })
            .await?;
        let expect = Expect {
            head: parts.method == Method::HEAD,
            upgrade,
        };
        let mut body = body;
        let body = (framing != RequestBody::None).then_some((&mut body, framing));
        let limit = self.settings().upstream_timeout;
        let head = conn
            .response(body, expect, finish.start + limit, limit)
            .await?;
        Ok((head, conn))
    }
}

/// The response the client gets for an upstream's `head` on `conn`: hop-by-hop fields removed,
/// `Via` added, the body streamed from the connection. A 101 to an upgrade splices the two
/// connections (the request counts as in flight until the tunnel closes).
fn respond(
    mut head: Head,
    conn: Box<UpstreamConn>,
    finish: Finish,
    downstream: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut head.headers, switching);
    head.headers.append(VIA, VIA_11.clone());
    let body = match downstream {
        Some(downstream) if switching => {
            tokio::task::spawn_local(tunnel(downstream, conn, finish));
            ProxyBody::empty()
        }
        _ => ProxyBody::upstream(conn, Decoder::new(head.framing), head.keep_alive, finish),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers;
    resp
}

/// Splices the client's upgraded connection with the upstream's after a 101; bytes the upstream
/// sent right after its head go to the client first.
async fn tunnel(downstream: OnUpgrade, conn: Box<UpstreamConn>, finish: Finish) {
    let _finish = finish;
    let (mut upstream, early) = conn.into_upgraded();
    let Ok(down) = downstream.await else { return };
    let mut down = TokioIo::new(down);
    if !early.is_empty() && down.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut down, &mut upstream).await;
}

/// The host a request names (RFC 9112 §3.2): the authority of an absolute-form or HTTP/2 target,
/// else the one `Host` field. Two `Host` fields, or an HTTP/2 `host` naming another host than
/// `:authority`, are refused rather than guessed at.
fn request_host(req: &Request<Incoming>) -> Result<&[u8], ProxyError> {
    let mut fields = req.headers().get_all(HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(ProxyError::BadHost);
    }
    match (req.uri().authority(), field) {
        (Some(authority), Some(field))
            if req.version() == Version::HTTP_2
                && !authority
                    .as_str()
                    .as_bytes()
                    .eq_ignore_ascii_case(field.as_bytes()) =>
        {
            Err(ProxyError::BadHost)
        }
        (Some(authority), _) => Ok(authority.as_str().as_bytes()),
        (None, Some(field)) => Ok(field.as_bytes()),
        (None, None) => Err(ProxyError::NoHost),
    }
}
/// Brings the worker's [`LocalUpstream`]s in line with `table` if it is not the one they were
/// built for (a pointer comparison on the way of every request).
#[inline]
fn sync_with(synced: &mut Synced, table: &Arc<RouteTable>) {
    if !std::ptr::eq(synced.table, Arc::as_ptr(table)) {
        resync(synced, table);
    }
}

/// Rebuilds the worker's [`LocalUpstream`]s for a new table, keeping those (and their idle
/// connections) whose slot still holds the same incarnation; the others are dropped, and their
/// pooled connections left to [`close_after_peer`]. Runs once per published table: one pointer compare per slot.
#[cold]
fn resync(synced: &mut Synced, table: &Arc<RouteTable>) {
    let mut old = std::mem::take(&mut synced.locals).into_iter();
    let mut gone = Vec::new();
    synced.locals = table
        .upstreams()
        .map(|up| {
            let kept = old.next().flatten();
            let Some(up) = up else {
                gone.extend(kept);
                return None;
            };
            Some(match kept {
                Some(local) if Arc::ptr_eq(&local.upstream, up) => local,
                other => {
                    gone.extend(other);
                    Rc::new(LocalUpstream {
                        upstream: Arc::clone(up),
                        idle: RefCell::new(Vec::new()),
                        left_table: Cell::new(false),
                    })
                }
            })
        })
        .collect();
    gone.extend(old.flatten());
    for local in gone {
        local.left_table.set(true);
        close_after_peer(std::mem::take(&mut *local.idle.borrow_mut()));
    }
    synced.table = Arc::as_ptr(table);
}

/// The position in `members` of the instance with the fewest requests in flight.
fn least_inflight(members: &[usize], locals: &[Option<Rc<LocalUpstream>>]) -> usize {
    let mut best = (0, u64::MAX);
    for (pos, &i) in members.iter().enumerate() {
        let n = local_at(locals, i).map_or(u64::MAX, |l| l.upstream.inflight.total());
        if n < best.1 {
            best = (pos, n);
        }
    }
    best.0
}

/// Why [`Worker::route`] did not pick an instance.
enum Unrouted {
    /// Answer the request with this error.
    Refuse(ProxyError),
    /// The instance's durable reservation is used up: wait until the meter's ceiling rises
    /// above the value seen, then route again.
    Wait(Arc<Meter>, u64),
}

/// A body above the routed instance's limit.
const TOO_LARGE: ProxyError = ProxyError::Request(RequestError::BodyTooLarge);

/// What [`Worker::admit`] decided.
enum Admit {
    Go,
    Refused,
    /// Wait for the reservation to rise above this ceiling (the one the meter compared with).
    Wait(u64),
}

/// How long a request may wait, in all, for the controller to make the next block of requests
/// durable before it is answered 503; a wait happens only when requests outrun the store's commits.
const RESERVE_WAIT: Duration = Duration::from_secs(5);

/// Per-connection facts the request path needs.
pub(crate) struct ConnInfo {
    /// The client's address as `X-Forwarded-For` gives it.
    pub(crate) client: HeaderValue,
    /// Where this connection's last host led.
    route: RefCell<RouteMemo>,
    /// Responses of this connection waiting for the client to take a body frame (HTTP/2).
    waiting: Cell<u32>,
    /// Wakes the connection's task while it waits between requests (HTTP/1), for a shutdown.
    waker: RefCell<Option<Waker>>,
    /// The worker's listener it was accepted on ([`Worker::closing`]).
    listener: u32,
}

/// Handles one request: route, count, rewrite, forward, stream back.
async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    if req.method() == Method::CONNECT {
        return Ok(worker.refuse(ProxyError::MethodNotAllowed));
    }
    let routed = match request_host(&req) {
        // HTTP/2 request bodies are not held to the body limits (HTTP/1 only), so no length.
        Ok(host) => worker.route_waiting(host, &conn, start, 0, u64::MAX).await,
        Err(err) => Err(err),
    };
    let local = match routed {
        Ok(local) => local,
        Err(err) => return Ok(worker.refuse(err)),
    };
    let mut finish = Finish::new(local, Rc::clone(&worker), conn, start);

    let (mut parts, body) = req.into_parts();
    let upgrade = parts.version == Version::HTTP_11 && headers::wants_upgrade(&parts.headers);
    let via = match parts.version {
        Version::HTTP_2 => &VIA_2,
        Version::HTTP_10 => &VIA_10,
        _ => &VIA_11,
    };
    if let Some(authority) = parts.uri.authority() {
        // HTTP/2 and absolute-form: the upstream speaks HTTP/1.1 and wants origin-form plus the
        // target's authority as `Host`, replacing any `Host` the client sent (RFC 9112 §3.2.2).
        // The authority was checked by the route lookup, so it is a valid field value.
        match HeaderValue::from_str(authority.as_str()) {
            Ok(host) => {
                parts.headers.insert(HOST, host);
            }
            Err(_) => return Ok(worker.refuse(ProxyError::BadHost)),
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    let downstream = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    let body = ClientBody::new(body, worker.settings().request_body_timeout);
    match worker
        .forward(&mut finish, &parts, body, via, upgrade)
        .await
    {
        Ok((head, conn)) => Ok(respond(head, conn, finish, downstream)),
        Err(err) => Ok(worker.refuse(err)),
    }
}

/// Spawns futures on the worker's own thread: hyper's HTTP/2 streams never leave it.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// What the proxy tells its workers, through a `watch` they poll anyway: shut down, or take
/// the listener waiting in your slot of [`Moves`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Control {
    /// Stop accepting and let open connections finish.
    pub closing: bool,
    /// Bumped by each move to another address.
    pub moves: u64,
}

/// Each worker's listener on a new address, by worker index, until the worker takes it (a
/// lock taken once per move, never per request).
pub(crate) type Moves = Arc<[std::sync::Mutex<Option<std::net::TcpListener>>]>;

/// Runs the worker on the current thread until `control` says closing, then lets open
/// connections finish for up to the shutdown grace: HTTP/1 connections end after their current
/// request (answered with `Connection: close`) and at once when they wait between requests;
/// HTTP/2 connections get a GOAWAY.
///
/// A listener that arrives in the worker's slot of `moves` (the proxy moved to another
/// address) replaces the one accepted on: the old one is closed, and the HTTP/1 connections it
/// gave end as at shutdown (after their current request); HTTP/2 ones go on until they end or
/// idle out.
pub(crate) fn run(
    worker: Worker,
    listener: std::net::TcpListener,
    moves: Moves,
    mut control: watch::Receiver<Control>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let worker = Rc::new(worker);
        let mut listener = net::Listener::new(
            TcpListener::from_std(listener)?,
            worker.settings().max_connections,
            "proxy",
            worker.accept_errors.clone(),
        );
        let mut h2 = http2::Builder::new(LocalExec);
        h2.timer(TokioTimer::new());
        let h2 = Rc::new(h2);
        let graceful = GracefulShutdown::new();

        let flusher = Rc::clone(&worker);
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                flusher.histogram.flush();
                flusher.sync();
            }
        });

        // The main future of the worker's `LocalSet` is polled whenever any of its tasks was
        // woken, that is for every request: what it waits on must cost nothing when idle.
        loop {
            tokio::select! {
                accepted = listener.accept() => serve(&h2, &graceful, &worker, accepted),
                changed = control.changed() => {
                    if changed.is_err() || control.borrow_and_update().closing {
                        break;
                    }
                    let new = moves
                        .get(worker.index)
                        .and_then(|slot| slot.lock().ok()?.take());
                    match new.map(TcpListener::from_std) {
                        Some(Ok(new)) => {
                            drop(listener.replace(new));
                            worker.moved();
                        }
                        Some(Err(err)) => tracing::error!(%err, worker = worker.index, "cannot accept on the new proxy address; the old one is kept"),
                        None => {}
                    }
                }
            }
        }
        let drained = listener.drained();
        drop(listener);
        worker.shut_down();
        let all = async {
            graceful.shutdown().await;
            drained.await;
        };
        if timeout(worker.settings().shutdown_grace, all)
            .await
            .is_err()
        {
            tracing::warn!(
                worker = worker.index,
                "connections still open after the shutdown grace; closing them"
            );
        }
        worker.histogram.flush();
        Ok(())
    })
}

/// Serves one accepted connection, holding its place under the cap: HTTP/1 on the proxy's own
/// server ([`h1`]), HTTP/2 with prior knowledge (told by its preface) on hyper's.
fn serve(
    h2: &Rc<http2::Builder<LocalExec>>,
    graceful: &GracefulShutdown,
    worker: &Rc<Worker>,
    accepted: Accepted,
) {
    let Accepted {
        stream,
        peer,
        permit,
    } = accepted;
    let start = Instant::now();
    if !super::ACCEPTED_INHERIT_NODELAY {
        let _ = stream.set_nodelay(true);
    }
    let info = Rc::new(ConnInfo {
        client: worker.client_value(peer.ip()),
        route: RefCell::new(RouteMemo::default()),
        waiting: Cell::new(0),
        waker: RefCell::new(None),
        listener: worker.listener.get(),
    });
    worker.track(&info);
    let worker = Rc::clone(worker);
    let h2 = Rc::clone(h2);
    let watcher = graceful.watcher();
    // Boxed: the connection's future is some kilobytes (its HTTP/2 path most), and the task
    // moves what it holds several times on the way in and out (spawning, storing, replacing it
    // by its output): the box is one copy and one allocation instead.
    tokio::task::spawn_local(Box::pin(async move {
        let _permit = permit;
        let mut conn = h1::Connection::new(stream, BytesMut::new(), Rc::clone(&info));
        match conn.sniff(&worker, start).await {
            Some(false) => conn.serve(&worker, start).await,
            Some(true) => {
                let (stream, early) = conn.into_parts();
                serve_h2(&h2, watcher, &worker, info, stream, early, peer).await
            }
            None => tracing::debug!(%peer, "closed a silent client connection"),
        }
    }));
}

/// Serves an HTTP/2 connection (its first bytes already read: `early`) under its watchdog.
async fn serve_h2(
    builder: &http2::Builder<LocalExec>,
    watcher: Watcher,
    worker: &Rc<Worker>,
    info: Rc<ConnInfo>,
    stream: tokio::net::TcpStream,
    early: Bytes,
    peer: std::net::SocketAddr,
) {
    // The service holds one reference, the watchdog's look another; every request in progress
    // (and every response body still streaming) holds one more.
    let watched = Rc::downgrade(&info);
    let busy = move || match watched.upgrade() {
        Some(info) if info.waiting.get() > 0 => Busy::Stalled,
        Some(info) if Rc::strong_count(&info) > 2 => Busy::Working,
        _ => Busy::Idle,
    };
    let timeouts = worker.settings().timeouts();
    let service_worker = Rc::clone(worker);
    let service = hyper::service::service_fn(move |req| {
        handle(Rc::clone(&service_worker), Rc::clone(&info), req)
    });
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Rewind::new(
        early,
        Watched::new(stream, Arc::clone(&activity)),
    ));
    let conn = watcher.watch(builder.serve_connection(io, service));
    match net::supervise(conn, &activity, timeouts, busy).await {
        Some(Err(err)) => tracing::debug!(%err, "client connection ended with an error"),
        None => tracing::debug!(%peer, "closed a silent, idle or stalled client connection"),
        Some(Ok(())) => {}
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind<T> {
    early: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(early: Bytes, inner: T) -> Rewind<T> {
        Rewind { early, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
