//! In memory: CGI meta-variables (RFC 3875 §4.1), the CGI response head (§6), and script
//! resolution on a temp dir (traversal, encoded dots and slashes, symlinks, execute bits).

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use hopgate::backend::meta::{
    self, ConnInfo, FastCgiLayout, GatewayErrorKind, HeadKind, HeadParser, MetaInput, ScriptPath,
};
use hopgate::error::Error;
use http::{Request, StatusCode, Version};

fn conn() -> ConnInfo {
    ConnInfo {
        remote: "192.0.2.7:40000".parse().unwrap(),
        local: "127.0.0.1:8080".parse().unwrap(),
        https: false,
        server_name: None,
        server_port: None,
        server_software: "hopgate/test".into(),
    }
}

fn vars_for(req: Request<()>, pass_authorization: bool) -> meta::MetaVars {
    let (parts, ()) = req.into_parts();
    let script = ScriptPath {
        script_name: "/env.cgi".into(),
        path_info: "/extra/path".into(),
        document_root: Some("/srv/cgi".into()),
        script_filename: Some("/srv/cgi/env.cgi".into()),
        path_translated: Some("/srv/cgi/extra/path".into()),
    };
    let content_length = meta::request_content_length(&parts).unwrap();
    meta::build(&parts, &MetaInput { conn: &conn(), script: &script, content_length, pass_authorization })
}

fn get<'a>(v: &'a meta::MetaVars, name: &str) -> Option<&'a str> {
    v.get(name).map(|b| std::str::from_utf8(b).unwrap())
}

