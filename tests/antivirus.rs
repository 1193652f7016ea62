//! Virus checks (RT §8.4) against a real clamd (Debian's clamav-daemon)
//! started here on 127.0.0.1 with a one-signature database (EICAR), no
//! download needed: infected submission → avviso di non accettazione per
//! virus; infected envelope at the recipient's provider → rilevazione virus
//! to the sender's provider → avviso di mancata consegna per virus to the
//! sender; clamd down → 451 (tempfail). Infected messages are kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MARIO: &str = "mario.rossi@pec.provider-a.test";
const GIULIA: &str = "giulia.bianchi@pec.provider-b.test";
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

struct Clamd {
    child: Child,
    port: u16,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clamd(dir: &std::path::Path) -> Clamd {
    let db = dir.join("clamdb");
    std::fs::create_dir_all(&db).unwrap();
    let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.join("pecd-test.ndb"),
        format!("Eicar-Test-Signature:0:*:{hex}\n"),
    )
    .unwrap();
    let port = free_port();
    let conf = dir.join("clamd.conf");
    std::fs::write(
        &conf,
        format!(
            "Foreground yes\nLogFile {log}\nDatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nScanMail yes\n",
            log = dir.join("clamd.log").display(),
            db = db.display()
        ),
    )
    .unwrap();
    let bin = ["/usr/sbin/clamd", "/usr/bin/clamd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("clamd is installed (.ci/run installs clamav-daemon)");
    let child = Command::new(bin)
        .arg(format!("--config-file={}", conf.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"zPING\0");
            let mut r = Vec::new();
            let _ = s.read_to_end(&mut r);
            if r.starts_with(b"PONG") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "clamd did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    Clamd { child, port }
}

fn infected(from: &str, to: &str, subject: &str) -> Vec<u8> {
    use base64::Engine as _;
    let att = base64::engine::general_purpose::STANDARD.encode(EICAR);
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"eicar.com\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{att}\r\n--b1--\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

fn with_header(d: &Daemon, address: &str, header: &str) -> usize {
    d.mailbox(address)
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains(header))
        .count()
}

fn virus_store(d: &Daemon) -> usize {
    ["new", "cur"]
        .iter()
        .map(|s| std::fs::read_dir(d.data.join("virus").join(s)).map_or(0, |r| r.count()))
        .sum()
}

#[test]
fn infected_mail_is_refused_at_submission_and_clean_mail_passes() {
    let dir = tempfile::tempdir().unwrap();
    let av = clamd(dir.path());
    let scan = format!("[antivirus]\nclamd = \"127.0.0.1:{}\"\n", av.port);
    let (a_in, b_in) = (free_port(), free_port());
    // A scans at submission.
    let a = Daemon::start(Spec {
        extra: &scan,
        ..Spec::new('a', dir.path(), a_in, vec![("pec.provider-b.test", b_in)])
    });
    let b = Daemon::start(Spec {
        extra: &scan,
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    let err = a
        .submit(
            MARIO,
            "password-mario",
            MARIO,
            &[GIULIA],
            &infected(MARIO, GIULIA, "Con virus"),
        )
        .unwrap_err();
    assert!(err.contains("5.7.1") || err.contains("virus"), "{err}");
    wait_for("non accettazione per virus", 20, || {
        with_header(&a, MARIO, "AVVISO DI NON ACCETTAZIONE PER VIRUS") == 1
    });
    assert_eq!(with_header(&a, MARIO, "X-VerificaSicurezza: errore"), 1);
    assert_eq!(virus_store(&a), 1);
    // A clean message still goes through.
    a.submit(MARIO, "password-mario", MARIO, &[GIULIA], b"From: mario.rossi@pec.provider-a.test\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: Pulito\r\nMessage-ID: <pulito@client.test>\r\n\r\nTesto.\r\n")
        .unwrap();
    wait_for("consegna", 30, || {
        with_header(&a, MARIO, "X-Ricevuta: avvenuta-consegna") == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !b.mailbox(GIULIA)
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("Con virus"))
    );
}

#[test]
fn a_virus_missed_by_the_sender_is_caught_by_the_recipients_provider() {
    let dir = tempfile::tempdir().unwrap();
    let av = clamd(dir.path());
    let (a_in, b_in) = (free_port(), free_port());
    // A does not scan (its scanner "missed" it); B does.
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let scan = format!("[antivirus]\nclamd = \"127.0.0.1:{}\"\n", av.port);
    let b = Daemon::start(Spec {
        extra: &scan,
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    a.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[GIULIA],
        &infected(MARIO, GIULIA, "Sfuggito"),
    )
    .unwrap();
    wait_for("mancata consegna per virus", 30, || {
        with_header(&a, MARIO, "AVVISO DI MANCATA CONSEGNA PER VIRUS") == 1
    });
    // A's service mailbox has B's rilevazione virus; B delivered nothing and
    // kept the message.
    wait_for("rilevazione virus", 20, || {
        with_header(
            &a,
            "posta-certificata@pec.provider-a.test",
            "X-Ricevuta: rilevazione-virus",
        ) == 1
    });
    assert!(b.mailbox(GIULIA).is_empty());
    assert_eq!(virus_store(&b), 1);
    assert_eq!(with_header(&a, MARIO, "X-Ricevuta: avvenuta-consegna"), 0);
    // Infected ordinary mail is not wrapped and signed for Giulia either
    // (RT §9: dropped), but kept with the other infected messages.
    let reply = send_inbound(
        b_in,
        "someone@example.com",
        GIULIA,
        &infected("someone@example.com", GIULIA, "Ordinaria"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("kept", 20, || virus_store(&b) == 2);
    std::thread::sleep(Duration::from_millis(500));
    assert!(b.mailbox(GIULIA).is_empty());
}

#[test]
fn with_clamd_down_submissions_get_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let scan = format!(
        "[antivirus]\nclamd = \"127.0.0.1:{}\"\ntimeout = \"2s\"\n",
        free_port()
    );
    let a = Daemon::start(Spec {
        extra: &scan,
        ..Spec::new('a', dir.path(), free_port(), vec![])
    });
    let err = a
        .submit(MARIO, "password-mario", MARIO, &[MARIO], b"From: mario.rossi@pec.provider-a.test\r\nTo: mario.rossi@pec.provider-a.test\r\nSubject: x\r\nMessage-ID: <x@client.test>\r\n\r\nx\r\n")
        .unwrap_err();
    assert!(
        err.contains("4.7.0") || err.contains("451") || err.contains("transient"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.mailbox(MARIO).is_empty(), "nothing accepted");
}
