//! The control path: the one task that owns instances and service groups.
//!
//! Every change arrives as a [`Command`] (from the config, the proxy's control channel, the
//! runtime's exit events, the runtime calls it started itself), is applied in order by the pure
//! [`State::apply`], and yields [`Effect`]s that the task carries out: runtime calls (run as tasks
//! that report back with a command, so the loop never blocks on a runtime), drain watches, and
//! publishing a new route table and [`View`].

pub mod api;
mod live;
mod persist;
mod starts;
mod state;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use state::services::{
    ContainerState, ContainerView, Graveyard, MAX_CONTAINERS, MAX_SERVICE_NAME, ServiceSpec,
    ServiceState, ServiceView, TERMINATED_RETENTION, Transition, TutumView,
};
pub use state::{Group, Instance, State};

pub use live::LiveSettings;

use crate::config::{Autodestroy, Autokill, Config, RestartPolicy};
use crate::metrics::Metrics;
use crate::proxy::ProxyEvent;
use crate::proxy::meter::Meter;
use crate::proxy::route::{Drain, RouteTable, Upstream};
use crate::runtime::{InstanceSpec, Runtime, RuntimeEvent};
use crate::store::{Change, Snapshot, Store, StoreError};
use crate::timers::{TimerId, Timers};

/// Lifecycle state of an instance (the Unikraft Cloud names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Being created or started.
    Starting,
    /// Serving.
    Running,
    /// Its request budget is spent: no new requests, in-flight ones finish.
    Draining,
    /// Being stopped or deleted.
    Stopping,
    /// Not running.
    Stopped,
    /// Turned into a template.
    Template,
    /// Gone (shown only in answers about a deletion).
    Deleted,
}

impl InstanceState {
    /// Every state, for metrics that show zeros too.
    pub const ALL: [InstanceState; 7] = [
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Draining,
        InstanceState::Stopping,
        InstanceState::Stopped,
        InstanceState::Template,
        InstanceState::Deleted,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Draining => "draining",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Template => "template",
            InstanceState::Deleted => "deleted",
        }
    }
}

/// Why an instance stopped or is being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It served its `num_requests`.
    NumRequests,
    /// It exited on its own.
    Exited,
    /// A user stopped it.
    UserStop,
    /// It could not be started.
    StartFailed,
}

impl StopReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::NumRequests => "num_requests",
            StopReason::Exited => "exited",
            StopReason::UserStop => "user_stop",
            StopReason::StartFailed => "start_failed",
        }
    }
}

/// Everything that can change the controller's state.
#[derive(Debug)]
// `allow`, not `expect`: whether the lint fires depends on the size of the next-largest
// variant (`Settings`), which is not what the reason is about.
#[allow(
    clippy::large_enum_variant,
    reason = "an API call is moved once through the controller's queue; boxing it would \
              allocate per call to save bytes only while it waits"
)]
pub enum Command {
    /// The configuration file declares these groups and instances.
    Declare {
        /// Service groups with their instances.
        groups: Vec<crate::config::GroupConfig>,
        /// Stand-alone instances.
        instances: Vec<crate::config::InstanceConfig>,
    },
    /// A configuration reload changed settings that apply while running.
    Settings(LiveSettings),
    /// A launch or start the controller asked for finished.
    Started {
        /// The instance.
        id: Uuid,
        /// Which start of the instance this answers (older answers are ignored).
        attempt: u64,
        /// Its address, or why it failed.
        result: Result<SocketAddr, String>,
    },
    /// A start the controller asked for never began: a stop or a delete overtook it while it
    /// waited for its place (see [`starts`]). No process ran, so no exit will be reported.
    NotStarted {
        /// The instance.
        id: Uuid,
        /// Which start of the instance this answers.
        attempt: u64,
    },
    /// A stop the controller asked for finished (the exit itself arrives as [`Command::Exited`]).
    StopDone {
        /// The instance.
        id: Uuid,
        /// Success, or why it failed.
        result: Result<(), String>,
    },
    /// The proxy admitted the request that spent the instance's budget.
    LimitReached {
        /// The instance.
        id: Uuid,
    },
    /// The proxy used half of an instance's durable reservation: reserve the next block.
    Reserve {
        /// The instance.
        id: Uuid,
    },
    /// A draining instance has no request left in flight, or its drain timeout passed.
    Drained {
        /// The instance.
        id: Uuid,
    },
    /// The runtime saw the instance exit.
    Exited {
        /// The instance.
        id: Uuid,
        /// Its exit code.
        exit_code: i32,
    },
    /// An admin API call, answered on `ReplyTo` once its change is published.
    Api(api::Call, api::ReplyTo),
    /// A lifecycle timer fired.
    Timer(TimerKey),
    /// The runtime's engine became unreachable (`Some(why)`) or reachable again (`None`).
    Engine {
        /// Why it cannot be reached.
        unreachable: Option<String>,
    },
    /// A delete the controller asked for finished.
    Deleted {
        /// The instance.
        id: Uuid,
        /// Success, or why it failed.
        result: Result<(), String>,
    },
}

