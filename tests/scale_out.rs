//! Scale-out behind an existing balancer (issue 13, docs/scale-out.md): a real HAProxy (Debian package haproxy)
//! in TCP mode with `send-proxy-v2` and health checks on each hopgate's admin `/readyz`, in front of two hopgate
//! processes; one is drained (SIGTERM) and started again while curl keeps sending requests, none of which fails,
//! and the origin sees the real client's address throughout. And `reuse_port`: two processes on one port.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::origin::Origin;
use support::{Hopgate, exchange, free_low_ports, require, wait_until};

/// The client address of the load: a loopback address of its own, so that an address the origin sees can only
/// have come from the PROXY header.
const CLIENT: &str = "127.0.0.5";

/// A hopgate behind the balancer: `listen` and `admin` on ports the test chose (a restart takes the same ones),
/// PROXY v2 from the balancer's address only.
fn hopgate(listen: u16, admin: u16, origin: SocketAddr) -> Hopgate {
    Hopgate::start(&[
        "gateway",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--to",
        &format!("http://{origin}"),
        "--proxy-protocol",
        "v2",
        "--proxy-protocol-from",
        "127.0.0.1/32",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--drain",
        "10",
        // At least the check's `inter` x `fall` (docs/scale-out.md): the balancer has stopped sending before the
        // listener closes. Without it, a connection whose handshake the kernel has not finished when the socket
        // closes is reset, and HAProxy can't retry it (1 drain in 50 here, under two client loops).
        "--drain-grace",
        "0.5",
    ])
}

/// HAProxy in the foreground: a TCP frontend on `front` balancing over `servers` (listen port, admin port) with
/// `send-proxy-v2` (with a CRC32C checksum TLV) and an HTTP health check of `GET /readyz` on the admin port, and
/// its stats as CSV on `stats`.
struct Haproxy {
    child: Child,
    front: u16,
    stats: u16,
    dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(servers: &[(u16, u16)]) -> Haproxy {
        require("haproxy", "haproxy");
        support::start_on_a_free_port("haproxy", |front| {
            let stats = front + 1;
            let dir = tempfile::tempdir().unwrap();
            let mut conf = format!(
                "global\n  pidfile {d}/haproxy.pid\n\
                 defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
                 \x20 retries 3\n  option redispatch 1\n\
                 listen stats\n  mode http\n  bind 127.0.0.1:{stats}\n  stats enable\n  stats uri /\n\
                 frontend fe\n  bind 127.0.0.1:{front}\n  default_backend hopgates\n\
                 backend hopgates\n  balance roundrobin\n  option httpchk\n  http-check send meth GET uri /readyz\n\
                 \x20 http-check expect status 200\n\
                 \x20 default-server inter 100ms fall 1 rise 1 send-proxy-v2 proxy-v2-options crc32c\n",
                d = dir.path().display()
            );
            for (i, (listen, admin)) in servers.iter().enumerate() {
                conf.push_str(&format!("  server h{} 127.0.0.1:{listen} check port {admin}\n", i + 1));
            }
            let file = dir.path().join("haproxy.cfg");
            std::fs::write(&file, conf).unwrap();
            let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
            let mut child = Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("haproxy");
            let mut exited = None;
            let up = wait_until(Duration::from_secs(20), || {
                exited = child.try_wait().ok().flatten();
                exited.is_some() || std::net::TcpStream::connect(("127.0.0.1", stats)).is_ok()
            });
            if exited.is_some() {
                let err = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
                if err.contains("in use") || err.contains("cannot bind") {
                    return support::PortTry::InUse;
                }
                panic!("haproxy exited: {err}");
            }
            assert!(up, "haproxy did not listen on {stats}");
            support::PortTry::Started(Haproxy { child, front, stats, dir })
        })
    }

    /// Each server's status as HAProxy's stats say (`UP`, `DOWN`, `UP 1/2`...), by name.
    fn status(&self, server: &str) -> String {
        let (code, body, _) = support::curl(&[&format!("http://127.0.0.1:{}/;csv", self.stats)]);
        if code != 200 {
            return String::new();
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > 17 && f[0] == "hopgates" && f[1] == server)
            .map(|f| f[17].to_string())
            .unwrap_or_default()
    }

