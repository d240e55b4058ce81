//! A strict RFC 8259 reader that only says whether a text is one JSON value, for checking the JSON listings
//! hopgate writes. Also refuses U+2028/U+2029 unescaped (the listing promises text safe inside JavaScript).

/// `Ok` when `s` is exactly one JSON value (with surrounding whitespace).
pub(super) fn check(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    value(b, &mut i, 0)?;
    ws(b, &mut i);
    if i != b.len() { Err(format!("text after the value at byte {i}")) } else { Ok(()) }
}

fn ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

fn value(b: &[u8], i: &mut usize, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err("nested too deep".into());
    }
    ws(b, i);
    match b.get(*i) {
        Some(b'{') => {
            *i += 1;
            ws(b, i);
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return Ok(());
            }
            loop {
                ws(b, i);
                string(b, i)?;
                ws(b, i);
                if b.get(*i) != Some(&b':') {
                    return Err(format!("expected : at byte {i}"));
                }
                *i += 1;
                value(b, i, depth + 1)?;
                ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {
                        *i += 1;
                        return Ok(());
                    }
                    _ => return Err(format!("expected , or }} at byte {i}")),
                }
            }
        }
        Some(b'[') => {
            *i += 1;
            ws(b, i);
            if b.get(*i) == Some(&b']') {
                *i += 1;
                return Ok(());
            }
            loop {
                value(b, i, depth + 1)?;
                ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {
                        *i += 1;
                        return Ok(());
                    }
                    _ => return Err(format!("expected , or ] at byte {i}")),
                }
            }
        }
        Some(b'"') => string(b, i),
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(b'-' | b'0'..=b'9') => number(b, i),
        _ => Err(format!("no value at byte {i}")),
    }
}

fn literal(b: &[u8], i: &mut usize, word: &[u8]) -> Result<(), String> {
    if b[*i..].starts_with(word) {
        *i += word.len();
        Ok(())
    } else {
        Err(format!("bad literal at byte {i}"))
    }
}

fn number(b: &[u8], i: &mut usize) -> Result<(), String> {
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.get(*i) == Some(&b'-') {
        *i += 1;
    }
    match b.get(*i) {
        Some(b'0') => *i += 1,
        Some(b'1'..=b'9') => {
            digits(i);
        }
        _ => return Err(format!("bad number at byte {i}")),
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if !digits(i) {
            return Err(format!("bad fraction at byte {i}"));
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if !digits(i) {
            return Err(format!("bad exponent at byte {i}"));
        }
    }
    Ok(())
}

fn string(b: &[u8], i: &mut usize) -> Result<(), String> {
    if b.get(*i) != Some(&b'"') {
        return Err(format!("expected a string at byte {i}"));
    }
    *i += 1;
    loop {
        match b.get(*i) {
            None => return Err("unterminated string".into()),
            Some(b'"') => {
                *i += 1;
                return Ok(());
            }
            Some(b'\\') => match b.get(*i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *i += 2,
                Some(b'u') if b.get(*i + 2..*i + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => *i += 6,
                _ => return Err(format!("bad escape at byte {i}")),
            },
            Some(&c) if c < 0x20 || c == 0x7f => return Err(format!("control character {c:#x} at byte {i}")),
            // U+2028 and U+2029 in UTF-8.
            Some(0xe2) if b.get(*i + 1) == Some(&0x80) && matches!(b.get(*i + 2), Some(0xa8 | 0xa9)) => {
                return Err(format!("unescaped line or paragraph separator at byte {i}"));
            }
            Some(_) => *i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn reads_json() {
        for good in ["[]", " [\n{\"a\":1,\"b\":null}, -0.5e+3, \"\\u00e9\\n\", true, false]\n", "{}", "\"x\""] {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in ["", "[", "[1,]", "{\"a\"}", "\"\n\"", "01", "[1] x", "\"\\x\"", "\"\u{2028}\"", "\"\u{7f}\""] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
