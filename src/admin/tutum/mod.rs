//! The Tutum-compatible API, `/api/v1`, answering as Tutum's API reference shows and as the
//! python-tutum 0.21 SDK expects. `{id}` is a UUID or a name; every path answers the same with
//! or without its trailing slash.
//!
//! * `GET /api/v1/service/` — services, and those terminated in the last 15 minutes:
//!   `{"meta":{limit,offset,total_count,next,previous},"objects":[…]}`, filters `state`,
//!   `name`, `unique_name`, `uuid`, `uuid__startswith`.
//! * `POST /api/v1/service/` — create a service (`image`, `name`, `target_num_containers`,
//!   `autorestart`, `autodestroy`, `autokill`); its containers are created, not started (`Init`).
//! * `GET`, `PATCH` (only the fields sent change), `DELETE` (terminate) `/api/v1/service/{id}/`.
//! * `POST /api/v1/service/{id}/start/`, `stop/`, `scale/`, `redeploy/`.
//! * `GET /api/v1/container/` (filters `state`, `name`, `unique_name`, `service`, `uuid`,
//!   `uuid__startswith`), `GET`, `DELETE /api/v1/container/{id}/`,
//!   `POST /api/v1/container/{id}/start/`, `stop/`, `redeploy/`.
//! * `GET /api/v1/action/` (filters `state`, `object`), `GET /api/v1/action/{uuid}/`.
//! * `GET /api/v1/auth/` — who the credentials are.
//!
//! Every change answers with `X-Tutum-Action-URI` (its action is readable until 1,000 newer
//! ones have pushed it out); every refusal is `{"error": "…"}` with its status.
//!
//! Services and containers are the controller's service groups and instances, read from the
//! published view like `/v1` reads them: a service made here is a `/v1` service group, its
//! containers `/v1` instances.
//!
//! Authentication: `Authorization: ApiKey <user>:<key>` or `Basic base64(<user>:<key>)` against
//! `admin.api_users`, or `Bearer <admin.token>`, compared in constant time. With neither users
//! nor a token configured the API is open, which the configuration allows on loopback only.

mod actions;
mod containers;
mod services;
mod show;
pub(super) mod wire;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::{AdminState, constant_time_eq};
use crate::controller::api::Ref;
use crate::controller::{ContainerView, ServiceView, View};

/// What the `/api/v1` handlers share.
#[derive(Clone)]
struct Api {
    admin: AdminState,
    actions: Arc<actions::Log>,
}

/// The `/api/v1` router, to be nested at `/api/v1` in the admin router.
pub fn router<S: Clone + Send + Sync + 'static>(admin: &AdminState) -> Router<S> {
    let api = Api {
        admin: admin.clone(),
        actions: Arc::new(actions::Log::default()),
    };
    let routes: [(&str, MethodRouter<Api>); 12] = [
        ("/service/", get(services::list).post(services::create)),
        (
            "/service/{id}/",
            get(services::get)
                .patch(services::patch)
                .delete(services::terminate),
        ),
        ("/service/{id}/start/", post(services::start)),
        ("/service/{id}/stop/", post(services::stop)),
        ("/service/{id}/scale/", post(services::scale)),
        ("/service/{id}/redeploy/", post(services::redeploy)),
        ("/container/", get(containers::list)),
        (
            "/container/{id}/",
            get(containers::get).delete(containers::terminate),
        ),
        ("/container/{id}/start/", post(containers::start)),
        ("/container/{id}/stop/", post(containers::stop)),
        ("/container/{id}/redeploy/", post(containers::redeploy)),
        ("/auth/", get(auth)),
    ];
    let mut router = Router::new()
        .route("/action/", get(actions::list))
        .route("/action", get(actions::list))
        .route("/action/{id}/", get(actions::get))
        .route("/action/{id}", get(actions::get));
    for (path, handler) in routes {
        // The reference writes every path with a trailing slash; clients that leave it out
        // get the same answer (never a 404 or a redirect a POST would not follow).
        router = router
            .route(path, handler.clone())
            .route(path.trim_end_matches('/'), handler);
    }
    router
        .method_not_allowed_fallback(|| async {
            wire::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            )
        })
        .fallback(|| async { wire::error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api)
}

