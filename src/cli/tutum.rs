//! Tutum's verbs, spoken to `/api/v1`: `service run|create|ps|inspect|set|scale|start|stop|
//! redeploy|terminate` and `container ps|inspect|start|stop|redeploy|terminate`. As Tutum's own
//! command line did, verbs that act print the UUID of each object they acted on, `ps` prints a
//! table and `inspect` the object; `--wait` follows each change's action to its end.

use serde_json::{Map, Value, json};

use super::table::{Column, ago, cell, objects, short};
use super::{
    CliError, ContainerVerb, Ctx, Output, ServicePolicy, ServiceSpecArgs, ServiceVerb, Targets,
    segment, wait_for,
};

/// Which kind of object: its path under `/api/v1` and its name in messages.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Service,
    Container,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Service => "/api/v1/service/",
            Kind::Container => "/api/v1/container/",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Container => "container",
        }
    }
}

/// The object `id` names: a name or UUID as the server resolves it, else a UUID prefix (as
/// Tutum's command line accepted) that only one object has.
async fn resolve(ctx: &Ctx, kind: Kind, id: &str) -> Result<Value, CliError> {
    let answer = ctx
        .client
        .send("GET", &format!("{}{}/", kind.path(), segment(id)), None)
        .await?;
    if answer.status != 404 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return answer.ok(&format!("{} {id}", kind.noun()));
    }
    let found = ctx
        .client
        .get(
            &format!("{}?uuid__startswith={}&limit=2", kind.path(), segment(id)),
            &format!("{} {id}", kind.noun()),
        )
        .await?;
    let objects = found["objects"].as_array().cloned().unwrap_or_default();
    match objects.as_slice() {
        [one] => Ok(one.clone()),
        [] => answer.ok(&format!("{} {id}", kind.noun())),
        _ => Err(CliError::Refused(format!(
            "{} {id}: more than one {} has a UUID starting so; give more of it",
            kind.noun(),
            kind.noun()
        ))),
    }
}

fn uuid_of(v: &Value) -> String {
    cell(&v["uuid"])
}

/// Follows an action (`X-Tutum-Action-URI`) until it has succeeded (or fails with its message).
async fn follow(ctx: &Ctx, action: Option<&str>, what: &str) -> Result<(), CliError> {
    let Some(uri) = action else {
        return Err(CliError::Server(format!(
            "{what}: the server named no action to wait for"
        )));
    };
    let failed: Option<String> = wait_for(ctx, what, || async {
        let a = ctx.client.get(uri, what).await?;
        Ok(match a["state"].as_str() {
            Some("Success") => Some(None),
            Some("Failed") => Some(Some(cell(&a["message"]))),
            _ => None,
        })
    })
    .await?;
    match failed {
        Some(message) => Err(CliError::Server(format!("{what} failed: {message}"))),
        None => Ok(()),
    }
}

/// Every object of a list, following `meta.next` page by page.
async fn all_pages(ctx: &Ctx, first: String, what: &str) -> Result<Vec<Value>, CliError> {
    let mut objects = Vec::new();
    let mut next = Some(first);
    while let Some(url) = next {
        let page = ctx.client.get(&url, what).await?;
        if let Some(items) = page["objects"].as_array() {
            objects.extend(items.iter().cloned());
        }
        next = page["meta"]["next"].as_str().map(str::to_owned);
    }
    Ok(objects)
}

const SERVICE_COLUMNS: [Column; 9] = [
    ("NAME", |s| cell(&s["name"])),
    ("UUID", |s| short(&s["uuid"])),
    ("STATUS", |s| cell(&s["state"])),
    ("#CONTAINERS", |s| cell(&s["current_num_containers"])),
    ("IMAGE", |s| cell(&s["image_name"])),
    ("AUTORESTART", |s| cell(&s["autorestart"])),
    ("AUTODESTROY", |s| cell(&s["autodestroy"])),
    ("DEPLOYED", |s| ago(&s["deployed_datetime"])),
    ("PUBLIC DNS", |s| cell(&s["public_dns"])),
];

const CONTAINER_COLUMNS: [Column; 8] = [
    ("NAME", |c| cell(&c["name"])),
    ("UUID", |c| short(&c["uuid"])),
    ("STATUS", |c| cell(&c["state"])),
    ("IMAGE", |c| cell(&c["image_name"])),
    ("EXIT CODE", |c| cell(&c["exit_code"])),
    ("AUTODESTROY", |c| cell(&c["autodestroy"])),
    ("DEPLOYED", |c| ago(&c["deployed_datetime"])),
    ("PUBLIC DNS", |c| cell(&c["public_dns"])),
];

