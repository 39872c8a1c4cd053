//! The control path: the one task that owns instances and service groups.
//!
//! Every change arrives as a [`Command`] (from the config, the proxy's control channel, the
//! runtime's exit events, the runtime calls it started itself), is applied in order by the pure
//! [`State::apply`], and yields [`Effect`]s that the task carries out: runtime calls (run as tasks
//! that report back with a command, so the loop never blocks on a runtime), drain watches, and
//! publishing a new route table and [`View`].

pub mod api;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use state::{Group, Instance, State};

use crate::config::{Autodestroy, Autokill, Config, RestartPolicy};
use crate::metrics::Metrics;
use crate::proxy::ProxyEvent;
use crate::proxy::meter::Meter;
use crate::proxy::route::{RouteTable, Upstream};
use crate::runtime::{InstanceSpec, Runtime, RuntimeEvent};

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
    /// It could not be started.
    StartFailed,
}

impl StopReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::NumRequests => "num_requests",
            StopReason::Exited => "exited",
            StopReason::StartFailed => "start_failed",
        }
    }
}

/// Everything that can change the controller's state.
#[derive(Debug)]
pub enum Command {
    /// The configuration file declares these groups and instances.
    Declare {
        /// Service groups with their instances.
        groups: Vec<crate::config::GroupConfig>,
        /// Stand-alone instances.
        instances: Vec<crate::config::InstanceConfig>,
    },
    /// A launch or start the controller asked for finished.
    Started {
        /// The instance.
        id: Uuid,
        /// Its address, or why it failed.
        result: Result<SocketAddr, String>,
    },
    /// The proxy admitted the request that spent the instance's budget.
    LimitReached {
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
    /// Create and start an instance; reports [`Command::Started`].
    Launch(InstanceSpec),
    /// Delete an instance through the runtime; reports [`Command::Deleted`].
    Delete(Uuid),
    /// Wait until the upstream has nothing in flight (or `timeout`); reports [`Command::Drained`].
    WatchDrain {
        /// The instance.
        id: Uuid,
        /// Its incarnation, whose in-flight count is watched.
        upstream: Arc<Upstream>,
        /// Give up waiting after this long.
        timeout: Duration,
    },
    /// Publish a new route table and view.
    Publish,
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
    /// Instances, sorted by name.
    pub instances: Vec<InstanceView>,
    /// Service groups, sorted by name.
    pub groups: Vec<GroupView>,
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
    /// The live meter (requests served are read from it).
    pub meter: Arc<Meter>,
    /// Autokill policy.
    pub autokill: Autokill,
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
}

impl Published {
    /// Empty table and view.
    pub fn new() -> Published {
        Published {
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            view: Arc::new(ArcSwap::from_pointee(View::default())),
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
}

/// Runs the controller until every input is closed.
pub async fn run(
    config: &Config,
    workers: usize,
    runtime: Arc<dyn Runtime>,
    published: Published,
    metrics: Metrics,
    mut inputs: Inputs,
) {
    let mut state = State::new(config, workers);
    let tx = inputs.commands_tx.clone();
    let declare = Command::Declare {
        groups: config.service_groups.clone(),
        instances: config.instances.clone(),
    };
    carry_out(
        state.apply(declare, SystemTime::now()),
        &state,
        &runtime,
        &published,
        &metrics,
        &tx,
    );
    loop {
        let cmd = tokio::select! {
            Some(cmd) = inputs.commands.recv() => cmd,
            Some(ev) = inputs.proxy.recv() => match ev {
                ProxyEvent::LimitReached { id } => Command::LimitReached { id },
            },
            Some(ev) = inputs.runtime.recv() => match ev {
                RuntimeEvent::Exited { id, exit_code } => Command::Exited { id, exit_code },
            },
            else => break,
        };
        let effects = state.apply(cmd, SystemTime::now());
        carry_out(effects, &state, &runtime, &published, &metrics, &tx);
    }
}

/// Carries out effects in order. Runtime calls and drain watches run as tasks that report back.
fn carry_out(
    effects: Vec<Effect>,
    state: &State,
    runtime: &Arc<dyn Runtime>,
    published: &Published,
    metrics: &Metrics,
    tx: &mpsc::UnboundedSender<Command>,
) {
    let mut publish = false;
    for effect in effects {
        match effect {
            Effect::Publish => publish = true,
            Effect::Killed { resource, reason } => {
                metrics.kills.with_label_values(&[resource, reason]).inc()
            }
            Effect::KillSkipped { resource, reason } => metrics
                .kills_skipped
                .with_label_values(&[resource, reason])
                .inc(),
            Effect::Launch(spec) => {
                let (runtime, tx) = (Arc::clone(runtime), tx.clone());
                tokio::spawn(async move {
                    let id = spec.id;
                    let result = match runtime.create(&spec).await {
                        Ok(()) => runtime.start(id).await,
                        Err(err) => Err(err),
                    };
                    let _ = tx.send(Command::Started {
                        id,
                        result: result.map_err(|e| e.to_string()),
                    });
                });
            }
            Effect::Delete(id) => {
                let (runtime, tx) = (Arc::clone(runtime), tx.clone());
                tokio::spawn(async move {
                    let result = runtime.delete(id).await.map_err(|e| e.to_string());
                    let _ = tx.send(Command::Deleted { id, result });
                });
            }
            Effect::WatchDrain {
                id,
                upstream,
                timeout,
            } => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    // Draining is rare and short; a 5 ms poll of the workers' slots costs nothing
                    // on the hot path, where a wake-up per request end would.
                    let deadline = tokio::time::Instant::now() + timeout;
                    while upstream.inflight.total() > 0 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let _ = tx.send(Command::Drained { id });
                });
            }
        }
    }
    if publish {
        published.table.store(Arc::new(state.route_table()));
        published.view.store(Arc::new(state.view()));
    }
}
