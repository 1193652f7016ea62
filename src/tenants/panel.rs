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
/// none), keeping its TOTP secret. Returns the password (shown once).
pub(super) fn new_password_into(
    b: &mut Batch,
    store: &Store,
    tenant: &str,
    password: Option<&str>,
) -> Result<String, TenantError> {
    let password = password.map_or_else(one_time_password, str::to_string);
    let mut c = credentials(store, tenant)?.unwrap_or_default();
    c.password_hash = accounts::hash_password(&password)?;
    put_credentials(b, tenant, &c);
    Ok(password)
}

/// Set the order's panel password (a random one when `password` is none);
/// the password is returned, to be shown once.
pub fn set_password(
    store: &Store,
    tenant: &str,
    password: Option<&str>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, TenantError> {
    if get(store, tenant)?.is_none() {
        return Err(TenantError::NotFound(format!("order {tenant}")));
    }
    with_panel_lock(tenant, || {
        let mut b = Batch::new();
        let pw = new_password_into(&mut b, store, tenant, password)?;
        log(
            &mut b,
            now,
            actor,
            None,
            format!("panel password of order {tenant} set"),
        );
        store.commit(b)?;
        Ok(pw)
    })
}

/// Why a panel login failed (the panel shows one message for all but the
/// missing second factor, so it tells nothing about which part was wrong).
#[derive(Debug, PartialEq, Eq)]
pub enum LoginFailure {
    Wrong,
    CodeNeeded,
}

/// Check an order's panel login. `code`: the TOTP code, when given.
pub fn check_login(
    store: &Store,
    tenant: &str,
    password: &str,
    code: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), LoginFailure> {
    let Ok(Some(c)) = credentials(store, tenant) else {
        // Same cost as a real check: no timing hint that the order exists.
        let _ = accounts::check_password(accounts::dummy_hash(), password);
        return Err(LoginFailure::Wrong);
    };
    if !accounts::check_password(&c.password_hash, password) {
        return Err(LoginFailure::Wrong);
    }
    if c.totp_secret.is_empty() {
        return Ok(());
    }
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(LoginFailure::CodeNeeded);
    };
    // Under the order's lock: two logins with the same code cannot both
    // find it unused.
    with_panel_lock(tenant, || {
        let Ok(Some(mut c)) = credentials(store, tenant) else {
            return Err(LoginFailure::Wrong);
        };
        match crate::totp::matched_step(&c.totp_secret, code, now.timestamp()) {
            Some(step) if step > c.totp_last_step => {
                c.totp_last_step = step;
                let mut b = Batch::new();
                put_credentials(&mut b, tenant, &c);
                store.commit(b).map_err(|_| LoginFailure::Wrong)?;
                Ok(())
            }
            _ => Err(LoginFailure::Wrong),
        }
    })
}

/// Whether the order's panel asks for a TOTP code.
pub fn has_totp(store: &Store, tenant: &str) -> Result<bool, TenantError> {
    Ok(credentials(store, tenant)?.is_some_and(|c| !c.totp_secret.is_empty()))
}

/// Turn the second factor on (after the operator proved, with `code`, that
/// the authenticator holds `secret`) or off (`secret` none).
pub fn set_totp(
    store: &Store,
    tenant: &str,
    secret: Option<(&str, &str)>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), TenantError> {
    with_panel_lock(tenant, || {
        set_totp_locked(store, tenant, secret, actor, now)
    })
}

fn set_totp_locked(
    store: &Store,
    tenant: &str,
    secret: Option<(&str, &str)>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), TenantError> {
    let mut c = credentials(store, tenant)?
        .ok_or_else(|| TenantError::NotFound(format!("panel credentials of order {tenant}")))?;
    // A new secret (or none) starts its own sequence of steps.
    c.totp_last_step = 0;
    let what = match secret {
        Some((secret, code)) => {
            if !crate::totp::check(secret, code, now.timestamp()) {
                return Err(TenantError::invalid(
                    "codice",
                    "the code does not match the secret",
                ));
            }
            c.totp_secret = secret.to_string();
            "enabled"
        }
        None => {
            c.totp_secret.clear();
            "disabled"
        }
    };
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

    #[test]
    fn a_totp_code_is_good_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "redb").unwrap();
        let mut b = Batch::new();
        new_password_into(&mut b, &store, "o", Some("segreto-lungo")).unwrap();
        store.commit(b).unwrap();
        let secret = crate::totp::new_secret();
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let code = |t: DateTime<Utc>| crate::totp::current(&secret, t.timestamp()).unwrap();
        let login = |c: Option<&str>, t| check_login(&store, "o", "segreto-lungo", c, t);
        set_totp(&store, "o", Some((&secret, &code(at(0)))), "test", at(0)).unwrap();
        assert_eq!(login(None, at(0)), Err(LoginFailure::CodeNeeded));
        // Each code works once (the enrolment proved the secret, and does
        // not spend its code: the operator logs in with it right after).
        assert_eq!(login(Some(&code(at(0))), at(1)), Ok(()));
        assert_eq!(login(Some(&code(at(0))), at(2)), Err(LoginFailure::Wrong));
        assert_eq!(login(Some(&code(at(30))), at(30)), Ok(()));
        assert_eq!(login(Some(&code(at(30))), at(31)), Err(LoginFailure::Wrong));
        assert_eq!(login(Some(&code(at(60))), at(60)), Ok(()));
    }
}
