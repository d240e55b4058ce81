//! The CGI gateway end to end: the real binary (`hopgate gateway --to cgi:DIR`, or a config file), curl and raw
//! sockets, against /bin/sh and /usr/bin/python3 scripts written here: the environment variable by variable, stdin
//! echo by sha256, Status, local and client redirects, output streamed as the script writes it, the timeout killing
//! the process group, crash and bad heads, stderr in the log, 403 without the contents, traversal and symlink
//! escapes, nph-, the slot limit.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cgi::{ENV_PY, Scripts, get, gone, read_pids, wait_gone};
use support::{DataFile, Raw, curl, env_of, exchange, sha256_hex};

#[test]
fn environment_variable_by_variable() {
    let s = Scripts::new();
    s.add("env.py", ENV_PY);
    let h = s.gateway(&[]);
    let mut c = Raw::connect(h.addr);
    let client_port = c.stream.local_addr().unwrap().port();
    c.send(
        "GET /env.py/more/info%20here?x=1&y=%20 HTTP/1.1\r\nHost: cgi.test:8000\r\n\
         Proxy: http://evil.test:3128\r\nAuthorization: Basic c2VjcmV0\r\nProxy-Authorization: Basic eDp5\r\n\
         X-Custom: yes\r\nX_Under: no\r\nX.Dot: no\r\nCookie: a=1\r\nConnection: keep-alive, X-Secret\r\n\
         X-Secret: hidden\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let env = env_of(&r.text());
    let real = std::fs::canonicalize(&s.dir).unwrap();
    let want = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("SERVER_NAME", "cgi.test".into()),
        ("SERVER_PORT", h.addr.port().to_string()),
        ("REQUEST_METHOD", "GET".into()),
        ("REQUEST_URI", "/env.py/more/info%20here?x=1&y=%20".into()),
        ("QUERY_STRING", "x=1&y=%20".into()),
        ("SCRIPT_NAME", "/env.py".into()),
        ("PATH_INFO", "/more/info here".into()),
        ("PATH_TRANSLATED", format!("{}/more/info here", real.display())),
        ("SCRIPT_FILENAME", format!("{}/env.py", real.display())),
        ("DOCUMENT_ROOT", real.display().to_string()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("REMOTE_PORT", client_port.to_string()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("HTTP_HOST", "cgi.test:8000".into()),
        ("HTTP_X_CUSTOM", "yes".into()),
        ("HTTP_COOKIE", "a=1".into()),
    ];
    for (name, value) in &want {
        assert_eq!(env.get(*name), Some(value), "{name} in {env:#?}");
    }
    assert!(env["SERVER_SOFTWARE"].starts_with("hopgate/"), "{env:?}");
    // httpoxy, credentials, odd names, hop-by-hop fields and what Connection names: none reach the script.
    for absent in [
        "HTTP_PROXY",
        "HTTP_AUTHORIZATION",
        "HTTP_PROXY_AUTHORIZATION",
        "HTTP_X_UNDER",
        "HTTP_X_DOT",
        "HTTP_X_SECRET",
        "HTTP_CONNECTION",
        "HTTP_KEEP_ALIVE",
        "HTTP_TE",
        "HTTPS",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
    ] {
        assert!(!env.contains_key(absent), "{absent} was passed: {env:#?}");
    }
    assert_eq!(env.len(), want.len() + 1, "exactly these variables and SERVER_SOFTWARE: {env:#?}");
}

#[test]
fn route_prefix_and_pass_authorization_from_a_config_file() {
    let s = Scripts::new();
    s.add("env.py", ENV_PY);
    let h = s.config("path = \"/cgi-bin\"\npass_authorization = true");
    let r = exchange(
        h.addr,
        "POST /cgi-bin/env.py/a/b?q HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c2VjcmV0\r\n\
         Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let env = env_of(&r.text());
    assert_eq!(env["SCRIPT_NAME"], "/cgi-bin/env.py");
    assert_eq!(env["PATH_INFO"], "/a/b");
    assert_eq!(env["REQUEST_URI"], "/cgi-bin/env.py/a/b?q");
    assert_eq!(env["HTTP_AUTHORIZATION"], "Basic c2VjcmV0");
    assert_eq!(env["CONTENT_LENGTH"], "3");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(get(&h, "/cgi-bin").status, 404);
    assert_eq!(get(&h, "/elsewhere/env.py").status, 404);
}

#[test]
fn post_bodies_reach_stdin_with_and_without_content_length() {
    let s = Scripts::new();
    s.add(
        "echo.sh",
        "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\nX-Length: %s\\r\\n\\r\\n' \"$CONTENT_LENGTH\"\n\
         exec cat\n",
    );
    let h = s.gateway(&[]);
    let url = format!("{}/echo.sh", h.url());
    for (size, chunked) in [(8 << 20, false), (3 << 20, true), (1000, true)] {
        let data: Vec<u8> = (0..size as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let input = DataFile::new(&data);
        let mut args = vec!["-D", "-", "--data-binary"];
        let at = input.at();
        args.push(&at);
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        args.push(&url);
        let (code, mut out, err) = curl(&args);
        assert_eq!(code, 200, "{err}");
        // curl sends Expect: 100-continue for large bodies: skip the interim response.
        while out.starts_with(b"HTTP/1.1 100") {
            let end = support::find(&out, b"\r\n\r\n").unwrap() + 4;
            out.drain(..end);
        }
        let end = support::find(&out, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
        assert!(head.contains(&format!("x-length: {size}\r\n")), "CONTENT_LENGTH given (chunked: {chunked}): {head}");
        assert_eq!(out.len() - end, size, "chunked: {chunked}");
        assert_eq!(sha256_hex(&out[end..]), sha256_hex(&data), "chunked: {chunked}");
    }
}

#[test]
fn oversized_chunked_body_is_411() {
    let s = Scripts::new();
    s.add("echo.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec cat\n");
    let h = s.gateway(&[]);
    let mut c = Raw::connect(h.addr);
    c.send("POST /echo.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            if w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                || w.write_all(&chunk).is_err()
                || w.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let r = c.response();
    assert_eq!(r.status, 411, "{}", r.text());
    assert!(r.text().contains("without Content-Length"), "{}", r.text());
    drop(c);
    writer.join().unwrap();
}

#[test]
fn status_and_redirects() {
    let s = Scripts::new();
    s.add("missing.sh", "#!/bin/sh\nprintf 'Status: 404 Not Found\\nContent-Type: text/plain\\n\\nno such record'\n")
        .add("redirect.sh", "#!/bin/sh\ncat > /dev/null\nprintf 'Location: /target.sh/p?from=redirect\\n\\n'\n")
        .add(
            "target.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
             echo \"$REQUEST_METHOD $QUERY_STRING $PATH_INFO [$CONTENT_LENGTH] $REQUEST_URI\"\n",
        )
        .add("loop.sh", "#!/bin/sh\nprintf 'Location: /loop.sh\\n\\n'\n")
        .add("away.sh", "#!/bin/sh\nprintf 'Location: http://other.test/x\\nContent-Type: text/plain\\n\\nmoved'\n")
        .add("seeother.sh", "#!/bin/sh\nprintf 'Status: 303 See Other\\nLocation: /target.sh\\n\\n'\n")
        .add("typed.sh", "#!/bin/sh\nprintf 'Content-Type: text/html\\nLocation: /target.sh?typed\\n\\nignored'\n");
    let h = s.gateway(&[]);

    let r = get(&h, "/missing.sh");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no such record", "the script's own body, not a hopgate page");

    let r =
        exchange(h.addr, "POST /redirect.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "GET from=redirect /p [] /target.sh/p?from=redirect\n", "served internally, as a GET");
    assert!(r.header("location").is_none());

    let r = get(&h, "/loop.sh");
    assert_eq!(r.status, 502);
    assert!(r.text().starts_with("hopgate: 502"), "{}", r.text());
    assert!(r.text().contains("local redirect loop: /loop.sh -> /loop.sh"), "{}", r.text());

    let r = get(&h, "/away.sh");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://other.test/x"));
    assert_eq!(r.text(), "moved");

    // A local Location with other fields but no Status: served internally too, as Apache does.
    let r = get(&h, "/typed.sh");
    assert_eq!((r.status, r.text().as_str()), (200, "GET typed  [] /target.sh?typed\n"));

    let r = get(&h, "/seeother.sh");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/target.sh"));
}

#[test]
fn local_redirect_outside_the_route_becomes_a_302() {
    let s = Scripts::new();
    s.add("out.sh", "#!/bin/sh\nprintf 'Location: /static/page.html\\n\\n'\n");
    let h = s.config("path = \"/cgi-bin\"");
    let r = get(&h, "/cgi-bin/out.sh");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/static/page.html"));
}

/// A shell fragment that waits (at most 10 s, then says `gave-up`) until `file` exists. The test creates the file
/// once it has received what the script wrote before: that output can only have come while the script was running.
fn wait_for_file(file: &Path) -> String {
    format!(
        "i=0; while [ ! -e {f} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; [ -e {f} ] || echo gave-up\n",
        f = file.display()
    )
}

#[test]
fn output_streams_as_the_script_writes_it() {
    let s = Scripts::new();
    let (go1, go2) = (s.outside("go1"), s.outside("go2"));
    s.add(
        "slow.sh",
        &format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho first\n{}echo second\n{}echo third\n",
            wait_for_file(&go1),
            wait_for_file(&go2)
        ),
    );
    let h = s.gateway(&[]);
    let mut c = Raw::connect(h.addr);
    c.send("GET /slow.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    // Each line arrives while the script still waits for the test to let it go on.
    let got = c.read_until(b"first");
    assert!(got.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{got}");
    std::fs::write(&go1, "").unwrap();
    c.read_until(b"second");
    std::fs::write(&go2, "").unwrap();
    let got = c.read_until(b"0\r\n\r\n");
    assert!(got.contains("third") && !got.contains("gave-up"), "{got}");
}

#[test]
fn hang_is_504_after_script_timeout_and_the_group_is_gone() {
    let s = Scripts::new();
    let pids = s.outside("pids");
    s.add("hang.sh", &format!("#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nsleep 300\n", pids.display()));
    let h = s.config("script_timeout_secs = 1");
    let start = Instant::now();
    let r = get(&h, "/hang.sh");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().starts_with("hopgate: 504"), "{}", r.text());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "answered after {took:?}");
    let p = read_pids(&pids);
    wait_gone(p[0], false);
    wait_gone(p[1], true);
}

/// Clients may half-close (server::http1_builder), so a client that went away is noticed when hopgate next writes
/// to it: the script here writes a line every 0.2 s.
#[test]
fn client_going_away_kills_the_script_group() {
    let s = Scripts::new();
    let pids = s.outside("pids");
    s.add(
        "long.sh",
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nprintf 'Content-Type: text/plain\\n\\nstarted\\n'\n\
             i=0\nwhile [ $i -lt 1500 ]; do sleep 0.2; echo tick; i=$((i+1)); done\n",
            pids.display()
        ),
    );
    let h = s.gateway(&[]);
    let mut c = Raw::connect(h.addr);
    c.send("GET /long.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    c.read_until(b"started");
    let p = read_pids(&pids);
    assert!(!gone(p[0], false));
    drop(c);
    wait_gone(p[0], false);
    wait_gone(p[1], true);
}

#[test]
fn crash_and_bad_heads_are_502() {
    let s = Scripts::new();
    s.add("crash.sh", "#!/bin/sh\nkill -SEGV $$\n")
        .add("bad.sh", "#!/bin/sh\necho 'this is not a header'\necho\necho body\n")
        .add("half.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n'\nexit 1\n")
        .add("killed.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n'\nkill -KILL $$\n")
        .add("silent.py", "#!/usr/bin/python3\nimport sys\nsys.exit(3)\n")
        .add("badstatus.sh", "#!/bin/sh\nprintf 'Status: abc\\n\\n'\n")
        .add("noexec-interp.sh", "#!/nonexistent/interpreter\n");
    let h = s.gateway(&[]);
    for path in ["/crash.sh", "/bad.sh", "/half.sh", "/killed.sh", "/silent.py", "/badstatus.sh", "/noexec-interp.sh"] {
        let r = get(&h, path);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(r.text().starts_with("hopgate: 502 Bad Gateway\n"), "{path}: {}", r.text());
    }
}

#[test]
fn a_script_that_cannot_be_started_is_a_spawn_failure_not_a_connect_failure() {
    let s = Scripts::new();
    s.add("noexec-interp.sh", "#!/nonexistent/interpreter\n");
    let h = s.gateway(&[]);
    let r = get(&h, "/noexec-interp.sh");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.text(), "hopgate: 502 Bad Gateway\ncannot start the script: /noexec-interp.sh\n");
    // The log names the cause (hopgate's own side: spawn) and the OS error.
    let line = h.wait_stderr_line(&["cannot start the script: /noexec-interp.sh"]);
    assert!(line.contains(" WARN ") && line.contains("reason=spawn"), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
}

#[test]
fn short_or_empty_status_is_502_and_the_gateway_keeps_serving() {
    let s = Scripts::new();
    s.add("st2.sh", "#!/bin/sh\nprintf 'Status: 20\\n\\nbody'\n")
        .add("st0.sh", "#!/bin/sh\nprintf 'Status:\\nContent-Type: text/plain\\n\\nbody'\n")
        .add("st1.sh", "#!/bin/sh\nprintf 'Status: 5\\r\\n\\r\\n'\n")
        .add("ok.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nstill here'\n");
    let h = s.gateway(&[]);
    // One kept-alive connection: a bad head is hopgate's 502 page, and the connection carries on.
    let mut c = Raw::connect(h.addr);
    for path in ["/st2.sh", "/st0.sh", "/st1.sh"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let r = c.response();
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(r.text().starts_with("hopgate: 502 Bad Gateway\n"), "{path}: {}", r.text());
        assert!(r.text().contains("Status"), "{path}: {}", r.text());
    }
    c.send("GET /ok.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "still here"));
    assert!(!h.stderr_text().contains("panicked"), "{}", h.stderr_text());
}

#[test]
fn not_executable_is_403_and_its_contents_never_sent() {
    let s = Scripts::new();
    s.add_mode("secret.sh", "#!/bin/sh\necho TOPSECRET-CONTENTS\n", 0o644);
    let h = s.gateway(&[]);
    for path in ["/secret.sh", "/secret.sh/path/info"] {
        let r = get(&h, path);
        assert_eq!(r.status, 403, "{path}");
        assert!(!r.text().contains("TOPSECRET"), "{}", r.text());
        assert!(r.text().starts_with("hopgate: 403"), "{}", r.text());
    }
}

#[test]
fn traversal_and_symlink_escapes_are_404() {
    let s = Scripts::new();
    let outside = s.outside("outside.sh");
    std::fs::write(&outside, "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nESCAPED'\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.add("hello.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello'\n").add("sub/inner.sh", "#!/bin/sh\n");
    std::os::unix::fs::symlink(&outside, s.dir.join("link.sh")).unwrap();
    std::os::unix::fs::symlink(s.tmp.path(), s.dir.join("up")).unwrap();
    std::os::unix::fs::symlink(s.dir.join("hello.sh"), s.dir.join("alias.sh")).unwrap();
    let h = s.gateway(&[]);
    for path in [
        "/../outside.sh",
        "/sub/../../outside.sh",
        "/%2e%2e/outside.sh",
        "/%2E%2E/outside.sh",
        "/sub/%2e%2e/%2e%2e/outside.sh",
        "/sub%2f..%2f..%2foutside.sh",
        "/.%2e/outside.sh",
        "/link.sh",
        "/up/outside.sh",
        "/nonexistent.sh",
        "/",
    ] {
        let r = get(&h, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("ESCAPED"), "{path}");
    }
    let r = get(&h, "/alias.sh");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "a symlink that stays inside is fine");
}

#[test]
fn escapes_that_are_not_two_hex_digits_are_404() {
    let s = Scripts::new();
    s.add("ok.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n[%s]' \"$PATH_INFO\"\n");
    let h = s.gateway(&[]);
    assert_eq!(get(&h, "/ok.sh/a%41b").text(), "[/aAb]");
    for path in ["/ok.sh/a%+Ab", "/ok.sh/%+41", "/ok.sh/a%4", "/ok.sh/a%zz"] {
        let r = get(&h, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
}

#[test]
fn nph_scripts_are_passed_through() {
    let s = Scripts::new();
    let go = s.outside("go");
    s.add(
        "nph-raw.sh",
        "#!/bin/sh\nprintf 'HTTP/1.1 299 Custom Thing\\r\\nX-Raw: 1\\r\\nContent-Length: 8\\r\\n\\r\\nraw body'\n",
    )
    .add("nph-bare.sh", "#!/bin/sh\nprintf 'HTTP/1.0 404 Not Found\\r\\n\\r\\nnothing'\n")
    .add(
        "nph-slow.sh",
        &format!(
            "#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\nContent-Type: text/plain\\n\\nearly\\n'\n{}echo late\n",
            wait_for_file(&go)
        ),
    )
    .add("nph-junk.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nnot a status line'\n");
    let h = s.gateway(&[]);
    let r = get(&h, "/nph-raw.sh");
    assert!(r.head.starts_with("HTTP/1.1 299 Custom Thing\r\n"), "{}", r.head);
    assert_eq!(r.header("x-raw"), Some("1"));
    assert_eq!(r.header("content-length"), Some("8"));
    assert_eq!(r.text(), "raw body");
    let r = get(&h, "/nph-bare.sh");
    assert_eq!((r.status, r.text().as_str()), (404, "nothing"));
    // nph- output streams too: "early" arrives while the script waits for the test.
    let mut c = Raw::connect(h.addr);
    c.send("GET /nph-slow.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    c.read_until(b"early");
    std::fs::write(&go, "").unwrap();
    let all = c.read_until(b"0\r\n\r\n");
    assert!(all.ends_with("\r\n\r\n6\r\nearly\n\r\n5\r\nlate\n\r\n0\r\n\r\n"), "{all:?}");
    let r = get(&h, "/nph-junk.sh");
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn index_script_for_directory_paths() {
    let s = Scripts::new();
    s.add("index.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nroot index %s' \"$SCRIPT_NAME\"\n")
        .add("sub/index.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nsub index %s' \"$SCRIPT_NAME\"\n");
    let h = s.gateway(&["--index", "index.sh"]);
    assert_eq!(get(&h, "/").text(), "root index /index.sh");
    assert_eq!(get(&h, "/sub/").text(), "sub index /sub/index.sh");
    let out = std::process::Command::new(support::bin())
        .args(["gateway", "--listen", "127.0.0.1:0", "--to", "http://127.0.0.1:1", "--root", "/tmp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--root with an http target is refused");
}

#[test]
fn index_does_not_become_the_path_info_of_a_script() {
    let s = Scripts::new();
    let dump = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n%s|%s' \"$SCRIPT_NAME\" \"$PATH_INFO\"\n";
    s.add("index.sh", dump).add("env.sh", dump).add("sub/index.sh", dump);
    let h = s.gateway(&["--index", "index.sh"]);
    assert_eq!(get(&h, "/env.sh/").text(), "/env.sh|/");
    assert_eq!(get(&h, "/env.sh/a/").text(), "/env.sh|/a/");
    assert_eq!(get(&h, "/env.sh/a").text(), "/env.sh|/a");
    assert_eq!(get(&h, "/sub/").text(), "/sub/index.sh|");
    assert_eq!(get(&h, "/").text(), "/index.sh|");
    assert_eq!(get(&h, "/missing/").status, 404);
}

#[test]
fn script_slots_queue_requests() {
    let s = Scripts::new();
    s.add(
        "timed.py",
        "#!/usr/bin/python3\nimport time\nstart = time.time()\ntime.sleep(0.5)\n\
         print('Content-Type: text/plain')\nprint()\nprint(start, time.time())\n",
    );
    let h = s.config("max_scripts = 1");
    let addr = h.addr;
    let run = move || {
        let r = exchange(addr, "GET /timed.py HTTP/1.1\r\nHost: cgi.test\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Vec<f64> = r.text().split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    let a = std::thread::spawn(run);
    let b = std::thread::spawn(run);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
    assert!(second.0 >= first.1, "second script started at {} before the first ended at {}", second.0, first.1);
}

#[test]
fn head_and_keep_alive() {
    let s = Scripts::new();
    s.add("hello.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhello %s' \"$REQUEST_METHOD\"\n");
    let h = s.gateway(&[]);
    let mut c = Raw::connect(h.addr);
    for _ in 0..3 {
        c.send("GET /hello.sh HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "hello GET"));
        assert!(r.header("via").is_none(), "an origin-side gateway adds no Via");
        assert!(r.header("date").is_some());
    }
    c.send("HEAD /hello.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response_to("HEAD");
    assert_eq!(r.status, 200);
    let (code, body, _) = curl(&["--http1.0", &format!("{}/hello.sh", h.url())]);
    assert_eq!((code, body.as_slice()), (200, &b"hello GET"[..]));
}

#[test]
fn stderr_lines_go_to_the_log() {
    let s = Scripts::new();
    s.add(
        "noisy.sh",
        "#!/bin/sh\necho 'first complaint' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\necho 'second complaint' >&2\n",
    );
    let h = s.gateway(&[]);
    let r = get(&h, "/noisy.sh");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let log = h.stderr_with("second complaint", 1);
    let line = log.lines().find(|l| l.contains("first complaint")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("WARN") && line.contains("/noisy.sh"), "{line}");
}

/// `script_total_secs` (issue 15): a script that keeps writing is never silent, so only its total ends it; the
/// response already under way is cut (no last chunk), never passed off as complete, and its group is killed.
#[test]
fn a_trickling_script_is_killed_at_its_total_and_the_response_cut() {
    let s = Scripts::new();
    let pids = s.outside("pids");
    s.add(
        "trickle.sh",
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nprintf 'Content-Type: text/plain\\n\\n'\n\
             while true; do echo tick; sleep 0.2; done\n",
            pids.display()
        ),
    );
    s.add("late.sh", "#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\n\\nlate\\n'\n");
    let h = s.config("script_timeout_secs = 10\nscript_total_secs = 1");
    let mut c = Raw::connect(h.addr);
    c.send("GET /trickle.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_until(b"\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("transfer-encoding: chunked"), "{head}");
    // Bounded: a script that is never killed keeps the response going; 15 s is far past its 1 s total.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "still streaming after 15 s: the script was never killed");
        match std::io::Read::read(&mut c.stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let rest = String::from_utf8_lossy(&got).into_owned();
    assert!(rest.contains("tick"), "{rest}");
    assert!(!rest.ends_with("0\r\n\r\n"), "a cut response has no last chunk: {rest:?}");
    let p = read_pids(&pids);
    wait_gone(p[0], false);
    wait_gone(p[1], true);
    // Past its total before its head: 504.
    let r = get(&h, "/late.sh");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("ran past its total of 1s"), "{}", r.text());
}
