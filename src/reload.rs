//! Live reconfiguration: the configuration file is read again on SIGHUP and whenever it changes
//! on disk (inotify, debounced), and what it declares is reconciled by the controller.
//!
//! A file that does not parse or validate keeps the running configuration: the error is logged
//! with its line and column and `autokill_config_last_reload_successful` turns 0 until a good
//! file is read. What a reload applies at once: the declared service groups and instances
//! (created, changed, deleted by name; those made through the API are never touched), and the
//! proxy's timeouts, limits, idle pool and requests per connection ([`ProxySettings`]: every
//! worker takes them up within 250 ms, open connections at their next request). The listen
//! addresses, the worker count, the base domain, the connection cap, and the admin, store and
//! runtime sections are read at start only; a reload that changes them names each such key in
//! a warning.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::Watcher;
use tokio::sync::mpsc;

use crate::config::{self, Config};
use crate::controller::Command;
use crate::metrics::Metrics;
use crate::proxy::ProxySettings;

/// Events that arrive this close together (an editor's write, rename and chmod) make one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `path` and reloads it on change or SIGHUP until the controller's channel closes.
/// `current` is the configuration the server started with.
pub fn spawn(
    path: PathBuf,
    current: Config,
    commands: mpsc::UnboundedSender<Command>,
    proxy: ProxySettings,
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
    current: Config,
    commands: mpsc::UnboundedSender<Command>,
    proxy: ProxySettings,
    metrics: Metrics,
}

impl Reloader {
    /// Reads the file again and applies it. Returns false once the controller is gone.
    fn reload(&mut self) -> bool {
        let new = match config::load(&self.path) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(%err, "configuration reload failed; the running configuration is kept");
                self.metrics.config_reload_ok.set(0);
                return true;
            }
        };
        for key in needs_restart(&self.current, &new) {
            tracing::warn!(
                key,
                "changed in the configuration file; takes effect at the next start"
            );
        }
        let declare = Command::Declare {
            groups: new.service_groups.clone(),
            instances: new.instances.clone(),
        };
        if self.commands.send(declare).is_err() {
            return false;
        }
        if self.current.proxy != new.proxy {
            self.proxy.apply(&new.proxy);
            tracing::info!("proxy settings applied");
        }
        self.metrics.config_reload_ok.set(1);
        self.metrics.config_reload_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.current = new;
        true
    }
}

/// The sections a reload does not apply, that differ between `old` and `new`.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = ProxySettings::restart_keys(&old.proxy, &new.proxy);
    if old.admin != new.admin {
        keys.push("admin");
    }
    if old.store != new.store {
        keys.push("store");
    }
    if old.runtime != new.runtime {
        keys.push("runtime");
    }
    if old.defaults != new.defaults {
        keys.push("defaults");
    }
    if old.autokill != new.autokill {
        keys.push("autokill");
    }
    if old.shutdown != new.shutdown {
        keys.push("shutdown");
    }
    keys
}
