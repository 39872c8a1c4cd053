//! Tutum's services on the controller's own records. A service is a service group with a spec
//! ([`ServiceSpec`]: image, `target_num_containers`, autorestart, autodestroy, autokill) from
//! which its instances — Tutum's containers, named `<service>-1`, `<service>-2`, … — are made.
//! Creating, patching, starting, stopping, scaling, redeploying and terminating a service are API
//! calls applied here, in terms of the instance lifecycle: what happens when a container stops
//! is decided for it as for every instance (restart first, then autodestroy), from the policies
//! the service gave it.
//!
//! Also here: what `/api/v1` reads beyond the instances and groups of the published view
//! ([`TutumView`]): each service's state as Tutum names it, the containers being terminated, and
//! the services and containers terminated in the last [`TERMINATED_RETENTION`] (in memory only:
//! a restart forgets them).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::super::api::{
    ApiError, AutokillSpec, Call, InstancePatch, NewService, Ref, Reply, ServicePatch,
};
use super::super::{Effect, InstanceState, InstanceView, StopReason, TimerKey};
use super::{Group, Instance, Pending, Spec, State};
use crate::config::{Autodestroy, Autokill, RestartPolicy};
use crate::store::ServiceRecord;

/// How long a terminated service or container stays visible (as `Terminated`).
pub const TERMINATED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// At most this many terminated services, and as many terminated containers, are kept.
pub const TERMINATED_KEPT: usize = 1000;

/// The most containers one service may have (`target_num_containers`).
pub const MAX_CONTAINERS: u32 = 1000;

/// Longest service name: its containers are named `<name>-<n>`, and names are DNS labels
/// (at most 63 characters), which leaves room for a six-digit `-<n>`.
pub const MAX_SERVICE_NAME: usize = 56;

/// An operation on a whole service that is under way until its containers have settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Containers are being added or removed.
    Scaling,
    /// Containers are being replaced.
    Redeploying,
    /// Containers are being deleted, and then the service.
    Terminating,
}

impl Transition {
    fn as_str(self) -> &'static str {
        match self {
            Transition::Scaling => "Scaling",
            Transition::Redeploying => "Redeploying",
            Transition::Terminating => "Terminating",
        }
    }

    fn from_str(s: &str) -> Option<Transition> {
        [
            Transition::Scaling,
            Transition::Redeploying,
            Transition::Terminating,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// What a service's containers are made from, and where the service is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Image key.
    pub image: String,
    /// `target_num_containers`: reached at creation, scale and redeploy.
    pub target: u32,
    /// Each container's restart policy (Tutum's `autorestart`).
    pub autorestart: RestartPolicy,
    /// Each container's autodestroy.
    pub autodestroy: Autodestroy,
    /// Each container's autokill policy.
    pub autokill: Autokill,
    /// Started and not stopped since: containers added by a scale are started too.
    pub run: bool,
    /// The containers are made from the current spec (false once the image changed, until the
    /// next redeploy).
    pub synchronized: bool,
    /// An operation under way.
    pub transition: Option<Transition>,
    /// Last deployment (creation, redeploy).
    pub deployed_at: Option<SystemTime>,
    /// Last start.
    pub started_at: Option<SystemTime>,
    /// Last stop.
    pub stopped_at: Option<SystemTime>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl ServiceSpec {
    /// What its container `name` is made from.
    fn container(&self, name: String) -> Spec {
        Spec {
            name,
            image: self.image.clone(),
            memory_mb: None,
            autokill: self.autokill,
            restart_policy: self.autorestart,
            autodestroy: self.autodestroy,
        }
    }

    /// The spec as stored with its group.
    pub fn record(&self) -> ServiceRecord {
        ServiceRecord {
            image: self.image.clone(),
            target: self.target,
            restart_policy: self.autorestart.as_str().to_owned(),
            autodestroy: self.autodestroy.as_str().to_owned(),
            num_requests: self.autokill.num_requests,
            time_ms: self.autokill.time.map(|t| t.as_millis() as u64),
            run: self.run,
            synchronized: self.synchronized,
            transition: self.transition.map(|t| t.as_str().to_owned()),
            deployed_at: self.deployed_at.map(ms),
            started_at: self.started_at.map(ms),
            stopped_at: self.stopped_at.map(ms),
        }
    }

    /// The spec as recovered from the store.
    pub fn restore(r: ServiceRecord) -> ServiceSpec {
        ServiceSpec {
            image: r.image,
            target: r.target,
            autorestart: RestartPolicy::from_wire(&r.restart_policy).unwrap_or_default(),
            autodestroy: Autodestroy::from_wire(&r.autodestroy).unwrap_or_default(),
            autokill: Autokill {
                num_requests: r.num_requests,
                time: r.time_ms.map(Duration::from_millis),
            },
            run: r.run,
            synchronized: r.synchronized,
            transition: r.transition.as_deref().and_then(Transition::from_str),
            deployed_at: r.deployed_at.map(at),
            started_at: r.started_at.map(at),
            stopped_at: r.stopped_at.map(at),
        }
    }
}

/// A service's state, as Tutum names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Created; no container has been started yet.
    Init,
    /// Some container is starting.
    Starting,
    /// Every container runs.
    Running,
    /// Some containers run, some do not.
    PartlyRunning,
    /// Containers are being added or removed.
    Scaling,
    /// Containers are being replaced.
    Redeploying,
    /// Some container is stopping.
    Stopping,
    /// No container runs.
    Stopped,
    /// Its containers are being deleted.
    Terminating,
    /// Gone (shown for a while after).
    Terminated,
    /// It has no container (all were destroyed, or `target_num_containers` is 0).
    NotRunning,
}

impl ServiceState {
    /// Every state, for checking filters.
    pub const ALL: [ServiceState; 11] = [
        ServiceState::Init,
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::PartlyRunning,
        ServiceState::Scaling,
        ServiceState::Redeploying,
        ServiceState::Stopping,
        ServiceState::Stopped,
        ServiceState::Terminating,
        ServiceState::Terminated,
        ServiceState::NotRunning,
    ];

    /// Tutum's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Init => "Init",
            ServiceState::Starting => "Starting",
            ServiceState::Running => "Running",
            ServiceState::PartlyRunning => "Partly running",
            ServiceState::Scaling => "Scaling",
            ServiceState::Redeploying => "Redeploying",
            ServiceState::Stopping => "Stopping",
            ServiceState::Stopped => "Stopped",
            ServiceState::Terminating => "Terminating",
            ServiceState::Terminated => "Terminated",
            ServiceState::NotRunning => "Not running",
        }
    }
}

