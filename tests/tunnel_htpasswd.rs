//! htpasswd files written by Apache's own `htpasswd` (Debian package apache2-utils).

mod support;

use hopgate::http::basic::encode as basic;
use hopgate::http::htpasswd::{Outcome, Users};
use support::peers::htpasswd;

#[tokio::test]
async fn apache_htpasswd_formats_verify() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    htpasswd(&file, &["-B", "-C", "5"], "bcrypt", "b-pass:with:colons");
    htpasswd(&file, &["-s"], "sha", "s-pass");
    htpasswd(&file, &["-m"], "apr1", "m-pässword");
    htpasswd(&file, &["-B", "-C", "5"], "empty", "");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("bcrypt:$2y$05$") && text.contains("sha:{SHA}") && text.contains("apr1:$apr1$"), "{text}");

    let users = Users::load(&file).unwrap();
    assert_eq!(users.len(), 4);
    let client = "127.0.0.1".parse().unwrap();
    for (user, pass) in [("bcrypt", "b-pass:with:colons"), ("sha", "s-pass"), ("apr1", "m-pässword"), ("empty", "")] {
        assert_eq!(users.check_basic(&basic(user, pass), client).await, Outcome::Accepted, "{user} accepted");
        assert_eq!(users.check_basic(&basic(user, pass), client).await, Outcome::Accepted, "{user} twice (cache)");
        assert_eq!(users.check_basic(&basic(user, "nope"), client).await, Outcome::Rejected, "{user} wrong password");
    }
    assert_eq!(users.check_basic(&basic("nobody", "s-pass"), client).await, Outcome::Rejected);
}

#[test]
fn crypt_and_plain_entries_are_load_errors_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    htpasswd(&file, &["-s"], "fine", "x");
    htpasswd(&file, &["-d"], "des", "y"); // crypt(3) DES
    let err = Users::load(&file).unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.to_string().starts_with(&format!("{}:2: user \"des\"", file.display())), "{err}");

    let plain = dir.path().join("plain");
    htpasswd(&plain, &["-p"], "plain", "secret");
    let err = Users::load(&plain).unwrap_err();
    assert_eq!(err.line, 1, "{err}");

    let err = Users::load(&dir.path().join("missing")).unwrap_err();
    assert_eq!(err.line, 0);
    assert!(err.to_string().contains("cannot read"), "{err}");
}
