//! The static-file room (`file:DIR`, issue 15): GET and HEAD of the files under a directory, and the static half
//! of a `fastcgi` route with a root (`app.rs` hands it the paths that name a file which is no script).
//!
//! Order of steps: method (OPTIONS 204, others than GET/HEAD 405) -> path below the route prefix, decoded and
//! checked as the CGI room does (`meta::decode_segments`: dot segments, encoded `/` or NUL are 404) -> dotfiles
//! (404 unless `dotfiles`; `/.well-known/` always) -> stat, following symlinks unless `symlinks = "inside"`
//! (`meta::stat_under`) -> a directory: 301 to add its `/`, its index, a listing (`browse`) or 404; a regular
//! file: the representation (a precompressed `.br`/`.gz` sibling when Accept-Encoding allows) -> validators and
//! preconditions (304/412) -> ranges (206, multipart/byteranges, 416) -> the body streamed from the open file.
//! FIFOs, sockets and devices are 404 and never opened; a regular file is opened non-blocking and checked again
//! on its descriptor, so a FIFO swapped in between can't hang a worker.
//!
//! File reads happen on the request's task, as nginx does without `aio threads`: from the page cache a read
//! costs what a copy costs; a file system that blocks (a cold disk, NFS) blocks that worker thread for the read.
//! A body is a `FileBody`: on a plain HTTP/1.1 connection its large parts go with sendfile(2) and small ones are
//! read beside the head; otherwise it is read in `READ_CHUNK_BYTES` pieces (docs/files.md, "Bodies").
//! Between requests it keeps only directory notes (note.rs): which names are regular files and which siblings
//! exist, and the descriptors they were served from, while their directory is unchanged; a file's length and
//! validators come from the descriptor's fstat, and a small file's bytes (held with its kept descriptor, note.rs
//! `Held`) answer only while that fstat agrees with the one they were read under. A look (the directory's statx,
//! a held file's fstat) answers every request that arrived before it began (`crate::arrival`), not only its own.
//! Does not: write, list dotfiles unless asked, or compress on the fly.

mod dir;
mod note;

use std::fs::{File, Metadata};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use super::meta::{self, GatewayError, GatewayErrorKind};
use super::outside;
use crate::config::{FileOptions, FileTarget, Prefix, Symlinks};
use crate::error::{Error, Kind, StartupError};
use crate::http::file::FileBody;
use crate::http::representation::{self, Precondition, Ranges, Validators, http_date, media_type};
use crate::http::{Body, pages};
use note::{Held, Kept, Noted, Notes, SIBLINGS, Sibling};

pub use note::{HOLD_MAX_BYTES, KEEP_OPEN_IDLE, MAX_HELD_BYTES, MAX_NOTED_FILES, MAX_OPEN_FILES, SWEEP_EVERY};

/// The file a directory request serves when the route names none.
pub const DEFAULT_INDEX: &str = "index.html";
/// A directory with more entries than this is not listed (403 naming the limit): the listing is built in memory.
pub const MAX_LISTING_ENTRIES: usize = 10_000;
/// What the room answers to: every other method is 405 with this `Allow`.
pub const ALLOW: &str = "GET, HEAD, OPTIONS";

/// One directory served, built once at start-up.
#[derive(Debug)]
pub struct Files {
    /// Canonical.
    root: PathBuf,
    /// What a directory request serves; None: directories are the caller's (the FastCGI route runs its index).
    index: Option<String>,
    browse: bool,
    opts: FileOptions,
    prefix: Prefix,
    /// Shared with its sweep task (a Weak), which closes idle descriptors; also keeps a route's room small.
    notes: Arc<Notes>,
}

/// A regular file [`Files::lookup`] found.
#[derive(Debug)]
pub struct Located {
    /// As joined, symlinks not resolved.
    pub path: PathBuf,
    /// The directory note: what it says of the siblings (in [`SIBLINGS`]' order) and the file's descriptor it
    /// keeps (a sibling's is asked of the notes when served); None: look them up and open them by name.
    noted: Option<Noted>,
}

