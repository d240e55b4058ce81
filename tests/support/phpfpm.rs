//! A real php-fpm (Debian package php-fpm) in the foreground, on a loopback port or a unix socket, with the
//! scripts a test gives it; stopped by PID (SIGTERM, then SIGKILL) on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// Where php-fpm listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// `127.0.0.1:PORT`
    Tcp(String),
    Unix(PathBuf),
}

pub struct Fpm {
    child: Child,
    dir: tempfile::TempDir,
    /// The document root the scripts were written under.
    pub www: PathBuf,
    pub listen: Listen,
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Fpm {
    /// Writes `scripts` (path under the root, PHP text) and starts php-fpm (4 static workers, user nobody).
    pub fn start(scripts: &[(&str, &str)], unix: bool) -> Fpm {
        assert!(Path::new(PHP_FPM).exists(), "{PHP_FPM} is missing: apt-get install -y php-fpm");
        let dir = tempfile::tempdir().unwrap();
        // php-fpm workers run as nobody: every directory on the way must be searchable, every script readable.
        chmod(dir.path(), 0o755);
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        chmod(&www, 0o755);
        for (name, text) in scripts {
            let p = www.join(name);
            let parent = p.parent().unwrap();
            std::fs::create_dir_all(parent).unwrap();
            chmod(parent, 0o755);
            std::fs::write(&p, text).unwrap();
            chmod(&p, 0o644);
        }
        // A TCP port picked here may be taken before php-fpm binds it: php-fpm then says so in its log and exits,
        // and another port is tried. Ready means php-fpm itself said so.
        for attempt in 0..3 {
            let listen = if unix {
                Listen::Unix(dir.path().join(format!("fpm-{attempt}.sock")))
            } else {
                Listen::Tcp(format!("127.0.0.1:{}", super::free_port()))
            };
            let listen_line = match &listen {
                Listen::Tcp(a) => a.clone(),
                Listen::Unix(p) => p.display().to_string(),
            };
            let log = dir.path().join(format!("fpm-{attempt}.log"));
            let conf = dir.path().join(format!("fpm-{attempt}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "[global]\nerror_log = {log}\ndaemonize = no\n\
                     [www]\nuser = nobody\ngroup = nogroup\nlisten = {listen_line}\nlisten.mode = 0666\n\
                     pm = static\npm.max_children = 4\ncatch_workers_output = yes\n\
                     php_admin_value[post_max_size] = 64M\n",
                    log = log.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(PHP_FPM)
                .args(["-F", "-n", "-y"])
                .arg(&conf)
                .arg("-p")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::fs::read_to_string(&log).unwrap_or_default().contains("ready to handle connections") {
                    return Fpm { child, dir, www, listen };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            assert!(said.contains("Address already in use"), "php-fpm did not come up:\n{said}");
        }
        panic!("php-fpm found no free port in 3 attempts");
    }

    /// `fastcgi://127.0.0.1:PORT` or `fastcgi+unix:PATH`, for `--to`.
    pub fn target(&self) -> String {
        match &self.listen {
            Listen::Tcp(a) => format!("fastcgi://{a}"),
            Listen::Unix(p) => format!("fastcgi+unix:{}", p.display()),
        }
    }

    /// The temp dir holding the root, the config and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        self.stop();
    }
}
