//! The controller's state and its one `apply`: a pure function from (state, command, now) to
//! (new state, effects). No runtime, no clock, no I/O: unit tests drive it directly.
//!
//! Every trigger is re-checked when its timer fires, when a delete lock is cleared and when the
//! condition behind it changes, by one `check_*` function per resource. A timer that fires late,
//! early or twice is therefore harmless: the check looks at the state and the time, not at the
//! timer.
//!
//! This file holds the records and the lifecycle (configuration, runtime answers, timers,
//! triggers); `calls.rs` applies the admin API's calls and `view.rs` builds what is published.

use std::collections::BTreeSet;

use hashbrown::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{Command, Due, DueKind, Effect, InstanceState, StopReason, TimerKey};
use crate::config::{
    Autodestroy, Autokill, AutokillConfig, Balance, Config, GroupConfig, InstanceConfig,
    RestartPolicy,
};
use crate::proxy::meter::{Ask, Meter};
use crate::proxy::route::Upstream;
use crate::runtime::InstanceSpec;

/// Restart back-off: the first restart is immediate, then 5 s, doubling, at most 5 min.
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// An instance that ran this long before exiting starts its back-off from the beginning.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// What the controller is waiting for the runtime to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// Nothing.
    None,
    /// A stop a user asked for.
    Stop,
    /// A stop a user asked for, once the requests in flight have finished.
    StopAfterDrain,
    /// A delete, with the kill reason if autokill or autodestroy asked for it.
    Delete(Option<&'static str>),
}

/// One instance (or template) as the controller knows it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Identity.
    pub id: Uuid,
    /// Unique name; routed as `<name>.<base_domain>`.
    pub name: Arc<str>,
    /// Image key (docker: or image reference).
    pub image: String,
    /// Memory limit in MiB, where the runtime enforces one; `None` = none.
    pub memory_mb: Option<u64>,
    /// Why the last start failed (the runtime's or engine's message), until a start succeeds.
    /// Not stored: a restart of autokill forgets it.
    pub start_error: Option<String>,
    /// The service group it belongs to.
    pub group: Option<Uuid>,
    /// The template it was cloned from, while that template exists.
    pub template: Option<Uuid>,
    /// The name of the template it was cloned from (kept after the template is gone).
    pub template_name: Option<String>,
    /// Its autokill policy (for a template: `time` is the unused time). `num_requests` is the
    /// budget it was given: with `autokill.jitter`, drawn at creation at or below the one asked.
    pub autokill: Autokill,
    /// The `num_requests` asked for, when the budget drawn for it is lower (see
    /// [`crate::config::AutokillConfig`]); `None` when the budget is what was asked.
    pub asked_requests: Option<u64>,
    /// Its restart policy.
    pub restart_policy: RestartPolicy,
    /// Its autodestroy policy.
    pub autodestroy: Autodestroy,
    /// Lifecycle state.
    pub state: InstanceState,
    /// The request budget, shared with the proxy.
    pub meter: Arc<Meter>,
    /// The running incarnation the proxy forwards to.
    pub upstream: Option<Arc<Upstream>>,
    /// Exit code of the last exit.
    pub exit_code: Option<i32>,
    /// Why it last stopped or is being deleted.
    pub stop_reason: Option<StopReason>,
    /// When it last stopped.
    pub stopped_at: Option<SystemTime>,
    /// When it was created.
    pub created_at: SystemTime,
    /// A delete lock holds back every kill.
    pub delete_lock: bool,
    /// Templates: when it was made a template or last cloned, whichever is later.
    pub last_used: SystemTime,
    /// Templates: delete it once unused this long. Separate from `autokill`, which is the
    /// policy its clones inherit.
    pub unused_time: Option<Duration>,
    /// Which start this is (answers to older starts are ignored).
    attempt: u64,
    /// When the current run began (restart back-off resets after a healthy run).
    running_since: Option<SystemTime>,
    /// Consecutive restarts, for the back-off.
    restarts: u32,
    /// When a scheduled restart is due.
    restart_at: Option<SystemTime>,
    /// When the current drain gives up waiting for requests in flight (while draining, or
    /// stopping after a drain); only shown, not stored (a restart re-arms drains anew).
    drain_until: Option<SystemTime>,
    /// Durable ceiling of requests forwarded (see [`Meter`]); 0 for an unlimited instance.
    reserved: u64,
    /// Declared by the configuration file.
    pub from_config: bool,
    /// An autodestroy that a delete lock held back.
    destroy_due: bool,
    /// What the runtime is doing for it.
    pending: Pending,
    /// The kill reason a delete lock last held back, so that it is counted once per time it
    /// comes due, not once per re-check.
    skipped: Option<&'static str>,
}

impl Instance {
    /// An instance as recovered from the store, before its details are filled in.
    pub(super) fn restored(
        id: Uuid,
        name: Arc<str>,
        image: String,
        autokill: Autokill,
        meter: Arc<Meter>,
        created_at: SystemTime,
        last_used: SystemTime,
    ) -> Instance {
        Instance {
            id,
            name,
            image,
            memory_mb: None,
            start_error: None,
            group: None,
            template: None,
            template_name: None,
            autokill,
            asked_requests: None,
            restart_policy: RestartPolicy::default(),
            autodestroy: Autodestroy::default(),
            state: InstanceState::Stopped,
            meter,
            upstream: None,
            exit_code: None,
            stop_reason: None,
            stopped_at: None,
            created_at,
            delete_lock: false,
            last_used,
            unused_time: None,
            attempt: 0,
            running_since: None,
            restarts: 0,
            restart_at: None,
            drain_until: None,
            reserved: 0,
            from_config: false,
            destroy_due: false,
            pending: Pending::None,
            skipped: None,
        }
    }

    /// Its request budget is spent: a limit, and that many requests forwarded. The record's
    /// limit decides, not the meter's: the meter learns a new limit only once it is committed.
    /// The count is the number forwarded only once the whole budget is reserved (below that,
    /// requests waiting for a reservation are counted for a moment and given back).
    pub fn spent(&self) -> bool {
        let limit = self.autokill.num_requests;
        limit != 0 && self.meter.reserved() >= limit && self.meter.count() >= limit
    }

    /// The autokill policy as it was asked for, before `autokill.jitter` cut its budget: what a
    /// template made of it passes on, what a redeploy creates anew from, and what a reload
    /// compares the file with.
    pub fn asked_autokill(&self) -> Autokill {
        Autokill {
            num_requests: self.asked_requests.unwrap_or(self.autokill.num_requests),
            ..self.autokill
        }
    }

    pub(super) fn set_recovered(
        &mut self,
        reserved: u64,
        restarts: u32,
        restart_at: Option<SystemTime>,
        destroy_due: bool,
    ) {
        (
            self.reserved,
            self.restarts,
            self.restart_at,
            self.destroy_due,
        ) = (reserved, restarts, restart_at, destroy_due);
    }

    pub(super) fn set_pending(&mut self, pending: Pending) {
        self.pending = pending;
    }

    pub(super) fn pending(&self) -> Pending {
        self.pending
    }

    pub(super) fn next_attempt(&mut self) -> u64 {
        self.attempt += 1;
        self.attempt
    }

    pub(super) fn restarts(&self) -> u32 {
        self.restarts
    }

    pub(super) fn set_drain_until(&mut self, until: SystemTime) {
        self.drain_until = Some(until);
    }

