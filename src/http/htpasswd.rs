//! Proxy authentication against an Apache htpasswd file (`--users FILE`).
//!
//! Reads `USER:HASH` lines with bcrypt (`$2y$`, `$2b$`, `$2a$`), `{SHA}` (base64 SHA-1) or `$apr1$`
//! (Apache MD5-crypt) hashes, and checks `Proxy-Authorization: Basic` values (RFC 7617) against them.
//! Does not: read the file again when it changes, support crypt(3) DES, plain-text, `$1$`/`$5$`/`$6$`
//! entries (they are load errors naming the line), or render the 407 itself.
//!
//! What a check costs must not say whether a user exists, and must be bounded (issue 10):
//! - An unknown user is checked against a dummy entry of the most expensive scheme in the file (bcrypt at the
//!   highest cost there, else `$apr1$`, else `{SHA}`), and the verdict is then thrown away. A file whose entries
//!   all use one scheme and cost therefore answers an unknown user exactly as slowly as a wrong password.
//! - bcrypt (~50-250 ms by design) and `$apr1$` (1000 MD5 rounds) run on the bounded pool of
//!   [`auth::VerifyPool`]; `{SHA}` is one SHA-1 and runs inline. Secrets are compared in constant time.
//! - Successful bcrypt/`$apr1$` checks are cached (bounded, keyed by the user and a SHA-256 of the password), so
//!   a keep-alive client pays once. The cache is no oracle: a wrong password or an unknown user misses it the
//!   same way (the lookup is made for both), and a hit needs the right password. The failure delay of
//!   [`auth::Failures`] comes before the cache, so a delayed address can't test guesses against it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, PAD_INDIFFERENT};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::auth::{self, Admit, Busy, ClientKey, Guard, JobKey, Verdict};
use super::basic;

/// Successful bcrypt checks remembered, so a keep-alive connection pays bcrypt once.
pub const MAX_CACHED_LOGINS: usize = 1024;
// `{SHA}` entries: base64 of the digest, padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, PAD_INDIFFERENT);

/// The users of one htpasswd file.
pub struct Users {
    entries: HashMap<String, Arc<Stored>>,
    /// What an unknown user's password is checked against: the most expensive scheme in the file.
    dummy: Arc<Stored>,
    /// (user, SHA-256 of the password) pairs that bcrypt or `$apr1$` already accepted.
    cache: Mutex<HashSet<(String, [u8; 32])>>,
    /// Tells this file's checks from another's in the shared pool.
    id: u64,
    guard: Arc<Guard>,
}

/// The verdict on a `Proxy-Authorization` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// Missing user-id/password, wrong password or unknown user: 407.
    Rejected,
    /// The address failed too often and another attempt of it holds the next turn: 407 without a check.
    Throttled {
        retry_after: Duration,
    },
    /// The verification queue (or this address's share of it) is full: 503.
    Busy(Busy),
}

