//! The durable queue: work items in the store, in two lanes ordered by due
//! time, and the message bodies they carry.
//!
//! Owns: item shapes (what must still happen to a message), where a body
//! lies (up to [`INLINE_MAX`] in the store, in the item's own commit; larger
//! in the spool: content-addressed files, tmp → fsync → rename → fsync dir,
//! written *before* the store commit that references them), retry backoff,
//! and quarantine of undecodable items. Must not touch: what the items mean
//! for PEC (that is `app`) or the storage engine (via [`Store`]).

use crate::store::{Batch, Store, StoreError, Table};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What must happen to a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Work {
    /// Store the blob in a local mailbox (punto di consegna, or a notice to
    /// one of our users). With `receipt_to`, the blob is a busta di trasporto
    /// and, once it is stored, the delivery receipt (or, when the mailbox
    /// refuses it, the avviso di mancata consegna) goes to that address
    /// (RT §3.8: a receipt only after the envelope is stored).
    Local {
        mailbox: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receipt_to: Option<String>,
    },
    /// Relay the blob by SMTP to another provider or an external domain.
    Relay {
        mail_from: String,
        rcpt_to: Vec<String>,
        domain: String,
        /// A fixed next hop (the notify smarthost) instead of routes/MX.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<std::net::SocketAddr>,
    },
    /// Copy the blob into a mailbox's archive folder (what it sent).
    Archive { mailbox: String },
    /// Process the blob as our own reception point (inbound mail, and
    /// same-provider PEC traffic, which gets the full processing: RT §1.1).
    Receive {
        mail_from: String,
        rcpt_to: Vec<String>,
    },
}

impl Work {
    /// Which lane (and which pool of worker slots) the work waits in.
    pub fn lane(&self) -> Lane {
        match self {
            Work::Relay { .. } => Lane::Relay,
            _ => Lane::Local,
        }
    }
}

/// The queue is two ordered lanes, like Postfix's separate transports: a
/// backlog for a slow peer (relays) must not make the worker read past it
/// to find local work, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Work done on this machine: mailbox deliveries, archive copies, our
    /// own reception point.
    Local,
    /// SMTP to another provider or an external domain.
    Relay,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Local, Lane::Relay];

    fn prefix(self) -> &'static [u8] {
        match self {
            Lane::Local => b"t/l/",
            Lane::Relay => b"t/r/",
        }
    }
}

