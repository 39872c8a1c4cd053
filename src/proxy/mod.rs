//! The data path: listeners, routing, counting and forwarding of instance traffic.
//!
//! [`Proxy::start`] binds one `SO_REUSEPORT` listener per worker and runs each worker on a thread
//! of its own (see [`worker`]). The proxy reads the [`RouteTable`] the controller publishes and
//! tells the controller one thing: that an instance's request budget is spent ([`ProxyEvent`]).
//!
//! Requests go upstream through `client` (the proxy's HTTP/1.1 client, no task of its own) with
//! responses framed by [`framing`] (RFC 9112 §6.3); errors are classified in [`error`].

pub mod body;
mod client;
pub mod error;
pub mod framing;
mod h1;
pub mod headers;
pub mod meter;
pub mod request;
pub mod route;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

pub use route::RouteTable;

use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::net;

/// What the proxy tells the controller, on the control channel.
///
/// The channel is an unbounded `mpsc` so that a worker never waits on it, and is bounded by
/// what is sent: at most one `Reserve` and one `LimitReached` per instance are on their way at a
/// time (the meter's [`Ask`](meter::Ask) bits; the argument is in [`meter`]'s docs), so a
/// lagging controller makes requests wait for their reservation, never the channel grow with
/// traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// The request that took the instance's count to its `num_requests` was admitted.
    LimitReached {
        /// The instance.
        id: Uuid,
    },
    /// The instance's durable reservation is half used (or used up): reserve the next block.
    Reserve {
        /// The instance.
        id: Uuid,
    },
}

/// The number of workers `cfg` asks for: `workers`, or one per available core when it is 0.
fn worker_count(cfg: &ProxyConfig) -> usize {
    if cfg.workers > 0 {
        cfg.workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The running proxy.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    workers: usize,
    control: Arc<watch::Sender<worker::Control>>,
    threads: Vec<JoinHandle<()>>,
    settings: ProxySettings,
}

/// Changes the running proxy's settings (a configuration reload): timeouts, limits, the idle
/// pool and requests per connection apply to every worker within its next tick (250 ms), to
/// the next request of open connections too; a new listen address is bound and taken over
/// ([`ProxySettings::rebind`]). The worker count, the base domain, the connection cap and the
/// default balance are read at start only ([`ProxySettings::restart_keys`]).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    shared: Arc<ArcSwap<worker::Settings>>,
    cap: usize,
    /// Tells the workers to look at their slot in `moves` ([`ProxySettings::rebind`]); weak,
    /// so that the workers still end when the [`Proxy`] is dropped.
    control: std::sync::Weak<watch::Sender<worker::Control>>,
    /// Each worker's listener on a new address, until it takes it.
    moves: worker::Moves,
}

impl ProxySettings {
    /// Publishes the settings of `cfg` to the workers; `shutdown_grace` bounds how long open
    /// connections may finish at shutdown (`defaults.drain_timeout`).
    pub fn apply(&self, cfg: &ProxyConfig, shutdown_grace: Duration) {
        self.shared.store(Arc::new(worker::Settings::new(
            cfg,
            shutdown_grace,
            self.cap,
        )));
    }

    /// Moves the proxy to `addr` (a reload that changed `proxy.listen`): one `SO_REUSEPORT`
    /// listener per worker is bound there first (any failure, e.g. the address in use, leaves
    /// everything as it was), then each worker accepts on its new one and closes its old one.
    /// HTTP/1 connections accepted on the old address end as at shutdown: their current
    /// request is answered (with `Connection: close`), and those waiting between requests
    /// close; HTTP/2 ones go on until they end or idle out. A connection that the old
    /// address's accept queue held but no worker had accepted yet is reset. Returns the address
    /// bound (port 0 resolved).
    pub fn rebind(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let (listeners, bound) = bind_all(addr, self.moves.len())?;
        for (slot, listener) in self.moves.iter().zip(listeners) {
            // A listener a worker has not taken yet (two moves in a row) is replaced.
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(listener);
            }
        }
        // Through the watch the workers poll anyway, so that a move costs nothing per request.
        let control = self
            .control
            .upgrade()
            .ok_or_else(|| std::io::Error::other("the proxy has stopped"))?;
        control.send_modify(|c| c.moves += 1);
        Ok(bound)
    }

    /// The `proxy` keys that differ between `old` and `new` and that only a restart applies.
    pub fn restart_keys(old: &ProxyConfig, new: &ProxyConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if old.workers != new.workers {
            keys.push("proxy.workers");
        }
        if old.base_domain != new.base_domain {
            keys.push("proxy.base_domain");
        }
        if old.max_connections_per_worker != new.max_connections_per_worker {
            keys.push("proxy.max_connections_per_worker");
        }
        if old.balance != new.balance {
            keys.push("proxy.balance");
        }
        keys
    }
}

