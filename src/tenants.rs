//! Tenants — the professional orders (*Ordini*) — and the mailboxes of
//! their members: creation from the anagrafica, search, edits, password
//! resets, cancellation, transfer, bulk load, registry exports.
//!
//! Owns: tenant records, their API tokens (SHA-256 at rest: the tokens are
//! 256-bit random values, so a slow hash adds nothing), the per-tenant and
//! per-codice-fiscale indexes, tombstones of deleted addresses, and the
//! typed errors with the stable codes the admin API returns.
//! Must not touch: the engine (through [`Store`]), HTTP (see `admin`).
//! Every change is written to the legal log in the same commit.

use crate::accounts::{self, Account, AccountState, Holder};
use crate::audit::{Event, LogRecord};
use crate::config::Config;
use crate::membership::{naming, tax_code};
use crate::store::{Batch, Store, StoreError, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// How new mailboxes of a tenant start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Immediate,
    /// Pending until the holder's first access (confirm data, accept the
    /// contract), within `lifecycle.first_access_days`.
    FirstAccess,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// e.g. `ordine-ingegneri-lodi`
    pub id: String,
    pub name: String,
    /// The PEC domain of its members' mailboxes.
    pub domain: String,
    /// Province (sigla or name) of the order's own mailbox.
    pub provincia: String,
    #[serde(default)]
    pub activation: Activation,
    /// Its secretariat's address: the reference e-mail of members who have
    /// none.
    #[serde(default)]
    pub secretariat_email: String,
    pub created: DateTime<Utc>,
}

/// Errors with a stable code and, when one field is at fault, its name.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Account(#[from] accounts::AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TenantError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        TenantError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable code of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            TenantError::Invalid { .. } => "invalid",
            TenantError::Exists(_) => "exists",
            TenantError::NotFound(_) => "not_found",
            TenantError::Forbidden(_) => "forbidden",
            TenantError::Conflict(_) => "conflict",
            TenantError::Account(accounts::AccountError::NotFound(_)) => "not_found",
            TenantError::Account(accounts::AccountError::Exists(_)) => "exists",
            TenantError::Account(
                accounts::AccountError::BadAddress(_) | accounts::AccountError::WeakPassword,
            ) => "invalid",
            TenantError::Account(_) | TenantError::Store(_) => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            TenantError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

mod panel;
mod selfcare;
pub use panel::{
    Anomaly, LoginFailure, Resolution, TotpChange, anomalies, check_login, has_totp,
    report_anomaly, resolve_anomaly, session_stamp as panel_session_stamp,
    set_password as set_panel_password, set_totp,
};
pub use selfcare::{change_password, change_reference_email, first_access};

fn log(b: &mut Batch, now: DateTime<Utc>, actor: &str, address: Option<&str>, what: String) {
    let mut r = LogRecord::new(now, Event::Mailbox);
    r.sender = Some(actor.to_string());
    r.recipients = address.into_iter().map(str::to_string).collect();
    r.detail = Some(what);
    r.append_to(b);
}

fn tenant_key(id: &str) -> Vec<u8> {
    format!("tenant/{id}").into_bytes()
}

fn member_key(tenant: &str, address: &str) -> Vec<u8> {
    format!("member/{tenant}/{address}").into_bytes()
}

fn cf_key(cf: &str, address: &str) -> Vec<u8> {
    format!("cf/{cf}/{address}").into_bytes()
}

fn tombstone_key(address: &str) -> Vec<u8> {
    format!("tombstone/{address}").into_bytes()
}

fn token_key(token: &str) -> Vec<u8> {
    let h: String = openssl::sha::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("token/{h}").into_bytes()
}

/// Store a changed account and log `what`, in one commit.
fn save(
    store: &Store,
    acc: &Account,
    actor: &str,
    now: DateTime<Utc>,
    what: String,
) -> Result<(), TenantError> {
    save_in(store, Batch::new(), acc, actor, now, what)
}

/// [`save`], closing the holder's open requests (see [`close_requests`]):
/// a plan set fulfils them, a cancellation makes them moot.
fn save_closing_requests(
    store: &Store,
    acc: &Account,
    actor: &str,
    now: DateTime<Utc>,
    what: String,
) -> Result<(), TenantError> {
    let mut b = Batch::new();
    close_requests(store, &mut b, &acc.tenant, &acc.address)?;
    save_in(store, b, acc, actor, now, what)
}

/// [`save`] with `b`'s other changes in the same commit.
fn save_in(
    store: &Store,
    mut b: Batch,
    acc: &Account,
    actor: &str,
    now: DateTime<Utc>,
    what: String,
) -> Result<(), TenantError> {
    accounts::put(&mut b, acc);
    log(&mut b, now, actor, Some(&acc.address), what);
    store.commit(b)?;
    Ok(())
}

/// A fresh random secret, hex.
pub fn random_secret(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // rand_bytes fails only when OpenSSL's RNG cannot seed: then nothing
    // secret can be made, and an empty secret is refused by every check.
    if openssl::rand::rand_bytes(&mut b).is_err() {
        return String::new();
    }
    crate::audit::hex(&b)
}

