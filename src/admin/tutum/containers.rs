//! `/api/v1/container/`: list and read containers (every instance but templates, and those
//! terminated lately), and terminate, start, stop or redeploy one.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::actions::Watch;
use super::wire;
use super::{
    Api, Filters, Object, REDEPLOY_QUERY, Refused, Req, Verb, act, all_containers, find_container,
    find_service, show,
};
use crate::controller::api::{ApiError, Call, Ref};
use crate::controller::{ContainerState, InstanceState};

/// `GET /api/v1/container/`: also by `service`, a resource URI (as python-tutum and the tutum
/// CLI send it), a UUID or a name.
pub async fn list(State(api): State<Api>, uri: Uri) -> Response {
    let run = || -> Result<Response, ApiError> {
        let states = ContainerState::ALL.map(ContainerState::as_str);
        let (query, filters) = Filters::parse(&uri, &states, &["service"])?;
        let view = api.admin.published.view.load();
        let now = SystemTime::now();
        let service = match query.get("service") {
            None => None,
            Some(s) => {
                let key = s
                    .strip_prefix("/api/v1/service/")
                    .map_or(s, |rest| rest.trim_end_matches('/'));
                let found = find_service(&view, &Ref::parse(key), now)
                    .ok_or_else(|| ApiError::bad_request(format!("service: no service {s:?}")))?;
                Some(found.id)
            }
        };
        let of_service = all_containers(&view, now)
            .into_iter()
            .filter(|c| service.is_none_or(|s| c.service == Some(s)));
        let items = filters.apply(of_service, |c| (c.state.as_str(), c.id, &c.name));
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

/// The live container `id` names, as the object of a change.
fn target(api: &Api, id: &str) -> Result<Object, Refused> {
    let view = api.admin.published.view.load();
    let r = Ref::parse(id);
    match find_container(&view, &r, SystemTime::now()) {
        Some(c) if c.state == ContainerState::Terminated => Err((
            Some(Object::Container(c.id)),
            ApiError::conflict(format!("container {id} is terminated")),
        )),
        Some(c) => Ok(Object::Container(c.id)),
        None => Err((None, not_found(&view, &r, id))),
    }
}

/// `DELETE /api/v1/container/{id}/`: 202 with the container, `Terminating`.
pub async fn terminate(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Container Terminate",
            query: &[],
            make: Call::DeleteInstance,
            watch: Watch::ContainerGone,
        },
    )
    .await
}

/// `POST /api/v1/container/{id}/start/`.
pub async fn start(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Container Start",
            query: &[],
            make: Call::StartInstance,
            watch: Watch::ContainerStarted,
        },
    )
    .await
}

/// `POST /api/v1/container/{id}/stop/`.
pub async fn stop(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Container Stop",
            query: &[],
            make: Call::StopInstance,
            watch: Watch::ContainerStopped,
        },
    )
    .await
}

/// `POST /api/v1/container/{id}/redeploy/`: the container is replaced by a new one of the
/// same name; the answer (and the action's object) is the new one.
pub async fn redeploy(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Container Redeploy",
            query: REDEPLOY_QUERY,
            make: Call::RedeployContainer,
            watch: Watch::ContainerStarted,
        },
    )
    .await
}
