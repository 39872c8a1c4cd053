//! `/v1/instances`: create (also as a clone of a template, or preparing one), list, get, patch,
//! delete, start, stop, wait and log.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::Deserialize;
use serde::de::IgnoredAny;
use uuid::Uuid;

use super::services::{self, Limit, RawDomain, RawService};
use super::wait::{self, Want};
use super::wire::{
    self, Batch, Feature, Item, Label, Op, RawAutokill, RawPatch, RawTimeAutokill, WireAutodestroy,
    WireRestartPolicy,
};
use super::{Action, AdminState, Resource};
use crate::config::{Autodestroy, RestartPolicy};
use crate::controller::api::{
    ApiError, Call, GroupChoice, InstancePatch, NewInstance, NewTemplate, Ref,
};

/// `memory_mb` bounds: the container engines refuse less than 6 MiB; 1 TiB catches a unit mix-up.
const MIN_MEMORY_MB: u64 = 6;
const MAX_MEMORY_MB: u64 = 1 << 20;

/// Unikraft Cloud fields autokill has no counterpart for, each refused by name with why.
const UNSUPPORTED: [(&str, &str); 11] = [
    (
        "volumes",
        "volumes are a Unikraft Cloud feature; autokill instances have none",
    ),
    (
        "roms",
        "ROMs are a Unikraft Cloud feature; autokill instances have none",
    ),
    (
        "scale_to_zero",
        "scale-to-zero is a Unikraft Cloud feature autokill does not have",
    ),
    (
        "plugins",
        "plugins are a Unikraft Cloud feature autokill does not have",
    ),
    (
        "schedules",
        "schedules are a Unikraft Cloud feature autokill does not have",
    ),
    (
        "args",
        "an image's command is set in runtime.images of the configuration",
    ),
    (
        "env",
        "an image's environment is set in runtime.images of the configuration",
    ),
    ("vcpus", "autokill sets no CPU limit"),
    ("tags", "autokill resources carry no tags"),
    ("annotations", "autokill resources carry no annotations"),
    ("sched_priority", "autokill has no scheduling priorities"),
];

/// Refuses, naming it, the first of Unikraft's fields autokill has no counterpart for.
fn check_unsupported(given: [bool; 11], prefix: &str) -> Result<(), ApiError> {
    match given.iter().position(|g| *g) {
        Some(i) => {
            let (field, why) = UNSUPPORTED[i];
            Err(wire::bad(
                &format!("{prefix}{field}"),
                format!("not supported: {why}"),
            ))
        }
        None => Ok(()),
    }
}

/// A `POST /v1/instances` item.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewInstance {
    /// Unique name; generated when left out.
    name: Option<Label>,
    /// Image key (`runtime.images`), or `{"url", "pull_policy"}`; required unless `template`
    /// is given.
    image: Option<RawImage>,
    /// Clone this template, or prepare it first.
    template: Option<RawTemplateChoice>,
    /// Join this existing service group, or make one for this instance.
    service_group: Option<RawGroupChoice>,
    autokill: Option<RawAutokill>,
    restart_policy: Option<WireRestartPolicy>,
    autodestroy: Option<WireAutodestroy>,
    /// `["delete-on-stop"]` is autodestroy `ALWAYS`.
    features: Option<Vec<Feature>>,
    /// Start right away; Unikraft's default is not to.
    autostart: Option<bool>,
    /// Unikraft: extra copies. Only 0 (none) is supported; accepted because SDKs send it.
    replicas: Option<u64>,
    /// Wait this long (seconds) for the instance to run before answering; `-1`: as long as
    /// the server allows.
    timeout_s: Option<i64>,
    /// The same in milliseconds (Unikraft's older field).
    wait_timeout_ms: Option<i64>,
    /// Memory limit in MiB; the docker runtime enforces it, the process runtime refuses it.
    memory_mb: Option<u64>,
    // Unikraft's fields without a counterpart here (see `UNSUPPORTED`), refused by name.
    volumes: Option<IgnoredAny>,
    roms: Option<IgnoredAny>,
    scale_to_zero: Option<IgnoredAny>,
    plugins: Option<IgnoredAny>,
    schedules: Option<IgnoredAny>,
    args: Option<IgnoredAny>,
    env: Option<IgnoredAny>,
    vcpus: Option<IgnoredAny>,
    tags: Option<IgnoredAny>,
    annotations: Option<IgnoredAny>,
    sched_priority: Option<IgnoredAny>,
}

