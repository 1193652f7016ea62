//! The mailbox lifecycle on a real daemon (its listeners and worker run in
//! this process) driven by a manual clock across two years: each reminder
//! once, receive-only after expiry, suspension, deletion, re-creation only
//! for the same codice fiscale, downgrade shown then applied, renewal from
//! the expiry date.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::certs;
use common::daemon::{Captured, capture_smtp, free_port, wait_for};
use pecd::accounts::{self, AccountState, Holder};
use pecd::app::App;
use pecd::clock::ManualClock;
use pecd::tenants::{self, Activation, NewMember, Tenant};
use std::sync::Arc;
use std::time::Duration;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 9, 0, 0).unwrap()
}

struct Provider {
    app: Arc<App>,
    clock: Arc<ManualClock>,
    submission: u16,
    sink: Captured,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn provider() -> Provider {
    let dir = tempfile::tempdir().unwrap();
    let (sink_port, sink) = capture_smtp();
    let submission = free_port();
    let c = certs();
    let toml = format!(
        r#"data_dir = "{data}"
hostname = "mx.pec.provider-a.test"
[provider]
name = "Provider A S.p.A."
domain = "pec.provider-a.test"
local_domains = ["pec.provider-a.test"]
signing_cert = "{c}/provider-a.pem"
signing_key = "{c}/provider-a.key"
digest = "sha1"
trust_anchors = "{c}/ca.pem"
provider_index = "{c}/index.ldif"
[tls]
cert = "{c}/localhost.pem"
key = "{c}/localhost.key"
[listen]
submission = "127.0.0.1:{submission}"
inbound = "127.0.0.1:{inbound}"
[queue]
retry_initial = "200ms"
retry_max = "1s"
[notify]
smarthost = "127.0.0.1:{sink_port}"
[[plans]]
name = "convenzione"
inbox = "1GB"
archive = "3GB"
addon_max_steps = 5
on_expiry = "downgrade"
downgrade_to = "convenzione"
[[plans]]
name = "avanzata"
inbox = "7GB"
archive = "7GB"
on_expiry = "downgrade"
downgrade_to = "convenzione"
[[plans]]
name = "privato"
inbox = "1GB"
on_expiry = "suspend"
[[plans]]
name = "grande"
inbox = "60KB"
archive = "60KB"
on_expiry = "downgrade"
downgrade_to = "piccolo"
[[plans]]
name = "piccolo"
inbox = "10KB"
archive = "60KB"
on_expiry = "downgrade"
downgrade_to = "piccolo"
[lifecycle]
downgrade_excess = "archive"
"#,
        data = dir.path().join("data").display(),
        c = c.display(),
        inbound = free_port(),
    );
    let cfg = pecd::config::Config::parse(&toml, dir.path()).unwrap();
    let clock = Arc::new(ManualClock::new(at(2027, 1, 10)));
    let app = Arc::new(App::open_with_clock(cfg, clock.clone()).unwrap());
    accounts::add(&app.store, MARIO, "password-mario", clock.now_utc()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    rt.block_on(async {
        pecd::server::start(app.clone(), rx.clone()).await.unwrap();
    });
    rt.spawn(app.clone().worker(Duration::from_millis(200), rx));
    Provider {
        app,
        clock,
        submission,
        sink,
        _rt: rt,
        _dir: dir,
        _stop: tx,
    }
}

trait Now {
    fn now_utc(&self) -> DateTime<Utc>;
}
impl Now for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        pecd::clock::Clock::now(self)
    }
}

fn holder(nome: &str, cognome: &str, cf_serial: u32) -> Holder {
    let first15 = format!("BNCLCU80A{:02}H{:03}", 1 + cf_serial % 28, cf_serial % 1000);
    let c = pecd::membership::tax_code::check_char(first15.as_bytes());
    Holder {
        nome: nome.into(),
        cognome: cognome.into(),
        codice_fiscale: format!("{first15}{c}"),
        indirizzo: "Via Roma 1".into(),
        comune: "Lodi".into(),
        provincia: "LO".into(),
        cap: "26900".into(),
        reference_email: format!("{}@casa.test", nome.to_lowercase()),
        ..Default::default()
    }
}

