//! The Unikraft Cloud-shaped `/v1` API: parses and checks requests, hands them to the controller
//! as [`Call`]s, and answers in Unikraft's envelope. The routes are listed (and registered) in
//! [`crate::admin`].
//!
//! Reads are served from the controller's published [`View`] without asking it anything; every
//! change is one [`Call`] per resource, answered once the controller has published it.

pub mod instances;
pub mod services;
mod show;
pub mod templates;
mod wire;

use axum::response::Response;
use serde_json::Value;

pub use wire::error;

use super::AdminState;
use crate::controller::api::{ApiError, Call, Ref, Reply};
use crate::controller::{GroupView, InstanceState, InstanceView, View};
use wire::{Batch, Item, RawPatch};

/// What a route acts on; instances and templates share the controller's instance records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    /// `/v1/instances`: instances in every state but `template`.
    Instance,
    /// `/v1/instances/templates`: instances in state `template`.
    Template,
    /// `/v1/services`.
    Group,
}

impl Resource {
    /// The key under `data` in answers.
    fn key(self) -> &'static str {
        match self {
            Resource::Instance | Resource::Template => "instances",
            Resource::Group => "service_groups",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Resource::Instance => "instance",
            Resource::Template => "template",
            Resource::Group => "service group",
        }
    }

    fn holds(self, i: &InstanceView) -> bool {
        (i.state == InstanceState::Template) == (self == Resource::Template)
    }
}

fn matches(r: &Ref, id: uuid::Uuid, name: &str) -> bool {
    match r {
        Ref::Id(want) => *want == id,
        Ref::Name(want) => want == name,
    }
}

/// The instance or template `r` names, of the kind `res` (`None` if it is not in the view).
fn find_instance<'v>(view: &'v View, r: &Ref, res: Resource) -> Option<&'v InstanceView> {
    view.instances
        .iter()
        .find(|i| res.holds(i) && matches(r, i.id, &i.name))
}

/// The service group `r` names.
fn find_group<'v>(view: &'v View, r: &Ref) -> Option<&'v GroupView> {
    view.groups.iter().find(|g| matches(r, g.id, &g.name))
}

/// The UUID `r` resolves to in the view, if the resource exists.
fn resolve(view: &View, r: &Ref, res: Resource) -> Option<uuid::Uuid> {
    match res {
        Resource::Group => find_group(view, r).map(|g| g.id),
        _ => find_instance(view, r, res).map(|i| i.id),
    }
}

/// Refuses, with 404, a reference to an instance on a template route or the other way round:
/// the controller keeps both as instances and would act on either.
fn expect_kind(view: &View, r: &Ref, res: Resource) -> Result<(), ApiError> {
    if res == Resource::Group {
        return Ok(());
    }
    let other = view
        .instances
        .iter()
        .find(|i| !res.holds(i) && matches(r, i.id, &i.name));
    match other {
        Some(_) if res == Resource::Template => Err(ApiError::not_found(format!(
            "{r} is an instance, not a template (see /v1/instances)"
        ))),
        Some(_) => Err(ApiError::not_found(format!(
            "{r} is a template, not an instance (see /v1/instances/templates)"
        ))),
        None => Ok(()),
    }
}

/// `GET` of one resource from the view.
fn get_one(state: &AdminState, id: &str, res: Resource) -> Response {
    let view = state.published.view.load();
    let r = Ref::parse(id);
    let shown = match res {
        Resource::Group => find_group(&view, &r).map(|g| show::group(g, &view)),
        _ => find_instance(&view, &r, res).map(|i| show::instance(i, &view, &state.base_domain)),
    };
    match shown {
        Some(v) => wire::listing(res.key(), vec![v]),
        None => {
            let err = expect_kind(&view, &r, res)
                .err()
                .unwrap_or_else(|| ApiError::not_found(format!("no {} {r}", res.noun())));
            wire::api_error(err)
        }
    }
}

