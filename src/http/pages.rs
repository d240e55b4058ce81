//! Every response hopgate writes itself: a status line, a two-line text/plain body naming hopgate and the
//! reason, Content-Length, `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, and `Connection: close`
//! when the request framing can no longer be trusted. A client can tell hopgate's 502 from an origin's by the
//! first body line. The reason is plain text, never escaped: it may quote an upstream's words (an FTP server's
//! reply), which are inert in a text/plain page that browsers must not sniff; control characters become spaces,
//! and no reason ever goes into a header field.

use http::{HeaderValue, Response, StatusCode, header};

use crate::http::Body;

/// Renders the page for an error: its status, its detail, its challenge (401/407), Connection: close when the
/// framing can't be trusted.
pub fn error(e: &crate::error::Error) -> Response<Body> {
    let mut resp = render(e.status(), e.detail(), e.closes_connection());
    if let Some(c) = e.challenge() {
        let name = if e.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            header::PROXY_AUTHENTICATE
        } else {
            header::WWW_AUTHENTICATE
        };
        resp.headers_mut().insert(name, c.clone());
    }
    for (name, value) in e.fields() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// A redirect hopgate answers itself (a directory URL without its final `/`): `301` with `Location` and a
/// two-line body naming the new address.
pub fn redirect(location: HeaderValue) -> Response<Body> {
    let status = StatusCode::MOVED_PERMANENTLY;
    let body = format!(
        "hopgate: {} {}\n{}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        one_line(&String::from_utf8_lossy(location.as_bytes()))
    );
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// Renders a page for `status` with a one-line `reason`. Only [`error`] calls it: the status comes from
/// `Error::status`.
fn render(status: StatusCode, reason: &str, close: bool) -> Response<Body> {
    let body =
        format!("hopgate: {} {}\n{}\n", status.as_u16(), status.canonical_reason().unwrap_or(""), one_line(reason));
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// hyper's own answer to a request head it can't parse is exactly `HTTP/1.1 {400|414|431} REASON` (the canonical
/// reason), `connection: close`, `content-length: 0`, `date: ` an IMF-fixdate, and nothing else; hopgate's
/// responses always carry other fields. For that exact response this returns hopgate's page with the same
/// status (and hyper's Date), naming the cause; for anything else None.
pub fn replace_hyper_error(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() > 256 || !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let text = std::str::from_utf8(buf).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let (status, reason) = match status_line.get(9..12)? {
        "400" => (StatusCode::BAD_REQUEST, "malformed request: not a valid HTTP/1.1 request line or header field"),
        "414" => (StatusCode::URI_TOO_LONG, "request target too long"),
        "431" => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request header section too large"),
        _ => return None,
    };
    if status_line.get(12..) != status.canonical_reason().map(|r| format!(" {r}")).as_deref() {
        return None;
    }
    if lines.next()? != "connection: close" || lines.next()? != "content-length: 0" {
        return None;
    }
    // The date is the one part copied: only an IMF-fixdate as hyper writes it, so that no line end or field rides
    // along (the date parser skips surrounding whitespace).
    let date = lines.next()?.strip_prefix("date: ")?;
    let canonical = httpdate::parse_http_date(date).ok().map(httpdate::fmt_http_date);
    if lines.next().is_some() || canonical.as_deref() != Some(date) {
        return None;
    }
    let body = format!("hopgate: {} {}\n{reason}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    Some(
        format!(
            "{status_line}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n\
             x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: {}\r\n\
             date: {date}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Control characters (CR, LF...) never reach a page: a reason may quote client input.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn hypers_bodyless_errors_get_a_page() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
                      date: Wed, 25 Nov 2026 23:54:26 GMT\r\n\r\n";
        let page = String::from_utf8(replace_hyper_error(hyper).unwrap()).unwrap();
        assert!(page.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{page}");
        assert!(page.contains("date: Wed, 25 Nov 2026 23:54:26 GMT\r\n"), "{page}");
        let (head, body) = page.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{page}");
        assert!(body.starts_with("hopgate: 400 Bad Request\nmalformed request"), "{body}");
        // Anything with another field (a relayed response, one of hopgate's pages) is left alone.
        let relayed = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
                        date: Wed, 25 Nov 2026 23:54:26 GMT\r\nvia: 1.1 x\r\n\r\n";
        assert!(replace_hyper_error(relayed).is_none());
        assert!(
            replace_hyper_error(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n")
                .is_none()
        );
    }

    /// Only hyper's exact response is replaced: its canonical status line and an IMF-fixdate, so that nothing of
    /// the replaced bytes but the date is copied, and no line end can reach the page (fuzz target
    /// hyper_error_page).
    #[test]
    fn only_hypers_exact_response_is_replaced() {
        let with = |status: &str, date: &str| {
            format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n")
        };
        let date = "Wed, 25 Nov 2026 23:54:26 GMT";
        assert!(replace_hyper_error(with("431 Request Header Fields Too Large", date).as_bytes()).is_some());
        for (status, date) in [
            ("400 Bad Request", " \r"),
            ("400 Bad Request", "x\nInjected: 1"),
            ("400 Bad Request", "yesterday"),
            ("400 Bad Request", "\nWed, 25 Nov 2026 23:54:26 GMT"),
            ("400 Bad Request", "Wednesday, 25-Nov-26 23:54:26 GMT"),
            ("400 Bad Request\nX: y", date),
            ("400 Whatever", date),
            ("400", date),
        ] {
            assert_eq!(replace_hyper_error(with(status, date).as_bytes()), None, "{status:?} {date:?}");
        }
    }

    #[tokio::test]
    async fn page_shape() {
        let r = render(StatusCode::BAD_GATEWAY, "connection refused by 127.0.0.1:9\r\nx", true);
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["connection"], "close");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&b[..], b"hopgate: 502 Bad Gateway\nconnection refused by 127.0.0.1:9  x\n");
    }

    #[tokio::test]
    async fn an_upstreams_words_reach_the_page_as_sent() {
        use crate::error::{Error, Kind};
        let e = Error::upstream(Kind::NotFound, "ftp server h:21 answered: 550 <b>gone</b> & \"away\"\r\nX-Evil: 1");
        let r = error(&e);
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("x-evil").is_none());
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &b[..],
            &b"hopgate: 404 Not Found\nftp server h:21 answered: 550 <b>gone</b> & \"away\"  X-Evil: 1\n"[..]
        );
    }
}
