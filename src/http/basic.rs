//! HTTP Basic credentials (RFC 7617), written and read in this one place: the `Proxy-Authorization` hopgate sends
//! to a parent proxy and, as `hopgate tunnel`, to a proxy; the `Proxy-Authorization` a users file checks
//! (htpasswd.rs) and the `Authorization` an FTP gateway logs in with.
//!
//! Every value hopgate reads is read with one strictness:
//! - `credentials = auth-scheme 1*SP token68` (RFC 9110 §11.4): the scheme `Basic` in any case, then one or more
//!   spaces (a tab is no separator); whitespace around the whole value belongs to the field and is ignored;
//! - the token is base64 in the standard alphabet (RFC 4648 §4; `-` and `_` of the URL-safe one are errors), its
//!   `=` padding optional (RFC 7617 §2 has senders pad, some clients don't), never more padding than fits;
//! - the decoded `user-id:password` is UTF-8 (the charset RFC 7617 §2.1 names; hopgate reads no other);
//! - the user-id ends at the first colon and the password may contain colons; no colon: no credentials;
//! - a value longer than [`MAX_CREDENTIALS_BYTES`] is refused without decoding it.
//!
//! Anything else is no credentials (`None`): a proxy then answers 407, an FTP gateway logs in anonymously.
//! Does not: read other schemes, or a `charset` parameter.

use ::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT as BASE64;

/// A Basic value longer than this is refused without decoding it.
pub const MAX_CREDENTIALS_BYTES: usize = 4096;

/// `Basic base64(user:pass)`, padded, marked sensitive (kept out of Debug output, as hyper-util does for the
/// credentials it adds). The user-id must not contain a colon (RFC 7617 §2): the caller's to ensure.
pub fn encode(user: &str, pass: &str) -> HeaderValue {
    let value = format!("Basic {}", BASE64.encode(format!("{user}:{pass}")));
    // "Basic " and the base64 alphabet are visible ASCII: always a valid field value.
    let mut value = HeaderValue::try_from(value).expect("base64 is a valid field value");
    value.set_sensitive(true);
    value
}

/// The user-id and password of a Basic value, or `None` when it is not one (see the module doc for the rules).
pub fn decode(value: &HeaderValue) -> Option<(String, String)> {
    let bytes = value.as_bytes().trim_ascii();
    if bytes.len() > MAX_CREDENTIALS_BYTES {
        return None;
    }
    let space = bytes.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = bytes.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    // `1*SP`: spaces only; a tab after them is no base64 and fails below.
    let token = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
    let text = String::from_utf8(BASE64.decode(token).ok()?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: &[u8]) -> Option<(String, String)> {
        decode(&HeaderValue::from_bytes(value).unwrap())
    }

    fn pair(user: &str, pass: &str) -> Option<(String, String)> {
        Some((user.to_owned(), pass.to_owned()))
    }

    #[test]
    fn encoded_values_are_padded_sensitive_and_read_back() {
        let value = encode("Aladdin", "open sesame");
        assert_eq!(value, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("QWxh"), "{value:?}");
        for (user, pass) in [("ann", "pa:ss"), ("", ""), ("jürgen", "pässwörd"), ("a", "\r\nX: y")] {
            assert_eq!(decode(&encode(user, pass)), pair(user, pass), "{user:?} {pass:?}");
        }
    }

    #[test]
    fn one_strictness_for_every_value_read() {
        // "ann:password", padded and not, scheme in any case, one or more spaces, the field's own whitespace
        assert_eq!(read(b"Basic YW5uOnBhc3N3b3Jk"), pair("ann", "password"));
        assert_eq!(read(b"bAsIc YW5uOnBhc3N3b3Jk"), pair("ann", "password"));
        assert_eq!(read(b"Basic   YW5uOnBhc3N3b3Jk  "), pair("ann", "password"));
        assert_eq!(read(b" Basic YW5uOnBhc3N3b3Jk\t"), pair("ann", "password"));
        assert_eq!(read(b"Basic Ym9iOnA="), pair("bob", "p"));
        assert_eq!(read(b"Basic Ym9iOnA"), pair("bob", "p"), "padding may be left out");
        // the user-id ends at the first colon; the password keeps the rest
        assert_eq!(read(b"Basic Ym9iOnA6dw=="), pair("bob", "p:w"));
        assert_eq!(read(b"Basic OnA="), pair("", "p"));
        for bad in [
            &b"Basic"[..],
            b"Basic ",
            b"Basic\tYW5uOnBhc3N3b3Jk", // a tab is no separator
            b"Basic \tYW5uOnBhc3N3b3Jk",
            b"Bearer YW5uOnBhc3N3b3Jk",
            b"BasicYW5uOnBhc3N3b3Jk",
            b"Basic !!!!",
            b"Basic YW5u",                  // "ann": no colon
            b"Basic /w==",                  // 0xff: not UTF-8
            b"Basic YW5uOnBhc3N3b3Jk===",   // more padding than fits
            b"Basic YW5uOnBhc3N3b3Jk YW5u", // two tokens
            b"Basic Pz8_Pz8-",              // the URL-safe alphabet
            b"Basic \xff\xfe",
            b"",
        ] {
            assert_eq!(read(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("Basic {}", "A".repeat(MAX_CREDENTIALS_BYTES));
        assert_eq!(read(long.as_bytes()), None);
    }
}