/// `image`: an image key, or Unikraft's `{"url", "pull_policy"}` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawImage {
    Key(String),
    Spec(RawImageSpec),
}

/// `{"url", "pull_policy"}`. `pull_policy` is checked and has no effect (the process runtime
/// pulls nothing; the docker runtime pulls an image it does not have, once); credentials and
/// headers are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageSpec {
    url: String,
    pull_policy: Option<PullPolicy>,
    credentials: Option<IgnoredAny>,
    headers: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// `template`: `{"uuid"|"name"}` of a template to clone, or, with `"prepare": true`, a template
/// to make (from `create_args`) unless it exists, then clone.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplateChoice {
    uuid: Option<Uuid>,
    name: Option<String>,
    prepare: Option<bool>,
    create_args: Option<Box<RawNewInstance>>,
    prepare_timeout_s: Option<i64>,
    autokill: Option<RawTimeAutokill>,
}

/// `service_group`: `{"uuid"|"name"}` of an existing group, or the `services`/`domains` (and
/// limits) of a group made for this instance.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupChoice {
    uuid: Option<Uuid>,
    name: Option<String>,
    domains: Option<Vec<RawDomain>>,
    services: Option<Vec<RawService>>,
    soft_limit: Option<Limit>,
    hard_limit: Option<Limit>,
}

/// A create request, checked: the calls it takes (a prepare makes the template first), and
/// the wait after them.
struct Create {
    calls: Vec<Call>,
    name: Option<String>,
    wait: Option<Duration>,
}

