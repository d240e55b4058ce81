//! FTP: control-connection replies and the values in them, directory listings (MLSD/MLST and LIST) with the
//! pages made of them, the paths of `ftp://` URLs, and the one Range form the FTP gateway serves.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header};

use super::{header_map, lines, text};
use crate::backend::ftp::gateway::{base_dir, split_userinfo};
use crate::backend::ftp::listing::{self, Entry, EntryKind};
use crate::backend::ftp::reply::{self, MAX_REPLY_BYTES, MAX_REPLY_LINES, Reply, ReplyError};
use crate::backend::ftp::{Features, FtpError, decode_url_path};
use crate::backend::meta;
use crate::date;
use crate::http::basic;
use crate::http::listing::{html_escape, percent_encode_segment, render_html, render_json, wants_json};
use crate::http::representation::{self, MAX_RANGES, Ranges, Validators};

/// Control-connection bytes: replies read one after another as the client does (RFC 959 §4.2), and the values
/// hopgate takes out of them (PASV, EPSV, SIZE, MDTM, PWD, FEAT), and the error a reply becomes.
pub fn ftp_reply(data: &[u8]) {
    let mut buf = data;
    // Each turn takes at least one byte: bounded by the input.
    loop {
        match reply::parse_reply(buf) {
            Ok(Some((r, used))) => {
                check_reply(&r, &buf[..used]);
                // Pipelined bytes after a reply do not change it.
                assert_eq!(reply::parse_reply(&buf[..used]), Ok(Some((r.clone(), used))));
                // Any shorter prefix is incomplete: never an error, never another reply.
                for cut in cut_points(&buf[..used]) {
                    assert_eq!(reply::parse_reply(&buf[..cut]), Ok(None), "prefix of {cut} bytes");
                }
                reply_values(&r);
                buf = &buf[used..];
            }
            Ok(None) => {
                assert!(buf.len() <= MAX_REPLY_BYTES, "incomplete but over the limit");
                break;
            }
            Err(ReplyError::TooLarge) => break,
            Err(ReplyError::Malformed(line)) => {
                assert!(line.chars().count() <= 80, "the error quotes at most 80 characters");
                break;
            }
        }
    }
}

/// Where to cut a complete reply for the prefix check: after each line but the last, and one byte short.
fn cut_points(reply: &[u8]) -> Vec<usize> {
    let mut cuts: Vec<usize> =
        reply.iter().enumerate().filter(|&(_, &b)| b == b'\n').map(|(i, _)| i + 1).take(16).collect();
    cuts.pop();
    cuts.push(reply.len() - 1);
    cuts
}

fn check_reply(r: &Reply, raw: &[u8]) {
    assert_eq!(raw.last(), Some(&b'\n'), "a reply ends with its line end");
    assert!(raw.len() <= MAX_REPLY_BYTES);
    assert!(!r.lines.is_empty() && r.lines.len() <= MAX_REPLY_LINES);
    assert_eq!(r.lines.len(), raw.iter().filter(|&&b| b == b'\n').count(), "one line per line end");
    assert!((100..=599).contains(&r.code), "code {}", r.code);
    assert!((1..=5).contains(&r.class()));
    let digits = format!("{:03}", r.code);
    assert!(r.lines[0].starts_with(&digits), "{:?} starts with {digits}", r.lines[0]);
    if r.lines.len() > 1 {
        assert_eq!(r.lines[0].as_bytes()[3], b'-', "a multi-line reply starts with xyz-");
        let last = r.lines.last().map(String::as_bytes).unwrap_or_default();
        assert!(last.starts_with(digits.as_bytes()) && matches!(last.get(3), None | Some(b' ')));
    }
    assert!(r.lines.iter().all(|l| !l.contains('\n')));
    assert_eq!(r.text().split('\n').count(), r.lines.len());
    assert_eq!(r.message(), r.message().trim());
}

fn reply_values(r: &Reply) {
    if let Some((_, port)) = reply::parse_pasv(r) {
        assert_ne!(port, 0);
    }
    if let Some(port) = reply::parse_epsv(r) {
        assert_ne!(port, 0);
    }
    if reply::parse_size(r).is_some() {
        assert_eq!(r.code, 213);
    }
    if let Some(t) = reply::parse_mdtm(r) {
        assert_eq!(r.code, 213);
        check_time_val(r.message(), t);
    }
    for line in &r.lines {
        let value = line.get(4..).unwrap_or("").trim();
        if let Some(t) = reply::parse_time_val(value) {
            check_time_val(value, t);
        }
    }
    if let Some(path) = reply::parse_pwd(r) {
        // The path quoted again (RFC 959 appendix II: `"` doubled) reads back the same.
        let again =
            Reply { code: 257, lines: vec![format!("257 \"{}\" is the current directory", path.replace('"', "\"\""))] };
        assert_eq!(reply::parse_pwd(&again).as_deref(), Some(path.as_str()));
    }
    let feat = reply::parse_feat(r);
    assert!(feat.len() <= r.lines.len().saturating_sub(2));
    for f in &feat {
        assert!(!f.is_empty() && *f == f.trim() && *f == f.to_ascii_uppercase(), "{f:?}");
    }
    let _ = Features::from_lines(&feat);
    // Every reply becomes an error with the status the one table gives its kind.
    let e = FtpError::from_reply("RETR", r);
    let page = e.into_error("ftp.example:21", "ftp.example");
    let status = page.status();
    assert!(status.is_client_error() || status.is_server_error(), "{status}");
}

