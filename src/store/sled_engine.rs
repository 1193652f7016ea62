//! sled engine (the alternative the design names). sled 0.34.7 flushes with
//! `sync_file_range`: a commit survives a process crash, not a power loss or
//! an OS crash (upstream report spacejam/sled#1452). The README says so.

use super::{Engine, Entry, Op, StoreError, Table};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use std::path::Path;

fn e<E: std::fmt::Display>(x: E) -> StoreError {
    StoreError::Engine(x.to_string())
}

pub struct SledEngine {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl SledEngine {
    pub fn open(path: &Path) -> Result<SledEngine, StoreError> {
        // A just-closed instance's background flusher may still hold the
        // file lock for a moment (restart, tests): retry briefly.
        let mut tries = 0;
        let db = loop {
            match sled::open(path) {
                Ok(db) => break db,
                Err(sled::Error::Io(err)) if tries < 40 && err.to_string().contains("lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(x) => return Err(StoreError::Engine(format!("{}: {x}", path.display()))),
            }
        };
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).map_err(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SledEngine { db, trees })
    }

    fn tree(&self, t: Table) -> &sled::Tree {
        let i = Table::ALL.iter().position(|x| *x == t).unwrap_or(0);
        &self.trees[i]
    }
}

impl Engine for SledEngine {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.trees
            .as_slice()
            .transaction(|trees| {
                for op in ops {
                    match op {
                        Op::Put(t, k, v) => {
                            let i = Table::ALL.iter().position(|x| x == t).unwrap_or(0);
                            trees[i].insert(k.as_slice(), v.as_slice())?;
                        }
                        Op::Delete(t, k) => {
                            let i = Table::ALL.iter().position(|x| x == t).unwrap_or(0);
                            trees[i].remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|x| StoreError::Engine(format!("{x:?}")))?;
        self.db.flush().map_err(e)?;
        Ok(())
    }

    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(t).get(key).map_err(e)?.map(|v| v.to_vec()))
    }

    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let tree = self.tree(t);
        let iter = match to {
            Some(to) => tree.range(from..to),
            None => tree.range(from..),
        };
        iter.take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(e))
            .collect()
    }

    fn last(&self, t: Table) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .tree(t)
            .last()
            .map_err(e)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
}
