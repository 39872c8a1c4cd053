//! The response body the proxy sends downstream: the upstream's body streamed frame by frame, or a
//! short body of the proxy's own. A concrete enum, not a boxed trait object, so no allocation.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
                    Some(Ok(_)) => {}
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
