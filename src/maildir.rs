//! Maildir delivery: the layout Dovecot reads (`tmp/`, `new/`, `cur/`).
//!
//! Owns: file names derived from queue item ids, the durable write sequence
//! (write to `tmp/`, make the data durable, rename into `new/`, make the
//! name durable: see [`Flush`]), the clean-up of `tmp/` (a failed write
//! removes its part; files older than 36 h go at a mailbox's first open),
//! and mailbox paths under the data directory. Must not touch: quota
//! policy, PEC logic. A message is in the mailbox once
//! [`Maildir::deliver_once`] returns Ok.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// One mailbox directory.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    flush: Flush,
}

/// How a delivery becomes durable. With the first two a file appears
/// under its final name in `new/` only once its data is on disk, so a name
/// found after a crash is a whole message, and the delivery returns only
/// once the name is on disk too; the third leaves that to its caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flush {
    /// fsync of the file before its rename, then of `new/`: two device
    /// flushes per message, whatever else the filesystem holds.
    #[default]
    PerFile,
    /// syncfs(2) of the mailbox's filesystem before the rename and after
    /// it, each shared by every delivery in flight on that filesystem
    /// (and by the archive's links): under load, a few flushes for many
    /// messages. Linux only; meant for a data directory on a filesystem
    /// of its own, since each flush writes back whatever else is pending
    /// there.
    Filesystem,
    /// No flush at delivery: for a caller that has already committed a
    /// copy of the message elsewhere, keeps it until a later
    /// [`crate::fsync::sync_filesystem`] covers the file, and after a crash
    /// writes it again with [`Maildir::rewrite`] (a name in `new/` may then
    /// hold anything). See `mailsync`.
    Deferred,
}

/// Mailbox roots whose `tmp/`, `new/` and `cur/` (and folder marker) this
/// process created or found: opening them again costs no system call. A
/// root removed behind our back is forgotten at the first error that
/// says so, and created again at the next open.
fn known() -> std::sync::MutexGuard<'static, HashSet<PathBuf>> {
    static KNOWN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    KNOWN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Errors of Maildir delivery.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid mailbox address {0:?}")]
    BadAddress(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MaildirError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            // Whatever root `path` is under is no longer known to exist.
            known().retain(|root| !path.starts_with(root));
        }
        MaildirError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The directory of a mailbox address: `<base>/<domain>/<local>`, lower
/// case, refusing anything that could escape `base`.
pub fn mailbox_path(base: &Path, address: &str) -> Result<PathBuf, MaildirError> {
    let a = address.trim().to_lowercase();
    let (local, domain) = a
        .rsplit_once('@')
        .ok_or_else(|| MaildirError::BadAddress(address.into()))?;
    let safe = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains(['/', '\\', '\0'])
            && !s.starts_with('.')
    };
    if !safe(local) || !safe(domain) {
        return Err(MaildirError::BadAddress(address.into()));
    }
    Ok(base.join(domain).join(local))
}

/// Move the mailbox of a removed account out of the way, to
/// `<base>/.removed/<address>.<stamp>`, so that a mailbox created later
/// under the same address starts empty: mail is never handed to whoever
/// holds the address next, and never deleted by a removal either (an
/// operator archives or wipes the set-aside folder). None: there was no
/// mailbox.
pub fn set_aside(base: &Path, address: &str, stamp: &str) -> Result<Option<PathBuf>, MaildirError> {
    let from = mailbox_path(base, address)?;
    if !from.exists() {
        return Ok(None);
    }
    let aside = base.join(".removed");
    fs::create_dir_all(&aside).map_err(io(&aside))?;
    let to = aside.join(format!("{}.{stamp}", address.trim().to_lowercase()));
    fs::rename(&from, &to).map_err(io(&from))?;
    // Both directories' entries durable: the move is one or the other.
    for dir in [aside.as_path(), from.parent().unwrap_or(base)] {
        crate::fsync::sync_dir(dir).map_err(io(dir))?;
    }
    // The mailbox and its folders (`.Archivio`): made afresh, marker and
    // all, if the address is given again.
    known().retain(|p| !p.starts_with(&from));
    Ok(Some(to))
}