/// A one-time password the holder changes at first access: 12 characters
/// from an alphabet without look-alikes.
pub fn one_time_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 12];
    // No random source, no password: an empty one is refused when hashed.
    if openssl::rand::rand_bytes(&mut b).is_err() {
        return String::new();
    }
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn get(store: &Store, id: &str) -> Result<Option<Tenant>, TenantError> {
    Ok(store
        .get(Table::Tenants, &tenant_key(id))?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

pub fn list(store: &Store) -> Result<Vec<Tenant>, TenantError> {
    let mut out = Vec::new();
    for (_, v) in store.scan_prefix(Table::Tenants, b"tenant/", usize::MAX)? {
        if let Ok(t) = serde_json::from_slice(&v) {
            out.push(t);
        }
    }
    Ok(out)
}

/// A new order: its first API token, its panel password and its own
/// mailbox (all shown once).
#[derive(Debug, Clone, Serialize)]
pub struct NewOrder {
    pub token: String,
    /// The web panel's password (the login is the order's id).
    pub panel_password: String,
    pub order_mailbox: Created,
}

/// Create an order and its own mailbox `ordine.<provincia>@<domain>`
/// (the order's, not a member's: not in the member list nor the
/// registry feed).
pub fn create(store: &Store, t: &Tenant, now: DateTime<Utc>) -> Result<NewOrder, TenantError> {
    let id_ok = !t.id.is_empty()
        && t.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(TenantError::invalid(
            "id",
            "lower-case letters, digits and hyphens only",
        ));
    }
    let order_address = naming::order_address(&t.provincia, &t.domain)
        .map_err(|e| TenantError::invalid("provincia", e.to_string()))?;
    accounts::with_creation_lock(|| create_locked(store, t, &order_address, now))
}

fn create_locked(
    store: &Store,
    t: &Tenant,
    order_address: &str,
    now: DateTime<Utc>,
) -> Result<NewOrder, TenantError> {
    let order_address = order_address.to_string();
    if get(store, &t.id)?.is_some() {
        return Err(TenantError::Exists(format!("tenant {}", t.id)));
    }
    if accounts::get(store, &order_address)?.is_some() {
        return Err(TenantError::Exists(format!("mailbox {order_address}")));
    }
    let token = random_secret(32);
    let password = one_time_password();
    let order_box = Account {
        address: order_address.clone(),
        password_hash: accounts::hash_password(&password)?,
        state: AccountState::Active,
        created: now,
        plan: String::new(),
        addons: 0,
        holder: Holder {
            nome: "Ordine".into(),
            cognome: t.name.clone(),
            reference_email: t.secretariat_email.clone(),
            ..Default::default()
        },
        quota_warned: 0,
        tenant: t.id.clone(),
        expires: None,
        reminders: Vec::new(),
        state_since: Some(now),
        state_reason: "the order's own mailbox".into(),
        archive_full_warned: false,
        archive_warned_at: None,
    };
    let mut b = Batch::new();
    accounts::put(&mut b, &order_box);
    b.put(
        Table::Tenants,
        tenant_key(&t.id),
        serde_json::to_vec(t).unwrap_or_default(),
    );
    b.put(Table::Tenants, token_key(&token), t.id.as_bytes().to_vec());
    let panel_password = panel::new_password_into(&mut b, store, &t.id, None, false)?;
    log(
        &mut b,
        now,
        "admin",
        Some(&order_address),
        format!("tenant {} created with its mailbox {order_address}", t.id),
    );
    store.commit(b)?;
    Ok(NewOrder {
        token,
        panel_password,
        order_mailbox: Created {
            address: order_address,
            password,
            state: AccountState::Active,
        },
    })
}

/// The tenant a token belongs to.
pub fn tenant_for_token(store: &Store, token: &str) -> Result<Option<String>, TenantError> {
    if token.is_empty() {
        return Ok(None);
    }
    Ok(store
        .get(Table::Tenants, &token_key(token))?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// A new API token for order `tenant` (shown once), every earlier one
/// revoked in the same commit: a token that leaked stops working at once.
pub fn rotate_token(
    store: &Store,
    tenant: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, TenantError> {
    if get(store, tenant)?.is_none() {
        return Err(TenantError::NotFound(format!("order {tenant}")));
    }
    let token = random_secret(32);
    if token.is_empty() {
        return Err(TenantError::Conflict("no random source for a token".into()));
    }
    // Two rotations at once must not both survive.
    accounts::with_lock(&format!("token/{tenant}"), || {
        rotate_token_locked(store, tenant, &token, actor, now)
    })?;
    Ok(token)
}

fn rotate_token_locked(
    store: &Store,
    tenant: &str,
    token: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), TenantError> {
    let mut b = Batch::new();
    let mut revoked = 0;
    for (k, v) in store.scan_prefix(Table::Tenants, b"token/", usize::MAX)? {
        if v == tenant.as_bytes() {
            b.delete(Table::Tenants, k);
            revoked += 1;
        }
    }
    b.put(Table::Tenants, token_key(token), tenant.as_bytes().to_vec());
    log(
        &mut b,
        now,
        actor,
        None,
        format!("API token of order {tenant} replaced ({revoked} revoked)"),
    );
    store.commit(b)?;
    Ok(())
}

/// Log an administrative action that changes no record (a panel login,
/// a download of the credentials file, …).
pub fn log_action(
    store: &Store,
    now: DateTime<Utc>,
    actor: &str,
    address: Option<&str>,
    what: &str,
) -> Result<(), TenantError> {
    let mut b = Batch::new();
    log(&mut b, now, actor, address, what.to_string());
    store.commit(b)?;
    Ok(())
}

/// Log a denied cross-tenant attempt.
pub fn log_denied(store: &Store, now: DateTime<Utc>, actor: &str, what: &str) {
    let mut b = Batch::new();
    log(&mut b, now, actor, None, format!("denied: {what}"));
    let _ = store.commit(b);
}

/// The member data an order supplies (the columns of its anagrafica model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewMember {
    #[serde(flatten)]
    pub holder: Holder,
    /// Homonym alias (`nome.cognome.<alias>`); absent: the next number.
    pub alias: Option<String>,
    /// Plan name; absent: the first plan.
    pub plan: Option<String>,
}

/// Check the anagrafica: required fields, codice fiscale, CAP, province.
/// Errors name the field.
pub fn validate(h: &Holder) -> Result<(), TenantError> {
    let required = [
        ("nome", &h.nome),
        ("cognome", &h.cognome),
        ("codice_fiscale", &h.codice_fiscale),
        ("indirizzo", &h.indirizzo),
        ("comune", &h.comune),
        ("provincia", &h.provincia),
        ("cap", &h.cap),
    ];
    for (field, v) in required {
        if v.trim().is_empty() {
            return Err(TenantError::invalid(field, "missing"));
        }
    }
    tax_code::parse(&h.codice_fiscale)
        .map_err(|e| TenantError::invalid("codice_fiscale", e.to_string()))?;
    if h.cap.len() != 5 || !h.cap.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TenantError::invalid("cap", "five digits"));
    }
    if !crate::membership::province::is_sigla(&h.provincia) {
        return Err(TenantError::invalid(
            "provincia",
            format!("{:?} is not a province sigla (e.g. LO, MI)", h.provincia),
        ));
    }
    let email = h.reference_email.trim();
    if !email.is_empty() && accounts::normalize(email).is_err() {
        return Err(TenantError::invalid(
            "reference_email",
            "not an e-mail address",
        ));
    }
    Ok(())
}

fn normalized(mut h: Holder) -> Holder {
    h.codice_fiscale = h.codice_fiscale.trim().to_ascii_uppercase();
    h.provincia = h.provincia.trim().to_ascii_uppercase();
    h.nome = h.nome.trim().to_string();
    h.cognome = h.cognome.trim().to_string();
    h.reference_email = h.reference_email.trim().to_string();
    h
}

/// Whether an address is free for a member with codice fiscale `cf`: not
/// an existing mailbox, and not a deleted one of someone else.
fn free_for(store: &Store, address: &str, cf: &str) -> Result<bool, TenantError> {
    if accounts::get(store, address)?.is_some() {
        return Ok(false);
    }
    Ok(match store.get(Table::Tenants, &tombstone_key(address))? {
        None => true,
        Some(v) => v == cf.as_bytes(),
    })
}

/// The order's mailbox (not cancelled) of the holder with codice fiscale
/// `cf`, if there is one.
fn mailbox_of(store: &Store, tenant: &str, cf: &str) -> Result<Option<String>, TenantError> {
    let prefix = format!("cf/{cf}/");
    for (k, _) in store.scan_prefix(Table::Tenants, prefix.as_bytes(), usize::MAX)? {
        let address = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        if let Some(acc) = accounts::get(store, &address)?
            && acc.tenant == tenant
            && acc.state != AccountState::Cancelled
        {
            return Ok(Some(address));
        }
    }
    Ok(None)
}

/// A created mailbox and its one-time password.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub address: String,
    pub password: String,
    pub state: AccountState,
}

