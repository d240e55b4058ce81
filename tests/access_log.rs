//! The access log in the formats tools read (docs/operations.md): hopgate's own line, Apache's `common` and
//! `combined`, and JSON lines; the route's name and the proxy-authenticated user in them; SIGUSR1 reopening a log
//! file after logrotate renamed it. Every line is read by a strict parser written here (field by field, with
//! Apache's escapes) or by serde_json, and the Apache-format logs also by GoAccess and fail2ban-regex (Debian
//! packages goaccess and fail2ban).

mod support;

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use support::origin::{Next, Origin, echo_server, respond};
use support::peers::htpasswd;
use support::tls::{KeyType, Pki};
use support::{Hopgate, Raw, bin, curl_full, wait_until};

// ---------------------------------------------------------------------------------------------------------------
// Reading log files

/// The complete lines of a log file so far (without their `\n`); a partly written last line is left out.
fn complete_lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => bytes[..last].split(|&b| b == b'\n').map(<[u8]>::to_vec).collect(),
        None => Vec::new(),
    }
}

/// Waits (up to 10 s) until the files together hold `n` complete lines, then checks that each file ends with a
/// whole line and that no more lines come; returns each file's lines.
fn wait_lines(paths: &[&Path], n: usize) -> Vec<Vec<Vec<u8>>> {
    let count = || paths.iter().map(|p| complete_lines(p).len()).sum::<usize>();
    let ok = wait_until(Duration::from_secs(10), || count() >= n);
    let all: Vec<Vec<Vec<u8>>> = paths.iter().map(|p| complete_lines(p)).collect();
    let text = |ls: &Vec<Vec<u8>>| ls.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>();
    assert!(ok, "expected {n} log lines, have:\n{:#?}", all.iter().map(text).collect::<Vec<_>>());
    assert_eq!(count(), n, "exactly {n} lines: {:#?}", all.iter().map(text).collect::<Vec<_>>());
    for p in paths {
        let bytes = std::fs::read(p).unwrap_or_default();
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{} ends inside a line", p.display());
    }
    all
}

fn one_file(path: &Path, n: usize) -> Vec<Vec<u8>> {
    wait_lines(&[path], n).remove(0)
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// A strict reader of Apache's common and combined formats:
//   %h %l %u %t "%r" %>s %b [ "%{Referer}i" "%{User-agent}i" ]

#[derive(Debug, Clone, PartialEq)]
struct Clf {
    host: IpAddr,
    /// `%u`; None for `-`.
    user: Option<String>,
    /// `%t` without its brackets.
    time: String,
    method: String,
    target: Vec<u8>,
    protocol: String,
    status: u16,
    /// `%b`; None for `-`.
    bytes: Option<u64>,
    /// combined only; None for `"-"`.
    referer: Option<Vec<u8>>,
    agent: Option<Vec<u8>>,
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {} of {:?}", self.i, String::from_utf8_lossy(self.s)))
    }

    fn lit(&mut self, want: &[u8]) -> Result<(), String> {
        if self.s[self.i..].starts_with(want) {
            self.i += want.len();
            Ok(())
        } else {
            self.fail(&format!("expected {:?}", String::from_utf8_lossy(want)))
        }
    }

    /// A non-empty run of visible ASCII up to (not including) the next space.
    fn word(&mut self) -> Result<&'a str, String> {
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != b' ' {
            if !self.s[self.i].is_ascii_graphic() {
                return self.fail("a byte that is not visible ASCII");
            }
            self.i += 1;
        }
        if self.i == start {
            return self.fail("an empty field");
        }
        Ok(std::str::from_utf8(&self.s[start..self.i]).expect("ASCII"))
    }

    /// `"..."` with Apache's escapes (ap_escape_logitem): `\"`, `\\`, `\b \n \r \t \v`, `\xhh` (lowercase hex);
    /// every other byte visible ASCII or a space. Returns the bytes it stands for.
    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        self.lit(b"\"")?;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else { return self.fail("an unterminated quoted field") };
            self.i += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else { return self.fail("a lone backslash") };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' => out.push(e),
                        b'b' => out.push(8),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'v' => out.push(11),
                        b'x' => {
                            let hex = self.s.get(self.i..self.i + 2).unwrap_or_default();
                            let lower = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
                            if hex.len() != 2 || !hex.iter().all(lower) {
                                return self.fail("\\x without two lowercase hex digits");
                            }
                            out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                            self.i += 2;
                        }
                        _ => return self.fail("an unknown escape"),
                    }
                }
                0x20..=0x7e => out.push(b),
                _ => return self.fail("a raw byte Apache escapes"),
            }
        }
    }

    /// `"-"` is None (Apache writes it for a missing header).
    fn quoted_or_dash(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.s[self.i..].starts_with(b"\"-\"") {
            self.i += 3;
            return Ok(None);
        }
        self.quoted().map(Some)
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Seconds since the epoch of a civil UTC date (H. Hinnant's days_from_civil).
fn epoch(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + h * 3600 + mi * 60 + s
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Digits of fixed width, in a range.
fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    let n: i64 = s.parse().map_err(|_| format!("{s:?}"))?;
    if !range.contains(&n) {
        return Err(format!("{n} out of {range:?}"));
    }
    Ok(n)
}

/// `%t` (`10/Oct/2000:13:55:36 +0000`, strftime `%d/%b/%Y:%H:%M:%S %z`) as seconds since the epoch.
fn clf_time(t: &str) -> Result<i64, String> {
    let b = t.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' || b[17] != b':' {
        return Err(format!("time {t:?} is not dd/Mon/yyyy:HH:MM:SS +zzzz"));
    }
    if &t[20..] != " +0000" {
        return Err(format!("time {t:?} is not in UTC (+0000)"));
    }
    let month = MONTHS.iter().position(|m| *m == &t[3..6]).ok_or(format!("month in {t:?}"))? as i64 + 1;
    Ok(epoch(
        num(&t[7..11], 1970..=9999)?,
        month,
        num(&t[0..2], 1..=31)?,
        num(&t[12..14], 0..=23)?,
        num(&t[15..17], 0..=59)?,
        num(&t[18..20], 0..=60)?,
    ))
}

/// RFC 3339 as hopgate writes it: `2026-12-04T18:34:49Z`.
fn rfc3339_time(t: &str) -> Result<i64, String> {
    let b = t.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return Err(format!("time {t:?} is not YYYY-MM-DDTHH:MM:SSZ"));
    }
    Ok(epoch(
        num(&t[0..4], 1970..=9999)?,
        num(&t[5..7], 1..=12)?,
        num(&t[8..10], 1..=31)?,
        num(&t[11..13], 0..=23)?,
        num(&t[14..16], 0..=59)?,
        num(&t[17..19], 0..=60)?,
    ))
}

