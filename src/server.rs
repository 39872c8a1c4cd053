//! `autokill serve`: wires the proxy, the controller, the runtime and the admin server together
//! and runs them until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::admin::{self, AdminState};
use crate::config::{Config, RuntimeKind};
use crate::controller::{self, Inputs, Published};
use crate::metrics::Metrics;
use crate::net;
use crate::proxy::Proxy;
use crate::runtime::Runtime;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::process::{self, ProcessRuntime};
use crate::store::Store;

/// Errors that stop `autokill serve` from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("{what}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics registry refused a metric (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The configured runtime is not available.
    #[error("runtime: {0}")]
    Runtime(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The controller's thread could not be started.
    #[error("cannot start the controller's thread: {0}")]
    Thread(std::io::Error),
}

/// What marks this server's instance processes (see `Runtime::reclaim`): the store file's
/// absolute path. Taken before the store is opened (and perhaps created), so a file not there
/// yet is named by its directory's absolute path and its name: what it is once created, so that
/// the first start and the next agree.
fn store_owner(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).or_else(|_| {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        // Opening the store creates it too, and says what failed if it cannot.
        let _ = std::fs::create_dir_all(dir);
        let name = path.file_name().unwrap_or_default();
        std::fs::canonicalize(dir).map(|dir| dir.join(name))
    });
    absolute
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Runs everything until a shutdown signal. `path` is the configuration file, reloaded on SIGHUP
/// and on change (`None`: the embedded default, nothing to reload); `self_exe` is what
/// `{autokill}` in an image command stands for.
pub async fn serve(
    config: Config,
    path: Option<PathBuf>,
    self_exe: PathBuf,
) -> Result<(), ServeError> {
    // Every connection is a file: take what the hard limit allows before listening.
    let open_files = net::raise_open_file_limit();
    let published = Published::new();
    let metrics = Metrics::new(Arc::clone(&published.view))?;
    metrics.config_reload_ok.set(1);
    metrics.config_reload_time.set(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );

    // The store's absolute path marks this server's instance processes (see `Runtime::reclaim`).
    let owner = store_owner(&config.store.path);
    let (runtime_tx, runtime_rx) = mpsc::unbounded_channel();
    // The engine's reachability, for `/readyz` (a runtime without an engine is always reachable).
    let mut engine = None;
    if let Some(dir) = &config.runtime.stopping_cgroup {
        process::check_stopping_cgroup(dir).map_err(|err| {
            ServeError::Runtime(format!(
                "runtime.stopping_cgroup: {err} (create the cgroup first, see config/autokill.yaml)"
            ))
        })?;
    }
    let runtime: Arc<dyn Runtime> = match &config.runtime.kind {
        RuntimeKind::Process => Arc::new(
            ProcessRuntime::owned_by(&config.runtime, self_exe, runtime_tx, owner)
                // Beside the store: `<store>.logs/<instance id>.log`.
                .with_logs(config.store.path.with_extension("logs")),
        ),
        RuntimeKind::Docker { .. } => {
            let docker = DockerRuntime::connect(&config.runtime, owner, runtime_tx)
                .await
                .map_err(|err| ServeError::Runtime(err.to_string()))?;
            engine = Some(docker.health());
            Arc::new(docker)
        }
    };

    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| ServeError::Listen {
            what: "admin listener",
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Listen {
            what: "admin listener",
            source,
        })?;
    tracing::info!(addr = %admin_addr, "admin listening");

    let (commands_tx, commands) = mpsc::unbounded_channel();
    let ready = Arc::new(AtomicBool::new(false));
    let (closing, admin_closing) = tokio::sync::watch::channel(false);
    let admin_state = AdminState {
        published: published.clone(),
        metrics: metrics.clone(),
        ready: Arc::clone(&ready),
        token: config.admin.token.as_deref().map(Arc::from),
        base_domain: config.proxy.base_domain.as_str().into(),
        controller: controller::api::Handle::new(commands_tx.clone()),
        api_users: config.admin.api_users.clone().into(),
        runtime: Arc::clone(&runtime),
        images: config.runtime.images.keys().cloned().collect(),
        any_image: matches!(config.runtime.kind, RuntimeKind::Docker { .. }),
        closing: admin_closing,
        max_body_size: config.admin.max_body_size,
        hosts: Arc::new(admin::Hosts::new(admin_addr, &config.admin.allowed_hosts)),
    };
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let listen = admin::AdminListen {
        cfg: config.admin.clone(),
        cap: net::connection_cap(config.admin.max_connections, open_files, 16),
        errors: metrics.accept_errors.with_label_values(&["admin"]),
    };
    // A reload that changes `admin.listen` sends the new listener here.
    let (admin_moves, moves) = mpsc::unbounded_channel();
    let admin = tokio::spawn(async move {
        admin::serve_moving(admin_listener, admin_state, listen, moves, async move {
            let _ = admin_stopped.await;
        })
        .await;
    });
    // Opened once `/livez` answers (and `/readyz` 503): reading a large store, or waiting for
    // another process to let go of it, takes a while.
    let opened = std::time::Instant::now();
    let (store_path, quick_repair) = (config.store.path.clone(), config.store.quick_repair);
    let opening = tokio::task::spawn_blocking(move || Store::open_with(&store_path, quick_repair));
    let (store, snapshot) = match opening.await {
        Ok(opened) => opened?,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // The runtime is shutting down.
        Err(_) => return Ok(()),
    };
    let read = opened.elapsed();
    tracing::info!(
        path = %config.store.path.display(),
        instances = snapshot.instances.len(),
        groups = snapshot.groups.len(),
        read_ms = read.as_millis() as u64,
        repaired = store.repaired(),
        "store read"
    );
    metrics.store_open_seconds.set(read.as_secs_f64());
    metrics.store_repaired.set(i64::from(store.repaired()));
    let store = Arc::new(store);
    let (proxy_tx, proxy_rx) = mpsc::unbounded_channel();
    let proxy = Proxy::start(
        &config.proxy,
        config.defaults.drain_timeout,
        Arc::clone(&published.table),
        proxy_tx,
        &metrics,
        open_files,
    )
    .map_err(|source| ServeError::Listen {
        what: "proxy listener",
        source,
    })?;
    let (recovered_tx, recovered) = tokio::sync::oneshot::channel();
    let (stop_controller, controller_stop) = tokio::sync::oneshot::channel();
    let inputs = Inputs {
        commands,
        commands_tx: commands_tx.clone(),
        proxy: proxy_rx,
        runtime: runtime_rx,
        shutdown: controller_stop,
    };
    let workers = proxy.workers();
    let ctl = {
        let (config, runtime, published, metrics) = (
            config.clone(),
            Arc::clone(&runtime),
            published.clone(),
            metrics.clone(),
        );
        let work = tokio::runtime::Handle::current();
        let nice = config.runtime.controller_nice;
        on_a_nicer_thread("autokill-ctl", nice, async move {
            controller::run(
                &config,
                workers,
                runtime,
                store,
                snapshot,
                published,
                metrics,
                inputs,
                recovered_tx,
                work,
            )
            .await
        })
        .map_err(ServeError::Thread)?
    };

    // The configuration in force: a reload changes it (the shutdown below reads it).
    let running = Arc::new(arc_swap::ArcSwap::from_pointee(config.clone()));
    match path {
        Some(path) => crate::reload::spawn(
            path,
            Arc::clone(&running),
            commands_tx.clone(),
            proxy.settings(),
            admin_moves,
            metrics.clone(),
        ),
        None => tracing::info!("running on the embedded configuration: nothing to reload"),
    }
    // Ready once the stored state is recovered, leftovers of a crash removed and timers re-armed.
    tokio::select! {
        _ = recovered => ready.store(true, Ordering::Release),
        _ = shutdown_signal() => {
            proxy.shutdown().await;
            return Ok(());
        }
    }
    let engine_watch = engine.map(|health| tokio::spawn(follow_engine(Arc::clone(&ready), health)));

    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    if let Some(watch) = engine_watch {
        watch.abort();
    }
    ready.store(false, Ordering::Release);
    proxy.shutdown().await;
    // The web page's event streams end first, so that the admin server's graceful stop is not
    // held up by answers that never end.
    closing.send_replace(true);
    let _ = stop_admin.send(());
    let _ = admin.await;
    // The controller stops first, after the batch in hand is committed: the store then says
    // which instances run, and the exits that stopping them causes below are never judged by
    // restart or autodestroy (an ON_SUCCESS instance stopped here is not destroyed), so the next
    // start brings them back.
    let _ = stop_controller.send(());
    let _ = ctl.await;
    // Stopping them here (the process runtime's default) leaves nothing behind; with
    // `leave_instances` (docker's default) the next start adopts the containers, or removes and
    // restarts the processes (a process of an earlier run cannot be adopted). As the last
    // reload left `shutdown` and `runtime.max_concurrent_kills`.
    let running = running.load();
    if running.shutdown == crate::config::Shutdown::StopInstances {
        // Concurrently: one after another would add up their stop grace periods. At most
        // `runtime.max_concurrent_kills` at once, as while running.
        let kills = Arc::new(tokio::sync::Semaphore::new(
            running.runtime.max_concurrent_kills.max(1),
        ));
        let mut deletes = tokio::task::JoinSet::new();
        for inst in &published.view.load().instances {
            let (runtime, id, kills) = (Arc::clone(&runtime), inst.id, Arc::clone(&kills));
            deletes.spawn(async move {
                let _place = kills.acquire_owned().await;
                runtime.delete(id).await
            });
        }
        while let Some(result) = deletes.join_next().await {
            if let Ok(Err(err)) = result {
                tracing::warn!(%err, "stopping an instance at shutdown failed");
            }
        }
    }
    drop(commands_tx);
    Ok(())
}

