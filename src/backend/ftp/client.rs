//! One FTP control connection (RFC 959): greeting, log-in, FEAT (RFC 2389), `TYPE I`, and the
//! commands the gateway needs. Transfers (RETR, STOR) live in `transfer.rs`, `stat` and `list`
//! in `dir.rs`.
//!
//! The session's working directory is always its log-in directory between calls: `stat` and
//! `list` change into a directory and back. Relative paths are thus relative to the log-in
//! directory (RFC 1738 §3.2.2), whichever request the session served before.

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::listing::EntryKind;
use super::reply::{self, Reply, ReplyError};
use super::{FtpError, FtpSettings, check_path};
use crate::upstream::Dialer;

/// Who logs in. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl Login {
    /// The default: user `anonymous`, password `hopgate@` (RFC 1635 asks for something
    /// mail-like; servers ignore it).
    pub fn anonymous() -> Login {
        Login::new("anonymous", "hopgate@")
    }

    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Login {
        Login { user: user.into(), password: password.into() }
    }
}

impl Default for Login {
    fn default() -> Self {
        Login::anonymous()
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// What the server's FEAT reply announced (RFC 2389). A server without FEAT has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// MLST and with it MLSD (RFC 3659 §7.8 announces both as `MLST`).
    pub mlst: bool,
    pub size: bool,
    pub mdtm: bool,
    /// `REST STREAM` (RFC 3659 §5): RETR from an offset, for HTTP ranges.
    pub rest_stream: bool,
    pub epsv: bool,
    pub utf8: bool,
}

impl Features {
    pub(crate) fn from_lines(lines: &[String]) -> Features {
        let mut f = Features::default();
        for line in lines {
            let name = line.split(' ').next().unwrap_or("");
            match name {
                "MLST" | "MLSD" => f.mlst = true,
                "SIZE" => f.size = true,
                "MDTM" => f.mdtm = true,
                "REST" if line.contains("STREAM") => f.rest_stream = true,
                "EPSV" => f.epsv = true,
                "UTF8" => f.utf8 = true,
                _ => {}
            }
        }
        f
    }
}

/// What a path is: a file with its size and time where the server tells, or a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: EntryKind,
    pub size: Option<u64>,
    pub modified: Option<SystemTime>,
}

/// Which passive command works with this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passive {
    Untried,
    Epsv,
    Pasv,
}

/// The control connection: the socket, bytes read but not yet parsed, and the peer every data
/// connection goes to.
pub(crate) struct Control {
    stream: TcpStream,
    buf: Vec<u8>,
    peer: SocketAddr,
}

impl Control {
    /// Reads until one complete reply is buffered; usable from `poll_read` of a transfer.
    pub(crate) fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reply, FtpError>> {
        loop {
            match reply::parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Poll::Ready(Ok(reply));
                }
                Ok(None) => {}
                Err(ReplyError::TooLarge) => {
                    return Poll::Ready(Err(FtpError::Protocol { detail: "reply too large".into() }));
                }
                Err(ReplyError::Malformed(line)) => {
                    return Poll::Ready(Err(FtpError::Protocol { detail: format!("malformed reply {line:?}") }));
                }
            }
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            match std::pin::Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(source)) => {
                    return Poll::Ready(Err(FtpError::Io { during: "reading a reply", source }));
                }
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Err(FtpError::ConnectionClosed { during: "reading a reply" }));
                }
                Poll::Ready(Ok(())) => self.buf.extend_from_slice(rb.filled()),
            }
        }
    }
}

/// A logged-in control connection in binary mode.
pub struct FtpSession {
    pub(crate) ctrl: Control,
    /// Dials the data connections (the room's dialer, with the data connect timeout).
    data: Dialer,
    pub(crate) settings: FtpSettings,
    pub(crate) features: Features,
    passive: Passive,
    pub(crate) mlsd_refused: bool,
    pub(crate) home: String,
    /// The working directory is not `home` (after a caller's own `cwd`).
    pub(crate) away: bool,
    /// Set when a failure leaves the connection's state unknown; then it is never reused.
    pub(crate) poisoned: bool,
}