/// A container's state, as Tutum names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Init,
    /// Being started.
    Starting,
    /// Running (also while its spent budget drains).
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// Being deleted.
    Terminating,
    /// Gone (shown for a while after).
    Terminated,
}

impl ContainerState {
    /// Every state, for checking filters.
    pub const ALL: [ContainerState; 7] = [
        ContainerState::Init,
        ContainerState::Starting,
        ContainerState::Running,
        ContainerState::Stopping,
        ContainerState::Stopped,
        ContainerState::Terminating,
        ContainerState::Terminated,
    ];

    /// Tutum's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Init => "Init",
            ContainerState::Starting => "Starting",
            ContainerState::Running => "Running",
            ContainerState::Stopping => "Stopping",
            ContainerState::Stopped => "Stopped",
            ContainerState::Terminating => "Terminating",
            ContainerState::Terminated => "Terminated",
        }
    }

    /// An instance's state in Tutum's words: a stopped instance that has never stopped for a
    /// reason (never ran) is `Init`.
    pub fn of(state: InstanceState, stop_reason: Option<StopReason>) -> ContainerState {
        match state {
            InstanceState::Starting => ContainerState::Starting,
            InstanceState::Running | InstanceState::Draining => ContainerState::Running,
            InstanceState::Stopping => ContainerState::Stopping,
            InstanceState::Stopped if stop_reason.is_none() => ContainerState::Init,
            InstanceState::Stopped | InstanceState::Template => ContainerState::Stopped,
            InstanceState::Deleted => ContainerState::Terminating,
        }
    }
}

/// One service as `/api/v1` shows it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// Identity (its group's).
    pub id: Uuid,
    /// Name (its group's).
    pub name: String,
    /// What its containers are made from.
    pub spec: ServiceSpec,
    /// Tutum's state.
    pub state: ServiceState,
    /// Its group's host names.
    pub domains: Vec<String>,
    /// Its containers not yet gone (being terminated included), by name.
    pub containers: Vec<Uuid>,
    /// Containers not being terminated.
    pub current: usize,
    /// Containers running.
    pub running: usize,
    /// Containers stopped (after having run).
    pub stopped: usize,
    /// Created.
    pub created_at: SystemTime,
    /// Terminated (only in the [`Graveyard`]).
    pub terminated_at: Option<SystemTime>,
    /// Its group's delete lock.
    pub delete_lock: bool,
}

/// One container as `/api/v1` shows it: an instance with Tutum's state and its service.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: Arc<str>,
    /// Image key.
    pub image: String,
    /// The service it belongs to.
    pub service: Option<Uuid>,
    /// Tutum's state.
    pub state: ContainerState,
    /// Exit code of the last exit.
    pub exit_code: Option<i32>,
    /// Why it last stopped.
    pub stop_reason: Option<StopReason>,
    /// Restart policy (`autorestart`).
    pub autorestart: RestartPolicy,
    /// Autodestroy.
    pub autodestroy: Autodestroy,
    /// Autokill policy.
    pub autokill: Autokill,
    /// Delete lock.
    pub delete_lock: bool,
    /// Requests served.
    pub requests: u64,
    /// Created (deployed).
    pub created_at: SystemTime,
    /// When its current run began (while running).
    pub started_at: Option<SystemTime>,
    /// When it last stopped.
    pub stopped_at: Option<SystemTime>,
    /// When it was terminated (only in the [`Graveyard`]).
    pub terminated_at: Option<SystemTime>,
    /// Where it listens, while running.
    pub addr: Option<SocketAddr>,
}

impl ContainerView {
    /// An instance of the view as a container of `service`.
    pub fn of(i: &InstanceView) -> ContainerView {
        ContainerView {
            id: i.id,
            name: Arc::clone(&i.name),
            image: i.image.clone(),
            service: i.service,
            state: ContainerState::of(i.state, i.stop_reason),
            exit_code: i.exit_code,
            stop_reason: i.stop_reason,
            autorestart: i.restart_policy,
            autodestroy: i.autodestroy,
            autokill: i.autokill,
            delete_lock: i.delete_lock,
            requests: i.meter.count(),
            created_at: i.created_at,
            started_at: i.started_at,
            stopped_at: i.stopped_at,
            terminated_at: None,
            addr: i.addr,
        }
    }
}

/// Services and containers terminated lately, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Graveyard {
    /// Terminated services.
    pub services: VecDeque<ServiceView>,
    /// Terminated containers.
    pub containers: VecDeque<ContainerView>,
}

