//! The bodies the proxy streams: [`ProxyBody`] downstream (the upstream's body frame by frame, or a
//! short body of the proxy's own) and [`ClientBody`] upstream (the client's request body with a
//! read timeout). Concrete types, not boxed trait objects, so no allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;

use tokio::time::{Instant, Sleep};

use super::worker::Finish;

/// A downstream response body.
#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Streams the upstream's body; `finish` runs when it ends (or is dropped): the in-flight count
    /// is released, the duration observed, and the upstream connection returned to the pool if
    /// the body was read to its end.
    Upstream {
        body: Incoming,
        finish: Option<Finish>,
    },
    /// A body the proxy made itself (errors) or none at all.
    Full(Option<Bytes>),
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

    /// The upstream's body, with what to do when it ends.
    pub(crate) fn upstream(body: Incoming, finish: Finish) -> ProxyBody {
        let mut body = ProxyBody {
            kind: Kind::Upstream {
                body,
                finish: Some(finish),
            },
        };
        body.finish_if_ended();
        body
    }

    /// Runs `finish` now if the upstream body has already ended (e.g. a response without body),
    /// so the connection goes back to the pool before the response is even written.
    fn finish_if_ended(&mut self) {
        if let Kind::Upstream { body, finish } = &mut self.kind
            && body.is_end_stream()
            && let Some(mut f) = finish.take()
        {
            f.complete();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, finish } => {
                // Polled again: the client took the frame handed out last.
                if let Some(f) = finish.as_mut() {
                    f.client_took();
                }
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    None => {
                        if let Some(mut f) = finish.take() {
                            f.complete();
                        }
                    }
                    Some(Ok(_)) if body.is_end_stream() => {
                        if let Some(mut f) = finish.take() {
                            f.complete();
                        }
                    }
                    Some(Err(_)) => drop(finish.take()),
                    Some(Ok(_)) => {
                        if let Some(f) = finish.as_mut() {
                            f.handed_to_client();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// Why a client's request body ended early; the proxy tells a timeout (408) from a broken stream.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No frame arrived for the request body timeout.
    #[error("request body sent nothing for {0:?}")]
    Timeout(Duration),
    /// Reading the body failed (the client closed or broke the stream).
    #[error("reading the request body failed: {0}")]
    Read(hyper::Error),
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