#[test]
fn standard_variables() {
    let req = Request::post("/env.cgi/extra/path?a=1&b=%20")
        .header("Host", "example.test:8080")
        .header("Content-Type", "text/plain")
        .header("Content-Length", "5")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .body(())
        .unwrap();
    let v = vars_for(req, false);
    assert_eq!(get(&v, "GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert_eq!(get(&v, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
    assert_eq!(get(&v, "SERVER_SOFTWARE"), Some("hopgate/test"));
    assert_eq!(get(&v, "SERVER_NAME"), Some("example.test"));
    assert_eq!(get(&v, "SERVER_PORT"), Some("8080"));
    assert_eq!(get(&v, "REQUEST_METHOD"), Some("POST"));
    assert_eq!(get(&v, "REQUEST_URI"), Some("/env.cgi/extra/path?a=1&b=%20"));
    assert_eq!(get(&v, "QUERY_STRING"), Some("a=1&b=%20"));
    assert_eq!(get(&v, "SCRIPT_NAME"), Some("/env.cgi"));
    assert_eq!(get(&v, "PATH_INFO"), Some("/extra/path"));
    assert_eq!(get(&v, "PATH_TRANSLATED"), Some("/srv/cgi/extra/path"));
    assert_eq!(get(&v, "SCRIPT_FILENAME"), Some("/srv/cgi/env.cgi"));
    assert_eq!(get(&v, "DOCUMENT_ROOT"), Some("/srv/cgi"));
    assert_eq!(get(&v, "CONTENT_LENGTH"), Some("5"));
    assert_eq!(get(&v, "CONTENT_TYPE"), Some("text/plain"));
    assert_eq!(get(&v, "REMOTE_ADDR"), Some("192.0.2.7"));
    assert_eq!(get(&v, "REMOTE_PORT"), Some("40000"));
    assert_eq!(get(&v, "HTTPS"), None);
    assert_eq!(get(&v, "HTTP_HOST"), Some("example.test:8080"));
    assert_eq!(get(&v, "HTTP_X_MULTI"), Some("one, two"));
    // Not duplicated as HTTP_*.
    assert_eq!(get(&v, "HTTP_CONTENT_TYPE"), None);
    assert_eq!(get(&v, "HTTP_CONTENT_LENGTH"), None);
}

#[test]
fn https_and_http2_authority() {
    let mut c = conn();
    c.https = true;
    c.remote = "[::ffff:10.0.0.1]:1234".parse().unwrap();
    let (parts, ()) = Request::get("https://h2.example/x")
        .version(Version::HTTP_2)
        .header("Cookie", "a=1")
        .header("Cookie", "b=2")
        .body(())
        .unwrap()
        .into_parts();
    let v = meta::build(
        &parts,
        &MetaInput { conn: &c, script: &ScriptPath::default(), content_length: None, pass_authorization: false },
    );
    assert_eq!(get(&v, "HTTPS"), Some("on"));
    assert_eq!(get(&v, "SERVER_PROTOCOL"), Some("HTTP/2.0"));
    assert_eq!(get(&v, "HTTP_HOST"), Some("h2.example"));
    assert_eq!(get(&v, "SERVER_NAME"), Some("h2.example"));
    assert_eq!(get(&v, "REQUEST_URI"), Some("/x"));
    assert_eq!(get(&v, "QUERY_STRING"), Some(""));
    assert_eq!(get(&v, "REMOTE_ADDR"), Some("10.0.0.1"));
    assert_eq!(get(&v, "HTTP_COOKIE"), Some("a=1; b=2"));
    assert_eq!(get(&v, "CONTENT_LENGTH"), None);
}

#[test]
fn httpoxy_authorization_hop_by_hop_and_odd_names() {
    let req = Request::get("/")
        .header("Proxy", "http://evil.example:3128")
        .header("Authorization", "Basic dTpw")
        .header("Proxy-Authorization", "Basic cHJveHk6cA==")
        .header("Connection", "keep-alive, X-Secret")
        .header("X-Secret", "hop")
        .header("Keep-Alive", "timeout=5")
        .header("TE", "trailers")
        .header("X_Under", "spoof")
        .header("X.Dot", "odd")
        .header("X-Fine-1", "ok")
        .body(())
        .unwrap();
    let v = vars_for(req, false);
    assert_eq!(get(&v, "HTTP_PROXY"), None, "httpoxy");
    assert_eq!(get(&v, "HTTP_AUTHORIZATION"), None);
    assert_eq!(get(&v, "HTTP_PROXY_AUTHORIZATION"), None);
    assert_eq!(get(&v, "HTTP_CONNECTION"), None);
    assert_eq!(get(&v, "HTTP_X_SECRET"), None, "named by Connection");
    assert_eq!(get(&v, "HTTP_KEEP_ALIVE"), None);
    assert_eq!(get(&v, "HTTP_TE"), None);
    assert_eq!(get(&v, "HTTP_X_UNDER"), None, "underscore in a header name");
    assert!(v.iter().all(|(n, _)| !n.contains('.')), "dot in a header name");
    assert_eq!(get(&v, "HTTP_X_FINE_1"), Some("ok"));

    let req = Request::get("/").header("Authorization", "Basic dTpw").body(()).unwrap();
    let v = vars_for(req, true);
    assert_eq!(get(&v, "HTTP_AUTHORIZATION"), Some("Basic dTpw"));
}

#[test]
fn chunked_body_without_length_is_411() {
    let (parts, ()) = Request::post("/").header("Transfer-Encoding", "chunked").body(()).unwrap().into_parts();
    let e = meta::request_content_length(&parts).unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::LengthRequired);
    assert_eq!(Error::from(e).status(), StatusCode::LENGTH_REQUIRED);
}

// ---- CGI response heads ----

fn parse_all(bytes: &[u8]) -> Result<(meta::CgiHead, Vec<u8>), meta::GatewayError> {
    let mut p = HeadParser::new();
    match p.feed(bytes)? {
        Some((h, rest)) => Ok((h, rest.to_vec())),
        None => Err(p.eof_error()),
    }
}

#[test]
fn head_lf_and_crlf_byte_by_byte() {
    for text in [
        &b"Content-Type: text/plain\nX-A:  spaced  \n\nbody\n"[..],
        &b"Content-Type: text/plain\r\nX-A:  spaced  \r\n\r\nbody\n"[..],
    ] {
        let mut p = HeadParser::new();
        let mut got = None;
        for (i, b) in text.iter().enumerate() {
            if let Some(r) = p.feed(&[*b]).unwrap() {
                got = Some((i, r));
                break;
            }
        }
        let (i, (head, rest)) = got.expect("head complete");
        let mut body = rest.to_vec();
        body.extend_from_slice(&text[i + 1..]);
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.kind, HeadKind::Document);
        assert_eq!(head.headers["content-type"], "text/plain");
        assert_eq!(head.headers["x-a"], "spaced");
        assert_eq!(body, b"body\n");
    }
}

