//! The admin listener (docs/operations.md): real traffic through each room, then `/metrics` scraped and read
//! counter by counter (moved by exactly what was sent), the OpenMetrics text parsed by the Prometheus project's
//! own parser (python3-prometheus-client), `/readyz` turning 503 while a drain runs, Basic auth on the admin
//! listener, and the stats page rendered by headless Chromium with the listener and an open tunnel on it.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use support::origin::{Origin, respond};
use support::{Hopgate, curl_full, require};

/// The admin listener's base URL, from its `admin on http://IP:PORT` line.
fn admin(h: &Hopgate) -> String {
    let line = h.wait_stderr_line(&["admin on http://"]);
    let at = line.find("http://").expect("a URL");
    line[at..].trim().to_string()
}

/// Every sample of `/metrics`: `name{labels}` as written -> value.
fn scrape(admin: &str) -> HashMap<String, f64> {
    let c = curl_full(&[&format!("{admin}/metrics")]);
    assert_eq!(c.code, 200, "{}", c.stderr);
    let mut out = HashMap::new();
    for line in c.text().lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
        out.insert(key.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("value in {line:?}")));
    }
    out
}

/// One sample's value; 0 when the series does not exist yet.
fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Scrapes until `key` has `want` (bounded), then returns the scrape.
fn wait_for(admin: &str, key: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(admin);
        if value(&m, key) == want {
            return m;
        }
        if Instant::now() >= deadline {
            let family = key.split('{').next().unwrap_or(key);
            let mut near: Vec<_> = m.iter().filter(|(k, _)| k.starts_with(family)).collect();
            near.sort_by(|a, b| a.0.cmp(b.0));
            panic!("{key} is {} after 10 s, not {want}; the family has {near:?}", value(&m, key));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `request` and reads one response with a Content-Length body; returns all bytes read.
fn exchange(s: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    s.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = support::find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                return got;
            }
        }
    }
}

/// A CONNECT tunnel to `target` through the proxy at `proxy`, its 200 read.
fn connect(proxy: SocketAddr, target: SocketAddr, auth: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    let auth = auth.map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    s
}

/// `hopgate gateway --to TO` on loopback with its access log off and an admin listener, plus `extra`.
fn gateway_with_admin(to: &str, extra: &[&str]) -> Hopgate {
    let mut args =
        vec!["gateway", "--listen", "127.0.0.1:0", "--to", to, "--access-log", "off", "--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Hopgate::start(&args)
}

fn lbl(listener: &str, rest: &str) -> String {
    if rest.is_empty() { format!("{{listener=\"{listener}\"}}") } else { format!("{{listener=\"{listener}\",{rest}}}") }
}

#[test]
fn a_gateway_counts_exactly_what_it_was_sent() {
    let origin = Origin::fixed("hello, metrics");
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\nname = \"app\"\nto = \"{}\"\n",
        origin.url("")
    ));
    let admin = admin(&h);
    let l = &h.listening[0];
    let before = scrape(&admin);
    assert_eq!(value(&before, &format!("hopgate_connections_total{}", lbl(l, ""))), 0.0);
    assert_eq!(value(&before, "hopgate_config_reloads_total{result=\"ok\"}"), 0.0);
    assert!(before.contains_key("hopgate_config_reloads_total{result=\"error\"}"));
    assert_eq!(value(&before, &format!("hopgate_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);

    let mut s = TcpStream::connect(h.addr).unwrap();
    let (mut sent, mut received) = (0usize, 0usize);
    for i in 0..3 {
        let req = format!("GET /n/{i} HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t\r\n\r\n");
        let resp = exchange(&mut s, req.as_bytes());
        assert!(resp.starts_with(b"HTTP/1.1 200 OK\r\n"));
        sent += req.len();
        received += resp.len();
    }
    let open = wait_for(&admin, &format!("hopgate_requests_in_flight{}", lbl(l, "")), 0.0);
    assert_eq!(value(&open, &format!("hopgate_connections_open{}", lbl(l, ""))), 1.0);
    drop(s);
    let m = wait_for(&admin, &format!("hopgate_connections_open{}", lbl(l, "")), 0.0);
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, "route=\"app\",code=\"200\""))), 3.0);
    assert_eq!(value(&m, &format!("hopgate_request_duration_seconds_count{}", lbl(l, "route=\"app\""))), 3.0);
    assert_eq!(
        value(&m, &format!("hopgate_request_duration_seconds_bucket{{le=\"+Inf\",listener=\"{l}\",route=\"app\"}}")),
        3.0
    );
    assert_eq!(value(&m, &format!("hopgate_connections_total{}", lbl(l, ""))), 1.0);
    assert_eq!(value(&m, &format!("hopgate_received_bytes_total{}", lbl(l, ""))), sent as f64);
    assert_eq!(value(&m, &format!("hopgate_sent_bytes_total{}", lbl(l, ""))), received as f64);
    // One upstream connection, kept: opened once, reused twice.
    assert_eq!(value(&m, "hopgate_upstream_connections_opened_total{route=\"app\"}"), 1.0);
    assert_eq!(value(&m, "hopgate_upstream_connections_reused_total{route=\"app\"}"), 2.0);
    assert_eq!(origin.count(), 3);
}

