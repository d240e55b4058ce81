//! A file's bytes as a response body: the whole file, one range, or several ranges as multipart/byteranges
//! (RFC 9110 §14.6), read from the open file in `READ_CHUNK_BYTES` pieces as hyper asks for them, so memory stays
//! bounded by one piece whatever the file's size; or, for a small file whose bytes the static room holds
//! ([`FileBody::from_held`]), slices of them, with no read at all. A file that shrinks while it is sent ends the
//! body with an error (the connection cuts the response), never a short body passed off as complete.

use std::collections::VecDeque;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
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

/// A file's bytes as a response body (see the module docs). A client connection on a plain socket sends its
/// large pieces with sendfile(2) and reads its small ones straight into its write queue ([`FileBody::file_part`],
/// [`FileBody::read_into`], [`FileBody::advance`]); anything else polls it as a body.
pub struct FileBody {
    /// Shared with the static room's directory note that keeps it open (reads take offsets: no shared position).
    file: Arc<File>,
    /// What goes out next; then `rest` in order (empty for a whole file or one range: no allocation).
    front: Option<Segment>,
    rest: VecDeque<Segment>,
    left: u64,
}

impl FileBody {
    /// The whole file of `len` bytes.
    pub fn whole(file: Arc<File>, len: u64) -> FileBody {
        FileBody::range(file, 0..len)
    }

    /// One range of the file.
    pub fn range(file: Arc<File>, r: Range<u64>) -> FileBody {
        let len = r.end - r.start;
        let front = (len > 0).then_some(Segment::File { offset: r.start, len });
        FileBody { file, front, rest: VecDeque::new(), left: len }
    }

    /// Several ranges of a file of `len` bytes as multipart/byteranges parts of type `media`: the body, its
    /// boundary and its length.
    pub fn multipart(file: Arc<File>, ranges: &[Range<u64>], len: u64, media: &HeaderValue) -> (FileBody, String, u64) {
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
        let front = segments.pop_front();
        (FileBody { file, front, rest: segments, left: total }, boundary, total)
    }

    /// The same parts, from `bytes`, the whole file as it was read and held (the static room's directory notes):
    /// every part is then a slice of them, and the file is not read (a client connection writes them from
    /// memory, a small body in the same write as the head). A part beyond `bytes` (not of this file) stays a
    /// part of the file.
    pub fn from_held(mut self, bytes: &Bytes) -> FileBody {
        let slice = |s: &mut Segment| {
            if let Segment::File { offset, len } = *s
                && let (Ok(from), Ok(len)) = (usize::try_from(offset), usize::try_from(len))
                && from.checked_add(len).is_some_and(|to| to <= bytes.len())
            {
                *s = Segment::Bytes(bytes.slice(from..from + len));
            }
        };
        self.front.iter_mut().chain(self.rest.iter_mut()).for_each(slice);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// The file, and the offset and length of the part of it that goes next; None when the next piece is no
    /// part of the file (a multipart boundary) or nothing is left.
    pub fn file_part(&self) -> Option<(&File, u64, u64)> {
        match self.front {
            Some(Segment::File { offset, len }) => Some((&self.file, offset, len)),
            _ => None,
        }
    }

    /// `n` bytes of the file part in front went out (sent from the file by the caller).
    pub fn advance(&mut self, n: u64) {
        if let Some(Segment::File { offset, len }) = &mut self.front {
            let n = n.min(*len);
            *offset += n;
            *len -= n;
            self.left -= n;
            if *len == 0 {
                self.front = self.rest.pop_front();
            }
        }
    }

    /// Reads up to `max` bytes of the file part in front, appended to `out`: pread(2) straight into its spare
    /// capacity. A file that ends before its part does is an error (it shrank while it was sent).
    pub fn read_into(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        let Some((_, offset, len)) = self.file_part() else { return Ok(0) };
        let want = len.min(max as u64) as usize;
        out.reserve(want);
        let spare = out.spare_capacity_mut();
        let n = pread(&self.file, spare, want, offset)?;
        // SAFETY: pread(2) initialized the first `n` bytes of the spare capacity.
        unsafe { out.set_len(out.len() + n) };
        self.advance(n as u64);
        Ok(n)
    }

    /// The next piece of the file part in front, in a new buffer.
    fn read(&mut self) -> std::io::Result<Bytes> {
        let Some((_, offset, len)) = self.file_part() else { return Ok(Bytes::new()) };
        let want = len.min(READ_CHUNK_BYTES as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        let n = pread(&self.file, buf.spare_capacity_mut(), want, offset)?;
        // SAFETY: pread(2) initialized the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(n) };
        self.advance(n as u64);
        Ok(buf.freeze())
    }
}

/// pread(2) of `want` bytes at `offset` into `spare` (which holds at least `want`); at least one byte, or an
/// error: the end of the file before the part does means it shrank.
fn pread(file: &File, spare: &mut [std::mem::MaybeUninit<u8>], want: usize, offset: u64) -> std::io::Result<usize> {
    let at = libc::off_t::try_from(offset).map_err(|_| std::io::Error::other("offset out of range"))?;
    let want = want.min(spare.len());
    // SAFETY: pread(2) writes at most `want` bytes into `spare`, which holds at least `want`; the descriptor is
    // open for as long as `file` lives.
    let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, at) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 && want > 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was sent"));
    }
    Ok(n as usize)
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let chunk = match &this.front {
            None => return Poll::Ready(None),
            Some(Segment::Bytes(_)) => match this.front.take() {
                Some(Segment::Bytes(b)) => {
                    this.front = this.rest.pop_front();
                    this.left = this.left.saturating_sub(b.len() as u64);
                    b
                }
                _ => Bytes::new(),
            },
            Some(Segment::File { .. }) => match this.read() {
                Ok(b) => b,
                Err(e) => {
                    this.front = None;
                    this.rest.clear();
                    return Poll::Ready(Some(Err(e)));
                }
            },
        };
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.front.is_none()
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
