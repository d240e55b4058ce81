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
//! come from the open descriptor (`open_regular`'s fstat) on every request; a small file's bytes, held with its
//! kept descriptor ([`Held`]), are used only while that fstat agrees with the one they were read under.
//!
//! A note also keeps the descriptors it was served from open (the file's, and a sibling's once it was served, if
//! the note says it is a regular file): while the note holds, the name still leads to the inode that was opened,
//! so a request does not open or close it again. Each is shared as `Arc<File>` (reads take offsets: there is no
//! shared position), and a request holds its clone while it streams, so a note dropped meanwhile never cuts a
//! response. What the name can't tell (a `chmod`/`chown` of the file itself, or its last link gone) the
//! descriptor's own fstat, made on every request anyway, does: a ctime (to the nanosecond), mode, owner or group
//! other than when it was opened, or no link left, makes it stale ([`Kept::check`]): it is closed and the name
//! opened again. A descriptor lives only inside its note: it is closed when the note is dropped (the directory
//! changed, [`MAX_NOTED_FILES`] reached, the room dropped on reload), beyond [`MAX_OPEN_FILES`] a note keeps none,
//! and a sweep closes those whose note was not used for [`KEEP_OPEN_IDLE`] (a file deleted while no request
//! comes would otherwise keep its disk space).
//!
//! A kept regular file of at most [`HOLD_MAX_BYTES`] also has its bytes held with its descriptor, read once when
//! its ctime is settled ([`Held::take`] says why that makes them exact), at most [`MAX_HELD_BYTES`] per room;
//! they go with the descriptor.
//!
//! A look answers every request that arrived before it began, not only the one that made it (`crate::arrival`):
//! the directory's statx ([`Notes::file`], `Entry::looked`) and the fstat that finds a held file's bytes standing
//! ([`Kept::held_since`], `Held::looked`). Such a request is answered as of a moment within its own lifetime.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

/// Files noted per room at most; at the limit the notes are dropped and taken again as requests come.
pub const MAX_NOTED_FILES: usize = 4096;
/// Descriptors kept open per room at most (a file's and its served siblings'); beyond it, notes are taken without
/// one and their files opened by name on every request.
pub const MAX_OPEN_FILES: usize = 1024;
/// A kept descriptor whose note no request used for this long is closed by the sweep (within one more
/// [`SWEEP_EVERY`]).
pub const KEEP_OPEN_IDLE: Duration = Duration::from_secs(10);
/// How often the sweep of a room that keeps descriptors looks at them; it ends when none are kept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// [`KEEP_OPEN_IDLE`] in sweeps.
const IDLE_SWEEPS: u32 = (KEEP_OPEN_IDLE.as_secs() / SWEEP_EVERY.as_secs()) as u32;
/// The slots of a note's descriptors: the file's, then one per sibling in [`SIBLINGS`]' order.
const SLOTS: usize = 1 + SIBLINGS.len();
/// How long ago a directory must have changed for a note about it to be taken (the kernel stamps file times from
/// a clock that moves in ticks of up to 10 ms).
pub const SETTLED: Duration = Duration::from_millis(100);
/// The same on a file system that keeps whole seconds (its times have no nanoseconds; FAT keeps two seconds).
pub const SETTLED_COARSE: Duration = Duration::from_secs(3);

/// A regular file of at most this many bytes has them held with its kept descriptor, read once (docs/files.md,
/// "Small files' bytes"): requests whose fstat agrees with what was read are answered from memory.
pub const HOLD_MAX_BYTES: u64 = 16 * 1024;
/// Bytes held per room at most (counted while held, as kept descriptors are); beyond it, small files are read
/// on every request as larger ones are.
pub const MAX_HELD_BYTES: usize = 4 << 20;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What of a file's inode its name can't tell: a change to any of these (`chmod`, `chown`, a new ctime) makes a
/// kept descriptor stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Seen {
    fn of(m: &Metadata) -> Seen {
        Seen { ctime: (m.ctime(), m.ctime_nsec()), mode: m.mode(), uid: m.uid(), gid: m.gid() }
    }
}

/// A descriptor a note keeps open, and what its fstat said when it was opened; for a small file, also its bytes.
#[derive(Clone, Debug)]
pub struct Kept {
    file: Arc<File>,
    seen: Seen,
    held: Option<Arc<Held>>,
}

