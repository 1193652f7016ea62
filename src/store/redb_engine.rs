//! redb engine: one redb database file; every commit is fsync'd
//! (`Durability::Immediate`, redb's default).

use super::{Engine, Entry, Op, StoreError, Table};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

fn e<E: std::fmt::Display>(x: E) -> StoreError {
    StoreError::Engine(x.to_string())
}

pub struct RedbEngine {
    db: Database,
}

impl RedbEngine {
    pub fn open(path: &Path) -> Result<RedbEngine, StoreError> {
        let db = Database::create(path)
            .map_err(|x| StoreError::Engine(format!("{}: {x}", path.display())))?;
        // Create every table once so reads never meet a missing table.
        let w = db.begin_write().map_err(e)?;
        for t in Table::ALL {
            w.open_table(def(t)).map_err(e)?;
        }
        w.commit().map_err(e)?;
        Ok(RedbEngine { db })
    }
}

impl Engine for RedbEngine {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(e)?;
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

    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(e)?;
        let table = r.open_table(def(t)).map_err(e)?;
        Ok(table.get(key).map_err(e)?.map(|v| v.value().to_vec()))
    }

    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let r = self.db.begin_read().map_err(e)?;
        let table = r.open_table(def(t)).map_err(e)?;
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
    }

    fn last(&self, t: Table) -> Result<Option<Entry>, StoreError> {
        let r = self.db.begin_read().map_err(e)?;
        let table = r.open_table(def(t)).map_err(e)?;
        if table.is_empty().map_err(e)? {
            return Ok(None);
        }
        Ok(table
            .last()
            .map_err(e)?
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
    }
}
