//! Which file a request path names: CGI scripts under a directory (RFC 3875 §3.3, §4.1.5) and
//! FastCGI scripts under a document root.
//!
//! Both walk the percent-decoded path segments and refuse anything that could leave the directory:
//! `.`/`..` segments (also as `%2e%2e`), encoded slashes or NULs, bad escapes, non-UTF-8 names. CGI also
//! refuses symlinks whose target lies outside (the candidate is canonicalized and its prefix checked); a
//! document root (FastCGI, the static-file room) follows them unless its `symlinks` is `inside` ([`stat_under`]).
//! Does not: normalize paths, serve directory listings, or guard against files swapped between the
//! check and the exec (the directory is the operator's).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::GatewayError;
use crate::config::Symlinks;

/// Where a request's script is, as the meta-variables describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptPath {
    /// URL path of the script, decoded (RFC 3875 §4.1.13); "" when the whole path is PATH_INFO.
    pub script_name: String,
    /// The rest of the URL path after the script, decoded (RFC 3875 §4.1.5); may be "".
    pub path_info: String,
    pub document_root: Option<PathBuf>,
    pub script_filename: Option<PathBuf>,
    /// `document_root` + `path_info`, when both exist (RFC 3875 §4.1.6).
    pub path_translated: Option<PathBuf>,
}

/// A CGI script found under the CGI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiScript {
    /// The canonical file to execute; its directory is the working directory.
    pub program: PathBuf,
    pub path: ScriptPath,
    /// The file name starts with `nph-`: its output is a complete HTTP response (RFC 3875 §5).
    pub nph: bool,
}

/// The FastCGI layout: scripts under `root`, split after the first segment ending in
/// `split_suffix`, `index` appended for directory requests.
#[derive(Debug, Clone)]
pub struct FastCgiLayout {
    /// Canonical document root.
    pub root: PathBuf,
    pub split_suffix: String,
    pub index: String,
    pub symlinks: Symlinks,
}

/// Splits an origin-form path into decoded segments, rejecting whatever could escape a directory.
/// Empty segments (from `//` or a trailing `/`) are kept as "".
pub fn decode_segments(uri_path: &str) -> Result<Vec<String>, GatewayError> {
    let Some(rest) = uri_path.strip_prefix('/') else {
        return Err(GatewayError::not_found("path does not start with /"));
    };
    rest.split('/').map(decode_segment).collect()
}

/// [`decode_segments`] for a path with nothing to decode (no `%`), without making a string per segment: its
/// segments as they are when every one passes the same rules, else None (decode it to learn why, or to decode).
pub fn plain_segments(uri_path: &str) -> Option<std::str::Split<'_, char>> {
    let rest = uri_path.strip_prefix('/')?;
    let plain = !rest.contains('%') && rest.split('/').all(|s| refused(s.as_bytes()).is_none());
    plain.then(|| rest.split('/'))
}

/// Why a decoded segment can't name something under a directory, if it can't.
fn refused(segment: &[u8]) -> Option<&'static str> {
    if segment.contains(&b'/') || segment.contains(&0) || segment.contains(&b'\\') {
        return Some("encoded slash or NUL in path");
    }
    if segment == b"." || segment == b".." {
        return Some("dot segment in path");
    }
    None
}

fn decode_segment(raw: &str) -> Result<String, GatewayError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly: from_str_radix alone would take `%+A` as 0x0A.
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| GatewayError::not_found("bad percent-encoding in path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if let Some(why) = refused(&out) {
        return Err(GatewayError::not_found(why));
    }
    String::from_utf8(out).map_err(|_| GatewayError::not_found("path is not UTF-8"))
}

/// `candidate` must exist and canonicalize to somewhere inside the canonical `root`.
fn inside(root: &Path, candidate: &Path) -> Result<(PathBuf, fs::Metadata), GatewayError> {
    let real = fs::canonicalize(candidate).map_err(|e| GatewayError::not_found("no such file").with_source(e))?;
    if !real.starts_with(root) {
        return Err(GatewayError::not_found("path leaves the directory"));
    }
    let meta = fs::metadata(&real).map_err(|e| GatewayError::not_found("no such file").with_source(e))?;
    Ok((real, meta))
}

/// What `candidate` (a path under the canonical `root`, joined from checked segments) is: its metadata, following
/// symlinks; with [`Symlinks::Inside`] it must also canonicalize to somewhere inside `root`. None: nothing there
/// (missing, or a path through a file); Err: it leaves the directory (NotFound) or may not be looked at
/// (Forbidden).
pub fn stat_under(root: &Path, candidate: &Path, symlinks: Symlinks) -> Result<Option<fs::Metadata>, GatewayError> {
    let stat = |p: &Path| match fs::metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(GatewayError::forbidden("permission denied").with_source(e))
        }
        Err(_) => Ok(None),
    };
    match symlinks {
        Symlinks::Follow => stat(candidate),
        Symlinks::Inside => {
            let Ok(real) = fs::canonicalize(candidate) else { return stat(candidate) };
            if !real.starts_with(root) {
                return Err(GatewayError::not_found("path leaves the directory"));
            }
            stat(&real)
        }
    }
}

