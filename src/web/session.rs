//! Web sessions and login throttling, in memory.
//!
//! Owns: session ids (256-bit random, rotated at login against fixation),
//! their CSRF tokens, idle and absolute expiry, the few things a flow
//! keeps between two pages (a bulk file under review, a credentials file
//! to download, a TOTP secret being enrolled), and the failed-login
//! counters. A restart logs everybody out: nothing here needs to be
//! durable. Must not touch: the store, HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle sessions end after this.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// Every session ends after this, active or not.
const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Beyond this many live sessions a new one takes the place of the stalest
/// anonymous (pre-login) one: a flood of login-page visits cannot grow
/// memory without bound.
const MAX_SESSIONS: usize = 50_000;
/// Failed logins allowed per key within [`WINDOW`] before a lockout.
const MAX_FAILURES: usize = 5;
/// A client address (`ip:` keys) may be an office behind one NAT, or the
/// proxy when `listen.trusted_proxies` is not set: it stands more failures
/// before it is refused, so that one user's mistakes do not lock the rest.
const MAX_CLIENT_FAILURES: usize = 30;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Not logged in yet (carries the login form's CSRF token).
    Anonymous,
    /// An order's operator: the order's id, and the stamp of the panel
    /// credentials the session began with (a password set anew ends it).
    Order { tenant: String, stamp: String },
    /// A mailbox holder: the address, and the password hash the session
    /// began with (a password changed elsewhere, e.g. reset by the order
    /// after a theft, ends the session).
    Holder {
        address: String,
        password_hash: String,
    },
    /// The provider's national administrator.
    National,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub who: Who,
    pub csrf: String,
    created: Instant,
    seen: Instant,
    /// A bulk-load file shown in its validation report, awaiting confirm.
    /// (Shared, not copied: every request clones its session, and a roll
    /// can be megabytes.)
    pub bulk_csv: Option<Arc<str>>,
    /// The credentials file of the last bulk load, to download.
    pub credentials: Option<Arc<str>>,
    /// A TOTP secret being enrolled (confirmed with a code first).
    pub totp_secret: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

fn secret() -> String {
    crate::tenants::random_secret(32)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session `sid`, touched.
    pub fn get(&self, sid: &str) -> Option<Session> {
        let mut map = self.lock();
        let now = Instant::now();
        let s = map.get_mut(sid)?;
        if now.duration_since(s.seen) > IDLE || now.duration_since(s.created) > ABSOLUTE {
            map.remove(sid);
            return None;
        }
        s.seen = now;
        Some(s.clone())
    }

    /// A new session for `who`; its id. None when the table is full of
    /// logged-in sessions and `who` is anonymous.
    pub fn start(&self, who: Who) -> Option<String> {
        let mut map = self.lock();
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| {
                now.duration_since(s.seen) <= IDLE && now.duration_since(s.created) <= ABSOLUTE
            });
        }
        if map.len() >= MAX_SESSIONS {
            // Full of live sessions: the anonymous one seen longest ago
            // makes room, so a flood of login-page visits pushes out its
            // own sessions, never a logged-in one, and never shuts the
            // login page for everyone else.
            let oldest = map
                .iter()
                .filter(|(_, s)| s.who == Who::Anonymous)
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None if who == Who::Anonymous => return None,
                None => {}
            }
        }
        let sid = secret();
        if sid.is_empty() {
            return None;
        }
        map.insert(
            sid.clone(),
            Session {
                who,
                csrf: secret(),
                created: now,
                seen: now,
                bulk_csv: None,
                credentials: None,
                totp_secret: None,
            },
        );
        Some(sid)
    }

    pub fn update(&self, sid: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().get_mut(sid) {
            f(s);
        }
    }

    pub fn end(&self, sid: &str) {
        self.lock().remove(sid);
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long logins under any of `keys` (e.g. the user and the client
    /// address) stay refused; none: allowed.
    pub fn locked_out(&self, keys: &[String]) -> Option<Duration> {
        let mut f = self.lock_failures();
        let now = Instant::now();
        let mut wait = None;
        for k in keys {
            if let Some(times) = f.get_mut(k) {
                times.retain(|t| now.duration_since(*t) < WINDOW);
                let max = if k.starts_with("ip:") {
                    MAX_CLIENT_FAILURES
                } else {
                    MAX_FAILURES
                };
                if times.len() >= max
                    && let Some(first) = times.first()
                {
                    let w = WINDOW - now.duration_since(*first);
                    wait = Some(wait.map_or(w, |x: Duration| x.max(w)));
                }
            }
        }
        wait
    }

    pub fn failed(&self, keys: &[String]) {
        let mut f = self.lock_failures();
        let now = Instant::now();
        for k in keys {
            f.entry(k.clone()).or_default().push(now);
        }
        // Old keys go, so the map stays as small as the current attack.
        if f.len() > MAX_SESSIONS {
            f.retain(|_, t| t.last().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
    }

    pub fn succeeded(&self, user_key: &str) {
        self.lock_failures().remove(user_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(tenant: &str) -> Who {
        Who::Order {
            tenant: tenant.into(),
            stamp: "s".into(),
        }
    }

    #[test]
    fn sessions_start_rotate_and_end() {
        let s = Sessions::default();
        let a = s.start(Who::Anonymous).unwrap();
        let got = s.get(&a).unwrap();
        assert_eq!(got.who, Who::Anonymous);
        assert_eq!(got.csrf.len(), 64);
        let b = s.start(order("x")).unwrap();
        assert_ne!(a, b);
        s.end(&a);
        assert!(s.get(&a).is_none());
        s.update(&b, |x| x.bulk_csv = Some("csv".into()));
        assert_eq!(s.get(&b).unwrap().bulk_csv.as_deref(), Some("csv"));
        assert!(s.get("forged").is_none());
    }

    #[test]
    fn a_full_table_evicts_the_stalest_anonymous_session() {
        let s = Sessions::default();
        let first = s.start(Who::Anonymous).unwrap();
        let user = s.start(order("o")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        while s.lock().len() < MAX_SESSIONS {
            s.start(Who::Anonymous).unwrap();
        }
        let next = s.start(Who::Anonymous).expect("room is made");
        assert!(s.get(&first).is_none(), "the stalest anonymous went");
        assert!(s.get(&user).is_some() && s.get(&next).is_some());
        assert_eq!(s.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn five_failures_lock_the_key_out_and_success_clears_the_user() {
        let s = Sessions::default();
        let keys = ["user:o".to_string(), "ip:1".to_string()];
        for _ in 0..4 {
            s.failed(&keys);
        }
        assert!(s.locked_out(&keys).is_none());
        s.failed(&keys);
        let wait = s.locked_out(&keys).unwrap();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(60));
        // Another user from the same client is not: a client address (an
        // office, a proxy) stands more failures…
        let other = ["user:p".to_string(), "ip:1".to_string()];
        assert!(s.locked_out(&other).is_none());
        s.succeeded("user:o");
        assert!(s.locked_out(&["user:o".into()]).is_none());
        // …up to its own limit.
        for i in 5..MAX_CLIENT_FAILURES {
            s.failed(&[format!("user:u{i}"), "ip:1".into()]);
        }
        assert!(s.locked_out(&other).is_some());
        assert!(s.locked_out(&["user:q".into(), "ip:2".into()]).is_none());
    }
}
