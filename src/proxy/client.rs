//! The proxy's upstream HTTP/1.1 client: one pooled connection, driven by the task that serves
//! the client's request, with no task, channel or oneshot of its own.
//!
//! Per request on a pooled connection: the request head is written from the connection's reused
//! buffer with one `write` (the request's fields as hyper parsed them, hop-by-hop fields already
//! removed, `X-Forwarded-For` and `Via` appended from pre-built bytes), the response head is read
//! into the connection's read buffer and parsed there ([`framing::parse_head`]), and the body is
//! handed on as slices of that buffer ([`framing::Decoder`]). The response deadline is one timer
//! per connection that is re-armed only when it fires before the request's deadline
//! ([`Deadline`]), so a request costs no timer registration. Whether a pooled connection is still
//! open is read from the reactor's readiness (no system call unless something arrived while it
//! was idle).
//!
//! A connection goes back to the pool only when its response was read to its end, framed by its
//! own length, HTTP/1.1 without `Connection: close`, the request body was sent whole, and nothing
//! followed the response ([`UpstreamConn::reusable_after`]).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::{BodySource, ClientBody, ClientBodyError};
use super::error::{ProxyError, UpstreamError};
use super::framing::{self, Expect, FramingError, Head, Parsed};
use super::headers::X_FORWARDED_FOR;

/// Read buffer reserved at a time; a response head and a small body arrive in one read.
const READ_CAPACITY: usize = 8 * 1024;

/// One HTTP/1.1 connection to an upstream, with its buffers and its response deadline.
#[derive(Debug)]
pub(crate) struct UpstreamConn {
    stream: TcpStream,
    /// Bytes read and not yet handed on (a response head, body bytes, chunk framing).
    pub(crate) read: BytesMut,
    /// The request head being written; reused by every request on this connection.
    write: Vec<u8>,
    deadline: Deadline,
    /// The last request's body was sent whole (or it had none).
    request_complete: bool,
}

/// How the request body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// No body.
    None,
    /// As many bytes as the request's `Content-Length` says (the field is forwarded).
    Length,
    /// Chunked: the proxy adds `Transfer-Encoding: chunked` and frames the client's data.
    Chunked,
}

impl RequestBody {
    /// How `body`, whose request has the fields `parts`, is forwarded.
    pub(crate) fn of(parts: &Parts, body: &ClientBody) -> RequestBody {
        if parts.headers.contains_key(CONTENT_LENGTH) {
            RequestBody::Length
        } else if body.is_end_stream() {
            RequestBody::None
        } else {
            RequestBody::Chunked
        }
    }
}

/// A failed exchange, and whether the upstream may have seen the request: a request never written
/// gives its count back and may go to another connection.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: ProxyError,
    pub(crate) sent: bool,
}

