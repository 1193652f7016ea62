//! The contract every engine passes. Called once per engine below.

use super::*;
use std::sync::Arc;

pub(crate) fn run(make: &dyn Fn(&Path) -> Arc<dyn Engine>) {
    let dir = tempfile::tempdir().unwrap();
    // Atomic multi-table batch, reads, ranges, prefix scans, deletes.
    {
        let store = Store::with_engine(make(dir.path())).unwrap();
        let mut b = Batch::new();
        b.put(Table::Queue, b"q/2".to_vec(), b"two".to_vec())
            .put(Table::Queue, b"q/1".to_vec(), b"one".to_vec())
            .put(Table::Queue, b"r/1".to_vec(), b"other".to_vec())
            .put(Table::Mailboxes, b"a@x".to_vec(), b"A".to_vec())
            .log(b"first".to_vec())
            .log(b"second".to_vec());
        let c = store.commit(b).unwrap();
        assert_eq!(c.log_seqs, vec![1, 2]);
        assert_eq!(
            store.get(Table::Mailboxes, b"a@x").unwrap().as_deref(),
            Some(&b"A"[..])
        );
        assert_eq!(store.get(Table::Mailboxes, b"zz").unwrap(), None);
        let q = store.scan_prefix(Table::Queue, b"q/", 10).unwrap();
        assert_eq!(
            q,
            vec![
                (b"q/1".to_vec(), b"one".to_vec()),
                (b"q/2".to_vec(), b"two".to_vec())
            ]
        );
        assert_eq!(store.range(Table::Queue, b"q/", None, 1).unwrap().len(), 1);
        let mut d = Batch::new();
        d.delete(Table::Queue, b"q/1".to_vec());
        store.commit(d).unwrap();
        assert_eq!(store.scan_prefix(Table::Queue, b"q/", 10).unwrap().len(), 1);
        // Paged walks: a prefix walk over several (growing) pages sees every
        // key of the prefix once, in order, and nothing past it.
        let mut b = Batch::new();
        for i in 0..3000 {
            b.put(Table::Queue, format!("p/{i:05}").into_bytes(), vec![1]);
        }
        store.commit(b).unwrap();
        let keys: Vec<Vec<u8>> = store
            .entries_with_prefix(Table::Queue, b"p/")
            .map(|e| e.unwrap().0)
            .collect();
        let want: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("p/{i:05}").into_bytes())
            .collect();
        assert_eq!(keys, want);
        assert_eq!(store.entries(Table::Queue).count(), 3002);
        let mut b = Batch::new();
        for k in want {
            b.delete(Table::Queue, k);
        }
        store.commit(b).unwrap();
        store.close();
    }
    // Reopen: everything is still there, and the log chain continues.
    {
        let store = Store::with_engine(make(dir.path())).unwrap();
        assert_eq!(
            store.get(Table::Mailboxes, b"a@x").unwrap().as_deref(),
            Some(&b"A"[..])
        );
        let head = store.log_head().unwrap();
        assert_eq!(head.seq, 2);
        let mut b = Batch::new();
        b.log(b"third".to_vec());
        assert_eq!(store.commit(b).unwrap().log_seqs, vec![3]);
        let entries = store.log_entries(1, 100).unwrap();
        assert_eq!(entries.len(), 3);
        let mut prev = [0u8; 32];
        for e in &entries {
            assert_eq!(e.prev, prev);
            assert_eq!(e.hash, LogEntry::chain_hash(&prev, e.seq, &e.payload));
            prev = e.hash;
        }
        assert_eq!(entries[2].payload, b"third");
    }
    // Concurrent committers: all durable, log sequence dense and unique.
    {
        let store = Arc::new(Store::with_engine(make(dir.path())).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = store.clone();
                std::thread::spawn(move || {
                    let mut seqs = Vec::new();
                    for i in 0..25 {
                        let mut b = Batch::new();
                        b.put(
                            Table::Transactions,
                            format!("t{t}/{i:03}").into_bytes(),
                            vec![t as u8],
                        );
                        b.log(format!("{t}/{i}").into_bytes());
                        seqs.extend(s.commit(b).unwrap().log_seqs);
                    }
                    seqs
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (4..204).collect::<Vec<u64>>());
        // The chain holds in commit order across the groups.
        let entries = store.log_entries(1, 1000).unwrap();
        assert_eq!(entries.len(), 203);
        let mut prev = [0u8; 32];
        for e in &entries {
            assert_eq!(e.prev, prev, "entry {}", e.seq);
            assert_eq!(e.hash, LogEntry::chain_hash(&prev, e.seq, &e.payload));
            prev = e.hash;
        }
        assert_eq!(
            store
                .scan_prefix(Table::Transactions, b"t", 1000)
                .unwrap()
                .len(),
            200
        );
    }
}

#[test]
fn redb_passes_the_contract() {
    run(&|dir| Arc::new(RedbEngine::open(&dir.join("c.redb")).unwrap()));
}

#[test]
fn sled_passes_the_contract() {
    run(&|dir| Arc::new(SledEngine::open(&dir.join("c.sled")).unwrap()));
}

/// An engine that panics on a batch touching `Meta/panic`, applies one
/// touching `Meta/landed` and then reports a failure (an fsync error after
/// the data reached the disk), else delegates.
struct Faulty(Arc<dyn Engine>);

impl Engine for Faulty {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let touches = |key: &[u8]| {
            ops.iter()
                .any(|o| matches!(o, Op::Put(Table::Meta, k, _) if k == key))
        };
        if touches(b"panic") {
            panic!("engine bug");
        }
        self.0.apply(ops)?;
        if touches(b"landed") {
            return Err(StoreError::Engine("fsync failed".into()));
        }
        Ok(())
    }
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(t, key)
    }
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.0.range(t, from, to, limit)
    }
    fn last(&self, t: Table) -> Result<Option<Entry>, StoreError> {
        self.0.last(t)
    }
}

