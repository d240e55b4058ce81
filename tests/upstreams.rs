//! Upstream groups (issue 16, docs/upstreams.md) against real origins started here: Python HTTP/1.1 servers in
//! their own processes (so that one can be killed and started again on its port), and two php-fpm pools. The
//! weighted distribution, least_conn against a slow member, consistent hashing (keys stay, about 1/N move when a
//! member is added), a member killed under wrk with no failed request, active checks taking a member down and
//! back, and a POST never sent twice when its member dies after receiving it.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::phpfpm::Fpm;
use support::{Hopgate, Raw, curl_full, wait_until};

/// An origin that answers every GET with its name (after `delay` seconds), `/healthz` with 200, and records
/// each POST (`NAME POST BODY`) in a file; `POST /die` is recorded and then the process exits without answering.
/// Every response goes out in one write.
const ORIGIN: &str = r#"
import os, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
name, port, log, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, body):
        b = body.encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b))
    def do_GET(self):
        if delay and self.path != "/healthz":
            time.sleep(delay)
        self.reply(name)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(log, "a") as f:
            f.write("%s POST %s\n" % (name, body.decode()))
        if self.path == "/die":
            os._exit(1)
        self.reply(name)
class S(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 256
s = S(("127.0.0.1", port), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

const PYTHON: &str = "/usr/bin/python3";

/// Origins of one test, sharing a directory (the script and the POST log).
struct Origins {
    dir: tempfile::TempDir,
    procs: Vec<Option<Child>>,
    ports: Vec<u16>,
}

impl Origins {
    /// `delays.len()` origins named `o0`, `o1`...; `delays[i]`: seconds each GET of `oi` waits.
    fn start(delays: &[f64]) -> Origins {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("origin.py"), ORIGIN).unwrap();
        let mut o = Origins { dir, procs: Vec::new(), ports: Vec::new() };
        for (i, &d) in delays.iter().enumerate() {
            let (child, port) = o.spawn(i, 0, d);
            o.procs.push(Some(child));
            o.ports.push(port);
        }
        o
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("posts.log")
    }

    fn spawn(&self, i: usize, port: u16, delay: f64) -> (Child, u16) {
        let mut child = Command::new(PYTHON)
            .arg(self.dir.path().join("origin.py"))
            .args([format!("o{i}"), port.to_string(), self.log().display().to_string(), delay.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("origin o{i} did not start: {line:?}"));
        (child, port)
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    /// `to = [...]` with these members and weights.
    fn to(&self, members: &[(usize, u32)]) -> String {
        let list: Vec<String> =
            members.iter().map(|&(i, w)| format!("{{ url = \"{}\", weight = {w} }}", self.url(i))).collect();
        format!("to = [{}]", list.join(", "))
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts origin `i` again on its port.
    fn restart(&mut self, i: usize) {
        self.kill(i);
        let (child, port) = self.spawn(i, self.ports[i], 0.0);
        assert_eq!(port, self.ports[i]);
        self.procs[i] = Some(child);
    }

    fn posts(&self) -> Vec<String> {
        std::fs::read_to_string(self.log()).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for Origins {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// hopgate with one route named `app` (the `to` line and `keys`), its access log off, and an admin listener.
fn gateway(to: &str, keys: &str) -> Hopgate {
    Hopgate::start_config(&format!(
        "access_log = \"off\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\nname = \"app\"\n{to}\n{keys}\n"
    ))
}

fn admin(h: &Hopgate) -> String {
    let line = h.wait_stderr_line(&["admin on http://"]);
    line[line.find("http://").unwrap()..].trim().to_string()
}

/// A sample of `/metrics`, 0 when the series is not there.
fn metric(admin: &str, key: &str) -> f64 {
    let c = curl_full(&[&format!("{admin}/metrics")]);
    c.text()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `GET path` on a kept connection, with extra header lines; the status and the body.
fn get(c: &mut Raw, path: &str, extra: &str) -> (u16, String) {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n"));
    let r = c.response();
    (r.status, r.text())
}

#[test]
fn weighted_round_robin_spreads_3000_requests_by_weight() {
    let o = Origins::start(&[0.0, 0.0, 0.0]);
    let h = gateway(&o.to(&[(0, 1), (1, 2), (2, 3)]), "");
    let mut c = Raw::connect(h.addr);
    let mut n: HashMap<String, usize> = HashMap::new();
    for _ in 0..3000 {
        let (status, body) = get(&mut c, "/", "");
        assert_eq!(status, 200, "{body}");
        *n.entry(body).or_default() += 1;
    }
    for (name, want) in [("o0", 500.0), ("o1", 1000.0), ("o2", 1500.0)] {
        let got = n.get(name).copied().unwrap_or(0) as f64;
        assert!((got - want).abs() <= want * 0.05, "{name}: {got} of 3000, want {want} (weights 1:2:3): {n:?}");
    }
    // The members' metrics count them too.
    let admin = admin(&h);
    let key = format!("hopgate_upstream_requests_total{{route=\"app\",upstream=\"{}\"}}", o.url(2));
    assert_eq!(metric(&admin, &key), n["o2"] as f64);
    let key = format!("hopgate_upstream_up{{route=\"app\",upstream=\"{}\"}}", o.url(0));
    assert_eq!(metric(&admin, &key), 1.0);
}

#[test]
fn least_conn_sends_fewer_requests_to_a_slow_member() {
    let o = Origins::start(&[0.3, 0.0, 0.0]);
    let h = gateway(&o.to(&[(0, 1), (1, 1), (2, 1)]), "balance = \"least_conn\"");
    let addr = h.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut names = Vec::new();
                for _ in 0..15 {
                    let (status, body) = get(&mut c, "/", "");
                    assert_eq!(status, 200);
                    names.push(body);
                }
                names
            })
        })
        .collect();
    let mut n: HashMap<String, usize> = HashMap::new();
    for c in clients {
        for name in c.join().unwrap() {
            *n.entry(name).or_default() += 1;
        }
    }
    let slow = n.get("o0").copied().unwrap_or(0);
    let fast = n.get("o1").copied().unwrap_or(0) + n.get("o2").copied().unwrap_or(0);
    assert_eq!(slow + fast, 90);
    // Round robin would give each member 30. The slow one holds its requests 0.3 s; the others answer at once.
    assert!(slow * 4 < fast / 2, "slow member got {slow}, the two fast ones {fast}: {n:?}");
}

/// The member each key goes to: `header:X-User`, `cookie:sid` or the client's address (curl --interface).
fn members_of(h: &Hopgate, how: &str, keys: usize) -> Vec<String> {
    let mut c = Raw::connect(h.addr);
    (0..keys)
        .map(|k| {
            let once = |c: &mut Raw| match how {
                "header" => get(c, "/", &format!("X-User: user{k}\r\n")).1,
                "cookie" => get(c, "/", &format!("Cookie: a=1; sid=s{k}; b=2\r\n")).1,
                _ => {
                    let src = format!("127.0.{}.{}", k / 200, 2 + k % 200);
                    let r = curl_full(&["--interface", &src, &format!("{}/", h.url())]);
                    assert_eq!(r.code, 200, "{}", r.stderr);
                    r.text()
                }
            };
            let first = once(&mut c);
            for _ in 0..2 {
                assert_eq!(once(&mut c), first, "{how} key {k} stays on its member");
            }
            first
        })
        .collect()
}

#[test]
fn consistent_hashing_keeps_keys_and_moves_about_one_in_n_to_a_fourth_member() {
    let o = Origins::start(&[0.0, 0.0, 0.0, 0.0]);
    for (balance, how, keys) in
        [("header:X-User", "header", 120), ("cookie:sid", "cookie", 120), ("client_ip", "ip", 60)]
    {
        let keys_line = format!("balance = \"{balance}\"");
        let three = gateway(&o.to(&[(0, 1), (1, 1), (2, 1)]), &keys_line);
        let before = members_of(&three, how, keys);
        drop(three);
        for name in ["o0", "o1", "o2"] {
            assert!(before.iter().any(|b| b == name), "{balance}: {name} got no key: {before:?}");
        }
        let four = gateway(&o.to(&[(0, 1), (1, 1), (2, 1), (3, 1)]), &keys_line);
        let after = members_of(&four, how, keys);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        for (b, a) in &moved {
            assert_eq!(a.as_str(), "o3", "{balance}: a key moved from {b} to {a}, not to the new member");
        }
        // 1/4 of the keys move to the fourth member (about a third of what each old member had); a key set this
        // size keeps the count well inside these bounds.
        let share = moved.len() as f64 / keys as f64;
        assert!((0.1..=0.45).contains(&share), "{balance}: {} of {keys} keys moved", moved.len());
    }
}

/// wrk's summary: requests, non-2xx/3xx responses and socket errors.
fn wrk(url: &str, secs: u32) -> Child {
    Command::new("wrk")
        .args(["-t2", "-c8", &format!("-d{secs}s"), "--latency", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (apt-get install -y wrk)")
}

#[test]
fn a_member_killed_under_load_costs_no_request() {
    let mut o = Origins::start(&[0.0, 0.0, 0.0]);
    let h = gateway(&o.to(&[(0, 1), (1, 1), (2, 1)]), "health_interval_secs = 1");
    let admin = admin(&h);
    let load = wrk(&format!("{}/", h.url()), 4);
    // Kill o1 once it has taken a share of the load.
    let served = format!("hopgate_upstream_requests_total{{route=\"app\",upstream=\"{}\"}}", o.url(1));
    assert!(wait_until(Duration::from_secs(4), || metric(&admin, &served) >= 200.0), "o1 served no load");
    o.kill(1);
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {text}{}", String::from_utf8_lossy(&out.stderr));
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    assert!(requests > 1000, "{text}");
    assert!(!text.contains("Non-2xx"), "responses other than 2xx:\n{text}");
    assert!(!text.contains("Socket errors"), "socket errors:\n{text}");
    // Taken out by what its death did: the requests in flight cut off (max_fails), or new connections refused.
    h.wait_stderr_line(&[&format!("upstream {} down: ", o.url(1))]);
    let retried = format!("hopgate_upstream_retries_total{{route=\"app\",upstream=\"{}\"}}", o.url(1));
    assert!(metric(&admin, &retried) >= 1.0, "the requests o1 failed were sent elsewhere, and counted");
}

#[test]
fn active_checks_take_a_killed_member_down_and_bring_it_back() {
    let mut o = Origins::start(&[0.0, 0.0]);
    let h = gateway(
        &o.to(&[(0, 1), (1, 1)]),
        "health_check = \"/healthz\"\nhealth_interval_secs = 1\nunhealthy_after = 2\nhealthy_after = 2",
    );
    let admin = admin(&h);
    let up = format!("hopgate_upstream_up{{route=\"app\",upstream=\"{}\"}}", o.url(1));
    assert_eq!(metric(&admin, &up), 1.0, "members start up");
    o.kill(1);
    let killed = Instant::now();
    // interval x unhealthy_after = 2 s, plus one interval for where in its period the kill fell.
    assert!(wait_until(Duration::from_secs(3), || metric(&admin, &up) == 0.0), "not down 3 s after the kill");
    let took = killed.elapsed();
    assert!(took >= Duration::from_millis(900), "down after {took:?}: before a second check could fail");
    h.wait_stderr_line(&[&format!("upstream {} down: ", o.url(1)), "2 failed checks"]);
    // Down: no client request goes there.
    let mut c = Raw::connect(h.addr);
    for _ in 0..6 {
        assert_eq!(get(&mut c, "/", ""), (200, "o0".to_string()));
    }
    o.restart(1);
    assert!(wait_until(Duration::from_secs(3), || metric(&admin, &up) == 1.0), "not up 3 s after the restart");
    h.wait_stderr_line(&[&format!("upstream {} up", o.url(1))]);
    let names: Vec<String> = (0..4).map(|_| get(&mut c, "/", "").1).collect();
    assert!(names.iter().any(|n| n == "o1"), "{names:?}");
}

#[test]
fn no_member_up_is_503_naming_the_route_with_retry_after() {
    let mut o = Origins::start(&[0.0, 0.0]);
    let h = gateway(&o.to(&[(0, 1), (1, 1)]), "path = \"/shop\"\nhealth_interval_secs = 7");
    o.kill(0);
    o.kill(1);
    for _ in 0..2 {
        let r = support::exchange(h.addr, "GET /shop/cart HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 503, "{}", r.head);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert!(r.text().contains("/shop"), "{}", r.text());
    }
    // A member's own 502/503/504 is the client's answer, not retried: none here (all are down), so both
    // requests were hopgate's own 503.
}

#[test]
fn a_post_is_never_sent_twice_when_its_member_dies_after_receiving_it() {
    let o = Origins::start(&[0.0, 0.0, 0.0]);
    let h = gateway(&o.to(&[(0, 1), (1, 1), (2, 1)]), "retries = 2");
    let mut c = Raw::connect(h.addr);
    // Warm every member's pool, so the POST can go on a kept connection too.
    for _ in 0..3 {
        assert_eq!(get(&mut c, "/", "").0, 200);
    }
    c.send("POST /die HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.response();
    assert_eq!(r.status, 502, "{}", r.head);
    let posts = o.posts();
    assert_eq!(posts.len(), 1, "the POST reached the origins {} times: {posts:?}", posts.len());
    assert!(posts[0].ends_with(" POST hello"), "{posts:?}");
    // The other members still answer.
    let mut c = Raw::connect(h.addr);
    for _ in 0..4 {
        assert_eq!(get(&mut c, "/", "").0, 200);
    }
}

/// A script that records each request (with its php-fpm master's PID) and makes a POST wait, so that the test
/// can stop that pool while the request is in it.
const POST_PHP: &str = r#"<?php
$stat = explode(' ', file_get_contents('/proc/self/stat'));
$body = file_get_contents('php://input');
file_put_contents($_GET['log'], $stat[3] . " " . $_SERVER['REQUEST_METHOD'] . " " . $body . "\n", FILE_APPEND);
if ($_SERVER['REQUEST_METHOD'] === 'POST') { sleep(20); }
echo "pool ", $stat[3];
"#;

#[test]
fn php_fpm_group_never_runs_a_post_twice_when_its_pool_dies() {
    let mut a = Fpm::start(&[("post.php", POST_PHP)], false);
    let mut b = Fpm::start(&[("post.php", POST_PHP)], false);
    let logs = tempfile::tempdir().unwrap();
    support::peers::chown_nobody(logs.path());
    let log = logs.path().join("posts.log");
    // Both pools run the scripts under a's root (php-fpm opens SCRIPT_FILENAME; both run as nobody).
    let h = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\n\
         to = [\"{}\", \"{}\"]\nhealth_check = \"fcgi\"\nroot = \"{}\"\n",
        a.target(),
        b.target(),
        a.www.display()
    ));
    let q = format!("/post.php?log={}", log.display());
    let mut c = Raw::connect(h.addr);
    let pools: Vec<String> = (0..4).map(|_| get(&mut c, &q, "").1).collect();
    assert!(pools.iter().all(|p| p.starts_with("pool ")), "{pools:?}");
    assert_ne!(pools[0], pools[1], "round robin over the two pools: {pools:?}");
    let mut post = Raw::connect(h.addr);
    post.send(format!("POST {q} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"));
    let posts = || -> Vec<String> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().filter(|l| l.contains(" POST ")).map(str::to_owned).collect()
    };
    assert!(wait_until(Duration::from_secs(10), || posts().len() == 1), "the POST did not arrive");
    let master: u32 = posts()[0].split(' ').next().unwrap().parse().unwrap();
    let in_a = master == a.pid();
    assert!(in_a || master == b.pid(), "the POST ran in pool {master}, neither {} nor {}", a.pid(), b.pid());
    let other = if in_a { b.pid() } else { a.pid() };
    if in_a {
        a.stop()
    } else {
        b.stop()
    }
    let r = post.response();
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(posts(), [format!("{master} POST hello")], "the POST ran once, in the pool that died");
    // The other pool takes every request from now on.
    let mut c = Raw::connect(h.addr);
    for _ in 0..4 {
        assert_eq!(get(&mut c, &q, ""), (200, format!("pool {other}")));
    }
}

#[test]
fn to_repeated_on_the_command_line_is_a_group_and_mixed_kinds_are_refused() {
    let o = Origins::start(&[0.0, 0.0]);
    let (a, b) = (o.url(0), o.url(1));
    let h = Hopgate::start(&["gateway", "--listen", "127.0.0.1:0", "--to", &a, "--to", &b, "--access-log", "off"]);
    let mut c = Raw::connect(h.addr);
    let names: Vec<String> = (0..4).map(|_| get(&mut c, "/", "").1).collect();
    assert_eq!(names, ["o0", "o1", "o0", "o1"]);
    let out = Command::new(support::bin())
        .args(["gateway", "--listen", "127.0.0.1:0", "--to", &a, "--to", "fastcgi://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fastcgi://127.0.0.1:9 is not of the group's kind"), "{err}");
    // In a file: the line of the member at fault.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(
        &file,
        format!("[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = [\n  \"{a}\",\n  \"scgi://127.0.0.1:9\",\n]\n"),
    )
    .unwrap();
    let out = Command::new(support::bin()).arg("check").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{}:6: ", file.display())) && err.contains("not of the group's kind"), "{err}");
}
