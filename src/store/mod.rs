//! The durable store: the only module that touches a storage engine.
//!
//! Owns: named tables of ordered byte keys → byte values, atomic multi-table
//! batches that are durable (fsync'd) when [`Store::commit`] returns, group
//! commit (concurrent committers share one flush), and the hash chain of the
//! legal log, whose order is the commit order. Must not touch: what the keys
//! and values mean (the queue, the mailboxes and `audit` decide that).
//!
//! Engines implement [`Engine`]; every engine passes the same contract tests
//! (`store::contract`). redb is the default (fdatasync per commit).

mod redb_engine;
mod sled_engine;

pub use redb_engine::RedbEngine;
pub use sled_engine::SledEngine;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

/// The tables. Adding one is adding a variant: engines create them lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Store metadata: schema version, log head.
    Meta,
    /// The legal log: big-endian sequence → record with its chain hash.
    Log,
    /// Mailbox accounts: address → record.
    Mailboxes,
    /// Outbound and delivery queue entries.
    Queue,
    /// Per-recipient transaction state (timers, receipts seen).
    Transactions,
    /// (Message-ID, recipient) pairs already handled by the reception point:
    /// a relay retried after a crash must not deliver or acknowledge twice.
    Seen,
    /// Tenants (the Ordini), their token hashes, and mailbox indexes:
    /// `tenant/<id>`, `token/<sha256 hex>` → id, `member/<id>/<address>`,
    /// `cf/<codice fiscale>/<address>`, `tombstone/<address>` → cf.
    Tenants,
    /// Queue items' small message bodies, by item id: written in the
    /// item's own commit and deleted with it (see `queue::Item::done`).
    Blobs,
    /// When each open transaction next needs the timers' attention:
    /// `<due: [time_key]>/<transaction key>` → empty (see `App::check_timers`).
    Timers,
    /// Maildir deliveries not yet flushed to disk, with what it takes to
    /// write them again after a crash (see `mailsync`).
    Unflushed,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Meta,
        Table::Log,
        Table::Mailboxes,
        Table::Queue,
        Table::Transactions,
        Table::Seen,
        Table::Tenants,
        Table::Blobs,
        Table::Timers,
        Table::Unflushed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Log => "log",
            Table::Mailboxes => "mailboxes",
            Table::Queue => "queue",
            Table::Transactions => "transactions",
            Table::Seen => "seen",
            Table::Tenants => "tenants",
            Table::Blobs => "blobs",
            Table::Timers => "timers",
            Table::Unflushed => "unflushed",
        }
    }
}

/// A time as 16 hex digits that sort like the times (milliseconds, offset
/// so that times before 1970 still sort): the head of keys that order work
/// by when it is due (the queue, the timers).
pub fn time_key(at: chrono::DateTime<chrono::Utc>) -> String {
    let ms = (at.timestamp_millis() as i128 - i64::MIN as i128) as u64;
    format!("{ms:016x}")
}

/// The time at the head of a key made with [`time_key`], and the rest after
/// its `/`.
pub fn split_time_key(key: &[u8]) -> Option<(chrono::DateTime<chrono::Utc>, &[u8])> {
    let hex = std::str::from_utf8(key.get(..16)?).ok()?;
    let ms = u64::from_str_radix(hex, 16).ok()?;
    let at = chrono::DateTime::from_timestamp_millis((ms as i128 + i64::MIN as i128) as i64)?;
    let rest = key.get(16..)?.strip_prefix(b"/")?;
    Some((at, rest))
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("the store is closed")]
    Closed,
    /// Another process has the store open (a running daemon).
    #[error("{0}: the store is open in another process")]
    Locked(String),
    #[error("corrupt record in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

/// An atomic unit of work: writes plus legal-log records to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
    /// Log payloads; the writer gives each a sequence number and chains it.
    pub log: Vec<Vec<u8>>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, t: Table, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put(t, k.into(), v.into()));
        self
    }

    pub fn delete(&mut self, t: Table, k: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete(t, k.into()));
        self
    }

    pub fn log(&mut self, payload: impl Into<Vec<u8>>) -> &mut Self {
        self.log.push(payload.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.log.is_empty()
    }

    /// `other`'s writes and records after this batch's own.
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
        self.log.extend(other.log);
    }
}