/// What a lifecycle timer is for; the key the timing wheel hands back when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// A stopped instance's `autokill.time` passed.
    StoppedTime(Uuid),
    /// A template's unused time passed.
    Unused(Uuid),
    /// A service group's empty time passed.
    Empty(Uuid),
    /// A draining instance's `drain_timeout` passed.
    Drain(Uuid),
    /// A restart back-off ended.
    Restart(Uuid),
}

/// What [`State::apply`] asks the controller task to do.
#[derive(Debug)]
pub enum Effect {
    /// Create an instance in the runtime, and start it if `start` says which attempt this is;
    /// reports [`Command::Started`] when starting.
    Launch {
        /// What to create.
        spec: InstanceSpec,
        /// Start it too, as this attempt.
        start: Option<u64>,
    },
    /// Start a created instance as `attempt`; reports [`Command::Started`].
    Start {
        /// The instance.
        id: Uuid,
        /// Which start this is.
        attempt: u64,
    },
    /// Stop an instance; reports [`Command::StopDone`] (and the runtime reports the exit).
    Stop(Uuid),
    /// Arm (or re-arm) the timer `key` for `at`.
    Arm(TimerKey, SystemTime),
    /// Disarm the timer `key`, if armed.
    Disarm(TimerKey),
    /// Answer an API call (after the effects before it, publishing included).
    /// (Boxed: an instance's view is large, and effects are moved around in vectors.)
    Reply(api::ReplyTo, Box<Result<api::Reply, api::ApiError>>),
    /// Delete an instance through the runtime; reports [`Command::Deleted`].
    Delete(Uuid),
    /// Commit a new template's stopped instance to the image its clones run (see
    /// [`Runtime::commit`]); failures are logged, and surface when a clone is created.
    Commit(Uuid),
    /// Wait until the upstream has nothing in flight; reports [`Command::Drained`]. The drain
    /// timeout is a timer of its own ([`TimerKey::Drain`]).
    WatchDrain {
        /// The instance.
        id: Uuid,
        /// Its incarnation, whose in-flight count is watched.
        upstream: Arc<Upstream>,
    },
    /// End the [`Effect::WatchDrain`] of this incarnation without reporting [`Command::Drained`]:
    /// the instance is deleted, stopped, or serves again.
    EndDrainWatch(Arc<Upstream>),
    /// Publish a new route table and view.
    Publish,
    /// Give a meter its new durable ceiling (carried out after the commit that made it durable).
    Reserved {
        /// The meter.
        meter: Arc<Meter>,
        /// The ceiling.
        reserved: u64,
        /// The count at which to ask for the next block.
        refill_at: u64,
    },
    /// Give a meter its instance's new limit and lock (carried out after the commit that made
    /// them durable); if the budget is then found spent, the controller is told
    /// ([`Command::LimitReached`]), as a request that raced the change may not have seen it.
    SetLimit {
        /// The instance.
        id: Uuid,
        /// Its meter.
        meter: Arc<Meter>,
        /// The new limit (0 = none).
        limit: u64,
        /// Whether a delete lock holds the kill back (the proxy serves past the limit).
        held: bool,
    },
    /// Count a kill in the metrics.
    Killed {
        /// `instance`, `template` or `service_group`.
        resource: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Count a kill a delete lock held back.
    KillSkipped {
        /// `instance`, `template` or `service_group`.
        resource: &'static str,
        /// Why it would have been killed.
        reason: &'static str,
    },
}

/// A read-only snapshot of the controller's state, published after every change.
#[derive(Debug, Default)]
pub struct View {
    /// Instances and templates, by name and by id.
    pub instances: Instances,
    /// Service groups, by name and by id.
    pub groups: Groups,
    /// What `/api/v1` reads besides: Tutum services, containers being or lately terminated.
    pub tutum: TutumView,
    /// The lifecycle deadline of each instance, template and group that has one armed (kept
    /// apart from their views, which API answers carry through the controller's queue).
    pub due: imbl::OrdMap<Uuid, Due>,
}

/// Records of a [`View`] (instances, groups) in persistent maps: the controller keeps them up to
/// date record by record as batches are committed, and a publish shares all of it (a clone is
/// O(1)), so publishing costs what changed, not what exists. Both maps are B-trees: imbl's
/// hash map (a HAMT) took about 150 bytes per record at 100,000 of them, a B-tree about 40.
#[derive(Debug)]
pub struct Records<V> {
    by_name: imbl::OrdMap<Arc<str>, Arc<V>>,
    by_id: imbl::OrdMap<Uuid, Arc<V>>,
}

/// The instances and templates of a [`View`].
pub type Instances = Records<InstanceView>;
/// The service groups of a [`View`].
pub type Groups = Records<GroupView>;

/// What a [`Records`] is keyed by.
pub trait Record {
    /// Identity.
    fn id(&self) -> Uuid;
    /// Unique name.
    fn name(&self) -> Arc<str>;
}

impl Record for InstanceView {
    fn id(&self) -> Uuid {
        self.id
    }
    fn name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }
}