/// `GET` of a list: every resource of the kind, or, with a body `[{"uuid"|"name"}]` as
/// Unikraft's list endpoints take, those named (unknown ones answered as per-item 404s).
fn list(state: &AdminState, body: &[u8], res: Resource) -> Response {
    let view = state.published.view.load();
    let show = |r: &Ref| -> Option<Value> {
        match res {
            Resource::Group => find_group(&view, r).map(|g| show::group(g, &view)),
            _ => find_instance(&view, r, res).map(|i| show::instance(i, &view, &state.base_domain)),
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        let items = match res {
            Resource::Group => view.groups.iter().map(|g| show::group(g, &view)).collect(),
            _ => view
                .instances
                .iter()
                .filter(|i| res.holds(i))
                .map(|i| show::instance(i, &view, &state.base_domain))
                .collect(),
        };
        return wire::listing(res.key(), items);
    }
    let (refs, single) = match wire::parse_targets(body) {
        Ok(targets) => targets,
        Err(err) => return wire::api_error(err),
    };
    let items = refs
        .iter()
        .map(|r| {
            let found = show(r).ok_or_else(|| {
                expect_kind(&view, r, res)
                    .err()
                    .unwrap_or_else(|| ApiError::not_found(format!("no {} {r}", res.noun())))
            });
            Item::new(found).echo_ref(r)
        })
        .collect();
    wire::answer(res.key(), single, items)
}

/// Shows what the controller answered.
fn show_reply(state: &AdminState, view: &View, reply: Reply) -> Result<Value, ApiError> {
    match reply {
        Reply::Instance(i) => Ok(show::instance(&i, view, &state.base_domain)),
        Reply::Group(g) => Ok(show::group(&g, view)),
        Reply::Batch(_) => Err(ApiError {
            status: 500,
            message: "the controller answered a single call with a batch".into(),
        }),
    }
}

/// Sends `calls` to the controller as one batch (applied whole, in order, even if the client
/// goes away) and shows each answer.
async fn call_all(state: &AdminState, calls: Vec<Call>) -> Vec<Result<Value, ApiError>> {
    let replies = state.controller.call_all(calls).await;
    let view = state.published.view.load();
    replies
        .into_iter()
        .map(|reply| reply.and_then(|r| show_reply(state, &view, r)))
        .collect()
}

/// Runs one call per reference (delete, start, stop) in one batch; each answered on its own.
async fn per_target(
    state: &AdminState,
    refs: Vec<Ref>,
    single: bool,
    res: Resource,
    make: fn(Ref) -> Call,
) -> Response {
    let calls = refs.iter().cloned().map(make).collect();
    let results = call_all(state, calls).await;
    let items = results
        .into_iter()
        .zip(&refs)
        .map(|(result, r)| Item::new(result).echo_ref(r))
        .collect();
    wire::answer(res.key(), single, items)
}

/// A path-form delete, start or stop of `{id}` (the body empty, or `{}`).
async fn act_on_path(
    state: &AdminState,
    id: &str,
    body: &[u8],
    res: Resource,
    make: fn(Ref) -> Call,
) -> Response {
    if !body.iter().all(u8::is_ascii_whitespace) {
        // Nothing is taken in the body here; refusing what is sent keeps "unknown fields are
        // refused" true for this form too.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        if let Err(err) = wire::parse::<Empty>(body) {
            return wire::api_error(err);
        }
    }
    per_target(state, vec![Ref::parse(id)], true, res, make).await
}

/// A body-form delete, start or stop: `[{"uuid"|"name"}]` (or one such object).
async fn act_on_body(
    state: &AdminState,
    body: &[u8],
    res: Resource,
    make: fn(Ref) -> Call,
) -> Response {
    match wire::parse_targets(body) {
        Ok((refs, single)) => per_target(state, refs, single, res, make).await,
        Err(err) => wire::api_error(err),
    }
}