/// A logged time is the time of this test run (a wide window: this checks the date, not the timing).
fn recent(secs: i64, line: &str) {
    assert!((secs - now_secs()).abs() < 600, "the time in {line:?} is not today's");
}

fn parse_clf(line: &[u8], combined: bool) -> Result<Clf, String> {
    let mut c = Cursor { s: line, i: 0 };
    let host = c.word()?.parse::<IpAddr>().map_err(|e| format!("%h: {e} in {:?}", text(line)))?;
    c.lit(b" - ")?;
    let user = match c.word()? {
        "-" => None,
        u => Some(u.to_string()),
    };
    c.lit(b" [")?;
    let time = std::str::from_utf8(line.get(c.i..c.i + 26).ok_or("short line")?).map_err(|e| e.to_string())?;
    clf_time(time)?;
    c.i += 26;
    c.lit(b"] ")?;
    let request = c.quoted()?;
    let parts: Vec<&[u8]> = request.split(|&b| b == b' ').collect();
    let [method, target, protocol] = parts[..] else { return Err(format!("%r {:?} is not 3 words", text(&request))) };
    c.lit(b" ")?;
    let status = c.word()?;
    if status.len() != 3 {
        return Err(format!("status {status:?}"));
    }
    c.lit(b" ")?;
    let bytes = match c.word()? {
        "-" => None,
        "0" => return Err("%b is - for zero bytes, never 0".into()),
        b if b.starts_with('0') => return Err(format!("%b {b:?} has a leading zero")),
        b => Some(num(b, 1..=i64::MAX)? as u64),
    };
    let (referer, agent) = if combined {
        c.lit(b" ")?;
        let r = c.quoted_or_dash()?;
        c.lit(b" ")?;
        (r, c.quoted_or_dash()?)
    } else {
        (None, None)
    };
    if c.i != line.len() {
        return c.fail("bytes after the last field");
    }
    Ok(Clf {
        host,
        user,
        time: time.to_string(),
        method: String::from_utf8(method.to_vec()).map_err(|e| e.to_string())?,
        target: target.to_vec(),
        protocol: String::from_utf8(protocol.to_vec()).map_err(|e| e.to_string())?,
        status: status.parse().map_err(|_| format!("status {status:?}"))?,
        bytes,
        referer,
        agent,
    })
}

fn clf(line: &[u8], combined: bool) -> Clf {
    let r = parse_clf(line, combined).unwrap_or_else(|e| panic!("not Apache's format: {e}"));
    recent(clf_time(&r.time).unwrap(), &text(line));
    r
}

