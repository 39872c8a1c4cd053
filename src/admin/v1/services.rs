//! `/v1/services`: service groups — create, list, get, patch, delete.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::Value;

use super::wire::{self, Batch, Item, Label, Op, RawPatch, RawTimeAutokill};
use super::{AdminState, Resource};
use crate::controller::api::{ApiError, Call, GroupPatch, MAX_GROUP_DOMAINS, NewGroup, Ref};

/// A `POST /v1/services` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewGroup {
    name: Label,
    domains: Option<Vec<RawDomain>>,
    /// Delete the group once it has been empty for `time_ms`.
    autokill: Option<RawTimeAutokill>,
    soft_limit: Option<Limit>,
    hard_limit: Option<Limit>,
    services: Option<Vec<RawService>>,
}

/// `{"name": "..."}`: a domain as written (resolved against the base domain).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: String,
}

/// A published port mapping (Unikraft's `services`): accepted, checked and shown.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    port: Port,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_port: Option<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handlers: Option<Vec<Handler>>,
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        let n = u64::deserialize(d)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(de::Error::custom(format!("port {n} is not in 1..=65535"))),
        }
    }
}

/// A connection handler of a port mapping.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Handler {
    Tls,
    Http,
    Redirect,
}

/// `soft_limit`/`hard_limit`: per-instance connection limits, 1 to 65535 as in Unikraft.
#[derive(Debug, Clone, Copy)]
struct Limit(u64);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        let n = u64::deserialize(d)?;
        if (1..=65_535).contains(&n) {
            Ok(Limit(n))
        } else {
            Err(de::Error::custom(format!("{n} is not in 1..=65535")))
        }
    }
}

