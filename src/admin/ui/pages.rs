//! The pages: services with the Launch wizard, one service, instances with templates and
//! groups, and the login form. Each live page is its static frame around the regions of a
//! `*_regions` function, which [`super::live`] renders again for its updates.

use std::time::SystemTime;

use maud::{Markup, html};

use super::render::{
    self, Context, Nav, Region, autodestroy, autokill, autorestart, badge, budget, due,
    instance_tone, instant, layout, lock_switch, tutum_tone,
};
use crate::admin::tutum::{all_containers, all_services, find_service};
use crate::config::Autodestroy;
use crate::controller::api::Ref;
use crate::controller::{ContainerView, Due, InstanceState, InstanceView, ServiceView, View};
use crate::metrics::KillCount;

/// The `data-events` URL of a live page: its stream, and the version the page shows.
fn events(path: &str, regions: &[Region]) -> String {
    format!("{path}?v={}", render::version(regions))
}

/// The region with `id` of `regions`, placed in the page.
fn region(regions: &[Region], id: &str) -> maud::PreEscaped<String> {
    regions
        .iter()
        .find(|r| r.id == id)
        .map_or_else(|| maud::PreEscaped(String::new()), Region::inner)
}

/// A table whose body is the region `id`, under the column headings `columns`.
fn table(regions: &[Region], id: &str, columns: &[&str]) -> Markup {
    html! {
        div.scroll {
            table.list {
                thead { tr { @for c in columns { th scope="col" { (c) } } } }
                tbody id=(id) { (region(regions, id)) }
            }
        }
    }
}

// ---- services ------------------------------------------------------------------------------

/// The services page's live regions: the summary line and the table's rows.
pub fn services_regions(view: &View, now: SystemTime) -> Vec<Region> {
    let services: Vec<&ServiceView> = all_services(view, now).collect();
    let live = services
        .iter()
        .filter(|s| s.terminated_at.is_none())
        .count();
    let running: usize = services.iter().map(|s| s.running).sum();
    let summary = html! {
        p #services-summary-row {
            (live) " service" @if live != 1 { "s" } " · "
            (running) " container" @if running != 1 { "s" } " running"
        }
    };
    let rows = services
        .iter()
        .map(|s| (format!("s-{}", s.id), service_row(s).into_string()))
        .collect();
    vec![
        Region {
            id: "services-summary",
            rows: vec![("services-summary-row".into(), summary.into_string())],
        },
        Region::new("services", rows, || {
            html! { tr #services-none { td.empty colspan="7" { "No services yet. Launch one above." } } }
        }),
    ]
}

fn service_row(s: &ServiceView) -> Markup {
    let spec = &s.spec;
    html! {
        tr id={ "s-" (s.id) } {
            td data-label="Service" {
                a.name href={ "/ui/services/" (s.id) } { (s.name) }
                span.sub { (spec.image) }
            }
            td data-label="State" { (badge(s.state.as_str(), tutum_tone(s.state.as_str()))) }
            td data-label="Containers" { span.count { (s.running) " / " (spec.target) } span.sub { "running / target" } }
            td data-label="Autorestart" { (autorestart(spec.autorestart)) }
            td data-label="Autodestroy" { (autodestroy(spec.autodestroy)) }
            td data-label="Autokill" { (autokill(spec.autokill)) }
            td data-label="Delete lock" { @if s.delete_lock { span.lock { "locked" } } @else { span.muted { "—" } } }
        }
    }
}

/// `GET /ui/`: every service, and the Launch wizard.
pub fn services(ctx: &Context, view: &View) -> Markup {
    let regions = services_regions(view, SystemTime::now());
    let main = html! {
        div.pagehead {
            h1 { "Services" }
            div #services-summary { (region(&regions, "services-summary")) }
        }
        (launch(ctx))
        section aria-labelledby="services-h" {
            h2 #services-h { "All services" }
            (table(&regions, "services", &["Service", "State", "Containers", "Autorestart", "Autodestroy", "Autokill", "Delete lock"]))
        }
    };
    layout(
        ctx,
        "Services",
        Nav::Services,
        Some(events("/ui/events/services", &regions)),
        main,
    )
}