impl Located {
    fn unnoted(path: PathBuf) -> Located {
        Located { path, noted: None }
    }
}

/// What a path below the route names.
#[derive(Debug)]
pub enum Found {
    /// A regular file.
    File(Located),
    /// A directory; `slash`: the request path ended in `/`.
    Dir { path: PathBuf, slash: bool },
    /// Nothing: missing, or a path through a file.
    Nothing,
}

impl Files {
    /// The room of a `file:DIR` route under `prefix`. Fails when the directory does not exist.
    pub fn new(t: &FileTarget, prefix: &Prefix) -> Result<Files, StartupError> {
        let index = Some(t.index.clone().unwrap_or_else(|| DEFAULT_INDEX.to_owned()));
        Files::under(&t.dir, index, t.browse, &t.files, prefix)
            .map_err(|e| StartupError::new(format!("file directory {}: {e}", t.dir.display())))
    }

    /// The static half of a FastCGI route: files under `root`, directories left to the caller.
    pub fn static_half(root: &Path, opts: &FileOptions, prefix: &Prefix) -> std::io::Result<Files> {
        Files::under(root, None, false, opts, prefix)
    }

    fn under(
        dir: &Path,
        index: Option<String>,
        browse: bool,
        opts: &FileOptions,
        prefix: &Prefix,
    ) -> std::io::Result<Files> {
        let root = std::fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(Files { root, index, browse, opts: opts.clone(), prefix: prefix.clone(), notes: Arc::default() })
    }

    /// What `rel` (a request path below the route prefix, still percent-encoded) names. Err: a path that is
    /// refused (404: dot segments, encoded `/` or NUL, a dotfile; 403: not readable), and FIFOs, sockets and
    /// devices (404), which are never opened.
    pub fn lookup(&self, rel: &str) -> Result<Found, Error> {
        let path = self.joined(rel)?;
        // With symlinks followed, a noted regular file in an unchanged directory needs no stat of its own (it is
        // checked on its descriptor, kept or opened). `inside` resolves every path anyway.
        if self.opts.symlinks == Symlinks::Follow
            && !rel.ends_with('/')
            // Built on the root: longer is below it.
            && path.as_os_str().len() > self.root.as_os_str().len()
            && let Some(noted) = self.notes.file(&path, crate::arrival::arrived())
        {
            return Ok(Found::File(Located { path, noted: Some(noted) }));
        }
        let Some(meta) = meta::stat_under(&self.root, &path, self.opts.symlinks)? else {
            return Ok(Found::Nothing);
        };
        if meta.is_dir() {
            return Ok(Found::Dir { path, slash: rel.ends_with('/') });
        }
        if !meta.is_file() {
            return Err(Error::client(Kind::NotFound, "not a regular file"));
        }
        if rel.ends_with('/') {
            return Err(Error::client(Kind::NotFound, "a file is not a directory"));
        }
        Ok(Found::File(Located::unnoted(path)))
    }

