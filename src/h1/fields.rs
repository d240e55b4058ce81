//! What the request and the response head parsers share: the field array httparse fills (on the stack up to
//! hyper's default count), where each field lies in the head, a field made from its bytes without a copy, the
//! `Connection` rule, and the small readers of field values (a token list, the last transfer coding, a length).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use super::HeadError;

/// Header fields parsed on the stack up to this many (hyper's default `max_headers`); more go to the heap.
pub const STACK_HEADERS: usize = 100;

/// Runs `$scan($buf, fields)` with an array of `$max` uninitialized httparse fields: on the stack up to
/// [`STACK_HEADERS`], else on the heap. (A macro: the fields borrow from the buffer, a lifetime no closure can be
/// generic over.)
macro_rules! scan_with_fields {
    ($scan:expr, $buf:expr, $max:expr) => {{
        let max: usize = $max;
        if max <= $crate::h1::fields::STACK_HEADERS {
            let mut fields =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; $crate::h1::fields::STACK_HEADERS];
            $scan($buf, &mut fields[..max])
        } else {
            let mut fields = Vec::with_capacity(max);
            fields.resize_with(max, std::mem::MaybeUninit::uninit);
            $scan($buf, &mut fields)
        }
    }};
}
pub(crate) use scan_with_fields;

/// Where a field's name and value lie in the head.
#[derive(Clone, Copy)]
pub struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// The positions of httparse's fields in `bytes` (the buffer they were parsed from). A name of 64 KiB or more is
/// `TooLarge`, as hyper has it.
pub fn spans(bytes: &[u8], fields: &[httparse::Header<'_>]) -> Result<Vec<Span>, HeadError> {
    let base = bytes.as_ptr() as usize;
    fields
        .iter()
        .map(|h| {
            if h.name.len() >= 1 << 16 {
                return Err(HeadError::TooLarge);
            }
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            Ok(Span { name: (name, name + h.name.len()), value: (value, value + h.value.len()) })
        })
        .collect()
}

/// The field at `span` of `head`: its value a slice of the head (no copy). httparse has checked the value's bytes
/// already (HTAB, SP, VCHAR, obs-text); DEL, the one byte `HeaderValue` refuses beyond those, is looked for here
/// too (a vectorised search) instead of `HeaderValue` checking every byte again.
pub fn field(head: &Bytes, span: Span) -> Result<(HeaderName, HeaderValue), HeadError> {
    let name = &head[span.name.0..span.name.1];
    let name = match common_name(name) {
        Some(n) => n.clone(),
        None => HeaderName::from_bytes(name).map_err(|_| HeadError::Malformed("invalid header field name"))?,
    };
    let value = &head[span.value.0..span.value.1];
    if value.contains(&0x7f) {
        return Err(HeadError::Malformed("invalid header field value"));
    }
    // SAFETY: `from_maybe_shared_unchecked` needs bytes `HeaderValue` accepts (HTAB, SP..=0x7e, obs-text):
    // httparse accepted no other bytes in a value, and DEL is refused just above.
    let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(span.value.0..span.value.1)) };
    Ok((name, value))
}

/// The standard field names heads carry most, by length, each with its lowercase bytes: [`common_name`] finds
/// them without http's general parser (a lowercased copy, then a match), the larger part of making a field.
static COMMON_NAMES: [&[(&[u8], HeaderName)]; 18] = {
    use http::header::*;
    const NONE: &[(&[u8], HeaderName)] = &[];
    [
        NONE,
        NONE,
        NONE,
        &[(b"via", VIA), (b"age", AGE)],
        &[(b"host", HOST), (b"date", DATE), (b"etag", ETAG), (b"vary", VARY)],
        &[(b"range", RANGE)],
        &[(b"accept", ACCEPT), (b"server", SERVER), (b"cookie", COOKIE), (b"origin", ORIGIN), (b"expect", EXPECT)],
        &[(b"referer", REFERER), (b"expires", EXPIRES), (b"upgrade", UPGRADE)],
        &[(b"location", LOCATION), (b"if-match", IF_MATCH), (b"if-range", IF_RANGE)],
        NONE,
        &[(b"connection", CONNECTION), (b"user-agent", USER_AGENT), (b"set-cookie", SET_COOKIE)],
        NONE,
        &[(b"content-type", CONTENT_TYPE)],
        &[
            (b"last-modified", LAST_MODIFIED),
            (b"accept-ranges", ACCEPT_RANGES),
            (b"cache-control", CACHE_CONTROL),
            (b"authorization", AUTHORIZATION),
            (b"if-none-match", IF_NONE_MATCH),
            (b"content-range", CONTENT_RANGE),
        ],
        &[(b"content-length", CONTENT_LENGTH)],
        &[(b"accept-encoding", ACCEPT_ENCODING), (b"accept-language", ACCEPT_LANGUAGE)],
        &[(b"content-encoding", CONTENT_ENCODING)],
        &[(b"transfer-encoding", TRANSFER_ENCODING), (b"if-modified-since", IF_MODIFIED_SINCE)],
    ]
};