/// The *Launch new service* wizard: Tutum's fields, and autokill's. The script sends it to
/// `POST /api/v1/service/` and then starts the service; without the script it stays disabled.
fn launch(ctx: &Context) -> Markup {
    html! {
        section.card aria-labelledby="launch-h" {
            h2 #launch-h { "Launch new service" }
            noscript {
                p.note { "Launching needs JavaScript. From a shell: "
                    code { "autokill service run --autodestroy ALWAYS -n NAME IMAGE" } }
            }
            form #launch {
                fieldset.plain #launch-fields disabled {
                    legend.visually-hidden { "New service" }
                    div.grid {
                        label.field {
                            span { "Image" }
                            @if ctx.any_image {
                                input name="image" list="images" required autocomplete="off"
                                    value=[ctx.images.first()] placeholder="image key or reference";
                                datalist #images { @for i in &ctx.images { option value=(i) {} } }
                            } @else {
                                select name="image" required {
                                    @for i in &ctx.images { option value=(i) { (i) } }
                                }
                            }
                        }
                        label.field {
                            span { "Name" }
                            input name="name" maxlength="56" autocomplete="off" spellcheck="false"
                                pattern="[a-z0-9]([a-z0-9\\-]*[a-z0-9])?" placeholder="from the image"
                                aria-describedby="name-hint";
                            small #name-hint { "Lower-case letters, digits, hyphens. Containers are NAME-1, NAME-2, …" }
                        }
                        label.field {
                            span { "Number of containers" }
                            input name="containers" type="number" min="0" max="1000" value="1" required;
                        }
                        label.field {
                            span { "Autorestart" }
                            select name="autorestart" {
                                option value="OFF" selected { "OFF" }
                                option value="ON_FAILURE" { "ON_FAILURE" }
                                option value="ALWAYS" { "ALWAYS" }
                            }
                        }
                    }
                    div.switchrow {
                        input #launch-autodestroy .toggle type="checkbox" role="switch" name="autodestroy"
                            aria-describedby="autodestroy-hint";
                        label for="launch-autodestroy" { "Autodestroy" }
                        small #autodestroy-hint {
                            "On: a container that stops is terminated (" code { "ALWAYS" } "). "
                            "Off: it stays stopped (" code { "OFF" } ")."
                        }
                    }
                    fieldset.autokill {
                        legend { "Autokill" }
                        div.grid {
                            label.field {
                                span { "Requests per container" }
                                input name="num_requests" type="number" min="0" step="1" placeholder="0 = no limit";
                            }
                            label.field {
                                span { "Stopped time (seconds)" }
                                input name="stopped_s" type="number" min="0" step="any" placeholder="0 = keep";
                            }
                        }
                    }
                    div.formfoot {
                        button.primary type="submit" { "Launch" }
                        span #launch-status role="status" aria-live="polite" {}
                    }
                }
            }
        }
    }
}

// ---- one service ---------------------------------------------------------------------------

/// One service's live regions (`None` when no service, live or lately terminated, is `id`):
/// its header with the Autodestroy button and the delete-lock switch, and its containers.
pub fn service_regions(view: &View, id: &str, now: SystemTime) -> Option<Vec<Region>> {
    let s = find_service(view, &Ref::parse(id), now)?;
    let mut containers: Vec<ContainerView> = all_containers(view, now)
        .into_iter()
        .filter(|c| c.service == Some(s.id))
        .collect();
    containers.sort_by(|a, b| natural(&a.name).cmp(&natural(&b.name)));
    let rows = containers
        .iter()
        .map(|c| (format!("c-{}", c.id), container_row(c).into_string()))
        .collect();
    Some(vec![
        Region {
            id: "service-head",
            rows: vec![("service-head-row".into(), service_head(s).into_string())],
        },
        Region::new("containers", rows, || {
            html! { tr #containers-none { td.empty colspan="7" { "No containers." } } }
        }),
    ])
}

/// `web-10` after `web-9`.
fn natural(name: &str) -> (usize, &str) {
    (name.len(), name)
}

fn service_head(s: &ServiceView) -> Markup {
    let spec = &s.spec;
    let on = spec.autodestroy != Autodestroy::Off;
    let uri = format!("/api/v1/service/{}/", s.id);
    html! {
        div #service-head-row data-uuid=(s.id) data-name=(s.name) data-state=(s.state.as_str()) {
            div.titlerow {
                h1 { (s.name) }
                (badge(s.state.as_str(), tutum_tone(s.state.as_str())))
            }
            div.toggles {
                button.toggle-button #autodestroy type="button" aria-pressed=(on)
                    data-autodestroy=(uri) data-value=(render_name(spec.autodestroy)) {
                    span.knob aria-hidden="true" {}
                    "Autodestroy "
                    span.val { (render_name(spec.autodestroy)) }
                }
                span.lockrow {
                    span.lbl #lock-label { "Delete lock" }
                    (lock_switch("service-lock", &format!("/v1/services/{}", s.id), s.delete_lock, &s.name))
                }
            }
            dl.facts {
                div { dt { "Image" } dd { code { (spec.image) } @if !spec.synchronized { " " span.warn { "redeploy to apply" } } } }
                div { dt { "Containers" } dd { (s.running) " running of " (spec.target) " wanted" @if s.stopped > 0 { ", " (s.stopped) " stopped" } } }
                div { dt { "Autorestart" } dd { (autorestart(spec.autorestart)) } }
                div { dt { "Autodestroy" } dd { (autodestroy(spec.autodestroy)) } }
                div { dt { "Autokill" } dd { (autokill(spec.autokill)) } }
                @if let Some(dns) = s.domains.first() { div { dt { "Address" } dd { code { (dns) } } } }
                div { dt { "Created" } dd { (instant(s.created_at, "since")) } }
                @if let Some(t) = s.terminated_at { div { dt { "Terminated" } dd { (instant(t, "since")) } } }
            }
        }
    }
}

