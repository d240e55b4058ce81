//! The FTP layer against a misbehaving FTP server (tests/support/ftp_rogue.rs): a PASV reply naming another
//! address, data connections dropped mid-file, short transfers, 421 greetings, silence,
//! oversized listings, and control connections the server closes while pooled.

#[path = "support/ftp_rogue.rs"]
mod ftp_rogue;

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ftp_rogue::{Retr, Script, rogue};
use hopgate::backend::ftp::{EntryKind, FtpError, FtpPool, FtpPoolConfig, FtpSession, FtpSettings, Login, Target};
use hopgate::error::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// The status hopgate answers with for `e` (`Error::status`, the one status table).
fn status(e: FtpError) -> u16 {
    Error::from(e).status().as_u16()
}

fn settings() -> FtpSettings {
    FtpSettings {
        reply_timeout: Duration::from_secs(5),
        data_idle_timeout: Duration::from_secs(5),
        ..FtpSettings::default()
    }
}

async fn read_all(d: impl tokio::io::AsyncRead + Unpin) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    let mut d = d;
    d.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn pasv_address_is_ignored_data_goes_to_the_control_peer() {
    let script = Script { epsv: false, pasv_names: Ipv4Addr::new(127, 0, 0, 2), ..Script::default() };
    let file = script.file.clone();
    let (addr, seen) = rogue(script).await;
    let s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    let got = read_all(s.retr("f.bin", 0).await.unwrap()).await.unwrap();
    assert_eq!(got, file);
    // a second transfer on the same session goes straight to PASV
    let mut s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    s.list("").await.unwrap();
    s.list("").await.unwrap();
    assert_eq!(seen.decoy_hits.load(Ordering::SeqCst), 0);
    assert_eq!(seen.count("EPSV"), 2, "{:?}", seen.commands());
    assert_eq!(seen.count("PASV"), 3, "{:?}", seen.commands());
}

#[tokio::test]
async fn a_dropped_data_connection_then_426_is_an_error() {
    let (addr, _) = rogue(Script { retr: Retr::DropThen426, ..Script::default() }).await;
    let s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    let err = read_all(s.retr("f.bin", 0).await.unwrap()).await.unwrap_err();
    let ftp = FtpError::from_io(&err).expect("an FtpError inside");
    assert!(matches!(ftp, FtpError::TransferIncomplete { received: 100_000, .. }), "{ftp}");
    assert!(ftp.reply_text().unwrap().starts_with("426"));
    assert_eq!(status(FtpError::from_io_owned(err, "download")), 502);
}

#[tokio::test]
async fn a_dropped_data_connection_without_a_reply_is_an_error() {
    let (addr, _) = rogue(Script { retr: Retr::DropAndHangUp, ..Script::default() }).await;
    let s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    let err = read_all(s.retr("f.bin", 0).await.unwrap()).await.unwrap_err();
    let ftp = FtpError::from_io(&err).expect("an FtpError inside");
    assert!(matches!(ftp, FtpError::TransferIncomplete { .. }), "{ftp}");
}

#[tokio::test]
async fn a_short_file_with_226_is_caught_by_the_expected_length() {
    let (addr, _) = rogue(Script { retr: Retr::ShortThen226, ..Script::default() }).await;
    let mut s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    let size = s.size("f.bin").await.unwrap();
    let d = s.retr("f.bin", 0).await.unwrap().with_expected_len(size);
    let err = read_all(d).await.unwrap_err();
    assert!(matches!(FtpError::from_io(&err), Some(FtpError::TransferIncomplete { received: 100_000, .. })));
}

#[tokio::test]
async fn greeting_421_is_502_and_silence_is_504() {
    let (addr, _) = rogue(Script { greeting: "421 Too many users, sorry.", ..Script::default() }).await;
    let e = FtpSession::connect(addr, &Login::anonymous(), settings()).await.err().unwrap();
    assert!(matches!(e, FtpError::ServiceUnavailable { .. }), "{e}");
    assert_eq!(e.reply_text(), Some("421 Too many users, sorry."));
    assert_eq!(status(e), 502);

    let (addr, _) = rogue(Script { greeting: "", ..Script::default() }).await;
    let quick = FtpSettings { reply_timeout: Duration::from_millis(300), ..settings() };
    let e = FtpSession::connect(addr, &Login::anonymous(), quick).await.err().unwrap();
    assert!(matches!(e, FtpError::Timeout { .. }), "{e}");
    assert_eq!(status(e), 504);

    // nobody listening: 502
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let e = FtpSession::connect(gone, &Login::anonymous(), settings()).await.err().unwrap();
    assert!(matches!(e, FtpError::Connect { .. }), "{e}");
    assert_eq!(status(e), 502);
}