    /// What it waits for next and when: the drain's end, a restart, or its kill for having
    /// been stopped `autokill.time` (templates: for being unused). `None` when nothing is armed.
    pub(super) fn due(&self) -> Option<Due> {
        let at = match self.state {
            InstanceState::Draining => self.drain_until.map(|at| (DueKind::Drain, at)),
            InstanceState::Stopping if self.pending == Pending::StopAfterDrain => {
                self.drain_until.map(|at| (DueKind::Drain, at))
            }
            InstanceState::Template => self
                .unused_time
                .map(|time| (DueKind::Unused, self.last_used + time)),
            InstanceState::Stopped if self.pending == Pending::None => match self.restart_at {
                Some(at) => Some((DueKind::Restart, at)),
                None if self.spent() => None,
                None => self
                    .autokill
                    .time
                    .zip(self.stopped_at)
                    .map(|(time, stopped_at)| (DueKind::StoppedTime, stopped_at + time)),
            },
            _ => None,
        };
        at.map(|(kind, at)| Due { kind, at })
    }

    pub(super) fn restart_at(&self) -> Option<SystemTime> {
        self.restart_at
    }

    pub(super) fn destroy_due(&self) -> bool {
        self.destroy_due
    }

    pub(super) fn reserved(&self) -> u64 {
        self.reserved
    }
}

/// One service group as the controller knows it.
#[derive(Debug, Clone)]
pub struct Group {
    /// Identity.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Host names that address it (lower-case, fully qualified).
    pub domains: Vec<String>,
    /// Delete it after being empty this long.
    pub autokill_time: Option<Duration>,
    /// How the proxy picks among its instances.
    pub balance: Balance,
    /// A delete lock holds back every kill.
    pub delete_lock: bool,
    /// When it was created.
    pub created_at: SystemTime,
    /// Since when it has had no instance; `None` while it has one.
    pub empty_since: Option<SystemTime>,
    /// Shown as given.
    pub soft_limit: Option<u64>,
    /// Shown as given.
    pub hard_limit: Option<u64>,
    /// Shown as given.
    pub services: serde_json::Value,
    /// Declared by the configuration file.
    pub from_config: bool,
    /// The kill a delete lock last held back (see [`Instance`]'s).
    pub(super) skipped: Option<&'static str>,
    /// A Tutum service's spec: the group's instances are its containers (`None`: a plain group).
    pub service: Option<ServiceSpec>,
}

/// A map that remembers which entries were changed since the last commit, and what they were
/// before: every mutable access saves the entry's first pre-image of the batch, so nothing can
/// change without being written, and a batch whose commit failed can be undone whole.
#[derive(Debug)]
pub struct Tracked<K, V> {
    map: HashMap<K, V>,
    /// What the entries changed since the last commit were before it.
    undo: HashMap<K, Before<V>>,
}

/// What an entry of a [`Tracked`] map was before the batch in hand changed it.
#[derive(Debug)]
enum Before<V> {
    /// It did not exist.
    Absent,
    /// It was this. Boxed, so that the map of pre-images costs a pointer per entry, not a
    /// record: a recovery's first batch touches every entry.
    Was(Box<V>),
    /// It did not exist before a recovery read it from the store, and it is still as stored:
    /// new to the indexes, but nothing to write back.
    Stored,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: HashMap::new(),
            undo: HashMap::new(),
        }
    }
}

/// What routing reads of an instance: a change of it routes the instance again.
type RoutedAs<'a> = (
    InstanceState,
    &'a str,
    Option<Uuid>,
    Option<*const Upstream>,
);

/// A map of pre-images this large after a commit gives its memory back (a recovery's first
/// batch holds one per stored record; a batch of API calls, a few hundred at most).
const UNDO_KEPT: usize = 4096;

/// Instance views built for a commit.
type Views = Vec<Arc<super::InstanceView>>;

/// Sorts views by name. Comparing two names follows two pointers, and at 100,000 views that
/// is mostly waiting for memory: they are sorted by the first 16 bytes of their names, held
/// in the array being sorted (zero-padded, which orders as the names do), and only names whose
/// first 16 bytes are equal are compared whole.
fn sort_by_name<V>(views: &mut Vec<Arc<V>>, name: impl Fn(&V) -> &str) {
    fn head(name: &str) -> u128 {
        let mut bytes = [0; 16];
        let n = name.len().min(16);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        u128::from_be_bytes(bytes)
    }
    let mut order: Vec<(u128, usize)> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (head(name(v)), i))
        .collect();
    order.sort_unstable();
    for tied in order.chunk_by_mut(|a, b| a.0 == b.0) {
        if tied.len() > 1 {
            tied.sort_unstable_by(|a, b| name(&views[a.1]).cmp(name(&views[b.1])));
        }
    }
    *views = order.iter().map(|&(_, i)| Arc::clone(&views[i])).collect();
}

/// From this many instance views to build in one commit on (a recovery's first), they are
/// built on two threads.
const PARALLEL_VIEWS_FROM: usize = 8192;

impl<K: Eq + std::hash::Hash + Clone, V: Clone> Tracked<K, V> {
    /// Saves the pre-image of `key` the first time it changes in a batch. A recovered entry
    /// that changes is written like a new one.
    fn touch(&mut self, key: &K) {
        match self.undo.get_mut(key) {
            Some(before @ Before::Stored) => *before = Before::Absent,
            Some(_) => {}
            None => {
                let before = match self.map.get(key) {
                    Some(v) => Before::Was(Box::new(v.clone())),
                    None => Before::Absent,
                };
                self.undo.insert(key.clone(), before);
            }
        }
    }
    /// Room for `n` more entries (a recovery knows how many it reads).
    pub fn reserve(&mut self, n: usize) {
        self.map.reserve(n);
        self.undo.reserve(n);
    }
    /// Read access (by any borrowed form of the key, e.g. a `&str` for an `Arc<str>`).
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        self.map.get(key)
    }
    /// Write access; marks the entry.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if self.map.contains_key(key) {
            self.touch(key);
        }
        self.map.get_mut(key)
    }
    /// Inserts; marks the entry.
    pub fn insert(&mut self, key: K, v: V) {
        self.touch(&key);
        self.map.insert(key, v);
    }
    /// Inserts an entry as a recovery read it from the store: changed for the indexes (it is
    /// new to them), but not written back unless something changes it before the commit.
    pub fn restore(&mut self, key: K, v: V) {
        if !self.undo.contains_key(&key) {
            self.undo.insert(key.clone(), Before::Stored);
        }
        self.map.insert(key, v);
    }
    /// Removes; marks the entry (its record is deleted).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if self.map.contains_key(key) {
            self.touch(key);
        }
        self.map.remove(key)
    }
    /// Whether the key is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }
    /// All values.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// The keys whose records a commit writes: those changed since the last commit, but not
    /// what a recovery restored as stored and nothing changed since (which
    /// [`Tracked::changes`] does list: the indexes have yet to take it in).
    pub(super) fn to_write(&self) -> impl Iterator<Item = &K> {
        self.undo
            .iter()
            .filter(|(_, before)| !matches!(before, Before::Stored))
            .map(|(k, _)| k)
    }
    /// Every entry changed since the last commit: its key, what it was then, what it is now.
    pub(super) fn changes(&self) -> impl Iterator<Item = (&K, Option<&V>, Option<&V>)> {
        self.undo.iter().map(|(k, before)| {
            let before = match before {
                Before::Was(v) => Some(&**v),
                Before::Absent | Before::Stored => None,
            };
            (k, before, self.map.get(k))
        })
    }
    /// The changes are durable: forget their pre-images.
    pub(super) fn commit(&mut self) {
        if self.undo.capacity() > UNDO_KEPT {
            self.undo = HashMap::new();
        } else {
            self.undo.clear();
        }
    }
    /// The changes could not be made durable: put back what was there before them.
    pub(super) fn rollback(&mut self) {
        for (key, before) in self.undo.drain() {
            match before {
                Before::Was(v) => self.map.insert(key, *v),
                Before::Absent | Before::Stored => self.map.remove(&key),
            };
        }
    }
}