/// Resolves `domains`, refusing bad names and repeats, naming `field[i].name`.
fn resolve_domains(
    domains: &[RawDomain],
    field: &str,
    base_domain: &str,
) -> Result<Vec<String>, ApiError> {
    if domains.len() > MAX_GROUP_DOMAINS {
        return Err(wire::bad(
            field,
            format!(
                "{} domains; a service group has at most {MAX_GROUP_DOMAINS}",
                domains.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(domains.len());
    for (i, d) in domains.iter().enumerate() {
        let here = format!("{field}[{i}].name");
        let full = wire::resolve_domain(&d.name, base_domain).map_err(|e| wire::bad(&here, e))?;
        if !seen.insert(full.clone()) {
            return Err(wire::bad(&here, format!("{full:?} is given twice")));
        }
        out.push(full);
    }
    Ok(out)
}

fn check_create(raw: RawNewGroup, prefix: &str, base_domain: &str) -> Result<NewGroup, ApiError> {
    let domains = resolve_domains(
        raw.domains.as_deref().unwrap_or_default(),
        &format!("{prefix}domains"),
        base_domain,
    )?;
    if let (Some(soft), Some(hard)) = (raw.soft_limit, raw.hard_limit)
        && soft.0 > hard.0
    {
        return Err(wire::bad(
            &format!("{prefix}soft_limit"),
            format!("{} is above hard_limit {}", soft.0, hard.0),
        ));
    }
    let services = match &raw.services {
        None => Value::Array(Vec::new()),
        // Re-serialized from the checked form, so what is shown is what was understood.
        Some(services) => serde_json::to_value(services)
            .map_err(|e| wire::bad(&format!("{prefix}services"), e))?,
    };
    Ok(NewGroup {
        name: raw.name.0,
        domains,
        autokill_time: raw.autokill.as_ref().and_then(RawTimeAutokill::time),
        soft_limit: raw.soft_limit.map(|l| l.0),
        hard_limit: raw.hard_limit.map(|l| l.0),
        services,
    })
}

/// `POST /v1/services`: one object or an array, each created in order and answered on its own.
pub async fn create(State(state): State<AdminState>, body: Bytes) -> Response {
    let batch: Batch<RawNewGroup> = match wire::parse_batch(&body) {
        Ok(batch) => batch,
        Err(err) => return wire::api_error(err),
    };
    let single = batch.single;
    let mut news = Vec::with_capacity(batch.items.len());
    for (index, raw) in batch.items.into_iter().enumerate() {
        let prefix = if single {
            String::new()
        } else {
            format!("[{index}].")
        };
        match check_create(raw, &prefix, &state.base_domain) {
            Ok(new) => news.push(new),
            Err(err) => return wire::api_error(err),
        }
    }
    let names: Vec<Ref> = news.iter().map(|n| Ref::Name(n.name.clone())).collect();
    let results = super::call_all(&state, news.into_iter().map(Call::CreateGroup).collect()).await;
    let items = results
        .into_iter()
        .zip(&names)
        .map(|(result, name)| Item::new(result).echo_ref(name))
        .collect();
    wire::answer("service_groups", single, items)
}

/// `GET /v1/services`.
pub async fn list(State(state): State<AdminState>, body: Bytes) -> Response {
    super::list(&state, &body, Resource::Group)
}

/// `GET /v1/services/{uuid-or-name}`.
pub async fn get(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    super::get_one(&state, &id, Resource::Group)
}

/// `DELETE /v1/services/{uuid-or-name}`.
pub async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act_on_path(&state, &id, &body, Resource::Group, Call::DeleteGroup).await
}

/// `DELETE /v1/services` with `[{"uuid"|"name"}]`.
pub async fn delete_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act_on_body(&state, &body, Resource::Group, Call::DeleteGroup).await
}

/// `PATCH /v1/services/{uuid-or-name}`.
pub async fn patch(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::patch(
        &state,
        Some(&id),
        &body,
        Resource::Group,
        convert_patch,
        Call::PatchGroup,
    )
    .await
}

/// `PATCH /v1/services`: items naming their group with `uuid` or `name`.
pub async fn patch_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::patch(
        &state,
        None,
        &body,
        Resource::Group,
        convert_patch,
        Call::PatchGroup,
    )
    .await
}

const GROUP_PROPS: [&str; 5] = [
    "autokill",
    "delete_lock",
    "domains",
    "soft_limit",
    "hard_limit",
];

/// One PATCH item of a service group, checked.
fn convert_patch(
    item: &RawPatch,
    prefix: &str,
    state: &AdminState,
) -> Result<GroupPatch, ApiError> {
    match item.prop.as_str() {
        "autokill" => {
            item.expect_op(prefix, &[Op::Set])?;
            let raw: Option<RawTimeAutokill> = item.value(prefix)?;
            Ok(GroupPatch::Autokill(raw.and_then(|a| a.time())))
        }
        "delete_lock" => {
            item.expect_op(prefix, &[Op::Set])?;
            Ok(GroupPatch::DeleteLock(item.value(prefix)?))
        }
        "domains" => {
            item.expect_op(prefix, &[Op::Add, Op::Del])?;
            // One `{"name"}` or a list of them.
            let domains: Vec<RawDomain> = if item.value_is_array() {
                item.value(prefix)?
            } else {
                vec![item.value(prefix)?]
            };
            if domains.is_empty() {
                return Err(wire::bad(&format!("{prefix}value"), "no domain given"));
            }
            let resolved =
                resolve_domains(&domains, &format!("{prefix}value"), &state.base_domain)?;
            Ok(match item.op {
                Op::Add => GroupPatch::AddDomains(resolved),
                _ => GroupPatch::RemoveDomains(resolved),
            })
        }
        "soft_limit" => {
            item.expect_op(prefix, &[Op::Set])?;
            let limit: Option<Limit> = item.value(prefix)?;
            Ok(GroupPatch::SoftLimit(limit.map(|l| l.0)))
        }
        "hard_limit" => {
            item.expect_op(prefix, &[Op::Set])?;
            let limit: Option<Limit> = item.value(prefix)?;
            Ok(GroupPatch::HardLimit(limit.map(|l| l.0)))
        }
        _ => Err(super::unknown_prop(
            item,
            prefix,
            Resource::Group,
            &GROUP_PROPS,
        )),
    }
}
