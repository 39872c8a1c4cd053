//! The admin server, on its own listener. Routes:
//!
//! * `GET /livez` — 200 while the process runs (from before the store is read).
//! * `GET /readyz` — 200 once the stored state is recovered, durable and published; 503 before,
//!   while shutting down, and while a container engine is out of reach.
//! * `GET /metrics` — Prometheus text format.
//!
//! The Unikraft Cloud-shaped API (`v1`), `{uuid-or-name}` written `{id}`:
//!
//! * `POST /v1/instances` — create (one object or an array), also as a clone of a template.
//! * `GET /v1/instances` — every instance but templates; `GET /v1/instances/{id}` — one.
//! * `PATCH /v1/instances/{id}`, `PATCH /v1/instances` (items with `uuid`/`name`) — change
//!   `autokill`, `delete_lock`, `restart_policy`, `autodestroy`, `features`.
//! * `DELETE /v1/instances/{id}`, `DELETE /v1/instances` (`[{"uuid"|"name"}]`).
//! * `PUT /v1/instances/{id}/start`, `PUT /v1/instances/{id}/stop`, and the body forms
//!   `PUT /v1/instances/start`, `PUT /v1/instances/stop` (`[{"uuid"|"name"}]`).
//! * `POST /v1/instances/templates` — make templates of stopped instances;
//!   `GET`, `PATCH`, `DELETE` of `/v1/instances/templates` and `/v1/instances/templates/{id}`.
//!   (Static segments win over `{id}`: `templates`, `start` and `stop` are not instance names.)
//! * `POST /v1/services` — create service groups; `GET`, `PATCH`, `DELETE` of `/v1/services` and
//!   `/v1/services/{id}`.
//! * `GET /v1/instances/wait`, `GET /v1/instances/{id}/wait` — wait for a state.
//! * `GET /v1/instances/log`, `GET /v1/instances/{id}/log` — an instance's stdout and stderr.
//! * Unikraft endpoints without a counterpart (metrics, histories, suspend, checkpoints,
//!   autoscale, volumes, images, certificates) answer 400 naming the feature.
//!
//! The Tutum-compatible API (`/api/v1`): services, containers and actions, listed in
//! [`tutum`].
//!
//! `/v1` requires `Authorization: Bearer <token>` when `admin.token` is set. Every `/v1` answer,
//! errors included, is Unikraft's envelope `{"status","message"?,"data"?,"errors"?}`.
//!
//! The web page (`/ui/`), listed in [`ui`]: server-rendered HTML, live over Server-Sent
//! Events, acting through the two APIs above.
//!
//! Every body is limited to `admin.max_body_size` (413 naming it, see [`limits`]), and every 401
//! names the schemes it takes in `WWW-Authenticate` (see [`challenge`]).
//!
//! Every route refuses requests a web page could have sent (see [`guard`]): a foreign `Host` or
//! `Origin` (403), a body that is not `application/json` (415) — but for the web page's own
//! login and logout forms, which must come from its own origin.
//!
//! [`serve`] runs the router on its own accept loop with the proxy's protections ([`crate::net`]):
//! a connection cap, a header read timeout from accept, an idle timeout, back-off when files run
//! out.
//! [`serve_moving`] runs it on the configured listener, and on each new one a reload binds.

mod challenge;
mod guard;
mod limits;
mod tutum;
mod ui;
mod v1;

pub use guard::Hosts;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::config::AdminConfig;
use crate::controller::Published;
use crate::metrics::Metrics;
use crate::net::{self, Accepted, Activity, Busy, Timeouts, Watched};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The controller's published view.
    pub published: Published,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Set once the server is ready for traffic.
    pub ready: Arc<AtomicBool>,
    /// The API token, if any.
    pub token: Option<Arc<str>>,
    /// Base domain, to show instances' host names and resolve group domains.
    pub base_domain: Arc<str>,
    /// Sends calls to the controller.
    pub controller: crate::controller::api::Handle,
    /// Users of the Tutum-compatible `/api/v1` (`admin.api_users`).
    pub api_users: Arc<[crate::config::ApiUser]>,
    /// The `Host` names the listener answers to.
    pub hosts: Arc<Hosts>,
    /// The runtime, for instance logs.
    pub runtime: Arc<dyn crate::runtime::Runtime>,
    /// The image keys of `runtime.images`, offered by the web page's Launch wizard.
    pub images: Arc<[String]>,
    /// Whether the runtime also takes any image reference (docker), not only those keys.
    pub any_image: bool,
    /// Turns true when the server begins to shut down: long-lived answers (the web page's
    /// event streams) end then, so that open connections can finish.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Largest request body a route takes (`admin.max_body_size`).
    pub max_body_size: usize,
}

