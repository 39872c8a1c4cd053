//! Client request heads as HTTP/1.1 frames them (RFC 9112), for the proxy's own HTTP/1 server
//! ([`super::h1`]): a pure parser with no I/O, so every rule has a table-driven test and arbitrary
//! bytes a property test. It also writes the head the upstream gets, from the parsed bytes.
//!
//! Anything ambiguous is refused ([`RequestError`], answered and the connection closed, nothing
//! forwarded, nothing counted), in the spirit of RFC 9112 §6.3 and §11.2:
//!
//! * `Transfer-Encoding` with `Content-Length`; `Transfer-Encoding` in an HTTP/1.0 request; a
//!   `Transfer-Encoding` that is not exactly one `chunked` (`chunked, identity`, `identity`, two
//!   fields, an empty one, anything but spaces and tabs around the token);
//! * two `Content-Length` values (two fields, or a list in one, even equal ones), or one that is
//!   not digits only fitting 64 bits;
//! * a bare LF or CR as a line ending, obs-fold, a field name that is not a token (spaces before
//!   the colon included), a control character (NUL, `\x0b`) in a value: `httparse` refuses all of
//!   these but the bare LF, which the parser finds by counting CRs against LFs;
//! * no `Host` in HTTP/1.1, two `Host` fields, an empty one, an absolute-form target whose
//!   authority differs from `Host`, a target that is neither origin-, absolute- nor asterisk-form
//!   (`CONNECT`'s authority form is the caller's to refuse);
//! * `Connection: upgrade` with `Upgrade: h2c` (h2c upgrade smuggling: the tunnel would carry
//!   uncounted HTTP/2 requests past the proxy), and an upgrade request with a body.
//!
//! Limits answer with their own status: a head longer than `max_head` or with more than
//! `max_fields` fields is 431, a target longer than `max_uri` 414. The body limit (413) depends
//! on the instance the request is routed to, so it is checked after routing
//! ([`Request::body`] gives the length), not here.
//!
//! Cost: one `httparse` pass with field slots on the stack (not initialised), one classification
//! of each name (a switch on its length, then one compare), one count of CR and LF bytes over the
//! head (vectorised), and the upstream head copied into a reused buffer. No allocation.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::StatusCode;

use super::framing::{parse_length, reason};

/// Most header fields any configuration may allow (the field slots live on the stack).
pub const MAX_FIELD_SLOTS: usize = 512;

/// What a request head may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest head (request line and fields, with their line endings): 431 beyond.
    pub max_head: usize,
    /// Most header fields (at most [`MAX_FIELD_SLOTS`]): 431 beyond.
    pub max_fields: usize,
    /// Longest request target: 414 beyond.
    pub max_uri: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 64 * 1024,
            max_fields: 100,
            max_uri: 8 * 1024,
        }
    }
}

/// Why a request head (or its body's framing) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head does not parse (`httparse`'s reason, or a bare LF).
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// The head is longer than `max_head`.
    #[error("request head too large")]
    HeadTooLarge,
    /// More fields than `max_fields`.
    #[error("too many header fields")]
    TooManyFields,
    /// The target is longer than `max_uri`.
    #[error("request target too long")]
    UriTooLong,
    /// A target that is not origin-, absolute- or asterisk-form.
    #[error("malformed request target")]
    BadTarget,
    /// `Transfer-Encoding` with `Content-Length`.
    #[error("Transfer-Encoding together with Content-Length")]
    Conflicting,
    /// More than one `Content-Length` value.
    #[error("more than one Content-Length")]
    DuplicateLength,
    /// A `Content-Length` that is not digits fitting 64 bits.
    #[error("malformed Content-Length")]
    BadLength,
    /// A `Transfer-Encoding` other than exactly `chunked`, or one in an HTTP/1.0 request.
    #[error("unsupported Transfer-Encoding")]
    BadEncoding,
    /// HTTP/1.1 without `Host`, or HTTP/1.0 with neither `Host` nor an absolute-form target.
    #[error("request has no host")]
    NoHost,
    /// Two `Host` fields, an empty one, or one that differs from an absolute-form target's.
    #[error("request has a bad or ambiguous host")]
    BadHost,
    /// `Upgrade: h2c` asked for with `Connection: upgrade`, or an upgrade with a body.
    #[error("refused upgrade")]
    BadUpgrade,
    /// A body larger than `max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// A malformed chunk in a chunked request body.
    #[error("malformed chunked request body")]
    BadChunk,
}

