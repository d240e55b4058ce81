//! `hopgate proxy --parent`: requests and tunnels chained through a real Squid and a real tinyproxy.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;

use support::origin::{Origin, echo_server};
use support::peers::{chown_nobody, htpasswd, squid, tinyproxy};
use support::{Hopgate, curl};

fn hopgate_via(parent: &str, connect_port: u16) -> Hopgate {
    Hopgate::proxy(&["--connect-port", &connect_port.to_string(), "--parent", parent])
}

fn tunnel_roundtrip(proxy: SocketAddr, target: SocketAddr) -> Vec<u8> {
    let mut s = support::open_tunnel(proxy, target, "");
    s.write_all(b"ping through two proxies").unwrap();
    let mut got = vec![0u8; 24];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn requests_and_tunnels_through_squid() {
    let origin = Origin::fixed("chained");
    let target = echo_server();
    let parent = squid(&[target.port()], None, None);
    let hg = hopgate_via(&format!("http://{}", parent.addr), target.port());
    let (code, body, err) = curl(&["-x", &hg.url(), &origin.url("/via-squid")]);
    assert_eq!((code, body.as_slice()), (200, &b"chained"[..]), "{err}\n{}", parent.log_text());
    let seen = origin.last();
    let via = seen.header("via").unwrap_or_default().to_string();
    assert!(via.contains("squid"), "Squid's hop is in Via: {via}");
    assert!(via.starts_with("1.1 "), "hopgate's hop first: {via}");
    assert_eq!(tunnel_roundtrip(hg.addr, target), b"ping through two proxies");
}

#[test]
fn parent_credentials_are_hopgates_own() {
    let origin = Origin::fixed("authenticated chain");
    let target = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    htpasswd(&users, &["-B", "-C", "5"], "hop", "gate-secret");
    chown_nobody(dir.path());
    let parent = squid(&[target.port()], Some(&users), None);

    let hg = hopgate_via(&format!("http://hop:gate-secret@{}", parent.addr), target.port());
    let (code, body, err) = curl(&["-x", &hg.url(), &origin.url("/")]);
    assert_eq!((code, body.as_slice()), (200, &b"authenticated chain"[..]), "{err}");
    assert!(!origin.last().has("proxy-authorization"), "the parent consumed its credentials");
    assert_eq!(tunnel_roundtrip(hg.addr, target), b"ping through two proxies");

    // Wrong parent credentials: the client gets hopgate's 502 naming the parent, not a 407 it can't answer.
    let wrong = hopgate_via(&format!("http://hop:nope@{}", parent.addr), target.port());
    let (code, body, _) = curl(&["-x", &wrong.url(), &origin.url("/")]);
    assert_eq!(code, 502);
    assert!(String::from_utf8_lossy(&body).contains("407"), "{}", String::from_utf8_lossy(&body));
    // a refusal by the parent, not a failed connection
    let line = wrong.wait_stderr_line(&["parent proxy", "refused the request: 407"]);
    assert!(line.contains("reason=rejected"), "{line}");
    let r = support::exchange(wrong.addr, &format!("CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 502);
    assert!(r.text().contains("407"), "{}", r.text());
    let line = wrong.wait_stderr_line(&["refused CONNECT", "407"]);
    assert!(line.contains("reason=rejected"), "{line}");
}

#[test]
fn requests_and_tunnels_through_tinyproxy() {
    let origin = Origin::fixed("via tinyproxy");
    let target = echo_server();
    let parent = tinyproxy(&[target.port()], None);
    let hg = hopgate_via(&format!("http://{}", parent.addr), target.port());
    let (code, body, err) = curl(&["-x", &hg.url(), &origin.url("/t")]);
    assert_eq!((code, body.as_slice()), (200, &b"via tinyproxy"[..]), "{err}\n{}", parent.log_text());
    assert_eq!(tunnel_roundtrip(hg.addr, target), b"ping through two proxies");
}

#[test]
fn the_target_policy_still_applies_to_address_literals() {
    let parent = tinyproxy(&[443], None);
    let hg = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--parent", &format!("http://{}", parent.addr)]);
    let (code, _, _) = curl(&["-x", &hg.url(), "http://127.0.0.1:9/"]);
    assert_eq!(code, 403);
    let r = support::exchange(hg.addr, "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 403);
}