#[test]
fn refusals_count_by_status_and_upstream_errors_by_reason() {
    let closed = support::ClosedPort::new();
    let origin = Origin::fixed("ok");
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\npath = \"/dead\"\nto = \"http://127.0.0.1:{}\"\n\
         [[listener.route]]\npath = \"/live\"\nto = \"{}\"\n[[listener.route]]\nhost = \"only.test\"\nto = \"{}\"\n",
        closed.port(),
        origin.url(""),
        origin.url("")
    ));
    let admin = admin(&h);
    let l = &h.listening[0];
    let dead = format!("http://127.0.0.1:{}", closed.port());
    for _ in 0..2 {
        assert_eq!(curl_full(&[&format!("{}/dead/x", h.url())]).code, 502);
    }
    assert_eq!(curl_full(&[&format!("{}/nothing-here", h.url())]).code, 404);
    assert_eq!(curl_full(&[&format!("{}/live", h.url())]).code, 200);
    let m = wait_for(&admin, &format!("hopgate_requests_in_flight{}", lbl(l, "")), 0.0);
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, &format!("route=\"{dead}\",code=\"502\"")))), 2.0);
    assert_eq!(value(&m, &format!("hopgate_upstream_errors_total{{route=\"{dead}\",reason=\"refused\"}}")), 2.0);
    // No route took it: route `-`.
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, "route=\"-\",code=\"404\""))), 1.0);
    let live = origin.url("");
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, &format!("route=\"{live}\",code=\"200\"")))), 1.0);
    // Label values are bounded: no path, client address or target appears in any sample.
    for key in m.keys() {
        assert!(!key.contains("/dead/x") && !key.contains("nothing-here"), "{key}");
    }
}

/// A forward proxy: absolute-form relaying, a CONNECT tunnel (open in the table and the gauge, its bytes each way
/// counted), and proxy-authentication failures.
#[test]
fn a_forward_proxy_counts_tunnels_and_auth_failures() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    support::peers::htpasswd(&users, &["-c", "-s"], "ann", "secret");
    let origin = Origin::fixed("via the proxy");
    let echo = support::origin::echo_server();
    let h = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.0/8",
        "--connect-port",
        &echo.port().to_string(),
        "--users",
        users.to_str().unwrap(),
        "--access-log",
        "off",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = admin(&h);
    let l = &h.listening[0];
    let proxy = h.url();
    for pass in ["wrong", "also-wrong"] {
        let c = curl_full(&["-x", &proxy, "-U", &format!("ann:{pass}"), &origin.url("/")]);
        assert_eq!(c.code, 407);
    }
    let c = curl_full(&["-x", &proxy, "-U", "ann:secret", &origin.url("/")]);
    assert_eq!((c.code, c.text().as_str()), (200, "via the proxy"));

    // A tunnel to the echo server: 1000 bytes up, the same 1000 back.
    let mut s = connect(h.addr, echo, Some("Basic YW5uOnNlY3JldA==")); // ann:secret
    let payload = vec![b'x'; 1000];
    s.write_all(&payload).unwrap();
    let mut back = vec![0u8; 1000];
    s.read_exact(&mut back).unwrap();
    let m = wait_for(&admin, &format!("hopgate_tunnels_open{}", lbl(l, "")), 1.0);
    assert_eq!(value(&m, &format!("hopgate_tunnel_bytes_total{}", lbl(l, "direction=\"up\""))), 1000.0);
    // The tunnel's client connection is still an open connection (the earlier curl ones close by themselves).
    wait_for(&admin, &format!("hopgate_connections_open{}", lbl(l, "")), 1.0);
    assert_eq!(value(&m, &format!("hopgate_tunnel_bytes_total{}", lbl(l, "direction=\"down\""))), 1000.0);
    let stats = curl_full(&[&format!("{admin}/stats.json")]);
    let json: serde_json::Value = serde_json::from_slice(&stats.body).expect("stats.json is JSON");
    assert_eq!(json["tunnels"]["open"], 1);
    let row = &json["tunnels"]["largest"][0];
    assert_eq!(row["target"], echo.to_string());
    assert_eq!(row["client"], s.local_addr().unwrap().to_string());
    assert_eq!((row["up"].as_u64(), row["down"].as_u64()), (Some(1000), Some(1000)));

    s.write_all(&payload[..24]).unwrap();
    s.read_exact(&mut back[..24]).unwrap();
    drop(s);
    wait_for(&admin, &format!("hopgate_connections_open{}", lbl(l, "")), 0.0);
    let m = wait_for(&admin, &format!("hopgate_tunnels_open{}", lbl(l, "")), 0.0);
    assert_eq!(value(&m, &format!("hopgate_tunnel_bytes_total{}", lbl(l, "direction=\"up\""))), 1024.0);
    assert_eq!(value(&m, &format!("hopgate_connections_total{}", lbl(l, ""))), 4.0);
    assert_eq!(value(&m, &format!("hopgate_tunnel_bytes_total{}", lbl(l, "direction=\"down\""))), 1024.0);
    assert_eq!(value(&m, &format!("hopgate_auth_failures_total{}", lbl(l, ""))), 2.0);
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, "route=\"proxy\",code=\"407\""))), 2.0);
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, "route=\"proxy\",code=\"200\""))), 2.0);
    let json: serde_json::Value =
        serde_json::from_slice(&curl_full(&[&format!("{admin}/stats.json")]).body).expect("JSON");
    assert_eq!(json["tunnels"]["open"], 0);
}