fn check_create(raw: RawNewInstance, prefix: &str, state: &AdminState) -> Result<Create, ApiError> {
    let field = |name: &str| format!("{prefix}{name}");
    check_unsupported(
        [
            raw.volumes.is_some(),
            raw.roms.is_some(),
            raw.scale_to_zero.is_some(),
            raw.plugins.is_some(),
            raw.schedules.is_some(),
            raw.args.is_some(),
            raw.env.is_some(),
            raw.vcpus.is_some(),
            raw.tags.is_some(),
            raw.annotations.is_some(),
            raw.sched_priority.is_some(),
        ],
        prefix,
    )?;
    if let Some(Label(name)) = &raw.name
        && crate::config::RESERVED_NAMES.contains(&name.as_str())
    {
        return Err(wire::bad(
            &field("name"),
            format!("{name:?} is reserved: it is a path segment of /v1/instances"),
        ));
    }
    let image = match raw.image {
        Some(RawImage::Key(key)) => Some(key),
        Some(RawImage::Spec(spec)) => {
            if spec.credentials.is_some() || spec.headers.is_some() {
                return Err(wire::bad(
                    &field("image"),
                    "not supported: credentials and headers (autokill pulls only public images)",
                ));
            }
            // Every policy means: the image there is, else (docker) pulled once.
            let _ = spec.pull_policy;
            Some(spec.url)
        }
        None => None,
    };
    match &image {
        Some(image) if image.trim().is_empty() => {
            return Err(wire::bad(&field("image"), "empty image name"));
        }
        None if raw.template.is_none() => {
            return Err(wire::bad(
                &field("image"),
                "required (unless \"template\" is given)",
            ));
        }
        _ => {}
    }
    if let Some(mb) = raw.memory_mb
        && !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb)
    {
        return Err(wire::bad(
            &field("memory_mb"),
            format!(
                "{mb} is out of range: from {MIN_MEMORY_MB} (the engines' least) to \
                 {MAX_MEMORY_MB} MiB"
            ),
        ));
    }
    if raw.replicas.is_some_and(|n| n > 0) {
        return Err(wire::bad(
            &field("replicas"),
            "not supported: create each instance with its own request",
        ));
    }
    let mut autodestroy = raw.autodestroy.map(|a| a.0);
    if let Some(features) = &raw.features {
        if features.contains(&Feature::ScaleToZero) {
            return Err(wire::bad(
                &field("features"),
                "not supported: scale-to-zero is a Unikraft Cloud feature autokill does not have",
            ));
        }
        if features.contains(&Feature::DeleteOnStop) {
            match autodestroy {
                None | Some(Autodestroy::Always) => autodestroy = Some(Autodestroy::Always),
                Some(other) => {
                    return Err(wire::bad(
                        &field("features"),
                        format!(
                            "\"delete-on-stop\" means autodestroy ALWAYS, but autodestroy is {}",
                            wire::autodestroy_name(other)
                        ),
                    ));
                }
            }
        }
    }
    let restart_policy = raw.restart_policy.map(|p| p.0);
    // SPEC: restart first, then autodestroy; an instance always restarted is never left stopped
    // for autodestroy to act on, so the combination is refused rather than half-honoured.
    if restart_policy == Some(RestartPolicy::Always)
        && let Some(a) = autodestroy
        && a != Autodestroy::Off
    {
        let which = if raw.autodestroy.is_some() {
            "autodestroy"
        } else {
            "features"
        };
        return Err(wire::bad(
            &field(which),
            format!(
                "{} cannot be combined with restart_policy \"always\" (an instance that is \
                 always restarted is never left stopped to be destroyed); use autodestroy OFF",
                wire::autodestroy_name(a)
            ),
        ));
    }
    let autostart = raw.autostart.unwrap_or(false);
    let wait = wait::timeout(
        raw.timeout_s,
        raw.wait_timeout_ms,
        prefix,
        "wait_timeout_ms",
    )?;
    if wait.is_some() && !autostart {
        let which = if raw.timeout_s.is_some() {
            "timeout_s"
        } else {
            "wait_timeout_ms"
        };
        return Err(wire::bad(&field(which), "only with \"autostart\": true"));
    }
    let service_group = match raw.service_group {
        None => None,
        Some(g) => Some(group_choice(
            g,
            &field("service_group"),
            &state.base_domain,
        )?),
    };
    let mut calls = Vec::new();
    let template = match raw.template {
        None => None,
        Some(t) => Some(template_choice(t, &field("template"), state, &mut calls)?),
    };
    let name = raw.name.map(|l| l.0);
    calls.push(Call::CreateInstance(NewInstance {
        name: name.clone(),
        image,
        template,
        service_group,
        autokill: raw.autokill.as_ref().map(RawAutokill::spec),
        restart_policy,
        autodestroy,
        autostart,
        memory_mb: raw.memory_mb,
    }));
    Ok(Create { calls, name, wait })
}

fn group_choice(
    g: RawGroupChoice,
    field: &str,
    base_domain: &str,
) -> Result<GroupChoice, ApiError> {
    let new = g.domains.is_some()
        || g.services.is_some()
        || g.soft_limit.is_some()
        || g.hard_limit.is_some();
    if !new {
        return wire::one_ref(g.uuid, g.name.as_deref(), field).map(GroupChoice::Existing);
    }
    if g.uuid.is_some() || g.name.is_some() {
        return Err(wire::bad(
            field,
            "give either the uuid or name of an existing group, or the services and domains \
             of a new one, not both",
        ));
    }
    services::new_group(
        None,
        g.domains.as_deref().unwrap_or_default(),
        g.services.as_deref(),
        (g.soft_limit, g.hard_limit),
        &format!("{field}."),
        base_domain,
    )
    .map(GroupChoice::New)
}