/// The line for `target`, among lines of Apache's format.
fn clf_for(lines: &[Vec<u8>], target: &[u8], combined: bool) -> Clf {
    let found: Vec<Clf> = lines.iter().map(|l| clf(l, combined)).filter(|r| r.target == target).collect();
    assert_eq!(
        found.len(),
        1,
        "one line for {:?} in {:#?}",
        text(target),
        lines.iter().map(|l| text(l)).collect::<Vec<_>>()
    );
    found.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// JSON lines

/// The keys of a JSON object in the order they come, duplicates kept (serde_json's Value keeps one of them).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    m.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

const JSON_KEYS: [&str; 12] = [
    "time",
    "client",
    "user",
    "method",
    "target",
    "version",
    "status",
    "bytes",
    "duration_ms",
    "upstream",
    "route",
    "aborted",
];

/// One JSON line: a single object with exactly the documented keys (and for tunnels `extra` after them), each of
/// its documented type.
fn json(line: &[u8], extra: &[&str]) -> serde_json::Map<String, Value> {
    let s = std::str::from_utf8(line).unwrap_or_else(|e| panic!("a JSON line is UTF-8: {e}: {:?}", text(line)));
    let keys: Keys = serde_json::from_str(s).unwrap_or_else(|e| panic!("not one JSON object: {e}: {s}"));
    let want: Vec<&str> = JSON_KEYS.iter().chain(extra).copied().collect();
    assert_eq!(keys.0, want, "keys of {s}");
    let Value::Object(o) = serde_json::from_str::<Value>(s).unwrap() else { panic!("not an object: {s}") };
    recent(rfc3339_time(o["time"].as_str().expect("time is a string")).unwrap(), s);
    for k in ["client", "method", "target", "version"] {
        assert!(o[k].is_string(), "{k} is a string: {s}");
    }
    for k in ["user", "upstream", "route"] {
        assert!(o[k].is_string() || o[k].is_null(), "{k} is a string or null: {s}");
    }
    for k in ["status", "bytes", "duration_ms"] {
        assert!(o[k].is_u64(), "{k} is a whole number: {s}");
    }
    assert!(o["aborted"].is_boolean(), "aborted is true or false: {s}");
    o
}

/// The one JSON line whose `target` is `target` and status `status`.
fn json_for(lines: &[Vec<u8>], target: &str, status: u64) -> serde_json::Map<String, Value> {
    let found: Vec<_> = lines
        .iter()
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|v| v["target"] == target && v["status"] == status)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one line for {target} {status} in {:#?}",
        lines.iter().map(|l| text(l)).collect::<Vec<_>>()
    );
    let Value::Object(o) = found.into_iter().next().unwrap() else { unreachable!() };
    o
}

// ---------------------------------------------------------------------------------------------------------------
// Peers

/// An origin answering `hello\n` (6 bytes), `204` under `/empty`, and `HEAD` without a body.
fn origin() -> Origin {
    Origin::start(|seen, s| {
        if seen.target.contains("/empty") {
            respond(s, "HTTP/1.1 204 No Content", &[], b"");
        } else {
            respond(s, "HTTP/1.1 200 OK", &[("Content-Type", "text/plain")], b"hello\n");
        }
        Next::KeepAlive
    })
}

/// A temp dir for a log file (kept until the test ends, after hopgate).
fn log_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    (dir, path)
}

/// A request exactly as written, on its own connection; the status.
fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut c = Raw::connect(addr);
    c.send(request);
    c.response().status
}

/// A CONNECT tunnel to `authority` through the proxy at `proxy` (with `Proxy-Authorization: auth`): sends `data`,
/// reads it back from the echo server, half-closes and reads to the end.
fn tunnel_echo(proxy: SocketAddr, authority: &str, auth: Option<&str>, data: &[u8]) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let auth = auth.map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n").as_bytes()).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed inside the response head: {:?}", text(&head));
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 "), "{}", text(&head));
    s.write_all(data).unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

fn goaccess(log: &Path, format: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new("goaccess")
        .arg(log)
        .args([&format!("--log-format={format}"), "--no-global-config", "-o"])
        .arg(&report)
        .output()
        .unwrap_or_else(|e| panic!("goaccess not runnable ({e}): apt-get install -y goaccess"));
    let report = std::fs::read(&report).unwrap_or_else(|_| {
        panic!("goaccess wrote no report: {}{}", text(&out.stdout), text(&out.stderr));
    });
    serde_json::from_slice(&report).expect("goaccess's report is JSON")
}

// ---------------------------------------------------------------------------------------------------------------
// The tests

