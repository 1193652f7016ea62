//! Mailbox accounts: address, argon2 password hash, state.
//!
//! Owns: the account record and its encoding in the store, password hashing
//! and checking, and the account operations the CLI and the admin API use.
//! Must not touch: the storage engine (through [`Store`] only), Maildirs.
//! Every change is written to the legal log in the same batch.

use crate::audit::{Event, LogRecord};
use crate::store::{Batch, Store, StoreError, Table};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Mailbox state. Transitions are the explicit table of
/// [`AccountState::can_become`]; each one is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountState {
    /// Created, waiting for the holder's first access (receives mail).
    PendingActivation,
    Active,
    /// Past expiry, in grace: receive-only.
    Expired,
    /// Receives nothing: deliveries get *mancata consegna* 5.2.1.
    #[serde(alias = "disabled")]
    Suspended,
    /// Closed for good (struck off, death, request); receives nothing.
    Cancelled,
}

impl AccountState {
    /// Whether a mailbox in this state may submit mail.
    pub fn can_send(self) -> bool {
        self == AccountState::Active
    }

    /// Whether deliveries to it are stored.
    pub fn can_receive(self) -> bool {
        matches!(
            self,
            AccountState::Active | AccountState::Expired | AccountState::PendingActivation
        )
    }

    /// The state machine: which transitions exist.
    pub fn can_become(self, to: AccountState) -> bool {
        use AccountState::*;
        matches!(
            (self, to),
            (PendingActivation, Active)
                | (PendingActivation, Suspended)
                | (PendingActivation, Cancelled)
                | (Active, Expired)
                | (Active, Suspended)
                | (Active, Cancelled)
                | (Expired, Active)
                | (Expired, Suspended)
                | (Expired, Cancelled)
                | (Suspended, Active)
                // Blocked for a missing first access, unblocked by the order.
                | (Suspended, PendingActivation)
                | (Suspended, Cancelled)
        )
    }
}

/// The holder's anagrafica, as the orders' model has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Holder {
    pub nome: String,
    pub cognome: String,
    pub codice_fiscale: String,
    pub indirizzo: String,
    pub comune: String,
    pub provincia: String,
    pub cap: String,
    /// Ordinary (non-PEC) address for warnings and reminders.
    pub reference_email: String,
    pub telefono: String,
    pub fax: String,
}

/// One mailbox account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub address: String,
    /// PHC string (`$argon2id$…`).
    pub password_hash: String,
    pub state: AccountState,
    pub created: DateTime<Utc>,
    /// Plan name (see `config.plans`); empty: the first plan.
    #[serde(default)]
    pub plan: String,
    /// Inbox add-on steps bought.
    #[serde(default)]
    pub addons: u32,
    #[serde(default)]
    pub holder: Holder,
    /// Highest inbox-usage warning sent since usage was last below 70 %
    /// (0, 70 or 90): each crossing is warned once.
    #[serde(default)]
    pub quota_warned: u8,
    /// The order (tenant) the mailbox belongs to; empty: none.
    #[serde(default)]
    pub tenant: String,
    /// Last day of service; none: no expiry.
    #[serde(default)]
    pub expires: Option<chrono::NaiveDate>,
    /// Reminders already sent, `<expiry date>/<days>` (once each, across
    /// restarts).
    #[serde(default)]
    pub reminders: Vec<String>,
    /// When the state last changed.
    #[serde(default)]
    pub state_since: Option<DateTime<Utc>>,
    /// Why the state last changed (cancellation reason, block, …).
    #[serde(default)]
    pub state_reason: String,
    /// The archive-full warning went out (reset when copies fit again).
    #[serde(default)]
    pub archive_full_warned: bool,
    /// When that warning last went out.
    #[serde(default)]
    pub archive_warned_at: Option<DateTime<Utc>>,
}

/// Errors of account operations, each with a message for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0:?} is not a valid mailbox address")]
    BadAddress(String),
    #[error("mailbox {0} already exists")]
    Exists(String),
    #[error("mailbox {0} does not exist")]
    NotFound(String),
    #[error("the password must be at least 8 characters")]
    WeakPassword,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt account record for {0}")]
    Corrupt(String),
}

