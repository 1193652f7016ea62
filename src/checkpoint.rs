//! Seals of the legal log's head (RT §8.2: kept unmodified; providers seal
//! their logs [INF]).
//!
//! The hash chain shows a record altered, reordered or removed from the
//! middle, but not records cut off the end: a shorter chain is still a
//! chain. So every `log.checkpoint_every` the daemon writes the head it has
//! reached (sequence number, hash, time) as a small text file with a
//! detached CMS signature by the provider's key, both of which anyone can
//! check with `openssl cms -verify` and copy elsewhere. `pecd log verify`
//! then also requires each checkpoint found to be signed by this provider
//! and to be in the chain: the log must reach past it, with the same hash.
//!
//! Owns: the checkpoint files and their format. Must not touch: the log's
//! records (read through [`crate::audit`] and [`Store`]), openssl's CMS
//! (through [`crate::smime`]).

use crate::audit::{ChainStatus, hex};
use crate::smime::{SignedParts, Signer, Verifier, VerifyTime};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// One sealed head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: [u8; 32],
    pub time: DateTime<Utc>,
}

const TITLE: &str = "pecd legal log checkpoint";

impl Checkpoint {
    /// The signed text (CRLF lines: it is signed byte for byte).
    pub fn text(&self) -> String {
        format!(
            "{TITLE}\r\nseq: {}\r\nhash: {}\r\ntime: {}\r\n",
            self.seq,
            hex(&self.hash),
            self.time.to_rfc3339()
        )
    }

    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text.lines();
        if lines.next() != Some(TITLE) {
            return Err("not a pecd log checkpoint".into());
        }
        let (mut seq, mut hash, mut time) = (None, None, None);
        for line in lines {
            match line.split_once(": ") {
                Some(("seq", v)) => seq = v.parse::<u64>().ok(),
                Some(("hash", v)) => hash = unhex(v),
                Some(("time", v)) => {
                    time = DateTime::parse_from_rfc3339(v).ok().map(|t| t.to_utc())
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        match (seq, hash, time) {
            (Some(seq), Some(hash), Some(time)) => Ok(Checkpoint { seq, hash, time }),
            _ => Err("seq, hash or time missing or malformed".into()),
        }
    }
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `checkpoint-<seq>.txt` and its `.p7s`: sorted by name is sorted by seq.
fn file_stem(seq: u64) -> String {
    format!("checkpoint-{seq:020}")
}

/// Seal the current head in `dir` unless it is sealed already (or the log
/// is empty). Both files are durable before this returns; the signature is
/// written last, so a checkpoint without one is an interrupted write.
pub fn write(
    store: &Store,
    signer: &Signer,
    dir: &Path,
    now: DateTime<Utc>,
) -> Result<Option<u64>, String> {
    let head = store.log_head().map_err(|e| e.to_string())?;
    if head.seq == 0 {
        return Ok(None);
    }
    let stem = file_stem(head.seq);
    let text_path = dir.join(format!("{stem}.txt"));
    if text_path.exists() {
        return Ok(None);
    }
    let cp = Checkpoint {
        seq: head.seq,
        hash: head.hash,
        time: now,
    };
    let text = cp.text();
    let signature = signer
        .sign_detached(text.as_bytes())
        .map_err(|e| format!("signing a checkpoint: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The signature first: a seal is found by its text, so a write cut
    // off between the two leaves a stray signature (ignored), never a text
    // without one, which would read as a signature removed.
    for (path, bytes) in [
        (dir.join(format!("{stem}.p7s")), &signature[..]),
        (text_path, text.as_bytes()),
    ] {
        crate::fsync::replace_file(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Some(head.seq))
}

/// A checkpoint's text file and its signature (None when the signature
/// file is missing).
type Found = (PathBuf, Option<Vec<u8>>);

/// The checkpoint files in `dir`, in seq order.
fn found(dir: &Path) -> Result<Vec<Found>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|x| x == "txt") {
            let sig_path = path.with_extension("p7s");
            let sig = match std::fs::read(&sig_path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("{}: {e}", sig_path.display())),
            };
            out.push((path, sig));
        }
    }
    out.sort();
    Ok(out)
}

/// The chain verified ([`crate::audit::verify_chain`]), then every
/// checkpoint in `dir`: signed by this provider (`service_address` among
/// the signer's addresses, its chain trusted by `verifier`), and found in
/// the log with its hash. Checkpoints of records purged since are skipped,
/// and so is the newest when its signature was never written (a write
/// interrupted between the two files).
pub fn verify(
    store: &Store,
    verifier: &Verifier,
    service_address: &str,
    dir: &Path,
) -> Result<ChainStatus, String> {
    let status = crate::audit::verify_chain(store).map_err(|e| e.to_string())?;
    let ChainStatus::Intact {
        first_seq,
        head_seq,
        ..
    } = status
    else {
        return Ok(status);
    };
    let all = found(dir)?;
    let newest = all.last().map(|f| f.0.clone());
    for (path, signature) in all {
        let name = path.display();
        let broken = |seq: u64, reason: String| ChainStatus::Broken { seq, reason };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            // Pruned by the daemon meanwhile (its records were purged).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let Some(signature) = signature else {
            // Only the newest may be a write that stopped between its two
            // files (seals written before the signature went first); an
            // older one without signature had it removed. Removing the
            // newest's signature hides no more than removing the newest
            // seal whole, which only a copy kept elsewhere shows.
            if Some(&path) == newest.as_ref() {
                continue;
            }
            return Ok(broken(
                0,
                format!("checkpoint {name} has lost its signature"),
            ));
        };
        let parts = SignedParts {
            content: std::borrow::Cow::Borrowed(&text),
            signature,
            protocol: "application/pkcs7-signature".into(),
            micalg: None,
        };
        let v = verifier.verify_parts(&parts, VerifyTime::SigningTime);
        let ours = v
            .signer_emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case(service_address));
        if !v.status.is_valid() || !ours {
            return Ok(broken(
                0,
                format!("checkpoint {name} is not signed by this provider"),
            ));
        }
        let cp = Checkpoint::parse(&String::from_utf8_lossy(&text))
            .map_err(|e| format!("{name}: {e}"))?;
        // The daemon may have appended (and sealed) more since the walk.
        let head_now = if cp.seq > head_seq {
            store.log_head().map_err(|e| e.to_string())?.seq
        } else {
            head_seq
        };
        if cp.seq > head_now {
            return Ok(broken(
                head_now + 1,
                format!(
                    "records up to #{} were sealed at {} ({name}) but the log ends at #{head_now}: records removed from the end",
                    cp.seq,
                    cp.time.to_rfc3339()
                ),
            ));
        }
        if cp.seq < first_seq {
            continue;
        }
        let entry = store
            .log_entries(cp.seq, 1)
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .filter(|e| e.seq == cp.seq);
        if entry.is_none_or(|e| e.hash != cp.hash) {
            return Ok(broken(
                cp.seq,
                format!("record #{} differs from the one sealed in {name}", cp.seq),
            ));
        }
    }
    Ok(status)
}