/// The template to clone; with `prepare`, pushes the calls that make it first (unless it
/// exists): the source instance from `create_args` (stopped, named as the template), and the
/// template made of it.
fn template_choice(
    t: RawTemplateChoice,
    field: &str,
    state: &AdminState,
    calls: &mut Vec<Call>,
) -> Result<Ref, ApiError> {
    let target = wire::one_ref(t.uuid, t.name.as_deref(), field)?;
    if !t.prepare.unwrap_or(false) {
        if t.create_args.is_some() || t.prepare_timeout_s.is_some() || t.autokill.is_some() {
            return Err(wire::bad(
                field,
                "create_args, prepare_timeout_s and autokill are only taken with \"prepare\": true",
            ));
        }
        return Ok(target);
    }
    let Ref::Name(name) = &target else {
        return Err(wire::bad(
            &format!("{field}.name"),
            "a template to prepare is named, not given by uuid",
        ));
    };
    crate::config::check_name(name).map_err(|e| wire::bad(&format!("{field}.name"), e))?;
    // The preparation is synchronous here; the timeout is taken and has nothing to wait for.
    wait::timeout(
        t.prepare_timeout_s,
        None,
        &format!("{field}."),
        "prepare_timeout_s",
    )?;
    let exists = state
        .published
        .view
        .load()
        .instances
        .iter()
        .any(|i| *i.name == **name);
    if exists {
        return Ok(target);
    }
    let Some(args) = t.create_args else {
        return Err(wire::bad(
            &format!("{field}.create_args"),
            "required to prepare a template that does not exist",
        ));
    };
    let mut source = *args;
    source.name = Some(Label(name.clone()));
    source.autostart = Some(false);
    let prepared = check_create(source, &format!("{field}.create_args."), state)?;
    if prepared.wait.is_some() {
        return Err(wire::bad(
            &format!("{field}.create_args"),
            "a template's source is not started, so it takes no timeout",
        ));
    }
    calls.extend(prepared.calls);
    calls.push(Call::CreateTemplate(NewTemplate {
        instance: target.clone(),
        autokill_time: t.autokill.as_ref().and_then(RawTimeAutokill::time),
    }));
    Ok(target)
}

/// `POST /v1/instances`: one object or an array; all created in one batch, each answered on
/// its own (a prepared template's steps answer as the clone they make).
pub async fn create(State(state): State<AdminState>, body: Bytes) -> Response {
    let batch: Batch<RawNewInstance> = match wire::parse_batch(&body) {
        Ok(batch) => batch,
        Err(err) => return wire::api_error(err),
    };
    let single = batch.single;
    let mut creates = Vec::with_capacity(batch.items.len());
    for (index, raw) in batch.items.into_iter().enumerate() {
        let prefix = wire::item_prefix(single, index);
        match check_create(raw, &prefix, &state) {
            Ok(create) => creates.push(create),
            Err(err) => return wire::api_error(err),
        }
    }
    let mut calls = Vec::new();
    let mut steps = Vec::with_capacity(creates.len());
    for create in creates {
        steps.push((create.calls.len(), create.name, create.wait));
        calls.extend(create.calls);
    }
    let mut results = super::call_all(&state, calls).await.into_iter();
    let mut items = Vec::with_capacity(steps.len());
    for (n, name, wait) in steps {
        // The first refusal among an item's steps, else the last step's answer (the instance).
        let mut result = None;
        for step in results.by_ref().take(n) {
            if !matches!(result, Some(Err(_))) {
                result = Some(step);
            }
        }
        let result = result.unwrap_or_else(|| Err(ApiError::bad_request("nothing to create")));
        let item = match (result, wait) {
            (Ok(shown), Some(wait)) => {
                match shown["uuid"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    Some(id) => wait::until(&state, id, shown, Want::Running, wait).await,
                    None => Item::new(Ok(shown)),
                }
            }
            (result, _) => Item::new(result),
        };
        items.push(match name {
            Some(name) => item.echo_ref(&Ref::Name(name)),
            None => item,
        });
    }
    wire::answer("instances", single, items)
}

