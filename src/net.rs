//! What both listeners (proxy workers and the admin server) do with connections before HTTP: a cap
//! on connections served at once, the open-file limit, back-off when descriptors run out, and a
//! per-connection watchdog that closes silent, idle and stalled connections.
//!
//! Costs: per connection one semaphore permit, one `Arc` and one timer that wakes every quarter of
//! the shortest timeout; per read or write that moves bytes one relaxed load and store on a line
//! only this connection's task touches. Nothing per request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Raises the soft limit of open files to the hard limit (a server's connections are files) and
/// returns the soft limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit`/`setrlimit` only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "cannot raise the open-file limit"
            );
        }
    }
    lim.rlim_cur
}

/// The connection cap for a configured value: the value, or `share` of the open-file limit when 0.
pub fn connection_cap(configured: usize, open_files: u64, share: u64) -> usize {
    if configured > 0 {
        return configured;
    }
    usize::try_from(open_files / share.max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// A listener that serves at most a given number of connections at once: past the cap it stops
/// accepting, so further connections wait in the kernel's accept queue rather than take a file
/// each. When accepting fails for want of descriptors it backs off instead of spinning, counts
/// the failure, and logs at most once a second.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    cap: usize,
    name: &'static str,
    errors: IntCounter,
    last_log: Option<Instant>,
}

/// An accepted connection and its place under the cap (freed when the permit is dropped).
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Holds the connection's place under the cap.
    pub permit: OwnedSemaphorePermit,
}

/// Longest back-off after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

impl Listener {
    /// Serves at most `cap` connections of `inner` at once; `errors` counts failed accepts.
    pub fn new(inner: TcpListener, cap: usize, name: &'static str, errors: IntCounter) -> Listener {
        let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
        Listener {
            inner,
            permits: Arc::new(Semaphore::new(cap)),
            cap,
            name,
            errors,
            last_log: None,
        }
    }

    /// Accepts from `inner` from now on, keeping the cap and the connections accepted so far
    /// (a listener moved to another address); returns the old socket, which stops accepting
    /// once dropped.
    pub fn replace(&mut self, inner: TcpListener) -> TcpListener {
        std::mem::replace(&mut self.inner, inner)
    }

    /// A future that ends once every connection accepted so far has ended (all places under the
    /// cap are free), for a shutdown that waits for them.
    pub fn drained(&self) -> impl Future<Output = ()> + 'static {
        let permits = Arc::clone(&self.permits);
        let all = u32::try_from(self.cap).unwrap_or(u32::MAX);
        async move {
            let _ = permits.acquire_many(all).await;
        }
    }

    /// Waits for a place under the cap, then for a connection.
    pub async fn accept(&mut self) -> Accepted {
        let permit = match Arc::clone(&self.permits).acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; were it, waiting forever is the honest answer.
            Err(_) => std::future::pending().await,
        };
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    return Accepted {
                        stream,
                        peer,
                        permit,
                    };
                }
                Err(err) => {
                    self.errors.inc();
                    let now = Instant::now();
                    if self
                        .last_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                    {
                        self.last_log = Some(now);
                        tracing::warn!(listener = self.name, %err, "accept failed; backing off");
                    }
                    // Out of descriptors (EMFILE, ENFILE) or memory: the queue stays full until
                    // something closes, so retrying at once would spin.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// How long a connection may stay quiet, by what it is doing.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Nothing received since accept.
    pub silent: Duration,
    /// No request in progress.
    pub idle: Duration,
    /// A response waits for the client to take it (a write that does not complete, or a body
    /// frame not taken).
    pub stalled: Duration,
}

/// What a connection's requests are doing, as [`supervise`] asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// No request in progress.
    Idle,
    /// A request is being served (waiting for an upstream or a handler): no limit here.
    Working,
    /// A response waits for the client to take more of it.
    Stalled,
}

/// Progress of one connection's socket: how often it moved bytes, and whether a write waits.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicU64,
    write_pending: AtomicBool,
}

impl Activity {
    /// One more read or write that moved bytes. Only the connection's task calls this, so a
    /// load and a store (no read-modify-write) are enough.
    #[inline]
    fn moved(&self) {
        self.moved
            .store(self.moved.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// A socket that records its [`Activity`].
#[derive(Debug)]
pub struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    /// Watches `stream`; `activity` is what [`supervise`] reads.
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Watched {
        Watched { stream, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Watched {
    fn wrote(&self, pending: bool) {
        if pending {
            self.activity.write_pending.store(true, Ordering::Relaxed);
        } else {
            self.activity.moved();
            if self.activity.write_pending.load(Ordering::Relaxed) {
                self.activity.write_pending.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `conn` until it ends, or until it has been quiet longer than `timeouts` allow for what it
/// is doing (`busy` tells), and then drops it, which closes the connection. Returns `None` when
/// it was closed for quiet.
pub async fn supervise<F: Future>(
    conn: F,
    activity: &Activity,
    timeouts: Timeouts,
    busy: impl Fn() -> Busy,
) -> Option<F::Output> {
    tokio::pin!(conn);
    let shortest = timeouts.silent.min(timeouts.idle).min(timeouts.stalled);
    let tick = (shortest / 4).max(Duration::from_millis(5));
    let mut check = tokio::time::interval_at(Instant::now() + tick, tick);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = 0;
    // Nothing moved since this instant (at the latest); never later than the truth, so the
    // connection is closed no earlier than its timeout and at most one tick after.
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            out = &mut conn => return Some(out),
            now = check.tick() => {
                let moved = activity.moved.load(Ordering::Relaxed);
                let state = busy();
                if moved != seen || state == Busy::Working {
                    seen = moved;
                    quiet_since = now;
                    continue;
                }
                let limit = if state == Busy::Stalled || activity.write_pending.load(Ordering::Relaxed) {
                    timeouts.stalled
                } else if moved == 0 {
                    timeouts.silent
                } else {
                    timeouts.idle
                };
                if now.duration_since(quiet_since) >= limit {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_from_the_open_file_limit() {
        assert_eq!(connection_cap(7, 1 << 20, 4), 7);
        assert_eq!(connection_cap(0, 256, 4), 64);
        assert_eq!(connection_cap(0, 2, 16), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_connections_close_by_what_they_do() {
        let timeouts = Timeouts {
            silent: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            stalled: Duration::from_secs(30),
        };
        let activity = Activity::default();
        let start = Instant::now();
        let out = supervise(std::future::pending::<()>(), &activity, timeouts, || {
            Busy::Idle
        })
        .await;
        assert!(out.is_none());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took <= Duration::from_millis(12_600),
            "{took:?}"
        );

        activity.moved();
        let start = Instant::now();
        let _ = supervise(std::future::pending::<()>(), &activity, timeouts, || {
            Busy::Stalled
        })
        .await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(30) && took <= Duration::from_millis(33_000),
            "{took:?}"
        );

        // Working: never closed here.
        let out = tokio::time::timeout(
            Duration::from_secs(600),
            supervise(std::future::pending::<()>(), &activity, timeouts, || {
                Busy::Working
            }),
        )
        .await;
        assert!(out.is_err(), "a connection serving a request is left alone");
    }
}
