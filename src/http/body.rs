//! The one body type responses and upstream requests carry. An enum rather than a box so that the common
//! relay path (a hyper `Incoming` passed straight through) costs no allocation per message.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::file::FileBody;
use crate::error::BoxError;
use crate::idle::{self, Stamp};

pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    /// A file's bytes: a client connection on a plain socket sends them with sendfile(2).
    File(Box<FileBody>),
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

    /// A file's bytes ([`FileBody`]); an empty one is [`Body::Empty`].
    pub fn file(f: FileBody) -> Body {
        if f.is_empty() { Body::Empty } else { Body::File(Box::new(f)) }
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
    /// error naming `what`. Also returns how the body is being read ([`Reading`]): when it has been read in full
    /// (or was abandoned), and whether its reader stopped asking for more. An empty body is returned as it is,
    /// with None.
    pub fn watched(self, idle: Duration, what: &'static str) -> (Body, Option<Reading>) {
        if http_body::Body::is_end_stream(&self) {
            return (self, None);
        }
        let (tx, rx) = oneshot::channel();
        let asked = Arc::new(Stamp::default());
        let watched = Watched { inner: self, ended: Some(tx), idle, timer: None, what, asked: Some(asked.clone()) };
        (Body::boxed(watched), Some(Reading { ended: rx, asked }))
    }

    /// Holds a request body back until `open` completes or `wait` has passed. hyper answers a client's
    /// `Expect: 100-continue` with its own `100 Continue` when the body is first read, so a body held back is a
    /// 100 not promised yet: the upstream's own 100 (or its silence for `wait`) decides (RFC 9110 §10.1.1).
    /// Wrap a [`Body::watched`] body in it: a watched body's idle time starts when it is first read.
    pub fn gated(self, open: oneshot::Receiver<()>, wait: Duration) -> Body {
        let gate = Gate { open: Some(open), timer: Box::pin(tokio::time::sleep(wait)) };
        Body::boxed(Gated { inner: self, gate: Some(gate) })
    }
}

/// How a [`Body::watched`] body is being read.
pub struct Reading {
    /// Completes when the body has been read in full (or was abandoned).
    pub ended: oneshot::Receiver<()>,
    /// When the reader last asked for more and got it; none before its first poll and while the body's source
    /// (the client) is the one to wait for.
    asked: Arc<Stamp>,
}

impl Reading {
    /// Completes once the reader has not asked for more of the body for `limit` although the source had given it
    /// everything so far: an upstream that stopped reading the request body. A source that is slow itself is
    /// [`Body::watched`]'s idle timeout, not this.
    pub fn stalled(&self, limit: Duration) -> impl Future<Output = ()> + Send + 'static {
        let mut timer = idle::Timer::shared(self.asked.clone(), limit);
        async move { timer.idle().await }
    }
}

/// [`Body::watched`] for a body of another type that is not at its end yet (an upstream response body that
/// returns its connection to the pool when it ends), boxed once together with the watch: the idle limit only, no
/// end signal (nobody waits for one).
pub fn watch<B>(inner: B, idle: Duration, what: &'static str) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Body::boxed(Watched { inner, ended: None, idle, timer: None, what, asked: None })
}

/// A body with an idle timeout and an end signal.
struct Watched<B> {
    inner: B,
    ended: Option<oneshot::Sender<()>>,
    idle: Duration,
    /// Started at the first poll: a body held back (see [`Body::gated`]) is not idle yet. A frame is activity.
    timer: Option<idle::Timer>,
    what: &'static str,
    /// For request bodies: when the upstream last took a frame (see [`Reading`]).
    asked: Option<Arc<Stamp>>,
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
        let idle = this.idle;
        let timer = this.timer.get_or_insert_with(|| idle::Timer::new(idle));
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(asked) = &this.asked {
            match r.is_pending() {
                true => asked.clear(),
                false => asked.touch(),
            }
        }
        match r {
            Poll::Ready(r) => {
                let r = r.map(|f| f.map_err(Into::into));
                timer.touch();
                if (r.is_none() || http_body::Body::is_end_stream(&this.inner))
                    && let Some(tx) = this.ended.take()
                {
                    let _ = tx.send(());
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                ready!(timer.poll_idle(cx));
                let msg = format!("{} stalled: nothing for {:?}", this.what, this.idle);
                Poll::Ready(Some(Err(msg.into())))
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

/// A body held back until its gate opens (see [`Body::gated`]).
struct Gated {
    inner: Body,
    gate: Option<Gate>,
}

struct Gate {
    /// None once its sender went away without a word (the final response came first): then only the timer
    /// opens the gate, by which time hyper no longer sends a 100 for the response already written.
    open: Option<oneshot::Receiver<()>>,
    timer: Pin<Box<Sleep>>,
}

impl Gate {
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(open) = &mut self.open {
            match Pin::new(open).poll(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(()),
                Poll::Ready(Err(_)) => self.open = None,
                Poll::Pending => {}
            }
        }
        self.timer.as_mut().poll(cx)
    }
}

impl http_body::Body for Gated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(gate) = &mut this.gate {
            ready!(gate.poll_open(cx));
            this.gate = None;
        }
        Pin::new(&mut this.inner).poll_frame(cx)
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
            Body::File(f) => Pin::new(&mut **f).poll_frame(cx).map_err(Into::into),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Incoming(i) => i.is_end_stream(),
            Body::File(f) => f.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(i) => i.size_hint(),
            Body::File(f) => f.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}
