//! The web page, `/ui/`, on the admin listener: server-rendered HTML (readable without
//! JavaScript), kept live by Server-Sent Events, acting through `/api/v1` and `/v1` from a small
//! script of its own. Everything is compiled into the binary. Routes:
//!
//! * `GET /ui/` — services (Tutum's): state, containers, policies, delete lock; the *Launch new
//!   service* wizard.
//! * `GET /ui/services/{id}` — one service: its containers, the Autodestroy button, start, stop,
//!   redeploy, scale, terminate, the delete-lock switch.
//! * `GET /ui/instances` — instances (Unikraft's), with their request budgets and the countdowns
//!   of their timers; templates, service groups, the kills of the last hour.
//! * `GET /ui/events/services`, `/ui/events/services/{id}`, `/ui/events/instances` — the
//!   pages' live regions as Server-Sent Events ([`live`]).
//! * `GET /ui/login`, `POST /ui/login`, `POST /ui/logout` — the session cookie, when a token or
//!   API users are configured.
//! * `GET /ui/assets/ui.js`, `/ui/assets/ui.css` — the script and the style sheet.
//!
//! What the pages show is read from the controller's published view and the proxy's meters (one
//! atomic load each), never from a lock the proxy takes. What they change goes through the APIs
//! with the same checks and refusals as any client's call.
//!
//! Sign-in takes the credentials the APIs take (the admin token, or an `admin.api_users` name
//! and key). The page keeps them in a cookie marked `HttpOnly` (no script reads it) and
//! `SameSite=Strict` (no other site's request carries it), and [`credentials_from_cookie`] turns
//! it back into the `Authorization` it stands for. Mutating calls are `application/json`
//! (refused cross-site by the admin guard without a CORS preflight, which is never granted);
//! the login and logout forms are let through only from the listener's own origin.

mod live;
mod pages;
mod render;

use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;

use super::AdminState;

/// The web page's form posts: the only requests with a body the admin guard lets through
/// without `Content-Type: application/json`, and only from the listener's own origin.
pub const FORMS: [&str; 2] = ["/ui/login", "/ui/logout"];

/// The cookie that carries the signed-in credentials.
pub(super) const COOKIE: &str = "autokill_session";

/// What the page's handlers share.
#[derive(Clone)]
struct Ui {
    admin: AdminState,
}

/// The `/ui` routes, to be merged into the admin router.
pub fn router<S: Clone + Send + Sync + 'static>(admin: &AdminState) -> Router<S> {
    let ui = Ui {
        admin: admin.clone(),
    };
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(services))
        .route("/ui/services/{id}", get(service))
        .route("/ui/instances", get(instances))
        .route("/ui/events/services", get(live::services))
        .route("/ui/events/services/{id}", get(live::service))
        .route("/ui/events/instances", get(live::instances))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/ui.js", get(script))
        .route("/ui/assets/ui.css", get(style))
        .route("/ui/{*rest}", get(not_found))
        .with_state(ui)
}

// ---- pages ---------------------------------------------------------------------------------

/// Whether the request may read the page: credentials the APIs take, or none configured.
fn signed_in(admin: &AdminState, headers: &HeaderMap) -> bool {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    super::tutum::principal(admin, authorization).is_some()
}

/// Whether the API asks for credentials at all (then the page shows a sign-out button).
fn auth_configured(admin: &AdminState) -> bool {
    admin.token.is_some() || !admin.api_users.is_empty()
}

/// A page, or the way to the login form when the request is not signed in.
fn page(ui: &Ui, headers: &HeaderMap, here: &str, render: impl FnOnce() -> Markup) -> Response {
    if !signed_in(&ui.admin, headers) {
        let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Redirect::to(&format!("/ui/login?next={next}")).into_response();
    }
    html(StatusCode::OK, render())
}

/// An HTML answer with the headers every page carries: no framing (a toggle cannot be
/// clicked through another site's frame), scripts and styles only from here, no referrer to
/// other sites, no caching of what may be behind a login.
fn html(status: StatusCode, body: Markup) -> Response {
    let mut resp = (status, body.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with a form post, which the
    // admin guard (rightly) cannot tell from another site's.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What every page is rendered with.
fn context(ui: &Ui) -> render::Context {
    render::Context {
        images: ui.admin.images.to_vec(),
        any_image: ui.admin.any_image,
        sign_out: auth_configured(&ui.admin),
    }
}

/// `GET /ui/`.
async fn services(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    page(&ui, &headers, "/ui/", || {
        let view = ui.admin.published.view.load();
        pages::services(&context(&ui), &view)
    })
}

/// `GET /ui/services/{id}`: a name or a UUID, as the API takes it.
async fn service(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let here = format!(
        "/ui/services/{}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    if !signed_in(&ui.admin, &headers) {
        return page(&ui, &headers, &here, || maud::html! {});
    }
    let view = ui.admin.published.view.load();
    match pages::service(&context(&ui), &view, &id) {
        Some(markup) => html(StatusCode::OK, markup),
        None => html(
            StatusCode::NOT_FOUND,
            pages::missing(&context(&ui), &format!("There is no service {id}.")),
        ),
    }
}

/// `GET /ui/instances`.
async fn instances(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    page(&ui, &headers, "/ui/instances", || {
        let view = ui.admin.published.view.load();
        pages::instances(&context(&ui), &view, &ui.admin.metrics.kills_last_hour())
    })
}

/// Any other path under `/ui/`.
async fn not_found(State(ui): State<Ui>) -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::missing(&context(&ui), "There is no such page."),
    )
}