#[test]
fn combined_is_apaches_format_and_goaccess_and_fail2ban_read_it() {
    let origin = origin();
    let (_dir, log) = log_dir();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"{}\"\naccess_log_format = \"combined\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\npath = \"/app\"\nname = \"app\"\nto = \"http://{}\"\n",
        log.display(),
        origin.addr
    ));
    let url = |p: &str| format!("{}{p}", hg.url());

    let agent = r#"Mozilla/5.0 (X11; Linux) "quoted" \back"#;
    let r = curl_full(&["-A", agent, "-e", "http://ref.example/p?q=1", &url("/app/page?x=1")]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello\n"));
    let r = curl_full(&["-I", "-H", "User-Agent:", &url("/app/head")]);
    assert_eq!(r.code, 200);
    let r = curl_full(&["-H", "User-Agent:", &url("/app/empty")]);
    assert_eq!(r.code, 204);
    let not_found = curl_full(&["-A", "EmailCollector", &url("/elsewhere")]);
    assert_eq!(not_found.code, 404);
    // What a client could try to forge a line with: quotes and backslashes in the target and the User-Agent, bytes
    // above 127, a tab.
    let status = raw_status(
        hg.addr,
        b"GET /app/q\"b\\c/\xc3\xa9 HTTP/1.1\r\nHost: x\r\nUser-Agent: a\tb\xe9\" \"EmailCollector\\\r\n\r\n",
    );
    assert_eq!(status, 200);

    let lines = one_file(&log, 5);
    let page = clf_for(&lines, b"/app/page?x=1", true);
    let want = Clf {
        host: "127.0.0.1".parse().unwrap(),
        user: None,
        time: page.time.clone(),
        method: "GET".into(),
        target: b"/app/page?x=1".to_vec(),
        protocol: "HTTP/1.1".into(),
        status: 200,
        bytes: Some(6),
        referer: Some(b"http://ref.example/p?q=1".to_vec()),
        agent: Some(agent.as_bytes().to_vec()),
    };
    assert_eq!(page, want);
    let head = clf_for(&lines, b"/app/head", true);
    assert_eq!((head.method.as_str(), head.status, head.bytes), ("HEAD", 200, None), "no body: %b is -");
    assert_eq!((head.referer, head.agent), (None, None), "missing headers are \"-\"");
    let empty = clf_for(&lines, b"/app/empty", true);
    assert_eq!((empty.status, empty.bytes), (204, None));
    let missing = clf_for(&lines, b"/elsewhere", true);
    assert_eq!((missing.status, missing.bytes), (404, Some(not_found.body.len() as u64)));
    assert_eq!(missing.agent.as_deref(), Some(&b"EmailCollector"[..]));
    let odd = clf_for(&lines, b"/app/q\"b\\c/\xc3\xa9", true);
    assert_eq!(odd.agent.as_deref(), Some(&b"a\tb\xe9\" \"EmailCollector\\"[..]));
    // The exact bytes, as Apache escapes them.
    let odd_line = lines.iter().find(|l| l.windows(4).any(|w| w == b"/q\\\"")).expect("the odd line");
    assert_eq!(
        text(odd_line),
        format!(
            "127.0.0.1 - - [{}] \"GET /app/q\\\"b\\\\c/\\xc3\\xa9 HTTP/1.1\" 200 6 \"-\" \"a\\tb\\xe9\\\" \\\"EmailCollector\\\\\"",
            odd.time
        )
    );

    // GoAccess reads every line as a valid request.
    let report = goaccess(&log, "COMBINED");
    assert_eq!(report["general"]["total_requests"], 5, "{}", report["general"]);
    assert_eq!(report["general"]["valid_requests"], 5, "{}", report["general"]);
    assert_eq!(report["general"]["failed_requests"], 0, "{}", report["general"]);

    // fail2ban's apache-badbots filter finds the bad bot (the 404) by its User-Agent, at the client's address. The
    // forged `" "EmailCollector\` is escaped, so it can't stand as a User-Agent field of its own.
    let out = Command::new("fail2ban-regex")
        .arg(&log)
        .arg("/etc/fail2ban/filter.d/apache-badbots.conf")
        .arg("--print-all-matched")
        .output()
        .unwrap_or_else(|e| panic!("fail2ban-regex not runnable ({e}): apt-get install -y fail2ban"));
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    assert!(report.contains("Lines: 5 lines, 0 ignored, 1 matched, 4 missed"), "{report}");
    assert!(report.contains("127.0.0.1") && report.contains("/elsewhere"), "{report}");
}

#[test]
fn common_from_the_command_line_and_goaccess_counts_it() {
    let origin = origin();
    let (_dir, log) = log_dir();
    let log_arg = log.to_str().unwrap().to_string();
    let hg = Hopgate::gateway(
        &format!("http://{}", origin.addr),
        &["--access-log", &log_arg, "--access-log-format", "common"],
    );
    for i in 0..3 {
        let r = curl_full(&["-A", "ua", "-e", "ref", &format!("{}/c/{i}", hg.url())]);
        assert_eq!(r.code, 200);
    }
    let lines = one_file(&log, 3);
    for i in 0..3 {
        let r = clf_for(&lines, format!("/c/{i}").as_bytes(), false);
        assert_eq!((r.method.as_str(), r.protocol.as_str(), r.status, r.bytes), ("GET", "HTTP/1.1", 200, Some(6)));
        assert_eq!(r.user, None);
    }
    assert!(lines.iter().all(|l| !l.ends_with(b"\"ua\"")), "common has no Referer or User-agent");
    let report = goaccess(&log, "COMMON");
    assert_eq!(report["general"]["valid_requests"], 3, "{}", report["general"]);
    assert_eq!(report["general"]["failed_requests"], 0, "{}", report["general"]);
}