/// A time-val that parsed names exactly that civil time: no month 13 rolled into the next year, no Feb 30.
fn check_time_val(text: &str, t: SystemTime) {
    let whole = text.split('.').next().unwrap_or("");
    let n = |r: std::ops::Range<usize>| whole[r].parse::<u32>().unwrap_or(u32::MAX);
    let (y, mo, d, h, mi, s) = date::to_civil(t);
    assert_eq!(
        (y, mo, d, h, mi, s),
        (i64::from(n(0..4)), n(4..6), n(6..8), n(8..10), n(10..12), n(12..14).min(59)),
        "{text:?}"
    );
}

/// A directory listing as it comes over the data connection: MLSD (RFC 3659 §7) and LIST (Unix `ls -l` and
/// DOS/IIS), each line alone as MLST's fact line, and the HTML and JSON pages made of the entries.
pub fn ftp_listing(data: &[u8]) {
    let line_count = data.split(|&b| b == b'\n').filter(|l| !l.is_empty() && *l != b"\r").count();
    let mlsd = listing::parse_mlsd(data);
    check_entries(&mlsd, line_count);
    for now in [UNIX_EPOCH + Duration::from_secs(1_710_460_800), UNIX_EPOCH] {
        let list = listing::parse_list(data, now);
        check_entries(&list, line_count);
        for e in &list {
            assert!(text(data).contains(e.name.as_str()), "{:?} is in the listing", e.name);
        }
    }
    for line in lines(data) {
        // MLST: the fact line of a 250 reply; its own directory may be `cdir`.
        if let Some(e) = listing::parse_facts(text(line).trim_start(), true) {
            assert!(!e.name.is_empty());
            assert!(e.kind != EntryKind::Dir || e.size.is_none());
        }
    }
}

fn check_entries(entries: &[Entry], line_count: usize) {
    assert!(entries.len() <= line_count);
    for e in entries {
        assert!(!e.name.is_empty() && e.name != "." && e.name != "..", "{:?}", e.name);
        assert!(!e.name.contains('\n'), "{:?}", e.name);
        assert!(e.kind != EntryKind::Dir || e.size.is_none(), "a directory has no size");
        assert!(e.link_target.is_none() || e.kind == EntryKind::Link);
        if let Some(t) = e.modified {
            assert!((1970..=9999).contains(&date::year_of(t)));
        }
    }
    for at_root in [false, true] {
        check_html(&render_html("/pub/<dir>/", entries, at_root, "hopgate HTTP/FTP gateway"), entries, at_root);
    }
    let json = render_json(entries);
    super::json::check(&json).unwrap_or_else(|e| panic!("invalid JSON listing ({e}): {json}"));
}

/// One row per entry, each link one percent-encoded segment that decodes back to the name, no markup from names.
fn check_html(html: &str, entries: &[Entry], at_root: bool) {
    let rows = html.matches("<tr>").count();
    assert_eq!(rows, 1 + entries.len() + usize::from(!at_root), "{html}");
    assert!(!html.contains("<dir>"), "the title is escaped");
    let mut hrefs = html.split("href=\"").skip(1).map(|s| s.split('"').next().unwrap_or(""));
    if !at_root {
        assert_eq!(hrefs.next(), Some("../"));
    }
    let mut names: Vec<String> = Vec::new();
    for href in hrefs {
        let segment = href.strip_suffix('/').unwrap_or(href);
        assert!(
            segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "href {href:?} is one encoded segment"
        );
        let decoded = decode_url_path(&format!("/{segment}")).ok();
        names.push(decoded.unwrap_or_else(|| segment.to_string()));
    }
    assert_eq!(names.len(), entries.len());
    for e in entries {
        if !e.name.contains(['/', '\r', '\0']) && e.name != "." && e.name != ".." {
            assert!(names.contains(&e.name), "a link to {:?} among {names:?}", e.name);
        }
        let escaped = html_escape(&e.name);
        assert!(!escaped.contains(['<', '>', '"', '\'']));
    }
}

