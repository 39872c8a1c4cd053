//! Tutum's actions: one record per change made through `/api/v1` — what was asked of which
//! object, and how it ended. A change the controller completes when it answers (create, patch,
//! a refusal) is `Success` or `Failed` at once; one that waits for containers (start, stop,
//! scale, redeploy, terminate) is `In progress` until the published view shows them settled,
//! which is judged whenever the action is read. Kept in memory, the newest [`KEPT`].

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::show::action_uri;
use super::wire::{self, Query, datetime};
use super::{Api, Meta, find_container, find_service};
use crate::controller::api::Ref;
use crate::controller::{ContainerState, ServiceState, StopReason, View};

/// Actions kept.
pub const KEPT: usize = 1000;

/// What an action in progress waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Every container of the service has left `Starting`.
    ServiceStarted(Uuid),
    /// No container of the service runs, starts or stops.
    ServiceStopped(Uuid),
    /// The service is no longer scaling, redeploying or starting.
    ServiceSettled(Uuid),
    /// The service is terminated.
    ServiceGone(Uuid),
    /// The container has left `Starting`.
    ContainerStarted(Uuid),
    /// The container no longer runs, starts or stops.
    ContainerStopped(Uuid),
    /// The container is terminated.
    ContainerGone(Uuid),
}

#[derive(Debug, Clone)]
enum Outcome {
    InProgress(Watch),
    Success,
    Failed(String),
}

#[derive(Debug, Clone)]
struct Action {
    id: Uuid,
    name: &'static str,
    meta: Meta,
    object: Option<String>,
    body: Value,
    start: SystemTime,
    end: Option<SystemTime>,
    outcome: Outcome,
}

