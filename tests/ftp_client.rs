//! The FTP layer against two real servers on loopback: vsftpd (LIST, EPSV, anonymous) and
//! pyftpdlib (MLSD/MLST, a user with write rights).

#[path = "support/ftp_peers.rs"]
mod ftp_peers;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ftp_peers::{hex, pseudo_random, pyftpdlib, sha256_hex, vsftpd};
use hopgate::backend::ftp::{
    EntryKind, FtpError, FtpPool, FtpPoolConfig, FtpSession, FtpSettings, Login, Target, render_html,
};
use hopgate::error::Error;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const BIG: usize = 8 * 1024 * 1024 + 12_345;

/// Reads a stream to its end in 64 KiB steps, hashing as it goes: never the whole file in
/// memory. Bounded by the stream's own data-idle timeout.
async fn sha256_of(mut r: impl AsyncRead + Unpin) -> Result<(u64, String), std::io::Error> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hex(&hasher.finalize())));
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
}

fn fill_tree(root: &Path) {
    fs::write(root.join("big.bin"), pseudo_random(BIG, 1)).unwrap();
    fs::write(root.join("hello.txt"), b"hello\n").unwrap();
    fs::write(root.join("empty.txt"), b"").unwrap();
    fs::write(root.join("a file  with spaces.txt"), b"spaces\n").unwrap();
    fs::write(root.join("über ☃.bin"), b"utf8").unwrap();
    fs::create_dir(root.join("sub dir")).unwrap();
    fs::write(root.join("sub dir/inner.txt"), b"inner").unwrap();
    symlink("hello.txt", root.join("link")).unwrap();
}

/// The status hopgate answers with for `e` (`Error::status`, the one status table).
fn status(e: FtpError) -> u16 {
    Error::from(e).status().as_u16()
}

fn quick() -> FtpSettings {
    FtpSettings {
        reply_timeout: Duration::from_secs(10),
        data_idle_timeout: Duration::from_secs(10),
        ..FtpSettings::default()
    }
}

#[tokio::test]
async fn vsftpd_streams_a_large_file_byte_exact_and_from_an_offset() {
    let peer = vsftpd(fill_tree, "");
    let want = pseudo_random(BIG, 1);
    let s = FtpSession::connect(peer.addr, &Login::anonymous(), quick())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    let f = s.features().clone();
    assert!(f.epsv && f.size && f.mdtm && f.rest_stream && f.utf8 && !f.mlst, "{f:?}");
    let mut s = s;
    let stat = s.stat("big.bin").await.unwrap();
    assert_eq!((stat.kind, stat.size), (EntryKind::File, Some(BIG as u64)));
    assert!(stat.modified.is_some());

    let download = s.retr("big.bin", 0).await.unwrap().with_expected_len(BIG as u64);
    let (n, sum) = sha256_of(download).await.unwrap();
    assert_eq!((n, sum), (BIG as u64, sha256_hex(&want)));

    // REST: the rest of the file from an odd offset, on a new session
    let s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let offset = 3_000_001u64;
    let download = s.retr("big.bin", offset).await.unwrap();
    let (n, sum) = sha256_of(download).await.unwrap();
    assert_eq!(n, BIG as u64 - offset);
    assert_eq!(sum, sha256_hex(&want[offset as usize..]));
    assert!(peer.log().contains("EPSV"), "EPSV was not used");
}

