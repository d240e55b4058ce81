//! Proxy authentication under attack (issue 10): an unknown user costs the same as a known one, bcrypt runs on a
//! small bounded pool, and repeated failures from one client address are slowed down. Real binary, users files
//! written by Apache's `htpasswd` (apache2-utils), clients bound to different loopback source addresses.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::origin::Origin;
use support::{Hopgate, Raw, Resp};

/// The tests of this file measure time and CPU: one at a time, so they don't share the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `htpasswd -b -B -C COST FILE USER PASS` for each user (or `-s` for `{SHA}` when cost is 0).
fn users_file(dir: &Path, name: &str, cost: u32, users: &[(&str, &str)]) -> PathBuf {
    support::require("htpasswd", "apache2-utils");
    let file = dir.join(name);
    for (user, pass) in users {
        let mut cmd = Command::new("htpasswd");
        if !file.exists() {
            cmd.arg("-c");
        }
        cmd.arg("-b");
        let cost = cost.to_string();
        if cost == "0" {
            cmd.arg("-s");
        } else {
            cmd.args(["-B", "-C", &cost]);
        }
        let out = cmd.arg(&file).arg(user).arg(pass).output().expect("htpasswd runs");
        assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    }
    file
}

/// `hopgate -v run FILE` with a proxy listener guarded by `users`; `limits` is extra `[limits]` text.
fn start(users: &Path, limits: &str) -> Hopgate {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hopgate.toml");
    let toml = format!(
        "access_log = \"off\"\n[limits]\n{limits}\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n\
         allow_targets = [\"127.0.0.0/8\"]\nusers = \"{}\"\n",
        users.display()
    );
    std::fs::write(&config, toml).unwrap();
    let mut hg = Hopgate::start(&["-v", "run", config.to_str().unwrap()]);
    hg.dir = Some(dir);
    hg
}

/// A client connection from `127.0.0.N`.
fn connect_from(n: u8, to: SocketAddr) -> Raw {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    Raw::from_stream(s.into())
}

fn request(origin: &Origin, user: &str, pass: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("GET {} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {token}\r\n\r\n", origin.url("/"))
}

/// One proxied GET from `127.0.0.N`; the response and how long it took.
fn get(hg: &Hopgate, n: u8, origin: &Origin, user: &str, pass: &str) -> (Resp, Duration) {
    let mut c = connect_from(n, hg.addr);
    let started = Instant::now();
    c.send(request(origin, user, pass));
    let r = c.response();
    (r, started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// hopgate's CPU time so far (user + system), from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// The `N running` of every "checking credentials" debug line whose client is `who` (any client: "").
fn checks(hg: &Hopgate, who: &str) -> Vec<usize> {
    hg.stderr_text()
        .lines()
        .filter_map(|l| l.split_once("proxy auth: checking the credentials of "))
        .filter(|(_, rest)| rest.starts_with(who))
        .map(|(_, rest)| {
            let inside = rest.split_once('(').unwrap_or_else(|| panic!("{rest}")).1;
            inside.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{rest}"))
        })
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a response (or EOF) is waiting on the connection, without blocking.
fn answered(c: &Raw) -> bool {
    c.stream.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = !matches!(c.stream.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
    c.stream.set_nonblocking(false).unwrap();
    r
}

/// The default number of verifications running at once: half the cores, at least one.
fn default_verifying() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
}

#[test]
fn unknown_user_costs_as_much_as_a_wrong_password() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // A {SHA} user next to the bcrypt one: the unknown user pays for the most expensive scheme in the file.
    let users = users_file(dir.path(), "users", 10, &[("alice", "alice-pw")]);
    let sha = users_file(dir.path(), "sha", 0, &[("sam", "sam-pw")]);
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&std::fs::read_to_string(&sha).unwrap());
    std::fs::write(&users, text).unwrap();
    let origin = Origin::fixed("ok");
    let hg = start(&users, "");

    // Every try from its own address, so the failure delay never applies; known and unknown alternate.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..5u8 {
        let (r, t) = get(&hg, 20 + 2 * i, &origin, "alice", "wrong");
        assert_eq!(r.status, 407, "{}", r.text());
        known.push(t);
        let (r, t) = get(&hg, 21 + 2 * i, &origin, "mallory", "wrong");
        assert_eq!(r.status, 407, "{}", r.text());
        unknown.push(t);
    }
    let (k, u) = (median(known), median(unknown));
    println!("median: known user, wrong password {k:?}; unknown user {u:?}");
    assert!(u.as_secs_f64() >= 0.3 * k.as_secs_f64(), "unknown user {u:?} answers faster than a known one {k:?}");
    assert!(k.as_secs_f64() >= 0.3 * u.as_secs_f64(), "unknown user {u:?} costs far more than a known one {k:?}");
    // Both went through the verification pool.
    assert_eq!(checks(&hg, "127.0.0.").len(), 10, "{}", hg.stderr_text());
    assert_eq!(origin.count(), 0);
}

