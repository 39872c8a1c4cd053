//! The `process` runtime (the embedded default): each instance is a local child process in its own
//! process group, listening on a loopback port the runtime picks at each start (a stopped
//! instance holds no port, process or file descriptor, so stopped instances are not bounded by
//! the 64k ports of loopback).
//!
//! Lifecycle of one child:
//!
//! ```text
//! start: spawn in its own group, then connect to 127.0.0.1:<port> every 10 ms
//!          accepts ──────────▶ Ok(addr)
//!          exits first ──────▶ ExitedEarly
//!          start_timeout ────▶ SIGKILL the group, StartTimeout
//! stop:  [into runtime.stopping_cgroup] SIGTERM the group ─ stop_grace ─▶ SIGKILL the group;
//!        resolves once it exited
//! exit watcher: child.wait() ─▶ SIGKILL the group (no orphaned grandchild)
//!                            ─▶ forget the pid ─▶ RuntimeEvent::Exited
//! ```
//!
//! The exit watcher is the only place that observes an exit, so each exit is reported exactly
//! once, whoever caused it: a stop, the process itself, or a failed start (`ExitedEarly` and
//! `StartTimeout` are followed by their `Exited` event too).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use uuid::Uuid;

use super::logs::LogFiles;
use super::{
    BoxFuture, EventSender, InstanceSpec, LogChunk, Runtime, RuntimeError, RuntimeEvent, Timeouts,
};
use crate::config::{ImageConfig, RuntimeConfig};

/// How often `start` tries to connect to a starting instance.
const READY_POLL: Duration = Duration::from_millis(10);

/// How many times `start` asks the OS for a port before accepting one another instance holds.
const PORT_ATTEMPTS: usize = 16;

/// Runs instances as local child processes. See the module documentation.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

/// State shared with the exit watchers.
struct Inner {
    images: BTreeMap<Arc<str>, ImageConfig>,
    timeouts: Timeouts,
    self_exe: PathBuf,
    events: EventSender,
    /// Marks this runtime's children (`AUTOKILL_OWNER` in their environment), so that a later
    /// run can find what an earlier one left behind; empty = unmarked.
    owner: String,
    /// Never held across an `.await`; every critical section is a few map operations (and one
    /// `spawn`, so that two concurrent starts cannot both spawn).
    table: Mutex<Table>,
    /// Where instances' output goes; `None`: inherited (autokill's own stdout and stderr).
    logs: Option<LogFiles>,
    /// `cgroup.procs` of `runtime.stopping_cgroup`: a stopping instance's process is moved
    /// there before its SIGTERM.
    stopping: Option<Arc<Path>>,
}

/// What the runtime knows, under one lock.
#[derive(Default)]
struct Table {
    instances: HashMap<Uuid, Instance>,
    /// The ports of the running instances (each picked at its start, given back at its exit).
    ports: HashSet<u16>,
}

/// An instance the runtime knows about, running or not.
struct Instance {
    name: Arc<str>,
    /// The key of `runtime.images`, shared with the table's (not copied per instance).
    image: Arc<str>,
    running: Option<Running>,
}

/// A live child process.
struct Running {
    /// Also its process group id: the child is its group's leader.
    pid: u32,
    /// Where it listens: picked at its start, held until it exits.
    port: u16,
    /// `Some(exit code)` once the exit watcher has seen the process exit.
    exited: watch::Receiver<Option<i32>>,
}