impl Maildir {
    /// Open (creating `tmp`, `new`, `cur` if needed), flushing each
    /// delivery on its own ([`Flush::PerFile`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Maildir, MaildirError> {
        let root = root.into();
        if !known().contains(&root) {
            for d in ["tmp", "new", "cur"] {
                let p = root.join(d);
                fs::create_dir_all(&p).map_err(io(&p))?;
            }
            sweep_tmp(&root.join("tmp"));
            known().insert(root.clone());
        }
        Ok(Maildir {
            root,
            flush: Flush::PerFile,
        })
    }

    /// The same mailbox, made durable the `flush` way.
    pub fn flushing(self, flush: Flush) -> Maildir {
        // Without syncfs there is no shared flush to wait for.
        let flush = if cfg!(target_os = "linux") {
            flush
        } else {
            Flush::PerFile
        };
        Maildir { flush, ..self }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How this mailbox is flushed.
    pub fn flush(&self) -> Flush {
        self.flush
    }

    /// Deliver under a name derived from `id`, unless a file of that id is
    /// already there: re-running a delivery after a crash never duplicates.
    /// `interrupted_before` says whether an earlier attempt may have been
    /// cut short (then `new/` and `cur/` are scanned, since an IMAP server
    /// may have moved the file and added flags); otherwise the rename into
    /// `new/` refuses to replace a file of that name, and delivery stays
    /// O(1) in the mailbox size. In a mailbox flushed at delivery, a file
    /// found is replaced where it is by a flushed copy: the try that wrote
    /// it may have been killed before its flush, or its flush failed (and a
    /// writeback error is reported once), yet finding it counts as
    /// delivered and a receipt follows.
    pub fn deliver_once(
        &self,
        id: &str,
        message: &[u8],
        interrupted_before: bool,
    ) -> Result<String, MaildirError> {
        if interrupted_before && let Some(found) = self.locate(id, message.len())? {
            let name = name_of(&found);
            if self.flush != Flush::Deferred {
                self.write_to(&name, &found, message, Place::Replace)?;
            }
            return Ok(name);
        }
        let name = file_name(id, message.len());
        let new = self.root.join("new").join(&name);
        self.write_to(&name, &new, message, Place::Keep)?;
        Ok(name)
    }

    /// [`Maildir::deliver_once`], as a hard link to `source` (the same
    /// bytes already stored elsewhere on this filesystem, e.g. the inbox
    /// copy of a message being archived): no data is written again, only
    /// the name, flushed as the mailbox says. Falls back to writing
    /// `message`.
    pub fn deliver_linked(
        &self,
        id: &str,
        message: &[u8],
        interrupted_before: bool,
        source: &Path,
    ) -> Result<String, MaildirError> {
        self.deliver_linked_from(id, message.len(), interrupted_before, source, || {
            Ok(std::borrow::Cow::Borrowed(message))
        })
    }

    /// [`Maildir::deliver_linked`] of `len` bytes that are in `source` and
    /// loaded by `load` only if the link cannot be made (another
    /// filesystem): a large message is not read to be archived.
    pub fn deliver_linked_from<'m>(
        &self,
        id: &str,
        len: usize,
        interrupted_before: bool,
        source: &Path,
        load: impl FnOnce() -> std::io::Result<std::borrow::Cow<'m, [u8]>>,
    ) -> Result<String, MaildirError> {
        if interrupted_before && let Some(found) = self.locate(id, len)? {
            // As in `deliver_once`: in a flushed mailbox, made again.
            if self.flush != Flush::Deferred {
                self.replace_linked(&found, source, len, load)?;
            }
            return Ok(name_of(&found));
        }
        let name = file_name(id, len);
        let new = self.root.join("new").join(&name);
        if same_size(source, len) {
            match fs::hard_link(source, &new) {
                Ok(()) => {
                    self.sync_names(&new)?;
                    return Ok(name);
                }
                // Delivered before: the file of this id stands (made
                // again in a flushed mailbox, as above).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.flush != Flush::Deferred {
                        self.replace_linked(&new, source, len, load)?;
                    }
                    return Ok(name);
                }
                Err(_) => {} // e.g. another filesystem: written instead
            }
        }
        let message = load().map_err(io(source))?;
        self.write_to(&name, &new, &message, Place::Keep)?;
        Ok(name)
    }

    /// Put `source` at `target` in place of the file an earlier try left
    /// there: as a link, or written from `load` if no link can be made;
    /// flushed as this mailbox says.
    fn replace_linked<'m>(
        &self,
        target: &Path,
        source: &Path,
        len: usize,
        load: impl FnOnce() -> std::io::Result<std::borrow::Cow<'m, [u8]>>,
    ) -> Result<(), MaildirError> {
        let name = name_of(target);
        let tmp = self.root.join("tmp").join(&name);
        if same_size(source, len) && fs::hard_link(source, &tmp).is_ok() {
            return match fs::rename(&tmp, target) {
                Ok(()) => self.sync_names(target),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    Err(io(target)(e))
                }
            };
        }
        let message = load().map_err(io(source))?;
        self.write_to(&name, target, &message, Place::Replace)
    }

    /// Where [`Maildir::deliver_once`] puts `id` (before any IMAP client
    /// moves it).
    pub fn new_path(&self, id: &str, len: usize) -> PathBuf {
        self.root.join("new").join(file_name(id, len))
    }

    /// The file an earlier delivery of `id` left, if any, in `new/` or
    /// `cur/` (a scan when not under its first name): worth asking only
    /// when an earlier try may have stored it (see
    /// [`Maildir::deliver_once`]).
    pub fn find(&self, id: &str, len: usize) -> Result<Option<String>, MaildirError> {
        Ok(self.locate(id, len)?.map(|p| name_of(&p)))
    }

    /// The content of the file of `id`, wherever [`Maildir::find`] finds
    /// it.
    pub fn read(&self, id: &str, len: usize) -> Result<Option<Vec<u8>>, MaildirError> {
        self.locate(id, len)?
            .map(|p| fs::read(&p).map_err(io(&p)))
            .transpose()
    }

    /// Every message file (in `new/` and `cur/`) whose item id is not
    /// one of `ids`.
    pub fn files_not_of(&self, ids: &[&str]) -> Result<Vec<PathBuf>, MaildirError> {
        let prefixes: Vec<String> = ids.iter().map(|id| format!("{},S=", safe_id(id))).collect();
        let mut out = Vec::new();
        for d in ["new", "cur"] {
            let dir = self.root.join(d);
            for e in fs::read_dir(&dir).map_err(io(&dir))? {
                let e = e.map_err(io(&dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !prefixes.iter().any(|p| name.starts_with(p)) {
                    out.push(e.path());
                }
            }
        }
        Ok(out)
    }

    /// The path of the file of `id`, in `new/` or `cur/`, whatever its
    /// size.
    pub fn path_of(&self, id: &str) -> Result<Option<PathBuf>, MaildirError> {
        // No file has that size: `locate` looks for the id's prefix.
        self.locate(id, usize::MAX)
    }

    /// Write `message` again over the file of `id` wherever an IMAP client
    /// moved it (or into `new/`), flushed as this mailbox says: the repair
    /// of a delivery whose flush a crash may have cut short.
    pub fn rewrite(&self, id: &str, message: &[u8]) -> Result<String, MaildirError> {
        let (name, target) = match self.locate(id, message.len())? {
            Some(found) => (name_of(&found), found),
            None => {
                let name = file_name(id, message.len());
                let new = self.root.join("new").join(&name);
                (name, new)
            }
        };
        self.write_to(&name, &target, message, Place::Replace)?;
        Ok(name)
    }

    /// The file of `id`: under its first name in `new/`, or anywhere in
    /// `new/` or `cur/` (an IMAP server may have moved it and added flags).
    fn locate(&self, id: &str, len: usize) -> Result<Option<PathBuf>, MaildirError> {
        let new = self.new_path(id, len);
        if new.exists() {
            return Ok(Some(new));
        }
        let prefix = format!("{},S=", safe_id(id));
        for d in ["new", "cur"] {
            let dir = self.root.join(d);
            let entries = match fs::read_dir(&dir) {
                // Removed behind our back: no file there, and the
                // delivery that follows makes the folder again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    known().remove(&self.root);
                    continue;
                }
                r => r.map_err(io(&dir))?,
            };
            for e in entries {
                let e = e.map_err(io(&dir))?;
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    return Ok(Some(e.path()));
                }
            }
        }
        Ok(None)
    }

    /// Write `message` to `tmp/<name>`, then rename it to `target` (in
    /// `new/` or `cur/`), flushed as this mailbox says. With
    /// [`Place::Keep`], a file already at `target` (the same id, delivered
    /// before) stays and the new copy is dropped, unless this mailbox is
    /// flushed at delivery (see [`Place::Keep`]).
    fn write_to(
        &self,
        name: &str,
        target: &Path,
        message: &[u8],
        place: Place,
    ) -> Result<(), MaildirError> {
        let tmp = self.root.join("tmp").join(name);
        // Whether the file reached `target` (false: one was there already).
        let placed = (|| {
            let create = || {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
            };
            let mut f = match create() {
                // Removed since it was opened: made again, as `open` would.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    known().remove(&self.root);
                    Maildir::open(&self.root)?;
                    create()
                }
                r => r,
            }
            .map_err(io(&tmp))?;
            f.write_all(message)
                .and_then(|()| match self.flush {
                    Flush::PerFile => f.sync_all(),
                    Flush::Filesystem => crate::fsync::sync_filesystem(&tmp),
                    Flush::Deferred => Ok(()),
                })
                .map_err(io(&tmp))?;
            match place {
                Place::Keep if self.flush == Flush::Deferred => rename_unless_there(&tmp, target),
                // A flushed mailbox: the copy an earlier try left there may
                // have missed its flush; this one has had it.
                Place::Keep | Place::Replace => fs::rename(&tmp, target).map(|()| true),
            }
            .map_err(io(target))
        })();
        match placed {
            Ok(true) => self.sync_names(target),
            other => {
                // Nothing left behind in `tmp/`: a copy not needed, or a
                // part written to a full disk, which would hold its blocks
                // until this item is tried again.
                let _ = fs::remove_file(&tmp);
                other.map(|_| ())
            }
        }
    }

    /// Make the name just renamed or linked to `path` durable.
    fn sync_names(&self, path: &Path) -> Result<(), MaildirError> {
        let dir = path.parent().unwrap_or(&self.root);
        match self.flush {
            Flush::PerFile => crate::fsync::sync_dir(dir),
            Flush::Filesystem => crate::fsync::sync_filesystem(dir),
            Flush::Deferred => Ok(()),
        }
        .map_err(io(dir))
    }

    /// A Maildir++ folder (e.g. `.Archivio`) of the mailbox at `root`,
    /// created with its `maildirfolder` marker as Dovecot expects, and
    /// subscribed when it is made: IMAP clients that show only subscribed
    /// folders (most, by default) would otherwise never show the archive.
    pub fn open_folder(root: &Path, folder: &str) -> Result<Maildir, MaildirError> {
        let path = root.join(folder);
        let fresh = !known().contains(&path);
        let md = Maildir::open(path)?;
        let marker = md.root.join("maildirfolder");
        if fresh && !marker.exists() {
            // Whoever creates the marker subscribes, once: a holder who
            // later unsubscribes is not overruled.
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                // Mail goes in whether or not the subscription could be
                // written: it only shows the folder.
                Ok(_) => {
                    if let Err(e) = subscribe(root, folder) {
                        tracing::warn!(event = "maildir_subscribe_failed", error = %e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&marker)(e)),
            }
        }
        Ok(md)
    }

    /// Messages in `new/` and `cur/`, oldest first (by modification time,
    /// then by name).
    pub fn oldest_first(&self) -> Result<Vec<(PathBuf, u64)>, MaildirError> {
        let mut all = self.listed()?;
        all.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.file_name().cmp(&b.1.file_name()))
        });
        Ok(all.into_iter().map(|(_, p, l)| (p, l)).collect())
    }

    /// The message directories a quota counts: `new/` and `cur/` of the
    /// mailbox and of each Maildir++ folder in it (`.Lavoro`, `.Trash`: a
    /// holder's IMAP client moves mail there, and it must not escape the
    /// quota that way), except [`ARCHIVE_FOLDER`], which has its own.
    fn counted_dirs(&self) -> Result<Vec<PathBuf>, MaildirError> {
        let mut dirs = vec![self.root.join("new"), self.root.join("cur")];
        for e in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let e = e.map_err(io(&self.root))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.')
                && name != ARCHIVE_FOLDER
                && name != "."
                && name != ".."
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                for d in ["new", "cur"] {
                    let p = e.path().join(d);
                    if p.is_dir() {
                        dirs.push(p);
                    }
                }
            }
        }
        Ok(dirs)
    }

    /// What changes whenever a counted message is added, removed or
    /// renamed (by pecd or by an IMAP server), or a folder comes or goes:
    /// the modification times of the counted directories and their names
    /// (`dirs[0]` is `new/`, kept apart: pecd's own deliveries go there,
    /// so after one only it is looked at again), and the newest time.
    fn stamp(&self, dirs: &[PathBuf]) -> Result<Stamp, MaildirError> {
        use std::hash::{Hash, Hasher};
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).map_err(io(p));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let new = mtime(&self.root.join("new"))?;
        let mut newest = new;
        for p in dirs.iter().filter(|p| **p != self.root.join("new")) {
            let t = match mtime(p) {
                Ok(t) => t,
                // A folder deleted since it was listed: the stamp differs
                // from one taken with it, and from one taken without it.
                Err(_) if !p.exists() => {
                    (p, "gone").hash(&mut h);
                    continue;
                }
                Err(e) => return Err(e),
            };
            (p, t).hash(&mut h);
            newest = newest.max(t);
        }
        Ok(Stamp {
            others: h.finish(),
            new,
            newest,
        })
    }

    /// Bytes in the counted directories (see `counted_dirs`): the
    /// `,S=<size>` of Maildir++ names when present, else the file's size.
    /// `known` is reused when nothing changed since it was taken, so a
    /// quiet mailbox is not rescanned; deletions and moves by an IMAP client
    /// change the stamp and are seen.
    pub fn usage(&self, known: Option<Usage>) -> Result<Usage, MaildirError> {
        let dirs = self.counted_dirs()?;
        let stamp = self.stamp(&dirs)?;
        // Directory times tick coarsely (a few ms): a change in the same
        // tick as the stamp would not show, so only a settled stamp is
        // trusted.
        let settled = |t: SystemTime| {
            t.elapsed()
                .is_ok_and(|a| a > std::time::Duration::from_secs(1))
        };
        if let Some(k) = known.filter(|k| k.stamp == stamp && settled(stamp.newest)) {
            return Ok(k);
        }
        let mut bytes = 0u64;
        for dir in &dirs {
            // A folder the holder deleted since it was listed.
            let entries = match fs::read_dir(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r.map_err(io(dir))?,
            };
            for e in entries {
                let e = e.map_err(io(dir))?;
                let name = e.file_name();
                let from_name =
                    name.to_str()
                        .and_then(|n| n.split_once(",S="))
                        .and_then(|(_, rest)| {
                            rest.split([',', ':'])
                                .next()
                                .and_then(|v| v.parse::<u64>().ok())
                        });
                bytes += match from_name {
                    Some(n) => n,
                    // Gone between the listing and the stat: not there.
                    None => e.metadata().map(|m| m.len()).unwrap_or(0),
                };
            }
        }
        Ok(Usage { bytes, stamp })
    }

    /// The modification time of `new/`, taken before a delivery for
    /// [`Maildir::usage_after_delivery`].
    pub fn new_stamp(&self) -> Option<SystemTime> {
        fs::metadata(self.root.join("new"))
            .and_then(|m| m.modified())
            .ok()
    }

    /// `known` after pecd itself stored `added` bytes in `new/` (no
    /// rescan), given `new/`'s time `before` the delivery: one stat. When
    /// `new/` had changed since `known` (someone else's message there, a
    /// deletion, or one of our own deferred files landing) the figure
    /// still counts what was added, but its stamp can no longer match: the
    /// next [`Maildir::usage`] after the caller's trust window rescans.
    /// A change elsewhere shows there too, as its stamp of the other
    /// directories will differ. A [`Flush::Deferred`] delivery is not in
    /// `new/` yet, and never will be if its commit fails: its figure is
    /// never taken as settled (its file's landing would unsettle it
    /// anyway), so a failed commit cannot leave a mailbox counted fuller
    /// than it is.
    pub fn usage_after_delivery(
        &self,
        known: Usage,
        added: u64,
        before: Option<SystemTime>,
    ) -> Usage {
        let new = match self.new_stamp() {
            Some(now) if before == Some(known.stamp.new) && self.flush != Flush::Deferred => now,
            _ => SystemTime::UNIX_EPOCH,
        };
        Usage {
            bytes: known.bytes + added,
            stamp: Stamp {
                new,
                newest: known.stamp.newest.max(new),
                ..known.stamp
            },
        }
    }

    /// Messages in `new/` and `cur/` with their sizes (what a rescan-based
    /// quota counts; deletions made by an IMAP server are seen).
    pub fn messages(&self) -> Result<Vec<(PathBuf, u64)>, MaildirError> {
        let mut out: Vec<_> = self.listed()?.into_iter().map(|(_, p, l)| (p, l)).collect();
        out.sort();
        Ok(out)
    }

    /// Every file in `new/` and `cur/`: its time, path and size.
    fn listed(&self) -> Result<Vec<(Option<SystemTime>, PathBuf, u64)>, MaildirError> {
        let mut all = Vec::new();
        for d in ["new", "cur"] {
            let dir = self.root.join(d);
            for e in fs::read_dir(&dir).map_err(io(&dir))? {
                let e = e.map_err(io(&dir))?;
                // Renamed (a flag set) or expunged by the holder's IMAP
                // client since the listing: not there to count or remove.
                let m = match e.metadata() {
                    Ok(m) => m,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(io(&dir)(err)),
                };
                all.push((m.modified().ok(), e.path(), m.len()));
            }
        }
        Ok(all)
    }
}

