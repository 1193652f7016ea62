//! Durable renames with shared flushes.
//!
//! Owns: `sync_dir`, the directory fsync that makes a rename durable, and
//! `sync_filesystem`, a syncfs(2) of a whole filesystem (every file and
//! directory written on it before the call). Concurrent callers with the
//! same key share one flush (the same idea as the store's group commit):
//! a caller returns only after a flush that *started after* its call, so
//! what it wrote is covered.
//! Must not touch: file contents (callers write their own files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

#[derive(Default)]
struct State {
    /// Tickets handed out so far.
    requested: u64,
    /// Every ticket up to this one is covered by a finished flush.
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

/// What a group flushes: one directory, or one filesystem (by device).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Dir(PathBuf),
    Filesystem(u64),
}

fn group(key: Key) -> Arc<Group> {
    static GROUPS: OnceLock<Mutex<HashMap<Key, Arc<Group>>>> = OnceLock::new();
    let mut map = GROUPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(key).or_default().clone()
}

/// Make the entries renamed into `dir` before this call durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    shared(Key::Dir(dir.to_path_buf()), || {
        std::fs::File::open(dir).and_then(|d| d.sync_all())
    })
}

/// Make everything written before this call on the filesystem that holds
/// `path` durable (file data, inodes, directory entries): one syncfs(2)
/// for any number of files in any number of directories, shared by the
/// callers on the same device whatever path they name. Linux reports
/// writeback errors through syncfs since 5.8.
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path)?.dev();
    shared(Key::Filesystem(dev), || {
        let f = std::fs::File::open(path)?;
        syncfs(&f)
    })
}

#[cfg(target_os = "linux")]
fn syncfs(f: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::syncfs(f).map_err(std::io::Error::from)
}

/// Elsewhere there is no call that waits for one filesystem's writeback:
/// `sync_filesystem` is refused, and callers use per-file flushes.
#[cfg(not(target_os = "linux"))]
fn syncfs(_f: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::Error::other("syncfs is only available on Linux"))
}

fn shared(key: Key, flush: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    let g = group(key);
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
            let r = flush();
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
        let g = group(Key::Dir(d.path().to_path_buf()));
        let s = g.state.lock().unwrap();
        assert_eq!((s.requested, s.done, s.running), (16, 16, false));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(sync_dir(Path::new("/nonexistent/pecd-test-dir")).is_err());
        assert!(sync_filesystem(Path::new("/nonexistent/pecd-test-dir")).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn filesystem_flushes_are_shared_too() {
        let d = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || {
                    let sub = dir.join(format!("d{i}"));
                    std::fs::create_dir(&sub).unwrap();
                    std::fs::write(sub.join("f"), b"x").unwrap();
                    sync_filesystem(&dir).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Other tests may flush the same filesystem meanwhile: the group
        // of this device holds at least these 8 tickets.
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(d.path()).unwrap().dev();
        assert!(group(Key::Filesystem(dev)).state.lock().unwrap().requested >= 8);
        // A directory flush of the same path is a group of its own.
        let dir = group(Key::Dir(d.path().to_path_buf()));
        assert_eq!(dir.state.lock().unwrap().requested, 0);
    }
}
