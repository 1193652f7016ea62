//! Maildir deliveries awaiting their flush (`delivery.maildir_flush =
//! "checkpoint"`).
//!
//! A delivery into a [`Flush::Deferred`] mailbox writes and renames its
//! file without waiting for the disk, and its commit carries a record
//! here with the message itself: from that commit on, the message is
//! durable in the store even if the file is not yet. A checkpoint every
//! `delivery.checkpoint_every` (100ms) flushes each filesystem that holds
//! such files (one syncfs) and then drops their records; after a crash,
//! start-up writes every recorded file again, durably, before anything
//! else runs.
//!
//! Owns: table `unflushed`: `k<mailbox root>\0<id>` → `D` (the message
//! is at `d<mailbox root>\0<id>`, apart so that a checkpoint reads only
//! the small records) or `L<mailbox root>\0<id>` (an archive copy linked
//! to that inbox file); the checkpoint; the repair.
//! Must not touch: PEC semantics, the queue, quotas.

use crate::maildir::{Flush, Maildir};
use crate::store::{Batch, Store, Table};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Records dropped per checkpoint commit.
const PER_CHECKPOINT: usize = 2000;

/// A file's name in this table: `<mailbox root>\0<id>`.
fn file(md: &Maildir, id: &str) -> Vec<u8> {
    let mut k = md.root().as_os_str().as_bytes().to_vec();
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

/// `data`, just delivered under `id` into `md`, is kept in `b` until a
/// checkpoint flushes it (nothing to keep unless `md` defers its flushes).
pub fn note(b: &mut Batch, md: &Maildir, id: &str, data: &[u8]) {
    if md.flush() == Flush::Deferred {
        let f = file(md, id);
        b.put(Table::Unflushed, prefixed(b'd', &f), data);
        b.put(Table::Unflushed, prefixed(b'k', &f), b"D".to_vec());
    }
}

/// `md`'s copy of `id` is a link to `source`'s, recorded by [`note`] in
/// the same batch.
pub fn note_link(b: &mut Batch, md: &Maildir, id: &str, source: &Maildir) {
    if md.flush() == Flush::Deferred {
        let f = file(md, id);
        b.put(
            Table::Unflushed,
            prefixed(b'k', &f),
            prefixed(b'L', &file(source, id)),
        );
    }
}

/// Flush every filesystem holding a recorded file, then drop those
/// records. Returns how many were dropped.
pub fn checkpoint(store: &Store) -> Result<usize, String> {
    let mut total = 0;
    loop {
        let keys: Vec<Vec<u8>> = store
            .entries_with_prefix(Table::Unflushed, b"k")
            .take(PER_CHECKPOINT)
            .map(|e| e.map(|(k, _)| k))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if keys.is_empty() {
            return Ok(total);
        }
        // Each record was committed after its file was written, and read
        // before this flush starts: the flush covers the file.
        let roots: HashSet<PathBuf> = keys
            .iter()
            .filter_map(|k| split(&k[1..]))
            .map(|r| r.0)
            .collect();
        flush_filesystems(&roots)?;
        let mut b = Batch::new();
        for k in &keys {
            b.delete(Table::Unflushed, k.clone());
            b.delete(Table::Unflushed, prefixed(b'd', &k[1..]));
        }
        store.commit(b).map_err(|e| e.to_string())?;
        total += keys.len();
        if keys.len() < PER_CHECKPOINT {
            return Ok(total);
        }
    }
}

/// One syncfs per filesystem among `roots` (a root gone since has no file
/// left to flush).
fn flush_filesystems(roots: &HashSet<PathBuf>) -> Result<(), String> {
    let mut devices = HashSet::new();
    for root in roots {
        match std::fs::metadata(root) {
            Ok(m) if devices.insert(m.dev()) => {
                crate::fsync::sync_filesystem(root)
                    .map_err(|e| format!("{}: {e}", root.display()))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", root.display())),
        }
    }
    Ok(())
}

/// After a crash: write every recorded file again (a name in `new/` may
/// hold anything after a power loss), flush, and drop the records.
/// Returns how many files were written. Run before any delivery starts.
pub fn repair(store: &Store) -> Result<usize, String> {
    let mut written = 0;
    for entry in store.entries_with_prefix(Table::Unflushed, b"k") {
        let (k, v) = entry.map_err(|e| e.to_string())?;
        let Some((root, id)) = split(&k[1..]) else {
            tracing::warn!(event = "unflushed_record_unreadable", key = ?String::from_utf8_lossy(&k));
            continue;
        };
        let at = match v.split_first() {
            Some((b'D', _)) => prefixed(b'd', &k[1..]),
            Some((b'L', source)) => prefixed(b'd', source),
            _ => {
                tracing::warn!(event = "unflushed_record_unreadable", mailbox = %root.display(), id = %id);
                continue;
            }
        };
        let Some(data) = store
            .get(Table::Unflushed, &at)
            .map_err(|e| e.to_string())?
        else {
            tracing::warn!(event = "unflushed_message_missing", mailbox = %root.display(), id = %id);
            continue;
        };
        rewrite(&root, &id, &data)?;
        written += 1;
    }
    checkpoint(store)?;
    Ok(written)
}

fn rewrite(root: &Path, id: &str, data: &[u8]) -> Result<(), String> {
    Maildir::open(root)
        .and_then(|md| md.flushing(Flush::Deferred).rewrite(id, data))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store(dir: &Path) -> Store {
        Store::open(&dir.join("store"), "redb").unwrap()
    }

    #[test]
    fn a_checkpoint_drops_what_it_flushed() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let md = Maildir::open(d.path().join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let archive = Maildir::open_folder(md.root(), ".Archivio")
            .unwrap()
            .flushing(Flush::Deferred);
        let mut b = Batch::new();
        md.deliver_once("m1", b"hello", false).unwrap();
        note(&mut b, &md, "m1", b"hello");
        archive
            .deliver_linked("m1", b"hello", false, &md.new_path("m1", 5))
            .unwrap();
        note_link(&mut b, &archive, "m1", &md);
        // A mailbox that flushes at once keeps nothing.
        let eager = Maildir::open(d.path().join("eager")).unwrap();
        note(&mut b, &eager, "m2", b"x");
        s.commit(b).unwrap();
        // Two files, one copy of the message.
        assert_eq!(s.entries(Table::Unflushed).count(), 3);
        assert_eq!(checkpoint(&s).unwrap(), 2);
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
        assert_eq!(checkpoint(&s).unwrap(), 0);
    }

    #[test]
    fn repair_writes_every_recorded_file_again_where_it_now_is() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let md = Maildir::open(d.path().join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        let archive = Maildir::open_folder(md.root(), ".Archivio")
            .unwrap()
            .flushing(Flush::Deferred);
        let mut b = Batch::new();
        for id in ["a", "b"] {
            md.deliver_once(id, b"hello", false).unwrap();
            note(&mut b, &md, id, b"hello");
        }
        archive
            .deliver_linked("a", b"hello", false, &md.new_path("a", 5))
            .unwrap();
        note_link(&mut b, &archive, "a", &md);
        s.commit(b).unwrap();
        // What a power loss may leave: a name over garbage, a name lost;
        // meanwhile an IMAP client moved one file to cur/ with flags.
        std::fs::write(md.new_path("a", 5), b"\0\0\0").unwrap();
        let seen = md.root().join("cur").join("b,S=5:2,S");
        std::fs::rename(md.new_path("b", 5), &seen).unwrap();
        std::fs::write(&seen, b"").unwrap();
        std::fs::remove_file(archive.new_path("a", 5)).unwrap();
        assert_eq!(repair(&s).unwrap(), 3);
        assert_eq!(std::fs::read(md.new_path("a", 5)).unwrap(), b"hello");
        assert_eq!(std::fs::read(&seen).unwrap(), b"hello");
        assert!(!md.new_path("b", 5).exists(), "no second copy of b");
        assert_eq!(std::fs::read(archive.new_path("a", 5)).unwrap(), b"hello");
        assert_eq!(s.entries(Table::Unflushed).count(), 0);
        assert_eq!(std::fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_retried_delivery_into_a_deferred_mailbox_does_not_trust_its_file() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(d.path().join("box"))
            .unwrap()
            .flushing(Flush::Deferred);
        md.deliver_once("m", b"hello", false).unwrap();
        // The first attempt's file, unflushed, then a crash before its
        // commit: the retry must not count it as delivered.
        std::fs::write(md.new_path("m", 5), b"\0\0\0\0\0").unwrap();
        assert_eq!(md.find("m", 5, true).unwrap(), None);
        md.deliver_once("m", b"hello", true).unwrap();
        assert_eq!(std::fs::read(md.new_path("m", 5)).unwrap(), b"hello");
        assert_eq!(md.messages().unwrap().len(), 1);
        // Within one run, a file this process wrote is found as usual.
        assert!(md.find("m", 5, false).unwrap().is_some());
    }
}
