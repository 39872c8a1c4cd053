//! The controller's state and its one `apply`: a pure function from (state, command, now) to
//! (new state, effects). No runtime, no clock, no I/O: unit tests drive it directly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{Command, Effect, GroupView, InstanceState, InstanceView, StopReason, View};
use crate::config::{
    Autodestroy, Autokill, Balance, Config, GroupConfig, InstanceConfig, RestartPolicy,
};
use crate::proxy::meter::{Inflight, Meter};
use crate::proxy::route::{GroupRoute, RouteTable, Target, Upstream};
use crate::runtime::InstanceSpec;

/// One instance as the controller knows it.
#[derive(Debug)]
pub struct Instance {
    /// Identity.
    pub id: Uuid,
    /// Unique name; routed as `<name>.<base_domain>`.
    pub name: Arc<str>,
    /// Image key.
    pub image: String,
    /// The service group it belongs to.
    pub group: Option<Uuid>,
    /// Its autokill policy.
    pub autokill: Autokill,
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
}

/// One service group as the controller knows it.
#[derive(Debug)]
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
}

/// Everything the controller owns.
#[derive(Debug)]
pub struct State {
    /// Instances by id.
    pub instances: HashMap<Uuid, Instance>,
    /// Service groups by id.
    pub groups: HashMap<Uuid, Group>,
    base_domain: String,
    drain_timeout: Duration,
    workers: usize,
    balance: Balance,
}

impl State {
    /// An empty state for `config`, with `workers` proxy workers (for the in-flight slots).
    pub fn new(config: &Config, workers: usize) -> State {
        State {
            instances: HashMap::new(),
            groups: HashMap::new(),
            base_domain: config.proxy.base_domain.clone(),
            drain_timeout: config.defaults.drain_timeout,
            workers,
            balance: config.proxy.balance,
        }
    }

    /// Applies one command and returns what the controller task must carry out, in order.
    pub fn apply(&mut self, cmd: Command, now: SystemTime) -> Vec<Effect> {
        let mut fx = Vec::new();
        match cmd {
            Command::Declare { groups, instances } => self.declare(groups, instances, now, &mut fx),
            Command::Started { id, result } => self.started(id, result, now, &mut fx),
            Command::LimitReached { id } => self.limit_reached(id, &mut fx),
            Command::Drained { id } => self.drained(id, &mut fx),
            Command::Exited { id, exit_code } => self.exited(id, exit_code, now, &mut fx),
            Command::Deleted { id, result } => self.deleted(id, result, &mut fx),
            Command::Api(_, reply) => {
                let _ = reply.send(Err(super::api::ApiError {
                    status: 501,
                    message: "not implemented yet".into(),
                }));
            }
            Command::Timer(_) => {}
        }
        fx
    }