    fn wait_status(&self, server: &str, want: &str) {
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            last = self.status(server);
            last == want
        });
        assert!(ok, "haproxy's {server} is {last:?}, not {want:?}: {}", self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sequential curl requests from [`CLIENT`] through `front`, one connection each, until `stop` (at most 3,000
/// and 120 s): how many were made and every one that did not end in a 200 (curl's exit status and the code).
struct Load {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(front: u16) -> Load {
        let (stop, made, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let (s, m, f): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) =
            (stop.clone(), Arc::clone(&made), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let url = format!("http://127.0.0.1:{front}/n");
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline && m.load(Ordering::SeqCst) < 3000 {
                let out = Command::new("curl")
                    .args(["-s", "-S", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
                    .args(["--interface", CLIENT, &url])
                    .output()
                    .expect("curl");
                let code = String::from_utf8_lossy(&out.stdout).into_owned();
                if !out.status.success() || code != "200" {
                    let err = String::from_utf8_lossy(&out.stderr).into_owned();
                    f.lock().unwrap().push(format!("{} {code} {err}", out.status));
                }
                m.fetch_add(1, Ordering::SeqCst);
            }
        });
        Load { stop, made, failed, thread }
    }

    fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have been made (bounded).
    fn more(&self, n: usize) {
        let target = self.made() + n;
        assert!(wait_until(Duration::from_secs(60), || self.made() >= target), "the load stalled at {}", self.made());
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        let made = self.made.load(Ordering::SeqCst);
        let failed = self.failed.lock().unwrap().clone();
        (made, failed)
    }
}

/// Access-log lines of `hg` for requests (each starts with a time, then the client).
fn served(hg: &Hopgate) -> Vec<String> {
    lines(&hg.stdout_text())
}

fn lines(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains("\"GET /n HTTP/1.1\"")).map(str::to_string).collect()
}

#[test]
fn haproxy_in_front_of_two_hopgates_one_drained_and_restarted_under_load() {
    let origin = Origin::fixed("ok");
    let base = free_low_ports(4);
    let ports = [(base, base + 1), (base + 2, base + 3)];
    let mut hopgates: Vec<Hopgate> = ports.iter().map(|&(p, a)| hopgate(p, a, origin.addr)).collect();
    let lb = Haproxy::start(&ports);
    lb.wait_status("h1", "UP");
    lb.wait_status("h2", "UP");

    // Two clients at once, so that requests are in flight when a drain starts.
    let loads = [Load::start(lb.front), Load::start(lb.front)];
    let all_served = |hs: &[Hopgate]| hs.iter().all(|h| served(h).len() >= 10);
    assert!(wait_until(Duration::from_secs(60), || all_served(&hopgates)), "both hopgates serve");

    // Drain each in turn under load, twice: /readyz turns 503, HAProxy's check marks it down while its listener
    // still accepts (the drain grace), then the listener closes (what waits in its accept queue is answered) and
    // a connection it refuses meanwhile is dispatched to the other (retries, redispatch). Then it starts again on
    // the same ports and the health check brings it back.
    let mut counts = Vec::new();
    for round in 0..4 {
        let i = round % 2;
        let name = format!("h{}", i + 1);
        let drained = &mut hopgates[i];
        drained.signal("TERM");
        let status = drained.wait_exit(Duration::from_secs(30)).expect("the drained hopgate exits");
        assert!(status.success(), "{status}: {}", drained.stderr_text());
        counts.push(lines(&drained.stdout_final()).len());
        lb.wait_status(&name, "DOWN");
        loads[0].more(20);
        hopgates[i] = hopgate(ports[i].0, ports[i].1, origin.addr);
        lb.wait_status(&name, "UP");
        let back = &hopgates[i];
        assert!(wait_until(Duration::from_secs(60), || served(back).len() >= 10), "{name} serves again");
    }
    let mut made = 0;
    for load in loads {
        let (n, failed) = load.finish();
        assert!(failed.is_empty(), "{} of {n} requests failed: {failed:#?}", failed.len());
        made += n;
    }
    // The running ones' last lines may still be on their way through the access log's writer.
    let drained: usize = counts.iter().sum();
    let logged = || drained + hopgates.iter().map(|h| served(h).len()).sum::<usize>();
    assert!(wait_until(Duration::from_secs(10), || logged() == made), "{} lines for {made} requests", logged());
    counts.extend(hopgates.iter().map(|h| served(h).len()));

    // Every request reached the origin once, naming the real client (from the PROXY header: the connections
    // came from HAProxy).
    let seen = origin.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), made, "every request reached the origin once");
    for s in &seen {
        assert_eq!(s.header("x-forwarded-for"), Some(CLIENT), "{}", s.head);
    }
    for h in &hopgates {
        for line in served(h) {
            assert!(line.split(' ').nth(1).is_some_and(|c| c.starts_with(&format!("{CLIENT}:"))), "{line}");
        }
    }
    eprintln!("{made} requests from two clients, 0 failed; served per hopgate process: {counts:?}");
}