fn render_name(a: Autodestroy) -> &'static str {
    crate::admin::tutum::wire::autodestroy_name(a)
}

fn container_row(c: &ContainerView) -> Markup {
    let state = c.state.as_str();
    html! {
        tr id={ "c-" (c.id) } data-state=(state) {
            td data-label="Container" { span.name { (c.name) } }
            td data-label="State" { (badge(state, tutum_tone(state))) }
            td data-label="Exit code" {
                @match c.exit_code {
                    Some(0) => { span.exit.ok { "0" } " " span.sub { "success" } }
                    Some(code) => { span.exit.bad { (code) } " " span.sub { "failure" } }
                    None => { span.muted { "—" } }
                }
            }
            td data-label="Requests" { (budget(c.requests, c.autokill.num_requests, "requests served")) }
            td data-label="Autodestroy" { (autodestroy(c.autodestroy)) }
            td data-label="Since" {
                @if let Some(t) = c.terminated_at { span.sub { "terminated " } (instant(t, "since")) }
                @else if let Some(t) = c.stopped_at.filter(|_| state != "Running") { span.sub { "stopped " } (instant(t, "since")) }
                @else if let Some(t) = c.started_at { span.sub { "started " } (instant(t, "since")) }
                @else { span.sub { "created " } (instant(c.created_at, "since")) }
            }
            td data-label="Stop cause" {
                @match c.stop_reason { Some(r) => { (r.as_str()) } None => { span.muted { "—" } } }
            }
        }
    }
}

/// `GET /ui/services/{id}`, or `None` when there is no such service.
pub fn service(ctx: &Context, view: &View, id: &str) -> Option<Markup> {
    let now = SystemTime::now();
    let s = find_service(view, &Ref::parse(id), now)?;
    let uuid = s.id.to_string();
    let name = s.name.clone();
    let target = s.spec.target;
    let regions = service_regions(view, &uuid, now)?;
    let api = format!("/api/v1/service/{uuid}/");
    let main = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ui/" { "Services" } " › " span aria-current="page" { (name) } }
        div #service-head { (region(&regions, "service-head")) }
        section.card.actions aria-label="Actions" {
            button type="button" data-call={ (api) "start/" } data-method="POST" { "Start" }
            button type="button" data-call={ (api) "stop/" } data-method="POST" { "Stop" }
            button type="button" data-call={ (api) "redeploy/" } data-method="POST"
                data-confirm={ "Redeploy " (name) "? Every container is replaced by a new one." } { "Redeploy" }
            form.scale data-scale=(api) {
                label for="scale-n" { "Containers" }
                input #scale-n name="n" type="number" min="0" max="1000" value=(target) required;
                button type="submit" { "Scale" }
            }
            span.spacer {}
            button.danger type="button" data-call=(api) data-method="DELETE"
                data-confirm={ "Terminate " (name) " and all its containers?" } { "Terminate" }
            noscript { p.note { "These buttons need JavaScript; the command line does the same: "
                code { "autokill service start|stop|redeploy|scale|terminate " (name) } } }
        }
        section aria-labelledby="containers-h" {
            h2 #containers-h { "Containers" }
            (table(&regions, "containers", &["Container", "State", "Exit code", "Requests", "Autodestroy", "Since", "Stop cause"]))
        }
    };
    Some(layout(
        ctx,
        &name,
        Nav::Services,
        Some(events(&format!("/ui/events/services/{uuid}"), &regions)),
        main,
    ))
}