/// Files in `tmp/` older than this are left over from a delivery that
/// will not finish (a crash between write and rename whose item was then
/// given up, or another program's): the age Dovecot uses (maildir(5)
/// says 36 hours too). A delivery in progress is seconds old, and a redone
/// one rewrites its own name.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(36 * 3600);

/// Remove stale files from a mailbox's `tmp/`, once per mailbox and
/// process (at its first open), so space lost to interrupted deliveries
/// comes back. Best effort: a failure here must not stop a delivery.
fn sweep_tmp(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TMP);
        if stale && fs::remove_file(e.path()).is_ok() {
            tracing::info!(file = %e.path().display(), "removed a stale Maildir tmp file");
        }
    }
}

/// What [`Maildir::write_to`] does with a file already at the target.
#[derive(Clone, Copy)]
enum Place {
    /// Replace it (a repair writes the same bytes again).
    Replace,
    /// Keep it (a delivery of an id that is already there), in a mailbox
    /// flushed by the checkpoint; one flushed at delivery replaces it with
    /// the copy just flushed.
    Keep,
}

/// Whether `source` holds `len` bytes (a file that can be linked in).
fn same_size(source: &Path, len: usize) -> bool {
    fs::metadata(source).is_ok_and(|m| m.len() == len as u64)
}