impl ProcessRuntime {
    /// Builds the runtime from `runtime:` of the config; `self_exe` fills `{autokill}` in commands
    /// (the running binary, so that `{autokill} hello` works from any directory), and every
    /// instance exit is reported on `events`.
    pub fn new(config: &RuntimeConfig, self_exe: PathBuf, events: EventSender) -> ProcessRuntime {
        ProcessRuntime {
            inner: Arc::new(Inner {
                images: config
                    .images
                    .iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), v.clone()))
                    .collect(),
                timeouts: Timeouts::new(config),
                self_exe,
                events,
                owner: String::new(),
                table: Mutex::new(Table::default()),
                logs: None,
                stopping: config
                    .stopping_cgroup
                    .as_ref()
                    .map(|dir| Arc::from(dir.join("cgroup.procs"))),
            }),
        }
    }

    /// Like [`ProcessRuntime::new`], marking every child as owned by `owner` (the store's path),
    /// so that [`Runtime::reclaim`] in a later run finds the children a crash left behind.
    pub fn owned_by(
        config: &RuntimeConfig,
        self_exe: PathBuf,
        events: EventSender,
        owner: String,
    ) -> ProcessRuntime {
        let mut runtime = ProcessRuntime::new(config, self_exe, events);
        if let Some(inner) = Arc::get_mut(&mut runtime.inner) {
            inner.owner = owner;
        }
        runtime
    }

    /// Keeps each instance's output in a bounded log file under `dir` (see [`LogFiles`]),
    /// served by [`Runtime::logs`].
    pub fn with_logs(mut self, dir: PathBuf) -> ProcessRuntime {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.logs = Some(LogFiles::new(dir));
        }
        self
    }

    /// The pid (and process group id) of the instance's running main process, if it runs.
    pub fn pid(&self, id: Uuid) -> Option<u32> {
        self.inner
            .lock()
            .instances
            .get(&id)
            .and_then(|instance| instance.running.as_ref())
            .map(|running| running.pid)
    }

    fn create_instance(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let Some((image, _)) = self.inner.images.get_key_value(spec.image.as_str()) else {
            return Err(RuntimeError::UnknownImage(spec.image.clone()));
        };
        self.inner
            .lock()
            .instances
            .entry(spec.id)
            .or_insert_with(|| Instance {
                name: Arc::clone(&spec.name),
                image: Arc::clone(image),
                running: None,
            });
        tracing::debug!(instance = %spec.id, name = %spec.name, "process instance created");
        Ok(())
    }

    async fn start_instance(&self, id: Uuid) -> Result<SocketAddr, RuntimeError> {
        let (addr, pid, mut exited) = {
            let mut table = self.inner.lock();
            let Table { instances, ports } = &mut *table;
            let instance = instances
                .get_mut(&id)
                .ok_or(RuntimeError::UnknownInstance(id))?;
            match &instance.running {
                // Already started (perhaps still starting): wait for it like its starter does.
                Some(running) => (
                    SocketAddr::from((Ipv4Addr::LOCALHOST, running.port)),
                    running.pid,
                    running.exited.clone(),
                ),
                None => {
                    let port = free_port(ports)?;
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                    let child = self.inner.spawn(id, instance, port)?;
                    // A child that has not been waited for always has its pid.
                    let pid = child.id().ok_or_else(|| RuntimeError::Io {
                        what: format!("reading the pid of instance {id}"),
                        source: std::io::Error::other("child exited before it was watched"),
                    })?;
                    let (exited_tx, exited) = watch::channel(None);
                    instance.running = Some(Running {
                        pid,
                        port,
                        exited: exited.clone(),
                    });
                    ports.insert(port);
                    if let Some(logs) = self.inner.logs.clone() {
                        tokio::spawn(trim_while_running(logs, id, exited.clone()));
                    }
                    tokio::spawn(Arc::clone(&self.inner).watch_exit(id, pid, child, exited_tx));
                    tracing::info!(instance = %id, pid, %addr, "process instance started");
                    (addr, pid, exited)
                }
            }
        };

        let started = tokio::time::timeout(self.inner.timeouts.start_timeout(), async {
            tokio::select! {
                // An exit wins over a successful connect: a grandchild may hold the port.
                biased;
                code = exit_code(&mut exited) => Err(code),
                () = accepts(addr) => Ok(()),
            }
        })
        .await;
        match started {
            Ok(Ok(())) => Ok(addr),
            Ok(Err(code)) => Err(RuntimeError::ExitedEarly {
                id,
                exit_code: code?,
            }),
            Err(_elapsed) => {
                tracing::warn!(
                    instance = %id, pid, %addr,
                    "process instance did not listen in time"
                );
                signal_group(pid, libc::SIGKILL);
                // Resolve only once it is gone, so that a retry starts from a stopped instance.
                exit_code(&mut exited).await?;
                Err(RuntimeError::StartTimeout {
                    id,
                    addr,
                    secs: self.inner.timeouts.start_timeout().as_secs_f64(),
                })
            }
        }
    }

    async fn stop_instance(&self, id: Uuid) -> Result<(), RuntimeError> {
        let (pid, mut exited) = {
            let table = self.inner.lock();
            let instance = table
                .instances
                .get(&id)
                .ok_or(RuntimeError::UnknownInstance(id))?;
            match &instance.running {
                Some(running) => (running.pid, running.exited.clone()),
                None => return Ok(()),
            }
        };
        if let Some(procs) = &self.inner.stopping {
            let procs = Arc::clone(procs);
            // A cgroup move takes a kernel lock that can wait for an RCU grace period: not on
            // the runtime's threads.
            match tokio::task::spawn_blocking(move || move_into(&procs, pid)).await {
                Ok(Ok(())) => {}
                // Already gone: the stop below finds that out too.
                Ok(Err(err)) if err.raw_os_error() == Some(libc::ESRCH) => {}
                Ok(Err(err)) => tracing::warn!(
                    instance = %id, pid, %err,
                    "cannot move the stopping instance into runtime.stopping_cgroup; it stops where it is"
                ),
                Err(err) => {
                    tracing::warn!(instance = %id, pid, %err, "moving into runtime.stopping_cgroup")
                }
            }
        }
        signal_group(pid, libc::SIGTERM);
        let polite =
            tokio::time::timeout(self.inner.timeouts.stop_grace(), exit_code(&mut exited)).await;
        match polite {
            Ok(code) => {
                code?;
            }
            Err(_elapsed) => {
                tracing::info!(instance = %id, pid, "process instance ignored SIGTERM, killing it");
                signal_group(pid, libc::SIGKILL);
                exit_code(&mut exited).await?;
            }
        }
        Ok(())
    }

    async fn delete_instance(&self, id: Uuid) -> Result<(), RuntimeError> {
        match self.stop_instance(id).await {
            Ok(()) => {}
            Err(RuntimeError::UnknownInstance(_)) => return Ok(()),
            Err(err) => return Err(err),
        }
        let removed = {
            let mut table = self.inner.lock();
            let removed = table.instances.remove(&id);
            if let Some(running) = removed.as_ref().and_then(|i| i.running.as_ref()) {
                table.ports.remove(&running.port);
            }
            removed
        };
        // Only a start racing this delete can leave a child behind; it must not outlive the
        // instance. Its watcher still reports the exit.
        if let Some(Instance {
            running: Some(running),
            ..
        }) = removed
        {
            signal_group(running.pid, libc::SIGKILL);
        }
        if let Some(logs) = &self.inner.logs {
            logs.remove(id);
        }
        tracing::debug!(instance = %id, "process instance deleted");
        Ok(())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while the lock was held cannot leave the map half-updated (every critical
        // section is a single insert, remove or field write), so a poisoned lock is still sound.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spawns the instance's command in its own process group.
    fn spawn(&self, id: Uuid, instance: &Instance, port: u16) -> Result<Child, RuntimeError> {
        let image = self
            .images
            .get(&instance.image)
            .ok_or_else(|| RuntimeError::UnknownImage(instance.image.to_string()))?;
        let port = port.to_string();
        let id_text = id.to_string();
        let values = Placeholders {
            port: &port,
            name: &instance.name,
            id: &id_text,
            autokill: self.self_exe.as_os_str(),
        };
        let (program, args) = image
            .command
            .split_first()
            .ok_or_else(|| RuntimeError::Io {
                what: format!("starting instance {id}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("image {:?} has an empty command", instance.image),
                ),
            })?;
        let program = values.fill(program);
        let (stdout, stderr) = match &self.logs {
            Some(logs) => logs.stdio(id).map_err(|source| RuntimeError::Io {
                what: format!("opening the log of instance {id}"),
                source,
            })?,
            None => (Stdio::inherit(), Stdio::inherit()),
        };
        let mut command = Command::new(&program);
        command
            .args(args.iter().map(|arg| values.fill(arg)))
            .envs(
                image
                    .env
                    .iter()
                    .map(|(key, value)| (key.as_str(), values.fill(value))),
            )
            .env("AUTOKILL_INSTANCE_ID", id.to_string())
            .env("AUTOKILL_INSTANCE_NAME", &*instance.name)
            .env("AUTOKILL_OWNER", &self.owner)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own group, so that stop and the exit watcher reach every process it spawned,
            // and a Ctrl-C meant for autokill does not hit the instances.
            .process_group(0)
            // Instances outlive a crash of autokill by design: they are adopted after a restart.
            .kill_on_drop(false);
        command.spawn().map_err(|source| RuntimeError::Io {
            what: format!(
                "spawning {} for instance {id}",
                std::path::Path::new(&program).display()
            ),
            source,
        })
    }

    /// Waits for the child, cleans up its group, and reports the exit once.
    async fn watch_exit(
        self: Arc<Self>,
        id: Uuid,
        pid: u32,
        mut child: Child,
        exited: watch::Sender<Option<i32>>,
    ) {
        let code = match child.wait().await {
            Ok(status) => status_code(status),
            Err(err) => {
                // Only a broken SIGCHLD setup gets here; make sure nothing is left running and
                // report an exit code no process can produce.
                tracing::error!(instance = %id, pid, "waiting for process instance: {err}");
                -1
            }
        };
        // The leader is reaped, but the group id stays reserved while any member lives, so this
        // reaches exactly the leftovers of this instance.
        signal_group(pid, libc::SIGKILL);
        // Forget the pid before anyone hears of the exit: a controller that restarts on the event
        // must find the instance stopped.
        {
            let mut table = self.lock();
            let Table { instances, ports } = &mut *table;
            if let Some(instance) = instances.get_mut(&id)
                && let Some(running) = instance.running.take_if(|running| running.pid == pid)
            {
                ports.remove(&running.port);
            }
        }
        tracing::info!(instance = %id, pid, exit_code = code, "process instance exited");
        exited.send_replace(Some(code));
        // The controller may be gone during shutdown; then nobody is left to tell.
        let _ = self.events.send(RuntimeEvent::Exited {
            id,
            exit_code: code,
        });
    }
}

/// How often a running instance's log is checked against its bound.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Keeps a running instance's log within its bound until the instance exits.
async fn trim_while_running(logs: LogFiles, id: Uuid, mut exited: watch::Receiver<Option<i32>>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = exited.changed() => {
                if changed.is_err() || exited.borrow().is_some() {
                    return;
                }
            }
        }
        let logs = logs.clone();
        match tokio::task::spawn_blocking(move || logs.trim(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(instance = %id, %err, "cutting an instance log failed"),
            Err(err) => tracing::warn!(instance = %id, %err, "cutting an instance log failed"),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn create<'a>(&'a self, spec: &'a InstanceSpec) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(std::future::ready(self.create_instance(spec)))
    }

    fn create_now(&self, spec: &InstanceSpec) -> Option<Result<(), RuntimeError>> {
        Some(self.create_instance(spec))
    }

    fn start(&self, id: Uuid) -> BoxFuture<'_, Result<SocketAddr, RuntimeError>> {
        Box::pin(self.start_instance(id))
    }

    fn stop(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(self.stop_instance(id))
    }

    fn delete(&self, id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(self.delete_instance(id))
    }

    fn set_timeouts(&self, stop_grace: Duration, start_timeout: Duration) {
        self.inner.timeouts.set(stop_grace, start_timeout);
    }

    fn logs(
        &self,
        id: Uuid,
        offset: i64,
        limit: Option<u64>,
    ) -> BoxFuture<'_, Result<LogChunk, RuntimeError>> {
        Box::pin(async move {
            let Some(logs) = self.inner.logs.clone() else {
                return Err(RuntimeError::Unsupported {
                    runtime: "process",
                    what: "instance logs (no log directory)",
                });
            };
            if !self.inner.lock().instances.contains_key(&id) {
                return Err(RuntimeError::UnknownInstance(id));
            }
            // File reads: off the async threads.
            tokio::task::spawn_blocking(move || logs.read(id, offset, limit))
                .await
                .map_err(|e| RuntimeError::Io {
                    what: format!("reading the log of instance {id}"),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(|source| RuntimeError::Io {
                    what: format!("reading the log of instance {id}"),
                    source,
                })
        })
    }

    fn reclaim(&self) -> BoxFuture<'_, Result<usize, RuntimeError>> {
        Box::pin(async move {
            if self.inner.owner.is_empty() {
                return Ok(0);
            }
            // A child of an earlier run cannot be adopted: it is not our child, so its exit code
            // could never be known, and restart and autodestroy decide by exit code. Kill it
            // (and its group); the controller starts the instance again.
            let needle = format!("AUTOKILL_OWNER={}", self.inner.owner);
            let leftovers = processes_with_env(&needle);
            for &pid in &leftovers {
                // SAFETY: getpgid and kill take plain integers and touch no memory of ours.
                unsafe {
                    let pgid = libc::getpgid(pid as libc::pid_t);
                    if pgid > 1 {
                        libc::kill(-pgid, libc::SIGKILL);
                    }
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while leftovers.iter().any(|&p| alive(p)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if !leftovers.is_empty() {
                tracing::info!(
                    count = leftovers.len(),
                    "killed instance processes left by an earlier run"
                );
            }
            Ok(leftovers.len())
        })
    }
}

/// Pids of live processes whose environment holds `entry` exactly.
fn processes_with_env(entry: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == entry.as_bytes()))
        })
        .collect()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The values of `{port}`, `{name}` and `{autokill}` for one instance.