#[test]
fn tls_handshakes_count_ok_and_error() {
    let pki = support::tls::Pki::new();
    let pair = pki.leaf("gw", support::tls::KeyType::EcdsaP256, &["localhost"]);
    let origin = Origin::fixed("over tls");
    let h = Hopgate::start(&[
        "gateway",
        "--listen",
        "https://127.0.0.1:0",
        "--tls-cert",
        pair.cert(),
        "--tls-key",
        pair.key(),
        "--to",
        &origin.url(""),
        "--access-log",
        "off",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = admin(&h);
    let l = &h.listening[0];
    assert!(l.starts_with("https://"), "{l}");
    let url = format!("https://localhost:{}/", h.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", h.addr.port());
    let c = curl_full(&["--cacert", pki.ca.cert(), "--resolve", &resolve, &url]);
    assert_eq!((c.code, c.text().as_str()), (200, "over tls"), "{}", c.stderr);
    // Plain HTTP to the TLS port, and a client that does not trust the certificate: two failed handshakes.
    assert_eq!(curl_full(&[&format!("http://{}/", h.addr)]).code, 400);
    assert!(!curl_full(&["--resolve", &resolve, &url]).ok);
    let m = wait_for(&admin, &format!("hopgate_tls_handshakes_total{}", lbl(l, "result=\"error\"")), 2.0);
    assert_eq!(value(&m, &format!("hopgate_tls_handshakes_total{}", lbl(l, "result=\"ok\""))), 1.0);
}

/// CGI slots as gauges: one slot, two requests; the second waits in the queue while the first runs.
#[test]
fn cgi_slots_show_running_and_queued_scripts() {
    let scripts = support::cgi::Scripts::new();
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("go");
    scripts.add(
        "wait.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.02; done\nprintf 'Content-Type: text/plain\\r\\n\\r\\ndone'\n",
            release.display()
        ),
    );
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\nname = \"scripts\"\nto = \"{}\"\nmax_scripts = 1\n",
        scripts.target()
    ));
    let admin = admin(&h);
    let url = format!("{}/wait.sh", h.url());
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl_full(&[&url]))
        })
        .collect();
    let m = wait_for(&admin, "hopgate_cgi_scripts_queued{route=\"scripts\"}", 1.0);
    assert_eq!(value(&m, "hopgate_cgi_scripts_running{route=\"scripts\"}"), 1.0);
    std::fs::write(&release, "").unwrap();
    for c in clients {
        let c = c.join().unwrap();
        assert_eq!((c.code, c.text().as_str()), (200, "done"));
    }
    let m = wait_for(&admin, "hopgate_cgi_scripts_running{route=\"scripts\"}", 0.0);
    assert_eq!(value(&m, "hopgate_cgi_scripts_queued{route=\"scripts\"}"), 0.0);
    let l = &h.listening[0];
    assert_eq!(value(&m, &format!("hopgate_requests_total{}", lbl(l, "route=\"scripts\",code=\"200\""))), 2.0);
}