/// A storage engine: atomic, durable multi-table writes and ordered reads.
pub trait Engine: Send + Sync + 'static {
    /// Apply every op atomically; durable when this returns Ok.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `from <= key < to` (to = None: to the end), in key
    /// order, at most `limit`.
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
    /// The entry with the greatest key.
    fn last(&self, t: Table) -> Result<Option<Entry>, StoreError>;
}

/// Where the legal log stands: last sequence number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// A chained log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
    pub payload: Vec<u8>,
}

impl LogEntry {
    /// hash = SHA-256(prev ‖ seq (8 bytes BE) ‖ payload)
    pub fn chain_hash(prev: &[u8; 32], seq: u64, payload: &[u8]) -> [u8; 32] {
        let mut h = openssl::sha::Sha256::new();
        h.update(prev);
        h.update(&seq.to_be_bytes());
        h.update(payload);
        h.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.payload.len());
        v.extend_from_slice(&self.prev);
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.payload);
        v
    }

    pub fn decode(seq: u64, v: &[u8]) -> Result<LogEntry, StoreError> {
        if v.len() < 64 {
            return Err(StoreError::Corrupt {
                table: "log",
                detail: format!("entry {seq} is {} bytes", v.len()),
            });
        }
        let mut prev = [0u8; 32];
        let mut hash = [0u8; 32];
        prev.copy_from_slice(&v[..32]);
        hash.copy_from_slice(&v[32..64]);
        Ok(LogEntry {
            seq,
            prev,
            hash,
            payload: v[64..].to_vec(),
        })
    }
}

/// What a commit produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Committed {
    /// Sequence numbers given to the batch's log records, in order.
    pub log_seqs: Vec<u64>,
    /// How many batches shared the flush (1 = no grouping).
    pub group_size: usize,
}

/// Group commit without a writer thread: the first committer to find no
/// commit under way becomes the leader, takes every batch waiting
/// (its own included), applies them as one engine transaction and one
/// flush, then wakes exactly the committers it served and, if batches
/// arrived meanwhile, one of them to lead next. An uncontended commit
/// costs no thread hand-off at all; under load, each flush still serves
/// everyone who queued during the previous one.
struct Group {
    state: Mutex<GroupState>,
    /// Signalled when a leader finishes (for [`Store::close`]).
    idle: Condvar,
}

struct GroupState {
    closed: bool,
    leading: bool,
    head: LogHead,
    next_ticket: u64,
    waiting: Vec<Waiting>,
    done: HashMap<u64, Result<Committed, String>>,
}

struct Waiting {
    ticket: u64,
    batch: Batch,
    thread: std::thread::Thread,
}

/// The store: an engine and its group commit.
pub struct Store {
    engine: Arc<dyn Engine>,
    group: Group,
    /// `<dir>/pecd.lock`, locked for as long as this store is open (see
    /// [`Store::open`]).
    _lock: Option<std::fs::File>,
}

/// Most batches merged into one engine transaction.
const GROUP_MAX: usize = 256;

