//! The fields hopgate writes on what it forwards (Host, Via, Forwarded, X-Forwarded-*) and the host a request is
//! for (issue 10): a client's `Connection` can't remove what hopgate writes (the CVE-2022-31813 class), and routing
//! and the forwarded Host always agree (RFC 9112 §3.2.2, RFC 9113 §8.3.1). The real binary, raw clients, Python's
//! `h2` (Debian package python3-h2) for an HTTP/2 request curl can't make, and recording origins.

mod support;

use support::origin::{Next, Origin, Seen, respond};
use support::{Hopgate, exchange};

/// Every value of `name` the origin received, in order.
fn all<'a>(seen: &'a Seen, name: &str) -> Vec<&'a str> {
    seen.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

/// One plain listener named `hg.test` in Via, with `tables` below it.
fn hopgate(tables: &str) -> Hopgate {
    Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\nvia_name = \"hg.test\"\n{tables}"
    ))
}

/// CVE-2022-31813: `Connection: X-Forwarded-For, ...` made the origin receive none of the fields the gateway
/// writes. They are written after hop-by-hop removal now; the client's Via survives beside hopgate's.
#[test]
fn a_connection_option_cannot_remove_what_the_gateway_writes() {
    let origin = Origin::fixed("ok");
    let hg = hopgate(&format!("[[listener.route]]\nto = \"http://{}\"\n", origin.addr));

    // The attack as reported: nothing forged, only the fields named.
    let r = exchange(
        hg.addr,
        "GET /x HTTP/1.1\r\nHost: public.example\r\n\
         Connection: X-Forwarded-For, Forwarded, X-Forwarded-Host, X-Forwarded-Proto\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    let seen = origin.last();
    assert_eq!(all(&seen, "forwarded"), ["for=127.0.0.1;proto=http;host=\"public.example\""], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.1"], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-host"), ["public.example"], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-proto"), ["http"], "{}", seen.head);
    assert_eq!(all(&seen, "via"), ["1.1 hg.test"], "{}", seen.head);
    assert_eq!(all(&seen, "host"), ["public.example"], "{}", seen.head);
    assert!(!seen.has("connection"), "{}", seen.head);

    // Every field hopgate writes named (in two Connection fields, any case), with forged values: hopgate's
    // replace them, the client's Via entry stays in front of hopgate's, and a field only the client wrote goes.
    let r = exchange(
        hg.addr,
        "GET /y HTTP/1.1\r\nHost: public.example\r\nConnection: host, VIA, forwarded\r\n\
         Connection: x-forwarded-for, X-Forwarded-Host, x-forwarded-proto, x-private\r\n\
         Via: 1.0 client.example\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Private: 1\r\nX-Kept: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = origin.last();
    assert_eq!(seen.target, "/y");
    assert_eq!(all(&seen, "forwarded"), ["for=127.0.0.1;proto=http;host=\"public.example\""], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-for"), ["127.0.0.1"], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-host"), ["public.example"], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-proto"), ["http"], "{}", seen.head);
    assert_eq!(all(&seen, "via"), ["1.0 client.example", "1.1 hg.test"], "{}", seen.head);
    assert_eq!(all(&seen, "host"), ["public.example"], "{}", seen.head);
    assert!(!seen.has("x-private"), "a field the client named in Connection is removed:\n{}", seen.head);
    assert_eq!(all(&seen, "x-kept"), ["1"]);
    assert_eq!(origin.count(), 2);
}

/// The forward proxy writes Host and Via: a Connection naming them removes neither, in either direction.
#[test]
fn a_connection_option_cannot_remove_what_the_forward_proxy_writes() {
    let origin = Origin::start(|_, s| {
        respond(
            s,
            "HTTP/1.1 200 OK",
            &[("Connection", "Via, X-Origin-Hop"), ("Via", "1.0 origin.example"), ("X-Origin-Hop", "1")],
            b"ok",
        );
        Next::KeepAlive
    });
    let hg = hopgate("[listener.proxy]\nallow_targets = [\"127.0.0.1\"]\n");
    let o = origin.addr;
    let r = exchange(
        hg.addr,
        &format!(
            "GET http://{o}/p HTTP/1.1\r\nHost: wrong.example\r\nVia: 1.1 client.example\r\n\
             Connection: Via, Host, X-Forwarded-For, Forwarded\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n"
        ),
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", r.head);
    let seen = origin.last();
    assert_eq!(seen.target, "/p");
    assert_eq!(all(&seen, "host"), [o.to_string().as_str()], "{}", seen.head);
    assert_eq!(all(&seen, "via"), ["1.1 client.example", "1.1 hg.test"], "{}", seen.head);
    // The forward proxy writes no Forwarded/X-Forwarded-For: the client's own, named in Connection, go.
    assert!(!seen.has("x-forwarded-for") && !seen.has("forwarded"), "{}", seen.head);
    assert_eq!(r.all("via"), ["1.0 origin.example", "1.1 hg.test"], "{}", r.head);
    assert!(r.header("x-origin-hop").is_none(), "{}", r.head);
}