impl Kept {
    /// `file` as just opened by name, with its fstat `m`.
    pub fn new(file: Arc<File>, m: &Metadata) -> Kept {
        Kept { file, seen: Seen::of(m), held: None }
    }

    /// The descriptor and its fstat (one `statx`), while it stands for what was opened; None: stale (ctime, mode,
    /// owner or group changed, or no link left), or it could not be looked at.
    pub fn check(&self) -> Option<(Arc<File>, Metadata)> {
        let m = self.file.metadata().ok()?;
        (Seen::of(&m) == self.seen && m.nlink() > 0 && m.is_file()).then(|| (self.file.clone(), m))
    }

    /// The file's bytes held with the descriptor, if they are those of the file whose fstat (from [`Kept::check`])
    /// is `m`.
    pub fn held(&self, m: &Metadata) -> Option<Arc<Held>> {
        self.held.as_ref().filter(|h| Stat::of(&h.meta) == Stat::of(m)).cloned()
    }

    /// The held bytes, with no fstat of the request's own, when a look at the descriptor that found them standing
    /// began after the request `arrived` (crate::arrival): it is answered as of that look, a moment within its
    /// lifetime, as directory notes answer such requests.
    pub fn held_since(&self, arrived: Option<SystemTime>) -> Option<Arc<Held>> {
        let arrived = nanos(arrived?);
        self.held.as_ref().filter(|h| h.looked.load(Ordering::Relaxed) >= arrived).cloned()
    }

    /// Bytes are held with the descriptor.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// The descriptor.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
}

/// A moment as nanoseconds since 1970 (0 before; saturated far after).
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What of a file's fstat its held bytes stand for: any write, truncation or `touch` changes the ctime (and
/// most change the length or mtime too); the inode can't change under one descriptor, and is compared anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    seen: Seen,
    len: u64,
    mtime: (i64, i64),
    ino: u64,
}

impl Stat {
    fn of(m: &Metadata) -> Stat {
        Stat { seen: Seen::of(m), len: m.len(), mtime: (m.mtime(), m.mtime_nsec()), ino: m.ino() }
    }
}

/// A small file's bytes, read once, with what its responses say about them: the representation's validators as
/// the room writes them (its `ETag` and `Last-Modified` values, formatted once). Taken only by [`Held::take`].
pub struct Held {
    /// The whole file.
    pub bytes: Bytes,
    /// The `ETag` (the room's `etag()` of the fstat, with the coding of a sibling).
    pub etag: Option<HeaderValue>,
    pub modified: Option<SystemTime>,
    /// `Last-Modified`: `modified` as an HTTP date.
    pub last_modified: Option<HeaderValue>,
    /// The fstat they were read under (what a request's fstat must agree with, the answer's length, and what
    /// `Kept::held_since` gives).
    pub meta: Metadata,
    /// When the latest look at the descriptor that found them standing began ([`nanos`]).
    looked: AtomicU64,
    /// Gives the bytes back to the room's count when the last reference goes.
    _charge: Charge,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("len", &self.bytes.len()).field("etag", &self.etag).finish()
    }
}

impl Held {
    /// Reads the whole of `file`, whose fstat (from [`Kept::check`]) is `m`, if its bytes can be held: at most
    /// [`HOLD_MAX_BYTES`], within the room's [`MAX_HELD_BYTES`] (`room` counts them), and settled.
    ///
    /// Held bytes are used while the descriptor's fstat on each request agrees with the one they were read under,
    /// so they must not be able to change without the fstat changing. Every change to a file's bytes or length
    /// (write, truncate, fallocate...) sets its ctime from the kernel's clock, which moves in ticks: two changes
    /// within one tick leave the same ctime. So the clock is read first (`now`), then the file is fstat()ed, read
    /// whole, and fstat()ed again, and the bytes are held only if both fstats agree (ctime, mode, owner, length,
    /// mtime, inode), the read returned exactly the length, and the ctime is settled: at least [`SETTLED`]
    /// ([`SETTLED_COARSE`] without nanoseconds) before `now`. A change made before the first fstat is in what it
    /// says; any change after `now` (and so any change the read could have missed, or one to come) gets a ctime
    /// later than the settled one, which the second fstat, or the fstat every request makes, sees: "racy git"'s
    /// rule, as directory notes use it. A file not yet settled is not held (it is read on each request, and held
    /// by a later one). What this can't see: a writer that changes the bytes without a new ctime (a store through
    /// a shared mmap into a page already dirty; a write stalled for longer than [`SETTLED`] between setting the
    /// ctime and copying its bytes), as the ETag can't either.
    pub fn take(
        file: &File,
        m: &Metadata,
        room: &Arc<AtomicUsize>,
        validators: impl FnOnce(&Metadata) -> Validators,
    ) -> Option<Held> {
        if m.len() > HOLD_MAX_BYTES {
            return None;
        }
        let len = usize::try_from(m.len()).ok()?;
        let charge = Charge::take(room, len)?;
        let now = SystemTime::now();
        let first = file.metadata().ok()?;
        let stat = Stat::of(&first);
        if stat != Stat::of(m) || !first.is_file() || !settled(&first, now) {
            return None;
        }
        // One byte more than the length: a read that returns exactly the length found the end of the file there.
        let mut buf = vec![0u8; len + 1];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let second = file.metadata().ok()?;
        if got != len || Stat::of(&second) != stat {
            return None;
        }
        buf.truncate(len);
        let (etag, modified, last_modified) = validators(&first);
        let looked = AtomicU64::new(nanos(now));
        Some(Held { bytes: Bytes::from(buf), etag, modified, last_modified, meta: first, looked, _charge: charge })
    }

