//! Directory listings: MLSD (RFC 3659 §7, machine-readable) and `LIST` output, which RFC 959
//! leaves free-form, in the two formats servers actually send: Unix `ls -l` and DOS/IIS.
//! A line that fits neither is skipped, never fatal. Names are kept byte-exact (spaces included);
//! bytes that are not UTF-8 become U+FFFD.

use std::time::SystemTime;

use super::reply::parse_time_val;
use crate::date;
pub use crate::http::listing::{Entry, EntryKind};

/// Parses an MLSD body: one `fact=value;...; name` per line.
pub fn parse_mlsd(body: &[u8]) -> Vec<Entry> {
    lines(body).filter_map(|l| parse_mlsd_line(&l)).collect()
}

/// One MLSD line: facts, a single space, the name (RFC 3659 §7.2: facts hold no space).
/// `cdir`/`pdir` entries and unknown types (devices...) give `None`.
pub fn parse_mlsd_line(line: &str) -> Option<Entry> {
    parse_facts(line, false)
}

/// One MLSD or MLST line; `own_dir` takes `cdir`/`pdir` as a directory (MLST of a directory
/// may describe it as `cdir`), else they give `None`.
pub(crate) fn parse_facts(line: &str, own_dir: bool) -> Option<Entry> {
    let (facts, name) = line.split_once(' ')?;
    if name.is_empty() || (!own_dir && (name == "." || name == "..")) {
        return None;
    }
    let mut kind = None;
    let mut size = None;
    let mut modified = None;
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let (key, value) = fact.split_once('=')?;
        match key.to_ascii_lowercase().as_str() {
            "type" => {
                let value = value.to_ascii_lowercase();
                kind = match value.as_str() {
                    "file" => Some(EntryKind::File),
                    "dir" => Some(EntryKind::Dir),
                    "cdir" | "pdir" if own_dir => Some(EntryKind::Dir),
                    "cdir" | "pdir" => return None,
                    // e.g. OS.unix=symlink, OS.unix=slink:/target
                    v if v.starts_with("os.unix=symlink") || v.starts_with("os.unix=slink") => Some(EntryKind::Link),
                    _ => return None,
                };
            }
            "size" => size = value.parse().ok(),
            "modify" => modified = parse_time_val(value),
            _ => {}
        }
    }
    Some(Entry {
        name: name.to_owned(),
        kind: kind?,
        size: if kind == Some(EntryKind::Dir) { None } else { size },
        modified,
        link_target: None,
    })
}

/// Parses a `LIST` body in Unix or DOS format, line by line. `now` decides the year of Unix
/// dates without one (`Jan 01 12:00`): this year, or last year when that would be more than
/// a month in the future (as `ls` prints recent files).
pub fn parse_list(body: &[u8], now: SystemTime) -> Vec<Entry> {
    lines(body)
        .filter_map(|l| parse_unix_line(&l, now).or_else(|| parse_dos_line(&l)))
        .filter(|e| e.name != "." && e.name != "..")
        .collect()
}

fn lines(body: &[u8]) -> impl Iterator<Item = String> + '_ {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
}

