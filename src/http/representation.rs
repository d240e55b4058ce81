//! What a server that owns a representation (a file, an FTP download) decides from the request's validators and
//! ranges: RFC 9110 §13 (conditional requests) and §14 (range requests), and the media type of a file name.
//! Pure functions over header fields; the rooms (`files`, the FTP gateway) write the responses.
//!
//! Does not: weak ETags of its own (every ETag hopgate makes is strong), `Range` units other than `bytes`, or
//! ranges on methods other than GET (RFC 9110 §14.2: a server ignores them).

use std::ops::Range;
use std::time::SystemTime;

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use httpdate::HttpDate;

/// More ranges than this in one `Range` field are ignored (the whole representation, 200): RFC 9110 §14.2 lets a
/// server ignore a request for many small ranges, which costs far more to answer than to ask for.
pub const MAX_RANGES: usize = 64;

/// The validators of one selected representation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators<'a> {
    /// A strong entity tag, quoted (`"5f3a-1c"`).
    pub etag: Option<&'a str>,
    pub modified: Option<SystemTime>,
}

/// What RFC 9110 §13.2.2's evaluation of the preconditions says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on with the request.
    Proceed,
    /// 304 Not Modified (GET and HEAD).
    NotModified,
    /// 412 Precondition Failed: the detail names the field.
    Failed(&'static str),
}

/// Evaluates the preconditions of a request on an existing representation in RFC 9110 §13.2.2's order:
/// If-Match, else If-Unmodified-Since (412); If-None-Match, else (GET/HEAD) If-Modified-Since (304, or 412 for
/// other methods' If-None-Match).
pub fn evaluate(method: &Method, headers: &HeaderMap, v: &Validators<'_>) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if let Some(list) = field(headers, &header::IF_MATCH) {
        // §13.1.1: strong comparison; `*` matches any current representation.
        if !etag_list_matches(list, v.etag, true) {
            return Precondition::Failed("If-Match");
        }
    } else if let (Some(date), Some(modified)) = (date_field(headers, &header::IF_UNMODIFIED_SINCE), v.modified)
        && HttpDate::from(modified) > date
    {
        return Precondition::Failed("If-Unmodified-Since");
    }
    if let Some(list) = field(headers, &header::IF_NONE_MATCH) {
        // §13.1.2: weak comparison.
        if etag_list_matches(list, v.etag, false) {
            return if get_or_head { Precondition::NotModified } else { Precondition::Failed("If-None-Match") };
        }
    } else if get_or_head
        && let (Some(date), Some(modified)) = (date_field(headers, &header::IF_MODIFIED_SINCE), v.modified)
        && HttpDate::from(modified) <= date
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// What a `Range` field asks of a representation of `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No range to serve: the whole representation (no `Range`, not GET, an `If-Range` that does not hold, a
    /// field that does not parse, too many or overlapping ranges).
    Whole,
    /// The satisfiable ranges, in the order asked, each a non-empty byte range within `len`.
    Some(Vec<Range<u64>>),
    /// 416: no range overlaps the representation.
    Unsatisfiable,
}

/// RFC 9110 §14.2 with §13.1.5 (If-Range): what `Range` asks of a representation of `len` bytes.
pub fn ranges(method: &Method, headers: &HeaderMap, v: &Validators<'_>, len: u64) -> Ranges {
    if method != Method::GET {
        return Ranges::Whole;
    }
    let Some(value) = field(headers, &header::RANGE) else { return Ranges::Whole };
    if !if_range_holds(headers, v) {
        return Ranges::Whole;
    }
    let Some(specs) = parse_range(value) else { return Ranges::Whole };
    if specs.len() > MAX_RANGES {
        return Ranges::Whole;
    }
    let mut out: Vec<Range<u64>> = Vec::new();
    for spec in specs {
        let r = match spec {
            Spec::From(first, last) if first < len => first..last.map_or(len, |l| l.saturating_add(1).min(len)),
            Spec::From(..) => continue,
            Spec::Suffix(0) => continue,
            Spec::Suffix(n) => len.saturating_sub(n)..len,
        };
        if !r.is_empty() {
            out.push(r);
        }
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    // Overlapping ranges (`0-,0-,0-`) multiply the work of one request: the whole representation instead.
    let mut sorted = out.clone();
    sorted.sort_by_key(|r| r.start);
    if sorted.windows(2).any(|w| w[1].start < w[0].end) {
        return Ranges::Whole;
    }
    Ranges::Some(out)
}

/// One `range-spec` of RFC 9110 §14.1.1: `first-last`, `first-` (last None) or `-suffix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    From(u64, Option<u64>),
    Suffix(u64),
}