/// What `/api/v1` reads besides the instances and groups of the view.
#[derive(Debug, Default)]
pub struct TutumView {
    /// Live services, oldest first.
    pub services: Vec<ServiceView>,
    /// Containers being deleted (the view's instances leave them out).
    pub terminating: Vec<ContainerView>,
    /// Lately terminated services and containers.
    pub terminated: Arc<Graveyard>,
}

/// Tombstones: published once the batch that made them is committed, forgotten if it is
/// rolled back (so a failed commit leaves no trace of what it undid).
#[derive(Debug, Default)]
pub(in crate::controller) struct Tombstones {
    published: Arc<Graveyard>,
    pending: Vec<Tomb>,
}

#[derive(Debug)]
enum Tomb {
    Service(ServiceView),
    Container(ContainerView),
}

fn bury<T>(
    list: &mut VecDeque<T>,
    item: T,
    id: impl Fn(&T) -> Uuid,
    when: impl Fn(&T) -> Option<SystemTime>,
) {
    // A batch retried after a failed commit buries the same resource again: once is enough.
    let new = id(&item);
    list.retain(|x| id(x) != new);
    let newest = when(&item);
    list.push_back(item);
    while list.len() > TERMINATED_KEPT {
        list.pop_front();
    }
    // Old ones go as new ones come; readers also hide those past the retention.
    while let (Some(front), Some(newest)) = (list.front().and_then(&when), newest) {
        if front + TERMINATED_RETENTION >= newest {
            break;
        }
        list.pop_front();
    }
}

impl Tombstones {
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let graveyard = Arc::make_mut(&mut self.published);
        for tomb in self.pending.drain(..) {
            match tomb {
                Tomb::Service(s) => bury(&mut graveyard.services, s, |s| s.id, |s| s.terminated_at),
                Tomb::Container(c) => {
                    bury(&mut graveyard.containers, c, |c| c.id, |c| c.terminated_at)
                }
            }
        }
    }
}

/// Tutum's rule: a container that always restarts is never destroyed.
fn check_policies(autorestart: RestartPolicy, autodestroy: Autodestroy) -> Result<(), ApiError> {
    if autorestart == RestartPolicy::Always && autodestroy != Autodestroy::Off {
        return Err(ApiError::bad_request(
            "autodestroy: must be OFF when autorestart is ALWAYS (a container that always restarts is never destroyed)",
        ));
    }
    Ok(())
}

