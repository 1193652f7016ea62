//! Users' mail programs against a real daemon: `swaks` (Debian's SMTP test
//! tool) and Python's `smtplib`, both with STARTTLS and AUTH, as a mail
//! client would submit. Each message gets its ricevuta di accettazione.
//! `.ci/run` installs swaks when missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::certs;
use common::daemon::*;
use std::process::Command;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

fn acceptances(d: &Daemon) -> usize {
    d.mailbox(MARIO)
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains("X-Ricevuta: accettazione"))
        .count()
}

#[test]
fn swaks_submits_with_starttls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port"])
        .arg(d.ports.submission.to_string())
        .args(["--tls", "--tls-verify", "--tls-ca-path"])
        .arg(certs().join("ca.pem"))
        .args([
            "--tls-sni",
            "localhost",
            "--auth",
            "PLAIN",
            "--auth-user",
            MARIO,
        ])
        .args([
            "--auth-password",
            "password-mario",
            "--from",
            MARIO,
            "--to",
            MARIO,
        ])
        .args([
            "--header",
            "Subject: prova swaks",
            "--body",
            "Testo inviato con swaks.",
        ])
        .output()
        .expect("swaks is installed (.ci/run installs it)");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("250 2.0.0"), "{transcript}");
    wait_for("accettazione", 20, || acceptances(&d) == 1);
}

#[test]
fn python_smtplib_submits_with_starttls_and_login() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={ca:?})
s = smtplib.SMTP("localhost", {port}, timeout=20)
s.ehlo()
s.starttls(context=ctx)
s.ehlo()
assert "auth" in s.esmtp_features, s.esmtp_features
s.login({user:?}, "password-mario")
msg = "From: {user}\r\nTo: {user}\r\nSubject: prova smtplib\r\nMessage-ID: <smtplib@client.test>\r\n\r\nTesto.\r\n"
refused = s.sendmail({user:?}, [{user:?}], msg)
assert refused == {{}}, refused
s.quit()
print("sent")
"#,
        ca = certs().join("ca.pem").display().to_string(),
        port = d.ports.submission,
        user = MARIO,
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("accettazione", 20, || acceptances(&d) == 1);
}