/// The HTTP/FTP gateway against vsftpd: a logged-in session kept idle after a download, then reused.
#[test]
fn ftp_sessions_kept_idle_are_a_gauge() {
    let peer = support::ftp_peers::vsftpd(|root| std::fs::write(root.join("a.txt"), "from ftp").unwrap(), "");
    let to = format!("ftp://{}/", peer.addr);
    let h = gateway_with_admin(&to, &[]);
    let admin = admin(&h);
    // The route's name is its target as `check` prints it.
    let name = format!("ftp://{}", peer.addr);
    let route = format!("hopgate_ftp_sessions_idle{{route=\"{name}\"}}");
    let c = curl_full(&[&format!("{}/a.txt", h.url())]);
    assert_eq!((c.code, c.text().as_str()), (200, "from ftp"), "{}", peer.log());
    wait_for(&admin, &route, 1.0);
    let c = curl_full(&[&format!("{}/a.txt", h.url())]);
    assert_eq!(c.code, 200);
    let m = wait_for(&admin, &route, 1.0);
    assert_eq!(value(&m, &format!("hopgate_upstream_connections_reused_total{{route=\"{name}\"}}")), 1.0);
    // One control connection, and one data connection per download (passive mode).
    assert_eq!(value(&m, &format!("hopgate_upstream_connections_opened_total{{route=\"{name}\"}}")), 3.0);
}

#[test]
fn the_prometheus_parser_reads_the_exposition() {
    let origin = Origin::fixed("x");
    let h = gateway_with_admin(&origin.url(""), &[]);
    let admin = admin(&h);
    assert_eq!(curl_full(&[&h.url()]).code, 200);
    let c = curl_full(&[&format!("{admin}/metrics")]);
    let ctype = c.header("content-type").unwrap_or_default();
    assert_eq!(ctype, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    // The OpenMetrics parser refuses anything outside the format (and needs the final `# EOF`).
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
names = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    names[fam.name] = fam.type
for n in sorted(names):
    print(n, names[n])
"#;
    // Debian's python3, where python3-prometheus-client installs.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&c.body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python3-prometheus-client refused it: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.text()
    );
    // A family with labels is listed from its first series on (upstream_errors from the first error).
    for family in [
        "hopgate_requests counter",
        "hopgate_request_duration_seconds histogram",
        "hopgate_requests_in_flight gauge",
        "hopgate_connections_open gauge",
        "hopgate_connections counter",
        "hopgate_received_bytes counter",
        "hopgate_sent_bytes counter",
        "hopgate_tunnels_open gauge",
        "hopgate_tunnel_bytes counter",
        "hopgate_upstream_connections_reused counter",
        "hopgate_upstream_connections_opened counter",
        "hopgate_tls_handshakes counter",
        "hopgate_auth_failures counter",
        "hopgate_cgi_scripts_running gauge",
        "hopgate_cgi_scripts_queued gauge",
        "hopgate_ftp_sessions_idle gauge",
        "hopgate_config_reloads counter",
        "hopgate_build_info gauge",
    ] {
        assert!(text.lines().any(|l| l == family), "{family} not in:\n{text}");
    }
}

/// An origin that holds its response until told: a request stays in flight as long as the test wants.
fn held_origin() -> (SocketAddr, Arc<AtomicBool>, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let (arrived_tx, arrived) = mpsc::channel();
    let g = go.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let (g, arrived_tx) = (g.clone(), arrived_tx.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = arrived_tx.send(());
                let deadline = Instant::now() + Duration::from_secs(20);
                while !g.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                respond(&mut s, "HTTP/1.1 200 OK", &[("Connection", "close")], b"held");
            });
        }
    });
    (addr, go, arrived)
}