#[tokio::test]
async fn vsftpd_lists_names_with_spaces_utf8_and_links() {
    let peer = vsftpd(fill_tree, "");
    let mut s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let entries = s.list("").await.unwrap();
    let find = |name: &str| entries.iter().find(|e| e.name == name).cloned();
    let spaced = find("a file  with spaces.txt").expect("name with spaces");
    assert_eq!((spaced.kind, spaced.size), (EntryKind::File, Some(7)));
    assert!(spaced.modified.is_some());
    assert_eq!(find("über ☃.bin").expect("utf-8 name").size, Some(4));
    assert_eq!(find("sub dir").expect("dir").kind, EntryKind::Dir);
    let link = find("link").expect("symlink");
    assert_eq!((link.kind, link.link_target.as_deref()), (EntryKind::Link, Some("hello.txt")));
    assert_eq!(find("empty.txt").expect("empty file").size, Some(0));
    assert_eq!(entries.len(), 7, "{entries:#?}");

    let inner = s.list("sub dir").await.unwrap();
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].name, "inner.txt");
    // stat and list come back to the log-in directory
    assert_eq!(s.stat("sub dir").await.unwrap().kind, EntryKind::Dir);
    assert_eq!(s.pwd().await.unwrap(), "/");
    // a caller's own CWD keeps the session out of a pool until it changes back
    s.cwd("sub dir").await.unwrap();
    assert!(!s.is_reusable());
    let home = s.home().to_owned();
    s.cwd(&home).await.unwrap();
    assert!(s.is_reusable());
    // an empty file is a complete, empty download
    let mut d = s.retr("empty.txt", 0).await.unwrap().with_expected_len(0);
    let mut body = Vec::new();
    d.read_to_end(&mut body).await.unwrap();
    assert!(body.is_empty() && d.is_complete());
    let page = render_html("/", &entries, true);
    assert!(page.contains("href=\"%C3%BCber%20%E2%98%83.bin\""));
    assert!(page.contains("href=\"sub%20dir/\""));
}

#[tokio::test]
async fn vsftpd_missing_paths_are_404_and_the_session_survives() {
    let peer = vsftpd(fill_tree, "");
    let mut s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let e = s.stat("nope.txt").await.unwrap_err();
    assert!(matches!(e, FtpError::NotFound { .. }), "{e}");
    assert!(e.reply_text().unwrap().starts_with("550 "), "{e}");
    assert_eq!(status(e), 404);
    let e = s.list("no dir").await.unwrap_err();
    let e = Error::from(e);
    assert_eq!(e.status(), 404, "{e}");
    assert!(s.is_reusable());
    s.noop().await.unwrap();
    let e = s.retr("nope.txt", 0).await.err().expect("RETR of a missing file");
    let e = Error::from(e);
    assert_eq!(e.status(), 404, "{e}");

    // CR/LF never reach the server
    let mut s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let e = s.stat("x\r\nDELE hello.txt").await.unwrap_err();
    assert_eq!(status(e), 400);
    assert!(s.is_reusable());
    assert!(!peer.log().contains("DELE"), "{}", peer.log());
}

#[tokio::test]
async fn vsftpd_refused_log_in_is_401() {
    let peer = vsftpd(fill_tree, "");
    let e = FtpSession::connect(peer.addr, &Login::new("bob", "secret"), quick())
        .await
        .err()
        .expect("vsftpd is anonymous only");
    assert!(matches!(e, FtpError::LoginRefused { .. }), "{e}");
    assert!(e.reply_text().unwrap().starts_with("530"));
    assert_eq!(status(e), 401);
}

#[tokio::test]
async fn vsftpd_anonymous_upload_and_read_back() {
    let peer = vsftpd(
        |root| {
            fill_tree(root);
            fs::create_dir(root.join("incoming")).unwrap();
            let ok = Command::new("chown").arg("ftp").arg(root.join("incoming")).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown ftp incoming");
        },
        "write_enable=YES\nanon_upload_enable=YES\nanon_umask=022",
    );
    let data = pseudo_random(2 * 1024 * 1024 + 7, 2);
    let mut s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let n = s.stor("incoming/up load ü.bin", &mut &data[..]).await.unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(s.size("incoming/up load ü.bin").await.unwrap(), data.len() as u64);
    let (_, sum) = sha256_of(s.retr("incoming/up load ü.bin", 0).await.unwrap()).await.unwrap();
    assert_eq!(sum, sha256_hex(&data));

    // the root is not writable: 553 Could not create file -> 403
    let mut s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let e = s.stor("top.bin", &mut &b"x"[..]).await.unwrap_err();
    let e = Error::from(e);
    assert_eq!(e.status(), 403, "{e}");
}

