//! How instances, templates and service groups look on the wire (Unikraft Cloud's shapes).
//!
//! A field with nothing to show is left out rather than sent as `null`: the Unikraft SDKs parse
//! a present `stopped_at` or `service_group` without checking for `null`.

use serde_json::{Map, Value, json};

use super::wire::{autodestroy_name, restart_policy_name, rfc3339};
use crate::config::Autodestroy;
use crate::controller::{GroupView, InstanceState, InstanceView, StopReason, View};

/// Unikraft's `stop_reason` bitmask: bit 3 (`U`) a user stopped it, bit 2 (`P`) the platform did
/// (set for user stops too, as they pass through it), bits 1 and 0 (`A`, `K`) the application
/// (and with it the instance) exited on its own.
fn stop_reason_bits(reason: StopReason) -> u8 {
    match reason {
        // autokill, the platform, ended it after its last request.
        StopReason::NumRequests => 0b00100,
        // A user asked for the stop (`PUT .../stop`): `U`, and `P` as Unikraft sets it for
        // every user stop.
        StopReason::UserStop => 0b01100,
        // The process exited: the exit code is there.
        StopReason::Exited => 0b00011,
        // It never reached its entry point: closest to Unikraft's "kernel exited" (`K`).
        StopReason::StartFailed => 0b00001,
    }
}

/// An instance or template. `view` resolves the group's and template's UUIDs.
pub fn instance(i: &InstanceView, view: &View, base_domain: &str) -> Value {
    let mut o = Map::new();
    o.insert("uuid".into(), json!(i.id));
    o.insert("name".into(), json!(&*i.name));
    o.insert("state".into(), json!(i.state.as_str()));
    o.insert("image".into(), json!(i.image));
    if let Some(mb) = i.memory_mb {
        o.insert("memory_mb".into(), json!(mb));
    }
    if let Some(error) = &i.start_error {
        o.insert("start_error".into(), json!(error));
    }
    if let Some(t) = rfc3339(i.created_at) {
        o.insert("created_at".into(), json!(t));
    }
    if i.state != InstanceState::Template {
        // The name the proxy routes to this instance alone: its public and its private name.
        let fqdn = format!("{}.{base_domain}", i.name);
        o.insert("private_fqdn".into(), json!(fqdn));
        o.insert("fqdn".into(), json!(fqdn));
    }
    if let Some(group) = &i.group {
        let mut g = Map::new();
        if let Some(found) = view.groups.iter().find(|g| g.name == *group) {
            g.insert("uuid".into(), json!(found.id));
            g.insert("domains".into(), domains(&found.domains));
        }
        g.insert("name".into(), json!(group));
        o.insert("service_group".into(), Value::Object(g));
    }
    if let Some(template) = &i.template {
        let mut t = Map::new();
        if let Some(found) = view
            .instances
            .iter()
            .find(|t| t.state == InstanceState::Template && *t.name == **template)
        {
            t.insert("uuid".into(), json!(found.id));
        }
        t.insert("name".into(), json!(template));
        o.insert("template".into(), Value::Object(t));
    }
    o.insert(
        "autokill".into(),
        json!({
            "num_requests": i.autokill.num_requests,
            "time_ms": i.autokill.time.map_or(0, |t| t.as_millis() as u64),
        }),
    );
    if i.state == InstanceState::Template {
        // The template's own unused time; `autokill` above is what its clones inherit.
        o.insert(
            "template_autokill".into(),
            json!({"time_ms": i.unused_time.map_or(0, |t| t.as_millis() as u64)}),
        );
    }
    o.insert("requests".into(), json!(i.meter.count()));
    o.insert(
        "restart_policy".into(),
        json!(restart_policy_name(i.restart_policy)),
    );
    o.insert("autodestroy".into(), json!(autodestroy_name(i.autodestroy)));
    let features: &[&str] = if i.autodestroy == Autodestroy::Always {
        &["delete-on-stop"]
    } else {
        &[]
    };
    o.insert("features".into(), json!(features));
    o.insert("delete_lock".into(), json!(i.delete_lock));
    if i.state == InstanceState::Template {
        o.insert("clones".into(), json!(i.clones));
    }
    if let Some(code) = i.exit_code {
        o.insert("exit_code".into(), json!(code));
    }
    if let Some(reason) = i.stop_reason {
        o.insert("stop_reason".into(), json!(stop_reason_bits(reason)));
        o.insert("stop_cause".into(), json!(reason.as_str()));
    }
    if let Some(t) = i.stopped_at.and_then(rfc3339) {
        o.insert("stopped_at".into(), json!(t));
    }
    if let Some(addr) = i.addr {
        o.insert("private_ip".into(), json!(addr.ip().to_string()));
        o.insert("private_port".into(), json!(addr.port()));
    }
    Value::Object(o)
}

/// A group's domains as Unikraft shows them (`fqdn`), with `name` as they are given on create.
fn domains(domains: &[String]) -> Value {
    Value::Array(
        domains
            .iter()
            .map(|d| json!({"fqdn": d, "name": d}))
            .collect(),
    )
}

/// A service group. `view` resolves its instances' UUIDs.
pub fn group(g: &GroupView, view: &View) -> Value {
    let mut o = Map::new();
    o.insert("uuid".into(), json!(g.id));
    o.insert("name".into(), json!(g.name));
    if let Some(t) = rfc3339(g.created_at) {
        o.insert("created_at".into(), json!(t));
    }
    o.insert("domains".into(), domains(&g.domains));
    o.insert(
        "autokill".into(),
        json!({"time_ms": g.autokill_time.map_or(0, |t| t.as_millis() as u64)}),
    );
    o.insert("delete_lock".into(), json!(g.delete_lock));
    if let Some(limit) = g.soft_limit {
        o.insert("soft_limit".into(), json!(limit));
    }
    if let Some(limit) = g.hard_limit {
        o.insert("hard_limit".into(), json!(limit));
    }
    let services = if g.services.is_null() {
        json!([])
    } else {
        g.services.clone()
    };
    o.insert("services".into(), services);
    let instances = g
        .instances
        .iter()
        .map(|name| match view.instances.named(name) {
            Some(i) => json!({"uuid": i.id, "name": &**name}),
            None => json!({"name": &**name}),
        })
        .collect();
    o.insert("instances".into(), Value::Array(instances));
    if g.deleted {
        o.insert("deleted".into(), json!(true));
    }
    Value::Object(o)
}