/// The path of an `ftp://` URL (or of a gateway request under its route) as the FTP path the session methods
/// take, a gateway's base directory, a CGI/FastCGI/SCGI request path as segments, and `user:pass@host`.
/// One path per line.
pub fn url_paths(data: &[u8]) {
    for line in lines(data) {
        let s = text(line);
        if let Ok(p) = decode_url_path(&s) {
            assert!(!p.contains(['\r', '\n', '\0']), "{p:?}");
            let rest = p.strip_prefix('/').unwrap_or(&p);
            for seg in rest.split('/') {
                assert!(seg != "." && seg != "..", "{p:?} has a dot segment");
            }
            assert!(rest.is_empty() || rest.split('/').all(|s| !s.is_empty()), "{p:?} has an empty segment");
            // Encoded again, segment by segment (absolute with %2F), it decodes to the same path.
            let encoded: Vec<String> = rest.split('/').map(percent_encode_segment).collect();
            let url = if p.starts_with('/') {
                format!("/%2F{}", encoded.join("/"))
            } else {
                format!("/{}", encoded.join("/"))
            };
            assert_eq!(decode_url_path(&url).ok().as_deref(), Some(p.as_str()), "{url:?}");
        }
        if let Ok(d) = base_dir(&s) {
            assert!(!d.contains(['\r', '\n', '\0']));
            let rest = d.strip_prefix('/').unwrap_or(&d);
            assert!(rest.is_empty() || rest.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{d:?}");
        }
        if let Ok(segments) = meta::decode_segments(&s) {
            assert_eq!(segments.len(), s.matches('/').count(), "one segment per /");
            for seg in &segments {
                assert!(!seg.contains(['/', '\0', '\\']) && seg != "." && seg != "..", "{seg:?}");
            }
            let app = meta::resolve_app(&s).expect("resolve_app decodes like decode_segments");
            assert!(app.script_name.is_empty());
            assert!(app.path_info.is_empty() || app.path_info.starts_with('/'));
        } else {
            assert!(meta::resolve_app(&s).is_err());
        }
        let (user, host) = split_userinfo(&s);
        assert!(!host.contains('@'));
        assert_eq!(user.map_or(0, |u| u.len() + 1) + host.len(), s.len());
    }
}

/// The request fields the FTP gateway reads: `Range` (only `bytes=N-` is served, RFC 9110 §14.2), `If-Range`,
/// `If-Modified-Since`, `Accept` (JSON or HTML listing) and `Authorization: Basic` (the FTP log-in). One field
/// per line, `name: value`; a line without a name is tried as the value of each.
pub fn range(data: &[u8]) {
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut maps = vec![header_map(data)];
    for line in lines(data) {
        let Ok(v) = HeaderValue::from_bytes(line) else { continue };
        let mut h = HeaderMap::new();
        for name in [header::RANGE, header::IF_RANGE, header::IF_MODIFIED_SINCE, header::ACCEPT, header::AUTHORIZATION]
        {
            h.insert(name, v.clone());
        }
        maps.push(h);
    }
    for h in &maps {
        // The ranges asked of representations of several sizes: each non-empty, inside, none overlapping.
        let v = Validators { etag: Some("\"e\""), modified: Some(t) };
        for len in [0u64, 1, 11, 4096, u64::MAX] {
            if let Ranges::Some(rs) = representation::ranges(&http::Method::GET, h, &v, len) {
                assert!(!rs.is_empty() && rs.len() <= MAX_RANGES);
                for r in &rs {
                    assert!(r.start < r.end && r.end <= len, "{r:?} of {len}");
                    assert!(HeaderValue::to_str(&representation::content_range(r, len)).is_ok());
                }
                let mut sorted = rs.clone();
                sorted.sort_by_key(|r| r.start);
                assert!(sorted.windows(2).all(|w| w[0].end <= w[1].start), "overlap: {rs:?}");
            }
        }
        assert_eq!(representation::ranges(&http::Method::HEAD, h, &v, 10), Ranges::Whole, "only GET has ranges");
        let _ = representation::evaluate(&http::Method::GET, h, &v);
        let _ = wants_json(h);
        // The FTP gateway logs in with what http::basic reads from Authorization.
        if let Some((user, pass)) = h.get(header::AUTHORIZATION).and_then(basic::decode) {
            assert!(!user.contains(':'));
            let token = base64_encode(format!("{user}:{pass}").as_bytes());
            let mut again = HeaderMap::new();
            again.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {token}")).expect("base64"));
            assert_eq!(again.get(header::AUTHORIZATION).and_then(basic::decode), Some((user, pass)));
        }
    }
}

pub(super) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
