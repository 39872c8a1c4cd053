//! Upstream response heads and bodies as HTTP/1.1 frames them (RFC 9112 §6.3), for the proxy's own
//! upstream client ([`super::client`]): a pure parser and decoder with no I/O, so that every
//! framing rule has a table-driven test and arbitrary bytes a property test.
//!
//! The rules, in the order §6.3 gives them:
//!
//! 1. A response to `HEAD`, and every 1xx, 204 and 304, has no body, whatever its fields say.
//! 2. `Transfer-Encoding` with `Content-Length` is an error (a smuggling or splitting attempt), and
//!    so is `Transfer-Encoding` in an HTTP/1.0 response. `Transfer-Encoding` must be exactly
//!    `chunked`: the proxy does not relay other transfer codings (it strips the hop-by-hop
//!    `Transfer-Encoding`, so the client could not decode them).
//! 3. `Content-Length` must be one run of digits that fits a `u64`; two of them (two fields, or a
//!    list in one) are an error even when equal.
//! 4. Otherwise the body runs until the upstream closes (never pooled).
//!
//! A connection is kept for reuse only when the response is HTTP/1.1 without `Connection: close`
//! and its body had its own length ([`Decoder::reusable`]); the caller also requires that the body
//! was read to its end and nothing followed it.
//!
//! Cost: one pass of `httparse` over the head (header slots on the stack, not initialised), one
//! `HeaderMap` (its allocation) whose values are slices of the frozen head (no copy), a `HeaderName`
//! allocation only for a name that is not a standard one. Body data is handed out as `Bytes`
//! slices of the read buffer; chunk framing is skipped in place.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

/// Longest response head accepted (status line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_FIELDS: usize = 100;
/// Longest chunk-size line (with extensions) and longest trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a response could not be framed: the upstream's fault, answered 502, connection discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The head does not parse (`httparse`'s reason), or has a field `http` refuses.
    #[error("malformed response head: {0}")]
    Head(&'static str),
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head too large")]
    HeadTooLarge,
    /// `Transfer-Encoding` and `Content-Length` together.
    #[error("Transfer-Encoding together with Content-Length")]
    Conflicting,
    /// More than one `Content-Length` value.
    #[error("more than one Content-Length")]
    DuplicateLength,
    /// A `Content-Length` that is not a number that fits 64 bits.
    #[error("malformed Content-Length")]
    BadLength,
    /// A `Transfer-Encoding` other than `chunked`, or one in an HTTP/1.0 response.
    #[error("unsupported Transfer-Encoding")]
    BadEncoding,
    /// `101 Switching Protocols` to a request that did not ask to upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitch,
    /// A malformed chunk size (including one that overflows 64 bits) or chunk end.
    #[error("malformed chunk")]
    BadChunk,
    /// A trailer section longer than the decoder accepts.
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// The connection closed before the body's announced end.
    #[error("body ended before its end")]
    Truncated,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed final response head (1xx other than an expected 101 are skipped by [`parse_head`]).
#[derive(Debug)]
pub struct Head {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The fields as received, without the usual hop-by-hop ones (`Connection` with only
    /// `close`/`keep-alive`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`,
    /// `Trailer`, `Upgrade`); all of them when `Connection` names other fields or the status is
    /// 101: those are the caller's to strip.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// HTTP/1.1 without `Connection: close`: the connection may carry another request.
    pub keep_alive: bool,
}

/// What [`parse_head`] (or [`parse_head_into`]) found at the front of the buffer.
#[derive(Debug)]
pub enum Parsed<H = Head> {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx) response, consumed from the buffer: read the next head.
    Interim,
    /// The final head, consumed from the buffer; the body follows in the buffer.
    Final(H),
}

/// What a request needs from the response framing: whether it was `HEAD` and whether it asked to
/// switch protocols (then a 101 is final and the connection is the caller's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// The request was `HEAD`.
    pub head: bool,
    /// The request carried `Upgrade`: a 101 is its answer.
    pub upgrade: bool,
}

/// A final response head written straight into the client's response buffer by
/// [`parse_head_into`]: what framing and forwarding still need of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHead {
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// HTTP/1.1 without `Connection: close`: the connection may carry another request.
    pub keep_alive: bool,
}