#[test]
fn a_burst_of_wrong_passwords_is_bounded_and_others_are_served() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), "users", 12, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let origin = Origin::fixed("ok");
    let hg = start(&users, "");
    let verifying = default_verifying();

    // alice logs in from 127.0.0.3: her credentials are cached from now on.
    let (r, _) = get(&hg, 3, &origin, "alice", "alice-pw");
    assert_eq!(r.status, 200, "{}", r.text());

    // 16 different wrong passwords at once from 127.0.0.1.
    let cpu_before = cpu_time(hg.pid());
    let started = Instant::now();
    let mut burst: Vec<Raw> = (0..16).map(|_| connect_from(1, hg.addr)).collect();
    for (i, c) in burst.iter_mut().enumerate() {
        c.send(request(&origin, "alice", &format!("wrong-{i}")));
    }
    wait_for("the first burst check", || !checks(&hg, "127.0.0.1 ").is_empty());

    // Meanwhile: alice (cached) and bob (a valid password never seen before) from other addresses are served
    // before the burst is through.
    let (r, _) = get(&hg, 3, &origin, "alice", "alice-pw");
    assert_eq!(r.status, 200, "{}", r.text());
    let pending_after_alice = burst.iter().filter(|c| !answered(c)).count();
    let (r, _) = get(&hg, 2, &origin, "bob", "bob-pw");
    assert_eq!(r.status, 200, "{}", r.text());
    let pending_after_bob = burst.iter().filter(|c| !answered(c)).count();
    assert!(pending_after_alice > 0, "the cached login waited for the whole burst");
    assert!(pending_after_bob > 0, "bob's valid login waited for the whole burst");

    // One address gets at most 8 checks queued or running (auth_max_queued / 4); the rest are 503 at once.
    let statuses: Vec<Resp> = burst.iter_mut().map(|c| c.response()).collect();
    let wall = started.elapsed();
    let cpu = cpu_time(hg.pid()) - cpu_before;
    let count = |s: u16| statuses.iter().filter(|r| r.status == s).count();
    assert_eq!((count(407), count(503)), (8, 8), "{:?}", statuses.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in statuses.iter().filter(|r| r.status == 503) {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.text().contains("too many proxy credential checks from 127.0.0.1"), "{}", r.text());
    }
    let running = checks(&hg, "");
    println!("burst: {wall:?} wall, {cpu:?} CPU; checks (running at once): {running:?}");
    assert_eq!(checks(&hg, "127.0.0.1 ").len(), 8);
    assert!(running.iter().all(|&n| n <= verifying), "more than {verifying} at once: {running:?}");
    // The pool never used more cores than it has threads (wide margin for the rest of hopgate).
    assert!(
        cpu.as_secs_f64() <= wall.as_secs_f64() * (verifying as f64 + 0.5),
        "{cpu:?} of CPU in {wall:?} with {verifying} verifying"
    );
    assert_eq!(origin.count(), 3);
}

#[test]
fn a_full_queue_answers_503_and_equal_checks_run_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), "users", 12, &[("alice", "alice-pw")]);
    let origin = Origin::fixed("ok");
    let hg = start(&users, "auth_max_verifying = 1\nauth_max_queued = 4\n");

    // 16 clients from 16 addresses: one check runs, four wait, eleven are turned away.
    let mut burst: Vec<Raw> = (0..16).map(|i| connect_from(100 + i, hg.addr)).collect();
    for (i, c) in burst.iter_mut().enumerate() {
        c.send(request(&origin, "alice", &format!("wrong-{i}")));
    }
    let statuses: Vec<Resp> = burst.iter_mut().map(|c| c.response()).collect();
    let count = |s: u16| statuses.iter().filter(|r| r.status == s).count();
    assert_eq!((count(407), count(503)), (5, 11), "{:?}", statuses.iter().map(|r| r.status).collect::<Vec<_>>());
    let busy = statuses.iter().find(|r| r.status == 503).unwrap();
    assert!(busy.text().contains("auth_max_queued"), "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(checks(&hg, "").iter().all(|&n| n == 1), "{:?}", checks(&hg, ""));

    // The same credentials on 6 connections at once (a browser after a restart): one bcrypt for all of them.
    let before = checks(&hg, "").len();
    let mut same: Vec<Raw> = (0..6).map(|_| connect_from(7, hg.addr)).collect();
    for c in same.iter_mut() {
        c.send(request(&origin, "alice", "alice-pw"));
    }
    for c in same.iter_mut() {
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(checks(&hg, "").len() - before, 1, "{}", hg.stderr_text());
    assert_eq!(origin.count(), 6);
}

#[test]
fn a_full_queue_of_failing_addresses_makes_room_for_a_clean_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), "users", 12, &[("alice", "alice-pw")]);
    let origin = Origin::fixed("ok");
    let hg = start(&users, "auth_max_verifying = 1\nauth_max_queued = 4\n");

    // Five addresses fail once each, then try again all at once: one check runs, four wait, the queue is full.
    for n in 11..16 {
        let (r, _) = get(&hg, n, &origin, "alice", "wrong");
        assert_eq!(r.status, 407, "{}", r.text());
    }
    let mut again: Vec<Raw> = (11..16).map(|n| connect_from(n, hg.addr)).collect();
    for (i, c) in again.iter_mut().enumerate() {
        c.send(request(&origin, "alice", &format!("wrong-again-{i}")));
    }
    wait_for("a check of the second round", || checks(&hg, "").len() > 5);
    // An address that never failed gets in: the last waiting check of a failing one makes room (503)...
    let (r, _) = get(&hg, 20, &origin, "alice", "alice-pw");
    assert_eq!(r.status, 200, "{}", r.text());
    // ...and it went before the failing ones still waiting.
    assert!(again.iter().filter(|c| !answered(c)).count() > 0, "the clean login waited for the whole queue");
    let statuses: Vec<u16> = again.iter_mut().map(|c| c.response().status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 407).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 1, "{statuses:?}");
}

