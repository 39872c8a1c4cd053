//! Why the proxy answered a request itself, and with which status: every refusal and upstream
//! failure is classified here, in one place (pingora's idea: by where it came from).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::{ClientBodyError, ProxyBody};
use super::framing::FramingError;
use super::request::RequestError;

/// A request the proxy answers without (successfully) forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Downstream: no `Host` and no authority.
    #[error("request has no host")]
    NoHost,
    /// Downstream: two `Host` fields, an empty or malformed one (a port that is not a number),
    /// or an HTTP/2 `:authority` that names another host than `host` (RFC 9112 §3.2, RFC 9113
    /// §8.3.1).
    #[error("request has a bad or ambiguous host")]
    BadHost,
    /// Downstream: `CONNECT`, which the proxy does not tunnel.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Downstream: the request body sent nothing for `request_body_timeout`.
    #[error("request body timed out after {0:?}")]
    BodyTimeout(Duration),
    /// Downstream: reading the request body failed (the client closed or broke the stream).
    #[error("request body failed: {0}")]
    ClientBody(ClientBodyError),
    /// Downstream: a request head (or chunked body) refused by the framing rules or a limit
    /// (400, 413, 414, 431); the connection is closed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Downstream: the host matches no instance or service group.
    #[error("no route for host")]
    NoRoute,
    /// The instance exists but is not running, or the group has no routable instance.
    #[error("no instance available")]
    Unavailable,
    /// The instance has served its `num_requests`.
    #[error("instance has served its request limit")]
    Exhausted,
    /// Upstream: the connection was refused or reset while connecting.
    #[error("upstream refused the connection: {0}")]
    ConnectRefused(std::io::Error),
    /// Upstream: connecting took longer than `upstream_connect_timeout`.
    #[error("upstream connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// Upstream: any other error while connecting.
    #[error("upstream connect failed: {0}")]
    Connect(std::io::Error),
    /// Upstream: no response head within `upstream_timeout`.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Upstream: the HTTP exchange failed (closed, malformed, reset).
    #[error("upstream failed: {0}")]
    Protocol(UpstreamError),
}

/// How an upstream broke an exchange after the connection was made; also the error a response
/// body streamed from it ends with.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Reading or writing the connection failed (reset, broken pipe).
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before a whole response head.
    #[error("upstream closed the connection before answering")]
    Closed,
    /// The response is not framed as HTTP/1.1 requires (RFC 9112 §6.3).
    #[error(transparent)]
    Framing(#[from] FramingError),
}

/// Every error kind: its metric label, and whether it is the upstream's failure
/// (`autokill_upstream_errors_total{kind}`) rather than a refusal
/// (`autokill_proxy_refused_total{reason}`). Indexed by [`ProxyError::index`].
pub const KINDS: [(&str, bool); 13] = [
    ("bad_request", false),
    ("no_route", false),
    ("unavailable", false),
    ("exhausted", false),
    ("method_not_allowed", false),
    ("body_timeout", false),
    ("client_error", false),
    ("connect_refused", true),
    ("connect_timeout", true),
    ("connect", true),
    ("timeout", true),
    ("protocol", true),
    ("too_large", false),
];