/// Rename `from` to `to` unless `to` exists; whether it was renamed. On
/// Linux one `renameat2(RENAME_NOREPLACE)`: no separate lookup of a name
/// that, in a large `new/`, is a directory search of its own.
fn rename_unless_there(from: &Path, to: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::EXIST) => return Ok(false),
            // A filesystem without the flag: the portable way below.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if to.exists() {
        return Ok(false);
    }
    fs::rename(from, to)?;
    Ok(true)
}

fn safe_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file name of a path found in the mailbox.
fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<id>,S=<size>`: unique per queue item, with the Maildir++ size.
fn file_name(id: &str, len: usize) -> String {
    format!("{},S={len}", safe_id(id))
}

/// A mailbox's usage and the directory stamp it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    stamp: Stamp,
}

/// See `Maildir::stamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    others: u64,
    new: SystemTime,
    newest: SystemTime,
}

/// The Maildir++ folder of a mailbox's archive: counted against the
/// archive's space, not the inbox's.
pub const ARCHIVE_FOLDER: &str = ".Archivio";

/// Add the Maildir++ `folder` (`.Name`) to the mailbox's `subscriptions`
/// file, where Dovecot keeps IMAP subscriptions: one name per line, in its
/// version-2 layout after a `V\t2` header and a blank line, in the older
/// one without it; a one-level name reads the same in both, so it is
/// appended as it is. Not flushed: a lost subscription loses no mail.
fn subscribe(root: &Path, folder: &str) -> Result<(), MaildirError> {
    let name = folder.strip_prefix('.').unwrap_or(folder);
    let path = root.join("subscriptions");
    let listed = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    if listed.split(|&b| b == b'\n').any(|l| l == name.as_bytes()) {
        return Ok(());
    }
    let mut line = Vec::with_capacity(name.len() + 2);
    if listed.last().is_some_and(|&b| b != b'\n') {
        line.push(b'\n');
    }
    line.extend_from_slice(name.as_bytes());
    line.push(b'\n');
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &line))
        .map_err(io(&path))
}

