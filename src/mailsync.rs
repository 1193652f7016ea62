//! Maildir deliveries awaiting their flush (`delivery.maildir_flush =
//! "checkpoint"`).
//!
//! A delivery into a [`Flush::Deferred`] mailbox is first a record in the
//! commit that makes it count (the one before its ricevuta di consegna,
//! the submission's 250…), holding the message itself; the file is
//! written and renamed into the mailbox right after that commit, without
//! waiting for the disk. Nothing is in a mailbox that its commit did not
//! make durable, and from that commit on the message is durable in the
//! store even if its file is not yet. A checkpoint every
//! `delivery.checkpoint_every` (100ms) writes the files whose writer
//! failed, flushes each filesystem holding them (one syncfs) and drops the
//! records. A file seen written and gone since was deleted or moved by the
//! holder and is not written back, unless a filesystem flush failed after
//! it was written: then its pages may never reach the disk, and every
//! file written before that failure is written again, wherever it is.
//! At start-up, before anything is received, every recorded file is
//! written again (after a power loss a name may hold anything).
//!
//! Owns: table `unflushed`: `k<mailbox root>\0<id>` → `D<len>` (the
//! message is at `d<mailbox root>\0<id>`, apart so that a checkpoint reads
//! only the small records) or `L<len><mailbox root>\0<id>` (an archive
//! copy linked to that inbox file), with `<len>` 8 bytes big-endian; the
//! writes after a commit; the checkpoint; the repair.
//! Must not touch: PEC semantics, the queue, quotas.

use crate::maildir::{Flush, Maildir, MaildirError};
use crate::store::{Batch, Op, Store, Table};
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, RwLock, RwLockReadGuard};

/// Records dropped per checkpoint commit.
const PER_CHECKPOINT: usize = 2000;

/// Held (shared) by a committer from before its commit until its files
/// are written, and (exclusive) by a checkpoint while it lists records:
/// a listed record's file has been written, or its writer failed.
static WRITING: RwLock<()> = RwLock::new(());

/// Held by a whole checkpoint, and by [`settled`] before it moves a
/// mailbox: a checkpoint that listed the mailbox's records before the
/// move would otherwise write them at the old place after it. Taken
/// before [`WRITING`].
static CHECKPOINTING: Mutex<()> = Mutex::new(());

/// Records whose file [`written_after`] wrote, until a checkpoint drops
/// them, with [`crate::fsync::filesystem_failures`] as it was before the
/// write. A checkpoint does not look for these files again unless a
/// filesystem flush failed since: gone from the mailbox means deleted (or
/// moved to another folder) by the holder's IMAP client, and writing it
/// again would bring back what was deleted or deliver a message twice.
static WRITTEN: LazyLock<Mutex<HashMap<Vec<u8>, u64>>> = LazyLock::new(Default::default);

