//! Network namespaces for the tests that need a network of their own (packet-filter rules, addresses, names):
//! a test re-executes itself under `unshare --net --mount` ([`isolated`]): a loopback of its own, its own
//! nftables ruleset, and a private mount table in which [`hosts`] bind-mounts an /etc/hosts of its own. Further
//! namespaces (a client's, a server's) are holder processes ([`Netns`]) joined by veth pairs. Nothing outside the
//! namespaces is touched: they go away with their last process, and every process started here is stopped by
//! PID. Needs root (the tests run as root) and util-linux's unshare and nsenter, iproute2's ip and nftables' nft.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{require, wait_child};

/// The environment variable that tells the re-executed test it is inside its namespaces.
const INSIDE: &str = "HOPGATE_TEST_NETNS";
/// How long the re-executed copy of a test may take.
const COPY_LIMIT: Duration = Duration::from_secs(240);

/// Runs the calling test (`name`, as libtest names it) in new network and mount namespaces: true in the
/// re-executed copy, where the test body then runs (loopback is up); false in the original, after the copy passed.
/// A failing copy fails the original with the copy's output.
pub fn isolated(name: &str) -> bool {
    if std::env::var(INSIDE).as_deref() == Ok(name) {
        sh(&["ip", "link", "set", "lo", "up"]);
        return true;
    }
    require("unshare", "util-linux");
    require("nsenter", "util-linux");
    require("ip", "iproute2");
    require("nft", "nftables");
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, name)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("unshare runs");
    let status = wait_child(&mut child, COPY_LIMIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (read(&out), read(&err));
    // The copy's own report (measurements) shows in the original's output.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its namespace ({status:?})"
    );
    false
}

fn read(path: &std::path::Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Runs a command (in the test's namespace) and asserts that it worked; returns its stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads an nftables ruleset (`nft -f -`) into the test's namespace.
pub fn nft(ruleset: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft -f failed: {}\n{ruleset}", String::from_utf8_lossy(&out.stderr));
}

/// Makes /etc/hosts say `entries` (address, names) in this mount namespace only: a bind mount over it, gone
/// with the namespace. Only inside [`isolated`].
pub fn hosts(entries: &[(&str, &str)]) -> tempfile::TempDir {
    assert!(std::env::var(INSIDE).is_ok(), "hosts() changes /etc/hosts: only inside an isolated test");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (addr, names) in entries {
        text.push_str(&format!("{addr} {names}\n"));
    }
    std::fs::write(&file, text).unwrap();
    sh(&["mount", "--bind", file.to_str().unwrap(), "/etc/hosts"]);
    dir
}

/// Another network namespace, held by a sleeping process of its own (stopped by PID when dropped, and by the
/// kernel when the test's thread ends).
pub struct Netns {
    holder: Child,
    /// `/proc/PID/ns/net`.
    pub path: String,
}

impl Netns {
    pub fn new() -> Netns {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--", "sleep", "600"]).stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let holder = cmd.spawn().expect("unshare runs");
        let pid = holder.id();
        let ns = Netns { holder, path: format!("/proc/{pid}/ns/net") };
        // unshare has made the namespace once the holder is sleep: its namespace differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let made = super::wait_until(Duration::from_secs(10), || {
            std::fs::read_link(&ns.path).is_ok_and(|l| l != ours)
                && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        assert!(made, "the namespace holder did not start");
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `program` run inside this namespace (nsenter; the mount namespace, /etc/hosts included, is the test's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path)).arg("--").arg(program);
        cmd
    }

    /// Runs a command inside this namespace and asserts that it worked; returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(out.status.success(), "{args:?} in {} failed: {}", self.path, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A listening socket bound to `addr` inside this namespace (made on a thread that joined it; the socket
    /// stays in the namespace it was made in, whichever thread uses it).
    pub fn bind(&self, addr: SocketAddr) -> TcpListener {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on this thread only, with a namespace file descriptor that is open.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr} in {path}: {e}"))
        })
        .join()
        .expect("the binding thread")
    }

    /// A TCP connection to `addr` made from inside this namespace.
    pub fn connect(&self, addr: SocketAddr) -> std::net::TcpStream {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on this thread only, with a namespace file descriptor that is open.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connect to {addr} from {path}: {e}"))
        })
        .join()
        .expect("the connecting thread")
    }

    /// Moves interface `dev` (of the test's namespace) into this one.
    pub fn take(&self, dev: &str) {
        sh(&["ip", "link", "set", dev, "netns", &self.pid().to_string()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}