/// Who made a request: an `admin.api_users` name, or `None` for the bearer token or an open API.
#[derive(Debug, Clone)]
struct Principal(Option<String>);

/// Who an `Authorization` value names for `/api/v1` (and the web page, which takes the same
/// credentials): `Some(Some(user))` for an `admin.api_users` entry, `Some(None)` for the bearer
/// token or an open API (neither users nor a token configured), `None` when refused.
pub(in crate::admin) fn principal(
    admin: &AdminState,
    authorization: Option<&str>,
) -> Option<Option<String>> {
    let users = &admin.api_users;
    let token = admin.token.as_deref();
    if users.is_empty() && token.is_none() {
        return Some(None);
    }
    let given = authorization
        .and_then(|v| v.trim().split_once(' '))
        .map(|(scheme, rest)| (scheme.to_ascii_lowercase(), rest.trim().to_owned()));
    match given {
        // RFC 9110 §11.1: the scheme name is case-insensitive.
        Some((scheme, rest)) if scheme == "bearer" => token
            .filter(|t| constant_time_eq(rest.as_bytes(), t.as_bytes()))
            .map(|_| None),
        Some((scheme, rest)) if scheme == "apikey" => user_of(users, &rest),
        Some((scheme, rest)) if scheme == "basic" => {
            decode_base64(&rest).and_then(|pair| user_of(users, &String::from_utf8_lossy(&pair)))
        }
        _ => None,
    }
}

/// Checks the credentials when users or a token are configured; 401 otherwise.
async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match principal(&api.admin, authorization) {
        Some(who) => {
            req.extensions_mut().insert(Principal(who));
            next.run(req).await
        }
        // The admin router's `challenge` adds the `WWW-Authenticate` naming the schemes.
        None => wire::error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong credentials: send Authorization: ApiKey <user>:<apikey>, \
             Basic base64(<user>:<apikey>) or Bearer <token>",
        ),
    }
}

/// The user `user:key` names, if it is one of `users` with that key. Every entry is compared in
/// full, so the time taken tells nothing about which user exists or where a key differs.
fn user_of(users: &[crate::config::ApiUser], pair: &str) -> Option<Option<String>> {
    let (user, key) = pair.split_once(':')?;
    let mut found = None;
    for u in users {
        let matches = constant_time_eq(user.as_bytes(), u.user.as_bytes())
            & constant_time_eq(key.as_bytes(), u.apikey.as_bytes());
        if matches {
            found = Some(Some(u.user.clone()));
        }
    }
    found
}

/// Standard base64 (RFC 4648 §4, padding optional), as Basic credentials are written.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `GET /api/v1/auth/`: the credentials are good (the middleware let the request through).
async fn auth(req: Request) -> Response {
    let who = req
        .extensions()
        .get::<Principal>()
        .and_then(|p| p.0.clone());
    axum::Json(json!({
        "meta": {"limit": 25, "offset": 0, "total_count": 1, "next": null, "previous": null},
        "objects": [{"user": who, "resource_uri": "/api/v1/auth/"}],
    }))
    .into_response()
}

// ---- reading the view --------------------------------------------------------------------

fn matches(r: &Ref, id: uuid::Uuid, name: &str) -> bool {
    match r {
        Ref::Id(want) => *want == id,
        Ref::Name(want) => want == name,
    }
}

/// Whether a terminated resource is still shown.
fn recent(terminated_at: Option<SystemTime>, now: SystemTime) -> bool {
    terminated_at.is_none_or(|t| {
        now.duration_since(t).unwrap_or_default() <= crate::controller::TERMINATED_RETENTION
    })
}

