//! FTP replies (RFC 959 §4.2) and the values some of them carry: PASV (RFC 959 §4.1.2), EPSV
//! (RFC 2428 §3), SIZE and MDTM (RFC 3659 §4, §3), PWD's 257 (RFC 959 appendix II), FEAT
//! (RFC 2389). Pure functions over bytes, tested without sockets.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use crate::date;

/// A reply larger than this (all its lines) breaks the control connection: no FTP reply we ask
/// for (FEAT, MLST, banners) comes near it.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// A multi-line reply with more lines than this breaks the control connection.
pub const MAX_REPLY_LINES: usize = 1024;

/// One complete reply: its code and every line without the line end (codes included, so that
/// `text()` is what the server said).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `1`..`5`: preliminary, completion, intermediate, transient and permanent negative.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// All lines joined with `\n`, codes included: `550 Failed to open file.`
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The last line after its code: `Failed to open file.`
    pub fn message(&self) -> &str {
        self.lines.last().and_then(|l| l.get(4..)).unwrap_or("").trim()
    }
}

/// Why bytes on the control connection are not a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyError {
    TooLarge,
    Malformed(String),
}

/// Parses one reply from the start of `buf`: `Ok(Some((reply, bytes_used)))`, `Ok(None)` when
/// more bytes are needed. Lines end with CRLF (a bare LF is accepted). A multi-line reply runs
/// from `123-first` to the first line that starts with the same code and a space (RFC 959 §4.2);
/// lines in between may say anything.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut lines = Vec::new();
    let mut code = 0u16;
    let mut code_bytes = [0u8; 3];
    while let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') {
        let end = pos + nl + 1;
        let raw = &buf[pos..pos + nl];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if end > MAX_REPLY_BYTES || lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooLarge);
        }
        let line = String::from_utf8_lossy(raw).into_owned();
        if lines.is_empty() {
            code = first_line_code(raw).ok_or_else(|| ReplyError::Malformed(truncate(&line)))?;
            code_bytes.copy_from_slice(&raw[..3]);
            let single = raw.get(3) != Some(&b'-');
            lines.push(line);
            if single {
                return Ok(Some((Reply { code, lines }, end)));
            }
        } else {
            let last = raw.len() >= 3 && raw[..3] == code_bytes && matches!(raw.get(3), None | Some(b' '));
            lines.push(line);
            if last {
                return Ok(Some((Reply { code, lines }, end)));
            }
        }
        pos = end;
    }
    if buf.len() > MAX_REPLY_BYTES {
        return Err(ReplyError::TooLarge);
    }
    Ok(None)
}

