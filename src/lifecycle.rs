//! The mailbox lifecycle, pure: what is due for an account on a given day
//! (reminders, expiry, downgrade, suspension, deletion, blocking of a
//! pending mailbox), renewal, and the downgrade plan shown beforehand.
//!
//! Owns: the decisions. Must not touch: the store, the clock, Maildirs (the
//! caller applies the actions, logs them, and passes usage in).

use crate::accounts::{Account, AccountState};
use crate::config::{LifecycleConfig, OnExpiry, Plan};
use chrono::{Datelike, Duration, NaiveDate};
use serde::Serialize;

/// The state reason of a mailbox whose holder was struck off the roll: it
/// is kept until expiry, then cancelled instead of renewed or downgraded.
pub const STRUCK_OFF: &str = "struck off the roll";

/// The state reason of a pending mailbox blocked by the sweep.
pub const NO_FIRST_ACCESS: &str = "no first access";

/// One thing the daily sweep must do to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the reminder `days` from expiry (negative: after), recorded
    /// under `key` so it goes once.
    Remind {
        key: String,
        days: i64,
        expires: NaiveDate,
        /// Earlier reminders due at the same time (the daemon was down, a
        /// renewal came late): recorded as sent with this one, not sent
        /// too, each saying "tra N giorni" of the same day.
        superseded: Vec<String>,
    },
    /// Expired without renewal, `downgrade` plan: fall back to `to`
    /// (add-ons dropped), a new term from the old expiry.
    Downgrade { to: String, new_expiry: NaiveDate },
    /// Change state (expiry grace, suspension, blocking).
    Become { state: AccountState, reason: String },
    /// Suspended long enough: delete (keep a tombstone).
    Delete,
}

/// `date` moved by whole years (29 February → 28 February).
pub fn add_years(date: NaiveDate, years: u32) -> NaiveDate {
    let y = date.year() + years as i32;
    date.with_year(y)
        .or_else(|| NaiveDate::from_ymd_opt(y, date.month(), 28))
        .unwrap_or(date)
}

/// The end of the first term of `years` counted on from `expires` that is
/// still ahead of `today`: a mailbox whose expiry lies terms behind (made
/// active long after it was created) is downgraded once, not once per
/// sweep until its date catches up.
fn next_term_end(expires: NaiveDate, years: u32, today: NaiveDate) -> NaiveDate {
    let mut end = add_years(expires, years.max(1));
    // Bounded: a date never lies thousands of years back.
    for _ in 0..10_000 {
        if end > today {
            break;
        }
        end = add_years(end, years.max(1));
    }
    end
}