/// One queue item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Unique and stable: also names the Maildir file (idempotent delivery).
    pub id: String,
    pub work: Work,
    /// Hex SHA-256 of the content: the spool file's name, or, for inline
    /// content, its name in logs and errors.
    pub blob: String,
    /// The content is in the store (`Blobs`, under the item's id), not in
    /// the spool: see [`stage`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline: bool,
    pub attempts: u32,
    pub created: DateTime<Utc>,
    pub next_attempt: DateTime<Utc>,
    /// The PEC transaction this belongs to (logs, timers).
    #[serde(default)]
    pub pec_id: Option<String>,
    /// Last temporary error, for operators.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Item {
    pub fn new(
        id: String,
        work: Work,
        blob: String,
        now: DateTime<Utc>,
        pec_id: Option<String>,
    ) -> Item {
        Item {
            id,
            work,
            blob,
            inline: false,
            attempts: 0,
            created: now,
            next_attempt: now,
            pec_id,
            last_error: None,
        }
    }

    /// `t/<lane>/<due time, 16 hex digits of ms since the epoch>/<id>`:
    /// each lane is ordered by due time, so finding due work reads only due
    /// work and a backlog waiting for a dead peer costs nothing per pass.
    /// The key changes when the item is rescheduled (see [`Item::retry`]).
    pub fn key(&self) -> Vec<u8> {
        due_key(self.work.lane(), self.next_attempt, &self.id)
    }

    pub fn put(&self, batch: &mut Batch) {
        batch.put(
            Table::Queue,
            self.key(),
            serde_json::to_vec(self).unwrap_or_default(),
        );
    }

    /// Take the item off the queue, keeping its content (it is put back
    /// under a new key: [`Item::retry`]). Finished items go with
    /// [`Item::done`], which also drops their content.
    fn remove(&self, batch: &mut Batch) {
        batch.delete(Table::Queue, self.key());
    }

    /// The item is finished: off the queue, with its inline content.
    pub fn done(&self, batch: &mut Batch) {
        self.remove(batch);
        if self.inline {
            batch.delete(Table::Blobs, self.id.as_bytes());
        }
    }

    /// The item's content, wherever it lies.
    pub fn content(&self, store: &Store, spool: &Spool) -> Result<Vec<u8>, String> {
        let missing = |e: String| format!("blob {} of item {}: {e}", self.blob, self.id);
        if self.inline {
            return store
                .get(Table::Blobs, self.id.as_bytes())
                .map_err(|e| missing(e.to_string()))?
                .ok_or_else(|| missing("not in the store".into()));
        }
        spool.get(&self.blob).map_err(|e| missing(e.to_string()))
    }

    /// Reschedule after a temporary failure: `base`, doubling, at most `max`.
    /// The item moves: its old key is deleted in `batch`, the caller puts it.
    pub fn retry(
        &mut self,
        batch: &mut Batch,
        now: DateTime<Utc>,
        error: String,
        base: std::time::Duration,
        max: std::time::Duration,
    ) {
        self.remove(batch);
        let factor = 1u32 << self.attempts.min(16);
        self.attempts += 1;
        let delay = base.saturating_mul(factor).min(max);
        self.next_attempt =
            now + ChronoDuration::from_std(delay).unwrap_or(ChronoDuration::minutes(30));
        self.last_error = Some(error);
    }

    /// Whether the item has been in the queue longer than `give_up_after`.
    pub fn expired(&self, now: DateTime<Utc>, give_up_after: std::time::Duration) -> bool {
        (now - self.created)
            .to_std()
            .is_ok_and(|age| age > give_up_after)
    }
}

/// Largest content kept in the store rather than in a spool file. A small
/// message in the store costs no file of its own: no create, fsync,
/// rename, directory fsync and later unlink, just bytes in the commit that
/// already carries its queue item (and it goes in the same commit as the
/// item's removal). Large ones stay files, so the store's commits and
/// cache never hold a 30 MB body.
pub const INLINE_MAX: usize = 256 * 1024;

/// A new item for `parts` (concatenated): its content goes into `batch`
/// (small) or durably into the spool before the commit (large).
pub fn stage(
    batch: &mut Batch,
    spool: &Spool,
    parts: &[&[u8]],
    id: String,
    work: Work,
    now: DateTime<Utc>,
    pec_id: Option<String>,
) -> std::io::Result<Item> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > INLINE_MAX {
        let blob = spool.put_parts(parts)?;
        return Ok(Item::new(id, work, blob, now, pec_id));
    }
    let content = parts.concat();
    let mut item = Item::new(id, work, content_name(&[&content]), now, pec_id);
    item.inline = true;
    batch.put(Table::Blobs, item.id.clone().into_bytes(), content);
    Ok(item)
}

impl Item {
    /// An item for `content` that is processed at once and never queued:
    /// what [`stage`] would have made of it, without storing anything
    /// (its [`Item::done`] removes nothing that exists).
    pub fn stored_in_memory(id: String, work: Work, content: &[u8], now: DateTime<Utc>) -> Item {
        let mut item = Item::new(id, work, content_name(&[content]), now, None);
        item.inline = true;
        item
    }
}

/// Hex SHA-256 of the concatenation of `parts`.
fn content_name(parts: &[&[u8]]) -> String {
    let mut h = openssl::sha::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finish().iter().map(|b| format!("{b:02x}")).collect()
}

