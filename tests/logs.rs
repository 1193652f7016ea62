//! The operational log in JSON: stable event names and fields (`event`,
//! `msg_id`, `pec_id`, `from`, `to`, `tenant`) for every legal event, and
//! never a password or a message body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

#[test]
fn json_logs_carry_stable_fields_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    d.kill();
    let log = dir.path().join("stderr.json");
    let mut child = common::pecd()
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&d.cfg)
        .env("PECD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines
        .next()
        .unwrap()
        .unwrap()
        .starts_with("listening inbound")
    {}
    d.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[MARIO],
        format!("From: {MARIO}\r\nTo: {MARIO}\r\nSubject: Riservato\r\nMessage-ID: <log1@client.test>\r\n\r\nTesto segreto del corpo.\r\n").as_bytes(),
    )
    .unwrap();
    wait_for("consegna", 20, || d.mailbox(MARIO).len() >= 3);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("password-mario"), "a password in the log");
    assert!(!text.contains("Testo segreto"), "a message body in the log");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let acceptance = events
        .iter()
        .find(|e| e["fields"]["event"] == "acceptance")
        .expect("an acceptance event");
    let f = &acceptance["fields"];
    assert_eq!(f["msg_id"], "<log1@client.test>");
    assert!(
        f["pec_id"]
            .as_str()
            .unwrap()
            .ends_with("@pec.provider-a.test")
    );
    assert_eq!(f["from"], MARIO);
    assert_eq!(f["to"], MARIO);
    assert!(f.get("tenant").is_some());
    for name in ["delivered", "taken-in-charge-sent", "receipt-received"] {
        assert!(
            events.iter().any(|e| e["fields"]["event"] == name),
            "{name}"
        );
    }
}