/// `xyz`, then a space, a hyphen or the end of the line; `x` in 1..=5.
fn first_line_code(raw: &[u8]) -> Option<u16> {
    let digits = raw.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&digits[0]) {
        return None;
    }
    if !matches!(raw.get(3), None | Some(b' ') | Some(b'-')) {
        return None;
    }
    Some(digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

fn truncate(line: &str) -> String {
    line.chars().take(80).collect()
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`: the address the server names and the port.
/// The caller uses only the port and connects to the control connection's peer (RFC 2577 §3,
/// FTP bounce). Some servers omit the parentheses; the first six comma-separated numbers count.
pub fn parse_pasv(reply: &Reply) -> Option<(Ipv4Addr, u16)> {
    let text = reply.lines.first()?.get(4..)?;
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let nums: Vec<u8> = text[start..]
        .split(|c: char| !c.is_ascii_digit() && c != ',')
        .next()?
        .split(',')
        .map(|n| n.parse::<u8>().ok())
        .collect::<Option<Vec<u8>>>()?;
    if nums.len() != 6 {
        return None;
    }
    let port = u16::from(nums[4]) << 8 | u16::from(nums[5]);
    (port != 0).then(|| (Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]), port))
}

/// `229 Entering Extended Passive Mode (|||6446|)`: the port. The delimiter is whatever
/// character follows `(` (RFC 2428 §3); the net-prt and address fields must be empty.
pub fn parse_epsv(reply: &Reply) -> Option<u16> {
    let text = reply.lines.first()?;
    let inner = &text[text.find('(')? + 1..];
    let inner = &inner[..inner.find(')')?];
    let delim = inner.chars().next()?;
    if delim.is_ascii_digit() {
        return None;
    }
    let fields: Vec<&str> = inner.split(delim).collect();
    // "|||6446|" splits into ["", "", "", "6446", ""]
    if fields.len() != 5 || !fields[0].is_empty() || !fields[4].is_empty() {
        return None;
    }
    if !fields[1].is_empty() || !fields[2].is_empty() {
        return None;
    }
    let port: u16 = fields[3].parse().ok()?;
    (port != 0).then_some(port)
}

/// `213 1234`: the size in bytes.
pub fn parse_size(reply: &Reply) -> Option<u64> {
    if reply.code != 213 {
        return None;
    }
    reply.message().parse().ok()
}

/// `213 YYYYMMDDHHMMSS[.sss]` (RFC 3659 §2.3, always UTC): the time, fractions dropped.
pub fn parse_mdtm(reply: &Reply) -> Option<SystemTime> {
    if reply.code != 213 {
        return None;
    }
    parse_time_val(reply.message())
}

/// RFC 3659 time-val `YYYYMMDDHHMMSS[.sss]`, also used by MLSD's `modify` fact.
pub fn parse_time_val(s: &str) -> Option<SystemTime> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    if whole.len() != 14
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.is_empty()
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| whole[r].parse::<u32>().ok();
    date::from_civil(i64::from(n(0..4)?), n(4..6)?, n(6..8)?, n(8..10)?, n(10..12)?, n(12..14)?)
}

/// `257 "/a ""quoted"" dir" is the current directory`: the path, `""` unescaped.
pub fn parse_pwd(reply: &Reply) -> Option<String> {
    let text = reply.lines.first()?.get(4..)?;
    let rest = &text[text.find('"')? + 1..];
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                out.push('"');
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// The feature lines of a `211-` FEAT reply (RFC 2389 §3.2): each starts with a space; the
/// result is upper-cased `NAME` or `NAME ARGS` lines, e.g. `REST STREAM`, `MLST TYPE*;SIZE*;`.
pub fn parse_feat(reply: &Reply) -> Vec<String> {
    if reply.code != 211 || reply.lines.len() < 2 {
        return Vec::new();
    }
    reply.lines[1..reply.lines.len() - 1]
        .iter()
        .map(|l| l.trim().to_ascii_uppercase())
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn one(s: &str) -> Reply {
        let (r, used) = parse_reply(s.as_bytes()).unwrap().unwrap();
        assert_eq!(used, s.len(), "{s:?}");
        r
    }

    #[test]
    fn single_and_multi_line_replies() {
        let r = one("220 Welcome\r\n");
        assert_eq!((r.code, r.message()), (220, "Welcome"));
        let r = one("200\r\n");
        assert_eq!((r.code, r.message()), (200, ""));
        let r = one("211-Features:\r\n EPSV\r\n211-not the end\r\n MDTM\r\n211 End\r\n");
        assert_eq!(r.code, 211);
        assert_eq!(r.lines.len(), 5);
        assert_eq!(parse_feat(&r), vec!["EPSV", "211-NOT THE END", "MDTM"]);
        // a line starting with another code does not end it; bare LF is accepted
        let r = one("230-hello\n220 not yet\n230 done\n");
        assert_eq!((r.code, r.lines.len()), (230, 3));
    }

    #[test]
    fn partial_and_pipelined_replies() {
        assert_eq!(parse_reply(b"").unwrap(), None);
        assert_eq!(parse_reply(b"220 Wel").unwrap(), None);
        assert_eq!(parse_reply(b"211-a\r\n b\r\n").unwrap(), None);
        let buf = b"150 ok\r\n226 done\r\n";
        let (r, used) = parse_reply(buf).unwrap().unwrap();
        assert_eq!((r.code, used), (150, 8));
        let (r, _) = parse_reply(&buf[used..]).unwrap().unwrap();
        assert_eq!(r.code, 226);
    }

    #[test]
    fn malformed_and_oversized_replies() {
        for bad in ["hello\r\n", "22 x\r\n", "220x\r\n", "620 x\r\n", "\r\n"] {
            assert!(matches!(parse_reply(bad.as_bytes()), Err(ReplyError::Malformed(_))));
        }
        let endless = format!("220-{}", "x".repeat(MAX_REPLY_BYTES + 1));
        assert_eq!(parse_reply(endless.as_bytes()), Err(ReplyError::TooLarge));
        let many = format!("220-a\r\n{}220 end\r\n", " l\r\n".repeat(MAX_REPLY_LINES));
        assert_eq!(parse_reply(many.as_bytes()), Err(ReplyError::TooLarge));
    }

    #[test]
    fn pasv_and_epsv() {
        let r = one("227 Entering Passive Mode (10,1,2,3,195,80).\r\n");
        assert_eq!(parse_pasv(&r), Some((Ipv4Addr::new(10, 1, 2, 3), 195 * 256 + 80)));
        let r = one("227 Entering Passive Mode 127,0,0,1,4,1\r\n");
        assert_eq!(parse_pasv(&r), Some((Ipv4Addr::LOCALHOST, 1025)));
        for bad in [
            "227 Entering Passive Mode (1,2,3,4,5)\r\n",
            "227 Entering Passive Mode (1,2,3,4,256,1)\r\n",
            "227 Entering Passive Mode (1,2,3,4,0,0)\r\n",
            "227 nothing\r\n",
        ] {
            assert_eq!(parse_pasv(&one(bad)), None, "{bad}");
        }
        let r = one("229 Entering Extended Passive Mode (|||6446|)\r\n");
        assert_eq!(parse_epsv(&r), Some(6446));
        let r = one("229 Extended (!!!21000!)\r\n");
        assert_eq!(parse_epsv(&r), Some(21000));
        for bad in [
            "229 (|1|127.0.0.1|6446|)\r\n",
            "229 (|||70000|)\r\n",
            "229 (|||0|)\r\n",
            "229 (||6446|)\r\n",
            "229 no parens\r\n",
        ] {
            assert_eq!(parse_epsv(&one(bad)), None, "{bad}");
        }
    }

    #[test]
    fn size_mdtm_pwd() {
        assert_eq!(parse_size(&one("213 8388608\r\n")), Some(8_388_608));
        assert_eq!(parse_size(&one("213 -1\r\n")), None);
        assert_eq!(parse_size(&one("550 nope\r\n")), None);
        let t = parse_mdtm(&one("213 20230131120005\r\n")).unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_675_166_405));
        let t = parse_mdtm(&one("213 20230131120005.123\r\n")).unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_675_166_405));
        for bad in
            ["213 2023013112000\r\n", "213 20231331120005\r\n", "213 20230131120005.\r\n", "213 1910131120005x\r\n"]
        {
            assert_eq!(parse_mdtm(&one(bad)), None, "{bad}");
        }
        let r = one("257 \"/a \"\"q\"\" dir\" is the current directory\r\n");
        assert_eq!(parse_pwd(&r).as_deref(), Some("/a \"q\" dir"));
        assert_eq!(parse_pwd(&one("257 \"/\"\r\n")).as_deref(), Some("/"));
        assert_eq!(parse_pwd(&one("257 \"/unterminated\r\n")), None);
    }
}