/// Runs `task` on a thread of its own, `nice` steps below this thread's CPU priority
/// (`setpriority` on Linux, where each thread has its own; elsewhere at the same priority),
/// in a runtime of its own; resolves when it ends. Whatever that thread spawns inherits the
/// priority: processes are spawned elsewhere (see [`controller::run`]).
fn on_a_nicer_thread(
    name: &str,
    nice: u8,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()?;
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            if nice > 0 {
                // SAFETY: plain integers; `gettid` names this thread only.
                unsafe {
                    let tid = libc::gettid() as libc::id_t;
                    let now = libc::getpriority(libc::PRIO_PROCESS, tid);
                    let to = (now + libc::c_int::from(nice)).min(19);
                    if libc::setpriority(libc::PRIO_PROCESS, tid, to) != 0 {
                        tracing::warn!(
                            err = %std::io::Error::last_os_error(),
                            "the controller's thread keeps the server's CPU priority"
                        );
                    }
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = nice;
            runtime.block_on(task);
            let _ = done.send(());
        })?;
    Ok(ended)
}

/// Keeps `/readyz` not ready while the container engine cannot be reached.
async fn follow_engine(
    ready: Arc<AtomicBool>,
    mut health: tokio::sync::watch::Receiver<Option<String>>,
) {
    loop {
        ready.store(health.borrow_and_update().is_none(), Ordering::Release);
        if health.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::store_owner;

    /// A first start names its store before creating it; the next start names the created file:
    /// both must be the same, or the next start would not know the first one's processes.
    #[test]
    fn a_store_is_named_the_same_before_and_after_it_is_created() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Relative to a directory not there yet, through a `..`.
        let path = dir.path().join("data/../data/sub/autokill.redb");
        let before = store_owner(&path);
        std::fs::write(&path, b"x").expect("create the file");
        let after = store_owner(&path);
        assert_eq!(before, after);
        assert_eq!(
            after,
            std::fs::canonicalize(&path)
                .expect("canonical")
                .to_string_lossy()
        );
    }
}
