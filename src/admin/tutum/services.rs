//! `/api/v1/service/`: list, create, read, change and terminate services, and their start,
//! stop, scale and redeploy actions.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, de};

use super::actions::Watch;
use super::wire::{self, Query};
use super::{
    Api, Changed, Filters, Object, REDEPLOY_QUERY, Refused, Req, Verb, act, all_services, change,
    find_service, reply_id, show,
};
use crate::admin::v1::wire::{Label, RawAutokill, WireAutodestroy, WireRestartPolicy};
use crate::controller::api::{ApiError, Call, NewService, Ref, ServicePatch};
use crate::controller::{MAX_CONTAINERS, MAX_SERVICE_NAME, ServiceState};

/// A service name: a DNS label short enough for its containers' `-<n>`.
#[derive(Debug)]
struct ServiceName(String);

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ServiceName, D::Error> {
        let Label(name) = Label::deserialize(d)?;
        if name.len() > MAX_SERVICE_NAME {
            return Err(de::Error::custom(format!(
                "{name:?} is {} characters; at most {MAX_SERVICE_NAME} (its containers are named <name>-<n>)",
                name.len()
            )));
        }
        Ok(ServiceName(name))
    }
}

/// `target_num_containers`: 0 to [`MAX_CONTAINERS`].
#[derive(Debug, Clone, Copy)]
struct Count(u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        let n = i64::deserialize(d)?;
        if n < 0 {
            return Err(de::Error::custom(format!("{n} is negative")));
        }
        match u32::try_from(n) {
            Ok(n) if n <= MAX_CONTAINERS => Ok(Count(n)),
            _ => Err(de::Error::custom(format!(
                "{n} is more than {MAX_CONTAINERS} containers"
            ))),
        }
    }
}

/// `POST /api/v1/service/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewService {
    image: String,
    name: Option<ServiceName>,
    target_num_containers: Option<Count>,
    autorestart: Option<WireRestartPolicy>,
    autodestroy: Option<WireAutodestroy>,
    /// autokill's own: each container's `{num_requests, time_ms}`.
    autokill: Option<RawAutokill>,
}

/// `PATCH /api/v1/service/{id}/`: what python-tutum sends is only the fields changed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServicePatch {
    image: Option<String>,
    target_num_containers: Option<Count>,
    autorestart: Option<WireRestartPolicy>,
    autodestroy: Option<WireAutodestroy>,
    autokill: Option<RawAutokill>,
}

/// Fields a service shows but nobody sets.
const READ_ONLY: &[&str] = &[
    "uuid",
    "resource_uri",
    "unique_name",
    "image_name",
    "image_tag",
    "state",
    "synchronized",
    "current_num_containers",
    "running_num_containers",
    "stopped_num_containers",
    "containers",
    "public_dns",
    "created_datetime",
    "deployed_datetime",
    "started_datetime",
    "stopped_datetime",
    "destroyed_datetime",
    "delete_lock",
    "linked_from_service",
    "stack",
    "tutum_action_uri",
];

/// The service `id` names (404 otherwise), as the object of a change.
fn target(api: &Api, id: &str) -> Result<Object, Refused> {
    service_id(api, id).map(Object::Service)
}

/// The live service `id` names.
fn service_id(api: &Api, id: &str) -> Result<uuid::Uuid, Refused> {
    let view = api.admin.published.view.load();
    match find_service(&view, &Ref::parse(id), SystemTime::now()) {
        Some(s) if s.terminated_at.is_some() => Err((
            Some(Object::Service(s.id)),
            ApiError::conflict(format!("service {id} is terminated")),
        )),
        Some(s) => Ok(s.id),
        None => Err((None, ApiError::not_found(format!("no service {id}")))),
    }
}

/// `GET /api/v1/service/`.
pub async fn list(State(api): State<Api>, uri: Uri) -> Response {
    let run = || -> Result<Response, ApiError> {
        let (query, filters) =
            Filters::parse(&uri, &ServiceState::ALL.map(ServiceState::as_str), &[])?;
        let view = api.admin.published.view.load();
        let items = filters.apply(all_services(&view, SystemTime::now()), |s| {
            (s.state.as_str(), s.id, &s.name)
        });
        wire::page("/api/v1/service/", &query, items, show::service)
    };
    run().unwrap_or_else(wire::api_error)
}