/// Build (without committing) a member's mailbox into `b`. `reserved`:
/// addresses already taken by earlier rows of the same batch. `hash`:
/// make the one-time password (false for a preview: argon2 is slow).
fn prepare_member(
    store: &Store,
    config: &Config,
    tenant: &Tenant,
    m: &NewMember,
    reserved: &HashSet<String>,
    now: DateTime<Utc>,
    hash: bool,
) -> Result<(Account, String), TenantError> {
    validate(&m.holder)?;
    let mut holder = normalized(m.holder.clone());
    if let Some(existing) = mailbox_of(store, &tenant.id, &holder.codice_fiscale)? {
        // One PEC domicile per professional and order: a roll loaded twice
        // must not give every member a second, numbered mailbox.
        return Err(TenantError::invalid(
            "codice_fiscale",
            format!("already has the mailbox {existing}"),
        ));
    }
    if let Some(p) = &m.plan
        && config.plan(p).is_none()
    {
        return Err(TenantError::invalid("plan", format!("{p:?} is not a plan")));
    }
    let address = derive_address(
        store,
        tenant,
        &holder.nome,
        &holder.cognome,
        &holder.codice_fiscale,
        m.alias.as_deref(),
        reserved,
    )?;
    if holder.reference_email.is_empty() {
        holder.reference_email = tenant.secretariat_email.clone();
    }
    let (password, password_hash) = if hash {
        let p = one_time_password();
        let h = accounts::hash_random_secret(&p)?;
        (p, h)
    } else {
        (String::new(), String::new())
    };
    let today = crate::clock::LegalTime::new(now).date();
    let acc = Account {
        address: address.clone(),
        password_hash,
        state: match tenant.activation {
            Activation::Immediate => AccountState::Active,
            Activation::FirstAccess => AccountState::PendingActivation,
        },
        created: now,
        plan: m.plan.clone().unwrap_or_default(),
        addons: 0,
        holder,
        quota_warned: 0,
        tenant: tenant.id.clone(),
        expires: Some(crate::lifecycle::add_years(
            today,
            config.lifecycle.term_years,
        )),
        reminders: Vec::new(),
        state_since: Some(now),
        state_reason: "created".into(),
        archive_full_warned: false,
        archive_warned_at: None,
    };
    Ok((acc, password))
}

/// The address a new member would get (the naming rules, homonyms
/// numbered or given `alias`), without creating anything: the panel shows
/// it while the form is filled in.
pub fn suggest_address(
    store: &Store,
    tenant: &Tenant,
    nome: &str,
    cognome: &str,
    codice_fiscale: &str,
    alias: Option<&str>,
) -> Result<String, TenantError> {
    derive_address(
        store,
        tenant,
        nome,
        cognome,
        codice_fiscale,
        alias,
        &HashSet::new(),
    )
}

/// The naming rules against what is taken: existing mailboxes, other
/// people's tombstones, and `reserved` (earlier rows of the same batch).
fn derive_address(
    store: &Store,
    tenant: &Tenant,
    nome: &str,
    cognome: &str,
    codice_fiscale: &str,
    alias: Option<&str>,
    reserved: &HashSet<String>,
) -> Result<String, TenantError> {
    let cf = codice_fiscale.trim().to_ascii_uppercase();
    let taken = |a: &str| reserved.contains(a) || !free_for(store, a, &cf).unwrap_or(false);
    let alias = alias.map(str::trim).filter(|a| !a.is_empty());
    let address = naming::derive_free(nome.trim(), cognome.trim(), &tenant.domain, alias, taken)
        .map_err(|e| match e {
            naming::NamingError::Alias(_) => TenantError::invalid("alias", e.to_string()),
            naming::NamingError::Empty { field, .. } => TenantError::invalid(field, e.to_string()),
            other => TenantError::invalid("domain", other.to_string()),
        })?;
    if alias.is_some() && taken(&address) {
        return Err(TenantError::invalid(
            "alias",
            format!("{address} is already taken"),
        ));
    }
    Ok(address)
}

fn put_member(b: &mut Batch, acc: &Account) {
    accounts::put(b, acc);
    b.put(
        Table::Tenants,
        member_key(&acc.tenant, &acc.address),
        Vec::new(),
    );
    b.put(
        Table::Tenants,
        cf_key(&acc.holder.codice_fiscale, &acc.address),
        Vec::new(),
    );
}