/// Every service shown: the live ones, then those terminated lately (newest last).
pub(in crate::admin) fn all_services(
    view: &View,
    now: SystemTime,
) -> impl Iterator<Item = &ServiceView> {
    let live = &view.tutum.services;
    view.tutum.services.iter().chain(
        view.tutum
            .terminated
            .services
            .iter()
            .filter(move |s| recent(s.terminated_at, now) && !live.iter().any(|l| l.id == s.id)),
    )
}

/// The service `r` names: a live one first, else one terminated lately.
pub(in crate::admin) fn find_service<'v>(
    view: &'v View,
    r: &Ref,
    now: SystemTime,
) -> Option<&'v ServiceView> {
    let mut found = all_services(view, now).filter(|s| matches(r, s.id, &s.name));
    let first = found.next();
    // By name, the newest terminated one of several (names are reused after a terminate).
    match (r, first) {
        (Ref::Name(_), Some(s)) if s.terminated_at.is_some() => found.last().or(Some(s)),
        (_, first) => first,
    }
}

/// Every container shown: instances (templates are not containers), those being terminated,
/// then those terminated lately.
pub(in crate::admin) fn all_containers(view: &View, now: SystemTime) -> Vec<ContainerView> {
    let mut out: Vec<ContainerView> = view
        .instances
        .iter()
        .filter(|i| i.state != crate::controller::InstanceState::Template)
        .map(ContainerView::of)
        .collect();
    out.extend(view.tutum.terminating.iter().cloned());
    let live: std::collections::HashSet<uuid::Uuid> = out.iter().map(|c| c.id).collect();
    out.extend(
        view.tutum
            .terminated
            .containers
            .iter()
            .filter(|c| recent(c.terminated_at, now) && !live.contains(&c.id))
            .cloned(),
    );
    out
}

/// The container `r` names (the newest of several by name: a live one before a terminated one).
pub(in crate::admin) fn find_container(
    view: &View,
    r: &Ref,
    now: SystemTime,
) -> Option<ContainerView> {
    let live = match r {
        Ref::Id(id) => view.instances.get(id),
        Ref::Name(name) => view.instances.named(name),
    };
    if let Some(i) = live.filter(|i| i.state != crate::controller::InstanceState::Template) {
        return Some(ContainerView::of(i));
    }
    view.tutum
        .terminating
        .iter()
        .chain(view.tutum.terminated.containers.iter().rev())
        .find(|c| matches(r, c.id, &c.name) && recent(c.terminated_at, now))
        .cloned()
}

/// What every list takes: which state, and `name` (or `unique_name`), `uuid`,
/// `uuid__startswith`, checked (a state not among `states` is refused, naming them).
struct Filters {
    state: Option<&'static str>,
    name: Option<String>,
    uuid: Option<String>,
    prefix: Option<String>,
}

/// The query parameters of every list; a list may take more (`extra`).
const LIST_QUERY: [&str; 8] = [
    "limit",
    "offset",
    "format",
    "state",
    "name",
    "unique_name",
    "uuid",
    "uuid__startswith",
];