#[tokio::test]
async fn pyftpdlib_mlsd_upload_rest_and_listing() {
    let peer = pyftpdlib(fill_tree, "bob", "secret");
    let login = Login::new("bob", "secret");
    let s = FtpSession::connect(peer.addr, &login, quick()).await.unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    assert!(s.features().mlst && s.features().rest_stream);

    // upload through the AsyncWrite side, in uneven pieces
    let data = pseudo_random(3 * 1024 * 1024 + 1, 3);
    let mut up = s.upload("new ü dir file.bin").await.unwrap();
    for piece in data.chunks(100_003) {
        up.write_all(piece).await.unwrap();
    }
    assert_eq!(up.finish().await.unwrap(), data.len() as u64);
    assert_eq!(fs::read(peer.root.join("new ü dir file.bin")).unwrap(), data);

    let mut s = FtpSession::connect(peer.addr, &login, quick()).await.unwrap();
    let stat = s.stat("new ü dir file.bin").await.unwrap();
    assert_eq!((stat.kind, stat.size), (EntryKind::File, Some(data.len() as u64)));
    assert_eq!(s.stat("sub dir").await.unwrap().kind, EntryKind::Dir);
    let e = s.stat("nope").await.unwrap_err();
    let e = Error::from(e);
    assert_eq!(e.status(), 404, "{e}");

    let entries = s.list("").await.unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    for want in ["a file  with spaces.txt", "über ☃.bin", "sub dir", "new ü dir file.bin"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    assert!(!names.contains(&".") && !names.contains(&".."));

    let offset = 1_234_567u64;
    let (n, sum) = sha256_of(s.retr("new ü dir file.bin", offset).await.unwrap()).await.unwrap();
    assert_eq!((n, sum), (data.len() as u64 - offset, sha256_hex(&data[offset as usize..])));
}

#[tokio::test]
async fn pyftpdlib_refusals_map_to_401_and_403() {
    let peer = pyftpdlib(fill_tree, "bob", "secret");
    let pool = FtpPool::new(quick(), FtpPoolConfig::default());
    let bad = Target { host: "127.0.0.1".into(), port: peer.addr.port(), login: Login::new("bob", "wrong") };
    let e = pool.checkout(&bad).await.err().expect("wrong password");
    let e = Error::from(e);
    assert_eq!(e.status(), 401, "{e}");
    assert_eq!(pool.idle_count(), 0);

    let mut s = FtpSession::connect(peer.addr, &Login::anonymous(), quick()).await.unwrap();
    let e = s.stor("up.bin", &mut &b"x"[..]).await.unwrap_err();
    assert!(matches!(e, FtpError::PermissionDenied { .. }), "{e}");
    assert_eq!(status(e), 403);
    s.noop().await.unwrap();
}

#[tokio::test]
async fn pool_reuses_logged_in_sessions_for_many_small_files() {
    let peer = pyftpdlib(fill_tree, "bob", "secret");
    let pool = FtpPool::new(quick(), FtpPoolConfig::default());
    let target = Target { host: "localhost".into(), port: peer.addr.port(), login: Login::new("bob", "secret") };
    let mut reused = 0;
    for _ in 0..20 {
        let mut s = pool.checkout(&target).await.unwrap();
        reused += usize::from(s.is_reused());
        let stat = s.stat("hello.txt").await.unwrap();
        let size = stat.size.unwrap();
        let mut body = Vec::new();
        let mut d = s.retr("hello.txt", 0).await.unwrap().with_expected_len(size);
        d.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"hello\n");
        drop(d);
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(reused, 19);

    // a download abandoned half-way does not go back to the pool
    let s = pool.checkout(&target).await.unwrap();
    let mut d = s.retr("big.bin", 0).await.unwrap();
    let mut some = [0u8; 1000];
    d.read_exact(&mut some).await.unwrap();
    drop(d);
    assert_eq!(pool.idle_count(), 0);
    let mut s = pool.checkout(&target).await.unwrap();
    assert!(!s.is_reused());
    s.noop().await.unwrap();
}