/// Create one member's mailbox.
pub fn create_member(
    store: &Store,
    config: &Config,
    tenant: &Tenant,
    m: &NewMember,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Created, TenantError> {
    let ready = vec![prepare_member(
        store,
        config,
        tenant,
        m,
        &HashSet::new(),
        now,
        true,
    )?];
    let mut created = commit_members(store, tenant, ready, actor, now, "")?;
    created
        .pop()
        .ok_or_else(|| TenantError::Conflict("no mailbox created".into()))
}

/// Store prepared members' mailboxes in one commit, each logged; `how`
/// completes the log line (e.g. " (bulk load)").
fn commit_members(
    store: &Store,
    tenant: &Tenant,
    ready: Vec<(Account, String)>,
    actor: &str,
    now: DateTime<Utc>,
    how: &str,
) -> Result<Vec<Created>, TenantError> {
    // The rows were prepared (names derived, passwords hashed) outside any
    // lock; what they found free is checked again, and committed, under the
    // creation lock: two loads of the same roll at once (a double click, a
    // retried call) must not both take the same addresses, the second
    // silently overwriting the first's accounts.
    accounts::with_creation_lock(|| {
        let mut b = Batch::new();
        let mut created = Vec::with_capacity(ready.len());
        for (acc, password) in ready {
            if !free_for(store, &acc.address, &acc.holder.codice_fiscale)? {
                return Err(TenantError::Conflict(format!(
                    "{} was taken meanwhile; load again",
                    acc.address
                )));
            }
            if let Some(existing) = mailbox_of(store, &tenant.id, &acc.holder.codice_fiscale)? {
                return Err(TenantError::Conflict(format!(
                    "{} already has the mailbox {existing}",
                    acc.holder.codice_fiscale
                )));
            }
            put_member(&mut b, &acc);
            log(
                &mut b,
                now,
                actor,
                Some(&acc.address),
                format!("mailbox created for order {}{how}", tenant.id),
            );
            created.push(Created {
                address: acc.address,
                password,
                state: acc.state,
            });
        }
        store.commit(b)?;
        Ok(created)
    })
}

/// A member's mailbox, only if it belongs to `tenant`.
pub fn member(store: &Store, tenant: &str, address: &str) -> Result<Account, TenantError> {
    match accounts::get(store, address)? {
        // A member has its entry in the order's list; the order's own
        // institutional mailbox (same tenant, no entry) is the national
        // administrator's to manage: an order's panel must not cancel,
        // transfer or reset it.
        Some(a)
            if a.tenant == tenant
                && store
                    .get(Table::Tenants, &member_key(tenant, &a.address))?
                    .is_some() =>
        {
            Ok(a)
        }
        _ => Err(TenantError::NotFound(format!("mailbox {address}"))),
    }
}

/// The tenant's mailboxes, optionally filtered by a text found in the
/// address, name or codice fiscale (case-insensitive).
pub fn members(store: &Store, tenant: &str, q: Option<&str>) -> Result<Vec<Account>, TenantError> {
    let prefix = format!("member/{tenant}/");
    let q = q.map(str::to_lowercase);
    let mut out = Vec::new();
    for (k, _) in store.scan_prefix(Table::Tenants, prefix.as_bytes(), usize::MAX)? {
        let address = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        // The account is the authority: an index entry left behind (a
        // mailbox moved to another order) shows nothing.
        let Some(a) = accounts::get(store, &address)?.filter(|a| a.tenant == tenant) else {
            continue;
        };
        let hit = q.as_deref().is_none_or(|q| {
            a.address.contains(q)
                || format!("{} {}", a.holder.nome, a.holder.cognome)
                    .to_lowercase()
                    .contains(q)
                || a.holder.codice_fiscale.to_lowercase().contains(q)
        });
        if hit {
            out.push(a);
        }
    }
    Ok(out)
}

/// Edit the anagrafica: the fields present in `changes` replace the
/// current ones (an empty string clears an optional field); name, surname
/// and codice fiscale are immutable.
pub fn edit_member(
    store: &Store,
    tenant: &str,
    address: &str,
    changes: &serde_json::Map<String, serde_json::Value>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    accounts::with_lock(address, || {
        let mut acc = member(store, tenant, address)?;
        let mut merged = serde_json::to_value(&acc.holder)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        for (k, v) in changes {
            if !merged.contains_key(k) {
                return Err(TenantError::invalid(
                    k.clone(),
                    "not a field of the anagrafica",
                ));
            }
            if !v.is_string() {
                return Err(TenantError::invalid(k.clone(), "must be a string"));
            }
            let immutable = ["nome", "cognome", "codice_fiscale"].contains(&k.as_str());
            let same =
                merged.get(k).and_then(|x| x.as_str()).map(str::trim) == v.as_str().map(str::trim);
            if immutable && !same {
                return Err(TenantError::invalid(k.clone(), "cannot be changed"));
            }
            merged.insert(k.clone(), v.clone());
        }
        let merged: Holder = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| TenantError::invalid("(body)", e.to_string()))?;
        let merged = normalized(merged);
        validate(&merged)?;
        acc.holder = merged;
        save(store, &acc, actor, now, "anagrafica edited".into())?;
        Ok(acc)
    })
}