/// A mailbox's space, as a downgrade weighs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// What the inbox quota counts (the INBOX and the holder's folders).
    pub used: u64,
    /// Of that, the INBOX's own messages (what a downgrade may move).
    pub in_inbox: u64,
    /// The archive folder's.
    pub archived: u64,
}

/// [`Measure`] of the mailbox of `address` under `base`; all zero for one
/// never delivered to (nothing is created).
pub fn measure(base: &Path, address: &str) -> Result<Measure, MaildirError> {
    let root = mailbox_path(base, address)?;
    if !root.exists() {
        return Ok(Measure::default());
    }
    let inbox = Maildir::open(&root)?;
    let archived = if root.join(ARCHIVE_FOLDER).exists() {
        Maildir::open_folder(&root, ARCHIVE_FOLDER)?
            .usage(None)?
            .bytes
    } else {
        0
    };
    Ok(Measure {
        used: inbox.usage(None)?.bytes,
        in_inbox: inbox.messages()?.iter().map(|(_, len)| len).sum(),
        archived,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_is_visible_in_new_and_tmp_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(mailbox_path(d.path(), "Mario.Rossi@PEC.Provider-A.test").unwrap())
            .unwrap();
        assert!(md.root().ends_with("pec.provider-a.test/mario.rossi"));
        let a = md
            .deliver_once("a", b"Subject: a\r\n\r\nx\r\n", false)
            .unwrap();
        let b = md
            .deliver_once("b", b"Subject: b\r\n\r\ny\r\n", false)
            .unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with(",S=17"));
        let msgs = md.messages().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(fs::read(&msgs[0].0).unwrap().len() as u64, msgs[0].1);
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        // Idempotent delivery by id, even after an IMAP server moved the file.
        let n = md.deliver_once("item.1", b"x", false).unwrap();
        assert_eq!(md.deliver_once("item.1", b"x", false).unwrap(), n);
        fs::rename(
            md.root().join("new").join(&n),
            md.root().join("cur").join(format!("{n}:2,S")),
        )
        .unwrap();
        // After an interruption the moved file is still found.
        md.deliver_once("item.1", b"x", true).unwrap();
        assert_eq!(md.messages().unwrap().len(), 3);
        fs::remove_file(md.root().join("cur").join(format!("{n}:2,S"))).unwrap();
        // A deletion behind our back (an IMAP client) is seen.
        fs::remove_file(&msgs[0].0).unwrap();
        assert_eq!(md.messages().unwrap().len(), 1);
    }

    #[test]
    fn shared_filesystem_flushes_deliver_the_same_way() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box"))
            .unwrap()
            .flushing(Flush::Filesystem);
        let archive = Maildir::open_folder(md.root(), ".Archivio")
            .unwrap()
            .flushing(Flush::Filesystem);
        let n = md
            .deliver_once("m1", b"Subject: a\r\n\r\nx\r\n", false)
            .unwrap();
        let inbox = md.new_path("m1", 17);
        let a = archive
            .deliver_linked("m1", b"Subject: a\r\n\r\nx\r\n", false, &inbox)
            .unwrap();
        assert_eq!(a, n);
        assert_eq!(fs::read(archive.new_path("m1", 17)).unwrap().len(), 17);
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        assert!(archive.root().join("maildirfolder").exists());
        // Idempotent by id in this mode too.
        assert_eq!(md.deliver_once("m1", b"other", true).unwrap(), n);
    }

    #[test]
    fn a_second_delivery_of_an_id_keeps_one_file_and_leaves_no_tmp() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let n = md.deliver_once("m1", b"first", false).unwrap();
        // Same id and size, other bytes: in a mailbox whose flushes the
        // checkpoint makes, the file delivered first stands.
        assert_eq!(md.deliver_once("m1", b"other", false).unwrap(), n);
        assert_eq!(fs::read(md.new_path("m1", 5)).unwrap(), b"first");
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        // The same for a linked copy whose name is already taken.
        let src = d.path().join("src");
        fs::write(&src, b"third").unwrap();
        let l = md.deliver_linked("m1", b"third", false, &src).unwrap();
        assert_eq!(l, n);
        assert_eq!(fs::read(md.new_path("m1", 5)).unwrap(), b"first");
        assert_eq!(md.messages().unwrap().len(), 1);
        // Flushed at delivery, the new copy takes the name (see
        // `a_file_an_earlier_try_left_is_made_again_in_a_flushed_mailbox`).
        let md = md.flushing(Flush::PerFile);
        assert_eq!(md.deliver_once("m1", b"other", false).unwrap(), n);
        assert_eq!(fs::read(md.new_path("m1", 5)).unwrap(), b"other");
        assert_eq!(md.messages().unwrap().len(), 1);
        // A repair writes over it.
        md.rewrite("m1", b"fixed").unwrap();
        assert_eq!(fs::read(md.new_path("m1", 5)).unwrap(), b"fixed");
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
    }

    /// A write that fails (here: the disk is full) takes its part-written
    /// file in `tmp/` with it, so the space comes back at once.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_leaves_nothing_in_tmp() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box")).unwrap();
        let msg = b"Subject: a\r\n\r\nx\r\n";
        let tmp = md.root().join("tmp").join(file_name("m1", msg.len()));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let err = md.deliver_once("m1", msg, false).unwrap_err();
        assert!(
            matches!(&err, MaildirError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull),
            "{err}"
        );
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        assert!(md.messages().unwrap().is_empty());
        // And the next try delivers.
        md.deliver_once("m1", msg, true).unwrap();
        assert_eq!(md.messages().unwrap().len(), 1);
    }

    #[test]
    fn the_first_open_sweeps_stale_tmp_files_only() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("box");
        fs::create_dir_all(root.join("tmp")).unwrap();
        let old = root.join("tmp").join("orphan,S=5");
        let young = root.join("tmp").join("in-progress,S=5");
        fs::write(&old, b"12345").unwrap();
        fs::write(&young, b"12345").unwrap();
        let aged = SystemTime::now() - STALE_TMP - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(aged)
            .unwrap();
        let md = Maildir::open(&root).unwrap();
        assert!(!old.exists(), "a tmp file older than 36 h goes");
        assert!(young.exists(), "a delivery in progress stays");
        assert!(md.root().join("new").is_dir());
    }

    #[test]
    fn a_file_an_earlier_try_left_is_made_again_in_a_flushed_mailbox() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box")).unwrap();
        let archive = Maildir::open_folder(md.root(), ".Archivio").unwrap();
        let new = md.root().join("new");
        md.deliver_once("m1", b"hello", false).unwrap();
        // What a try killed before its flush (or whose flush failed) may
        // leave: the name, over pages that never reached the disk. The
        // next try finds it, by a scan or by the rename that refuses it,
        // and puts a flushed copy there; an IMAP client's move is kept.
        let seen = md.root().join("cur").join("m1,S=5:2,S");
        fs::rename(md.new_path("m1", 5), &seen).unwrap();
        fs::write(&seen, b"\0\0\0\0\0").unwrap();
        let flushes = crate::fsync::dir_flushes(&md.root().join("cur"));
        md.deliver_once("m1", b"hello", true).unwrap();
        assert_eq!(fs::read(&seen).unwrap(), b"hello");
        assert_eq!(
            crate::fsync::dir_flushes(&md.root().join("cur")),
            flushes + 1
        );
        md.deliver_once("m2", b"hello", false).unwrap();
        fs::write(md.new_path("m2", 5), b"\0\0\0\0\0").unwrap();
        md.deliver_once("m2", b"hello", false).unwrap();
        assert_eq!(fs::read(md.new_path("m2", 5)).unwrap(), b"hello");
        assert_eq!(md.messages().unwrap().len(), 2);
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        // The same for a link: the name is linked to the source again.
        let source = md.new_path("m2", 5);
        let copy = archive.new_path("m2", 5);
        for interrupted in [false, true] {
            // A file of its own (not the link, which is the source).
            let _ = fs::remove_file(&copy);
            fs::write(&copy, b"\0\0\0\0\0").unwrap();
            archive
                .deliver_linked("m2", b"hello", interrupted, &source)
                .unwrap();
            assert_eq!(fs::read(&copy).unwrap(), b"hello");
            let ino = |p: &Path| fs::metadata(p).unwrap().ino();
            assert_eq!(ino(&copy), ino(&source));
        }
        assert_eq!(archive.messages().unwrap().len(), 1);
        assert!(crate::fsync::dir_flushes(&new) > 0);
    }

    #[test]
    fn rename_unless_there_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        assert!(!rename_unless_there(&a, &b).unwrap());
        assert_eq!(fs::read(&b).unwrap(), b"b");
        assert!(a.exists());
        assert!(rename_unless_there(&a, &c).unwrap());
        assert!(!a.exists());
        assert_eq!(fs::read(&c).unwrap(), b"a");
    }

    #[test]
    fn a_mailbox_removed_behind_our_back_is_made_again() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("gone");
        Maildir::open(&root).unwrap();
        fs::remove_dir_all(&root).unwrap();
        // Opening it again costs no system call, so the first delivery
        // finds it missing and makes it again.
        let md = Maildir::open(&root).unwrap();
        md.deliver_once("m1", b"x", false).unwrap();
        assert_eq!(md.messages().unwrap().len(), 1);
        fs::remove_dir_all(&root).unwrap();
        // A failed read forgets it too: the next open makes it again.
        assert!(md.usage(None).is_err());
        let md = Maildir::open(&root).unwrap();
        assert_eq!(md.usage(None).unwrap().bytes, 0);
    }

    #[test]
    fn a_delivery_updates_the_usage_only_when_nothing_else_changed_new() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box")).unwrap();
        let u = md.usage(None).unwrap();
        let before = md.new_stamp();
        md.deliver_once("m1", &[b'x'; 100], false).unwrap();
        let u = md.usage_after_delivery(u, 100, before);
        assert_eq!(u.bytes, 100);
        assert_eq!(
            md.usage(Some(u)).unwrap().stamp,
            u.stamp,
            "only ours: still good"
        );
        // Someone else's message lands in new/ (an IMAP APPEND); then ours.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(md.root().join("new").join("foreign"), [0u8; 50]).unwrap();
        let before = md.new_stamp();
        md.deliver_once("m2", &[b'y'; 10], false).unwrap();
        let u = md.usage_after_delivery(u, 10, before);
        assert_eq!(u.bytes, 110, "what we added, until the rescan");
        // Even once the stamp has settled (a quiet mailbox is not rescanned
        // then), this one is.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(md.usage(Some(u)).unwrap().bytes, 160, "a rescan is due");
    }

    #[test]
    fn a_folder_made_here_is_subscribed_once_and_an_unsubscribed_one_stays_so() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box")).unwrap();
        let subs = md.root().join("subscriptions");
        // Dovecot's own layout, as it rewrites the file, is kept.
        fs::write(&subs, "V\t2\n\nLavoro").unwrap();
        Maildir::open_folder(md.root(), ARCHIVE_FOLDER).unwrap();
        assert_eq!(
            fs::read_to_string(&subs).unwrap(),
            "V\t2\n\nLavoro\nArchivio\n"
        );
        // Opened again (another process start), nothing is added.
        known().retain(|p| !p.starts_with(d.path()));
        Maildir::open_folder(md.root(), ARCHIVE_FOLDER).unwrap();
        assert_eq!(
            fs::read_to_string(&subs).unwrap(),
            "V\t2\n\nLavoro\nArchivio\n"
        );
        // The holder unsubscribed it: the existing folder stays unsubscribed.
        fs::write(&subs, "V\t2\n\n").unwrap();
        known().retain(|p| !p.starts_with(d.path()));
        Maildir::open_folder(md.root(), ARCHIVE_FOLDER).unwrap();
        assert_eq!(fs::read_to_string(&subs).unwrap(), "V\t2\n\n");
        // No file yet: one line.
        let other = Maildir::open(d.path().join("other")).unwrap();
        Maildir::open_folder(other.root(), ARCHIVE_FOLDER).unwrap();
        assert_eq!(
            fs::read_to_string(other.root().join("subscriptions")).unwrap(),
            "Archivio\n"
        );
    }

    #[test]
    fn a_deferred_delivery_whose_commit_failed_is_not_counted_for_good() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        md.deliver_once("m1", &[b'x'; 10], false).unwrap();
        // Directory times are trusted once they are a second old.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let u0 = md.usage(None).unwrap();
        // Counted when noted; its commit then fails: no file ever lands.
        let u1 = md.usage_after_delivery(u0, 1000, md.new_stamp());
        assert_eq!(u1.bytes, 1010);
        assert_eq!(md.usage(Some(u1)).unwrap().bytes, 10);
    }

    #[test]
    fn usage_counts_deliveries_and_sees_deletions_behind_its_back() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box")).unwrap();
        let u0 = md.usage(None).unwrap();
        assert_eq!(u0.bytes, 0);
        let n1 = md.deliver_once("m1", &[b'x'; 1000], false).unwrap();
        md.deliver_once("m2", &[b'y'; 500], false).unwrap();
        let u = md.usage(Some(u0)).unwrap();
        assert_eq!(u.bytes, 1500);
        // An IMAP client moves one to cur/ with flags, deletes the other.
        fs::rename(
            md.root().join("new").join(&n1),
            md.root().join("cur").join(format!("{n1}:2,S")),
        )
        .unwrap();
        assert_eq!(md.usage(Some(u)).unwrap().bytes, 1500);
        let u = md.usage(None).unwrap();
        for e in fs::read_dir(md.root().join("new")).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        assert_eq!(md.usage(Some(u)).unwrap().bytes, 1000);
        // A file without a size in its name is stat'ed.
        fs::write(md.root().join("cur").join("foreign:2,"), [0u8; 7]).unwrap();
        assert_eq!(md.usage(None).unwrap().bytes, 1007);
        // Moved into a folder of its own (as an IMAP client files it), the
        // message still counts; in the archive folder it counts there.
        let u = md.usage(None).unwrap();
        let work = Maildir::open_folder(md.root(), ".Lavoro").unwrap();
        let cur = fs::read_dir(md.root().join("cur"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(",S=1000"))
            .unwrap();
        fs::rename(&cur, work.root().join("cur").join(cur.file_name().unwrap())).unwrap();
        assert_eq!(md.usage(Some(u)).unwrap().bytes, 1007);
        assert_eq!(work.usage(None).unwrap().bytes, 1000);
        let archive = Maildir::open_folder(md.root(), ARCHIVE_FOLDER).unwrap();
        let moved = work.root().join("cur").join(cur.file_name().unwrap());
        let u = md.usage(None).unwrap();
        fs::rename(
            &moved,
            archive.root().join("cur").join(cur.file_name().unwrap()),
        )
        .unwrap();
        assert_eq!(md.usage(Some(u)).unwrap().bytes, 7);
        assert_eq!(archive.usage(None).unwrap().bytes, 1000);
    }

    #[test]
    fn hostile_addresses_cannot_escape() {
        let base = Path::new("/srv/mail");
        for a in [
            "../x@d.it",
            "x@..",
            "a/b@d.it",
            "noat",
            ".hidden@d.it",
            "x@d/../../etc",
        ] {
            assert!(mailbox_path(base, a).is_err(), "{a}");
        }
    }
}