#[test]
fn a_failed_group_leaves_the_store_usable_and_close_refuses_commits() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Engine> = Arc::new(RedbEngine::open(&dir.path().join("p.redb")).unwrap());
    let store = Store::with_engine(Arc::new(Faulty(inner))).unwrap();
    let mut b = Batch::new();
    b.put(Table::Meta, b"panic".to_vec(), vec![])
        .log(b"lost".to_vec());
    let err = store.commit(b).unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    // The next commit leads a new group, and the failed record took no
    // sequence number.
    let mut b = Batch::new();
    b.put(Table::Meta, b"fine".to_vec(), vec![1])
        .log(b"kept".to_vec());
    assert_eq!(store.commit(b).unwrap().log_seqs, vec![1]);
    // A group reported failed that did land: its records keep their
    // numbers, the next one follows them (not written over them).
    let mut b = Batch::new();
    b.put(Table::Meta, b"landed".to_vec(), vec![])
        .log(b"maybe".to_vec());
    assert!(store.commit(b).is_err());
    let mut b = Batch::new();
    b.log(b"after".to_vec());
    assert_eq!(store.commit(b).unwrap().log_seqs, vec![3]);
    let payloads: Vec<Vec<u8>> = store
        .log_entries(1, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(payloads, [&b"kept"[..], b"maybe", b"after"]);
    store.close();
    let mut b = Batch::new();
    b.put(Table::Meta, b"late".to_vec(), vec![]);
    assert!(matches!(store.commit(b), Err(StoreError::Closed)));
    assert_eq!(store.get(Table::Meta, b"fine").unwrap(), Some(vec![1]));
}

#[test]
fn a_store_is_open_in_one_place_at_a_time() {
    for engine in ["redb", "sled"] {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path(), engine).unwrap();
        let second = Store::open(dir.path(), engine);
        assert!(
            second
                .err()
                .is_some_and(|e| e.to_string().contains("open in another process")),
            "{engine}"
        );
        drop(first);
        assert!(Store::open(dir.path(), engine).is_ok(), "{engine}");
    }
}