/// The action log.
#[derive(Debug, Default)]
pub struct Log {
    actions: Mutex<VecDeque<Action>>,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Action>> {
        // A panic while holding the lock leaves a log that is still a list of records.
        self.actions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a change: `result` is what to wait for (`None`: done), or why it was refused.
    /// Returns the action's resource URI.
    pub fn record(
        &self,
        meta: Meta,
        name: &'static str,
        object: Option<String>,
        body: Value,
        result: Result<Option<Watch>, &str>,
    ) -> String {
        let now = SystemTime::now();
        let id = Uuid::new_v4();
        let (outcome, end) = match result {
            Ok(Some(watch)) => (Outcome::InProgress(watch), None),
            Ok(None) => (Outcome::Success, Some(now)),
            Err(message) => (Outcome::Failed(message.to_owned()), Some(now)),
        };
        let mut actions = self.lock();
        actions.push_back(Action {
            id,
            name,
            meta,
            object,
            body,
            start: now,
            end,
            outcome,
        });
        while actions.len() > KEPT {
            actions.pop_front();
        }
        action_uri(id)
    }
}

/// Settles the actions in progress that `view` shows finished.
fn settle(actions: &mut VecDeque<Action>, view: &View, now: SystemTime) {
    for a in actions.iter_mut() {
        if let Outcome::InProgress(watch) = a.outcome
            && let Some(done) = judge(watch, a.start, view, now)
        {
            a.outcome = match done {
                Ok(()) => Outcome::Success,
                Err(message) => Outcome::Failed(message),
            };
            a.end = Some(now);
        }
    }
}

/// Whether a container failed to start since `since`.
fn start_failed(c: &crate::controller::ContainerView, since: SystemTime) -> bool {
    c.stop_reason == Some(StopReason::StartFailed) && c.stopped_at.is_some_and(|t| t >= since)
}

/// `None` while `watch` is still under way; else how it ended.
fn judge(
    watch: Watch,
    since: SystemTime,
    view: &View,
    now: SystemTime,
) -> Option<Result<(), String>> {
    let service =
        |id: Uuid| find_service(view, &Ref::Id(id), now).filter(|s| s.terminated_at.is_none());
    let containers = |id: Uuid| -> Vec<crate::controller::ContainerView> {
        service(id)
            .map(|s| {
                s.containers
                    .iter()
                    .filter_map(|c| find_container(view, &Ref::Id(*c), now))
                    .collect()
            })
            .unwrap_or_default()
    };
    let failed = |cs: &[crate::controller::ContainerView]| {
        cs.iter()
            .find(|c| start_failed(c, since))
            .map(|c| Err(format!("container {} could not be started", c.name)))
    };
    use ContainerState as C;
    match watch {
        Watch::ServiceStarted(id) | Watch::ServiceSettled(id) => {
            let Some(s) = service(id) else {
                return Some(Err("the service was terminated".into()));
            };
            let cs = containers(id);
            let busy = match watch {
                Watch::ServiceStarted(_) => {
                    cs.iter().any(|c| matches!(c.state, C::Starting | C::Init))
                }
                _ => matches!(
                    s.state,
                    ServiceState::Scaling | ServiceState::Redeploying | ServiceState::Starting
                ),
            };
            if busy {
                return None;
            }
            Some(failed(&cs).unwrap_or(Ok(())))
        }
        Watch::ServiceStopped(id) => {
            let busy = containers(id)
                .iter()
                .any(|c| matches!(c.state, C::Running | C::Starting | C::Stopping));
            (!busy).then_some(Ok(()))
        }
        Watch::ServiceGone(id) => service(id).is_none().then_some(Ok(())),
        Watch::ContainerStarted(id) => match find_container(view, &Ref::Id(id), now) {
            Some(c) if c.state == C::Starting => None,
            Some(c) if start_failed(&c, since) => {
                Some(Err(format!("container {} could not be started", c.name)))
            }
            // Running, or already ended (a one-shot that exited, and was destroyed).
            _ => Some(Ok(())),
        },
        Watch::ContainerStopped(id) => match find_container(view, &Ref::Id(id), now) {
            Some(c) if matches!(c.state, C::Running | C::Starting | C::Stopping) => None,
            _ => Some(Ok(())),
        },
        Watch::ContainerGone(id) => match find_container(view, &Ref::Id(id), now) {
            Some(c) if c.state != C::Terminated => None,
            _ => Some(Ok(())),
        },
    }
}

fn show(a: &Action) -> Value {
    let (state, message) = match &a.outcome {
        Outcome::InProgress(_) => ("In progress", None),
        Outcome::Success => ("Success", None),
        Outcome::Failed(message) => ("Failed", Some(message.as_str())),
    };
    json!({
        "uuid": a.id,
        "resource_uri": action_uri(a.id),
        "action": a.name,
        "method": a.meta.method.as_str(),
        "path": a.meta.path,
        "object": a.object,
        "body": a.body,
        "user_agent": a.meta.user_agent,
        "ip": a.meta.ip,
        "location": null,
        "start_date": datetime(Some(a.start)),
        "end_date": datetime(a.end),
        "state": state,
        "message": message,
        "is_user_action": true,
        "can_be_canceled": false,
    })
}

/// Action states a list may be filtered by (autokill never queues, so never `Pending`).
const STATES: [&str; 4] = ["Pending", "In progress", "Success", "Failed"];

/// `GET /api/v1/action/`: oldest first, as Tutum lists them (chronologically).
pub async fn list(State(api): State<Api>, uri: Uri) -> Response {
    let query = match Query::parse(&uri, &["limit", "offset", "state", "object", "format"]) {
        Ok(q) => q,
        Err(err) => return wire::api_error(err),
    };
    let state = match query.one_of("state", &STATES) {
        Ok(s) => s,
        Err(err) => return wire::api_error(err),
    };
    if let Err(err) = query.one_of("format", &["json"]) {
        return wire::api_error(err);
    }
    let view = api.admin.published.view.load();
    let now = SystemTime::now();
    let items: Vec<Value> = {
        let mut actions = api.actions.lock();
        settle(&mut actions, &view, now);
        actions
            .iter()
            .map(show)
            .filter(|a| state.is_none_or(|s| a["state"] == s))
            .filter(|a| query.get("object").is_none_or(|o| a["object"] == o))
            .collect()
    };
    wire::page("/api/v1/action/", &query, items, |a| a).unwrap_or_else(wire::api_error)
}

/// `GET /api/v1/action/{uuid}/`.
pub async fn get(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return wire::error(
            StatusCode::NOT_FOUND,
            format!("no action {id:?} (actions are named by UUID)"),
        );
    };
    let view = api.admin.published.view.load();
    let now = SystemTime::now();
    let mut actions = api.actions.lock();
    settle(&mut actions, &view, now);
    match actions.iter().find(|a| a.id == id) {
        Some(a) => axum::Json(show(a)).into_response(),
        None => wire::error(StatusCode::NOT_FOUND, format!("no action {id}")),
    }
}
