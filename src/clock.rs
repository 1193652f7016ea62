//! The legal time reference of a transaction and the clock that produces it.
//!
//! Owns: conversion of an instant to Italian legal time (Europe/Rome, DST-aware)
//! in the forms the PEC messages print. Must not touch: anything but `chrono`.
//!
//! RT §8.3 (DM 2/11/2005 art. 9): one time reference per transaction, reused in
//! every artefact (envelope `Date:`, receipts, daticert, log). Callers take one
//! [`LegalTime`] per transaction and hand the same value to every builder.

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Europe::Rome;

/// A source of "now". The daemon uses [`SystemClock`]; tests use [`FixedClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Wall-clock time from the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock frozen at one instant (tests, golden files, replays).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// A clock that moves only when told (tests of expiry and timers that
/// span months): starts at an instant and then advances with real time
/// from the last `set`, so queue retries and timeouts still progress.
#[derive(Debug)]
pub struct ManualClock {
    base: std::sync::Mutex<(DateTime<Utc>, std::time::Instant)>,
}

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock {
            base: std::sync::Mutex::new((at, std::time::Instant::now())),
        }
    }

    /// Jump to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = (at, std::time::Instant::now());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let (at, since) = *self.base.lock().unwrap_or_else(|e| e.into_inner());
        at + chrono::Duration::from_std(since.elapsed()).unwrap_or_default()
    }
}

/// One instant, shown in Italian legal time.
///
/// Sub-second precision is dropped: PEC artefacts print whole seconds and the
/// same reference must read identically everywhere.
///
/// ```
/// use pecd::clock::LegalTime;
/// let summer = "2026-07-01T10:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap();
/// let t = LegalTime::new(summer);
/// assert_eq!((t.giorno().as_str(), t.ora().as_str(), t.zona().as_str()), ("01/07/2026", "12:00:00", "+0200"));
/// assert_eq!(t.rfc5322(), "Wed, 1 Jul 2026 12:00:00 +0200");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegalTime {
    utc: DateTime<Utc>,
}

impl LegalTime {
    pub fn new(utc: DateTime<Utc>) -> Self {
        let secs = utc.timestamp();
        let utc = Utc.timestamp_opt(secs, 0).single().unwrap_or(utc);
        LegalTime { utc }
    }

    pub fn now(clock: &dyn Clock) -> Self {
        Self::new(clock.now())
    }

    pub fn utc(&self) -> DateTime<Utc> {
        self.utc
    }

    pub fn local(&self) -> DateTime<chrono_tz::Tz> {
        self.utc.with_timezone(&Rome)
    }

    /// The calendar day in Italy (expiry dates are Italian days).
    pub fn date(&self) -> chrono::NaiveDate {
        self.local().date_naive()
    }

    /// `dd/mm/yyyy` (daticert `<giorno>`, body texts).
    pub fn giorno(&self) -> String {
        self.local().format("%d/%m/%Y").to_string()
    }

    /// `hh:mm:ss` in local legal time (daticert `<ora>`, body texts).
    pub fn ora(&self) -> String {
        self.local().format("%H:%M:%S").to_string()
    }

    /// Offset of legal time from UTC as `+hhmm`: `+0100` in winter, `+0200` in
    /// summer (daticert `zona`; the body texts print it in parentheses).
    pub fn zona(&self) -> String {
        let secs = self.local().offset().fix().local_minus_utc();
        let sign = if secs < 0 { '-' } else { '+' };
        let m = secs.abs() / 60;
        format!("{sign}{:02}{:02}", m / 60, m % 60)
    }

    /// RFC 5322 `Date:` value in legal time, e.g. `Tue, 13 Nov 2018 16:39:26 +0100`.
    pub fn rfc5322(&self) -> String {
        self.local().format("%a, %-d %b %Y %H:%M:%S %z").to_string()
    }

    /// `yyyymmddHHMMSS` in legal time, used inside generated identifiers.
    pub fn compact(&self) -> String {
        self.local().format("%Y%m%d%H%M%S").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> LegalTime {
        LegalTime::new(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    #[test]
    fn winter_time_is_plus_one() {
        let t = at("2018-11-13T15:39:26Z");
        assert_eq!(t.giorno(), "13/11/2018");
        assert_eq!(t.ora(), "16:39:26");
        assert_eq!(t.zona(), "+0100");
        assert_eq!(t.rfc5322(), "Tue, 13 Nov 2018 16:39:26 +0100");
    }

    #[test]
    fn summer_time_is_plus_two() {
        let t = at("2026-07-01T10:00:00Z");
        assert_eq!(t.ora(), "12:00:00");
        assert_eq!(t.zona(), "+0200");
    }

    #[test]
    fn dst_switch_boundaries() {
        // 2026-03-29 01:00 UTC: clocks go 02:00 → 03:00 in Rome.
        assert_eq!(at("2026-03-29T00:59:59Z").zona(), "+0100");
        assert_eq!(at("2026-03-29T00:59:59Z").ora(), "01:59:59");
        assert_eq!(at("2026-03-29T01:00:00Z").zona(), "+0200");
        assert_eq!(at("2026-03-29T01:00:00Z").ora(), "03:00:00");
        // 2026-10-25 01:00 UTC: clocks go 03:00 → 02:00.
        assert_eq!(at("2026-10-25T00:59:59Z").zona(), "+0200");
        assert_eq!(at("2026-10-25T01:00:00Z").zona(), "+0100");
        assert_eq!(at("2026-10-25T01:00:00Z").ora(), "02:00:00");
    }

    #[test]
    fn subseconds_are_dropped() {
        let a = at("2026-07-01T10:00:00.999Z");
        assert_eq!(a, at("2026-07-01T10:00:00Z"));
    }
}
