//! The kill hooks: a [`Runtime`] creates, starts, stops and deletes instances and reports their exits.
//!
//! The controller is the only caller. Calls are rare (a handful per instance lifetime), so the
//! trait returns boxed futures and is used as `Arc<dyn Runtime>`; nothing here is on the hot path.

pub mod docker;
pub mod logs;
pub mod process;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

/// A boxed, sendable future, as the [`Runtime`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the runtime needs to know to run one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceSpec {
    /// The instance's identity; the runtime keys everything by it.
    pub id: Uuid,
    /// The instance's name (given to the process as `{name}`); shared with the controller's
    /// record of it, not copied per instance.
    pub name: Arc<str>,
    /// Key into the runtime's image table (docker: or an image reference).
    pub image: String,
    /// Memory limit in MiB, where the runtime can enforce one (docker); `None` = no limit.
    pub memory_mb: Option<u64>,
}

/// The image a template made from instance `id` is committed to, which its clones run
/// (runtimes that run images; see [`Runtime::commit`]).
pub fn template_image(id: Uuid) -> String {
    format!("autokill/template-{id}")
}

/// What [`Runtime::adopt`] found of a stored instance that an earlier run left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// It still runs, serving at this address: it is adopted as it is.
    Running(SocketAddr),
    /// It exited while autokill was down, with this exit code (same convention as
    /// [`RuntimeEvent::Exited`]).
    Exited(i32),
}

/// Something the runtime observed about an instance on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The instance's main process exited. `exit_code` follows the shell's convention:
    /// the process's status, or 128 + signal number when a signal ended it.
    Exited {
        /// The instance.
        id: Uuid,
        /// Its exit status as described above.
        exit_code: i32,
    },
    /// The engine behind the runtime became unreachable (`Some(why)`) or reachable again
    /// (`None`). Runtimes without an engine never send it.
    Engine {
        /// Why it cannot be reached, or `None` once it can.
        unreachable: Option<String>,
    },
}

/// Sends [`RuntimeEvent`]s to the controller.
pub type EventSender = mpsc::UnboundedSender<RuntimeEvent>;

/// Errors of a runtime backend, each naming the instance or image concerned.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec names an image the runtime does not know.
    #[error("unknown image {0:?}")]
    UnknownImage(String),
    /// The instance was never created, or is already deleted.
    #[error("unknown instance {0}")]
    UnknownInstance(Uuid),
    /// The instance did not accept connections within the start timeout.
    #[error("instance {id} did not accept connections on {addr} within {secs:.1}s")]
    StartTimeout {
        /// The instance.
        id: Uuid,
        /// Where it should have listened.
        addr: SocketAddr,
        /// The timeout, in seconds.
        secs: f64,
    },
    /// The instance exited while it was starting.
    #[error("instance {id} exited with code {exit_code} while starting")]
    ExitedEarly {
        /// The instance.
        id: Uuid,
        /// Its exit status.
        exit_code: i32,
    },
    /// The container engine failed or refused a call; `message` is the engine's own.
    #[error("{what}: container engine at {address}: {message}")]
    Engine {
        /// The engine's address.
        address: String,
        /// What was being done.
        what: String,
        /// The engine's answer, or why it could not be reached.
        message: String,
    },
    /// The image names no port to publish and `runtime.default_port` is not set.
    #[error(
        "image {0:?} exposes no port; set `port:` in its runtime.images entry or runtime.default_port"
    )]
    NoPort(String),
    /// This backend does not do that (e.g. keep logs).
    #[error("not supported by the {runtime} runtime: {what}")]
    Unsupported {
        /// The backend.
        runtime: &'static str,
        /// What it does not do.
        what: &'static str,
    },
    /// An operating-system or engine call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `runtime.stop_grace` and `runtime.start_timeout` as a backend holds them: a reload changes
/// them while it runs ([`Runtime::set_timeouts`]); stops and starts from then on use the new
/// values (in whole milliseconds, the file's finest unit).
#[derive(Debug)]
pub struct Timeouts {
    stop_grace_ms: AtomicU64,
    start_timeout_ms: AtomicU64,
}

impl Timeouts {
    /// The timeouts of `config`.
    pub fn new(config: &crate::config::RuntimeConfig) -> Timeouts {
        let t = Timeouts {
            stop_grace_ms: AtomicU64::new(0),
            start_timeout_ms: AtomicU64::new(0),
        };
        t.set(config.stop_grace, config.start_timeout);
        t
    }

    /// Replaces both.
    pub fn set(&self, stop_grace: Duration, start_timeout: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.stop_grace_ms.store(ms(stop_grace), Ordering::Relaxed);
        self.start_timeout_ms
            .store(ms(start_timeout), Ordering::Relaxed);
    }

