//! `/v1/instances/templates`: make a template of a stopped instance, list, get, patch, delete.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::wire::{self, Batch, Item, Op, RawPatch, RawTimeAutokill};
use super::{AdminState, Resource};
use crate::controller::api::{ApiError, Call, NewTemplate, TemplatePatch};

/// A `POST /v1/instances/templates` item: the stopped instance, and the template's own autokill.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewTemplate {
    uuid: Option<Uuid>,
    name: Option<String>,
    /// Delete the template once nobody has cloned it for `time_ms`.
    autokill: Option<RawTimeAutokill>,
    /// Unikraft: how long to wait for the template. A template is made before the answer, so
    /// there is nothing to wait for; checked and taken.
    timeout_s: Option<i64>,
}

/// `POST /v1/instances/templates`: one object or an array, each answered on its own.
pub async fn create(State(state): State<AdminState>, body: Bytes) -> Response {
    let batch: Batch<RawNewTemplate> = match wire::parse_batch(&body) {
        Ok(batch) => batch,
        Err(err) => return wire::api_error(err),
    };
    let mut news = Vec::with_capacity(batch.items.len());
    for (index, raw) in batch.items.iter().enumerate() {
        let prefix = batch.prefix(index);
        if let Err(err) = super::wait::timeout(raw.timeout_s, None, &prefix, "") {
            return wire::api_error(err);
        }
        match wire::one_ref(raw.uuid, raw.name.as_deref(), prefix.trim_end_matches('.')) {
            Ok(instance) => news.push(NewTemplate {
                instance,
                autokill_time: raw.autokill.as_ref().and_then(RawTimeAutokill::time),
            }),
            Err(err) => return wire::api_error(err),
        }
    }
    let refs: Vec<_> = news.iter().map(|n| n.instance.clone()).collect();
    let results =
        super::call_all(&state, news.into_iter().map(Call::CreateTemplate).collect()).await;
    let items = results
        .into_iter()
        .zip(&refs)
        .map(|(result, r)| Item::new(result).echo_ref(r))
        .collect();
    wire::answer("instances", batch.single, items)
}

/// `GET /v1/instances/templates`.
pub async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    super::list(&state, query.as_deref(), &body, Resource::Template)
}

/// `GET /v1/instances/templates/{uuid-or-name}`.
pub async fn get(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    super::get_one(&state, &id, Resource::Template)
}

/// `DELETE /v1/instances/templates/{uuid-or-name}`.
pub async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::act::<wire::RawTarget>(
        &state,
        Some(&id),
        &body,
        Resource::Template,
        Call::DeleteTemplate,
    )
    .await
}

/// `DELETE /v1/instances/templates` with `[{"uuid"|"name"}]`.
pub async fn delete_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::act::<wire::RawTarget>(
        &state,
        None,
        &body,
        Resource::Template,
        Call::DeleteTemplate,
    )
    .await
}

/// `PATCH /v1/instances/templates/{uuid-or-name}`.
pub async fn patch(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    super::patch(
        &state,
        Some(&id),
        &body,
        Resource::Template,
        convert_patch,
        Call::PatchTemplate,
    )
    .await
}

/// `PATCH /v1/instances/templates`: items naming their template with `uuid` or `name`.
pub async fn patch_many(State(state): State<AdminState>, body: Bytes) -> Response {
    super::patch(
        &state,
        None,
        &body,
        Resource::Template,
        convert_patch,
        Call::PatchTemplate,
    )
    .await
}

/// One PATCH item of a template, checked.
fn convert_patch(
    item: &RawPatch,
    prefix: &str,
    _state: &AdminState,
) -> Result<TemplatePatch, ApiError> {
    match item.prop.as_str() {
        "autokill" => {
            item.expect_op(prefix, &[Op::Set])?;
            let raw: Option<RawTimeAutokill> = item.value(prefix)?;
            Ok(TemplatePatch::Autokill(raw.and_then(|a| a.time())))
        }
        "delete_lock" => {
            item.expect_op(prefix, &[Op::Set])?;
            Ok(TemplatePatch::DeleteLock(item.value(prefix)?))
        }
        _ => Err(super::unknown_prop(
            item,
            prefix,
            Resource::Template,
            &["autokill", "delete_lock"],
        )),
    }
}
