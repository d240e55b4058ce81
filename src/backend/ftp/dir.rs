//! Directory questions on a session: is a path a file or a directory (`stat`), and what is
//! in a directory (`list`: MLSD, RFC 3659 §7, or LIST). Both leave the session in its log-in
//! directory.

use std::time::SystemTime;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::client::{FtpSession, Stat};
use super::listing::{self, Entry, EntryKind};
use super::{FtpError, check_path};
use crate::idle::Timer;

impl FtpSession {
    /// Whether `path` is a file or a directory, with size and time where the server tells.
    /// `""` and `/` are directories without asking. Uses MLST where announced; else SIZE
    /// (then MDTM) for files and CWD (and back) for directories. A path that is neither is
    /// the SIZE reply's `NotFound`, or `PermissionDenied` when SIZE or CWD said so. A server
    /// without SIZE gives a `File` of unknown size for whatever CWD refuses; RETR then decides.
    pub async fn stat(&mut self, path: &str) -> Result<Stat, FtpError> {
        check_path(path)?;
        if path.is_empty() || path == "/" {
            return Ok(dir_stat());
        }
        if self.features.mlst {
            let reply = self.cmd(&format!("MLST {path}")).await?;
            if reply.code == 250 {
                // 250-Listing path / " facts; name" / 250 End (RFC 3659 §7.2)
                let line = reply.lines.get(1).map(|l| l.trim_start()).unwrap_or("");
                if let Some(e) = listing::parse_facts(line, true) {
                    let kind = if e.kind == EntryKind::Dir { e.kind } else { EntryKind::File };
                    return Ok(Stat { kind, size: e.size, modified: e.modified });
                }
            } else if !matches!(reply.code, 500 | 501 | 502 | 504) {
                return Err(FtpError::from_reply("MLST", &reply));
            }
        }
        let size_err = match self.size(path).await {
            Ok(size) => {
                let modified = match self.mdtm(path).await {
                    Ok(t) => Some(t),
                    Err(e) if e.leaves_session_unknown() => return Err(e),
                    Err(_) => None,
                };
                return Ok(Stat { kind: EntryKind::File, size: Some(size), modified });
            }
            Err(e @ FtpError::PermissionDenied { .. }) => return Err(e),
            Err(e) if e.leaves_session_unknown() => return Err(e),
            Err(e) => e,
        };
        match self.cwd(path).await {
            Ok(()) => {
                self.return_home().await?;
                Ok(dir_stat())
            }
            Err(e @ FtpError::PermissionDenied { .. }) => Err(e),
            Err(e) if e.leaves_session_unknown() => Err(e),
            // SIZE itself unsupported: let RETR find out
            Err(_) if matches!(&size_err, FtpError::Rejected { .. }) => {
                Ok(Stat { kind: EntryKind::File, size: None, modified: None })
            }
            Err(_) => Err(size_err),
        }
    }

    /// Back to the log-in directory; failing that, the session's directory is unknown.
    async fn return_home(&mut self) -> Result<(), FtpError> {
        let home = self.home.clone();
        match self.cwd(&home).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.poison(e)),
        }
    }

    /// The entries of directory `path` (`""` is the log-in directory): MLSD where announced
    /// (falling back to LIST if refused), else LIST in Unix or DOS format. The listing is held
    /// in memory up to `settings.max_listing_bytes`; beyond that `ListingTooLarge`.
    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>, FtpError> {
        check_path(path)?;
        let moved = !path.is_empty() && path != self.home;
        if moved {
            self.cwd(path).await?;
        }
        let result = self.list_here().await;
        if moved && !self.poisoned {
            self.return_home().await?;
        }
        result
    }

    async fn list_here(&mut self) -> Result<Vec<Entry>, FtpError> {
        let mlsd = self.features.mlst && !self.mlsd_refused;
        let mut data = self.open_data().await?;
        let reply = self.cmd(if mlsd { "MLSD" } else { "LIST" }).await?;
        if mlsd && matches!(reply.code, 500 | 501 | 502 | 504) {
            // FEAT promised MLST but MLSD is refused: LIST from now on
            drop(data);
            self.mlsd_refused = true;
            return Box::pin(self.list_here()).await;
        }
        if reply.class() != 1 {
            return Err(FtpError::from_reply(if mlsd { "MLSD" } else { "LIST" }, &reply));
        }
        let limit = self.settings.max_listing_bytes;
        let body = match self.read_capped(&mut data, limit).await {
            Ok(body) => body,
            Err(e) => return Err(self.poison(e)),
        };
        drop(data);
        let done = self.read_reply("listing").await?;
        if !matches!(done.code, 226 | 250) {
            return Err(
                self.poison(FtpError::TransferIncomplete { received: body.len() as u64, reply: Some(done.text()) })
            );
        }
        Ok(if mlsd { listing::parse_mlsd(&body) } else { listing::parse_list(&body, SystemTime::now()) })
    }

    async fn read_capped(&self, data: &mut TcpStream, limit: usize) -> Result<Vec<u8>, FtpError> {
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut timer = Timer::new(self.settings.data_idle_timeout);
        loop {
            let n = match timer.guard(data.read(&mut chunk)).await {
                Err(_) => return Err(FtpError::Timeout { during: "listing" }),
                Ok(Err(source)) => {
                    return Err(FtpError::Io { during: "listing", source });
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Ok(body);
            }
            if body.len() + n > limit {
                return Err(FtpError::ListingTooLarge { limit });
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
}

fn dir_stat() -> Stat {
    Stat { kind: EntryKind::Dir, size: None, modified: None }
}
