//! CGI scripts for the tests: a temp dir holding `cgi-bin/` with scripts written by the test (`/bin/sh`, or Debian's
//! /usr/bin/python3), a gateway of the real binary in front of it, and the process checks the timeout and
//! client-gone tests need.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Hopgate, Resp, exchange, wait_until};

pub const PYTHON: &str = "/usr/bin/python3";

/// Prints the environment as exec'd (before Python adds LC_CTYPE itself), one `NAME=value` per line, sorted.
pub const ENV_PY: &str = "#!/usr/bin/python3\nimport sys\n\
    sys.stdout.buffer.write(b'Content-Type: text/plain\\r\\n\\r\\n')\n\
    env = open('/proc/self/environ', 'rb').read().split(b'\\0')\n\
    sys.stdout.buffer.write(b'\\n'.join(sorted(e for e in env if e)) + b'\\n')\n";

/// A temp dir holding `cgi-bin/`, scripts in it, and files outside it.
pub struct Scripts {
    pub tmp: tempfile::TempDir,
    /// The `cgi-bin/` directory.
    pub dir: PathBuf,
}

impl Scripts {
    pub fn new() -> Scripts {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: apt-get install -y python3");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cgi-bin");
        std::fs::create_dir(&dir).unwrap();
        Scripts { tmp, dir }
    }

    /// An executable script at `name` (a path under `cgi-bin/`).
    pub fn add(&self, name: &str, text: &str) -> &Self {
        self.add_mode(name, text, 0o755)
    }

    pub fn add_mode(&self, name: &str, text: &str, mode: u32) -> &Self {
        let p = self.dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// `cgi:DIR`
    pub fn target(&self) -> String {
        format!("cgi:{}", self.dir.display())
    }

    /// `hopgate gateway --to cgi:DIR EXTRA...`
    pub fn gateway(&self, extra: &[&str]) -> Hopgate {
        Hopgate::gateway(&self.target(), extra)
    }

    /// `hopgate run` with one route to this directory and `keys` added to the route.
    pub fn config(&self, keys: &str) -> Hopgate {
        Hopgate::route_config(&self.target(), keys)
    }

    /// A file outside `cgi-bin/`, for the pids scripts write.
    pub fn outside(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

/// `GET PATH` with `Host: cgi.test` on a fresh connection.
pub fn get(h: &Hopgate, path: &str) -> Resp {
    exchange(h.addr, &format!("GET {path} HTTP/1.1\r\nHost: cgi.test\r\nConnection: close\r\n\r\n"))
}

/// A process is gone when /proc no longer lists it, or (`allow_zombie`, for orphans reparented to an init that may
/// not reap) it is a zombie.
pub fn gone(pid: i32, allow_zombie: bool) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => allow_zombie && s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')),
    }
}

/// Asserts that `pid` is gone within 5 s.
pub fn wait_gone(pid: i32, allow_zombie: bool) {
    assert!(wait_until(Duration::from_secs(5), || gone(pid, allow_zombie)), "process {pid} still alive after 5 s");
}

/// The two pids (script, its background child) a script wrote to `file`, waiting up to 5 s for them.
pub fn read_pids(file: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let written = wait_until(Duration::from_secs(5), || {
        pids = std::fs::read_to_string(file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.len() == 2
    });
    assert!(written, "script never wrote its pids to {}", file.display());
    pids
}
