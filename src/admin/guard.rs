//! Keeps web pages out of the admin listener: a browser lets any site send requests to
//! `127.0.0.1`, and DNS rebinding lets a site's own name resolve there.
//!
//! * `Host` must be one of the listener's own names (its address, `localhost`, `127.0.0.1`,
//!   `[::1]`, with its port) or an `admin.allowed_hosts` entry: a rebound name is refused (403).
//! * `Origin`, when a browser sends it, must name one of those too (403): another site's page
//!   cannot act even with a JSON body.
//! * A request with a body must say `Content-Type: application/json` (415): the types a page may
//!   send without a CORS preflight (`text/plain`, forms) never reach a handler.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AdminState;
use super::v1;

/// The names the admin listener answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    port: u16,
    /// Names allowed with the listener's port, or with none.
    names: HashSet<String>,
    /// `name:port` entries allowed with exactly that port.
    exact: HashSet<String>,
}

impl Hosts {
    /// The listener's own names at `listen` (the bound address), and `extra` entries (`name`,
    /// allowed like the own names, or `name:port`, allowed with that port only).
    pub fn new(listen: SocketAddr, extra: &[String]) -> Hosts {
        let ip = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let mut names: HashSet<String> = ["localhost", "127.0.0.1", "[::1]", ip.as_str()]
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let mut exact = HashSet::new();
        for entry in extra {
            let entry = entry.to_ascii_lowercase();
            match split_port(&entry) {
                (_, Some(_)) => exact.insert(entry),
                (name, None) => names.insert(name.to_owned()),
            };
        }
        Hosts {
            port: listen.port(),
            names,
            exact,
        }
    }

    /// Whether a `Host` value names this listener. A browser always sends the port of the URL
    /// it was given unless it is the scheme's default, so a `Host` without one cannot have come
    /// from a page that targets this listener's port.
    fn allows_host(&self, host: &str) -> bool {
        let lower = host.trim().to_ascii_lowercase();
        match split_port(&lower) {
            (name, Some(port)) => {
                (port == self.port && self.names.contains(name)) || self.exact.contains(&lower)
            }
            (name, None) => self.names.contains(name),
        }
    }

    /// Whether an `Origin`'s authority is this listener (the port defaulting to the scheme's).
    fn allows_origin(&self, authority: &str, default_port: u16) -> bool {
        let lower = authority.trim().to_ascii_lowercase();
        let (name, port) = match split_port(&lower) {
            (name, Some(port)) => (name, port),
            (name, None) => (name, default_port),
        };
        (port == self.port && self.names.contains(name))
            || self.exact.contains(&format!("{name}:{port}"))
    }

    /// Checks `Host` (a request without one is not from a browser) and `Origin`.
    fn check(&self, req: &Request) -> Result<(), String> {
        let host = req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned())
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
        if let Some(host) = host
            && !self.allows_host(&host)
        {
            return Err(format!(
                "Host {:?} is not a name of this admin listener; add it to admin.allowed_hosts \
                 to allow it",
                clip(&host)
            ));
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("\u{fffd}");
            let ok = match origin.split_once("://") {
                Some(("http", authority)) => self.allows_origin(authority, 80),
                Some(("https", authority)) => self.allows_origin(authority, 443),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "Origin {:?} is another site; the admin API answers only its own pages",
                    clip(origin)
                ));
            }
        }
        Ok(())
    }
}

/// `name` and the port of `name:port` (IPv6 literals in brackets).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && (!name.contains(':') || name.ends_with(']')) => {
            match port.parse() {
                Ok(port) => (name, Some(port)),
                Err(_) => (authority, None),
            }
        }
        _ => (authority, None),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Whether the request carries a body (a length above zero, or chunks).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `application/json`, with any parameters (`; charset=utf-8`), in any case.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The middleware: 403 for a foreign `Host` or `Origin`, 415 for a body that is not JSON.
pub async fn same_site_json(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Err(message) = state.hosts.check(&req) {
        return v1::error(StatusCode::FORBIDDEN, message);
    }
    if has_body(req.headers()) && !is_json(req.headers()) {
        return v1::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a request body must be sent with Content-Type: application/json".into(),
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_and_allowed_hosts() {
        let hosts = Hosts::new(
            "127.0.0.1:8081".parse().expect("addr"),
            &["Autokill.Test".into(), "other.test:9000".into()],
        );
        for ok in [
            "localhost:8081",
            "LOCALHOST:8081",
            "localhost",
            "127.0.0.1:8081",
            "[::1]:8081",
            "autokill.test:8081",
            "autokill.test",
            "other.test:9000",
        ] {
            assert!(hosts.allows_host(ok), "{ok} is allowed");
        }
        for bad in [
            "localhost:8082",
            "evil.example:8081",
            "evil.example",
            "other.test:8081",
            "other.test",
            "127.0.0.2:8081",
            "",
            "::1:8081",
        ] {
            assert!(!hosts.allows_host(bad), "{bad} is refused");
        }
        assert!(hosts.allows_origin("localhost:8081", 80));
        assert!(hosts.allows_origin("other.test:9000", 80));
        assert!(!hosts.allows_origin("localhost", 80), "another local site");
        assert!(!hosts.allows_origin("evil.example:8081", 80));
        assert_eq!(split_port("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
        assert_eq!(split_port("a:b"), ("a:b", None));
    }

    #[test]
    fn json_with_parameters() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().expect("v"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().expect("v"));
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/jsonx".parse().expect("v"),
        );
        assert!(!is_json(&h));
    }
}
