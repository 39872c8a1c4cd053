//! The pieces every page is made of: the layout, live regions, and how states, policies,
//! budgets, times and deadlines are written.
//!
//! A page's rows are a function of the published view and the meters only, never of the time
//! they are rendered at: times are written as instants (`<time>`), and the script turns them
//! into "in 4m 12s" and counts down. So a row renders the same until something about it
//! changes, which is what lets [`super::live`] send only the rows that did.

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::admin::tutum::wire::{autodestroy_name, autorestart_name};
use crate::admin::v1::wire::rfc3339;
use crate::config::{Autodestroy, Autokill};
use crate::controller::{Due, DueKind};

/// What every page is rendered with.
#[derive(Debug, Clone)]
pub struct Context {
    /// `runtime.images` keys, for the Launch wizard.
    pub images: Vec<String>,
    /// The runtime takes any image reference too.
    pub any_image: bool,
    /// Credentials are configured: show the sign-out button.
    pub sign_out: bool,
}

/// One live part of a page: rows, each the HTML of one element whose `id` is its key. The
/// page places them inside the element whose `id` is the region's; [`super::live`] sends the
/// rows that changed, or the whole region when rows came, went or moved.
#[derive(Debug)]
pub struct Region {
    /// The `id` of the element holding the rows.
    pub id: &'static str,
    /// `(key, html)`: the key is the row element's `id`.
    pub rows: Vec<(String, String)>,
}

impl Region {
    /// A region of `rows`, or of the one `empty` row when there are none.
    pub fn new(
        id: &'static str,
        rows: Vec<(String, String)>,
        empty: impl FnOnce() -> Markup,
    ) -> Region {
        let rows = if rows.is_empty() {
            vec![(format!("{id}-none"), empty().into_string())]
        } else {
            rows
        };
        Region { id, rows }
    }

    /// The rows, one after another.
    pub fn inner(&self) -> PreEscaped<String> {
        let mut out = String::with_capacity(self.rows.iter().map(|(_, h)| h.len()).sum());
        for (_, html) in &self.rows {
            out.push_str(html);
        }
        PreEscaped(out)
    }
}

/// A hash of a row's HTML: what a stream remembers of each row it sent.
pub fn digest(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// The version of a page's live regions: equal versions, equal rows.
pub fn version(regions: &[Region]) -> String {
    version_of(regions.iter().map(|r| {
        (
            r.id,
            r.rows
                .iter()
                .map(|(key, html)| (key.as_str(), digest(html))),
        )
    }))
}

/// [`version`] from each region's id and its rows' keys and [`digest`]s, for a stream that
/// keeps only those.
pub fn version_of<'a, R>(regions: impl IntoIterator<Item = (&'a str, R)>) -> String
where
    R: IntoIterator<Item = (&'a str, u64)>,
{
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (id, rows) in regions {
        id.hash(&mut h);
        for (key, digest) in rows {
            key.hash(&mut h);
            digest.hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// Which page of the navigation is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Services (Tutum's).
    Services,
    /// Instances (Unikraft's).
    Instances,
    /// Neither (login, not found).
    None,
}

/// The whole document: head, the top bar with its navigation, and `main`. `events` is the
/// page's event stream (with its version), if it is live.
pub fn layout(
    ctx: &Context,
    title: &str,
    nav: Nav,
    events: Option<String>,
    main: Markup,
) -> Markup {
    let v = super::ASSET_VERSION.as_str();
    let is_live = events.is_some();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · autokill" }
                link rel="stylesheet" href={ "/ui/assets/ui.css?v=" (v) };
                link rel="icon" href="data:,";
                script src={ "/ui/assets/ui.js?v=" (v) } defer {}
                // Without the script nothing is live: the page reloads itself instead.
                @if is_live {
                    noscript { meta http-equiv="refresh" content="5"; }
                }
            }
            body data-events=[events] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { span.logo aria-hidden="true" { "◆" } "autokill" }
                    @if nav != Nav::None {
                        nav aria-label="Main" {
                            a href="/ui/" aria-current=[(nav == Nav::Services).then_some("page")] { "Services" }
                            a href="/ui/instances" aria-current=[(nav == Nav::Instances).then_some("page")] { "Instances" }
                        }
                    }
                    span.spacer {}
                    @if is_live {
                        span #live .live role="status" data-state="static" { "not live" }
                    }
                    @if ctx.sign_out {
                        form.signout method="post" action="/ui/logout" {
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (main) }
                div #toast role="alert" aria-live="assertive" {}
            }
        }
    }
}

/// A state as a coloured badge; `tone` picks the colour.
pub fn badge(text: &str, tone: &str) -> Markup {
    html! { span class={ "badge " (tone) } { (text) } }
}

/// The colour of a Tutum state.
pub fn tutum_tone(state: &str) -> &'static str {
    match state {
        "Running" => "ok",
        "Partly running" | "Starting" | "Stopping" | "Scaling" | "Redeploying" | "Init" => "busy",
        "Terminating" | "Terminated" => "gone",
        _ => "idle",
    }
}

/// The colour of an instance state.
pub fn instance_tone(state: &str) -> &'static str {
    match state {
        "running" => "ok",
        "starting" | "stopping" => "busy",
        "draining" => "drain",
        "template" => "tmpl",
        "deleted" => "gone",
        _ => "idle",
    }
}

/// A duration as people write it: `750ms`, `45s`, `5m`, `1h 30m`, `2d 4h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let parts: Vec<String> = [(days, "d"), (h, "h"), (m, "m"), (sec, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    parts.join(" ")
}

