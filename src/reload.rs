//! Live reconfiguration: the configuration file is read again on SIGHUP and whenever it changes
//! on disk (inotify, debounced), and what it declares is reconciled by the controller.
//!
//! A file that does not parse or validate keeps the running configuration: the error is logged
//! with its line and column and `autokill_config_last_reload_successful` turns 0 until a good
//! file is read.
//!
//! What a reload applies at once, key by key:
//!
//! * the declared `service_groups` and `instances` (created, changed, deleted by name; those made
//!   through the API are never touched), their `max_body_bytes` included;
//! * `proxy.listen`: the new address is bound (one `SO_REUSEPORT` listener per worker, as at
//!   start), then every worker accepts there and closes its old listener; HTTP/1 connections
//!   accepted on the old address end as at shutdown (their current request is answered, with
//!   `Connection: close`). A bind that fails (address in use, no permission) keeps the old
//!   listener, logs the key and the address, applies the rest of the file and sets
//!   `autokill_config_last_reload_successful` to 0; the next reload tries again;
//! * `admin.listen`, likewise: a server starts on the new address (its Host guard built for
//!   it) and the old one stops as at shutdown. A non-loopback address is refused while the
//!   running server has no token (`admin.token` itself is read at start);
//! * the proxy's timeouts, limits, idle pool and requests per connection ([`ProxySettings`]:
//!   every worker takes them up within 250 ms, open connections at their next request);
//! * `defaults.drain_timeout`, for drains that start from then on (and as the proxy's
//!   shutdown grace);
//! * `autokill.jitter`, for budgets drawn from then on (instances created after the reload, or a
//!   declared instance whose `num_requests` changed); budgets drawn before are kept;
//! * `runtime.max_concurrent_kills` and `runtime.max_concurrent_starts`: more places go to
//!   waiting kills (or starts) at once; fewer are taken back as those in progress end (none is
//!   cut short);
//! * `runtime.stop_grace` and `runtime.start_timeout`, for stops and starts that begin from then
//!   on (with docker, a stop grace is cut to what the engine client's request timeout, set at
//!   start from the stop grace then, leaves room for; a warning says so);
//! * `shutdown`, which the next SIGTERM follows.
//!
//! Read at start only, each named in a warning when a reload changes it: `proxy.workers`,
//! `proxy.base_domain`, `proxy.max_connections_per_worker`, `proxy.balance` (a group keeps the
//! balance it was made with), every other `admin.*` key (the admin server's token, guard and
//! limits are built once), `store.path` and `store.quick_repair`, and the runtime backend's own
//! keys (it is built with them): `runtime.kind`, `runtime.docker_host`, `runtime.images`,
//! `runtime.default_port`; `runtime.controller_nice` (the controller's thread is made once); and
//! `runtime.stopping_cgroup` (checked when the runtime is made).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::Watcher;
use tokio::sync::mpsc;

use crate::config::{self, Config, RuntimeKind};
use crate::controller::{Command, LiveSettings};
use crate::metrics::Metrics;
use crate::proxy::ProxySettings;

/// Events that arrive this close together (an editor's write, rename and chmod) make one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `path` and reloads it on change or SIGHUP until the controller's channel closes.
/// `current` holds the configuration the server started with; each reload stores in it what it
/// applied.
pub fn spawn(
    path: PathBuf,
    current: Arc<ArcSwap<Config>>,
    commands: mpsc::UnboundedSender<Command>,
    proxy: ProxySettings,
    admin: mpsc::UnboundedSender<tokio::net::TcpListener>,
    metrics: Metrics,
) {
    tokio::spawn(async move {
        let (changed_tx, mut changed) = mpsc::unbounded_channel();
        // Kept alive for as long as the task runs; without it only SIGHUP reloads.
        let _watcher = match watch(&path, changed_tx) {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::warn!(file = %path.display(), %err, "cannot watch the configuration file; it is reloaded on SIGHUP only");
                None
            }
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "cannot install the SIGHUP handler");
                return;
            }
        };
        let mut reloader = Reloader {
            path,
            current,
            commands,
            proxy,
            admin,
            metrics,
        };
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => tracing::info!("SIGHUP: reloading the configuration"),
                Some(()) = changed.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while changed.try_recv().is_ok() {}
                    tracing::info!("the configuration file changed: reloading it");
                }
                else => return,
            }
            if !reloader.reload() {
                return;
            }
        }
    });
}

