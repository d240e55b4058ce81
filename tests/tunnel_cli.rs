//! `hopgate tunnel` as a command: --listen and --stdio, through hopgate, Squid and tinyproxy.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::origin::echo_server;
use support::peers::{chown_nobody, htpasswd, squid, tinyproxy};
use support::{Hopgate, bin};

fn through_listener(proxy: &str, to: SocketAddr, extra: &[&str]) {
    let to = to.to_string();
    let mut args = vec!["tunnel", "--proxy", proxy, "--to", &to, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let tunnel = Hopgate::start(&args);
    assert!(tunnel.listening[0].starts_with("tcp://127.0.0.1:"), "{:?}", tunnel.listening);
    for i in 0..3 {
        let mut s = TcpStream::connect(tunnel.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let msg = format!("connection {i} through {proxy}");
        s.write_all(msg.as_bytes()).unwrap();
        // Squid and tinyproxy end a whole tunnel when one side half-closes: read the echo first.
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes(), "tunnel stderr: {}", tunnel.stderr_text());
    }
}

/// Runs `hopgate tunnel --stdio`, feeds `input`, returns (exit code, stdout, stderr).
/// With `hold`, stdin stays open until as many bytes as were sent came back (for proxies that end a tunnel on
/// half-close); without it, stdin closes right after the input (EOF half-closes the tunnel).
fn stdio(proxy: &str, to: &str, extra: &[&str], input: &[u8], hold: bool) -> (Option<i32>, Vec<u8>, String) {
    let mut child = Command::new(bin())
        .args(["tunnel", "--proxy", proxy, "--to", to, "--stdio"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (echoed_tx, echoed_rx) = std::sync::mpsc::channel::<()>();
    let input = input.to_vec();
    let want = input.len();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        if hold {
            let _ = echoed_rx.recv_timeout(Duration::from_secs(15));
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() >= want {
                let _ = echoed_tx.send(());
            }
        }
        out
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hopgate tunnel --stdio did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

#[test]
fn listen_mode_through_hopgate_squid_and_tinyproxy() {
    let target = echo_server();
    let port = target.port().to_string();
    let hg =
        Hopgate::start(&["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8", "--connect-port", &port]);
    through_listener(&hg.url(), target, &[]);
    let sq = squid(&[target.port()], None, None);
    through_listener(&format!("http://{}", sq.addr), target, &[]);
    let tp = tinyproxy(&[target.port()], Some(("tim", "t-secret")));
    through_listener(&format!("http://{}", tp.addr), target, &["--proxy-user", "tim:t-secret"]);
}

#[test]
fn stdio_mode_is_an_ssh_proxy_command() {
    let target = echo_server();
    let port = target.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    htpasswd(&users, &["-B", "-C", "5"], "ssh", "secret");
    let hg = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.0/8",
        "--connect-port",
        &port,
        "--users",
        users.to_str().unwrap(),
    ]);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (code, out, err) = stdio(&hg.url(), &target.to_string(), &["--proxy-user", "ssh:secret"], &payload, false);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, payload, "stdin EOF half-closes; everything echoed comes back before exit");

    // Refused: one clear line naming the proxy's status, and a non-zero exit.
    let (code, out, err) = stdio(&hg.url(), &target.to_string(), &["--proxy-user", "ssh:wrong"], b"x", false);
    assert_ne!(code, Some(0));
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(err.contains("407"), "{err}");
    assert!(err.contains(&hg.addr.to_string()), "names the proxy: {err}");

    let (code, _, err) = stdio(&hg.url(), "127.0.0.1:25", &[], b"x", false);
    assert_ne!(code, Some(0));
    assert!(err.contains("407") || err.contains("403"), "{err}");
}

#[test]
fn stdio_against_squid_with_auth() {
    let target = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    htpasswd(&users, &["-m"], "sq", "uid-pass");
    chown_nobody(dir.path());
    let sq = squid(&[target.port()], Some(&users), None);
    let proxy = format!("http://{}", sq.addr);
    let (code, out, err) = stdio(&proxy, &target.to_string(), &["--proxy-user", "sq:uid-pass"], b"hello squid", true);
    assert_eq!((code, out.as_slice()), (Some(0), &b"hello squid"[..]), "{err}");
    let (code, _, err) = stdio(&proxy, &target.to_string(), &[], b"x", false);
    assert_ne!(code, Some(0));
    assert!(err.contains("407"), "{err}");
    // A target Squid may not CONNECT to: its 403 is named.
    let (code, _, err) = stdio(&proxy, "127.0.0.1:25", &["--proxy-user", "sq:uid-pass"], b"x", false);
    assert_ne!(code, Some(0));
    assert!(err.contains("403"), "{err}");
}

#[test]
fn bad_arguments_are_clear() {
    let out = Command::new(bin()).args(["tunnel", "--proxy", "http://127.0.0.1:1", "--to", "h:22"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--listen or --stdio is required");
    let out = Command::new(bin())
        .args(["tunnel", "--proxy", "ftp://x:1", "--to", "h:22", "--stdio"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxy"), "{}", String::from_utf8_lossy(&out.stderr));
}
