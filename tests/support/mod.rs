//! Test support: start the real hopgate binary on port 0, talk raw bytes to it, and run origins that record
//! exactly what they received. Every wait has a deadline; every process started here is stopped by PID.
#![allow(dead_code)]

pub mod cgi;
pub mod ftp_peers;
pub mod ftp_rogue;
pub mod h2origin;
pub mod netns;
pub mod origin;
pub mod peers;
pub mod phpfpm;
pub mod pyapp;
pub mod tls;

#[allow(unused_imports)]
pub use ftp_peers::{free_low_ports, hex, pseudo_random, sha256_hex};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running hopgate process.
pub struct Hopgate {
    child: Child,
    /// The address of the first listener, from its `listening on` line.
    pub addr: SocketAddr,
    /// Every `listening on` URL, in order.
    pub listening: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
    /// Set when stdout has ended (the process exited and everything it wrote has been read).
    stdout_ended: Arc<AtomicBool>,
    /// Keeps temp files (configs) alive as long as the process.
    pub dir: Option<tempfile::TempDir>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hopgate")
}

impl Hopgate {
    /// Starts `hopgate ARGS...` and waits for its `listening on` lines (one per `listeners`).
    pub fn start_n(args: &[&str], listeners: usize) -> Hopgate {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Hopgate::spawn(cmd, args, listeners)
    }