#[test]
fn http2_requests_are_logged_as_apache_writes_them() {
    let pki = Pki::new();
    let pair = pki.leaf("srv", KeyType::EcdsaP256, &["localhost"]);
    let origin = origin();
    let (_dir, log) = log_dir();
    let log_arg = log.to_str().unwrap().to_string();
    let hg = Hopgate::start(&[
        "gateway",
        "--listen",
        "https://127.0.0.1:0",
        "--tls-cert",
        pair.cert(),
        "--tls-key",
        pair.key(),
        "--to",
        &format!("http://{}", origin.addr),
        "--access-log",
        &log_arg,
        "--access-log-format",
        "combined",
    ]);
    let resolve = format!("localhost:{}:127.0.0.1", hg.addr.port());
    let url = format!("https://localhost:{}/h2?x=1", hg.addr.port());
    let r = curl_full(&["--http2", "--resolve", &resolve, "--cacert", pki.ca.cert(), "-A", "h2-client", &url]);
    assert_eq!((r.code, r.version.as_str()), (200, "2"), "{}", r.stderr);
    let lines = one_file(&log, 1);
    let line = clf(&lines[0], true);
    assert_eq!((line.method.as_str(), &line.target[..], line.protocol.as_str()), ("GET", &b"/h2?x=1"[..], "HTTP/2.0"));
    assert_eq!((line.status, line.bytes, line.agent.as_deref()), (200, Some(6), Some(&b"h2-client"[..])));
}

/// A users file with `ann` (password `s3cret`, `{SHA}`); and the `Proxy-Authorization` value for `user:pass`.
fn users() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    htpasswd(&file, &["-s"], "ann", "s3cret");
    (dir, file)
}

fn basic(user_pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
}