/// Remove the checkpoints of records purged from the log (below
/// `first_seq`): there is nothing left for them to seal.
pub fn prune(dir: &Path, first_seq: u64) -> Result<usize, String> {
    let old: Vec<_> = found(dir)?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("checkpoint-"))
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|seq| seq < first_seq)
        })
        .collect();
    for p in &old {
        for path in [p.clone(), p.with_extension("p7s")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_reads_back() {
        let cp = Checkpoint {
            seq: 42,
            hash: [7u8; 32],
            time: DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
                .unwrap()
                .to_utc(),
        };
        assert_eq!(Checkpoint::parse(&cp.text()).unwrap(), cp);
        assert!(Checkpoint::parse("pecd legal log checkpoint\r\nseq: x\r\n").is_err());
        assert!(Checkpoint::parse("something else\r\n").is_err());
    }

    #[test]
    fn seals_are_ours_and_in_the_chain() {
        use crate::audit::{Event, LogRecord};
        use crate::store::Batch;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "redb").unwrap();
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let signer = Signer::from_files(
            &certs.join("provider-a.pem"),
            &certs.join("provider-a.key"),
            crate::smime::Digest::Sha256,
        )
        .unwrap();
        let anchors = crate::smime::load_certificates(&certs.join("ca.pem")).unwrap();
        let verifier = Verifier::with_anchors(anchors).unwrap();
        let seals = dir.path().join("seals");
        let append = |n: usize| {
            for _ in 0..n {
                let mut b = Batch::new();
                LogRecord::new(Utc::now(), Event::Acceptance).append_to(&mut b);
                store.commit(b).unwrap();
            }
        };
        let now = Utc::now();
        append(2);
        assert_eq!(write(&store, &signer, &seals, now).unwrap(), Some(2));
        assert_eq!(write(&store, &signer, &seals, now).unwrap(), None);
        append(2);
        assert_eq!(write(&store, &signer, &seals, now).unwrap(), Some(4));
        let me = "posta-certificata@pec.provider-a.test";
        let check = |who: &str| verify(&store, &verifier, who, &seals).unwrap();
        let reason = |s: ChainStatus| match s {
            ChainStatus::Broken { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert!(matches!(check(me), ChainStatus::Intact { .. }));
        let other = check("posta-certificata@pec.provider-b.test");
        assert!(reason(other).contains("not signed by this provider"));
        // The newest without its signature: a write interrupted, tolerated.
        let sig = |seq: u64| seals.join(format!("{}.p7s", file_stem(seq)));
        let newest = std::fs::read(sig(4)).unwrap();
        std::fs::remove_file(sig(4)).unwrap();
        assert!(matches!(check(me), ChainStatus::Intact { .. }));
        std::fs::write(sig(4), newest).unwrap();
        // A write cut off after its signature: ignored, and written whole
        // at the next seal of that head; later seals are unaffected.
        append(1);
        let text5 = seals.join(format!("{}.txt", file_stem(5)));
        assert_eq!(write(&store, &signer, &seals, now).unwrap(), Some(5));
        std::fs::remove_file(&text5).unwrap();
        assert!(matches!(check(me), ChainStatus::Intact { .. }));
        assert_eq!(write(&store, &signer, &seals, now).unwrap(), Some(5));
        assert!(text5.exists());
        std::fs::remove_file(&text5).unwrap();
        append(1);
        assert_eq!(write(&store, &signer, &seals, now).unwrap(), Some(6));
        assert!(matches!(check(me), ChainStatus::Intact { .. }));
        // An older one without it: removed to hide that seal.
        std::fs::remove_file(sig(2)).unwrap();
        assert!(reason(check(me)).contains("lost its signature"));
        // Once its records are purged it goes.
        assert_eq!(prune(&seals, 3).unwrap(), 1);
        assert!(matches!(check(me), ChainStatus::Intact { .. }));
    }
}
