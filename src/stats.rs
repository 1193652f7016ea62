//! AgID statistics per four-month period (*quadrimestre*): dataset P01
//! (domains, mailboxes, acceptance receipts issued, presa in carico issued
//! to other providers, viruses in and out) computed from the legal log, and
//! P02 (each outage: day, type, minutes, whether the SLA held) from the
//! outage ledger the operator feeds.
//!
//! Owns: period arithmetic, the ledger records (`meta` table, `outage/…`),
//! the CSV. Must not touch: the engine (through `Store` and `audit`).
//!
//! [INF] choices: planned outages do not count against the 99.8 %
//! availability; the single-outage rule is that no unplanned outage lasts
//! more than 50 % of the downtime the period allows (0.2 % of its minutes);
//! overlapping unplanned outages count their union once. "Caselle" are
//! the mailboxes in service at the period's end (created before it, not
//! cancelled before it; mailboxes deleted since are no longer known); a
//! virus is counted once per message, however many recipients it had.

use crate::audit::{Event, LogRecord};
use crate::store::{Batch, Store, StoreError, Table};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use serde::{Deserialize, Serialize};

/// Availability the period must reach.
pub const SLA_AVAILABILITY: f64 = 0.998;

/// A quadrimestre: `2026-Q1` (January–April), `2026-Q2` (May–August),
/// `2026-Q3` (September–December); `2026-1` … `2026-3` also read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub year: i32,
    pub part: u32,
}

impl Period {
    pub fn parse(s: &str) -> Result<Period, String> {
        let bad = || format!("{s:?}: write the quadrimestre as YYYY-Q1, YYYY-Q2 or YYYY-Q3");
        let (y, q) = s.trim().split_once('-').ok_or_else(bad)?;
        let year: i32 = y.parse().map_err(|_| bad())?;
        let part: u32 = q
            .trim_start_matches(['Q', 'q'])
            .parse()
            .map_err(|_| bad())?;
        if !(1..=3).contains(&part) || !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Period { year, part })
    }

    /// [start, end) in UTC, from Italian midnights.
    pub fn bounds(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let first = |y: i32, m: u32| {
            let d = NaiveDate::from_ymd_opt(y, m, 1).unwrap_or_default();
            Rome.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let start_month = 1 + (self.part - 1) * 4;
        let start = first(self.year, start_month);
        let end = if self.part == 3 {
            first(self.year + 1, 1)
        } else {
            first(self.year, start_month + 4)
        };
        (start, end)
    }

    pub fn name(&self) -> String {
        format!("{}-Q{}", self.year, self.part)
    }
}

/// Kind of outage (P02).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutageKind {
    /// Programmato.
    Planned,
    /// Incidente.
    Incident,
    /// Malfunzionamento.
    Malfunction,
}

impl OutageKind {
    pub fn parse(s: &str) -> Result<OutageKind, String> {
        match s {
            "planned" | "programmato" => Ok(OutageKind::Planned),
            "incident" | "incidente" => Ok(OutageKind::Incident),
            "malfunction" | "malfunzionamento" => Ok(OutageKind::Malfunction),
            o => Err(format!("{o:?}: use planned, incident or malfunction")),
        }
    }

    fn italian(self) -> &'static str {
        match self {
            OutageKind::Planned => "programmato",
            OutageKind::Incident => "incidente",
            OutageKind::Malfunction => "malfunzionamento",
        }
    }
}

/// One outage of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub kind: OutageKind,
    #[serde(default)]
    pub note: String,
}