/// `--reuse-port` (`reuse_port = true`): a second process binds the port the first holds, the kernel spreads new
/// connections over both, and the port keeps serving when one of them exits. Without it the second one can't bind.
#[test]
fn reuse_port_lets_two_processes_share_a_port() {
    let origin = Origin::fixed("ok");
    let to = format!("http://{}", origin.addr);
    let a = Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", &to, "--reuse-port"]);
    let port = a.addr.port();
    let listen = format!("127.0.0.1:{port}");
    let mut b = Hopgate::start_config(&format!(
        "[[listener]]\nlisten = \"{listen}\"\nreuse_port = true\n[[listener.route]]\nto = \"{to}\"\n"
    ));
    let out = Command::new(support::bin()).args(["gateway", "--listen", &listen, "--to", &to]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {listen}")), "{err}");

    let requests = 64;
    for i in 0..requests {
        let r = exchange(a.addr, &format!("GET /r{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 200);
    }
    let count = |h: &Hopgate| h.stdout_text().lines().filter(|l| l.contains("\"GET /r")).count();
    assert!(wait_until(Duration::from_secs(10), || count(&a) + count(&b) == requests), "every request logged once");
    assert!(count(&a) > 0 && count(&b) > 0, "both processes took connections: {} and {}", count(&a), count(&b));

    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()));
    for i in 0..8 {
        let r = exchange(a.addr, &format!("GET /s{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 200);
    }
}

/// The value of the `hopgate_connections_open` series on an admin listener at `admin` (base URL).
fn connections_open(admin: &str) -> Option<f64> {
    let (code, body, _) = support::curl(&[&format!("{admin}/metrics")]);
    if code != 200 {
        return None;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("hopgate_connections_open{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A balancer's connection that hopgate accepted just before a drain began carries a request that is on its
/// way: the drain answers it (with `Connection: close`) instead of closing the connection unanswered, which a
/// client behind a layer-4 balancer sees as an empty reply. A kept-alive connection that is idle is closed at
/// once, and one that sends nothing is closed after a short wait, not at the end of the drain time.
#[test]
fn a_connection_accepted_before_a_drain_has_its_first_request_answered() {
    let origin = Origin::fixed("ok");
    let mut hg = Hopgate::gateway(&format!("http://{}", origin.addr), &["--drain", "60", "--admin", "127.0.0.1:0"]);
    let admin = hg.wait_stderr_line(&["admin on http://"]).split("admin on ").nth(1).unwrap().trim().to_string();
    let get = "GET /first HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut kept = support::Raw::connect(hg.addr);
    kept.send(get);
    assert_eq!(kept.response().status, 200);
    let mut fresh = support::Raw::connect(hg.addr);
    let mut silent = support::Raw::connect(hg.addr);
    assert!(
        wait_until(Duration::from_secs(10), || connections_open(&admin) == Some(3.0)),
        "hopgate has accepted all three connections"
    );
    let started = Instant::now();
    hg.signal("TERM");
    assert!(wait_until(Duration::from_secs(10), || support::refused(hg.addr)), "the drain has begun");
    fresh.send(get);
    let r = fresh.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")), "{}", r.head);
    assert!(fresh.closed_within(Duration::from_secs(10)));
    assert!(kept.closed_within(Duration::from_secs(10)), "an idle kept-alive connection is closed by the drain");
    assert!(silent.closed_within(Duration::from_secs(10)), "a connection that sends nothing is closed");
    let status = hg.wait_exit(Duration::from_secs(20)).expect("hopgate exits once nothing is left");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(30), "not held for the 60 s drain time: {:?}", started.elapsed());
    assert_eq!(origin.count(), 2);
}

/// Connections the kernel completed but hopgate had not accepted yet (here held back by `max_connections = 1`)
/// are taken from the accept queue when the drain closes the listener, and each has its request answered with
/// `Connection: close`: closing the socket would reset them, and a balancer in TCP mode that has sent a request
/// on one cannot retry it.
#[test]
fn connections_waiting_in_the_accept_queue_at_a_drain_are_answered_not_reset() {
    let origin = Origin::fixed("ok");
    let mut hg = Hopgate::start_config(&format!(
        "drain_secs = 20\n[limits]\nmax_connections = 1\n\
         [[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://{}\"\n",
        origin.addr
    ));
    let mut held = support::Raw::connect(hg.addr);
    held.send("GET /held HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(held.response().status, 200);
    // The limit is taken: these three wait in the kernel's queue with their requests sent.
    let mut queued: Vec<support::Raw> = (0..3).map(|_| support::Raw::connect(hg.addr)).collect();
    for (i, q) in queued.iter_mut().enumerate() {
        q.send(format!("GET /queued{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    assert_eq!(origin.count(), 1, "the queued connections were not accepted before the drain");
    hg.signal("TERM");
    for q in &mut queued {
        let r = q.response();
        assert_eq!(
            (r.status, r.header("connection"), r.body.as_slice()),
            (200, Some("close"), &b"ok"[..]),
            "{}",
            r.head
        );
        assert!(q.closed_within(Duration::from_secs(10)));
    }
    assert!(held.closed_within(Duration::from_secs(10)), "the idle kept-alive connection is closed by the drain");
    let status = hg.wait_exit(Duration::from_secs(20)).expect("hopgate exits once nothing is left");
    assert!(status.success(), "{}", hg.stderr_text());
    assert_eq!(origin.count(), 4);
    assert!(hg.stderr_text().contains("took 3 connections from the accept queue of"), "{}", hg.stderr_text());
}