/// `bytes=` and a comma-separated list of range-specs (OWS allowed around commas); None when anything is
/// invalid, so that the field is ignored as RFC 9110 §14.2 allows.
fn parse_range(value: &str) -> Option<Vec<Spec>> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let number = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok())?;
    let mut out = Vec::new();
    for spec in set.split(',').map(str::trim) {
        // §14.1.1: empty list elements are allowed and ignored.
        if spec.is_empty() {
            continue;
        }
        let (first, last) = spec.split_once('-')?;
        out.push(match (first, last) {
            ("", n) => Spec::Suffix(number(n)?),
            (f, "") => Spec::From(number(f)?, None),
            (f, l) => {
                let (f, l) = (number(f)?, number(l)?);
                if l < f {
                    return None;
                }
                Spec::From(f, Some(l))
            }
        });
    }
    (!out.is_empty()).then_some(out)
}

/// RFC 9110 §13.1.5: a Range with `If-Range` applies only when the validator given is the representation's own:
/// an entity tag compared strongly, or a date equal to Last-Modified.
fn if_range_holds(headers: &HeaderMap, v: &Validators<'_>) -> bool {
    let Some(value) = field(headers, &header::IF_RANGE) else { return true };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !value.starts_with("W/") && v.etag == Some(value);
    }
    match (httpdate::parse_http_date(value), v.modified) {
        (Ok(date), Some(m)) => HttpDate::from(date) == HttpDate::from(m),
        _ => false,
    }
}

/// Whether an If-Match / If-None-Match list matches `etag` (`*` matches any existing representation).
fn etag_list_matches(list: &str, etag: Option<&str>, strong: bool) -> bool {
    let Some(etag) = etag else { return list.trim() == "*" };
    let opaque = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_owned();
    list.split(',').map(str::trim).any(|t| {
        if t == "*" {
            return true;
        }
        if strong { !t.starts_with("W/") && t == etag } else { opaque(t) == opaque(etag) }
    })
}

/// A field's value when it is present once or more (joined with `, ` as a list field reads) and valid text.
fn field<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn date_field(headers: &HeaderMap, name: &header::HeaderName) -> Option<HttpDate> {
    // §13.1.3/§13.1.4: an invalid date is ignored.
    field(headers, name).and_then(|s| httpdate::parse_http_date(s).ok()).map(HttpDate::from)
}

/// An HTTP-date field value (IMF-fixdate). The last one made on this thread is kept: the files a server sends
/// in a row tend to share their modification second.
pub fn http_date(t: SystemTime) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(u64::MAX, |d| d.as_secs());
    LAST.with_borrow_mut(|last| match last {
        Some((s, v)) if *s == secs && secs != u64::MAX => v.clone(),
        _ => {
            let v = HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap_or_else(|_| HeaderValue::from_static(""));
            *last = Some((secs, v.clone()));
            v
        }
    })
}

/// `Content-Range: bytes FIRST-LAST/LEN` for a non-empty range.
pub fn content_range(r: &Range<u64>, len: u64) -> HeaderValue {
    value(&format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1)))
}

/// `Content-Range: bytes */LEN`, the field of a 416 (RFC 9110 §14.4).
pub fn unsatisfied_range(len: u64) -> HeaderValue {
    value(&format!("bytes */{len}"))
}

fn value(s: &str) -> HeaderValue {
    // Digits, spaces, `-`, `/` and `*` only: always a valid field value.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// The items of a list field weighted by `q` (RFC 9110 §12.4.2: Accept, Accept-Encoding), lowercase, in the order
/// sent; an item without `q` weighs 1.
pub fn weighted<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = (String, f32)> + 'a {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|item| {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q =
            parts.filter_map(|p| p.trim().strip_prefix("q=")).find_map(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
        (token, q)
    })
}

