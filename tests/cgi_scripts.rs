//! CGI against real scripts (/bin/sh and /usr/bin/python3) written into temp dirs: exact
//! environment, multi-MiB stdin echo checked by sha256, streaming output, a hang killed with its
//! children by the timeout, drop killing the group, crash, bad head, Status, redirects, nph-,
//! 403/404 and the script slot limit.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use hopgate::backend::cgi::{Cgi, CgiConfig, CgiOutput};
use hopgate::backend::meta::{ConnInfo, GatewayError, GatewayErrorKind, GatewayResponse, HeadKind};
use hopgate::error::Error;
use http::{Request, StatusCode};
use sha2::{Digest, Sha256};

const PYTHON: &str = "/usr/bin/python3";

fn need_peers() {
    assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: apt-get install -y python3");
}

fn conn() -> ConnInfo {
    ConnInfo {
        remote: "127.0.0.1:50000".parse().unwrap(),
        local: "127.0.0.1:8080".parse().unwrap(),
        https: false,
        server_name: None,
        server_port: None,
        server_software: "hopgate/test".into(),
    }
}

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

fn dir() -> Dir {
    need_peers();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cgi-bin");
    std::fs::create_dir(&path).unwrap();
    Dir { _tmp: tmp, path }
}

fn script(dir: &Dir, name: &str, text: &str) {
    let p = dir.path.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn gateway(dir: &Dir, timeout: Duration, max_scripts: usize) -> Cgi {
    let mut cfg = CgiConfig::new(&dir.path);
    cfg.timeout = timeout;
    cfg.max_scripts = max_scripts;
    Cgi::new(cfg).unwrap()
}

fn empty() -> stream::Iter<std::vec::IntoIter<Result<Bytes, Infallible>>> {
    stream::iter(Vec::new())
}

async fn call(cgi: &Cgi, req: Request<()>) -> Result<CgiOutput, GatewayError> {
    let (parts, ()) = req.into_parts();
    cgi.serve(&parts, &conn(), empty()).await
}

async fn parsed(cgi: &Cgi, uri: &str) -> Result<GatewayResponse, GatewayError> {
    match call(cgi, Request::get(uri).body(()).unwrap()).await? {
        CgiOutput::Parsed(r) => Ok(r),
        CgiOutput::Nph(_) => panic!("not an nph script"),
    }
}

/// A process is gone when /proc no longer lists it, or (for orphans reparented to an init that
/// may not reap) it is a zombie.
fn gone(pid: i32, allow_zombie: bool) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => allow_zombie && s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')),
    }
}