impl RequestError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::HeadTooLarge | RequestError::TooManyFields => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            RequestError::UriTooLong => StatusCode::URI_TOO_LONG,
            RequestError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// True for a limit the request passed (413, 414, 431) rather than a malformed request.
    pub fn is_limit(&self) -> bool {
        self.status() != StatusCode::BAD_REQUEST
    }

    /// The one-line body of the answer.
    pub fn body(&self) -> &'static [u8] {
        match self {
            RequestError::HeadTooLarge | RequestError::TooManyFields => {
                b"request header fields too large\n"
            }
            RequestError::UriTooLong => b"request target too long\n",
            RequestError::BodyTooLarge => b"request body too large\n",
            RequestError::NoHost => b"missing Host header\n",
            RequestError::BadHost => b"bad or ambiguous Host\n",
            _ => b"bad request\n",
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3 for requests: no body unless one of the two
/// fields says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length` bytes (more than 0).
    Length(u64),
    /// Chunked transfer coding (forwarded chunked, re-framed by the proxy).
    Chunked,
}

/// A parsed, accepted request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Length of the head in the buffer (the body, or the next request, follows).
    pub len: usize,
    /// Where the host to route by lies in the buffer (an absolute-form target's authority, else
    /// the `Host` field's value).
    pub host: Range<usize>,
    /// HTTP/1.1 (else HTTP/1.0).
    pub http11: bool,
    /// The method is `HEAD` (the response has no body).
    pub head: bool,
    /// The method is `CONNECT` (the caller refuses it; nothing else was checked).
    pub connect: bool,
    /// The body's framing.
    pub body: BodyFraming,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` field: a 101 from the upstream opens a tunnel.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// What [`parse`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole head, accepted; the upstream head is in the output buffer.
    Complete(Request),
}

/// What a field name means to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// End-to-end: forwarded as received.
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    XForwardedFor,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`: hop-by-hop, dropped.
    HopByHop,
}

/// The class of a field name: a switch on its length, then one case-insensitive compare.
#[inline]
fn class(name: &[u8]) -> Class {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => Class::HopByHop,
        4 if is(b"host") => Class::Host,
        6 if is(b"expect") => Class::Expect,
        7 if is(b"upgrade") => Class::Upgrade,
        7 if is(b"trailer") => Class::HopByHop,
        10 if is(b"connection") => Class::Connection,
        10 if is(b"keep-alive") => Class::HopByHop,
        14 if is(b"content-length") => Class::ContentLength,
        15 if is(b"x-forwarded-for") => Class::XForwardedFor,
        16 if is(b"proxy-connection") => Class::HopByHop,
        17 if is(b"transfer-encoding") => Class::TransferEncoding,
        _ => Class::Other,
    }
}

/// Optional whitespace (RFC 9110 §5.6.3): spaces and horizontal tabs only.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The items of a comma-separated field value, each trimmed of optional whitespace.
fn items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// The offset of `part` (a slice of `buf`) in `buf`.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

/// An absolute-form target's authority and the rest of it (its path and query).
type Absolute<'a> = (&'a [u8], &'a [u8]);

/// The authority and origin-form path of an absolute-form target (`http://a.example/p?q`), or
/// `None` when `target` is not one. A target with user info is refused.
fn absolute(target: &[u8]) -> Result<Option<Absolute<'_>>, RequestError> {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return Ok(None);
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(RequestError::BadTarget);
    }
    Ok(Some((authority, path)))
}

/// The values the caller adds to every upstream head.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's address, the last entry of `X-Forwarded-For`.
    pub client: &'a [u8],
    /// `Via` for HTTP/1.1 and for HTTP/1.0 requests.
    pub via11: &'a [u8],
    /// See `via11`.
    pub via10: &'a [u8],
}