// ---- signing in ----------------------------------------------------------------------------

/// `?next=` of the login form: where to go once signed in.
#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only a page of this web page: never another site (an open redirect) nor an API path.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

/// `GET /ui/login`.
async fn login_form(State(ui): State<Ui>, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next.as_deref()).to_owned();
    if !auth_configured(&ui.admin) {
        return Redirect::to(&next).into_response();
    }
    html(StatusCode::OK, pages::login(&next, None))
}

/// `POST /ui/login` (a form: `user`, `key`, `next`): checks the credentials as the APIs do and
/// keeps them in the session cookie; 401 with the form again when they are wrong.
async fn login(State(ui): State<Ui>, body: Bytes) -> Response {
    let mut user = String::new();
    let mut key = String::new();
    let mut next = String::new();
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "user" => user = v.trim().to_owned(),
            "key" => key = v.trim().to_owned(),
            "next" => next = v.into_owned(),
            _ => {}
        }
    }
    let next = safe_next(Some(&next)).to_owned();
    let credential = if user.is_empty() {
        format!("Bearer {key}")
    } else {
        format!("ApiKey {user}:{key}")
    };
    let accepted = !key.is_empty()
        && super::tutum::principal(&ui.admin, Some(&credential)).is_some()
        && auth_configured(&ui.admin);
    if !accepted {
        let message = if key.is_empty() {
            "Enter the admin token, or a user name and its API key."
        } else {
            "Those credentials are not accepted."
        };
        return html(StatusCode::UNAUTHORIZED, pages::login(&next, Some(message)));
    }
    let value: String = form_urlencoded::byte_serialize(credential.as_bytes()).collect();
    let cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    session_answer(&next, &cookie)
}

/// `POST /ui/logout`: forgets the session cookie.
async fn logout() -> Response {
    session_answer(
        "/ui/login",
        &format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    )
}

/// A 303 to `to` that sets `cookie`.
fn session_answer(to: &str, cookie: &str) -> Response {
    let mut resp = Redirect::to(to).into_response();
    match HeaderValue::from_str(cookie) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "credentials not usable in a cookie",
            )
                .into_response();
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The credential the session cookie carries, if the request has one.
fn cookie_credential(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| {
            form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        })
        .filter(|v| !v.is_empty())
}

/// Middleware for every admin route: a request without `Authorization` that carries the session
/// cookie is taken as sending the credentials the cookie holds. The admin guard has run before
/// (foreign `Host` or `Origin` refused), and a browser sends a `SameSite=Strict` cookie only
/// with requests that start on this site.
pub async fn credentials_from_cookie(mut req: Request, next: Next) -> Response {
    if !req.headers().contains_key(header::AUTHORIZATION)
        && let Some(value) =
            cookie_credential(req.headers()).and_then(|c| HeaderValue::from_str(&c).ok())
    {
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    next.run(req).await
}

// ---- assets --------------------------------------------------------------------------------

/// The script: live regions, countdowns, and the calls the buttons make.
const SCRIPT: &str = include_str!("assets/ui.js");
/// The style sheet.
const STYLE: &str = include_str!("assets/ui.css");

/// A short hash of the assets, put in their URLs so that a new build is fetched anew while an
/// unchanged one is cached for good.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    SCRIPT.hash(&mut h);
    STYLE.hash(&mut h);
    format!("{:x}", h.finish() & 0xffff_ffff)
});

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_page() {
        assert_eq!(safe_next(Some("/ui/instances")), "/ui/instances");
        for bad in [
            "//evil.example/ui/",
            "https://evil.example/",
            "/v1/instances",
            "/ui\\x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn the_cookie_gives_back_what_was_stored() {
        let credential = "ApiKey ops:k;e=y, \"x\"";
        let value: String = form_urlencoded::byte_serialize(credential.as_bytes()).collect();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}; more=2"))
                .unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(cookie_credential(&headers).as_deref(), Some(credential));
        headers.insert(header::COOKIE, HeaderValue::from_static("other=1"));
        assert_eq!(cookie_credential(&headers), None);
    }
}