impl FtpSession {
    /// Runs the start of a session over a control connection its pool dialled: greeting (421 is an error),
    /// USER/PASS, FEAT, `OPTS UTF8 ON` when announced, `TYPE I`, PWD. Data connections go through `data`.
    pub(crate) async fn start(
        stream: TcpStream,
        login: &Login,
        settings: FtpSettings,
        data: Dialer,
    ) -> Result<FtpSession, FtpError> {
        let peer = stream.peer_addr().map_err(|source| FtpError::Io { during: "starting a session", source })?;
        let mut s = FtpSession {
            ctrl: Control { stream, buf: Vec::new(), peer },
            data,
            settings,
            features: Features::default(),
            passive: Passive::Untried,
            mlsd_refused: false,
            home: "/".into(),
            away: false,
            poisoned: false,
        };
        s.greet().await?;
        s.login(login).await?;
        let feat = s.cmd("FEAT").await?;
        s.features = Features::from_lines(&reply::parse_feat(&feat));
        if s.features.utf8 {
            // RFC 2640 §3.1 (draft OPTS UTF8): servers that announce UTF8 may need it switched on
            s.cmd("OPTS UTF8 ON").await?;
        }
        s.expect_reply("TYPE", "TYPE I", &[200]).await?;
        let pwd = s.cmd("PWD").await?;
        if let Some(home) = reply::parse_pwd(&pwd).filter(|h| check_path(h).is_ok()) {
            s.home = home;
        }
        Ok(s)
    }

    async fn greet(&mut self) -> Result<(), FtpError> {
        // RFC 959 §5.4: 120 (ready in nnn minutes) may precede the 220; a few at most
        for _ in 0..3 {
            let reply = self.read_reply("greeting").await?;
            match reply.code {
                220 => return Ok(()),
                120 => continue,
                _ => {
                    self.poisoned = true;
                    return Err(FtpError::from_reply("greeting", &reply));
                }
            }
        }
        self.poisoned = true;
        Err(FtpError::Protocol { detail: "no 220 greeting".into() })
    }

    async fn login(&mut self, login: &Login) -> Result<(), FtpError> {
        check_path(&login.user)?;
        check_path(&login.password)?;
        let user = self.cmd(&format!("USER {}", login.user)).await?;
        match user.code {
            230 => return Ok(()),
            331 => {}
            _ => return Err(FtpError::from_reply("USER", &user)),
        }
        let pass = self.cmd(&format!("PASS {}", login.password)).await?;
        match pass.code {
            230 | 202 => Ok(()),
            _ => Err(FtpError::from_reply("PASS", &pass)),
        }
    }

    /// What FEAT announced.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The server's address; every data connection goes to its IP.
    pub fn peer(&self) -> SocketAddr {
        self.ctrl.peer
    }

    /// False once a failure left the connection's state unknown, or while the working
    /// directory is not the log-in directory.
    pub fn is_reusable(&self) -> bool {
        !self.poisoned && !self.away && self.ctrl.buf.is_empty()
    }