/// Blob names referenced by queue items (what spool garbage collection keeps).
pub fn referenced_blobs(store: &Store) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut refs = std::collections::HashSet::new();
    for entry in store.entries(Table::Queue) {
        let (_, v) = entry?;
        if let Ok(i) = serde_json::from_slice::<Item>(&v)
            && !i.inline
        {
            refs.insert(i.blob);
        }
    }
    Ok(refs)
}

fn due_key(lane: Lane, at: DateTime<Utc>, id: &str) -> Vec<u8> {
    let mut k = lane.prefix().to_vec();
    k.extend_from_slice(format!("{}/{id}", crate::store::time_key(at)).as_bytes());
    k
}

/// The due time and the id in a key of `lane`.
fn parse_key(lane: Lane, key: &[u8]) -> Option<(DateTime<Utc>, &str)> {
    let (at, id) = crate::store::split_time_key(key.strip_prefix(lane.prefix())?)?;
    Some((at, std::str::from_utf8(id).ok()?))
}

/// Due items, read lane by lane in due-time order up to `now`, at most
/// `room(lane)` from each (the worker's free slots: reading more would
/// only be thrown away, and a pass runs each time an item finishes). The
/// walk of a lane stops at its first item not yet due, which gives the
/// time until the next one. Undecodable entries are returned for
/// quarantine, and items stored under a key that is not theirs for
/// re-keying.
///
/// `skip(id)` names items to leave out unread (those already running).
pub fn load_due(
    store: &Store,
    now: DateTime<Utc>,
    room: impl Fn(Lane) -> usize,
    skip: impl Fn(&str) -> bool,
) -> Result<Due, StoreError> {
    let mut out = Due::default();
    for lane in Lane::ALL {
        let max = room(lane);
        if max == 0 {
            continue; // a finishing item of this lane wakes the worker
        }
        let mut taken = 0;
        for entry in store.entries_with_prefix(Table::Queue, lane.prefix()) {
            let (k, v) = entry?;
            let parsed = parse_key(lane, &k);
            if let Some((at, _)) = parsed.filter(|(at, _)| *at > now) {
                let wait = (at - now).to_std().unwrap_or_default();
                out.next = Some(out.next.map_or(wait, |n| n.min(wait)));
                break;
            }
            if parsed.is_some_and(|(_, id)| skip(id)) {
                continue;
            }
            if taken >= max {
                break;
            }
            if let Some(i) = out.sort(k, &v) {
                taken += 1;
                out.items.push(i);
            }
        }
    }
    Ok(out)
}

/// Items stored under a key that is not their own (an older layout, read
/// once at start-up) in `rekey`, and undecodable ones in `bad`.
pub fn misplaced(store: &Store) -> Result<Due, StoreError> {
    let mut out = Due::default();
    for entry in store.entries(Table::Queue) {
        let (k, v) = entry?;
        out.sort(k, &v);
    }
    Ok(out)
}

/// In `b`: items found under a stale key (see [`load_due`]) moved to their
/// key.
pub fn rekey(b: &mut Batch, items: Vec<(Vec<u8>, Item)>) {
    for (old, item) in items {
        b.delete(Table::Queue, old);
        item.put(b);
    }
}

/// What [`load_due`] found.
#[derive(Debug, Default)]
pub struct Due {
    pub items: Vec<Item>,
    /// Keys of undecodable items (to quarantine).
    pub bad: Vec<Vec<u8>>,
    /// Time until the earliest item not yet due is due (None: nothing is
    /// waiting, or a lane had no room and its next finishing item will
    /// wake the worker).
    pub next: Option<std::time::Duration>,
    /// Items under a stale key: (old key, item).
    pub rekey: Vec<(Vec<u8>, Item)>,
}

impl Due {
    /// One stored entry: an item under its own key (returned), one under a
    /// stale key (to re-key) or an undecodable one (to quarantine).
    fn sort(&mut self, key: Vec<u8>, value: &[u8]) -> Option<Item> {
        match serde_json::from_slice::<Item>(value) {
            Ok(i) if i.key() != key => self.rekey.push((key, i)),
            Ok(i) => return Some(i),
            Err(_) => self.bad.push(key),
        }
        None
    }
}