/// A `PUT /v1/instances/start` item (or the path form's body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStart {
    uuid: Option<Uuid>,
    name: Option<String>,
    /// Wait this long (seconds) for the instance to run; `-1`: as long as allowed.
    timeout_s: Option<i64>,
    /// The same in milliseconds.
    wait_timeout_ms: Option<i64>,
}

impl Action for RawStart {
    fn target(&self) -> (Option<Uuid>, Option<&str>) {
        (self.uuid, self.name.as_deref())
    }
    fn wait(&self, prefix: &str) -> Result<Option<(Want, Duration)>, ApiError> {
        Ok(wait::timeout(
            self.timeout_s,
            self.wait_timeout_ms,
            prefix,
            "wait_timeout_ms",
        )?
        .map(|w| (Want::Running, w)))
    }
}

/// A `PUT /v1/instances/stop` item (or the path form's body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    uuid: Option<Uuid>,
    name: Option<String>,
    /// Stop at once. A stop is always SIGTERM, then SIGKILL after `runtime.stop_grace`; there
    /// is nothing gentler to skip, so `force` changes nothing.
    force: Option<bool>,
    /// Drain before stopping: take no new request and let those in flight finish, at most
    /// this long (0: stop at once).
    drain_timeout_ms: Option<i64>,
}

impl Action for RawStop {
    fn target(&self) -> (Option<Uuid>, Option<&str>) {
        (self.uuid, self.name.as_deref())
    }
    fn wait(&self, prefix: &str) -> Result<Option<(Want, Duration)>, ApiError> {
        let _ = self.force;
        match self.drain_timeout_ms {
            Some(ms) if !(0..=MAX_DRAIN_MS).contains(&ms) => Err(wire::bad(
                &format!("{prefix}drain_timeout_ms"),
                format!("{ms} is out of range (0 to {MAX_DRAIN_MS})"),
            )),
            _ => Ok(None),
        }
    }
    fn call(&self, target: Ref, make: fn(Ref) -> Call) -> Call {
        match self.drain_timeout_ms {
            Some(ms) if ms > 0 => {
                Call::StopInstanceDraining(target, Duration::from_millis(ms.unsigned_abs()))
            }
            _ => make(target),
        }
    }
}

/// The longest drain a stop may ask for: an hour.
const MAX_DRAIN_MS: i64 = 3_600_000;

/// A `DELETE /v1/instances` item (or the path form's body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelete {
    uuid: Option<Uuid>,
    name: Option<String>,
    /// Wait this long (seconds) for the instance to be gone; `-1`: as long as allowed.
    timeout_s: Option<i64>,
}

impl Action for RawDelete {
    fn target(&self) -> (Option<Uuid>, Option<&str>) {
        (self.uuid, self.name.as_deref())
    }
    fn wait(&self, prefix: &str) -> Result<Option<(Want, Duration)>, ApiError> {
        Ok(wait::timeout(self.timeout_s, None, prefix, "")?
            .map(|w| (Want::State(crate::controller::InstanceState::Deleted), w)))
    }
}

/// `GET /v1/instances`: every instance but templates (or those a body `[{"uuid"|"name"}]` names).
pub async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    super::list(&state, query.as_deref(), &body, Resource::Instance)
}

/// `GET /v1/instances/{uuid-or-name}`.
pub async fn get(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    super::get_one(&state, &id, Resource::Instance)
}

/// `DELETE /v1/instances/{uuid-or-name}`.
pub async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act::<RawDelete>(
        &state,
        Some(&id),
        &body,
        Resource::Instance,
        Call::DeleteInstance,
    )
    .await
}

/// `DELETE /v1/instances` with `[{"uuid"|"name"}]`.
pub async fn delete_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act::<RawDelete>(
        &state,
        None,
        &body,
        Resource::Instance,
        Call::DeleteInstance,
    )
    .await
}

/// `PUT /v1/instances/{uuid-or-name}/start`.
pub async fn start(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act::<RawStart>(
        &state,
        Some(&id),
        &body,
        Resource::Instance,
        Call::StartInstance,
    )
    .await
}