/// Reset a member's password: a new one-time password.
pub fn reset_password(
    store: &Store,
    tenant: &str,
    address: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<String, TenantError> {
    accounts::with_lock(address, || {
        let mut acc = member(store, tenant, address)?;
        let password = one_time_password();
        acc.password_hash = accounts::hash_password(&password)?;
        save(store, &acc, actor, now, "password reset".into())?;
        Ok(password)
    })
}

/// How long a password-reset link stays valid.
pub const RESET_VALIDITY: chrono::Duration = chrono::Duration::hours(24);

fn reset_key(token: &str) -> Vec<u8> {
    let h: String = openssl::sha::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("reset/{h}").into_bytes()
}

#[derive(Serialize, Deserialize)]
struct ResetGrant {
    address: String,
    expires: DateTime<Utc>,
    /// The account as it was when the link was sent (see [`grant_stamp`]).
    #[serde(default)]
    stamp: String,
}

/// What a reset link was issued against: the password, where the link
/// went and whose member the mailbox was. A change of any (a new password
/// set, a new reference address, a transfer, a newer link) and the link
/// is dead: the old secretariat cannot take over a mailbox that left it.
fn grant_stamp(acc: &Account, issued: DateTime<Utc>) -> String {
    let mut h = openssl::sha::Sha256::new();
    for part in [
        acc.password_hash.as_str(),
        acc.holder.reference_email.as_str(),
        acc.tenant.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    h.update(issued.to_rfc3339().as_bytes());
    crate::audit::hex(&h.finish())
}

/// A reset link for the holder's reference e-mail: a one-use token (kept
/// hashed) valid for [`RESET_VALIDITY`]. Returns the token and the account.
/// Into `b`, to commit with the mail that carries the link (the log must
/// not say a link was sent, nor a token live, when the mail was not
/// queued): a reset token for `address`, and its record.
pub fn issue_reset_token(
    b: &mut Batch,
    store: &Store,
    tenant: &str,
    address: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(String, Account), TenantError> {
    let acc = member(store, tenant, address)?;
    if acc.holder.reference_email.trim().is_empty() {
        return Err(TenantError::invalid(
            "via",
            "the holder has no reference e-mail: reset with a one-time password",
        ));
    }
    let token = random_secret(32);
    let grant = ResetGrant {
        address: acc.address.clone(),
        expires: now + RESET_VALIDITY,
        stamp: grant_stamp(&acc, now),
    };
    // One live link per mailbox: the newest.
    b.put(
        Table::Tenants,
        format!("reset-issued/{}", acc.address).into_bytes(),
        now.to_rfc3339().into_bytes(),
    );
    b.put(
        Table::Tenants,
        reset_key(&token),
        serde_json::to_vec(&grant).unwrap_or_default(),
    );
    log(
        b,
        now,
        actor,
        Some(address),
        format!("password reset link sent to {}", acc.holder.reference_email),
    );
    Ok((token, acc))
}

/// Use a reset token: sets the new password, and the token is spent.
pub fn redeem_reset_token(
    store: &Store,
    token: &str,
    new_password: &str,
    now: DateTime<Utc>,
) -> Result<String, TenantError> {
    let expired = || TenantError::invalid("token", "unknown, used or expired reset token");
    let grant: ResetGrant = store
        .get(Table::Tenants, &reset_key(token))?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(expired)?;
    if grant.expires < now {
        return Err(expired());
    }
    let hash = accounts::hash_password(new_password)
        .map_err(|e| TenantError::invalid("new_password", e.to_string()))?;
    accounts::with_lock(&grant.address, || {
        let mut acc = accounts::get(store, &grant.address)?.ok_or_else(expired)?;
        // Checked and spent under the mailbox's lock: two redeems of one
        // link cannot both succeed.
        if store.get(Table::Tenants, &reset_key(token))?.is_none() {
            return Err(expired());
        }
        if !grant.stamp.is_empty() {
            let issued = store
                .get(
                    Table::Tenants,
                    format!("reset-issued/{}", acc.address).as_bytes(),
                )?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.to_utc());
            if issued.is_none_or(|t| grant_stamp(&acc, t) != grant.stamp) {
                return Err(expired());
            }
        }
        acc.password_hash = hash;
        let mut b = Batch::new();
        accounts::put(&mut b, &acc);
        b.delete(Table::Tenants, reset_key(token));
        log(
            &mut b,
            now,
            &acc.address,
            Some(&acc.address),
            "password set with a reset link".into(),
        );
        store.commit(b)?;
        Ok(acc.address)
    })
}

/// Unblock a mailbox blocked for a missing first access: pending again,
/// with a new first-access window.
pub fn unblock(
    store: &Store,
    tenant: &str,
    address: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    accounts::with_lock(address, || {
        let mut acc = member(store, tenant, address)?;
        let blocked = acc.state == AccountState::Suspended
            && acc
                .state_reason
                .starts_with(crate::lifecycle::NO_FIRST_ACCESS);
        if !blocked || !acc.state.can_become(AccountState::PendingActivation) {
            return Err(TenantError::Conflict(
                "only a mailbox blocked for a missing first access can be unblocked".into(),
            ));
        }
        acc.state = AccountState::PendingActivation;
        acc.state_since = Some(now);
        acc.state_reason = "unblocked by the order".into();
        save(
            store,
            &acc,
            actor,
            now,
            "unblocked: first access window reopened".into(),
        )?;
        Ok(acc)
    })
}

/// Why a mailbox is cancelled (the orders' rules).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Cancellation {
    /// Struck off the roll: the mailbox stays until its expiry.
    StruckOff,
    /// Death, on the order's report: immediate.
    Death,
    /// On the holder's request: immediate only when another PEC address is
    /// recorded as the member's digital domicile.
    Request { other_pec: Option<String> },
}

/// Apply a cancellation; returns the resulting account.
pub fn cancel(
    store: &Store,
    tenant: &str,
    address: &str,
    why: &Cancellation,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    accounts::with_lock(address, || {
        let mut acc = member(store, tenant, address)?;
        if acc.state == AccountState::Cancelled {
            return Err(TenantError::Conflict(format!(
                "{} is already cancelled",
                acc.address
            )));
        }
        let (immediate, reason) = match why {
            // Kept until expiry; one whose expiry has passed already (expired,
            // suspended) has nothing left to run to: cancelled now, rather
            // than its lapse's reason overwritten and its deletion lost. One
            // never activated has no term running either: left pending, the
            // holder's first access (or the order's unblocking) would make
            // it an ordinary mailbox again.
            Cancellation::StruckOff
                if matches!(
                    acc.state,
                    AccountState::Expired
                        | AccountState::Suspended
                        | AccountState::PendingActivation
                ) =>
            {
                (
                    true,
                    format!("{}: no term left to run", crate::lifecycle::STRUCK_OFF),
                )
            }
            Cancellation::StruckOff => (
                false,
                format!("{}: kept until expiry", crate::lifecycle::STRUCK_OFF),
            ),
            Cancellation::Death => (true, "death of the holder".to_string()),
            Cancellation::Request { other_pec } => {
                let other = other_pec.as_deref().map(str::trim).unwrap_or("");
                if other.is_empty() || accounts::normalize(other).is_err() {
                    return Err(TenantError::invalid(
                        "other_pec",
                        "an immediate cancellation on request needs another PEC address as digital domicile",
                    ));
                }
                if accounts::normalize(other).ok().as_deref() == Some(acc.address.as_str()) {
                    return Err(TenantError::invalid(
                        "other_pec",
                        "must be another address than the one cancelled",
                    ));
                }
                (true, format!("on request; digital domicile {other}"))
            }
        };
        if immediate {
            if !acc.state.can_become(AccountState::Cancelled) {
                return Err(TenantError::Conflict(format!(
                    "a {:?} mailbox cannot be cancelled",
                    acc.state
                )));
            }
            acc.state = AccountState::Cancelled;
            acc.state_since = Some(now);
        }
        // Struck off: it runs to its expiry, then lapses (lifecycle::due).
        acc.state_reason = reason.clone();
        save_closing_requests(store, &acc, actor, now, format!("cancellation: {reason}"))?;
        Ok(acc)
    })
}

/// Renew a member's mailbox by `years` (1 to 10), from its expiry (see
/// [`crate::lifecycle::renew`]); checked and applied under the mailbox's
/// lock, so a transfer in between cannot make it another order's renewal.
pub fn renew(
    store: &Store,
    tenant: &str,
    address: &str,
    years: u32,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    if !(1..=10).contains(&years) {
        return Err(TenantError::invalid("years", "must be from 1 to 10"));
    }
    let today = crate::clock::LegalTime::new(now).date();
    accounts::with_lock(address, || {
        let mut acc = member(store, tenant, address)?;
        if let Some(why) = crate::lifecycle::renewal_refused(&acc, years, today) {
            return Err(TenantError::invalid("years", why));
        }
        // The state's date moves only with the state: a pending mailbox's
        // first-access window does not start again.
        if crate::lifecycle::renew(&mut acc, years, today) {
            acc.state_since = Some(now);
        }
        save(
            store,
            &acc,
            actor,
            now,
            format!("renewed for {years} year(s) by {actor}"),
        )?;
        Ok(acc)
    })
}

/// Change a member's plan and add-on steps (e.g. to fulfil a holder's
/// request), checked against the configured plans.
#[allow(clippy::too_many_arguments)]
pub fn set_plan(
    store: &Store,
    config: &Config,
    tenant: &str,
    address: &str,
    plan: &str,
    addons: u32,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    let p = config
        .plan(plan)
        .ok_or_else(|| TenantError::invalid("plan", format!("{plan:?} is not a plan")))?;
    if let Some(max) = p.addon_max_steps.filter(|m| addons > *m) {
        return Err(TenantError::invalid(
            "addons",
            format!("plan {} allows at most {max} add-on steps", p.name),
        ));
    }
    accounts::with_lock(address, || {
        let mut acc = member(store, tenant, address)?;
        if acc.state == AccountState::Cancelled {
            return Err(TenantError::Conflict(format!(
                "{} is cancelled: no plan to change",
                acc.address
            )));
        }
        acc.plan = p.name.clone();
        acc.addons = addons;
        save_closing_requests(
            store,
            &acc,
            actor,
            now,
            format!("plan {} + {addons} add-ons", p.name),
        )?;
        Ok(acc)
    })
}

/// Move a mailbox, with its history, to another order.
pub fn transfer(
    store: &Store,
    from: &str,
    address: &str,
    to: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    accounts::with_lock(address, || {
        let mut acc = member(store, from, address)?;
        if to == from {
            return Err(TenantError::invalid(
                "to",
                "the mailbox is already this order's",
            ));
        }
        let Some(new_order) = get(store, to)? else {
            return Err(TenantError::invalid(
                "to",
                format!("order {to} does not exist"),
            ));
        };
        // One PEC domicile per professional and order, as at creation.
        if let Some(existing) = mailbox_of(store, to, &acc.holder.codice_fiscale)? {
            return Err(TenantError::invalid(
                "to",
                format!("the holder already has the mailbox {existing} in order {to}"),
            ));
        }
        // A member without an e-mail of their own is reached through the
        // secretariat of their order: after the transfer, the new one's
        // (reminders, warnings and password-reset links must not keep
        // going to the order the mailbox left).
        let old_secretariat = get(store, from)?
            .map(|t| t.secretariat_email)
            .unwrap_or_default();
        if !old_secretariat.is_empty()
            && acc
                .holder
                .reference_email
                .eq_ignore_ascii_case(&old_secretariat)
        {
            acc.holder.reference_email = new_order.secretariat_email.clone();
        }
        let mut b = Batch::new();
        // What the holder asked the old order is not the new one's to see.
        close_requests(store, &mut b, from, &acc.address)?;
        // The index entry is under the stored (normalised) address, not the
        // text the caller typed.
        b.delete(Table::Tenants, member_key(from, &acc.address));
        acc.tenant = to.to_string();
        put_member(&mut b, &acc);
        log(
            &mut b,
            now,
            actor,
            Some(address),
            format!("transferred from order {from} to order {to}"),
        );
        store.commit(b)?;
        Ok(acc)
    })
}

/// The national administrator's removal of a mailbox (`pecd mailbox
/// remove`, `DELETE /mailboxes/{a}`): as the lifecycle's deletion, the
/// address stays reserved for its holder (a tombstone with the codice
/// fiscale): an order's new member gets it only with the same codice
/// fiscale (a national `mailbox add`, the operator's explicit act, is not
/// held back). The caller sets the
/// Maildir aside (see [`crate::mailsync::set_aside`]).
pub fn remove_mailbox(
    store: &Store,
    address: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    accounts::with_lock(address, || {
        let acc = accounts::get(store, address)?
            .ok_or_else(|| accounts::AccountError::NotFound(address.into()))?;
        let mut b = Batch::new();
        delete_account(&mut b, &acc);
        log(
            &mut b,
            now,
            actor,
            Some(&acc.address),
            "mailbox removed (address reserved to its holder, messages set aside)".into(),
        );
        store.commit(b)?;
        Ok(acc)
    })
}

/// Remove an account for good, keeping a tombstone: the address can be
/// created again only for the same codice fiscale.
pub fn delete_account(b: &mut Batch, acc: &Account) {
    b.delete(Table::Mailboxes, acc.address.as_bytes().to_vec());
    if !acc.tenant.is_empty() {
        b.delete(Table::Tenants, member_key(&acc.tenant, &acc.address));
    }
    if !acc.holder.codice_fiscale.is_empty() {
        b.delete(
            Table::Tenants,
            cf_key(&acc.holder.codice_fiscale, &acc.address),
        );
    }
    b.put(
        Table::Tenants,
        tombstone_key(&acc.address),
        acc.holder.codice_fiscale.as_bytes().to_vec(),
    );
}

// --------------------------------------------------------------------------
// Holders' requests (add-ons, upgrade), for the order to fulfil

/// What a holder asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// More inbox space: `steps` add-on steps of the current plan.
    Addon { steps: u32 },
    /// The Avanzata plan (or another plan by name).
    Upgrade { plan: String },
}