/// Normalise an address: trimmed, domain lower-cased (local parts of PEC
/// mailboxes are lower case in practice, and lookups must not depend on case).
pub fn normalize(address: &str) -> Result<String, AccountError> {
    let a = address.trim().to_lowercase();
    match a.rsplit_once('@') {
        Some((l, d)) if !l.is_empty() && d.contains('.') && !a.contains(char::is_whitespace) => {
            Ok(a)
        }
        _ => Err(AccountError::BadAddress(address.into())),
    }
}

/// Most argon2 computations seen running at once (for the tests).
static ARGON2_PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` with an argon2 hasher, at most one per core at a time. Each
/// computation holds argon2's default 19 MiB of memory: twenty clients
/// authenticating at once (a pool of submission sessions opening together,
/// or an AUTH flood) would otherwise cost 400 MB, and more computations
/// than cores finish no sooner.
fn with_argon2<T>(f: impl FnOnce(&Argon2<'static>) -> T) -> T {
    use std::sync::{Condvar, Mutex, OnceLock};
    static GATE: OnceLock<(Mutex<usize>, Condvar, usize)> = OnceLock::new();
    let (busy, freed, max) = GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (Mutex::new(0), Condvar::new(), cores)
    });
    {
        let mut n = busy.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= *max {
            n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        ARGON2_PEAK.fetch_max(*n, std::sync::atomic::Ordering::Relaxed);
    }
    // Released even if `f` panics.
    struct Release<'a>(&'a Mutex<usize>, &'a Condvar);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            self.1.notify_one();
        }
    }
    let _release = Release(busy, freed);
    f(&Argon2::default())
}

/// argon2id hash of a password with a random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < 8 {
        return Err(AccountError::WeakPassword);
    }
    let salt = new_salt()?;
    with_argon2(|a| {
        a.hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .map_err(|e| AccountError::Hash(e.to_string()))
}

/// A fresh random salt for a hash.
fn new_salt() -> Result<SaltString, AccountError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))
}

/// The memory cost (KiB) of [`hash_random_secret`]'s light hash.
const LIGHT_MEMORY_KIB: u32 = 1024;

/// Whether `hash` is a [`hash_random_secret`] hash (its parameters travel
/// in the PHC string).
fn is_light_hash(hash: &str) -> bool {
    hash.contains(&format!("m={LIGHT_MEMORY_KIB},"))
}

/// A real hash of a random password, made once: a login for an account
/// that does not exist is checked against it, so the time of the answer
/// does not tell which accounts exist.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let mut b = [0u8; 24];
        let _ = openssl::rand::rand_bytes(&mut b);
        let random: String = b.iter().map(|x| format!("{x:02x}")).collect();
        hash_password(&random).unwrap_or_default()
    })
}

/// The hash of a secret we drew at random (a first-access password, about
/// 69 bits: [`crate::tenants::one_time_password`]). Guessing it is out of
/// reach at any hashing cost, so a light one (1 MiB, one pass; the
/// parameters travel in the PHC string, which [`check_password`] reads)
/// lets an order's roll of 100,000 members be created in minutes, not the
/// hours argon2's default would take. Passwords people choose keep the
/// default ([`hash_password`]).
pub fn hash_random_secret(secret: &str) -> Result<String, AccountError> {
    use argon2::{Algorithm, Params, Version};
    if secret.chars().count() < 12 {
        return Err(AccountError::WeakPassword);
    }
    let fail = |e: String| AccountError::Hash(e);
    let salt = new_salt()?;
    let params = Params::new(LIGHT_MEMORY_KIB, 1, 1, None).map_err(|e| fail(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| fail(e.to_string()))
}

/// Constant-time check of a password against a stored hash.
pub fn check_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| with_argon2(|a| a.verify_password(password.as_bytes(), &h).is_ok()))
        .unwrap_or(false)
}

fn log(batch: &mut Batch, now: DateTime<Utc>, address: &str, what: &str) {
    let mut r = LogRecord::new(now, Event::Mailbox);
    r.recipients = vec![address.to_string()];
    r.detail = Some(what.to_string());
    r.append_to(batch);
}

pub fn get(store: &Store, address: &str) -> Result<Option<Account>, AccountError> {
    let a = normalize(address)?;
    match store.get(Table::Mailboxes, a.as_bytes())? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|_| AccountError::Corrupt(a)),
    }
}

pub fn add(
    store: &Store,
    address: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<Account, AccountError> {
    let a = normalize(address)?;
    let password_hash = hash_password(password)?;
    with_creation_lock(|| add_locked(store, a, password_hash, now))
}

fn add_locked(
    store: &Store,
    a: String,
    password_hash: String,
    now: DateTime<Utc>,
) -> Result<Account, AccountError> {
    if get(store, &a)?.is_some() {
        return Err(AccountError::Exists(a));
    }
    let acc = Account {
        address: a.clone(),
        password_hash,
        state: AccountState::Active,
        created: now,
        plan: String::new(),
        addons: 0,
        holder: Holder::default(),
        quota_warned: 0,
        tenant: String::new(),
        expires: None,
        reminders: Vec::new(),
        state_since: Some(now),
        state_reason: String::new(),
        archive_full_warned: false,
        archive_warned_at: None,
    };
    let mut b = Batch::new();
    b.put(
        Table::Mailboxes,
        a.as_bytes().to_vec(),
        serde_json::to_vec(&acc).unwrap_or_default(),
    );
    log(&mut b, now, &a, "mailbox created");
    store.commit(b)?;
    Ok(acc)
}

pub fn set_password(
    store: &Store,
    address: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<(), AccountError> {
    let mut acc = get(store, address)?.ok_or_else(|| AccountError::NotFound(address.into()))?;
    acc.password_hash = hash_password(password)?;
    let mut b = Batch::new();
    b.put(
        Table::Mailboxes,
        acc.address.as_bytes().to_vec(),
        serde_json::to_vec(&acc).unwrap_or_default(),
    );
    log(&mut b, now, &acc.address, "password changed");
    store.commit(b)?;
    Ok(())
}

pub fn list(store: &Store) -> Result<Vec<Account>, AccountError> {
    store
        .entries(Table::Mailboxes)
        .map(|e| {
            let (k, v) = e?;
            serde_json::from_slice(&v)
                .map_err(|_| AccountError::Corrupt(String::from_utf8_lossy(&k).into()))
        })
        .collect()
}

/// Authenticate for submission: Some(account) when the password matches
/// an account allowed to send.
pub fn authenticate(
    store: &Store,
    address: &str,
    password: &str,
) -> Result<Option<Account>, AccountError> {
    // One hash computed whatever the account (unknown, blocked, or not
    // allowed to send): the answer's time must not say which addresses
    // exist.
    let acc = get(store, address)?;
    let stored = acc.as_ref().map(|a| a.password_hash.as_str());
    let good = match stored.filter(|h| !h.is_empty()) {
        // A first-access password's light hash (see `hash_random_secret`)
        // is checked with the full cost's worth of work too: a pending
        // mailbox answers no faster than an unknown address.
        Some(h) if is_light_hash(h) => {
            let _ = check_password(dummy_hash(), password);
            check_password(h, password)
        }
        Some(h) => check_password(h, password),
        None => {
            // The work, not the answer: nobody's password opens nothing.
            let _ = check_password(dummy_hash(), password);
            false
        }
    };
    Ok(acc.filter(|a| good && a.state.can_send()))
}

/// Run `f` holding the lock of `address`: every read-modify-write of an
/// account record in this process (deliveries, the admin API, the sweep)
/// takes it, so no change is lost to a concurrent one. The store itself is
/// one process's (an embedded engine), so a process-wide lock suffices.
pub fn with_lock<T>(address: &str, f: impl FnOnce() -> T) -> T {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let lock = {
        let mut map = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            // Forget idle locks (held by no one but the map).
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(address.trim().to_lowercase())
            .or_default()
            .clone()
    };
    let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// The lock every creation of an account holds while it checks that the
/// address is free and commits (a national `mailbox add`, an order's
/// members, an order's own mailbox): one check-then-create at a time, so
/// two cannot both find an address free. Creations are rare; one lock is
/// simpler than ordering thousands of per-address ones.
pub fn with_creation_lock<T>(f: impl FnOnce() -> T) -> T {
    // No address contains a NUL: this key is no account's.
    with_lock("\0create", f)
}

/// [`with_lock`] of every address in `addresses` (sorted and without
/// repeats: the caller's order is the locking order).
pub fn with_locks<T>(addresses: &[&str], f: impl FnOnce() -> T) -> T {
    match addresses.split_first() {
        None => f(),
        Some((first, rest)) => with_lock(first, || with_locks(rest, f)),
    }
}

/// Change an account with `f` and log `what`, in one commit.
pub fn update(
    store: &Store,
    address: &str,
    now: DateTime<Utc>,
    what: &str,
    f: impl FnOnce(&mut Account) -> Result<(), AccountError>,
) -> Result<Account, AccountError> {
    with_lock(address, || {
        let mut acc = get(store, address)?.ok_or_else(|| AccountError::NotFound(address.into()))?;
        f(&mut acc)?;
        let mut b = Batch::new();
        put(&mut b, &acc);
        log(&mut b, now, &acc.address, what);
        store.commit(b)?;
        Ok(acc)
    })
}

/// Put an account record into a batch (the caller logs the change).
pub fn put(batch: &mut Batch, acc: &Account) {
    batch.put(
        Table::Mailboxes,
        acc.address.as_bytes().to_vec(),
        serde_json::to_vec(acc).unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_runs_at_most_once_per_core() {
        let hash = hash_password("correct horse").unwrap();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads: Vec<_> = (0..cores * 3)
            .map(|_| {
                let hash = hash.clone();
                std::thread::spawn(move || check_password(&hash, "correct horse"))
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        let peak = ARGON2_PEAK.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=cores).contains(&peak),
            "peak {peak} with {cores} cores"
        );
    }

    #[test]
    fn random_secrets_get_a_light_hash_that_still_checks() {
        let secret = crate::tenants::one_time_password();
        let light = hash_random_secret(&secret).unwrap();
        assert!(light.contains("m=1024,t=1,p=1"), "{light}");
        assert!(check_password(&light, &secret));
        assert!(!check_password(&light, "not the secret"));
        // Only for what is long enough to be a drawn secret.
        assert!(hash_random_secret("short-pw").is_err());
        assert!(!hash_password("correct horse").unwrap().contains("m=1024,"));
    }

    #[test]
    fn account_lifecycle_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "redb").unwrap();
        let now = Utc::now();
        add(
            &store,
            "Mario.Rossi@PEC.provider-a.test",
            "correct horse",
            now,
        )
        .unwrap();
        assert!(matches!(
            add(&store, "mario.rossi@pec.provider-a.test", "x2345678", now),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            add(&store, "luca@pec.provider-a.test", "short", now),
            Err(AccountError::WeakPassword)
        ));
        assert!(matches!(
            add(&store, "not an address", "x2345678", now),
            Err(AccountError::BadAddress(_))
        ));
        assert!(
            authenticate(&store, "mario.rossi@pec.provider-a.test", "correct horse")
                .unwrap()
                .is_some()
        );
        assert!(
            authenticate(&store, "mario.rossi@pec.provider-a.test", "wrong horse")
                .unwrap()
                .is_none()
        );
        set_password(
            &store,
            "mario.rossi@pec.provider-a.test",
            "battery staple",
            now,
        )
        .unwrap();
        assert!(
            authenticate(&store, "mario.rossi@pec.provider-a.test", "correct horse")
                .unwrap()
                .is_none()
        );
        assert!(
            authenticate(&store, "mario.rossi@pec.provider-a.test", "battery staple")
                .unwrap()
                .is_some()
        );
        assert_eq!(list(&store).unwrap().len(), 1);
        crate::tenants::remove_mailbox(&store, "mario.rossi@pec.provider-a.test", "test", now)
            .unwrap();
        assert!(list(&store).unwrap().is_empty());
        let log = crate::audit::search(&store, &crate::audit::Filter::default()).unwrap();
        assert_eq!(log.len(), 3);
        assert!(log.iter().all(|(_, r)| r.event == Event::Mailbox));
        // The hash never contains the password.
        assert!(!hash_password("correct horse").unwrap().contains("correct"));
    }
}
