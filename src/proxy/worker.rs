//! One proxy worker: a thread with its own `current_thread` runtime, its own `SO_REUSEPORT`
//! listener, and its own upstream connection pool, so a request never wakes another thread.
//!
//! Everything a worker owns is `Rc`/`RefCell`: no lock and no atomic reference count is touched on
//! the request path except the instance's [`Meter`](super::meter::Meter) (one shared `fetch_add`) and the
//! worker's own in-flight slot (uncontended). Per request, beyond what hyper allocates itself: no
//! allocation for routing, counting or the pool; the route table is read through an
//! `arc_swap::Cache` (one atomic load when it has not changed).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use http::header::{HOST, VIA};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self as client, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::local::LocalHistogram;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

use super::ProxyEvent;
use super::body::ProxyBody;
use super::error::ProxyError;
use super::headers::{self, VIA_2, VIA_10, VIA_11};
use super::meter::{Admission, Meter};
use super::route::{RouteMemo, RouteTable, Target, Upstream};
use crate::config::{Balance, ProxyConfig};
use crate::metrics::Metrics;

/// The data-path settings a worker needs, taken from [`ProxyConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub header_read_timeout: Duration,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub pool_idle: usize,
    pub shutdown_grace: Duration,
}

impl Settings {
    pub(crate) fn new(cfg: &ProxyConfig, shutdown_grace: Duration) -> Settings {
        Settings {
            header_read_timeout: cfg.header_read_timeout,
            connect_timeout: cfg.upstream_connect_timeout,
            upstream_timeout: cfg.upstream_timeout,
            pool_idle: cfg.pool_idle_per_instance,
            shutdown_grace,
        }
    }
}

/// A worker's view of one upstream: the shared [`Upstream`] and this worker's idle connections to it.
#[derive(Debug)]
pub(crate) struct LocalUpstream {
    upstream: Arc<Upstream>,
    idle: RefCell<Vec<SendRequest<Incoming>>>,
}

/// The table a worker last synchronised with, and its [`LocalUpstream`]s in the table's order.
struct Synced {
    table: *const RouteTable,
    locals: Vec<Rc<LocalUpstream>>,
}

/// The state of one worker thread.
pub(crate) struct Worker {
    index: usize,
    table: RefCell<Cache<Arc<ArcSwap<RouteTable>>, Arc<RouteTable>>>,
    synced: RefCell<Synced>,
    /// Round-robin cursor, per worker: workers need not agree for the spread to be even.
    cursor: Cell<usize>,
    events: mpsc::UnboundedSender<ProxyEvent>,
    settings: Settings,
    histogram: LocalHistogram,
    metrics: Metrics,
}

/// What happens when a forwarded request ends (its response body ended or was dropped, or it
/// failed): the in-flight slot is released, the duration observed, and a connection whose response
/// was read to the end goes back to the pool.
pub(crate) struct Finish {
    local: Rc<LocalUpstream>,
    worker: Rc<Worker>,
    sender: Option<SendRequest<Incoming>>,
    start: Instant,
    completed: bool,
}

impl std::fmt::Debug for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finish")
            .field("instance", &self.local.upstream.name)
            .finish()
    }
}