/// A filed request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Filed {
    pub address: String,
    pub tenant: String,
    pub request: Request,
    pub time: DateTime<Utc>,
}

/// Record a holder's request (checked against the plans) and log it.
pub fn file_request(
    store: &Store,
    config: &Config,
    acc: &Account,
    req: &Request,
    now: DateTime<Utc>,
) -> Result<Filed, TenantError> {
    selfcare::not_pending(acc)?;
    let plan = config.plan(&acc.plan);
    match req {
        Request::Addon { steps } => {
            let max = plan.and_then(|p| p.addon_max_steps);
            if *steps == 0 || max.is_some_and(|m| acc.addons.saturating_add(*steps) > m) {
                return Err(TenantError::invalid(
                    "steps",
                    format!(
                        "between 1 and {} more add-on steps on this plan",
                        max.map_or(u32::MAX, |m| m.saturating_sub(acc.addons))
                    ),
                ));
            }
        }
        Request::Upgrade { plan: p } => {
            if config.plan(p).is_none() {
                return Err(TenantError::invalid("plan", format!("{p:?} is not a plan")));
            }
        }
    }
    let filed = Filed {
        address: acc.address.clone(),
        tenant: acc.tenant.clone(),
        request: req.clone(),
        time: now,
    };
    let mut b = Batch::new();
    // One open request per mailbox: a new one takes the place of the last
    // (a holder cannot fill the order's list).
    close_requests(store, &mut b, &acc.tenant, &acc.address)?;
    b.put(
        Table::Tenants,
        format!(
            "request/{}/{}/{}",
            acc.tenant,
            now.format("%Y%m%dT%H%M%S%.6f"),
            acc.address
        )
        .into_bytes(),
        serde_json::to_vec(&filed).unwrap_or_default(),
    );
    log(
        &mut b,
        now,
        &acc.address,
        Some(&acc.address),
        format!("holder request: {req:?}"),
    );
    store.commit(b)?;
    Ok(filed)
}

/// An order's pending requests, oldest first.
/// Delete into `b` the open requests of `address` filed with `tenant`.
fn close_requests(
    store: &Store,
    b: &mut Batch,
    tenant: &str,
    address: &str,
) -> Result<(), TenantError> {
    let prefix = format!("request/{tenant}/");
    for (k, v) in store.scan_prefix(Table::Tenants, prefix.as_bytes(), usize::MAX)? {
        if serde_json::from_slice::<Filed>(&v)
            .is_ok_and(|f| f.address.eq_ignore_ascii_case(address))
        {
            b.delete(Table::Tenants, k);
        }
    }
    Ok(())
}