async fn unsupported(feature: &'static str) -> Response {
    v1::unsupported(feature)
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    use v1::{instances, services, templates};
    let api = Router::new()
        .route(
            "/v1/instances",
            get(instances::list)
                .post(instances::create)
                .patch(instances::patch_many)
                .delete(instances::delete_many),
        )
        .route("/v1/instances/start", put(instances::start_many))
        .route("/v1/instances/stop", put(instances::stop_many))
        .route("/v1/instances/wait", get(instances::wait_many))
        .route("/v1/instances/{id}/wait", get(instances::wait_one))
        .route("/v1/instances/log", get(instances::logs_many))
        .route("/v1/instances/{id}/log", get(instances::logs_one))
        .route(
            "/v1/instances/templates",
            get(templates::list)
                .post(templates::create)
                .patch(templates::patch_many)
                .delete(templates::delete_many),
        )
        .route(
            "/v1/instances/templates/{id}",
            get(templates::get)
                .patch(templates::patch)
                .delete(templates::delete),
        )
        .route(
            "/v1/instances/{id}",
            get(instances::get)
                .patch(instances::patch)
                .delete(instances::delete),
        )
        .route("/v1/instances/{id}/start", put(instances::start))
        .route("/v1/instances/{id}/stop", put(instances::stop))
        .route(
            "/v1/services",
            get(services::list)
                .post(services::create)
                .patch(services::patch_many)
                .delete(services::delete_many),
        )
        .route(
            "/v1/services/{id}",
            get(services::get)
                .patch(services::patch)
                .delete(services::delete),
        )
        // Unikraft Cloud features autokill does not have: named, not "no such instance".
        .route(
            "/v1/instances/metrics",
            any(|| unsupported("instance metrics")),
        )
        .route(
            "/v1/instances/{id}/metrics",
            any(|| unsupported("instance metrics")),
        )
        .route(
            "/v1/instances/history",
            any(|| unsupported("instance histories")),
        )
        .route(
            "/v1/instances/{id}/history",
            any(|| unsupported("instance histories")),
        )
        .route(
            "/v1/instances/suspend",
            any(|| unsupported("suspend and standby")),
        )
        .route(
            "/v1/instances/{id}/suspend",
            any(|| unsupported("suspend and standby")),
        )
        .route(
            "/v1/instances/checkpoints",
            any(|| unsupported("checkpoints")),
        )
        .route(
            "/v1/instances/checkpoints/{*rest}",
            any(|| unsupported("checkpoints")),
        )
        .route(
            "/v1/services/autoscale",
            any(|| unsupported("autoscale settings")),
        )
        .route(
            "/v1/services/{id}/autoscale",
            any(|| unsupported("autoscale settings")),
        )
        .route(
            "/v1/services/{id}/autoscale/{*rest}",
            any(|| unsupported("autoscale settings")),
        )
        .route("/v1/volumes", any(|| unsupported("volumes")))
        .route("/v1/volumes/{*rest}", any(|| unsupported("volumes")))
        .route("/v1/images", any(|| unsupported("image registries")))
        .route("/v1/certificates", any(|| unsupported("certificates")))
        .route(
            "/v1/certificates/{*rest}",
            any(|| unsupported("certificates")),
        )
        .method_not_allowed_fallback(|| async {
            v1::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path".into(),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .nest("/api/v1", tutum::router(&state))
        .merge(ui::router(&state))
        .fallback(|| async { v1::error(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        // The web page's session cookie stands for its `Authorization` (after the guard, so
        // only a request from the listener's own pages carries it that far).
        .layer(middleware::from_fn(ui::credentials_from_cookie))
        .layer(limits::layer(state.max_body_size))
        // Outermost last: the guard runs first, and every refusal below it (400 for a path
        // that is not UTF-8, ...) leaves as the envelope, a body over the limit as a 413 that
        // names it, a 401 with its challenge.
        .layer(middleware::from_fn(enveloped))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::too_large,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            challenge::challenge,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::same_site_json,
        ))
        .with_state(state)
}

/// Turns an error answer that is not JSON (axum's rejections: 413 body too large, 400 path not
/// UTF-8, ...) into the envelope, keeping its status and text. The plain-text probes and the
/// web page's HTML stay as they are.
async fn enveloped(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let probe =
        matches!(path, "/livez" | "/readyz" | "/metrics" | "/ui") || path.starts_with("/ui/");
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if probe || json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    v1::error(status, message)
}

/// How long open admin connections may finish their requests once [`serve`] is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` resolves, then lets open requests finish (at most
/// [`SHUTDOWN_GRACE`]). Each connection runs under [`net::supervise`]: closed when it has sent
/// nothing for `header_read_timeout` since accept, had no request in progress for
/// `idle_timeout`, or its client took nothing of an answer for `idle_timeout`.
pub async fn serve(
    mut listener: net::Listener,
    app: Router,
    cfg: &AdminConfig,
    stop: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let timeouts = Timeouts {
        silent: cfg.header_read_timeout,
        idle: cfg.idle_timeout,
        stalled: cfg.idle_timeout,
    };
    let graceful = GracefulShutdown::new();
    let app = TowerToHyperService::new(app);
    tokio::pin!(stop);
    loop {
        let Accepted { stream, permit, .. } = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        // Every request in progress holds a clone of `token`; the watchdog counts them.
        let token = Arc::new(());
        let watched = Arc::downgrade(&token);
        let busy = move || {
            if watched.strong_count() > 1 {
                Busy::Working
            } else {
                Busy::Idle
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = Arc::clone(&token);
            let answer = hyper::service::Service::call(&app, req);
            async move {
                let answer = answer.await;
                drop(guard);
                answer
            }
        });
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
        let conn = graceful.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(Err(err)) = net::supervise(conn, &activity, timeouts, busy).await {
                tracing::debug!(%err, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after the shutdown grace; closing them");
    }
}

/// The admin listener's settings [`serve_moving`] needs.
#[derive(Debug, Clone)]
pub struct AdminListen {
    /// The admin configuration the server started with.
    pub cfg: AdminConfig,
    /// Connections served at once, per listener.
    pub cap: usize,
    /// Counts failed accepts.
    pub errors: prometheus::IntCounter,
}

/// Serves the admin API on `listener` until `stop` resolves, and moves to each listener that
/// `moves` brings (a reload that changed `admin.listen`): a server starts on the new listener,
/// its Host guard built for the new address, and the one on the old listener stops as at
/// shutdown (it accepts no more; requests in progress finish, at most [`SHUTDOWN_GRACE`]).
pub async fn serve_moving(
    listener: tokio::net::TcpListener,
    state: AdminState,
    listen: AdminListen,
    mut moves: tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpListener>,
    stop: impl Future<Output = ()>,
) {
    let mut servers = tokio::task::JoinSet::new();
    let mut start = |listener: tokio::net::TcpListener| {
        let mut state = state.clone();
        if let Ok(addr) = listener.local_addr() {
            state.hosts = Arc::new(Hosts::new(addr, &listen.cfg.allowed_hosts));
        }
        let listener = net::Listener::new(listener, listen.cap, "admin", listen.errors.clone());
        let cfg = listen.cfg.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        servers.spawn(async move {
            serve(listener, router(state), &cfg, async move {
                let _ = stopped.await;
            })
            .await;
        });
        stop
    };
    let mut current = start(listener);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(listener) = moves.recv() => {
                let _ = std::mem::replace(&mut current, start(listener)).send(());
            }
            () = &mut stop => break,
        }
    }
    let _ = current.send(());
    while servers.join_next().await.is_some() {}
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Checks `Authorization: Bearer <token>` in constant time when a token is configured.
async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // RFC 9110 §11.1: the scheme name is case-insensitive.
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            // `challenge` adds the `WWW-Authenticate` that names the scheme.
            return v1::error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            );
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so the time taken tells nothing about where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