/// What is due for `acc` on `today`, in order.
pub fn due(acc: &Account, plan: &Plan, cfg: &LifecycleConfig, today: NaiveDate) -> Vec<Action> {
    let mut out = Vec::new();
    // The state's day in Rome, as `today` is: by the UTC date a mailbox
    // created just after midnight would lose a day of its window.
    let since = acc
        .state_since
        .map(|t| crate::clock::LegalTime::new(t).date())
        .unwrap_or(today);
    match acc.state {
        AccountState::PendingActivation => {
            if today > since + Duration::days(cfg.first_access_days) {
                out.push(Action::Become {
                    state: AccountState::Suspended,
                    reason: format!(
                        "{NO_FIRST_ACCESS} within {} days: blocked until the order unblocks it",
                        cfg.first_access_days
                    ),
                });
            }
            return out;
        }
        AccountState::Cancelled => return out,
        AccountState::Suspended => {
            if acc.state_reason.starts_with("expired")
                && today > since + Duration::days(cfg.delete_after_days)
            {
                out.push(Action::Delete);
            }
            return out;
        }
        AccountState::Active | AccountState::Expired => {}
    }
    let Some(expires) = acc.expires else {
        return out;
    };
    let mut reminders: Vec<(i64, String)> = Vec::new();
    for &days in &cfg.reminder_days {
        let key = format!("{expires}/{days}");
        let when = expires - Duration::days(days);
        // A reminder only for the state it speaks to: before expiry while
        // active, after expiry while expired. One before expiry that was
        // missed (the daemon down on its day) is not sent once the expiry
        // has passed: "scade tra 90 giorni" after it would mislead.
        let fits_state = (days >= 0) == (acc.state == AccountState::Active);
        let still_ahead = days < 0 || today <= expires;
        if today >= when && fits_state && still_ahead && !acc.reminders.contains(&key) {
            reminders.push((days, key));
        }
    }
    // The latest one due speaks for all.
    reminders.sort();
    if let Some((days, key)) = reminders.first().cloned() {
        let superseded = reminders.into_iter().skip(1).map(|(_, k)| k).collect();
        out.push(Action::Remind {
            key,
            days,
            expires,
            superseded,
        });
    }
    if today > expires && acc.state_reason.starts_with(STRUCK_OFF) {
        out.push(Action::Become {
            state: AccountState::Cancelled,
            reason: format!("{STRUCK_OFF}: lapsed at expiry on {expires}"),
        });
        return out;
    }
    if today > expires {
        match (acc.state, plan.on_expiry) {
            (AccountState::Active, OnExpiry::Downgrade) => out.push(Action::Downgrade {
                to: plan
                    .downgrade_to
                    .clone()
                    .unwrap_or_else(|| plan.name.clone()),
                new_expiry: next_term_end(expires, cfg.term_years, today),
            }),
            (AccountState::Active, OnExpiry::Suspend) => out.push(Action::Become {
                state: AccountState::Expired,
                reason: format!(
                    "expired on {expires}: receive-only for {} days",
                    cfg.grace_days
                ),
            }),
            (AccountState::Expired, _) if today > expires + Duration::days(cfg.grace_days) => out
                .push(Action::Become {
                    state: AccountState::Suspended,
                    reason: format!("expired on {expires}, grace over"),
                }),
            _ => {}
        }
    }
    out
}

/// Why a renewal by `years` cannot be made, if it cannot: a cancelled
/// mailbox is not renewed, and a renewal counted from an expiry long past
/// must reach beyond today (a year paid must not end before it begins;
/// the holder is told how many years it takes).
pub fn renewal_refused(acc: &Account, years: u32, today: NaiveDate) -> Option<String> {
    if acc.state == AccountState::Cancelled {
        return Some("a cancelled mailbox is not renewed".into());
    }
    // Struck off the roll: it runs to its expiry and ends there.
    if acc.state_reason.starts_with(STRUCK_OFF) {
        return Some("the holder was struck off the roll: the mailbox ends at its expiry".into());
    }
    let from = acc.expires.unwrap_or(today);
    if add_years(from, years) > today {
        return None;
    }
    let needed = (years..=years + 100)
        .find(|&y| add_years(from, y) > today)
        .unwrap_or(years);
    Some(format!(
        "expired on {from}: {years} year(s) from then end on {}, already past; renew for at least {needed}",
        add_years(from, years)
    ))
}

/// Renewal by `years` (see [`renewal_refused`] first): from the current
/// expiry date (paying early or late does not move it), back to active if
/// it had lapsed. Returns whether the state changed.
pub fn renew(acc: &mut Account, years: u32, today: NaiveDate) -> bool {
    let from = acc.expires.unwrap_or(today);
    acc.expires = Some(add_years(from, years));
    acc.reminders.clear();
    let lapsed = acc.state == AccountState::Expired
        || (acc.state == AccountState::Suspended && acc.state_reason.starts_with("expired"));
    if lapsed {
        acc.state = AccountState::Active;
        acc.state_reason = "renewed".into();
    }
    lapsed
}

