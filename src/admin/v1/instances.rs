//! `/v1/instances`: create (also as a clone of a template), list, get, patch, delete, start and stop.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::wire::{
    self, Batch, Feature, Item, Label, Op, RawAutokill, RawPatch, RawRef, WireAutodestroy,
    WireRestartPolicy,
};
use super::{AdminState, Resource};
use crate::config::{Autodestroy, RestartPolicy};
use crate::controller::InstanceState;
use crate::controller::api::{ApiError, Call, InstancePatch, NewInstance, Ref};

/// `memory_mb` bounds: the container engines refuse less than 6 MiB; 1 TiB catches a unit mix-up.
const MIN_MEMORY_MB: u64 = 6;
const MAX_MEMORY_MB: u64 = 1 << 20;

/// The longest `wait_timeout_ms` honoured (also what `-1`, "as long as possible", means).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A `POST /v1/instances` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewInstance {
    /// Unique name; generated when left out.
    name: Option<Label>,
    /// Image key (`runtime.images`; with docker also an image reference); required unless
    /// `template` is given.
    image: Option<String>,
    /// Memory limit in MiB; enforced by the docker runtime.
    memory_mb: Option<u64>,
    /// Clone this template.
    template: Option<RawRef>,
    /// Join this existing service group.
    service_group: Option<RawRef>,
    autokill: Option<RawAutokill>,
    restart_policy: Option<WireRestartPolicy>,
    autodestroy: Option<WireAutodestroy>,
    /// `["delete-on-stop"]` is autodestroy `ALWAYS`.
    features: Option<Vec<Feature>>,
    /// Start right away; Unikraft's default is not to.
    autostart: Option<bool>,
    /// Unikraft: extra copies. Only 0 (none) is supported; accepted because SDKs send it.
    replicas: Option<u64>,
    /// Unikraft: wait this long for the instance to run before answering; `-1` is "as long as
    /// the server allows".
    wait_timeout_ms: Option<i64>,
}

/// A create request, checked, with what the handler does around the call.
struct Create {
    new: NewInstance,
    wait: Option<Duration>,
}

fn check_create(raw: RawNewInstance, prefix: &str) -> Result<Create, ApiError> {
    let field = |name: &str| format!("{prefix}{name}");
    if let Some(Label(name)) = &raw.name
        && crate::config::RESERVED_NAMES.contains(&name.as_str())
    {
        return Err(wire::bad(
            &field("name"),
            format!("{name:?} is reserved: it is a path segment of /v1/instances"),
        ));
    }
    match &raw.image {
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
    let template = raw
        .template
        .as_ref()
        .map(|t| t.to_ref(&field("template")))
        .transpose()?;
    let service_group = raw
        .service_group
        .as_ref()
        .map(|g| g.to_ref(&field("service_group")))
        .transpose()?;
    if let Some(mb) = raw.memory_mb
        && !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb)
    {
        return Err(wire::bad(
            &field("memory_mb"),
            format!(
                "{mb} is out of range: from {MIN_MEMORY_MB} (the engines' least) to {MAX_MEMORY_MB} MiB"
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
    if let Some(features) = &raw.features
        && features.contains(&Feature::DeleteOnStop)
    {
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
    let wait = match raw.wait_timeout_ms {
        None | Some(0) => None,
        Some(_) if !autostart => {
            return Err(wire::bad(
                &field("wait_timeout_ms"),
                "only with \"autostart\": true",
            ));
        }
        Some(-1) => Some(MAX_WAIT),
        Some(ms) => match u64::try_from(ms) {
            Ok(ms) => Some(Duration::from_millis(ms).min(MAX_WAIT)),
            Err(_) => {
                return Err(wire::bad(
                    &field("wait_timeout_ms"),
                    format!("{ms} is negative; use -1 to wait as long as allowed"),
                ));
            }
        },
    };
    Ok(Create {
        new: NewInstance {
            name: raw.name.map(|l| l.0),
            image: raw.image,
            memory_mb: raw.memory_mb,
            template,
            service_group,
            autokill: raw.autokill.as_ref().map(RawAutokill::spec),
            restart_policy,
            autodestroy,
            autostart,
        },
        wait,
    })
}

/// `POST /v1/instances`: one object or an array; each created in order and answered on its own.
pub async fn create(State(state): State<AdminState>, body: Bytes) -> Response {
    let batch: Batch<RawNewInstance> = match wire::parse_batch(&body) {
        Ok(batch) => batch,
        Err(err) => return wire::api_error(err),
    };
    let single = batch.single;
    let mut creates = Vec::with_capacity(batch.items.len());
    for (index, raw) in batch.items.into_iter().enumerate() {
        let prefix = if single {
            String::new()
        } else {
            format!("[{index}].")
        };
        match check_create(raw, &prefix) {
            Ok(create) => creates.push(create),
            Err(err) => return wire::api_error(err),
        }
    }
    let mut items = Vec::with_capacity(creates.len());
    for Create { new, wait } in creates {
        let name = new.name.clone();
        let mut result = super::call(&state, Call::CreateInstance(new)).await;
        if let (Ok(shown), Some(wait)) = (&result, wait) {
            result = Ok(wait_started(&state, shown, wait).await);
        }
        let mut item = Item::new(result);
        if let Some(name) = name {
            item = item.echo_ref(&Ref::Name(name));
        }
        items.push(item);
    }
    wire::answer("instances", single, items)
}

/// Polls the view until the instance `shown` has left `starting`, or `wait` passes; answers with
/// the latest view of it.
async fn wait_started(state: &AdminState, shown: &Value, wait: Duration) -> Value {
    let Some(id) = shown["uuid"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
    else {
        return shown.clone();
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        {
            let view = state.published.view.load();
            match view.instances.iter().find(|i| i.id == id) {
                None => return shown.clone(),
                Some(i) if i.state != InstanceState::Starting => {
                    return super::show::instance(i, &view, &state.base_domain);
                }
                Some(i) if tokio::time::Instant::now() >= deadline => {
                    return super::show::instance(i, &view, &state.base_domain);
                }
                Some(_) => {}
            }
        }
        // The view is an arc-swap snapshot without change notification; a short poll is cheap.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /v1/instances`: every instance but templates (or those a body `[{"uuid"|"name"}]` names).
pub async fn list(State(state): State<AdminState>, body: Bytes) -> Response {
    super::list(&state, &body, Resource::Instance)
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
    super::act_on_path(&state, &id, &body, Resource::Instance, Call::DeleteInstance).await
}

/// `DELETE /v1/instances` with `[{"uuid"|"name"}]`.
pub async fn delete_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act_on_body(&state, &body, Resource::Instance, Call::DeleteInstance).await
}

/// `PUT /v1/instances/{uuid-or-name}/start`.
pub async fn start(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act_on_path(&state, &id, &body, Resource::Instance, Call::StartInstance).await
}

/// `PUT /v1/instances/start` with `[{"uuid"|"name"}]`.
pub async fn start_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act_on_body(&state, &body, Resource::Instance, Call::StartInstance).await
}

/// `PUT /v1/instances/{uuid-or-name}/stop`.
pub async fn stop(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act_on_path(&state, &id, &body, Resource::Instance, Call::StopInstance).await
}

/// `PUT /v1/instances/stop` with `[{"uuid"|"name"}]`.
pub async fn stop_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act_on_body(&state, &body, Resource::Instance, Call::StopInstance).await
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
            let features: Vec<Feature> = match &item.value {
                Value::Array(_) => item.value(prefix)?,
                _ => vec![item.value(prefix)?],
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