fn submit(p: &Provider, user: &str, password: &str, to: &str, subject: &str) -> Result<(), String> {
    use lettre::Transport;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let ca = Certificate::from_pem(&std::fs::read(certs().join("ca.pem")).unwrap()).unwrap();
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mailer = lettre::SmtpTransport::builder_dangerous("127.0.0.1")
        .port(p.submission)
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(user.into(), password.into()))
        .build();
    let msg = format!(
        "From: {user}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\nTesto.\r\n",
        subject.replace(' ', "-")
    );
    let env =
        lettre::address::Envelope::new(Some(user.parse().unwrap()), vec![to.parse().unwrap()])
            .unwrap();
    mailer
        .send_raw(&env, msg.as_bytes())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The order "ordine-lodi", created now, with its secretariat's address.
fn lodi(p: &Provider, secretariat: &str, activation: Activation) -> Tenant {
    let now = p.clock.now_utc();
    let order = Tenant {
        id: "ordine-lodi".into(),
        name: "Ordine di Lodi".into(),
        domain: "pec.provider-a.test".into(),
        provincia: "LO".into(),
        activation,
        secretariat_email: secretariat.into(),
        created: now,
    };
    tenants::create(&p.app.store, &order, now).unwrap();
    order
}

/// A member of `order` on `plan`, created now; its address.
fn member(
    p: &Provider,
    order: &Tenant,
    nome: &str,
    cognome: &str,
    serial: u32,
    plan: &str,
) -> String {
    let m = NewMember {
        holder: holder(nome, cognome, serial),
        alias: None,
        plan: Some(plan.into()),
    };
    tenants::create_member(
        &p.app.store,
        &p.app.cfg(),
        order,
        &m,
        "test",
        p.clock.now_utc(),
    )
    .unwrap()
    .address
}

/// The decoded text of each message in a mailbox.
fn texts(p: &Provider, address: &str) -> Vec<String> {
    mailbox(p, address)
        .iter()
        .filter_map(|m| {
            mail_parser::MessageParser::default()
                .parse(m.as_bytes())
                .and_then(|x| x.body_text(0).map(|t| t.into_owned()))
        })
        .collect()
}

fn mailbox(p: &Provider, address: &str) -> Vec<String> {
    let dir = pecd::maildir::mailbox_path(&p.app.cfg().data_dir.join("mail"), address).unwrap();
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            out.extend(rd.map(|e| {
                String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()).into_owned()
            }));
        }
    }
    out
}

fn reminders_at_sink(p: &Provider, to: &str) -> usize {
    p.sink
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, d)| r.iter().any(|x| x == to) && d.contains("Subject:"))
        .count()
}

