//! A file's bytes as a response body: the whole file, one range, or several ranges as multipart/byteranges
//! (RFC 9110 §14.6), read from the open file in `READ_CHUNK_BYTES` pieces as hyper asks for them, so memory stays
//! bounded by one piece whatever the file's size. A file that shrinks while it is sent ends the body with an
//! error (hyper cuts the response), never a short body passed off as complete.

use std::collections::VecDeque;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body::{Frame, SizeHint};

/// Bytes read from the file per body frame. Large pieces keep the per-frame cost (a read, a write through hyper)
/// small against the copy itself (docs/files.md: measured).
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

enum Segment {
    Bytes(Bytes),
    File { offset: u64, len: u64 },
}

pub(super) struct FileBody {
    file: File,
    segments: VecDeque<Segment>,
    left: u64,
}

impl FileBody {
    /// The whole file of `len` bytes.
    pub(super) fn whole(file: File, len: u64) -> FileBody {
        FileBody::range(file, 0..len)
    }

    /// One range of the file.
    pub(super) fn range(file: File, r: Range<u64>) -> FileBody {
        let len = r.end - r.start;
        let mut segments = VecDeque::new();
        if len > 0 {
            segments.push_back(Segment::File { offset: r.start, len });
        }
        FileBody { file, segments, left: len }
    }

    /// Several ranges of a file of `len` bytes as multipart/byteranges parts of type `media`: the body, its
    /// boundary and its length.
    pub(super) fn multipart(
        file: File,
        ranges: &[Range<u64>],
        len: u64,
        media: &HeaderValue,
    ) -> (FileBody, String, u64) {
        let boundary = format!("{:016x}{:016x}", random(), random());
        let media = String::from_utf8_lossy(media.as_bytes()).into_owned();
        let mut segments = VecDeque::new();
        let mut total = 0u64;
        for r in ranges {
            let part = format!(
                "\r\n--{boundary}\r\nContent-Type: {media}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
                r.start,
                r.end - 1
            );
            total += part.len() as u64 + (r.end - r.start);
            segments.push_back(Segment::Bytes(Bytes::from(part)));
            segments.push_back(Segment::File { offset: r.start, len: r.end - r.start });
        }
        let end = format!("\r\n--{boundary}--\r\n");
        total += end.len() as u64;
        segments.push_back(Segment::Bytes(Bytes::from(end)));
        (FileBody { file, segments, left: total }, boundary, total)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The next piece of the segment in front: pread(2) at its offset, straight into a new buffer.
    fn read(&mut self) -> std::io::Result<Bytes> {
        let Some(Segment::File { offset, len }) = self.segments.front_mut() else {
            return Ok(Bytes::new());
        };
        let want = (*len).min(READ_CHUNK_BYTES as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        let spare = buf.spare_capacity_mut();
        let at = libc::off_t::try_from(*offset).map_err(|_| std::io::Error::other("offset out of range"))?;
        // SAFETY: pread(2) writes at most `want` bytes into the spare capacity, which holds at least `want`;
        // the file descriptor is open for as long as `self.file` lives.
        let n = unsafe { libc::pread(self.file.as_raw_fd(), spare.as_mut_ptr().cast(), want, at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return Err(e);
        }
        let n = n as usize;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was sent"));
        }
        // SAFETY: pread(2) initialized the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(n) };
        *offset += n as u64;
        *len -= n as u64;
        if *len == 0 {
            self.segments.pop_front();
        }
        Ok(buf.freeze())
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let chunk = match this.segments.front() {
            None => return Poll::Ready(None),
            Some(Segment::Bytes(_)) => match this.segments.pop_front() {
                Some(Segment::Bytes(b)) => b,
                _ => Bytes::new(),
            },
            Some(Segment::File { .. }) => match this.read() {
                Ok(b) => b,
                Err(e) => {
                    this.segments.clear();
                    return Poll::Ready(Some(Err(e)));
                }
            },
        };
        this.left = this.left.saturating_sub(chunk.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.segments.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A random number for a multipart boundary: std's per-process random hasher keys, no generator of our own.
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    h.finish()
}
