//! The bodies the proxy streams: [`ProxyBody`] downstream (the upstream's body frame by frame, cut
//! out of the upstream connection's read buffer, or a short body of the proxy's own) and
//! [`ClientBody`] upstream (the client's request body with a read timeout). Concrete types, not
//! boxed trait objects, so no allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::future::Future;

use tokio::time::{Instant, Sleep};

use super::client::UpstreamConn;
use super::error::UpstreamError;
use super::framing::{Decoded, Decoder};
use super::request::RequestError;
use super::worker::Finish;

/// A downstream response body.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Streams the upstream's body from its connection.
    Upstream(Streaming),
    /// A body the proxy made itself (errors) or none at all.
    Full(Option<Bytes>),
}

/// An upstream body on its way: `finish` runs when it ends (or is dropped): the in-flight count
/// is released, the duration observed, and the connection returned to the pool if it can carry
/// another request.
#[derive(Debug)]
struct Streaming {
    conn: Option<Box<UpstreamConn>>,
    decoder: Decoder,
    keep_alive: bool,
    finish: Option<Finish>,
}

impl Streaming {
    /// The body was read to its end: the connection goes to the pool if it may, and the request
    /// finishes.
    fn complete(&mut self) {
        if let (Some(c), Some(f)) = (self.conn.take(), self.finish.take())
            && c.reusable_after(self.keep_alive, &self.decoder)
        {
            f.pool(c);
        }
    }

    /// Whether the body has ended, consuming whatever framing of its end is already buffered.
    fn settled(&mut self) -> bool {
        match self.conn.as_mut() {
            Some(c) => self.decoder.settle(&mut c.read).is_ok() && self.decoder.is_done(),
            None => true,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        // Polled again: the client took the frame handed out last.
        if let Some(f) = self.finish.as_mut() {
            f.client_took();
        }
        loop {
            let Some(c) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let failed = match self.decoder.decode(&mut c.read) {
                Ok(Decoded::Data(data)) => {
                    if self.settled() {
                        self.complete();
                    } else if let Some(f) = self.finish.as_mut() {
                        f.handed_to_client();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    self.complete();
                    return Poll::Ready(None);
                }
                Err(err) => UpstreamError::Framing(err),
                Ok(Decoded::More) => match ready!(c.poll_fill(cx)) {
                    Ok(0) => match self.decoder.eof() {
                        Ok(()) => {
                            self.complete();
                            return Poll::Ready(None);
                        }
                        Err(err) => UpstreamError::Framing(err),
                    },
                    Ok(_) => continue,
                    Err(err) => UpstreamError::Io(err),
                },
            };
            // The connection is closed and the request finishes unpooled.
            self.conn = None;
            self.finish = None;
            return Poll::Ready(Some(Err(failed)));
        }
    }
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// No body.
    pub fn empty() -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(None),
        }
    }

    /// The body of a response whose head came on `conn` (HTTP/1.1 keep-alive when `keep_alive`),
    /// delimited as `decoder` says, with what to do when it ends. A body that has already ended
    /// (none, or all of it in the buffer) finishes at once, so the connection goes back to the
    /// pool before the response is even written.
    pub(crate) fn upstream(
        conn: Box<UpstreamConn>,
        decoder: Decoder,
        keep_alive: bool,
        finish: Finish,
    ) -> ProxyBody {
        let mut streaming = Streaming {
            conn: Some(conn),
            decoder,
            keep_alive,
            finish: Some(finish),
        };
        if streaming.settled() {
            streaming.complete();
        }
        ProxyBody {
            kind: Kind::Upstream(streaming),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(streaming) => streaming.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(s) => s.conn.is_none() || s.decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(s) => s
                .decoder
                .exact_remaining()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

/// Why a client's request body ended early; the proxy tells a timeout (408) and a refused body
/// (400, 413) from a broken stream.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No frame arrived for the request body timeout.
    #[error("request body sent nothing for {0:?}")]
    Timeout(Duration),
    /// Reading the body failed (the client closed or broke the stream; HTTP/2).
    #[error("reading the request body failed: {0}")]
    Read(hyper::Error),
    /// Reading the body failed (HTTP/1, the proxy's own server).
    #[error("reading the request body failed: {0}")]
    Io(std::io::Error),
    /// The client closed its connection before the body's end.
    #[error("the client closed before the end of the request body")]
    Closed,
    /// A malformed chunk, or more than the body limit.
    #[error(transparent)]
    Refused(#[from] RequestError),
}

/// A request body on its way upstream, piece by piece (hyper's for HTTP/2, the proxy's own
/// [`super::h1`] for HTTP/1).
pub(crate) trait BodySource {
    /// The next piece of data (never empty); `None` at the body's end.
    async fn data(&mut self) -> Option<Result<Bytes, ClientBodyError>>;
}

impl BodySource for ClientBody {
    async fn data(&mut self) -> Option<Result<Bytes, ClientBodyError>> {
        loop {
            match self.frame().await? {
                Err(err) => return Some(Err(err)),
                Ok(frame) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }
}

/// The client's request body on its way upstream, with a timeout between frames. The timer is
/// made only when the body first has to wait (one allocation for a request whose body is not all
/// there at once), and reset from then on.
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl ClientBody {
    /// `body`, failing with [`ClientBodyError::Timeout`] when it sends nothing for `timeout`.
    pub fn new(body: Incoming, timeout: Duration) -> ClientBody {
        ClientBody {
            body,
            timeout,
            timer: None,
            armed: false,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::Read)));
        }
        // The clock is read when the wait starts, not on every poll while it lasts.
        if !this.armed
            && let Some(timer) = this.timer.as_mut()
        {
            timer.as_mut().reset(Instant::now() + this.timeout);
        }
        let timeout = this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        this.armed = true;
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(ClientBodyError::Timeout(this.timeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
