//! Directory notes: what the room learned about a file's name and its precompressed siblings, kept while the
//! directory they are in is unchanged (docs/files.md, "What is noted between requests").
//!
//! Whether a name is a regular file (not a symlink) and whether `NAME.br` / `NAME.gz` exist can only change by a
//! change to the directory that holds them (create, unlink, rename, link, chmod/chown of the directory), and
//! every such change sets the directory's ctime and mtime. So one `statx` of the directory stands for the path's
//! own `stat` and the siblings' two: the note is used while the directory's device, inode, ctime and mtime (to
//! the nanosecond) are those it was taken under, and is taken again otherwise.
//!
//! A directory changed within [`SETTLED`] of now (within [`SETTLED_COARSE`] on a file system whose times have no
//! nanoseconds) is not noted ("racy" in git's words): a second change within the same clock tick would leave its
//! times as they were. What a name points to is never noted: a symlink (the file or a sibling) is looked up on
//! every request, as without notes. Nothing here decides what the file holds: its length, validators and type
//! come from the open descriptor (`open_regular`'s fstat) on every request.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Files noted per room at most; at the limit the notes are dropped and taken again as requests come.
pub const MAX_NOTED_FILES: usize = 4096;
/// How long ago a directory must have changed for a note about it to be taken (the kernel stamps file times from
/// a clock that moves in ticks of up to 10 ms).
pub const SETTLED: Duration = Duration::from_millis(100);
/// The same on a file system that keeps whole seconds (its times have no nanoseconds; FAT keeps two seconds).
pub const SETTLED_COARSE: Duration = Duration::from_secs(3);

/// The precompressed siblings, in the order they are preferred at equal weight: content coding and suffix.
pub const SIBLINGS: [(&str, &str); 2] = [("br", ".br"), ("gzip", ".gz")];

/// What a note says about one sibling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sibling {
    /// No regular file of that name (nothing, a directory, a FIFO...).
    Absent,
    /// A regular file, no symlink.
    Regular,
    /// A symlink (or a name that could not be looked at): looked up on every request.
    Ask,
}

/// A directory's identity and times: while they are the same, its entries are.
#[derive(Clone, Copy, PartialEq, Eq)]
struct DirKey {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DirKey {
    fn of(m: &Metadata) -> DirKey {
        DirKey { dev: m.dev(), ino: m.ino(), mtime: (m.mtime(), m.mtime_nsec()), ctime: (m.ctime(), m.ctime_nsec()) }
    }
}

type Map = HashMap<OsString, (DirKey, [Sibling; 2]), BuildHasherDefault<PathHasher>>;

/// The notes of one room, by a file's path (as joined under the root).
#[derive(Default)]
pub struct Notes {
    map: Mutex<Map>,
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notes").field("files", &self.lock().len()).finish()
    }
}

impl Notes {
    /// `path` names a regular file (no symlink) in a settled directory: what its siblings are. None: no note can
    /// be used or taken (the directory changed a moment ago or can't be looked at, the name is no regular file,
    /// or a symlink): look the path up as usual.
    ///
    /// One `statx` (the directory) when the note holds; three more (`lstat` of the name and of both siblings)
    /// when it is taken.
    pub fn file(&self, path: &Path) -> Option<[Sibling; 2]> {
        let (dir, _) = split(path)?;
        // Before the directory is looked at: a change after this moment gets later times than one settled
        // before it.
        let now = SystemTime::now();
        let m = fs::metadata(dir).ok()?;
        if !settled(&m, now) {
            return None;
        }
        let key = DirKey::of(&m);
        if let Some((k, siblings)) = self.lock().get(path.as_os_str())
            && *k == key
        {
            return Some(*siblings);
        }
        if !fs::symlink_metadata(path).ok()?.file_type().is_file() {
            return None;
        }
        let mut siblings = [Sibling::Absent; 2];
        let mut name = OsString::with_capacity(path.as_os_str().len() + 3);
        for (slot, (_, ext)) in siblings.iter_mut().zip(SIBLINGS) {
            name.clear();
            name.push(path.as_os_str());
            name.push(ext);
            *slot = match fs::symlink_metadata(&name) {
                Ok(m) if m.file_type().is_file() => Sibling::Regular,
                Ok(m) if m.file_type().is_symlink() => Sibling::Ask,
                Ok(_) => Sibling::Absent,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sibling::Absent,
                Err(_) => Sibling::Ask,
            };
        }
        let mut map = self.lock();
        if map.len() >= MAX_NOTED_FILES {
            map.clear();
        }
        map.insert(path.as_os_str().to_owned(), (key, siblings));
        Some(siblings)
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while the map was held leaves nothing half-written that matters: notes are only hints.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the directory last changed long enough before `now` that a later change can't leave its times as
/// they are.
fn settled(m: &Metadata, now: SystemTime) -> bool {
    let coarse = m.mtime_nsec() == 0 && m.ctime_nsec() == 0;
    let margin = if coarse { SETTLED_COARSE } else { SETTLED };
    let changed = |secs: i64, nsec: i64| {
        let (Ok(secs), Ok(nsec)) = (u64::try_from(secs), u32::try_from(nsec)) else { return None };
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nsec))
    };
    let (Some(c), Some(m)) = (changed(m.ctime(), m.ctime_nsec()), changed(m.mtime(), m.mtime_nsec())) else {
        return false;
    };
    // A time in the future (a clock set back, times set by hand) is never settled.
    now.duration_since(c.max(m)).is_ok_and(|d| d >= margin)
}

/// A path joined under the root (no `.` or empty segments, no trailing `/`): its directory and its last name,
/// without `Path::parent`'s walk over components. None for `/` itself.
pub fn split(path: &Path) -> Option<(&Path, &OsStr)> {
    let bytes = path.as_os_str().as_bytes();
    let cut = bytes.iter().rposition(|b| *b == b'/')?;
    let name = &bytes[cut + 1..];
    if name.is_empty() {
        return None;
    }
    let dir = if cut == 0 { &bytes[..1] } else { &bytes[..cut] };
    Some((Path::new(OsStr::from_bytes(dir)), OsStr::from_bytes(name)))
}

/// FNV-1a over a path's bytes, a word at a time: cheaper than SipHash for the one lookup per request. Flooding
/// is no concern here: only names that are regular files on disk are ever inserted, so a client can't fill a
/// bucket with names of its choosing.
#[derive(Default)]
struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top: spread the low ones up.
        self.0 ^ (self.0 >> 29).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_parent_and_file_name() {
        for p in ["/srv/www/a.txt", "/a", "/srv/www/sub/x.tar.gz"] {
            let p = Path::new(p);
            assert_eq!(split(p), Some((p.parent().unwrap(), p.file_name().unwrap())));
        }
        assert_eq!(split(Path::new("/")), None);
    }
}