    /// A look at the descriptor that began at `at` found these bytes standing (`Kept::check`, then `Kept::held`).
    pub fn looked_at(&self, at: SystemTime) {
        self.looked.fetch_max(nanos(at), Ordering::Relaxed);
    }
}

/// What [`Held`] keeps of a file's validators, from its fstat: the `ETag` value, the modification time and its
/// `Last-Modified` value.
pub type Validators = (Option<HeaderValue>, Option<SystemTime>, Option<HeaderValue>);

/// Bytes counted against a room's [`MAX_HELD_BYTES`] until dropped.
struct Charge {
    n: usize,
    room: Arc<AtomicUsize>,
}

impl Charge {
    /// `n` more bytes counted in `room`, if they fit.
    fn take(room: &Arc<AtomicUsize>, n: usize) -> Option<Charge> {
        room.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            held.checked_add(n).filter(|&sum| sum <= MAX_HELD_BYTES)
        })
        .ok()?;
        Some(Charge { n, room: room.clone() })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.room.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// A note as a request uses it: what the siblings are and the file's kept descriptor (a sibling's is asked for
/// with [`Notes::kept`]: small, since it travels with the request's lookup).
#[derive(Clone, Debug)]
pub struct Noted {
    /// Which note (taken again, it is another).
    id: u64,
    pub siblings: [Sibling; 2],
    pub file: Option<Kept>,
}

/// One file's note.
struct Entry {
    key: DirKey,
    id: u64,
    siblings: [Sibling; 2],
    kept: [Option<Kept>; SLOTS],
    /// The sweep count when a request last used it.
    used: u32,
    /// When the last look at the directory that found `key` began: a request that arrived before it may use
    /// the note without a look of its own ([`Notes::file`]).
    looked: SystemTime,
}

impl Entry {
    fn kept_count(&self) -> usize {
        self.kept.iter().filter(|k| k.is_some()).count()
    }
}

type Map = HashMap<OsString, Entry, BuildHasherDefault<PathHasher>>;

#[derive(Default)]
struct Inner {
    map: Map,
    /// Descriptors kept in `map` (counted in [`KEPT_IN_PROCESS`] too).
    open: usize,
    /// Sweeps so far.
    sweeps: u32,
    /// A sweep task is running.
    sweeping: bool,
    /// Notes taken so far: the next one's id.
    taken: u64,
}

impl Inner {
    /// `n` kept descriptors are let go.
    fn closed(&mut self, n: usize) {
        self.open -= n;
        KEPT_IN_PROCESS.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts one more kept descriptor, if this room and the process may keep another.
    fn may_keep(&mut self) -> bool {
        if self.open >= MAX_OPEN_FILES {
            return false;
        }
        if KEPT_IN_PROCESS.fetch_add(1, Ordering::Relaxed) >= process_budget() {
            KEPT_IN_PROCESS.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.open += 1;
        true
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The room is gone (a reload): its descriptors close with the map.
        KEPT_IN_PROCESS.fetch_sub(self.open, Ordering::Relaxed);
    }
}

/// Descriptors kept by every room of the process.
static KEPT_IN_PROCESS: AtomicUsize = AtomicUsize::new(0);

/// How many descriptors all rooms together may keep: a quarter of the process's soft limit on open files
/// (RLIMIT_NOFILE, read once), so that kept files never take the descriptors connections need (with the common
/// soft limit of 1,024: 256 in all).
fn process_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the struct it is given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        let soft = if ok { usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX) } else { 1024 };
        soft / OPEN_FILES_SHARE
    })
}

