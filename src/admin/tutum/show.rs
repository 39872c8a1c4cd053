//! How services and containers look on `/api/v1`: Tutum's fields (resource URIs, RFC 2822
//! datetimes, `null` for what is not set, as the reference shows them), plus autokill's
//! `autokill` policy, `delete_lock` and `requests`.

use serde_json::{Value, json};
use uuid::Uuid;

use super::wire::{autodestroy_name, autorestart_name, datetime};
use crate::config::Autokill;
use crate::controller::{ContainerView, ServiceView, StopReason};

/// `/api/v1/service/<uuid>/`.
pub fn service_uri(id: Uuid) -> String {
    format!("/api/v1/service/{id}/")
}

/// `/api/v1/container/<uuid>/`.
pub fn container_uri(id: Uuid) -> String {
    format!("/api/v1/container/{id}/")
}

/// `/api/v1/action/<uuid>/`.
pub fn action_uri(id: Uuid) -> String {
    format!("/api/v1/action/{id}/")
}

/// An image key as Tutum's `image_tag` resource URI (images have no other tag than `latest`).
fn image_tag(image: &str) -> String {
    format!("/api/v1/image/{image}/tag/latest/")
}

fn autokill(a: Autokill) -> Value {
    json!({
        "num_requests": a.num_requests,
        "time_ms": a.time.map_or(0, |t| t.as_millis() as u64),
    })
}

/// A service.
pub fn service(s: &ServiceView) -> Value {
    let spec = &s.spec;
    json!({
        "uuid": s.id,
        "resource_uri": service_uri(s.id),
        "name": s.name,
        "unique_name": s.name,
        "image_name": spec.image,
        "image_tag": image_tag(&spec.image),
        "state": s.state.as_str(),
        "synchronized": spec.synchronized,
        "target_num_containers": spec.target,
        "current_num_containers": s.current,
        "running_num_containers": s.running,
        "stopped_num_containers": s.stopped,
        "containers": s.containers.iter().map(|c| container_uri(*c)).collect::<Vec<_>>(),
        "autorestart": autorestart_name(spec.autorestart),
        "autodestroy": autodestroy_name(spec.autodestroy),
        "autoreplace": "OFF",
        "autokill": autokill(spec.autokill),
        "public_dns": s.domains.first(),
        "created_datetime": datetime(Some(s.created_at)),
        "deployed_datetime": datetime(spec.deployed_at),
        "started_datetime": datetime(spec.started_at),
        "stopped_datetime": datetime(spec.stopped_at),
        "destroyed_datetime": datetime(s.terminated_at),
        "delete_lock": s.delete_lock,
        "container_ports": [],
        "container_envvars": [],
        "linked_to_service": [],
        "linked_from_service": [],
        "roles": [],
        "tags": [],
        "stack": null,
    })
}

/// Tutum's `exit_code_msg`.
fn exit_code_msg(c: &ContainerView) -> Value {
    match (c.exit_code, c.stop_reason) {
        (_, Some(StopReason::StartFailed)) => json!("Could not start"),
        (Some(0), _) => json!("Exit code 0 (Success)"),
        (Some(code), _) => json!(format!("Exit code {code} (Failure)")),
        (None, _) => Value::Null,
    }
}

/// A container; `base_domain` gives its host name.
pub fn container(c: &ContainerView, base_domain: &str) -> Value {
    json!({
        "uuid": c.id,
        "resource_uri": container_uri(c.id),
        "name": &*c.name,
        "unique_name": &*c.name,
        "service": c.service.map(service_uri),
        "state": c.state.as_str(),
        "exit_code": c.exit_code,
        "exit_code_msg": exit_code_msg(c),
        "stop_cause": c.stop_reason.map(StopReason::as_str),
        "image_name": c.image,
        "image_tag": image_tag(&c.image),
        "autorestart": autorestart_name(c.autorestart),
        "autodestroy": autodestroy_name(c.autodestroy),
        "autokill": autokill(c.autokill),
        "requests": c.requests,
        "delete_lock": c.delete_lock,
        "public_dns": format!("{}.{base_domain}", c.name),
        "private_ip": c.addr.map(|a| a.ip().to_string()),
        "private_port": c.addr.map(|a| a.port()),
        "deployed_datetime": datetime(Some(c.created_at)),
        "started_datetime": datetime(c.started_at),
        "stopped_datetime": datetime(c.stopped_at),
        "destroyed_datetime": datetime(c.terminated_at),
        "node": null,
        "container_ports": [],
        "container_envvars": [],
        "roles": [],
    })
}