impl Proxy {
    /// Binds the listeners (an error here is returned before anything runs) and starts the workers.
    /// `shutdown_grace` bounds how long open connections may finish after [`Proxy::shutdown`];
    /// `open_files` is the open-file limit a derived connection cap is taken from.
    pub fn start(
        cfg: &ProxyConfig,
        shutdown_grace: Duration,
        table: Arc<ArcSwap<RouteTable>>,
        events: mpsc::UnboundedSender<ProxyEvent>,
        metrics: &Metrics,
        open_files: u64,
    ) -> std::io::Result<Proxy> {
        let workers = worker_count(cfg);
        // A proxied connection may hold an upstream connection too; half the files stay for
        // the admin listener, the store and the instances.
        let cap = net::connection_cap(
            cfg.max_connections_per_worker,
            open_files,
            4 * workers as u64,
        );
        let (listeners, addr) = bind_all(cfg.listen, workers)?;
        let moves: worker::Moves = (0..workers).map(|_| Default::default()).collect();
        let (control, rx) = watch::channel(worker::Control::default());
        let control = Arc::new(control);
        let settings = ProxySettings {
            shared: Arc::new(ArcSwap::from_pointee(worker::Settings::new(
                cfg,
                shutdown_grace,
                cap,
            ))),
            cap,
            control: Arc::downgrade(&control),
            moves: Arc::clone(&moves),
        };
        let mut threads = Vec::with_capacity(workers);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (table, events, settings, metrics, rx, moves) = (
                Arc::clone(&table),
                events.clone(),
                Arc::clone(&settings.shared),
                metrics.clone(),
                rx.clone(),
                Arc::clone(&moves),
            );
            let thread = std::thread::Builder::new()
                .name(format!("autokill-proxy-{index}"))
                .spawn(move || {
                    // The worker is `Rc`-based: it is built on, and never leaves, its own thread.
                    let worker = worker::Worker::new(index, table, events, settings, metrics);
                    if let Err(err) = worker::run(worker, listener, moves, rx) {
                        tracing::error!(%err, worker = index, "proxy worker failed");
                    }
                })?;
            threads.push(thread);
        }
        tracing::info!(%addr, workers, connections_per_worker = cap, "proxy listening");
        Ok(Proxy {
            addr,
            workers,
            control,
            threads,
            settings,
        })
    }

    /// What a configuration reload changes the running proxy's settings through.
    pub fn settings(&self) -> ProxySettings {
        self.settings.clone()
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many workers run (each has its own in-flight slot in every instance's meter).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Stops accepting, lets open connections finish (bounded by the shutdown grace), and waits for
    /// the workers to end.
    pub async fn shutdown(self) {
        self.control.send_modify(|c| c.closing = true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Whether a connection accepted from a listener with `TCP_NODELAY` has it too (Linux copies the
/// listener's options into the new socket); elsewhere each accepted connection sets it itself.
pub(crate) const ACCEPTED_INHERIT_NODELAY: bool = cfg!(target_os = "linux");

/// `workers` listeners on `addr`, and the address they listen on: port 0 resolves on the first
/// bind, and the others share that port.
fn bind_all(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind(bound)?);
    }
    Ok((listeners, bound))
}

/// A non-blocking listener with `SO_REUSEPORT`, so that every worker has its own accept queue.
/// `TCP_NODELAY` is set on the listener: Linux copies it to every connection accepted from it,
/// which saves a `setsockopt` per connection ([`ACCEPTED_INHERIT_NODELAY`]).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|err| {
        std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}"))
    })?;
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection `setsockopt` is skipped where the listener's `TCP_NODELAY` is inherited:
    /// a connection accepted from a proxy listener must have it all the same.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let (listeners, addr) = bind_all(([127, 0, 0, 1], 0).into(), 1).unwrap();
        let listener =
            tokio::net::TcpListener::from_std(listeners.into_iter().next().unwrap()).unwrap();
        let connect = tokio::net::TcpStream::connect(addr);
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        let (stream, _) = accepted.unwrap();
        drop(connected);
        if ACCEPTED_INHERIT_NODELAY {
            assert!(stream.nodelay().unwrap(), "TCP_NODELAY not inherited");
        }
    }
}
