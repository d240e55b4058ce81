//! A [`Download`] as an HTTP response body: chunks as they arrive from the data connection, nothing held
//! beyond one read buffer. A failed transfer is an error frame, never an early end: hyper then cuts the
//! response (no final chunk, or fewer bytes than Content-Length and a closed connection), so a truncated
//! file is never passed off as complete.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

use super::{Download, PooledSession};

/// Bytes read from the data connection per allocation.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Below this much room left in the buffer, a fresh one is allocated.
const MIN_READ_BYTES: usize = 16 * 1024;

pub struct DownloadBody {
    /// `None` once the transfer ended (its session is then back in the pool) or failed.
    download: Option<Download<PooledSession>>,
    buf: BytesMut,
    /// Bytes still to come, when the size is known.
    remaining: Option<u64>,
    /// The last chunk of a known-length file, held back until the server confirmed the transfer: hyper stops
    /// polling a body once Content-Length bytes are written, so the 226 must come before the last byte.
    held: Option<Bytes>,
}

impl DownloadBody {
    pub fn new(download: Download<PooledSession>, len: Option<u64>) -> DownloadBody {
        DownloadBody { download: Some(download), buf: BytesMut::new(), remaining: len, held: None }
    }
}

impl http_body::Body for DownloadBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        // bounded: a turn that does not return holds the last chunk; the next read is EOF or an error
        // (Download refuses bytes beyond the expected length)
        loop {
            let Some(download) = this.download.as_mut() else {
                return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
            };
            if this.buf.len() < MIN_READ_BYTES {
                this.buf = BytesMut::zeroed(READ_CHUNK_BYTES);
            }
            let mut rb = ReadBuf::new(&mut this.buf[..]);
            match Pin::new(download).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    // dropping the download marks its session unusable: it is not pooled
                    this.download = None;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // EOF after the server's 226: the session goes back to the pool
                        this.download = None;
                        return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
                    }
                    let chunk = this.buf.split_to(n).freeze();
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(n as u64);
                        if *r == 0 {
                            this.held = Some(chunk);
                            continue;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.download.is_none() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() { SizeHint::with_exact(0) } else { SizeHint::default() }
    }
}