    /// Without a round trip: false when the server has closed the connection or sent
    /// something unasked (e.g. `421 Timeout`) while the session was idle.
    pub(crate) fn looks_alive(&self) -> bool {
        if !self.is_reusable() {
            return false;
        }
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // MSG_PEEK on the non-blocking socket: no data and no FIN means WouldBlock
        match socket2::SockRef::from(&self.ctrl.stream).peek(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// Sends one command line; CR, LF and NUL are refused here too, before anything is sent.
    pub(crate) async fn send(&mut self, line: &str) -> Result<(), FtpError> {
        check_path(line)?;
        if line.starts_with("PASS ") {
            tracing::trace!("ftp > PASS <redacted>");
        } else {
            tracing::trace!("ftp > {line}");
        }
        let wire = format!("{line}\r\n");
        let write = self.ctrl.stream.write_all(wire.as_bytes());
        match timeout(self.settings.reply_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(self.poison(FtpError::Io { during: "sending a command", source })),
            Err(_) => Err(self.poison(FtpError::Timeout { during: "sending a command" })),
        }
    }

    /// Reads one reply within the reply timeout. A 421 ends the session (RFC 959 §4.2).
    pub(crate) async fn read_reply(&mut self, during: &'static str) -> Result<Reply, FtpError> {
        let ctrl = &mut self.ctrl;
        let read = poll_fn(|cx| ctrl.poll_reply(cx));
        let reply = match timeout(self.settings.reply_timeout, read).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(self.poison(e)),
            Err(_) => return Err(self.poison(FtpError::Timeout { during })),
        };
        tracing::trace!("ftp < {}", reply.text());
        if reply.code == 421 {
            return Err(self.poison(FtpError::from_reply(during, &reply)));
        }
        Ok(reply)
    }

    pub(crate) fn poison(&mut self, e: FtpError) -> FtpError {
        self.poisoned = true;
        e
    }

    /// Sends a command and reads its reply, whatever the code (but 421).
    pub(crate) async fn cmd(&mut self, line: &str) -> Result<Reply, FtpError> {
        self.send(line).await?;
        self.read_reply("waiting for a reply").await
    }

    /// Sends a command; a reply code outside `ok` is an error classified by `from_reply`.
    pub(crate) async fn expect_reply(
        &mut self,
        command: &'static str,
        line: &str,
        ok: &[u16],
    ) -> Result<Reply, FtpError> {
        let reply = self.cmd(line).await?;
        if ok.contains(&reply.code) { Ok(reply) } else { Err(FtpError::from_reply(command, &reply)) }
    }

    /// NOOP: a cheap liveness check.
    pub async fn noop(&mut self) -> Result<(), FtpError> {
        self.expect_reply("NOOP", "NOOP", &[200]).await.map(drop)
    }

    /// CWD: changes the working directory (550 gives `NotFound` or `PermissionDenied`). The
    /// gateway's own calls (`stat`, `list`) change back; after a caller's own `cwd` the
    /// session is not reusable until it changes back to the log-in directory.
    pub async fn cwd(&mut self, path: &str) -> Result<(), FtpError> {
        check_path(path)?;
        self.expect_reply("CWD", &format!("CWD {path}"), &[250, 200]).await?;
        self.away = path != self.home;
        Ok(())
    }

    /// SIZE (RFC 3659 §4): the size in bytes, as transferred in `TYPE I`.
    pub async fn size(&mut self, path: &str) -> Result<u64, FtpError> {
        check_path(path)?;
        let reply = self.expect_reply("SIZE", &format!("SIZE {path}"), &[213]).await?;
        reply::parse_size(&reply)
            .ok_or_else(|| FtpError::Protocol { detail: format!("unparseable SIZE reply {:?}", reply.text()) })
    }

    /// MDTM (RFC 3659 §3): the modification time, UTC.
    pub async fn mdtm(&mut self, path: &str) -> Result<SystemTime, FtpError> {
        check_path(path)?;
        let reply = self.expect_reply("MDTM", &format!("MDTM {path}"), &[213]).await?;
        reply::parse_mdtm(&reply)
            .ok_or_else(|| FtpError::Protocol { detail: format!("unparseable MDTM reply {:?}", reply.text()) })
    }

    /// Opens a passive data connection: EPSV (RFC 2428) first, PASV when EPSV is refused,
    /// remembering which works. It always connects to the control connection's peer IP: the
    /// address in a PASV reply is ignored (RFC 2577 §3, FTP bounce and spoofing). The connection is made
    /// by the session's dialer, so the port the server names is loop-checked (hopgate's own listener: 508).
    pub(crate) async fn open_data(&mut self) -> Result<TcpStream, FtpError> {
        let port = match self.passive {
            Passive::Pasv => self.pasv().await?,
            Passive::Epsv | Passive::Untried => match self.epsv().await? {
                Some(port) => {
                    self.passive = Passive::Epsv;
                    port
                }
                None => {
                    self.passive = Passive::Pasv;
                    self.pasv().await?
                }
            },
        };
        match self.data.dial(&self.ctrl.peer.ip().to_string(), port).await {
            Ok((stream, _)) => Ok(stream),
            Err(e) => Err(self.poison(FtpError::Dial(e))),
        }
    }

    /// `Ok(None)` when EPSV is not understood (then PASV).
    async fn epsv(&mut self) -> Result<Option<u16>, FtpError> {
        let reply = self.cmd("EPSV").await?;
        match reply.code {
            229 => reply::parse_epsv(&reply).map(Some).ok_or_else(|| {
                self.poison(FtpError::Protocol { detail: format!("unparseable EPSV reply {:?}", reply.text()) })
            }),
            // PASV cannot express an IPv6 peer: EPSV is the only way there
            500..=504 if self.passive == Passive::Untried && self.ctrl.peer.is_ipv4() => Ok(None),
            _ => Err(FtpError::from_reply("EPSV", &reply)),
        }
    }

    async fn pasv(&mut self) -> Result<u16, FtpError> {
        let reply = self.expect_reply("PASV", "PASV", &[227]).await?;
        match reply::parse_pasv(&reply) {
            Some((advertised, port)) => {
                if std::net::IpAddr::V4(advertised) != self.ctrl.peer.ip() {
                    tracing::debug!("ftp PASV names {advertised}; connecting to {} instead", self.ctrl.peer.ip());
                }
                Ok(port)
            }
            None => {
                Err(self.poison(FtpError::Protocol { detail: format!("unparseable PASV reply {:?}", reply.text()) }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_from_feat_lines() {
        let lines: Vec<String> = ["EPSV", "MDTM", "MLST TYPE*;SIZE*;MODIFY*;", "REST STREAM", "SIZE", "UTF8"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = Features::from_lines(&lines);
        assert!(f.epsv && f.mdtm && f.mlst && f.rest_stream && f.size && f.utf8);
        let f = Features::from_lines(&["REST".to_string()]);
        assert!(!f.rest_stream);
    }

    #[test]
    fn login_debug_hides_password() {
        let dbg = format!("{:?}", Login::new("bob", "s3cret"));
        assert!(dbg.contains("bob") && !dbg.contains("s3cret"));
    }
}