/// The open requests filed with `tenant`, oldest first.
pub fn requests(store: &Store, tenant: &str) -> Result<Vec<Filed>, TenantError> {
    let prefix = format!("request/{tenant}/");
    Ok(store
        .scan_prefix(Table::Tenants, prefix.as_bytes(), usize::MAX)?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

// --------------------------------------------------------------------------
// Bulk load

/// One rejected row of a bulk load: 1-based line of the file (the header
/// is line 1), the field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

/// What a bulk load did (or, when rejected as a whole, would not do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkReport {
    pub applied: bool,
    pub created: Vec<Created>,
    pub rejected: Vec<RowError>,
}

/// Largest bulk-load file taken (panel upload or API body): a 100,000-row
/// roll is about 15 MB.
pub const BULK_MAX: usize = 32 << 20;

/// The columns of the orders' anagrafica model, in order (`alias` and
/// `piano` optional).
pub const CSV_COLUMNS: [&str; 12] = [
    "nome",
    "cognome",
    "codice_fiscale",
    "indirizzo",
    "comune",
    "provincia",
    "cap",
    "email_riferimento",
    "telefono",
    "fax",
    "alias",
    "piano",
];

/// Load members from CSV (`;` or `,` separated, header row required).
/// Every row is checked first; with errors nothing is applied, unless
/// `partial`, when the valid rows are applied and the others reported.
/// With `expected` (the addresses a validation report showed, in order),
/// nothing is applied either unless the rows would get exactly those: a
/// namesake created meanwhile must not turn the `mario.rossi` the operator
/// approved into a `mario.rossi.2` nobody saw.
#[allow(clippy::too_many_arguments)]
pub fn bulk_load(
    store: &Store,
    config: &Config,
    tenant: &Tenant,
    csv_text: &str,
    partial: bool,
    expected: Option<&[String]>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<BulkReport, TenantError> {
    let (ready, rejected) = bulk_rows(store, config, tenant, csv_text, now, true)?;
    let mut report = BulkReport {
        rejected,
        ..Default::default()
    };
    if !report.rejected.is_empty() && !partial {
        return Ok(report);
    }
    if let Some(shown) = expected
        && !ready.iter().map(|(_, a, _)| &a.address).eq(shown.iter())
    {
        return Ok(report);
    }
    let ready = ready.into_iter().map(|(_, a, p)| (a, p)).collect();
    report.created = commit_members(store, tenant, ready, actor, now, " (bulk load)")?;
    report.applied = true;
    Ok(report)
}

/// One row a bulk load would create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewRow {
    pub line: usize,
    pub address: String,
    pub nome: String,
    pub cognome: String,
    pub codice_fiscale: String,
}

/// What a bulk load would do, row by row, with nothing applied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkPreview {
    pub ok: Vec<PreviewRow>,
    pub rejected: Vec<RowError>,
}

/// Check a bulk load without applying it (the panel's validation report).
pub fn bulk_check(
    store: &Store,
    config: &Config,
    tenant: &Tenant,
    csv_text: &str,
    now: DateTime<Utc>,
) -> Result<BulkPreview, TenantError> {
    let (ready, rejected) = bulk_rows(store, config, tenant, csv_text, now, false)?;
    Ok(BulkPreview {
        ok: ready
            .into_iter()
            .map(|(line, a, _)| PreviewRow {
                line,
                address: a.address,
                nome: a.holder.nome,
                cognome: a.holder.cognome,
                codice_fiscale: a.holder.codice_fiscale,
            })
            .collect(),
        rejected,
    })
}

