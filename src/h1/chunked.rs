//! The chunked transfer coding (RFC 9112 §7.1), decoded from a buffer as bytes arrive: a state machine that takes
//! what it can off the buffer and hands out data as slices of it (no copy). Its rules are hyper 1.12's: hex sizes
//! without overflow, whitespace after a size, extensions skipped (at most 16 KiB of them per body, no bare LF),
//! CRLF after every chunk, trailers up to 16 KiB and the connection's field count.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The most chunk-extension bytes one body may carry (hyper's limit).
pub const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// The largest trailer section (hyper's limit).
pub const TRAILER_LIMIT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// What one call of [`Decoder::decode`] found.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Chunk data (part of a chunk, perhaps).
    Data(Bytes),
    /// The last chunk and its trailers: the body is complete.
    End(Option<HeaderMap>),
    /// The buffer is used up: read more and call again.
    NeedMore,
}

/// A malformed chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    size: u64,
    extensions: u64,
    trailers: Option<BytesMut>,
    trailer_fields: usize,
    max_fields: usize,
}

impl Decoder {
    /// A decoder for one body; trailers may have at most `max_fields` fields.
    pub fn new(max_fields: usize) -> Decoder {
        Decoder { state: State::Start, size: 0, extensions: 0, trailers: None, trailer_fields: 0, max_fields }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// Takes what it can off `buf`: the next piece of data, the end, or NeedMore once `buf` is used up.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            if self.state == State::End {
                return Ok(Decoded::End(None));
            }
            if self.state == State::Body {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(self.size).unwrap_or(usize::MAX).min(buf.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::BodyCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.first() else { return Ok(Decoded::NeedMore) };
            buf.advance(1);
            self.state = self.step(b)?;
            if self.state == State::End {
                let trailers = match self.trailers.take() {
                    Some(t) => Some(decode_trailers(&t, self.trailer_fields)?),
                    None => None,
                };
                return Ok(Decoded::End(trailers));
            }
        }
    }

    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        use State::*;
        Ok(match self.state {
            Start => {
                self.push_digit(b).ok_or(ChunkError("missing size digit"))??;
                Size
            }
            Size => match b {
                b'\t' | b' ' => SizeLws,
                b';' => Extension,
                b'\r' => SizeLf,
                _ => {
                    self.push_digit(b).ok_or(ChunkError("invalid size"))??;
                    Size
                }
            },
            SizeLws => match b {
                b'\t' | b' ' => SizeLws,
                b';' => Extension,
                b'\r' => SizeLf,
                _ => return Err(ChunkError("invalid whitespace after the size")),
            },
            Extension => match b {
                b'\r' => SizeLf,
                b'\n' => return Err(ChunkError("chunk extension contains a newline")),
                _ => {
                    self.extensions += 1;
                    if self.extensions >= EXTENSIONS_LIMIT {
                        return Err(ChunkError("chunk extensions over the limit"));
                    }
                    Extension
                }
            },
            SizeLf => match b {
                b'\n' if self.size == 0 => EndCr,
                b'\n' => Body,
                _ => return Err(ChunkError("no LF after the size")),
            },
            BodyCr => match b {
                b'\r' => BodyLf,
                _ => return Err(ChunkError("no CR after the chunk")),
            },
            BodyLf => match b {
                b'\n' => {
                    self.size = 0;
                    Start
                }
                _ => return Err(ChunkError("no LF after the chunk")),
            },
            Trailer => {
                self.push_trailer(b)?;
                if b == b'\r' { TrailerLf } else { Trailer }
            }
            TrailerLf => match b {
                b'\n' => {
                    if self.trailer_fields >= self.max_fields {
                        return Err(ChunkError("too many trailer fields"));
                    }
                    self.trailer_fields += 1;
                    self.push_trailer(b)?;
                    EndCr
                }
                _ => return Err(ChunkError("no LF after a trailer field")),
            },
            EndCr => match b {
                b'\r' => {
                    if self.trailers.is_some() {
                        self.push_trailer(b)?;
                    }
                    EndLf
                }
                _ => {
                    if self.trailers.is_none() {
                        self.trailers = Some(BytesMut::with_capacity(64));
                    }
                    self.push_trailer(b)?;
                    Trailer
                }
            },
            EndLf => match b {
                b'\n' => {
                    if self.trailers.is_some() {
                        self.push_trailer(b)?;
                    }
                    End
                }
                _ => return Err(ChunkError("no LF after the last chunk")),
            },
            Body | End => unreachable!("handled by decode"),
        })
    }

    /// Adds a hex digit to the size; None when `b` is no hex digit.
    fn push_digit(&mut self, b: u8) -> Option<Result<(), ChunkError>> {
        let d = (b as char).to_digit(16)?;
        Some(
            self.size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(d)))
                .map(|s| self.size = s)
                .ok_or(ChunkError("chunk size overflows")),
        )
    }

    fn push_trailer(&mut self, b: u8) -> Result<(), ChunkError> {
        let t = self.trailers.get_or_insert_with(|| BytesMut::with_capacity(64));
        if t.len() >= TRAILER_LIMIT {
            return Err(ChunkError("trailers over the limit"));
        }
        t.extend_from_slice(&[b]);
        Ok(())
    }
}