/// `GET /api/v1/service/{id}/`.
pub async fn get(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let view = api.admin.published.view.load();
    match find_service(&view, &Ref::parse(&id), SystemTime::now()) {
        Some(s) => axum::Json(show::service(s)).into_response(),
        None => wire::error(StatusCode::NOT_FOUND, format!("no service {id}")),
    }
}

/// `POST /api/v1/service/`: 201 with the service, in state `Init`.
pub async fn create(State(api): State<Api>, req: Req) -> Response {
    let work = async {
        Query::parse(&req.uri, &[]).map_err(|e| (None, e))?;
        let raw: RawNewService = wire::body(&req.body, READ_ONLY).map_err(|e| (None, e))?;
        let new = NewService {
            name: raw.name.map(|n| n.0),
            image: raw.image,
            // Tutum's default: one container.
            target: raw.target_num_containers.map_or(1, |c| c.0),
            autorestart: raw.autorestart.map(|p| p.0).unwrap_or_default(),
            autodestroy: raw.autodestroy.map(|a| a.0).unwrap_or_default(),
            autokill: raw.autokill.map(|a| a.spec()).unwrap_or_default(),
        };
        let reply = api
            .admin
            .controller
            .call(Call::CreateService(new))
            .await
            .map_err(|e| (None, e))?;
        Ok(Changed {
            object: Object::Service(reply_id(reply, uuid::Uuid::nil())),
            watch: None,
        })
    };
    change(&api, &req, "Service Create", StatusCode::CREATED, work).await
}

/// `PATCH /api/v1/service/{id}/`.
pub async fn patch(State(api): State<Api>, req: Req) -> Response {
    let work = async {
        let sid = service_id(&api, &req.id)?;
        let object = Some(Object::Service(sid));
        Query::parse(&req.uri, &[]).map_err(|e| (object, e))?;
        let mut read_only = READ_ONLY.to_vec();
        // A name is chosen once: containers and the domain are named after it.
        read_only.push("name");
        let raw: RawServicePatch = wire::body(&req.body, &read_only).map_err(|e| (object, e))?;
        let patch = ServicePatch {
            image: raw.image,
            target: raw.target_num_containers.map(|c| c.0),
            autorestart: raw.autorestart.map(|p| p.0),
            autodestroy: raw.autodestroy.map(|a| a.0),
            autokill: raw.autokill.map(|a| a.spec()),
        };
        api.admin
            .controller
            .call(Call::PatchService(Ref::Id(sid), patch))
            .await
            .map_err(|e| (object, e))?;
        Ok(Changed {
            object: Object::Service(sid),
            watch: None,
        })
    };
    change(&api, &req, "Service Update", StatusCode::OK, work).await
}

/// `POST /api/v1/service/{id}/start/`.
pub async fn start(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Service Start",
            query: &[],
            make: Call::StartService,
            watch: Watch::ServiceStarted,
        },
    )
    .await
}

/// `POST /api/v1/service/{id}/stop/`.
pub async fn stop(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Service Stop",
            query: &[],
            make: Call::StopService,
            watch: Watch::ServiceStopped,
        },
    )
    .await
}

/// `POST /api/v1/service/{id}/scale/`: to the service's `target_num_containers`.
pub async fn scale(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Service Scale",
            query: &[],
            make: Call::ScaleService,
            watch: Watch::ServiceSettled,
        },
    )
    .await
}

/// `POST /api/v1/service/{id}/redeploy/`; python-tutum adds `?reuse_volumes=True`, which has
/// no meaning here (containers keep no volumes) but is accepted, as a boolean.
pub async fn redeploy(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Service Redeploy",
            query: REDEPLOY_QUERY,
            make: Call::RedeployService,
            watch: Watch::ServiceSettled,
        },
    )
    .await
}

/// `DELETE /api/v1/service/{id}/`: terminates its containers, then the service; 202 with the
/// service (`Terminating`, or `Terminated` when it had no container).
pub async fn terminate(State(api): State<Api>, req: Req) -> Response {
    act(
        api,
        req,
        target,
        Verb {
            name: "Service Terminate",
            query: &[],
            make: Call::TerminateService,
            watch: Watch::ServiceGone,
        },
    )
    .await
}
