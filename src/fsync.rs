//! Durable renames with shared flushes.
//!
//! Owns: `sync_dir`, the directory fsync that makes a rename durable, and
//! `sync_filesystem`, a syncfs(2) of a whole filesystem (every file and
//! directory written on it before the call). Concurrent callers with the
//! same key share one flush (the same idea as the store's group commit):
//! a caller returns only after a flush that *started after* its call, so
//! what it wrote is covered.
//!
//! Linux reports a writeback error to syncfs callers through the file
//! handle the call is made on: one opened before the error, or the first
//! opened after it that asks. A handle opened for each flush would miss
//! an error another process's `sync` had already heard of, so each
//! filesystem keeps the handle of its first flush, and every flush failure
//! is counted per filesystem for callers that keep copies until a flush
//! succeeds (`mailsync`).
//! Also [`replace_file`], the whole-file write done right once (small
//! files: the provider index, log seals). Must not touch: the contents of
//! files callers write themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

#[derive(Default)]
struct State {
    /// Tickets handed out so far.
    requested: u64,
    /// Every ticket up to this one is covered by a finished flush.
    done: u64,
    running: bool,
    /// Failed flushes whose callers have not all looked yet. Kept per
    /// flush, not as "the last error": a caller that wakes after a later
    /// flush succeeded must still get its own flush's error.
    failures: Vec<Failure>,
}

/// A failed flush: tickets `from..=upto`, `unseen` of whose callers have
/// not collected the error yet.
struct Failure {
    from: u64,
    upto: u64,
    unseen: u64,
    error: String,
}

impl State {
    /// A caller's ticket.
    fn request(&mut self) -> u64 {
        self.requested += 1;
        self.requested
    }

    /// A flush covering every ticket handed out so far begins; returns
    /// the last ticket it covers.
    fn begin(&mut self) -> u64 {
        self.running = true;
        self.requested
    }

    /// The flush begun at `upto` has ended with `r`.
    fn end(&mut self, upto: u64, r: std::io::Result<()>) {
        let from = self.done + 1;
        self.running = false;
        self.done = upto;
        if let Err(e) = r {
            self.failures.push(Failure {
                from,
                upto,
                unseen: upto + 1 - from,
                error: e.to_string(),
            });
        }
    }

    /// The outcome for `ticket`, once a finished flush covers it (each
    /// ticket asks once).
    fn outcome(&mut self, ticket: u64) -> Option<std::io::Result<()>> {
        if self.done < ticket {
            return None;
        }
        let Some(i) = self
            .failures
            .iter()
            .position(|f| (f.from..=f.upto).contains(&ticket))
        else {
            return Some(Ok(()));
        };
        let f = &mut self.failures[i];
        f.unseen -= 1;
        let e = std::io::Error::other(f.error.clone());
        if f.unseen == 0 {
            self.failures.swap_remove(i);
        }
        Some(Err(e))
    }
}

#[derive(Default)]
struct Group {
    state: Mutex<State>,
    cv: Condvar,
    /// A filesystem's handle for syncfs, kept from its first flush on.
    handle: OnceLock<std::fs::File>,
    /// A filesystem's failed flushes so far.
    failed: AtomicU64,
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
    shared(&group(Key::Dir(dir.to_path_buf())), || {
        std::fs::File::open(dir).and_then(|d| d.sync_all())
    })
}

/// Replace `path` with `bytes`, whole or not at all, durably: a temporary
/// file of its own (two writers never share one), flushed, renamed over
/// `path`, the directory flushed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Make everything written before this call on the filesystem that holds
/// `path` durable (file data, inodes, directory entries): one syncfs(2)
/// for any number of files in any number of directories, shared by the
/// callers on the same device whatever path they name. Linux reports
/// writeback errors through syncfs since 5.8.
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let g = group(Key::Filesystem(device(path)?));
    shared(&g, || {
        let f = match g.handle.get() {
            Some(f) => f,
            None => {
                let opened = std::fs::File::open(path)?;
                g.handle.get_or_init(|| opened)
            }
        };
        let r = syncfs(f);
        if r.is_err() {
            g.failed.fetch_add(1, Ordering::SeqCst);
            FAILED_ANYWHERE.fetch_add(1, Ordering::SeqCst);
        }
        r
    })
}

/// The device (filesystem) that holds `path`.
pub fn device(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.dev())
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

/// Failed flushes of filesystem `dev` so far, in this process: a caller
/// that keeps copies until a flush succeeds compares it before and after
/// to know that a flush it did not make failed meanwhile (a writeback
/// error is reported to one flush only).
pub fn filesystem_failures_on(dev: u64) -> u64 {
    group(Key::Filesystem(dev)).failed.load(Ordering::SeqCst) + failures_for_test()
}

/// Failed filesystem flushes so far on any filesystem, in this process.
pub fn filesystem_failures() -> u64 {
    FAILED_ANYWHERE.load(Ordering::SeqCst) + failures_for_test()
}

static FAILED_ANYWHERE: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
thread_local! {
    static TEST_FAILURES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A failed filesystem flush as the calling thread alone sees it: tests
/// of the callers running in parallel do not see each other's.
#[cfg(test)]
pub(crate) fn count_filesystem_failure_for_test() {
    TEST_FAILURES.with(|n| n.set(n.get() + 1));
}

#[cfg(test)]
fn failures_for_test() -> u64 {
    TEST_FAILURES.with(std::cell::Cell::get)
}

#[cfg(not(test))]
fn failures_for_test() -> u64 {
    0
}

/// Directory flushes asked for `dir` so far.
#[cfg(test)]
pub(crate) fn dir_flushes(dir: &Path) -> u64 {
    group(Key::Dir(dir.to_path_buf()))
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requested
}

fn shared(g: &Group, flush: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    let mut s = g.state.lock().unwrap_or_else(|e| e.into_inner());
    let ticket = s.request();
    loop {
        if let Some(r) = s.outcome(ticket) {
            return r;
        }
        if !s.running {
            let upto = s.begin();
            drop(s);
            let r = flush();
            s = g.state.lock().unwrap_or_else(|e| e.into_inner());
            s.end(upto, r);
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
    fn each_caller_gets_its_own_flush_outcome_however_late_it_looks() {
        let mut s = State::default();
        let (t1, t2) = (s.request(), s.request());
        let upto = s.begin();
        s.end(upto, Err(std::io::Error::other("EIO")));
        // Before caller 2 looks, a later flush succeeds.
        let t3 = s.request();
        let upto = s.begin();
        s.end(upto, Ok(()));
        assert!(s.outcome(t3).unwrap().is_ok());
        assert!(
            s.outcome(t2).unwrap().is_err(),
            "the late caller's flush failed"
        );
        assert!(s.outcome(t1).unwrap().is_err());
        assert!(s.failures.is_empty(), "dropped once all its callers looked");
        let t4 = s.request();
        assert!(s.outcome(t4).is_none(), "no flush covers it yet");
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
