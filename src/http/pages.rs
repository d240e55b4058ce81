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

/// Control characters (CR, LF...) never reach a page: a reason may quote client input.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

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
