//! redb engine: one redb database file; every commit is fsync'd
//! (`Durability::Immediate`, redb's default).

use super::{Engine, Entry, Op, StoreError, Table};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

fn e<E: std::fmt::Display>(x: E) -> StoreError {
    StoreError::Engine(x.to_string())
}

pub struct RedbEngine {
    /// None after a failed commit until the database is reopened: redb
    /// refuses every write after an I/O error (e.g. disk full) until it is
    /// opened again, which recovers it to its last durable commit.
    db: RwLock<Option<Database>>,
    path: PathBuf,
}

/// The page cache of the store (see [`create`]).
const CACHE_BYTES: usize = 32 << 20;

fn create(path: &Path) -> Result<Database, StoreError> {
    // redb caches up to 1 GiB by default, and the legal log grows with
    // every message: the cache would grow with it (measured: 400 MB after
    // 5,000 messages). The working set — queue, accounts, the log's tail —
    // is small; reads of old log records go to the file.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|x| StoreError::Engine(format!("{}: {x}", path.display())))?;
    // Create every table once so reads never meet a missing table.
    let w = db.begin_write().map_err(e)?;
    for t in Table::ALL {
        w.open_table(def(t)).map_err(e)?;
    }
    w.commit().map_err(e)?;
    Ok(db)
}

impl RedbEngine {
    pub fn open(path: &Path) -> Result<RedbEngine, StoreError> {
        Ok(RedbEngine {
            db: RwLock::new(Some(create(path)?)),
            path: path.to_path_buf(),
        })
    }

    /// The open database, reopening it first if a failed commit closed it.
    fn db(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>, StoreError> {
        {
            let g = self.db.read().unwrap_or_else(|x| x.into_inner());
            if g.is_some() {
                return Ok(g);
            }
        }
        {
            let mut w = self.db.write().unwrap_or_else(|x| x.into_inner());
            if w.is_none() {
                *w = Some(create(&self.path)?);
            }
        }
        Ok(self.db.read().unwrap_or_else(|x| x.into_inner()))
    }

    /// Read table `t` with the database held open (a failed commit's
    /// close waits for the reads in flight).
    fn reading<T>(
        &self,
        t: Table,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let g = self.db()?;
        let r = g
            .as_ref()
            .ok_or_else(|| e("database closed"))?
            .begin_read()
            .map_err(e)?;
        f(&r.open_table(def(t)).map_err(e)?)
    }

    fn apply_once(&self, ops: &[Op]) -> Result<(), StoreError> {
        let g = self.db()?;
        let db = g.as_ref().ok_or_else(|| e("database closed"))?;
        let w = db.begin_write().map_err(e)?;
        {
            type Open<'t> = (Table, redb::Table<'t, &'static [u8], &'static [u8]>);
            let mut open: Vec<Open<'_>> = Vec::new();
            for op in ops {
                let t = match op {
                    Op::Put(t, _, _) | Op::Delete(t, _) => *t,
                };
                let idx = match open.iter().position(|(x, _)| *x == t) {
                    Some(i) => i,
                    None => {
                        open.push((t, w.open_table(def(t)).map_err(e)?));
                        open.len() - 1
                    }
                };
                let table = &mut open[idx].1;
                match op {
                    Op::Put(_, k, v) => {
                        table.insert(k.as_slice(), v.as_slice()).map_err(e)?;
                    }
                    Op::Delete(_, k) => {
                        table.remove(k.as_slice()).map_err(e)?;
                    }
                }
            }
        }
        w.commit().map_err(e)
    }
}

impl Engine for RedbEngine {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let r = self.apply_once(ops);
        if r.is_err() {
            // Close it; the next access reopens (and so recovers) it.
            *self.db.write().unwrap_or_else(|x| x.into_inner()) = None;
        }
        r
    }

    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.reading(t, |table| {
            Ok(table.get(key).map_err(e)?.map(|v| v.value().to_vec()))
        })
    }

    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.reading(t, |table| {
            let iter = match to {
                Some(to) => table.range(from..to).map_err(e)?,
                None => table.range(from..).map_err(e)?,
            };
            let mut out = Vec::new();
            for item in iter.take(limit) {
                let (k, v) = item.map_err(e)?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn last(&self, t: Table) -> Result<Option<Entry>, StoreError> {
        self.reading(t, |table| {
            if table.is_empty().map_err(e)? {
                return Ok(None);
            }
            Ok(table
                .last()
                .map_err(e)?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
        })
    }
}