/// Every queued item with its key, lane by lane (local work, then
/// relays), each lane in due order: what an operator sees with `pecd queue
/// list`. Undecodable entries are left out (the worker quarantines them).
pub fn list(store: &Store) -> Result<Vec<(Vec<u8>, Item)>, StoreError> {
    let mut out = Vec::new();
    for lane in Lane::ALL {
        for entry in store.entries_with_prefix(Table::Queue, lane.prefix()) {
            let (k, v) = entry?;
            if let Ok(i) = serde_json::from_slice::<Item>(&v) {
                out.push((k, i));
            }
        }
    }
    Ok(out)
}

/// The queued item `id` and the key it is stored under.
pub fn find(store: &Store, id: &str) -> Result<Option<(Vec<u8>, Item)>, StoreError> {
    Ok(list(store)?.into_iter().find(|(_, i)| i.id == id))
}

/// In `b`: `item`, found under `key`, due at `now` (an operator's retry:
/// the peer is back), its attempts and age kept, so `give_up_after` still
/// counts from its creation.
pub fn due_now(b: &mut Batch, key: Vec<u8>, item: &mut Item, now: DateTime<Utc>) {
    b.delete(Table::Queue, key);
    item.next_attempt = now;
    item.put(b);
}

/// `meta` keys of quarantined entries start with this.
pub const QUARANTINE_PREFIX: &[u8] = b"quarantine/";

/// The `meta` key of quarantined entry `name`.
pub fn quarantine_key(name: impl AsRef<[u8]>) -> Vec<u8> {
    [QUARANTINE_PREFIX, name.as_ref()].concat()
}

/// A quarantined entry, as kept in `meta`: a given-up item (its message is
/// a file in the quarantine Maildir) or an undecodable one (its bytes).
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// The key after `quarantine/`: a given-up item's id, or the queue key
    /// an undecodable entry was found under.
    pub name: String,
    pub item: Result<Item, String>,
}

/// Every quarantined entry.
pub fn quarantined(store: &Store) -> Result<Vec<Quarantined>, StoreError> {
    let mut out = Vec::new();
    for entry in store.entries_with_prefix(Table::Meta, QUARANTINE_PREFIX) {
        let (k, v) = entry?;
        out.push(Quarantined {
            name: String::from_utf8_lossy(&k[QUARANTINE_PREFIX.len()..]).into_owned(),
            item: serde_json::from_slice::<Item>(&v).map_err(|e| {
                format!(
                    "undecodable ({e}): {}",
                    String::from_utf8_lossy(&v[..v.len().min(200)])
                )
            }),
        });
    }
    Ok(out)
}

/// In `b`: undecodable items moved out of the queue, their bytes kept for
/// an operator (`meta` table, `quarantine/<key>`), and log it.
pub fn quarantine(
    b: &mut Batch,
    store: &Store,
    keys: &[Vec<u8>],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for k in keys {
        let v = store.get(Table::Queue, k)?.unwrap_or_default();
        b.put(Table::Meta, quarantine_key(k), v);
        b.delete(Table::Queue, k.clone());
        let mut r = crate::audit::LogRecord::new(now, crate::audit::Event::Anomaly);
        r.detail = Some(format!(
            "queue item {} quarantined: undecodable",
            String::from_utf8_lossy(k)
        ));
        r.append_to(b);
    }
    Ok(())
}

/// The spool of message bodies.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    /// Blobs a new or moved queue item has just come to reference, and
    /// when: the collector spares them as recent. Kept here, not in the
    /// files' times: a blob may be hard-linked into a mailbox's archive,
    /// where its time is the message's date (Dovecot's INTERNALDATE) and
    /// the order archive rotation goes by.
    spared: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// Taken by [`Spool::put_parts`] to reuse an existing blob and by
/// [`Spool::collect_garbage`] to judge and remove one.
fn spool_gc_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