impl Finish {
    /// Marks the response body as read to its end, so the connection may be reused.
    pub(crate) fn complete(&mut self) {
        self.completed = true;
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.local.upstream.inflight.leave(self.worker.index);
        self.worker
            .histogram
            .observe(self.start.elapsed().as_secs_f64());
        if self.completed
            && let Some(sender) = self.sender.take()
        {
            let mut idle = self.local.idle.borrow_mut();
            if idle.len() < self.worker.settings.pool_idle && !sender.is_closed() {
                idle.push(sender);
            }
        }
    }
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        table: Arc<ArcSwap<RouteTable>>,
        events: mpsc::UnboundedSender<ProxyEvent>,
        settings: Settings,
        metrics: Metrics,
    ) -> Worker {
        Worker {
            index,
            table: RefCell::new(Cache::new(table)),
            synced: RefCell::new(Synced {
                table: std::ptr::null(),
                locals: Vec::new(),
            }),
            cursor: Cell::new(index),
            events,
            settings,
            histogram: metrics.request_duration.local(),
            metrics,
        }
    }

    /// Picks the instance for `req` and admits the request against its budget.
    fn route(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<Rc<LocalUpstream>, Unrouted> {
        // Absolute-form and HTTP/2 carry the authority in the URI; it wins over `Host` (RFC 9112 §3.2.2).
        let host = match req.uri().authority() {
            Some(a) => a.as_str().as_bytes(),
            None => req
                .headers()
                .get(HOST)
                .map(HeaderValue::as_bytes)
                .ok_or(Unrouted::Refuse(ProxyError::NoHost))?,
        };
        let mut cache = self.table.borrow_mut();
        let table = cache.load();
        let mut synced = self.synced.borrow_mut();
        if !std::ptr::eq(synced.table, Arc::as_ptr(table)) {
            resync(&mut synced, table);
        }
        let target = conn.route.borrow_mut().resolve(table, host);
        match target.ok_or(Unrouted::Refuse(ProxyError::NoRoute))? {
            Target::Instance(None) => Err(Unrouted::Refuse(ProxyError::Unavailable)),
            Target::Instance(Some(i)) => {
                let local = &synced.locals[*i];
                match self.admit(local) {
                    Admit::Go => Ok(Rc::clone(local)),
                    Admit::Refused => Err(Unrouted::Refuse(ProxyError::Exhausted)),
                    Admit::Wait(seen) => {
                        Err(Unrouted::Wait(Arc::clone(&local.upstream.meter), seen))
                    }
                }
            }
            Target::Group(group) => {
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
                for k in 0..n {
                    let local = &synced.locals[group.members[first.wrapping_add(k) % n]];
                    match self.admit(local) {
                        Admit::Go => return Ok(Rc::clone(local)),
                        Admit::Refused => {}
                        Admit::Wait(seen) => {
                            wait.get_or_insert_with(|| {
                                Unrouted::Wait(Arc::clone(&local.upstream.meter), seen)
                            });
                        }
                    }
                }
                Err(wait.unwrap_or(Unrouted::Refuse(ProxyError::Unavailable)))
            }
        }
    }

    /// Counts the request on the instance's meter. The in-flight slot is taken first so that a
    /// drain that sees the budget spent also sees this request in flight.
    #[inline]
    fn admit(&self, local: &LocalUpstream) -> Admit {
        let up = &local.upstream;
        up.inflight.enter(self.index);
        // The control channel is unbounded so the hot path never waits on it; it carries at most
        // one message per reserved block and one per spent budget.
        match up.meter.admit() {
            Admission::Admitted => Admit::Go,
            Admission::Refill => {
                let _ = self.events.send(ProxyEvent::Reserve { id: up.id });
                Admit::Go
            }
            Admission::Last => {
                let _ = self.events.send(ProxyEvent::LimitReached { id: up.id });
                Admit::Go
            }
            Admission::Refused => {
                up.inflight.leave(self.index);
                Admit::Refused
            }
            Admission::Wait => {
                up.inflight.leave(self.index);
                let _ = self.events.send(ProxyEvent::Reserve { id: up.id });
                Admit::Wait(up.meter.reserved())
            }
        }
    }

    fn refuse(&self, err: ProxyError) -> Response<ProxyBody> {
        if err.is_upstream() {
            self.metrics
                .upstream_errors
                .with_label_values(&[err.kind()])
                .inc();
        } else {
            self.metrics.refused.with_label_values(&[err.kind()]).inc();
        }
        err.response()
    }

    /// Sends `req` on a pooled connection, or a new one; a request the pool's connection did not
    /// take (closed before it was written) moves on unharmed, so this is never a retry of a request
    /// the upstream saw.
    async fn send(
        &self,
        local: &LocalUpstream,
        mut req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, SendRequest<Incoming>), ProxyError> {
        loop {
            let pooled = local.idle.borrow_mut().pop();
            let Some(mut sender) = pooled else { break };
            if sender.is_closed() || (!sender.is_ready() && sender.ready().await.is_err()) {
                continue;
            }
            match timeout(self.settings.upstream_timeout, sender.try_send_request(req)).await {
                Err(_) => return Err(ProxyError::Timeout(self.settings.upstream_timeout)),
                Ok(Ok(resp)) => return Ok((resp, sender)),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(ProxyError::Protocol(err.into_error())),
                },
            }
        }
        let mut sender = self.connect(local.upstream.addr, false).await?;
        match timeout(self.settings.upstream_timeout, sender.send_request(req)).await {
            Err(_) => Err(ProxyError::Timeout(self.settings.upstream_timeout)),
            Ok(Err(err)) => Err(ProxyError::Protocol(err)),
            Ok(Ok(resp)) => Ok((resp, sender)),
        }
    }

    /// Opens a new upstream connection; its driver runs as a task on this worker.
    async fn connect(
        &self,
        addr: SocketAddr,
        upgrades: bool,
    ) -> Result<SendRequest<Incoming>, ProxyError> {
        let stream = match timeout(self.settings.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ProxyError::ConnectTimeout(self.settings.connect_timeout)),
            Ok(Err(err)) => return Err(ProxyError::connect(err)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = client::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Protocol)?;
        if upgrades {
            tokio::task::spawn_local(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
        }
        Ok(sender)
    }

    /// An `Upgrade` request: a connection of its own, and after the upstream's 101 the two
    /// upgraded connections are spliced. The request counts as in flight until the tunnel closes.
    async fn upgrade(&self, mut req: Request<Incoming>, finish: Finish) -> Response<ProxyBody> {
        let downstream = hyper::upgrade::on(&mut req);
        let mut sender = match self.connect(finish.local.upstream.addr, true).await {
            Ok(sender) => sender,
            Err(err) => return self.refuse(err),
        };
        let mut resp = match timeout(self.settings.upstream_timeout, sender.send_request(req)).await
        {
            Err(_) => return self.refuse(ProxyError::Timeout(self.settings.upstream_timeout)),
            Ok(Err(err)) => return self.refuse(ProxyError::Protocol(err)),
            Ok(Ok(resp)) => resp,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(resp.headers_mut(), false);
            resp.headers_mut().append(VIA, VIA_11.clone());
            return resp.map(|body| ProxyBody::upstream(body, finish));
        }
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::task::spawn_local(async move {
            let _finish = finish;
            if let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up))
                        .await;
            }
        });
        headers::strip_hop_by_hop(resp.headers_mut(), true);
        resp.headers_mut().append(VIA, VIA_11.clone());
        resp.map(|_| ProxyBody::empty())
    }
}

