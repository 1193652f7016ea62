//! Durable renames with shared directory flushes.
//!
//! Owns: `sync_dir`, the directory fsync that makes a rename durable, with
//! concurrent callers on the same directory sharing one flush (the same idea
//! as the store's group commit). A caller returns only after an fsync that
//! *started after* its call, so its rename is covered.
//! Must not touch: file contents (callers fsync their own files first).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

#[derive(Default)]
struct State {
    /// Tickets handed out so far.
    requested: u64,
    /// Every ticket up to this one is covered by a finished fsync.
    done: u64,
    running: bool,
    /// The last flush's error, for the callers it covered.
    error: Option<(u64, String)>,
}

#[derive(Default)]
struct Group {
    state: Mutex<State>,
    cv: Condvar,
}

fn group(dir: &Path) -> Arc<Group> {
    static GROUPS: OnceLock<Mutex<HashMap<PathBuf, Arc<Group>>>> = OnceLock::new();
    let mut map = GROUPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(dir.to_path_buf()).or_default().clone()
}

/// Make the entries renamed into `dir` before this call durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let g = group(dir);
    let mut s = g.state.lock().unwrap_or_else(|e| e.into_inner());
    s.requested += 1;
    let ticket = s.requested;
    loop {
        if s.done >= ticket {
            return match &s.error {
                Some((upto, e)) if *upto >= ticket => Err(std::io::Error::other(e.clone())),
                _ => Ok(()),
            };
        }
        if !s.running {
            // Lead a flush covering every ticket handed out so far.
            s.running = true;
            let upto = s.requested;
            drop(s);
            let r = std::fs::File::open(dir).and_then(|d| d.sync_all());
            s = g.state.lock().unwrap_or_else(|e| e.into_inner());
            s.running = false;
            s.done = upto;
            s.error = r.err().map(|e| (upto, e.to_string()));
            g.cv.notify_all();
            continue;
        }
        s = g.cv.wait(s).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_all_return_and_share_flushes() {
        let d = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || {
                    std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
                    sync_dir(&dir).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let g = group(d.path());
        let s = g.state.lock().unwrap();
        assert_eq!((s.requested, s.done, s.running), (16, 16, false));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(sync_dir(Path::new("/nonexistent/pecd-test-dir")).is_err());
    }
}