#[test]
fn json_lines_carry_user_route_upstream_and_tunnels() {
    let origin = origin();
    let echo = echo_server();
    let (_udir, users) = users();
    let (_dir, log) = log_dir();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"{log}\"\naccess_log_format = \"json\"\n\
         [[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n\
         connect_ports = [{echo_port}]\nusers = \"{users}\"\n\
         [[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [[listener.route]]\npath = \"/named\"\nname = \"app \\\"one\\\"\"\nto = \"http://{origin}\"\n\
         [[listener.route]]\nto = \"http://{origin}\"\n",
        log = log.display(),
        echo_port = echo.port(),
        users = users.display(),
        origin = origin.addr,
    ));
    let proxy = hg.url();
    let gateway: SocketAddr = hg.listening[1].trim_start_matches("http://").parse().unwrap();

    // Through the forward proxy: authenticated, refused without and with wrong credentials.
    let target = origin.url("/j?x=1");
    let r = curl_full(&["-x", &proxy, "-U", "ann:s3cret", &target]);
    assert_eq!((r.code, r.text().as_str()), (200, "hello\n"));
    let no_auth = curl_full(&["-x", &proxy, &origin.url("/no-auth")]);
    assert_eq!(no_auth.code, 407);
    let wrong = curl_full(&["-x", &proxy, "-U", "ann:wrong-pw", &origin.url("/wrong")]);
    assert_eq!(wrong.code, 407);
    // A CONNECT tunnel: 4 bytes each way.
    tunnel_echo(hg.addr, &format!("127.0.0.1:{}", echo.port()), Some(&basic("ann:s3cret")), b"ping");

    // Through the gateway listener: a named route, a route named by its target, a target a client could try to
    // break a line with, and a request refused before any route was picked.
    let r = curl_full(&[&format!("http://{gateway}/named/x")]);
    assert_eq!(r.code, 200);
    let r = curl_full(&[&format!("http://{gateway}/other")]);
    assert_eq!(r.code, 200);
    assert_eq!(raw_status(gateway, b"GET /other/q\"b\\c/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_eq!(raw_status(gateway, b"GET /bad-host HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);

    let lines = one_file(&log, 8);
    for l in &lines {
        let s = text(l);
        assert!(!s.contains("s3cret") && !s.contains("wrong-pw"), "a password in the log: {s}");
    }
    for l in lines.iter().filter(|l| !text(l).contains("\"CONNECT\"")) {
        json(l, &[]);
    }
    let upstream = origin.addr.to_string();
    let j = json_for(&lines, &target, 200);
    assert_eq!(j["client"], "127.0.0.1");
    assert_eq!(
        (j["user"].as_str(), j["method"].as_str(), j["version"].as_str()),
        (Some("ann"), Some("GET"), Some("HTTP/1.1"))
    );
    assert_eq!(
        (j["bytes"].as_u64(), j["upstream"].as_str(), j["route"].as_str()),
        (Some(6), Some(upstream.as_str()), Some("proxy"))
    );
    assert_eq!(j["aborted"], false);
    let j = json_for(&lines, &origin.url("/no-auth"), 407);
    assert_eq!((&j["user"], &j["upstream"], j["route"].as_str()), (&Value::Null, &Value::Null, Some("proxy")));
    assert_eq!(j["bytes"].as_u64(), Some(no_auth.body.len() as u64));
    let j = json_for(&lines, &origin.url("/wrong"), 407);
    assert_eq!(j["user"], Value::Null, "a user whose password was wrong is not logged");

    let connect_target = format!("127.0.0.1:{}", echo.port());
    let tunnel_line = lines.iter().find(|l| text(l).contains("\"CONNECT\"")).expect("the CONNECT line");
    let j = json(tunnel_line, &["up", "down", "end"]);
    assert_eq!(
        (j["method"].as_str(), j["target"].as_str(), j["status"].as_u64()),
        (Some("CONNECT"), Some(connect_target.as_str()), Some(200))
    );
    assert_eq!(
        (j["user"].as_str(), j["route"].as_str(), j["upstream"].as_str()),
        (Some("ann"), Some("proxy"), Some(connect_target.as_str()))
    );
    assert_eq!(
        (j["bytes"].as_u64(), j["up"].as_u64(), j["down"].as_u64(), j["end"].as_str()),
        (Some(4), Some(4), Some(4), Some("closed"))
    );
    assert_eq!(j["aborted"], false);

    let j = json_for(&lines, "/named/x", 200);
    assert_eq!((j["route"].as_str(), j["user"].clone()), (Some("app \"one\""), Value::Null));
    let j = json_for(&lines, "/other", 200);
    assert_eq!(
        j["route"].as_str(),
        Some(format!("http://{}", origin.addr).as_str()),
        "a route without a name: its target"
    );
    let j = json_for(&lines, "/other/q\"b\\c/\u{e9}", 200);
    assert_eq!(j["upstream"].as_str(), Some(upstream.as_str()));
    let odd = lines.iter().find(|l| text(l).contains("/other/q")).unwrap();
    assert!(text(odd).contains(r#""target":"/other/q\"b\\c/é""#), "{}", text(odd));
    let j = json_for(&lines, "/bad-host", 400);
    assert_eq!((&j["route"], &j["upstream"]), (&Value::Null, &Value::Null), "refused before routing");
}

#[test]
fn common_logs_the_authenticated_user_never_the_password() {
    let origin = origin();
    let echo = echo_server();
    let (_udir, users) = users();
    let (_dir, log) = log_dir();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"{}\"\naccess_log_format = \"common\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [{}]\nusers = \"{}\"\n",
        log.display(),
        echo.port(),
        users.display()
    ));
    let r = curl_full(&["-x", &hg.url(), "-U", "ann:s3cret", &origin.url("/u")]);
    assert_eq!(r.code, 200);
    let r = curl_full(&["-x", &hg.url(), "-U", "ann:nope", &origin.url("/u")]);
    assert_eq!(r.code, 407);
    tunnel_echo(hg.addr, &format!("127.0.0.1:{}", echo.port()), Some(&basic("ann:s3cret")), b"0123456789");

    let lines = one_file(&log, 3);
    let ok: Vec<Clf> = lines.iter().map(|l| clf(l, false)).collect();
    let target = origin.url("/u");
    let by = |status: u16, method: &str| ok.iter().find(|r| r.status == status && r.method == method).cloned().unwrap();
    let get = by(200, "GET");
    assert_eq!((get.user.as_deref(), &get.target[..], get.bytes), (Some("ann"), target.as_bytes(), Some(6)));
    let refused = by(407, "GET");
    assert_eq!(refused.user, None);
    let tunnel = by(200, "CONNECT");
    let authority = format!("127.0.0.1:{}", echo.port());
    assert_eq!((tunnel.user.as_deref(), &tunnel.target[..]), (Some("ann"), authority.as_bytes()));
    assert_eq!((tunnel.protocol.as_str(), tunnel.bytes), ("HTTP/1.1", Some(10)), "%b: bytes sent to the client");
    for l in &lines {
        assert!(!text(l).contains("s3cret") && !text(l).contains("nope"), "{}", text(l));
    }
}

