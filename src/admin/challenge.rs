//! `WWW-Authenticate` on every 401 of the admin listener (RFC 9110 §11.6.1: a 401 names the
//! schemes that would be accepted), chosen in one place by the face that refused:
//!
//! * `/v1`: `Bearer realm="autokill"`, as Unikraft Cloud's API takes its token (RFC 6750 §3,
//!   with `error="invalid_token"` when credentials were sent and refused).
//! * `/api/v1`: `ApiKey realm="autokill"` (Tutum's `Authorization: ApiKey user:key`) when
//!   `admin.api_users` are configured, and `Bearer realm="autokill"` when `admin.token` is.
//!   Basic, also accepted, is not offered: a browser would answer it with a password dialog,
//!   over the web page's own calls too.
//! * `/ui`: `Cookie realm="autokill"` with the login form and the cookie's name (the form
//!   login scheme of draft-broyer-http-cookie-auth): the page signs in through a form.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AdminState;
use super::limits::Surface;

/// The middleware: adds the challenge to a 401 that carries none.
pub async fn challenge(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let surface = Surface::of(req.uri().path());
    let sent = req.headers().contains_key(header::AUTHORIZATION);
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED
        && !resp.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        let value = schemes(surface, sent, &state);
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
    }
    resp
}

/// The challenges for a 401 of `surface`; `sent`: the request carried `Authorization`.
fn schemes(surface: Surface, sent: bool, state: &AdminState) -> String {
    const BEARER: &str = "Bearer realm=\"autokill\"";
    match surface {
        Surface::Unikraft if sent => format!("{BEARER}, error=\"invalid_token\""),
        Surface::Unikraft => BEARER.to_owned(),
        Surface::Tutum => {
            let mut offered = Vec::with_capacity(2);
            if !state.api_users.is_empty() {
                offered.push("ApiKey realm=\"autokill\"");
            }
            if state.token.is_some() || offered.is_empty() {
                offered.push(BEARER);
            }
            offered.join(", ")
        }
        Surface::Page => format!(
            "Cookie realm=\"autokill\", form-action=\"/ui/login\", cookie-name=\"{}\"",
            super::ui::COOKIE
        ),
    }
}
