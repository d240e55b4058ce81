//! Proxy authentication against an Apache htpasswd file (`--users FILE`).
//!
//! Reads `USER:HASH` lines with bcrypt (`$2y$`, `$2b$`, `$2a$`), `{SHA}` (base64 SHA-1) or `$apr1$`
//! (Apache MD5-crypt) hashes, and checks `Proxy-Authorization: Basic` values (RFC 7617) against them.
//! Does not: read the file again when it changes, support crypt(3) DES, plain-text, `$1$`/`$5$`/`$6$`
//! entries (they are load errors naming the line), or render the 407 itself.
//!
//! bcrypt costs ~50-100 ms by design, so successful bcrypt checks are cached (bounded, keyed by the
//! user and a SHA-256 of the password) and [`Users::check_basic`] runs bcrypt on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, PAD_INDIFFERENT};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Successful bcrypt checks remembered, so a keep-alive connection pays bcrypt once.
pub const MAX_CACHED_LOGINS: usize = 1024;
/// bcrypt checks running at once in [`Users::check_basic`]: wrong passwords are never cached,
/// so this bounds the CPU a flood of bad credentials can take.
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// A `Proxy-Authorization` value longer than this is refused without decoding it.
pub const MAX_CREDENTIALS_BYTES: usize = 4096;

// RFC 7617 §2: senders pad, but some clients drop the `=`; accept both.
const BASE64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, PAD_INDIFFERENT);

/// The users of one htpasswd file.
pub struct Users {
    entries: HashMap<String, Stored>,
    /// (user, SHA-256 of the password) pairs that bcrypt already accepted.
    cache: Mutex<HashSet<(String, [u8; 32])>>,
    bcrypt_slots: tokio::sync::Semaphore,
}

enum Stored {
    /// The whole `$2y$...` string, as `bcrypt::verify` wants it.
    Bcrypt(String),
    /// `{SHA}`: the raw SHA-1 digest.
    Sha1([u8; 20]),
    /// `$apr1$SALT$HASH`: salt (at most 8 bytes) and the 22-character encoded hash.
    Apr1 { salt: String, hash: String },
}

/// Why a file could not be used: `FILE:LINE: reason` (line 0: the file itself).
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.as_os_str().is_empty(), self.line) {
            (false, 0) => write!(f, "{}: {}", self.path.display(), self.reason),
            (false, n) => write!(f, "{}:{}: {}", self.path.display(), n, self.reason),
            (true, n) => write!(f, "line {}: {}", n, self.reason),
        }
    }
}

impl std::error::Error for LoadError {}

impl fmt::Debug for Users {
    // Hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users").field("count", &self.entries.len()).finish_non_exhaustive()
    }
}