/// Rebuilds the worker's [`LocalUpstream`]s for a new table, keeping those (and their idle
/// connections) whose upstream is still the same incarnation. Runs once per published table.
#[cold]
fn resync(synced: &mut Synced, table: &Arc<RouteTable>) {
    let mut old: HashMap<*const Upstream, Rc<LocalUpstream>> = synced
        .locals
        .drain(..)
        .map(|l| (Arc::as_ptr(&l.upstream), l))
        .collect();
    synced.locals = table
        .upstreams
        .iter()
        .map(|up| {
            old.remove(&Arc::as_ptr(up)).unwrap_or_else(|| {
                Rc::new(LocalUpstream {
                    upstream: Arc::clone(up),
                    idle: RefCell::new(Vec::new()),
                })
            })
        })
        .collect();
    synced.table = Arc::as_ptr(table);
}

/// The position in `members` of the instance with the fewest requests in flight.
fn least_inflight(members: &[usize], locals: &[Rc<LocalUpstream>]) -> usize {
    let mut best = (0, u64::MAX);
    for (pos, &i) in members.iter().enumerate() {
        let n = locals[i].upstream.inflight.total();
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

/// What [`Worker::admit`] decided.
enum Admit {
    Go,
    Refused,
    Wait(u64),
}

/// How long a request waits for the controller to make the next block of requests durable
/// before it is answered 503; a wait happens only when requests outrun the store's commits.
const RESERVE_WAIT: Duration = Duration::from_secs(5);

/// Per-connection facts the request path needs.
struct ConnInfo {
    client: HeaderValue,
    /// Where this connection's last host led.
    route: RefCell<RouteMemo>,
}

/// Handles one request: route, count, rewrite, forward, stream back.
async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let local = loop {
        match worker.route(&req, &conn) {
            Ok(local) => break local,
            Err(Unrouted::Refuse(err)) => return Ok(worker.refuse(err)),
            Err(Unrouted::Wait(meter, seen)) => {
                if timeout(RESERVE_WAIT, meter.wait_raised(seen))
                    .await
                    .is_err()
                {
                    return Ok(worker.refuse(ProxyError::Unavailable));
                }
            }
        }
    };
    let mut finish = Finish {
        local,
        worker: Rc::clone(&worker),
        sender: None,
        start,
        completed: false,
    };

    let upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
    let via = match req.version() {
        Version::HTTP_2 => &VIA_2,
        Version::HTTP_10 => &VIA_10,
        _ => &VIA_11,
    };
    if let Some(authority) = req.uri().authority().cloned() {
        // HTTP/2 and absolute-form: the upstream speaks HTTP/1.1 and wants origin-form plus `Host`.
        if !req.headers().contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(HOST, host);
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    *req.version_mut() = Version::HTTP_11;
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h, upgrade);
    headers::append_forwarded_for(h, &conn.client);
    h.append(VIA, via.clone());

    if upgrade {
        return Ok(worker.upgrade(req, finish).await);
    }
    match worker.send(&finish.local, req).await {
        Ok((mut resp, sender)) => {
            finish.sender = Some(sender);
            headers::strip_hop_by_hop(resp.headers_mut(), false);
            resp.headers_mut().append(VIA, VIA_11.clone());
            Ok(resp.map(|body| ProxyBody::upstream(body, finish)))
        }
        Err(err) => Ok(worker.refuse(err)),
    }
}

/// Spawns futures on the worker's own thread: hyper's HTTP/2 streams and the upstream
/// connections' drivers never leave it.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Runs the worker on the current thread until `shutdown` turns true, then lets open
/// connections finish for up to the shutdown grace.
pub(crate) fn run(
    worker: Worker,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::from_std(listener)?;
        let worker = Rc::new(worker);
        let mut builder = auto::Builder::new(LocalExec);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(worker.settings.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();

        let flusher = Rc::clone(&worker);
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                flusher.histogram.flush();
            }
        });

        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => serve(&builder, &graceful, &worker, stream, peer),
                    Err(err) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        if timeout(worker.settings.shutdown_grace, graceful.shutdown())
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

fn serve(
    builder: &auto::Builder<LocalExec>,
    graceful: &GracefulShutdown,
    worker: &Rc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let info = Rc::new(ConnInfo {
        client: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        route: RefCell::new(RouteMemo::default()),
    });
    let worker = Rc::clone(worker);
    let service =
        hyper::service::service_fn(move |req| handle(Rc::clone(&worker), Rc::clone(&info), req));
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    tokio::task::spawn_local(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%err, "client connection ended with an error");
        }
    });
}
