//! Configuration reload on a running daemon (SIGHUP and `POST /reload`): a
//! broken file is refused with every error and the daemon keeps serving on
//! the old configuration; a new signing certificate signs the next message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::certs;
use common::daemon::*;
use std::time::Duration;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: {MARIO}\r\nTo: {MARIO}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\nTesto.\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// The signer certificate (PEM subject line) of a signed message.
fn signer_subject(msg: &[u8], dir: &std::path::Path) -> String {
    let f = dir.join("m.eml");
    std::fs::write(&f, msg).unwrap();
    let p7 = std::process::Command::new("openssl")
        .args(["smime", "-pk7out", "-in"])
        .arg(&f)
        .output()
        .unwrap();
    let p7f = dir.join("m.p7");
    std::fs::write(&p7f, &p7.stdout).unwrap();
    let certs = std::process::Command::new("openssl")
        .args(["pkcs7", "-print_certs", "-noout", "-in"])
        .arg(&p7f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&certs.stdout).into_owned()
}

fn hup(d: &Daemon) {
    let pid = d.child.as_ref().unwrap().id();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn acceptances(d: &Daemon) -> Vec<Vec<u8>> {
    d.mailbox(MARIO)
        .into_iter()
        .filter(|m| String::from_utf8_lossy(m).contains("X-Ricevuta: accettazione"))
        .collect()
}

#[test]
fn a_broken_file_is_refused_and_a_new_certificate_signs_the_next_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    let good = std::fs::read_to_string(&d.cfg).unwrap();
    // Broken: an unknown key and a plan without inbox.
    std::fs::write(
        &d.cfg,
        format!("{good}\n[[plans]]\nname = \"x\"\ncolour = \"red\"\n"),
    )
    .unwrap();
    hup(&d);
    let (s, v) = d.api(&d.admin_token(), "POST", "/reload", None);
    assert_eq!(s, 422, "{v}");
    let errors = v["errors"].to_string();
    assert!(errors.contains("plans"), "{errors}");
    // Still serving, on the old configuration.
    d.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[MARIO],
        &message("Dopo errore"),
    )
    .unwrap();
    wait_for("accettazione", 20, || acceptances(&d).len() == 1);
    let first = signer_subject(&acceptances(&d)[0], dir.path());
    assert!(first.contains("Provider A"), "{first}");
    // A new signing identity, by SIGHUP.
    let c = certs();
    let swapped = good
        .replace(
            &format!("{}/provider-a.pem", c.display()),
            &format!("{}/rogue.pem", c.display()),
        )
        .replace(
            &format!("{}/provider-a.key", c.display()),
            &format!("{}/rogue.key", c.display()),
        );
    assert_ne!(swapped, good);
    std::fs::write(&d.cfg, swapped).unwrap();
    hup(&d);
    std::thread::sleep(Duration::from_millis(500));
    d.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[MARIO],
        &message("Dopo ricarica"),
    )
    .unwrap();
    wait_for("second accettazione", 20, || acceptances(&d).len() == 2);
    let subjects: Vec<String> = acceptances(&d)
        .iter()
        .map(|m| signer_subject(m, dir.path()))
        .collect();
    assert!(
        subjects.iter().any(|s| !s.contains("Provider A")),
        "the next message is signed with the new certificate: {subjects:?}"
    );
    // What only a restart changes is refused.
    let moved = std::fs::read_to_string(&d.cfg).unwrap().replacen(
        "data_dir = \"",
        "data_dir = \"/elsewhere",
        1,
    );
    std::fs::write(&d.cfg, moved).unwrap();
    let (s, v) = d.api(&d.admin_token(), "POST", "/reload", None);
    assert_eq!(s, 422);
    assert!(v["errors"].to_string().contains("data_dir"), "{v}");
    // So is a connection limit (its pools are sized at start): said, not
    // accepted and ignored.
    let text = std::fs::read_to_string(&d.cfg).unwrap().replacen(
        "data_dir = \"/elsewhere",
        "data_dir = \"",
        1,
    );
    let limited = text.replacen("[limits]\n", "[limits]\nmax_connections = 7\n", 1);
    assert_ne!(limited, text);
    std::fs::write(&d.cfg, limited).unwrap();
    let (s, v) = d.api(&d.admin_token(), "POST", "/reload", None);
    assert_eq!(s, 422);
    assert!(
        v["errors"].to_string().contains("limits.max_connections"),
        "{v}"
    );
}