#[test]
fn readyz_turns_503_while_a_drain_runs() {
    let (origin, go, arrived) = held_origin();
    let mut h = gateway_with_admin(&format!("http://{origin}"), &["--drain", "20"]);
    let admin = admin(&h);
    let ready = curl_full(&[&format!("{admin}/readyz")]);
    assert_eq!((ready.code, ready.text().as_str()), (200, "ok"));
    let url = h.url();
    let held = std::thread::spawn(move || curl_full(&[&url]));
    arrived.recv_timeout(Duration::from_secs(10)).expect("the request reached the origin");
    h.signal("TERM");
    // Draining: not ready, still alive, and the request in flight still counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let c = curl_full(&[&format!("{admin}/readyz")]);
        if c.code != 200 || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((ready.code, ready.text().as_str()), (503, "draining"));
    let health = curl_full(&[&format!("{admin}/healthz")]);
    assert_eq!((health.code, health.text().as_str()), (200, "ok"));
    let l = &h.listening[0];
    assert_eq!(value(&scrape(&admin), &format!("hopgate_requests_in_flight{}", lbl(l, ""))), 1.0);
    go.store(true, Ordering::SeqCst);
    let c = held.join().unwrap();
    assert_eq!((c.code, c.text().as_str()), (200, "held"));
    let status = h.wait_exit(Duration::from_secs(10)).expect("hopgate exits once drained");
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_admin_listener_asks_for_credentials_when_it_has_users() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("admins");
    support::peers::htpasswd(&users, &["-c", "-s"], "ops", "pw");
    let origin = Origin::fixed("x");
    let h = gateway_with_admin(&origin.url(""), &["--admin-users", users.to_str().unwrap()]);
    let admin = admin(&h);
    for path in ["/metrics", "/", "/stats.json", "/healthz", "/readyz"] {
        let c = curl_full(&[&format!("{admin}{path}")]);
        assert_eq!(c.code, 401, "{path}");
        assert_eq!(c.header("www-authenticate").as_deref(), Some("Basic realm=\"hopgate admin\""));
        assert_eq!(curl_full(&["-u", "ops:wrong", &format!("{admin}{path}")]).code, 401, "{path}");
        assert_eq!(curl_full(&["-u", "ops:pw", &format!("{admin}{path}")]).code, 200, "{path}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn a_public_admin_address_needs_a_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "public.toml",
        "[admin]\nlisten = \"0.0.0.0:9901\"\n\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://127.0.0.1:1\"\n",
    );
    for cmd in ["check", "run"] {
        let out = Command::new(support::bin()).args([cmd, &cfg]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("{cfg}:2: ")), "{cmd}: {err}");
        assert!(err.contains("0.0.0.0:9901") && err.contains("users"), "{cmd}: {err}");
    }
    let out = Command::new(support::bin())
        .args(["gateway", "--listen", "127.0.0.1:0", "--to", "http://127.0.0.1:1", "--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The stats page as a person sees it: headless Chromium runs its script against a live proxy with one tunnel
/// open; the rendered page names the listener and the tunnel's target. Without JavaScript the same data is there.
#[test]
fn the_stats_page_shows_the_listener_and_an_open_tunnel_in_chromium() {
    let chromium = require("chromium", "chromium");
    let echo = support::origin::echo_server();
    let h = Hopgate::start(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-target",
        "127.0.0.0/8",
        "--connect-port",
        &echo.port().to_string(),
        "--access-log",
        "off",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = admin(&h);
    let mut s = connect(h.addr, echo, None);
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    wait_for(&admin, &format!("hopgate_tunnels_open{}", lbl(&h.listening[0], "")), 1.0);

    // Without JavaScript: the server-rendered page already has both.
    let plain = curl_full(&[&format!("{admin}/")]);
    assert_eq!(plain.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    assert!(plain.text().contains(&h.listening[0]) && plain.text().contains(&echo.to_string()));

    let profile = tempfile::tempdir().unwrap();
    let shot = std::env::var("HOPGATE_STATS_SCREENSHOT").ok();
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.path().display()),
        "--virtual-time-budget=3000".into(),
        "--window-size=1280,900".into(),
    ];
    match &shot {
        // HOPGATE_STATS_SCREENSHOT=FILE: the picture in docs/operations.md.
        Some(file) => args.push(format!("--screenshot={file}")),
        None => args.push("--dump-dom".into()),
    }
    args.push(format!("{admin}/"));
    let out = Command::new(&chromium).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if shot.is_none() {
        let dom = String::from_utf8_lossy(&out.stdout);
        // The script replaced the server-rendered rows with what /stats.json said (it marks the page live).
        assert!(dom.contains("data-live=\"yes\""), "the page's script did not run:\n{dom}");
        assert!(dom.contains(&h.listening[0]), "no listener in:\n{dom}");
        assert!(dom.contains(&echo.to_string()), "no tunnel in:\n{dom}");
    }
    drop(s);
}