/// The facts of a whole head, before its fields are taken.
struct Meta {
    len: usize,
    code: u16,
    version: Version,
    framing: Framing,
    keep_alive: bool,
    /// `Connection` names fields other than `close` and `keep-alive` (they are hop-by-hop too).
    names_fields: bool,
}

/// What [`parse_with`] found: like [`Parsed`], but the head is still in the buffer (`len` bytes).
enum Found<T> {
    Partial,
    Interim(usize),
    Final(Meta, T),
}

/// Parses a response head at the front of `buf` and applies the framing rules; `take` gets the
/// accepted head's fields while they are still borrowed from `buf`. Consumes nothing.
fn parse_with<T>(
    buf: &[u8],
    expect: Expect,
    take: impl FnOnce(&httparse::Response<'_, '_>, &Meta) -> Result<T, FramingError>,
) -> Result<Found<T>, FramingError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(FramingError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Found::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingError::HeadTooLarge),
        Err(err) => return Err(FramingError::Head(reason(err))),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| FramingError::Head("status code"))?;
    let version = if resp.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    if status.is_informational() && !(code == 101 && expect.upgrade) {
        if code == 101 {
            return Err(FramingError::UnexpectedSwitch);
        }
        return Ok(Found::Interim(len));
    }
    let mut framing = frame(resp.headers, version)?;
    if expect.head || code == 204 || code == 304 || status.is_informational() {
        framing = Framing::Empty;
    }
    let (close, names_fields) = connection_options(resp.headers);
    if len > MAX_HEAD {
        return Err(FramingError::HeadTooLarge);
    }
    let meta = Meta {
        len,
        code,
        version,
        framing,
        keep_alive: version == Version::HTTP_11 && !close,
        names_fields,
    };
    let taken = take(&resp, &meta)?;
    Ok(Found::Final(meta, taken))
}

/// Parses a response head at the front of `buf` and, when complete, takes it out of `buf`.
pub fn parse_head(buf: &mut BytesMut, expect: Expect) -> Result<Parsed, FramingError> {
    // Where each name and value lies in the head (offsets fit `u32`: the head is at most
    // `MAX_HEAD`), so that once the head is frozen the values become slices of it, not copies.
    let base = buf.as_ptr() as usize;
    let found = parse_with(buf, expect, |resp, meta| {
        // The usual hop-by-hop fields are left out here, so the map is built without them
        // instead of emptied of them; a `Connection` that names other fields, or a 101 (which
        // keeps `Upgrade`), is left whole to `headers::strip_hop_by_hop`.
        let leave_out = !meta.names_fields && meta.code != 101;
        let mut spans = [[0u32; 4]; MAX_FIELDS];
        let mut fields = 0;
        for field in resp.headers.iter() {
            if leave_out && is_hop_by_hop(field.name.as_bytes()) {
                continue;
            }
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            spans[fields] = [
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            ];
            fields += 1;
        }
        Ok((spans, fields))
    })?;
    let (meta, (spans, fields)) = match found {
        Found::Partial => return Ok(Parsed::Partial),
        Found::Interim(len) => {
            buf.advance(len);
            return Ok(Parsed::Interim);
        }
        Found::Final(meta, taken) => (meta, taken),
    };
    let head = buf.split_to(meta.len).freeze();
    let mut headers = HeaderMap::with_capacity(fields);
    for &[ns, ne, vs, ve] in &spans[..fields] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| FramingError::Head("field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| FramingError::Head("field value"))?;
        headers.append(name, value);
    }
    Ok(Parsed::Final(Head {
        // Checked by `parse_with`.
        status: StatusCode::from_u16(meta.code).unwrap_or(StatusCode::BAD_GATEWAY),
        version: meta.version,
        headers,
        framing: meta.framing,
        keep_alive: meta.keep_alive,
    }))
}

