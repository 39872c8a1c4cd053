//! `/api/v1/container/`: list and read containers (every instance but templates, and those
//! terminated lately), and terminate, start, stop or redeploy one.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::actions::Watch;
use super::wire::{self, Query};
use super::{
    Api, Changed, Object, REDEPLOY_QUERY, Refused, Req, all_containers, change, check_query,
    find_container, find_service, no_body, show,
};
use crate::controller::api::{ApiError, Call, Ref, Reply};
use crate::controller::{ContainerState, InstanceState};

/// `GET /api/v1/container/`.
pub async fn list(State(api): State<Api>, uri: Uri) -> Response {
    let filters = [
        "limit",
        "offset",
        "state",
        "name",
        "unique_name",
        "service",
        "uuid",
        "uuid__startswith",
        "format",
    ];
    let run = || -> Result<Response, ApiError> {
        let query = Query::parse(&uri, &filters)?;
        let states = ContainerState::ALL.map(ContainerState::as_str);
        let state = query.one_of("state", &states)?;
        query.one_of("format", &["json"])?;
        let view = api.admin.published.view.load();
        let now = SystemTime::now();
        // `service` is a resource URI (as python-tutum and the tutum CLI send it), a UUID or
        // a name.
        let service = match query.get("service") {
            None => None,
            Some(s) => {
                let key = s
                    .strip_prefix("/api/v1/service/")
                    .map_or(s, |rest| rest.trim_end_matches('/'));
                match find_service(&view, &Ref::parse(key), now) {
                    Some(found) => Some(found.id),
                    None => {
                        return Err(ApiError::bad_request(format!("service: no service {s:?}")));
                    }
                }
            }
        };
        let name = query.get("name").or(query.get("unique_name"));
        let uuid = query.get("uuid").map(str::to_ascii_lowercase);
        let prefix = query.get("uuid__startswith").map(str::to_ascii_lowercase);
        let items: Vec<_> = all_containers(&view, now)
            .into_iter()
            .filter(|c| state.is_none_or(|want| c.state.as_str() == want))
            .filter(|c| service.is_none_or(|s| c.service == Some(s)))
            .filter(|c| name.is_none_or(|n| &*c.name == n))
            .filter(|c| uuid.as_ref().is_none_or(|u| c.id.to_string() == *u))
            .filter(|c| {
                prefix
                    .as_ref()
                    .is_none_or(|p| c.id.to_string().starts_with(p.as_str()))
            })
            .collect();
        let base = api.admin.base_domain.clone();
        wire::page("/api/v1/container/", &query, items, |c| {
            show::container(&c, &base)
        })
    };
    run().unwrap_or_else(wire::api_error)
}

/// `GET /api/v1/container/{id}/`.
pub async fn get(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let view = api.admin.published.view.load();
    let r = Ref::parse(&id);
    match find_container(&view, &r, SystemTime::now()) {
        Some(c) => axum::Json(show::container(&c, &api.admin.base_domain)).into_response(),
        None => wire::error(StatusCode::NOT_FOUND, not_found(&view, &r, &id).message),
    }
}

/// "no container", or why a template is not one.
fn not_found(view: &crate::controller::View, r: &Ref, id: &str) -> ApiError {
    let template = view.instances.iter().any(|i| {
        i.state == InstanceState::Template
            && match r {
                Ref::Id(want) => *want == i.id,
                Ref::Name(want) => **want == *i.name,
            }
    });
    if template {
        ApiError::not_found(format!(
            "{id} is a template, not a container (see /v1/instances/templates)"
        ))
    } else {
        ApiError::not_found(format!("no container {id}"))
    }
}

/// The live container `id` names, as an object of a change.
fn target(api: &Api, id: &str) -> Result<uuid::Uuid, Refused> {
    let view = api.admin.published.view.load();
    let r = Ref::parse(id);
    match find_container(&view, &r, SystemTime::now()) {
        Some(c) if c.state == ContainerState::Terminated => Err((
            Some(Object::Container(c.id)),
            ApiError::conflict(format!("container {id} is terminated")),
        )),
        Some(c) => Ok(c.id),
        None => Err((None, not_found(&view, &r, id))),
    }
}

/// A container action: no body, query parameters only of `query`, 202 with the container —
/// for a redeploy, the new one that replaced it.
async fn act(
    api: Api,
    req: Req,
    query: &[&str],
    name: &'static str,
    make: fn(Ref) -> Call,
    watch: fn(uuid::Uuid) -> Watch,
) -> Response {
    let work = async {
        let cid = target(&api, &req.id)?;
        let object = Some(Object::Container(cid));
        check_query(&req.uri, query).map_err(|e| (object, e))?;
        no_body(&req.body).map_err(|e| (object, e))?;
        let reply = api
            .admin
            .controller
            .call(make(Ref::Id(cid)))
            .await
            .map_err(|e| (object, e))?;
        let now_id = match reply {
            Reply::Instance(i) => i.id,
            Reply::Group(_) => cid,
        };
        Ok(Changed {
            object: Object::Container(now_id),
            watch: Some(watch(now_id)),
        })
    };
    change(&api, &req, name, StatusCode::ACCEPTED, work).await
}

/// `DELETE /api/v1/container/{id}/`: 202 with the container, `Terminating`.
pub async fn terminate(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        &[],
        "Container Terminate",
        Call::DeleteInstance,
        Watch::ContainerGone,
    )
    .await
}

/// `POST /api/v1/container/{id}/start/`.
pub async fn start(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        &[],
        "Container Start",
        Call::StartInstance,
        Watch::ContainerStarted,
    )
    .await
}

/// `POST /api/v1/container/{id}/stop/`.
pub async fn stop(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        &[],
        "Container Stop",
        Call::StopInstance,
        Watch::ContainerStopped,
    )
    .await
}

/// `POST /api/v1/container/{id}/redeploy/`: the container is replaced by a new one of the
/// same name; the answer (and the action's object) is the new one.
pub async fn redeploy(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        REDEPLOY_QUERY,
        "Container Redeploy",
        Call::RedeployContainer,
        Watch::ContainerStarted,
    )
    .await
}