impl Spool {
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        fs::create_dir_all(dir.join("tmp"))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            spared: Default::default(),
        })
    }

    /// Write durably; returns the blob name. Idempotent for equal content.
    pub fn put(&self, data: &[u8]) -> std::io::Result<String> {
        self.put_parts(&[data])
    }

    /// [`Spool::put`] of the concatenation of `parts`, without building it
    /// (a trace line on top of a large message).
    pub fn put_parts(&self, parts: &[&[u8]]) -> std::io::Result<String> {
        let name = content_name(parts);
        let path = self.dir.join(&name);
        // With the collector's lock: it cannot be judged old and removed
        // between this look and the refresh.
        let reused = {
            let _gc = spool_gc_lock();
            let reused = path.exists();
            if reused {
                // Spared as recent, so garbage collection cannot take it
                // between this call and the commit.
                self.spare(&name);
            }
            reused
        };
        if reused {
            // Its writer flushed the data before the rename, but may have
            // been killed before the directory's flush.
            crate::fsync::sync_dir(&self.dir)?;
            return Ok(name);
        }
        // A temporary name of its own: concurrent writers of equal content
        // must not share (and truncate) one file.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{name}.{}.{n}", std::process::id()));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        crate::fsync::sync_dir(&self.dir)?;
        Ok(name)
    }

    pub fn get(&self, name: &str) -> std::io::Result<Vec<u8>> {
        fs::read(self.path(name)?)
    }

    /// Make the blob of `item` (if in the spool) recent, before a commit
    /// that moves the item to an earlier queue key. The collector learns
    /// what is referenced by walking the queue page by page, not from one
    /// snapshot: an item moved behind the walk is not seen, and only its
    /// blob's age (the collector spares recent blobs) keeps it.
    pub fn touch(&self, item: &Item) -> std::io::Result<()> {
        if !item.inline {
            self.path(&item.blob)?;
            let _gc = spool_gc_lock();
            self.spare(&item.blob);
        }
        Ok(())
    }

    /// Mark `name` recent (the caller holds the collector's lock).
    fn spare(&self, name: &str) {
        self.spared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), std::time::Instant::now());
    }

    /// Where a blob lies (to link it rather than read it).
    pub fn path(&self, name: &str) -> std::io::Result<PathBuf> {
        if !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(std::io::Error::other("invalid blob name"));
        }
        Ok(self.dir.join(name))
    }

    /// Remove blobs no queue item references and older than `min_age` (a
    /// blob is written just *before* the commit that references it), and
    /// not spared as recently referenced.
    pub fn collect_garbage(
        &self,
        referenced: &std::collections::HashSet<String>,
        min_age: std::time::Duration,
    ) -> std::io::Result<usize> {
        let mut n = 0;
        self.spared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, at| at.elapsed() < min_age);
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type()?.is_file() || referenced.contains(&name) {
                continue;
            }
            // Judged and removed under the lock that `put_parts` takes to
            // reuse a blob: a blob being reused is refreshed first, so
            // never removed under a new item's feet.
            let _gc = spool_gc_lock();
            let spared = self
                .spared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .is_some_and(|at| at.elapsed() < min_age);
            if spared {
                continue;
            }
            let modified = match fs::metadata(e.path()) {
                Ok(m) => m.modified()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let old = modified.elapsed().is_ok_and(|age| age >= min_age);
            if old {
                fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local delivery to a@b.it, due `now`.
    fn local_item(id: impl Into<String>, now: DateTime<Utc>) -> Item {
        let work = Work::Local {
            mailbox: "a@b.it".into(),
            receipt_to: None,
        };
        Item::new(id.into(), work, "ab".into(), now, None)
    }

    #[test]
    fn spool_is_content_addressed_and_durable() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let a = s.put(b"hello").unwrap();
        assert_eq!(a, s.put(b"hello").unwrap());
        assert_eq!(s.get(&a).unwrap(), b"hello");
        assert!(s.get("../etc/passwd").is_err());
        let b = s.put(b"other").unwrap();
        let keep: std::collections::HashSet<String> = [a.clone()].into();
        assert_eq!(
            s.collect_garbage(&keep, std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        assert_eq!(
            s.collect_garbage(&keep, std::time::Duration::ZERO).unwrap(),
            1
        );
        assert!(s.get(&b).is_err());
        // An old blob touched (its item moved) is spared as recent.
        let c = s.put(b"moved").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let file = fs::File::options()
            .write(true)
            .open(s.path(&c).unwrap())
            .unwrap();
        file.set_modified(hour_ago).unwrap();
        let now = chrono::Utc::now();
        let work = Work::Local {
            mailbox: "x@y.it".into(),
            receipt_to: None,
        };
        let item = Item::new("m".into(), work, c.clone(), now, None);
        s.touch(&item).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(s.collect_garbage(&keep, hour).unwrap(), 0);
        assert_eq!(s.get(&c).unwrap(), b"moved");
        // Its time untouched: a blob may be an archived message's file.
        let t = fs::metadata(s.path(&c).unwrap())
            .unwrap()
            .modified()
            .unwrap();
        assert!(
            t.elapsed().unwrap() > hour,
            "the file's time is the message's"
        );
    }

    #[test]
    fn a_blob_reused_while_it_is_collected_is_never_left_missing() {
        let d = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Spool::open(d.path()).unwrap());
        let name = s.put(b"reused").unwrap();
        let path = s.path(&name).unwrap();
        let none = std::collections::HashSet::new();
        let an_hour = std::time::Duration::from_secs(3600);
        for _ in 0..3000 {
            // Unreferenced and old: the collector's to take, unless a new
            // item reuses it first.
            let long_ago = std::time::SystemTime::now() - 2 * an_hour;
            if let Ok(f) = fs::File::options().write(true).open(&path) {
                f.set_modified(long_ago).unwrap();
            }
            let gc = {
                let (s, none) = (s.clone(), none.clone());
                std::thread::spawn(move || s.collect_garbage(&none, an_hour).unwrap())
            };
            assert_eq!(s.put(b"reused").unwrap(), name);
            gc.join().unwrap();
            // The item that reused it is committed next: its blob must be
            // there.
            assert_eq!(s.get(&name).unwrap(), b"reused");
        }
    }

    #[test]
    fn concurrent_writers_of_equal_content_never_leave_a_partial_blob() {
        let d = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Spool::open(d.path()).unwrap());
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (s, data) = (s.clone(), data.clone());
                std::thread::spawn(move || s.put(&data).unwrap())
            })
            .collect();
        let names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(names.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(s.get(&names[0]).unwrap(), data);
    }

    #[test]
    fn items_round_trip_and_bad_ones_are_quarantined() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), "redb").unwrap();
        let now = Utc::now();
        let item = local_item("i1", now);
        let mut b = Batch::new();
        item.put(&mut b);
        // Garbage inside a lane is found by the passes, elsewhere by the
        // start-up walk.
        let in_lane = b"t/l/0000000000000000/i2".to_vec();
        b.put(Table::Queue, in_lane.clone(), b"not json".to_vec());
        b.put(Table::Queue, b"i3".to_vec(), b"not json".to_vec());
        store.commit(b).unwrap();
        let due = load_due(&store, now, |_| 100, |_| false).unwrap();
        assert_eq!(due.items, vec![item]);
        assert_eq!(due.bad, vec![in_lane.clone()]);
        let found = misplaced(&store).unwrap();
        assert!(found.rekey.is_empty());
        assert_eq!(found.bad, vec![b"i3".to_vec(), in_lane.clone()]);
        let mut b = Batch::new();
        quarantine(&mut b, &store, &found.bad, now).unwrap();
        store.commit(b).unwrap();
        assert_eq!(
            load_due(&store, now, |_| 100, |_| false).unwrap().bad.len(),
            0
        );
        let mut qk = b"quarantine/".to_vec();
        qk.extend_from_slice(&in_lane);
        assert_eq!(
            store.get(Table::Meta, &qk).unwrap().as_deref(),
            Some(&b"not json"[..])
        );
        assert!(store.get(Table::Meta, b"quarantine/i3").unwrap().is_some());
    }

    #[test]
    fn a_backlog_of_waiting_items_does_not_hide_due_ones() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), "redb").unwrap();
        let now = Utc::now();
        let mut b = Batch::new();
        for i in 0..2500 {
            let mut it = local_item(format!("a{i:05}"), now);
            it.next_attempt = now + ChronoDuration::minutes(5);
            it.put(&mut b);
        }
        // Sorts after the backlog.
        local_item("z-new", now).put(&mut b);
        store.commit(b).unwrap();
        let due = load_due(&store, now, |_| 100, |_| false).unwrap();
        assert_eq!(due.items.len(), 1);
        assert_eq!(due.items[0].id, "z-new");
        let wait = due.next.unwrap();
        assert!(
            wait > std::time::Duration::from_secs(290)
                && wait <= std::time::Duration::from_secs(300)
        );
    }

    #[test]
    fn running_items_are_skipped_and_a_retry_moves_the_item() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), "redb").unwrap();
        let now = Utc::now();
        let mut b = Batch::new();
        let mut items: Vec<Item> = ["x1", "x2"].iter().map(|id| local_item(*id, now)).collect();
        items.iter().for_each(|i| i.put(&mut b));
        // An item stored under an older key layout is found for re-keying.
        let legacy = Item::new("x3".into(), items[0].work.clone(), "ab".into(), now, None);
        b.put(
            Table::Queue,
            b"x3".to_vec(),
            serde_json::to_vec(&legacy).unwrap(),
        );
        store.commit(b).unwrap();
        let due = load_due(&store, now, |_| 100, |id| id == "x1").unwrap();
        assert_eq!(due.items, vec![items[1].clone()]);
        let found = misplaced(&store).unwrap();
        assert!(found.bad.is_empty());
        assert_eq!(found.rekey.len(), 1);
        let mut b = Batch::new();
        rekey(&mut b, found.rekey);
        store.commit(b).unwrap();
        assert_eq!(
            load_due(&store, now, |_| 100, |_| false)
                .unwrap()
                .items
                .len(),
            3
        );

        let mut b = Batch::new();
        items[1].retry(
            &mut b,
            now,
            "busy".into(),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(600),
        );
        items[1].put(&mut b);
        store.commit(b).unwrap();
        let due = load_due(&store, now, |_| 100, |_| false).unwrap();
        assert_eq!(due.items.len(), 2, "the retried item is no longer due");
        let next = due.next.unwrap().as_secs_f64();
        assert!((59.0..=60.0).contains(&next), "{next}");
        assert_eq!(store.entries(Table::Queue).count(), 3, "moved, not copied");
    }

    #[test]
    fn each_lane_is_read_only_as_far_as_it_has_room() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), "redb").unwrap();
        // Whole milliseconds, as the keys hold them.
        let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let mut b = Batch::new();
        let relay = |id: String| Work::Relay {
            mail_from: "a@b.it".into(),
            rcpt_to: vec![id],
            domain: "c.it".into(),
            via: None,
        };
        // A relay backlog older than the local work.
        for i in 0..300 {
            let mut it = Item::new(
                format!("r{i:03}"),
                relay(format!("{i}@c.it")),
                "ab".into(),
                now,
                None,
            );
            it.created = now - ChronoDuration::minutes(10);
            it.next_attempt = now - ChronoDuration::minutes(10);
            it.put(&mut b);
        }
        for i in 0..3 {
            let mut it = local_item(format!("l{i}"), now);
            it.next_attempt = now + ChronoDuration::seconds(i);
            it.put(&mut b);
        }
        store.commit(b).unwrap();
        let reads = std::cell::Cell::new(0);
        let due = load_due(
            &store,
            now,
            |lane| match lane {
                Lane::Relay => 0,
                Lane::Local => 16,
            },
            |_| {
                reads.set(reads.get() + 1);
                false
            },
        )
        .unwrap();
        let ids: Vec<&str> = due.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["l0"], "a full relay lane is not read at all");
        assert_eq!(
            reads.get(),
            1,
            "only the local lane's due item was looked at"
        );
        assert_eq!(due.next, Some(std::time::Duration::from_secs(1)));
        let due = load_due(
            &store,
            now,
            |lane| match lane {
                Lane::Relay => 5,
                Lane::Local => 0,
            },
            |id| id == "r000",
        )
        .unwrap();
        let ids: Vec<&str> = due.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["r001", "r002", "r003", "r004", "r005"]);
        assert_eq!(
            due.next, None,
            "more relays are due: their finish wakes the worker"
        );
    }

    #[test]
    fn small_content_travels_in_the_store_and_goes_with_its_item() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), "redb").unwrap();
        let spool = Spool::open(&d.path().join("spool")).unwrap();
        let now = Utc::now();
        let work = Work::Archive {
            mailbox: "a@b.it".into(),
        };
        let small = vec![b'x'; 10_000];
        let large = vec![b'y'; INLINE_MAX + 1];
        let mut b = Batch::new();
        let s = stage(
            &mut b,
            &spool,
            &[b"trace\r\n", &small],
            "s1".into(),
            work.clone(),
            now,
            None,
        )
        .unwrap();
        let l = stage(&mut b, &spool, &[&large], "l1".into(), work, now, None).unwrap();
        s.put(&mut b);
        l.put(&mut b);
        // Only the large one became a file, before the commit.
        let files = || {
            std::fs::read_dir(d.path().join("spool"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
                .count()
        };
        assert_eq!(files(), 1);
        store.commit(b).unwrap();
        assert!(s.inline && !l.inline);
        assert_eq!(
            s.blob,
            content_name(&[b"trace\r\n", &small]),
            "named by content all the same"
        );
        let mut want = b"trace\r\n".to_vec();
        want.extend_from_slice(&small);
        let due = load_due(&store, now, |_| 10, |_| false).unwrap();
        assert_eq!(due.items.len(), 2);
        for i in &due.items {
            let got = i.content(&store, &spool).unwrap();
            assert_eq!(&got, if i.inline { &want } else { &large });
        }
        // A retry keeps the content; finishing drops it.
        let mut again = s.clone();
        let mut b = Batch::new();
        again.retry(
            &mut b,
            now,
            "later".into(),
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        );
        again.put(&mut b);
        store.commit(b).unwrap();
        assert_eq!(again.content(&store, &spool).unwrap(), want);
        let mut b = Batch::new();
        again.done(&mut b);
        l.done(&mut b);
        store.commit(b).unwrap();
        assert_eq!(store.entries(Table::Blobs).count(), 0);
        assert_eq!(store.entries(Table::Queue).count(), 0);
        let err = again.content(&store, &spool).unwrap_err();
        assert!(
            err.contains("s1") && err.contains("not in the store"),
            "{err}"
        );
        assert_eq!(referenced_blobs(&store).unwrap().len(), 0);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let now = Utc::now();
        let mut i = local_item("x", now);
        let (base, max) = (
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(1800),
        );
        i.retry(&mut Batch::new(), now, "e".into(), base, max);
        assert_eq!(i.next_attempt - now, ChronoDuration::minutes(1));
        i.retry(&mut Batch::new(), now, "e".into(), base, max);
        assert_eq!(i.next_attempt - now, ChronoDuration::minutes(2));
        for _ in 0..10 {
            i.retry(&mut Batch::new(), now, "e".into(), base, max);
        }
        assert_eq!(i.next_attempt - now, ChronoDuration::minutes(30));
        let day = std::time::Duration::from_secs(24 * 3600);
        assert!(!i.expired(now, day));
        assert!(i.expired(now + ChronoDuration::hours(25), day));
    }
}