/// The `n` in a container name `<service>-<n>`, for ordering (others sort last).
fn index_of(service: &str, container: &str) -> u64 {
    container
        .strip_prefix(service)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

impl State {
    // ---- lookups -------------------------------------------------------------------------

    /// The service `r` names (a group with a spec).
    fn find_service(&self, r: &Ref) -> Result<Uuid, ApiError> {
        let id = self
            .find_group(r)
            .map_err(|_| ApiError::not_found(format!("no service {r}")))?;
        if self.groups[&id].service.is_none() {
            return Err(ApiError::not_found(format!(
                "{r} is a service group made through /v1, not a service (see /v1/services)"
            )));
        }
        Ok(id)
    }

    /// The service `r` names, refused (409) while it is being terminated.
    fn find_live_service(&self, r: &Ref) -> Result<Uuid, ApiError> {
        let id = self.find_service(r)?;
        if self
            .spec(id)
            .is_some_and(|s| s.transition == Some(Transition::Terminating))
        {
            return Err(ApiError::conflict(format!(
                "service {r} is being terminated"
            )));
        }
        Ok(id)
    }

    pub(super) fn spec(&self, id: Uuid) -> Option<&ServiceSpec> {
        self.groups.get(&id).and_then(|g| g.service.as_ref())
    }

    fn spec_mut(&mut self, id: Uuid) -> Option<&mut ServiceSpec> {
        self.groups.get_mut(&id).and_then(|g| g.service.as_mut())
    }

    /// The containers of service `id` not being deleted, in the order of their numbers.
    fn containers_of(&self, id: Uuid) -> Vec<Uuid> {
        let Some(g) = self.groups.get(&id) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, &str, Uuid)> = self
            .member_ids(id)
            .iter()
            .filter_map(|m| self.instances.get(m))
            .map(|i| (index_of(&g.name, &i.name), &*i.name, i.id))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, _, id)| id).collect()
    }

    /// Refuses (409) when any of `ids` is delete-locked.
    fn check_unlocked(&self, ids: &[Uuid]) -> Result<(), ApiError> {
        match ids
            .iter()
            .filter_map(|id| self.instances.get(id))
            .find(|i| i.delete_lock)
        {
            Some(i) => Err(ApiError::conflict(format!(
                "container {:?} is delete-locked",
                &*i.name
            ))),
            None => Ok(()),
        }
    }

    /// The lowest free `<service>-<n>` from `*next` on.
    fn next_container_name(&self, service: &str, next: &mut u64) -> String {
        loop {
            let name = format!("{service}-{next}");
            *next += 1;
            if self.check_name_free(&name).is_ok() {
                return name;
            }
        }
    }

    // ---- the calls -----------------------------------------------------------------------

    pub(super) fn create_service(
        &mut self,
        new: NewService,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        self.check_image(&new.image)?;
        check_policies(new.autorestart, new.autodestroy)?;
        let name = match new.name {
            Some(name) => {
                self.check_service_name_free(&name)?;
                name
            }
            None => self.service_name_for(&new.image),
        };
        let domain = format!("{name}.{}", self.base_domain);
        let id = Uuid::new_v4();
        let spec = ServiceSpec {
            image: new.image,
            target: new.target,
            autorestart: new.autorestart,
            autodestroy: new.autodestroy,
            autokill: Autokill {
                num_requests: new.autokill.num_requests.unwrap_or(0),
                time: new.autokill.time.filter(|t| !t.is_zero()),
            },
            run: false,
            synchronized: true,
            transition: None,
            deployed_at: Some(now),
            started_at: None,
            stopped_at: None,
        };
        self.groups.insert(
            id,
            Group {
                id,
                name,
                domains: vec![domain],
                autokill_time: None,
                balance: self.balance,
                delete_lock: false,
                created_at: now,
                empty_since: Some(now),
                soft_limit: None,
                hard_limit: None,
                services: serde_json::Value::Array(Vec::new()),
                from_config: false,
                skipped: None,
                service: Some(spec),
            },
        );
        let mut next = 1;
        for _ in 0..new.target {
            self.add_container(id, None, &mut next, now, fx);
        }
        self.check_group(id, now, fx);
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    /// A service name must be free as a group name, and its domain free too.
    fn check_service_name_free(&self, name: &str) -> Result<(), ApiError> {
        if self.groups.values().any(|g| g.name == name) {
            return Err(ApiError::conflict(format!(
                "name: a service or service group named {name:?} already exists"
            )));
        }
        if self.declared_groups.contains(name) {
            return Err(ApiError::conflict(format!(
                "name: {name:?} is declared by the configuration file"
            )));
        }
        let domain = format!("{name}.{}", self.base_domain);
        self.check_domains_free(&[domain], None)
            .map_err(|e| ApiError::conflict(format!("name: {name:?} is taken ({})", e.message)))
    }

    /// The image's name if it is free as a service name, else `<image>-<5 random>`.
    fn service_name_for(&self, image: &str) -> String {
        let base: String = image
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(MAX_SERVICE_NAME - 6)
            .collect::<String>()
            .trim_matches('-')
            .to_owned();
        let base = if base.is_empty() {
            "service".to_owned()
        } else {
            base
        };
        if self.check_service_name_free(&base).is_ok() {
            return base;
        }
        loop {
            // `generated_name` makes `<base>-<suffix>` names free among instances; a service
            // name must also be free among groups and domains.
            let name = self.generated_name(&base);
            if self.check_service_name_free(&name).is_ok() {
                return name;
            }
        }
    }

    /// Adds one container of service `id` made from its current spec, named `name` (the name
    /// of one it replaces) or else the lowest free `<service>-<n>` from `*next`: started when
    /// the service runs, else created only (`Init`). Returns its id.
    fn add_container(
        &mut self,
        id: Uuid,
        name: Option<String>,
        next: &mut u64,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Option<Uuid> {
        let g = self.groups.get(&id)?;
        let spec = g.service.as_ref()?;
        let name = name.unwrap_or_else(|| self.next_container_name(&g.name, next));
        let start = spec.run;
        let c = self.add_instance(spec.container(name), Some(id), None, start, false, now, fx);
        if !start {
            self.never_started(c, fx);
        }
        Some(c)
    }

    /// A container created but never started is `Init`, not stopped: its stopped-time autokill
    /// counts from its first stop, not from its creation.
    fn never_started(&mut self, id: Uuid, fx: &mut Vec<Effect>) {
        if let Some(i) = self.instances.get_mut(&id) {
            i.stopped_at = None;
            fx.push(Effect::Disarm(TimerKey::StoppedTime(id)));
        }
    }

    pub(super) fn patch_service(
        &mut self,
        r: &Ref,
        patch: ServicePatch,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_live_service(r)?;
        let Some(spec) = self.spec(id) else {
            return Err(ApiError::not_found(format!("no service {r}")));
        };
        if let Some(image) = &patch.image {
            self.check_image(image)?;
        }
        let autorestart = patch.autorestart.unwrap_or(spec.autorestart);
        let autodestroy = patch.autodestroy.unwrap_or(spec.autodestroy);
        check_policies(autorestart, autodestroy)?;
        let autokill = patch.autokill.map(|a| Autokill {
            num_requests: a.num_requests.unwrap_or(0),
            time: a.time.filter(|t| !t.is_zero()),
        });
        let autokill_changed = autokill.is_some();
        let policies_changed =
            patch.autorestart.is_some() || patch.autodestroy.is_some() || autokill_changed;
        let Some(spec) = self.spec_mut(id) else {
            return Err(ApiError::not_found(format!("no service {r}")));
        };
        if let Some(image) = patch.image
            && image != spec.image
        {
            spec.image = image;
            spec.synchronized = false;
        }
        if let Some(target) = patch.target {
            spec.target = target;
        }
        spec.autorestart = autorestart;
        spec.autodestroy = autodestroy;
        if let Some(a) = autokill {
            spec.autokill = a;
        }
        let autokill = spec.autokill;
        if policies_changed {
            // Every container takes the service's policies now, so they decide its next stop;
            // the instance PATCH is the one path that changes a policy (limits, reservations,
            // triggers that came due are all handled there).
            // The budgets only when the PATCH sets them: each container keeps the one drawn
            // for it at creation (`autokill.jitter`) through a change of other policies.
            let mut patches = vec![
                InstancePatch::RestartPolicy(autorestart),
                InstancePatch::Autodestroy(autodestroy),
            ];
            if autokill_changed {
                patches.push(InstancePatch::Autokill(AutokillSpec {
                    num_requests: Some(autokill.num_requests),
                    time: autokill.time,
                }));
            }
            for c in self.containers_of(id) {
                self.patch_instance(&Ref::Id(c), patches.clone(), now, fx)?;
            }
        }
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    pub(super) fn start_service(
        &mut self,
        r: &Ref,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_live_service(r)?;
        for c in self.containers_of(id) {
            let startable = self
                .instances
                .get(&c)
                .is_some_and(|i| i.state == InstanceState::Stopped && i.pending == Pending::None);
            if startable {
                self.start_instance(c, fx);
            }
        }
        if let Some(spec) = self.spec_mut(id) {
            spec.run = true;
            spec.started_at = Some(now);
            spec.transition = None;
        }
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    pub(super) fn stop_service(
        &mut self,
        r: &Ref,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_live_service(r)?;
        for c in self.containers_of(id) {
            // The instance stop decides for each state (a scheduled restart is cancelled too);
            // one that cannot be stopped (draining to its kill) goes its way.
            let _ = self.call(Call::StopInstance(Ref::Id(c)), now, fx);
        }
        if let Some(spec) = self.spec_mut(id) {
            spec.run = false;
            spec.stopped_at = Some(now);
            spec.transition = None;
        }
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    pub(super) fn scale_service(
        &mut self,
        r: &Ref,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_live_service(r)?;
        self.scale_to_target(id, now, fx)?;
        if let Some(spec) = self.spec_mut(id) {
            spec.transition = Some(Transition::Scaling);
        }
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    /// Adds containers, or deletes the highest-numbered ones, until there are `target`; a
    /// delete-locked one among those to delete refuses the whole call.
    fn scale_to_target(
        &mut self,
        id: Uuid,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<(), ApiError> {
        let target = self.spec(id).map_or(0, |s| s.target) as usize;
        let containers = self.containers_of(id);
        if containers.len() > target {
            let extra = &containers[target..];
            self.check_unlocked(extra)?;
            for c in extra {
                self.delete_instance(*c, None, fx);
            }
        } else {
            let mut next = 1;
            for _ in containers.len()..target {
                self.add_container(id, None, &mut next, now, fx);
            }
        }
        self.check_group(id, now, fx);
        Ok(())
    }

    pub(super) fn redeploy_service(
        &mut self,
        r: &Ref,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_live_service(r)?;
        let containers = self.containers_of(id);
        self.check_unlocked(&containers)?;
        if let Some(spec) = self.spec_mut(id) {
            spec.run = true;
            spec.synchronized = true;
            spec.deployed_at = Some(now);
            spec.started_at = Some(now);
            spec.transition = Some(Transition::Redeploying);
        }
        // Each new container takes the name of the one it replaces (free again once the old
        // one is being deleted), then the count is brought to the target.
        let target = self.spec(id).map_or(0, |s| s.target) as usize;
        for (n, c) in containers.iter().enumerate() {
            let name = self.instances.get(c).map(|i| i.name.to_string());
            self.delete_instance(*c, None, fx);
            if n < target
                && let Some(name) = name
            {
                self.add_container(id, Some(name), &mut 1, now, fx);
            }
        }
        self.scale_to_target(id, now, fx)?;
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    pub(super) fn terminate_service(
        &mut self,
        r: &Ref,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_service(r)?;
        if self.groups[&id].delete_lock {
            return Err(ApiError::conflict(format!("service {r} is delete-locked")));
        }
        let containers = self.containers_of(id);
        self.check_unlocked(&containers)?;
        for c in &containers {
            self.delete_instance(*c, None, fx);
        }
        if let Some(spec) = self.spec_mut(id) {
            spec.transition = Some(Transition::Terminating);
        }
        let reply = self.group_view(&self.groups[&id]);
        // Gone now if it has nothing left to wait for; else when its last container is.
        self.finish_terminating(id, now);
        Ok(Reply::Group(reply))
    }

    pub(super) fn redeploy_container(
        &mut self,
        r: &Ref,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let c = self.find_instance(r)?;
        let Some(old) = self.instances.get(&c) else {
            return Err(ApiError::not_found(format!("no container {r}")));
        };
        if old.delete_lock {
            return Err(ApiError::conflict(format!(
                "container {r} is delete-locked"
            )));
        }
        if matches!(old.pending, Pending::Delete(_)) {
            return Err(ApiError::conflict(format!(
                "container {r} is being terminated"
            )));
        }
        let group = old.group;
        let service = group.and_then(|g| self.spec(g));
        if service.is_some_and(|s| s.transition == Some(Transition::Terminating)) {
            return Err(ApiError::conflict(format!(
                "the service of container {r} is being terminated"
            )));
        }
        // From its service's current spec, or, outside a service, from its own.
        let spec_of = match service {
            Some(s) => s.container(old.name.to_string()),
            None => Spec {
                name: old.name.to_string(),
                image: old.image.clone(),
                memory_mb: old.memory_mb,
                // A new container: its budget is drawn anew from what was asked.
                autokill: old.asked_autokill(),
                restart_policy: old.restart_policy,
                autodestroy: old.autodestroy,
            },
        };
        self.delete_instance(c, None, fx);
        let new = self.add_instance(spec_of, group, None, true, false, now, fx);
        Ok(self.instance_reply(new))
    }

    // ---- hooks of the lifecycle ----------------------------------------------------------

    /// An instance is gone (its runtime delete finished): it is kept as a terminated container
    /// for a while, and a service being terminated goes once its last container has.
    pub(super) fn container_gone(&mut self, inst: &Instance, now: SystemTime) {
        if inst.state == InstanceState::Template {
            return;
        }
        let service = inst.group.filter(|g| self.spec(*g).is_some());
        let mut c = ContainerView::of(&self.instance_view(inst, 0));
        c.started_at = None;
        c.state = ContainerState::Terminated;
        c.terminated_at = Some(now);
        c.addr = None;
        self.tombstones.pending.push(Tomb::Container(c));
        if let Some(g) = service {
            self.finish_terminating(g, now);
        }
    }

    /// A service being terminated is removed once no container of it is left.
    fn finish_terminating(&mut self, id: Uuid, now: SystemTime) {
        let terminating = self
            .spec(id)
            .is_some_and(|s| s.transition == Some(Transition::Terminating));
        let left = self.instances.values().any(|i| i.group == Some(id));
        if terminating && !left {
            self.remove_group(id, now);
        }
    }

    /// Removes a group; a service is kept as terminated for a while.
    pub(super) fn remove_group(&mut self, id: Uuid, now: SystemTime) {
        let view = self
            .groups
            .get(&id)
            .filter(|g| g.service.is_some())
            .and_then(|g| self.service_view_of(g, &[]));
        if let Some(mut s) = view {
            s.state = ServiceState::Terminated;
            s.terminated_at = Some(now);
            s.containers.clear();
            self.tombstones.pending.push(Tomb::Service(s));
        }
        self.groups.remove(&id);
    }

    /// The batch is committed: its tombstones are published.
    pub(in crate::controller) fn tombstones_committed(&mut self) {
        self.tombstones.commit();
    }

    /// The batch is undone: so are its tombstones.
    pub(in crate::controller) fn tombstones_rolled_back(&mut self) {
        self.tombstones.pending.clear();
    }

    // ---- what is published ---------------------------------------------------------------

    /// The services, and the terminating and terminated containers: built from the services'
    /// member indexes and the instances being deleted, never a pass over every instance.
    pub(super) fn tutum_view(&self) -> TutumView {
        let deleting: Vec<&Instance> = self
            .deleting
            .iter()
            .filter_map(|id| self.instances.get(id))
            .collect();
        let mut services: Vec<ServiceView> = self
            .groups
            .values()
            .filter(|g| g.service.is_some())
            .filter_map(|g| {
                let members: Vec<&Instance> = self
                    .member_ids(g.id)
                    .iter()
                    .filter_map(|id| self.instances.get(id))
                    .chain(deleting.iter().copied().filter(|i| i.group == Some(g.id)))
                    .collect();
                self.service_view_of(g, &members)
            })
            .collect();
        services.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        let mut terminating: Vec<ContainerView> = deleting
            .iter()
            .map(|i| ContainerView::of(&self.instance_view(i, 0)))
            .collect();
        terminating.sort_by(|a, b| a.name.cmp(&b.name));
        TutumView {
            services,
            terminating,
            terminated: Arc::clone(&self.tombstones.published),
        }
    }

    /// Service `g` with its containers `members` (all of them, being deleted included).
    fn service_view_of(&self, g: &Group, members: &[&Instance]) -> Option<ServiceView> {
        let spec = g.service.as_ref()?;
        let mut members: Vec<&Instance> = members.to_vec();
        members.sort_by_key(|i| (index_of(&g.name, &i.name), Arc::clone(&i.name)));
        let states: Vec<ContainerState> = members
            .iter()
            .map(|i| ContainerState::of(i.state, i.stop_reason))
            .collect();
        Some(ServiceView {
            id: g.id,
            name: g.name.clone(),
            spec: spec.clone(),
            state: service_state(spec.transition, &states),
            domains: g.domains.clone(),
            containers: members.iter().map(|i| i.id).collect(),
            current: states
                .iter()
                .filter(|s| **s != ContainerState::Terminating)
                .count(),
            running: states
                .iter()
                .filter(|s| **s == ContainerState::Running)
                .count(),
            stopped: states
                .iter()
                .filter(|s| **s == ContainerState::Stopped)
                .count(),
            created_at: g.created_at,
            terminated_at: None,
            delete_lock: g.delete_lock,
        })
    }
}

/// A service's state from what is under way and its containers' states (Tutum's table): an
/// operation under way shows until no container is starting or being terminated any more.
pub fn service_state(
    transition: Option<Transition>,
    containers: &[ContainerState],
) -> ServiceState {
    let any = |s: ContainerState| containers.contains(&s);
    let settling = any(ContainerState::Starting) || any(ContainerState::Terminating);
    match transition {
        Some(Transition::Terminating) => return ServiceState::Terminating,
        Some(Transition::Redeploying) if settling => return ServiceState::Redeploying,
        Some(Transition::Scaling) if settling => return ServiceState::Scaling,
        _ => {}
    }
    let live: Vec<ContainerState> = containers
        .iter()
        .copied()
        .filter(|s| *s != ContainerState::Terminating)
        .collect();
    let running = live
        .iter()
        .filter(|s| **s == ContainerState::Running)
        .count();
    if live.is_empty() {
        ServiceState::NotRunning
    } else if live.iter().all(|s| *s == ContainerState::Init) {
        ServiceState::Init
    } else if live.contains(&ContainerState::Starting) {
        ServiceState::Starting
    } else if live.contains(&ContainerState::Stopping) {
        ServiceState::Stopping
    } else if running == live.len() {
        ServiceState::Running
    } else if running > 0 {
        ServiceState::PartlyRunning
    } else {
        ServiceState::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::Command;
    use super::*;
    use crate::store::{Change, Snapshot};
    use ContainerState as C;
    use ServiceState as S;

    /// A state on the embedded configuration (image `hello`), and a store of what it committed.
    struct Harness {
        state: State,
        store: Snapshot,
        now: SystemTime,
    }

    impl Harness {
        fn new() -> Harness {
            let config = crate::config::parse(crate::config::EMBEDDED, "<embedded>")
                .unwrap_or_else(|e| panic!("{e}"));
            Harness {
                state: State::new(&config, 1),
                store: Snapshot::default(),
                now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            }
        }

        /// Applies `cmd` and commits it, as the controller task does.
        fn apply(&mut self, cmd: Command) -> Vec<Effect> {
            let fx = self.state.apply(cmd, self.now);
            for change in self.state.changes() {
                match change {
                    Change::PutInstance(r) => {
                        self.store.instances.retain(|x| x.id != r.id);
                        self.store.instances.push(r);
                    }
                    Change::DeleteInstance(id) => self.store.instances.retain(|x| x.id != id),
                    Change::PutGroup(r) => {
                        self.store.groups.retain(|x| x.id != r.id);
                        self.store.groups.push(r);
                    }
                    Change::DeleteGroup(id) => self.store.groups.retain(|x| x.id != id),
                }
            }
            self.state.committed();
            fx
        }

        fn call(&mut self, call: Call) -> Result<Reply, ApiError> {
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            for e in self.apply(Command::Api(call, tx)) {
                if let Effect::Reply(to, r) = e {
                    let _ = to.send(*r);
                }
            }
            rx.try_recv().unwrap_or_else(|e| panic!("no reply: {e}"))
        }

        /// The runtime finished every delete it was asked for.
        fn deletes_done(&mut self, fx: Vec<Effect>) {
            for e in fx {
                if let Effect::Delete(id) = e {
                    self.apply(Command::Deleted { id, result: Ok(()) });
                }
            }
        }
    }

    fn service(h: &Harness, name: &str) -> ServiceView {
        h.state
            .tutum_view()
            .services
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    #[test]
    fn a_service_and_its_containers_survive_a_restart() {
        let mut h = Harness::new();
        let new = NewService {
            name: Some("web".into()),
            image: "hello".into(),
            target: 2,
            autorestart: RestartPolicy::OnFailure,
            autodestroy: Autodestroy::OnSuccess,
            autokill: AutokillSpec {
                num_requests: Some(5),
                time: Some(Duration::from_secs(30)),
            },
        };
        assert!(h.call(Call::CreateService(new)).is_ok());
        let before = service(&h, "web");
        assert_eq!(before.state, S::Init);
        assert_eq!(before.containers.len(), 2);
        // No stopped-time timer for a container that never ran.
        assert!(
            h.state
                .instances
                .values()
                .all(|i| i.stopped_at.is_none() && i.autokill.time.is_some())
        );
        let mut again = Harness::new();
        again.now = h.now + Duration::from_secs(5);
        again.state.recover(
            Snapshot {
                instances: h.store.instances.clone(),
                groups: h.store.groups.clone(),
            },
            again.now,
        );
        let after = service(&again, "web");
        assert_eq!(after.spec, before.spec);
        assert_eq!(after.containers, before.containers);
        assert_eq!(after.state, S::Init);
        let names: Vec<String> = again
            .state
            .instances
            .values()
            .map(|i| i.name.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, ["web-1", "web-2"]);
        assert_eq!(ServiceSpec::restore(after.spec.record()), after.spec);
    }

    /// With `autokill.jitter`, each container of a service draws its own budget from the
    /// service's `num_requests`; a PATCH of other policies keeps the drawn budgets, and a
    /// PATCH of the autokill policy sets exactly what it asks on every container.
    #[test]
    fn containers_draw_their_budgets_and_keep_them_through_other_patches() {
        let mut h = Harness::new();
        let mut config = crate::config::parse(crate::config::EMBEDDED, "<embedded>")
            .unwrap_or_else(|e| panic!("{e}"));
        config.autokill.jitter = 0.5;
        h.state = State::new(&config, 1);
        let new = NewService {
            name: Some("web".into()),
            image: "hello".into(),
            target: 20,
            autokill: AutokillSpec {
                num_requests: Some(100),
                time: None,
            },
            ..NewService::default()
        };
        assert!(h.call(Call::CreateService(new)).is_ok());
        let budgets = |h: &Harness| -> Vec<u64> {
            let mut b: Vec<(String, u64)> = h
                .state
                .instances
                .values()
                .map(|i| (i.name.to_string(), i.autokill.num_requests))
                .collect();
            b.sort();
            b.into_iter().map(|(_, n)| n).collect()
        };
        let drawn = budgets(&h);
        assert_eq!(drawn.len(), 20);
        assert!(drawn.iter().all(|n| (50..=100).contains(n)), "{drawn:?}");
        assert!(drawn.iter().any(|n| *n != drawn[0]), "{drawn:?}");
        let id = service(&h, "web").id;
        let patch = ServicePatch {
            autorestart: Some(RestartPolicy::OnFailure),
            ..ServicePatch::default()
        };
        assert!(h.call(Call::PatchService(Ref::Id(id), patch)).is_ok());
        assert_eq!(
            budgets(&h),
            drawn,
            "another policy's PATCH keeps the budgets"
        );
        let patch = ServicePatch {
            autokill: Some(AutokillSpec {
                num_requests: Some(100),
                time: None,
            }),
            ..ServicePatch::default()
        };
        assert!(h.call(Call::PatchService(Ref::Id(id), patch)).is_ok());
        assert_eq!(budgets(&h), vec![100; 20], "the autokill PATCH is exact");
    }

    #[test]
    fn a_store_written_before_services_loads() {
        let record = serde_json::json!({
            "id": Uuid::nil(), "name": "g", "domains": [], "time_ms": null,
            "delete_lock": false, "created_at": 1, "empty_since": null, "soft_limit": null,
            "hard_limit": null, "services": [], "from_config": false
        });
        let r: crate::store::GroupRecord =
            serde_json::from_value(record).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.service, None);
    }

    #[test]
    fn a_terminated_service_is_buried_once_its_containers_are_gone() {
        let mut h = Harness::new();
        let new = NewService {
            name: Some("job".into()),
            image: "hello".into(),
            target: 2,
            ..NewService::default()
        };
        assert!(h.call(Call::CreateService(new)).is_ok());
        let id = service(&h, "job").id;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let fx = h.apply(Command::Api(Call::TerminateService(Ref::Id(id)), tx));
        let mut deletes = Vec::new();
        for e in fx {
            match e {
                Effect::Reply(to, r) => {
                    let _ = to.send(*r);
                }
                other => deletes.push(other),
            }
        }
        assert!(matches!(rx.try_recv(), Ok(Ok(_))));
        assert_eq!(service(&h, "job").state, S::Terminating);
        assert!(h.state.tutum_view().terminated.services.is_empty());
        h.deletes_done(deletes);
        let view = h.state.tutum_view();
        assert!(view.services.iter().all(|s| s.name != "job"), "gone");
        assert_eq!(view.terminated.services.len(), 1);
        assert_eq!(view.terminated.services[0].state, S::Terminated);
        let buried: Vec<ContainerState> =
            view.terminated.containers.iter().map(|c| c.state).collect();
        assert_eq!(buried, [C::Terminated, C::Terminated]);
        assert!(
            h.store.groups.iter().all(|g| g.id != id),
            "and gone from the store"
        );
        // A name is free again once its service is gone.
        let new = NewService {
            name: Some("job".into()),
            image: "hello".into(),
            ..NewService::default()
        };
        assert!(h.call(Call::CreateService(new)).is_ok());
    }

    #[test]
    fn a_rolled_back_batch_buries_nothing() {
        let mut h = Harness::new();
        let new = NewService {
            name: Some("job".into()),
            image: "hello".into(),
            target: 0,
            ..NewService::default()
        };
        assert!(h.call(Call::CreateService(new)).is_ok());
        let id = service(&h, "job").id;
        let (tx, _rx) = tokio::sync::oneshot::channel();
        h.state
            .apply(Command::Api(Call::TerminateService(Ref::Id(id)), tx), h.now);
        h.state.rollback();
        // The next batch's commit publishes its own tombstones only.
        h.state.committed();
        let view = h.state.tutum_view();
        assert!(view.terminated.services.is_empty());
        assert_eq!(view.services.len(), 1, "the service is back");
    }

    #[test]
    fn service_states_follow_tutums_table() {
        assert_eq!(service_state(None, &[]), S::NotRunning);
        assert_eq!(service_state(None, &[C::Init, C::Init]), S::Init);
        assert_eq!(service_state(None, &[C::Running, C::Starting]), S::Starting);
        assert_eq!(service_state(None, &[C::Running, C::Running]), S::Running);
        assert_eq!(
            service_state(None, &[C::Running, C::Stopped]),
            S::PartlyRunning
        );
        assert_eq!(service_state(None, &[C::Stopped, C::Init]), S::Stopped);
        assert_eq!(service_state(None, &[C::Running, C::Stopping]), S::Stopping);
        assert_eq!(
            service_state(None, &[C::Running, C::Terminating]),
            S::Running
        );
        assert_eq!(
            service_state(Some(Transition::Redeploying), &[C::Running, C::Terminating]),
            S::Redeploying
        );
        // An operation that has settled no longer shows.
        assert_eq!(
            service_state(Some(Transition::Scaling), &[C::Running]),
            S::Running
        );
        assert_eq!(
            service_state(Some(Transition::Terminating), &[]),
            S::Terminating
        );
    }

    #[test]
    fn container_states_in_tutums_words() {
        assert_eq!(C::of(InstanceState::Stopped, None), C::Init);
        assert_eq!(
            C::of(InstanceState::Stopped, Some(StopReason::Exited)),
            C::Stopped
        );
        assert_eq!(C::of(InstanceState::Draining, None), C::Running);
        assert_eq!(C::of(InstanceState::Deleted, None), C::Terminating);
    }

    #[test]
    fn container_numbers_order_containers() {
        assert_eq!(index_of("web", "web-2"), 2);
        assert_eq!(index_of("web", "web-10"), 10);
        assert_eq!(index_of("web", "web2"), u64::MAX);
        assert_eq!(index_of("web", "other-1"), u64::MAX);
    }

    #[test]
    fn the_graveyard_keeps_one_entry_per_resource_and_forgets_old_ones() {
        let mut list: VecDeque<(Uuid, SystemTime)> = VecDeque::new();
        let a = Uuid::new_v4();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        bury(&mut list, (a, t0), |x| x.0, |x| Some(x.1));
        bury(&mut list, (a, t0), |x| x.0, |x| Some(x.1));
        assert_eq!(list.len(), 1);
        let b = Uuid::new_v4();
        bury(
            &mut list,
            (b, t0 + TERMINATED_RETENTION + Duration::from_secs(1)),
            |x| x.0,
            |x| Some(x.1),
        );
        assert_eq!(list.iter().map(|x| x.0).collect::<Vec<_>>(), vec![b]);
    }
}