/// Parses a request head at the front of `buf` and, when it is whole and accepted, writes the head
/// the upstream gets into `out` (cleared first): the request line in origin form as HTTP/1.1, the
/// fields as received without the hop-by-hop ones (RFC 9110 §7.6.1, those named in `Connection`,
/// and `Upgrade` unless upgrading), `Host` from an absolute-form target, one `X-Forwarded-For`
/// list ending with the client, `Via`, `Transfer-Encoding: chunked` for a chunked body and
/// `Connection: upgrade` for an upgrade.
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    fwd: &Forwarding<'_>,
    out: &mut Vec<u8>,
) -> Result<Parsed, RequestError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELD_SLOTS];
    let mut req = httparse::Request::new(&mut []);
    let max_fields = limits.max_fields.clamp(1, MAX_FIELD_SLOTS);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut slots[..max_fields],
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // A request line still incomplete past the target limit is a target too long.
            if buf.len() > limits.max_uri + 64 && !buf.contains(&b'\n') {
                return Err(RequestError::UriTooLong);
            }
            if buf.len() > limits.max_head {
                return Err(RequestError::HeadTooLarge);
            }
            return Ok(Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyFields),
        Err(err) => return Err(RequestError::Malformed(reason(err))),
    };
    if len > limits.max_head {
        return Err(RequestError::HeadTooLarge);
    }
    // `httparse` takes a bare LF as a line ending (it refuses a bare CR): every LF must follow a
    // CR, and since no CR stands alone, there must be as many of one as of the other.
    if !as_many_crs_as_lfs(&buf[..len]) {
        return Err(RequestError::Malformed("bare LF"));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Malformed("incomplete request line"));
    };
    let http11 = minor == 1;
    let method = method.as_bytes();
    let target = target.as_bytes();
    if target.len() > limits.max_uri {
        return Err(RequestError::UriTooLong);
    }
    let connect = method == b"CONNECT";
    let mut request = Request {
        len,
        host: 0..0,
        http11,
        head: method == b"HEAD",
        connect,
        body: BodyFraming::None,
        keep_alive: false,
        upgrade: false,
        expect_continue: false,
    };
    if connect {
        return Ok(Parsed::Complete(request));
    }
    let (authority, path) = match absolute(target)? {
        Some((authority, path)) => (Some(authority), path),
        None if target.first() == Some(&b'/') => (None, target),
        None if target == b"*" && method == b"OPTIONS" => (None, target),
        None => return Err(RequestError::BadTarget),
    };

    let fields = &*req.headers;
    let mut classes = [Class::Other; MAX_FIELD_SLOTS];
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive, mut conn_upgrade, mut names_fields) =
        (false, false, false, false);
    let mut upgrade_field = false;
    let mut h2c = false;
    let mut forwarded = false;
    for (i, field) in fields.iter().enumerate() {
        let name = field.name.as_bytes();
        let c = class(name);
        classes[i] = c;
        match c {
            Class::Other | Class::HopByHop => {}
            Class::Host => {
                if host.is_some() {
                    return Err(RequestError::BadHost);
                }
                host = Some(field.value);
            }
            Class::ContentLength => {
                for item in items(field.value) {
                    if length.is_some() {
                        return Err(RequestError::DuplicateLength);
                    }
                    length = Some(parse_length(item).ok_or(RequestError::BadLength)?);
                }
            }
            Class::TransferEncoding => {
                // Chunked exactly once and nothing else: any other coding, a list, a second
                // field or an empty value is refused rather than guessed at.
                for item in items(field.value) {
                    if chunked || !item.eq_ignore_ascii_case(b"chunked") {
                        return Err(RequestError::BadEncoding);
                    }
                    chunked = true;
                }
            }
            Class::Connection => {
                for token in items(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        conn_upgrade = true;
                    } else if !token.is_empty() {
                        names_fields = true;
                    }
                }
            }
            Class::Upgrade => {
                upgrade_field = true;
                h2c |= items(field.value).any(|p| p.eq_ignore_ascii_case(b"h2c"));
            }
            Class::Expect => {
                request.expect_continue |= field.value.eq_ignore_ascii_case(b"100-continue");
            }
            Class::XForwardedFor => forwarded = true,
        }
    }

    if chunked && length.is_some() {
        return Err(RequestError::Conflicting);
    }
    if chunked && !http11 {
        return Err(RequestError::BadEncoding);
    }
    if host.is_some_and(|h| h.is_empty()) {
        return Err(RequestError::BadHost);
    }
    request.host = match (authority, host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => return Err(RequestError::BadHost),
        (Some(a), _) => offset(buf, a)..offset(buf, a) + a.len(),
        (None, Some(h)) => offset(buf, h)..offset(buf, h) + h.len(),
        (None, None) => return Err(RequestError::NoHost),
    };
    if http11 && host.is_none() {
        return Err(RequestError::NoHost);
    }
    request.body = match (chunked, length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    request.upgrade = http11 && conn_upgrade && upgrade_field;
    if request.upgrade && (h2c || request.body != BodyFraming::None) {
        return Err(RequestError::BadUpgrade);
    }
    request.keep_alive = if http11 { !close } else { keep_alive && !close };

    // The upstream head.
    out.clear();
    out.extend_from_slice(method);
    out.push(b' ');
    match path.first() {
        None => out.push(b'/'),
        Some(b'?') => {
            out.push(b'/');
            out.extend_from_slice(path);
        }
        Some(_) => out.extend_from_slice(path),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = authority {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority);
        out.extend_from_slice(b"\r\n");
    }
    let named = |name: &[u8]| {
        fields
            .iter()
            .zip(&classes)
            .filter(|(_, c)| **c == Class::Connection)
            .any(|(f, _)| items(f.value).any(|t| t.eq_ignore_ascii_case(name)))
    };
    for (field, &c) in fields.iter().zip(&classes) {
        let keep = match c {
            // `Connection` may not strip the body's framing.
            Class::ContentLength => true,
            Class::Other | Class::Expect => !names_fields || !named(field.name.as_bytes()),
            Class::Host => authority.is_none(),
            Class::Upgrade => request.upgrade,
            Class::TransferEncoding
            | Class::Connection
            | Class::HopByHop
            | Class::XForwardedFor => false,
        };
        if keep {
            out.extend_from_slice(field.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(field.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if forwarded {
        // Earlier hops' fields joined into one list, so that an application reading only the
        // first field still sees the whole chain.
        for (field, &c) in fields.iter().zip(&classes) {
            if c == Class::XForwardedFor {
                out.extend_from_slice(field.value);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(fwd.client);
    out.extend_from_slice(b"\r\nvia: ");
    out.extend_from_slice(if http11 { fwd.via11 } else { fwd.via10 });
    out.extend_from_slice(b"\r\n");
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if request.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Parsed::Complete(request))
}

/// Whether `head` holds as many CRs as LFs: eight bytes per step, each byte compared without a
/// branch (a head is read once per request; a byte at a time cost about ten instructions).
fn as_many_crs_as_lfs(head: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // How many bytes of `w` are `byte`: a byte of `x` is zero exactly where its top bit stays
    // clear in `((x & LOW7) + LOW7) | x` (no carry leaves a byte).
    let count = |w: u64, byte: u8| {
        let x = w ^ (ONES * u64::from(byte));
        i64::from((!(((x & LOW7) + LOW7) | x | LOW7)).count_ones())
    };
    let mut words = head.chunks_exact(8);
    let mut balance = 0;
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        balance += count(w, b'\r') - count(w, b'\n');
    }
    for &b in words.remainder() {
        balance += i64::from(b == b'\r') - i64::from(b == b'\n');
    }
    balance == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FWD: Forwarding<'static> = Forwarding {
        client: b"127.0.0.1",
        via11: b"1.1 autokill",
        via10: b"1.0 autokill",
    };

    fn run(text: &[u8]) -> (Result<Parsed, RequestError>, String) {
        let mut out = Vec::new();
        let got = parse(text, &Limits::default(), &FWD, &mut out);
        (got, String::from_utf8_lossy(&out).into_owned())
    }

    /// Every request framing rule, one line each: the bytes and the outcome (`Ok` with the body
    /// framing, or the error).
    #[test]
    fn framing_table() {
        use BodyFraming::*;
        use RequestError::*;
        let malformed = Malformed("");
        let table: &[(&[u8], Result<BodyFraming, RequestError>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(None)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", Ok(Length(5))),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Ok(None)),
            (b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  7 \r\n\r\n", Ok(Length(7))),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(Chunked)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", Ok(Chunked)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked \r\n\r\n", Ok(Chunked)),
            // CL.TE and TE.CL
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Err(Conflicting)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Err(Conflicting)),
            // duplicate and malformed lengths
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Err(DuplicateLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", Err(DuplicateLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err(DuplicateLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Err(BadLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Err(BadLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", Err(BadLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", Err(BadLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Err(BadLength)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", Err(BadLength)),
            // obfuscated Transfer-Encoding
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", Err(BadEncoding)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n", Err(malformed)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", Err(malformed)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", Err(malformed)),
            (b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n", Err(malformed)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", Err(malformed)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tTransfer-Encoding: chunked\r\n\r\n", Err(malformed)),
            (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Err(BadEncoding)),
            // line endings, names, NUL
            (b"GET / HTTP/1.1\nHost: a\n\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\rY: 2\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\x00: 1\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Err(malformed)),
            (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: 1\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Err(malformed)),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Err(malformed)),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Err(malformed)),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Err(malformed)),
            // hosts and targets
            (b"GET / HTTP/1.1\r\n\r\n", Err(NoHost)),
            (b"GET / HTTP/1.0\r\n\r\n", Err(NoHost)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(BadHost)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", Err(BadHost)),
            (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", Err(BadHost)),
            (b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", Err(BadHost)),
            (b"GET http://a/ HTTP/1.1\r\nHost: A\r\n\r\n", Ok(None)),
            (b"GET http://a/ HTTP/1.1\r\n\r\n", Err(NoHost)),
            (b"GET http://a/ HTTP/1.0\r\n\r\n", Ok(None)),
            (b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadTarget)),
            (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadTarget)),
            (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadTarget)),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadTarget)),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok(None)),
            // upgrades
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", Err(BadUpgrade)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, H2C\r\n\r\n", Err(BadUpgrade)),
            (b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\nContent-Length: 3\r\n\r\n", Err(BadUpgrade)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n", Ok(None)),
        ];
        let mut failures = Vec::new();
        for (text, expected) in table {
            let (got, _) = run(text);
            let got = got.map(|p| match p {
                Parsed::Complete(r) => r.body,
                Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(text)),
            });
            // httparse's wording is not ours to pin; the kind is.
            let norm = |r: Result<BodyFraming, RequestError>| {
                r.map_err(|e| match e {
                    Malformed(_) => Malformed(""),
                    other => other,
                })
            };
            if norm(got) != *expected {
                failures.push(format!(
                    "{:?}: got {:?}, want {expected:?}",
                    String::from_utf8_lossy(text),
                    norm(got)
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_head: 200,
            max_fields: 4,
            max_uri: 50,
        };
        let mut out = Vec::new();
        let mut check = |text: &[u8], want: Result<(), RequestError>| {
            let got = parse(text, &limits, &FWD, &mut out).map(|_| ());
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(text));
        };
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n",
            Ok(()),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n",
            Err(RequestError::TooManyFields),
        );
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(60));
        check(long.as_bytes(), Err(RequestError::UriTooLong));
        let unfinished = format!("GET /{}", "x".repeat(200));
        check(unfinished.as_bytes(), Err(RequestError::UriTooLong));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(200)
        );
        check(big.as_bytes(), Err(RequestError::HeadTooLarge));
        check(
            &big.as_bytes()[..big.len() - 4],
            Err(RequestError::HeadTooLarge),
        );
        // The body limit is the routed instance's, checked after routing: not the parser's.
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
            Ok(()),
        );
        assert_eq!(RequestError::UriTooLong.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(
            RequestError::TooManyFields.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(
            RequestError::BodyTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        for text in [
            &b""[..],
            b"GET",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(run(text).0, Ok(Parsed::Partial), "{text:?}");
        }
    }

    #[test]
    fn the_upstream_head() {
        let (got, out) = run(
            b"GET /p?q=1 HTTP/1.1\r\nHost: a.localhost\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\n\
              x-forwarded-for: 10.0.0.2\r\nX-Kept: yes\r\n\r\nNEXT",
        );
        let Ok(Parsed::Complete(req)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            out,
            "GET /p?q=1 HTTP/1.1\r\nHost: a.localhost\r\nVia: 1.1 edge\r\nX-Kept: yes\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nvia: 1.1 autokill\r\n\r\n"
        );
        assert!(req.keep_alive && !req.upgrade && req.http11);
        let text = b"GET /p?q=1 HTTP/1.1\r\nHost: a.localhost\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 edge\r\n\
              x-forwarded-for: 10.0.0.2\r\nX-Kept: yes\r\n\r\nNEXT";
        assert_eq!(&text[req.host.clone()], b"a.localhost");
        assert_eq!(&text[req.len..], b"NEXT");

        let (got, out) = run(
            b"POST http://B.localhost?x HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(got, Err(RequestError::BadEncoding), "{out}");
        let (got, out) = run(
            b"PUT http://B.localhost?x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
        );
        let Ok(Parsed::Complete(req)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            out,
            "PUT /?x HTTP/1.1\r\nhost: B.localhost\r\nContent-Length: 3\r\nx-forwarded-for: 127.0.0.1\r\nvia: 1.0 autokill\r\n\r\n"
        );
        assert!(req.keep_alive && !req.http11);
        assert_eq!(req.body, BodyFraming::Length(3));

        let (got, out) = run(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(got, Err(RequestError::BadUpgrade), "{out}");
        let (got, out) = run(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let Ok(Parsed::Complete(req)) = got else {
            panic!("{got:?}")
        };
        assert!(req.upgrade);
        assert_eq!(
            out,
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nx-forwarded-for: 127.0.0.1\r\nvia: 1.1 autokill\r\nconnection: upgrade\r\n\r\n"
        );
        let (got, out) = run(
            b"POST /c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        let Ok(Parsed::Complete(req)) = got else {
            panic!("{got:?}")
        };
        assert!(req.expect_continue && !req.keep_alive);
        assert_eq!(
            out,
            "POST /c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nx-forwarded-for: 127.0.0.1\r\nvia: 1.1 autokill\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    proptest::proptest! {
        /// Counting CRs and LFs a word at a time agrees with counting them a byte at a time.
        #[test]
        fn crs_and_lfs_are_counted_exactly(head in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'a', 0x8d, 0x8a, 0, 0xff]), 0..64)) {
            let count = |byte| head.iter().filter(|&&b| b == byte).count();
            proptest::prop_assert_eq!(as_many_crs_as_lfs(&head), count(b'\r') == count(b'\n'));
        }

        /// Any bytes: no panic; an accepted head is one `httparse` takes whole, with at most one
        /// framing field and no LF without its CR, and the upstream head carries exactly one
        /// framing of the body.
        #[test]
        fn arbitrary_bytes_never_panic_nor_pass_ambiguity(
            prefix in proptest::sample::select(vec!["", "GET / HTTP/1.1\r\n", "POST /x HTTP/1.0\r\n", "GET http://a/ HTTP/1.1\r\n"]),
            fields in "((Host|content-length|Transfer-Encoding|connection|upgrade|x)[:, ]{1,2}[ \t\x0b]?(a|chunked|close|upgrade|h2c|[0-9]{1,3}|, )[ \t\x0b]?(\r\n|\n|\r)){0,6}(\r\n|\n)",
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            let mut bytes = format!("{prefix}{fields}").into_bytes();
            bytes.extend_from_slice(&tail);
            let mut out = Vec::new();
            if let Ok(Parsed::Complete(req)) = parse(&bytes, &Limits::default(), &FWD, &mut out) {
                let head = &bytes[..req.len];
                proptest::prop_assert!(!head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r') && head[0] != b'\n');
                let mut raw = [httparse::EMPTY_HEADER; 64];
                let mut r = httparse::Request::new(&mut raw);
                proptest::prop_assert!(r.parse(&bytes).is_ok_and(|s| s.is_complete()));
                let count = |name: &str| r.headers.iter().filter(|f| f.name.eq_ignore_ascii_case(name)).count();
                let (te, cl, host) = (count("transfer-encoding"), count("content-length"), count("host"));
                proptest::prop_assert!(te + cl <= 1 && host <= 1);
                let up = String::from_utf8_lossy(&out).to_ascii_lowercase();
                let framings = up.matches("\r\ntransfer-encoding:").count() + up.matches("\r\ncontent-length:").count();
                proptest::prop_assert!(framings <= 1, "{}", up);
                proptest::prop_assert_eq!(req.body == BodyFraming::Chunked, te == 1);
            }
        }

        /// Any bytes at all, in any split: never a panic, and a prefix of an accepted head is
        /// partial or refused, never accepted as something else.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut out = Vec::new();
            let _ = parse(&bytes, &Limits::default(), &FWD, &mut out);
        }
    }
}
