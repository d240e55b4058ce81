//! The command line: the embedded default, `check` on every example and on broken files, `run`, `gateway`.

mod support;

use std::process::{Command, Stdio};

use support::origin::Origin;
use support::{Hopgate, bin, curl, repo, wait_child};

#[test]
fn every_example_config_checks() {
    let dir = repo().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = Command::new(bin()).arg("check").arg(&path).output().unwrap();
        assert!(out.status.success(), "{} does not check:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(": ok"), "{stdout}");
        assert!(stdout.contains("listener "), "the summary lists listeners: {stdout}");
        n += 1;
    }
    assert!(n >= 3, "examples/ has {n} configs");
}

#[test]
fn check_reports_file_and_line() {
    let cases = [
        ("[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"300.0.0.0/8\"]\n", 4, "CIDR"),
        ("[timeouts]\nidle_secs = \"soon\"\n", 2, "seconds"),
        ("[[listener]]\nlisten = \"127.0.0.1:0\"\nbogus_key = 1\n[listener.proxy]\n", 3, "bogus_key"),
        ("[[listener]]\nlisten = \"127.0.0.1:0\"\n\n[[listener.route]]\nto = \"gopher://x:70\"\n", 5, "gopher"),
        ("[[listener]]\nlisten = \"127.0.0.1:0\n", 2, ""),
        ("drain_secs = 1\n", 1, "listener"),
    ];
    for (text, line, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for cmd in ["check", "run"] {
            let out = Command::new(bin()).arg(cmd).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{cmd} {text:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            let want = format!("{}:{line}: ", path.display());
            assert!(err.starts_with(&want), "{cmd} {text:?}: expected {want:?} in {err:?}");
            assert!(err.contains(needle), "{err}");
        }
    }
}

#[test]
fn check_names_the_line_of_route_keys_the_room_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let cgi = dir.path().join("cgi-bin");
    std::fs::create_dir(&cgi).unwrap();
    std::fs::write(dir.path().join("file.txt"), "not a directory").unwrap();
    let head = "[[listener]]\nlisten = \"127.0.0.1:0\"\n\n[[listener.route]]\n";
    let cases = [
        ("to = \"cgi:cgi-bin\"\nroot = \".\"\n", 6, "root only applies to fastcgi"),
        ("to = \"cgi:cgi-bin\"\nindex = \"../x\"\n", 6, "plain file name"),
        ("to = \"fastcgi://127.0.0.1:9000\"\nroot = \"file.txt\"\n", 6, "not a directory"),
        ("to = \"fastcgi://127.0.0.1:9000\"\nsplit_path = \"\"\n", 6, "split_path"),
        ("to = \"http://127.0.0.1:9000\"\nuploads = false\n", 6, "uploads only applies to ftp"),
        ("to = \"http://127.0.0.1:9000\"\nscript_timeout_secs = 5\n", 6, "script_timeout_secs only applies"),
        ("to = \"scgi://127.0.0.1:4000\"\nmax_scripts = 2\n", 6, "max_scripts only applies to cgi"),
        ("to = \"scgi://127.0.0.1:4000\"\nindex = \"i.sh\"\n", 6, "index only applies"),
        ("to = \"ftp://127.0.0.1/pub/../etc\"\n", 5, ". or .. segment"),
        ("to = \"ftp://a%0D%0ADELE%20x:p@127.0.0.1/\"\n", 5, "CR, LF or NUL"),
    ];
    for (route, line, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{head}{route}")).unwrap();
        let out = Command::new(bin()).arg("check").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{route:?}: {err}");
        let want = format!("{}:{line}: ", path.display());
        assert!(err.starts_with(&want), "{route:?}: expected {want:?} in {err:?}");
        assert!(err.contains(needle), "{route:?}: {err}");
    }
    // The same on the command line: exit 2 before anything listens, or exit 1 naming the root.
    for to_and_flag in [&["ftp://127.0.0.1/a/../b"][..], &["http://127.0.0.1:9000", "--ca", "/etc/hostname"]] {
        let out = Command::new(bin()).args(["gateway", "--listen", "127.0.0.1:0", "--to"]).args(to_and_flag).output();
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(2), "{to_and_flag:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let file = dir.path().join("file.txt");
    let out = Command::new(bin())
        .args(["gateway", "--listen", "127.0.0.1:0", "--to", "fastcgi://127.0.0.1:9000", "--root"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_of_a_missing_file_is_exit_2() {
    let out = Command::new(bin()).args(["check", "/nonexistent/hopgate.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hopgate.toml"));
}

#[test]
fn embedded_default_is_a_proxy_on_8080() {
    let origin = Origin::fixed("default");
    // The embedded default listens on 127.0.0.1:8080. If that port is taken on this machine, say so clearly.
    let Ok(taken) = std::net::TcpListener::bind("127.0.0.1:8080") else {
        panic!("127.0.0.1:8080 is in use on this machine: the embedded-default test needs it free");
    };
    // While something else holds it: one clear line naming the address and the cause, and a failing exit.
    let mut child =
        Command::new(bin()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let Some(status) = wait_child(&mut child, std::time::Duration::from_secs(10)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("hopgate kept running although 127.0.0.1:8080 is taken");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen on 127.0.0.1:8080") && err.contains("in use"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
    drop(taken);
    let hg = Hopgate::start(&[]);
    assert_eq!(hg.listening, vec!["http://127.0.0.1:8080".to_string()]);
    // Loopback origins are refused by the default target policy: the proxy answers 403 itself.
    let (code, body, _) = curl(&["-x", "http://127.0.0.1:8080", &origin.url("/")]);
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn run_serves_several_listeners_from_one_file() {
    let a = Origin::fixed("from a");
    let b = Origin::fixed("from b");
    let hg = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.1/32\"]\n\n\
         [[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\npath = \"/b\"\nto = \"http://{}/\"\n\
         [[listener.route]]\nto = \"http://{}\"\n",
        b.addr, a.addr
    ));
    assert_eq!(hg.listening.len(), 2);
    let (code, body, _) = curl(&["-x", &hg.listening[0], &a.url("/x")]);
    assert_eq!((code, body.as_slice()), (200, &b"from a"[..]));
    let (code, body, _) = curl(&[&format!("{}/b/thing?q=1", hg.listening[1])]);
    assert_eq!((code, body.as_slice()), (200, &b"from b"[..]));
    assert_eq!(b.last().target, "/thing?q=1", "the route prefix is replaced by the target's base");
    let (code, body, _) = curl(&[&format!("{}/other", hg.listening[1])]);
    assert_eq!((code, body.as_slice()), (200, &b"from a"[..]));
    assert_eq!(a.last().target, "/other");
}

#[test]
fn a_route_prefix_is_replaced_by_the_base_on_segment_boundaries_and_put_back_into_location() {
    let app = Origin::start(|seen, s| {
        let location = format!("http://{}/base/next", seen.header("x-self").unwrap_or(""));
        support::origin::respond(s, "HTTP/1.1 302 Found", &[("Location", &location)], b"");
        support::origin::Next::KeepAlive
    });
    let other = Origin::fixed("other");
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\npath = \"/app/\"\n\
         to = \"http://{}/base\"\n[[listener.route]]\nto = \"http://{}\"\n",
        app.addr, other.addr
    ));
    for (path, upstream) in [("/app", "/base"), ("/app/", "/base/"), ("/app/x/y?q=1", "/base/x/y?q=1")] {
        let r = support::exchange(
            hg.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: public.example\r\nX-Self: {}\r\n\r\n", app.addr),
        );
        assert_eq!(r.status, 302, "{path}: {}", r.text());
        assert_eq!(app.last().target, upstream, "{path}");
        assert_eq!(r.header("location"), Some("http://public.example/app/next"), "{path}");
    }
    // Not under /app on a segment boundary: the other route, with the path whole.
    for path in ["/apple", "/ap", "/x/app"] {
        let r = support::exchange(hg.addr, &format!("GET {path} HTTP/1.1\r\nHost: public.example\r\n\r\n"));
        assert_eq!((r.status, r.text().as_str()), (200, "other"), "{path}");
        assert_eq!(other.last().target, path);
    }
    assert_eq!(app.count(), 3);
}

#[test]
fn gateway_passes_host_and_sets_forwarded_fields() {
    let origin = Origin::start(|_, s| {
        support::origin::respond(s, "HTTP/1.1 302 Found", &[("Location", "http://PLACEHOLDER/base/next")], b"");
        support::origin::Next::KeepAlive
    });
    let to = format!("http://{}/base", origin.addr);
    let hg = Hopgate::gateway(&to, &[]);
    let r = support::exchange(
        hg.addr,
        "GET /page?x=1 HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n",
    );
    assert_eq!(r.status, 302);
    let seen = origin.last();
    assert_eq!(seen.target, "/base/page?x=1");
    assert_eq!(seen.header("host"), Some("public.example"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("public.example"));
    assert_eq!(seen.header("forwarded"), Some("for=127.0.0.1;proto=http;host=\"public.example\""));
}

#[test]
fn gateway_rewrites_upstream_locations() {
    let origin = Origin::start(|seen, s| {
        let upstream = seen.header("x-self").unwrap_or("").to_string();
        support::origin::respond(
            s,
            "HTTP/1.1 302 Found",
            &[("Location", &format!("http://{upstream}/base/next?a=b"))],
            b"",
        );
        support::origin::Next::KeepAlive
    });
    let to = format!("http://{}/base", origin.addr);
    let hg = Hopgate::gateway(&to, &[]);
    let r = support::exchange(
        hg.addr,
        &format!("GET / HTTP/1.1\r\nHost: public.example:8443\r\nX-Self: {}\r\n\r\n", origin.addr),
    );
    assert_eq!(r.header("location"), Some("http://public.example:8443/next?a=b"));
}

#[test]
fn gateway_refuses_dot_segments_that_would_leave_the_base() {
    let origin = Origin::fixed("origin");
    let to = format!("http://{}/base", origin.addr);
    let hg = Hopgate::gateway(&to, &[]);
    for path in ["/../secret", "/a/%2e%2e/%2E%2E/secret", "/.%2e/secret", "/./x", "/..;/secret"] {
        let r = support::exchange(hg.addr, &format!("GET {path} HTTP/1.1\r\nHost: public.example\r\n\r\n"));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().starts_with("hopgate: 400 Bad Request\n"), "{path}: {}", r.text());
    }
    assert!(origin.seen.lock().unwrap().is_empty(), "nothing reached the origin");
    let (code, body, _) = curl(&[&format!("{}/a/b", hg.url())]);
    assert_eq!((code, body.as_slice()), (200, &b"origin"[..]));
    assert_eq!(origin.last().target, "/base/a/b");
}

#[test]
fn gateway_answers_options_asterisk_itself() {
    let origin = Origin::fixed("origin");
    let to = format!("http://{}/base", origin.addr);
    let hg = Hopgate::gateway(&to, &[]);
    let r = support::exchange(hg.addr, "OPTIONS * HTTP/1.1\r\nHost: public.example\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")), "{:?}", r.headers);
    let r = support::exchange(hg.addr, "GET * HTTP/1.1\r\nHost: public.example\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(origin.seen.lock().unwrap().is_empty(), "never forwarded as /base*");
}

#[test]
fn check_refuses_what_run_could_not_serve() {
    let dir = support::temp_files(&[
        (
            "twice.toml",
            "[[listener]]\nlisten = \"127.0.0.1:18999\"\n[listener.proxy]\n\n\
             [[listener]]\nlisten = \"http://127.0.0.1:18999\"\n[listener.proxy]\n",
        ),
        ("via.toml", "[[listener]]\nlisten = \"127.0.0.1:0\"\nvia_name = \"two words\"\n[listener.proxy]\n"),
    ]);
    for (file, line, what) in [("twice.toml", 6, "already"), ("via.toml", 3, "via_name")] {
        let path = dir.path().join(file);
        let out = Command::new(bin()).args(["check", path.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(&format!("{}:{line}: ", path.display())) && err.contains(what), "{file}: {err}");
    }
}

/// A supervisor (or a test) that sends SIGTERM as soon as hopgate says `listening on` must get a drain and exit 0,
/// not a process killed by the signal. Measured before this test: right after the `listening on` line SIGTERM had
/// no handler yet in 32 of 40 starts (cli::run prints the line, then Server::run installs the handlers when it
/// first polls shutdown_signal), and a tunnel open at that moment was cut with the process (exit by signal 15).
#[test]
fn sigterm_is_handled_by_the_time_hopgate_says_listening() {
    for _ in 0..5 {
        let hg = Hopgate::start(&["proxy", "--listen", "127.0.0.1:0"]);
        assert!(hg.catches(libc::SIGTERM), "no SIGTERM handler yet although hopgate said: {:?}", hg.listening);
        assert!(hg.catches(libc::SIGINT), "no SIGINT handler yet although hopgate said: {:?}", hg.listening);
    }
}

/// A file a config names (or the config itself) that is a device or a FIFO is refused at its line: reading
/// /dev/zero never ends and a FIFO blocks, so `check` would hang or run out of memory.
#[test]
fn check_refuses_files_that_are_not_regular() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils)");
    assert!(made.success());
    let cases = [
        ("[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nca = \"/dev/zero\"\n", 4),
        ("[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nusers = \"fifo\"\n", 4),
        (
            "[[listener]]\nlisten = \"https://127.0.0.1:0\"\n[listener.proxy]\n[[listener.tls]]\n\
             cert = \"/dev/zero\"\nkey = \"/dev/zero\"\n",
            5,
        ),
    ];
    let run = |args: &[&std::ffi::OsStr]| {
        let mut child = Command::new(bin()).args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hopgate {args:?} still runs after 15 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    for (text, line) in cases {
        let path = dir.path().join("special.toml");
        std::fs::write(&path, text).unwrap();
        let out = run(&["check".as_ref(), path.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(err.contains(&format!("{}:{line}: ", path.display())) && err.contains("not a regular file"), "{err}");
    }
    let out = run(&["check".as_ref(), "/dev/zero".as_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/dev/zero") && err.contains("not a regular file"), "{err}");
}

#[test]
fn policy_and_intercept_flags_refuse_what_cant_work() {
    for (args, says) in [
        (&["--intercept", "--users", "u"][..], "--intercept and --users: intercepted clients"),
        (&["--tproxy", "--parent", "http://p:3128"], "--tproxy and --parent"),
        (&["--intercept", "--listen", "https://127.0.0.1:0"], "--intercept needs a plain --listen address"),
        (&["--spoof-source"], "--tproxy"),
        (&["--intercept", "--tproxy"], "cannot be used with"),
        (&["--no-host-verify"], "--no-host-verify needs --intercept or --tproxy"),
        (&["--deny-domain", "a b"], "\"a b\" is not a domain pattern"),
        (&["--allow-domain", "a.*.example"], "is not a domain pattern"),
        (&["--max-bytes-per-second", "1000"], "1024"),
        (&["--max-requests-per-second", "0"], "--max-requests-per-second"),
    ] {
        let out = Command::new(bin()).arg("proxy").args(args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // What works starts: an intercepting listener and a policy from flags.
    let hg = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--intercept",
        "--deny-domain",
        "*.blocked.example",
        "--max-requests-per-second",
        "5",
    ]);
    assert!(hg.listening[0].starts_with("http://127.0.0.1:"), "{:?}", hg.listening);
}
