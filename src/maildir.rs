//! Maildir delivery: the layout Dovecot reads (`tmp/`, `new/`, `cur/`).
//!
//! Owns: file names derived from queue item ids, the durable write sequence
//! (write to `tmp/`, fsync the file, rename into `new/`, fsync the
//! directory), and mailbox paths under the data directory. Must not touch:
//! quota policy, PEC logic. A message is in the mailbox once
//! [`Maildir::deliver_once`] returns Ok.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One mailbox directory.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

/// Errors of Maildir delivery.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid mailbox address {0:?}")]
    BadAddress(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MaildirError + '_ {
    move |source| MaildirError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The directory of a mailbox address: `<base>/<domain>/<local>`, lower
/// case, refusing anything that could escape `base`.
pub fn mailbox_path(base: &Path, address: &str) -> Result<PathBuf, MaildirError> {
    let a = address.trim().to_lowercase();
    let (local, domain) = a
        .rsplit_once('@')
        .ok_or_else(|| MaildirError::BadAddress(address.into()))?;
    let safe = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains(['/', '\\', '\0'])
            && !s.starts_with('.')
    };
    if !safe(local) || !safe(domain) {
        return Err(MaildirError::BadAddress(address.into()));
    }
    Ok(base.join(domain).join(local))
}

impl Maildir {
    /// Open (creating `tmp`, `new`, `cur` if needed).
    pub fn open(root: impl Into<PathBuf>) -> Result<Maildir, MaildirError> {
        let root = root.into();
        for d in ["tmp", "new", "cur"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Maildir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deliver under a name derived from `id`, unless a file of that id is
    /// already there: re-running a delivery after a crash never duplicates.
    /// `interrupted_before` says whether an earlier attempt may have been
    /// cut short (then `new/` and `cur/` are scanned, since an IMAP server
    /// may have moved the file and added flags); otherwise one `stat` of
    /// `new/<name>` suffices and delivery stays O(1) in the mailbox size.
    pub fn deliver_once(
        &self,
        id: &str,
        message: &[u8],
        interrupted_before: bool,
    ) -> Result<String, MaildirError> {
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{safe},S={}", message.len());
        if self.root.join("new").join(&name).exists() {
            return Ok(name);
        }
        if interrupted_before {
            let prefix = format!("{safe},S=");
            for d in ["new", "cur"] {
                let dir = self.root.join(d);
                for e in fs::read_dir(&dir).map_err(io(&dir))? {
                    let e = e.map_err(io(&dir))?;
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        return Ok(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        self.write_named(&name, message)?;
        Ok(name)
    }

    fn write_named(&self, name: &str, message: &[u8]) -> Result<(), MaildirError> {
        let tmp = self.root.join("tmp").join(name);
        let new = self.root.join("new").join(name);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(message).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &new).map_err(io(&new))?;
        let dir = self.root.join("new");
        crate::fsync::sync_dir(&dir).map_err(io(&dir))?;
        Ok(())
    }

    /// Messages in `new/` and `cur/` with their sizes (what a rescan-based
    /// quota counts; deletions made by an IMAP server are seen).
    pub fn messages(&self) -> Result<Vec<(PathBuf, u64)>, MaildirError> {
        let mut out = Vec::new();
        for d in ["new", "cur"] {
            let dir = self.root.join(d);
            for e in fs::read_dir(&dir).map_err(io(&dir))? {
                let e = e.map_err(io(&dir))?;
                let len = e.metadata().map_err(io(&dir))?.len();
                out.push((e.path(), len));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_is_visible_in_new_and_tmp_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let md = Maildir::open(mailbox_path(d.path(), "Mario.Rossi@PEC.Provider-A.test").unwrap())
            .unwrap();
        assert!(md.root().ends_with("pec.provider-a.test/mario.rossi"));
        let a = md
            .deliver_once("a", b"Subject: a\r\n\r\nx\r\n", false)
            .unwrap();
        let b = md
            .deliver_once("b", b"Subject: b\r\n\r\ny\r\n", false)
            .unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with(",S=17"));
        let msgs = md.messages().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(fs::read(&msgs[0].0).unwrap().len() as u64, msgs[0].1);
        assert_eq!(fs::read_dir(md.root().join("tmp")).unwrap().count(), 0);
        // Idempotent delivery by id, even after an IMAP server moved the file.
        let n = md.deliver_once("item.1", b"x", false).unwrap();
        assert_eq!(md.deliver_once("item.1", b"x", false).unwrap(), n);
        fs::rename(
            md.root().join("new").join(&n),
            md.root().join("cur").join(format!("{n}:2,S")),
        )
        .unwrap();
        // After an interruption the moved file is still found.
        md.deliver_once("item.1", b"x", true).unwrap();
        assert_eq!(md.messages().unwrap().len(), 3);
        fs::remove_file(md.root().join("cur").join(format!("{n}:2,S"))).unwrap();
        // A deletion behind our back (an IMAP client) is seen.
        fs::remove_file(&msgs[0].0).unwrap();
        assert_eq!(md.messages().unwrap().len(), 1);
    }

    #[test]
    fn hostile_addresses_cannot_escape() {
        let base = Path::new("/srv/mail");
        for a in [
            "../x@d.it",
            "x@..",
            "a/b@d.it",
            "noat",
            ".hidden@d.it",
            "x@d/../../etc",
        ] {
            assert!(mailbox_path(base, a).is_err(), "{a}");
        }
    }
}