impl<K: Eq + std::hash::Hash, V> std::ops::Index<&K> for Tracked<K, V> {
    type Output = V;
    fn index(&self, key: &K) -> &V {
        &self.map[key]
    }
}

/// Everything the controller owns.
#[derive(Debug)]
pub struct State {
    /// Instances and templates by id.
    pub instances: Tracked<Uuid, Instance>,
    /// Service groups by id.
    pub groups: Tracked<Uuid, Group>,
    /// Instances and templates (not those being deleted) by name: names are unique among them.
    pub(super) names: Tracked<Arc<str>, Uuid>,
    /// Names the configuration file declares: never given to an instance made through the API,
    /// even while the declared instance does not exist (it may be re-created at the next start).
    declared_names: HashSet<Arc<str>>,
    /// Likewise for service group names.
    declared_groups: HashSet<String>,
    /// Each group's members (instances of any state but deleted) as of the last commit;
    /// [`State::member_ids`] adds what the batch in hand changed.
    pub(super) members: HashMap<Uuid, HashSet<Uuid>>,
    /// Each template's clones (of any state but deleted) as of the last commit.
    pub(super) clones: HashMap<Uuid, HashSet<Uuid>>,
    /// Instances (not templates) being deleted, as of the last commit.
    pub(super) deleting: HashSet<Uuid>,
    /// The view of every instance and template as of the last commit, kept up to date record by
    /// record (published as it is: see [`crate::controller::Instances`]).
    pub(super) view_cache: crate::controller::Instances,
    /// Likewise for the service groups.
    pub(super) group_cache: crate::controller::Groups,
    /// The armed deadline of every instance, template and group that has one, as of the last
    /// commit, kept up to date with `view_cache` and `group_cache` (published shared, like them).
    pub(super) due_cache: imbl::OrdMap<Uuid, Due>,
    /// What changed routing since the last published route table (an instance's state,
    /// incarnation, name or group; a group's domains or balance): [`State::publish_routes`]
    /// changes only those routes.
    pub(super) stale_routes: StaleRoutes,
    /// The last published route table; the next one is an edit of it.
    pub(super) routes: Arc<crate::proxy::RouteTable>,
    /// The slot in the route table of each running incarnation, by instance.
    pub(super) slots: HashMap<Uuid, usize>,
    /// Slots given back, for the next instance to run.
    pub(super) free_slots: Vec<usize>,
    /// Group domains (as configured) -> group.
    pub(super) domains: HashMap<String, Uuid>,
    base_domain: String,
    drain_timeout: Duration,
    workers: usize,
    balance: Balance,
    images: BTreeSet<String>,
    /// The runtime runs OCI images (docker): an instance may name any image reference, and a
    /// template is committed to an image of its own, which its clones run.
    any_image: bool,
    /// Why the runtime's engine cannot be reached, while it cannot: creates and starts are
    /// refused rather than left half-made.
    engine_down: Option<String>,
    /// Services and containers terminated lately, for `/api/v1` (in memory only).
    tombstones: Tombstones,
    /// How the budgets of new instances are drawn (`autokill.jitter`).
    budgets: AutokillConfig,
    /// The generator the budgets are drawn with.
    rng: fastrand::Rng,
    /// Request body limits of declared groups and instances.
    body_limits: body_limits::BodyLimits,
}

/// `(resource, reason)` labels of kills.
const INSTANCE: &str = "instance";
const TEMPLATE: &str = "template";
const GROUP: &str = "service_group";

impl State {
    /// An empty state for `config`, with `workers` proxy workers (for the in-flight slots).
    pub fn new(config: &Config, workers: usize) -> State {
        State {
            instances: Tracked::default(),
            groups: Tracked::default(),
            names: Tracked::default(),
            declared_names: HashSet::new(),
            declared_groups: HashSet::new(),
            members: HashMap::new(),
            clones: HashMap::new(),
            deleting: HashSet::new(),
            view_cache: Default::default(),
            group_cache: Default::default(),
            due_cache: Default::default(),
            stale_routes: StaleRoutes::default(),
            routes: Arc::default(),
            slots: HashMap::new(),
            free_slots: Vec::new(),
            domains: HashMap::new(),
            base_domain: config.proxy.base_domain.clone(),
            drain_timeout: config.defaults.drain_timeout,
            workers,
            balance: config.proxy.balance,
            images: config.runtime.images.keys().cloned().collect(),
            any_image: matches!(
                config.runtime.kind,
                crate::config::RuntimeKind::Docker { .. }
            ),
            engine_down: None,
            tombstones: Tombstones::default(),
            budgets: config.autokill,
            rng: fastrand::Rng::new(),
            body_limits: Default::default(),
        }
    }

    pub(super) fn balance(&self) -> Balance {
        self.balance
    }

    /// After a restart: the reservation, the restart back-off and every trigger of one instance.
    pub(super) fn recheck(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        // The meter restarts at the old ceiling; the next block is reserved before it serves.
        self.reserve(id, fx);
        if let Some(due) = self.instances.get(&id).and_then(|i| i.restart_at) {
            if due <= now {
                self.timer(TimerKey::Restart(id), now, fx);
            } else {
                fx.push(Effect::Arm(TimerKey::Restart(id), due));
            }
        }
        self.check_instance(id, now, fx);
    }

    /// After a restart: a group's empty timer.
    pub(super) fn recheck_group(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        self.check_group(id, now, fx);
    }

    /// Applies one command and returns what the controller task must carry out, in order.
    pub fn apply(&mut self, cmd: Command, now: SystemTime) -> Vec<Effect> {
        let mut fx = Vec::new();
        match cmd {
            Command::Declare { groups, instances } => self.declare(groups, instances, now, &mut fx),
            Command::Settings(live) => {
                // The kill places are the task's (see `run`).
                self.drain_timeout = live.drain_timeout;
                self.budgets = live.autokill;
            }
            Command::Started {
                id,
                attempt,
                result,
            } => self.started(id, attempt, result, now, &mut fx),
            Command::NotStarted { id, attempt } => self.not_started(id, attempt, now, &mut fx),
            Command::StopDone { id, result } => {
                if let Err(message) = result {
                    tracing::warn!(instance = %id, %message, "stopping an instance failed");
                }
            }
            Command::LimitReached { id } => {
                // Taken off the channel: the proxy may report again (before the meter is read
                // for this one, so a report it held back is seen here; see `Meter::ask`).
                self.answered(id, Ask::LimitReached);
                self.limit_reached(id, now, &mut fx)
            }
            Command::Reserve { id } => {
                self.answered(id, Ask::Reserve);
                self.reserve(id, &mut fx)
            }
            Command::Drained { id } => self.drained(id, &mut fx),
            Command::Exited { id, exit_code } => self.exited(id, exit_code, now, &mut fx),
            Command::Deleted { id, result } => self.deleted(id, result, now, &mut fx),
            Command::Timer(key) => self.timer(key, now, &mut fx),
            Command::Engine { unreachable } => self.engine_down = unreachable,
            Command::Api(call, reply) => {
                let result = self.call(call, now, &mut fx);
                fx.push(Effect::Publish);
                fx.push(Effect::Reply(reply, Box::new(result)));
            }
        }
        fx
    }