impl Filters {
    /// Reads the query of a list of objects in `states`, with the `extra` parameters it takes.
    fn parse(
        uri: &axum::http::Uri,
        states: &[&'static str],
        extra: &[&str],
    ) -> Result<(wire::Query, Filters), crate::controller::api::ApiError> {
        let allowed: Vec<&str> = LIST_QUERY.iter().chain(extra).copied().collect();
        let query = wire::Query::parse(uri, &allowed)?;
        query.one_of("format", &["json"])?;
        let filters = Filters {
            state: query.one_of("state", states)?,
            name: query
                .get("name")
                .or(query.get("unique_name"))
                .map(str::to_owned),
            uuid: query.get("uuid").map(str::to_ascii_lowercase),
            prefix: query.get("uuid__startswith").map(str::to_ascii_lowercase),
        };
        Ok((query, filters))
    }

    /// Whether an object in `state` with `id` and `name` passes.
    fn keep(&self, state: &str, id: uuid::Uuid, name: &str) -> bool {
        let id = id.to_string();
        self.state.is_none_or(|s| s == state)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.uuid.as_deref().is_none_or(|u| u == id)
            && self.prefix.as_deref().is_none_or(|p| id.starts_with(p))
    }

    /// `items` that pass; `state_of` says whether one is terminated. A name names the live
    /// object when there is one (names are unique among live resources, and are given again
    /// after a redeploy or a terminate): asked by `name` without a `state`, terminated objects
    /// of that name are shown only when no live one has it. python-tutum's
    /// `Utils.fetch_remote_*` find objects by name this way, and would otherwise see several.
    fn apply<T>(
        &self,
        items: impl Iterator<Item = T>,
        fields: impl Fn(&T) -> (&str, uuid::Uuid, &str),
    ) -> Vec<T> {
        let kept: Vec<T> = items
            .filter(|x| {
                let (state, id, name) = fields(x);
                self.keep(state, id, name)
            })
            .collect();
        let terminated = |x: &T| fields(x).0 == "Terminated";
        if self.name.is_some() && self.state.is_none() && kept.iter().any(|x| !terminated(x)) {
            kept.into_iter().filter(|x| !terminated(x)).collect()
        } else {
            kept
        }
    }
}

/// What a handler needs to record an action: the request's method, path and client.
#[derive(Debug, Clone)]
struct Meta {
    method: Method,
    path: String,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl Meta {
    fn of(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) -> Meta {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Meta {
            method: method.clone(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
            user_agent: text("user-agent"),
            ip: text("x-forwarded-for")
                .and_then(|v| v.split(',').next().map(|s| s.trim().to_owned())),
        }
    }
}

/// The query a redeploy takes: python-tutum's `reuse_volumes`.
const REDEPLOY_QUERY: &[&str] = &["reuse_volumes"];

/// Refuses query parameters other than `allowed`; `reuse_volumes` must be a boolean as Python
/// writes it.
fn check_query(
    uri: &axum::http::Uri,
    allowed: &[&str],
) -> Result<(), crate::controller::api::ApiError> {
    let query = wire::Query::parse(uri, allowed)?;
    query.one_of(
        "reuse_volumes",
        &["True", "False", "true", "false", "1", "0"],
    )?;
    Ok(())
}

/// A body that must carry nothing (actions): empty, or `{}`.
fn no_body(body: &[u8]) -> Result<(), crate::controller::api::ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    wire::body::<Empty>(body, &[]).map(|_| ())
}

/// The JSON of a value shown to a client, for an action's `body`.
fn body_text(body: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned())
}

/// What a change is about.
#[derive(Debug, Clone, Copy)]
enum Object {
    Service(uuid::Uuid),
    Container(uuid::Uuid),
}

impl Object {
    /// The same kind of object with another id (a container's redeploy makes a new one).
    fn with_id(self, id: uuid::Uuid) -> Object {
        match self {
            Object::Service(_) => Object::Service(id),
            Object::Container(_) => Object::Container(id),
        }
    }

