//! Header rewriting of a correct HTTP intermediary (RFC 9110 §7.6): hop-by-hop fields removed in
//! both directions, `Via` and `X-Forwarded-For` added.
//!
//! Cost per request: a handful of `HeaderMap` removals of absent standard names (hashing a standard
//! header is a table index), and pre-built `HeaderValue`s for `Via`; an allocation only when the
//! message names extra fields in `Connection` or already carries `X-Forwarded-For`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Via` for a message received as HTTP/1.1.
pub static VIA_11: HeaderValue = HeaderValue::from_static("1.1 autokill");
/// `Via` for a message received as HTTP/2.
pub static VIA_2: HeaderValue = HeaderValue::from_static("2 autokill");
/// `Via` for a message received as HTTP/1.0.
pub static VIA_10: HeaderValue = HeaderValue::from_static("1.0 autokill");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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

/// Appends the client's address to `X-Forwarded-For`, joining any fields already present into
/// one list so that applications reading only the first field still see the whole chain.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR.clone(), client.clone());
        return;
    }
    let mut joined = Vec::with_capacity(64);
    for v in headers.get_all(&X_FORWARDED_FOR) {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client.as_bytes());
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        Err(_) => {
            headers.insert(X_FORWARDED_FOR.clone(), client.clone());
        }
    }
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

    #[test]
    fn forwarded_for_is_one_list() {
        let client = HeaderValue::from_static("127.0.0.9");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &client);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "127.0.0.9");
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        append_forwarded_for(&mut h, &client);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.9");
    }
}
