//! What the admin API asks of the controller: typed, already-validated requests, and the answers.
//!
//! The HTTP layer (`admin::v1`) parses and checks the wire shapes (unknown fields, types, enum
//! values, ranges) and names the offending field itself; what only the controller can judge
//! (a name already taken, a locked resource, an unknown reference, an instance in the wrong state)
//! comes back as an [`ApiError`]. Every call is a [`Command::Api`](super::Command::Api) applied in
//! order with everything else, and is answered only once its change is published.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Command, GroupView, InstanceState, InstanceView};
use crate::config::{Autodestroy, RestartPolicy};

/// The most domains a service group has: domains are checked against every other group's and
/// every instance's host name, so a bound keeps each check short.
pub const MAX_GROUP_DOMAINS: usize = 100;

/// A reference to a resource, by UUID or by name (as the Unikraft API allows both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// By UUID.
    Id(Uuid),
    /// By name.
    Name(String),
}

impl Ref {
    /// A path segment or field value: a UUID if it parses as one, else a name.
    pub fn parse(s: &str) -> Ref {
        match Uuid::parse_str(s) {
            Ok(id) => Ref::Id(id),
            Err(_) => Ref::Name(s.to_owned()),
        }
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Id(id) => write!(f, "{id}"),
            Ref::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// An autokill policy as the API carries it: a field left out is `None` ("not set").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutokillSpec {
    /// Delete after this many requests; 0 disables.
    pub num_requests: Option<u64>,
    /// Delete after being stopped (instances), unused (templates) or empty (groups) this long;
    /// zero disables.
    pub time: Option<Duration>,
}

/// `POST /v1/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewInstance {
    /// Unique name; generated when absent.
    pub name: Option<String>,
    /// Image key (docker: or image reference); required unless `template` is given.
    pub image: Option<String>,
    /// Memory limit in MiB (docker); `None` = the template's, or none.
    pub memory_mb: Option<u64>,
    /// Clone this template: its spec, autokill included, with the fields above and below overriding.
    pub template: Option<Ref>,
    /// Join this service group, or a new one made for it.
    pub service_group: Option<GroupChoice>,
    /// Autokill policy.
    pub autokill: Option<AutokillSpec>,
    /// Restart policy.
    pub restart_policy: Option<RestartPolicy>,
    /// Autodestroy (`features: ["delete-on-stop"]` arrives here as `Always`).
    pub autodestroy: Option<Autodestroy>,
    /// Start it right away (the Unikraft default); otherwise it is created stopped.
    pub autostart: bool,
}

/// The service group of a new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChoice {
    /// An existing group.
    Existing(Ref),
    /// A group made for this instance (Unikraft's ephemeral group): its name is generated and
    /// it is deleted once empty.
    New(NewGroup),
}

/// `POST /v1/instances/templates`: turn a stopped instance into a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTemplate {
    /// The stopped instance.
    pub instance: Ref,
    /// The template's unused-time autokill; `None` or zero: kept until deleted.
    pub autokill_time: Option<Duration>,
}

/// `POST /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewGroup {
    /// Unique name; generated when absent.
    pub name: Option<String>,
    /// Host names, already resolved against the base domain and lower-cased.
    pub domains: Vec<String>,
    /// Empty-time autokill; `None` or zero: never.
    pub autokill_time: Option<Duration>,
    /// Accepted and shown (the proxy does not scale).
    pub soft_limit: Option<u64>,
    /// Accepted and shown.
    pub hard_limit: Option<u64>,
    /// The `services` port mappings, accepted and shown as given.
    pub services: serde_json::Value,
}

/// One validated `PATCH` item for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstancePatch {
    /// `{"prop":"autokill","op":"set","value":{...}}`: replaces the whole policy (absent = 0).
    Autokill(AutokillSpec),
    /// `{"prop":"delete_lock","op":"set","value":bool}`.
    DeleteLock(bool),
    /// `{"prop":"restart_policy","op":"set","value":"never"|"always"|"on-failure"}`.
    RestartPolicy(RestartPolicy),
    /// `{"prop":"autodestroy","op":"set","value":"OFF"|...}`, or `features` add/del `delete-on-stop`.
    Autodestroy(Autodestroy),
}

/// One validated `PATCH` item for a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePatch {
    /// `autokill` set: the unused time (`time_ms`).
    Autokill(Option<Duration>),
    /// `delete_lock` set.
    DeleteLock(bool),
}

/// One validated `PATCH` item for a service group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPatch {
    /// `autokill` set: the empty time (`time_ms`).
    Autokill(Option<Duration>),
    /// `delete_lock` set.
    DeleteLock(bool),
    /// `domains` add (resolved names).
    AddDomains(Vec<String>),
    /// `domains` del (resolved names).
    RemoveDomains(Vec<String>),
    /// `soft_limit` set.
    SoftLimit(Option<u64>),
    /// `hard_limit` set.
    HardLimit(Option<u64>),
    /// `services` set: the port mappings (a JSON array, checked).
    SetServices(serde_json::Value),
    /// `services` add: mappings appended (those already there are kept once).
    AddServices(serde_json::Value),
    /// `services` del: mappings removed.
    RemoveServices(serde_json::Value),
}