impl Store {
    /// Open the engine named in the config under `dir`.
    ///
    /// One process at a time: the store directory's lock file is held for
    /// the store's whole life. The engines lock their files too, but an
    /// engine that drops and reopens its database (redb after a failed
    /// commit) lets go of its lock meanwhile, and a CLI must not take the
    /// store from a running daemon then.
    pub fn open(dir: &Path, engine: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Engine(format!("{}: {e}", dir.display())))?;
        let lock_path = dir.join("pecd.lock");
        // Locked through a read-only descriptor (flock needs no more): a
        // lock file that root's CLI created is still the daemon's to lock.
        let lock = std::fs::File::open(&lock_path)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .and_then(|_| std::fs::File::open(&lock_path)),
                _ => Err(e),
            })
            .map_err(|e| StoreError::Engine(format!("{}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Engine(format!("{}: {e}", lock_path.display())));
            }
        }
        let e: Arc<dyn Engine> = match engine {
            "redb" => Arc::new(RedbEngine::open(&dir.join("pecd.redb"))?),
            "sled" => Arc::new(SledEngine::open(&dir.join("pecd.sled"))?),
            other => {
                return Err(StoreError::Engine(format!(
                    "engine {other:?} is not available in this build"
                )));
            }
        };
        let mut store = Self::with_engine(e)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Wrap an engine (tests, alternative engines).
    pub fn with_engine(engine: Arc<dyn Engine>) -> Result<Store, StoreError> {
        let head = read_head(&*engine)?;
        Ok(Store {
            engine,
            group: Group {
                state: Mutex::new(GroupState {
                    closed: false,
                    leading: false,
                    head,
                    next_ticket: 0,
                    waiting: Vec::new(),
                    done: HashMap::new(),
                }),
                idle: Condvar::new(),
            },
            _lock: None,
        })
    }

    fn lock_group(&self) -> std::sync::MutexGuard<'_, GroupState> {
        // A leader that panicked left the state consistent (it changes it
        // only under the lock, between engine calls).
        self.group.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commit a batch; returns once it is durable. Concurrent callers are
    /// grouped into one engine transaction and one flush.
    pub fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let mut st = self.lock_group();
        if st.closed {
            return Err(StoreError::Closed);
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push(Waiting {
            ticket,
            batch,
            thread: std::thread::current(),
        });
        loop {
            if let Some(r) = st.done.remove(&ticket) {
                return r.map_err(StoreError::Engine);
            }
            if st.leading {
                drop(st);
                // Woken by the leader that served us or hands over; a
                // spurious wake-up just looks again.
                std::thread::park();
                st = self.lock_group();
                continue;
            }
            // Lead: every batch waiting (oldest first, at most GROUP_MAX;
            // if ours is not among them, the next turn is ours).
            st.leading = true;
            let take = st.waiting.len().min(GROUP_MAX);
            let jobs: Vec<Waiting> = st.waiting.drain(..take).collect();
            let head = st.head;
            drop(st);
            let (outcome, new_head) = apply_group(&*self.engine, head, jobs);
            st = self.lock_group();
            st.leading = false;
            if let Some(h) = new_head {
                st.head = h;
            }
            for (ticket, thread, r) in outcome {
                st.done.insert(ticket, r);
                if std::thread::current().id() != thread.id() {
                    thread.unpark();
                }
            }
            if let Some(next) = st.waiting.first() {
                next.thread.unpark();
            }
            self.group.idle.notify_all();
        }
    }

    pub fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(t, key)
    }

    pub fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.engine.range(t, from, to, limit)
    }

    /// Every entry of a table in key order, read in pages so a large
    /// table never sits in memory at once.
    pub fn entries(&self, t: Table) -> Entries<'_> {
        self.entries_with_prefix(t, b"")
    }

    /// Every entry whose key starts with `prefix`, in key order, read in
    /// pages like [`Store::entries`].
    pub fn entries_with_prefix(&self, t: Table, prefix: &[u8]) -> Entries<'_> {
        Entries {
            store: self,
            table: t,
            from: Some(prefix.to_vec()),
            end: prefix_end(prefix),
            page_size: FIRST_PAGE,
            page: Vec::new().into_iter(),
        }
    }

    /// Every key starting with `prefix`.
    pub fn scan_prefix(
        &self,
        t: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let end = prefix_end(prefix);
        self.engine.range(t, prefix, end.as_deref(), limit)
    }

    /// The current head of the legal log.
    pub fn log_head(&self) -> Result<LogHead, StoreError> {
        read_head(&*self.engine)
    }

    /// Log entries from `seq` on, at most `limit`.
    pub fn log_entries(&self, from_seq: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        self.engine
            .range(Table::Log, &from_seq.to_be_bytes(), None, limit)?
            .into_iter()
            .map(|(k, v)| {
                let seq = u64::from_be_bytes(k.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        table: "log",
                        detail: "key is not a sequence number".into(),
                    }
                })?);
                LogEntry::decode(seq, &v)
            })
            .collect()
    }

    /// Refuse new commits and wait for the one under way.
    pub fn close(&self) {
        let mut st = self.lock_group();
        st.closed = true;
        while st.leading || !st.waiting.is_empty() {
            st = self.group.idle.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Paged iterator over a table (see [`Store::entries`]).
pub struct Entries<'a> {
    store: &'a Store,
    table: Table,
    /// Where the next page starts; None once the table is exhausted.
    from: Option<Vec<u8>>,
    /// The first key past the walk (None: the end of the table).
    end: Option<Vec<u8>>,
    /// Pages grow from [`FIRST_PAGE`] to [`PAGE`]: a walk that stops after
    /// a few entries (the queue's due items) reads only a few.
    page_size: usize,
    page: std::vec::IntoIter<Entry>,
}

const FIRST_PAGE: usize = 32;
const PAGE: usize = 1000;

impl Iterator for Entries<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.page.next() {
                return Some(Ok(e));
            }
            let from = self.from.take()?;
            match self
                .store
                .range(self.table, &from, self.end.as_deref(), self.page_size)
            {
                Err(e) => return Some(Err(e)),
                Ok(page) => {
                    if let Some((last, _)) = page.last() {
                        let mut next = last.clone();
                        next.push(0); // the smallest key after `last`
                        self.from = (page.len() == self.page_size).then_some(next);
                    }
                    self.page_size = (self.page_size * 4).min(PAGE);
                    if page.is_empty() {
                        return None;
                    }
                    self.page = page.into_iter();
                }
            }
        }
    }
}