// ---- instances -----------------------------------------------------------------------------

/// The instances page's live regions: the summary, the kills of the last hour, and the rows of
/// the instances, templates and groups tables.
pub fn instances_regions(view: &View, kills: &[KillCount]) -> Vec<Region> {
    let (templates, instances): (Vec<&InstanceView>, Vec<&InstanceView>) = view
        .instances
        .iter()
        .partition(|i| i.state == InstanceState::Template);
    let mut by_state = [0usize; InstanceState::ALL.len()];
    for i in &instances {
        if let Some(n) = InstanceState::ALL.iter().position(|s| *s == i.state) {
            by_state[n] += 1;
        }
    }
    let summary = html! {
        p #instances-summary-row {
            (instances.len()) " instance" @if instances.len() != 1 { "s" }
            @for (state, n) in InstanceState::ALL.iter().zip(by_state).filter(|(_, n)| *n > 0) {
                " · " span class={ "dot " (instance_tone(state.as_str())) } {} (n) " " (state.as_str())
            }
            " · " (templates.len()) " template" @if templates.len() != 1 { "s" }
            " · " (view.groups.len()) " group" @if view.groups.len() != 1 { "s" }
        }
    };
    let rows = instances
        .iter()
        .map(|i| {
            let (_, key, html) = instance_entry(view, i);
            (key, html)
        })
        .collect();
    let template_rows = templates
        .iter()
        .map(|t| {
            let (_, key, html) = instance_entry(view, t);
            (key, html)
        })
        .collect();
    let group_rows = view
        .groups
        .iter()
        .map(|g| {
            let row = html! {
                tr id={ "g-" (g.id) } {
                    td data-label="Group" {
                        span.name { (g.name) }
                        span.sub { @for (n, d) in g.domains.iter().enumerate() { @if n > 0 { ", " } (d) } }
                    }
                    td data-label="Instances" { (g.instances.len()) }
                    td data-label="Autokill" { @match g.autokill_time { Some(t) => { (render::duration(t)) " empty" } None => { span.muted { "off" } } } }
                    td data-label="Next" { (due(view.due.get(&g.id).copied(), g.delete_lock)) }
                    td data-label="Delete lock" { (lock_switch(&format!("lock-g-{}", g.id), &format!("/v1/services/{}", g.id), g.delete_lock, &g.name)) }
                }
            };
            (format!("g-{}", g.id), row.into_string())
        })
        .collect();
    vec![
        Region {
            id: "instances-summary",
            rows: vec![("instances-summary-row".into(), summary.into_string())],
        },
        kills_region(kills),
        Region::new("instances", rows, || {
            html! { tr #instances-none { td.empty colspan="6" { "No instances." } } }
        }),
        Region::new("templates", template_rows, || {
            html! { tr #templates-none { td.empty colspan="5" { "No templates." } } }
        }),
        Region::new("groups", group_rows, || {
            html! { tr #groups-none { td.empty colspan="5" { "No service groups." } } }
        }),
    ]
}

/// The instances page's kills of the last hour, by reason.
pub fn kills_region(kills: &[KillCount]) -> Region {
    let total: u64 = kills.iter().map(|k| k.count).sum();
    let kills = html! {
        div #kills-row {
            @if kills.is_empty() {
                p.muted { "No kills in the last hour." }
            } @else {
                p.total { strong { (total) } " kill" @if total != 1 { "s" } " in the last hour" }
                ul.kills {
                    @for k in kills {
                        li { span.reason { (k.reason) } " " span.res { (k.resource.replace('_', " ")) } " " strong { (k.count) } }
                    }
                }
            }
        }
    };
    Region {
        id: "kills",
        rows: vec![("kills-row".into(), kills.into_string())],
    }
}

/// One instance's row on the instances page: its region (`instances`, or `templates` for a
/// template), key and HTML. A row is a function of the instance's record, its meter and its
/// deadline, so when only a meter moved the row is all that needs rendering again.
pub fn instance_entry(view: &View, i: &InstanceView) -> (&'static str, String, String) {
    let next = view.due.get(&i.id).copied();
    if i.state == InstanceState::Template {
        (
            "templates",
            format!("t-{}", i.id),
            template_row(i, next).into_string(),
        )
    } else {
        (
            "instances",
            format!("i-{}", i.id),
            instance_row(i, next).into_string(),
        )
    }
}

fn instance_row(i: &InstanceView, next: Option<Due>) -> Markup {
    let state = i.state.as_str();
    let served = i.meter.count();
    let limit = i.autokill.num_requests;
    html! {
        tr id={ "i-" (i.id) } data-state=(state) data-name=(i.name) {
            td data-label="Instance" {
                span.name { (i.name) }
                span.sub { (i.image) @if let Some(g) = &i.group { " · in " (g) } }
            }
            td data-label="State" {
                (badge(state, instance_tone(state)))
                @if let Some(err) = &i.start_error { span.sub.err title=(err) { "start failed" } }
            }
            td data-label="Requests" {
                (budget(served, limit, &format!("requests served by {}", i.name)))
                @if limit > 0 && served >= limit && i.delete_lock { span.sub.held { "spent; held by delete lock" } }
            }
            td data-label="Next" { (due(next, i.delete_lock)) }
            td data-label="Policy" {
                span.sub { "restart " (render::autorestart(i.restart_policy)) }
                span.sub { "autodestroy " (crate::admin::tutum::wire::autodestroy_name(i.autodestroy)) }
                @if let Some(t) = i.autokill.time { span.sub { "killed after " (render::duration(t)) " stopped" } }
            }
            td data-label="Delete lock" { (lock_switch(&format!("lock-i-{}", i.id), &format!("/v1/instances/{}", i.id), i.delete_lock, &i.name)) }
        }
    }
}

fn template_row(t: &InstanceView, next: Option<Due>) -> Markup {
    html! {
        tr id={ "t-" (t.id) } {
            td data-label="Template" { span.name { (t.name) } span.sub { (t.image) } }
            td data-label="Clones" { (t.clones) }
            td data-label="Clones inherit" { (autokill(t.autokill)) }
            td data-label="Next" {
                (due(next, t.delete_lock))
                @if t.clones > 0 && next.is_some() { span.sub { "waits for its clones" } }
            }
            td data-label="Delete lock" { (lock_switch(&format!("lock-t-{}", t.id), &format!("/v1/instances/templates/{}", t.id), t.delete_lock, &t.name)) }
        }
    }
}

/// `GET /ui/instances`.
pub fn instances(ctx: &Context, view: &View, kills: &[KillCount]) -> Markup {
    let regions = instances_regions(view, kills);
    let main = html! {
        div.pagehead {
            h1 { "Instances" }
            div #instances-summary { (region(&regions, "instances-summary")) }
        }
        section.card aria-labelledby="kills-h" {
            h2 #kills-h { "Kills, last hour" }
            div #kills { (region(&regions, "kills")) }
        }
        section aria-labelledby="instances-h" {
            h2 #instances-h { "Instances" }
            (table(&regions, "instances", &["Instance", "State", "Requests", "Next", "Policy", "Delete lock"]))
        }
        section aria-labelledby="templates-h" {
            h2 #templates-h { "Templates" }
            (table(&regions, "templates", &["Template", "Clones", "Clones inherit", "Next", "Delete lock"]))
        }
        section aria-labelledby="groups-h" {
            h2 #groups-h { "Service groups" }
            (table(&regions, "groups", &["Group", "Instances", "Autokill", "Next", "Delete lock"]))
        }
    };
    layout(
        ctx,
        "Instances",
        Nav::Instances,
        Some(events("/ui/events/instances", &regions)),
        main,
    )
}

// ---- the rest ------------------------------------------------------------------------------

/// The login form; `error` says why the last attempt was refused.
pub fn login(next: &str, error: Option<&str>) -> Markup {
    let ctx = Context {
        images: Vec::new(),
        any_image: false,
        sign_out: false,
    };
    let main = html! {
        section.card.login aria-labelledby="login-h" {
            h1 #login-h { "Sign in" }
            p { "The admin token, or a user of " code { "admin.api_users" } " and its API key." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label.field {
                    span { "User " small { "(empty for the admin token)" } }
                    input name="user" autocomplete="username" spellcheck="false";
                }
                label.field {
                    span { "Token or API key" }
                    input name="key" type="password" autocomplete="current-password" required autofocus;
                }
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    layout(&ctx, "Sign in", Nav::None, None, main)
}

/// A page saying `message` (404).
pub fn missing(ctx: &Context, message: &str) -> Markup {
    let main = html! {
        section.card {
            h1 { "Not found" }
            p { (message) }
            p { a href="/ui/" { "Services" } " · " a href="/ui/instances" { "Instances" } }
        }
    };
    layout(ctx, "Not found", Nav::None, None, main)
}
