//! Start-up errors name the place in the config file: `FILE:LINE: reason`, from `check` and from `run`, also for
//! what only building or binding finds out.

mod support;

use std::process::Command;

use support::bin;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_users_file_that_does_not_parse_is_refused_at_the_users_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "users.htpasswd", "ann:$2y$05$tooshort\n");
    let cfg = write(
        dir.path(),
        "hopgate.toml",
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n\n[listener.proxy]\nusers = \"users.htpasswd\"\n",
    );
    for cmd in ["check", "run"] {
        let out = Command::new(bin()).arg(cmd).arg(&cfg).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:5: users file ", cfg.display());
        assert!(err.starts_with(&want), "{cmd}: expected {want:?} at the start of {err:?}");
        assert!(err.contains("users.htpasswd:1: "), "the users file's own line is named too: {err}");
    }
}

#[test]
fn a_port_in_use_is_refused_at_the_listen_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "hopgate.toml",
        &format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\n[listener.proxy]\n"
        ),
    );
    let out = Command::new(bin()).arg("run").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:6: cannot listen on 127.0.0.1:{port}: ", cfg.display());
    assert!(err.starts_with(&want), "expected {want:?} at the start of {err:?}");
    drop(taken);
}