/// hopgate's own line names the proxy-authenticated user at its end (`user=ann`), never a password, and no user for
/// a refused request.
#[test]
fn the_default_format_ends_with_the_authenticated_user() {
    let origin = origin();
    let echo = echo_server();
    let (_udir, users) = users();
    let (_dir, log) = log_dir();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"{}\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
         [listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\nconnect_ports = [{}]\nusers = \"{}\"\n",
        log.display(),
        echo.port(),
        users.display()
    ));
    assert_eq!(curl_full(&["-x", &hg.url(), "-U", "ann:s3cret", &origin.url("/u")]).code, 200);
    assert_eq!(curl_full(&["-x", &hg.url(), "-U", "ann:nope", &origin.url("/u")]).code, 407);
    tunnel_echo(hg.addr, &format!("127.0.0.1:{}", echo.port()), Some(&basic("ann:s3cret")), b"0123456789");
    let lines: Vec<String> = one_file(&log, 3).iter().map(|l| text(l)).collect();
    let find = |needle: &str| lines.iter().find(|l| l.contains(needle)).cloned().unwrap_or_else(|| panic!("{lines:?}"));
    let get = find("\" 200 ");
    assert!(get.ends_with(&format!("{} user=ann", origin.addr)), "{get}");
    let refused = find("\" 407 ");
    assert!(!refused.contains("user="), "{refused}");
    let tunnel = find("CONNECT");
    assert!(tunnel.ends_with(" tunnel up=10 down=10 closed user=ann"), "{tunnel}");
    for l in &lines {
        assert!(!l.contains("s3cret") && !l.contains("nope"), "{l}");
    }
}

/// hopgate's own line stays what it was: `TIME CLIENT "METHOD TARGET VERSION" STATUS BYTES DURATIONms UPSTREAM`.
#[test]
fn the_default_format_is_unchanged() {
    let origin = origin();
    let echo = echo_server();
    let (_dir, log) = log_dir();
    let log_arg = log.to_str().unwrap().to_string();
    let hg = Hopgate::proxy(&["--access-log", &log_arg, "--connect-port", &echo.port().to_string()]);
    let r = curl_full(&["-x", &hg.url(), &origin.url("/d?q=1")]);
    assert_eq!(r.code, 200);
    tunnel_echo(hg.addr, &format!("127.0.0.1:{}", echo.port()), None, b"abc");

    let lines = one_file(&log, 2);
    let get = lines.iter().map(|l| text(l)).find(|l| l.contains("\"GET ")).unwrap();
    let (time, rest) = get.split_once(' ').unwrap();
    recent(rfc3339_time(time).unwrap(), &get);
    let (client, rest) = rest.split_once(' ').unwrap();
    assert_eq!(client.parse::<SocketAddr>().unwrap().ip().to_string(), "127.0.0.1", "{get}");
    let want = format!("\"GET {} HTTP/1.1\" 200 6 ", origin.url("/d?q=1"));
    let rest = rest.strip_prefix(&want).unwrap_or_else(|| panic!("{get}"));
    let (ms, upstream) = rest.split_once("ms ").unwrap();
    num(ms, 0..=600_000).unwrap();
    assert_eq!(upstream, origin.addr.to_string(), "{get}");

    let tunnel = lines.iter().map(|l| text(l)).find(|l| l.contains("\"CONNECT ")).unwrap();
    let want = format!("\"CONNECT 127.0.0.1:{p} HTTP/1.1\" 200 3 ", p = echo.port());
    assert!(tunnel.contains(&want), "{tunnel}");
    assert!(tunnel.ends_with(&format!("ms 127.0.0.1:{} tunnel up=3 down=3 closed", echo.port())), "{tunnel}");
}

/// Regression: a request target over the logged length (1024 bytes) cut inside a multi-byte character made the
/// request's task panic: no response, no line.
#[test]
fn a_long_target_is_cut_on_a_character_boundary() {
    let origin = origin();
    for format in ["hopgate", "json"] {
        let (_dir, log) = log_dir();
        let log_arg = log.to_str().unwrap().to_string();
        let mut args = vec!["--access-log", &log_arg];
        if format != "hopgate" {
            args.extend(["--access-log-format", format]);
        }
        let hg = Hopgate::gateway(&format!("http://{}", origin.addr), &args);
        let path = format!("/{}\u{e9}tail", "a".repeat(1022));
        assert_eq!(raw_status(hg.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()), 200, "{format}");
        let lines = one_file(&log, 1);
        let line = std::str::from_utf8(&lines[0]).unwrap_or_else(|e| panic!("{format}: a cut character: {e}"));
        let logged = format!("/{}...", "a".repeat(1022));
        assert!(line.contains(&logged), "{format}: {line}");
        if format == "json" {
            assert_eq!(json(&lines[0], &[])["target"], logged);
        }
    }
}

