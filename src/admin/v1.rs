//! The Unikraft Cloud-shaped `/v1` API: the response envelope and the instance and service group
//! shapes of its OpenAPI description.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AdminState;
use crate::config::{Autodestroy, RestartPolicy};
use crate::controller::{GroupView, InstanceView};

/// An error answer in the envelope.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"status": "error", "message": message, "errors": [{"status": status.as_u16(), "message": message}]}))).into_response()
}

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

fn millis(t: std::time::SystemTime) -> Value {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(Value::Null, |d| json!(d.as_millis() as u64))
}

fn instance_json(i: &InstanceView, base_domain: &str) -> Value {
    json!({
        "uuid": i.id,
        "name": &*i.name,
        "state": i.state.as_str(),
        "image": i.image,
        "fqdn": format!("{}.{}", i.name, base_domain),
        "service_group": i.group.as_ref().map(|g| json!({"name": g})),
        "autokill": {
            "num_requests": i.autokill.num_requests,
            "time_ms": i.autokill.time.map_or(0, |t| t.as_millis() as u64),
        },
        "requests": i.meter.count(),
        "restart_policy": match i.restart_policy {
            RestartPolicy::Never => "never",
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
        },
        "autodestroy": match i.autodestroy {
            Autodestroy::Off => "OFF",
            Autodestroy::OnFailure => "ON_FAILURE",
            Autodestroy::OnSuccess => "ON_SUCCESS",
            Autodestroy::Always => "ALWAYS",
        },
        "delete_lock": i.delete_lock,
        "exit_code": i.exit_code,
        "stop_reason": i.stop_reason.map(|r| r.as_str()),
        "created_at": millis(i.created_at),
        "stopped_at": i.stopped_at.map(millis),
        "private_ip": i.addr.map(|a| a.to_string()),
    })
}

fn group_json(g: &GroupView) -> Value {
    json!({
        "uuid": g.id,
        "name": g.name,
        "domains": g.domains.iter().map(|d| json!({"name": d})).collect::<Vec<_>>(),
        "autokill": {"time_ms": g.autokill_time.map_or(0, |t| t.as_millis() as u64)},
        "delete_lock": g.delete_lock,
        "instances": g.instances.iter().map(|n| json!({"name": &**n})).collect::<Vec<_>>(),
    })
}

/// `GET /v1/instances`
pub async fn list_instances(State(state): State<AdminState>) -> Response {
    let view = state.published.view.load();
    let items: Vec<Value> = view
        .instances
        .iter()
        .map(|i| instance_json(i, &state.base_domain))
        .collect();
    success(json!({"instances": items}))
}

/// `GET /v1/instances/{uuid-or-name}`
pub async fn get_instance(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let view = state.published.view.load();
    match view
        .instances
        .iter()
        .find(|i| i.id.to_string() == id || *i.name == *id)
    {
        Some(i) => success(json!({"instances": [instance_json(i, &state.base_domain)]})),
        None => error(StatusCode::NOT_FOUND, format!("no instance {id:?}")),
    }
}

/// `GET /v1/services`
pub async fn list_groups(State(state): State<AdminState>) -> Response {
    let view = state.published.view.load();
    success(json!({"service_groups": view.groups.iter().map(group_json).collect::<Vec<_>>()}))
}

/// `GET /v1/services/{uuid-or-name}`
pub async fn get_group(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let view = state.published.view.load();
    match view
        .groups
        .iter()
        .find(|g| g.id.to_string() == id || g.name == id)
    {
        Some(g) => success(json!({"service_groups": [group_json(g)]})),
        None => error(StatusCode::NOT_FOUND, format!("no service group {id:?}")),
    }
}