/// The methods a 405 names: all but `CONNECT`.
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE";

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHost | ProxyError::BadHost => StatusCode::BAD_REQUEST,
            ProxyError::ClientBody(ClientBodyError::Refused(err)) => err.status(),
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Request(err) => err.status(),
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unavailable | ProxyError::Exhausted => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectRefused(_) | ProxyError::Connect(_) | ProxyError::Protocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// True for failures of the upstream (counted in `autokill_upstream_errors_total`), false for
    /// requests the proxy refused by its own rules or the client's fault (counted in
    /// `autokill_proxy_refused_total`).
    pub fn is_upstream(&self) -> bool {
        KINDS[self.index()].1
    }

    /// The metric label.
    pub fn kind(&self) -> &'static str {
        KINDS[self.index()].0
    }

    /// The position of this error's kind in [`KINDS`], so that a worker can keep one resolved
    /// counter per kind and count without a label lookup.
    pub fn index(&self) -> usize {
        match self {
            ProxyError::NoHost | ProxyError::BadHost => 0,
            ProxyError::NoRoute => 1,
            ProxyError::Unavailable => 2,
            ProxyError::Exhausted => 3,
            ProxyError::MethodNotAllowed => 4,
            ProxyError::BodyTimeout(_) => 5,
            ProxyError::ClientBody(_) => 6,
            ProxyError::ConnectRefused(_) => 7,
            ProxyError::ConnectTimeout(_) => 8,
            ProxyError::Connect(_) => 9,
            ProxyError::Timeout(_) => 10,
            ProxyError::Protocol(_) => 11,
            ProxyError::Request(err) if err.is_limit() => 12,
            ProxyError::Request(_) => 0,
        }
    }

    /// Classifies a connect error.
    pub fn connect(err: std::io::Error) -> ProxyError {
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused | ConnectionReset | ConnectionAborted => {
                ProxyError::ConnectRefused(err)
            }
            _ => ProxyError::Connect(err),
        }
    }

    /// The one-line body of the answer.
    fn body(&self) -> &'static [u8] {
        match self {
            ProxyError::NoHost => b"missing Host header\n",
            ProxyError::BadHost => b"bad or ambiguous Host\n",
            ProxyError::MethodNotAllowed => b"CONNECT is not supported\n",
            ProxyError::BodyTimeout(_) => b"request body timed out\n",
            ProxyError::ClientBody(_) => b"request body could not be read\n",
            ProxyError::Request(err) => err.body(),
            ProxyError::NoRoute => b"no instance or service group for this host\n",
            ProxyError::Unavailable => b"no instance available\n",
            ProxyError::Exhausted => b"instance has served its request limit\n",
            ProxyError::ConnectRefused(_) | ProxyError::Connect(_) | ProxyError::Protocol(_) => {
                b"bad gateway\n"
            }
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout(_) => b"gateway timeout\n",
        }
    }

    /// The field this answer carries besides its type and length.
    fn extra(&self) -> Option<(header::HeaderName, &'static str)> {
        match self {
            ProxyError::Unavailable | ProxyError::Exhausted => Some((header::RETRY_AFTER, "1")),
            ProxyError::MethodNotAllowed => Some((header::ALLOW, ALLOW)),
            _ => None,
        }
    }

    /// True when the connection cannot carry another request after this answer: the request
    /// body was not read to its end, or the head was refused (what follows it is not known to
    /// be a request).
    pub fn closes(&self) -> bool {
        matches!(
            self,
            ProxyError::BodyTimeout(_)
                | ProxyError::ClientBody(_)
                | ProxyError::Request(_)
                | ProxyError::MethodNotAllowed
                | ProxyError::NoHost
                | ProxyError::BadHost
        )
    }

    /// The response the client gets: the status, a one-line body, and `Retry-After` on 503.
    pub fn response(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::full(Bytes::from_static(self.body())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some((name, value)) = self.extra() {
            headers.insert(name, HeaderValue::from_static(value));
        }
        // The request body was not read to its end: this connection cannot carry another.
        if matches!(self, ProxyError::BodyTimeout(_) | ProxyError::ClientBody(_)) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// The same answer as [`ProxyError::response`], as HTTP/1.x bytes appended to `out` (the
    /// status line in the request's version: `http10`), with `Connection: close` when `close`.
    pub fn write_http1(&self, out: &mut Vec<u8>, http10: bool, close: bool) {
        let status = self.status();
        let body = self.body();
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
        // Writing into a `Vec` cannot fail.
        let _ = write!(out, "{}\r\n", body.len());
        if let Some((name, value)) = self.extra() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ProxyError::connect(refused).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ProxyError::Timeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::ConnectTimeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
        let r = ProxyError::Exhausted.response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert!(!ProxyError::Exhausted.is_upstream());
        assert!(ProxyError::Timeout(Duration::ZERO).is_upstream());
        assert!(!ProxyError::BodyTimeout(Duration::ZERO).is_upstream());
        assert_eq!(
            ProxyError::BodyTimeout(Duration::ZERO).status(),
            StatusCode::REQUEST_TIMEOUT
        );
        let r = ProxyError::MethodNotAllowed.response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers().contains_key(header::ALLOW));
        assert_eq!(ProxyError::BadHost.status(), StatusCode::BAD_REQUEST);
    }
}