    // ---- configuration -------------------------------------------------------------------

    /// Reconciles what the configuration file declares: a declared group or instance that does not
    /// exist is created, one that exists gets the file's settings, and one the file no longer
    /// declares is deleted. Resources made through the API are left alone.
    fn declare(
        &mut self,
        groups: Vec<GroupConfig>,
        instances: Vec<InstanceConfig>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) {
        self.body_limits.declare(&groups, &instances);
        // The file says which names are its own from now on (a reload may change them).
        self.declared_names = groups
            .iter()
            .flat_map(|g| &g.instances)
            .chain(&instances)
            .map(|i| Arc::from(i.name.as_str()))
            .collect();
        self.declared_groups = groups.iter().map(|g| g.name.clone()).collect();
        let mut declared_groups = HashSet::new();
        let mut declared_instances = Vec::new();
        for g in groups {
            // By origin, not by name: a group made through the API is never taken over.
            let existing = self.groups.values().find(|x| x.name == g.name);
            if existing.is_some_and(|x| !x.from_config) {
                tracing::error!(group = %g.name, "the configuration declares a service group whose name a group made through the API has; the declared group and its instances are not created");
                continue;
            }
            let id = match existing
                .map(|x| x.id)
                .and_then(|id| self.groups.get_mut(&id))
            {
                Some(x) => {
                    x.domains = g.domains;
                    x.autokill_time = g.autokill_time;
                    x.id
                }
                None => {
                    let id = Uuid::new_v4();
                    self.groups.insert(
                        id,
                        Group {
                            id,
                            name: g.name,
                            domains: g.domains,
                            autokill_time: g.autokill_time,
                            balance: self.balance,
                            delete_lock: false,
                            created_at: now,
                            empty_since: Some(now),
                            soft_limit: None,
                            hard_limit: None,
                            services: serde_json::Value::Array(Vec::new()),
                            from_config: true,
                            skipped: None,
                            service: None,
                        },
                    );
                    id
                }
            };
            declared_groups.insert(id);
            self.body_limits.group(id, g.max_body_bytes);
            declared_instances.extend(g.instances.into_iter().map(|i| (i, Some(id))));
        }
        declared_instances.extend(instances.into_iter().map(|i| (i, None)));

        let mut declared_ids = HashSet::new();
        for (cfg, group) in declared_instances {
            match self.names.get(&Arc::from(cfg.name.as_str())).copied() {
                Some(id) if self.instances.get(&id).is_some_and(|i| i.from_config) => {
                    if let Some(i) = self.instances.get_mut(&id) {
                        // The budget drawn at creation stays while the file asks for the same
                        // number; a new number gets a draw of its own, as at creation.
                        let (kept, asked) = (i.autokill.num_requests, i.asked_autokill());
                        i.autokill = cfg.autokill;
                        if cfg.autokill.num_requests != asked.num_requests {
                            (i.autokill.num_requests, i.asked_requests) = self
                                .budgets
                                .budget(cfg.autokill.num_requests, &mut self.rng);
                        } else {
                            i.autokill.num_requests = kept;
                        }
                        i.restart_policy = cfg.restart_policy;
                        i.autodestroy = cfg.autodestroy;
                        i.group = group;
                    }
                    declared_ids.insert(id);
                    self.limit_changed(id, fx);
                    self.check_instance(id, now, fx);
                }
                Some(_) => {
                    // Made through the API before the file declared this name: left alone.
                    tracing::error!(instance = %cfg.name, "the configuration declares an instance whose name an instance or template made through the API has; the declared instance is not created");
                }
                None => {
                    let id = self.add_instance(declared(&cfg), group, None, true, true, now, fx);
                    declared_ids.insert(id);
                }
            }
        }
        // Declared before, not any more.
        let gone: Vec<Uuid> = self
            .instances
            .values()
            .filter(|i| {
                i.from_config && !declared_ids.contains(&i.id) && i.state != InstanceState::Deleted
            })
            .map(|i| i.id)
            .collect();
        for id in gone {
            self.delete_instance(id, None, fx);
        }
        let gone: Vec<Uuid> = self
            .groups
            .values()
            .filter(|g| g.from_config && !declared_groups.contains(&g.id))
            .map(|g| g.id)
            .collect();
        for id in gone {
            if let Some(g) = self.groups.get_mut(&id) {
                g.from_config = false;
                // Its instances are deleted above; it goes once empty, like any group.
                g.autokill_time = Some(Duration::ZERO);
            }
        }
        let all: Vec<Uuid> = self.groups.values().map(|g| g.id).collect();
        for id in all {
            self.check_group(id, now, fx);
        }
        self.apply_body_limits();
        fx.push(Effect::Publish);
    }

    /// Adds an instance and asks the runtime to create (and start) it. Returns its id.
    #[allow(clippy::too_many_arguments)]
    fn add_instance(
        &mut self,
        mut spec: Spec,
        group: Option<Uuid>,
        template: Option<(Uuid, String)>,
        start: bool,
        from_config: bool,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Uuid {
        let id = Uuid::new_v4();
        // Its budget, drawn once here (`autokill.jitter`) and stored with it from now on.
        let asked_requests;
        (spec.autokill.num_requests, asked_requests) = self
            .budgets
            .budget(spec.autokill.num_requests, &mut self.rng);
        let meter = Arc::new(Meter::new(0, spec.autokill.num_requests));
        let (state, attempt) = if start {
            (InstanceState::Starting, 1)
        } else {
            (InstanceState::Stopped, 0)
        };
        let name: Arc<str> = spec.name.as_str().into();
        fx.push(Effect::Launch {
            spec: InstanceSpec {
                id,
                name: Arc::clone(&name),
                image: spec.image.clone(),
                memory_mb: spec.memory_mb,
            },
            start: start.then_some(attempt),
        });
        self.instances.insert(
            id,
            Instance {
                id,
                name,
                image: spec.image,
                memory_mb: spec.memory_mb,
                start_error: None,
                group,
                template: template.as_ref().map(|t| t.0),
                template_name: template.map(|t| t.1),
                autokill: spec.autokill,
                asked_requests,
                restart_policy: spec.restart_policy,
                autodestroy: spec.autodestroy,
                state,
                meter,
                upstream: None,
                exit_code: None,
                stop_reason: None,
                stopped_at: (!start).then_some(now),
                created_at: now,
                delete_lock: false,
                last_used: now,
                unused_time: None,
                attempt,
                running_since: None,
                restarts: 0,
                restart_at: None,
                drain_until: None,
                reserved: 0,
                from_config,
                destroy_due: false,
                pending: Pending::None,
                skipped: None,
            },
        );
        self.names.insert(Arc::clone(&self.instances[&id].name), id);
        self.reserve(id, fx);
        if let Some(g) = group.and_then(|g| self.groups.get_mut(&g)) {
            g.empty_since = None;
            fx.push(Effect::Disarm(TimerKey::Empty(g.id)));
        }
        if !start {
            self.check_stopped(id, now, fx);
        }
        id
    }

    /// The controller holds the proxy's `ask` about `id`'s meter: the next may be sent.
    fn answered(&self, id: Uuid, ask: Ask) {
        if let Some(inst) = self.instances.get(&id) {
            inst.meter.answered(ask);
        }
    }

    /// Raises the instance's durable reservation by the next block when the proxy has used half
    /// of the current one (or more). The new ceiling reaches the meter only after the batch that
    /// raised it is committed ([`Effect::Reserved`] is carried out after the commit).
    fn reserve(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        let limit = inst.autokill.num_requests;
        if limit == 0 {
            if inst.meter.reserved() != u64::MAX {
                fx.push(Effect::Reserved {
                    meter: Arc::clone(&inst.meter),
                    reserved: u64::MAX,
                    refill_at: 0,
                });
            }
            return;
        }
        if inst.meter.reserved() < inst.reserved {
            // A raise is on its way to the meter (waiting for its commit); one at a time.
            return;
        }
        let count = inst.meter.count();
        let block = reservation_block(limit, inst.reserved);
        let reserved = inst.reserved.min(limit);
        let needed = reserved < limit && count.saturating_add(block.div_ceil(2)) >= reserved;
        if !needed && inst.meter.reserved() == reserved {
            return;
        }
        let new = if needed {
            (reserved.max(count) + block).min(limit)
        } else {
            reserved
        };
        let next_block = reservation_block(limit, new);
        let refill_at = new.saturating_sub(next_block / 2).max(count + 1);
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.reserved = new;
            fx.push(Effect::Reserved {
                meter: Arc::clone(&inst.meter),
                reserved: new,
                refill_at,
            });
        }
    }