/// logrotate's `postrotate`: rename the file, then SIGUSR1. Lines written before the signal stay in the renamed
/// file, the rest go to a new file at the old path, and no line is lost or written twice, also under load.
#[test]
fn sigusr1_reopens_the_log_file() {
    let origin = origin();
    let (dir, log) = log_dir();
    let log_arg = log.to_str().unwrap().to_string();
    let hg = Hopgate::gateway(
        &format!("http://{}", origin.addr),
        &["--access-log", &log_arg, "--access-log-format", "common"],
    );
    let get = |c: &mut Raw, path: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(c.response().status, 200);
    };
    let mut c = Raw::connect(hg.addr);
    for i in 0..10 {
        get(&mut c, &format!("/before/{i}"));
    }
    one_file(&log, 10);
    let first = dir.path().join("access.log.1");
    std::fs::rename(&log, &first).unwrap();
    hg.signal("USR1");
    assert!(wait_until(Duration::from_secs(10), || log.exists()), "SIGUSR1 opens a new file at the path");
    for i in 0..10 {
        get(&mut c, &format!("/after/{i}"));
    }
    let files = wait_lines(&[&first, &log], 20);
    let targets = |ls: &Vec<Vec<u8>>| ls.iter().map(|l| text(&clf(l, false).target)).collect::<Vec<_>>();
    assert_eq!(targets(&files[0]), (0..10).map(|i| format!("/before/{i}")).collect::<Vec<_>>());
    assert_eq!(targets(&files[1]), (0..10).map(|i| format!("/after/{i}")).collect::<Vec<_>>());

    // Under load: two clients send 150 requests each while the file is rotated twice.
    let addr = hg.addr;
    let clients: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                for i in 0..150 {
                    c.send(format!("GET /load/{t}/{i} HTTP/1.1\r\nHost: x\r\n\r\n"));
                    assert_eq!(c.response().status, 200);
                }
            })
        })
        .collect();
    let mut rotated = vec![first];
    for n in 2..=3 {
        // Rotate once a few more lines have come (or the clients are done: then nothing more comes).
        let before = complete_lines(&log).len();
        wait_until(Duration::from_secs(10), || complete_lines(&log).len() >= before + 5);
        let to = dir.path().join(format!("access.log.{n}"));
        std::fs::rename(&log, &to).unwrap();
        hg.signal("USR1");
        assert!(wait_until(Duration::from_secs(10), || log.exists()), "reopened");
        rotated.push(to);
    }
    for c in clients {
        c.join().unwrap();
    }
    let mut paths: Vec<&Path> = rotated.iter().map(PathBuf::as_path).collect();
    paths.push(&log);
    let files = wait_lines(&paths, 10 + 10 + 300);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for line in files.iter().flatten() {
        *seen.entry(text(&clf(line, false).target)).or_default() += 1;
    }
    for t in 0..2 {
        for i in 0..150 {
            assert_eq!(seen.get(&format!("/load/{t}/{i}")), Some(&1), "/load/{t}/{i} logged exactly once");
        }
    }
    let load_in = |f: &Vec<Vec<u8>>| f.iter().filter(|l| text(l).contains("/load/")).count();
    assert!(load_in(&files[1]) > 0, "the first rotation came while the clients were sending");
}

#[test]
fn sigusr1_without_a_log_file_is_harmless() {
    let origin = origin();
    for log in ["stdout", "off"] {
        let hg = Hopgate::gateway(&format!("http://{}", origin.addr), &["--access-log", log]);
        assert!(hg.catches(libc::SIGUSR1), "{log}: SIGUSR1 is handled, not the default (terminate)");
        hg.signal("USR1");
        let r = curl_full(&[&format!("{}/still", hg.url())]);
        assert_eq!(r.code, 200, "{log}: still serving after SIGUSR1");
        if log == "stdout" {
            hg.stdout_line("\"GET /still HTTP/1.1\" 200 6 ");
        }
    }
}

#[test]
fn unknown_formats_and_bad_route_names_are_refused_where_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hopgate.toml");
    std::fs::write(
        &cfg,
        "drain_secs = 1\naccess_log_format = \"apache\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n",
    )
    .unwrap();
    for cmd in ["check", "run"] {
        let out = Command::new(bin()).arg(cmd).arg(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = text(&out.stderr);
        assert!(err.starts_with(&format!("{}:2: ", cfg.display())), "{cmd}: {err}");
        assert!(err.contains("\"apache\"") && err.contains("hopgate, common, combined or json"), "{cmd}: {err}");
    }
    let out = Command::new(bin())
        .args(["--access-log-format", "apache", "proxy", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--access-log-format") && err.contains("hopgate, common, combined or json"), "{err}");

    for (name, why) in [("\"\"", "empty"), ("\"a\\nb\"", "control"), (&format!("\"{}\"", "x".repeat(200)), "at most")] {
        std::fs::write(
            &cfg,
            format!("[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://127.0.0.1:1\"\nname = {name}\n"),
        )
        .unwrap();
        let out = Command::new(bin()).arg("check").arg(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = text(&out.stderr);
        assert!(err.starts_with(&format!("{}:5: route name", cfg.display())) && err.contains(why), "{name}: {err}");
    }
    // `check` names a route by its name.
    std::fs::write(
        &cfg,
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"http://127.0.0.1:1\"\nname = \"api\"\n",
    )
    .unwrap();
    let out = Command::new(bin()).arg("check").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("/ -> http://127.0.0.1:1 (api)"), "{}", text(&out.stdout));
}