    /// Starts `hopgate ARGS...` with `env` added to its environment, one listener.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Hopgate {
        let mut cmd = Command::new(bin());
        cmd.args(args).envs(env.iter().copied());
        Hopgate::spawn(cmd, args, 1)
    }

    /// Starts `hopgate ARGS...` with at most `nofile` file descriptors (RLIMIT_NOFILE), one listener.
    pub fn start_with_nofile(nofile: u64, args: &[&str]) -> Hopgate {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin());
        cmd.args(args);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Hopgate::spawn(cmd, args, 1)
    }

    fn spawn(mut cmd: Command, args: &[&str], listeners: usize) -> Hopgate {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn hopgate");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let err_pipe = child.stderr.take().expect("stderr");
        let err_buf = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
                let mut b = err_buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let out_pipe = child.stdout.take().expect("stdout");
        let out_buf = stdout.clone();
        let stdout_ended = Arc::new(AtomicBool::new(false));
        let ended = stdout_ended.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                let mut b = out_buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
            ended.store(true, Ordering::SeqCst);
        });
        let mut listening = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while listening.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(url) => listening.push(url),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = err_reader.join();
                    panic!("hopgate {args:?} did not print 'listening on'; stderr:\n{}", stderr.lock().unwrap());
                }
            }
        }
        let first = &listening[0];
        let hostport = first.split("://").nth(1).unwrap_or(first);
        let addr = hostport.parse().unwrap_or_else(|_| panic!("bad listening line {first:?}"));
        Hopgate { child, addr, listening, stderr, stdout, stdout_ended, dir: None }
    }

    pub fn start(args: &[&str]) -> Hopgate {
        Hopgate::start_n(args, 1)
    }

    /// Writes `toml` to a temp file and runs `hopgate run FILE`.
    pub fn start_config(toml: &str) -> Hopgate {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hopgate.toml");
        std::fs::write(&path, toml).expect("write config");
        let listeners = toml.matches("[[listener]]").count().max(1);
        let mut h = Hopgate::start_n(&["run", path.to_str().unwrap()], listeners);
        h.dir = Some(dir);
        h
    }

    /// `hopgate proxy --listen 127.0.0.1:0 --allow-target 127.0.0.0/8 EXTRA...`: a forward proxy that may reach
    /// the loopback peers of a test.
    pub fn proxy(extra: &[&str]) -> Hopgate {
        let mut args = vec!["proxy", "--listen", "127.0.0.1:0", "--allow-target", "127.0.0.0/8"];
        args.extend_from_slice(extra);
        Hopgate::start(&args)
    }

    /// `hopgate gateway --listen 127.0.0.1:0 --to TO EXTRA...`.
    pub fn gateway(to: &str, extra: &[&str]) -> Hopgate {
        let mut args = vec!["gateway", "--listen", "127.0.0.1:0", "--to", to];
        args.extend_from_slice(extra);
        Hopgate::start(&args)
    }

    /// `hopgate run` with `top` (top-level keys and sections such as `[timeouts]` or `[limits]`) and one loopback
    /// forward-proxy listener that may reach the test's loopback peers.
    pub fn proxy_config(top: &str) -> Hopgate {
        Hopgate::start_config(&format!(
            "{top}\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\nallow_targets = [\"127.0.0.0/8\"]\n"
        ))
    }

    /// `hopgate run` with the access log off and one loopback listener whose one route goes `to` with the route
    /// keys `keys` (TOML lines such as `path = "/x"`).
    pub fn route_config(to: &str, keys: &str) -> Hopgate {
        Hopgate::start_config(&format!(
            "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener.route]]\nto = \"{to}\"\n{keys}\n"
        ))
    }

    /// The first stdout (access log) line containing `needle`, waiting for it up to 10 s.
    pub fn stdout_line(&self, needle: &str) -> String {
        let mut found = None;
        let seen = wait_until(Duration::from_secs(10), || {
            found = self.stdout_text().lines().find(|l| l.contains(needle)).map(str::to_string);
            found.is_some()
        });
        assert!(seen, "no stdout line with {needle:?} in:\n{}", self.stdout_text());
        found.unwrap_or_default()
    }

    /// stderr (the log) once it holds `needle` at least `count` times, waiting up to 10 s.
    pub fn stderr_with(&self, needle: &str, count: usize) -> String {
        let seen = wait_until(Duration::from_secs(10), || self.stderr_text().matches(needle).count() >= count);
        assert!(seen, "stderr has {needle:?} fewer than {count} times:\n{}", self.stderr_text());
        self.stderr_text()
    }

    /// `http://ADDR` of the first listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Sends `sig` (a name: TERM, INT, USR1, HUP...). For TERM, INT and USR1, which hopgate handles (a drain, reopening
    /// the access log), waits first until the process has its handler installed: one sent before that would kill it
    /// outright.
    pub fn signal(&self, sig: &str) {
        let handled = match sig {
            "TERM" => Some(libc::SIGTERM),
            "INT" => Some(libc::SIGINT),
            "USR1" => Some(libc::SIGUSR1),
            "HUP" => Some(libc::SIGHUP),
            _ => None,
        };
        if let Some(n) = handled {
            let caught = wait_until(Duration::from_secs(10), || self.catches(n));
            assert!(caught, "hopgate has no SIG{sig} handler 10 s after saying 'listening on'");
        }
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
    }

    /// Whether the process has a handler installed for signal `n` now (`SigCgt` in /proc/PID/status).
    pub fn catches(&self, n: i32) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap_or("0");
        u64::from_str_radix(mask, 16).is_ok_and(|m| m >> (n - 1) & 1 == 1)
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the process wrote to stdout, once it has exited and the pipe has been read to its end (waits up
    /// to 10 s for that).
    pub fn stdout_final(&self) -> String {
        let ended = wait_until(Duration::from_secs(10), || self.stdout_ended.load(Ordering::SeqCst));
        assert!(ended, "stdout of hopgate {} has not ended", self.pid());
        self.stdout_text()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first stderr (error log) line that contains every one of `needles`, waiting up to 5 s for it.
    pub fn wait_stderr_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stderr_text();
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no stderr line with {needles:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hopgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples a process's RSS until stopped; returns the peak in KiB.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(proc_status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { stop, peak, handle: Some(handle) }
    }
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A parsed HTTP response as a client received it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head exactly as received.
    pub head: String,
}

/// The header fields in the lines of a head after its start line, in order, names and values trimmed.
pub fn parse_fields<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The value of the first field called `name` (any case).
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with a read deadline.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Raw {
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Raw { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.stream.write_all(bytes.as_ref()).expect("write");
        self
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) => panic!("read: {e} (have {:?})", String::from_utf8_lossy(&self.buf)),
        }
    }

    /// Reads one response to a request of `method` (HEAD responses have no body).
    pub fn response_to(&mut self, method: &str) -> Resp {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill() == 0 {
                panic!("connection closed before a response head: {:?}", String::from_utf8_lossy(&self.buf));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 =
            parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers = parse_fields(lines);
        let mut resp = Resp { version, status, headers, body: Vec::new(), head };
        if status == 100 || status == 101 || (100..200).contains(&status) {
            return resp;
        }
        if method == "HEAD" || status == 204 || status == 304 {
            return resp;
        }
        if resp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            resp.body = self.read_chunked();
        } else if let Some(n) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < n {
                if self.fill() == 0 {
                    panic!("closed after {} of {n} body bytes", self.buf.len());
                }
            }
            resp.body = self.buf.drain(..n).collect();
        } else {
            while self.fill() > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    pub fn response(&mut self) -> Resp {
        self.response_to("GET")
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                assert!(self.fill() > 0, "closed inside chunked body");
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, then the final CRLF.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        assert!(self.fill() > 0, "closed inside trailers");
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return body;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill() > 0, "closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads until `needle` has arrived (within the read deadline); returns everything received so far, which stays
    /// in the buffer for what reads next.
    pub fn read_until(&mut self, needle: &[u8]) -> String {
        while find(&self.buf, needle).is_none() {
            let before = String::from_utf8_lossy(&self.buf).into_owned();
            assert!(self.fill() > 0, "closed before {:?} arrived; got {before:?}", String::from_utf8_lossy(needle));
        }
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads until the server closes the connection (or the read deadline); returns everything.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        loop {
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read_to_close: {e}; have {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Whether the server has closed the connection (EOF within `wait`).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 4096];
        let r = match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(_) => false,
        };
        self.stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        r
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection; the whole response.
pub fn exchange(addr: SocketAddr, request: &str) -> Resp {
    let method = request.split(' ').next().unwrap_or("GET").to_string();
    let mut c = Raw::connect(addr);
    c.send(request);
    c.response_to(&method)
}

/// What curl got: its exit status, the status code and HTTP version, the response head(s) and the body.
#[derive(Debug)]
pub struct Curl {
    pub ok: bool,
    pub code: u16,
    /// `1.1` or `2`.
    pub version: String,
    /// Every response head curl received (interim 1xx heads first).
    pub head: String,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Curl {
    /// A field of the last response head.
    pub fn header(&self, name: &str) -> Option<String> {
        let last = self.head.split("\r\n\r\n").filter(|h| !h.trim().is_empty()).last().unwrap_or("");
        field(&parse_fields(last.lines().skip(1)), name).map(str::to_string)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl with `args` (a 60 s limit), the body in memory (small responses only).
pub fn curl_full(args: &[&str]) -> Curl {
    curl_full_with(Command::new("curl"), args)
}

/// [`curl_full`] run as `cmd` (curl, or a command that runs curl: `nsenter ... curl`).
pub fn curl_full_with(mut cmd: Command, args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = dir.path().join("head");
    let out = cmd
        .args(["-s", "-S", "--max-time", "60", "-o", "-", "-D"])
        .arg(&head)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl is installed (Debian package curl)");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let tail = String::from_utf8_lossy(&body[nl + 1..]).into_owned();
    let (code, version) = tail.trim().split_once(' ').unwrap_or((tail.trim(), ""));
    let code = code.parse().unwrap_or(0);
    let version = version.to_string();
    body.truncate(nl);
    Curl {
        ok: out.status.success(),
        code,
        version,
        head: std::fs::read_to_string(&head).unwrap_or_default(),
        body,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs curl with `args` (a 20 s limit); returns (status code, body, stderr).
pub fn curl(args: &[&str]) -> (u16, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (Debian package curl)");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[nl + 1..]).trim().parse().unwrap_or(0);
    body.truncate(nl);
    (code, body, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `NAME=value` lines (an environment dump) as a map.
pub fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// Bytes in a file of their own, for curl to send (`--data-binary @FILE`, `-T FILE`); removed on drop.
pub struct DataFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl DataFile {
    pub fn new(bytes: &[u8]) -> DataFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.bin");
        std::fs::write(&path, bytes).expect("write the data file");
        DataFile { _dir: dir, path }
    }

    /// `@PATH`, as `--data-binary` takes it.
    pub fn at(&self) -> String {
        format!("@{}", self.path.display())
    }

    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }
}

/// A temp dir with files in it.
pub fn temp_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Path to the repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails with a message naming the Debian package when a peer binary is missing.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("{binary} is missing: install the Debian package {package} (.ci/run does)");
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound and released). Racy: anybody may take it before it is
/// used. Prefer [`ClosedPort`] for "nothing listens here", port 0 and the `listening on` line for hopgate, and
/// [`start_on_a_free_port`] for peers that must be told a port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port where connections are refused for as long as this value lives: a socket bound to it but not
/// listening, so nobody else can take the port meanwhile.
pub struct ClosedPort {
    socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().ok().and_then(|a| a.as_socket()).expect("a bound IPv4 address");
        ClosedPort { socket, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Turns the port into a listener whose backlog is full: connecting to it then times out (the kernel drops
    /// further SYNs) instead of being refused. Returns the connections that fill the backlog; keep them.
    pub fn listen_full(&self) -> Vec<TcpStream> {
        self.socket.listen(0).expect("listen");
        (0..4).filter_map(|_| TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).ok()).collect()
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}

/// Holds 127.0.0.1:PORT for the test (counting what connects there) so that hopgate can listen on
/// 127.0.0.2:PORT with no other process able to take the port meanwhile. Returns the port and the count.
pub fn held_port() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            n.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, accepted)
}

/// A gateway whose `SCHEME://` routes point at its own listener (by its address, and by 0.0.0.0, which reaches
/// every listener of this host) answers 508 naming the address, and connects nowhere: the dialer's loop check
/// covers every room that dials TCP.
pub fn assert_own_listener_routes_are_508(scheme: &str) {
    let (port, reached) = held_port();
    let hg = Hopgate::start_config(&format!(
        "access_log = \"off\"\n[[listener]]\nlisten = \"127.0.0.2:{port}\"\n\
         [[listener.route]]\npath = \"/own\"\nto = \"{scheme}://127.0.0.2:{port}\"\n\
         [[listener.route]]\npath = \"/any\"\nto = \"{scheme}://0.0.0.0:{port}\"\n"
    ));
    for (path, addr) in [("/own/x", format!("127.0.0.2:{port}")), ("/any/x", format!("0.0.0.0:{port}"))] {
        let r = exchange(hg.addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(r.status, 508, "{scheme} {path}: {}{}", r.head, r.text());
        assert_eq!(r.text(), format!("hopgate: 508 Loop Detected\n{addr} is this proxy itself\n"), "{scheme} {path}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0, "nothing connected to this host's port {port}");
}

/// What a peer's start on a given port came to.
pub enum PortTry<T> {
    Started(T),
    /// The peer said the port was taken: another one is tried.
    InUse,
}

/// Starts a peer that must be told its port (it can take neither port 0 nor an inherited socket): `start` gets a
/// port below the ephemeral range (32768 and up, where client sockets and port-0 listeners live) that was free
/// when looked at, and says whether the peer came up or found the port taken; a taken port is not a failure, the
/// next of at most 8 is tried.
pub fn start_on_a_free_port<T>(what: &str, mut start: impl FnMut(u16) -> PortTry<T>) -> T {
    for _ in 0..8 {
        if let PortTry::Started(peer) = start(ftp_peers::free_low_ports(1)) {
            return peer;
        }
    }
    panic!("{what} found every port it tried taken (8 tries)");
}

/// Polls `cond` every 10 ms until it holds (true) or `limit` has passed (false). Assert the result: a test waits
/// for the condition it then asserts, never for a fixed time.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(done) = poll_once(deadline, &mut cond) {
            return done;
        }
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for async tests: other tasks run between the polls.
pub async fn wait_until_async(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(done) = poll_once(deadline, &mut cond) {
            return done;
        }
        tokio::time::sleep(POLL).await;
    }
}

const POLL: Duration = Duration::from_millis(10);

/// One poll: `Some(true)` when `cond` holds, `Some(false)` past the deadline, `None` to poll again.
fn poll_once(deadline: Instant, cond: &mut impl FnMut() -> bool) -> Option<bool> {
    if cond() {
        Some(true)
    } else if Instant::now() >= deadline {
        Some(false)
    } else {
        None
    }
}

/// Waits for a child process to exit, up to `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let up =
        wait_until(Duration::from_secs(20), || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok());
    assert!(up, "{what} is not listening on {addr}");
}

/// Whether a TCP connection to `addr` is refused now (nothing listens there any more).
pub fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

/// Reads a head byte by byte, so that nothing after it is consumed: `Err` with what came when the stream ended
/// (or failed) first.
pub fn read_head_bytes(s: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return Err(String::from_utf8_lossy(&head).into_owned()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Reads a response head byte by byte (so that nothing after it is consumed).
pub fn read_head(s: &mut TcpStream) -> String {
    read_head_bytes(s).unwrap_or_else(|got| panic!("closed in the head: {got:?}"))
}

/// Sends `CONNECT target` (plus `extra_head`, whole header lines) to `proxy`; returns the stream, positioned right
/// after the answer's head, and that head.
pub fn connect_request(proxy: SocketAddr, target: impl std::fmt::Display, extra_head: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra_head}\r\n").as_bytes()).unwrap();
    let head = read_head(&mut s);
    (s, head)
}

/// Opens a tunnel through `proxy` with a raw CONNECT; returns the stream positioned after the 200 head.
pub fn open_tunnel(proxy: SocketAddr, target: impl std::fmt::Display, extra_head: &str) -> TcpStream {
    let (s, head) = connect_request(proxy, target, extra_head);
    assert!(head.starts_with("HTTP/1.1 200 Connection Established\r\n"), "{head}");
    s
}