    // ---- runtime answers -----------------------------------------------------------------

    fn started(
        &mut self,
        id: Uuid,
        attempt: u64,
        result: Result<SocketAddr, String>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) {
        let workers = self.workers;
        let body_limit = self.instances.get(&id).and_then(|i| self.body_limit(i));
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.state != InstanceState::Starting || inst.attempt != attempt {
            return;
        }
        match result {
            Ok(addr) => {
                inst.state = InstanceState::Running;
                inst.start_error = None;
                inst.running_since = Some(now);
                let upstream = Upstream::new(
                    id,
                    Arc::clone(&inst.name),
                    addr,
                    Arc::clone(&inst.meter),
                    workers,
                );
                upstream.set_max_body(body_limit);
                inst.upstream = Some(Arc::new(upstream));
                // A budget spent before this start drains at once (unless a lock holds it).
                if inst.spent() {
                    self.limit_reached(id, now, fx);
                }
            }
            Err(message) => {
                tracing::warn!(instance = %inst.name, %message, "instance failed to start");
                inst.start_error = Some(message);
                inst.state = InstanceState::Stopped;
                inst.stop_reason = Some(StopReason::StartFailed);
                inst.stopped_at = Some(now);
                self.check_stopped(id, now, fx);
            }
        }
        fx.push(Effect::Publish);
    }

    /// A stop overtook the start of an instance while that start waited for its place: no
    /// process ran and no exit will be reported, so the user's stop is done here. (A delete
    /// that overtook it ends in [`Command::Deleted`].)
    fn not_started(&mut self, id: Uuid, attempt: u64, now: SystemTime, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.attempt != attempt
            || inst.state != InstanceState::Stopping
            || inst.pending != Pending::Stop
        {
            return;
        }
        inst.pending = Pending::None;
        inst.state = InstanceState::Stopped;
        inst.stop_reason = Some(StopReason::UserStop);
        inst.stopped_at = Some(now);
        self.check_stopped(id, now, fx);
        fx.push(Effect::Publish);
    }

    /// The proxy admitted the request that spends the budget (or a check found it spent): the
    /// instance drains, and is deleted once nothing is in flight.
    fn limit_reached(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        let drain_timeout = self.drain_timeout;
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        // A limit raised (or a request refunded) since the proxy reported it: nothing is due.
        if inst.state != InstanceState::Running || !inst.spent() {
            return;
        }
        if inst.delete_lock {
            skip(&mut inst.skipped, INSTANCE, "num_requests", fx);
            return;
        }
        inst.state = InstanceState::Draining;
        if let Some(up) = &inst.upstream {
            fx.push(Effect::WatchDrain {
                id,
                upstream: Arc::clone(up),
            });
        }
        inst.drain_until = Some(now + drain_timeout);
        fx.push(Effect::Arm(TimerKey::Drain(id), now + drain_timeout));
        fx.push(Effect::Publish);
    }

    /// A draining instance has nothing left in flight, or its drain timeout passed: it is
    /// deleted — unless, since it began to drain, a delete lock was set (the kill is held back)
    /// or its budget is no longer spent (a raised limit, a refunded request): then it serves on.
    fn drained(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.state == InstanceState::Stopping && inst.pending == Pending::StopAfterDrain {
            // A user's stop that waited for the requests in flight: now the stop itself.
            inst.pending = Pending::Stop;
            fx.push(Effect::Disarm(TimerKey::Drain(id)));
            fx.push(Effect::Stop(id));
            return;
        }
        if inst.state != InstanceState::Draining {
            return;
        }
        fx.push(Effect::Disarm(TimerKey::Drain(id)));
        if !self.undrain_if_not_due(id, fx) {
            self.delete_instance(id, Some("num_requests"), fx);
        }
    }

    /// A draining instance whose kill is no longer due goes back to running (in its groups'
    /// rotation again). Returns whether it did.
    fn undrain_if_not_due(&mut self, id: Uuid, fx: &mut Vec<Effect>) -> bool {
        let Some(inst) = self.instances.get_mut(&id) else {
            return false;
        };
        if inst.state != InstanceState::Draining || (inst.spent() && !inst.delete_lock) {
            return false;
        }
        if inst.delete_lock && inst.spent() {
            skip(&mut inst.skipped, INSTANCE, "num_requests", fx);
        }
        inst.state = InstanceState::Running;
        if let Some(up) = &inst.upstream {
            fx.push(Effect::EndDrainWatch(Arc::clone(up)));
        }
        fx.push(Effect::Disarm(TimerKey::Drain(id)));
        fx.push(Effect::Publish);
        true
    }