/// Something the API asks; each variant names its answer type in [`Reply`].
#[derive(Debug)]
pub enum Call {
    /// Create (and by default start) an instance, possibly as a clone of a template.
    CreateInstance(NewInstance),
    /// Start a stopped instance.
    StartInstance(Ref),
    /// Stop a running instance (a user stop: never restarted).
    StopInstance(Ref),
    /// Stop a running instance once its requests in flight have finished (at most this long):
    /// it takes no new request meanwhile.
    StopInstanceDraining(Ref, std::time::Duration),
    /// Delete an instance (409 when delete-locked).
    DeleteInstance(Ref),
    /// Apply PATCH items to an instance, all or nothing.
    PatchInstance(Ref, Vec<InstancePatch>),
    /// Make a template from a stopped instance.
    CreateTemplate(NewTemplate),
    /// Delete a template (409 when delete-locked).
    DeleteTemplate(Ref),
    /// Apply PATCH items to a template, all or nothing.
    PatchTemplate(Ref, Vec<TemplatePatch>),
    /// Create a service group.
    CreateGroup(NewGroup),
    /// Delete a service group (409 when delete-locked or not empty).
    DeleteGroup(Ref),
    /// Apply PATCH items to a service group, all or nothing.
    PatchGroup(Ref, Vec<GroupPatch>),
    /// Create a Tutum service: its group and its containers, created but not started (`Init`).
    /// Answered with the service's group; `/api/v1` reads the service from the view.
    CreateService(NewService),
    /// Change a service, all or nothing: policies reach every container at once (and so apply
    /// at its next stop), the target at the next scale, the image at the next redeploy.
    PatchService(Ref, ServicePatch),
    /// Start every stopped (or never started) container of a service.
    StartService(Ref),
    /// Stop every container of a service (a user stop: never restarted).
    StopService(Ref),
    /// Add or remove containers until there are `target_num_containers`.
    ScaleService(Ref),
    /// Replace every container with a new one of the current spec, `target_num_containers` of them.
    RedeployService(Ref),
    /// Delete every container, then the service (409 when it or a container is delete-locked).
    TerminateService(Ref),
    /// Replace one container with a new one of the same name, made from its service's spec (or,
    /// outside a service, from its own).
    RedeployContainer(Ref),
    /// Several calls applied in order in one command, answered with [`Reply::Batch`]: the
    /// whole batch is applied even if the client that sent it goes away.
    Batch(Vec<Call>),
}

/// The answer to a [`Call`]: the resource as it is after the change (templates are instances in
/// state `template`; a deleted resource is shown with state `deleted`).
#[derive(Debug)]
pub enum Reply {
    /// An instance or template.
    Instance(InstanceView),
    /// An instance after a start, stop or delete, with the state it had before.
    Moved(InstanceView, InstanceState),
    /// A service group.
    Group(GroupView),
    /// The answers to a [`Call::Batch`], one per call in order.
    Batch(Vec<Result<Reply, ApiError>>),
}

/// Why the controller refused a call. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status: 400, 404 or 409 (500 for an internal failure).
    pub status: u16,
    /// What is wrong, naming the field or resource.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            message: message.into(),
        }
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 409,
            message: message.into(),
        }
    }
}

fn internal(message: &str) -> ApiError {
    ApiError {
        status: 500,
        message: message.to_owned(),
    }
}

/// Where the controller sends its answer.
pub type ReplyTo = oneshot::Sender<Result<Reply, ApiError>>;

/// The admin side's handle on the controller.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// A handle sending on the controller's command channel.
    pub fn new(tx: mpsc::UnboundedSender<Command>) -> Handle {
        Handle { tx }
    }

    /// Sends `calls` as one [`Call::Batch`] and waits for their answers, in order. The batch
    /// is on the controller's queue before the first `await`: dropping the future (a client that
    /// goes away) leaves it to be applied whole.
    pub async fn call_all(&self, calls: Vec<Call>) -> Vec<Result<Reply, ApiError>> {
        let n = calls.len();
        match self.call(Call::Batch(calls)).await {
            Ok(Reply::Batch(replies)) if replies.len() == n => replies,
            Ok(_) => (0..n)
                .map(|_| Err(internal("the controller answered a batch out of shape")))
                .collect(),
            Err(err) => (0..n).map(|_| Err(err.clone())).collect(),
        }
    }

    /// Sends `call` and waits for the answer, which comes once the change is published.
    pub async fn call(&self, call: Call) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Api(call, reply))
            .map_err(|_| ApiError {
                status: 503,
                message: "the controller is shutting down".into(),
            })?;
        answer.await.map_err(|_| ApiError {
            status: 503,
            message: "the controller is shutting down".into(),
        })?
    }
}

/// `POST /api/v1/service/`: a Tutum service, already checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewService {
    /// Unique name; made from the image when absent.
    pub name: Option<String>,
    /// Image key.
    pub image: String,
    /// How many containers to keep (`target_num_containers`).
    pub target: u32,
    /// Tutum's `autorestart`: each container's restart policy.
    pub autorestart: RestartPolicy,
    /// Each container's autodestroy.
    pub autodestroy: Autodestroy,
    /// Each container's autokill policy.
    pub autokill: AutokillSpec,
}

/// `PATCH /api/v1/service/{uuid}/`: the fields given change, the others stay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicePatch {
    /// New image, used from the next redeploy (or scale) on.
    pub image: Option<String>,
    /// New `target_num_containers`, reached at the next scale or redeploy.
    pub target: Option<u32>,
    /// New `autorestart`, given to every container.
    pub autorestart: Option<RestartPolicy>,
    /// New autodestroy, given to every container.
    pub autodestroy: Option<Autodestroy>,
    /// New autokill policy (replaces the whole policy), given to every container.
    pub autokill: Option<AutokillSpec>,
}
