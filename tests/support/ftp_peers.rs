//! Real FTP servers for the FTP tests, started in the foreground on loopback ports the test
//! picked, each in its own temp dir, stopped by PID on drop (see shared/PEERS.md).
//! A missing server fails the test with the Debian package to install; nothing is skipped.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// A running FTP server; killed (by its PID) and reaped when dropped.
pub struct Peer {
    pub addr: SocketAddr,
    /// The directory the server serves.
    pub root: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl Peer {
    /// The server's own log, for assertion messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in ["vsftpd.log", "stderr.txt"] {
            if let Ok(s) = fs::read_to_string(self.dir.path().join(name)) {
                out.push_str(&s);
            }
        }
        out
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a served tree readable by the unprivileged user the server drops to.
pub fn open_up(path: &Path) {
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            let p = entry.expect("dir entry").path();
            if !p.is_symlink() {
                open_up(&p);
            }
        }
    }
}

/// The first of `count` consecutive loopback ports below the ephemeral range (32768+) that were all free a moment
/// ago: vsftpd's passive ports there never collide with client sockets in TIME_WAIT (shared/PEERS.md). Someone may
/// take them before the server binds them: retry its start when it cannot bind.
pub fn free_low_ports(count: u16) -> u16 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    for _ in 0..100 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let base = 20_000 + ((seed >> 33) % (12_000 - u64::from(count))) as u16;
        let held: Vec<TcpListener> =
            (base..base + count).filter_map(|p| TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no {count} free ports below 32000 after 100 tries");
}

/// How a server's start went.
enum Greeting {
    /// It greeted with 220.
    Ready,
    /// It exited at start without a word (vsftpd when its port is taken).
    ExitedSilently,
}

/// Waits (bounded) until `addr` greets with 220; panics with the server's output when it fails otherwise.
fn wait_for_greeting(addr: SocketAddr, child: &mut Child, dir: &Path, what: &str) -> Greeting {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let err = fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
            if err.trim().is_empty() {
                return Greeting::ExitedSilently;
            }
            panic!("{what} exited at start ({status}): {err}");
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 3];
            if s.read_exact(&mut buf).is_ok() && &buf == b"220" {
                return Greeting::Ready;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not greet on {addr} within 15 s");
}

/// vsftpd (Debian package `vsftpd`), anonymous only, serving a fresh root that `fill` writes.
/// `extra` lines are appended to the config (e.g. uploads). Its ports are picked here; when one is taken
/// meanwhile vsftpd exits, and it is started again on others (at most 8 times).
pub fn vsftpd(fill: impl FnOnce(&Path), extra: &str) -> Peer {
    let bin = Path::new("/usr/sbin/vsftpd");
    assert!(bin.exists(), "/usr/sbin/vsftpd is missing: install the Debian package vsftpd (apt-get install -y vsftpd)");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let empty = dir.path().join("empty");
    fs::create_dir(&root).expect("mkdir root");
    fs::create_dir(&empty).expect("mkdir empty");
    fill(&root);
    open_up(dir.path());
    let conf = dir.path().join("vsftpd.conf");
    let log = dir.path().join("vsftpd.log");
    let user = if Command::new("id").arg("ftp").output().is_ok_and(|o| o.status.success()) { "ftp" } else { "nobody" };
    for _ in 0..8 {
        let base = free_low_ports(12);
        let addr: SocketAddr = ([127, 0, 0, 1], base).into();
        fs::write(
            &conf,
            format!(
                "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={base}\n\
                 background=NO\nseccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\n\
                 secure_chroot_dir={empty}\nanonymous_enable=YES\nno_anon_password=YES\n\
                 anon_root={root}\nftp_username={user}\nlocal_enable=NO\n\
                 pasv_enable=YES\npasv_address=127.0.0.1\npasv_min_port={pmin}\npasv_max_port={pmax}\n\
                 utf8_filesystem=YES\nuse_localtime=NO\nlog_ftp_protocol=YES\nxferlog_enable=YES\n\
                 vsftpd_log_file={log}\nidle_session_timeout=120\ndata_connection_timeout=60\n{extra}\n",
                empty = empty.display(),
                root = root.display(),
                pmin = base + 1,
                pmax = base + 11,
                log = log.display(),
            ),
        )
        .expect("write vsftpd.conf");
        // vsftpd insists on a config file that only root can write
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).expect("chmod conf");
        let stderr = fs::File::create(dir.path().join("stderr.txt")).expect("stderr file");
        let mut child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn vsftpd");
        match wait_for_greeting(addr, &mut child, dir.path(), "vsftpd") {
            // Ours greeted only if its own log saw the connection (not another server on a port taken meanwhile).
            Greeting::Ready if fs::read_to_string(&log).unwrap_or_default().contains("CONNECT") => {
                return Peer { addr, root, child, dir };
            }
            Greeting::Ready => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Greeting::ExitedSilently => {}
        }
    }
    panic!("vsftpd could not bind a port in 8 tries");
}

const PYFTPD_SCRIPT: &str = r#"
import logging, sys
try:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
except ImportError:
    sys.exit("pyftpdlib is missing: install the Debian package python3-pyftpdlib")
root, user, password = sys.argv[1:4]
auth = DummyAuthorizer()
auth.add_user(user, password, root, perm="elradfmwMT")
auth.add_anonymous(root)
class Handler(FTPHandler):
    pass
Handler.authorizer = auth
Handler.auth_failed_timeout = 0
Handler.banner = "pyftpdlib ready"
logging.basicConfig(level=logging.WARNING)
server = FTPServer(("127.0.0.1", 0), Handler)
print(server.socket.getsockname()[1], flush=True)
server.serve_forever()
"#;

/// pyftpdlib (Debian package `python3-pyftpdlib`, for /usr/bin/python3): user `user` with
/// full rights and read-only anonymous, on a port the server picks and prints.
pub fn pyftpdlib(fill: impl FnOnce(&Path), user: &str, password: &str) -> Peer {
    let python = Path::new("/usr/bin/python3");
    assert!(python.exists(), "/usr/bin/python3 is missing: install the Debian packages python3 and python3-pyftpdlib");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("mkdir root");
    fill(&root);
    let script = dir.path().join("server.py");
    fs::write(&script, PYFTPD_SCRIPT).expect("write server.py");
    let stderr = fs::File::create(dir.path().join("stderr.txt")).expect("stderr file");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(&root)
        .arg(user)
        .arg(password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn python3");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
    let Ok(port) = line.trim().parse::<u16>() else {
        let _ = child.kill();
        let _ = child.wait();
        let err = fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
        panic!("pyftpdlib did not start (install the Debian package python3-pyftpdlib): {line:?} {err}");
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if let Greeting::ExitedSilently = wait_for_greeting(addr, &mut child, dir.path(), "pyftpdlib") {
        panic!("pyftpdlib exited at start");
    }
    Peer { addr, root, child, dir }
}
