//! A real php-fpm (Debian package php-fpm) in the foreground, on a loopback port or a unix socket, with the
//! scripts a test gives it; stopped by PID (SIGTERM, then SIGKILL) on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{PortTry, start_on_a_free_port, wait_child, wait_until};

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// Where php-fpm listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// `127.0.0.1:PORT`
    Tcp(String),
    Unix(PathBuf),
}

/// How php-fpm's pool runs.
struct Pool<'a> {
    /// The pool's user and group.
    user: &'a str,
    /// Load the system's php.ini and its conf.d (the extensions of Debian's php-* packages); else `-n`.
    ini: bool,
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
        let pool = Pool { user: "nobody", ini: false };
        if unix {
            let listen = Listen::Unix(dir.path().join("fpm.sock"));
            Fpm::run(dir, www, listen, &pool).unwrap_or_else(|_| panic!("php-fpm: its unix socket is in use"))
        } else {
            let mut dir = Some(dir);
            start_on_a_free_port("php-fpm", |port| {
                let listen = Listen::Tcp(format!("127.0.0.1:{port}"));
                let d = dir.take().expect("the temp dir of a php-fpm not yet started");
                match Fpm::run(d, www.clone(), listen, &pool) {
                    Ok(fpm) => PortTry::Started(fpm),
                    Err(d) => {
                        dir = Some(d);
                        PortTry::InUse
                    }
                }
            })
        }
    }

    /// php-fpm for an installed application under `root` (Debian's /usr/share/APP): a unix socket, the pool as
    /// `user` (the owner of the application's state, such as www-data), the system's php.ini and extensions.
    pub fn start_app(root: &Path, user: &str) -> Fpm {
        assert!(Path::new(PHP_FPM).exists(), "{PHP_FPM} is missing: apt-get install -y php-fpm");
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let listen = Listen::Unix(dir.path().join("fpm.sock"));
        Fpm::run(dir, root.to_path_buf(), listen, &Pool { user, ini: true })
            .unwrap_or_else(|_| panic!("php-fpm: its unix socket is in use"))
    }

    /// Starts php-fpm listening on `listen`, with the config and log in `dir`; gives `dir` back when php-fpm found
    /// the address in use.
    fn run(dir: tempfile::TempDir, www: PathBuf, listen: Listen, pool: &Pool) -> Result<Fpm, tempfile::TempDir> {
        let listen_line = match &listen {
            Listen::Tcp(a) => a.clone(),
            Listen::Unix(p) => p.display().to_string(),
        };
        let log = dir.path().join("fpm.log");
        let _ = std::fs::remove_file(&log);
        let conf = dir.path().join("fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\nerror_log = {log}\ndaemonize = no\n\
                 [www]\nuser = {user}\ngroup = {group}\nlisten = {listen_line}\nlisten.mode = 0666\n\
                 pm = static\npm.max_children = 4\ncatch_workers_output = yes\n\
                 php_admin_value[post_max_size] = 64M\n",
                log = log.display(),
                user = pool.user,
                group = if pool.user == "nobody" { "nogroup" } else { pool.user },
            ),
        )
        .unwrap();
        let mut child = Command::new(PHP_FPM)
            .args(if pool.ini { &["-F", "-y"][..] } else { &["-F", "-n", "-y"][..] })
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let said = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut exited = false;
        let ready = wait_until(Duration::from_secs(10), || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            exited || said().contains("ready to handle connections")
        });
        if ready && !exited {
            return Ok(Fpm { child, dir, www, listen });
        }
        let said = said();
        let _ = child.kill();
        let _ = child.wait();
        assert!(said.contains("Address already in use"), "php-fpm did not come up:\n{said}");
        Err(dir)
    }

    /// `fastcgi://127.0.0.1:PORT` or `fastcgi+unix:PATH`, for `--to`.
    pub fn target(&self) -> String {
        match &self.listen {
            Listen::Tcp(a) => format!("fastcgi://{a}"),
            Listen::Unix(p) => format!("fastcgi+unix:{}", p.display()),
        }
    }

    /// The PID of php-fpm's master process (its workers' parent).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding the root, the config and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM, then SIGKILL after 5 s; nothing when it has already been reaped (its PID may be another's now).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        self.stop();
    }
}