/// One of [`COMMON_NAMES`], whatever the case `name` is written in. `name` is a field name httparse accepted (a
/// token), so folding with `| 0x20` is exact here: it maps an upper-case letter to its lower case, and of the
/// bytes that fold onto `-` or a digit (CR, controls) none is a token character.
pub fn common_name(name: &[u8]) -> Option<&'static HeaderName> {
    let list = COMMON_NAMES.get(name.len())?;
    list.iter().find(|(lower, _)| lower.iter().zip(name).all(|(l, b)| *l == b | 0x20)).map(|(_, n)| n)
}

/// Whether a message lets its connection be kept, field by field (hyper's rule): HTTP/1.1 unless a `Connection`
/// field says `close` (a later `keep-alive` does not undo it); HTTP/1.0 only with `keep-alive`.
pub struct KeepAlive {
    pub keep: bool,
    saw_close: bool,
}

impl KeepAlive {
    pub fn new(http11: bool) -> KeepAlive {
        KeepAlive { keep: http11, saw_close: false }
    }

    /// One `Connection` field.
    pub fn connection(&mut self, value: &HeaderValue) {
        if self.saw_close || has_token(value, "close") {
            self.saw_close = true;
            self.keep = false;
        } else if !self.keep {
            self.keep = has_token(value, "keep-alive");
        }
    }
}

/// Whether the last coding a `Transfer-Encoding` value lists is `chunked`.
pub fn last_coding_is_chunked(value: &HeaderValue) -> bool {
    value.to_str().ok().and_then(|s| s.rsplit(',').next()).is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// Whether a comma-separated field value lists `token` (case-insensitive).
pub fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|s| s.split(',').any(|v| v.trim().eq_ignore_ascii_case(token)))
}

/// A decimal length: digits only, no sign, no overflow.
pub fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9110 §5.6.2's token characters: what httparse lets into a field name.
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    #[test]
    fn common_names_are_what_http_parses_them_to() {
        for list in &COMMON_NAMES {
            for (lower, name) in list.iter() {
                assert_eq!(name.as_str().as_bytes(), *lower, "the table's bytes are its name's");
                let upper = lower.to_ascii_uppercase();
                let mut mixed = lower.to_vec();
                mixed[0] = mixed[0].to_ascii_uppercase();
                for spelled in [lower.to_vec(), upper, mixed] {
                    assert_eq!(common_name(&spelled), Some(name), "{:?}", String::from_utf8_lossy(&spelled));
                }
                // Every token character in every place: found exactly when http's parser makes the same name.
                for at in 0..lower.len() {
                    for &c in TCHAR {
                        let mut other = lower.to_vec();
                        other[at] = c;
                        let http = HeaderName::from_bytes(&other).unwrap();
                        match common_name(&other) {
                            Some(found) => assert_eq!(*found, http, "{:?}", String::from_utf8_lossy(&other)),
                            None => assert_ne!(http, *name, "{:?}", String::from_utf8_lossy(&other)),
                        }
                    }
                }
            }
        }
        assert_eq!(common_name(b"x-custom"), None);
        assert_eq!(common_name(b""), None);
        assert_eq!(common_name(&[b'a'; 100]), None);
    }
}