/// Whether `name` ends in the script suffix, in any case: such a file is run or refused, never sent as text.
pub fn is_script_name(name: &str, suffix: &str) -> bool {
    !suffix.is_empty()
        && name.len() >= suffix.len()
        && name.is_char_boundary(name.len() - suffix.len())
        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn join_name(segments: &[String]) -> String {
    segments.iter().filter(|s| !s.is_empty()).fold(String::new(), |mut acc, s| {
        acc.push('/');
        acc.push_str(s);
        acc
    })
}

fn join_info(segments: &[String]) -> String {
    if segments.is_empty() { String::new() } else { format!("/{}", segments.join("/")) }
}

/// CGI: the first segment under `dir` (canonical) that is a regular file is the script; the
/// segments after it are PATH_INFO. A file without any execute bit is Forbidden.
pub fn resolve_cgi(dir: &Path, uri_path: &str) -> Result<CgiScript, GatewayError> {
    let segments = decode_segments(uri_path)?;
    let mut here = dir.to_path_buf();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            continue;
        }
        here.push(seg);
        let (real, meta) = inside(dir, &here)?;
        if meta.is_dir() {
            continue;
        }
        if !meta.is_file() {
            return Err(GatewayError::not_found("not a regular file"));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(GatewayError::forbidden(format!("{seg} is not executable")));
        }
        let script_name = join_name(&segments[..=i]);
        let path_info = join_info(&segments[i + 1..]);
        let path_translated = (!path_info.is_empty()).then(|| dir.join(path_info.trim_start_matches('/')));
        return Ok(CgiScript {
            program: real,
            nph: seg.starts_with("nph-"),
            path: ScriptPath {
                script_name,
                path_info,
                document_root: Some(dir.to_path_buf()),
                script_filename: Some(here),
                path_translated,
            },
        });
    }
    Err(GatewayError::not_found("no script in path"))
}

/// FastCGI: SCRIPT_FILENAME under the root, PATH_INFO split after the first segment ending in the
/// suffix. The script must be a regular file under the root, so the php-fpm `cgi.fix_pathinfo` trap
/// (running `/upload/x.jpg` for `/upload/x.jpg/y.php`) cannot happen: here that request names no script.
/// A path ending in `/` without such a segment names the directory's `index`. Any other path names no
/// script: directories without their `/`, static files and the front controller are the HTTP side's (`app.rs`).
pub fn resolve_fastcgi(layout: &FastCgiLayout, uri_path: &str) -> Result<ScriptPath, GatewayError> {
    let mut segments = decode_segments(uri_path)?;
    let split = segments.iter().position(|s| {
        !layout.split_suffix.is_empty() && s.ends_with(&layout.split_suffix) && s.len() > layout.split_suffix.len()
    });
    let split = match split {
        Some(i) => i,
        None if uri_path.ends_with('/') => {
            segments.retain(|s| !s.is_empty());
            segments.push(layout.index.clone());
            segments.len() - 1
        }
        None => return Err(GatewayError::not_found("not a script")),
    };
    let mut script = segments[..=split].to_vec();
    script.retain(|s| !s.is_empty());
    let mut file = layout.root.clone();
    file.extend(&script);
    let meta =
        stat_under(&layout.root, &file, layout.symlinks)?.ok_or_else(|| GatewayError::not_found("no such file"))?;
    if !meta.is_file() {
        return Err(GatewayError::not_found("script is not a regular file"));
    }
    Ok(fastcgi_script(layout, &script, &segments[split + 1..]))
}

/// The meta-variables' view of a script under the FastCGI root: `script` its segments, `info` those after it.
pub fn fastcgi_script(layout: &FastCgiLayout, script: &[String], info: &[String]) -> ScriptPath {
    let mut file = layout.root.clone();
    file.extend(script);
    let path_info = join_info(info);
    let path_translated = (!path_info.is_empty()).then(|| layout.root.join(path_info.trim_start_matches('/')));
    ScriptPath {
        script_name: join_name(script),
        path_info,
        document_root: Some(layout.root.clone()),
        script_filename: Some(file),
        path_translated,
    }
}

/// No file system at all (SCGI, FastCGI without a root): the whole decoded path is PATH_INFO.
pub fn resolve_app(uri_path: &str) -> Result<ScriptPath, GatewayError> {
    let segments = decode_segments(uri_path)?;
    Ok(ScriptPath { script_name: String::new(), path_info: join_info(&segments), ..ScriptPath::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_segments_follow_decode_segments() {
        for p in ["/", "/a/b.txt", "//a/", "/a/../b", "/./a", "/a\\b", "/a\0b", "/.well-known/x", "/a/.../b", "nope"] {
            let plain = plain_segments(p).map(|s| s.map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(plain, decode_segments(p).ok(), "{p:?}");
        }
        assert!(plain_segments("/a%20b").is_none(), "a path with something to decode is decoded");
    }
}
