//! What a directory looks like over HTTP: an HTML page and a JSON array, plus the media type of
//! a file by its name. Pure functions; the HTTP side adds the headers.

use std::fmt::Write;

use super::listing::{Entry, EntryKind};
use crate::date;

/// An HTML directory page for `title` (the decoded URL path the client asked for, ending in
/// `/`). Entries are listed directories first, then by name; each link is relative and
/// percent-encoded (RFC 3986 §2.1, per path segment), each name HTML-escaped; directories end
/// with `/`. A parent link `../` is shown unless `at_root`. Served as `text/html; charset=utf-8`.
pub fn render_html(title: &str, entries: &[Entry], at_root: bool) -> String {
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
    out.push_str("</table>\n<hr>\n<address>hopgate HTTP/FTP gateway</address>\n</body>\n</html>\n");
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

/// The media type for a file name's extension (case-insensitive); `application/octet-stream`
/// when unknown. Text types say `charset=utf-8`.
pub fn mime_for(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "text" | "log" | "asc" | "md" | "readme" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "ps" | "eps" => "application/postscript",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "bz2" | "tbz2" => "application/x-bzip2",
        "xz" | "txz" => "application/x-xz",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "7z" => "application/x-7z-compressed",
        "rar" => "application/vnd.rar",
        "iso" => "application/x-iso9660-image",
        "deb" => "application/vnd.debian.binary-package",
        "rpm" => "application/x-rpm",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        _ => "application/octet-stream",
    }
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
        let page = render_html("/pub/<x>/", &entries, false);
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
        assert!(!render_html("/", &entries, true).contains("../"));
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
    fn mime_types_by_extension() {
        assert_eq!(mime_for("a.TXT"), "text/plain; charset=utf-8");
        assert_eq!(mime_for("x.tar.gz"), "application/gzip");
        assert_eq!(mime_for("p.PNG"), "image/png");
        assert_eq!(mime_for("noext"), "application/octet-stream");
        assert_eq!(mime_for("weird.xyz"), "application/octet-stream");
        assert_eq!(mime_for(".bashrc"), "application/octet-stream");
    }
}