#[derive(Clone)]
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
    /// Reads and validates an htpasswd file; every entry is checked now, not at the first login. Checks run on a
    /// pool of its own with the default limits; [`Users::load_with`] shares one.
    pub fn load(path: &Path) -> Result<Users, LoadError> {
        Users::load_with(path, Arc::new(Guard::new(default_limits())))
    }

    /// Like [`Users::load`], with the process's verification pool and failure record.
    pub fn load_with(path: &Path, guard: Arc<Guard>) -> Result<Users, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError {
            path: path.to_owned(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Users::parse_bytes(&bytes, guard).map_err(|mut e| {
            e.path = path.to_owned();
            e
        })
    }

    /// Parses htpasswd text (the errors carry no path).
    pub fn parse(text: &str) -> Result<Users, LoadError> {
        Users::parse_bytes(text.as_bytes(), Arc::new(Guard::new(default_limits())))
    }

    pub(crate) fn parse_bytes(bytes: &[u8], guard: Arc<Guard>) -> Result<Users, LoadError> {
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
            entries.insert(user.to_owned(), Arc::new(stored));
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let dummy = Arc::new(Stored::dummy_for(entries.values().map(|s| &**s)));
        Ok(Users {
            entries,
            dummy,
            cache: Mutex::new(HashSet::new()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            guard,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the file has an entry for `user` (for the config check of rules naming users; never on a request,
    /// where an unknown user must cost what a known one does).
    pub fn has_user(&self, user: &str) -> bool {
        self.entries.contains_key(user)
    }

    /// Checks a `Proxy-Authorization` value from `client`: the failure delay first, then the cache, then the
    /// check itself (bcrypt and `$apr1$` on the pool). Values that are no Basic credentials ([`basic::decode`]:
    /// another scheme, bad base64, no colon, not UTF-8) are `Rejected` without a check and do not count as
    /// failures.
    pub async fn check_basic(&self, value: &HeaderValue, client: IpAddr) -> Outcome {
        let Some((user, password)) = basic::decode(value) else {
            return Outcome::Rejected;
        };
        let who = ClientKey::of(client);
        let failures = &self.guard.failures;
        let failed_before = match failures.admit(who, Instant::now()) {
            Admit::Now { failures } => failures,
            Admit::After { wait, failures } => {
                tracing::info!(
                    "proxy auth: {who} failed {failures} times: its credentials are checked in {} ms",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                failures
            }
            Admit::Refused { retry_after } => return Outcome::Throttled { retry_after },
        };
        match self.verify(who, failed_before, user, password).await {
            Ok(true) => {
                failures.succeeded(who);
                Outcome::Accepted
            }
            Ok(false) => {
                failures.failed(who, Instant::now());
                Outcome::Rejected
            }
            Err(busy) => Outcome::Busy(busy),
        }
    }

    /// One check, the same work whether the user exists or not.
    async fn verify(&self, who: ClientKey, failed: u32, user: String, password: String) -> Result<bool, Busy> {
        let (stored, known) = match self.entries.get(&user) {
            Some(s) => (s.clone(), true),
            None => (self.dummy.clone(), false),
        };
        if !stored.is_expensive() {
            return Ok(stored.matches(&password) & known);
        }
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (user, digest);
        if self.cached(&key) {
            return Ok(true);
        }
        let job = JobKey { file: self.id, user: key.0.clone(), password: digest };
        let work = Box::new(move || std::hint::black_box(stored.matches(&password)) & known);
        let ok = match self.guard.pool.submit(who, failed, job, work)?.await {
            Ok(Verdict::Checked(ok)) => ok,
            Ok(Verdict::Shed) => return Err(Busy::Queue { max_queued: self.guard.pool.limits().max_queued }),
            // No verdict: the check panicked; refuse.
            Err(_) => false,
        };
        if ok {
            self.remember(key);
        }
        Ok(ok)
    }

    /// Like [`Users::check_basic`], but on the calling thread, with neither pool nor delay: for the fuzz targets,
    /// which run every check synchronously.
    pub fn check_basic_blocking(&self, value: &HeaderValue) -> bool {
        basic::decode(value).is_some_and(|(user, password)| self.check(&user, &password))
    }

    /// Checks one user's password on the calling thread (with the cache; an unknown user costs the same).
    pub fn check(&self, user: &str, password: &str) -> bool {
        let (stored, known) = match self.entries.get(user) {
            Some(s) => (s, true),
            None => (&self.dummy, false),
        };
        if !stored.is_expensive() {
            return stored.matches(password) & known;
        }
        let key = (user.to_owned(), Sha256::digest(password.as_bytes()).into());
        if self.cached(&key) {
            return true;
        }
        let ok = std::hint::black_box(stored.matches(password)) & known;
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

/// Pool limits for files loaded without a shared [`Guard`] (tests, tools).
fn default_limits() -> auth::AuthLimits {
    auth::AuthLimits { max_verifying: 1, max_queued: 32 }
}

impl Stored {
    /// The entry an unknown user is checked against: the most expensive scheme in the file (bcrypt at its highest
    /// cost, then `$apr1$`, then `{SHA}`), with a salt and hash that match no password anyone knows.
    fn dummy_for<'a>(entries: impl Iterator<Item = &'a Stored>) -> Stored {
        let mut dummy = Stored::Sha1([0x5a; 20]);
        for s in entries {
            if s.cost_rank() > dummy.cost_rank() {
                dummy = match s {
                    Stored::Bcrypt(hash) => {
                        // A cost-4 hash (cheap to make) with the cost field raised: bcrypt::verify then runs the
                        // full cost with its salt. `hash` parsed at load, so the cost is two digits.
                        let cost = &hash[4..6];
                        let cheap = bcrypt::hash_with_salt("hopgate unknown user", 4, [0x5a; 16])
                            .map(|h| h.format_for_version(bcrypt::Version::TwoB));
                        match cheap {
                            Ok(h) => Stored::Bcrypt(format!("$2b${cost}{}", &h[6..])),
                            Err(_) => Stored::Bcrypt(hash.clone()),
                        }
                    }
                    Stored::Apr1 { .. } => {
                        Stored::Apr1 { salt: "hopgate.".into(), hash: "0000000000000000000000".into() }
                    }
                    Stored::Sha1(_) => Stored::Sha1([0x5a; 20]),
                };
            }
        }
        dummy
    }

    /// Orders schemes by what a check costs: `{SHA}` 0, `$apr1$` 1, bcrypt 2 + its cost.
    fn cost_rank(&self) -> u32 {
        match self {
            Stored::Sha1(_) => 0,
            Stored::Apr1 { .. } => 1,
            Stored::Bcrypt(hash) => 2 + hash.parse::<bcrypt::HashParts>().map_or(0, |p| p.get_cost()),
        }
    }

    /// Whether a check goes to the pool (bcrypt, `$apr1$`) rather than running inline (`{SHA}`).
    fn is_expensive(&self) -> bool {
        !matches!(self, Stored::Sha1(_))
    }

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

    /// Whether `password` matches; the digests are compared in constant time.
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
        let (user, pass) = user_pass.split_once(':').unwrap();
        basic::encode(user, pass)
    }

    /// One check through [`Users::check_basic`], from an address of its own (so no failure delay applies).
    async fn accepts(users: &Users, user_pass: &str) -> bool {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let client = IpAddr::from((10u32 << 24 | n).to_be_bytes());
        users.check_basic(&basic(user_pass), client).await == Outcome::Accepted
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

    #[tokio::test]
    async fn sha_and_apr1_entries_check() {
        // {SHA} of "password" is the well-known W6ph5Mm5Pz8GgiULbPgzG37mj9g=.
        let users = Users::parse(
            "# comment\n\nann:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\r\nbob:$apr1$r31d7e0a$kq0BxQSVDtuX2rA1fpVu./\n",
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert!(accepts(&users, "ann:password").await);
        assert!(!accepts(&users, "ann:passwore").await);
        assert!(accepts(&users, "bob:myPassword").await);
        assert!(!accepts(&users, "bob:mypassword").await);
        assert!(!accepts(&users, "carol:password").await);
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

    #[tokio::test]
    async fn unknown_users_are_checked_against_the_most_expensive_scheme() {
        let b5 = bcrypt::hash("x", 5).unwrap();
        let b6 = bcrypt::hash("y", 6).unwrap();
        let sha = "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=";
        let apr = "$apr1$r31d7e0a$kq0BxQSVDtuX2rA1fpVu./";
        let cases = [
            (format!("a:{sha}\n"), "sha"),
            (format!("a:{sha}\nb:{apr}\n"), "apr1"),
            (format!("a:{b6}\nb:{apr}\nc:{b5}\nd:{sha}\n"), "$2b$06$"),
            (format!("a:{b5}\n"), "$2b$05$"),
            (String::new(), "sha"),
        ];
        for (text, want) in cases {
            let users = Users::parse(&text).unwrap();
            let got = match &*users.dummy {
                Stored::Bcrypt(h) => {
                    assert_eq!(h.len(), 60, "{h}");
                    // A real check of the full cost, not an early parse error.
                    assert!(!bcrypt::verify("x", h).unwrap());
                    h[..7].to_string()
                }
                Stored::Apr1 { .. } => "apr1".into(),
                Stored::Sha1(_) => "sha".into(),
            };
            assert_eq!(got, want, "{text}");
            // Its verdict is thrown away, but no password of a real user matches it anyway.
            for password in ["x", "y", "password", "myPassword", ""] {
                assert!(!users.dummy.matches(password));
                assert!(!accepts(&users, &format!("nobody:{password}")).await);
            }
        }
    }

    #[tokio::test]
    async fn wrong_and_unknown_count_as_failures_malformed_does_not() {
        let users = Users::parse(&format!("ann:{}\n", bcrypt::hash("s3cret", 4).unwrap())).unwrap();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let failures = &users.guard.failures;
        assert_eq!(users.check_basic(&HeaderValue::from_static("Basic !!"), client).await, Outcome::Rejected);
        assert!(failures.is_empty());
        assert_eq!(users.check_basic(&basic("nobody:s3cret"), client).await, Outcome::Rejected);
        assert_eq!(users.check_basic(&basic("ann:wrong"), client).await, Outcome::Rejected);
        assert_eq!(failures.len(), 1);
        assert_eq!(users.check_basic(&basic("ann:s3cret"), client).await, Outcome::Accepted);
        assert!(failures.is_empty(), "a success clears the address");
        // Past the threshold, a second attempt while one holds the turn is refused without a check.
        for _ in 0..auth::FAILURES_BEFORE_DELAY {
            assert_eq!(users.check_basic(&basic("ann:wrong"), client).await, Outcome::Rejected);
        }
        let now = Instant::now();
        assert!(matches!(failures.admit(ClientKey::of(client), now), Admit::After { .. }));
        assert!(matches!(
            users.check_basic(&basic("ann:s3cret"), client).await,
            Outcome::Throttled { retry_after } if retry_after > Duration::ZERO
        ));
    }

    #[tokio::test]
    async fn bcrypt_successes_are_cached_and_bounded() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Users::parse(&format!("ann:{hash}\n")).unwrap();
        assert!(!accepts(&users, "ann:wrong").await);
        assert_eq!(users.cache_len(), 0, "failures are not cached");
        assert!(accepts(&users, "ann:s3cret").await);
        assert!(accepts(&users, "ann:s3cret").await);
        assert_eq!(users.cache_len(), 1);
        for i in 0..MAX_CACHED_LOGINS + 10 {
            users.remember((format!("u{i}"), [0; 32]));
        }
        assert_eq!(users.cache_len(), MAX_CACHED_LOGINS);
    }
}