/// `PUT /v1/instances/start` with `[{"uuid"|"name"}]`.
pub async fn start_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act::<RawStart>(&state, None, &body, Resource::Instance, Call::StartInstance).await
}

/// `PUT /v1/instances/{uuid-or-name}/stop`.
pub async fn stop(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act::<RawStop>(
        &state,
        Some(&id),
        &body,
        Resource::Instance,
        Call::StopInstance,
    )
    .await
}

/// `PUT /v1/instances/stop` with `[{"uuid"|"name"}]`.
pub async fn stop_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act::<RawStop>(&state, None, &body, Resource::Instance, Call::StopInstance).await
}

/// `PATCH /v1/instances/{uuid-or-name}`: one item or an array, applied all or nothing.
pub async fn patch(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::patch(
        &state,
        Some(&id),
        &body,
        Resource::Instance,
        convert_patch,
        Call::PatchInstance,
    )
    .await
}

/// `PATCH /v1/instances`: items naming their instance with `uuid` or `name`.
pub async fn patch_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::patch(
        &state,
        None,
        &body,
        Resource::Instance,
        convert_patch,
        Call::PatchInstance,
    )
    .await
}

const INSTANCE_PROPS: [&str; 5] = [
    "autokill",
    "delete_lock",
    "restart_policy",
    "autodestroy",
    "features",
];

/// One PATCH item of an instance, checked.
fn convert_patch(
    item: &RawPatch,
    prefix: &str,
    _state: &AdminState,
) -> Result<InstancePatch, ApiError> {
    match item.prop.as_str() {
        "autokill" => {
            item.expect_op(prefix, &[Op::Set])?;
            // `null` clears the policy: both triggers off.
            let raw: Option<RawAutokill> = item.value(prefix)?;
            Ok(InstancePatch::Autokill(raw.unwrap_or_default().spec()))
        }
        "delete_lock" => {
            item.expect_op(prefix, &[Op::Set])?;
            Ok(InstancePatch::DeleteLock(item.value(prefix)?))
        }
        "restart_policy" => {
            item.expect_op(prefix, &[Op::Set])?;
            let p: WireRestartPolicy = item.value(prefix)?;
            Ok(InstancePatch::RestartPolicy(p.0))
        }
        "autodestroy" => {
            item.expect_op(prefix, &[Op::Set])?;
            let a: WireAutodestroy = item.value(prefix)?;
            Ok(InstancePatch::Autodestroy(a.0))
        }
        "features" => {
            item.expect_op(prefix, &[Op::Set, Op::Add, Op::Del])?;
            // One feature or a list; `delete-on-stop` is the only one, so each op comes down to
            // autodestroy ALWAYS or OFF.
            let features: Vec<Feature> = if item.value_is_array() {
                item.value(prefix)?
            } else {
                vec![item.value(prefix)?]
            };
            let has = features.contains(&Feature::DeleteOnStop);
            let always = match item.op {
                Op::Set => has,
                Op::Add if has => true,
                Op::Del if has => false,
                _ => {
                    return Err(wire::bad(
                        &format!("{prefix}value"),
                        format!(
                            "nothing to {} (give [\"delete-on-stop\"])",
                            item.op.as_str()
                        ),
                    ));
                }
            };
            Ok(InstancePatch::Autodestroy(if always {
                Autodestroy::Always
            } else {
                Autodestroy::Off
            }))
        }
        _ => Err(super::unknown_prop(
            item,
            prefix,
            Resource::Instance,
            &INSTANCE_PROPS,
        )),
    }
}