    /// The root joined with `rel`'s segments, decoded under `meta::decode_segments`' rules; dotfiles refused.
    fn joined(&self, rel: &str) -> Result<PathBuf, Error> {
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + rel.len() + 1);
        path.push(&self.root);
        // Most paths have nothing to decode: their segments are checked as they are, by the same rules.
        if let Some(segments) = meta::plain_segments(rel) {
            self.visible(segments.clone())?;
            path.extend(segments.filter(|s| !s.is_empty()));
        } else {
            let segments = meta::decode_segments(rel).map_err(Error::from)?;
            self.visible(segments.iter().map(String::as_str))?;
            path.extend(segments.iter().filter(|s| !s.is_empty()));
        }
        Ok(path)
    }

    /// Dotfiles are 404 unless the route serves them; `/.well-known/` (RFC 8615: ACME challenges, security.txt) is
    /// always served, and what is under it follows the rule like anything else.
    fn visible<'a>(&self, segments: impl Iterator<Item = &'a str>) -> Result<(), Error> {
        let mut segments = segments.enumerate();
        if !self.opts.dotfiles && segments.any(|(i, s)| s.starts_with('.') && !(i == 0 && s == ".well-known")) {
            return Err(Error::client(Kind::NotFound, "dotfiles are not served"));
        }
        Ok(())
    }

    /// Answers a request for a file [`Files::lookup`] found: the representation the request selects, its
    /// validators, preconditions and ranges, the body streamed.
    pub fn send(&self, method: &Method, headers: &HeaderMap, found: &Located) -> Result<Response<Body>, Error> {
        check_method(method)?;
        if method == Method::OPTIONS {
            return Ok(options());
        }
        let path = &found.path;
        let name = note::split(path).map(|(_, n)| n.to_string_lossy()).unwrap_or_default();
        let Representation { file, meta: served, held, encoding, vary } = self.representation(headers, found)?;
        let len = served.len();
        // A held file's validators were formatted when its bytes were read.
        let (etag, modified, last_modified) = match &held {
            Some(h) => (h.etag.clone(), h.modified, h.last_modified.clone()),
            None => validators_of(&served, encoding),
        };
        let validators = Validators { etag: etag.as_ref().and_then(|e| e.to_str().ok()), modified };
        let mut head = crate::h1::io::take_map(8);
        if let Some(v) = last_modified {
            head.insert(header::LAST_MODIFIED, v);
        }
        if vary {
            head.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        head.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let precondition = representation::evaluate(method, headers, &validators);
        let ranges = representation::ranges(method, headers, &validators, len);
        if let Some(e) = etag {
            head.insert(header::ETAG, e);
        }
        match precondition {
            Precondition::Proceed => {}
            Precondition::NotModified => return Ok(respond(StatusCode::NOT_MODIFIED, head, Body::empty())),
            Precondition::Failed(field) => {
                let e = Error::client(Kind::PreconditionFailed, format!("{field} does not hold for {name}"));
                return Err(about_the_file(e, vary));
            }
        }
        let media = media_type(&name);
        head.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Some(e) = encoding {
            head.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        let head_only = method == Method::HEAD;
        let (status, body, length) = match ranges {
            Ranges::Whole => {
                head.insert(header::CONTENT_TYPE, media);
                (StatusCode::OK, FileBody::whole(file, len), len)
            }
            Ranges::Unsatisfiable => {
                let e = Error::client(Kind::RangeNotSatisfiable, format!("no range within {name}'s {len} bytes"))
                    .with_field(header::CONTENT_RANGE, representation::unsatisfied_range(len));
                return Err(about_the_file(e, vary));
            }
            Ranges::Some(r) if r.len() == 1 => {
                head.insert(header::CONTENT_TYPE, media);
                head.insert(header::CONTENT_RANGE, representation::content_range(&r[0], len));
                (StatusCode::PARTIAL_CONTENT, FileBody::range(file, r[0].clone()), r[0].end - r[0].start)
            }
            Ranges::Some(r) => {
                let (body, boundary, total) = FileBody::multipart(file, &r, len, &media);
                let ct = format!("multipart/byteranges; boundary={boundary}");
                head.insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).unwrap_or(media));
                (StatusCode::PARTIAL_CONTENT, body, total)
            }
        };
        // A body's exact length is what the connection writes as Content-Length (HTTP/1.1: h1::response::write_head;
        // HTTP/2: hyper), so the field is built here only where no body carries it: HEAD, and an empty file.
        if head_only || length == 0 {
            head.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let body = match held {
            _ if head_only => Body::empty(),
            // Every part from the bytes held: no read of the file.
            Some(h) => Body::file(body.from_held(&h.bytes)),
            None => Body::file(body),
        };
        Ok(respond(status, head, body))
    }

    /// The file that answers: a precompressed sibling (`NAME.br`, `NAME.gz`) the client accepts, else the file
    /// itself; opened non-blocking and checked on its descriptor (or the descriptor its note keeps). Also whether
    /// the file has siblings (`Vary`). A sibling the directory note says is a regular file (or absent) is not
    /// looked up again.
    fn representation(&self, headers: &HeaderMap, found: &Located) -> Result<Representation, Error> {
        let path = &found.path;
        let accepted = accepted_codings(headers);
        let mut vary = false;
        let mut sibling = std::ffi::OsString::new();
        for (i, (coding, ext)) in SIBLINGS.into_iter().enumerate() {
            let noted = found.noted.as_ref().map(|n| n.siblings[i]);
            if noted == Some(Sibling::Absent) {
                continue;
            }
            sibling.clear();
            sibling.reserve(path.as_os_str().len() + ext.len());
            sibling.push(path.as_os_str());
            sibling.push(ext);
            let sibling = Path::new(&sibling);
            if noted != Some(Sibling::Regular) {
                let Ok(Some(m)) = meta::stat_under(&self.root, sibling, self.opts.symlinks) else { continue };
                if !m.is_file() {
                    continue;
                }
            }
            vary = true;
            if accepted.contains(&coding)
                && let Ok((file, meta, held)) = self.open(found, 1 + i, sibling)
            {
                // Any other sibling still makes the response vary: look no further.
                return Ok(Representation { file, meta, held, encoding: Some(coding), vary: true });
            }
        }
        let (file, meta, held) = self.open(found, 0, path)?;
        Ok(Representation { file, meta, held, encoding: None, vary })
    }

    /// `path`, `found` itself (slot 0) or its sibling (slot 1 + its index in [`SIBLINGS`]): the descriptor the
    /// note keeps while its fstat says it stands for what was opened (note.rs, `Kept::check`), else opened by name
    /// as [`open_regular`] does and kept in the note in place of the stale one. A kept small file's bytes come
    /// with it once held (note.rs, `Held`), and are held by the first request that finds them settled.
    fn open(&self, found: &Located, slot: usize, path: &Path) -> Result<Opened, Error> {
        let Some(noted) = &found.noted else {
            return open_regular(path).map(|(file, m)| (file, m, None));
        };
        let sibling;
        let kept = if slot == 0 {
            &noted.file
        } else {
            sibling = self.notes.kept(&found.path, noted, slot);
            &sibling
        };
        let arrived = crate::arrival::arrived();
        if let Some(kept) = kept
            && let Some(held) = kept.held_since(arrived)
        {
            // Held bytes a look after the request arrived found standing: no fstat of its own.
            return Ok((kept.file().clone(), held.meta.clone(), Some(held)));
        }
        // Before the descriptor is looked at: requests that arrived before this moment may share the look (of
        // held bytes only: a file read per request is looked at per request).
        let now = arrived.filter(|_| kept.as_ref().is_some_and(Kept::holds)).map(|_| SystemTime::now());
        let stale = match kept {
            Some(kept) => match kept.check() {
                Some((file, m)) => {
                    let held = match kept.held(&m) {
                        Some(held) => {
                            if let Some(now) = now {
                                held.looked_at(now);
                            }
                            Some(held)
                        }
                        None if self.notes.may_hold(&m) => {
                            let coding = slot.checked_sub(1).map(|i| SIBLINGS[i].0);
                            self.notes.hold(&found.path, noted, slot, (&file, &m), |m| validators_of(m, coding))
                        }
                        None => None,
                    };
                    return Ok((file, m, held));
                }
                None => true,
            },
            None => false,
        };
        let opened = open_regular(path);
        match &opened {
            Ok((file, m)) => self.notes.keep(&found.path, noted, slot, Some(Kept::new(file.clone(), m))),
            Err(_) if stale => self.notes.keep(&found.path, noted, slot, None),
            Err(_) => {}
        }
        opened.map(|(file, m)| (file, m, None))
    }
}