/// What a downgrade at expiry would do, shown before it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DowngradePlan {
    pub address: String,
    pub expires: Option<NaiveDate>,
    pub from_plan: String,
    pub to_plan: String,
    pub addons_dropped: u32,
    pub inbox_quota_now: u64,
    pub inbox_quota_after: u64,
    pub inbox_used: u64,
    /// Bytes over the new inbox quota: new deliveries are refused
    /// (mancata consegna 5.2.2) until the holder frees this much; nothing
    /// already stored is deleted.
    pub inbox_over_by: u64,
    pub archive_quota_now: u64,
    pub archive_quota_after: u64,
    pub archive_used: u64,
    /// Archive bytes beyond the new archive space: handled by the archive
    /// policy (`stop`: no new copies; `rotate-oldest`: oldest copies go).
    pub archive_over_by: u64,
    /// `downgrade`, `suspend` (receive-only grace), or `none`.
    pub at_expiry: String,
    /// `lifecycle.downgrade_excess`: `keep` or `archive`.
    pub excess_policy: String,
    /// Inbox bytes the downgrade would move into the archive (policy
    /// `archive`, within the archive space after the downgrade).
    pub moves_to_archive: u64,
}

/// The downgrade plan for `acc` (current plan `now`, fallback `after`).
pub fn downgrade_plan(
    acc: &Account,
    now: &Plan,
    after: Option<&Plan>,
    space: crate::maildir::Measure,
    excess: crate::config::DowngradeExcess,
) -> DowngradePlan {
    let (inbox_used, archive_used) = (space.used, space.archived);
    let (to, at) = match (now.on_expiry, after) {
        (OnExpiry::Downgrade, Some(p)) => (p, "downgrade"),
        (OnExpiry::Suspend, _) => (now, "suspend"),
        (_, None) => (now, "none"),
    };
    let addons_after = 0;
    let inbox_after = to.inbox_quota(addons_after);
    DowngradePlan {
        address: acc.address.clone(),
        expires: acc.expires,
        from_plan: now.name.clone(),
        to_plan: to.name.clone(),
        addons_dropped: if at == "downgrade" { acc.addons } else { 0 },
        inbox_quota_now: now.inbox_quota(acc.addons),
        inbox_quota_after: if at == "downgrade" {
            inbox_after
        } else {
            now.inbox_quota(acc.addons)
        },
        inbox_used,
        inbox_over_by: if at == "downgrade" {
            inbox_used.saturating_sub(inbox_after)
        } else {
            0
        },
        archive_quota_now: now.archive.0,
        archive_quota_after: to.archive.0,
        archive_used,
        archive_over_by: archive_used.saturating_sub(to.archive.0),
        at_expiry: at.into(),
        excess_policy: excess.name().into(),
        // Only the INBOX's own messages move: when the holder's folders
        // alone are over the new space, moving them would not make the
        // mailbox fit, and none move (see `App::move_excess_to_archive`).
        moves_to_archive: match (at, excess) {
            ("downgrade", crate::config::DowngradeExcess::Archive)
                if inbox_used.saturating_sub(space.in_inbox) <= inbox_after =>
            {
                inbox_used
                    .saturating_sub(inbox_after)
                    .min(to.archive.0.saturating_sub(archive_used))
            }
            _ => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_plans;

    fn account(state: AccountState, expires: &str) -> Account {
        let now = chrono::Utc::now();
        Account {
            address: "a@b.it".into(),
            password_hash: String::new(),
            state,
            created: now,
            plan: "avanzata".into(),
            addons: 2,
            holder: Default::default(),
            quota_warned: 0,
            tenant: String::new(),
            expires: Some(expires.parse().unwrap()),
            reminders: Vec::new(),
            state_since: Some(now - Duration::days(1)),
            state_reason: String::new(),
            archive_full_warned: false,
            archive_warned_at: None,
        }
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn reminders_come_once_each_at_their_day() {
        let cfg = LifecycleConfig::default();
        let plans = default_plans();
        let mut a = account(AccountState::Active, "2027-06-30");
        assert!(due(&a, &plans[1], &cfg, d("2027-03-01")).is_empty());
        let r = due(&a, &plans[1], &cfg, d("2027-04-01"));
        assert_eq!(
            r,
            vec![Action::Remind {
                key: "2027-06-30/90".into(),
                days: 90,
                expires: d("2027-06-30"),
                superseded: vec![],
            }]
        );
        a.reminders.push("2027-06-30/90".into());
        assert!(due(&a, &plans[1], &cfg, d("2027-04-02")).is_empty());
        // The 30- and 5-day reminders both due: one reminder, the nearer,
        // and the other recorded with it.
        assert_eq!(
            due(&a, &plans[1], &cfg, d("2027-06-25")),
            vec![Action::Remind {
                key: "2027-06-30/5".into(),
                days: 5,
                expires: d("2027-06-30"),
                superseded: vec!["2027-06-30/30".into()],
            }]
        );
        // Missed until after the expiry (the daemon was down): the expiry's
        // own action comes, not reminders of a date already past.
        let late = due(&a, &plans[1], &cfg, d("2027-07-02"));
        assert!(
            !late.iter().any(|x| matches!(x, Action::Remind { .. })),
            "{late:?}"
        );
    }

    /// An account expiring on `expires` that had every reminder before it.
    fn reminded(state: AccountState, expires: &str) -> Account {
        let mut a = account(state, expires);
        a.reminders = ["90", "30", "5"]
            .iter()
            .map(|x| format!("{expires}/{x}"))
            .collect();
        a
    }

    #[test]
    fn a_downgrade_of_an_expiry_terms_behind_lands_in_the_future_at_once() {
        let cfg = LifecycleConfig::default();
        let plans = default_plans();
        let a = reminded(AccountState::Active, "2024-06-30");
        assert_eq!(
            due(&a, &plans[1], &cfg, d("2027-07-01")),
            vec![Action::Downgrade {
                to: "base".into(),
                new_expiry: d("2028-06-30")
            }]
        );
    }

    #[test]
    fn expiry_downgrades_or_suspends_per_plan() {
        let cfg = LifecycleConfig::default();
        let mut plans = default_plans();
        let mut a = reminded(AccountState::Active, "2027-06-30");
        assert_eq!(
            due(&a, &plans[1], &cfg, d("2027-07-01")),
            vec![Action::Downgrade {
                to: "base".into(),
                new_expiry: d("2028-06-30")
            }]
        );
        plans[1].on_expiry = OnExpiry::Suspend;
        let acts = due(&a, &plans[1], &cfg, d("2027-07-01"));
        assert!(matches!(
            &acts[0],
            Action::Become {
                state: AccountState::Expired,
                ..
            }
        ));
        a.state = AccountState::Expired;
        // After expiry: the -25 reminder, then the end of the grace.
        assert_eq!(
            due(&a, &plans[1], &cfg, d("2027-07-25")),
            vec![Action::Remind {
                key: "2027-06-30/-25".into(),
                days: -25,
                expires: d("2027-06-30"),
                superseded: vec![],
            }]
        );
        a.reminders.push("2027-06-30/-25".into());
        assert!(due(&a, &plans[1], &cfg, d("2027-09-28")).is_empty());
        assert!(matches!(
            &due(&a, &plans[1], &cfg, d("2027-09-29"))[0],
            Action::Become {
                state: AccountState::Suspended,
                ..
            }
        ));
        a.state = AccountState::Suspended;
        a.state_reason = "expired on 2027-06-30, grace over".into();
        a.state_since = Some(chrono::Utc::now());
        let today = chrono::Utc::now().date_naive();
        assert!(due(&a, &plans[1], &cfg, today + Duration::days(365)).is_empty());
        assert_eq!(
            due(&a, &plans[1], &cfg, today + Duration::days(366)),
            vec![Action::Delete]
        );
    }

    #[test]
    fn renewal_extends_from_expiry_not_from_payment() {
        let mut a = account(AccountState::Active, "2027-06-30");
        renew(&mut a, 1, d("2027-01-15")); // paid early
        assert_eq!(a.expires, Some(d("2028-06-30")));
        let mut late = account(AccountState::Expired, "2027-06-30");
        renew(&mut late, 1, d("2027-08-15")); // paid late
        assert_eq!(late.expires, Some(d("2028-06-30")));
        assert_eq!(late.state, AccountState::Active);
        assert_eq!(add_years(d("2028-02-29"), 1), d("2029-02-28"));
        // Suspended more than a term after its expiry: one year would end
        // in the past.
        let long_gone = account(AccountState::Suspended, "2027-06-30");
        let why = renewal_refused(&long_gone, 1, d("2028-08-01")).unwrap();
        assert!(why.contains("renew for at least 2"), "{why}");
        assert_eq!(renewal_refused(&long_gone, 2, d("2028-08-01")), None);
        let cancelled = account(AccountState::Cancelled, "2027-06-30");
        assert!(renewal_refused(&cancelled, 1, d("2027-01-15")).is_some());
        let mut struck_off = account(AccountState::Active, "2027-06-30");
        struck_off.state_reason = format!("{STRUCK_OFF}: kept until expiry");
        assert!(renewal_refused(&struck_off, 1, d("2027-01-15")).is_some());
        assert_eq!(renewal_refused(&a, 1, d("2027-01-15")), None);
    }

    #[test]
    fn pending_mailboxes_are_blocked_after_the_first_access_window() {
        let cfg = LifecycleConfig::default();
        let plans = default_plans();
        let a = account(AccountState::PendingActivation, "2027-06-30");
        let today = chrono::Utc::now().date_naive();
        assert!(due(&a, &plans[0], &cfg, today + Duration::days(28)).is_empty());
        assert!(matches!(
            &due(&a, &plans[0], &cfg, today + Duration::days(31))[0],
            Action::Become {
                state: AccountState::Suspended,
                ..
            }
        ));
    }

    #[test]
    fn the_first_access_window_counts_days_in_rome() {
        let cfg = LifecycleConfig::default();
        let plans = default_plans();
        let mut a = account(AccountState::PendingActivation, "2028-06-30");
        // 00:30 on 11 March in Rome, still 10 March in UTC.
        a.state_since = Some("2027-03-10T23:30:00Z".parse().unwrap());
        let window_end = d("2027-03-11") + Duration::days(cfg.first_access_days);
        assert!(due(&a, &plans[0], &cfg, window_end).is_empty());
        assert!(!due(&a, &plans[0], &cfg, window_end + Duration::days(1)).is_empty());
    }

    #[test]
    fn the_downgrade_plan_names_what_is_blocked() {
        let plans = default_plans();
        let a = account(AccountState::Active, "2027-06-30");
        let space = |in_inbox| crate::maildir::Measure {
            used: 3 << 30,
            in_inbox,
            archived: 2 << 30,
        };
        let p = downgrade_plan(
            &a,
            &plans[1],
            Some(&plans[0]),
            space(3 << 30),
            crate::config::DowngradeExcess::Archive,
        );
        assert_eq!(p.to_plan, "base");
        assert_eq!(p.addons_dropped, 2);
        assert_eq!(p.inbox_quota_now, 9 << 30);
        assert_eq!(p.inbox_quota_after, 1 << 30);
        assert_eq!(p.inbox_over_by, 2 << 30);
        assert_eq!(p.archive_over_by, 0);
        assert_eq!(p.at_expiry, "downgrade");
        // 2 GB over the new inbox, 1 GB free in the new 3 GB archive.
        assert_eq!(p.moves_to_archive, 1 << 30);
        // The holder's folders alone exactly fill the new space: emptying
        // the INBOX makes it fit, so mail moves; one byte more, and it
        // could not, so none does.
        let fits = |folders: u64| {
            downgrade_plan(
                &a,
                &plans[1],
                Some(&plans[0]),
                space((3 << 30) - folders),
                crate::config::DowngradeExcess::Archive,
            )
            .moves_to_archive
        };
        assert!(fits(1 << 30) > 0);
        assert_eq!(fits((1 << 30) + 1), 0);
    }
}