fn written() -> std::sync::MutexGuard<'static, HashMap<Vec<u8>, u64>> {
    WRITTEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records [`repair`] could not write at start-up (a mailbox unreachable
/// then): after a power loss their names may hold anything, so the
/// checkpoints write them again even where a file is found, until one
/// succeeds. One unwritable mailbox does not keep the daemon from
/// starting.
static UNREPAIRED: LazyLock<Mutex<HashSet<Vec<u8>>>> = LazyLock::new(Default::default);

fn unrepaired() -> std::sync::MutexGuard<'static, HashSet<Vec<u8>>> {
    UNREPAIRED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file's name in this table: `<mailbox root>\0<id>`.
fn file(root: &Path, id: &str) -> Vec<u8> {
    let mut k = root.as_os_str().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn prefixed(tag: u8, file: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(file.len() + 1);
    k.push(tag);
    k.extend_from_slice(file);
    k
}

/// (mailbox root, item id) of a file's name.
fn split(file: &[u8]) -> Option<(PathBuf, String)> {
    let at = file.iter().rposition(|b| *b == 0)?;
    let root = PathBuf::from(std::ffi::OsStr::from_bytes(&file[..at]));
    let id = std::str::from_utf8(&file[at + 1..]).ok()?;
    Some((root, id.to_string()))
}

/// A record's value: its kind, the message's length, and for a link the
/// file it links to.
fn record(kind: u8, len: usize, source: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + source.len());
    v.push(kind);
    v.extend_from_slice(&(len as u64).to_be_bytes());
    v.extend_from_slice(source);
    v
}

fn parse(v: &[u8]) -> Option<(u8, usize, &[u8])> {
    let (kind, rest) = v.split_first()?;
    let (len, source) = rest.split_at_checked(8)?;
    let len = u64::from_be_bytes(len.try_into().ok()?) as usize;
    Some((*kind, len, source))
}

/// Deliver `data` under `id` into `md`: a [`Flush::Deferred`] mailbox
/// gets it when `b` commits ([`note`]), any other at once.
pub fn deliver(
    b: &mut Batch,
    md: &Maildir,
    id: &str,
    data: &[u8],
    interrupted_before: bool,
) -> Result<(), MaildirError> {
    if md.flush() == Flush::Deferred {
        note(b, md, id, data);
    } else {
        md.deliver_once(id, data, interrupted_before)?;
    }
    Ok(())
}

/// [`deliver`] as a link to `inbox`'s copy of `id`, delivered in the same
/// batch (a deferred link follows its file once `b` commits).
pub fn deliver_linked(
    b: &mut Batch,
    md: &Maildir,
    id: &str,
    data: &[u8],
    interrupted_before: bool,
    inbox: &Maildir,
) -> Result<(), MaildirError> {
    if md.flush() == Flush::Deferred {
        note_link(b, md, id, data.len(), inbox);
    } else {
        let source = inbox.new_path(id, data.len());
        md.deliver_linked(id, data, interrupted_before, &source)?;
    }
    Ok(())
}

/// Deliver `data` under `id` into `md` (a [`Flush::Deferred`] mailbox)
/// when `b` commits: `b` records it, [`written_after`] writes it.
pub fn note(b: &mut Batch, md: &Maildir, id: &str, data: &[u8]) {
    let f = file(md.root(), id);
    b.put(Table::Unflushed, prefixed(b'd', &f), data);
    b.put(
        Table::Unflushed,
        prefixed(b'k', &f),
        record(b'D', data.len(), &[]),
    );
}

/// Deliver `md`'s copy of `id` as a link to `source`'s, noted by [`note`]
/// in the same batch.
pub fn note_link(b: &mut Batch, md: &Maildir, id: &str, len: usize, source: &Maildir) {
    let f = file(md.root(), id);
    let src = file(source.root(), id);
    b.put(
        Table::Unflushed,
        prefixed(b'k', &f),
        record(b'L', len, &src),
    );
}

/// The files a batch will put into mailboxes once committed.
pub struct Pending {
    files: Vec<(Vec<u8>, Vec<u8>)>,
    links: Vec<(Vec<u8>, usize, Vec<u8>)>,
    _writing: RwLockReadGuard<'static, ()>,
}

/// What `b` notes, to be written by [`written_after`] once `b` commits;
/// None if it notes nothing. Take it before the commit.
pub fn pending(b: &Batch) -> Option<Pending> {
    let mut data = std::collections::HashMap::new();
    let mut records = Vec::new();
    for op in &b.ops {
        if let Op::Put(Table::Unflushed, k, v) = op {
            match k.split_first() {
                Some((b'd', f)) => {
                    data.insert(f.to_vec(), v.clone());
                }
                Some((b'k', f)) => records.push((f.to_vec(), v.clone())),
                _ => {}
            }
        }
    }
    if records.is_empty() {
        return None;
    }
    let mut p = Pending {
        files: Vec::new(),
        links: Vec::new(),
        _writing: WRITING.read().unwrap_or_else(|e| e.into_inner()),
    };
    for (f, v) in records {
        match parse(&v) {
            Some((b'D', _, _)) => {
                if let Some(d) = data.remove(&f) {
                    p.files.push((f, d));
                }
            }
            Some((b'L', len, source)) => p.links.push((f, len, source.to_vec())),
            _ => {}
        }
    }
    Some(p)
}

/// Write what `p` noted, now that its batch is committed: files first,
/// then the links to them. A failure is logged; the next checkpoint
/// writes what is missing.
pub fn written_after(p: Pending) {
    let failures = crate::fsync::filesystem_failures();
    let mut done = Vec::with_capacity(p.files.len() + p.links.len());
    for (f, data) in &p.files {
        match write_file(f, data) {
            Ok(()) => done.push(f.clone()),
            Err(e) => tracing::warn!(event = "maildir_write_deferred", error = %e),
        }
    }
    for (f, len, source) in &p.links {
        match write_link(f, *len, source) {
            Ok(()) => done.push(f.clone()),
            Err(e) => tracing::warn!(event = "maildir_write_deferred", error = %e),
        }
    }
    // Before the guard in `p` goes: a checkpoint that lists these records
    // knows they were written.
    written().extend(done.into_iter().map(|f| (f, failures)));
}

fn mailbox(f: &[u8]) -> Result<(Maildir, String), String> {
    let (root, id) = split(f).ok_or("unreadable record")?;
    let md = Maildir::open(root).map_err(|e| e.to_string())?;
    Ok((md.flushing(Flush::Deferred), id))
}

fn write_file(f: &[u8], data: &[u8]) -> Result<(), String> {
    let (md, id) = mailbox(f)?;
    md.deliver_once(&id, data, false)
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn write_link(f: &[u8], len: usize, source: &[u8]) -> Result<(), String> {
    let (md, id) = mailbox(f)?;
    let (src, _) = mailbox(source)?;
    md.deliver_linked_from(&id, len, false, &src.new_path(&id, len), || {
        Err(std::io::Error::other(
            "its inbox file is not there to link to",
        ))
    })
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Make sure every recorded file is in place (a writer may have failed,
/// a writeback may have failed), flush every filesystem holding one, then
/// drop those records. Returns how many were dropped. The records are
/// walked in pages from the last one listed, so records that must stay
/// (a mailbox that cannot be written now) never hold up those after them.
pub fn checkpoint(store: &Store) -> Result<usize, String> {
    let _one = CHECKPOINTING.lock().unwrap_or_else(|e| e.into_inner());
    let mut total = 0;
    let mut from = b"k".to_vec();
    loop {
        let records: Vec<(Vec<u8>, Vec<u8>)> = {
            // Every listed record's writer is done.
            let _listing = WRITING.write().unwrap_or_else(|e| e.into_inner());
            store
                .range(Table::Unflushed, &from, Some(b"l"), PER_CHECKPOINT)
                .map_err(|e| e.to_string())?
        };
        let Some((last, _)) = records.last() else {
            return Ok(total);
        };
        from = last.clone();
        from.push(0); // the smallest key after `last`
        total += flush_and_drop(store, &records)?.len();
        if records.len() < PER_CHECKPOINT {
            return Ok(total);
        }
    }
}

/// [`crate::maildir::set_aside`] for a removed account, once what was
/// delivered to it before its removal is in its files ([`settled`]), so
/// that it goes aside with the rest.
pub fn set_aside(
    store: &Store,
    base: &Path,
    address: &str,
    stamp: &str,
) -> Result<Option<PathBuf>, String> {
    let root = crate::maildir::mailbox_path(base, address).map_err(|e| e.to_string())?;
    settled(store, &root, || {
        crate::maildir::set_aside(base, address, stamp).map_err(|e| e.to_string())
    })?
}

/// Run `f` (moving the mailbox at `root` away) once every recorded file
/// of that mailbox and its folders is written, flushed and its record
/// dropped, with no writer running meanwhile: nothing recorded for it is
/// written at its old place afterwards (where the address's next holder
/// would find it). Refused, and `f` not run, while a file cannot be
/// written there.
pub fn settled<T>(store: &Store, root: &Path, f: impl FnOnce() -> T) -> Result<T, String> {
    let _no_checkpoint = CHECKPOINTING.lock().unwrap_or_else(|e| e.into_inner());
    let _writing = WRITING.write().unwrap_or_else(|e| e.into_inner());
    let prefix = prefixed(b'k', root.as_os_str().as_bytes());
    let records: Vec<(Vec<u8>, Vec<u8>)> = store
        .entries_with_prefix(Table::Unflushed, &prefix)
        .filter(|e| {
            // The mailbox's own files (`<root>\0…`) and its folders'
            // (`<root>/.Archivio\0…`), not `<root>x`'s.
            e.as_ref()
                .map_or(true, |(k, _)| matches!(k.get(prefix.len()), Some(0 | b'/')))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if !records.is_empty() {
        let dropped = flush_and_drop(store, &records)?;
        if dropped.len() < records.len() {
            return Err(format!(
                "{} of its files cannot be written now (see the log)",
                records.len() - dropped.len()
            ));
        }
    }
    Ok(f())
}

/// Make sure each of `records`' files is in place (a writer may have
/// failed, a writeback may have failed), flush every filesystem holding
/// one, then drop those records; returns the files whose records were
/// dropped (the others stay: not writable or not flushable now).
fn flush_and_drop(store: &Store, records: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Vec<u8>>, String> {
    let roots: HashSet<PathBuf> = records
        .iter()
        .filter_map(|(k, _)| split(&k[1..]))
        .map(|r| r.0)
        .collect();
    let (devices, unreachable) = devices(&roots);
    // Each filesystem's failure count before the global one: a flush
    // failing in between is then counted in both, and its files are
    // written again (below) or this pass ends in an error.
    let before: Vec<u64> = devices
        .keys()
        .map(|d| crate::fsync::filesystem_failures_on(*d))
        .collect();
    // A writeback error is reported to one syncfs only, perhaps
    // another caller's: a file written before any failed filesystem
    // flush is written again (its pages may never have reached the
    // disk), even if it is there.
    let failures = crate::fsync::filesystem_failures();
    let rewrite = Rewrite {
        clean: {
            let w = written();
            records
                .iter()
                .map(|(k, _)| &k[1..])
                .filter(|f| w.get(*f) == Some(&failures))
                .map(<[u8]>::to_vec)
                .collect()
        },
        only_missing: failures == 0,
    };
    // A file that cannot be written now keeps its record (and the
    // message it needs) for the next checkpoint; so does one on a
    // filesystem that cannot be flushed from here. The others go.
    let mut kept = write_again(store, records, &rewrite, failures)?.1;
    for (k, v) in records {
        let f = &k[1..];
        if split(f).is_some_and(|(root, _)| unreachable.contains(&root)) {
            kept.records.insert(f.to_vec());
            let message = match parse(v) {
                Some((b'L', _, source)) => source,
                _ => f,
            };
            kept.messages.insert(message.to_vec());
        }
    }
    for path in devices.values() {
        crate::fsync::sync_filesystem(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let after = devices
        .keys()
        .map(|d| crate::fsync::filesystem_failures_on(*d));
    if !after.eq(before) {
        // Another caller's flush of these files' filesystem failed
        // meanwhile: the next checkpoint writes them again.
        return Err("a filesystem flush failed during the checkpoint".into());
    }
    let mut b = Batch::new();
    let mut dropped = Vec::new();
    for (k, v) in records {
        let f = &k[1..];
        if !kept.records.contains(f) {
            b.delete(Table::Unflushed, k.clone());
            dropped.push(f.to_vec());
        }
        // A file's own message, or the one a dropped link was made
        // from (its file's record may have gone in an earlier pass).
        let message = match parse(v) {
            Some((b'L', _, source)) if !kept.records.contains(f) => source,
            Some((b'L', _, _)) => continue,
            _ => f,
        };
        if !kept.messages.contains(message) {
            b.delete(Table::Unflushed, prefixed(b'd', message));
        }
    }
    store.commit(b).map_err(|e| e.to_string())?;
    {
        let mut w = written();
        for f in &dropped {
            w.remove(f);
        }
    }
    Ok(dropped)
}

/// Records [`write_again`] could not write: they stay, with the messages
/// they need.
#[derive(Default)]
struct Kept {
    records: HashSet<Vec<u8>>,
    messages: HashSet<Vec<u8>>,
}

/// Which recorded files [`write_again`] writes (wherever an IMAP client
/// moved them): every one but `clean` (seen written, no failed flush
/// since); with `only_missing`, only those not found.
#[derive(Default)]
struct Rewrite {
    clean: HashSet<Vec<u8>>,
    only_missing: bool,
}

/// Write the files of `records` again from their messages, files before
/// the links to them, as `rewrite` says. Returns how many were written,
/// and what could not be.
/// A file written here counts as written by [`written_after`] from
/// `failures` on (the failed flushes before the write): if dropping its
/// record fails, the next checkpoint does not look for it again.
fn write_again(
    store: &Store,
    records: &[(Vec<u8>, Vec<u8>)],
    rewrite: &Rewrite,
    failures: u64,
) -> Result<(usize, Kept), String> {
    let mut count = 0;
    let mut kept = Kept::default();
    for pass in [b'D', b'L'] {
        for (k, v) in records {
            let f = &k[1..];
            let Some((kind, len, source)) = parse(v).filter(|r| r.0 == pass) else {
                continue;
            };
            let from = if kind == b'D' { f } else { source };
            let done = mailbox(f).and_then(|(md, id)| {
                if rewrite.clean.contains(f)
                    || rewrite.only_missing
                        && !unrepaired().contains(f)
                        && md
                            .find(&id, len)
                            .map_err(|e| e.to_string())?
                            .is_some()
                {
                    return Ok(false);
                }
                let stored = store
                    .get(Table::Unflushed, &prefixed(b'd', from))
                    .map_err(|e| e.to_string())?;
                // A link whose file's record (and message) an earlier pass
                // dropped: made from that file, wherever it now is.
                let data = match stored {
                    Some(d) => Some(d),
                    None if kind == b'L' => {
                        let (src, _) = mailbox(source)?;
                        src.read(&id, len).map_err(|e| e.to_string())?
                    }
                    None => None,
                };
                let Some(data) = data else {
                    tracing::warn!(event = "unflushed_message_missing", file = ?String::from_utf8_lossy(f));
                    return Ok(false);
                };
                md.rewrite(&id, &data).map_err(|e| e.to_string())?;
                Ok(true)
            });
            match done {
                Ok(true) => {
                    count += 1;
                    written().insert(f.to_vec(), failures);
                    unrepaired().remove(f);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(event = "maildir_write_failed", file = ?String::from_utf8_lossy(f), error = %e);
                    kept.records.insert(f.to_vec());
                    kept.messages.insert(from.to_vec());
                }
            }
        }
    }
    Ok((count, kept))
}

/// The filesystems holding `roots`, each with a path on it to flush it
/// by: the root, or for a root not there (yet: a checkpoint may make it
/// again) its nearest existing parent; and the roots whose filesystem
/// cannot be told (a parent that cannot be read), logged.
fn devices(roots: &HashSet<PathBuf>) -> (std::collections::BTreeMap<u64, &Path>, HashSet<PathBuf>) {
    let mut devices = std::collections::BTreeMap::new();
    let mut unreachable = HashSet::new();
    for root in roots {
        for path in root.ancestors() {
            match crate::fsync::device(path) {
                Ok(dev) => {
                    devices.entry(dev).or_insert(path);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(event = "maildir_unreachable", path = %path.display(), error = %e);
                    unreachable.insert(root.clone());
                    break;
                }
            }
        }
    }
    (devices, unreachable)
}

/// At start-up, before anything is received: write every recorded file
/// again wherever an IMAP client moved it (after a power loss a name may
/// hold anything), flush, and drop the records. Returns how many files
/// were written. Those that cannot be written now are logged and left to
/// the checkpoints, which write them again in full ([`UNREPAIRED`]).
pub fn repair(store: &Store) -> Result<usize, String> {
    let records: Vec<(Vec<u8>, Vec<u8>)> = store
        .entries_with_prefix(Table::Unflushed, b"k")
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let failures = crate::fsync::filesystem_failures();
    let (written, kept) = write_again(store, &records, &Rewrite::default(), failures)?;
    if !kept.records.is_empty() {
        tracing::error!(
            event = "maildir_repair_incomplete",
            files = kept.records.len(),
            "recorded files could not be written again; the checkpoints keep trying"
        );
        unrepaired().extend(kept.records);
    }
    checkpoint(store)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store(dir: &Path) -> Store {
        Store::open(&dir.join("store"), "redb").unwrap()
    }

    /// An inbox and its archive folder, deferred, with `ids` noted in
    /// one batch (the message and a linked archive copy each).
    fn noted(dir: &Path, ids: &[&str]) -> (Maildir, Maildir, Batch) {
        let md = Maildir::open(dir.join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let archive = Maildir::open_folder(md.root(), ".Archivio")
            .unwrap()
            .flushing(Flush::Deferred);
        let mut b = Batch::new();
        for id in ids {
            note(&mut b, &md, id, b"hello");
            note_link(&mut b, &archive, id, 5, &md);
        }
        (md, archive, b)
    }

    #[test]
    fn files_are_written_after_their_commit_and_dropped_at_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (md, archive, b) = noted(d.path(), &["m1"]);
        let files = pending(&b).unwrap();
        assert!(pending(&Batch::new()).is_none());
        s.commit(b).unwrap();
        assert!(!md.new_path("m1", 5).exists(), "nothing before the writer");
        written_after(files);
        assert_eq!(std::fs::read(md.new_path("m1", 5)).unwrap(), b"hello");
        assert_eq!(std::fs::read(archive.new_path("m1", 5)).unwrap(), b"hello");
        // Two records, one copy of the message.
        assert_eq!(s.entries(Table::Unflushed).count(), 3);
        assert_eq!(checkpoint(&s).unwrap(), 2);
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
        assert_eq!(checkpoint(&s).unwrap(), 0);
    }

    #[test]
    fn a_checkpoint_writes_what_a_failed_writer_left_out() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (md, archive, b) = noted(d.path(), &["m1", "m2"]);
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        drop(files); // its writer never ran
        // An IMAP client already moved one file along: not written twice.
        md.deliver_once("m2", b"hello", false).unwrap();
        let seen = md.root().join("cur").join("m2,S=5:2,S");
        std::fs::rename(md.new_path("m2", 5), &seen).unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 4);
        assert_eq!(std::fs::read(md.new_path("m1", 5)).unwrap(), b"hello");
        assert_eq!(std::fs::read(archive.new_path("m1", 5)).unwrap(), b"hello");
        assert_eq!(std::fs::read(archive.new_path("m2", 5)).unwrap(), b"hello");
        assert!(!md.new_path("m2", 5).exists());
        assert_eq!(md.messages().unwrap().len(), 2);
    }

    #[test]
    fn a_file_that_cannot_be_written_keeps_its_record_and_holds_up_no_other() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (md, _archive, mut b) = noted(d.path(), &["ok"]);
        let blocked = Maildir::open(d.path().join("blocked"))
            .unwrap()
            .flushing(Flush::Deferred);
        note(&mut b, &blocked, "stuck", b"hello");
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        drop(files); // its writer never ran
        std::fs::remove_dir_all(blocked.root()).unwrap();
        std::fs::write(blocked.root(), b"a file where the mailbox was").unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 2, "the inbox file and its link");
        assert_eq!(std::fs::read(md.new_path("ok", 5)).unwrap(), b"hello");
        assert_eq!(s.entries(Table::Unflushed).count(), 2, "record and message");
        std::fs::remove_file(blocked.root()).unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 1);
        assert_eq!(
            std::fs::read(blocked.new_path("stuck", 5)).unwrap(),
            b"hello"
        );
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
    }

    #[test]
    fn records_that_must_stay_hold_up_no_later_ones_and_an_unreadable_path_fails_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        // A whole page of records for a mailbox that cannot be reached
        // (its parent became a file: neither written nor flushed), sorted
        // before one that can.
        let stuck = Maildir::open(d.path().join("a-wall").join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let late = Maildir::open(d.path().join("z").join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let mut b = Batch::new();
        for i in 0..PER_CHECKPOINT {
            note(&mut b, &stuck, &format!("s{i:05}"), b"hello");
        }
        note(&mut b, &late, "late", b"hello");
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        drop(files); // its writer never ran
        std::fs::remove_dir_all(d.path().join("a-wall")).unwrap();
        std::fs::write(d.path().join("a-wall"), b"a file where a folder was").unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 1);
        assert_eq!(std::fs::read(late.new_path("late", 5)).unwrap(), b"hello");
        assert_eq!(
            s.entries(Table::Unflushed).count(),
            2 * PER_CHECKPOINT,
            "the stuck records and their messages stay"
        );
    }

    #[test]
    fn a_file_a_checkpoint_wrote_counts_as_written() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (md, _archive, b) = noted(d.path(), &["again"]);
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        drop(files); // its writer never ran
        let records: Vec<(Vec<u8>, Vec<u8>)> = s
            .entries_with_prefix(Table::Unflushed, b"k")
            .collect::<Result<_, _>>()
            .unwrap();
        let failures = crate::fsync::filesystem_failures();
        assert_eq!(
            write_again(&s, &records, &Rewrite::default(), failures)
                .unwrap()
                .0,
            2
        );
        // Should dropping the records fail now, the next checkpoint knows
        // the files were written: one the holder deleted meanwhile is not
        // brought back.
        let f = file(md.root(), "again");
        assert_eq!(written().get(&f), Some(&failures));
        std::fs::remove_file(md.new_path("again", 5)).unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 2);
        assert!(md.messages().unwrap().is_empty());
    }

    #[test]
    fn a_mailbox_repair_cannot_reach_is_repaired_by_a_later_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let stuck = Maildir::open(d.path().join("wall").join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let mut b = Batch::new();
        note(&mut b, &stuck, "s1", b"hello");
        s.commit(b).unwrap();
        // What a power loss left under its name, in a mailbox that is
        // out of reach at start-up.
        std::fs::write(stuck.new_path("s1", 5), b"\0\0\0\0\0").unwrap();
        let away = d.path().join("wall.away");
        std::fs::rename(d.path().join("wall"), &away).unwrap();
        std::fs::write(d.path().join("wall"), b"a file where a folder was").unwrap();
        assert_eq!(repair(&s).unwrap(), 0, "the daemon starts");
        assert_eq!(s.entries(Table::Unflushed).count(), 2);
        std::fs::remove_file(d.path().join("wall")).unwrap();
        std::fs::rename(&away, d.path().join("wall")).unwrap();
        // Found there, and still written again.
        assert_eq!(checkpoint(&s).unwrap(), 1);
        assert_eq!(std::fs::read(stuck.new_path("s1", 5)).unwrap(), b"hello");
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
    }

    #[test]
    fn a_removed_mailbox_takes_what_was_delivered_to_it_aside() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let base = d.path().join("mail");
        let address = "mario@x.test";
        let root = crate::maildir::mailbox_path(&base, address).unwrap();
        let md = Maildir::open(&root).unwrap().flushing(Flush::Deferred);
        let archive = Maildir::open_folder(md.root(), ".Archivio")
            .unwrap()
            .flushing(Flush::Deferred);
        let mut b = Batch::new();
        note(&mut b, &md, "last", b"hello");
        note_link(&mut b, &archive, "last", 5, &md);
        // Another mailbox whose root starts with the same bytes.
        let other = Maildir::open(root.with_file_name("mario2"))
            .unwrap()
            .flushing(Flush::Deferred);
        note(&mut b, &other, "theirs", b"hello");
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        drop(files); // its writer never ran before the removal
        let aside = set_aside(&s, &base, address, "20261125T000000Z")
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read(Maildir::open(&aside).unwrap().new_path("last", 5)).unwrap(),
            b"hello"
        );
        assert_eq!(s.entries(Table::Unflushed).count(), 2, "only mario2's left");
        // Nothing comes back at the address for its next holder.
        assert_eq!(checkpoint(&s).unwrap(), 1);
        assert!(!root.exists());
        assert_eq!(
            std::fs::read(other.new_path("theirs", 5)).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn a_checkpoint_writes_again_only_what_it_must() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        // Written after the commit, then deleted by the holder (or moved
        // to another folder) before the checkpoint: it stays deleted.
        let (md, archive, b) = noted(d.path(), &["gone"]);
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        written_after(files);
        std::fs::remove_file(md.new_path("gone", 5)).unwrap();
        std::fs::remove_file(archive.new_path("gone", 5)).unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 2);
        assert!(md.messages().unwrap().is_empty());
        assert!(archive.messages().unwrap().is_empty());
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
        // Written, then a filesystem flush failed (perhaps another
        // caller's syncfs, which alone hears of a writeback error): the
        // file is there but its pages may never reach the disk, so it is
        // written again.
        let (md, archive, b) = noted(d.path(), &["lost"]);
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        written_after(files);
        std::fs::write(md.new_path("lost", 5), b"\0\0\0\0\0").unwrap();
        crate::fsync::count_filesystem_failure_for_test();
        assert_eq!(checkpoint(&s).unwrap(), 2);
        assert_eq!(std::fs::read(md.new_path("lost", 5)).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(archive.new_path("lost", 5)).unwrap(),
            b"hello"
        );
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
    }

    /// "m1" and its archive link recorded, the inbox file there, the link
    /// never made (its writer never ran, as if it had failed).
    fn link_not_made(dir: &Path) -> (Store, Maildir, Maildir) {
        let s = store(dir);
        let (md, archive, b) = noted(dir, &["m1"]);
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        drop(files);
        md.deliver_once("m1", b"hello", false).unwrap();
        (s, md, archive)
    }

    #[test]
    fn a_link_whose_file_went_in_an_earlier_pass_is_made_from_that_file() {
        let d = tempfile::tempdir().unwrap();
        let (s, md, archive) = link_not_made(d.path());
        // An earlier pass (records beyond one batch) found the inbox file
        // and dropped its record and message.
        let f = file(md.root(), "m1");
        let mut gone = Batch::new();
        gone.delete(Table::Unflushed, prefixed(b'k', &f));
        gone.delete(Table::Unflushed, prefixed(b'd', &f));
        s.commit(gone).unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 1);
        assert_eq!(std::fs::read(archive.new_path("m1", 5)).unwrap(), b"hello");
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
    }

    #[test]
    fn a_message_kept_for_a_failed_link_goes_with_the_link() {
        let d = tempfile::tempdir().unwrap();
        let (s, _md, archive) = link_not_made(d.path());
        std::fs::remove_dir_all(archive.root()).unwrap();
        std::fs::write(archive.root(), b"a file where the folder was").unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 1, "the inbox file's record");
        assert_eq!(s.entries(Table::Unflushed).count(), 2, "link and message");
        std::fs::remove_file(archive.root()).unwrap();
        assert_eq!(checkpoint(&s).unwrap(), 1);
        assert_eq!(std::fs::read(archive.new_path("m1", 5)).unwrap(), b"hello");
        assert_eq!(s.entries(Table::Unflushed).count(), 0, "no message left");
    }

    #[test]
    fn repair_writes_every_recorded_file_again_where_it_now_is() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (md, archive, b) = noted(d.path(), &["a", "b"]);
        let files = pending(&b).unwrap();
        s.commit(b).unwrap();
        written_after(files);
        // What a power loss may leave: a name over garbage (in the inbox
        // and so in its archive link), a name lost; meanwhile an IMAP
        // client moved one file to cur/ with flags.
        std::fs::write(md.new_path("a", 5), b"\0\0\0").unwrap();
        let seen = md.root().join("cur").join("b,S=5:2,S");
        std::fs::rename(md.new_path("b", 5), &seen).unwrap();
        std::fs::write(&seen, b"").unwrap();
        std::fs::remove_file(archive.new_path("b", 5)).unwrap();
        assert_eq!(repair(&s).unwrap(), 4);
        assert_eq!(std::fs::read(md.new_path("a", 5)).unwrap(), b"hello");
        assert_eq!(std::fs::read(archive.new_path("a", 5)).unwrap(), b"hello");
        assert_eq!(std::fs::read(&seen).unwrap(), b"hello");
        assert!(!md.new_path("b", 5).exists(), "no second copy of b");
        assert_eq!(std::fs::read(archive.new_path("b", 5)).unwrap(), b"hello");
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
        assert_eq!(std::fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
    }
}