    fn declare(
        &mut self,
        groups: Vec<GroupConfig>,
        instances: Vec<InstanceConfig>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) {
        for g in groups {
            let id = Uuid::new_v4();
            for inst in &g.instances {
                self.add_instance(inst, Some(id), now, fx);
            }
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
                },
            );
        }
        for inst in &instances {
            self.add_instance(inst, None, now, fx);
        }
        fx.push(Effect::Publish);
    }

    fn add_instance(
        &mut self,
        cfg: &InstanceConfig,
        group: Option<Uuid>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) {
        let id = Uuid::new_v4();
        let name: Arc<str> = cfg.name.as_str().into();
        fx.push(Effect::Launch(InstanceSpec {
            id,
            name: cfg.name.clone(),
            image: cfg.image.clone(),
        }));
        self.instances.insert(
            id,
            Instance {
                id,
                name,
                image: cfg.image.clone(),
                group,
                autokill: cfg.autokill,
                restart_policy: cfg.restart_policy,
                autodestroy: cfg.autodestroy,
                state: InstanceState::Starting,
                meter: Arc::new(Meter::new(0, cfg.autokill.num_requests)),
                upstream: None,
                exit_code: None,
                stop_reason: None,
                stopped_at: None,
                created_at: now,
                delete_lock: false,
            },
        );
    }

    fn started(
        &mut self,
        id: Uuid,
        result: Result<SocketAddr, String>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) {
        let workers = self.workers;
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.state != InstanceState::Starting {
            return;
        }
        match result {
            Ok(addr) => {
                inst.state = InstanceState::Running;
                inst.upstream = Some(Arc::new(Upstream {
                    id,
                    name: Arc::clone(&inst.name),
                    addr,
                    meter: Arc::clone(&inst.meter),
                    inflight: Inflight::new(workers),
                }));
                // A budget spent before this start (e.g. counted across a restart) drains at once.
                if inst.meter.exhausted() {
                    self.limit_reached(id, fx);
                }
            }
            Err(message) => {
                tracing::warn!(instance = %inst.name, %message, "instance failed to start");
                inst.state = InstanceState::Stopped;
                inst.stop_reason = Some(StopReason::StartFailed);
                inst.stopped_at = Some(now);
            }
        }
        fx.push(Effect::Publish);
    }

    fn limit_reached(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        let drain_timeout = self.drain_timeout;
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.state != InstanceState::Running || inst.delete_lock {
            if inst.delete_lock {
                fx.push(Effect::KillSkipped {
                    resource: "instance",
                    reason: "num_requests",
                });
            }
            return;
        }
        inst.state = InstanceState::Draining;
        inst.stop_reason = Some(StopReason::NumRequests);
        if let Some(up) = &inst.upstream {
            fx.push(Effect::WatchDrain {
                id,
                upstream: Arc::clone(up),
                timeout: drain_timeout,
            });
        }
        fx.push(Effect::Publish);
    }

    fn drained(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.state != InstanceState::Draining {
            return;
        }
        inst.state = InstanceState::Stopping;
        fx.push(Effect::Delete(id));
        fx.push(Effect::Publish);
    }

    fn exited(&mut self, id: Uuid, exit_code: i32, now: SystemTime, fx: &mut Vec<Effect>) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        inst.exit_code = Some(exit_code);
        inst.upstream = None;
        match inst.state {
            // Asked for: the delete in progress ends the story.
            InstanceState::Stopping | InstanceState::Deleted => {}
            _ => {
                inst.state = InstanceState::Stopped;
                inst.stop_reason = Some(StopReason::Exited);
                inst.stopped_at = Some(now);
            }
        }
        fx.push(Effect::Publish);
    }

    fn deleted(&mut self, id: Uuid, result: Result<(), String>, fx: &mut Vec<Effect>) {
        if let Err(message) = result {
            // The runtime could not remove it: keep it visible as stopped rather than pretend.
            if let Some(inst) = self.instances.get_mut(&id) {
                tracing::error!(instance = %inst.name, %message, "deleting instance failed");
                inst.state = InstanceState::Stopped;
            }
            fx.push(Effect::Publish);
            return;
        }
        if let Some(inst) = self.instances.remove(&id) {
            let reason = match inst.stop_reason {
                Some(StopReason::NumRequests) => "num_requests",
                _ => "other",
            };
            tracing::info!(instance = %inst.name, reason, served = inst.meter.count(), "instance deleted");
            fx.push(Effect::Killed {
                resource: "instance",
                reason,
            });
        }
        fx.push(Effect::Publish);
    }

    /// The route table for the current state.
    pub fn route_table(&self) -> RouteTable {
        let mut b = RouteTable::builder();
        let mut index = HashMap::new();
        for inst in self.instances.values() {
            let target = match &inst.upstream {
                Some(up)
                    if matches!(inst.state, InstanceState::Running | InstanceState::Draining) =>
                {
                    let i = b.upstream(Arc::clone(up));
                    index.insert(inst.id, i);
                    Target::Instance(Some(i))
                }
                _ => Target::Instance(None),
            };
            b.route(&format!("{}.{}", inst.name, self.base_domain), target);
        }
        for group in self.groups.values() {
            let mut members: Vec<usize> = self
                .instances
                .values()
                .filter(|i| i.group == Some(group.id) && i.state == InstanceState::Running)
                .filter_map(|i| index.get(&i.id).copied())
                .collect();
            // A stable order, so round-robin walks the same cycle across publishes.
            members.sort_unstable();
            for domain in &group.domains {
                b.route(
                    domain,
                    Target::Group(GroupRoute {
                        members: members.clone().into(),
                        balance: group.balance,
                    }),
                );
            }
        }
        b.build()
    }

    /// What the API and `/metrics` read.
    pub fn view(&self) -> View {
        let mut instances: Vec<InstanceView> = self
            .instances
            .values()
            .map(|i| InstanceView {
                id: i.id,
                name: Arc::clone(&i.name),
                state: i.state,
                template: None,
                clones: 0,
                group: i
                    .group
                    .and_then(|g| self.groups.get(&g))
                    .map(|g| g.name.clone()),
                image: i.image.clone(),
                meter: Arc::clone(&i.meter),
                autokill: i.autokill,
                restart_policy: i.restart_policy,
                autodestroy: i.autodestroy,
                exit_code: i.exit_code,
                stop_reason: i.stop_reason,
                stopped_at: i.stopped_at,
                created_at: i.created_at,
                delete_lock: i.delete_lock,
                addr: i.upstream.as_ref().map(|u| u.addr),
            })
            .collect();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        let mut groups: Vec<GroupView> = self
            .groups
            .values()
            .map(|g| GroupView {
                id: g.id,
                name: g.name.clone(),
                domains: g.domains.clone(),
                autokill_time: g.autokill_time,
                delete_lock: g.delete_lock,
                instances: self
                    .instances
                    .values()
                    .filter(|i| i.group == Some(g.id))
                    .map(|i| Arc::clone(&i.name))
                    .collect(),
                soft_limit: None,
                hard_limit: None,
                services: serde_json::Value::Array(Vec::new()),
                created_at: g.created_at,
                deleted: false,
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        View { instances, groups }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        AdminConfig, Defaults, ProxyConfig, RuntimeConfig, RuntimeKind, StoreConfig,
    };

    fn config() -> Config {
        Config {
            proxy: ProxyConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                workers: 1,
                base_domain: "localhost".into(),
                header_read_timeout: Duration::from_secs(1),
                upstream_connect_timeout: Duration::from_secs(1),
                upstream_timeout: Duration::from_secs(1),
                pool_idle_per_instance: 4,
                balance: Balance::RoundRobin,
            },
            admin: AdminConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                token: None,
            },
            store: StoreConfig {
                path: "unused".into(),
            },
            runtime: RuntimeConfig {
                kind: RuntimeKind::Process,
                stop_grace: Duration::from_secs(1),
                start_timeout: Duration::from_secs(1),
                images: Default::default(),
            },
            defaults: Defaults {
                drain_timeout: Duration::from_secs(10),
            },
            service_groups: vec![],
            instances: vec![],
        }
    }

    fn instance(name: &str, num_requests: u64) -> InstanceConfig {
        InstanceConfig {
            name: name.into(),
            image: "hello".into(),
            autokill: Autokill {
                num_requests,
                time: None,
            },
            restart_policy: RestartPolicy::Never,
            autodestroy: Autodestroy::Off,
        }
    }

    fn declared(state: &mut State, n: u64) -> Uuid {
        let g = GroupConfig {
            name: "g".into(),
            domains: vec!["g.localhost".into()],
            autokill_time: None,
            instances: vec![instance("a", n)],
        };
        let fx = state.apply(
            Command::Declare {
                groups: vec![g],
                instances: vec![],
            },
            SystemTime::UNIX_EPOCH,
        );
        let Some(Effect::Launch(spec)) = fx.first() else {
            panic!("expected a launch, got {fx:?}")
        };
        spec.id
    }

    #[test]
    fn limit_drains_then_deletes() {
        let mut s = State::new(&config(), 1);
        let id = declared(&mut s, 2);
        assert!(matches!(
            s.route_table().lookup(b"a.localhost"),
            Some(Target::Instance(None))
        ));
        s.apply(
            Command::Started {
                id,
                result: Ok(([127, 0, 0, 1], 9).into()),
            },
            SystemTime::UNIX_EPOCH,
        );
        assert!(matches!(
            s.route_table().lookup(b"a.localhost"),
            Some(Target::Instance(Some(0)))
        ));
        assert!(
            matches!(s.route_table().lookup(b"g.localhost"), Some(Target::Group(g)) if g.members.len() == 1)
        );

        let fx = s.apply(Command::LimitReached { id }, SystemTime::UNIX_EPOCH);
        assert!(fx.iter().any(|e| matches!(e, Effect::WatchDrain { .. })));
        assert_eq!(s.instances[&id].state, InstanceState::Draining);
        // Draining: still addressable by name (the meter refuses), gone from the group.
        assert!(matches!(
            s.route_table().lookup(b"a.localhost"),
            Some(Target::Instance(Some(_)))
        ));
        assert!(
            matches!(s.route_table().lookup(b"g.localhost"), Some(Target::Group(g)) if g.members.is_empty())
        );

        let fx = s.apply(Command::Drained { id }, SystemTime::UNIX_EPOCH);
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Delete(d) if *d == id))
        );
        s.apply(Command::Exited { id, exit_code: 0 }, SystemTime::UNIX_EPOCH);
        assert_eq!(s.instances[&id].state, InstanceState::Stopping);
        let fx = s.apply(
            Command::Deleted { id, result: Ok(()) },
            SystemTime::UNIX_EPOCH,
        );
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Killed {
                resource: "instance",
                reason: "num_requests"
            }
        )));
        assert!(s.route_table().lookup(b"a.localhost").is_none());
        assert!(s.view().groups[0].instances.is_empty());
    }

    #[test]
    fn delete_lock_holds_the_kill() {
        let mut s = State::new(&config(), 1);
        let id = declared(&mut s, 1);
        s.apply(
            Command::Started {
                id,
                result: Ok(([127, 0, 0, 1], 9).into()),
            },
            SystemTime::UNIX_EPOCH,
        );
        if let Some(i) = s.instances.get_mut(&id) {
            i.delete_lock = true;
        }
        let fx = s.apply(Command::LimitReached { id }, SystemTime::UNIX_EPOCH);
        assert!(fx.iter().any(|e| matches!(e, Effect::KillSkipped { .. })));
        assert_eq!(s.instances[&id].state, InstanceState::Running);
    }

    #[test]
    fn unexpected_exit_stops_and_unroutes() {
        let mut s = State::new(&config(), 1);
        let id = declared(&mut s, 0);
        s.apply(
            Command::Started {
                id,
                result: Ok(([127, 0, 0, 1], 9).into()),
            },
            SystemTime::UNIX_EPOCH,
        );
        s.apply(Command::Exited { id, exit_code: 3 }, SystemTime::UNIX_EPOCH);
        let i = &s.instances[&id];
        assert_eq!(
            (i.state, i.exit_code, i.stop_reason),
            (InstanceState::Stopped, Some(3), Some(StopReason::Exited))
        );
        assert!(matches!(
            s.route_table().lookup(b"a.localhost"),
            Some(Target::Instance(None))
        ));
    }

    #[test]
    fn failed_start_is_stopped() {
        let mut s = State::new(&config(), 1);
        let id = declared(&mut s, 0);
        s.apply(
            Command::Started {
                id,
                result: Err("boom".into()),
            },
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(s.instances[&id].stop_reason, Some(StopReason::StartFailed));
    }
}
