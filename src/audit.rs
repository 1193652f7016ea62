//! The legal log (*registro dei messaggi*, RT §8.2): what each record says,
//! chain verification, search, and retention purge.
//!
//! Owns: the record shape (the fields of RT §8.2) and its JSON encoding, the
//! verification of the hash chain that `store` builds in commit order, and
//! the purge anchor. Must not touch: the engine (everything goes through
//! [`Store`]).

use crate::store::{Batch, LogEntry, Store, StoreError, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Event types. Stable names: they are what auditors search for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Acceptance,
    NonAcceptance,
    EnvelopeSent,
    TakenInChargeSent,
    TakenInChargeReceived,
    Delivered,
    DeliveryError,
    ReceiptSent,
    ReceiptReceived,
    Anomaly,
    TimeoutNotice,
    VirusDetected,
    Mailbox,
    LogPurge,
}

/// One record: at least the fields RT §8.2 asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    pub event: Event,
    /// The client's original Message-ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    /// The PEC identifier of the transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pec_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Message-IDs of the messages generated or received for this event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    /// The other provider involved (sending or receiving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A purge's new anchor, `<seq>:<hash>`: the chain itself then vouches
    /// for where the log may start (records removed from the start show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

impl LogRecord {
    pub fn new(time: DateTime<Utc>, event: Event) -> Self {
        LogRecord {
            time,
            event,
            msgid: None,
            pec_id: None,
            sender: None,
            recipients: Vec::new(),
            subject: None,
            related: Vec::new(),
            provider: None,
            detail: None,
            anchor: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Add this record to a batch (it is chained at commit).
    pub fn append_to(&self, batch: &mut Batch) {
        batch.log(self.encode());
    }
}

const ANCHOR_KEY: &[u8] = b"log_anchor";

/// The verification outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    /// Every record from the anchor to the head checks out.
    Intact {
        records: u64,
        first_seq: u64,
        head_seq: u64,
    },
    /// The first record that does not.
    Broken { seq: u64, reason: String },
}

fn anchor(store: &Store) -> Result<(u64, [u8; 32]), StoreError> {
    match store.get(Table::Meta, ANCHOR_KEY)? {
        None => Ok((0, [0u8; 32])),
        Some(v) if v.len() == 40 => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&v[..8]);
            let mut h = [0u8; 32];
            h.copy_from_slice(&v[8..]);
            Ok((u64::from_be_bytes(seq), h))
        }
        Some(_) => Err(StoreError::Corrupt {
            table: "meta",
            detail: "log anchor has the wrong size".into(),
        }),
    }
}

/// Lowercase hex of a hash.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn anchor_text(seq: u64, hash: &[u8; 32]) -> String {
    format!("{seq}:{}", hex(hash))
}

/// The first sequence number the log still holds (the purge anchor's next).
pub fn first_seq(store: &Store) -> Result<u64, StoreError> {
    Ok(anchor(store)?.0 + 1)
}