/// The share of the soft limit on open files that kept descriptors may take, as its reciprocal.
pub const OPEN_FILES_SHARE: usize = 4;

/// The notes of one room, by a file's path (as joined under the root).
#[derive(Default)]
pub struct Notes {
    inner: Mutex<Inner>,
    /// Bytes held with kept descriptors (and by responses still being sent from them), at most [`MAX_HELD_BYTES`].
    held: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Notes")
            .field("files", &inner.map.len())
            .field("open", &inner.open)
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish()
    }
}

impl Notes {
    /// `path` names a regular file (no symlink) in a settled directory: its note. None: no note can be used or
    /// taken (the directory changed a moment ago or can't be looked at, the name is no regular file, or a
    /// symlink): look the path up as usual. A note that no longer holds is dropped here, with its descriptors.
    ///
    /// One `statx` (the directory) when the note holds; three more (`lstat` of the name and of both siblings)
    /// when it is taken.
    pub fn file(&self, path: &Path, arrived: Option<SystemTime>) -> Option<Noted> {
        let (dir, _) = split(path)?;
        // A request that arrived before the last look at the directory began is answered as of that look: a
        // moment within its own lifetime (crate::arrival), so what a look of its own would have given.
        if let Some(arrived) = arrived
            && let Some(noted) = self.used(path, |e| e.looked >= arrived)
        {
            return Some(noted);
        }
        // Before the directory is looked at: a change after this moment gets later times than one settled
        // before it, and a request that arrived before it may share this look.
        let now = SystemTime::now();
        let Some(m) = fs::metadata(dir).ok().filter(|m| settled(m, now)) else {
            self.forget(path);
            return None;
        };
        let key = DirKey::of(&m);
        let looked = |e: &mut Entry| {
            let holds = e.key == key;
            if holds {
                e.looked = e.looked.max(now);
            }
            holds
        };
        if let Some(noted) = self.used(path, looked) {
            return Some(noted);
        }
        // Taken again below, or not at all: what was kept under the old times goes now.
        self.forget(path);
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
        let mut inner = self.lock();
        // Dropped once the lock is let go: closing descriptors is no work to do under it.
        let mut dropped = None;
        if inner.map.len() >= MAX_NOTED_FILES {
            dropped = Some(std::mem::take(&mut inner.map));
            let open = inner.open;
            inner.closed(open);
        }
        let used = inner.sweeps;
        inner.taken += 1;
        let id = inner.taken;
        let entry = Entry { key, id, siblings, kept: Default::default(), used, looked: now };
        let old = inner.map.insert(path.as_os_str().to_owned(), entry);
        if let Some(old) = &old {
            // Another request took it meanwhile.
            inner.closed(old.kept_count());
        }
        drop(inner);
        drop((dropped, old));
        Some(Noted { id, siblings, file: None })
    }

    /// The note of `path` as a request uses it, marked used, if `holds` says it stands.
    fn used(&self, path: &Path, holds: impl FnOnce(&mut Entry) -> bool) -> Option<Noted> {
        let mut inner = self.lock();
        let sweeps = inner.sweeps;
        let e = inner.map.get_mut(path.as_os_str())?;
        if !holds(e) {
            return None;
        }
        e.used = sweeps;
        Some(Noted { id: e.id, siblings: e.siblings, file: e.kept[0].clone() })
    }

    /// The descriptor `noted` (the note of `path`) keeps in `slot` (1 + a sibling's index in [`SIBLINGS`]).
    pub fn kept(&self, path: &Path, noted: &Noted, slot: usize) -> Option<Kept> {
        let inner = self.lock();
        inner.map.get(path.as_os_str()).filter(|e| e.id == noted.id).and_then(|e| e.kept.get(slot)?.clone())
    }

