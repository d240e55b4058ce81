//! The one body type responses and upstream requests carry. An enum rather than a box so that the common
//! relay path (a hyper `Incoming` passed straight through) costs no allocation per message.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

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
    /// Bounds a body that is still to be received with an idle timeout: no frame for `idle` ends it with an
    /// error naming `what`. Also returns a receiver that completes when the body has been read in full (or was
    /// abandoned). An empty body is returned as it is, with None.
    pub fn watched(self, idle: Duration, what: &'static str) -> (Body, Option<oneshot::Receiver<()>>) {
        if http_body::Body::is_end_stream(&self) {
            return (self, None);
        }
        watch(self, idle, what)
    }
}

/// [`Body::watched`] for a body of another type that is not at its end yet (an upstream response body that
/// returns its connection to the pool when it ends), boxed once together with the watch.
pub fn watch<B>(inner: B, idle: Duration, what: &'static str) -> (Body, Option<oneshot::Receiver<()>>)
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (tx, rx) = oneshot::channel();
    let watched = Watched { inner, ended: Some(tx), idle, last: Instant::now(), timer: None, what };
    (Body::boxed(watched), Some(rx))
}

/// A body with an idle timeout and an end signal. The timer is re-armed lazily: a frame only records its
/// time, and the timer, when it fires early, moves itself to the new deadline.
struct Watched<B> {
    inner: B,
    ended: Option<oneshot::Sender<()>>,
    idle: Duration,
    last: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    what: &'static str,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                let r = r.map(|f| f.map_err(Into::into));
                this.last = Instant::now();
                if (r.is_none() || http_body::Body::is_end_stream(&this.inner))
                    && let Some(tx) = this.ended.take()
                {
                    let _ = tx.send(());
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let due = this.last + this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let due = this.last + this.idle;
                    if Instant::now() >= due {
                        let msg = format!("{} stalled: nothing for {:?}", this.what, this.idle);
                        return Poll::Ready(Some(Err(msg.into())));
                    }
                    timer.as_mut().reset(due.into());
                }
            }
        }
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
