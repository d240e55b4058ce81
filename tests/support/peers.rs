//! Real proxies the tests start on loopback, each in its own temp dir, on a port picked here, stopped by PID:
//! Squid (Debian package squid) and tinyproxy (package tinyproxy). htpasswd files come from Apache's htpasswd
//! (package apache2-utils).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A real proxy process, stopped by PID (SIGTERM, then SIGKILL) when dropped.
pub struct Peer {
    child: Child,
    log: PathBuf,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn start(program: &str, package: &str, args: &[&str], dir: tempfile::TempDir, log: &str, port: u16) -> Peer {
        let log = dir.path().join(log);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} ({e}): apt-get install -y {package}"));
        let mut peer = Peer { child, log, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
        for _ in 0..200 {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("{program} exited with {status}: {}", peer.log_text());
            }
            if std::net::TcpStream::connect(peer.addr).is_ok() {
                return peer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{program} did not listen on {} within 10s: {}", peer.addr, peer.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child by its PID.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chown_nobody(dir: &Path) {
    let status = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(dir).status().unwrap();
    assert!(status.success());
}

/// `htpasswd -b FLAGS FILE USER PASS` (package apache2-utils).
pub fn htpasswd(file: &Path, flags: &[&str], user: &str, pass: &str) {
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let out = cmd.arg("-b").args(flags).arg(file).arg(user).arg(pass).output();
    let out = out.unwrap_or_else(|e| panic!("htpasswd not runnable ({e}): apt-get install -y apache2-utils"));
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
}

/// Squid on a free port; CONNECT allowed to `ports`; with `users`, Basic auth via basic_ncsa_auth.
pub fn squid(ports: &[u16], users: Option<&Path>, tls: Option<(&Path, &Path)>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let listen = match tls {
        None => format!("http_port 127.0.0.1:{port}"),
        Some((cert, key)) => {
            format!("https_port 127.0.0.1:{port} tls-cert={} tls-key={}", cert.display(), key.display())
        }
    };
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let auth = match users {
        None => String::new(),
        Some(file) => format!(
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
             auth_param basic realm test\nacl authed proxy_auth REQUIRED\nhttp_access deny !authed\n",
            file.display()
        ),
    };
    let conf = format!(
        "{listen}\npid_filename {d}/squid.pid\ncache_log {d}/cache.log\naccess_log stdio:{d}/access.log\n\
         cache deny all\npinger_enable off\nshutdown_lifetime 0 seconds\ncache_effective_user nobody\n\
         coredump_dir {d}\nacl p port {}\nhttp_access deny CONNECT !p\n{auth}\
         http_access allow localhost\nhttp_access deny all\n",
        ports.join(" ")
    );
    std::fs::write(dir.path().join("squid.conf"), conf).unwrap();
    chown_nobody(dir.path());
    let conf = dir.path().join("squid.conf");
    Peer::start("squid", "squid", &["-N", "-f", conf.to_str().unwrap()], dir, "cache.log", port)
}

/// tinyproxy on a free port; CONNECT allowed to `ports`; with `user`, `BasicAuth user pass`.
pub fn tinyproxy(ports: &[u16], user: Option<(&str, &str)>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nPidFile \"{d}/tinyproxy.pid\"\n\
         LogFile \"{d}/tinyproxy.log\"\nLogLevel Info\nUser nobody\nGroup nogroup\nTimeout 30\n"
    );
    for p in ports {
        conf.push_str(&format!("ConnectPort {p}\n"));
    }
    if let Some((user, pass)) = user {
        conf.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    std::fs::write(dir.path().join("tinyproxy.conf"), conf).unwrap();
    chown_nobody(dir.path());
    let conf = dir.path().join("tinyproxy.conf");
    Peer::start("tinyproxy", "tinyproxy", &["-d", "-c", conf.to_str().unwrap()], dir, "tinyproxy.log", port)
}
