//! Unikraft's verbs, spoken to `/v1`: `instance create|ls|get|start|stop|rm|set`,
//! `template create|ls|rm`, `group create|ls|rm`. Every verb prints the resources it shows or
//! acted on as a table (JSON with `--output json`); `--wait` polls the instance until it is in
//! the state asked for (or gone, for `rm`).

use serde_json::{Map, Value, json};

use super::http::Answer;
use super::table::{Column, ago, cell, objects, short};
use super::{
    CliError, Ctx, GroupVerb, InstancePolicy, InstanceVerb, Output, Targets, TemplateVerb, segment,
    wait_for,
};

/// A `/v1` answer's items under `data.<key>`; an item refused inside a 200 (a batch) is an
/// error of its own, shown whole.
fn items(answer: Answer, key: &str, what: &str) -> Result<Vec<Value>, CliError> {
    let body = answer.ok(what)?;
    let items = body["data"][key].as_array().cloned().unwrap_or_default();
    if let Some(failed) = items.iter().find(|i| i["status"] == "error") {
        return Err(CliError::Refused(format!("{what}: {failed}")));
    }
    Ok(items)
}

/// `5 requests, 30s` or `-`.
fn autokill(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(n) = v["num_requests"].as_u64().filter(|n| *n > 0) {
        parts.push(format!("{n} requests"));
    }
    if let Some(ms) = v["time_ms"].as_u64().filter(|t| *t > 0) {
        parts.push(if ms % 1000 == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        });
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn lock(v: &Value) -> String {
    if v["delete_lock"] == true {
        "locked".into()
    } else {
        String::new()
    }
}

/// The `name`s of a list of `{"name"}` objects, joined.
fn names(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| cell(&x["name"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

const INSTANCE_COLUMNS: [Column; 11] = [
    ("NAME", |i| cell(&i["name"])),
    ("UUID", |i| short(&i["uuid"])),
    ("STATE", |i| cell(&i["state"])),
    ("IMAGE", |i| cell(&i["image"])),
    ("REQUESTS", |i| cell(&i["requests"])),
    ("AUTOKILL", |i| autokill(&i["autokill"])),
    ("RESTART", |i| cell(&i["restart_policy"])),
    ("AUTODESTROY", |i| cell(&i["autodestroy"])),
    ("LOCK", lock),
    ("GROUP", |i| cell(&i["service_group"]["name"])),
    ("CREATED", |i| ago(&i["created_at"])),
];

const TEMPLATE_COLUMNS: [Column; 7] = [
    ("NAME", |i| cell(&i["name"])),
    ("UUID", |i| short(&i["uuid"])),
    ("IMAGE", |i| cell(&i["image"])),
    ("CLONES", |i| cell(&i["clones"])),
    ("UNUSED AUTOKILL", |i| autokill(&i["template_autokill"])),
    ("LOCK", lock),
    ("CREATED", |i| ago(&i["created_at"])),
];

const GROUP_COLUMNS: [Column; 7] = [
    ("NAME", |g| cell(&g["name"])),
    ("UUID", |g| short(&g["uuid"])),
    ("DOMAINS", |g| names(&g["domains"])),
    ("INSTANCES", |g| names(&g["instances"])),
    ("EMPTY AUTOKILL", |g| autokill(&g["autokill"])),
    ("LOCK", lock),
    ("CREATED", |g| ago(&g["created_at"])),
];

/// Prints `list` as a table of `columns`, or as JSON.
fn print(ctx: &Ctx, list: &[Value], columns: &[Column]) {
    match ctx.output {
        Output::Json => ctx.json(&Value::Array(list.to_vec())),
        Output::Table => objects(list, columns, Some("STATE")).print(),
    }
}

fn print_instances(ctx: &Ctx, list: &[Value]) {
    print(ctx, list, &INSTANCE_COLUMNS);
}

fn print_templates(ctx: &Ctx, list: &[Value]) {
    print(ctx, list, &TEMPLATE_COLUMNS);
}

fn print_groups(ctx: &Ctx, list: &[Value]) {
    print(ctx, list, &GROUP_COLUMNS);
}

/// The policy flags given, as `/v1` fields (for a create, or as PATCH props).
fn policy_fields(p: InstancePolicy) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(a) = p.autokill {
        out.push(("autokill", a));
    }
    if let Some(r) = p.restart {
        out.push(("restart_policy", json!(r.to_ascii_lowercase())));
    }
    if let Some(a) = p.autodestroy {
        out.push(("autodestroy", json!(a.to_ascii_uppercase())));
    }
    out
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Running; stopping instead is a failure.
    Running,
    /// Stopped, or gone (an instance destroyed when it stops).
    Stopped,
    /// Gone.
    Gone,
}

/// Waits until instance `id` is as `want`s; shows it as it is then (nothing when gone).
async fn wait_state(ctx: &Ctx, id: &str, want: Want) -> Result<Option<Value>, CliError> {
    let what = format!("instance {id} to be {want:?}").to_ascii_lowercase();
    // The answer: the instance as it is then (`None`: gone), or why it never got there.
    let done: Result<Option<Value>, String> = wait_for(ctx, &what, || async {
        let answer = ctx
            .client
            .send("GET", &format!("/v1/instances/{}", segment(id)), None)
            .await?;
        if answer.status == 404 {
            return Ok((want != Want::Running).then_some(Ok(None)));
        }
        let i = items(answer, "instances", &what)?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(match (want, i["state"].as_str().unwrap_or_default()) {
            (Want::Running, "running") | (Want::Stopped, "stopped") => Some(Ok(Some(i))),
            (Want::Running, "stopped") => {
                Some(Err(format!("it stopped ({})", cell(&i["stop_cause"]))))
            }
            _ => None,
        })
    })
    .await?;
    done.map_err(|why| CliError::Server(format!("waiting for {what}: {why}")))
}

/// `start`, `stop` or `rm` of every id, then, with `--wait`, until each is as `want`s.
async fn act(
    ctx: &Ctx,
    t: &Targets,
    method: &str,
    action: &str,
    want: Want,
) -> Result<(), CliError> {
    let mut done = each(ctx, &t.ids, method, "instances", action, "instances").await?;
    if t.wait {
        for (id, shown) in t.ids.iter().zip(done.iter_mut()) {
            if let Some(now) = wait_state(ctx, id, want).await? {
                *shown = now;
            }
        }
    }
    print_instances(ctx, &done);
    Ok(())
}

/// Runs `method` on `/v1/<collection>/<id>[/<action>]` for each id; shows what each answered.
async fn each(
    ctx: &Ctx,
    ids: &[String],
    method: &str,
    collection: &str,
    action: &str,
    key: &str,
) -> Result<Vec<Value>, CliError> {
    let mut out = Vec::new();
    for id in ids {
        let path = format!("/v1/{collection}/{}{action}", segment(id));
        let answer = ctx.client.send(method, &path, None).await?;
        out.extend(items(answer, key, &format!("{method} {path}"))?);
    }
    Ok(out)
}

/// `autokill instance …`.
pub async fn instance(ctx: &Ctx, verb: InstanceVerb) -> Result<(), CliError> {
    match verb {
        InstanceVerb::Create {
            image,
            name,
            template,
            group,
            policy,
            start,
            wait,
        } => {
            if image.is_none() && template.is_none() {
                return Err(CliError::Usage(
                    "instance create: give an IMAGE or --template".into(),
                ));
            }
            let mut body = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    body.insert(k.into(), v);
                }
            };
            put("name", name.map(Value::String));
            put("image", image.map(Value::String));
            put("template", template.map(|t| json!({"name": t})));
            put("service_group", group.map(|g| json!({"name": g})));
            for (k, v) in policy_fields(policy) {
                put(k, Some(v));
            }
            body.insert("autostart".into(), json!(start));
            let answer = ctx
                .client
                .send("POST", "/v1/instances", Some(&Value::Object(body)))
                .await?;
            let mut made = items(answer, "instances", "instance create")?;
            if start && wait {
                for i in &mut made {
                    if let Some(now) = wait_state(ctx, &cell(&i["uuid"]), Want::Running).await? {
                        *i = now;
                    }
                }
            }
            print_instances(ctx, &made);
            Ok(())
        }
        InstanceVerb::Ls => {
            let answer = ctx.client.send("GET", "/v1/instances", None).await?;
            print_instances(ctx, &items(answer, "instances", "instance ls")?);
            Ok(())
        }
        InstanceVerb::Get(ids) => {
            let found = each(ctx, &ids.ids, "GET", "instances", "", "instances").await?;
            print_instances(ctx, &found);
            Ok(())
        }
        InstanceVerb::Start(t) => act(ctx, &t, "PUT", "/start", Want::Running).await,
        InstanceVerb::Stop(t) => act(ctx, &t, "PUT", "/stop", Want::Stopped).await,
        InstanceVerb::Rm(t) => act(ctx, &t, "DELETE", "", Want::Gone).await,
        InstanceVerb::Set {
            ids,
            policy,
            delete_lock,
            no_delete_lock,
        } => {
            let mut fields = policy_fields(policy);
            if delete_lock || no_delete_lock {
                fields.push(("delete_lock", json!(delete_lock)));
            }
            let patch: Vec<Value> = fields
                .into_iter()
                .map(|(prop, value)| json!({"prop": prop, "op": "set", "value": value}))
                .collect();
            if patch.is_empty() {
                return Err(CliError::Usage(
                    "instance set: nothing to set; give --autokill, --restart, --autodestroy, \
                     --delete-lock or --no-delete-lock"
                        .into(),
                ));
            }
            let body = Value::Array(patch);
            let mut done = Vec::new();
            for id in &ids.ids {
                let path = format!("/v1/instances/{}", segment(id));
                let answer = ctx.client.send("PATCH", &path, Some(&body)).await?;
                // All items are about one instance and applied together: one answer shows it.
                done.extend(
                    items(answer, "instances", &format!("instance set {id}"))?
                        .into_iter()
                        .take(1),
                );
            }
            print_instances(ctx, &done);
            Ok(())
        }
    }
}

/// `autokill template …`.
pub async fn template(ctx: &Ctx, verb: TemplateVerb) -> Result<(), CliError> {
    match verb {
        TemplateVerb::Create { instance, autokill } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(instance));
            if let Some(a) = autokill {
                if a.get("num_requests").is_some() {
                    return Err(CliError::Usage(
                        "template create --autokill: a template takes only time=DURATION (its unused time)"
                            .into(),
                    ));
                }
                body.insert("autokill".into(), a);
            }
            let answer = ctx
                .client
                .send(
                    "POST",
                    "/v1/instances/templates",
                    Some(&Value::Object(body)),
                )
                .await?;
            print_templates(ctx, &items(answer, "instances", "template create")?);
            Ok(())
        }
        TemplateVerb::Ls => {
            let answer = ctx
                .client
                .send("GET", "/v1/instances/templates", None)
                .await?;
            print_templates(ctx, &items(answer, "instances", "template ls")?);
            Ok(())
        }
        TemplateVerb::Rm(ids) => {
            let done = each(
                ctx,
                &ids.ids,
                "DELETE",
                "instances/templates",
                "",
                "instances",
            )
            .await?;
            print_templates(ctx, &done);
            Ok(())
        }
    }
}

/// `autokill group …`.
pub async fn group(ctx: &Ctx, verb: GroupVerb) -> Result<(), CliError> {
    match verb {
        GroupVerb::Create {
            name,
            domains,
            autokill,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert(
                "domains".into(),
                Value::Array(domains.iter().map(|d| json!({"name": d})).collect()),
            );
            if let Some(a) = autokill {
                if a.get("num_requests").is_some() {
                    return Err(CliError::Usage(
                        "group create --autokill: a group takes only time=DURATION (its empty time)"
                            .into(),
                    ));
                }
                body.insert("autokill".into(), a);
            }
            let answer = ctx
                .client
                .send("POST", "/v1/services", Some(&Value::Object(body)))
                .await?;
            print_groups(ctx, &items(answer, "service_groups", "group create")?);
            Ok(())
        }
        GroupVerb::Ls => {
            let answer = ctx.client.send("GET", "/v1/services", None).await?;
            print_groups(ctx, &items(answer, "service_groups", "group ls")?);
            Ok(())
        }
        GroupVerb::Rm(ids) => {
            let done = each(ctx, &ids.ids, "DELETE", "services", "", "service_groups").await?;
            print_groups(ctx, &done);
            Ok(())
        }
    }
}