#[test]
fn head_status_and_redirects() {
    let (h, body) = parse_all(b"Status: 404 Not Found\nContent-Type: text/html\n\nmissing").unwrap();
    assert_eq!(h.status, StatusCode::NOT_FOUND);
    assert!(h.headers.get("status").is_none());
    assert_eq!(body, b"missing");

    let (h, _) = parse_all(b"Location: /other/path?q=1\n\n").unwrap();
    assert_eq!(h.kind, HeadKind::LocalRedirect("/other/path?q=1".into()));

    let (h, _) = parse_all(b"Location: http://example.test/x\n\n").unwrap();
    assert_eq!(h.kind, HeadKind::ClientRedirect("http://example.test/x".into()));
    assert_eq!(h.status, StatusCode::FOUND);
    assert_eq!(h.headers["location"], "http://example.test/x");

    let (h, body) =
        parse_all(b"Location: https://e.test/\nStatus: 301 Moved\nContent-Type: text/plain\n\nmoved").unwrap();
    assert_eq!(h.kind, HeadKind::ClientRedirect("https://e.test/".into()));
    assert_eq!(h.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(body, b"moved");

    // A local path with other fields is a document, not an internal redirect.
    let (h, _) = parse_all(b"Location: /x\nContent-Type: text/plain\n\n").unwrap();
    assert_eq!(h.kind, HeadKind::Document);
    // "//host" is a network-path reference, never served as a local path.
    let (h, _) = parse_all(b"Location: //evil.example/\n\n").unwrap();
    assert_eq!(h.kind, HeadKind::ClientRedirect("//evil.example/".into()));
}

#[test]
fn head_rejects_garbage() {
    for bad in [
        &b"no colon here\n\n"[..],
        b"Bad Name: x\n\n",
        b"X: a\n folded\n\n",
        b"Status: abc\n\n",
        b"Status: 99 Low\n\n",
        b"Status: 200 OK\nStatus: 404 No\n\n",
        b"X-Bad: a\x01b\n\n",
        b"\nbody without head",
    ] {
        let e = parse_all(bad).unwrap_err();
        assert_eq!(e.kind(), GatewayErrorKind::BadResponse, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(Error::from(e).status(), StatusCode::BAD_GATEWAY);
    }
    // Output that ends before the blank line.
    let mut p = HeadParser::new();
    assert!(p.feed(b"Content-Type: text/plain\n").unwrap().is_none());
    assert_eq!(p.eof_error().kind(), GatewayErrorKind::BadResponse);
}

#[test]
fn head_size_is_capped() {
    let mut p = HeadParser::new();
    let line = format!("X-Pad: {}\n", "a".repeat(1000));
    let mut err = None;
    for _ in 0..100 {
        match p.feed(line.as_bytes()) {
            Ok(None) => {}
            Ok(Some(_)) => panic!("no blank line was sent"),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err.expect("capped").kind(), GatewayErrorKind::TooLarge);
    // Just under the cap is fine.
    let mut p = HeadParser::with_limit(100);
    assert!(p.feed(b"A: b\n\n").unwrap().is_some());
}

// ---- script resolution ----

fn write_script(path: &Path, mode: u32) {
    std::fs::write(path, "#!/bin/sh\necho\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn cgi_resolution() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cgi");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_script(&dir.join("sub/run.cgi"), 0o755);
    write_script(&dir.join("nph-raw"), 0o755);
    write_script(&dir.join("plain.txt"), 0o644);
    write_script(&tmp.path().join("secret.cgi"), 0o755);
    write_script(&outside.path().join("escape.cgi"), 0o755);
    symlink(outside.path().join("escape.cgi"), dir.join("link-out")).unwrap();
    symlink(outside.path(), dir.join("dir-out")).unwrap();
    symlink(dir.join("sub/run.cgi"), dir.join("link-in")).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();

    let s = meta::resolve_cgi(&dir, "/sub/run.cgi/a/b%20c/").unwrap();
    assert_eq!(s.path.script_name, "/sub/run.cgi");
    assert_eq!(s.path.path_info, "/a/b c/");
    assert_eq!(s.program, dir.join("sub/run.cgi"));
    assert_eq!(s.path.path_translated, Some(dir.join("a/b c/")));
    assert!(!s.nph);
    assert!(meta::resolve_cgi(&dir, "/nph-raw").unwrap().nph);
    assert_eq!(meta::resolve_cgi(&dir, "/link-in/x").unwrap().path.path_info, "/x");

    let not_found = [
        "/../secret.cgi",
        "/sub/../../secret.cgi",
        "/%2e%2e/secret.cgi",
        "/sub/%2E%2E/%2e%2e/secret.cgi",
        "/sub%2frun.cgi",
        "/sub/run.cgi%00",
        "/./sub/run.cgi",
        "/link-out",
        "/dir-out/escape.cgi",
        "/missing.cgi",
        "/sub/",
        "/",
        "/%zz",
        "relative",
    ];
    for p in not_found {
        let e = meta::resolve_cgi(&dir, p).unwrap_err();
        assert_eq!(e.kind(), GatewayErrorKind::NotFound, "{p}");
    }
    let e = meta::resolve_cgi(&dir, "/plain.txt/more").unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::Forbidden);
    assert_eq!(Error::from(e).status(), StatusCode::FORBIDDEN);
}

#[test]
fn fastcgi_resolution() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    std::fs::write(root.join("index.php"), "<?php").unwrap();
    std::fs::write(root.join("app/index.php"), "<?php").unwrap();
    std::fs::write(root.join("app/run.php"), "<?php").unwrap();
    std::fs::write(root.join("uploads/evil.jpg"), "<?php evil").unwrap();
    std::fs::write(tmp.path().join("outside.php"), "<?php").unwrap();
    let layout = FastCgiLayout {
        root: std::fs::canonicalize(&root).unwrap(),
        split_suffix: ".php".into(),
        index: "index.php".into(),
        symlinks: hopgate::config::Symlinks::Inside,
    };
    let r = &layout.root;

    let s = meta::resolve_fastcgi(&layout, "/app/run.php/x/y").unwrap();
    assert_eq!(s.script_name, "/app/run.php");
    assert_eq!(s.path_info, "/x/y");
    assert_eq!(s.script_filename, Some(r.join("app/run.php")));
    assert_eq!(s.document_root, Some(r.clone()));
    assert_eq!(s.path_translated, Some(r.join("x/y")));

    let s = meta::resolve_fastcgi(&layout, "/app/").unwrap();
    assert_eq!(s.script_name, "/app/index.php");
    assert_eq!(s.path_info, "");
    assert_eq!(s.script_filename, Some(r.join("app/index.php")));
    assert_eq!(meta::resolve_fastcgi(&layout, "/").unwrap().script_name, "/index.php");

    for p in [
        // The cgi.fix_pathinfo trap: must never run uploads/evil.jpg.
        "/uploads/evil.jpg/x.php",
        "/uploads/evil.jpg",
        "/uploads/",
        "/app/missing.php/x",
        "/../outside.php",
        "/%2e%2e/outside.php",
        "/app%2frun.php",
    ] {
        let e = meta::resolve_fastcgi(&layout, p).unwrap_err();
        assert_eq!(e.kind(), GatewayErrorKind::NotFound, "{p}");
    }
}