    /// After a request opened `slot` of `noted` (the note of `path`) by name: keeps `new` in the note, in place
    /// of what it kept there (stale); None only drops that. Nothing is kept when the note changed meanwhile, the
    /// slot is a sibling the note does not say is a regular file, [`MAX_OPEN_FILES`] are kept, or no sweep can
    /// run (no tokio runtime).
    pub fn keep(self: &Arc<Self>, path: &Path, noted: &Noted, slot: usize, new: Option<Kept>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(e) = inner.map.get_mut(path.as_os_str()).filter(|e| e.id == noted.id) else { return };
        let old = e.kept[slot].take();
        let regular = slot == 0 || e.siblings[slot - 1] == Sibling::Regular;
        let sweeps = inner.sweeps;
        let kept = match new {
            Some(new) if regular && (inner.sweeping || Notes::sweep_later(self)) => {
                inner.sweeping = true;
                Some(new)
            }
            _ => None,
        };
        if old.is_some() {
            inner.closed(1);
        }
        if let Some(new) = kept
            && inner.may_keep()
            && let Some(e) = inner.map.get_mut(path.as_os_str())
        {
            e.kept[slot] = Some(new);
            e.used = sweeps;
        }
        drop(guard);
        drop(old);
    }

    /// Whether [`Notes::hold`] may hold the bytes of the file whose fstat (from [`Kept::check`]) is `m`: small
    /// enough, room left, its ctime settled. No system call: asked on each request that finds no bytes held.
    pub fn may_hold(&self, m: &Metadata) -> bool {
        m.len() <= HOLD_MAX_BYTES
            && self.held.load(Ordering::Relaxed).saturating_add(m.len() as usize) <= MAX_HELD_BYTES
            && settled(m, SystemTime::now())
    }

    /// Reads and holds the bytes of `file`, kept in `slot` of `noted` (the note of `path`), whose fstat is `m`
    /// ([`Held::take`] says when it can), with the validators `validators` makes of its fstat. The bytes are
    /// kept with the descriptor while the note keeps it (the note changed meanwhile: they answer only this
    /// request). None: not held; read the file.
    pub fn hold(
        &self,
        path: &Path,
        noted: &Noted,
        slot: usize,
        (file, m): (&Arc<File>, &Metadata),
        validators: impl FnOnce(&Metadata) -> Validators,
    ) -> Option<Arc<Held>> {
        let held = Arc::new(Held::take(file, m, &self.held, validators)?);
        let mut inner = self.lock();
        let old = inner
            .map
            .get_mut(path.as_os_str())
            .filter(|e| e.id == noted.id)
            .and_then(|e| e.kept.get_mut(slot)?.as_mut())
            .filter(|k| Arc::ptr_eq(&k.file, file))
            .map(|k| k.held.replace(held.clone()));
        drop(inner);
        drop(old);
        Some(held)
    }

