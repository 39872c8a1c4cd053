//! Header rewriting of a correct HTTP intermediary (RFC 9110 §7.6): hop-by-hop fields removed in
//! both directions; the `Via` values (the upstream client writes `Via` and `X-Forwarded-For` into
//! the request head itself).
//!
//! Cost per request: one pass over the message's names (a standard name compares as an index);
//! a `HeaderMap` removal only for a hop-by-hop field that is there, and pre-built `HeaderValue`s
//! for `Via`; an allocation only when the message names extra fields in `Connection`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Via` for a message received as HTTP/1.1.
pub static VIA_11: HeaderValue = HeaderValue::from_static("1.1 autokill");
/// `Via` for a message received as HTTP/2.
pub static VIA_2: HeaderValue = HeaderValue::from_static("2 autokill");
/// `Via` for a message received as HTTP/1.0.
pub static VIA_10: HeaderValue = HeaderValue::from_static("1.0 autokill");

/// `X-Forwarded-For`, which the upstream client writes as one list.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes the hop-by-hop fields: those RFC 9110 §7.6.1 lists and every field named in `Connection`.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (a 101 handshake in progress).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the message's few names (standard names compare as an index) notes which
    // hop-by-hop fields are there; only those are removed, since removing an absent name still
    // hashes it. Most messages carry none, or only `Connection: close`/`keep-alive`.
    let present = headers.keys().fold(0u8, |bits, name| bits | hop_bit(name));
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        strip_connection(headers, keep_upgrade);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 && !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
}

/// The fields RFC 9110 §7.6.1 lists as hop-by-hop (plus `Trailer` and the legacy
/// `Proxy-Connection` and `Keep-Alive`); `Connection` first.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The bit of `name` in [`HOP_BY_HOP`] (0 for an end-to-end field): a switch on the length of
/// the (lower-case) name, then at most two string compares; most names have a length no
/// hop-by-hop name has.
#[inline]
fn hop_bit(name: &HeaderName) -> u8 {
    let s = name.as_str();
    let is = |i: usize| u8::from(s == HOP_BY_HOP[i].as_str()) << i;
    match s.len() {
        2 => is(1),
        7 => is(3) | is(4),
        10 => is(0) | is(5),
        16 => is(6),
        17 => is(2),
        _ => 0,
    }
}

/// Removes `Connection`; when it names fields other than the options `close` and `keep-alive`
/// (and `upgrade` while one is in progress), those too.
fn strip_connection(headers: &mut HeaderMap, keep_upgrade: bool) {
    let options_only = headers.get_all(header::CONNECTION).iter().all(|v| {
        v.as_bytes().split(|&b| b == b',').all(|t| {
            let t = t.trim_ascii();
            t.is_empty()
                || t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"keep-alive")
                || (keep_upgrade && t.eq_ignore_ascii_case(b"upgrade"))
        })
    });
    if !options_only {
        return strip_connection_named(headers, keep_upgrade);
    }
    headers.remove(header::CONNECTION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
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
    fn connection_options_alone_remove_only_connection() {
        let mut h = map(&[
            ("connection", "close"),
            ("connection", " Keep-Alive ,"),
            ("x-kept", "yes"),
            ("te", "trailers"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        let mut h = map(&[("x-kept", "yes"), ("via", "1.1 edge")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "end-to-end fields are left alone");
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
