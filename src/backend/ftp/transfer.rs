//! File transfers over a passive data connection: [`Download`] (RETR, RFC 959 §4.1.3) is an
//! `AsyncRead` that streams the file and only reports EOF after the server's 226/250 on the
//! control connection; [`Upload`] (STOR) is an `AsyncWrite` whose `finish` waits for it.
//! The session travels inside the transfer (its control connection is busy until the end);
//! a transfer dropped before its end leaves the session unusable, so a pool drops it.

use std::borrow::BorrowMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::client::FtpSession;
use super::{FtpError, check_path};
use crate::idle::Timer;

enum State {
    Streaming(TcpStream),
    /// Data EOF seen; waiting for the final reply.
    Finishing,
    Done,
    Failed,
}

/// A file being downloaded: read it like any `AsyncRead`. The bytes come straight from the
/// data connection (nothing is held beyond the caller's buffer). EOF is returned only once the
/// server confirmed the transfer with 226/250; a dropped data connection, a 426, a missing
/// reply, a stall longer than `data_idle_timeout` or a length other than
/// [`Download::with_expected_len`] is an `io::Error` carrying a
/// [`FtpError::TransferIncomplete`] (or `Timeout`, `Io`): see [`FtpError::from_io_owned`].
pub struct Download<S: BorrowMut<FtpSession>> {
    session: S,
    state: State,
    received: u64,
    expected: Option<u64>,
    /// RETR was answered with a completion reply at once (no 150): no further reply comes.
    final_seen: bool,
    /// A byte read is activity; then, after the data's end, the wait for the final reply.
    timer: Timer,
}

impl<S: BorrowMut<FtpSession>> Download<S> {
    /// Opens a data connection, sends `REST offset` (when non-zero) and `RETR path`, and
    /// waits for the server's 150/125. A 550 here is `NotFound`/`PermissionDenied` and leaves
    /// the session reusable.
    pub async fn start(mut session: S, path: &str, offset: u64) -> Result<Self, FtpError> {
        check_path(path)?;
        let s = session.borrow_mut();
        let data = s.open_data().await?;
        // REST right before RETR (RFC 3659 §5.3), after the passive command
        if offset > 0 {
            s.expect_reply("REST", &format!("REST {offset}"), &[350]).await?;
        }
        let reply = s.cmd(&format!("RETR {path}")).await?;
        let final_seen = match reply.class() {
            1 => false,
            2 => true,
            _ => return Err(FtpError::from_reply("RETR", &reply)),
        };
        let idle = s.settings.data_idle_timeout;
        Ok(Download {
            session,
            state: State::Streaming(data),
            received: 0,
            expected: None,
            final_seen,
            timer: Timer::new(idle),
        })
    }

    /// Declares how many bytes this download must yield (the SIZE minus the offset); fewer or
    /// more is an error even when the server says 226 (the HTTP side has sent that length as
    /// `Content-Length`).
    pub fn with_expected_len(mut self, len: u64) -> Self {
        self.expected = Some(len);
        self
    }

    fn fail(&mut self, e: FtpError) -> Poll<io::Result<()>> {
        self.session.borrow_mut().poisoned = true;
        self.state = State::Failed;
        Poll::Ready(Err(io::Error::other(e)))
    }
}

impl<S: BorrowMut<FtpSession> + Unpin> AsyncRead for Download<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            // reading into a full buffer yields nothing, and must not be taken for EOF
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut this.state {
                State::Streaming(data) => {
                    let before = buf.filled().len();
                    match Pin::new(data).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let n = (buf.filled().len() - before) as u64;
                            if n > 0 {
                                this.received += n;
                                if this.expected.is_some_and(|e| this.received > e) {
                                    buf.set_filled(before);
                                    return this.fail(FtpError::TransferIncomplete {
                                        received: this.received,
                                        reply: Some("more bytes than announced".into()),
                                    });
                                }
                                this.timer.touch();
                                return Poll::Ready(Ok(()));
                            }
                            if this.expected.is_some_and(|e| this.received != e) {
                                return this
                                    .fail(FtpError::TransferIncomplete { received: this.received, reply: None });
                            }
                            if this.final_seen {
                                this.state = State::Done;
                                return Poll::Ready(Ok(()));
                            }
                            this.state = State::Finishing;
                            let wait = this.session.borrow_mut().settings.reply_timeout;
                            this.timer = Timer::new(wait);
                        }
                        Poll::Ready(Err(source)) => {
                            return this.fail(FtpError::Io { during: "download", source });
                        }
                        Poll::Pending => {
                            if this.timer.poll_idle(cx).is_ready() {
                                return this.fail(FtpError::Timeout { during: "download" });
                            }
                            return Poll::Pending;
                        }
                    }
                }
                State::Finishing => {
                    let polled = this.session.borrow_mut().ctrl.poll_reply(cx);
                    return match polled {
                        Poll::Ready(Ok(reply)) if matches!(reply.code, 226 | 250) => {
                            this.state = State::Done;
                            Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Ok(reply)) => this
                            .fail(FtpError::TransferIncomplete { received: this.received, reply: Some(reply.text()) }),
                        Poll::Ready(Err(_)) => {
                            this.fail(FtpError::TransferIncomplete { received: this.received, reply: None })
                        }
                        Poll::Pending => {
                            if this.timer.poll_idle(cx).is_ready() {
                                return this.fail(FtpError::Timeout { during: "waiting for the end of a download" });
                            }
                            Poll::Pending
                        }
                    };
                }
                State::Done => return Poll::Ready(Ok(())),
                State::Failed => {
                    return Poll::Ready(Err(io::Error::other(FtpError::TransferIncomplete {
                        received: this.received,
                        reply: None,
                    })));
                }
            }
        }
    }
}