struct Placeholders<'a> {
    port: &'a str,
    name: &'a str,
    id: &'a str,
    autokill: &'a OsStr,
}

impl Placeholders<'_> {
    /// Fills the placeholders of `template` in one pass, so that a value containing `{port}`
    /// (a name, say) is not filled again. Unknown `{...}` stay as they are. The result is an
    /// `OsString` because the autokill path need not be UTF-8.
    fn fill(&self, template: &str) -> OsString {
        let mut out = OsString::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push(&rest[..open]);
            let tail = &rest[open..];
            let (value, len): (&OsStr, usize) = if tail.starts_with("{port}") {
                (OsStr::new(self.port), "{port}".len())
            } else if tail.starts_with("{name}") {
                (OsStr::new(self.name), "{name}".len())
            } else if tail.starts_with("{id}") {
                (OsStr::new(self.id), "{id}".len())
            } else if tail.starts_with("{autokill}") {
                (self.autokill, "{autokill}".len())
            } else {
                (OsStr::new("{"), 1)
            };
            out.push(value);
            rest = &tail[len..];
        }
        out.push(rest);
        out
    }
}

/// Picks a free loopback port, asking again (a few times) when a running instance of this
/// runtime already holds the one the OS offered (it may not listen yet, or listen elsewhere).
///
/// The port is free when the OS hands it out; between here and the child's `bind` another process
/// could take it, which `start` then reports as a start timeout.
fn free_port(taken: &HashSet<u16>) -> Result<u16, RuntimeError> {
    let mut port = 0;
    for _ in 0..PORT_ATTEMPTS {
        port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|source| RuntimeError::Io {
                what: "allocating a loopback port".to_owned(),
                source,
            })?
            .port();
        if !taken.contains(&port) {
            break;
        }
    }
    Ok(port)
}