async fn wait_gone(pid: i32, allow_zombie: bool) {
    for _ in 0..50 {
        if gone(pid, allow_zombie) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("process {pid} still alive after 5 s");
}

async fn read_pids(file: &Path) -> Vec<i32> {
    for _ in 0..50 {
        if let Ok(s) = std::fs::read_to_string(file) {
            let pids: Vec<i32> = s.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if pids.len() == 2 {
                return pids;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("script never wrote its pids to {}", file.display());
}

#[tokio::test]
async fn environment_is_exactly_the_meta_variables() {
    let d = dir();
    // /proc/self/environ is the environment as exec'd, before Python adds LC_CTYPE itself.
    script(
        &d,
        "env.py",
        "#!/usr/bin/python3\nimport sys\nsys.stdout.buffer.write(b'Content-Type: text/plain\\n\\n')\n\
         env = open('/proc/self/environ', 'rb').read().split(b'\\0')\n\
         sys.stdout.buffer.write(b'\\n'.join(sorted(e for e in env if e)) + b'\\n')\n",
    );
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    let req = Request::get("/env.py/more/info?x=1")
        .header("Host", "cgi.test")
        .header("Proxy", "http://evil:1")
        .header("Authorization", "Basic c2VjcmV0")
        .header("X-Custom", "yes")
        .body(())
        .unwrap();
    let CgiOutput::Parsed(resp) = call(&cgi, req).await.unwrap() else { panic!("nph") };
    assert_eq!(resp.head.status, StatusCode::OK);
    let body = resp.body.collect_bytes().await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
    let real_dir = std::fs::canonicalize(&d.path).unwrap();
    let expect = |line: String| assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    expect("GATEWAY_INTERFACE=CGI/1.1".into());
    expect("PATH=/usr/local/bin:/usr/bin:/bin".into());
    expect("SCRIPT_NAME=/env.py".into());
    expect("PATH_INFO=/more/info".into());
    expect("QUERY_STRING=x=1".into());
    expect("REQUEST_URI=/env.py/more/info?x=1".into());
    expect("SERVER_NAME=cgi.test".into());
    expect("HTTP_X_CUSTOM=yes".into());
    expect(format!("SCRIPT_FILENAME={}/env.py", real_dir.display()));
    expect(format!("PATH_TRANSLATED={}/more/info", real_dir.display()));
    assert!(!names.contains(&"HTTP_PROXY"), "httpoxy");
    assert!(!names.contains(&"HTTP_AUTHORIZATION"));
    // Exactly the meta-variables and PATH: nothing of the gateway's environment leaks.
    let meta = [
        "GATEWAY_INTERFACE",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
        "SERVER_NAME",
        "SERVER_PORT",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "QUERY_STRING",
        "SCRIPT_NAME",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "SCRIPT_FILENAME",
        "DOCUMENT_ROOT",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "PATH",
    ];
    let mut unexpected: Vec<&&str> = names.iter().filter(|n| !meta.contains(n) && !n.starts_with("HTTP_")).collect();
    unexpected.sort();
    assert!(unexpected.is_empty(), "unexpected variables {unexpected:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("HTTP_")).count(), 2, "HTTP_HOST and HTTP_X_CUSTOM only");
    assert_eq!(names.len(), meta.len() + 2);
}

#[tokio::test]
async fn multi_mib_body_is_echoed_while_streaming() {
    let d = dir();
    script(&d, "echo.sh", "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nexec cat\n");
    let cgi = gateway(&d, Duration::from_secs(20), 4);
    // 8 MiB in 64 KiB chunks, far more than a pipe holds: stdin and stdout must flow together.
    let chunks: Vec<Bytes> = (0..128u32)
        .map(|i| {
            Bytes::from(
                (0..65536u32)
                    .map(|j| (i.wrapping_mul(31).wrapping_add(j.wrapping_mul(7)) % 251) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    let mut sent = Sha256::new();
    for c in &chunks {
        sent.update(c);
    }
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let body = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let (parts, ()) =
        Request::post("/echo.sh").header("Content-Length", total.to_string()).body(()).unwrap().into_parts();
    let CgiOutput::Parsed(resp) = cgi.serve(&parts, &conn(), body).await.unwrap() else { panic!("nph") };
    let mut got = Sha256::new();
    let mut len = 0;
    let mut body = resp.body;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), body.next()).await.unwrap() {
        let chunk = chunk.unwrap();
        len += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(len, total);
    assert_eq!(got.finalize(), sent.finalize());
}

#[tokio::test]
async fn output_streams_as_it_comes() {
    let d = dir();
    script(&d, "slow.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nfirst\\n'\nsleep 1\necho second\n");
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    let start = Instant::now();
    let resp = parsed(&cgi, "/slow.sh").await.unwrap();
    let mut body = resp.body;
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first\n");
    let first_at = start.elapsed();
    assert!(first_at < Duration::from_millis(800), "head and first chunk took {first_at:?}");
    let second = body.next().await.unwrap().unwrap();
    assert_eq!(&second[..], b"second\n");
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(body.next().await.is_none());
}

#[tokio::test]
async fn hang_is_killed_with_its_children_by_the_timeout() {
    let d = dir();
    let pids = d.path.join("../pids");
    script(&d, "hang.sh", &format!("#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nsleep 300\n", pids.display()));
    let cgi = gateway(&d, Duration::from_secs(1), 4);
    let start = Instant::now();
    let e = parsed(&cgi, "/hang.sh").await.unwrap_err();
    assert_eq!(e.kind(), GatewayErrorKind::Timeout, "{e}");
    assert_eq!(Error::from(e).status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(start.elapsed() < Duration::from_secs(5));
    let p = read_pids(&pids).await;
    wait_gone(p[0], false).await; // the script: killed and reaped by us, no zombie
    wait_gone(p[1], true).await; // its background child: killed with the group
}

#[tokio::test]
async fn dropping_the_body_kills_the_group() {
    let d = dir();
    let pids = d.path.join("../pids");
    script(
        &d,
        "long.sh",
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nprintf 'Content-Type: text/plain\\n\\nstarted\\n'\nsleep 300\n",
            pids.display()
        ),
    );
    let cgi = gateway(&d, Duration::from_secs(60), 4);
    let resp = parsed(&cgi, "/long.sh").await.unwrap();
    let p = read_pids(&pids).await;
    assert!(!gone(p[0], false));
    drop(resp); // the client went away
    wait_gone(p[0], false).await;
    wait_gone(p[1], true).await;
}

#[tokio::test]
async fn crash_and_bad_heads_are_502() {
    let d = dir();
    script(&d, "crash.sh", "#!/bin/sh\nkill -SEGV $$\n");
    script(&d, "bad.sh", "#!/bin/sh\necho 'this is not a header'\necho\necho body\n");
    script(&d, "half.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n'\nkill -KILL $$\n");
    script(&d, "silent.py", "#!/usr/bin/python3\nimport sys\nsys.exit(3)\n");
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    for s in ["/crash.sh", "/bad.sh", "/half.sh", "/silent.py"] {
        let e = parsed(&cgi, s).await.unwrap_err();
        assert_eq!(e.kind(), GatewayErrorKind::BadResponse, "{s}: {e}");
        assert_eq!(Error::from(e).status(), StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test]
async fn status_and_redirects_from_scripts() {
    let d = dir();
    script(&d, "gone.sh", "#!/bin/sh\nprintf 'Status: 410 Gone\\nContent-Type: text/plain\\n\\nbye'\n");
    script(&d, "local.sh", "#!/bin/sh\nprintf 'Location: /gone.sh?from=local\\n\\n'\n");
    script(&d, "away.sh", "#!/bin/sh\nprintf 'Location: http://other.test/\\n\\n'\n");
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    let r = parsed(&cgi, "/gone.sh").await.unwrap();
    assert_eq!(r.head.status, StatusCode::GONE);
    assert_eq!(&r.body.collect_bytes().await.unwrap()[..], b"bye");
    let r = parsed(&cgi, "/local.sh").await.unwrap();
    assert_eq!(r.head.kind, HeadKind::LocalRedirect("/gone.sh?from=local".into()));
    let r = parsed(&cgi, "/away.sh").await.unwrap();
    assert_eq!(r.head.kind, HeadKind::ClientRedirect("http://other.test/".into()));
    assert_eq!(r.head.status, StatusCode::FOUND);
}

#[tokio::test]
async fn nph_output_is_passed_raw() {
    let d = dir();
    script(&d, "nph-raw.sh", "#!/bin/sh\nprintf 'HTTP/1.1 299 Custom\\r\\nX-Raw: 1\\r\\n\\r\\nraw body'\n");
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    match call(&cgi, Request::get("/nph-raw.sh").body(()).unwrap()).await.unwrap() {
        CgiOutput::Nph(body) => {
            assert_eq!(&body.collect_bytes().await.unwrap()[..], b"HTTP/1.1 299 Custom\r\nX-Raw: 1\r\n\r\nraw body")
        }
        CgiOutput::Parsed(_) => panic!("nph- output was parsed"),
    }
}

#[tokio::test]
async fn not_executable_is_403_and_missing_is_404() {
    let d = dir();
    std::fs::write(d.path.join("secret.sh"), "#!/bin/sh\necho never\n").unwrap();
    std::fs::set_permissions(d.path.join("secret.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    let e = parsed(&cgi, "/secret.sh").await.unwrap_err();
    assert_eq!(Error::from(e).status(), StatusCode::FORBIDDEN);
    let e = parsed(&cgi, "/nope.sh").await.unwrap_err();
    assert_eq!(Error::from(e).status(), StatusCode::NOT_FOUND);
    let e = parsed(&cgi, "/%2e%2e/pids").await.unwrap_err();
    assert_eq!(Error::from(e).status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn slot_limit_queues_scripts() {
    let d = dir();
    script(
        &d,
        "timed.py",
        "#!/usr/bin/python3\nimport time\nstart = time.time()\ntime.sleep(0.5)\n\
         print('Content-Type: text/plain')\nprint()\nprint(start, time.time())\n",
    );
    let cgi = std::sync::Arc::new(gateway(&d, Duration::from_secs(10), 1));
    let run = |cgi: std::sync::Arc<Cgi>| async move {
        let r = parsed(&cgi, "/timed.py").await.unwrap();
        let text = String::from_utf8(r.body.collect_bytes().await.unwrap().to_vec()).unwrap();
        let v: Vec<f64> = text.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    };
    let (a, b) = tokio::join!(run(cgi.clone()), run(cgi.clone()));
    let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
    assert!(second.0 >= first.1, "second script started at {} before the first ended at {}", second.0, first.1);
}

/// Collects what tracing writes, for checking that stderr reaches the log.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn stderr_lines_go_to_the_log() {
    let logs = LogBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let d = dir();
    script(
        &d,
        "noisy.sh",
        "#!/bin/sh\necho 'first complaint' >&2\nprintf 'Content-Type: text/plain\\n\\nok'\necho 'second complaint' >&2\n",
    );
    let cgi = gateway(&d, Duration::from_secs(10), 4);
    let r = parsed(&cgi, "/noisy.sh").await.unwrap();
    assert_eq!(&r.body.collect_bytes().await.unwrap()[..], b"ok");
    for _ in 0..50 {
        let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        if text.contains("second complaint") {
            let line = text.lines().find(|l| l.contains("first complaint")).unwrap();
            assert!(line.contains("WARN") && line.contains("/noisy.sh"), "{line}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stderr never reached the log: {}", String::from_utf8_lossy(&logs.0.lock().unwrap()));
}
