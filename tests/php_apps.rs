//! Real PHP applications from Debian's packages, served the way a new user would (issue 15):
//! `hopgate gateway --to fastcgi+unix:SOCK --root APP_DIR --index ENTRY.php` in front of a real php-fpm, driven by
//! headless Chromium (every request of the first page, counted in hopgate's access log: no 404) and curl
//! (a login that sets a cookie the next page honours, a form post whose result shows, a file upload through the
//! application that arrives intact).
//! - DokuWiki (package dokuwiki) as installed: /usr/share/dokuwiki, whose templates and plugins are symlinks into
//!   /var/lib/dokuwiki (followed, as nginx and Apache do); php-fpm runs as www-data, which owns its state.
//! - Adminer (package adminer) on an SQLite database in a temp dir: an entry script of the test's own with
//!   Adminer's password-less login plugin includes /usr/share/adminer/adminer.php.
//!
//! `HOPGATE_SCREENSHOTS=DIR` keeps Chromium's screenshots there (docs/img/ holds the ones in docs/cgi.md).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::Hopgate;
use support::phpfpm::Fpm;

/// Loads `url` in headless Chromium until its scripts and assets settle; takes a screenshot into `png`.
fn chromium(url: &str, png: &Path) {
    let chromium = support::require("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            "--window-size=1100,700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(png.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    if let Ok(dir) = std::env::var("HOPGATE_SCREENSHOTS") {
        std::fs::copy(png, Path::new(&dir).join(png.file_name().unwrap())).unwrap();
    }
}

/// The access-log lines hopgate wrote so far: (status, request line).
fn requests(h: &Hopgate) -> Vec<(u16, String)> {
    h.stdout_text()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once('"')?;
            let (line, after) = rest.split_once('"')?;
            Some((after.split_whitespace().next()?.parse().ok()?, line.to_string()))
        })
        .collect()
}

/// Waits until the access log holds `n` lines (Chromium has exited; lines are written as bodies end).
fn settled(h: &Hopgate) -> Vec<(u16, String)> {
    let mut last = 0;
    support::wait_until(Duration::from_secs(5), || {
        let now = requests(h).len();
        let same = now == last;
        last = now;
        same && now > 0
    });
    requests(h)
}

#[test]
fn dokuwiki_as_debian_installs_it_renders_with_every_asset() {
    let root = Path::new("/usr/share/dokuwiki");
    assert!(root.join("doku.php").exists(), "DokuWiki is missing: apt-get install -y dokuwiki");
    let fpm = Fpm::start_app(root, "www-data");
    let h = Hopgate::gateway(&fpm.target(), &["--root", "/usr/share/dokuwiki", "--index", "doku.php"]);
    let shots = tempfile::tempdir().unwrap();
    chromium(&format!("{}/doku.php?id=start", h.url()), &shots.path().join("dokuwiki.png"));
    let seen = settled(&h);
    let not_found: Vec<_> = seen.iter().filter(|(s, _)| *s == 404).collect();
    assert!(not_found.is_empty(), "404s: {not_found:?}");
    let ok = |suffix: &str| seen.iter().filter(|(s, l)| *s == 200 && l.contains(suffix)).count();
    // The template's images live behind /usr/share/dokuwiki/lib/tpl -> /var/lib/dokuwiki/lib/tpl.
    assert!(ok("/lib/tpl/dokuwiki/images/") >= 5, "template images: {seen:#?}");
    assert!(ok("/lib/exe/css.php") == 1 && ok("/lib/exe/js.php") == 1, "{seen:#?}");
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:#?}");

    // A form posts and its result shows: a search.
    let (code, body, _) = support::curl(&["--data", "do=search&id=start&q=nothingmatchesthis", &h.url()]);
    assert_eq!(code, 200);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("nothingmatchesthis") && page.contains("Search"), "{page}");
    // Static files come with validators: a second load is 304.
    let img = format!("{}/lib/tpl/dokuwiki/images/logo.png", h.url());
    let first = support::curl_full(&[&img]);
    assert_eq!((first.code, first.header("content-type").as_deref()), (200, Some("image/png")));
    let etag = first.header("etag").unwrap();
    assert_eq!(support::curl_full(&["-H", &format!("If-None-Match: {etag}"), &img]).code, 304);
}