/// The media type of a file by its name's extension (case-insensitive), from mime_guess's table (the shared
/// mime database's): `application/octet-stream` when unknown. Text types say `charset=utf-8`: hopgate can't know
/// a file's encoding, and UTF-8 is what today's text files are; JavaScript is `text/javascript` (RFC 9239).
pub fn media_type(name: &str) -> HeaderValue {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return HeaderValue::from_static("application/octet-stream");
    };
    // Lowercased on the stack: extensions are short.
    let mut buf = [0u8; 16];
    let lower;
    let ext = match buf.get_mut(..ext.len()) {
        Some(b) => {
            b.copy_from_slice(ext.as_bytes());
            b.make_ascii_lowercase();
            std::str::from_utf8(b).unwrap_or("")
        }
        None => {
            lower = ext.to_ascii_lowercase();
            lower.as_str()
        }
    };
    let guess = match ext {
        "js" | "mjs" | "cjs" => return HeaderValue::from_static("text/javascript; charset=utf-8"),
        "json" | "map" => return HeaderValue::from_static("application/json"),
        "wasm" => return HeaderValue::from_static("application/wasm"),
        // The text types served most, without building their value.
        "html" | "htm" => return HeaderValue::from_static("text/html; charset=utf-8"),
        "css" => return HeaderValue::from_static("text/css; charset=utf-8"),
        "txt" => return HeaderValue::from_static("text/plain; charset=utf-8"),
        e => mime_guess::from_ext(e).first_raw(),
    };
    match guess {
        Some(t) if t.starts_with("text/") => {
            HeaderValue::from_str(&format!("{t}; charset=utf-8")).unwrap_or(HeaderValue::from_static("text/plain"))
        }
        Some(t) => HeaderValue::from_static(t),
        None => HeaderValue::from_static("application/octet-stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn v() -> Validators<'static> {
        Validators {
            etag: Some("\"abc\""),
            modified: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
        }
    }

    #[test]
    fn preconditions_in_rfc_order() {
        let t = httpdate::fmt_http_date(v().modified.unwrap());
        let earlier = httpdate::fmt_http_date(v().modified.unwrap() - std::time::Duration::from_secs(1));
        let get = Method::GET;
        let cases: &[(&[(&str, &str)], Precondition)] = &[
            (&[], Precondition::Proceed),
            (&[("if-none-match", "\"abc\"")], Precondition::NotModified),
            (&[("if-none-match", "W/\"abc\"")], Precondition::NotModified),
            (&[("if-none-match", "\"x\", \"abc\"")], Precondition::NotModified),
            (&[("if-none-match", "*")], Precondition::NotModified),
            (&[("if-none-match", "\"x\"")], Precondition::Proceed),
            (&[("if-none-match", "\"x\""), ("if-modified-since", &t)], Precondition::Proceed),
            (&[("if-modified-since", &t)], Precondition::NotModified),
            (&[("if-modified-since", &earlier)], Precondition::Proceed),
            (&[("if-modified-since", "yesterday")], Precondition::Proceed),
            (&[("if-match", "\"abc\"")], Precondition::Proceed),
            (&[("if-match", "*")], Precondition::Proceed),
            (&[("if-match", "W/\"abc\"")], Precondition::Failed("If-Match")),
            (&[("if-match", "\"x\"")], Precondition::Failed("If-Match")),
            (&[("if-unmodified-since", &earlier)], Precondition::Failed("If-Unmodified-Since")),
            (&[("if-unmodified-since", &t)], Precondition::Proceed),
            (&[("if-match", "\"abc\""), ("if-unmodified-since", &earlier)], Precondition::Proceed),
        ];
        for (h, want) in cases {
            assert_eq!(evaluate(&get, &headers(h), &v()), *want, "{h:?}");
        }
        assert_eq!(
            evaluate(&Method::PUT, &headers(&[("if-none-match", "*")]), &v()),
            Precondition::Failed("If-None-Match")
        );
    }

    fn one(start: u64, end: u64) -> Ranges {
        Ranges::Some(std::iter::once(start..end).collect())
    }

    #[test]
    fn range_sets() {
        let get = Method::GET;
        let r = |s: &str| ranges(&get, &headers(&[("range", s)]), &v(), 100);
        assert_eq!(r("bytes=0-9"), one(0, 10));
        assert_eq!(r("bytes=90-"), one(90, 100));
        assert_eq!(r("bytes=-10"), one(90, 100));
        assert_eq!(r("bytes=-1000"), one(0, 100));
        assert_eq!(r("bytes=95-1000"), one(95, 100));
        assert_eq!(r("bytes=0-0, 10-19"), Ranges::Some(vec![0..1, 10..20]));
        assert_eq!(r("bytes=100-"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=100-200, 300-"), Ranges::Unsatisfiable);
        assert_eq!(r("bytes=100-200, 5-6"), one(5, 7));
        for ignored in ["bytes=5-1", "bytes=x-", "items=0-1", "bytes=", "bytes=-", "bytes=0-,0-", "bytes=1-5,3-4"] {
            assert_eq!(r(ignored), Ranges::Whole, "{ignored}");
        }
        let many = format!("bytes={}", (0..65).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(","));
        assert_eq!(r(&many), Ranges::Whole);
        assert_eq!(ranges(&Method::HEAD, &headers(&[("range", "bytes=0-1")]), &v(), 100), Ranges::Whole);
        let t = httpdate::fmt_http_date(v().modified.unwrap());
        for (if_range, applies) in [("\"abc\"", true), ("W/\"abc\"", false), ("\"x\"", false), (t.as_str(), true)] {
            let got = ranges(&get, &headers(&[("range", "bytes=0-0"), ("if-range", if_range)]), &v(), 100);
            assert_eq!(got == Ranges::Whole, !applies, "{if_range}");
        }
    }

    #[test]
    fn media_types() {
        for (name, want) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.CSS", "text/css; charset=utf-8"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("A.HTM", "text/html; charset=utf-8"),
            ("a.csv", "text/csv; charset=utf-8"),
            ("a.averyveryverylongextension", "application/octet-stream"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.svg", "image/svg+xml"),
            ("a.woff2", "font/woff2"),
            ("a.json", "application/json"),
            ("a.unknownext", "application/octet-stream"),
            ("README", "application/octet-stream"),
        ] {
            assert_eq!(media_type(name), want, "{name}");
        }
    }
}