impl Users {
    /// Reads and validates an htpasswd file; every entry is checked now, not at the first login.
    pub fn load(path: &Path) -> Result<Users, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError {
            path: path.to_owned(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Users::parse_bytes(&bytes).map_err(|mut e| {
            e.path = path.to_owned();
            e
        })
    }

    /// Parses htpasswd text (the errors carry no path).
    pub fn parse(text: &str) -> Result<Users, LoadError> {
        Users::parse_bytes(text.as_bytes())
    }

    pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<Users, LoadError> {
        let mut entries = HashMap::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let fail = |reason: String| LoadError { path: PathBuf::new(), line, reason };
            let text = std::str::from_utf8(raw).map_err(|_| fail("not UTF-8".into()))?;
            let text = text.trim_end_matches(['\r', ' ', '\t']);
            if text.trim_start().is_empty() || text.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, hash)) = text.split_once(':') else {
                return Err(fail("expected USER:HASH".into()));
            };
            if user.is_empty() {
                return Err(fail("empty user name".into()));
            }
            let stored = Stored::parse(hash).map_err(|reason| fail(format!("user {user:?}: {reason}")))?;
            if let Some(previous) = first_seen.insert(user.to_owned(), line) {
                return Err(fail(format!("user {user:?} is already defined on line {previous}")));
            }
            entries.insert(user.to_owned(), stored);
        }
        Ok(Users {
            entries,
            cache: Mutex::new(HashSet::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_BCRYPT),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a `Proxy-Authorization` value; bcrypt runs on tokio's blocking pool.
    /// Malformed values (other scheme, bad base64, no colon, not UTF-8) are simply `false`.
    pub async fn check_basic(&self, value: &HeaderValue) -> bool {
        let Some((user, password)) = parse_basic(value) else {
            return false;
        };
        let Some(stored) = self.entries.get(&user) else {
            return false;
        };
        let Stored::Bcrypt(hash) = stored else {
            return stored.matches(&password);
        };
        let key = (user, Sha256::digest(password.as_bytes()).into());
        if self.cached(&key) {
            return true;
        }
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let hash = hash.clone();
        let job = tokio::task::spawn_blocking(move || bcrypt::verify(password.as_bytes(), &hash));
        let ok = matches!(job.await, Ok(Ok(true)));
        if ok {
            self.remember(key);
        }
        ok
    }

    /// Like [`Users::check_basic`], but runs bcrypt on the calling thread.
    pub fn check_basic_blocking(&self, value: &HeaderValue) -> bool {
        parse_basic(value).is_some_and(|(user, password)| self.check(&user, &password))
    }

    /// Checks one user's password on the calling thread (bcrypt included, with the cache).
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(stored) = self.entries.get(user) else {
            return false;
        };
        let Stored::Bcrypt(hash) = stored else {
            return stored.matches(password);
        };
        let key = (user.to_owned(), Sha256::digest(password.as_bytes()).into());
        if self.cached(&key) {
            return true;
        }
        let ok = matches!(bcrypt::verify(password.as_bytes(), hash), Ok(true));
        if ok {
            self.remember(key);
        }
        ok
    }

    fn cached(&self, key: &(String, [u8; 32])) -> bool {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }

    fn remember(&self, key: (String, [u8; 32])) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_LOGINS {
            // Evict an arbitrary entry (RandomState order): the bound matters, not recency.
            if let Some(victim) = cache.iter().next().cloned() {
                cache.remove(&victim);
            }
        }
        cache.insert(key);
    }

    #[cfg(test)]
    fn cache_len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Stored {
    fn parse(hash: &str) -> Result<Stored, String> {
        if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
            hash.parse::<bcrypt::HashParts>().map_err(|e| format!("bad bcrypt hash: {e}"))?;
            Ok(Stored::Bcrypt(hash.to_owned()))
        } else if let Some(b64) = hash.strip_prefix("{SHA}") {
            let digest = BASE64.decode(b64).ok().and_then(|d| <[u8; 20]>::try_from(d).ok());
            digest.map(Stored::Sha1).ok_or_else(|| "bad {SHA} hash: expected base64 of 20 bytes".into())
        } else if let Some(rest) = hash.strip_prefix("$apr1$") {
            let bad = || "bad $apr1$ hash: expected $apr1$SALT$HASH".to_string();
            let (salt, encoded) = rest.split_once('$').ok_or_else(bad)?;
            let crypt64 = |s: &str| s.bytes().all(|b| ITOA64.contains(&b));
            if salt.is_empty() || salt.len() > 8 || !crypt64(salt) || encoded.len() != 22 || !crypt64(encoded) {
                return Err(bad());
            }
            Ok(Stored::Apr1 { salt: salt.to_owned(), hash: encoded.to_owned() })
        } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
            Err("crypt(3) MD5/SHA-2 hashes are not supported; use htpasswd -B (bcrypt)".into())
        } else {
            Err("unsupported hash (crypt(3) DES or plain text?); use htpasswd -B (bcrypt)".into())
        }
    }

    /// Non-bcrypt formats: cheap, compared in constant time.
    fn matches(&self, password: &str) -> bool {
        match self {
            Stored::Bcrypt(hash) => matches!(bcrypt::verify(password.as_bytes(), hash), Ok(true)),
            Stored::Sha1(digest) => Sha1::digest(password.as_bytes()).as_slice().ct_eq(digest).into(),
            Stored::Apr1 { salt, hash } => {
                apr1_encode(password.as_bytes(), salt.as_bytes()).as_bytes().ct_eq(hash.as_bytes()).into()
            }
        }
    }
}

