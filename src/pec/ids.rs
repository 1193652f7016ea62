//! PEC message identifiers (RT §2.2: `[alphanumeric string]@[provider domain]`).
//!
//! Owns: the shape of every Message-ID pecd generates. Must not touch: I/O.
//! Uniqueness comes from three parts: the legal timestamp, a per-process
//! random node value (restarts and parallel daemons differ), and a counter.

use crate::clock::LegalTime;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Generates `pecd.<yyyymmddHHMMSS>.<node>.<n>@<domain>` identifiers.
#[derive(Debug)]
pub struct IdGenerator {
    node: u64,
    counter: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    /// A generator with a random node value (std's per-process random hasher
    /// keys mixed with the process id and the start time).
    pub fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        Self::with_node(h.finish())
    }

    /// A generator with a chosen node value (tests, several workers).
    pub fn with_node(node: u64) -> Self {
        IdGenerator {
            node,
            counter: AtomicU64::new(1),
        }
    }

    /// A new identifier, without angle brackets.
    pub fn next(&self, at: LegalTime, domain: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("pecd.{}.{:016x}.{n}@{domain}", at.compact(), self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::collections::HashSet;

    #[test]
    fn identifiers_are_unique_and_well_formed() {
        let at = LegalTime::new(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap());
        let a = IdGenerator::new();
        let b = IdGenerator::new();
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.next(at, "pec.provider-a.test")));
            assert!(seen.insert(b.next(at, "pec.provider-a.test")));
        }
        let id = a.next(at, "pec.provider-a.test");
        assert!(id.starts_with("pecd.20261123110000."));
        assert!(id.ends_with("@pec.provider-a.test"));
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".@-".contains(&c))
        );
    }
}