/// `GET /v1/instances/wait`: waits for each instance named in the query (`?uuid=&name=&state=
/// &timeout_ms=&timeout_s=`) or the body (`[{"uuid"|"name", "state", "timeout_ms"|
/// "timeout_s"}]`) to reach its state (`running` unless given), at most [`wait::MAX_WAIT`].
pub async fn wait_many(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let from_body = !body.iter().all(u8::is_ascii_whitespace);
    let (raws, single) = match (from_body, query.as_deref()) {
        (true, _) => match wire::parse_batch::<wait::RawWait>(&body) {
            Ok(batch) => (batch.items, batch.single),
            Err(err) => return wire::api_error(err),
        },
        (false, query) => match wait::RawWait::from_query(query.unwrap_or_default()) {
            Ok(raws) if !raws.is_empty() => (raws, false),
            Ok(_) => {
                return wire::api_error(ApiError::bad_request(
                    "uuid/name: name the instances to wait for (query or body)",
                ));
            }
            Err(err) => return wire::api_error(err),
        },
    };
    waits(&state, &raws, None, single).await
}

/// `GET /v1/instances/{uuid-or-name}/wait`: the body `{"state", "timeout_ms"|"timeout_s"}` or
/// the same in the query.
pub async fn wait_one(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let raw = if body.iter().all(u8::is_ascii_whitespace) {
        let query = query.unwrap_or_default();
        // The query's state and timeout, for the instance of the path.
        let with_id = format!("name=-&{query}");
        match wait::RawWait::from_query(&with_id) {
            Ok(mut raws) if raws.len() == 1 => raws.remove(0).without_target(),
            Ok(_) => {
                return wire::api_error(ApiError::bad_request(
                    "uuid/name: the instance is named in the path",
                ));
            }
            Err(err) => return wire::api_error(err),
        }
    } else {
        match wire::parse::<wait::RawWait>(&body) {
            Ok(raw) => raw,
            Err(err) => return wire::api_error(err),
        }
    };
    waits(&state, &[raw], Some(&id), true).await
}

/// Checks every wait, then waits for each (their deadlines run together).
async fn waits(
    state: &AdminState,
    raws: &[wait::RawWait],
    path: Option<&str>,
    single: bool,
) -> Response {
    let mut checked = Vec::with_capacity(raws.len());
    for (index, raw) in raws.iter().enumerate() {
        let prefix = wire::item_prefix(single, index);
        match raw.check(&prefix, path) {
            Ok(w) => checked.push(w),
            Err(err) => return wire::api_error(err),
        }
    }
    let started = tokio::time::Instant::now();
    let mut items = Vec::with_capacity(checked.len());
    for w in checked {
        let found = {
            let view = state.published.view.load();
            super::find_instance(&view, &w.target, Resource::Instance)
                .map(|i| (i.id, super::show::instance(i, &view, &state.base_domain)))
        };
        let item = match found {
            Some((id, shown)) => {
                let left = w.wait.saturating_sub(started.elapsed());
                wait::until(state, id, shown, w.want, left).await
            }
            None => Item::new(Err(ApiError::not_found(format!(
                "no instance {}",
                w.target
            )))),
        };
        items.push(item.echo_ref(&w.target));
    }
    wire::answer("instances", single, items)
}

/// A `GET /v1/instances/log` item (or the path form's body): `{"uuid"|"name", "offset",
/// "limit"}`; `offset` counts from the first byte the instance wrote, negative from the end.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    uuid: Option<Uuid>,
    name: Option<String>,
    offset: Option<i64>,
    limit: Option<u64>,
}

impl RawLog {
    /// The query form: `?uuid=&name=` (repeatable) with one `offset` and `limit` for all.
    fn from_query(raw: &str) -> Result<Vec<RawLog>, ApiError> {
        let (mut refs, mut offset, mut limit) = (Vec::new(), None, None);
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            let value = value.trim();
            let bad = |field: &str| {
                wire::bad(
                    field,
                    format!("{:?} is not a whole number", wire::clip(value)),
                )
            };
            match &*key {
                "uuid" => refs.push(RawLog {
                    uuid: Some(Uuid::parse_str(value).map_err(|_| {
                        wire::bad("uuid", format!("invalid UUID {:?}", wire::clip(value)))
                    })?),
                    ..RawLog::default()
                }),
                "name" => refs.push(RawLog {
                    name: Some(value.to_owned()),
                    ..RawLog::default()
                }),
                "offset" => offset = Some(value.parse().map_err(|_| bad("offset"))?),
                "limit" => limit = Some(value.parse().map_err(|_| bad("limit"))?),
                other => {
                    return Err(wire::bad(
                        &wire::clip(other),
                        "unknown query parameter; expected uuid, name, offset or limit",
                    ));
                }
            }
        }
        Ok(refs
            .into_iter()
            .map(|r| RawLog { offset, limit, ..r })
            .collect())
    }
}