/// An open file: its descriptor, its fstat, and its bytes if they are held.
type Opened = (Arc<File>, Metadata, Option<Arc<Held>>);

/// What answers a request for a file.
struct Representation {
    file: Arc<File>,
    /// Its fstat.
    meta: Metadata,
    /// Its bytes, held with its kept descriptor.
    held: Option<Arc<Held>>,
    /// Its content coding (a precompressed sibling).
    encoding: Option<&'static str>,
    /// The response varies by `Accept-Encoding` (the file has siblings).
    vary: bool,
}

/// An error page about a file carries what every answer about it does: `Accept-Ranges`, and `Vary` when the file
/// has precompressed siblings.
fn about_the_file(e: Error, vary: bool) -> Error {
    let e = e.with_field(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if vary { e.with_field(header::VARY, HeaderValue::from_static("Accept-Encoding")) } else { e }
}

/// The one door: serve `req` from the route's directory.
pub async fn serve<B>(req: Request<B>, files: &Files) -> Result<Response<Body>, Error> {
    check_method(req.method())?;
    if req.method() == Method::OPTIONS {
        return Ok(options());
    }
    let full = req.uri().path();
    let rest = files.prefix.rest(full).ok_or_else(|| outside(&files.prefix, full))?;
    let rel = files.prefix.below(full).unwrap_or("/");
    match files.lookup(rel)? {
        Found::File(found) => {
            let resp = files.send(req.method(), req.headers(), &found);
            // Read: the request's field map goes back to the thread's pool, which the response's came from (the
            // connection gives that one back once its head is written).
            crate::h1::io::give_map(req.into_parts().0.headers);
            resp
        }
        // `/static` on a route with path `/static` is its directory without the `/`.
        Found::Dir { .. } if rest.is_empty() => Ok(add_slash(req.uri())),
        Found::Dir { slash: false, .. } => Ok(add_slash(req.uri())),
        Found::Dir { path, slash: true } => {
            if let Some(index) = &files.index {
                let file = path.join(index);
                if let Ok(Some(m)) = meta::stat_under(&files.root, &file, files.opts.symlinks)
                    && m.is_file()
                {
                    return files.send(req.method(), req.headers(), &Located::unnoted(file));
                }
            }
            if !files.browse {
                return Err(Error::client(Kind::NotFound, "directory without an index"));
            }
            let title = percent_decoded(full);
            dir::listing(&req, path, title, rel == "/", files.opts.clone(), files.root.clone()).await
        }
        Found::Nothing => Err(Error::client(Kind::NotFound, "no such file")),
    }
}

/// A directory asked for without its `/`: 301 to the same path with it, the query kept.
pub fn add_slash(uri: &Uri) -> Response<Body> {
    let mut location = format!("{}/", uri.path());
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    match HeaderValue::from_str(&location) {
        Ok(v) => pages::redirect(v),
        // The path came from a valid request target: always a valid field value.
        Err(_) => pages::redirect(HeaderValue::from_static("/")),
    }
}

fn check_method(m: &Method) -> Result<(), Error> {
    if m == Method::GET || m == Method::HEAD || m == Method::OPTIONS {
        return Ok(());
    }
    Err(Error::client(Kind::MethodNotAllowed, format!("{m} is not served for static files"))
        .with_field(header::ALLOW, HeaderValue::from_static(ALLOW)))
}

/// RFC 9110 §9.3.7: what the room allows.
fn options() -> Response<Body> {
    let mut head = HeaderMap::new();
    head.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    respond(StatusCode::NO_CONTENT, head, Body::empty())
}

fn respond(status: StatusCode, head: HeaderMap, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = head;
    resp
}

/// Opens a regular file without following it into a FIFO's blocking open (O_NONBLOCK; no effect on a regular
/// file's reads), then checks what was opened.
fn open_regular(path: &Path) -> Result<(Arc<File>, Metadata), Error> {
    let refused = |e: std::io::Error| -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::PermissionDenied => GatewayErrorKind::Forbidden,
            _ => GatewayErrorKind::NotFound,
        };
        GatewayError::new(kind, "cannot open the file").with_source(e).into()
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(refused)?;
    let meta = file.metadata().map_err(refused)?;
    if !meta.is_file() {
        return Err(Error::client(Kind::NotFound, "not a regular file"));
    }
    Ok((Arc::new(file), meta))
}