#[tokio::test]
async fn bad_paths_and_logins_send_no_command() {
    let (addr, seen) = rogue(Script::default()).await;
    let mut s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    for bad in ["a\r\nDELE b", "a\nb", "a\0b"] {
        assert_eq!(status(s.stat(bad).await.unwrap_err()), 400);
        assert_eq!(status(s.list(bad).await.unwrap_err()), 400);
        assert_eq!(status(s.cwd(bad).await.unwrap_err()), 400);
    }
    let e = s.retr("x\r\nDELE y", 0).await.err().unwrap();
    assert_eq!(status(e), 400);
    let before = seen.commands().len();
    let e = FtpSession::connect(addr, &Login::new("bob\r\nDELE x", "p"), settings()).await;
    assert_eq!(status(e.err().unwrap()), 400);
    let cmds = seen.commands();
    assert!(cmds[before..].is_empty(), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c.contains("DELE") || c.starts_with("RETR")), "{cmds:?}");

    let e = FtpSession::connect(addr, &Login::new("bob", "bad"), settings()).await.err().unwrap();
    assert_eq!(status(e), 401);
}

#[tokio::test]
async fn listings_are_capped_and_odd_lines_skipped() {
    let list = "01-31-23  12:00PM       <DIR>          sub dir\r\n\
                garbage line\r\n\
                02-01-2023  09:05AM                 1234 a file.txt\r\n"
        .as_bytes()
        .to_vec();
    let (addr, _) = rogue(Script { list: list.clone(), ..Script::default() }).await;
    let mut s = FtpSession::connect(addr, &Login::anonymous(), settings()).await.unwrap();
    let e = s.list("").await.unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].name.as_str(), e[0].kind), ("sub dir", EntryKind::Dir));
    assert_eq!((e[1].name.as_str(), e[1].size), ("a file.txt", Some(1234)));

    let (addr, _) = rogue(Script { list: list.repeat(100), ..Script::default() }).await;
    let small = FtpSettings { max_listing_bytes: 1000, ..settings() };
    let mut s = FtpSession::connect(addr, &Login::anonymous(), small).await.unwrap();
    let e = s.list("").await.unwrap_err();
    assert!(matches!(e, FtpError::ListingTooLarge { limit: 1000 }), "{e}");
    assert!(!s.is_reusable());
}

#[tokio::test]
async fn the_pool_replaces_a_session_the_server_closed() {
    let (addr, seen) = rogue(Script::default()).await;
    let pool = FtpPool::new(settings(), FtpPoolConfig::default());
    let target = Target { host: "127.0.0.1".into(), port: addr.port(), login: Login::anonymous() };
    let mut s = pool.checkout(&target).await.unwrap();
    s.noop().await.unwrap();
    drop(s);
    assert_eq!(pool.idle_count(), 1);
    let s = pool.checkout(&target).await.unwrap();
    assert!(s.is_reused());
    drop(s);
    assert_eq!(seen.logins.load(Ordering::SeqCst), 1);

    // the server hangs up on the idle session; checkout notices without sending anything
    seen.hang_up.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = pool.checkout(&target).await.unwrap();
    assert!(!s.is_reused());
    s.noop().await.unwrap();
    assert_eq!(seen.logins.load(Ordering::SeqCst), 2);

    // other credentials get their own session; a failed transfer is not pooled
    let other = Target { login: Login::new("bob", "pw"), ..target.clone() };
    let o = pool.checkout(&other).await.unwrap();
    assert!(!o.is_reused());
    drop(o);
    assert_eq!(pool.idle_count(), 1);
    let d = s.retr("f.bin", 0).await.unwrap().with_expected_len(5);
    assert!(read_all(d).await.is_err());
    assert_eq!(pool.idle_count(), 1);
}