/// Every row of a bulk-load file checked and prepared (with its line);
/// the rejected rows named by line and field.
#[allow(clippy::type_complexity)]
fn bulk_rows(
    store: &Store,
    config: &Config,
    tenant: &Tenant,
    csv_text: &str,
    now: DateTime<Utc>,
    hash: bool,
) -> Result<(Vec<(usize, Account, String)>, Vec<RowError>), TenantError> {
    let first = csv_text.lines().next().unwrap_or("");
    let delimiter = if first.matches(';').count() > first.matches(',').count() {
        b';'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(csv_text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| TenantError::invalid("header", e.to_string()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    for h in &headers {
        if !CSV_COLUMNS.contains(&h.as_str()) {
            return Err(TenantError::invalid(
                "header",
                format!("unknown column {h:?} (expected {})", CSV_COLUMNS.join(", ")),
            ));
        }
    }
    for required in &CSV_COLUMNS[..7] {
        if !headers.iter().any(|h| h == required) {
            return Err(TenantError::invalid(
                "header",
                format!("missing column {required:?}"),
            ));
        }
    }
    let mut rejected = Vec::new();
    let mut ready: Vec<(usize, Account, String)> = Vec::new();
    let mut seen_cf: HashMap<String, usize> = HashMap::new();
    let mut reserved: HashSet<String> = HashSet::new();
    for (i, rec) in rdr.records().enumerate() {
        // The file's own line (a quoted field may span lines; blank lines
        // are skipped), as the operator's editor shows it.
        let fallback = i + 2;
        // The reader's position is where it began looking for the record:
        // blank lines skipped before it are counted on from there.
        let line_of = |p: Option<&csv::Position>| {
            p.map_or(fallback, |p| {
                let skipped = csv_text.as_bytes()[(p.byte() as usize).min(csv_text.len())..]
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .filter(|&&b| b == b'\n')
                    .count();
                p.line() as usize + skipped
            })
        };
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                rejected.push(RowError {
                    line: line_of(e.position()),
                    field: "(row)".into(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = line_of(rec.position());
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|p| rec.get(p))
                .unwrap_or("")
                .to_string()
        };
        let m = NewMember {
            holder: Holder {
                nome: col("nome"),
                cognome: col("cognome"),
                codice_fiscale: col("codice_fiscale"),
                indirizzo: col("indirizzo"),
                comune: col("comune"),
                provincia: col("provincia"),
                cap: col("cap"),
                reference_email: col("email_riferimento"),
                telefono: col("telefono"),
                fax: col("fax"),
            },
            alias: Some(col("alias")).filter(|a| !a.is_empty()),
            plan: Some(col("piano")).filter(|p| !p.is_empty()),
        };
        let cf = m.holder.codice_fiscale.trim().to_ascii_uppercase();
        if let Some(earlier) = seen_cf.get(&cf).filter(|_| !cf.is_empty()) {
            rejected.push(RowError {
                line,
                field: "codice_fiscale".into(),
                message: format!("duplicate of line {earlier}"),
            });
            continue;
        }
        match prepare_member(store, config, tenant, &m, &reserved, now, hash) {
            Ok((a, p)) => {
                // Only a row that goes in makes a later one a duplicate.
                seen_cf.insert(cf, line);
                reserved.insert(a.address.clone());
                ready.push((line, a, p));
            }
            Err(e) => rejected.push(RowError {
                line,
                field: e.field().unwrap_or("(row)").to_string(),
                message: match &e {
                    TenantError::Invalid { message, .. } => message.clone(),
                    other => other.to_string(),
                },
            }),
        }
    }
    Ok((ready, rejected))
}

/// The credentials file an order distributes: one line per mailbox.
pub fn credentials_csv(created: &[Created]) -> String {
    let mut out = String::from("indirizzo;password_temporanea\n");
    for c in created {
        out.push_str(&format!("{};{}\n", c.address, c.password));
    }
    out
}

// --------------------------------------------------------------------------
// Registry exports (INI-PEC / ReGIndE feed)

/// One row of the registry feed.
#[derive(Debug, Clone, Serialize)]
pub struct FeedRow<'a> {
    pub codice_fiscale: &'a str,
    pub pec: &'a str,
    pub ordine: &'a str,
    pub stato: AccountState,
}

/// Stream the feed of one order (or every order) to `out`, as CSV or JSON
/// lines, without holding the mailboxes in memory.
pub fn export(
    store: &Store,
    tenant: Option<&str>,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<usize, TenantError> {
    let io = |e: std::io::Error| TenantError::Store(StoreError::Engine(e.to_string()));
    if !json {
        out.write_all(b"codice_fiscale;pec;ordine;stato\n")
            .map_err(io)?;
    }
    let mut n = 0;
    for entry in store.entries(Table::Mailboxes) {
        let (_, v) = entry?;
        let Ok(a) = serde_json::from_slice::<Account>(&v) else {
            continue;
        };
        if a.tenant.is_empty()
            || a.holder.codice_fiscale.is_empty()
            || tenant.is_some_and(|t| t != a.tenant)
        {
            continue; // not a member (e.g. the order's own mailbox)
        }
        let row = FeedRow {
            codice_fiscale: &a.holder.codice_fiscale,
            pec: &a.address,
            ordine: &a.tenant,
            stato: a.state,
        };
        if json {
            serde_json::to_writer(&mut *out, &row).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        } else {
            let stato = serde_json::to_value(row.stato)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            writeln!(
                out,
                "{};{};{};{stato}",
                row.codice_fiscale, row.pec, row.ordine
            )
            .map_err(io)?;
        }
        n += 1;
    }
    Ok(n)
}

// --------------------------------------------------------------------------
// Plans report (prices are for reports: pecd does not bill)

/// One plan's line of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanLine {
    pub plan: String,
    pub mailboxes: u64,
    pub addon_steps: u64,
    /// mailboxes × plan price + add-on steps × add-on price, € per year.
    pub eur_per_year: f64,
}

/// Mailboxes, add-ons and yearly amounts per plan, for one order or all
/// (cancelled mailboxes are not counted).
pub fn plans_report(
    store: &Store,
    config: &Config,
    tenant: Option<&str>,
) -> Result<Vec<PlanLine>, TenantError> {
    let mut lines: Vec<PlanLine> = config
        .plans
        .iter()
        .map(|p| PlanLine {
            plan: p.name.clone(),
            ..Default::default()
        })
        .collect();
    for entry in store.entries(Table::Mailboxes) {
        let (_, v) = entry?;
        let Ok(a) = serde_json::from_slice::<Account>(&v) else {
            continue;
        };
        if a.state == AccountState::Cancelled || tenant.is_some_and(|t| t != a.tenant) {
            continue;
        }
        let name = config.plan(&a.plan).map(|p| p.name.as_str());
        if let Some(line) = lines.iter_mut().find(|l| Some(l.plan.as_str()) == name) {
            line.mailboxes += 1;
            line.addon_steps += u64::from(a.addons);
        }
    }
    for line in &mut lines {
        if let Some(p) = config.plan(&line.plan) {
            line.eur_per_year = line.mailboxes as f64 * p.price_eur_year
                + line.addon_steps as f64 * p.addon_price_eur_year;
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_loads_prepared_at_once_cannot_both_take_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), "redb").unwrap();
        let config = Config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pecd.toml"),
        )
        .unwrap();
        let now = Utc::now();
        let t = Tenant {
            id: "ordine-lodi".into(),
            name: "Ordine di Lodi".into(),
            domain: "pec.provider-a.test".into(),
            provincia: "LO".into(),
            activation: Activation::Immediate,
            secretariat_email: String::new(),
            created: now,
        };
        create(&store, &t, now).unwrap();
        let first15 = "BNCLGU80A01F205";
        let cf = format!(
            "{first15}{}",
            crate::membership::tax_code::check_char(first15.as_bytes())
        );
        let m = NewMember {
            holder: Holder {
                nome: "Luigi".into(),
                cognome: "Bianchi".into(),
                codice_fiscale: cf,
                indirizzo: "Via Roma 1".into(),
                comune: "Lodi".into(),
                provincia: "LO".into(),
                cap: "26900".into(),
                ..Default::default()
            },
            alias: None,
            plan: None,
        };
        // Both prepared from the same state (a double click on "Conferma"):
        // the same address, and the same person.
        let first = prepare_member(&store, &config, &t, &m, &HashSet::new(), now, false).unwrap();
        let second = prepare_member(&store, &config, &t, &m, &HashSet::new(), now, false).unwrap();
        assert_eq!(first.0.address, second.0.address);
        commit_members(&store, &t, vec![first], "test", now, "").unwrap();
        let again = commit_members(&store, &t, vec![second], "test", now, "");
        assert!(matches!(again, Err(TenantError::Conflict(_))), "{again:?}");
        // Prepared now, the same person is refused outright.
        let refused = prepare_member(&store, &config, &t, &m, &HashSet::new(), now, false);
        assert!(
            matches!(&refused, Err(TenantError::Invalid { field, .. }) if field == "codice_fiscale"),
            "{refused:?}"
        );
        // A roll checked while a namesake did not exist yet: confirmed
        // after the namesake took `giulia.verdi`, it would give this row
        // another address than the report showed, so nothing is applied.
        let cf = |first15: &str| {
            format!(
                "{first15}{}",
                crate::membership::tax_code::check_char(first15.as_bytes())
            )
        };
        let roll = format!(
            "nome;cognome;codice_fiscale;indirizzo;comune;provincia;cap\nGiulia;Verdi;{};Via Po 1;Lodi;LO;26900\n",
            cf("VRDGLI80A41F205")
        );
        let shown = bulk_check(&store, &config, &t, &roll, now).unwrap();
        let shown: Vec<String> = shown.ok.into_iter().map(|r| r.address).collect();
        assert_eq!(shown, ["giulia.verdi@pec.provider-a.test"]);
        let mut namesake = m.clone();
        namesake.holder.nome = "Giulia".into();
        namesake.holder.cognome = "Verdi".into();
        namesake.holder.codice_fiscale = cf("VRDGLI85A41F205");
        let other = prepare_member(&store, &config, &t, &namesake, &HashSet::new(), now, false);
        commit_members(&store, &t, vec![other.unwrap()], "test", now, "").unwrap();
        let late = bulk_load(&store, &config, &t, &roll, false, Some(&shown), "test", now).unwrap();
        assert!(!late.applied && late.created.is_empty());
        // Without a report to hold it to (the API), the row gets the next.
        let api = bulk_load(&store, &config, &t, &roll, false, None, "test", now).unwrap();
        assert_eq!(api.created[0].address, "giulia.verdi.2@pec.provider-a.test");
    }
}
