//! The Unikraft Cloud-shaped `/v1` API: parses and checks requests, hands them to the controller
//! as [`Call`]s, and answers in Unikraft's envelope. The routes are listed (and registered) in
//! [`crate::admin`].
//!
//! Reads are served from the controller's published [`View`] without asking it anything; every
//! change is one [`Call`] per resource, answered once the controller has published it.

pub mod instances;
mod listing;
pub mod services;
mod show;
pub mod templates;
mod wait;
pub(crate) mod wire;

use axum::response::IntoResponse;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

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

/// The instance or template `r` names, of the kind `res` (`None` if it is not in the view):
/// one map lookup, by id or by name, whatever the number of instances.
fn find_instance<'v>(view: &'v View, r: &Ref, res: Resource) -> Option<&'v InstanceView> {
    match r {
        Ref::Id(id) => view.instances.get(id),
        Ref::Name(name) => view.instances.named(name),
    }
    .filter(|i| res.holds(i))
}

/// The service group `r` names.
fn find_group<'v>(view: &'v View, r: &Ref) -> Option<&'v GroupView> {
    match r {
        Ref::Id(id) => view.groups.get(id),
        Ref::Name(name) => view.groups.named(name),
    }
}

/// The UUID `r` resolves to in the view, if the resource exists.
fn resolve(view: &View, r: &Ref, res: Resource) -> Option<uuid::Uuid> {
    match res {
        Resource::Group => find_group(view, r).map(|g| g.id),
        _ => find_instance(view, r, res).map(|i| i.id),
    }
}

