//! The holder's own changes to the mailbox account, shared by the JSON API
//! (`admin::holder`) and the reserved area (`web::holder`): first access,
//! password, reference e-mail. Each is logged with the holder (the
//! mailbox address) as actor.
//! Must not touch: HTTP; other mailboxes.

use super::{TenantError, save};
use crate::accounts::{self, Account, AccountState};
use crate::store::Store;
use chrono::{DateTime, Utc};

/// First access of a pending mailbox: the holder confirmed the
/// anagrafica, accepted the contract and chose a password.
pub fn first_access(
    store: &Store,
    address: &str,
    data_confirmed: bool,
    contract_accepted: bool,
    new_password: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    let acc = accounts::get(store, address)?
        .ok_or_else(|| TenantError::NotFound(format!("mailbox {address}")))?;
    if acc.state != AccountState::PendingActivation {
        return Err(TenantError::Conflict(
            "the mailbox is not waiting for its first access".into(),
        ));
    }
    if !data_confirmed {
        return Err(TenantError::Invalid {
            field: "confirm_data".into(),
            message: "the anagrafica must be confirmed".into(),
        });
    }
    if !contract_accepted {
        return Err(TenantError::Invalid {
            field: "accept_contract".into(),
            message: "the contract must be accepted".into(),
        });
    }
    // The one-time password the order handed over is known to its
    // secretariat: the holder's own must be another.
    if accounts::check_password(&acc.password_hash, new_password) {
        return Err(TenantError::Invalid {
            field: "new_password".into(),
            message: "must differ from the one-time password".into(),
        });
    }
    let hash = password_hash(new_password)?;
    own_update(
        store,
        address,
        now,
        "first access: anagrafica confirmed, contract accepted, password set",
        |a| {
            // Re-checked under the lock: two first accesses at once.
            if a.state != AccountState::PendingActivation {
                return Err(TenantError::Conflict(
                    "the mailbox is not waiting for its first access".into(),
                ));
            }
            a.password_hash = hash;
            a.state = AccountState::Active;
            a.state_since = Some(now);
            a.state_reason = "first access".into();
            Ok(())
        },
    )
}

/// Change the holder's own account under its lock, logged with the
/// holder as actor.
fn own_update(
    store: &Store,
    address: &str,
    now: DateTime<Utc>,
    what: &str,
    f: impl FnOnce(&mut Account) -> Result<(), TenantError>,
) -> Result<Account, TenantError> {
    accounts::with_lock(address, || {
        let mut acc = accounts::get(store, address)?
            .ok_or_else(|| TenantError::NotFound(format!("mailbox {address}")))?;
        f(&mut acc)?;
        save(store, &acc, &acc.address.clone(), now, what.to_string())?;
        Ok(acc)
    })
}

/// A mailbox still waiting for its first access is used only through it:
/// nothing is changed on the holder's word before the data is confirmed
/// and the contract accepted.
pub(crate) fn not_pending(a: &Account) -> Result<(), TenantError> {
    if a.state == AccountState::PendingActivation {
        return Err(TenantError::Conflict(
            "the first access is not done: confirm the data and accept the contract first".into(),
        ));
    }
    Ok(())
}

fn password_hash(new_password: &str) -> Result<String, TenantError> {
    accounts::hash_password(new_password).map_err(|e| TenantError::Invalid {
        field: "new_password".into(),
        message: e.to_string(),
    })
}

pub fn change_password(
    store: &Store,
    address: &str,
    new_password: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    let hash = password_hash(new_password)?;
    own_update(store, address, now, "password changed by the holder", |a| {
        not_pending(a)?;
        a.password_hash = hash;
        Ok(())
    })
}

pub fn change_reference_email(
    store: &Store,
    address: &str,
    email: &str,
    now: DateTime<Utc>,
) -> Result<Account, TenantError> {
    let email = accounts::normalize(email).map_err(|_| TenantError::Invalid {
        field: "reference_email".into(),
        message: "not an e-mail address".into(),
    })?;
    let what = format!("reference e-mail changed by the holder to {email}");
    own_update(store, address, now, &what, |a| {
        not_pending(a)?;
        a.holder.reference_email = email;
        Ok(())
    })
}