fn decode_trailers(buf: &[u8], count: usize) -> Result<HeaderMap, ChunkError> {
    let mut fields = vec![httparse::EMPTY_HEADER; count];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ChunkError("invalid trailer name"))?;
                let value = HeaderValue::from_bytes(f.value).map_err(|_| ChunkError("invalid trailer value"))?;
                map.append(name, value);
            }
            Ok(map)
        }
        Ok(httparse::Status::Partial) => Err(ChunkError("incomplete trailers")),
        Err(_) => Err(ChunkError("invalid trailers")),
    }
}

/// Writes one chunk's size line into `dst` (the data and its CRLF follow it).
pub fn size_line(dst: &mut Vec<u8>, len: usize) {
    let mut hex = [0u8; 16];
    let mut n = len;
    let mut i = hex.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789ABCDEF"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&hex[i..]);
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes: the data, the trailers, or the error.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut pieces = input.chunks(step.max(1));
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::End(t) => return Ok((data, t)),
                Decoded::NeedMore => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err(ChunkError("incomplete")),
                },
            }
        }
    }

    #[test]
    fn bodies_in_any_pieces() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(decode(body, step).unwrap(), (b"hello, world".to_vec(), None), "step {step}");
        }
    }

    #[test]
    fn trailers() {
        let (data, t) = decode(b"3\r\nabc\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n", 4).unwrap();
        assert_eq!(data, b"abc");
        let t = t.unwrap();
        assert_eq!(t["x-a"], "1");
        assert_eq!(t["x-b"], "2");
    }

    #[test]
    fn malformed() {
        assert!(decode(b"x\r\n", 10).is_err());
        assert!(decode(b"5\r\nhelloX\r\n0\r\n\r\n", 10).is_err());
        assert!(decode(b"5;a\nb\r\nhello\r\n0\r\n\r\n", 10).is_err());
        assert!(decode(b"1 2\r\nx\r\n0\r\n\r\n", 10).is_err());
        assert!(decode(b"FFFFFFFFFFFFFFFFF\r\n", 10).is_err(), "overflow");
        assert!(decode(b"0\r\n\r\r", 10).is_err());
        assert!(decode(b"5 \t \r\nhello\r\n0\r\n\r\n", 10).is_ok(), "whitespace after the size");
    }

    #[test]
    fn size_lines() {
        let mut v = Vec::new();
        size_line(&mut v, 0);
        size_line(&mut v, 255);
        size_line(&mut v, 65536);
        assert_eq!(v, b"0\r\nFF\r\n10000\r\n");
    }
}