/// The smallest key greater than every key with this prefix.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn read_head(engine: &dyn Engine) -> Result<LogHead, StoreError> {
    match engine.last(Table::Log)? {
        None => Ok(LogHead::default()),
        Some((k, v)) => {
            let seq =
                u64::from_be_bytes(k.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                    table: "log",
                    detail: "key is not a sequence number".into(),
                })?);
            let e = LogEntry::decode(seq, &v)?;
            Ok(LogHead { seq, hash: e.hash })
        }
    }
}

/// One group: the log records get their sequence numbers and chain
/// hashes in batch order, everything is applied as one engine transaction.
/// Returns each batch's result (with its waiter) and the new log head on
/// success.
#[allow(clippy::type_complexity)]
fn apply_group(
    engine: &dyn Engine,
    head: LogHead,
    jobs: Vec<Waiting>,
) -> (
    Vec<(u64, std::thread::Thread, Result<Committed, String>)>,
    Option<LogHead>,
) {
    let mut ops = Vec::new();
    let mut new_head = head;
    let mut seqs = Vec::with_capacity(jobs.len());
    let group_size = jobs.len();
    let mut waiters = Vec::with_capacity(jobs.len());
    for mut j in jobs {
        // Moved, not copied: a batch may carry message bodies.
        ops.append(&mut j.batch.ops);
        let mut mine = Vec::with_capacity(j.batch.log.len());
        for payload in &j.batch.log {
            let seq = new_head.seq + 1;
            let hash = LogEntry::chain_hash(&new_head.hash, seq, payload);
            let entry = LogEntry {
                seq,
                prev: new_head.hash,
                hash,
                payload: payload.clone(),
            };
            ops.push(Op::Put(
                Table::Log,
                seq.to_be_bytes().to_vec(),
                entry.encode(),
            ));
            new_head = LogHead { seq, hash };
            mine.push(seq);
        }
        seqs.push(mine);
        waiters.push((j.ticket, j.thread));
    }
    // A panicking engine must not leave the group without a leader for
    // ever: it fails this group like any engine error.
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.apply(&ops)))
        .unwrap_or_else(|_| Err(StoreError::Engine("the storage engine panicked".into())));
    match applied {
        Ok(()) => {
            let out = waiters
                .into_iter()
                .zip(seqs)
                .map(|((t, th), log_seqs)| {
                    let c = Committed {
                        log_seqs,
                        group_size,
                    };
                    (t, th, Ok(c))
                })
                .collect();
            (out, Some(new_head))
        }
        Err(e) => {
            let msg = e.to_string();
            let out = waiters
                .into_iter()
                .map(|(t, th)| (t, th, Err(msg.clone())))
                .collect();
            // A failure does not say the group did not land (an fsync
            // error after the write): the head is read back, so the next
            // group's records follow whatever the log now holds instead of
            // taking the same numbers and overwriting them.
            // (guarded as `apply` is: an engine that panicked may again)
            let head = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_head(engine)))
                .ok()
                .and_then(Result::ok);
            (out, head)
        }
    }
}

#[cfg(test)]
pub(crate) mod contract;
