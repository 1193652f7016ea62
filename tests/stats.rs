//! `pecd stats` and `pecd outage add` against a running daemon: the AgID
//! P01 figures move with real traffic, P02 lists the recorded outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Datelike;
use common::daemon::*;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

#[test]
fn stats_of_the_current_quadrimestre_count_real_traffic_and_outages() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    for i in 0..2 {
        d.submit(
            MARIO,
            "password-mario",
            MARIO,
            &[MARIO],
            format!("From: {MARIO}\r\nTo: {MARIO}\r\nSubject: s{i}\r\nMessage-ID: <s{i}@client.test>\r\n\r\nx\r\n").as_bytes(),
        )
        .unwrap();
    }
    wait_for("two consegne", 20, || d.mailbox(MARIO).len() >= 6);
    let now = chrono::Utc::now();
    let period = format!("{}-Q{}", now.year(), 1 + (now.month() - 1) / 4);
    let run = |args: &[&str]| common::pecd_ok(args, &d.cfg);
    let start = (now - chrono::Duration::hours(2)).to_rfc3339();
    let end = (now - chrono::Duration::hours(1)).to_rfc3339();
    run(&[
        "outage",
        "add",
        "--start",
        &start,
        "--end",
        &end,
        "--kind",
        "planned",
        "--note",
        "aggiornamento",
    ]);
    let csv = run(&["stats", "--period", &period]);
    assert!(csv.contains(&format!("P01;{period};domini;2\n")), "{csv}");
    assert!(
        csv.contains(&format!("P01;{period};ricevute_accettazione;2\n")),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("P01;{period};prese_in_carico_altri_gestori;0\n")),
        "{csv}"
    );
    assert!(csv.contains(";programmato;60;si\n"), "{csv}");
    assert!(csv.ends_with(";100.0000;si\n"), "{csv}");
    // A wrong period is named.
    let out = common::pecd()
        .args(["stats", "--period", "2026-Q4", "--config"])
        .arg(&d.cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("YYYY-Q1"));
}
