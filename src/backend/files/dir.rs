//! A directory listing (`browse = true`): HTML, or JSON for `Accept: application/json`, in the HTTP/FTP gateway's
//! shapes (`http::listing`). Dotfiles are left out unless `dotfiles`; entries are what a request for them would
//! find (a symlink is listed as what it points to; one that leads nowhere, or out with `symlinks = "inside"`, and
//! FIFOs, sockets and devices are left out). Read on tokio's blocking pool: a directory may be large.

use std::path::PathBuf;

use http::{Request, Response};

use super::MAX_LISTING_ENTRIES;
use crate::backend::meta;
use crate::config::FileOptions;
use crate::error::{Error, Kind};
use crate::http::Body;
use crate::http::listing::{self, Entry, EntryKind};

/// The listing of `dir` for `req`; `title` is the decoded request path.
pub(super) async fn listing<B>(
    req: &Request<B>,
    dir: PathBuf,
    title: String,
    at_root: bool,
    opts: FileOptions,
    root: PathBuf,
) -> Result<Response<Body>, Error> {
    let entries = tokio::task::spawn_blocking(move || read(&dir, &opts, &root))
        .await
        .map_err(|e| Error::local(Kind::Internal, "listing a directory failed").with_source(e))??;
    Ok(listing::response(req.method(), req.headers(), &title, &entries, at_root, "hopgate"))
}

fn read(dir: &std::path::Path, opts: &FileOptions, root: &std::path::Path) -> Result<Vec<Entry>, Error> {
    let unreadable = |e: std::io::Error| Error::client(Kind::Forbidden, "the directory can't be read").with_source(e);
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir).map_err(unreadable)? {
        let Ok(item) = item else { continue };
        let Ok(name) = item.file_name().into_string() else { continue };
        if name.starts_with('.') && !opts.dotfiles {
            continue;
        }
        let Ok(Some(m)) = meta::stat_under(root, &item.path(), opts.symlinks) else { continue };
        let kind = if m.is_dir() {
            EntryKind::Dir
        } else if m.is_file() {
            EntryKind::File
        } else {
            continue;
        };
        if entries.len() == MAX_LISTING_ENTRIES {
            return Err(Error::client(
                Kind::Forbidden,
                format!("the directory has more than {MAX_LISTING_ENTRIES} entries to list"),
            ));
        }
        let size = (kind == EntryKind::File).then_some(m.len());
        entries.push(Entry { name, kind, size, modified: m.modified().ok(), link_target: None });
    }
    Ok(entries)
}