/// The validators of the file whose fstat is `m` in content coding `coding`: its `ETag`, its modification time
/// and that as `Last-Modified`.
fn validators_of(m: &Metadata, coding: Option<&str>) -> note::Validators {
    // Hex digits, `"`, `-`, `.` and a coding's name: always a valid field value.
    let etag = HeaderValue::from_maybe_shared(bytes::Bytes::from(etag(m, coding))).ok();
    let modified = m.modified().ok();
    (etag, modified, modified.map(http_date))
}

/// A strong entity tag from what identifies this file's bytes without reading them: inode, size and
/// modification time to the nanosecond; a precompressed representation is tagged with its coding.
fn etag(m: &Metadata, coding: Option<&str>) -> String {
    let mut tag = String::with_capacity(64);
    tag.push('"');
    push_hex(&mut tag, m.ino());
    tag.push('-');
    push_hex(&mut tag, m.len());
    tag.push('-');
    // As `{:x}` of the signed value: two's complement for a time before 1970.
    push_hex(&mut tag, m.mtime() as u64);
    tag.push('.');
    push_hex(&mut tag, m.mtime_nsec() as u64);
    if let Some(c) = coding {
        tag.push('-');
        tag.push_str(c);
    }
    tag.push('"');
    tag
}

/// `n` in lowercase hex, no leading zeros.
fn push_hex(out: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(char::from(b"0123456789abcdef"[((n >> (i * 4)) & 0xf) as usize]));
    }
}