/// Whitespace-separated tokens with their byte span in `line`.
fn tokens(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c == ' ' || c == '\t', start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// `-rw-r--r-- 1 owner group 1234 Jan 01 12:00 name` (group optional, `2023` for the time, a
/// symlink as `name -> target`). The date anchors the parse: owner and group may be anything.
fn parse_unix_line(line: &str, now: SystemTime) -> Option<Entry> {
    let kind = match line.as_bytes().first()? {
        b'-' => EntryKind::File,
        b'd' => EntryKind::Dir,
        b'l' => EntryKind::Link,
        _ => return None,
    };
    let toks = tokens(line);
    let tok = |i: usize| &line[toks[i].0..toks[i].1];
    if tok(0).len() < 10 {
        return None;
    }
    // find "Mon DD HH:MM|YYYY" preceded by a numeric size, at token 3 or later
    let month_at = (3..toks.len().saturating_sub(2)).find(|&i| {
        month_number(tok(i)).is_some()
            && tok(i + 1).parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
            && (tok(i + 2).contains(':') || tok(i + 2).len() == 4)
            && tok(i - 1).bytes().all(|b| b.is_ascii_digit())
            && toks.len() > i + 3
    })?;
    let size: u64 = tok(month_at - 1).parse().ok()?;
    let month = month_number(tok(month_at))?;
    let day: u32 = tok(month_at + 1).parse().ok()?;
    let modified = unix_date(month, day, tok(month_at + 2), now);
    // the name starts one space after the time/year and keeps every later space
    let rest = &line[toks[month_at + 2].1 + 1..];
    let (name, link_target) = match kind {
        EntryKind::Link => match rest.split_once(" -> ") {
            Some((n, t)) => (n, Some(t.to_owned())),
            None => (rest, None),
        },
        _ => (rest, None),
    };
    if name.is_empty() {
        return None;
    }
    Some(Entry { name: name.to_owned(), kind, size: (kind != EntryKind::Dir).then_some(size), modified, link_target })
}

fn month_number(s: &str) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    MONTHS.iter().position(|m| *m == lower).map(|i| i as u32 + 1)
}

fn unix_date(month: u32, day: u32, time_or_year: &str, now: SystemTime) -> Option<SystemTime> {
    if let Some((h, m)) = time_or_year.split_once(':') {
        let (h, m) = (h.parse().ok()?, m.parse().ok()?);
        let year = date::year_of(now);
        let this_year = date::from_civil(year, month, day, h, m, 0);
        // `ls` omits the year for the last six months; a date ahead of now is last year's
        let month_ahead = now + std::time::Duration::from_secs(31 * 86_400);
        match this_year {
            Some(t) if t <= month_ahead => Some(t),
            _ => date::from_civil(year - 1, month, day, h, m, 0),
        }
    } else {
        date::from_civil(time_or_year.parse().ok()?, month, day, 0, 0, 0)
    }
}

