//! The Ordini at national scale: N mailboxes (default 1,000,000) in the
//! store, then, in one run: daemon start (spawn `pecd serve` until its
//! listeners are up), the daily lifecycle sweep (a quiet day, and a day
//! when every mailbox is due a reminder is not realistic: 1/365 are),
//! the national INI-PEC export, and a mailbox lookup at delivery.
//!
//! Run: `cargo bench --bench ordini` (PECD_BENCH_MAILBOXES to change N).
//! Last line: `mailboxes=… start_s=… sweep_s=… sweep_due_s=… export_s=… lookup_us=…`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use chrono::{Duration as Days, TimeZone, Utc};
use common::daemon::free_port;
use common::{certs, pecd};
use pecd::accounts::{Account, AccountState, Holder};
use pecd::store::{Batch, Store, Table};
use std::io::{BufRead, BufReader};
use std::time::Instant;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("PECD_BENCH_MAILBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let created = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
    // One real argon2 hash shared by every account (hashing a million
    // passwords would measure argon2, not pecd).
    let hash = pecd::accounts::hash_password("bench-password").unwrap();
    let t = Instant::now();
    {
        let store = Store::open(&data.join("store"), "redb").unwrap();
        let mut b = Batch::new();
        for i in 0..n {
            let tenant = format!("ordine-{:03}", i % 100);
            let address = format!("iscritto.{i}@pec.ordini.test");
            let first15 = format!("BNCLCU80A{:02}H{:03}", 1 + i % 28, i % 1000);
            let check = pecd::membership::tax_code::check_char(first15.as_bytes());
            let acc = Account {
                address: address.clone(),
                password_hash: hash.clone(),
                state: AccountState::Active,
                created,
                plan: String::new(),
                addons: 0,
                holder: Holder {
                    nome: "Iscritto".into(),
                    cognome: format!("Numero{i}"),
                    codice_fiscale: format!("{first15}{check}"),
                    indirizzo: "Via Roma 1".into(),
                    comune: "Lodi".into(),
                    provincia: "LO".into(),
                    cap: "26900".into(),
                    reference_email: format!("iscritto.{i}@casa.test"),
                    ..Default::default()
                },
                quota_warned: 0,
                tenant: tenant.clone(),
                // Expiries spread over a year.
                expires: Some((created + Days::days(365 + (i % 365) as i64)).date_naive()),
                reminders: Vec::new(),
                state_since: Some(created),
                state_reason: "created".into(),
                archive_full_warned: false,
                archive_warned_at: None,
            };
            pecd::accounts::put(&mut b, &acc);
            b.put(
                Table::Tenants,
                format!("member/{tenant}/{address}").into_bytes(),
                Vec::new(),
            );
            if b.ops.len() >= 20_000 {
                store.commit(std::mem::take(&mut b)).unwrap();
            }
        }
        store.commit(b).unwrap();
    }
    eprintln!("loaded {n} mailboxes in {:.1} s", t.elapsed().as_secs_f64());

    // Daemon start: `pecd serve` until it prints its inbound listener.
    let c = certs();
    let cfg = dir.path().join("pecd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"data_dir = "{data}"
[provider]
name = "Provider A"
domain = "pec.provider-a.test"
local_domains = ["pec.ordini.test"]
signing_cert = "{c}/provider-a.pem"
signing_key = "{c}/provider-a.key"
trust_anchors = "{c}/ca.pem"
provider_index = "{c}/index.ldif"
[tls]
cert = "{c}/localhost.pem"
key = "{c}/localhost.key"
[listen]
submission = "127.0.0.1:{}"
inbound = "127.0.0.1:{}"
"#,
            free_port(),
            free_port(),
            data = data.display(),
            c = c.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let mut child = pecd()
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("PECD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("listening inbound") => break,
            Some(Ok(_)) => {}
            _ => panic!("daemon did not start"),
        }
    }
    let start_s = t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();

    // The sweep and the export on the library, with a clock.
    let config = pecd::config::Config::load(&cfg).unwrap();
    let clock = std::sync::Arc::new(pecd::clock::ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
    ));
    let app = pecd::app::App::open_with_clock(config, clock.clone()).unwrap();
    let t = Instant::now();
    let quiet = app.sweep().unwrap().actions;
    let sweep_s = t.elapsed().as_secs_f64();
    assert_eq!(quiet, 0);
    // A day when the 90-day reminders of 1/365 of the mailboxes fall due.
    clock.set(Utc.with_ymd_and_hms(2026, 10, 4, 9, 0, 0).unwrap());
    let t = Instant::now();
    let due = app.sweep().unwrap().actions;
    let sweep_due_s = t.elapsed().as_secs_f64();
    eprintln!("reminders sent on the busy day: {due}");

    let t = Instant::now();
    let mut out = Vec::with_capacity(n * 64);
    let rows = pecd::tenants::export(&app.store, None, false, &mut out).unwrap();
    let export_s = t.elapsed().as_secs_f64();
    assert_eq!(rows, n);

    let lookups = 100_000;
    let t = Instant::now();
    let mut x = 12345u64;
    for _ in 0..lookups {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (x >> 33) as usize % n;
        let a = pecd::accounts::get(&app.store, &format!("iscritto.{i}@pec.ordini.test")).unwrap();
        assert!(a.is_some_and(|a| a.state.can_receive()));
    }
    let lookup_us = t.elapsed().as_secs_f64() * 1e6 / lookups as f64;
    println!(
        "mailboxes={n} start_s={start_s:.2} sweep_s={sweep_s:.2} sweep_due_s={sweep_due_s:.2} export_s={export_s:.2} lookup_us={lookup_us:.1}"
    );
}