/// Parses a response head at the front of `buf` and, when it is final, writes it for the client
/// into `out` (the status line in HTTP/1.0 when `http10`, the upstream's reason phrase, the fields
/// as received without the hop-by-hop ones: those RFC 9110 §7.6.1 lists and those `Connection`
/// names; a 101 keeps `Upgrade`) and takes it out of `buf`. No field map, no allocation: the
/// proxy's own HTTP/1 server relays heads this way. The caller ends the head (its own fields and
/// the blank line).
pub fn parse_head_into(
    buf: &mut BytesMut,
    expect: Expect,
    out: &mut Vec<u8>,
    http10: bool,
) -> Result<Parsed<RawHead>, FramingError> {
    let start = out.len();
    let found = parse_with(buf, expect, |resp, meta| {
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        let code = meta.code;
        out.extend_from_slice(&[
            b'0' + (code / 100 % 10) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let switching = code == 101;
        for field in resp.headers.iter() {
            let name = field.name.as_bytes();
            // A 101 keeps `Upgrade` (its `Connection: upgrade` names it too).
            let upgrade = switching && name.eq_ignore_ascii_case(b"upgrade");
            let hop = is_hop_by_hop(name)
                || (meta.names_fields && named_in_connection(resp.headers, name));
            if hop && !upgrade {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(field.value);
            out.extend_from_slice(b"\r\n");
        }
        Ok(())
    });
    match found {
        Ok(Found::Partial) => Ok(Parsed::Partial),
        Ok(Found::Interim(len)) => {
            buf.advance(len);
            Ok(Parsed::Interim)
        }
        Ok(Found::Final(meta, ())) => {
            buf.advance(meta.len);
            Ok(Parsed::Final(RawHead {
                status: meta.code,
                framing: meta.framing,
                keep_alive: meta.keep_alive,
            }))
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

/// Whether a `Connection` field of `fields` names `name`.
fn named_in_connection(fields: &[httparse::Header<'_>], name: &[u8]) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .any(|f| {
            f.value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(name))
        })
}

/// `httparse`'s reason, as a static string.
pub(crate) fn reason(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid field name",
        httparse::Error::HeaderValue => "invalid field value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// The framing a head's fields announce (rules 2 to 4 of the module docs).
fn frame(fields: &[httparse::Header<'_>], version: Version) -> Result<Framing, FramingError> {
    let mut length: Option<u64> = None;
    let mut encoding: Option<bool> = None;
    for field in fields {
        if field.name.eq_ignore_ascii_case("content-length") {
            for item in field.value.split(|&b| b == b',') {
                if length.is_some() {
                    return Err(FramingError::DuplicateLength);
                }
                length = Some(parse_length(trim(item)).ok_or(FramingError::BadLength)?);
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked exactly once, and last: any coding after it, or a second field, is refused.
            for item in field.value.split(|&b| b == b',') {
                let chunked = trim(item).eq_ignore_ascii_case(b"chunked");
                if encoding.is_some() || !chunked {
                    return Err(FramingError::BadEncoding);
                }
                encoding = Some(chunked);
            }
        }
    }
    match (encoding, length) {
        (Some(_), Some(_)) => Err(FramingError::Conflicting),
        (Some(_), None) if version == Version::HTTP_10 => Err(FramingError::BadEncoding),
        (Some(_), None) => Ok(Framing::Chunked),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) => Ok(Framing::Close),
    }
}

/// A `Content-Length` value: digits only, no sign, no overflow.
pub(crate) fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// What `Connection` says: `close`, and whether it names fields other than the options
/// `close` and `keep-alive` (those fields are hop-by-hop too).
fn connection_options(fields: &[httparse::Header<'_>]) -> (bool, bool) {
    let (mut close, mut names) = (false, false);
    for f in fields {
        if f.name.eq_ignore_ascii_case("connection") {
            for token in f.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    names = true;
                }
            }
        }
    }
    (close, names)
}

/// A field RFC 9110 §7.6.1 makes hop-by-hop (plus the legacy `Keep-Alive`, `Proxy-Connection`).
fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
    ];
    NAMES
        .iter()
        .any(|n| n.len() == name.len() && n.eq_ignore_ascii_case(name))
}

/// Cuts a response body out of the read buffer, frame by frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    close_delimited: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many body bytes are left.
    Length(u64),
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields (dropped) and the final CRLF; bytes seen so far.
    Trailers(usize),
    /// Until the connection closes.
    Close,
    /// The body has ended.
    Done,
}

/// What [`Decoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The body has ended.
    Done,
    /// More bytes are needed from the connection.
    More,
}

impl Decoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::Close => State::Close,
        };
        Decoder {
            state,
            close_delimited: framing == Framing::Close,
        }
    }

    /// The body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes known to be left, when the framing says.
    pub fn exact_remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The body delimited itself (not by the connection's close), so the connection may be reused
    /// once it is done.
    pub fn reusable(&self) -> bool {
        !self.close_delimited
    }

    /// Takes the next piece of body out of `buf`: data as a slice of it (no copy), framing skipped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        self.step(buf, true)
    }

    /// Consumes the framing that follows the data handed out last as far as `buf` holds it (a
    /// chunk's CRLF, the last chunk, trailers), so that a body whose end has arrived reads as
    /// done before the client asks for more. Hands out no data.
    pub fn settle(&mut self, buf: &mut BytesMut) -> Result<(), FramingError> {
        self.step(buf, false).map(|_| ())
    }

    fn step(&mut self, buf: &mut BytesMut, emit: bool) -> Result<Decoded, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Length(n) | State::Data(n) => {
                    if buf.is_empty() || !emit {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(n).map_or(buf.len(), |n| n.min(buf.len()));
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::DataEnd,
                        _ => State::Data(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                // `httparse` reads an empty size as 0 (HTTP Garden, trophy 17): a size is at
                // least one hex digit.
                State::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err(FramingError::BadChunk);
                }
                State::Size => match httparse::parse_chunk_size(buf) {
                    // A size line longer than any sane one (extensions and all) is abuse.
                    Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                        return Err(FramingError::BadChunk);
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(FramingError::BadChunk);
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                    Err(_) => return Err(FramingError::BadChunk),
                },
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::BadChunk);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        if seen + buf.len() > MAX_TRAILERS {
                            return Err(FramingError::TrailersTooLarge);
                        }
                        return Ok(Decoded::More);
                    };
                    if lf == 0 || buf[lf - 1] != b'\r' {
                        return Err(FramingError::BadChunk);
                    }
                    let last = lf == 1;
                    buf.advance(lf + 1);
                    let seen = seen + lf + 1;
                    if seen > MAX_TRAILERS {
                        return Err(FramingError::TrailersTooLarge);
                    }
                    self.state = if last {
                        State::Done
                    } else {
                        State::Trailers(seen)
                    };
                }
                State::Close => {
                    if buf.is_empty() || !emit {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
            }
        }
    }

    /// The connection closed (read returned 0): the end of a close-delimited body, an error for
    /// any other that has not ended.
    pub fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Done => Ok(()),
            State::Close => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Parsed, FramingError> {
        parse_head(&mut BytesMut::from(text), Expect::default())
    }

    fn framing(text: &str) -> Result<Framing, FramingError> {
        match parse(text)? {
            Parsed::Final(head) => Ok(head.framing),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    /// Every framing rule of RFC 9112 §6.3 the proxy applies, one line each.
    #[test]
    fn framing_table() {
        use Framing::*;
        use FramingError::*;
        let table: &[(&str, Result<Framing, FramingError>)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Ok(Length(5)),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length:  0 \r\n\r\n",
                Ok(Length(0)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Chunked),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
                Ok(Chunked),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Ok(Close)),
            ("HTTP/1.0 200 OK\r\n\r\n", Ok(Close)),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
                Ok(Empty),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                Ok(Empty),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Conflicting),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Err(Conflicting),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Err(DuplicateLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Err(DuplicateLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                Err(DuplicateLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                Err(BadLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                Err(BadLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
                Err(BadLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                Err(BadLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
                Err(BadLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
                Ok(Length(u64::MAX)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Err(BadEncoding),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(BadEncoding),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(BadEncoding),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(BadEncoding),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
                Err(BadEncoding),
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(BadEncoding),
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                Err(UnexpectedSwitch),
            ),
            (
                "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
                Err(Head("invalid header name")),
            ),
            (
                "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
                Err(Head("invalid header name")),
            ),
            ("HTTP/1.1 2000 OK\r\n\r\n", Err(Head("invalid status"))),
            ("HTTP/2.0 200 OK\r\n\r\n", Err(Head("invalid HTTP version"))),
        ];
        for (text, expected) in table {
            let got = framing(text).map_err(|e| match e {
                // httparse's wording is not ours to pin; the kind is.
                Head(_) => Head("invalid header name"),
                other => other,
            });
            let expected = expected.map_err(|e| match e {
                Head(_) => Head("invalid header name"),
                other => other,
            });
            assert_eq!(got, expected, "{text:?}");
        }
    }

    #[test]
    fn head_requests_and_keep_alive() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let expect = Expect {
            head: true,
            upgrade: false,
        };
        let Ok(Parsed::Final(head)) = parse_head(&mut buf, expect) else {
            panic!("a head")
        };
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert_eq!(head.headers["content-length"], "5");
        let Ok(Parsed::Final(head)) = parse(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nTrailer: x\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTE: trailers\r\n\r\n",
        ) else {
            panic!("a head")
        };
        let names: Vec<&str> = head.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-a"], "hop-by-hop fields are left out");
        let Ok(Parsed::Final(head)) =
            parse("HTTP/1.1 200 OK\r\nConnection: x-b\r\nX-B: 1\r\nKeep-Alive: 1\r\n\r\n")
        else {
            panic!("a head")
        };
        assert_eq!(
            head.headers.len(),
            3,
            "a Connection naming a field is left whole to the stripping"
        );
        assert_eq!(&buf[..], b"hello", "the head is taken out, the rest stays");
        for (text, keep) in [
            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nConnection: x-a, Close\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", true),
        ] {
            let Ok(Parsed::Final(head)) = parse(text) else {
                panic!("{text}")
            };
            assert_eq!(head.keep_alive, keep, "{text}");
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_101_answers_an_upgrade() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(matches!(
            parse_head(&mut buf, Expect::default()),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse_head(&mut buf, Expect::default()),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse_head(&mut buf, Expect::default()),
            Ok(Parsed::Final(Head {
                status: StatusCode::OK,
                ..
            }))
        ));
        let mut buf = BytesMut::from("HTTP/1.1 101 Switching\r\nUpgrade: echo\r\n\r\nrest");
        let upgrade = Expect {
            head: false,
            upgrade: true,
        };
        let Ok(Parsed::Final(head)) = parse_head(&mut buf, upgrade) else {
            panic!("101 is final for an upgrade")
        };
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(head.framing, Framing::Empty);
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn heads_written_for_the_client() {
        let into = |text: &str, expect: Expect, http10: bool| {
            let mut buf = BytesMut::from(text);
            let mut out = b"kept".to_vec();
            let got = parse_head_into(&mut buf, expect, &mut out, http10);
            (got, String::from_utf8_lossy(&out).into_owned(), buf)
        };
        let (got, out, rest) = into(
            "HTTP/1.1 200 Fine\r\nConnection: x-b, keep-alive\r\nX-B: 1\r\nKeep-Alive: 5\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nTrailer: t\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTE: trailers\r\n\r\n5\r\n",
            Expect::default(),
            false,
        );
        assert!(
            matches!(
                got,
                Ok(Parsed::Final(RawHead {
                    status: 200,
                    framing: Framing::Chunked,
                    keep_alive: true
                }))
            ),
            "{got:?}"
        );
        assert_eq!(out, "keptHTTP/1.1 200 Fine\r\nX-A: 1\r\n");
        assert_eq!(&rest[..], b"5\r\n");
        let (got, out, _) = into(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            Expect {
                head: false,
                upgrade: true,
            },
            false,
        );
        assert!(
            matches!(got, Ok(Parsed::Final(RawHead { status: 101, .. }))),
            "{got:?}"
        );
        assert_eq!(
            out,
            "keptHTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
        );
        let (got, out, _) = into(
            "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
            Expect::default(),
            true,
        );
        assert!(
            matches!(
                got,
                Ok(Parsed::Final(RawHead {
                    status: 404,
                    framing: Framing::Length(0),
                    ..
                }))
            ),
            "{got:?}"
        );
        assert_eq!(out, "keptHTTP/1.0 404 \r\nContent-Length: 0\r\n");
        let (got, out, _) = into("HTTP/1.1 100 Continue\r\n\r\n", Expect::default(), false);
        assert!(matches!(got, Ok(Parsed::Interim)), "{got:?}");
        assert_eq!(out, "kept", "an interim head is not written");
        let (got, out, _) = into(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Expect::default(),
            false,
        );
        assert_eq!(got.err(), Some(FramingError::DuplicateLength));
        assert_eq!(out, "kept", "a refused head leaves nothing behind");
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nX: 1\r\n"),
            Ok(Parsed::Partial)
        ));
        let mut long = String::from("HTTP/1.1 200 OK\r\n");
        while long.len() <= MAX_HEAD {
            long.push_str("x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(parse(&long).err(), Some(FramingError::HeadTooLarge));
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_FIELDS {
            many.push_str(&format!("x-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse(&many).err(), Some(FramingError::HeadTooLarge));
    }

    /// A chunk whose size line (with its extension) is longer than `MAX_CHUNK_LINE`.
    const LONG_EXTENSION: &[u8] = &{
        let mut line = [b'x'; MAX_CHUNK_LINE + 16];
        line[0] = b'1';
        line[1] = b';';
        line[MAX_CHUNK_LINE + 10] = b'\r';
        line[MAX_CHUNK_LINE + 11] = b'\n';
        line[MAX_CHUNK_LINE + 12] = b'Z';
        line[MAX_CHUNK_LINE + 13] = b'\r';
        line[MAX_CHUNK_LINE + 14] = b'\n';
        line[MAX_CHUNK_LINE + 15] = b'0';
        line
    };

    /// Decodes `input` fed in pieces of `step` bytes; the body, or the first error.
    fn decode_all(
        framing: Framing,
        input: &[u8],
        step: usize,
        eof: bool,
    ) -> Result<Vec<u8>, FramingError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => {
                    assert!(!d.is_empty());
                    out.extend_from_slice(&d)
                }
                Decoded::Done => return Ok(out),
                Decoded::More if fed < input.len() => {
                    let end = (fed + step.max(1)).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Decoded::More if eof => {
                    decoder.eof()?;
                    return Ok(out);
                }
                Decoded::More => return Err(FramingError::Truncated),
            }
        }
    }

    #[test]
    fn body_table() {
        use Framing::*;
        use FramingError::*;
        // Framing, bytes on the wire, whether the connection closes after them, the outcome.
        type Row = (
            Framing,
            &'static [u8],
            bool,
            Result<&'static [u8], FramingError>,
        );
        let table: &[Row] = &[
            (Length(5), b"hello", false, Ok(b"hello")),
            (Length(5), b"hel", false, Err(Truncated)),
            (Length(5), b"hel", true, Err(Truncated)),
            (Empty, b"", false, Ok(b"")),
            (Close, b"until the end", true, Ok(b"until the end")),
            (Chunked, b"5\r\nhello\r\n0\r\n\r\n", false, Ok(b"hello")),
            (
                Chunked,
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                false,
                Ok(b"hello world"),
            ),
            (
                Chunked,
                b"A\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n",
                false,
                Ok(b"0123456789"),
            ),
            (Chunked, b"5\r\nhelloXX0\r\n\r\n", false, Err(BadChunk)),
            (Chunked, b"zz\r\n", false, Err(BadChunk)),
            (Chunked, b"5\nhello\r\n0\r\n\r\n", false, Err(BadChunk)),
            (Chunked, b"10000000000000000\r\n", false, Err(BadChunk)),
            (Chunked, b"ffffffffffffffff\r\nab", true, Err(Truncated)),
            (Chunked, b"5\r\nhello\r\n", true, Err(Truncated)),
            (Chunked, b"0\r\nx: 1\n\r\n", false, Err(BadChunk)),
            (Chunked, LONG_EXTENSION, false, Err(BadChunk)),
            (Chunked, b"\r\n\r\n", false, Err(BadChunk)),
            (Chunked, b";x\r\nab\r\n0\r\n\r\n", false, Err(BadChunk)),
        ];
        for (framing, input, eof, expected) in table {
            for step in [1, 2, 3, 7, input.len().max(1)] {
                let got = decode_all(*framing, input, step, *eof);
                assert_eq!(
                    got.as_deref().map_err(|e| *e),
                    expected.map(|b| b),
                    "{framing:?} {:?} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        let mut big = b"0\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_TRAILERS + 1));
        assert_eq!(decode_all(Chunked, &big, 512, false), Err(TrailersTooLarge));
    }

    #[test]
    fn bytes_after_the_body_stay_in_the_buffer() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1"[..]);
        let mut d = Decoder::new(Framing::Chunked);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf), Ok(Decoded::Done));
        assert_eq!(&buf[..], b"HTTP/1.1");
        assert!(d.reusable());
        assert!(!Decoder::new(Framing::Close).reusable());
    }

    proptest::proptest! {
        /// Any bytes as a head: no panic; a final head always has one unambiguous framing (read
        /// against the fields as `httparse` alone sees them).
        #[test]
        fn arbitrary_heads_never_panic(
            prefix in proptest::sample::select(vec!["", "HTTP/1.1 200 OK\r\n", "HTTP/1.0 200 OK\r\n", "HTTP/1.1 304 x\r\n"]),
            fields in "((content-length|Transfer-Encoding|connection|x)[:, ]{1,2}(chunked|close|[0-9]{1,3}|, )[ \t]?\r\n){0,6}\r\n",
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            head in proptest::bool::ANY,
        ) {
            let mut bytes = format!("{prefix}{fields}").into_bytes();
            bytes.extend_from_slice(&tail);
            let mut buf = BytesMut::from(&bytes[..]);
            let expect = Expect { head, upgrade: false };
            if let Ok(Parsed::Final(h)) = parse_head(&mut buf, expect) {
                let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
                let mut resp = httparse::Response::new(&mut raw);
                proptest::prop_assert!(resp.parse(&bytes).is_ok_and(|s| s.is_complete()));
                let count = |name: &str| resp.headers.iter().filter(|f| f.name.eq_ignore_ascii_case(name)).count();
                let (te, cl) = (count("transfer-encoding"), count("content-length"));
                match h.framing {
                    Framing::Chunked => proptest::prop_assert!(te == 1 && cl == 0),
                    Framing::Length(_) => proptest::prop_assert!(te == 0 && cl == 1),
                    Framing::Close => proptest::prop_assert!(te == 0 && cl == 0),
                    Framing::Empty => {}
                }
            }
        }

        /// Responses made of arbitrary fields from a small vocabulary: whatever is accepted has
        /// the framing the rules give.
        #[test]
        fn framing_fields(fields in proptest::collection::vec(proptest::sample::select(vec![
            "Content-Length: 3", "Content-Length: 4", "content-length: 3, 3", "Content-Length: x",
            "Transfer-Encoding: chunked", "transfer-encoding: gzip", "Connection: close", "X-Other: 1",
        ]), 0..5)) {
            let text = format!("HTTP/1.1 200 OK\r\n{}\r\n", fields.iter().map(|f| format!("{f}\r\n")).collect::<String>());
            let lengths = fields.iter().map(|f| if f.starts_with("content-length: 3, 3") { 2 } else { usize::from(f.starts_with("Content-Length")) }).sum::<usize>();
            let te = fields.iter().filter(|f| f.to_ascii_lowercase().starts_with("transfer-encoding")).count();
            let got = framing(&text);
            match got {
                Ok(Framing::Length(n)) => proptest::prop_assert!(lengths == 1 && te == 0 && (n == 3 || n == 4)),
                Ok(Framing::Chunked) => proptest::prop_assert!(lengths == 0 && te == 1),
                Ok(Framing::Close) => proptest::prop_assert!(lengths == 0 && te == 0),
                Ok(Framing::Empty) => proptest::prop_assert!(false, "a 200 with a body"),
                Err(_) => proptest::prop_assert!(lengths > 1 || te > 1 || (te > 0 && lengths > 0)
                    || fields.iter().any(|f| f.ends_with(": x") || f.ends_with("gzip"))),
            }
        }

        /// Any bytes as a chunked body, fed in any pieces: no panic, and the same outcome
        /// whatever the pieces.
        #[test]
        fn arbitrary_chunked_bodies(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256), step in 1usize..20) {
            let whole = decode_all(Framing::Chunked, &bytes, bytes.len().max(1), true);
            let pieces = decode_all(Framing::Chunked, &bytes, step, true);
            proptest::prop_assert_eq!(whole, pieces);
        }

        /// Chunked encoding of any chunks decodes to their concatenation.
        #[test]
        fn chunked_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..50), 0..8), step in 1usize..30) {
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let expected: Vec<u8> = chunks.concat();
            proptest::prop_assert_eq!(decode_all(Framing::Chunked, &wire, step, false), Ok(expected));
        }
    }
}