/// `01-31-23  12:00PM       <DIR>          name` or `... 1234 name` (IIS, Windows). A two-digit
/// year below 70 is 20xx.
fn parse_dos_line(line: &str) -> Option<Entry> {
    let toks = tokens(line);
    if toks.len() < 4 {
        return None;
    }
    let tok = |i: usize| &line[toks[i].0..toks[i].1];
    let mut date = tok(0).split(['-', '/']);
    let month: u32 = date.next()?.parse().ok()?;
    let day: u32 = date.next()?.parse().ok()?;
    let year_tok = date.next()?;
    let year: i64 = year_tok.parse().ok()?;
    let year = match year_tok.len() {
        2 if year < 70 => 2000 + year,
        2 => 1900 + year,
        4 => year,
        _ => return None,
    };
    let time = tok(1).to_ascii_uppercase();
    let (clock, pm) = match (time.strip_suffix("PM"), time.strip_suffix("AM")) {
        (Some(c), _) => (c, Some(true)),
        (_, Some(c)) => (c, Some(false)),
        _ => (time.as_str(), None),
    };
    let (h, m) = clock.split_once(':')?;
    let (mut h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match pm {
        Some(true) if h < 12 => h += 12,
        Some(false) if h == 12 => h = 0,
        _ => {}
    }
    let (kind, size) = if tok(2).eq_ignore_ascii_case("<DIR>") {
        (EntryKind::Dir, None)
    } else {
        (EntryKind::File, Some(tok(2).parse::<u64>().ok()?))
    };
    let name = &line[toks[3].0..];
    Some(Entry {
        name: name.to_owned(),
        kind,
        size,
        modified: date::from_civil(year, month, day, h, m, 0),
        link_target: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> Option<SystemTime> {
        date::from_civil(y, mo, d, h, mi, 0)
    }

    #[test]
    fn mlsd_facts_names_with_spaces_and_utf8() {
        let body = "type=cdir;modify=20230101000000; .\r\n\
            type=pdir; ..\r\n\
            type=file;size=1234;modify=20230131120005;UNIX.mode=0644; a file; with;semis.txt\r\n\
            Type=Dir;Modify=20220101000000.5;unix.mode=0755; sub dir\r\n\
            type=file;size=3; über ☃.bin\r\n\
            type=OS.unix=symlink;size=7; ln\r\n\
            type=OS.unix=chr-1/3; null\r\n\
            garbage without facts\r\n\
            type=file;size=5;name-without-space\r\n";
        let e = parse_mlsd(body.as_bytes());
        assert_eq!(e.len(), 4, "{e:#?}");
        assert_eq!(e[0].name, "a file; with;semis.txt");
        assert_eq!(e[0].kind, EntryKind::File);
        assert_eq!(e[0].size, Some(1234));
        assert_eq!(e[0].modified, date::from_civil(2023, 1, 31, 12, 0, 5));
        assert_eq!((e[1].name.as_str(), e[1].kind, e[1].size), ("sub dir", EntryKind::Dir, None));
        assert_eq!(e[1].modified, at(2022, 1, 1, 0, 0));
        assert_eq!(e[2].name, "über ☃.bin");
        assert_eq!(e[3].kind, EntryKind::Link);
    }

    #[test]
    fn unix_list_lines() {
        let now = at(2024, 3, 15, 0, 0).unwrap();
        let body = "total 12\r\n\
            drwxr-xr-x    2 0        0            4096 Jan 01  2023 .\r\n\
            -rw-r--r--    1 0        0         8388608 Mar 10 12:34 big.bin\r\n\
            -rw-r--r--    1 ftp      ftp          1234 Dec 24 18:00 name  with  spaces.txt\r\n\
            drwxr-xr-x    2 owner    group        4096 Jun 01  2021 sub dir\r\n\
            lrwxrwxrwx    1 0        0               7 Feb 29 09:00 a link -> big.bin\r\n\
            -rw-r--r--    1 user        5 Jan  2 00:00 no-group ü ☃.txt\r\n\
            -rw-r--r-- 1 John Smith staff 99 Jan 02 2020 owner with space\r\n\
            crw-rw-rw-    1 0        0          1,   3 Jan 01  2023 null\r\n\
            this line is nonsense\r\n";
        let e = parse_list(body.as_bytes(), now);
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["big.bin", "name  with  spaces.txt", "sub dir", "a link", "no-group ü ☃.txt", "owner with space"]
        );
        assert_eq!(e[0].size, Some(8_388_608));
        assert_eq!(e[0].modified, at(2024, 3, 10, 12, 34));
        // Dec 24 is nine months ahead of March 2024: last year
        assert_eq!(e[1].modified, at(2023, 12, 24, 18, 0));
        assert_eq!((e[2].kind, e[2].size), (EntryKind::Dir, None));
        assert_eq!(e[2].modified, at(2021, 6, 1, 0, 0));
        assert_eq!(e[3].kind, EntryKind::Link);
        assert_eq!(e[3].link_target.as_deref(), Some("big.bin"));
        assert_eq!(e[3].modified, at(2024, 2, 29, 9, 0));
        assert_eq!(e[4].size, Some(5));
        assert_eq!(e[5].modified, at(2020, 1, 2, 0, 0));
    }

    #[test]
    fn dos_list_lines() {
        let body = "01-31-23  12:00PM       <DIR>          sub dir\r\n\
            02-01-2023  09:05AM                 1234 a file.txt\r\n\
            12-31-99  12:15AM                 0 über ☃\r\n\
            13-01-23  12:00PM   5 bad month\r\n";
        let e = parse_list(body.as_bytes(), UNIX_EPOCH);
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].name.as_str(), e[0].kind), ("sub dir", EntryKind::Dir));
        assert_eq!(e[0].modified, at(2023, 1, 31, 12, 0));
        assert_eq!((e[1].name.as_str(), e[1].size), ("a file.txt", Some(1234)));
        assert_eq!(e[1].modified, at(2023, 2, 1, 9, 5));
        assert_eq!(e[2].name, "über ☃");
        assert_eq!(e[2].modified, at(1999, 12, 31, 0, 15));
        // a line that parses except for its date keeps the entry without a date
        assert_eq!(e[3].modified, None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let e = parse_mlsd(b"type=file;size=1; caf\xe9\r\n");
        assert_eq!(e[0].name, "caf\u{fffd}");
    }
}