/// `ps`: a table (UUIDs only with `quiet`), or the objects as JSON.
fn list(ctx: &Ctx, items: &[Value], quiet: bool, columns: &[Column]) {
    match ctx.output {
        Output::Json => ctx.json(&Value::Array(items.to_vec())),
        Output::Table if quiet => items.iter().for_each(|o| println!("{}", uuid_of(o))),
        Output::Table => objects(items, columns, Some("STATUS")).print(),
    }
}

/// Prints what acted on: UUIDs for people, the objects for scripts.
fn acted(ctx: &Ctx, objects: &[Value]) {
    match ctx.output {
        Output::Table => {
            for o in objects {
                println!("{}", uuid_of(o));
            }
        }
        Output::Json => ctx.json(&Value::Array(objects.to_vec())),
    }
}

/// The body of a service's create from the flags.
fn spec_body(spec: &ServiceSpecArgs) -> Value {
    let mut body = Map::new();
    body.insert("image".into(), json!(spec.image));
    if let Some(n) = &spec.name {
        body.insert("name".into(), json!(n));
    }
    if let Some(t) = spec.target {
        body.insert("target_num_containers".into(), json!(t));
    }
    policy_fields(&spec.policy, &mut body);
    Value::Object(body)
}

/// The policy flags given, as the service's fields.
fn policy_fields(p: &ServicePolicy, body: &mut Map<String, Value>) {
    if let Some(v) = &p.autorestart {
        body.insert("autorestart".into(), json!(v.to_ascii_uppercase()));
    }
    if let Some(v) = &p.autodestroy {
        body.insert("autodestroy".into(), json!(v.to_ascii_uppercase()));
    }
    if let Some(v) = &p.autokill {
        body.insert("autokill".into(), v.clone());
    }
}

/// Sends `method` to `path` (an action of a `kind` object); with `wait`, follows its action to
/// the end. Returns the object as it is then (a redeployed container is the new one).
async fn act_on(
    ctx: &Ctx,
    kind: Kind,
    method: &str,
    path: &str,
    wait: bool,
    what: &str,
) -> Result<Value, CliError> {
    let answer = ctx.client.send(method, path, None).await?;
    let action = answer.action.clone();
    let shown = answer.ok(what)?;
    if !wait {
        return Ok(shown);
    }
    follow(ctx, action.as_deref(), what).await?;
    let now = uuid_of(&shown);
    // Gone (terminated long enough ago to be forgotten): what the action answered.
    match ctx
        .client
        .send("GET", &format!("{}{now}/", kind.path()), None)
        .await?
    {
        a if a.status == 200 => a.json(),
        _ => Ok(shown),
    }
}

/// Acts on every target with `act` (`start`, `stop`, `redeploy`, or `terminate`).
async fn act_on_all(ctx: &Ctx, kind: Kind, t: &Targets, act: &str) -> Result<(), CliError> {
    let mut done = Vec::new();
    for id in &t.ids {
        let uuid = uuid_of(&resolve(ctx, kind, id).await?);
        let what = format!("{act} of {} {id}", kind.noun());
        let (method, path) = match act {
            "terminate" => ("DELETE", format!("{}{uuid}/", kind.path())),
            _ => ("POST", format!("{}{uuid}/{act}/", kind.path())),
        };
        done.push(act_on(ctx, kind, method, &path, t.wait, &what).await?);
    }
    acted(ctx, &done);
    Ok(())
}

