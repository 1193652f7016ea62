//! Web sessions and login throttling, in memory.
//!
//! Owns: session ids (256-bit random, rotated at login against fixation),
//! their CSRF tokens, idle and absolute expiry, the few things a flow
//! keeps between two pages (a bulk file under review, a credentials file
//! to download, a TOTP secret being enrolled), and the failed-login
//! counters. A restart logs everybody out: nothing here needs to be
//! durable. Pre-login (anonymous) sessions are not kept at all: their id
//! carries its time and a MAC under a per-process key, and their CSRF
//! token is derived from it, so no number of login-page visits can fill
//! the table or push out the session of someone filling in the form.
//! Must not touch: the store, HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle sessions end after this.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// Every session ends after this, active or not.
const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Live (logged-in) sessions at most: memory stays bounded (only a valid
/// login makes one).
const MAX_SESSIONS: usize = 50_000;
/// Sessions one user (an order, a holder, the national administrator) may
/// hold in a full table: beyond them, a new login ends the stalest session
/// of whoever holds the most, so one set of credentials cannot fill the
/// table for everybody.
const MAX_PER_USER: usize = 20;
/// The prefix of a pre-login session id (`a.<unix secs>.<nonce>.<mac>`).
const ANON: &str = "a.";
/// Failed logins allowed per key within [`WINDOW`] before a lockout.
const MAX_FAILURES: usize = 5;
/// A client address (`ip:` keys) may be an office behind one NAT, or the
/// proxy when `listen.trusted_proxies` is not set: it stands more failures
/// before it is refused, so that one user's mistakes do not lock the rest.
const MAX_CLIENT_FAILURES: usize = 30;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    pub bulk: Option<Arc<BulkPending>>,
    /// The credentials file of the last bulk load, to download.
    pub credentials: Option<Arc<str>>,
    /// A TOTP secret being enrolled (confirmed with a code first).
    pub totp_secret: Option<String>,
}

/// A bulk load as its validation report showed it: the confirmation must
/// name this report (another tab may have uploaded another file since),
/// and creates exactly the addresses it listed, or nothing.
#[derive(Debug)]
pub struct BulkPending {
    /// Named by the report's confirm form.
    pub id: String,
    pub csv: String,
    /// The addresses the report said each valid row would get, in order.
    pub addresses: Vec<String>,
    /// The report listed rejected rows (only then may the operator apply
    /// the valid ones alone).
    pub rejected: bool,
}

impl BulkPending {
    pub fn new(csv: String, addresses: Vec<String>, rejected: bool) -> BulkPending {
        BulkPending {
            id: secret(),
            csv,
            addresses,
            rejected,
        }
    }
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    /// MAC key of pre-login session ids (random per process).
    anon_key: [u8; 32],
}

