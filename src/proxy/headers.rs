//! Header rewriting of a correct HTTP intermediary (RFC 9110 §7.6): hop-by-hop fields removed in
//! both directions; the `Via` values (the upstream client writes `Via` and `X-Forwarded-For` into
//! the request head itself).
//!
//! Cost per request: a handful of `HeaderMap` removals of absent standard names (hashing a standard
//! header is a table index), and pre-built `HeaderValue`s for `Via`; an allocation only when the
//! message names extra fields in `Connection`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Via` for a message received as HTTP/1.1.
pub static VIA_11: HeaderValue = HeaderValue::from_static("1.1 autokill");
/// `Via` for a message received as HTTP/2.
pub static VIA_2: HeaderValue = HeaderValue::from_static("2 autokill");
/// `Via` for a message received as HTTP/1.0.
pub static VIA_10: HeaderValue = HeaderValue::from_static("1.0 autokill");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `X-Forwarded-For`, which the upstream client writes as one list.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes the hop-by-hop fields: those RFC 9110 §7.6.1 lists and every field named in `Connection`.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (a 101 handshake in progress).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over their few names (standard names compare as an
    // index) is cheaper than hashing the seven names below for removal.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        strip_connection_named(headers, keep_upgrade);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TRAILER);
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// One of the fields RFC 9110 §7.6.1 lists as hop-by-hop (plus `Trailer` and the legacy
/// `Proxy-Connection` and `Keep-Alive`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes `Connection` and the fields it names (the rare path: allocates the list of names).
#[cold]
fn strip_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    headers.remove(header::CONNECTION);
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// True when the request asks to switch protocols (`Connection: upgrade` and an `Upgrade` field).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn strips_listed_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn keeps_upgrade_for_handshakes() {
        let mut h = map(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
        ]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(!h.contains_key("x-secret"));
    }
}