    fn exited(&mut self, id: Uuid, exit_code: i32, now: SystemTime, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        inst.exit_code = Some(exit_code);
        // This incarnation is gone: a drain watching it ends without a report.
        if let Some(up) = inst.upstream.take() {
            fx.push(Effect::EndDrainWatch(up));
        }
        fx.push(Effect::Publish);
        if matches!(inst.pending, Pending::Delete(_))
            || matches!(
                inst.state,
                InstanceState::Stopped | InstanceState::Template | InstanceState::Deleted
            )
        {
            // A delete in progress ends the story; an instance already stopped (a failed start
            // reported twice) has nothing more to decide.
            return;
        }
        if inst.state == InstanceState::Starting {
            inst.state = InstanceState::Stopped;
            inst.stop_reason = Some(StopReason::StartFailed);
            inst.stopped_at = Some(now);
            self.check_stopped(id, now, fx);
            return;
        }
        let user_stop = matches!(inst.pending, Pending::Stop | Pending::StopAfterDrain);
        inst.pending = Pending::None;
        inst.state = InstanceState::Stopped;
        inst.stopped_at = Some(now);
        inst.stop_reason = Some(if user_stop {
            StopReason::UserStop
        } else {
            StopReason::Exited
        });
        fx.push(Effect::Disarm(TimerKey::Drain(id)));
        // A spent budget ends in its kill, whichever the controller hears of first, the exit or
        // the drain: neither a restart nor autodestroy decides for a spent instance.
        let decision = if inst.spent() {
            Decision::Stay
        } else {
            decide(inst.restart_policy, inst.autodestroy, exit_code, user_stop)
        };
        match decision {
            Decision::Restart => {
                if inst
                    .running_since
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= BACKOFF_RESET)
                {
                    inst.restarts = 0;
                }
                let delay = backoff(inst.restarts);
                inst.restarts = inst.restarts.saturating_add(1);
                inst.running_since = None;
                if delay.is_zero() {
                    self.start_instance(id, fx);
                } else {
                    inst.restart_at = Some(now + delay);
                    fx.push(Effect::Arm(TimerKey::Restart(id), now + delay));
                }
            }
            Decision::Destroy => {
                inst.running_since = None;
                inst.destroy_due = true;
                self.check_stopped(id, now, fx);
            }
            Decision::Stay => {
                inst.running_since = None;
                self.check_stopped(id, now, fx);
            }
        }
    }

    fn deleted(
        &mut self,
        id: Uuid,
        result: Result<(), String>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) {
        fx.push(Effect::Publish);
        if let Err(message) = result {
            // The runtime could not remove it: keep it, stopped and visible, rather than pretend.
            if let Some(inst) = self.instances.get_mut(&id) {
                tracing::error!(instance = %inst.name, %message, "deleting instance failed");
                inst.state = InstanceState::Stopped;
                inst.pending = Pending::None;
                let name = Arc::clone(&inst.name);
                if !self.names.contains_key(&name) {
                    self.names.insert(name, id);
                }
            }
            return;
        }
        let Some(inst) = self.instances.remove(&id) else {
            return;
        };
        tracing::info!(instance = %inst.name, served = inst.meter.count(), "instance deleted");
        if let Some(group) = inst.group {
            self.check_group(group, now, fx);
        }
        if let Some(template) = inst.template {
            self.check_template(template, now, fx);
        }
        self.container_gone(&inst, now);
    }

    fn timer(&mut self, key: TimerKey, now: SystemTime, fx: &mut Vec<Effect>) {
        match key {
            TimerKey::StoppedTime(id) => self.check_stopped(id, now, fx),
            TimerKey::Unused(id) => self.check_template(id, now, fx),
            TimerKey::Empty(id) => self.check_group(id, now, fx),
            TimerKey::Drain(id) => self.drained(id, fx),
            TimerKey::Restart(id) => {
                if let Some(inst) = self.instances.get_mut(&id)
                    && inst.restart_at.is_some()
                    && inst.state == InstanceState::Stopped
                {
                    inst.restart_at = None;
                    self.start_instance(id, fx);
                    fx.push(Effect::Publish);
                }
            }
        }
    }

    // ---- the triggers --------------------------------------------------------------------

    /// A stopped instance: delete it if its request budget is spent or autodestroy said so,
    /// delete it once `autokill.time` has passed since it stopped, or arm the timer for that; a
    /// delete lock holds them all back.
    fn check_stopped(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        // Read first: most checks change nothing, and an instance is only touched (and
        // written) when something does.
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        if inst.state != InstanceState::Stopped
            || inst.pending != Pending::None
            || inst.restart_at.is_some()
        {
            return;
        }
        let due = if inst.spent() {
            Some("num_requests")
        } else if inst.destroy_due {
            Some("autodestroy")
        } else {
            match (inst.autokill.time, inst.stopped_at) {
                (Some(time), Some(stopped_at)) if now < stopped_at + time => {
                    fx.push(Effect::Arm(TimerKey::StoppedTime(id), stopped_at + time));
                    None
                }
                (Some(_), Some(_)) => Some("stopped_time"),
                _ => {
                    fx.push(Effect::Disarm(TimerKey::StoppedTime(id)));
                    None
                }
            }
        };
        match due {
            Some(reason) if !inst.delete_lock => self.delete_instance(id, Some(reason), fx),
            held => self.held_back(id, INSTANCE, held, fx),
        }
    }

    /// Notes the kill of instance or template `id` that its delete lock holds back (`Some`),
    /// or that none is held back (`None`), touching it only when that changes.
    fn held_back(
        &mut self,
        id: Uuid,
        resource: &'static str,
        reason: Option<&'static str>,
        fx: &mut Vec<Effect>,
    ) {
        if self.instances.get(&id).is_some_and(|i| i.skipped != reason)
            && let Some(i) = self.instances.get_mut(&id)
        {
            match reason {
                Some(reason) => skip(&mut i.skipped, resource, reason, fx),
                None => i.skipped = None,
            }
        }
    }

    /// A template: delete it once its unused time has passed since it was made or last cloned
    /// and no clone of it is left.
    fn check_template(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        // Counting clones is a scan: done only for a template that is due.
        let due = self
            .instances
            .get(&id)
            .and_then(|t| t.unused_time.map(|time| t.last_used + time));
        let clones = if due.is_some_and(|due| now >= due) {
            self.clones_of(id)
        } else {
            0
        };
        let Some(t) = self.instances.get(&id) else {
            return;
        };
        if t.state != InstanceState::Template {
            return;
        }
        let Some(time) = t.unused_time else {
            fx.push(Effect::Disarm(TimerKey::Unused(id)));
            return;
        };
        let due = t.last_used + time;
        if now < due {
            fx.push(Effect::Arm(TimerKey::Unused(id), due));
            self.held_back(id, TEMPLATE, None, fx);
        } else if clones > 0 {
            // Re-checked when its last clone is deleted.
        } else if t.delete_lock {
            self.held_back(id, TEMPLATE, Some("unused"), fx);
        } else {
            let t = self.instances.remove(&id);
            if let Some(t) = t {
                tracing::info!(template = %t.name, "template deleted: unused");
                self.names.remove(&t.name);
            }
            self.forget_template(id);
            fx.push(Effect::Delete(id));
            fx.push(Effect::Killed {
                resource: TEMPLATE,
                reason: "unused",
            });
            fx.push(Effect::Publish);
        }
    }

    /// A service group: delete it once it has been empty for its `autokill.time`.
    fn check_group(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        let members = self.members(id);
        let Some(g) = self.groups.get(&id) else {
            return;
        };
        // Touched (and written) only when something changes, as instances are.
        let (empty_since, skipped) = (g.empty_since, g.skipped);
        if members > 0 {
            fx.push(Effect::Disarm(TimerKey::Empty(id)));
            if (empty_since.is_some() || skipped.is_some())
                && let Some(g) = self.groups.get_mut(&id)
            {
                g.empty_since = None;
                g.skipped = None;
            }
            return;
        }
        let since = empty_since.unwrap_or(now);
        let held = match g.autokill_time {
            None => {
                fx.push(Effect::Disarm(TimerKey::Empty(id)));
                skipped
            }
            Some(time) if now < since + time => {
                fx.push(Effect::Arm(TimerKey::Empty(id), since + time));
                None
            }
            Some(_) if g.delete_lock => Some("empty"),
            Some(_) => {
                tracing::info!(group = %g.name, "service group deleted: empty");
                self.remove_group(id, now);
                fx.push(Effect::Killed {
                    resource: GROUP,
                    reason: "empty",
                });
                fx.push(Effect::Publish);
                return;
            }
        };
        if (empty_since.is_none() || skipped != held)
            && let Some(g) = self.groups.get_mut(&id)
        {
            g.empty_since = Some(since);
            match held {
                Some(reason) => skip(&mut g.skipped, GROUP, reason, fx),
                None => g.skipped = None,
            }
        }
    }

    /// Clones of template `id` that still exist, right now (the committed index corrected by
    /// the batch in hand, as [`State::member_ids`]).
    pub(super) fn clones_of(&self, id: Uuid) -> usize {
        let live = |i: Option<&Instance>| {
            i.is_some_and(|i| i.template == Some(id) && i.state != InstanceState::Deleted)
        };
        let mut ids: HashSet<Uuid> = self.clones.get(&id).cloned().unwrap_or_default();
        for (key, before, after) in self.instances.changes() {
            if live(before) && !live(after) {
                ids.remove(key);
            } else if live(after) {
                ids.insert(*key);
            }
        }
        ids.len()
    }

    /// Before a commit forgets the batch's pre-images: moves the changed instances between the
    /// groups' member sets, and notes whether routing changed (so that publishing can skip the
    /// route table when it did not — most batches, e.g. a lock or a reservation, leave it alone).
    pub(super) fn index_changes(&mut self) {
        fn live(i: Option<&Instance>) -> Option<&Instance> {
            i.filter(|i| i.state != InstanceState::Deleted)
        }
        fn deleted(i: Option<&Instance>) -> bool {
            i.is_some_and(|i| i.state == InstanceState::Deleted)
        }
        let mut moves = Vec::new();
        let mut clone_moves = Vec::new();
        // Views to build again: every changed instance, and the templates whose clones changed.
        let mut stale = HashSet::new();
        let mut deleting = Vec::new();
        for (id, before, after) in self.instances.changes() {
            stale.insert(*id);
            if deleted(before) != deleted(after) {
                deleting.push((*id, deleted(after)));
            }
            let (from, to) = (
                live(before).and_then(|i| i.group),
                live(after).and_then(|i| i.group),
            );
            if from != to {
                moves.push((*id, from, to));
            }
            let (from, to) = (
                live(before).and_then(|i| i.template),
                live(after).and_then(|i| i.template),
            );
            if from != to {
                clone_moves.push((*id, from, to));
                stale.extend(from);
                stale.extend(to);
            }
            fn routed(i: Option<&Instance>) -> Option<RoutedAs<'_>> {
                i.map(|i| {
                    (
                        i.state,
                        &*i.name,
                        i.group,
                        i.upstream.as_ref().map(Arc::as_ptr),
                    )
                })
            }
            if routed(before) != routed(after) {
                let stale = &mut self.stale_routes;
                stale.instances.insert(*id);
                if let Some(b) = live(before) {
                    stale
                        .hosts
                        .insert(format!("{}.{}", b.name, self.base_domain));
                }
                stale.groups.extend(live(before).and_then(|i| i.group));
                stale.groups.extend(live(after).and_then(|i| i.group));
            }
        }
        for (id, now) in deleting {
            if now {
                self.deleting.insert(id);
            } else {
                self.deleting.remove(&id);
            }
        }
        let mut stale_groups: HashSet<Uuid> = self.groups.changes().map(|(id, ..)| *id).collect();
        for (_, from, to) in &moves {
            stale_groups.extend(from.iter().chain(to));
        }
        move_between(&mut self.members, moves);
        move_between(&mut self.clones, clone_moves);
        // Put in key order: a B-tree takes a run of sorted keys much faster than scattered
        // ones, which matters for the first commit after a recovery (every record at once).
        let stale: Vec<Uuid> = stale.into_iter().collect();
        // Views go into the cache in name order (see above).
        let this = &*self;
        let (mut views, mut dues) = if stale.len() < PARALLEL_VIEWS_FROM {
            this.views_of(&stale)
        } else {
            // The first commit after a recovery builds every view: on two threads, each
            // building half.
            let (lower, upper) = stale.split_at(stale.len() / 2);
            let ((mut views, mut dues), (v, d)) = crate::par::join(
                "autokill-views",
                || this.views_of(lower),
                || this.views_of(upper),
            );
            views.extend(v);
            dues.extend(d);
            (views, dues)
        };
        sort_by_name(&mut views, |v| &v.name);
        for (id, due) in &dues {
            if due.is_none() {
                self.view_cache.remove(id);
            }
        }
        if self.view_cache.is_empty() && views.len() >= PARALLEL_VIEWS_FROM {
            self.view_cache.fill(&views);
        } else {
            for view in views {
                self.view_cache.put(view);
            }
        }
        dues.sort_unstable_by_key(|(id, _)| *id);
        for (id, due) in dues {
            match due {
                Some(due) => self.due_cache.insert(id, due),
                None => self.due_cache.remove(&id),
            };
        }
        for id in stale_groups {
            match self.groups.get(&id) {
                Some(g) => {
                    let view = self.group_view(g);
                    self.group_cache.put(Arc::new(view));
                    match g.empty_since.zip(g.autokill_time) {
                        Some((since, time)) => self.due_cache.insert(
                            id,
                            Due {
                                kind: DueKind::Empty,
                                at: since + time,
                            },
                        ),
                        None => self.due_cache.remove(&id),
                    };
                }
                None => {
                    self.group_cache.remove(&id);
                    self.due_cache.remove(&id);
                }
            }
        }
        for (id, before, after) in self.groups.changes() {
            let routed = |g: Option<&Group>| g.map(|g| (g.domains.clone(), g.balance));
            if routed(before) != routed(after) {
                let stale = &mut self.stale_routes;
                stale.groups.insert(*id);
                for d in before.iter().flat_map(|g| &g.domains) {
                    stale.hosts.insert(d.clone());
                    if self.domains.get(d) == Some(id) {
                        self.domains.remove(d);
                    }
                }
                for d in after.iter().flat_map(|g| &g.domains) {
                    self.domains.insert(d.clone(), *id);
                }
            }
        }
    }

    /// The views of the instances `ids` (none for one deleted or gone) and when each is due
    /// (`None` for one deleted or gone, whose view is to be removed).
    fn views_of(&self, ids: &[Uuid]) -> (Views, Vec<(Uuid, Option<Due>)>) {
        let mut views = Vec::with_capacity(ids.len());
        let mut dues = Vec::with_capacity(ids.len());
        for &id in ids {
            match self.instances.get(&id) {
                Some(i) if i.state != InstanceState::Deleted => {
                    let clones = self.clones.get(&id).map_or(0, HashSet::len);
                    views.push(Arc::new(self.instance_view(i, clones)));
                    dues.push((id, i.due()));
                }
                _ => dues.push((id, None)),
            }
        }
        (views, dues)
    }

    /// Instances (of any state but deleted) that belong to group `id`.
    pub(super) fn members(&self, id: Uuid) -> usize {
        self.member_ids(id).len()
    }

    /// The instances (of any state but deleted) that belong to group `id`, right now: the
    /// committed index, corrected by what the batch in hand changed. O(members + changes),
    /// never a scan of every instance.
    pub(super) fn member_ids(&self, id: Uuid) -> Vec<Uuid> {
        let live = |i: Option<&Instance>| {
            i.is_some_and(|i| i.group == Some(id) && i.state != InstanceState::Deleted)
        };
        let mut ids: HashSet<Uuid> = self.members.get(&id).cloned().unwrap_or_default();
        for (key, before, after) in self.instances.changes() {
            if live(before) && !live(after) {
                ids.remove(key);
            } else if live(after) {
                ids.insert(*key);
            }
        }
        ids.into_iter().collect()
    }

    /// Clears the reference of every clone to a template that is gone.
    fn forget_template(&mut self, id: Uuid) {
        let clones: Vec<Uuid> = self
            .instances
            .values()
            .filter(|i| i.template == Some(id))
            .map(|i| i.id)
            .collect();
        for c in clones {
            if let Some(i) = self.instances.get_mut(&c) {
                i.template = None;
            }
        }
    }

    /// Everything due for an instance fires now (after a lock is cleared, a policy changed, a
    /// restart), and a drain that is no longer due ends.
    fn check_instance(&mut self, id: Uuid, now: SystemTime, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        match inst.state {
            InstanceState::Running => self.limit_reached(id, now, fx),
            InstanceState::Draining => {
                self.undrain_if_not_due(id, fx);
            }
            InstanceState::Stopped => self.check_stopped(id, now, fx),
            InstanceState::Template => self.check_template(id, now, fx),
            _ => {}
        }
    }

    // ---- actions -------------------------------------------------------------------------

    fn start_instance(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        inst.state = InstanceState::Starting;
        inst.attempt += 1;
        inst.restart_at = None;
        inst.destroy_due = false;
        inst.skipped = None;
        fx.push(Effect::Disarm(TimerKey::StoppedTime(id)));
        fx.push(Effect::Disarm(TimerKey::Restart(id)));
        fx.push(Effect::Start {
            id,
            attempt: inst.attempt,
        });
    }

    /// Takes the instance out of service and asks the runtime to delete it.
    fn delete_instance(&mut self, id: Uuid, reason: Option<&'static str>, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        inst.state = InstanceState::Deleted;
        inst.pending = Pending::Delete(reason);
        if let Some(up) = &inst.upstream {
            fx.push(Effect::EndDrainWatch(Arc::clone(up)));
        }
        if reason == Some("num_requests") {
            inst.stop_reason = Some(StopReason::NumRequests);
        }
        let name = Arc::clone(&inst.name);
        self.names.remove(&name);
        // Counted when decided, as it leaves the API's and the metrics' view.
        if let Some(reason) = reason {
            tracing::info!(instance = %name, reason, "killing instance");
            fx.push(Effect::Killed {
                resource: INSTANCE,
                reason,
            });
        }
        for key in [
            TimerKey::StoppedTime(id),
            TimerKey::Restart(id),
            TimerKey::Drain(id),
        ] {
            fx.push(Effect::Disarm(key));
        }
        fx.push(Effect::Delete(id));
        fx.push(Effect::Publish);
    }

    /// Applies a lock change: the proxy keeps serving past the limit while locked (the meter
    /// learns it after the commit), a drain in progress ends, and what came due fires when the
    /// lock is cleared.
    fn set_instance_lock(&mut self, id: Uuid, locked: bool, now: SystemTime, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        let was = inst.delete_lock;
        inst.delete_lock = locked;
        if was != locked {
            inst.skipped = None;
            self.limit_changed(id, fx);
            self.check_instance(id, now, fx);
        }
    }

    /// The instance's limit or lock changed: the meter learns them once the change is committed
    /// (so a failed commit leaves the proxy as it was), and the durable reservation follows the
    /// new limit — every path that sets a limit goes through here.
    pub(super) fn limit_changed(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        fx.push(Effect::SetLimit {
            id,
            meter: Arc::clone(&inst.meter),
            limit: inst.autokill.num_requests,
            held: inst.delete_lock,
        });
        self.reserve(id, fx);
    }
}