impl Record for GroupView {
    fn id(&self) -> Uuid {
        self.id
    }
    fn name(&self) -> Arc<str> {
        Arc::from(self.name.as_str())
    }
}

impl<V> Clone for Records<V> {
    fn clone(&self) -> Self {
        Records {
            by_name: self.by_name.clone(),
            by_id: self.by_id.clone(),
        }
    }
}

impl<V> Default for Records<V> {
    fn default() -> Self {
        Records {
            by_name: imbl::OrdMap::new(),
            by_id: imbl::OrdMap::new(),
        }
    }
}

impl<V: Record> Records<V> {
    /// Every record, sorted by name.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.by_name.values().map(|v| &**v)
    }
    /// The one with this id.
    pub fn get(&self, id: &Uuid) -> Option<&V> {
        self.by_id.get(id).map(|v| &**v)
    }
    /// The one with this name.
    pub fn named(&self, name: &str) -> Option<&V> {
        self.by_name.get(name).map(|v| &**v)
    }
    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    /// Puts `records`, sorted by name, into a set that has none: the two indexes are built on
    /// two threads. (The first commit after a recovery puts every record at once.)
    pub(crate) fn fill(&mut self, records: &[Arc<V>])
    where
        V: Send + Sync,
    {
        debug_assert!(self.is_empty());
        let (by_name, by_id) = crate::par::join(
            "autokill-views",
            || {
                records
                    .iter()
                    .map(|r| (r.name(), Arc::clone(r)))
                    .collect::<imbl::OrdMap<_, _>>()
            },
            || {
                let mut by_id: Vec<(Uuid, Arc<V>)> =
                    records.iter().map(|r| (r.id(), Arc::clone(r))).collect();
                by_id.sort_unstable_by_key(|(id, _)| *id);
                by_id.into_iter().collect::<imbl::OrdMap<_, _>>()
            },
        );
        self.by_name = by_name;
        self.by_id = by_id;
    }

    /// Puts (or replaces) one record.
    pub(crate) fn put(&mut self, record: Arc<V>) {
        self.remove(&record.id());
        self.by_name.insert(record.name(), Arc::clone(&record));
        self.by_id.insert(record.id(), record);
    }
    /// Removes one record.
    pub(crate) fn remove(&mut self, id: &Uuid) {
        if let Some(old) = self.by_id.remove(id) {
            let name = old.name();
            // Only its own entry: a new record may already have taken the name (a redeploy).
            if self.by_name.get(&name).is_some_and(|v| v.id() == *id) {
                self.by_name.remove(&name);
            }
        }
    }
}

impl<'a, V: Record> IntoIterator for &'a Records<V> {
    type Item = &'a V;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a V> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// One instance in a [`View`].
#[derive(Debug)]
pub struct InstanceView {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: Arc<str>,
    /// State (`template` for a template).
    pub state: InstanceState,
    /// The template it was cloned from.
    pub template: Option<String>,
    /// Templates: clones of it that still exist.
    pub clones: usize,
    /// Its group's name.
    pub group: Option<String>,
    /// Image key.
    pub image: String,
    /// Memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// Why its last start failed, until one succeeds.
    pub start_error: Option<String>,
    /// The live meter (requests served are read from it).
    pub meter: Arc<Meter>,
    /// Autokill policy (for a template: the policy its clones inherit).
    pub autokill: Autokill,
    /// Templates: deleted once unused this long.
    pub unused_time: Option<Duration>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Autodestroy policy.
    pub autodestroy: Autodestroy,
    /// Exit code of the last exit.
    pub exit_code: Option<i32>,
    /// Why it last stopped.
    pub stop_reason: Option<StopReason>,
    /// When it last stopped.
    pub stopped_at: Option<SystemTime>,
    /// When it was created.
    pub created_at: SystemTime,
    /// Delete lock.
    pub delete_lock: bool,
    /// Where it listens, while running.
    pub addr: Option<SocketAddr>,
    /// The Tutum service it is a container of.
    pub service: Option<Uuid>,
    /// When its current run began (while running).
    pub started_at: Option<SystemTime>,
}

/// A lifecycle deadline, as the view shows it (the web page counts down to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// What happens then.
    pub kind: DueKind,
    /// When.
    pub at: SystemTime,
}