/// Record an outage (and log it).
pub fn add_outage(store: &Store, o: &Outage, now: DateTime<Utc>) -> Result<(), String> {
    if o.end <= o.start {
        return Err("the outage must end after it starts".into());
    }
    let mut b = Batch::new();
    // Two outages of different kinds that begin together (an incident and
    // the malfunction it caused) are two entries; one recorded again with
    // the same start and kind is a correction, and replaces it.
    b.put(
        Table::Meta,
        format!("outage/{}/{}", o.start.to_rfc3339(), o.kind.italian()).into_bytes(),
        serde_json::to_vec(o).unwrap_or_default(),
    );
    let mut r = LogRecord::new(now, Event::Mailbox);
    r.detail = Some(format!(
        "outage recorded: {} {} → {} {}",
        o.kind.italian(),
        o.start.to_rfc3339(),
        o.end.to_rfc3339(),
        o.note
    ));
    r.append_to(&mut b);
    store.commit(b).map(|_| ()).map_err(|e| e.to_string())
}

/// Every outage of the ledger.
pub fn outages(store: &Store) -> Result<Vec<Outage>, StoreError> {
    Ok(store
        .scan_prefix(Table::Meta, b"outage/", usize::MAX)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// The P01 figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct P01 {
    pub domains: usize,
    pub mailboxes: usize,
    pub acceptances: u64,
    pub taken_in_charge_to_others: u64,
    pub viruses_in: u64,
    pub viruses_out: u64,
}

/// P01 from the log records of the period. `own_provider`: our name as
/// it appears in the records' `provider` field (presa in carico for our
/// own senders are not "to other providers").
pub fn p01(
    store: &Store,
    period: Period,
    domains: usize,
    own_provider: &str,
) -> Result<P01, String> {
    let (start, end) = period.bounds();
    let filter = crate::audit::Filter {
        since: Some(start),
        ..Default::default()
    };
    let mut out = P01 {
        domains,
        ..Default::default()
    };
    for entry in store.entries(Table::Mailboxes) {
        let (_, v) = entry.map_err(|e| e.to_string())?;
        let Ok(a) = serde_json::from_slice::<crate::accounts::Account>(&v) else {
            continue;
        };
        let cancelled_before_end = a.state == crate::accounts::AccountState::Cancelled
            && a.state_since.is_some_and(|t| t < end);
        if a.created < end && !cancelled_before_end {
            out.mailboxes += 1;
        }
    }
    // One envelope with a virus for three of our users is three records
    // (one per recipient) and one virus.
    let mut infected: std::collections::HashSet<String> = Default::default();
    crate::audit::scan(store, &filter, |_, r| {
        // Records are in commit order, which may trail their time by the
        // moments between taking it and committing: read a little past
        // the end, count only what falls inside.
        if r.time >= end + crate::audit::SEEK_SLACK {
            return false;
        }
        if r.time < start || r.time >= end {
            return true;
        }
        match r.event {
            Event::Acceptance => out.acceptances += 1,
            Event::TakenInChargeSent if r.provider.as_deref() != Some(own_provider) => {
                out.taken_in_charge_to_others += 1
            }
            Event::VirusDetected => {
                let outgoing = r
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("at submission"));
                let first = match r.pec_id.as_ref().or(r.related.first()) {
                    Some(id) => infected.insert(format!("{outgoing}/{id}")),
                    None => true,
                };
                match (first, outgoing) {
                    (false, _) => {}
                    (true, true) => out.viruses_out += 1,
                    (true, false) => out.viruses_in += 1,
                }
            }
            _ => {}
        }
        true
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The statistics as CSV (`;` separated, Italian labels): P01 then P02.
pub fn csv(
    store: &Store,
    period: Period,
    domains: usize,
    own_provider: &str,
) -> Result<String, String> {
    let p = p01(store, period, domains, own_provider)?;
    let name = period.name();
    let mut out = String::from("dataset;periodo;voce;valore\n");
    for (k, v) in [
        ("domini", p.domains as u64),
        ("caselle", p.mailboxes as u64),
        ("ricevute_accettazione", p.acceptances),
        ("prese_in_carico_altri_gestori", p.taken_in_charge_to_others),
        ("virus_in_ingresso", p.viruses_in),
        ("virus_in_uscita", p.viruses_out),
    ] {
        out.push_str(&format!("P01;{name};{k};{v}\n"));
    }
    let (start, end) = period.bounds();
    let period_minutes = (end - start).num_minutes() as f64;
    let allowed = period_minutes * (1.0 - SLA_AVAILABILITY);
    out.push_str("\ndataset;periodo;giorno;tipo;minuti;entro_sla\n");
    let mut down: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut single_ok = true;
    for o in outages(store).map_err(|e| e.to_string())? {
        let (s, e) = (o.start.max(start), o.end.min(end));
        if e <= s {
            continue;
        }
        let minutes = (e - s).num_minutes().max(1) as f64;
        let counts = o.kind != OutageKind::Planned;
        let within = !counts || minutes <= allowed * 0.5;
        if counts {
            down.push((s, e));
            single_ok &= within;
        }
        let day = s.with_timezone(&Rome).date_naive();
        out.push_str(&format!(
            "P02;{name};{:02}/{:02}/{};{};{minutes};{}\n",
            day.day(),
            day.month(),
            day.year(),
            o.kind.italian(),
            if within { "si" } else { "no" }
        ));
    }
    let availability = 1.0 - union_minutes(down) / period_minutes;
    let met = availability >= SLA_AVAILABILITY && single_ok;
    out.push_str(&format!(
        "P02;{name};totale;disponibilita;{:.4};{}\n",
        availability * 100.0,
        if met { "si" } else { "no" }
    ));
    Ok(out)
}

/// Minutes covered by any of `spans` (overlaps once).
fn union_minutes(mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)>) -> f64 {
    spans.sort();
    let mut total = chrono::Duration::zero();
    let mut open: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (s, e) in spans {
        open = match open {
            Some((os, oe)) if s <= oe => Some((os, oe.max(e))),
            Some((os, oe)) => {
                total += oe - os;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((os, oe)) = open {
        total += oe - os;
    }
    total.num_seconds() as f64 / 60.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadrimestri() {
        let p = Period::parse("2026-Q3").unwrap();
        let (s, e) = p.bounds();
        assert_eq!(s.to_rfc3339(), "2026-08-31T22:00:00+00:00");
        assert_eq!(e.to_rfc3339(), "2026-12-31T23:00:00+00:00");
        assert_eq!(
            Period::parse("2026-1").unwrap().bounds().0.to_rfc3339(),
            "2025-12-31T23:00:00+00:00"
        );
        assert!(Period::parse("2026-Q4").is_err());
        assert!(Period::parse("Q1").is_err());
    }

    #[test]
    fn p01_and_p02_from_log_and_ledger() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), "redb").unwrap();
        let t = |m: u32, day: u32| Utc.with_ymd_and_hms(2026, m, day, 10, 0, 0).unwrap();
        let mut b = Batch::new();
        for (when, ev, provider, detail) in [
            (t(4, 30), Event::Acceptance, None, None),
            (t(5, 2), Event::Acceptance, None, None),
            (t(6, 1), Event::Acceptance, None, None),
            (
                t(6, 2),
                Event::TakenInChargeSent,
                Some("Altro Gestore"),
                None,
            ),
            (t(6, 3), Event::TakenInChargeSent, Some("Noi S.p.A."), None),
            (
                t(7, 1),
                Event::VirusDetected,
                None,
                Some("at submission: Eicar"),
            ),
            (
                t(7, 2),
                Event::VirusDetected,
                None,
                Some("in a received envelope: Eicar"),
            ),
        ] {
            let mut r = LogRecord::new(when, ev);
            r.provider = provider.map(str::to_string);
            r.detail = detail.map(str::to_string);
            r.append_to(&mut b);
        }
        // One envelope with a virus for three of our users: one virus.
        // (Everything here is committed in one batch, in this order.)
        for rcpt in ["a", "b", "c"] {
            let mut r = LogRecord::new(t(7, 3), Event::VirusDetected);
            r.pec_id = Some("opec.1@altro.test".into());
            r.recipients = vec![format!("{rcpt}@pec.noi.test")];
            r.detail = Some("in a received envelope: Eicar".into());
            r.append_to(&mut b);
        }
        // Committed after a record of September's first minutes, timed
        // before the end (commit order trails time by moments).
        let after = Utc.with_ymd_and_hms(2026, 8, 31, 22, 30, 0).unwrap();
        LogRecord::new(after, Event::Acceptance).append_to(&mut b);
        let late = Utc.with_ymd_and_hms(2026, 8, 31, 21, 59, 0).unwrap();
        LogRecord::new(late, Event::Acceptance).append_to(&mut b);
        // In service at the end: created before it, not cancelled before it.
        for (address, created, state, since) in [
            ("uno@pec.noi.test", t(3, 1), "active", t(3, 1)),
            ("due@pec.noi.test", t(3, 1), "cancelled", t(9, 15)),
            ("tre@pec.noi.test", t(3, 1), "cancelled", t(6, 1)),
            ("quattro@pec.noi.test", t(9, 20), "active", t(9, 20)),
        ] {
            let a: crate::accounts::Account = serde_json::from_value(serde_json::json!({
                "address": address, "password_hash": "", "state": state,
                "created": created, "state_since": since,
            }))
            .unwrap();
            crate::accounts::put(&mut b, &a);
        }
        store.commit(b).unwrap();
        let p = Period::parse("2026-Q2").unwrap();
        let got = p01(&store, p, 2, "Noi S.p.A.").unwrap();
        assert_eq!(
            got,
            P01 {
                domains: 2,
                mailboxes: 2,
                acceptances: 3,
                taken_in_charge_to_others: 1,
                viruses_in: 2,
                viruses_out: 1
            }
        );
        // 123 days ≈ 177,120 minutes; 0.2 % ≈ 354 minutes allowed, 177 for
        // one outage.
        let now = t(9, 1);
        let o = |start, minutes, kind| Outage {
            start,
            end: start + chrono::Duration::minutes(minutes),
            kind,
            note: String::new(),
        };
        add_outage(&store, &o(t(5, 10), 600, OutageKind::Planned), now).unwrap();
        add_outage(&store, &o(t(6, 10), 120, OutageKind::Incident), now).unwrap();
        let text = csv(&store, p, 2, "Noi S.p.A.").unwrap();
        assert!(
            text.contains("P01;2026-Q2;ricevute_accettazione;3\n"),
            "{text}"
        );
        assert!(
            text.contains("P02;2026-Q2;10/05/2026;programmato;600;si\n"),
            "{text}"
        );
        assert!(
            text.contains("P02;2026-Q2;10/06/2026;incidente;120;si\n"),
            "{text}"
        );
        assert!(text.ends_with(";si\n"), "{text}");
        // A malfunction that began with the incident, and lasted an hour
        // longer: both listed, their 180 minutes of union counted once
        // (1 − 180 / 177,120 minutes).
        add_outage(&store, &o(t(6, 10), 180, OutageKind::Malfunction), now).unwrap();
        let text = csv(&store, p, 2, "Noi S.p.A.").unwrap();
        assert!(text.contains("10/06/2026;incidente;120;si\n"), "{text}");
        assert!(
            text.contains("10/06/2026;malfunzionamento;180;no\n"),
            "{text}"
        );
        assert!(text.contains("totale;disponibilita;99.8984;"), "{text}");
        // One long malfunction breaks the single-outage rule.
        add_outage(&store, &o(t(7, 10), 200, OutageKind::Malfunction), now).unwrap();
        let text = csv(&store, p, 2, "Noi S.p.A.").unwrap();
        assert!(text.contains("malfunzionamento;200;no\n"), "{text}");
        assert!(text.ends_with(";no\n"), "{text}");
        assert!(add_outage(&store, &o(t(7, 10), 0, OutageKind::Incident), now).is_err());
    }
}
