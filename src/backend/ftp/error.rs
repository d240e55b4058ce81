//! What went wrong talking FTP, and the HTTP status the gateway answers for it (issue 5).

use std::{fmt, io};

use http::StatusCode;

use super::reply::Reply;

/// One FTP failure. Variants name what happened; those caused by a server reply carry the
/// reply's full text (`550 Failed to open file.`), for the error page.
#[derive(Debug)]
#[non_exhaustive]
pub enum FtpError {
    /// The path has CR, LF or NUL (or is otherwise unusable); no command was sent. 400.
    BadPath { reason: &'static str },
    /// The control (or a data) connection could not be made. 502.
    Connect { source: io::Error },
    /// A connect, a reply or a data transfer took too long. 504.
    Timeout { during: &'static str },
    /// 421: the server is shutting down or refuses service (also as a greeting). 502.
    ServiceUnavailable { reply: String },
    /// 530 (not logged in): wrong user or password, or anonymous refused. 401.
    LoginRefused { reply: String },
    /// 550 on a path that does not exist. 404.
    NotFound { reply: String },
    /// 550 with a permission text, 553, or 532. 403.
    PermissionDenied { reply: String },
    /// Any other negative or unexpected reply to `command`. 502.
    Rejected { command: &'static str, reply: String },
    /// The server broke the protocol: an unparseable or oversized reply. 502.
    Protocol { detail: String },
    /// The server closed the control connection while a reply was awaited. 502.
    ConnectionClosed { during: &'static str },
    /// An I/O error on the control or data connection. 502.
    Io { during: &'static str, source: io::Error },
    /// A download ended without a 226/250 (a dropped data connection, 426, or fewer or more bytes
    /// than announced): the file must not be taken as complete. 502.
    TransferIncomplete { received: u64, reply: Option<String> },
    /// A listing exceeded `FtpSettings::max_listing_bytes`. 502.
    ListingTooLarge { limit: usize },
}

impl FtpError {
    /// The status the HTTP/FTP gateway answers with (issue 5). A 550 is 404 unless its text
    /// speaks of permission; see [`FtpError::from_reply`].
    pub fn status(&self) -> StatusCode {
        match self {
            FtpError::BadPath { .. } => StatusCode::BAD_REQUEST,
            FtpError::LoginRefused { .. } => StatusCode::UNAUTHORIZED,
            FtpError::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            FtpError::NotFound { .. } => StatusCode::NOT_FOUND,
            FtpError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            FtpError::Connect { .. }
            | FtpError::ServiceUnavailable { .. }
            | FtpError::Rejected { .. }
            | FtpError::Protocol { .. }
            | FtpError::ConnectionClosed { .. }
            | FtpError::Io { .. }
            | FtpError::TransferIncomplete { .. }
            | FtpError::ListingTooLarge { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The FTP server's own reply text, when a reply caused this error (HTML-escape it!).
    pub fn reply_text(&self) -> Option<&str> {
        match self {
            FtpError::ServiceUnavailable { reply }
            | FtpError::LoginRefused { reply }
            | FtpError::NotFound { reply }
            | FtpError::PermissionDenied { reply }
            | FtpError::Rejected { reply, .. } => Some(reply),
            FtpError::TransferIncomplete { reply, .. } => reply.as_deref(),
            _ => None,
        }
    }

    /// The `FtpError` inside an `io::Error` returned by a [`super::Download`] or
    /// [`super::Upload`] (their `AsyncRead`/`AsyncWrite` can only return `io::Error`).
    pub fn from_io(err: &io::Error) -> Option<&FtpError> {
        err.get_ref()?.downcast_ref::<FtpError>()
    }

    /// Unwraps an `FtpError` carried in an `io::Error`, or wraps a foreign one as `Io`.
    pub fn from_io_owned(err: io::Error, during: &'static str) -> FtpError {
        if !err.get_ref().is_some_and(|e| e.is::<FtpError>()) {
            return FtpError::Io { during, source: err };
        }
        match err.into_inner().map(|inner| inner.downcast::<FtpError>()) {
            Some(Ok(ftp)) => *ftp,
            // unreachable: checked just above
            _ => FtpError::Protocol { detail: "lost ftp error".into() },
        }
    }

    /// Classifies a negative (or unexpected) reply to `command`.
    ///
    /// The rule for 550, whose meaning RFC 959 leaves to the text ("file unavailable (e.g., file
    /// not found, no access)"): it is `PermissionDenied` (403) when the text says "permission",
    /// "denied", "not allowed", "forbidden" or "privilege" (vsftpd: `550 Permission denied.`,
    /// pyftpdlib: `550 Not enough privileges.`), else `NotFound` (404: vsftpd's `550 Failed to
    /// open file.`, pyftpdlib's `550 No such file or directory.`). A server that answers 550
    /// "Failed to open file." for an unreadable file thus gives 404, which also does not tell
    /// a client that the file exists. 553 (name not allowed, vsftpd's `553 Could not create
    /// file.`) and 532 (need account for storing) are 403, 530 is 401, 421 is 502.
    pub fn from_reply(command: &'static str, reply: &Reply) -> FtpError {
        let text = reply.text();
        match reply.code {
            421 => FtpError::ServiceUnavailable { reply: text },
            530 => FtpError::LoginRefused { reply: text },
            532 | 553 => FtpError::PermissionDenied { reply: text },
            550 if says_permission(&text) => FtpError::PermissionDenied { reply: text },
            550 => FtpError::NotFound { reply: text },
            _ => FtpError::Rejected { command, reply: text },
        }
    }

    /// True for errors after which the control connection's state is unknown (I/O, timeouts,
    /// protocol errors, 421, broken transfers): such a session must not be reused.
    pub fn leaves_session_unknown(&self) -> bool {
        !matches!(
            self,
            FtpError::BadPath { .. }
                | FtpError::NotFound { .. }
                | FtpError::PermissionDenied { .. }
                | FtpError::Rejected { .. }
                | FtpError::LoginRefused { .. }
        )
    }
}

fn says_permission(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["permission", "denied", "not allowed", "forbidden", "privilege"].iter().any(|word| lower.contains(word))
}

impl fmt::Display for FtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FtpError::BadPath { reason } => write!(f, "bad ftp path: {reason}"),
            FtpError::Connect { source } => write!(f, "ftp server unreachable: {source}"),
            FtpError::Timeout { during } => write!(f, "ftp server timed out during {during}"),
            FtpError::ServiceUnavailable { reply } => {
                write!(f, "ftp server unavailable: {reply}")
            }
            FtpError::LoginRefused { reply } => write!(f, "ftp log-in refused: {reply}"),
            FtpError::NotFound { reply } => write!(f, "ftp path not found: {reply}"),
            FtpError::PermissionDenied { reply } => write!(f, "ftp permission denied: {reply}"),
            FtpError::Rejected { command, reply } => {
                write!(f, "ftp server rejected {command}: {reply}")
            }
            FtpError::Protocol { detail } => write!(f, "ftp protocol error: {detail}"),
            FtpError::ConnectionClosed { during } => {
                write!(f, "ftp server closed the connection during {during}")
            }
            FtpError::Io { during, source } => write!(f, "ftp i/o error during {during}: {source}"),
            FtpError::TransferIncomplete { received, reply } => match reply {
                Some(reply) => write!(f, "ftp transfer incomplete after {received} bytes: {reply}"),
                None => write!(f, "ftp transfer incomplete after {received} bytes"),
            },
            FtpError::ListingTooLarge { limit } => {
                write!(f, "ftp listing larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for FtpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FtpError::Connect { source } | FtpError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply { code, lines: vec![format!("{code} {text}")] }
    }

    #[test]
    fn replies_map_to_http_statuses() {
        let cases = [
            ("RETR", 550, "Failed to open file.", 404),
            ("RETR", 550, "No such file or directory.", 404),
            ("CWD", 550, "Failed to change directory.", 404),
            ("STOR", 550, "Permission denied.", 403),
            ("STOR", 550, "Not enough privileges.", 403),
            ("STOR", 553, "Could not create file.", 403),
            ("STOR", 532, "Need account for storing files.", 403),
            ("PASS", 530, "Login incorrect.", 401),
            ("USER", 421, "Service not available.", 502),
            ("RETR", 451, "Local error.", 502),
            ("TYPE", 504, "Not implemented.", 502),
        ];
        for (cmd, code, text, status) in cases {
            let err = FtpError::from_reply(cmd, &reply(code, text));
            assert_eq!(err.status().as_u16(), status, "{code} {text}");
            assert_eq!(err.reply_text(), Some(format!("{code} {text}").as_str()));
        }
        let t = FtpError::Timeout { during: "greeting" };
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(t.leaves_session_unknown());
        assert!(!FtpError::from_reply("RETR", &reply(550, "x")).leaves_session_unknown());
    }

    #[test]
    fn ftp_error_survives_an_io_error() {
        let io = io::Error::other(FtpError::ListingTooLarge { limit: 5 });
        assert!(matches!(FtpError::from_io(&io), Some(FtpError::ListingTooLarge { limit: 5 })));
        assert!(matches!(FtpError::from_io_owned(io, "x"), FtpError::ListingTooLarge { limit: 5 }));
        let foreign = io::Error::new(io::ErrorKind::BrokenPipe, "pipe");
        assert!(FtpError::from_io(&foreign).is_none());
        assert!(matches!(FtpError::from_io_owned(foreign, "upload"), FtpError::Io { .. }));
    }
}
