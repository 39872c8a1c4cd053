//! Why the proxy answered a request itself, and with which status: every refusal and upstream
//! failure is classified here, in one place (pingora's idea: by where it came from).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;

/// A request the proxy answers without (successfully) forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Downstream: no `Host` and no authority.
    #[error("request has no host")]
    NoHost,
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
    Protocol(hyper::Error),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHost => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unavailable | ProxyError::Exhausted => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectRefused(_) | ProxyError::Connect(_) | ProxyError::Protocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// True for failures of the upstream (counted in `autokill_upstream_errors_total`), false for
    /// requests the proxy refused by its own rules (counted in `autokill_proxy_refused_total`).
    pub fn is_upstream(&self) -> bool {
        !matches!(
            self,
            ProxyError::NoHost
                | ProxyError::NoRoute
                | ProxyError::Unavailable
                | ProxyError::Exhausted
        )
    }

    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoHost => "bad_request",
            ProxyError::NoRoute => "no_route",
            ProxyError::Unavailable => "unavailable",
            ProxyError::Exhausted => "exhausted",
            ProxyError::ConnectRefused(_) => "connect_refused",
            ProxyError::ConnectTimeout(_) => "connect_timeout",
            ProxyError::Connect(_) => "connect",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Protocol(_) => "protocol",
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

    /// The response the client gets: the status, a one-line body, and `Retry-After` on 503.
    pub fn response(&self) -> Response<ProxyBody> {
        let body: &'static [u8] = match self {
            ProxyError::NoHost => b"missing Host header\n",
            ProxyError::NoRoute => b"no instance or service group for this host\n",
            ProxyError::Unavailable => b"no instance available\n",
            ProxyError::Exhausted => b"instance has served its request limit\n",
            ProxyError::ConnectRefused(_) | ProxyError::Connect(_) | ProxyError::Protocol(_) => {
                b"bad gateway\n"
            }
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout(_) => b"gateway timeout\n",
        };
        let mut resp = Response::new(ProxyBody::full(Bytes::from_static(body)));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
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
    }
}
