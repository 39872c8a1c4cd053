//! The pages' live updates: one Server-Sent Events stream per open page.
//!
//! A stream wakes when the controller publishes (`Published::changed`) and every
//! [`TICK`] (request counters move without a publish), at most once per [`MIN_GAP`]. It then
//! looks at a fingerprint of what the page shows — which published view, the sum of the
//! meters' counts, the minute (lately terminated services and last hour's kills age out) — and
//! renders only when that moved. Of a new render it sends only the rows whose HTML changed, or
//! the whole region when rows came, went or moved, as one `patch` event whose `id` is the new
//! version; a page (or a reconnecting browser, through `Last-Event-ID`) that already shows that
//! version is sent nothing.
//!
//! On the instances page, when nothing was published since the last render and only counters
//! (or the minute) moved, only the rows of the instances whose count moved are rendered again,
//! not the whole page: with 1,000 instances and traffic on a few, a tick costs microseconds
//! instead of a 1.2 MB render.
//!
//! Cost on the proxy: none on its path. The view is an `arc-swap` load, the meters are read
//! with one atomic load each per render, and nothing here takes a lock the proxy takes.
//! A stream ends when the server begins to shut down ([`AdminState::closing`]), so that the
//! admin server's graceful stop is not held up.
//!
//! [`AdminState::closing`]: crate::admin::AdminState::closing

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::render::{self, Region};
use super::{Ui, pages, signed_in};
use crate::controller::View;

/// How often counters are looked at between publishes (the issue asks for at most 1 s).
const TICK: Duration = Duration::from_millis(500);
/// The least time between two renders of one stream: a burst of publishes costs one.
const MIN_GAP: Duration = Duration::from_millis(200);
/// A comment this often keeps the connection from being closed as idle.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How soon a browser reconnects after the stream broke.
const RETRY: Duration = Duration::from_secs(1);

/// Which page a stream renders.
#[derive(Debug, Clone)]
enum Follow {
    Services,
    Service(String),
    Instances,
}

/// `?v=`: the version the page was rendered at.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Since {
    v: Option<String>,
}

/// `GET /ui/events/services`.
pub(super) async fn services(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Query<Since>,
) -> Response {
    stream(ui, &headers, q, Follow::Services)
}

/// `GET /ui/events/services/{id}`: 404 when there is no such service (a browser then stops
/// trying).
pub(super) async fn service(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Since>,
) -> Response {
    let found = pages::service_regions(&ui.admin.published.view.load(), &id, SystemTime::now());
    if found.is_none() && signed_in(&ui.admin, &headers) {
        return (StatusCode::NOT_FOUND, "no such service").into_response();
    }
    stream(ui, &headers, q, Follow::Service(id))
}

/// `GET /ui/events/instances`.
pub(super) async fn instances(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Query<Since>,
) -> Response {
    stream(ui, &headers, q, Follow::Instances)
}