/// The content codings a request accepts (RFC 9110 §12.5.3), best first; `q=0` refuses, `*` stands for any not
/// named. Only `br` and `gzip` matter here.
fn accepted_codings(headers: &HeaderMap) -> Vec<&'static str> {
    let mut q = [(None, "br"), (None, "gzip")];
    let mut star = None;
    for (coding, weight) in representation::weighted(headers, &header::ACCEPT_ENCODING) {
        match coding.as_str() {
            "*" => star = Some(weight),
            "x-gzip" => q[1].0 = Some(weight),
            c => {
                if let Some(slot) = q.iter_mut().find(|(_, name)| *name == c) {
                    slot.0 = Some(weight);
                }
            }
        }
    }
    let mut out: Vec<(f32, &'static str)> =
        q.iter().filter_map(|(w, name)| w.or(star).filter(|w| *w > 0.0).map(|w| (w, *name))).collect();
    // Stable: br before gzip at equal weight.
    out.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    out.into_iter().map(|(_, c)| c).collect()
}

/// The decoded request path, for a listing's title (a path that does not decode stays as sent).
fn percent_decoded(path: &str) -> String {
    meta::decode_segments(path).map(|s| format!("/{}", s.join("/"))).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_as_format_writes_it() {
        for n in [0u64, 1, 0xf, 0x10, 0xdead_beef, u64::MAX, (-5i64) as u64] {
            let mut s = String::new();
            push_hex(&mut s, n);
            assert_eq!(s, format!("{n:x}"));
        }
        assert_eq!(format!("{:x}", -5i64), format!("{:x}", (-5i64) as u64));
    }

    #[test]
    fn codings() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(accepted_codings(&h("gzip, deflate, br")), ["br", "gzip"]);
        assert_eq!(accepted_codings(&h("gzip;q=1, br;q=0.5")), ["gzip", "br"]);
        assert_eq!(accepted_codings(&h("br;q=0, gzip")), ["gzip"]);
        assert_eq!(accepted_codings(&h("*")), ["br", "gzip"]);
        assert_eq!(accepted_codings(&h("*;q=0, gzip")), ["gzip"]);
        assert_eq!(accepted_codings(&h("identity")), Vec::<&str>::new());
        assert_eq!(accepted_codings(&HeaderMap::new()), Vec::<&str>::new());
    }
}