/// `GET /v1/instances/log`: the output of each instance named in the body or the query.
pub async fn logs_many(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        RawLog::from_query(query.as_deref().unwrap_or_default()).map(|r| (r, false))
    } else {
        wire::parse_batch::<RawLog>(&body).map(|b| (b.items, b.single))
    };
    match parsed {
        Ok((raws, _)) if raws.is_empty() => wire::api_error(ApiError::bad_request(
            "uuid/name: name the instances whose log to read (query or body)",
        )),
        Ok((raws, single)) => logs(&state, raws, None, single).await,
        Err(err) => wire::api_error(err),
    }
}

/// `GET /v1/instances/{uuid-or-name}/log`: the body `{"offset", "limit"}` (or the query).
pub async fn logs_one(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let raw = if body.iter().all(u8::is_ascii_whitespace) {
        let with_id = format!("name=-&{}", query.unwrap_or_default());
        RawLog::from_query(&with_id).and_then(|mut raws| match raws.len() {
            1 => Ok(raws.remove(0)),
            _ => Err(wire::bad("uuid/name", "the instance is named in the path")),
        })
    } else {
        wire::parse::<RawLog>(&body)
    };
    match raw {
        Ok(raw) => {
            logs(
                &state,
                vec![RawLog {
                    uuid: None,
                    name: None,
                    ..raw
                }],
                Some(&id),
                true,
            )
            .await
        }
        Err(err) => wire::api_error(err),
    }
}

/// Reads each log from the runtime: `output` (base64, as Unikraft sends it), `available` and
/// `range` (byte offsets), and the instance's `state`.
async fn logs(state: &AdminState, raws: Vec<RawLog>, path: Option<&str>, single: bool) -> Response {
    let mut targets = Vec::with_capacity(raws.len());
    for (index, raw) in raws.iter().enumerate() {
        let prefix = wire::item_prefix(single, index);
        let target = match path {
            Some(id) => Ok(Ref::parse(id)),
            None => wire::one_ref(raw.uuid, raw.name.as_deref(), prefix.trim_end_matches('.')),
        };
        match target {
            Ok(t) => targets.push(t),
            Err(err) => return wire::api_error(err),
        }
    }
    let mut items = Vec::with_capacity(raws.len());
    for (raw, target) in raws.into_iter().zip(targets) {
        let found = {
            let view = state.published.view.load();
            super::find_instance(&view, &target, Resource::Instance)
                .map(|i| (i.id, i.name.to_string(), i.state))
        };
        let result = match found {
            None => Err(ApiError::not_found(format!("no instance {target}"))),
            Some((id, name, st)) => {
                match state
                    .runtime
                    .logs(id, raw.offset.unwrap_or(0), raw.limit)
                    .await
                {
                    Ok(chunk) => Ok(serde_json::json!({
                        "uuid": id,
                        "name": name,
                        "state": st.as_str(),
                        "output": wire::base64(&chunk.data),
                        "available": {"start": chunk.available.0, "end": chunk.available.1},
                        "range": {"start": chunk.range.0, "end": chunk.range.1},
                    })),
                    Err(crate::runtime::RuntimeError::UnknownInstance(_)) => Err(
                        ApiError::not_found(format!("instance {target} has no log yet")),
                    ),
                    Err(err) => Err(ApiError::bad_request(format!("log: {err}"))),
                }
            }
        };
        items.push(Item::new(result).echo_ref(&target));
    }
    wire::answer("instances", single, items)
}