#[test]
fn repeated_failures_from_one_address_are_slowed_down() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), "users", 10, &[("alice", "alice-pw")]);
    let origin = Origin::fixed("ok");
    let hg = start(&users, "");
    let delays =
        |who: &str| hg.stderr_text().lines().filter(|l| l.contains(&format!("proxy auth: {who} failed"))).count();
    let rejected = |r: &Resp| r.status == 407 && r.text().contains("proxy credentials rejected");
    let throttled = |r: &Resp| {
        r.status == 407
            && r.text().contains("too many failed proxy logins from 127.0.0.1")
            && r.header("proxy-authenticate") == Some("Basic realm=\"hopgate\"")
            && r.header("retry-after").is_some()
    };

    // Five failures from 127.0.0.1 are checked as they come.
    for _ in 0..5 {
        let (r, _) = get(&hg, 1, &origin, "alice", "wrong");
        assert!(rejected(&r), "{}", r.text());
    }
    assert_eq!(checks(&hg, "127.0.0.1 ").len(), 5);
    assert_eq!(delays("127.0.0.1"), 0);

    // Then three at once: one waits its turn and is checked, two are refused without a check.
    let mut three: Vec<Raw> = (0..3).map(|_| connect_from(1, hg.addr)).collect();
    for c in three.iter_mut() {
        c.send(request(&origin, "alice", "wrong"));
    }
    // Another address meanwhile is checked at once, right or wrong.
    let (r, _) = get(&hg, 2, &origin, "alice", "alice-pw");
    assert_eq!(r.status, 200, "{}", r.text());
    let (r, _) = get(&hg, 2, &origin, "alice", "wrong");
    assert!(rejected(&r), "{}", r.text());
    let three: Vec<Resp> = three.iter_mut().map(|c| c.response()).collect();
    assert_eq!(three.iter().filter(|r| rejected(r)).count(), 1, "{three:?}");
    assert_eq!(three.iter().filter(|r| throttled(r)).count(), 2, "{three:?}");
    assert_eq!(checks(&hg, "127.0.0.1 ").len(), 6);
    assert_eq!(delays("127.0.0.1"), 1, "{}", hg.stderr_text());
    assert_eq!(delays("127.0.0.2"), 0, "{}", hg.stderr_text());
    assert_eq!(checks(&hg, "127.0.0.2 ").len(), 2);

    // The right password from 127.0.0.1 gets through once its turn comes, and clears the address's record.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (r, _) = get(&hg, 1, &origin, "alice", "alice-pw");
        if r.status == 200 {
            break;
        }
        assert!(throttled(&r), "{}", r.text());
        assert!(Instant::now() < deadline, "never let through");
        std::thread::sleep(Duration::from_millis(200));
    }
    let delayed_so_far = delays("127.0.0.1");
    // Five new failures are checked at once again; the sixth waits.
    for _ in 0..5 {
        let (r, _) = get(&hg, 1, &origin, "alice", "wrong");
        assert!(rejected(&r), "{}", r.text());
    }
    assert_eq!(delays("127.0.0.1"), delayed_so_far, "{}", hg.stderr_text());
    let (r, took) = get(&hg, 1, &origin, "alice", "wrong");
    assert!(rejected(&r), "{}", r.text());
    assert_eq!(delays("127.0.0.1"), delayed_so_far + 1, "{}", hg.stderr_text());
    println!("sixth failure answered after {took:?}");
}

#[test]
fn auth_limits_are_checked_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, why) in [
        ("auth_max_verifying", "0", "must be at least 1"),
        ("auth_max_queued", "0", "must be at least 1"),
        ("auth_max_verifying", "5000", "must be at most 1024"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, format!("[limits]\n{key} = {value}\n[[listener]]\nlisten = \"127.0.0.1:0\"\n"))
            .unwrap();
        let out = Command::new(support::bin()).arg("check").arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("bad.toml:2: {key} {why}")), "{err}");
    }
}