impl Default for Sessions {
    fn default() -> Self {
        let mut anon_key = [0u8; 32];
        // Without an RNG the key stays zero, which `mac` refuses: no
        // pre-login session at all rather than ones anybody could make.
        let _ = openssl::rand::rand_bytes(&mut anon_key);
        Sessions {
            map: Mutex::default(),
            failures: Mutex::default(),
            anon_key,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn secret() -> String {
    crate::tenants::random_secret(32)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// HMAC-SHA256 of `data` under the pre-login key, hex.
    fn mac(&self, data: &str) -> Option<String> {
        if self.anon_key == [0u8; 32] {
            return None;
        }
        let key = openssl::pkey::PKey::hmac(&self.anon_key).ok()?;
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).ok()?;
        signer.update(data.as_bytes()).ok()?;
        let tag = signer.sign_to_vec().ok()?;
        Some(crate::audit::hex(&tag))
    }

    /// A new pre-login session id (nothing is stored).
    pub fn anonymous(&self) -> Option<String> {
        let nonce = secret();
        if nonce.is_empty() {
            return None;
        }
        let body = format!("{ANON}{}.{nonce}", unix_now());
        let mac = self.mac(&body)?;
        Some(format!("{body}.{mac}"))
    }

    /// The pre-login session `sid` is, if its MAC holds and it is not
    /// older than [`IDLE`]; its CSRF token derived from it.
    fn anonymous_session(&self, sid: &str) -> Option<Session> {
        let (body, mac) = sid.rsplit_once('.')?;
        let expected = self.mac(body)?;
        if mac.len() != expected.len() || !openssl::memcmp::eq(mac.as_bytes(), expected.as_bytes())
        {
            return None;
        }
        let ts: u64 = body.strip_prefix(ANON)?.split('.').next()?.parse().ok()?;
        // Not older than IDLE, and not from the future (a clock stepped
        // back must not make ids last longer).
        let now = unix_now();
        if now.saturating_sub(ts) > IDLE.as_secs() || ts > now + 60 {
            return None;
        }
        let now = Instant::now();
        Some(Session {
            who: Who::Anonymous,
            csrf: self.mac(&format!("csrf|{sid}"))?,
            created: now,
            seen: now,
            bulk: None,
            credentials: None,
            totp_secret: None,
        })
    }

    /// The live session `sid`, touched.
    pub fn get(&self, sid: &str) -> Option<Session> {
        if sid.starts_with(ANON) {
            return self.anonymous_session(sid);
        }
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

    /// A new session for `who` (anonymous: see [`Sessions::anonymous`]);
    /// its id. None when the table is full of live sessions.
    pub fn start(&self, who: Who) -> Option<String> {
        if who == Who::Anonymous {
            return self.anonymous();
        }
        let mut map = self.lock();
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| {
                now.duration_since(s.seen) <= IDLE && now.duration_since(s.created) <= ABSOLUTE
            });
        }
        if map.len() >= MAX_SESSIONS {
            // Full of live sessions (rare: one pass over them is fine).
            let mut held: HashMap<&Who, (usize, &String, Instant)> = HashMap::new();
            for (k, s) in map.iter() {
                let e = held.entry(&s.who).or_insert((0, k, s.seen));
                e.0 += 1;
                if s.seen < e.2 {
                    (e.1, e.2) = (k, s.seen);
                }
            }
            let greediest = held
                .values()
                .max_by_key(|(n, _, _)| *n)
                .filter(|(n, _, _)| *n > MAX_PER_USER)
                .map(|(_, k, _)| (*k).clone());
            match greediest {
                Some(k) => {
                    map.remove(&k);
                }
                None => return None,
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
                bulk: None,
                credentials: None,
                totp_secret: None,
            },
        );
        Some(sid)
    }

    /// Change a session; the change is activity too (a bulk load that
    /// took long ends with its credentials in a session still alive).
    pub fn update(&self, sid: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().get_mut(sid) {
            f(s);
            s.seen = Instant::now();
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
        s.end(&b);
        assert!(s.get(&b).is_none());
        let b = s.start(order("x")).unwrap();
        let pending = Arc::new(BulkPending::new("csv".into(), Vec::new(), false));
        s.update(&b, |x| x.bulk = Some(pending));
        assert_eq!(s.get(&b).unwrap().bulk.unwrap().csv, "csv");
        assert!(s.get("forged").is_none());
    }

    #[test]
    fn pre_login_sessions_take_no_room_and_cannot_be_forged() {
        let s = Sessions::default();
        let first = s.start(Who::Anonymous).unwrap();
        let csrf = s.get(&first).unwrap().csrf;
        let user = s.start(order("o")).unwrap();
        // A flood of login-page visits stores nothing: the first visitor's
        // form still posts.
        for _ in 0..100_000 {
            s.start(Who::Anonymous).unwrap();
        }
        assert_eq!(s.lock().len(), 1);
        assert_eq!(s.get(&first).unwrap().csrf, csrf);
        assert!(s.get(&user).is_some());
        // Another process's (or a made-up) id is nobody's; so is one
        // whose time was moved on.
        let other = Sessions::default().start(Who::Anonymous).unwrap();
        assert!(s.get(&other).is_none());
        let (body, mac) = first.rsplit_once('.').unwrap();
        let ts: u64 = body[2..].split('.').next().unwrap().parse().unwrap();
        let later = body.replacen(&ts.to_string(), &(ts + 1).to_string(), 1);
        assert!(s.get(&format!("{later}.{mac}")).is_none());
        // Older than the idle limit: expired; from the future (a clock
        // stepped back): refused too.
        for ts in [unix_now() - IDLE.as_secs() - 5, unix_now() + 3600] {
            let body = format!("{ANON}{ts}.n");
            let id = format!("{body}.{}", s.mac(&body).unwrap());
            assert!(s.get(&id).is_none(), "{ts}");
        }
        // Two visitors get different tokens.
        let second = s.start(Who::Anonymous).unwrap();
        assert_ne!(s.get(&second).unwrap().csrf, csrf);
    }

    #[test]
    fn one_user_cannot_fill_the_table_for_everybody() {
        let s = Sessions::default();
        let other = s.start(order("p")).unwrap();
        let first = s.start(order("o")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        while s.lock().len() < MAX_SESSIONS {
            s.start(order("o")).unwrap();
        }
        let late = s.start(order("q")).expect("room is made");
        assert!(s.get(&first).is_none(), "the flooder's stalest went");
        assert!(s.get(&other).is_some() && s.get(&late).is_some());
        assert_eq!(s.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn a_full_table_refuses_new_sessions_and_keeps_the_live_ones() {
        let s = Sessions::default();
        let user = s.start(order("o")).unwrap();
        let mut n = 0;
        while s.lock().len() < MAX_SESSIONS {
            s.start(order(&format!("p{n}"))).unwrap();
            n += 1;
        }
        assert!(s.start(order("q")).is_none());
        assert!(s.get(&user).is_some());
        assert!(
            s.start(Who::Anonymous).is_some(),
            "the login page still works"
        );
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