/// The next reservation block for a budget of `limit` with `reserved` already reserved:
/// a sixteenth of what is left, at least one. At most one block is lost from the budget by a
/// crash, and a budget of N takes about 16·ln(N) commits to spend.
pub fn reservation_block(limit: u64, reserved: u64) -> u64 {
    (limit.saturating_sub(reserved) / 16).max(1)
}

/// Moves `(member, from, to)` between the sets of an index (a group's members, a template's
/// clones), dropping sets that become empty.
fn move_between(
    index: &mut HashMap<Uuid, HashSet<Uuid>>,
    moves: Vec<(Uuid, Option<Uuid>, Option<Uuid>)>,
) {
    for (id, from, to) in moves {
        if let Some(k) = from
            && let Some(set) = index.get_mut(&k)
        {
            set.remove(&id);
            if set.is_empty() {
                index.remove(&k);
            }
        }
        if let Some(k) = to {
            index.entry(k).or_default().insert(id);
        }
    }
}

/// Counts a kill that a delete lock held back, once each time it comes due (not once per
/// re-check: a PATCH of a locked, overdue resource does not count it again).
fn skip(
    skipped: &mut Option<&'static str>,
    resource: &'static str,
    reason: &'static str,
    fx: &mut Vec<Effect>,
) {
    if *skipped != Some(reason) {
        *skipped = Some(reason);
        fx.push(Effect::KillSkipped { resource, reason });
    }
}