/// `PATCH` for every kind of resource: parses the items, converts each with `convert` (which
/// names the field at fault with the item's prefix), groups them by target in order of first
/// appearance, and applies each group as one all-or-nothing call.
///
/// With `path` (`PATCH /v1/…/{id}`) every item is about that resource; without, each item names
/// its own with `uuid` or `name`.
async fn patch<P>(
    state: &AdminState,
    path: Option<&str>,
    body: &[u8],
    res: Resource,
    convert: fn(&RawPatch, &str, &AdminState) -> Result<P, ApiError>,
    make: fn(Ref, Vec<P>) -> Call,
) -> Response {
    let batch: Batch<RawPatch> = match wire::parse_batch(body) {
        Ok(batch) => batch,
        Err(err) => return wire::api_error(err),
    };
    let path_ref = path.map(Ref::parse);
    // Everything is checked before the first call: a bad item changes nothing.
    let mut groups: Vec<(Ref, Vec<(usize, P)>)> = Vec::new();
    {
        let view = state.published.view.load();
        for (index, item) in batch.items.iter().enumerate() {
            let prefix = batch.prefix(index);
            let target = match target_of(item, path_ref.as_ref(), &prefix, &view, res) {
                Ok(target) => target,
                Err(err) => return wire::api_error(err),
            };
            let patch = match convert(item, &prefix, state) {
                Ok(patch) => patch,
                Err(err) => return wire::api_error(err),
            };
            let key = resolve(&view, &target, res);
            let same = |r: &Ref| *r == target || (key.is_some() && resolve(&view, r, res) == key);
            match groups.iter_mut().find(|(r, _)| same(r)) {
                Some((_, patches)) => patches.push((index, patch)),
                None => groups.push((target, vec![(index, patch)])),
            }
        }
    }
    let mut answers: Vec<Option<Item>> = (0..batch.items.len()).map(|_| None).collect();
    let mut targets = Vec::with_capacity(groups.len());
    let mut calls = Vec::with_capacity(groups.len());
    for (target, patches) in groups {
        let (indices, patches): (Vec<usize>, Vec<P>) = patches.into_iter().unzip();
        calls.push(make(target.clone(), patches));
        targets.push((target, indices));
    }
    let results = call_all(state, calls).await;
    for ((target, indices), result) in targets.into_iter().zip(results) {
        for index in indices {
            let item = Item::new(result.clone())
                .echo_ref(&target)
                .echo_id(batch.items[index].id.as_ref());
            answers[index] = Some(item);
        }
    }
    wire::answer(
        res.key(),
        batch.single,
        answers.into_iter().flatten().collect(),
    )
}

/// Which resource a PATCH item is about.
fn target_of(
    item: &RawPatch,
    path: Option<&Ref>,
    prefix: &str,
    view: &View,
    res: Resource,
) -> Result<Ref, ApiError> {
    let given = (item.uuid.is_some() || item.name.is_some())
        .then(|| {
            wire::one_ref(
                item.uuid,
                item.name.as_deref(),
                prefix.trim_end_matches('.'),
            )
        })
        .transpose()?;
    match (path, given) {
        (Some(path), None) => Ok(path.clone()),
        (Some(path), Some(given)) => {
            let same = given == *path
                || resolve(view, &given, res)
                    .is_some_and(|id| Some(id) == resolve(view, path, res));
            if same {
                Ok(path.clone())
            } else {
                Err(ApiError::bad_request(format!(
                    "{prefix}uuid/name: {given} is not the {} {path} of the path",
                    res.noun()
                )))
            }
        }
        (None, Some(given)) => Ok(given),
        (None, None) => Err(ApiError::bad_request(format!(
            "{}: give the uuid or the name of the {} to change",
            if prefix.is_empty() {
                "uuid/name".to_owned()
            } else {
                format!("{prefix}uuid/name")
            },
            res.noun()
        ))),
    }
}

/// Refuses a PATCH item's unknown `prop`, listing the known ones.
fn unknown_prop(item: &RawPatch, prefix: &str, res: Resource, known: &[&str]) -> ApiError {
    wire::bad(
        &format!("{prefix}prop"),
        format!(
            "unknown property {:?} of {}; expected one of {}",
            item.prop,
            match res {
                Resource::Instance => "an instance",
                Resource::Template => "a template",
                Resource::Group => "a service group",
            },
            known.join(", ")
        ),
    )
}
