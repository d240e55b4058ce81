//! The fields hopgate writes on what it forwards (Host, Via, Forwarded, X-Forwarded-*) and the host a request is
//! for (issue 10): a client's `Connection` can't remove what hopgate writes (the CVE-2022-31813 class), and routing
//! and the forwarded Host always agree (RFC 9112 §3.2.2, RFC 9113 §8.3.1). The real binary, raw clients, Python's
//! `h2` (Debian package python3-h2) for an HTTP/2 request curl can't make, and recording origins.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::origin::{Next, Origin, Seen, respond};
use support::tls::{KeyType, Pki};
use support::{Hopgate, exchange};

const PYTHON: &str = "/usr/bin/python3";

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

fn route(host: &str, to: &str) -> String {
    format!("[[listener.route]]\nhost = \"{host}\"\nto = \"{to}\"\n")
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

/// RFC 9112 §3.2.2: the absolute-form target's authority wins over Host, for routing and for what is forwarded.
#[test]
fn the_absolute_form_authority_picks_the_route_and_becomes_the_host() {
    let a = Origin::fixed("a");
    let b = Origin::fixed("b");
    let hg = hopgate(&format!(
        "{}{}",
        route("a.example", &format!("http://{}", a.addr)),
        route("b.example", &format!("http://{}", b.addr))
    ));

    let r = exchange(hg.addr, "GET http://a.example/x?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "a"), "{}", r.head);
    let seen = a.last();
    assert_eq!(seen.target, "/x?q=1");
    assert_eq!(all(&seen, "host"), ["a.example"], "{}", seen.head);
    assert_eq!(all(&seen, "x-forwarded-host"), ["a.example"], "{}", seen.head);
    assert_eq!(all(&seen, "forwarded"), ["for=127.0.0.1;proto=http;host=\"a.example\""], "{}", seen.head);

    // A port stays in the Host; userinfo never travels; an HTTP/1.0 request without Host has the authority too.
    let r = exchange(hg.addr, "GET http://user:pw@A.Example:8080/y HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "a"), "{}", r.head);
    let seen = a.last();
    assert_eq!(seen.target, "/y");
    assert_eq!(all(&seen, "host"), ["A.Example:8080"], "{}", seen.head);
    assert!(!seen.head.contains("user") && !seen.head.contains("pw"), "{}", seen.head);
    let r = exchange(hg.addr, "GET http://b.example/z HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "b"), "{}", r.head);
    assert_eq!(all(&b.last(), "host"), ["b.example"]);
    assert_eq!((a.count(), b.count()), (2, 1));
}

/// Host names compare case-insensitively and without one trailing dot (`a.example.` is the fully qualified
/// `a.example`); the origin is sent the Host the client addressed.
#[test]
fn a_trailing_dot_and_case_do_not_change_the_route() {
    let a = Origin::fixed("a");
    let b = Origin::fixed("b");
    let hg = hopgate(&format!(
        "{}{}",
        route("a.example", &format!("http://{}", a.addr)),
        route("B.Example.", &format!("http://{}", b.addr))
    ));
    for (host, body) in
        [("a.example.", "a"), ("A.EXAMPLE.", "a"), ("a.example.:8080", "a"), ("b.example", "b"), ("b.example.", "b")]
    {
        let r = exchange(hg.addr, &format!("GET /p HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!((r.status, r.text().as_str()), (200, body), "Host: {host}\n{}", r.head);
        let seen = if body == "a" { a.last() } else { b.last() };
        assert_eq!(all(&seen, "host"), [host], "{}", seen.head);
    }
    // Only one dot is the root label: `a.example..` is no name of a route.
    let r = exchange(hg.addr, "GET /p HTTP/1.1\r\nHost: a.example..\r\n\r\n");
    assert_eq!(r.status, 404, "{}", r.head);
    let r = exchange(hg.addr, "GET http://a.example./q HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "a"), "{}", r.head);
    assert_eq!(all(&a.last(), "host"), ["a.example."]);
    assert_eq!((a.count(), b.count()), (4, 2));
}

/// The resource gateways see the same host: HTTP_HOST and SERVER_NAME from the absolute-form authority.
#[test]
fn a_cgi_route_sees_the_host_it_was_routed_by() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("env.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nprintf 'HTTP_HOST=%s\\nSERVER_NAME=%s\\n' \
         \"$HTTP_HOST\" \"$SERVER_NAME\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let b = Origin::fixed("b");
    let hg = hopgate(&format!(
        "{}{}",
        route("a.example", &format!("cgi:{}", dir.path().display())),
        route("b.example", &format!("http://{}", b.addr))
    ));
    let r = exchange(hg.addr, "GET http://a.example/env.sh HTTP/1.1\r\nHost: b.example\r\nConnection: host\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "HTTP_HOST=a.example\nSERVER_NAME=a.example\n");
    let r = exchange(hg.addr, "GET /env.sh HTTP/1.1\r\nHost: A.example.\r\n\r\n");
    assert_eq!(r.text(), "HTTP_HOST=A.example.\nSERVER_NAME=A.example.\n");
    assert_eq!(b.count(), 0);
}

/// Sends one HTTP/2 request per `(authority, host)` on one TLS connection to 127.0.0.1:PORT (SNI a.example),
/// with a `host` field beside `:authority` unless it is "-"; prints `STATUS BODY` per request. curl can't send
/// both (it turns `-H Host:` into `:authority`).
const H2_CLIENT: &str = r#"
import socket, ssl, sys
import h2.config, h2.connection, h2.events
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(['h2'])
tls = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=15), server_hostname='a.example')
assert tls.selected_alpn_protocol() == 'h2', tls.selected_alpn_protocol()
conn = h2.connection.H2Connection(h2.config.H2Configuration(
    client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
conn.initiate_connection()
tls.sendall(conn.data_to_send())
for pair in sys.argv[3:]:
    authority, host = pair.split(' ')
    sid = conn.get_next_available_stream_id()
    headers = [(':method', 'GET'), (':scheme', 'https'), (':authority', authority), (':path', '/h2')]
    if host != '-':
        headers.append(('host', host))
    conn.send_headers(sid, headers, end_stream=True)
    tls.sendall(conn.data_to_send())
    status, body, done = None, b'', False
    while not done:
        data = tls.recv(65536)
        if not data:
            sys.exit('the connection closed')
        for ev in conn.receive_data(data):
            if getattr(ev, 'stream_id', None) != sid:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b':status'].decode()
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.StreamReset):
                status, done = 'reset', True
        tls.sendall(conn.data_to_send())
    print(status, body.decode(errors='replace').replace('\n', ' | '))
"#;

/// RFC 9113 §8.3.1: over HTTP/2, `:authority` is the authority, and a `host` field naming another is malformed.
#[test]
fn an_http2_host_field_that_differs_from_authority_is_400() {
    assert!(
        Path::new(PYTHON).exists()
            && Command::new(PYTHON).args(["-c", "import h2"]).status().is_ok_and(|s| s.success()),
        "python3's h2 is missing: install the Debian package python3-h2 (.ci/run does)"
    );
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["a.example", "b.example"]);
    let a = Origin::fixed("a");
    let b = Origin::fixed("b");
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"https://127.0.0.1:0\"\nvia_name = \"hg.test\"\n\
         [[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n{}{}",
        pair.cert(),
        pair.key(),
        route("a.example", &format!("http://{}", a.addr)),
        route("b.example", &format!("http://{}", b.addr))
    ));
    let port = hg.addr.port();
    let requests = [
        format!("a.example:{port} b.example"),
        format!("a.example:{port} a.example:{port}"),
        format!("a.example:{port} A.Example.:{port}"),
        format!("a.example:{port} -"),
        format!("a.example:{port} a.example:1"),
    ];
    let out = Command::new("timeout")
        .args(["30", PYTHON, "-c", H2_CLIENT, &port.to_string(), pki.ca.cert()])
        .args(&requests)
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("400 hopgate: 400 Bad Request | "), "{text}");
    assert!(lines[0].contains("b.example") && lines[0].contains(":authority"), "the page names the cause: {text}");
    assert_eq!(&lines[1..4], ["200 a", "200 a", "200 a"], "{text}");
    assert!(lines[4].starts_with("400 "), "another port is another authority: {text}");
    assert_eq!((a.count(), b.count()), (3, 0), "{text}");
    for seen in a.seen.lock().unwrap().iter() {
        assert_eq!(all(seen, "host"), [format!("a.example:{port}").as_str()], "{}", seen.head);
        assert_eq!(all(seen, "x-forwarded-proto"), ["https"], "{}", seen.head);
        assert_eq!(all(seen, "via"), ["2 hg.test"], "{}", seen.head);
    }
}