    /// Starts the sweep task; false without a tokio runtime.
    fn sweep_later(self: &Arc<Self>) -> bool {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return false };
        rt.spawn(sweep(Arc::downgrade(self)));
        true
    }

    /// Closes the descriptors whose note was not used for [`KEEP_OPEN_IDLE`]; false (and the sweep ends) when
    /// none are left.
    fn sweep_once(&self) -> bool {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.sweeps = inner.sweeps.wrapping_add(1);
        let mut closed = Vec::new();
        for e in inner.map.values_mut() {
            if inner.sweeps.wrapping_sub(e.used) > IDLE_SWEEPS {
                closed.extend(e.kept.iter_mut().filter_map(Option::take));
            }
        }
        inner.closed(closed.len());
        let more = inner.open > 0;
        inner.sweeping = more;
        drop(guard);
        drop(closed);
        more
    }

    /// Drops the note of `path` and what it keeps open.
    fn forget(&self, path: &Path) {
        let mut inner = self.lock();
        let old = inner.map.remove(path.as_os_str());
        if let Some(old) = &old {
            inner.closed(old.kept_count());
        }
        drop(inner);
        drop(old);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the map was held leaves nothing half-written that matters: notes are only hints, and the
        // count of descriptors is changed beside the change it counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sweep of one room's kept descriptors: every [`SWEEP_EVERY`] until none are kept or the room is gone.
async fn sweep(notes: Weak<Notes>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(notes) = notes.upgrade() else { return };
        if !notes.sweep_once() {
            return;
        }
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

    /// A directory of `n` files, settled (bounded wait), and their paths.
    fn settled_dir(n: usize) -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..n).map(|i| d.path().join(format!("f{i}"))).collect();
        for p in &paths {
            fs::write(p, b"x").unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !settled(&fs::metadata(d.path()).unwrap(), SystemTime::now()) {
            assert!(std::time::Instant::now() < deadline, "the directory did not settle");
            std::thread::sleep(Duration::from_millis(20));
        }
        (d, paths)
    }

    fn keep_opened(notes: &Arc<Notes>, path: &Path) -> Noted {
        let noted = notes.file(path, None).expect("noted");
        let file = Arc::new(File::open(path).unwrap());
        let m = file.metadata().unwrap();
        notes.keep(path, &noted, 0, Some(Kept::new(file, &m)));
        noted
    }

    /// A request that arrived before the last look at the directory shares it, even when the directory has
    /// changed since (it is answered as of that look, within its lifetime); one that arrived after the change
    /// looks for itself and sees it.
    #[test]
    fn a_look_serves_the_requests_that_arrived_before_it() {
        let (d, paths) = settled_dir(1);
        let notes = Notes::default();
        let before = SystemTime::now();
        let first = notes.file(&paths[0], None).expect("noted");
        fs::write(d.path().join("f0.gz"), b"zz").unwrap();
        let shared = notes.file(&paths[0], Some(before)).expect("shared");
        assert_eq!((shared.id, shared.siblings), (first.id, [Sibling::Absent, Sibling::Absent]));
        // Arrived after the change: the directory changed a moment ago, so no note is used or taken.
        assert!(notes.file(&paths[0], Some(SystemTime::now())).is_none());
        // Nor is the old one shared any more: it was forgotten with the look that saw the change.
        assert!(notes.file(&paths[0], Some(before)).is_none());
    }

    /// At most MAX_OPEN_FILES descriptors are kept; notes beyond it are taken without one. The sweep closes them
    /// all once unused for KEEP_OPEN_IDLE, and ends.
    #[tokio::test]
    async fn kept_descriptors_are_bounded_and_swept() {
        // The process-wide share (a quarter of `ulimit -n`, shared with the other tests here) must not be the
        // bound this test reaches; tests/files.rs covers that one with a small limit of its own.
        if process_budget() < 2 * MAX_OPEN_FILES {
            eprintln!("skipped: ulimit -n is below {}", 2 * MAX_OPEN_FILES * OPEN_FILES_SHARE);
            return;
        }
        let (_d, paths) = settled_dir(MAX_OPEN_FILES + 8);
        let notes = Arc::new(Notes::default());
        for p in &paths {
            keep_opened(&notes, p);
        }
        assert_eq!(notes.lock().open, MAX_OPEN_FILES);
        let kept = |notes: &Notes| notes.lock().map.values().map(Entry::kept_count).sum::<usize>();
        assert_eq!(kept(&notes), MAX_OPEN_FILES);
        assert_eq!(notes.lock().map.len(), paths.len(), "every file is noted");
        // Found again: what was kept is handed out, the rest are noted without.
        let handed = paths.iter().filter(|p| notes.file(p, None).unwrap().file.is_some()).count();
        assert_eq!(handed, MAX_OPEN_FILES);

        // Used within KEEP_OPEN_IDLE: kept; after, closed, and the sweep ends.
        for _ in 0..IDLE_SWEEPS {
            assert!(notes.sweep_once());
        }
        assert_eq!(notes.lock().open, MAX_OPEN_FILES);
        keep_opened(&notes, &paths[0]);
        assert!(notes.sweep_once(), "one was used a sweep ago");
        assert_eq!(notes.lock().open, 1);
        for _ in 1..IDLE_SWEEPS {
            assert!(notes.sweep_once());
        }
        assert!(!notes.sweep_once(), "unused for more than IDLE_SWEEPS sweeps");
        let open = notes.lock().open;
        assert_eq!((open, kept(&notes)), (0, 0));
        assert!(!notes.lock().sweeping);
    }

    /// A kept descriptor is stale once its file's ctime, mode or links change; a note whose directory changed is
    /// dropped with what it keeps.
    #[tokio::test]
    async fn kept_descriptors_go_stale() {
        use std::os::unix::fs::PermissionsExt;
        let (d, paths) = settled_dir(2);
        let notes = Arc::new(Notes::default());
        keep_opened(&notes, &paths[0]);
        let kept = notes.file(&paths[0], None).unwrap().file.unwrap();
        assert!(kept.check().is_some());
        fs::set_permissions(&paths[0], fs::Permissions::from_mode(0o600)).unwrap();
        assert!(kept.check().is_none(), "chmod: stale");

        let noted = keep_opened(&notes, &paths[1]);
        let kept = notes.file(&paths[1], None).unwrap().file.unwrap();
        assert!(kept.check().is_some());
        fs::remove_file(&paths[1]).unwrap();
        assert!(kept.check().is_none(), "no link left: stale");
        // The directory changed: the note (and its descriptor) goes with the next look.
        assert!(notes.file(&paths[1], None).is_none());
        assert!(!notes.lock().map.contains_key(paths[1].as_os_str()));
        // Nothing is kept under a note that is gone.
        notes.keep(&paths[1], &noted, 0, Some(kept));
        assert!(!notes.lock().map.contains_key(paths[1].as_os_str()));
        drop(d);
    }

    /// A sibling's descriptor is kept only when the note says it is a regular file (never an absent name's or a
    /// symlink's), and handed out by `kept` while the note holds.
    #[tokio::test]
    async fn sibling_descriptors_only_for_regular_siblings() {
        let (d, paths) = settled_dir(1);
        let gz = d.path().join("f0.gz");
        fs::write(&gz, b"gz").unwrap();
        std::os::unix::fs::symlink(&gz, d.path().join("f0.br")).unwrap();
        // The directory changed: wait until it settles again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !settled(&fs::metadata(d.path()).unwrap(), SystemTime::now()) {
            assert!(std::time::Instant::now() < deadline, "the directory did not settle");
            std::thread::sleep(Duration::from_millis(20));
        }
        let notes = Arc::new(Notes::default());
        let noted = notes.file(&paths[0], None).unwrap();
        assert_eq!(noted.siblings, [Sibling::Ask, Sibling::Regular]);
        let open = |p: &Path| {
            let f = Arc::new(File::open(p).unwrap());
            let m = f.metadata().unwrap();
            Kept::new(f, &m)
        };
        notes.keep(&paths[0], &noted, 1, Some(open(&gz)));
        notes.keep(&paths[0], &noted, 2, Some(open(&gz)));
        assert!(notes.kept(&paths[0], &noted, 1).is_none(), "a symlinked sibling is never kept");
        assert!(notes.kept(&paths[0], &noted, 2).is_some());
        assert_eq!(notes.lock().open, 1);
        // A stale handle (the note taken again) neither finds nor keeps anything.
        let old = Noted { id: noted.id + 1, ..noted.clone() };
        assert!(notes.kept(&paths[0], &old, 2).is_none());
        notes.keep(&paths[0], &old, 0, Some(open(&paths[0])));
        assert_eq!(notes.lock().open, 1);
    }

    /// Waits (bounded) until `path`'s times are settled.
    fn wait_settled(path: &Path) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !settled(&fs::metadata(path).unwrap(), SystemTime::now()) {
            assert!(std::time::Instant::now() < deadline, "{} did not settle", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn no_validators(_: &Metadata) -> Validators {
        (None, None, None)
    }

    /// A room holds at most MAX_HELD_BYTES, counted while held: what a note kept is given back when the note goes
    /// (forgotten, swept), and only what fits is held. Files over HOLD_MAX_BYTES are never held.
    #[tokio::test]
    async fn held_bytes_are_bounded_per_room_and_given_back() {
        let d = tempfile::tempdir().unwrap();
        let fit = MAX_HELD_BYTES / HOLD_MAX_BYTES as usize;
        let paths: Vec<_> = (0..fit + 2).map(|i| d.path().join(format!("f{i}"))).collect();
        for (i, p) in paths.iter().enumerate() {
            fs::write(p, vec![i as u8; HOLD_MAX_BYTES as usize]).unwrap();
        }
        let over = d.path().join("over");
        fs::write(&over, vec![0u8; HOLD_MAX_BYTES as usize + 1]).unwrap();
        wait_settled(&over);
        let open = |p: &Path| {
            let f = File::open(p).unwrap();
            let m = f.metadata().unwrap();
            (f, m)
        };
        let room = Arc::new(AtomicUsize::new(0));
        let (f, m) = open(&over);
        assert!(Held::take(&f, &m, &room, no_validators).is_none(), "larger than HOLD_MAX_BYTES");
        let mut held = Vec::new();
        for p in &paths {
            let (f, m) = open(p);
            held.extend(Held::take(&f, &m, &room, no_validators));
        }
        assert_eq!((held.len(), room.load(Ordering::Relaxed)), (fit, MAX_HELD_BYTES));
        assert!(held.iter().enumerate().all(|(i, h)| h.bytes == vec![i as u8; HOLD_MAX_BYTES as usize]));
        // One given back: one more fits.
        held.pop();
        let (f, m) = open(&paths[fit]);
        held.extend(Held::take(&f, &m, &room, no_validators));
        assert_eq!((held.len(), room.load(Ordering::Relaxed)), (fit, MAX_HELD_BYTES));
        drop(held);
        assert_eq!(room.load(Ordering::Relaxed), 0);

        // Through a room's notes: held with the kept descriptor, handed out while the fstat agrees, counted until
        // the note goes.
        let notes = Arc::new(Notes::default());
        wait_settled(d.path());
        let hold = |p: &Path| {
            let noted = keep_opened(&notes, p);
            let (f, m) = noted_again(&notes, p).file.unwrap().check().unwrap();
            assert!(notes.may_hold(&m));
            notes.hold(p, &noted, 0, (&f, &m), no_validators).expect("held")
        };
        let held = hold(&paths[0]);
        let kept = notes.file(&paths[0], None).unwrap().file.unwrap();
        let (_, m) = kept.check().unwrap();
        assert!(Arc::ptr_eq(&kept.held(&m).expect("kept with the descriptor"), &held));
        assert_eq!(notes.held.load(Ordering::Relaxed), HOLD_MAX_BYTES as usize);
        drop((held, kept));
        notes.forget(&paths[0]);
        assert_eq!(notes.held.load(Ordering::Relaxed), 0, "given back with the note");
        drop(hold(&paths[1]));
        for _ in 0..=IDLE_SWEEPS {
            notes.sweep_once();
        }
        assert_eq!(notes.held.load(Ordering::Relaxed), 0, "given back with the swept descriptor");
        // A full room holds nothing more (asked before reading).
        notes.held.store(MAX_HELD_BYTES, Ordering::Relaxed);
        let (_, m) = open(&paths[2]);
        assert!(!notes.may_hold(&m));
        notes.held.store(0, Ordering::Relaxed);
    }

    /// The note of `path`, which must be taken.
    fn noted_again(notes: &Notes, path: &Path) -> Noted {
        notes.file(path, None).expect("noted")
    }

    /// Bytes are held only when they can't change unseen: not while the file's ctime is within SETTLED of the
    /// read (nor in the future), and not when the file changed since the fstat the request made.
    #[test]
    fn unsettled_or_changed_files_are_not_held() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let room = Arc::new(AtomicUsize::new(0));
        // Written and taken at once: not held. Only a round that took less than SETTLED (less a clock tick) says
        // so; a slower one (a loaded machine) is tried again, a bounded number of times.
        let mut judged = false;
        for i in 0..20u8 {
            let before = SystemTime::now();
            let f = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&p).unwrap();
            f.write_all_at(&[i; 100], 0).unwrap();
            let m = f.metadata().unwrap();
            let held = Held::take(&f, &m, &room, no_validators);
            if SystemTime::now().duration_since(before).is_ok_and(|t| t < SETTLED - Duration::from_millis(20)) {
                assert!(held.is_none(), "a file changed within SETTLED of the read is not held");
                judged = true;
                break;
            }
        }
        assert!(judged, "no round was quick enough to judge");
        assert_eq!(room.load(Ordering::Relaxed), 0, "nothing counted for what was not held");

        // Settled: held, exactly its bytes.
        wait_settled(&p);
        let f = File::open(&p).unwrap();
        let m = f.metadata().unwrap();
        let held = Held::take(&f, &m, &room, no_validators).expect("settled: held");
        assert_eq!(held.bytes.len(), 100);
        drop(held);

        // Changed since the request's fstat (`m`): not held, even once settled again.
        fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(b"changed", 0).unwrap();
        wait_settled(&p);
        assert!(Held::take(&f, &m, &room, no_validators).is_none());

        // A modification time in the future is never settled.
        let later = SystemTime::now() + Duration::from_secs(3600);
        fs::OpenOptions::new().write(true).open(&p).unwrap().set_modified(later).unwrap();
        let m = f.metadata().unwrap();
        // Once its ctime (set by the change) is settled, the future mtime alone is what keeps it from being held.
        let changed = SystemTime::UNIX_EPOCH + Duration::new(m.ctime() as u64, m.ctime_nsec() as u32);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let margin = if m.ctime_nsec() == 0 { SETTLED_COARSE } else { 2 * SETTLED };
        while SystemTime::now().duration_since(changed).is_ok_and(|t| t < margin) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Held::take(&f, &m, &room, no_validators).is_none());
    }
}