impl UpstreamConn {
    /// Connects to `addr` within `limit`. Boxed once per connection, so that handing it between
    /// the pool, the request and the response body moves a pointer, not the buffers' headers.
    pub(crate) async fn connect(
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<Box<Self>, ProxyError> {
        let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Err(_) => return Err(ProxyError::ConnectTimeout(limit)),
            Ok(Err(err)) => return Err(ProxyError::connect(err)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        Ok(Box::new(UpstreamConn {
            stream,
            read: BytesMut::with_capacity(READ_CAPACITY),
            write: Vec::with_capacity(1024),
            deadline: Deadline::new(),
            request_complete: true,
        }))
    }

    /// Resolves once the upstream has closed its end (or sent anything, or failed): the socket
    /// turned readable.
    pub(crate) async fn closed_by_peer(&self) {
        let _ = self.stream.readable().await;
    }

    /// Whether a pooled connection can take a request: nothing arrived while it was idle (an
    /// upstream's close, or bytes nobody asked for). Reads the reactor's readiness; a system call
    /// only when it says something arrived.
    pub(crate) fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last response: ask the socket.
            Poll::Ready(Ok(())) => {
                matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the request head for `parts` (hop-by-hop fields already removed) into the reused
    /// buffer: request line, the fields, `X-Forwarded-For` as one list ending with `client`,
    /// `via`, and `Transfer-Encoding: chunked` for a [`RequestBody::Chunked`] body.
    pub(crate) fn encode_head(
        &mut self,
        parts: &Parts,
        client: &HeaderValue,
        via: &HeaderValue,
        body: RequestBody,
    ) {
        let w = &mut self.write;
        w.clear();
        w.extend_from_slice(parts.method.as_str().as_bytes());
        w.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        w.extend_from_slice(target.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let mut forwarded = false;
        for (name, value) in &parts.headers {
            if name == X_FORWARDED_FOR {
                forwarded = true;
                continue;
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"x-forwarded-for: ");
        if forwarded {
            // Earlier hops' fields joined into one list, so that an application reading only the
            // first field still sees the whole chain.
            for value in parts.headers.get_all(&X_FORWARDED_FOR) {
                w.extend_from_slice(value.as_bytes());
                w.extend_from_slice(b", ");
            }
        }
        w.extend_from_slice(client.as_bytes());
        w.extend_from_slice(b"\r\nvia: ");
        w.extend_from_slice(via.as_bytes());
        w.extend_from_slice(b"\r\n");
        if body == RequestBody::Chunked {
            w.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        w.extend_from_slice(b"\r\n");
    }

    /// Takes a request head written elsewhere (by the HTTP/1 server, from the parsed bytes).
    pub(crate) fn set_head(&mut self, head: &[u8]) {
        self.write.clear();
        self.write.extend_from_slice(head);
    }

    /// Reads more of a response body: `Ok(0)` at the connection's end; an error when nothing came
    /// for `limit` (the response deadline is re-armed only when a read has to wait).
    pub(crate) async fn fill(&mut self, limit: Duration) -> io::Result<usize> {
        let mut armed = false;
        poll_fn(|cx| {
            if let Poll::Ready(read) = poll_fill(&mut self.stream, &mut self.read, cx) {
                return Poll::Ready(read);
            }
            if !armed {
                self.deadline.set(Instant::now() + limit);
                armed = true;
            }
            ready!(self.deadline.poll(cx));
            Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
        })
        .await
    }

    /// The socket, for a tunnel after a 101 (with [`UpstreamConn::read`] holding early bytes).
    pub(crate) fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes the head [`UpstreamConn::encode_head`] made. A failure before any byte left is
    /// [`Failed::sent`] false: the request may go to another connection.
    pub(crate) async fn send_head(&mut self) -> Result<(), Failed> {
        let mut written = 0;
        while written < self.write.len() {
            match self.stream.write(&self.write[written..]).await {
                Ok(0) => {
                    return Err(Failed {
                        error: ProxyError::Protocol(UpstreamError::Closed),
                        sent: written > 0,
                    });
                }
                Ok(n) => written += n,
                Err(err) => {
                    return Err(Failed {
                        error: ProxyError::Protocol(UpstreamError::Io(err)),
                        sent: written > 0,
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends the request body (if any) while waiting for the response head, which must come by
    /// `deadline` (else [`ProxyError::Timeout`] with `limit`). An answer that comes before the
    /// body was sent whole ends the sending (the connection is then not reused).
    pub(crate) async fn response<B: BodySource>(
        &mut self,
        body: Option<(&mut B, RequestBody)>,
        expect: Expect,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Head, ProxyError> {
        self.response_with(body, deadline, limit, |buf| {
            framing::parse_head(buf, expect)
        })
        .await
    }

    /// Like [`UpstreamConn::response`], with the head parsed by `parse` (e.g.
    /// [`framing::parse_head_into`], which writes it for the client instead of building a map).
    pub(crate) async fn response_with<B: BodySource, H>(
        &mut self,
        body: Option<(&mut B, RequestBody)>,
        deadline: Instant,
        limit: Duration,
        parse: impl FnMut(&mut BytesMut) -> Result<Parsed<H>, FramingError>,
    ) -> Result<H, ProxyError> {
        self.deadline.set(deadline);
        self.request_complete = body.is_none();
        let UpstreamConn {
            stream,
            read,
            deadline: timer,
            request_complete,
            ..
        } = self;
        let (mut reader, mut writer) = stream.split();
        let head = read_head(&mut reader, read, timer, parse, limit);
        let Some((body, framing)) = body else {
            return head.await;
        };
        tokio::pin!(head);
        let pump = pump(&mut writer, body, framing == RequestBody::Chunked);
        tokio::pin!(pump);
        let mut pumping = true;
        loop {
            tokio::select! {
                biased;
                head = &mut head => return head,
                sent = &mut pump, if pumping => {
                    pumping = false;
                    match sent {
                        Ok(()) => *request_complete = true,
                        Err(PumpError::Client(ClientBodyError::Timeout(limit))) => {
                            return Err(ProxyError::BodyTimeout(limit));
                        }
                        Err(PumpError::Client(ClientBodyError::Refused(err))) => {
                            return Err(ProxyError::Request(err));
                        }
                        Err(PumpError::Client(err)) => {
                            return Err(ProxyError::ClientBody(err));
                        }
                        // The upstream may still answer (e.g. it refused the body early).
                        Err(PumpError::Upstream(err)) => {
                            tracing::debug!(%err, "upstream stopped taking the request body");
                        }
                    }
                }
            }
        }
    }

    /// Reads more of the response into the read buffer: `Ok(0)` at the connection's end.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.stream, &mut self.read, cx)
    }

    /// Whether the connection can carry another request once the response with `keep_alive` and
    /// a body `decoder` decoded to its end: request sent whole, body self-delimited, and nothing
    /// after the response.
    pub(crate) fn reusable_after(&self, keep_alive: bool, decoder: &framing::Decoder) -> bool {
        keep_alive
            && self.request_complete
            && decoder.is_done()
            && decoder.reusable()
            && self.read.is_empty()
    }

    /// The socket and the bytes read past a 101 response head, for a tunnel.
    pub(crate) fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.stream, self.read.freeze())
    }
}

/// Reads and parses until a final response head (1xx interim responses skipped).
async fn read_head<R: AsyncRead + Unpin, H>(
    reader: &mut R,
    read: &mut BytesMut,
    deadline: &mut Deadline,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Parsed<H>, FramingError>,
    limit: Duration,
) -> Result<H, ProxyError> {
    poll_fn(|cx| {
        loop {
            match parse(read) {
                Ok(Parsed::Final(head)) => return Poll::Ready(Ok(head)),
                Ok(Parsed::Interim) => continue,
                Ok(Parsed::Partial) => {}
                Err(err) => {
                    return Poll::Ready(Err(ProxyError::Protocol(UpstreamError::Framing(err))));
                }
            }
            match poll_fill(reader, read, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ProxyError::Protocol(UpstreamError::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    return Poll::Ready(Err(ProxyError::Protocol(UpstreamError::Io(err))));
                }
                Poll::Pending => {
                    ready!(deadline.poll(cx));
                    return Poll::Ready(Err(ProxyError::Timeout(limit)));
                }
            }
        }
    })
    .await
}

/// Why sending the request body stopped.
enum PumpError {
    /// The client's body failed (stalled or broken).
    Client(ClientBodyError),
    /// Writing to the upstream failed.
    Upstream(io::Error),
}

/// Copies the client's body frames upstream as they come, chunk-framed when `chunked` (the size
/// line, the data and its CRLF in one vectored write; the data is not copied). Trailers are
/// dropped: the proxy does not ask the upstream whether it accepts them.
async fn pump<W: AsyncWrite + Unpin, B: BodySource>(
    writer: &mut W,
    body: &mut B,
    chunked: bool,
) -> Result<(), PumpError> {
    while let Some(data) = body.data().await {
        let data = data.map_err(PumpError::Client)?;
        if chunked {
            let size = format_hex(data.len());
            write_all_vectored(writer, &[&size.0[size.1..], &data, b"\r\n"]).await
        } else {
            writer.write_all(&data).await
        }
        .map_err(PumpError::Upstream)?;
    }
    if chunked {
        writer
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(PumpError::Upstream)?;
    }
    Ok(())
}

/// `n` in hex followed by CRLF, in a fixed buffer: the bytes from the returned offset on.
pub(crate) fn format_hex(mut n: usize) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    out[16] = b'\r';
    out[17] = b'\n';
    let mut at = 16;
    loop {
        at -= 1;
        out[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return (out, at);
        }
    }
}

/// Writes every byte of `parts` with as few (vectored) writes as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    parts: &[&[u8]; 3],
) -> io::Result<()> {
    let mut slices = parts.map(io::IoSlice::new);
    let mut left: &mut [io::IoSlice<'_>] = &mut slices;
    while left.iter().any(|s| !s.is_empty()) {
        let n = writer.write_vectored(left).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// Reads into the spare capacity of `buf` (reserving [`READ_CAPACITY`] when it runs short).
/// Through `AsyncRead::poll_read`, which tells the reactor that a short read drained the socket,
/// so an idle pooled connection reads as not ready without a system call.
pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CAPACITY / 4 {
        buf.reserve(READ_CAPACITY);
    }
    let mut spare = ReadBuf::uninit(buf.spare_capacity_mut());
    ready!(Pin::new(reader).poll_read(cx, &mut spare))?;
    let n = spare.filled().len();
    // SAFETY: `poll_read` initialised (filled) the first `n` bytes of the spare capacity, and
    // `ReadBuf` never reports more filled bytes than the slice it was given holds.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// A connection's response deadline: the wanted instant is a plain field that every request sets
/// (no timer touched), and the one timer behind it is re-armed only when it fires before that
/// instant. Deadlines move forward request by request, so the timer fires and is re-armed about
/// once per timeout period, not once per request.
#[derive(Debug)]
pub(crate) struct Deadline {
    at: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A deadline an hour away (set it before polling).
    pub(crate) fn new() -> Deadline {
        let at = Instant::now() + Duration::from_secs(3600);
        Deadline {
            at,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// The instant wanted from now on (no timer is touched).
    pub(crate) fn set(&mut self, at: Instant) {
        self.at = at;
    }

    /// Ready once the wanted instant has passed.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.deadline() > self.at {
                self.timer.as_mut().reset(self.at);
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.timer.deadline() >= self.at {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_sizes() {
        for (n, text) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let (buf, at) = format_hex(n);
            assert_eq!(&buf[at..], text.as_bytes());
        }
    }
}
