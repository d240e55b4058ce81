//! What a directory looks like over HTTP, for every room that lists one (the HTTP/FTP gateway, the static-file
//! room): an HTML page and a JSON array of the same entries, and whether a client asked for JSON. Pure functions;
//! the rooms add the header fields.

use std::fmt::Write;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response};

use crate::date;
use crate::http::{Body, representation};

/// What a listing entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Link,
}

impl EntryKind {
    /// `file`, `dir`, `link` (the JSON listing's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Link => "link",
        }
    }
}

/// One directory entry. `.` and `..` never appear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub size: Option<u64>,
    /// UTC. FTP `LIST` dates carry no zone and are taken as UTC.
    pub modified: Option<SystemTime>,
    /// For a Unix `LIST` symlink `name -> target`.
    pub link_target: Option<String>,
}

/// An HTML directory page for `title` (the decoded URL path the client asked for, ending in
/// `/`). Entries are listed directories first, then by name; each link is relative and
/// percent-encoded (RFC 3986 §2.1, per path segment), each name HTML-escaped; directories end
/// with `/`. A parent link `../` is shown unless `at_root`; `by` names the room in the footer. Served as
/// `text/html; charset=utf-8`.
pub fn render_html(title: &str, entries: &[Entry], at_root: bool, by: &str) -> String {
    let title = html_escape(title);
    let mut out = String::with_capacity(512 + entries.len() * 160);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Index of {title}</title>\n</head>\n<body>\n<h1>Index of {title}</h1>\n\
         <table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n"
    );
    if !at_root {
        out.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for e in sorted(entries) {
        let slash = if e.kind == EntryKind::Dir { "/" } else { "" };
        let size = e.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let modified = e.modified.map(date::short).unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{href}{slash}\">{name}{slash}</a></td>\
             <td align=\"right\">{size}</td><td>{modified}</td></tr>",
            href = html_escape(&percent_encode_segment(&e.name)),
            name = html_escape(&e.name),
        );
    }
    let _ = write!(out, "</table>\n<hr>\n<address>{}</address>\n</body>\n</html>\n", html_escape(by));
    out
}