/// What one stream remembers of what it sent: per region, each row's key and digest.
type Sent = Vec<(&'static str, Vec<(String, u64)>)>;

struct Stream {
    ui: Ui,
    follow: Follow,
    changed: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    tick: Interval,
    /// What the browser shows: `None` until the first render.
    sent: Option<Sent>,
    /// The version the browser said it shows, until the first render.
    shown: Option<String>,
    fingerprint: Option<u64>,
    /// Instances page only: the publish of the last render and, by position in that view,
    /// each instance's count read before it.
    counts: Option<(u64, Vec<u64>)>,
    last: Option<Instant>,
    started: bool,
}

fn stream(ui: Ui, headers: &HeaderMap, q: Since, follow: Follow) -> Response {
    if !signed_in(&ui.admin, headers) {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    // A reconnecting browser says what it last received; that beats the page's version.
    let shown = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.v);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Stream {
        changed: ui.admin.published.changed.subscribe(),
        closing: ui.admin.closing.clone(),
        ui,
        follow,
        tick,
        sent: None,
        shown,
        fingerprint: None,
        counts: None,
        last: None,
        started: false,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<Event, Infallible>(event), s))
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

impl Stream {
    /// The next event to send, or `None` when the stream ends (shutdown, a service gone).
    async fn next(&mut self) -> Option<Event> {
        if !self.started {
            self.started = true;
            if *self.closing.borrow() {
                return None;
            }
            return Some(Event::default().retry(RETRY).comment("live"));
        }
        loop {
            if let Some(last) = self.last {
                // Never more often than MIN_GAP, whatever wakes us.
                let ready = last + MIN_GAP;
                tokio::select! {
                    biased;
                    _ = self.closing.wait_for(|c| *c) => return None,
                    () = tokio::time::sleep_until(ready) => {}
                }
            }
            // The publish count first: the view loaded after it is at least that new.
            let publishes = *self.changed.borrow_and_update();
            let view = self.ui.admin.published.view.load_full();
            let fingerprint = fingerprint(publishes, &view);
            if self.fingerprint != Some(fingerprint) {
                self.fingerprint = Some(fingerprint);
                self.last = Some(Instant::now());
                if let Some(moved) = self.counters_moved(publishes, &view) {
                    if moved.is_some() {
                        return moved;
                    }
                    continue;
                }
                if matches!(self.follow, Follow::Instances) {
                    let counts = view.instances.iter().map(|i| i.meter.count()).collect();
                    self.counts = Some((publishes, counts));
                }
                match self.render(&view) {
                    None => {
                        return Some(Event::default().event("gone").data("gone"));
                    }
                    Some(regions) => {
                        if let Some(event) = self.update(regions) {
                            return Some(event);
                        }
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.closing.wait_for(|c| *c) => return None,
                changed = self.changed.changed() => if changed.is_err() { return None },
                _ = self.tick.tick() => {}
            }
        }
    }

    /// The instances page when nothing was published since its last render: the event with the
    /// rows of the instances whose count moved and the kills (which age by the minute), or
    /// `Some(None)` when they render as sent. `None` when this does not apply (another page, a
    /// new publish, nothing sent yet): render the whole page.
    fn counters_moved(&mut self, publishes: u64, view: &View) -> Option<Option<Event>> {
        if !matches!(self.follow, Follow::Instances) {
            return None;
        }
        let (seen_publishes, counts) = self.counts.as_mut()?;
        if *seen_publishes != publishes || counts.len() != view.instances.len() {
            return None;
        }
        let sent = self.sent.as_mut()?;
        let mut rows = Vec::new();
        for (i, seen) in view.instances.iter().zip(counts.iter_mut()) {
            let count = i.meter.count();
            if count != *seen {
                *seen = count;
                rows.push(pages::instance_entry(view, i));
            }
        }
        let kills = pages::kills_region(&self.ui.admin.metrics.kills_last_hour());
        rows.extend(
            kills
                .rows
                .into_iter()
                .map(|(key, html)| (kills.id, key, html)),
        );
        let mut patch: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for (region, key, html) in rows {
            let digest = render::digest(&html);
            let Some(slot) = sent
                .iter_mut()
                .find(|(id, _)| *id == region)
                .and_then(|(_, rows)| rows.iter_mut().find(|(k, _)| *k == key))
            else {
                // Not where the last render put it: that render is stale, do a whole one.
                self.counts = None;
                return None;
            };
            if slot.1 == digest {
                continue;
            }
            slot.1 = digest;
            match patch.iter_mut().find(|(id, _)| *id == region) {
                Some((_, rows)) => rows.push(json!([key, html])),
                None => patch.push((region, vec![json!([key, html])])),
            }
        }
        if patch.is_empty() {
            return Some(None);
        }
        let version = render::version_of(
            sent.iter()
                .map(|(id, rows)| (*id, rows.iter().map(|(k, d)| (k.as_str(), *d)))),
        );
        let regions: Vec<Value> = patch
            .into_iter()
            .map(|(id, rows)| json!({ "id": id, "rows": rows }))
            .collect();
        let data = json!({ "regions": regions }).to_string();
        Some(Some(Event::default().event("patch").id(version).data(data)))
    }

    /// The page's regions now; `None` when the followed service is gone.
    fn render(&self, view: &View) -> Option<Vec<Region>> {
        let now = SystemTime::now();
        match &self.follow {
            Follow::Services => Some(pages::services_regions(view, now)),
            Follow::Service(id) => pages::service_regions(view, id, now),
            Follow::Instances => Some(pages::instances_regions(
                view,
                &self.ui.admin.metrics.kills_last_hour(),
            )),
        }
    }

    /// The event that brings the browser from what it shows to `regions`, if anything differs.
    fn update(&mut self, regions: Vec<Region>) -> Option<Event> {
        let version = render::version(&regions);
        let now: Sent = regions
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.rows
                        .iter()
                        .map(|(k, h)| (k.clone(), render::digest(h)))
                        .collect(),
                )
            })
            .collect();
        let before = self.sent.replace(now);
        let shown = self.shown.take();
        let patch = match before {
            None if shown.as_deref() == Some(version.as_str()) => return None,
            None => regions.iter().map(whole).collect(),
            Some(before) => diff(&before, &regions),
        };
        if patch.is_empty() {
            return None;
        }
        let data = json!({ "regions": patch }).to_string();
        Some(Event::default().event("patch").id(version).data(data))
    }
}

