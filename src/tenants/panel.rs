//! The orders' panel credentials (password + optional TOTP) and the
//! anomaly reports an order files on a wrong assignment for the national
//! administrator to resolve.
//!
//! Owns: the `panel/<tenant>` and `anomaly/<id>` records of the tenants
//! table. The password hash never leaves this module (the tenant record the
//! API lists carries none). Must not touch: HTTP, sessions, throttling
//! (see `web`).

use super::{TenantError, get, log, member, one_time_password, random_secret};
use crate::accounts;
use crate::store::{Batch, Store, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PanelCredentials {
    password_hash: String,
    /// Base32 TOTP secret; empty: no second factor.
    #[serde(default)]
    totp_secret: String,
    /// The time step of the last code accepted at login: a code is good
    /// once (RFC 6238 §5.2), so one seen over a shoulder cannot be replayed.
    #[serde(default)]
    totp_last_step: i64,
}

/// Every read-modify-write of an order's panel credentials (login, password,
/// TOTP) holds this lock, so none undoes another.
fn with_panel_lock<T>(tenant: &str, f: impl FnOnce() -> T) -> T {
    accounts::with_lock(&format!("panel/{tenant}"), f)
}

fn panel_key(tenant: &str) -> Vec<u8> {
    format!("panel/{tenant}").into_bytes()
}

fn credentials(store: &Store, tenant: &str) -> Result<Option<PanelCredentials>, TenantError> {
    Ok(store
        .get(Table::Tenants, &panel_key(tenant))?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

fn put_credentials(b: &mut Batch, tenant: &str, c: &PanelCredentials) {
    b.put(
        Table::Tenants,
        panel_key(tenant),
        serde_json::to_vec(c).unwrap_or_default(),
    );
}

/// Into `b`: a new panel password for `tenant` (random when `password` is
/// none), keeping its TOTP secret unless `without_second_factor`. Returns
/// the password (shown once).
pub(super) fn new_password_into(
    b: &mut Batch,
    store: &Store,
    tenant: &str,
    password: Option<&str>,
    without_second_factor: bool,
) -> Result<String, TenantError> {
    let password = password.map_or_else(one_time_password, str::to_string);
    let mut c = credentials(store, tenant)?.unwrap_or_default();
    c.password_hash = accounts::hash_password(&password)?;
    if without_second_factor {
        c.totp_secret.clear();
        c.totp_last_step = 0;
    }
    put_credentials(b, tenant, &c);
    Ok(password)
}

/// Set the order's panel password (a random one when `password` is none);
/// the password is returned, to be shown once. Every panel session that
/// began with the old password ends (see [`session_stamp`]).
/// `without_second_factor`: also turn the TOTP off, the national
/// administrator's way back in for an order that lost its authenticator
/// (the order enrols a new one after logging in).
pub fn set_password(
    store: &Store,
    tenant: &str,
    password: Option<&str>,
    without_second_factor: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, TenantError> {
    if get(store, tenant)?.is_none() {
        return Err(TenantError::NotFound(format!("order {tenant}")));
    }
    with_panel_lock(tenant, || {
        let mut b = Batch::new();
        let pw = new_password_into(&mut b, store, tenant, password, without_second_factor)?;
        let mut what = format!("panel password of order {tenant} set");
        if without_second_factor {
            what.push_str(", second factor (TOTP) turned off");
        }
        log(&mut b, now, actor, None, what);
        store.commit(b)?;
        Ok(pw)
    })
}

/// What a panel session of `tenant` must still match to go on: it changes
/// whenever the panel password is set, so a password reset (after a theft,
/// say) ends every session begun with the old one. Opaque to the caller.
pub fn session_stamp(store: &Store, tenant: &str) -> Option<String> {
    credentials(store, tenant)
        .ok()
        .flatten()
        .map(|c| c.password_hash)
}

/// Why a panel login failed (the panel shows one message for all but the
/// missing second factor, so it tells nothing about which part was wrong).
#[derive(Debug, PartialEq, Eq)]
pub enum LoginFailure {
    Wrong,
    CodeNeeded,
}

/// Check an order's panel login. `code`: the TOTP code, when given.
/// Returns the [`session_stamp`] the new session begins with.
pub fn check_login(
    store: &Store,
    tenant: &str,
    password: &str,
    code: Option<&str>,
    now: DateTime<Utc>,
) -> Result<String, LoginFailure> {
    let Ok(Some(c)) = credentials(store, tenant) else {
        // Same cost as a real check: no timing hint that the order exists.
        let _ = accounts::check_password(accounts::dummy_hash(), password);
        return Err(LoginFailure::Wrong);
    };
    if !accounts::check_password(&c.password_hash, password) {
        return Err(LoginFailure::Wrong);
    }
    if c.totp_secret.is_empty() {
        return Ok(c.password_hash);
    }
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(LoginFailure::CodeNeeded);
    };
    let checked = c.password_hash;
    // Under the order's lock: two logins with the same code cannot both
    // find it unused.
    with_panel_lock(tenant, || {
        let Ok(Some(mut c)) = credentials(store, tenant) else {
            return Err(LoginFailure::Wrong);
        };
        // The password may have been set anew since it was checked above.
        if c.password_hash != checked || !use_code(&mut c, code, now) {
            return Err(LoginFailure::Wrong);
        }
        let mut b = Batch::new();
        put_credentials(&mut b, tenant, &c);
        store.commit(b).map_err(|_| LoginFailure::Wrong)?;
        Ok(checked)
    })
}

/// Whether `code` is a current code of the order's TOTP secret not used
/// before (RFC 6238 §5.2: a code is good once, so one seen over a shoulder
/// cannot be replayed); if so it is marked used in `c`.
fn use_code(c: &mut PanelCredentials, code: &str, now: DateTime<Utc>) -> bool {
    match crate::totp::matched_step(&c.totp_secret, code.trim(), now.timestamp()) {
        Some(step) if step > c.totp_last_step => {
            c.totp_last_step = step;
            true
        }
        _ => false,
    }
}

/// Whether the order's panel asks for a TOTP code.
pub fn has_totp(store: &Store, tenant: &str) -> Result<bool, TenantError> {
    Ok(credentials(store, tenant)?.is_some_and(|c| !c.totp_secret.is_empty()))
}

/// A change of an order's second factor, each proved by a code.
#[derive(Debug, Clone, Copy)]
pub enum TotpChange<'a> {
    /// On with `secret`: `code` proves the authenticator holds it.
    Enable { secret: &'a str, code: &'a str },
    /// Off: `code`, a current code of the secret in use, proves the one
    /// turning it off holds the authenticator (a session left open on a
    /// shared computer must not be enough to strip the second factor).
    Disable { code: &'a str },
}

/// Turn the order's second factor on or off.
pub fn set_totp(
    store: &Store,
    tenant: &str,
    change: TotpChange<'_>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), TenantError> {
    with_panel_lock(tenant, || {
        set_totp_locked(store, tenant, change, actor, now)
    })
}

fn set_totp_locked(
    store: &Store,
    tenant: &str,
    change: TotpChange<'_>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), TenantError> {
    let mut c = credentials(store, tenant)?
        .ok_or_else(|| TenantError::NotFound(format!("panel credentials of order {tenant}")))?;
    let what = match change {
        TotpChange::Enable { secret, code } => {
            // A session left open must not replace the authenticator any
            // more than remove it: a new one takes turning the old one off
            // first, with a code from it.
            if !c.totp_secret.is_empty() {
                return Err(TenantError::invalid(
                    "codice",
                    "a second factor is already on: turn it off first with a current code",
                ));
            }
            if !crate::totp::check(secret, code, now.timestamp()) {
                return Err(TenantError::invalid(
                    "codice",
                    "the code does not match the secret",
                ));
            }
            c.totp_secret = secret.to_string();
            "enabled"
        }
        TotpChange::Disable { code } => {
            if !c.totp_secret.is_empty() && !use_code(&mut c, code, now) {
                return Err(TenantError::invalid(
                    "codice",
                    "not a current code of the authenticator",
                ));
            }
            c.totp_secret.clear();
            "disabled"
        }
    };
    // A new secret (or none) starts its own sequence of steps.
    c.totp_last_step = 0;
    let mut b = Batch::new();
    put_credentials(&mut b, tenant, &c);
    log(
        &mut b,
        now,
        actor,
        None,
        format!("panel second factor (TOTP) of order {tenant} {what}"),
    );
    store.commit(b)?;
    Ok(())
}

// --------------------------------------------------------------------------
// Anomaly reports

/// An order's report of a wrong assignment (a mailbox that is not its
/// member's), for the national administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub id: String,
    pub tenant: String,
    pub address: String,
    pub note: String,
    pub reported_by: String,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub resolution: Option<Resolution>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub by: String,
    pub time: DateTime<Utc>,
    pub note: String,
}

fn anomaly_key(id: &str) -> Vec<u8> {
    format!("anomaly/{id}").into_bytes()
}

/// File a report on one of the order's mailboxes.
pub fn report_anomaly(
    store: &Store,
    tenant: &str,
    address: &str,
    note: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Anomaly, TenantError> {
    member(store, tenant, address)?;
    let note = note.trim();
    if note.is_empty() {
        return Err(TenantError::invalid("note", "say what is wrong"));
    }
    let a = Anomaly {
        // Time first: the list reads in filing order.
        id: format!("{}-{}", now.format("%Y%m%d%H%M%S%6f"), random_secret(3)),
        tenant: tenant.to_string(),
        address: address.to_string(),
        note: note.to_string(),
        reported_by: actor.to_string(),
        time: now,
        resolution: None,
    };
    let mut b = Batch::new();
    b.put(
        Table::Tenants,
        anomaly_key(&a.id),
        serde_json::to_vec(&a).unwrap_or_default(),
    );
    log(
        &mut b,
        now,
        actor,
        Some(address),
        format!("anomaly {} reported: {note}", a.id),
    );
    store.commit(b)?;
    Ok(a)
}

/// Every report (only `tenant`'s when given), oldest first.
pub fn anomalies(store: &Store, tenant: Option<&str>) -> Result<Vec<Anomaly>, TenantError> {
    Ok(store
        .scan_prefix(Table::Tenants, b"anomaly/", usize::MAX)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<Anomaly>(&v).ok())
        .filter(|a| tenant.is_none_or(|t| t == a.tenant))
        .collect())
}

/// Close a report with what was done.
pub fn resolve_anomaly(
    store: &Store,
    id: &str,
    note: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Anomaly, TenantError> {
    let mut a: Anomaly = store
        .get(Table::Tenants, &anomaly_key(id))?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(|| TenantError::NotFound(format!("anomaly {id}")))?;
    if a.resolution.is_some() {
        return Err(TenantError::Conflict(format!(
            "anomaly {id} is already resolved"
        )));
    }
    let note = note.trim();
    if note.is_empty() {
        return Err(TenantError::invalid("note", "say how it was resolved"));
    }
    a.resolution = Some(Resolution {
        by: actor.to_string(),
        time: now,
        note: note.to_string(),
    });
    let mut b = Batch::new();
    b.put(
        Table::Tenants,
        anomaly_key(id),
        serde_json::to_vec(&a).unwrap_or_default(),
    );
    log(
        &mut b,
        now,
        actor,
        Some(&a.address),
        format!("anomaly {id} resolved: {note}"),
    );
    store.commit(b)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn code(secret: &str, t: DateTime<Utc>) -> String {
        crate::totp::current(secret, t.timestamp()).unwrap()
    }

    fn order_with_totp() -> (tempfile::TempDir, Store, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "redb").unwrap();
        let mut b = Batch::new();
        new_password_into(&mut b, &store, "o", Some("segreto-lungo"), false).unwrap();
        store.commit(b).unwrap();
        let secret = crate::totp::new_secret();
        let enable = TotpChange::Enable {
            secret: &secret,
            code: &code(&secret, at(0)),
        };
        set_totp(&store, "o", enable, "test", at(0)).unwrap();
        (dir, store, secret)
    }

    #[test]
    fn a_totp_code_is_good_once() {
        let (_dir, store, secret) = order_with_totp();
        let code = |t| code(&secret, t);
        let login = |c: Option<&str>, t| check_login(&store, "o", "segreto-lungo", c, t).is_ok();
        assert_eq!(
            check_login(&store, "o", "segreto-lungo", None, at(0)),
            Err(LoginFailure::CodeNeeded)
        );
        // Each code works once (the enrolment proved the secret, and does
        // not spend its code: the operator logs in with it right after).
        assert!(login(Some(&code(at(0))), at(1)));
        assert!(!login(Some(&code(at(0))), at(2)));
        assert!(login(Some(&code(at(30))), at(30)));
        assert!(!login(Some(&code(at(30))), at(31)));
        assert!(login(Some(&code(at(60))), at(60)));
    }

    #[test]
    fn the_second_factor_goes_off_only_with_a_code() {
        let (_dir, store, secret) = order_with_totp();
        let off = |c: &str, t| set_totp(&store, "o", TotpChange::Disable { code: c }, "test", t);
        assert!(matches!(off("", at(5)), Err(TenantError::Invalid { .. })));
        assert!(matches!(
            off("123456", at(5)),
            Err(TenantError::Invalid { .. })
        ));
        assert!(has_totp(&store, "o").unwrap());
        // A code already spent on a login is not good either.
        let spent = code(&secret, at(30));
        check_login(&store, "o", "segreto-lungo", Some(&spent), at(30)).unwrap();
        assert!(off(&spent, at(31)).is_err());
        // Nor is it replaced: a new authenticator proven with its own code
        // does not take the old one's place.
        let other = crate::totp::new_secret();
        let replace = TotpChange::Enable {
            secret: &other,
            code: &code(&other, at(40)),
        };
        assert!(set_totp(&store, "o", replace, "test", at(40)).is_err());
        off(&code(&secret, at(60)), at(60)).unwrap();
        assert!(!has_totp(&store, "o").unwrap());
        assert!(check_login(&store, "o", "segreto-lungo", None, at(61)).is_ok());
    }

    /// The order record `set_password` wants to find.
    fn tenant_record(store: &Store) {
        let t = crate::tenants::Tenant {
            id: "o".into(),
            name: "Ordine".into(),
            domain: "pec.example.test".into(),
            provincia: "LO".into(),
            activation: Default::default(),
            secretariat_email: String::new(),
            created: at(0),
        };
        let mut b = Batch::new();
        b.put(
            Table::Tenants,
            crate::tenants::tenant_key("o"),
            serde_json::to_vec(&t).unwrap(),
        );
        store.commit(b).unwrap();
    }

    #[test]
    fn a_new_password_ends_the_old_sessions_and_may_clear_the_second_factor() {
        let (_dir, store, secret) = order_with_totp();
        tenant_record(&store);
        let stamp = check_login(
            &store,
            "o",
            "segreto-lungo",
            Some(&code(&secret, at(0))),
            at(1),
        )
        .unwrap();
        assert_eq!(session_stamp(&store, "o").as_ref(), Some(&stamp));
        set_password(&store, "o", Some("un-altro-segreto"), false, "admin", at(2)).unwrap();
        assert_ne!(session_stamp(&store, "o").as_ref(), Some(&stamp));
        // The second factor stayed...
        assert_eq!(
            check_login(&store, "o", "un-altro-segreto", None, at(3)),
            Err(LoginFailure::CodeNeeded)
        );
        // ...until the national administrator's reset clears it.
        set_password(&store, "o", Some("terzo-segreto"), true, "admin", at(4)).unwrap();
        assert!(!has_totp(&store, "o").unwrap());
        let stamp = check_login(&store, "o", "terzo-segreto", None, at(5)).unwrap();
        assert_eq!(session_stamp(&store, "o"), Some(stamp));
    }
}