#[test]
fn adminer_logs_in_posts_a_form_and_takes_an_upload() {
    assert!(Path::new("/usr/share/adminer/adminer.php").exists(), "Adminer is missing: apt-get install -y adminer");
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    let db = tmp.path().join("db");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        www.join("index.php"),
        "<?php\nfunction adminer_object() {\n\
         include_once '/usr/share/adminer/plugins/plugin.php';\n\
         include_once '/usr/share/adminer/plugins/login-password-less.php';\n\
         return new AdminerPlugin(array(new AdminerLoginPasswordLess(password_hash('s3cret', PASSWORD_DEFAULT))));\n\
         }\ninclude '/usr/share/adminer/adminer.php';\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/usr/share/adminer/designs", www.join("designs")).unwrap();
    std::fs::write(db.join("notes.db"), b"").unwrap();
    for p in [tmp.path(), &www] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    support::peers::chown_nobody(&db);
    let fpm = Fpm::start_app(&www, "nobody");
    let h = Hopgate::gateway(&fpm.target(), &["--root", www.to_str().unwrap()]);

    let shots = tempfile::tempdir().unwrap();
    chromium(&h.url(), &shots.path().join("adminer.png"));
    let seen = settled(&h);
    assert!(seen.iter().all(|(s, _)| *s == 200), "{seen:#?}");
    assert!(seen.iter().any(|(_, l)| l.contains("file=default.css")), "{seen:#?}");
    // The design's stylesheet is a static file behind a symlink out of the root.
    let css = support::curl_full(&[&format!("{}/designs/nette/adminer.css", h.url())]);
    assert_eq!((css.code, css.header("content-type").as_deref()), (200, Some("text/css; charset=utf-8")));

    // Log in: a cookie, which the next page honours.
    let jar = tmp.path().join("jar");
    let jar = jar.to_str().unwrap();
    let base = format!("{}/?sqlite=&username=&db={}", h.url(), db.join("notes.db").display());
    let login = support::curl_full(&[
        "-c",
        jar,
        "-b",
        jar,
        "--data-urlencode",
        "auth[driver]=sqlite",
        "--data-urlencode",
        "auth[server]=",
        "--data-urlencode",
        "auth[username]=",
        "--data-urlencode",
        "auth[password]=s3cret",
        "--data-urlencode",
        &format!("auth[db]={}", db.join("notes.db").display()),
        &format!("{}/", h.url()),
    ]);
    assert_eq!(login.code, 302, "{}", login.text());
    assert!(login.header("set-cookie").is_some_and(|c| c.starts_with("adminer_sid=")), "{}", login.head);
    let page = support::curl_full(&["-b", jar, "-c", jar, &base]);
    assert!(page.text().contains("<h2>Database: "), "{}", page.text());
    let stranger = support::curl_full(&[&base]);
    assert!(!stranger.text().contains("<h2>Database: "), "no cookie, no database");
    let token = page
        .text()
        .split("name='token' value='")
        .nth(1)
        .and_then(|t| t.split('\'').next())
        .map(str::to_string)
        .expect("a CSRF token");

    // A form posts, and its result shows.
    let sql = support::curl_full(&[
        "-b",
        jar,
        "--data-urlencode",
        "query=CREATE TABLE notes(t TEXT); INSERT INTO notes VALUES('posted by a form');",
        "--data-urlencode",
        &format!("token={token}"),
        &format!("{base}&sql="),
    ]);
    assert_eq!(sql.code, 200);
    // A file upload through the application: an SQL file imported, its UTF-8 text intact.
    let upload = tmp.path().join("up.sql");
    std::fs::write(&upload, "INSERT INTO notes VALUES('uploaded: \u{fc}ber \u{2603} 42');\n").unwrap();
    let import = support::curl_full(&[
        "-b",
        jar,
        "-F",
        &format!("sql_file[]=@{}", upload.display()),
        "-F",
        &format!("token={token}"),
        "-F",
        "error_stops=1",
        &format!("{base}&import="),
    ]);
    assert_eq!(import.code, 200, "{}", import.text());
    let rows = support::curl_full(&["-b", jar, &format!("{base}&select=notes")]).text();
    assert!(rows.contains("posted by a form"), "{rows}");
    assert!(rows.contains("uploaded: \u{fc}ber \u{2603} 42"), "{rows}");
    let after = requests(&h);
    assert!(after.iter().all(|(s, _)| *s != 404), "{after:#?}");
}