/// Resolves once `addr` accepts a TCP connection, trying every [`READY_POLL`].
async fn accepts(addr: SocketAddr) {
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Waits for the exit watcher to see the process exit, with its exit code.
async fn exit_code(exited: &mut watch::Receiver<Option<i32>>) -> Result<i32, RuntimeError> {
    match exited.wait_for(Option::is_some).await {
        Ok(code) => Ok(code.unwrap_or(-1)),
        // The watcher task was dropped without seeing the exit: the tokio runtime is shutting down.
        Err(_) => Err(RuntimeError::Io {
            what: "waiting for a process instance to exit".to_owned(),
            source: std::io::Error::other("the exit watcher is gone"),
        }),
    }
}

/// The shell's convention: the exit status, or 128 + the signal that ended the process.
fn status_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        // Neither exited nor signalled: a stopped/continued status, which `wait` never returns.
        (None, None) => -1,
    }
}

/// Checks that `runtime.stopping_cgroup` (`dir`) is a cgroup this process may move processes
/// into: its `cgroup.procs` opens for writing. Nothing is written.
pub fn check_stopping_cgroup(dir: &Path) -> std::io::Result<()> {
    let procs = dir.join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map(drop)
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", procs.display())))
}

/// Moves process `pid` (all its threads) into the cgroup whose `cgroup.procs` is `procs`.
fn move_into(procs: &Path, pid: u32) -> std::io::Result<()> {
    // One write(2) of the pid, as the cgroup interface wants it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(procs)?
        .write_all(pid.to_string().as_bytes())
}

/// Sends `signal` to the process group `pgid`. A group that is already gone is not an error.
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // Never signal group 0 (our own) or -1 (everything we may signal).
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, "signalling process group: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Placeholders<'static> {
        Placeholders {
            port: "4242",
            name: "web-{port}",
            id: "0000",
            autokill: OsStr::new("/opt/autokill"),
        }
    }

    #[test]
    fn fills_every_placeholder_once() {
        assert_eq!(
            values().fill("{autokill} hello --listen 127.0.0.1:{port} --name {name}"),
            OsString::from("/opt/autokill hello --listen 127.0.0.1:4242 --name web-{port}")
        );
    }

    #[test]
    fn leaves_other_braces_alone() {
        assert_eq!(
            values().fill("{ {por} {port}{{name}} {"),
            OsString::from("{ {por} 4242{web-{port}} {")
        );
        assert_eq!(values().fill("plain"), OsString::from("plain"));
        assert_eq!(values().fill(""), OsString::new());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        // Raw wait statuses: exit code in the high byte, terminating signal in the low bits.
        assert_eq!(status_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(status_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