/// A whole region: `{"id", "html"}`.
fn whole(r: &Region) -> Value {
    json!({ "id": r.id, "html": r.inner().into_string() })
}

/// What changed from `before` to `regions`: whole regions whose keys changed, else the rows
/// whose HTML did (`{"id", "rows": [[key, html], …]}`).
fn diff(before: &Sent, regions: &[Region]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in regions {
        let old = before
            .iter()
            .find(|(id, _)| *id == r.id)
            .map(|(_, rows)| rows);
        let same_keys = old.is_some_and(|old| {
            old.len() == r.rows.len() && old.iter().zip(&r.rows).all(|((a, _), (b, _))| a == b)
        });
        if !same_keys {
            out.push(whole(r));
            continue;
        }
        let changed: Vec<Value> = r
            .rows
            .iter()
            .zip(old.into_iter().flatten())
            .filter(|((_, html), (_, digest))| render::digest(html) != *digest)
            .map(|((key, html), _)| json!([key, html]))
            .collect();
        if !changed.is_empty() {
            out.push(json!({ "id": r.id, "rows": changed }));
        }
    }
    out
}

/// What, if unchanged, means the page would render the same: how many times the controller
/// has published (not the view's address, which a new view may reuse), the meters' counts, and
/// the minute (for what ages out).
fn fingerprint(publishes: u64, view: &View) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    publishes.hash(&mut h);
    let served: u64 = view
        .instances
        .iter()
        .fold(0u64, |sum, i| sum.wrapping_add(i.meter.count()));
    served.hash(&mut h);
    let minute = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60);
    minute.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(rows: &[(&str, &str)]) -> Region {
        Region {
            id: "r",
            rows: rows
                .iter()
                .map(|(k, h)| ((*k).to_owned(), (*h).to_owned()))
                .collect(),
        }
    }

    fn sent(r: &Region) -> Sent {
        vec![(
            r.id,
            r.rows
                .iter()
                .map(|(k, h)| (k.clone(), render::digest(h)))
                .collect(),
        )]
    }

    #[test]
    fn only_changed_rows_are_sent_and_new_keys_send_the_region() {
        let a = region(&[("x", "<tr id=x>1</tr>"), ("y", "<tr id=y>1</tr>")]);
        let same = region(&[("x", "<tr id=x>1</tr>"), ("y", "<tr id=y>1</tr>")]);
        assert!(diff(&sent(&a), &[same]).is_empty());
        let one = region(&[("x", "<tr id=x>1</tr>"), ("y", "<tr id=y>2</tr>")]);
        let d = diff(&sent(&a), &[one]);
        assert_eq!(
            d,
            vec![json!({"id": "r", "rows": [["y", "<tr id=y>2</tr>"]]})]
        );
        let gone = region(&[("x", "<tr id=x>1</tr>")]);
        let d = diff(&sent(&a), &[gone]);
        assert_eq!(d, vec![json!({"id": "r", "html": "<tr id=x>1</tr>"})]);
        let moved = region(&[("y", "<tr id=y>1</tr>"), ("x", "<tr id=x>1</tr>")]);
        assert_eq!(
            diff(&sent(&a), &[moved])[0]["html"],
            "<tr id=y>1</tr><tr id=x>1</tr>"
        );
    }
}
