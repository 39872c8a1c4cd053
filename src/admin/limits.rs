//! The request body limit of the admin listener (`admin.max_body_size`): every route that reads
//! a body (`/v1`, `/api/v1`, the web page's form posts) takes at most that many bytes, and a
//! larger body is answered 413 naming the limit, in the answer shape of the API it was sent to.
//!
//! The limit itself is axum's [`DefaultBodyLimit`], which every body extractor honours whether
//! the body is announced with `Content-Length` or chunked; [`too_large`] only words its refusal.

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::{tutum, v1};

/// The layer that holds every body extractor to `max` bytes.
pub fn layer(max: usize) -> DefaultBodyLimit {
    DefaultBodyLimit::max(max)
}

/// The middleware: a 413 from any handler (only a body over the limit gives one) becomes one
/// that names the limit and the key that sets it.
pub async fn too_large(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let surface = Surface::of(req.uri().path());
    let resp = next.run(req).await;
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return resp;
    }
    let message = format!(
        "request body too large: the limit is {} ({} bytes), set by admin.max_body_size",
        crate::config::display_size(state.max_body_size as u64),
        state.max_body_size
    );
    let status = StatusCode::PAYLOAD_TOO_LARGE;
    match surface {
        Surface::Tutum => tutum::wire::error(status, message),
        Surface::Page => (status, format!("{message}\n")).into_response(),
        Surface::Unikraft => v1::error(status, message),
    }
}

/// Which face of the admin listener a path belongs to, for the shape of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Surface {
    /// `/api/v1`: Tutum's `{"error": …}`.
    Tutum,
    /// `/ui`: plain text, as the browser shows it.
    Page,
    /// Everything else: Unikraft's envelope.
    Unikraft,
}

impl Surface {
    pub(super) fn of(path: &str) -> Surface {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/api/v1") {
            Surface::Tutum
        } else if under("/ui") {
            Surface::Page
        } else {
            Surface::Unikraft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Surface;

    #[test]
    fn surfaces_by_path() {
        for (path, want) in [
            ("/api/v1", Surface::Tutum),
            ("/api/v1/service/", Surface::Tutum),
            ("/api/v10", Surface::Unikraft),
            ("/ui", Surface::Page),
            ("/ui/login", Surface::Page),
            ("/uix", Surface::Unikraft),
            ("/v1/instances", Surface::Unikraft),
            ("/", Surface::Unikraft),
        ] {
            assert_eq!(Surface::of(path), want, "{path}");
        }
    }
}