/// What an instance is made from.
struct Spec {
    name: String,
    image: String,
    memory_mb: Option<u64>,
    autokill: Autokill,
    restart_policy: RestartPolicy,
    autodestroy: Autodestroy,
}

fn declared(cfg: &InstanceConfig) -> Spec {
    Spec {
        name: cfg.name.clone(),
        image: cfg.image.clone(),
        memory_mb: None,
        autokill: cfg.autokill,
        restart_policy: cfg.restart_policy,
        autodestroy: cfg.autodestroy,
    }
}

/// What happens when an instance stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again.
    Restart,
    /// Delete it (autodestroy).
    Destroy,
    /// Leave it stopped.
    Stay,
}

/// SPEC's order: (1) restart if the restart policy says so (never after a user's stop); else
/// (2) destroy if autodestroy matches the exit code; else (3) stay stopped.
pub fn decide(
    restart: RestartPolicy,
    destroy: Autodestroy,
    exit_code: i32,
    user_stop: bool,
) -> Decision {
    let failed = exit_code != 0;
    let restart = !user_stop
        && match restart {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
        };
    if restart {
        return Decision::Restart;
    }
    let destroy = match destroy {
        Autodestroy::Off => false,
        Autodestroy::OnFailure => failed,
        Autodestroy::OnSuccess => !failed,
        Autodestroy::Always => true,
    };
    if destroy {
        Decision::Destroy
    } else {
        Decision::Stay
    }
}

/// The delay before restart number `n` (0-based): immediately, then 5 s, 10 s, 20 s … at most 5 min.
pub fn backoff(n: u32) -> Duration {
    match n {
        0 => Duration::ZERO,
        n => BACKOFF_FIRST
            .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
            .min(BACKOFF_MAX),
    }
}

mod body_limits;
mod calls;
pub(super) mod services;
mod view;
pub(super) use view::StaleRoutes;

use services::{ServiceSpec, Tombstones};

#[cfg(test)]
mod tests;