/// What a [`Due`] deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    /// A stopped instance is deleted (`autokill.time`).
    StoppedTime,
    /// A template nobody cloned is deleted.
    Unused,
    /// A service group left empty is deleted.
    Empty,
    /// A draining instance stops waiting for its requests in flight.
    Drain,
    /// A crashed instance is started again (restart back-off).
    Restart,
}

impl DueKind {
    /// What happens at the deadline, in words.
    pub fn as_str(self) -> &'static str {
        match self {
            DueKind::StoppedTime => "stopped time",
            DueKind::Unused => "unused",
            DueKind::Empty => "empty",
            DueKind::Drain => "drain",
            DueKind::Restart => "restart",
        }
    }
}

/// One service group in a [`View`].
#[derive(Debug)]
pub struct GroupView {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Host names.
    pub domains: Vec<String>,
    /// Empty-time autokill.
    pub autokill_time: Option<Duration>,
    /// Delete lock.
    pub delete_lock: bool,
    /// Names of the instances that belong to it.
    pub instances: Vec<Arc<str>>,
    /// As given at creation; shown.
    pub soft_limit: Option<u64>,
    /// As given at creation; shown.
    pub hard_limit: Option<u64>,
    /// The `services` port mappings as given; shown.
    pub services: serde_json::Value,
    /// When it was created.
    pub created_at: SystemTime,
    /// Whether it is deleted (in answers to a delete).
    pub deleted: bool,
}

/// The shared outputs of the controller: what the proxy routes by and what the admin side reads.
#[derive(Clone)]
pub struct Published {
    /// The proxy's route table.
    pub table: Arc<ArcSwap<RouteTable>>,
    /// The admin side's snapshot.
    pub view: Arc<ArcSwap<View>>,
    /// Bumped after every publish, so that the API can wait for a state without polling.
    pub changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Published {
    /// Empty table and view.
    pub fn new() -> Published {
        Published {
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            view: Arc::new(ArcSwap::from_pointee(View::default())),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Default for Published {
    fn default() -> Self {
        Published::new()
    }
}

/// Inputs of the controller task.
pub struct Inputs {
    /// Commands from the API and from the controller's own effects.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Sender for the above (the task's effects report through it).
    pub commands_tx: mpsc::UnboundedSender<Command>,
    /// The proxy's control channel.
    pub proxy: mpsc::UnboundedReceiver<ProxyEvent>,
    /// The runtime's events.
    pub runtime: mpsc::UnboundedReceiver<RuntimeEvent>,
    /// Fires when the server shuts down: the controller ends after the batch in hand, so that
    /// what happens to instances afterwards (their exits at shutdown) is not decided on.
    pub shutdown: tokio::sync::oneshot::Receiver<()>,
}

/// The controller's clock: wall-clock time as tokio's clock advances it, so that deadlines are
/// wall-clock instants (what the store persists) and tests can still pause time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    mono: tokio::time::Instant,
}

impl Clock {
    /// A clock reading the system time now.
    pub fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    /// The tokio instant of a wall-clock deadline (now, if it has passed).
    pub fn instant(&self, at: SystemTime) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match at.duration_since(self.now()) {
            Ok(ahead) => now + ahead,
            Err(_) => now,
        }
    }
}

/// Most commands applied together and committed in one write transaction.
const BATCH: usize = 256;

/// Memory freed by a burst of work (request bodies, a grown table's old buckets, a recovery's
/// snapshot) stays resident in the allocator's free lists; once the controller has been idle
/// this long after a batch it is given back to the system. At 100,000 instances created in
/// batches that was about 300 bytes per instance, 15 % of the state's own size.
const TRIM_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Gives freed heap pages back to the system (glibc's `malloc_trim`, as HAProxy does after its
/// pools shrink), off the controller's task: it walks the heap. Elsewhere it does nothing.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        let began = std::time::Instant::now();
        // SAFETY: malloc_trim only releases free memory; it takes the allocator's own locks.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            took_us = began.elapsed().as_micros() as u64,
            "freed memory given back"
        );
    });
}