/// Walk the chain from the purge anchor to the head.
pub fn verify_chain(store: &Store) -> Result<ChainStatus, StoreError> {
    let (anchor_seq, mut prev) = anchor(store)?;
    let anchor_now = anchor_text(anchor_seq, &prev);
    let mut expected = anchor_seq + 1;
    let mut count = 0u64;
    // The last purge record's anchor (None: none seen; Some(None): a purge
    // record from before anchors were recorded).
    let mut purged_to: Option<Option<String>> = None;
    loop {
        let batch = store.log_entries(expected, 1024)?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            if e.seq != expected {
                return Ok(ChainStatus::Broken {
                    seq: expected,
                    reason: format!("record {expected} is missing (next present: {})", e.seq),
                });
            }
            if e.prev != prev {
                return Ok(ChainStatus::Broken {
                    seq: e.seq,
                    reason: "previous-hash link does not match the record before it".into(),
                });
            }
            if LogEntry::chain_hash(&prev, e.seq, &e.payload) != e.hash {
                return Ok(ChainStatus::Broken {
                    seq: e.seq,
                    reason: "content does not match its hash (record altered)".into(),
                });
            }
            match serde_json::from_slice::<LogRecord>(&e.payload) {
                Err(_) => {
                    return Ok(ChainStatus::Broken {
                        seq: e.seq,
                        reason: "record is not a valid log record".into(),
                    });
                }
                Ok(r) if r.event == Event::LogPurge => purged_to = Some(r.anchor),
                Ok(_) => {}
            }
            prev = e.hash;
            expected += 1;
            count += 1;
        }
    }
    if anchor_seq > 0 {
        let reason = match purged_to {
            None => Some(format!(
                "the log starts after #{anchor_seq} but no purge record says so: records removed from the start"
            )),
            Some(Some(a)) if a != anchor_now => Some(format!(
                "the log starts after #{anchor_seq} but the last purge left it at #{}: records removed from the start",
                a.split(':').next().unwrap_or("?")
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            return Ok(ChainStatus::Broken {
                seq: anchor_seq + 1,
                reason,
            });
        }
    }
    Ok(ChainStatus::Intact {
        records: count,
        first_seq: anchor_seq + 1,
        head_seq: expected - 1,
    })
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matches `msgid` (with or without angle brackets), `pec_id` or a
    /// related id, and then every later record of the same transaction
    /// (sharing any of the matched records' ids): a message's history.
    pub id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The sender or one of the recipients (a mailbox's own history).
    pub party: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

fn norm_id(s: &str) -> String {
    s.trim_matches(['<', '>']).to_ascii_lowercase()
}

fn record_ids(r: &LogRecord) -> impl Iterator<Item = String> + '_ {
    r.msgid
        .iter()
        .chain(r.pec_id.iter())
        .chain(r.related.iter())
        .map(|s| norm_id(s))
}

impl Filter {
    /// `ids`: the transaction's ids known so far (grown by the caller).
    fn matches(&self, r: &LogRecord, ids: &HashSet<String>) -> bool {
        if self.id.is_some() && !record_ids(r).any(|x| ids.contains(&x)) {
            return false;
        }
        if let Some(f) = &self.from
            && !r
                .sender
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(f))
        {
            return false;
        }
        if let Some(t) = &self.to
            && !r.recipients.iter().any(|x| x.eq_ignore_ascii_case(t))
        {
            return false;
        }
        if let Some(p) = &self.party
            && !r
                .sender
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
            && !r.recipients.iter().any(|x| x.eq_ignore_ascii_case(p))
        {
            return false;
        }
        if let Some(s) = self.since
            && r.time < s
        {
            return false;
        }
        true
    }
}

/// Records matching `filter`, in log order, with their sequence numbers.
pub fn search(store: &Store, filter: &Filter) -> Result<Vec<(u64, LogRecord)>, StoreError> {
    let mut out = Vec::new();
    scan(store, filter, |seq, r| {
        out.push((seq, r));
        true
    })?;
    Ok(out)
}

/// Each record matching `filter`, in log order, handed to `f` as it is
/// read (nothing held beyond the page being read) until `f` says stop.
pub fn scan(
    store: &Store,
    filter: &Filter,
    mut f: impl FnMut(u64, LogRecord) -> bool,
) -> Result<(), StoreError> {
    let (anchor_seq, _) = anchor(store)?;
    let mut next = anchor_seq + 1;
    if let Some(since) = filter.since {
        // Nothing before `since` can match (nor extend a message's ids):
        // start there, not at the start of 30 months of log.
        next = first_near(store, next, since)?;
    }
    let mut ids: HashSet<String> = filter.id.iter().map(|s| norm_id(s)).collect();
    loop {
        let batch = store.log_entries(next, 1024)?;
        let Some(last) = batch.last() else { break };
        next = last.seq + 1;
        for e in batch {
            if let Ok(r) = serde_json::from_slice::<LogRecord>(&e.payload)
                && filter.matches(&r, &ids)
            {
                if filter.id.is_some() {
                    ids.extend(record_ids(&r));
                }
                if !f(e.seq, r) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Records are appended in time order, give or take the moments between
/// taking the time and committing: a seek goes this far earlier, and the
/// filter does the rest.
pub const SEEK_SLACK: chrono::Duration = chrono::Duration::hours(1);

/// The first sequence number from `lo` on whose record is not older than
/// `since` minus [`SEEK_SLACK`] (binary search over the contiguous seqs).
fn first_near(store: &Store, lo: u64, since: DateTime<Utc>) -> Result<u64, StoreError> {
    let target = since - SEEK_SLACK;
    let (mut lo, mut hi) = (lo, store.log_head()?.seq + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let older = match store.log_entries(mid, 1)?.first() {
            Some(e) => {
                serde_json::from_slice::<LogRecord>(&e.payload).is_ok_and(|r| r.time < target)
            }
            None => false,
        };
        if older {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Remove records older than `before` from the start of the log, move the
/// anchor past them, and log the purge itself — one atomic batch.
pub fn purge(store: &Store, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let (anchor_seq, _) = anchor(store)?;
    let mut next = anchor_seq + 1;
    let mut last_purged: Option<LogEntry> = None;
    'outer: loop {
        let batch = store.log_entries(next, 1024)?;
        if batch.is_empty() {
            break;
        }
        for e in batch {
            match serde_json::from_slice::<LogRecord>(&e.payload) {
                Ok(r) if r.time < before => {
                    next = e.seq + 1;
                    last_purged = Some(e);
                }
                _ => break 'outer,
            }
        }
    }
    let Some(last) = last_purged else {
        return Ok(0);
    };
    let n = last.seq - anchor_seq;
    let mut b = Batch::new();
    for seq in anchor_seq + 1..=last.seq {
        b.delete(Table::Log, seq.to_be_bytes().to_vec());
    }
    let mut a = last.seq.to_be_bytes().to_vec();
    a.extend_from_slice(&last.hash);
    b.put(Table::Meta, ANCHOR_KEY.to_vec(), a);
    let mut rec = LogRecord::new(now, Event::LogPurge);
    rec.anchor = Some(anchor_text(last.seq, &last.hash));
    rec.detail = Some(format!(
        "purged records {}..={} older than {} (retention)",
        anchor_seq + 1,
        last.seq,
        before.to_rfc3339()
    ));
    rec.append_to(&mut b);
    store.commit(b)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Engine, Op, RedbEngine};
    use chrono::TimeZone;
    use std::sync::Arc;

    fn rec(day: u32, event: Event, pec_id: &str) -> LogRecord {
        let mut r = LogRecord::new(Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap(), event);
        r.pec_id = Some(pec_id.into());
        r.msgid = Some(format!("<orig-{pec_id}>"));
        r.sender = Some("mario@pec.a.test".into());
        r.recipients = vec!["giulia@pec.b.test".into()];
        r
    }

    fn store_with(n: u32) -> (tempfile::TempDir, Arc<RedbEngine>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(RedbEngine::open(&dir.path().join("s.redb")).unwrap());
        let store = Store::with_engine(engine.clone()).unwrap();
        for d in 1..=n {
            let mut b = Batch::new();
            rec(d, Event::Acceptance, &format!("id{d}")).append_to(&mut b);
            rec(d, Event::EnvelopeSent, &format!("id{d}")).append_to(&mut b);
            store.commit(b).unwrap();
        }
        (dir, engine, store)
    }

    #[test]
    fn intact_chain_verifies() {
        let (_d, _e, store) = store_with(5);
        assert_eq!(
            verify_chain(&store).unwrap(),
            ChainStatus::Intact {
                records: 10,
                first_seq: 1,
                head_seq: 10
            }
        );
    }

    #[test]
    fn altered_record_is_named() {
        let (_d, engine, store) = store_with(5);
        let mut e = store.log_entries(4, 1).unwrap().remove(0);
        e.payload = rec(2, Event::Delivered, "id2").encode();
        engine
            .apply(&[Op::Put(Table::Log, 4u64.to_be_bytes().to_vec(), e.encode())])
            .unwrap();
        match verify_chain(&store).unwrap() {
            ChainStatus::Broken { seq, reason } => {
                assert_eq!(seq, 4);
                assert!(reason.contains("altered"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_search_since_a_date_seeks_there_and_misses_nothing() {
        let (_d, _e, store) = store_with(28);
        for day in [1, 2, 14, 27, 28] {
            let since = Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap();
            let filter = Filter {
                since: Some(since),
                ..Default::default()
            };
            // What a full walk would keep: every record of that day on.
            assert_eq!(
                search(&store, &filter).unwrap().len(),
                2 * (29 - day as usize)
            );
            // The seek lands within the slack before the first of them.
            let first = first_near(&store, 1, since).unwrap();
            assert_eq!(first, 2 * (day as u64 - 1) + 1, "day {day}");
        }
        let after_all = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        assert!(
            search(
                &store,
                &Filter {
                    since: Some(after_all),
                    ..Default::default()
                }
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn deleted_record_is_named() {
        let (_d, engine, store) = store_with(5);
        engine
            .apply(&[Op::Delete(Table::Log, 6u64.to_be_bytes().to_vec())])
            .unwrap();
        match verify_chain(&store).unwrap() {
            ChainStatus::Broken { seq, .. } => assert_eq!(seq, 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn search_by_id_sender_recipient_and_time() {
        let (_d, _e, store) = store_with(5);
        let by_id = search(
            &store,
            &Filter {
                id: Some("id3".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(by_id.iter().map(|x| x.0).collect::<Vec<_>>(), vec![5, 6]);
        let by_orig = search(
            &store,
            &Filter {
                id: Some("orig-id3".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(by_orig.len(), 2);
        let since = search(
            &store,
            &Filter {
                since: Some(Utc.with_ymd_and_hms(2026, 1, 4, 0, 0, 0).unwrap()),
                to: Some("GIULIA@pec.b.test".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(since.len(), 4);
        let party = |who: &str| {
            let f = Filter {
                party: Some(who.into()),
                ..Default::default()
            };
            search(&store, &f).unwrap().len()
        };
        assert_eq!(party("GIULIA@pec.b.test"), 10, "as a recipient");
        assert_eq!(party("Mario@pec.a.test"), 10, "as the sender");
        assert_eq!(party("x@y"), 0);
        assert!(
            search(
                &store,
                &Filter {
                    from: Some("x@y".into()),
                    ..Default::default()
                }
            )
            .unwrap()
            .is_empty()
        );
    }

    /// Records removed from the start with the anchor moved past them, as a
    /// purge would: the last purge record names the true anchor.
    #[test]
    fn records_removed_from_the_start_are_named() {
        let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let cut = |engine: &RedbEngine, store: &Store, upto: u64| {
            let hash = store.log_entries(upto, 1).unwrap()[0].hash;
            let mut a = upto.to_be_bytes().to_vec();
            a.extend_from_slice(&hash);
            let mut ops: Vec<Op> = (1..=upto)
                .map(|s| Op::Delete(Table::Log, s.to_be_bytes().to_vec()))
                .collect();
            ops.push(Op::Put(Table::Meta, ANCHOR_KEY.to_vec(), a));
            engine.apply(&ops).unwrap();
        };
        // After a genuine purge (records 1..=4), more cut off: 5..=6.
        let (_d, engine, store) = store_with(5);
        purge(
            &store,
            Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap(),
            now,
        )
        .unwrap();
        cut(&engine, &store, 6);
        match verify_chain(&store).unwrap() {
            ChainStatus::Broken { seq, reason } => {
                assert_eq!(seq, 7);
                assert!(reason.contains("left it at #4"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Never purged: no purge record vouches for any anchor.
        let (_d, engine, store) = store_with(5);
        cut(&engine, &store, 3);
        match verify_chain(&store).unwrap() {
            ChainStatus::Broken { seq, reason } => {
                assert_eq!(seq, 4);
                assert!(reason.contains("no purge record"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn purge_keeps_the_chain_verifiable_and_is_logged() {
        let (_d, _e, store) = store_with(5);
        let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let n = purge(
            &store,
            Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap(),
            now,
        )
        .unwrap();
        assert_eq!(n, 4);
        match verify_chain(&store).unwrap() {
            ChainStatus::Intact {
                records,
                first_seq,
                head_seq,
            } => {
                assert_eq!((records, first_seq, head_seq), (7, 5, 11));
            }
            other => panic!("{other:?}"),
        }
        let purges = search(&store, &Filter::default()).unwrap();
        assert_eq!(purges.last().unwrap().1.event, Event::LogPurge);
        assert!(
            purges
                .last()
                .unwrap()
                .1
                .anchor
                .as_deref()
                .unwrap()
                .starts_with("4:")
        );
        assert_eq!(
            purge(
                &store,
                Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap(),
                now
            )
            .unwrap(),
            0
        );
    }
}