/// An autokill policy in words: `5 requests · 30s stopped`, or `off`.
pub fn autokill(a: Autokill) -> String {
    let mut parts = Vec::new();
    if a.num_requests > 0 {
        let n = a.num_requests;
        parts.push(format!("{n} request{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(t) = a.time {
        parts.push(format!("{} stopped", duration(t)));
    }
    if parts.is_empty() {
        "off".to_owned()
    } else {
        parts.join(" · ")
    }
}

/// An autodestroy value, emphasised when on.
pub fn autodestroy(a: Autodestroy) -> Markup {
    let name = autodestroy_name(a);
    html! {
        @if a == Autodestroy::Off { span.muted { (name) } } @else { strong.on { (name) } }
    }
}

/// An autorestart value (Tutum's names).
pub fn autorestart(p: crate::config::RestartPolicy) -> &'static str {
    autorestart_name(p)
}

/// Milliseconds since the epoch, as the script reads deadlines.
fn epoch_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// An instant: the clock time in UTC, which the script rewrites as "3m ago" (`since`) or
/// "in 4m 12s" (`due`).
pub fn instant(t: SystemTime, mode: &str) -> Markup {
    let stamp = rfc3339(t).unwrap_or_default();
    // `2026-12-01T23:41:05.123Z` -> `23:41:05 UTC`: today's time is what people read first.
    let clock = stamp.get(11..19).unwrap_or("");
    html! {
        time datetime=(stamp) data-mode=(mode) data-t=(epoch_ms(t)) title=(stamp) { (clock) " UTC" }
    }
}

/// A deadline: what happens and when, counting down; `held` when a delete lock holds the kill.
pub fn due(d: Option<Due>, held: bool) -> Markup {
    let Some(d) = d else {
        return html! { span.muted { "—" } };
    };
    let what = match d.kind {
        DueKind::StoppedTime => "deleted (stopped time)",
        DueKind::Unused => "deleted (unused)",
        DueKind::Empty => "deleted (empty)",
        DueKind::Drain => "drain ends",
        DueKind::Restart => "restarts",
    };
    html! {
        span.due data-kind=(d.kind.as_str()) {
            span.what { (what) } " "
            (instant(d.at, "due"))
            @if held && d.kind != DueKind::Restart && d.kind != DueKind::Drain {
                " " span.held { "held by delete lock" }
            }
        }
    }
}

/// Requests served against a budget: a bar when there is a budget, the count alone otherwise.
pub fn budget(served: u64, limit: u64, label: &str) -> Markup {
    if limit == 0 {
        return html! { span.count { (served) } " " span.muted { "no limit" } };
    }
    let shown = served.min(limit);
    let tone = if served >= limit {
        "full"
    } else if served * 5 >= limit * 4 {
        "high"
    } else {
        "low"
    };
    html! {
        span.budget {
            progress class=(tone) max=(limit) value=(shown) aria-label=(label) { (served) " of " (limit) }
            span.count { (served) " / " (limit) }
        }
    }
}

/// The delete-lock switch of a `/v1` resource (`path` is its URL): a button people press, or
/// read, without the script as a plain "locked"/"unlocked".
pub fn lock_switch(id: &str, path: &str, locked: bool, name: &str) -> Markup {
    html! {
        button.switch type="button" id=(id) role="switch" aria-checked=(locked)
            data-lock=(path) aria-label={ "Delete lock of " (name) } {
            span.knob aria-hidden="true" {}
            span.label { @if locked { "locked" } @else { "unlocked" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(Duration::from_millis(750)), "750ms");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(
            duration(Duration::from_secs(2 * 86_400 + 4 * 3600 + 7)),
            "2d 4h"
        );
        assert_eq!(
            autokill(Autokill {
                num_requests: 1,
                time: Some(Duration::from_secs(30))
            }),
            "1 request · 30s stopped"
        );
        assert_eq!(autokill(Autokill::default()), "off");
    }

    #[test]
    fn a_budget_bar_is_full_at_the_limit_and_escapes_nothing_it_should_not() {
        let bar = budget(5, 5, "requests").into_string();
        assert!(bar.contains(r#"class="full""#), "{bar}");
        assert!(bar.contains(r#"value="5""#), "{bar}");
        let over = budget(7, 5, "requests").into_string();
        assert!(
            over.contains(r#"value="5""#) && over.contains("7 / 5"),
            "{over}"
        );
        assert!(budget(3, 0, "r").into_string().contains("no limit"));
        let name = lock_switch("x", "/v1/instances/a", true, "<b>").into_string();
        assert!(
            name.contains("&lt;b&gt;") && name.contains(r#"aria-checked="true""#),
            "{name}"
        );
    }

    #[test]
    fn equal_rows_have_equal_versions() {
        let a = [Region::new(
            "r",
            vec![("k".into(), "<tr id=k>1</tr>".into())],
            || html! {},
        )];
        let b = [Region::new(
            "r",
            vec![("k".into(), "<tr id=k>1</tr>".into())],
            || html! {},
        )];
        let c = [Region::new(
            "r",
            vec![("k".into(), "<tr id=k>2</tr>".into())],
            || html! {},
        )];
        assert_eq!(version(&a), version(&b));
        assert_ne!(version(&a), version(&c));
        let empty = Region::new("r", Vec::new(), || html! { p id="r-none" { "none" } });
        assert_eq!(empty.rows.len(), 1);
        assert_eq!(empty.rows[0].0, "r-none");
    }
}