/// Runs the controller until every input is closed: recovers the stored state, reconciles the
/// configuration, then applies commands in batches, each committed to the store before its
/// effects are carried out (so nothing is acknowledged before it is durable).
///
/// Runtime calls (creates, starts, stops, deletes) and drain watches are spawned on `work`, and
/// nothing of the controller's own forks a process: the server runs the controller on a thread
/// of lower CPU priority than the rest (`runtime.controller_nice`), and an instance process
/// must not inherit it.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: &Config,
    workers: usize,
    runtime: Arc<dyn Runtime>,
    store: Arc<Store>,
    snapshot: Snapshot,
    published: Published,
    metrics: Metrics,
    mut inputs: Inputs,
    recovered: tokio::sync::oneshot::Sender<()>,
    work: Handle,
) {
    let mut state = State::new(config, workers);
    let clock = Clock::start();
    let timers = {
        let tx = inputs.commands_tx.clone();
        Timers::spawn(move |key| {
            let _ = tx.send(Command::Timer(key));
        })
    };
    let mut task = Task {
        runtime,
        kills: live::Places::new(config.runtime.max_concurrent_kills),
        starts: starts::Starts::new(config.runtime.max_concurrent_starts),
        published,
        metrics,
        tx: inputs.commands_tx.clone(),
        timers,
        armed: hashbrown::HashMap::new(),
        clock,
        store,
        work,
    };
    let began = std::time::Instant::now();
    let (instances, groups) = (snapshot.instances.len(), snapshot.groups.len());
    // What an earlier run left: adopted where the runtime can (containers), removed otherwise.
    // Adopting is done while the stored state is recovered on a blocking thread: nothing of it
    // is needed before the two meet in `State::adopt`, and no instance is created or started
    // before that (effects are carried out after the commit below). Removing (processes, which
    // cannot be adopted) waits until the server is ready, and holds back only the starts: a
    // thousand processes dying at once take both cores for a while, the leftovers sleep
    // meanwhile (nothing routes to them), and nothing but a start has to wait for them to go.
    let adopts = task.runtime.adopts();
    let (stored, clearing) = if adopts {
        (persist::stored_specs(&snapshot), None)
    } else {
        (Vec::new(), Some(task.starts.wait_for_clearing()))
    };
    let now = clock.now();
    let recovering = tokio::task::spawn_blocking(move || {
        let began = std::time::Instant::now();
        let effects = state.recover(snapshot, now);
        (state, effects, began.elapsed())
    });
    let adopting = async {
        let began = std::time::Instant::now();
        let found = if adopts {
            task.runtime.adopt(&stored).await
        } else {
            Ok(HashMap::new())
        };
        (found, began.elapsed())
    };
    let (recovered_state, (found, adopt_took)) = tokio::join!(recovering, adopting);
    let (mut effects, recover_took) = match recovered_state {
        Ok((recovered, effects, took)) => {
            state = recovered;
            (effects, took)
        }
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // The runtime is shutting down.
        Err(_) => return,
    };
    let found = found.unwrap_or_else(|err| {
        tracing::error!(%err, "taking over instances left by an earlier run failed");
        HashMap::new()
    });
    let adopted = began.elapsed();
    state.adopt(&found, &mut effects, clock.now());
    let declare = Command::Declare {
        groups: config.service_groups.clone(),
        instances: config.instances.clone(),
    };
    effects.extend(state.apply(declare, clock.now()));
    // Not ready until the recovered state is durable again: a store that refuses writes now is
    // retried rather than let the server start on a state it cannot keep. Nothing is rolled
    // back meanwhile: there is no earlier state to go back to, only the same changes to write.
    // The changes are indexed for publishing (every view, at a first start) while they are
    // written: the two need nothing of each other, and the write mostly waits for the disk.
    let writing = task.write_changes(state.changes());
    state.index_changes();
    let mut written = writing.await;
    let mut backoff = RETRY_FIRST;
    loop {
        match written {
            Ok((Ok(()), _)) => break,
            Ok((Err(err), changes)) => {
                tracing::error!(%err, "committing the recovered state failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                written = task.write_changes(changes).await;
            }
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // The runtime is shutting down.
            Err(_) => return,
        }
    }
    state.settle();
    let committed = began.elapsed();
    // Ready once what the proxy and the API serve from is published. The timers (one per
    // stored instance with a deadline) are armed right after, before any command is taken:
    // none can tell, except that a deadline already past fires a moment later. The starts of
    // the instances that were running go last: a thousand of them spawning would otherwise
    // take the cores the rest of the recovery needs.
    let (timers, effects): (Vec<Effect>, Vec<Effect>) = effects
        .into_iter()
        .partition(|e| matches!(e, Effect::Arm(..) | Effect::Disarm(..)));
    task.starts.hold();
    task.carry_out(effects, &mut state);
    tracing::info!(
        instances,
        groups,
        recover_ms = recover_took.as_millis() as u64,
        adopt_ms = adopt_took.as_millis() as u64,
        commit_ms = (committed - adopted).as_millis() as u64,
        carry_out_ms = (began.elapsed() - committed).as_millis() as u64,
        "state recovered"
    );
    let _ = recovered.send(());
    task.carry_out(timers, &mut state);
    if let Some(cleared) = clearing {
        let runtime = Arc::clone(&task.runtime);
        task.work.spawn(async move {
            let began = std::time::Instant::now();
            match runtime.reclaim().await {
                Ok(removed) => tracing::info!(
                    removed,
                    took_ms = began.elapsed().as_millis() as u64,
                    "leftovers of an earlier run removed; starts may begin"
                ),
                Err(err) => {
                    tracing::error!(%err, "removing what an earlier run left failed; starting anyway")
                }
            }
            let _ = cleared.send(true);
        });
    }
    task.starts.unhold(&task.work);
    // Commands of a batch whose commit failed, applied again first (API calls excepted: they
    // were answered with the error).
    let mut again: VecDeque<Command> = VecDeque::new();
    let mut backoff = RETRY_FIRST;
    // Whether a batch ran since freed memory was last given back (see `TRIM_AFTER_IDLE`).
    let mut untrimmed = true;
    loop {
        let first = match again.pop_front() {
            Some(cmd) => cmd,
            None => tokio::select! {
                biased;
                _ = &mut inputs.shutdown => break,
                Some(cmd) = inputs.commands.recv() => cmd,
                Some(ev) = inputs.proxy.recv() => proxy_command(ev),
                Some(ev) = inputs.runtime.recv() => runtime_command(ev),
                () = tokio::time::sleep(TRIM_AFTER_IDLE), if untrimmed => {
                    untrimmed = false;
                    give_back_freed_memory();
                    continue;
                }
                else => break,
            },
        };
        untrimmed = true;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            let next = match again.pop_front() {
                Some(cmd) => cmd,
                None => match inputs.commands.try_recv() {
                    Ok(cmd) => cmd,
                    Err(_) => match inputs.proxy.try_recv() {
                        Ok(ev) => proxy_command(ev),
                        Err(_) => match inputs.runtime.try_recv() {
                            Ok(ev) => runtime_command(ev),
                            Err(_) => break,
                        },
                    },
                },
            };
            batch.push(next);
        }
        let mut effects = Vec::new();
        let mut retry = Vec::new();
        for cmd in batch {
            match &cmd {
                Command::Timer(key) => {
                    task.armed.remove(key);
                }
                Command::Started { id, attempt, .. } | Command::NotStarted { id, attempt } => {
                    task.starts.reported(*id, *attempt);
                }
                Command::Settings(live) => {
                    task.kills.resize(live.max_concurrent_kills);
                    task.starts.resize(live.max_concurrent_starts);
                    task.runtime
                        .set_timeouts(live.stop_grace, live.start_timeout);
                }
                _ => {}
            }
            retry.extend(cmd.retry_copy());
            effects.extend(state.apply(cmd, clock.now()));
        }
        match task.commit(&mut state).await {
            Ok(()) => {
                backoff = RETRY_FIRST;
                task.carry_out(effects, &mut state);
            }
            Err(message) => {
                // Nothing of the batch happened: the state is back at the last commit, no
                // effect is carried out, its API calls are answered with the error, and the
                // events it held are applied again after a pause.
                tracing::error!(%message, "committing state failed; the batch is undone and its events retried");
                for effect in effects {
                    if let Effect::Reply(to, _) = effect {
                        let _ = to.send(Err(api::ApiError {
                            status: 500,
                            message: format!("the change could not be made durable: {message}"),
                        }));
                    }
                }
                again.extend(retry);
                tokio::select! {
                    biased;
                    _ = &mut inputs.shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
    // Starts still waiting for a place never begin: nothing would hear how they went, and the
    // shutdown that follows stops what the state says runs.
    task.starts.close();
}

/// Pauses between attempts to commit after the store refused a write.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Command {
    /// A copy of an event to apply again if its batch could not be committed; `None` for an
    /// API call (answered with the error instead: its caller decides whether to retry).
    fn retry_copy(&self) -> Option<Command> {
        Some(match self {
            Command::Declare { groups, instances } => Command::Declare {
                groups: groups.clone(),
                instances: instances.clone(),
            },
            Command::Settings(live) => Command::Settings(*live),
            Command::Started {
                id,
                attempt,
                result,
            } => Command::Started {
                id: *id,
                attempt: *attempt,
                result: result.clone(),
            },
            Command::NotStarted { id, attempt } => Command::NotStarted {
                id: *id,
                attempt: *attempt,
            },
            Command::StopDone { id, result } => Command::StopDone {
                id: *id,
                result: result.clone(),
            },
            Command::LimitReached { id } => Command::LimitReached { id: *id },
            Command::Reserve { id } => Command::Reserve { id: *id },
            Command::Drained { id } => Command::Drained { id: *id },
            Command::Exited { id, exit_code } => Command::Exited {
                id: *id,
                exit_code: *exit_code,
            },
            Command::Timer(key) => Command::Timer(*key),
            Command::Engine { unreachable } => Command::Engine {
                unreachable: unreachable.clone(),
            },
            Command::Deleted { id, result } => Command::Deleted {
                id: *id,
                result: result.clone(),
            },
            Command::Api(..) => return None,
        })
    }
}

fn proxy_command(ev: ProxyEvent) -> Command {
    match ev {
        ProxyEvent::LimitReached { id } => Command::LimitReached { id },
        ProxyEvent::Reserve { id } => Command::Reserve { id },
    }
}

fn runtime_command(ev: RuntimeEvent) -> Command {
    match ev {
        RuntimeEvent::Exited { id, exit_code } => Command::Exited { id, exit_code },
        RuntimeEvent::Engine { unreachable } => Command::Engine { unreachable },
    }
}

/// What the controller task needs to carry out effects.
struct Task {
    runtime: Arc<dyn Runtime>,
    /// Places for runtime stops and deletes (`runtime.max_concurrent_kills`).
    kills: live::Places,
    /// Places for runtime starts (`runtime.max_concurrent_starts`), and the starts waiting.
    starts: starts::Starts,
    published: Published,
    metrics: Metrics,
    tx: mpsc::UnboundedSender<Command>,
    timers: Timers<TimerKey>,
    /// The wheel's id of every armed timer, to cancel or move it.
    armed: hashbrown::HashMap<TimerKey, TimerId>,
    clock: Clock,
    store: Arc<Store>,
    /// Where runtime calls (creates, starts, stops, deletes) and drain watches run: the
    /// server's runtime, at its own priority, so that instance processes are spawned at it
    /// (a child inherits the nice value of the thread that forks it; see `run`).
    work: Handle,
}

impl Task {
    /// Commits what the batch changed (one write transaction, fsync). On failure the state is
    /// rolled back to the last commit, so memory never runs ahead of the disk.
    async fn commit(&mut self, state: &mut State) -> Result<(), String> {
        let result = self.write(state).await;
        if result.is_err() {
            state.rollback();
        }
        result
    }

    /// Writes the batch's changes; on success the state is committed, on failure it is left
    /// as it is, its changes still pending (the recovery retries them; a batch rolls back).
    async fn write(&mut self, state: &mut State) -> Result<(), String> {
        let changes = state.changes();
        if changes.is_empty() {
            state.committed();
            return Ok(());
        }
        let result = match self.write_changes(changes).await {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(err), _)) => Err(err.to_string()),
            Err(err) => Err(format!("store task failed: {err}")),
        };
        if result.is_ok() {
            state.committed();
        }
        result
    }

    /// Writes `changes` to the store on a blocking thread (one transaction, fsync); they come
    /// back with the result, for a retry.
    fn write_changes(
        &self,
        changes: Vec<Change>,
    ) -> tokio::task::JoinHandle<(Result<(), StoreError>, Vec<Change>)> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || (store.commit(&changes), changes))
    }

    /// Carries out effects in order. Runtime calls and drain watches run as tasks that report
    /// back with a command; replies wait until the state they describe is published.
    fn carry_out(&mut self, effects: Vec<Effect>, state: &mut State) {
        // The state is that after the whole batch, so one publish serves every change in it,
        // and the replies wait for it (read-after-write) rather than each publishing anew.
        let mut publish = false;
        let mut replies = Vec::new();
        for effect in effects {
            match effect {
                Effect::Publish => publish = true,
                Effect::Reserved {
                    meter,
                    reserved,
                    refill_at,
                } => meter.set_reserved(reserved, refill_at),
                Effect::SetLimit {
                    id,
                    meter,
                    limit,
                    held,
                } => {
                    // A request that took the count to the new limit while it was being set
                    // may have read the old one and not reported it; this read cannot miss it
                    // (see `Meter::set_limit`).
                    if meter.set_limit_spent(limit, held) && !held {
                        let _ = self.tx.send(Command::LimitReached { id });
                    }
                }
                Effect::Reply(to, result) => replies.push((to, *result)),
                Effect::Killed { resource, reason } => self.metrics.killed(resource, reason),
                Effect::KillSkipped { resource, reason } => self
                    .metrics
                    .kills_skipped
                    .with_label_values(&[resource, reason])
                    .inc(),
                Effect::Arm(key, at) => {
                    let deadline = self.clock.instant(at);
                    let moved = self
                        .armed
                        .get(&key)
                        .is_some_and(|id| self.timers.reschedule(*id, deadline));
                    if !moved {
                        self.armed.insert(key, self.timers.insert(deadline, key));
                    }
                }
                Effect::Disarm(key) => {
                    if let Some(id) = self.armed.remove(&key) {
                        self.timers.cancel(id);
                    }
                }
                Effect::Launch { spec, start } => {
                    if start.is_none()
                        && let Some(created) = self.runtime.create_now(&spec)
                    {
                        if let Err(err) = created {
                            tracing::warn!(instance = %spec.name, %err, "creating instance failed");
                        }
                        continue;
                    }
                    let (runtime, tx) = (Arc::clone(&self.runtime), self.tx.clone());
                    let turn = start.map(|attempt| (attempt, self.starts.ask(spec.id, attempt)));
                    self.starts.spawn(async move {
                        let id = spec.id;
                        let created = runtime.create(&spec).await;
                        let Some((attempt, turn)) = turn else {
                            if let Err(err) = created {
                                tracing::warn!(instance = %spec.name, %err, "creating instance failed");
                            }
                            return;
                        };
                        // The place is taken after the create: a pull of a missing image is
                        // not a start, and must not hold up the starts of others.
                        let result = match created {
                            Ok(()) => turn.start(&*runtime, id).await,
                            Err(err) => Some(Err(err.to_string())),
                        };
                        let _ = tx.send(starts::report(id, attempt, result));
                    });
                }
                Effect::Start { id, attempt } => {
                    let (runtime, tx) = (Arc::clone(&self.runtime), self.tx.clone());
                    let turn = self.starts.ask(id, attempt);
                    self.starts.spawn(async move {
                        let result = turn.start(&*runtime, id).await;
                        let _ = tx.send(starts::report(id, attempt, result));
                    });
                }
                Effect::Stop(id) => {
                    // A start still waiting for its place would begin after this stop, and
                    // leave running what the state says is stopped.
                    self.starts.overtake(id);
                    let (runtime, tx) = (Arc::clone(&self.runtime), self.tx.clone());
                    let kills = self.kills.semaphore();
                    self.work.spawn(async move {
                        // The semaphore is never closed, so a place always comes.
                        let _place = kills.acquire_owned().await;
                        let result = runtime.stop(id).await.map_err(|e| e.to_string());
                        let _ = tx.send(Command::StopDone { id, result });
                    });
                }
                Effect::Delete(id) => {
                    self.starts.overtake(id);
                    let (runtime, tx) = (Arc::clone(&self.runtime), self.tx.clone());
                    let kills = self.kills.semaphore();
                    self.work.spawn(async move {
                        let _place = kills.acquire_owned().await;
                        let result = runtime.delete(id).await.map_err(|e| e.to_string());
                        let _ = tx.send(Command::Deleted { id, result });
                    });
                }
                Effect::Commit(id) => {
                    // Called here, in order, so that the commit is registered before any
                    // clone's create (a later effect) looks for its image.
                    let commit = self.runtime.commit(id);
                    self.work.spawn(async move {
                        if let Err(err) = commit.await {
                            tracing::error!(template = %id, %err, "committing a template failed");
                        }
                    });
                }
                Effect::WatchDrain { id, upstream } => {
                    let tx = self.tx.clone();
                    self.work.spawn(async move {
                        if upstream.drained().await == Drain::Idle {
                            let _ = tx.send(Command::Drained { id });
                        }
                    });
                }
                Effect::EndDrainWatch(upstream) => upstream.retire(),
            }
        }
        if publish {
            self.publish(state);
        }
        for (to, result) in replies {
            let _ = to.send(result);
        }
        // Last, so that the processes they spawn do not take the cores from the rest.
        self.starts.release(&self.work);
        self.metrics
            .timers_pending
            .set(self.timers.pending() as i64);
    }

    /// Publishes the view, and the route table when routing changed since it was last built
    /// (most batches — a lock, a reservation, a timer on a stopped instance — leave it alone).
    fn publish(&self, state: &mut State) {
        if let Some(table) = state.publish_routes() {
            self.published.table.store(table);
        }
        self.published.view.store(Arc::new(state.view()));
        self.published
            .changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests;