    fn uri(self) -> String {
        match self {
            Object::Service(id) => show::service_uri(id),
            Object::Container(id) => show::container_uri(id),
        }
    }
}

/// What a change did: the object it is about, and what its action waits for (`None`: done).
struct Changed {
    object: Object,
    watch: Option<actions::Watch>,
}

/// Why a change was refused, and the object, if it was found.
type Refused = (Option<Object>, crate::controller::api::ApiError);

/// Answers a change: the object as it is now with `status`, or the refusal; either way with the
/// action that records it in `X-Tutum-Action-URI`.
async fn change(
    api: &Api,
    req: &Req,
    name: &'static str,
    status: StatusCode,
    work: impl std::future::Future<Output = Result<Changed, Refused>>,
) -> Response {
    let result = work.await;
    let body = body_text(&req.body);
    let meta = req.meta.clone();
    match result {
        Ok(changed) => {
            let view = api.admin.published.view.load();
            let now = SystemTime::now();
            let shown = match changed.object {
                Object::Service(id) => find_service(&view, &Ref::Id(id), now).map(show::service),
                Object::Container(id) => find_container(&view, &Ref::Id(id), now)
                    .map(|c| show::container(&c, &api.admin.base_domain)),
            };
            let action = api.actions.record(
                meta,
                name,
                Some(changed.object.uri()),
                body,
                Ok(changed.watch),
            );
            match shown {
                Some(shown) => wire::object(status, shown, Some(&action)),
                // Answered once published, so it is there; gone since, by another change.
                None => wire::object(
                    status,
                    json!({"resource_uri": changed.object.uri()}),
                    Some(&action),
                ),
            }
        }
        Err((object, err)) => {
            let action =
                api.actions
                    .record(meta, name, object.map(Object::uri), body, Err(&err.message));
            let mut resp = wire::api_error(err);
            if let Ok(v) = header::HeaderValue::from_str(&action) {
                resp.headers_mut().insert("x-tutum-action-uri", v);
            }
            resp
        }
    }
}

/// A request that changes something: its `{id}` (empty where the path has none), its query,
/// its body, and what its action records about it.
struct Req {
    id: String,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
    meta: Meta,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Req {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Req, Response> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let id =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(&mut parts, state)
                .await
                .ok()
                .and_then(|p| p.0.into_iter().find(|(k, _)| k == "id"))
                .map(|(_, v)| v)
                .unwrap_or_default();
        let uri = parts.uri.clone();
        let meta = Meta::of(&parts.method, &parts.uri, &parts.headers);
        // Read as every admin body is, within `admin.max_body_size` (the admin router's
        // `limits` words the 413).
        let body = axum::body::Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|rejection| wire::error(rejection.status(), rejection.body_text()))?;
        Ok(Req {
            id,
            uri,
            body,
            meta,
        })
    }
}

/// A verb of a service or a container: an action that takes no body.
struct Verb {
    /// The action's name (`Service Start`, …).
    name: &'static str,
    /// The query parameters it takes.
    query: &'static [&'static str],
    /// The controller call.
    make: fn(Ref) -> crate::controller::api::Call,
    /// What its action waits for.
    watch: fn(uuid::Uuid) -> actions::Watch,
}

/// Runs `verb` on the object `target` finds for the path's `{id}`: 202 with the object as it
/// is after (for a redeployed container, the new one).
async fn act(
    api: Api,
    req: Req,
    target: fn(&Api, &str) -> Result<Object, Refused>,
    verb: Verb,
) -> Response {
    let work = async {
        let object = target(&api, &req.id)?;
        let id = match object {
            Object::Service(id) | Object::Container(id) => id,
        };
        check_query(&req.uri, verb.query).map_err(|e| (Some(object), e))?;
        no_body(&req.body).map_err(|e| (Some(object), e))?;
        let reply = api
            .admin
            .controller
            .call((verb.make)(Ref::Id(id)))
            .await
            .map_err(|e| (Some(object), e))?;
        let now = reply_id(reply, id);
        Ok(Changed {
            object: object.with_id(now),
            watch: Some((verb.watch)(now)),
        })
    };
    change(&api, &req, verb.name, StatusCode::ACCEPTED, work).await
}

/// The resource a reply is about (a redeployed container's is the new one); `otherwise` for a
/// reply about none (a batch, which `/api/v1` does not send).
fn reply_id(reply: crate::controller::api::Reply, otherwise: uuid::Uuid) -> uuid::Uuid {
    use crate::controller::api::Reply;
    match reply {
        Reply::Instance(i) | Reply::Moved(i, _) => i.id,
        Reply::Group(g) => g.id,
        Reply::Batch(_) => otherwise,
    }
}
