//! `/v1/services`: service groups — create, list, get, patch, delete.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
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
    /// Unique name; generated (`sg-` and 8 hex digits) when left out, as the SDKs allow.
    name: Option<Label>,
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
pub(super) struct RawDomain {
    name: String,
    /// Unikraft's TLS certificate of the domain: autokill serves plain HTTP.
    certificate: Option<serde::de::IgnoredAny>,
}

/// A published port mapping (Unikraft's `services`): accepted, checked and shown.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    port: Port,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_port: Option<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handlers: Option<Vec<Handler>>,
}

/// A port mapping's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Tcp,
    Udp,
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Handler {
    Tls,
    Http,
    Redirect,
}

/// `soft_limit`/`hard_limit`: per-instance connection limits, 1 to 65535 as in Unikraft.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit(u64);

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
pub(super) fn resolve_domains(
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
        if d.certificate.is_some() {
            return Err(wire::bad(
                &format!("{field}[{i}].certificate"),
                "not supported: autokill serves plain HTTP (put a TLS proxy in front)",
            ));
        }
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
    new_group(
        raw.name.map(|l| l.0),
        raw.domains.as_deref().unwrap_or_default(),
        raw.services.as_deref(),
        (raw.soft_limit, raw.hard_limit),
        prefix,
        base_domain,
    )
    .map(|g| NewGroup {
        autokill_time: raw.autokill.as_ref().and_then(RawTimeAutokill::time),
        ..g
    })
}

/// A group to create from its checked parts (shared with an instance's ephemeral group).
pub(super) fn new_group(
    name: Option<String>,
    domains: &[RawDomain],
    services: Option<&[RawService]>,
    (soft, hard): (Option<Limit>, Option<Limit>),
    prefix: &str,
    base_domain: &str,
) -> Result<NewGroup, ApiError> {
    let domains = resolve_domains(domains, &format!("{prefix}domains"), base_domain)?;
    if let (Some(soft), Some(hard)) = (soft, hard)
        && soft.0 > hard.0
    {
        return Err(wire::bad(
            &format!("{prefix}soft_limit"),
            format!("{} is above hard_limit {}", soft.0, hard.0),
        ));
    }
    Ok(NewGroup {
        name,
        domains,
        autokill_time: None,
        soft_limit: soft.map(|l| l.0),
        hard_limit: hard.map(|l| l.0),
        services: services_value(services.unwrap_or_default(), &format!("{prefix}services"))?,
    })
}

/// The `services` as shown: re-serialized from the checked form, so what is shown is what was
/// understood.
fn services_value(services: &[RawService], field: &str) -> Result<Value, ApiError> {
    serde_json::to_value(services).map_err(|e| wire::bad(field, e))
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
        let prefix = wire::item_prefix(single, index);
        match check_create(raw, &prefix, &state.base_domain) {
            Ok(new) => news.push(new),
            Err(err) => return wire::api_error(err),
        }
    }
    let names: Vec<Option<Ref>> = news.iter().map(|n| n.name.clone().map(Ref::Name)).collect();
    let results = super::call_all(&state, news.into_iter().map(Call::CreateGroup).collect()).await;
    let items = results
        .into_iter()
        .zip(&names)
        .map(|(result, name)| match name {
            Some(name) => Item::new(result).echo_ref(name),
            None => Item::new(result),
        })
        .collect();
    wire::answer("service_groups", single, items)
}

/// `GET /v1/services`.
pub async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    super::list(&state, query.as_deref(), &body, Resource::Group)
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
    super::act::<wire::RawTarget>(&state, Some(&id), &body, Resource::Group, Call::DeleteGroup)
        .await
}

/// `DELETE /v1/services` with `[{"uuid"|"name"}]`.
pub async fn delete_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act::<wire::RawTarget>(&state, None, &body, Resource::Group, Call::DeleteGroup).await
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

const GROUP_PROPS: [&str; 6] = [
    "autokill",
    "delete_lock",
    "domains",
    "services",
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
        "services" => {
            item.expect_op(prefix, &[Op::Set, Op::Add, Op::Del])?;
            // One mapping or a list of them.
            let services: Vec<RawService> = if item.value_is_array() {
                item.value(prefix)?
            } else if item.op == Op::Set && item.value.is_none() {
                Vec::new()
            } else {
                vec![item.value(prefix)?]
            };
            let field = format!("{prefix}value");
            let value = services_value(&services, &field)?;
            Ok(match item.op {
                Op::Set => GroupPatch::SetServices(value),
                Op::Add => GroupPatch::AddServices(value),
                Op::Del => GroupPatch::RemoveServices(value),
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
