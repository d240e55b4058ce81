//! The one body type responses and upstream requests carry. An enum rather than a box so that the common
//! relay path (a hyper `Incoming` passed straight through) costs no allocation per message.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::error::BoxError;

pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    Boxed(BoxBody<Bytes, BoxError>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Empty
    }

    pub fn full(b: impl Into<Bytes>) -> Body {
        let b = b.into();
        if b.is_empty() { Body::Empty } else { Body::Full(Some(b)) }
    }

    /// Any other body (a stream from a gateway, say), boxed.
    pub fn boxed<B>(b: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed(b.map_err(Into::into).boxed())
    }
}

impl Body {
    /// For a body that is still to be sent: the same body, boxed, and a receiver that completes when it has
    /// been sent in full (or was abandoned). An empty body gives None: it is sent with the head.
    pub fn signal_end(self) -> (Body, Option<oneshot::Receiver<()>>) {
        if http_body::Body::is_end_stream(&self) {
            return (self, None);
        }
        let (tx, rx) = oneshot::channel();
        (Body::boxed(EndSignal { inner: self, tx: Some(tx) }), Some(rx))
    }
}

/// Sends on `tx` when the inner body ends; dropping it (abandoned) closes the channel, which also wakes the
/// receiver.
struct EndSignal {
    inner: Body,
    tx: Option<oneshot::Sender<()>>,
}

impl http_body::Body for EndSignal {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || http_body::Body::is_end_stream(&self.inner) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(());
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl From<Incoming> for Body {
    fn from(i: Incoming) -> Body {
        Body::Incoming(i)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(i) => Pin::new(i).poll_frame(cx).map_err(Into::into),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Incoming(i) => i.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(i) => i.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}