/// `autokill service …`.
pub async fn service(ctx: &Ctx, verb: ServiceVerb) -> Result<(), CliError> {
    let kind = Kind::Service;
    match verb {
        ServiceVerb::Run { spec, wait } => {
            let created = ctx
                .client
                .send("POST", kind.path(), Some(&spec_body(&spec)))
                .await?
                .ok("service run")?;
            let uuid = uuid_of(&created);
            let what = format!("start of service {}", cell(&created["name"]));
            let path = format!("{}{uuid}/start/", kind.path());
            let shown = act_on(ctx, kind, "POST", &path, wait, &what).await?;
            acted(ctx, &[shown]);
            Ok(())
        }
        ServiceVerb::Create { spec } => {
            let created = ctx
                .client
                .send("POST", kind.path(), Some(&spec_body(&spec)))
                .await?
                .ok("service create")?;
            acted(ctx, &[created]);
            Ok(())
        }
        ServiceVerb::Ps { status, quiet } => {
            let mut url = format!("{}?limit=100", kind.path());
            if let Some(s) = &status {
                url.push_str(&format!("&state={}", segment(s)));
            }
            let services = all_pages(ctx, url, "service ps").await?;
            list(ctx, &services, quiet, &SERVICE_COLUMNS);
            Ok(())
        }
        ServiceVerb::Inspect(ids) => inspect(ctx, kind, &ids.ids).await,
        ServiceVerb::Set {
            ids,
            policy,
            target,
            image,
            redeploy,
        } => {
            let mut body = Map::new();
            policy_fields(&policy, &mut body);
            if let Some(t) = target {
                body.insert("target_num_containers".into(), json!(t));
            }
            if let Some(i) = image {
                body.insert("image".into(), json!(i));
            }
            if body.is_empty() && !redeploy {
                return Err(CliError::Usage(
                    "service set: nothing to set; give --autorestart, --autodestroy, -t, \
                     --autokill, --image or --redeploy"
                        .into(),
                ));
            }
            let body = Value::Object(body);
            let mut done = Vec::new();
            for id in &ids.ids {
                let obj = resolve(ctx, kind, id).await?;
                let uuid = uuid_of(&obj);
                let mut shown = ctx
                    .client
                    .send("PATCH", &format!("{}{uuid}/", kind.path()), Some(&body))
                    .await?
                    .ok(&format!("service set {id}"))?;
                if redeploy {
                    shown = ctx
                        .client
                        .send("POST", &format!("{}{uuid}/redeploy/", kind.path()), None)
                        .await?
                        .ok(&format!("redeploy of service {id}"))?;
                }
                done.push(shown);
            }
            acted(ctx, &done);
            Ok(())
        }
        ServiceVerb::Scale { ids, target, wait } => {
            let body = json!({"target_num_containers": target});
            let mut done = Vec::new();
            for id in &ids {
                let obj = resolve(ctx, kind, id).await?;
                let uuid = uuid_of(&obj);
                let what = format!("scale of service {id}");
                ctx.client
                    .send("PATCH", &format!("{}{uuid}/", kind.path()), Some(&body))
                    .await?
                    .ok(&what)?;
                let path = format!("{}{uuid}/scale/", kind.path());
                let shown = act_on(ctx, kind, "POST", &path, wait, &what).await?;
                done.push(shown);
            }
            acted(ctx, &done);
            Ok(())
        }
        ServiceVerb::Start(t) => act_on_all(ctx, kind, &t, "start").await,
        ServiceVerb::Stop(t) => act_on_all(ctx, kind, &t, "stop").await,
        ServiceVerb::Redeploy(t) => act_on_all(ctx, kind, &t, "redeploy").await,
        ServiceVerb::Terminate(t) => act_on_all(ctx, kind, &t, "terminate").await,
    }
}

/// `inspect`: the objects whole, as JSON (one, or an array of several).
async fn inspect(ctx: &Ctx, kind: Kind, ids: &[String]) -> Result<(), CliError> {
    let mut found = Vec::new();
    for id in ids {
        found.push(resolve(ctx, kind, id).await?);
    }
    match found.as_slice() {
        [one] => ctx.json(one),
        _ => ctx.json(&Value::Array(found)),
    }
    Ok(())
}

/// `autokill container …`.
pub async fn container(ctx: &Ctx, verb: ContainerVerb) -> Result<(), CliError> {
    let kind = Kind::Container;
    match verb {
        ContainerVerb::Ps {
            status,
            service,
            quiet,
        } => {
            let mut url = format!("{}?limit=100", kind.path());
            if let Some(s) = &status {
                url.push_str(&format!("&state={}", segment(s)));
            }
            if let Some(s) = &service {
                let found = resolve(ctx, Kind::Service, s).await?;
                url.push_str(&format!("&service={}", uuid_of(&found)));
            }
            let containers = all_pages(ctx, url, "container ps").await?;
            list(ctx, &containers, quiet, &CONTAINER_COLUMNS);
            Ok(())
        }
        ContainerVerb::Inspect(ids) => inspect(ctx, kind, &ids.ids).await,
        ContainerVerb::Start(t) => act_on_all(ctx, kind, &t, "start").await,
        ContainerVerb::Stop(t) => act_on_all(ctx, kind, &t, "stop").await,
        ContainerVerb::Redeploy(t) => act_on_all(ctx, kind, &t, "redeploy").await,
        ContainerVerb::Terminate(t) => act_on_all(ctx, kind, &t, "terminate").await,
    }
}