#[test]
fn a_suspend_plan_mailbox_from_creation_to_deletion_and_re_creation() {
    let p = provider();
    let now = p.clock.now_utc();
    let order = lodi(&p, "segreteria@ordine.test", Activation::Immediate);
    let new = |h: Holder| NewMember {
        holder: h,
        alias: None,
        plan: Some("privato".into()),
    };
    let lucia = tenants::create_member(
        &p.app.store,
        &p.app.cfg(),
        &order,
        &new(holder("Lucia", "Bianchi", 1)),
        "test",
        now,
    )
    .unwrap();
    let addr = lucia.address.clone();
    assert_eq!(addr, "lucia.bianchi@pec.provider-a.test");
    let acc = accounts::get(&p.app.store, &addr).unwrap().unwrap();
    assert_eq!(acc.expires.unwrap().to_string(), "2028-01-10");
    let home = "lucia@casa.test";
    let sweep_on = |when: DateTime<Utc>| {
        p.clock.set(when);
        p.app.sweep().unwrap().actions
    };
    // Reminders: 90, 30 and 5 days before, each once however often the
    // sweep runs.
    assert_eq!(sweep_on(at(2027, 10, 11)), 0);
    for (when, total) in [
        (at(2027, 10, 12), 1),
        (at(2027, 12, 11), 2),
        (at(2028, 1, 5), 3),
    ] {
        assert_eq!(sweep_on(when), 1, "{when}");
        assert_eq!(
            sweep_on(when + chrono::Duration::hours(3)),
            0,
            "once: {when}"
        );
        wait_for("reminder at the smarthost", 20, || {
            reminders_at_sink(&p, home) == total
        });
    }
    wait_for("reminders in the mailbox", 20, || {
        mailbox(&p, &addr).len() == 3
    });
    assert!(
        mailbox(&p, &addr)
            .iter()
            .all(|m| m.contains("scade il 10/01/2028"))
    );
    // Expiry: receive-only.
    assert_eq!(sweep_on(at(2028, 1, 11)), 1);
    let acc = accounts::get(&p.app.store, &addr).unwrap().unwrap();
    assert_eq!(acc.state, AccountState::Expired);
    assert!(
        submit(&p, &addr, &lucia.password, MARIO, "Non posso").is_err(),
        "cannot send"
    );
    submit(&p, MARIO, "password-mario", &addr, "Ricevi ancora").unwrap();
    wait_for("delivery to the expired mailbox", 20, || {
        mailbox(&p, &addr)
            .iter()
            .any(|m| m.contains("Ricevi ancora"))
    });
    // 25 days after expiry: the last reminder; after the grace: suspended.
    assert_eq!(sweep_on(at(2028, 2, 4)), 1);
    wait_for("the after-expiry reminder", 20, || {
        reminders_at_sink(&p, home) == 4
    });
    assert_eq!(sweep_on(at(2028, 4, 9)), 0);
    assert_eq!(sweep_on(at(2028, 4, 10)), 1);
    assert_eq!(
        accounts::get(&p.app.store, &addr).unwrap().unwrap().state,
        AccountState::Suspended
    );
    assert!(!mailbox(&p, MARIO).iter().any(|m| m.contains("5.2.1")));
    submit(&p, MARIO, "password-mario", &addr, "Sospesa").unwrap();
    wait_for("mancata consegna 5.2.1", 20, || {
        mailbox(&p, MARIO).iter().any(|m| m.contains("5.2.1"))
    });
    // Deleted a year after the suspension; the address is kept for the
    // same codice fiscale only.
    assert_eq!(sweep_on(at(2029, 4, 10)), 0);
    assert_eq!(sweep_on(at(2029, 4, 11)), 1);
    assert!(accounts::get(&p.app.store, &addr).unwrap().is_none());
    let now = p.clock.now_utc();
    let other = tenants::create_member(
        &p.app.store,
        &p.app.cfg(),
        &order,
        &new(holder("Lucia", "Bianchi", 2)),
        "test",
        now,
    )
    .unwrap();
    assert_eq!(other.address, "lucia.bianchi.2@pec.provider-a.test");
    let same = tenants::create_member(
        &p.app.store,
        &p.app.cfg(),
        &order,
        &new(holder("Lucia", "Bianchi", 1)),
        "test",
        now,
    )
    .unwrap();
    assert_eq!(same.address, addr);
    // The new mailbox starts empty: the old messages were set aside.
    assert!(mailbox(&p, &addr).is_empty());
    let aside = p.app.cfg().data_dir.join("mail/.removed");
    assert_eq!(std::fs::read_dir(&aside).unwrap().count(), 1);
    // Every step is on the legal log.
    let log = pecd::audit::search(
        &p.app.store,
        &pecd::audit::Filter {
            to: Some(addr.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let details: Vec<String> = log.iter().filter_map(|(_, r)| r.detail.clone()).collect();
    for want in [
        "expiry reminder 2028-01-10/90",
        "Active → Expired",
        "Expired → Suspended",
        "deleted after suspension",
    ] {
        assert!(
            details.iter().any(|d| d.contains(want)),
            "{want}: {details:?}"
        );
    }
}

#[test]
fn convention_mailboxes_downgrade_at_expiry_and_renewal_counts_from_expiry() {
    let p = provider();
    let now = p.clock.now_utc();
    let order = lodi(&p, "", Activation::Immediate);
    let mk = |n: &str, serial: u32| {
        tenants::create_member(
            &p.app.store,
            &p.app.cfg(),
            &order,
            &NewMember {
                holder: holder(n, "Verdi", serial),
                alias: None,
                plan: Some("avanzata".into()),
            },
            "test",
            now,
        )
        .unwrap()
        .address
    };
    let (anna, bruno) = (mk("Anna", 3), mk("Bruno", 4));
    for a in [&anna, &bruno] {
        accounts::update(&p.app.store, a, now, "add-ons", |x| {
            x.addons = 3;
            Ok(())
        })
        .unwrap();
    }
    // Shown before it happens…
    let acc = accounts::get(&p.app.store, &anna).unwrap().unwrap();
    let plan = p.app.downgrade_plan(&acc).unwrap();
    assert_eq!(
        (
            plan.from_plan.as_str(),
            plan.to_plan.as_str(),
            plan.addons_dropped
        ),
        ("avanzata", "convenzione", 3)
    );
    assert_eq!(plan.inbox_quota_after, 1 << 30);
    // …Bruno renews early (from the expiry date, not from today)…
    p.clock.set(at(2027, 11, 20));
    let today = pecd::clock::LegalTime::new(p.clock.now_utc()).date();
    accounts::update(&p.app.store, &bruno, p.clock.now_utc(), "renewed", |x| {
        pecd::lifecycle::renew(x, 1, today);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        accounts::get(&p.app.store, &bruno)
            .unwrap()
            .unwrap()
            .expires
            .unwrap()
            .to_string(),
        "2029-01-10"
    );
    // …and at expiry Anna falls back to the convention plan, add-ons gone,
    // still active, for a new term.
    p.clock.set(at(2028, 1, 11));
    p.app.sweep().unwrap();
    let a = accounts::get(&p.app.store, &anna).unwrap().unwrap();
    assert_eq!(
        (a.plan.as_str(), a.addons, a.state),
        ("convenzione", 0, AccountState::Active)
    );
    assert_eq!(a.expires.unwrap().to_string(), "2029-01-10");
    // Anna is told what the downgrade took, with the figures (and no
    // reminder of an expiry already past: the sweep came after it).
    wait_for("the downgrade notice", 20, || !texts(&p, &anna).is_empty());
    let texts = texts(&p, &anna);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("è passata al piano convenzione")
            && texts[0].contains("i 3 spazi aggiuntivi acquistati sono decaduti")
            && texts[0].contains("1,00 GB"),
        "{texts:?}"
    );
    let b = accounts::get(&p.app.store, &bruno).unwrap().unwrap();
    assert_eq!((b.plan.as_str(), b.addons), ("avanzata", 3));
}

#[test]
fn a_pending_mailbox_is_blocked_after_30_days_and_the_order_unblocks_it() {
    let p = provider();
    let now = p.clock.now_utc();
    let order = lodi(&p, "", Activation::FirstAccess);
    let m = NewMember {
        holder: holder("Pia", "Gallo", 5),
        alias: None,
        plan: None,
    };
    let c = tenants::create_member(&p.app.store, &p.app.cfg(), &order, &m, "test", now).unwrap();
    assert_eq!(c.state, AccountState::PendingActivation);
    assert!(tenants::unblock(&p.app.store, "ordine-lodi", &c.address, "test", now).is_err());
    p.clock.set(now + chrono::Duration::days(29));
    assert_eq!(p.app.sweep().unwrap().actions, 0);
    p.clock.set(now + chrono::Duration::days(31));
    assert_eq!(p.app.sweep().unwrap().actions, 1);
    let acc = accounts::get(&p.app.store, &c.address).unwrap().unwrap();
    assert_eq!(acc.state, AccountState::Suspended);
    assert!(acc.state_reason.starts_with("no first access"));
    // Another order cannot; its own order can, and the window reopens.
    assert!(
        tenants::unblock(
            &p.app.store,
            "ordine-milano",
            &c.address,
            "test",
            p.clock.now_utc()
        )
        .is_err()
    );
    let acc = tenants::unblock(
        &p.app.store,
        "ordine-lodi",
        &c.address,
        "test",
        p.clock.now_utc(),
    )
    .unwrap();
    assert_eq!(acc.state, AccountState::PendingActivation);
    assert_eq!(p.app.sweep().unwrap().actions, 0);
    // Struck off before any access: no term is running, so it ends now
    // (left pending, a first access would have made it an ordinary
    // mailbox again).
    let acc = tenants::cancel(
        &p.app.store,
        "ordine-lodi",
        &c.address,
        &tenants::Cancellation::StruckOff,
        "test",
        p.clock.now_utc(),
    )
    .unwrap();
    assert_eq!(acc.state, AccountState::Cancelled);
}

#[test]
fn a_downgrade_moves_the_oldest_excess_into_the_archive_when_configured() {
    let p = provider();
    let now = p.clock.now_utc();
    let order = lodi(&p, "", Activation::Immediate);
    let m = NewMember {
        holder: holder("Ugo", "Grandi", 9),
        alias: None,
        plan: Some("grande".into()),
    };
    let c = tenants::create_member(&p.app.store, &p.app.cfg(), &order, &m, "test", now).unwrap();
    for i in 0..4 {
        submit(
            &p,
            MARIO,
            "password-mario",
            &c.address,
            &format!("Pieno {i}"),
        )
        .unwrap();
    }
    let inbox_bytes = |p: &Provider| -> u64 {
        let dir =
            pecd::maildir::mailbox_path(&p.app.cfg().data_dir.join("mail"), &c.address).unwrap();
        ["new", "cur"]
            .iter()
            .flat_map(|s| std::fs::read_dir(dir.join(s)).into_iter().flatten())
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    wait_for("four envelopes", 20, || mailbox(&p, &c.address).len() == 4);
    let before = inbox_bytes(&p);
    assert!(before > 10 * 1024, "{before}");
    let acc = accounts::get(&p.app.store, &c.address).unwrap().unwrap();
    // A plan the configuration no longer has means the first plan, not
    // no quota at all.
    let mut gone = acc.clone();
    gone.plan = "sparito".into();
    assert_eq!(
        p.app.plan_of(&gone).map(|x| x.name),
        p.app.cfg().plans.first().map(|x| x.name.clone())
    );
    let plan = p.app.downgrade_plan(&acc).unwrap();
    assert_eq!(
        (plan.to_plan.as_str(), plan.excess_policy.as_str()),
        ("piccolo", "archive")
    );
    assert!(
        plan.moves_to_archive > 0 && plan.inbox_over_by > 0,
        "{plan:?}"
    );
    // Another holder whose own IMAP folder alone is over the new space:
    // emptying her INBOX would not make it fit, so it stays as it is.
    let ada = member(&p, &order, "Ada", "Piena", 10, "grande");
    for i in 0..2 {
        submit(&p, MARIO, "password-mario", &ada, &format!("Ada {i}")).unwrap();
    }
    wait_for("Ada's envelopes", 20, || mailbox(&p, &ada).len() == 2);
    let trash = pecd::maildir::Maildir::open_folder(
        &pecd::maildir::mailbox_path(&p.app.cfg().data_dir.join("mail"), &ada).unwrap(),
        ".Trash",
    )
    .unwrap();
    std::fs::write(
        trash.root().join("cur").join("old:2,S"),
        vec![b'x'; 40 * 1024],
    )
    .unwrap();
    // Expiry: downgraded, and the oldest messages moved until the inbox fits.
    p.clock.set(at(2028, 1, 11));
    p.app.sweep().unwrap();
    let envelopes = |a: &str| {
        mailbox(&p, a)
            .iter()
            .filter(|m| m.contains("X-Trasporto: posta-certificata"))
            .count()
    };
    assert_eq!(envelopes(&ada), 2, "Ada's INBOX untouched");
    // Downgraded all the same, and told how much she is over.
    let ada_now = accounts::get(&p.app.store, &ada).unwrap().unwrap();
    assert_eq!(ada_now.plan, "piccolo");
    wait_for("Ada's notice", 20, || {
        texts(&p, &ada)
            .iter()
            .any(|t| t.contains("supera ancora di"))
    });
    let a = accounts::get(&p.app.store, &c.address).unwrap().unwrap();
    assert_eq!(a.plan, "piccolo");
    assert!(inbox_bytes(&p) <= 10 * 1024, "{}", inbox_bytes(&p));
    // Each message once in the archive: the ones that had their copy there
    // already were not moved in a second time.
    let dir = pecd::maildir::mailbox_path(&p.app.cfg().data_dir.join("mail"), &c.address)
        .unwrap()
        .join(pecd::maildir::ARCHIVE_FOLDER);
    let names: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(dir.join(s)).into_iter().flatten())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut ids: Vec<&str> = names
        .iter()
        .map(|n| n.split(",S=").next().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), names.len(), "{names:?}");
    assert!(names.len() >= 4, "{names:?}");
    let log = pecd::audit::search(
        &p.app.store,
        &pecd::audit::Filter {
            to: Some(c.address.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(log.iter().any(|(_, r)| {
        r.detail
            .as_deref()
            .is_some_and(|d| d.contains("moved to the archive"))
    }));
}

/// One account the sweep cannot change (here a record whose address no
/// Maildir can be made for, so its downgrade cannot move its mail) is
/// reported and left for the next sweep; the accounts after it are still
/// downgraded.
#[test]
fn one_broken_account_does_not_stop_the_sweep() {
    let p = provider();
    let order = lodi(&p, "", Activation::Immediate);
    let lia = member(&p, &order, "Lia", "Neri", 5, "grande");
    // A record sorting before Lia's, due the same downgrade.
    let mut broken = accounts::get(&p.app.store, &lia).unwrap().unwrap();
    broken.address = ".rotto@pec.provider-a.test".into();
    let mut b = pecd::store::Batch::new();
    accounts::put(&mut b, &broken);
    p.app.store.commit(b).unwrap();
    p.clock.set(at(2028, 1, 11));
    let swept = p.app.sweep().unwrap();
    assert_eq!(
        swept.failed,
        [broken.address.clone()],
        "named in the report"
    );
    let plan = |a: &str| accounts::get(&p.app.store, a).unwrap().unwrap().plan;
    assert_eq!(plan(&lia), "piccolo");
    assert_eq!(
        plan(&broken.address),
        "grande",
        "tried again at the next sweep"
    );
}

/// RT §8.2: the purge removes records past the retention (30 months,
/// `audit` tests), measured on a clock that cannot leap: a wall clock
/// stepped years ahead does not delete records the law says to keep.
#[test]
fn the_log_purge_is_not_fooled_by_a_clock_stepped_ahead() {
    let p = provider();
    let all = || pecd::audit::search(&p.app.store, &Default::default()).unwrap();
    let before = all().len();
    assert!(before > 0, "the set-up's own records, of 10/1/2027");
    // The wall clock now says 2031: by it, they would all be past 30
    // months; by the time this process has really run, none is.
    p.clock.set(at(2031, 1, 1));
    assert_eq!(p.app.purge_log().unwrap(), 0);
    assert_eq!(all().len(), before);
    assert!(matches!(
        p.app.verify_log().unwrap(),
        pecd::audit::ChainStatus::Intact { .. }
    ));
}

/// A session authenticated before its mailbox was suspended sends no more
/// than a new session could.
#[test]
fn a_session_opened_before_a_suspension_cannot_send_after_it() {
    let p = provider();
    let env = || pecd::smtp::session::Envelope {
        mail_from: MARIO.into(),
        rcpt_to: vec![MARIO.into()],
        authenticated: Some(MARIO.into()),
        tls: true,
        helo: "client".into(),
        esmtp: true,
        rcpt_overflow: 0,
        data: format!("From: {MARIO}\r\nTo: {MARIO}\r\nSubject: x\r\n\r\nx\r\n").into_bytes(),
        peer: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let submit = |e| {
        let app = p.app.clone();
        rt.block_on(async move { tokio::task::spawn_blocking(move || app.submit(e)).await })
            .unwrap()
    };
    assert_eq!(submit(env()).code, 250);
    accounts::update(&p.app.store, MARIO, p.clock.now_utc(), "test", |a| {
        a.state = AccountState::Suspended;
        Ok(())
    })
    .unwrap();
    let r = submit(env());
    assert_eq!(r.code, 550, "{r:?}");
}