impl<S: BorrowMut<FtpSession>> Drop for Download<S> {
    fn drop(&mut self) {
        if !matches!(self.state, State::Done) {
            // the server may still be sending: the control connection's state is unknown
            self.session.borrow_mut().poisoned = true;
        }
    }
}

/// A file being uploaded: write its bytes (any `AsyncWrite` use), then [`Upload::finish`],
/// which closes the data connection (the end of file, RFC 959 §3.4 stream mode) and waits for
/// the server's 226/250. Dropped without `finish`, the server may keep a partial file.
pub struct Upload<S: BorrowMut<FtpSession>> {
    session: S,
    data: Option<TcpStream>,
    sent: u64,
    shut_down: bool,
    finished: bool,
    /// A byte written is activity.
    timer: Timer,
}

impl<S: BorrowMut<FtpSession>> Upload<S> {
    /// Opens a data connection and sends `STOR path`; waits for 150/125. A refusal (550, 553)
    /// is `PermissionDenied`/`NotFound` and leaves the session reusable.
    pub async fn start(mut session: S, path: &str) -> Result<Self, FtpError> {
        check_path(path)?;
        let s = session.borrow_mut();
        let data = s.open_data().await?;
        let reply = s.cmd(&format!("STOR {path}")).await?;
        if reply.class() != 1 {
            return Err(FtpError::from_reply("STOR", &reply));
        }
        let idle = s.settings.data_idle_timeout;
        Ok(Upload { session, data: Some(data), sent: 0, shut_down: false, finished: false, timer: Timer::new(idle) })
    }

    /// Ends the file and waits for the server's verdict: the byte count on 226/250.
    pub async fn finish(mut self) -> Result<u64, FtpError> {
        if let Some(mut data) = self.data.take().filter(|_| !self.shut_down) {
            match self.timer.guard(data.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(self.session.borrow_mut().poison(FtpError::Io { during: "ending an upload", source }));
                }
                Err(_) => {
                    return Err(self.session.borrow_mut().poison(FtpError::Timeout { during: "ending an upload" }));
                }
            }
        }
        let reply = self.session.borrow_mut().read_reply("upload").await?;
        self.finished = true;
        if matches!(reply.code, 226 | 250) { Ok(self.sent) } else { Err(FtpError::from_reply("STOR", &reply)) }
    }

    fn poll_data<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(data) = self.data.as_mut() else {
            return Poll::Ready(Err(io::Error::other(FtpError::Protocol { detail: "upload already finished".into() })));
        };
        match op(Pin::new(data), cx) {
            Poll::Ready(Ok(v)) => {
                self.timer.touch();
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(source)) => {
                let e = self.session.borrow_mut().poison(FtpError::Io { during: "upload", source });
                Poll::Ready(Err(io::Error::other(e)))
            }
            Poll::Pending => {
                if self.timer.poll_idle(cx).is_ready() {
                    let e = self.session.borrow_mut().poison(FtpError::Timeout { during: "upload" });
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: BorrowMut<FtpSession> + Unpin> AsyncWrite for Upload<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.poll_data(cx, |d, cx| d.poll_write(cx, buf));
        if let Poll::Ready(Ok(n)) = polled {
            this.sent += n as u64;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_data(cx, |d, cx| d.poll_flush(cx))
    }

    /// Half-closes the data connection; `finish` must still be called for the verdict.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = this.poll_data(cx, |d, cx| d.poll_shutdown(cx));
        if let Poll::Ready(Ok(())) = polled {
            this.shut_down = true;
        }
        polled
    }
}

impl<S: BorrowMut<FtpSession>> Drop for Upload<S> {
    fn drop(&mut self) {
        if !self.finished {
            self.session.borrow_mut().poisoned = true;
        }
    }
}