/// A Unikraft Cloud endpoint autokill does not have: 400 naming the feature (rather than a 404
/// that would read as a missing resource).
pub fn unsupported(feature: &'static str) -> Response {
    error(
        axum::http::StatusCode::BAD_REQUEST,
        format!("not supported: {feature} are a Unikraft Cloud feature autokill does not have"),
    )
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

/// `GET` of a list: every resource of the kind, a page of them, or those named by `?uuid=`
/// and `?name=` filters (or a body `[{"uuid"|"name"}]`); see [`listing`]. A filter that names
/// nothing of this kind is answered as a not-found item (`error` 8) in a 200 answer, as the
/// SDKs expect; a single-object body keeps answering 404.
fn list(state: &AdminState, query: Option<&str>, body: &[u8], res: Resource) -> Response {
    let mut q = match listing::parse(query) {
        Ok(q) => q,
        Err(err) => return wire::api_error(err),
    };
    let mut single = false;
    if !body.iter().all(u8::is_ascii_whitespace) {
        match wire::parse_targets(body) {
            Ok((refs, one)) => {
                single = one && q.refs.is_empty();
                q.refs.extend(refs);
            }
            Err(err) => return wire::api_error(err),
        }
    }
    let view = state.published.view.load_full();
    let (page, misses) = match res {
        Resource::Group => {
            let entries = view
                .groups
                .iter()
                .map(|g| listing::Entry {
                    id: g.id,
                    name: &g.name,
                    created_at: g.created_at,
                    item: g.id,
                })
                .collect();
            listing::select(entries, &q)
        }
        _ => {
            let entries = view
                .instances
                .iter()
                .filter(|i| res.holds(i))
                .map(|i| listing::Entry {
                    id: i.id,
                    name: &i.name,
                    created_at: i.created_at,
                    item: i.id,
                })
                .collect();
            listing::select(entries, &q)
        }
    };
    if misses.is_empty() {
        return streamed_listing(state, view, res, page);
    }
    let mut items: Vec<Item> = page
        .iter()
        .filter_map(|&id| show_listed(state, &view, res, id))
        .map(|v| Item::new(Ok(v)))
        .collect();
    items.extend(misses.iter().map(|r| {
        let err = expect_kind(&view, r, res)
            .err()
            .unwrap_or_else(|| ApiError::not_found(format!("no {} {r}", res.noun())));
        Item::new(Err(err)).echo_ref(r)
    }));
    wire::answer(res.key(), single, items)
}

/// How many listed resources go into one chunk of a streamed listing (some hundred KiB).
const LISTING_CHUNK: usize = 256;

/// A listing without misses, `{"status":"success","data":{<key>:[…]}}` as
/// [`wire::listing`] answers it, written out a chunk of resources at a time as the client
/// reads: the whole answer is never held in memory, whatever the number of instances.
fn streamed_listing(
    state: &AdminState,
    view: std::sync::Arc<View>,
    res: Resource,
    page: Vec<uuid::Uuid>,
) -> Response {
    let state = state.clone();
    let mut next = 0;
    let mut first = true;
    let mut head = Some(format!(
        r#"{{"status":"success","data":{{"{}":["#,
        res.key()
    ));
    let chunks = std::iter::from_fn(move || {
        let mut out = match head.take() {
            Some(head) => head.into_bytes(),
            None if next >= page.len() => return None,
            None => Vec::new(),
        };
        let end = page.len().min(next + LISTING_CHUNK);
        for &id in &page[next..end] {
            if let Some(shown) = show_listed(&state, &view, res, id) {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                // Writing a `Value` into a `Vec` cannot fail.
                let _ = serde_json::to_writer(&mut out, &shown);
            }
        }
        next = end;
        if next >= page.len() {
            out.extend_from_slice(b"]}}");
            next = usize::MAX;
        }
        Some(Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(
            out,
        )))
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

/// A listed resource of `view`, shown.
fn show_listed(state: &AdminState, view: &View, res: Resource, id: uuid::Uuid) -> Option<Value> {
    match res {
        Resource::Group => view.groups.get(&id).map(|g| show::group(g, view)),
        _ => view
            .instances
            .get(&id)
            .map(|i| show::instance(i, view, &state.base_domain)),
    }
}

/// Shows what the controller answered.
fn show_reply(state: &AdminState, view: &View, reply: Reply) -> Result<Value, ApiError> {
    match reply {
        Reply::Instance(i) => Ok(show::instance(&i, view, &state.base_domain)),
        Reply::Moved(i, previous) => {
            let mut shown = show::instance(&i, view, &state.base_domain);
            shown["previous_state"] = json!(previous.as_str());
            Ok(shown)
        }
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

/// A delete, start or stop item (`{"uuid"|"name", …}`, or the body of the path form): which
/// resource, and the wait it asks for after the call.
pub(super) trait Action: DeserializeOwned + Default {
    /// The `uuid` and `name` given.
    fn target(&self) -> (Option<uuid::Uuid>, Option<&str>);
    /// Checks the item's own fields (named with `prefix`); the wait it asks for.
    fn wait(&self, prefix: &str) -> Result<Option<(wait::Want, std::time::Duration)>, ApiError>;
    /// The controller call for `target` (`make` unless the item's fields ask for another).
    fn call(&self, target: Ref, make: fn(Ref) -> Call) -> Call {
        make(target)
    }
}

/// `{"uuid"|"name"}` alone: a delete of a template or group.
impl Action for wire::RawTarget {
    fn target(&self) -> (Option<uuid::Uuid>, Option<&str>) {
        (self.uuid, self.name.as_deref())
    }
    fn wait(&self, _: &str) -> Result<Option<(wait::Want, std::time::Duration)>, ApiError> {
        Ok(None)
    }
}

/// A delete, start or stop: of `{id}` in the path (the body empty, or one object of the
/// action's own fields), or of the body's `[{"uuid"|"name", …}]` items. Every item is checked
/// before anything is done, the calls go to the controller as one batch, and each item's wait
/// runs after it.
async fn act<A: Action>(
    state: &AdminState,
    path: Option<&str>,
    body: &[u8],
    res: Resource,
    make: fn(Ref) -> Call,
) -> Response {
    let (raws, single): (Vec<A>, bool) = match path {
        Some(_) if body.iter().all(u8::is_ascii_whitespace) => (vec![A::default()], true),
        Some(_) => match wire::parse::<A>(body) {
            Ok(raw) => (vec![raw], true),
            Err(err) => return wire::api_error(err),
        },
        None => match wire::parse_batch::<A>(body) {
            Ok(batch) => (batch.items, batch.single),
            Err(err) => return wire::api_error(err),
        },
    };
    let mut refs = Vec::with_capacity(raws.len());
    let mut waits = Vec::with_capacity(raws.len());
    for (index, raw) in raws.iter().enumerate() {
        let prefix = wire::item_prefix(single, index);
        let target = match (path, raw.target()) {
            (Some(id), (None, None)) => Ok(Ref::parse(id)),
            (Some(_), _) => Err(wire::bad(
                &format!("{prefix}uuid/name"),
                format!("the {} is named in the path", res.noun()),
            )),
            (None, (uuid, name)) => wire::one_ref(uuid, name, prefix.trim_end_matches('.')),
        };
        match target.and_then(|t| raw.wait(&prefix).map(|w| (t, w))) {
            Ok((target, wait)) => {
                refs.push(target);
                waits.push(wait);
            }
            Err(err) => return wire::api_error(err),
        }
    }
    let calls = refs
        .iter()
        .cloned()
        .zip(&raws)
        .map(|(target, raw)| raw.call(target, make))
        .collect();
    let results = call_all(state, calls).await;
    let mut items = Vec::with_capacity(results.len());
    for ((result, r), wait) in results.into_iter().zip(&refs).zip(waits) {
        let item = match (result, wait) {
            (Ok(shown), Some((want, wait))) => match shown["uuid"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
            {
                Some(id) => wait::until(state, id, shown, want, wait).await,
                None => Item::new(Ok(shown)),
            },
            (result, _) => Item::new(result),
        };
        items.push(item.echo_ref(r));
    }
    wire::answer(res.key(), single, items)
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