/// `Basic TOKEN` -> (user, password). RFC 7617 §2: the scheme is case-insensitive, the user-id
/// ends at the first colon, the password may contain colons.
pub(crate) fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let bytes = value.as_bytes().trim_ascii();
    if bytes.len() > MAX_CREDENTIALS_BYTES {
        return None;
    }
    let split = bytes.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, token) = bytes.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = BASE64.decode(token.trim_ascii()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's MD5-crypt (`$apr1$`): Poul-Henning Kamp's FreeBSD MD5-crypt with the magic `$apr1$`
/// (apr_md5_encode in APR's crypto/apr_md5.c). Returns the 22-character hash part.
fn apr1_encode(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);

    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alternate[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    // The "weird" step of the original: a bit walk over the length, adding NUL or the first byte.
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest: [u8; 16] = ctx.finalize().into();

    // 1000 rounds, to slow down brute force (as of 1995).
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize().into();
    }

    let mut out = String::with_capacity(22);
    let mut push = |value: u32, chars: usize| {
        let mut v = value;
        for _ in 0..chars {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    push(d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Basic {}", BASE64.encode(user_pass))).unwrap()
    }

    #[test]
    fn apr1_matches_openssl_and_htpasswd_vectors() {
        // From `openssl passwd -apr1 -salt SALT PASSWORD` and `htpasswd -nbm u myPassword`.
        assert_eq!(apr1_encode(b"myPassword", b"r31d7e0a"), "kq0BxQSVDtuX2rA1fpVu./");
        assert_eq!(apr1_encode(b"", b"abcdefgh"), "L.PT565ESX4Tp2bqNs7Ie.");
        assert_eq!(
            apr1_encode("pässwörd-with-a-very-long-tail-beyond-sixteen-bytes".as_bytes(), b"x"),
            "QW36Ud4b34DlUhVbCPKY5."
        );
        assert_eq!(apr1_encode(b"myPassword", b"b8as3GdV"), "wNRC5ixPzAx1HN6rWVIW30");
    }

    #[test]
    fn sha_and_apr1_entries_check() {
        // {SHA} of "password" is the well-known W6ph5Mm5Pz8GgiULbPgzG37mj9g=.
        let users = Users::parse(
            "# comment\n\nann:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\r\nbob:$apr1$r31d7e0a$kq0BxQSVDtuX2rA1fpVu./\n",
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.check_basic_blocking(&basic("ann:password")));
        assert!(!users.check_basic_blocking(&basic("ann:passwore")));
        assert!(users.check_basic_blocking(&basic("bob:myPassword")));
        assert!(!users.check_basic_blocking(&basic("bob:mypassword")));
        assert!(!users.check_basic_blocking(&basic("carol:password")));
    }

    #[test]
    fn malformed_credentials_are_false_not_panics() {
        let users = Users::parse("ann:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
        let ok = |s: &[u8]| users.check_basic_blocking(&HeaderValue::from_bytes(s).unwrap());
        assert!(ok(b"bAsIc YW5uOnBhc3N3b3Jk"), "scheme is case-insensitive");
        assert!(ok(b"Basic   YW5uOnBhc3N3b3Jk  "), "extra spaces are tolerated");
        assert!(ok(b"Basic YW5uOnBhc3N3b3Jk"));
        for bad in [
            &b"Basic"[..],
            b"Basic ",
            b"Bearer YW5uOnBhc3N3b3Jk",
            b"BasicYW5uOnBhc3N3b3Jk",
            b"Basic !!!!",
            b"Basic YW5u", // "ann": no colon
            b"Basic /w==", // 0xff: not UTF-8
            b"Basic YW5uOnBhc3N3b3Jk===",
            b"Basic \xff\xfe",
            b"",
        ] {
            assert!(!ok(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("Basic {}", "A".repeat(MAX_CREDENTIALS_BYTES));
        assert!(!ok(long.as_bytes()));
    }

    #[test]
    fn load_errors_name_the_line() {
        let cases = [
            ("ann:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nbob:abJnggxhB/yWI\n", 2, "unsupported"),
            ("ann:plainpassword\n", 1, "unsupported"),
            ("\n\nann:$1$abc$defghijklmnopqrstuvwxy\n", 3, "crypt(3) MD5"),
            ("ann:$6$salt$hash\n", 1, "crypt(3)"),
            ("ann\n", 1, "USER:HASH"),
            (":{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", 1, "empty user"),
            ("ann:{SHA}abc\n", 1, "{SHA}"),
            ("ann:$apr1$toolongsalt$kq0BxQSVDtuX2rA1fpVu./\n", 1, "$apr1$"),
            ("ann:$2y$10$short\n", 1, "bcrypt"),
            ("a:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\na:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", 2, "line 1"),
        ];
        for (text, line, needle) in cases {
            let err = Users::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.reason.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn bcrypt_successes_are_cached_and_bounded() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Users::parse(&format!("ann:{hash}\n")).unwrap();
        assert!(!users.check("ann", "wrong"));
        assert_eq!(users.cache_len(), 0, "failures are not cached");
        assert!(users.check("ann", "s3cret"));
        assert!(users.check("ann", "s3cret"));
        assert_eq!(users.cache_len(), 1);
        for i in 0..MAX_CACHED_LOGINS + 10 {
            users.remember((format!("u{i}"), [0; 32]));
        }
        assert_eq!(users.cache_len(), MAX_CACHED_LOGINS);
    }
}