    /// Time between the polite stop and the forced one.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms.load(Ordering::Relaxed))
    }

    /// Time a started instance has to accept connections.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms.load(Ordering::Relaxed))
    }
}

/// A backend that runs instances.
///
/// Every method is idempotent where that makes sense: stopping a stopped instance and deleting a
/// deleted one succeed. An exit the runtime observes, asked for or not, is reported once as
/// [`RuntimeEvent::Exited`] on the channel the backend was built with.
pub trait Runtime: Send + Sync + 'static {
    /// Short name of the backend, for logs and metrics (`process`, `docker`).
    fn kind(&self) -> &'static str;

    /// Prepares an instance (records it; the docker runtime creates its container) without starting it.
    fn create<'a>(&'a self, spec: &'a InstanceSpec) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Creates the instance at once when that needs no waiting, as [`Runtime::create`] would;
    /// `None` when it must be awaited through `create`. The process runtime only records the
    /// instance, and a recovery creates every stopped one: 100,000 tasks spared at start.
    fn create_now(&self, spec: &InstanceSpec) -> Option<Result<(), RuntimeError>> {
        let _ = spec;
        None
    }

    /// Starts a created or stopped instance and resolves once it accepts TCP connections,
    /// with the address the proxy should forward to.
    fn start(&self, id: Uuid) -> BoxFuture<'_, Result<SocketAddr, RuntimeError>>;

    /// Stops a running instance: a polite signal, then a forced kill after the grace period.
    /// Resolves once it has exited; its exit is also reported as an event.
    fn stop(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Stops the instance if it runs and removes everything the runtime holds for it.
    fn delete(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// A reload changed `runtime.stop_grace` or `runtime.start_timeout`: stops and starts
    /// that begin from now on use these.
    fn set_timeouts(&self, stop_grace: Duration, start_timeout: Duration);

    /// At start, before any instance is started: removes whatever an earlier run of the same
    /// store left behind (after a crash), and returns how many it removed. For a runtime that
    /// does not [adopt](Runtime::adopts), the controller calls this while it gets ready, and
    /// instances may be created (not started) meanwhile: a reclaim must leave those alone.
    fn reclaim(&self) -> BoxFuture<'_, Result<usize, RuntimeError>>;

    /// Whether [`Runtime::adopt`] can take over instances an earlier run left, and so needs the
    /// stored ones; a runtime that cannot is given none.
    fn adopts(&self) -> bool {
        false
    }

    /// At start, before any instance is created, with every stored instance and template:
    /// takes over what an earlier run left of them ([`Found`]) and removes what the store does
    /// not know. An instance missing from the answer has nothing left (or nothing that runs or
    /// exited), and is created and started anew as usual.
    ///
    /// The default suits runtimes that cannot adopt: it [`reclaim`](Runtime::reclaim)s
    /// everything and adopts nothing.
    fn adopt<'a>(
        &'a self,
        stored: &'a [InstanceSpec],
    ) -> BoxFuture<'a, Result<HashMap<Uuid, Found>, RuntimeError>> {
        let _ = stored;
        Box::pin(async move { self.reclaim().await.map(|_| HashMap::new()) })
    }

    /// Turns the stopped instance `id` into a template: a runtime that runs images commits it
    /// to [`template_image`]`(id)`, which the template's clones then name as their image. The
    /// commit is registered when this is called (so a clone created right after waits for it)
    /// and done when the future resolves (which owns what it needs, so that the caller can
    /// register in order and wait elsewhere). The default does nothing: the process runtime's
    /// clones run the template's command.
    fn commit(&self, id: Uuid) -> BoxFuture<'static, Result<(), RuntimeError>> {
        let _ = id;
        Box::pin(async { Ok(()) })
    }
    /// The instance's output (stdout and stderr together): up to `limit` bytes from `offset`,
    /// counted from the first byte it wrote (negative: back from the end), within the bounded
    /// part the backend keeps. By default a backend keeps none.
    fn logs(
        &self,
        id: Uuid,
        offset: i64,
        limit: Option<u64>,
    ) -> BoxFuture<'_, Result<LogChunk, RuntimeError>> {
        let _ = (id, offset, limit);
        let runtime = self.kind();
        Box::pin(async move {
            Err(RuntimeError::Unsupported {
                runtime,
                what: "instance logs",
            })
        })
    }
}

/// A piece of an instance's output log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The bytes.
    pub data: Vec<u8>,
    /// The offsets (from the first byte ever written) the backend still keeps: `[start, end)`.
    pub available: (u64, u64),
    /// The offsets of `data`.
    pub range: (u64, u64),
}
