//! A Python application written by a test: the script binds 127.0.0.1:0 and prints its port on the first line of
//! stdout. Debian's /usr/bin/python3 runs it; it is killed by PID and reaped on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const PYTHON: &str = "/usr/bin/python3";

pub struct PyApp {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl PyApp {
    pub fn start(script: &str) -> PyApp {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: apt-get install -y python3");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        std::fs::write(&path, script).unwrap();
        let mut child = Command::new(PYTHON).arg(&path).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the Python app did not start: {line:?}"));
        PyApp { child, addr: format!("127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for PyApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
