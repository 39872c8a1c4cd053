//! The proxy's own HTTP/1.x server: one client connection served by the worker's task that
//! accepted it, request after request, with no hyper, no task and no channel per request.
//!
//! Per request: the head is read into the connection's reused buffer and parsed there
//! ([`request::parse`], which also writes the upstream head into a reused buffer), routed and
//! counted ([`Worker::route`]: one `fetch_add`), written on a pooled upstream connection, and the
//! response head parsed ([`framing::parse_head`]) and written back from one reused buffer together
//! with as much of the body as has arrived (one `write` for a small response). Bodies stream both
//! ways without buffering beyond a read; a chunked or close-delimited response body is re-framed
//! chunked for an HTTP/1.1 client. Requests are answered in order (pipelining): bytes after a
//! request stay in the buffer for the next.
//!
//! Timeouts cost no timer per request: the connection has one timer ([`Deadline`]) whose wanted
//! instant is a plain field, polled only when a read or write has to wait: `header_read_timeout`
//! from accept (nothing sent) and from the first byte of a head that is not whole, `idle_timeout`
//! between requests, `request_body_timeout` between body reads, `response_write_timeout` while the
//! client takes nothing of a response. A head that is refused ([`RequestError`]) is answered
//! (400, 413, 414, 431) and the connection closed, nothing forwarded, nothing counted.

use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{BodySource, ClientBodyError};
use super::client::{Deadline, RequestBody, UpstreamConn, format_hex, poll_fill};
use super::error::ProxyError;
use super::framing::{self, Decoded, Decoder, Expect, Framing, RawHead};
use super::headers::{VIA_10, VIA_11};
use super::request::{self, BodyFraming, Forwarding, Parsed, Request, RequestError};
use super::worker::{ConnInfo, Finish, Worker};

/// Read buffer reserved at a time.
const READ_CAPACITY: usize = 8 * 1024;
/// Response bytes gathered before they are written (larger bodies go out piece by piece).
const FLUSH_AT: usize = 64 * 1024;

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One client connection's state: the socket, its buffers and its one timer.
pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes read from the client and not yet used (a head, body bytes, the next request).
    buf: BytesMut,
    /// The upstream head of the current request (written by the parser).
    up_head: Vec<u8>,
    /// The response being written.
    out: Vec<u8>,
    deadline: Deadline,
    info: Rc<ConnInfo>,
    /// Requests answered on this connection.
    served: u64,
    /// The current request is HTTP/1.0 (answers say so in their status line, as hyper's did).
    http10: bool,
    /// The connection ends while the client may still be sending (an error answer, a body not
    /// read to its end, a shutdown): close it lingering (see [`Connection::linger`]).
    linger: bool,
}

/// Why a connection ends.
enum End {
    /// Closed (by either side, a timeout, or after an answer that ends it).
    Close,
}

type Step<T> = Result<T, End>;

impl Connection {
    /// A connection whose first bytes (read while telling HTTP/1 from HTTP/2) are in `buf`.
    pub(crate) fn new(stream: TcpStream, buf: BytesMut, info: Rc<ConnInfo>) -> Connection {
        Connection {
            stream,
            buf,
            up_head: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
            deadline: Deadline::new(),
            info,
            served: 0,
            http10: false,
            linger: false,
        }
    }