/// Watches the file's directory (editors replace a file by renaming a new one over it, which a
/// watch on the file itself would not follow) and signals changes to the file.
fn watch(
    path: &Path,
    changed: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let name = path.file_name().map(ToOwned::to_owned);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().map(ToOwned::to_owned) == name)
        {
            let _ = changed.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

struct Reloader {
    path: PathBuf,
    /// The configuration in force: what the last reload applied (with what it could not apply
    /// left as it was). Shared with the server, whose shutdown reads `shutdown` and
    /// `runtime.max_concurrent_kills` from it.
    current: Arc<ArcSwap<Config>>,
    commands: mpsc::UnboundedSender<Command>,
    proxy: ProxySettings,
    /// Where a new admin listener goes ([`crate::admin::serve_moving`]).
    admin: mpsc::UnboundedSender<tokio::net::TcpListener>,
    metrics: Metrics,
}

impl Reloader {
    /// Reads the file again and applies it. Returns false once the controller is gone.
    fn reload(&mut self) -> bool {
        let mut new = match config::load(&self.path) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(%err, "configuration reload failed; the running configuration is kept");
                self.metrics.config_reload_ok.set(0);
                return true;
            }
        };
        let current = self.current.load_full();
        for key in needs_restart(&current, &new) {
            tracing::warn!(
                key,
                "changed in the configuration file; takes effect at the next start"
            );
        }
        // A listener that cannot move keeps its address in the configuration in force, so that
        // the next reload tries again.
        let proxy =
            (current.proxy.listen != new.proxy.listen).then(|| self.proxy.rebind(new.proxy.listen));
        let mut ok = settle(
            "proxy.listen",
            current.proxy.listen,
            &mut new.proxy.listen,
            proxy,
        );
        let admin = (current.admin.listen != new.admin.listen)
            .then(|| self.move_admin(&current, new.admin.listen));
        ok &= settle(
            "admin.listen",
            current.admin.listen,
            &mut new.admin.listen,
            admin,
        );
        let declare = Command::Declare {
            groups: new.service_groups.clone(),
            instances: new.instances.clone(),
        };
        if self.commands.send(declare).is_err() {
            return false;
        }
        let live = LiveSettings::of(&new);
        if live != LiveSettings::of(&current)
            && self.commands.send(Command::Settings(live)).is_err()
        {
            return false;
        }
        if current.proxy != new.proxy || current.defaults != new.defaults {
            self.proxy.apply(&new.proxy, new.defaults.drain_timeout);
            tracing::info!("proxy settings applied");
        }
        self.metrics.config_reload_ok.set(i64::from(ok));
        if ok {
            self.metrics.config_reload_time.set(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
        }
        self.current.store(Arc::new(new));
        true
    }
}

impl Reloader {
    /// Binds the admin listener at `addr` and hands it to the admin server. A non-loopback
    /// address is refused while the running server has no token (`admin.token` is read at
    /// start: a token the new file adds does not protect the API yet).
    fn move_admin(&self, current: &Config, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        if !addr.ip().is_loopback() && current.admin.token.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not a loopback address, and the running server has no admin.token (a token \
                 takes effect at the next start)",
            ));
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|err| {
            std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}"))
        })?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let bound = listener.local_addr()?;
        self.admin
            .send(listener)
            .map_err(|_| std::io::Error::other("the admin server has stopped"))?;
        Ok(bound)
    }
}

/// Logs how moving the listener `key` from `old` to `*new` went (`None`: it was not asked to
/// move); on failure `*new` goes back to `old`. False on failure.
fn settle(
    key: &'static str,
    old: SocketAddr,
    new: &mut SocketAddr,
    moved: Option<std::io::Result<SocketAddr>>,
) -> bool {
    match moved {
        None => true,
        Some(Ok(addr)) => {
            tracing::info!(key, %addr, %old, "listening on the new address; the old one accepts no more");
            true
        }
        Some(Err(err)) => {
            tracing::error!(key, addr = %new, %err, "cannot listen on the new address; the old listener is kept (the rest of the file is applied)");
            *new = old;
            false
        }
    }
}

/// The keys a reload does not apply, that differ between `old` and `new`.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = ProxySettings::restart_keys(&old.proxy, &new.proxy);
    let (a, b) = (&old.admin, &new.admin);
    let admin = [
        ("admin.token", a.token != b.token),
        ("admin.allowed_hosts", a.allowed_hosts != b.allowed_hosts),
        (
            "admin.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        ("admin.idle_timeout", a.idle_timeout != b.idle_timeout),
        (
            "admin.max_connections",
            a.max_connections != b.max_connections,
        ),
        ("admin.api_users", a.api_users != b.api_users),
        ("admin.max_body_size", a.max_body_size != b.max_body_size),
    ];
    let (a, b) = (&old.runtime, &new.runtime);
    let rest = [
        ("store.path", old.store.path != new.store.path),
        (
            "store.quick_repair",
            old.store.quick_repair != new.store.quick_repair,
        ),
        ("runtime.kind", kind(&a.kind).0 != kind(&b.kind).0),
        ("runtime.docker_host", kind(&a.kind).1 != kind(&b.kind).1),
        ("runtime.default_port", a.default_port != b.default_port),
        (
            "runtime.controller_nice",
            a.controller_nice != b.controller_nice,
        ),
        ("runtime.images", a.images != b.images),
        (
            "runtime.stopping_cgroup",
            a.stopping_cgroup != b.stopping_cgroup,
        ),
    ];
    keys.extend(
        admin
            .into_iter()
            .chain(rest)
            .filter_map(|(key, changed)| changed.then_some(key)),
    );
    keys
}

/// A runtime kind as its two keys: whether it is docker, and `runtime.docker_host`.
fn kind(kind: &RuntimeKind) -> (bool, Option<&str>) {
    match kind {
        RuntimeKind::Process => (false, None),
        RuntimeKind::Docker { host } => (true, host.as_deref()),
    }
}
