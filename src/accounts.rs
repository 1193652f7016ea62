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

/// Account state (the full lifecycle of issue #4 extends this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountState {
    Active,
    /// Receives nothing: deliveries get *mancata consegna* 5.2.1.
    Disabled,
}

/// One mailbox account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub address: String,
    /// PHC string (`$argon2id$…`).
    pub password_hash: String,
    pub state: AccountState,
    pub created: DateTime<Utc>,
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

/// argon2id hash of a password with a random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < 8 {
        return Err(AccountError::WeakPassword);
    }
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Constant-time check of a password against a stored hash.
pub fn check_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
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
    if get(store, &a)?.is_some() {
        return Err(AccountError::Exists(a));
    }
    let acc = Account {
        address: a.clone(),
        password_hash: hash_password(password)?,
        state: AccountState::Active,
        created: now,
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

pub fn remove(store: &Store, address: &str, now: DateTime<Utc>) -> Result<(), AccountError> {
    let acc = get(store, address)?.ok_or_else(|| AccountError::NotFound(address.into()))?;
    let mut b = Batch::new();
    b.delete(Table::Mailboxes, acc.address.as_bytes().to_vec());
    log(
        &mut b,
        now,
        &acc.address,
        "mailbox removed (messages kept on disk)",
    );
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

/// Authenticate: Some(account) when the password matches an active account.
pub fn authenticate(
    store: &Store,
    address: &str,
    password: &str,
) -> Result<Option<Account>, AccountError> {
    Ok(get(store, address)?
        .filter(|a| a.state == AccountState::Active && check_password(&a.password_hash, password)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        remove(&store, "mario.rossi@pec.provider-a.test", now).unwrap();
        assert!(list(&store).unwrap().is_empty());
        let log = crate::audit::search(&store, &crate::audit::Filter::default()).unwrap();
        assert_eq!(log.len(), 3);
        assert!(log.iter().all(|(_, r)| r.event == Event::Mailbox));
        // The hash never contains the password.
        assert!(!hash_password("correct horse").unwrap().contains("correct"));
    }
}