    /// Reads the first bytes and tells HTTP/2 with prior knowledge (`Some(true)`) from anything
    /// else (`Some(false)`); `None` when the client sent nothing within `header_read_timeout` of
    /// `accepted`, closed, or the worker is shutting down.
    pub(crate) async fn sniff(&mut self, worker: &Rc<Worker>, accepted: Instant) -> Option<bool> {
        let at = accepted + worker.settings().header_read_timeout;
        loop {
            if self.buf.len() >= PREFACE.len() {
                return Some(self.buf.starts_with(PREFACE));
            }
            if !PREFACE.starts_with(&self.buf) {
                return Some(false);
            }
            let watch = self.buf.is_empty();
            match self.fill(worker, Some(at), None, watch).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The socket and the bytes read from it so far (for hyper's HTTP/2 server).
    pub(crate) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.buf.freeze())
    }

    /// Serves requests until the connection ends. `accepted` is when it was accepted (the first
    /// head must be whole by `accepted + header_read_timeout`).
    pub(crate) async fn serve(mut self, worker: &Rc<Worker>, accepted: Instant) {
        let mut first = Some(accepted);
        loop {
            let req = match self.read_head(worker, first.take()).await {
                Ok(req) => req,
                Err(End::Close) => break,
            };
            if self.exchange(worker, req).await.is_err() {
                break;
            }
        }
        if self.linger || !self.buf.is_empty() {
            self.linger().await;
        }
        // Otherwise the last answer ended the connection with nothing unread: dropping the
        // socket closes it at once, which sends the FIN (no `shutdown` call before it).
    }

    /// Closes gracefully: the write side first, then what the client still sends is read and
    /// dropped for a moment, so that closing with unread bytes does not reset the connection
    /// under a response the client has not read yet.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut drain = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut self.stream, &mut drain).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    /// Reads until a whole request head is in the buffer and parses it; refused heads are
    /// answered here. `accepted`: this is the connection's first request.
    async fn read_head(&mut self, worker: &Rc<Worker>, accepted: Option<Instant>) -> Step<Request> {
        let info = Rc::clone(&self.info);
        let fwd = Forwarding {
            client: info.client.as_bytes(),
            via11: VIA_11.as_bytes(),
            via10: VIA_10.as_bytes(),
        };
        // When the head must be whole: from accept, or from the first byte of this head.
        let mut head_deadline = accepted.map(|t| t + worker.settings().header_read_timeout);
        loop {
            // Read again after each wait: a reload while the connection idled applies to the
            // request that ends the wait.
            let settings = worker.settings();
            if !self.buf.is_empty() {
                match request::parse(&self.buf, &settings.limits, &fwd, &mut self.up_head) {
                    Ok(Parsed::Complete(req)) => return Ok(req),
                    Ok(Parsed::Partial) => {
                        if head_deadline.is_none() {
                            head_deadline = Some(Instant::now() + settings.header_read_timeout);
                        }
                    }
                    Err(err) => {
                        self.http10 = is_http10(&self.buf);
                        self.refuse(worker, ProxyError::Request(err)).await;
                        return Err(End::Close);
                    }
                }
            } else if worker.closing(&self.info) {
                self.linger = true;
                return Err(End::Close);
            }
            let idle = self.buf.is_empty() && accepted.is_none();
            let watch = self.buf.is_empty();
            let n = self
                .fill(
                    worker,
                    head_deadline,
                    idle.then_some(settings.idle_timeout),
                    watch,
                )
                .await;
            match n {
                Ok(0) | Err(_) => {
                    // Woken by a shutdown: the client may be sending a request right now.
                    self.linger |= worker.closing(&self.info);
                    return Err(End::Close);
                }
                Ok(_) => {}
            }
        }
    }

    /// Reads more from the client, by `at` (or `idle` from when the read first has to wait);
    /// with `watch` (between requests) a worker shutting down wakes it and it reads as closed.
    async fn fill(
        &mut self,
        worker: &Rc<Worker>,
        at: Option<Instant>,
        idle: Option<Duration>,
        watch: bool,
    ) -> io::Result<usize> {
        let mut armed = false;
        poll_fn(|cx| {
            if self.buf.capacity() - self.buf.len() < READ_CAPACITY / 4 {
                self.buf.reserve(READ_CAPACITY);
            }
            if let Poll::Ready(read) = poll_fill(&mut self.stream, &mut self.buf, cx) {
                return Poll::Ready(read);
            }
            if watch {
                if worker.closing(&self.info) {
                    return Poll::Ready(Ok(0));
                }
                worker.watch_idle(&self.info, cx.waker());
            }
            if !armed {
                armed = true;
                match (at, idle) {
                    (Some(at), _) => self.deadline.set(at),
                    (None, Some(idle)) => self.deadline.set(Instant::now() + idle),
                    (None, None) => return Poll::Pending,
                }
            }
            ready!(self.deadline.poll(cx));
            Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
        })
        .await
    }

    /// Writes `self.out` whole (then clears it); fails when the client takes nothing of it for
    /// `response_write_timeout`.
    async fn flush(&mut self, worker: &Worker) -> io::Result<()> {
        let limit = worker.settings().response_write_timeout;
        let mut written = 0;
        let mut armed = false;
        let result = poll_fn(|cx| {
            while written < self.out.len() {
                match std::pin::Pin::new(&mut self.stream).poll_write(cx, &self.out[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        armed = false;
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {
                        if !armed {
                            armed = true;
                            self.deadline.set(Instant::now() + limit);
                        }
                        ready!(self.deadline.poll(cx));
                        return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await;
        self.out.clear();
        result
    }

    /// Answers a request the proxy does not forward and counts why; the connection then closes
    /// when the answer says so.
    async fn refuse(&mut self, worker: &Worker, err: ProxyError) -> bool {
        worker.count_refusal(&err);
        // Nothing of another answer may precede this one.
        self.out.clear();
        let close = err.closes() || worker.closing(&self.info);
        self.linger |= close;
        err.write_http1(&mut self.out, self.http10, close);
        self.flush(worker).await.is_ok() && !close
    }

    /// Answers with `err` ([`Connection::refuse`]); the connection goes on only when `keep` (the
    /// request was read whole and the client keeps its connection) and the answer allows it.
    async fn answer(&mut self, worker: &Worker, err: ProxyError, keep: bool) -> Step<()> {
        if self.refuse(worker, err).await && keep {
            Ok(())
        } else {
            Err(End::Close)
        }
    }

    /// Serves one parsed request: route, count, forward, answer. `Err` ends the connection.
    async fn exchange(&mut self, worker: &Rc<Worker>, req: Request) -> Step<()> {
        // One look at the settings per request (a reload applies from the next one).
        let settings = worker.settings();
        let start = Instant::now();
        self.http10 = !req.http11;
        if req.connect {
            self.refuse(worker, ProxyError::MethodNotAllowed).await;
            return Err(End::Close);
        }
        if req.body == BodyFraming::Chunked
            && let Err(err) = check_chunks(&self.buf[req.len..])
        {
            // What arrived with the head is already malformed: refused before it is routed,
            // counted or forwarded.
            self.refuse(worker, ProxyError::Request(err)).await;
            return Err(End::Close);
        }
        let host = req.host.clone();
        let length = match req.body {
            BodyFraming::Length(n) => n,
            BodyFraming::None | BodyFraming::Chunked => 0,
        };
        let routed = worker
            .route_waiting(
                &self.buf[host],
                &self.info,
                start,
                length,
                settings.max_body,
            )
            .await;
        self.buf.advance(req.len);
        let local = match routed {
            Ok(local) => local,
            // The body, if any, was not read: what follows is not a request.
            Err(err) => {
                return self
                    .answer(worker, err, req.body == BodyFraming::None && req.keep_alive)
                    .await;
            }
        };
        let mut finish = Finish::new(local, Rc::clone(worker), Rc::clone(&self.info), start);
        let framing = match req.body {
            BodyFraming::None => RequestBody::None,
            BodyFraming::Length(_) => RequestBody::Length,
            BodyFraming::Chunked => RequestBody::Chunked,
        };
        let sent = worker
            .send_head(&mut finish, req.upgrade, |c| c.set_head(&self.up_head))
            .await;
        let mut up = match sent {
            Ok(up) => up,
            Err(err) => {
                drop(finish);
                return self
                    .answer(worker, err, req.body == BodyFraming::None && req.keep_alive)
                    .await;
            }
        };
        if req.expect_continue && req.body != BodyFraming::None && self.buf.is_empty() {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush(worker).await.map_err(|_| End::Close)?;
        }
        let expect = Expect {
            head: req.head,
            upgrade: req.upgrade,
        };
        let limit = settings.upstream_timeout;
        // The response head is written for the client straight from the upstream's bytes.
        let out = &mut self.out;
        let http10 = !req.http11;
        let parse = |buf: &mut BytesMut| framing::parse_head_into(buf, expect, out, http10);
        let body_framing = match req.body {
            BodyFraming::None => None,
            BodyFraming::Length(n) => Some(Framing::Length(n)),
            BodyFraming::Chunked => Some(Framing::Chunked),
        };
        let (head, body_done) = match body_framing {
            None => (
                up.response_with::<RawBody, _>(None, start + limit, limit, parse)
                    .await,
                true,
            ),
            Some(body_framing) => {
                let mut body = RawBody {
                    stream: &mut self.stream,
                    buf: &mut self.buf,
                    deadline: &mut self.deadline,
                    decoder: Decoder::new(body_framing),
                    timeout: settings.request_body_timeout,
                    max: finish.max_body(settings.max_body),
                    seen: 0,
                    done: false,
                };
                let head = up
                    .response_with(Some((&mut body, framing)), start + limit, limit, parse)
                    .await;
                (head, body.done)
            }
        };
        let head = match head {
            Ok(head) => head,
            Err(err) => {
                drop(up);
                drop(finish);
                return self.answer(worker, err, body_done && req.keep_alive).await;
            }
        };
        if head.status == 101 {
            self.tunnel(worker, up, finish).await;
            return Err(End::Close);
        }
        self.served += 1;
        let max = settings.max_requests_per_connection;
        let mut close = !req.keep_alive
            || !body_done
            || worker.closing(&self.info)
            || (max > 0 && self.served >= max);
        self.linger |= !body_done || worker.closing(&self.info);
        // An HTTP/1.0 client cannot take chunks: a body without a length ends with the connection.
        let chunked = matches!(head.framing, Framing::Chunked | Framing::Close);
        if chunked && !req.http11 {
            close = true;
        }
        self.relay(worker, head, up, finish, req.http11, close)
            .await?;
        if close { Err(End::Close) } else { Ok(()) }
    }

    /// Writes the response head and streams its body from `up`; the upstream connection goes
    /// back to the pool, and the request finishes, as soon as the body has been read to its end.
    async fn relay(
        &mut self,
        worker: &Worker,
        head: RawHead,
        up: Box<UpstreamConn>,
        finish: Finish,
        http11: bool,
        close: bool,
    ) -> Step<()> {
        // The status line and the upstream's fields are in `out` already.
        let chunked = http11 && matches!(head.framing, Framing::Chunked | Framing::Close);
        let out = &mut self.out;
        out.extend_from_slice(b"via: ");
        out.extend_from_slice(VIA_11.as_bytes());
        out.extend_from_slice(b"\r\n");
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if !http11 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");

        let mut decoder = Decoder::new(head.framing);
        let mut up = Some(up);
        let mut finish = Some(finish);
        let body_limit = worker.settings().upstream_timeout;
        while let Some(conn) = up.as_mut() {
            match decoder.decode(&mut conn.read) {
                Ok(Decoded::Data(data)) => {
                    self.push(&data, chunked);
                    if self.out.len() >= FLUSH_AT {
                        self.flush(worker).await.map_err(|_| End::Close)?;
                    }
                }
                Ok(Decoded::Done) => {
                    if let (Some(conn), Some(finish)) = (up.take(), finish.take())
                        && conn.reusable_after(head.keep_alive, &decoder)
                    {
                        finish.pool(conn);
                    }
                    if chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                // A broken body: the client's response is cut off, never completed short.
                Err(_) => return Err(End::Close),
                Ok(Decoded::More) => {
                    if !self.out.is_empty() {
                        self.flush(worker).await.map_err(|_| End::Close)?;
                    }
                    let Some(conn) = up.as_mut() else { break };
                    match conn.fill(body_limit).await {
                        Ok(0) => decoder.eof().map_err(|_| End::Close)?,
                        Ok(_) => {}
                        Err(_) => return Err(End::Close),
                    }
                }
            }
        }
        drop(finish);
        self.flush(worker).await.map_err(|_| End::Close)
    }

    /// Appends body `data` to the response, chunk-framed when `chunked`.
    fn push(&mut self, data: &Bytes, chunked: bool) {
        if chunked {
            let (size, at) = format_hex(data.len());
            self.out.extend_from_slice(&size[at..]);
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
    }

    /// After a 101 to an upgrade: the head goes to the client, then bytes flow both ways until
    /// either side closes (the request stays in flight until then). Early bytes of either side
    /// (read past the heads) go first.
    async fn tunnel(&mut self, worker: &Worker, mut up: Box<UpstreamConn>, finish: Finish) {
        let _finish = finish;
        // The 101's status line and fields (`Upgrade` kept) are in `out` already.
        let out = &mut self.out;
        out.extend_from_slice(b"connection: upgrade\r\nvia: ");
        out.extend_from_slice(VIA_11.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        let early = up.read.split().freeze();
        self.out.extend_from_slice(&early);
        if self.flush(worker).await.is_err() {
            return;
        }
        let upstream = up.stream_mut();
        if !self.buf.is_empty() && upstream.write_all(&self.buf).await.is_err() {
            return;
        }
        self.buf.clear();
        let _ = tokio::io::copy_bidirectional(&mut self.stream, upstream).await;
    }
}

/// Checks the chunked body bytes that came with the head (usually all of a small body, and all
/// of a smuggling attempt sent in one piece) before the head goes upstream, so that a malformed
/// chunk (a bad or overflowing size, an extension with a bare CR, a missing CRLF) is refused with
/// nothing forwarded. Chunks that arrive later are checked as they are forwarded; a bad one then
/// cuts the request off and its upstream connection is closed, never reused.
fn check_chunks(body: &[u8]) -> Result<(), RequestError> {
    if body.is_empty() {
        return Ok(());
    }
    let mut probe = BytesMut::from(body);
    let mut decoder = Decoder::new(Framing::Chunked);
    loop {
        match decoder.decode(&mut probe) {
            Ok(Decoded::Data(_)) => {}
            Ok(Decoded::Done | Decoded::More) => return Ok(()),
            Err(_) => return Err(RequestError::BadChunk),
        }
    }
}

/// Whether the request line at the front of `buf` says HTTP/1.0 (for the status line of a refusal
/// of a head that did not parse whole).
fn is_http10(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    line.strip_suffix(b"\r")
        .unwrap_or(line)
        .ends_with(b" HTTP/1.0")
}

/// The client's request body read from its connection: `Content-Length` bytes or chunks (the
/// proxy's [`Decoder`]: sizes checked for overflow, chunk lines and trailers bounded), data handed
/// on as slices of the connection's buffer, with `request_body_timeout` between reads and the
/// body limit.
pub(crate) struct RawBody<'a> {
    stream: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    deadline: &'a mut Deadline,
    decoder: Decoder,
    timeout: Duration,
    max: u64,
    seen: u64,
    /// The body was read to its end.
    done: bool,
}

impl BodySource for RawBody<'_> {
    async fn data(&mut self) -> Option<Result<Bytes, ClientBodyError>> {
        if self.done {
            return None;
        }
        let mut armed = false;
        poll_fn(|cx| {
            loop {
                match self.decoder.decode(self.buf) {
                    Ok(Decoded::Data(data)) => {
                        self.seen += data.len() as u64;
                        if self.seen > self.max {
                            return Poll::Ready(Some(Err(RequestError::BodyTooLarge.into())));
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Decoded::Done) => {
                        self.done = true;
                        return Poll::Ready(None);
                    }
                    Err(_) => return Poll::Ready(Some(Err(RequestError::BadChunk.into()))),
                    Ok(Decoded::More) => {}
                }
                match poll_fill(self.stream, self.buf, cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(ClientBodyError::Closed))),
                    Poll::Ready(Ok(_)) => armed = false,
                    Poll::Ready(Err(err)) => {
                        return Poll::Ready(Some(Err(ClientBodyError::Io(err))));
                    }
                    Poll::Pending => {
                        if !armed {
                            armed = true;
                            self.deadline.set(Instant::now() + self.timeout);
                        }
                        ready!(self.deadline.poll(cx));
                        return Poll::Ready(Some(Err(ClientBodyError::Timeout(self.timeout))));
                    }
                }
            }
        })
        .await
    }
}