/// A JSON array `[{"name":..., "type":"file"|"dir"|"link", "size":N|null,
/// "modified":"2023-01-31T12:00:05Z"|null}]` (RFC 8259; RFC 3339 times in UTC), in the same
/// order as the HTML page. Served as `application/json`.
pub fn render_json(entries: &[Entry]) -> String {
    let mut out = String::from("[");
    for (i, e) in sorted(entries).into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("\n{\"name\":");
        json_string(&mut out, &e.name);
        let _ = write!(out, ",\"type\":\"{}\",\"size\":", e.kind.as_str());
        match e.size {
            Some(s) => {
                let _ = write!(out, "{s}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"modified\":");
        match e.modified {
            Some(t) => {
                let _ = write!(out, "\"{}\"", date::rfc3339(t));
            }
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("\n]\n");
    out
}

fn sorted(entries: &[Entry]) -> Vec<&Entry> {
    let mut v: Vec<&Entry> = entries.iter().collect();
    v.sort_by(|a, b| (b.kind == EntryKind::Dir).cmp(&(a.kind == EntryKind::Dir)).then_with(|| a.name.cmp(&b.name)));
    v
}

/// `&`, `<`, `>`, `"` and `'` as character references: safe in text and quoted attributes.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One path segment for a relative reference: every byte outside RFC 3986's `unreserved`
/// (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` of its UTF-8. Stricter than RFC 3986 requires
/// (sub-delims and `:` `@` may stay), so that `a:b` is never read as a scheme, `?` and `#` never
/// end the path, and `/` never splits a name.
pub fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // RFC 8259 §7: control characters must be escaped; U+2028/2029 too, so the text is
            // also safe inside JavaScript
            c if c < '\u{20}' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// JSON when the client's Accept ranks `application/json` above `text/html` (a tie is HTML).
pub fn wants_json(headers: &HeaderMap) -> bool {
    let mut json = 0.0f32;
    let mut html = 0.0f32;
    for (media, q) in representation::weighted(headers, &header::ACCEPT) {
        match media.as_str() {
            "application/json" => json = json.max(q),
            "text/html" => html = html.max(q),
            _ => {}
        }
    }
    json > 0.0 && json > html
}

/// The answer to a request for a directory listing: HTML, or JSON when [`wants_json`]; no body for HEAD.
/// `title` is the decoded path asked for, `by` the room named in the HTML footer.
pub fn response(
    method: &Method,
    headers: &HeaderMap,
    title: &str,
    entries: &[Entry],
    at_root: bool,
    by: &str,
) -> Response<Body> {
    let (body, mime) = if wants_json(headers) {
        (render_json(entries), "application/json")
    } else {
        (render_html(title, entries, at_root, by), "text/html; charset=utf-8")
    };
    let len = HeaderValue::from(body.len());
    let mut resp = Response::new(if method == Method::HEAD { Body::empty() } else { Body::full(body) });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: EntryKind, size: Option<u64>) -> Entry {
        Entry {
            name: name.to_owned(),
            kind,
            size,
            modified: date::from_civil(2023, 1, 31, 12, 0, 5),
            link_target: None,
        }
    }

    #[test]
    fn html_escapes_names_and_encodes_links() {
        let entries = [
            entry("z <b>&\"'.txt", EntryKind::File, Some(12)),
            entry("sub dir", EntryKind::Dir, None),
            entry("über ☃?#%.bin", EntryKind::File, Some(3)),
            entry("a:b", EntryKind::File, None),
        ];
        let page = render_html("/pub/<x>/", &entries, false, "hopgate");
        assert!(page.contains("<title>Index of /pub/&lt;x&gt;/</title>"));
        assert!(page.contains("<a href=\"../\">../</a>"));
        assert!(page.contains("<a href=\"sub%20dir/\">sub dir/</a>"));
        assert!(page.contains("<a href=\"z%20%3Cb%3E%26%22%27.txt\">z &lt;b&gt;&amp;&quot;&#39;.txt</a>"));
        assert!(page.contains("<a href=\"%C3%BCber%20%E2%98%83%3F%23%25.bin\">über ☃?#%.bin</a>"));
        assert!(page.contains("<a href=\"a%3Ab\">a:b</a>"));
        assert!(page.contains("<td align=\"right\">12</td><td>2023-01-31 12:00</td>"));
        assert!(!page.contains("<b>"));
        // directories first
        assert!(page.find("sub dir").unwrap() < page.find("a:b").unwrap());
        assert!(!render_html("/", &entries, true, "hopgate").contains("../"));
    }

    #[test]
    fn json_listing_escapes_strings() {
        let mut odd = entry("q\"b\\s\n\u{1}\u{2028}ü", EntryKind::Link, Some(7));
        odd.modified = None;
        let json = render_json(&[entry("d", EntryKind::Dir, None), odd]);
        assert_eq!(
            json,
            "[\n{\"name\":\"d\",\"type\":\"dir\",\"size\":null,\"modified\":\"2023-01-31T12:00:05Z\"},\n\
             {\"name\":\"q\\\"b\\\\s\\n\\u0001\\u2028ü\",\"type\":\"link\",\"size\":7,\"modified\":null}\n]\n"
        );
        assert_eq!(render_json(&[]), "[\n]\n");
    }

    #[test]
    fn accept_json() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(wants_json(&h("application/json")));
        assert!(wants_json(&h("text/html;q=0.5, application/json")));
        assert!(!wants_json(&h("text/html,application/xhtml+xml,*/*;q=0.8")));
        assert!(!wants_json(&h("text/html, application/json")));
        assert!(!wants_json(&HeaderMap::new()));
    }
}
