//! Real proxies the tests start on loopback, each in its own temp dir, on a port picked here (another one when it
//! was taken meanwhile), ready when its own log says so, stopped by PID:
//! Squid (Debian package squid) and tinyproxy (package tinyproxy). htpasswd files come from Apache's htpasswd
//! (package apache2-utils).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{PortTry, start_on_a_free_port, wait_child, wait_until};

/// A real proxy process, stopped by PID (SIGTERM, then SIGKILL) when dropped.
pub struct Peer {
    child: Child,
    log: PathBuf,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Starts `program ARGS` (its config naming `port`) and waits until its log says `ready`. `Ok(None)` when it
    /// exited saying `in_use` (the port was taken meanwhile: the caller tries another).
    fn start(
        program: &str,
        package: &str,
        args: &[&str],
        dir: tempfile::TempDir,
        log: &str,
        port: u16,
        ready: &str,
    ) -> PortTry<Peer> {
        let log = dir.path().join(log);
        let _ = std::fs::remove_file(&log);
        let stderr = std::fs::File::create(dir.path().join("stderr.txt")).expect("stderr file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} ({e}): apt-get install -y {package}"));
        let mut peer = Peer { child, log, addr: SocketAddr::from(([127, 0, 0, 1], port)), _dir: dir };
        let mut exited = None;
        let up = wait_until(Duration::from_secs(20), || {
            exited = peer.child.try_wait().ok().flatten();
            exited.is_some() || peer.log_text().contains(ready)
        });
        if let Some(status) = exited {
            let said = format!("{}{}", peer.log_text(), peer.stderr_text());
            if said.contains("in use") || said.contains("Could not create listening sockets") {
                return PortTry::InUse;
            }
            panic!("{program} exited with {status}: {said}");
        }
        assert!(up, "{program} did not say {ready:?} within 20 s: {}", peer.log_text());
        PortTry::Started(peer)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.txt")).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Already reaped: its PID may be another process's now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child by its PID.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if wait_child(&mut self.child, Duration::from_secs(5)).is_some() {
            return;
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
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let auth = match users {
        None => String::new(),
        Some(file) => format!(
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
             auth_param basic realm test\nacl authed proxy_auth REQUIRED\nhttp_access deny !authed\n",
            file.display()
        ),
    };
    start_on_a_free_port("squid", |port| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let listen = match tls {
            None => format!("http_port 127.0.0.1:{port}"),
            Some((cert, key)) => {
                format!("https_port 127.0.0.1:{port} tls-cert={} tls-key={}", cert.display(), key.display())
            }
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
        let args = ["-N", "-f", conf.to_str().unwrap()];
        Peer::start("squid", "squid", &args, dir, "cache.log", port, "Accepting HTTP")
    })
}

/// tinyproxy on a free port; CONNECT allowed to `ports`; with `user`, `BasicAuth user pass`.
pub fn tinyproxy(ports: &[u16], user: Option<(&str, &str)>) -> Peer {
    start_on_a_free_port("tinyproxy", |port| {
        let dir = tempfile::tempdir().unwrap();
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
        let args = ["-d", "-c", conf.to_str().unwrap()];
        Peer::start("tinyproxy", "tinyproxy", &args, dir, "tinyproxy.log", port, "Accepting connections")
    })
}
