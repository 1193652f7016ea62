//! Two real pecd daemons, provider A and provider B, on 127.0.0.1 with free
//! ports, exchanging PEC over SMTP; submission through a real SMTP client
//! library (lettre) with STARTTLS + AUTH.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use common::*;
use pecd::index::ProviderIndex;
use pecd::report::{Checker, Outcome};
use pecd::smime::{Verifier, VerifyTime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn checker() -> Checker {
    Checker {
        verifier: Verifier::with_anchors(
            pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap(),
        )
        .unwrap(),
        index: Some(
            ProviderIndex::from_ldif(&std::fs::read_to_string(certs().join("index.ldif")).unwrap())
                .unwrap(),
        ),
        when: VerifyTime::Now,
    }
}

/// (kind, daticert) of each message, all verified as genuine PEC with
/// openssl's CLI and the DTD on the way.
fn kinds(msgs: &[Vec<u8>]) -> Vec<(String, pecd::pec::daticert::Daticert)> {
    let c = checker();
    msgs.iter()
        .map(|m| {
            openssl_verify(m).unwrap();
            let r = c.check("m", m);
            assert_eq!(r.outcome, Outcome::Pec, "{:?}", r.reason);
            let xml = part_named(m, "daticert.xml").unwrap();
            xmllint_dtd(&xml).unwrap();
            (r.kind.unwrap(), r.daticert.unwrap())
        })
        .collect()
}

/// Mario submits `subject` to `to` (RCPT as To) through `d`; it must be
/// accepted.
fn mario_sends(d: &Daemon, to: &[&str], subject: &str) {
    d.submit(
        MARIO,
        "password-mario",
        MARIO,
        to,
        &message(MARIO, to, &[], "", subject),
    )
    .unwrap();
}

fn message(from: &str, to: &[&str], cc: &[&str], extra: &str, subject: &str) -> Vec<u8> {
    let mut m = format!("From: {from}\r\nTo: {}\r\n", to.join(", "));
    if !cc.is_empty() {
        m.push_str(&format!("Cc: {}\r\n", cc.join(", ")));
    }
    m.push_str(&format!(
        "Subject: {subject}\r\nMessage-ID: <{}@client.test>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nTesto della prova.\r\n--b1\r\nContent-Type: application/pdf; name=\"atto.pdf\"\r\nContent-Disposition: attachment; filename=\"atto.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n",
        subject.replace(' ', "-")
    ));
    m.into_bytes()
}

fn pair(dir: &Path, warning: &str, final_after: &str) -> (Daemon, Daemon) {
    pair_with(dir, warning, final_after, ["", ""])
}

/// [`pair`] with extra TOML for A and for B.
fn pair_with(dir: &Path, warning: &str, final_after: &str, extra: [&str; 2]) -> (Daemon, Daemon) {
    let (a_in, b_in) = (free_port(), free_port());
    let spec = |who, inbound, peer: char, peer_in| Spec {
        warning,
        final_after,
        extra: if who == 'a' { extra[0] } else { extra[1] },
        ..Spec::new(
            who,
            dir,
            inbound,
            vec![
                (
                    if peer == 'a' {
                        "pec.provider-a.test"
                    } else {
                        "pec.provider-b.test"
                    },
                    peer_in,
                ),
                (
                    if peer == 'a' {
                        "mail.provider-a.test"
                    } else {
                        "mail.provider-b.test"
                    },
                    peer_in,
                ),
            ],
        )
    };
    let a = Daemon::start(spec('a', a_in, 'b', b_in));
    let b = Daemon::start(spec('b', b_in, 'a', a_in));
    (a, b)
}

const MARIO: &str = "mario.rossi@pec.provider-a.test";
const GIULIA: &str = "giulia.bianchi@pec.provider-b.test";
const LUCA: &str = "luca.verdi@pec.provider-b.test";
const ANNA: &str = "anna.neri@mail.provider-b.test";

#[test]
fn a_to_b_with_to_and_cc_then_breve() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    a.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[GIULIA, LUCA],
        &message(MARIO, &[GIULIA], &[LUCA], "", "Prova uno"),
    )
    .unwrap();
    wait_for("accettazione + 2 consegne", 30, || {
        a.mailbox(MARIO).len() >= 3
    });
    wait_for("presa in carico", 30, || {
        !a.mailbox("posta-certificata@pec.provider-a.test")
            .is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = kinds(&a.mailbox(MARIO));
    assert_eq!(
        got.len(),
        3,
        "{:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    assert_eq!(got.iter().filter(|g| g.0 == "accettazione").count(), 1);
    let consegne: Vec<_> = got.iter().filter(|g| g.0 == "avvenuta-consegna").collect();
    assert_eq!(consegne.len(), 2);
    let sender_box = a.mailbox(MARIO);
    for m in &sender_box {
        let d =
            pecd::pec::daticert::Daticert::parse(&part_named(m, "daticert.xml").unwrap()).unwrap();
        if d.tipo == pecd::pec::PecType::Delivery {
            let has_original = part_named(m, "postacert.eml").is_some();
            match d.consegna.as_deref() {
                Some(GIULIA) => assert!(has_original, "To recipient: completa"),
                Some(LUCA) => assert!(!has_original, "Cc recipient: sintetica"),
                other => panic!("{other:?}"),
            }
        }
    }
    // One presa in carico for the one SMTP transaction, covering both.
    let pic = kinds(&a.mailbox("posta-certificata@pec.provider-a.test"));
    assert_eq!(pic.len(), 1);
    assert_eq!(pic[0].0, "presa-in-carico");
    assert_eq!(
        pic[0].1.ricezione,
        vec![GIULIA.to_string(), LUCA.to_string()]
    );
    // Each recipient's Maildir holds the envelope.
    for r in [GIULIA, LUCA] {
        let env = kinds(&b.mailbox(r));
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].0, "posta-certificata");
        // Trace lines (RFC 5321 §4.4): B's reception on top, A's submission
        // copied into the envelope's header.
        let stored = String::from_utf8_lossy(&b.mailbox(r)[0]).into_owned();
        assert!(stored.starts_with("Received: from mx.pec.provider-a.test ([127.0.0.1])\r\n\tby mx.pec.provider-b.test (pecd) with ESMTPS id "), "{}", &stored[..300]);
        assert!(
            stored.contains("\tby mx.pec.provider-a.test (pecd) with ESMTPSA id "),
            "{}",
            &stored[..600]
        );
    }
    // breve on request: the To recipient's receipt carries hashes. Also
    // in Cc she is still a primary recipient (RT §3.8).
    a.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[GIULIA],
        &message(
            MARIO,
            &[GIULIA],
            &[GIULIA],
            "X-TipoRicevuta: breve\r\n",
            "Prova breve",
        ),
    )
    .unwrap();
    wait_for("breve", 30, || a.mailbox(MARIO).len() >= 5);
    let breve = a
        .mailbox(MARIO)
        .into_iter()
        .find(|m| {
            String::from_utf8_lossy(m).contains("breve") && part_named(m, "postacert.eml").is_some()
        })
        .expect("a breve receipt");
    let original = part_named(&breve, "postacert.eml").unwrap();
    assert!(String::from_utf8_lossy(&original).contains("atto.pdf.hash"));
    // Both logs verify, through the admin API while the daemons run…
    for d in [&a, &b] {
        let out = common::assert_log_verifies(&d.cfg);
        assert!(out.contains("legal log intact"));
    }
    // The message's history: its records on each side, as JSON.
    let records = |d: &Daemon| log_records(&d.cfg, "Prova-uno@client.test");
    let (records_a, records_b) = (records(&a), records(&b));
    let events: Vec<&str> = records_a
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"acceptance"), "{events:?}");
    assert!(events.contains(&"receipt-received"), "{events:?}");
    // RT §8.2: a record names the messages it made or received, and whom
    // a receipt is about: each consegna in Mario's mailbox is in B's
    // record of the delivery and in A's record of its arrival.
    let names = |r: &serde_json::Value, event: &str, id: &str, rcpt: &str| {
        r["event"] == event
            && r["related"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x == id))
            && r["recipients"]
                .as_array()
                .is_some_and(|v| v.len() == 1 && v[0] == rcpt)
    };
    let mut consegne = 0;
    for m in a.mailbox(MARIO) {
        let (kind, d) = kinds(std::slice::from_ref(&m)).remove(0);
        if kind != "avvenuta-consegna"
            || !d.msgid.as_deref().is_some_and(|m| m.contains("Prova-uno"))
        {
            continue;
        }
        consegne += 1;
        let rcpt = d.consegna.unwrap();
        let (header, _) = pecd::pec::mime::split_header(&m);
        let id = pecd::pec::mime::header_value(header, "Message-ID").unwrap();
        let id = id.trim().trim_start_matches('<').trim_end_matches('>');
        assert!(
            records_b.iter().any(|r| names(r, "delivered", id, &rcpt)),
            "{id} {rcpt}: {records_b:?}"
        );
        assert!(
            records_a
                .iter()
                .any(|r| names(r, "receipt-received", id, &rcpt)),
            "{id} {rcpt}: {records_a:?}"
        );
    }
    assert!(consegne >= 2);
    assert!(
        records_b.iter().any(|r| r["event"] == "receipt-sent"),
        "{records_b:?}"
    );
    // A relayed message's record carries what RT §8.2 asks: its subject,
    // its own id, and (a receipt) the original's Message-ID.
    let sent = records_a
        .iter()
        .find(|r| r["event"] == "envelope-sent")
        .expect("the envelope's relay on A's log");
    assert!(
        sent["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("POSTA CERTIFICATA: ")),
        "{sent}"
    );
    assert!(
        sent["related"][0].as_str().is_some_and(|s| !s.is_empty()),
        "{sent}"
    );
    let receipt = records_b
        .iter()
        .find(|r| r["event"] == "receipt-sent")
        .unwrap();
    assert!(
        receipt["msgid"]
            .as_str()
            .is_some_and(|m| m.contains("Prova-uno")),
        "{receipt}"
    );
    // …and directly on the stores once they stop.
    drop(a);
    drop(b);
    let dir_a = dir.path().join("pecd-a.toml");
    common::assert_log_verifies(&dir_a);
}

#[test]
fn formal_errors_get_non_acceptance_and_nothing_is_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    let many: Vec<String> = (0..101)
        .map(|i| format!("r{i}@pec.provider-b.test"))
        .collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let cases: Vec<(Vec<u8>, Vec<&str>, &str)> = vec![
        (
            message("altro@pec.provider-a.test", &[GIULIA], &[], "", "Mittente"),
            vec![GIULIA],
            "diverso dal mittente SMTP",
        ),
        (
            message(
                MARIO,
                &[GIULIA],
                &[],
                "Bcc: spia@pec.provider-b.test\r\n",
                "Bcc",
            ),
            vec![GIULIA, "spia@pec.provider-b.test"],
            "Bcc",
        ),
        (
            message(MARIO, &[GIULIA], &[], "", "Nascosto"),
            vec![GIULIA, LUCA],
            "non presente nelle intestazioni",
        ),
        (
            {
                let mut m = message(MARIO, &[GIULIA], &[], "", "Grande");
                m.extend(std::iter::repeat_n(b'x', 25_000));
                m
            },
            vec![GIULIA],
            "dimensione del messaggio",
        ),
        (
            [
                b"From: capo@pec.provider-a.test\r\n".as_slice(),
                &message(MARIO, &[GIULIA], &[], "", "Doppio"),
            ]
            .concat(),
            vec![GIULIA],
            "intestazione From ripetuta",
        ),
        // Over the recipients limit (100): an avviso, not a 452 at the
        // 101st RCPT that would leave the client sending to part of its
        // To/Cc.
        (
            message(MARIO, &many_refs, &[], "", "Tanti"),
            many_refs.clone(),
            "numero di destinatari (101)",
        ),
    ];
    for (i, (msg, rcpt, why)) in cases.iter().enumerate() {
        let err = a
            .submit(MARIO, "password-mario", MARIO, rcpt, msg)
            .unwrap_err();
        assert!(
            err.contains("550") || err.contains("non accettato"),
            "{err}"
        );
        wait_for("avviso", 20, || a.mailbox(MARIO).len() > i);
        let notices = kinds(&a.mailbox(MARIO));
        let last = notices.iter().find(|n| {
            n.1.errore_esteso
                .as_deref()
                .is_some_and(|e| e.contains(why))
        });
        assert!(
            last.is_some(),
            "no notice for {why}: {:?}",
            notices
                .iter()
                .map(|n| &n.1.errore_esteso)
                .collect::<Vec<_>>()
        );
        assert_eq!(last.unwrap().0, "non-accettazione");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(b.mailbox(GIULIA).is_empty(), "nothing relayed");
}

/// `pecd log search --msgid ID`: a message's history, one JSON record each.
fn log_records(cfg: &Path, msgid: &str) -> Vec<serde_json::Value> {
    let out = pecd()
        .args(["log", "search", "--msgid", msgid, "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn smtp(port: u16, lines: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    out.push_str(&String::from_utf8_lossy(&buf[..n]));
    for l in lines {
        s.write_all(format!("{l}\r\n").as_bytes()).unwrap();
        let n = s.read(&mut buf).unwrap_or(0);
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

#[test]
fn auth_needs_tls_and_inbound_is_not_an_open_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = pair(dir.path(), "12h", "23h");
    use base64::Engine;
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{MARIO}\0password-mario"));
    let t = smtp(
        a.ports.submission,
        &[
            "EHLO c",
            &format!("AUTH PLAIN {plain}"),
            "MAIL FROM:<mario.rossi@pec.provider-a.test>",
        ],
    );
    assert!(t.contains("538 5.7.11"), "{t}");
    assert!(t.contains("530 5.7.0"), "{t}");
    let t = smtp(
        a.ports.inbound,
        &[
            "EHLO c",
            "MAIL FROM:<x@example.com>",
            "RCPT TO:<victim@gmail.test>",
            "RCPT TO:<someone@pec.provider-b.test>",
        ],
    );
    assert_eq!(t.matches("550 5.7.1").count(), 2, "{t}");
}

#[test]
fn unknown_recipient_ordinary_mail_and_forged_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    // Unknown user at B: avviso di mancata consegna 5.1.1 back to the sender.
    let ghost = "nessuno@pec.provider-b.test";
    mario_sends(&a, &[ghost], "Fantasma");
    wait_for("mancata consegna", 30, || a.mailbox(MARIO).len() >= 2);
    let got = kinds(&a.mailbox(MARIO));
    let err = got
        .iter()
        .find(|g| g.0 == "errore-consegna")
        .expect("errore-consegna");
    assert!(
        err.1
            .errore_esteso
            .as_deref()
            .unwrap()
            .starts_with("5.1.1 - Provider B S.p.A."),
        "{:?}",
        err.1.errore_esteso
    );
    assert_eq!(err.1.errore, pecd::pec::ErrorKind::NoRecipient);
    // Ordinary unsigned mail to B: busta di anomalia, no receipts.
    let reply = send_inbound(b.ports.inbound, "someone@example.com", GIULIA, b"From: someone@example.com\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: ciao\r\n\r\nnon certificato\r\n");
    assert!(reply.starts_with("250"), "{reply}");
    // A forged signature: a genuine A notice with one byte changed.
    let mut forged = a.mailbox(MARIO)[0].clone();
    let pos = forged.windows(8).position(|w| w == b"Il giorn").unwrap();
    forged[pos] ^= 0x20;
    let reply = send_inbound(b.ports.inbound, MARIO, GIULIA, &forged);
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("two anomalies", 30, || b.mailbox(GIULIA).len() >= 2);
    let c = checker();
    let mut shown = Vec::new();
    for m in b.mailbox(GIULIA) {
        let r = c.check("anomaly", &m);
        assert_eq!(r.kind.as_deref(), Some("busta-anomalia"), "{:?}", r.reason);
        assert_eq!(r.outcome, Outcome::Pec, "signed by B");
        assert!(part_named(&m, "postacert.eml").is_some());
        openssl_verify(&m).unwrap();
        // The reader is told why in Italian (RT §3.5), the technical
        // detail (in English, from OpenSSL or the MIME reader) is left to
        // the log.
        let text = String::from_utf8_lossy(&m).replace("=\r\n", "");
        let why = text
            .split("per il seguente errore:\r\n")
            .nth(1)
            .and_then(|t| t.split("\r\n").next())
            .unwrap_or_default()
            .to_string();
        shown.push(why);
    }
    shown.sort();
    assert_eq!(
        shown,
        [
            "la firma digitale del messaggio non risulta attendibile",
            "messaggio non firmato"
        ],
        "{shown:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    // Accettazione + mancata consegna: anomalies produce no receipts.
    assert_eq!(a.mailbox(MARIO).len(), 2);
    // Ordinary mail for a mailbox that does not exist is refused at RCPT,
    // not accepted and then dropped (RFC 5321 §6.1); postmaster, with or
    // without a domain, reaches the provider's service mailbox.
    let t = smtp(
        b.ports.inbound,
        &[
            "EHLO c",
            "MAIL FROM:<someone@example.com>",
            &format!("RCPT TO:<{ghost}>"),
        ],
    );
    assert!(t.contains("550 5.1.1"), "{t}");
    let service = "posta-certificata@pec.provider-b.test";
    for to in ["postmaster", "PostMaster@mail.provider-b.test"] {
        let reply = send_inbound(
            b.ports.inbound,
            "someone@example.com",
            to,
            b"From: someone@example.com\r\nSubject: abuse\r\n\r\nreport\r\n",
        );
        assert!(reply.starts_with("250"), "{reply}");
    }
    wait_for("postmaster mail", 30, || b.mailbox(service).len() >= 2);
    for m in b.mailbox(service) {
        assert!(part_named(&m, "postacert.eml").is_some());
    }
}

/// The data timeout grows with what arrives: a message that keeps coming
/// on a slow line is not cut off (a second per 10 kB on top of it).
#[test]
fn a_slow_large_message_is_not_cut_off_by_the_data_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new('b', dir.path(), free_port(), vec![]);
    spec.limits = "max_message_size = 400000\ndata_timeout = \"1s\"\n";
    let b = Daemon::start(spec);
    let s = TcpStream::connect(("127.0.0.1", b.ports.inbound)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    };
    reply();
    for cmd in [
        "EHLO c".to_string(),
        "MAIL FROM:<someone@example.com>".into(),
        format!("RCPT TO:<{GIULIA}>"),
        "DATA".into(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        reply();
    }
    w.write_all(b"From: someone@example.com\r\nSubject: lento\r\n\r\n")
        .unwrap();
    let line = format!("{}\r\n", "x".repeat(78));
    // 3 s in all, three times the base timeout; each chunk earns 3 s.
    for _ in 0..6 {
        w.write_all(line.repeat(375).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    w.write_all(b".\r\n").unwrap();
    let done = reply();
    assert!(done.starts_with("250"), "{done}");
}

/// A genuine envelope certifies one transaction, for its own destinatari:
/// sent again under a new Message-ID it is the same envelope (ignored);
/// sent on to someone it does not name, or inside another message (a
/// list, a forward), it is ordinary mail to them: a busta di anomalia, and
/// no receipt goes back.
#[test]
fn a_genuine_envelope_sent_on_is_not_certified_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    mario_sends(&a, &[GIULIA], "Unica");
    let service = "posta-certificata@pec.provider-a.test";
    wait_for("the consegna", 30, || {
        a.mailbox(MARIO).len() >= 2 && !a.mailbox(service).is_empty()
    });
    let envelope = b.mailbox(GIULIA).remove(0);
    let text = String::from_utf8_lossy(&envelope).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let id_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap();
    // The same envelope under a new Message-ID: the same transaction.
    let renamed = format!(
        "{}\r\n\r\n{body}",
        head.replace(id_line, "Message-ID: <replay.1@altrove.test>")
    );
    let reply = send_inbound(b.ports.inbound, MARIO, GIULIA, renamed.as_bytes());
    assert!(reply.starts_with("250"), "{reply}");
    // To a user it does not name.
    let reply = send_inbound(b.ports.inbound, MARIO, LUCA, &envelope);
    assert!(reply.starts_with("250"), "{reply}");
    // Inside another message.
    let wrapped = format!(
        "From: lista@example.com\r\nTo: {GIULIA}\r\nSubject: inoltro\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"w1\"\r\n\r\n--w1\r\n{text}\r\n--w1--\r\n"
    );
    let reply = send_inbound(
        b.ports.inbound,
        "lista@example.com",
        GIULIA,
        wrapped.as_bytes(),
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("the anomalies", 30, || {
        b.mailbox(LUCA).len() == 1 && b.mailbox(GIULIA).len() == 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let c = checker();
    let kind = |m: &[u8]| c.check("m", m).kind.unwrap_or_default();
    assert_eq!(kind(&b.mailbox(LUCA)[0]), "busta-anomalia");
    let giulia: Vec<String> = b.mailbox(GIULIA).iter().map(|m| kind(m)).collect();
    assert_eq!(
        giulia.iter().filter(|k| *k == "busta-anomalia").count(),
        1,
        "{giulia:?}"
    );
    // One presa in carico and one consegna, as before.
    assert_eq!(a.mailbox(MARIO).len(), 2);
    assert_eq!(a.mailbox(service).len(), 1);
}

/// Down past both marks: the first timer pass after the restart sends the
/// 12 h notice and the 24 h one (RT §8.1: nothing at all ⇒ both).
#[test]
fn a_timer_pass_that_comes_late_sends_both_notices() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, dead) = (free_port(), free_port());
    let mut a = Daemon::start(Spec {
        warning: "3s",
        final_after: "5s",
        ..Spec::new('a', dir.path(), a_in, vec![("pec.provider-b.test", dead)])
    });
    mario_sends(&a, &[GIULIA], "Fermo");
    a.kill();
    std::thread::sleep(Duration::from_secs(6));
    a.spawn();
    wait_for("the notices", 20, || a.mailbox(MARIO).len() >= 3);
    std::thread::sleep(Duration::from_secs(1));
    let got = kinds(&a.mailbox(MARIO));
    let timeouts: Vec<_> = got
        .iter()
        .filter_map(|g| g.1.errore_esteso.clone())
        .collect();
    assert_eq!(timeouts.len(), 2, "{timeouts:?}");
    assert_eq!(
        timeouts.iter().filter(|e| e.starts_with("5.4.1")).count(),
        1,
        "one 24 h notice: {timeouts:?}"
    );
    assert_eq!(
        got.iter()
            .filter(|g| g.0 == "preavviso-errore-consegna")
            .count(),
        2,
        "{:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
}

#[test]
fn unreachable_provider_gets_12h_then_24h_notices_and_a_late_consegna_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in, dead) = (free_port(), free_port(), free_port());
    let a = Daemon::start(Spec {
        warning: "3s",
        final_after: "16s",
        ..Spec::new(
            'a',
            dir.path(),
            a_in,
            vec![
                ("pec.provider-b.test", b_in),
                ("mail.provider-b.test", dead),
            ],
        )
    });
    let anna = "anna.neri@mail.provider-b.test";
    mario_sends(&a, &[GIULIA, anna], "Ritardo");
    // 12 h notices (short timers) for both recipients.
    wait_for("12h notices", 20, || a.mailbox(MARIO).len() >= 3);
    let got = kinds(&a.mailbox(MARIO));
    let early: Vec<_> = got
        .iter()
        .filter(|g| g.0 == "preavviso-errore-consegna")
        .collect();
    assert_eq!(early.len(), 2);
    assert!(
        early
            .iter()
            .all(|g| !g.1.errore_esteso.as_deref().unwrap().starts_with("5.4.1"))
    );
    // B comes up late: the queued envelope goes through, the consegna closes
    // GIULIA's transaction.
    let _b = Daemon::start(Spec {
        warning: "3s",
        final_after: "16s",
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    wait_for("late consegna", 20, || {
        kinds(&a.mailbox(MARIO))
            .iter()
            .any(|g| g.0 == "avvenuta-consegna")
    });
    // The 24 h notice comes only for the recipient never reached.
    wait_for("24h notice", 25, || {
        kinds(&a.mailbox(MARIO)).iter().any(|g| {
            g.1.errore_esteso
                .as_deref()
                .is_some_and(|e| e.starts_with("5.4.1"))
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let all = kinds(&a.mailbox(MARIO));
    let finals: Vec<_> = all
        .iter()
        .filter(|g| {
            g.1.errore_esteso
                .as_deref()
                .is_some_and(|e| e.starts_with("5.4.1"))
        })
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].1.consegna.as_deref(), Some(anna));
}

/// RT §8.1: after the 24 h notice the transmission has ended for the
/// sender; an envelope still queued for that recipient is not relayed when
/// its provider comes back (a consegna would contradict the notice).
#[test]
fn an_envelope_is_not_relayed_after_its_24h_notice() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec {
        warning: "1s",
        final_after: "3s",
        ..Spec::new('a', dir.path(), a_in, vec![("pec.provider-b.test", b_in)])
    });
    mario_sends(&a, &[GIULIA], "Troppo tardi");
    wait_for("24h notice", 20, || {
        kinds(&a.mailbox(MARIO)).iter().any(|g| {
            g.1.errore_esteso
                .as_deref()
                .is_some_and(|e| e.starts_with("5.4.1"))
        })
    });
    let b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    // A retries at least every second (retry_max).
    std::thread::sleep(Duration::from_secs(4));
    assert!(b.mailbox(GIULIA).is_empty());
    assert_eq!(a.mailbox(MARIO).len(), 3, "accettazione, 12 h, 24 h");
}

/// Once every receipt is back, nothing of the message is left in either
/// store: no queue item, no message body, no open transaction, no timer.
#[test]
fn nothing_is_left_behind_once_every_receipt_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(dir.path(), "12h", "23h");
    a.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[GIULIA, LUCA],
        &message(MARIO, &[GIULIA], &[LUCA], "", "Niente resta"),
    )
    .unwrap();
    wait_for("accettazione + 2 consegne", 30, || {
        a.mailbox(MARIO).len() >= 3
    });
    // A timer pass (at most a second apart) forgets the closed transactions.
    std::thread::sleep(Duration::from_secs(3));
    a.kill();
    b.kill();
    use pecd::store::{Store, Table};
    for (who, d) in [("A", &a), ("B", &b)] {
        let store = Store::open(&d.data.join("store"), "redb").unwrap();
        for t in [
            Table::Queue,
            Table::Blobs,
            Table::Transactions,
            Table::Timers,
            // Checkpoints run every 100ms: the copies of delivered files
            // are gone once flushed.
            Table::Unflushed,
        ] {
            let left: Vec<String> = store
                .entries(t)
                .map(|e| String::from_utf8_lossy(&e.unwrap().0).into_owned())
                .collect();
            assert!(left.is_empty(), "{who}: {} still holds {left:?}", t.name());
        }
        store.close();
    }
}

/// `delivery.maildir_flush = "checkpoint"` (the default): a delivered
/// envelope's file is flushed by a later checkpoint, and the store keeps
/// its copy until then. A crash before that checkpoint, after which the
/// file holds what a power loss may leave (a name over lost data, in the
/// inbox and in its archive link), is repaired at start-up: the envelope
/// is whole, there once, and its consegna went out once.
#[test]
fn an_unflushed_delivery_is_written_again_after_a_crash() {
    use pecd::store::{Store, Table};
    let dir = tempfile::tempdir().unwrap();
    let extra_b = "[delivery]\ncheckpoint_every = \"1h\"\n[[plans]]\nname = \"base\"\ninbox = \"1GB\"\narchive = \"3GB\"\non_expiry = \"suspend\"\n";
    let (a, mut b) = pair_with(dir.path(), "12h", "23h", ["", extra_b]);
    mario_sends(&a, &[GIULIA], "Da riscrivere");
    wait_for("accettazione + consegna", 30, || {
        a.mailbox(MARIO).len() >= 2
    });
    let inbox = pecd::maildir::mailbox_path(&b.data.join("mail"), GIULIA).unwrap();
    let files = |sub: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(inbox.join(sub))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let delivered = files("new");
    assert_eq!(delivered.len(), 1);
    assert_eq!(files(".Archivio/new").len(), 1, "the archive copy");
    let envelope = std::fs::read(&delivered[0]).unwrap();
    b.kill();
    {
        let store = Store::open(&b.data.join("store"), "redb").unwrap();
        let unflushed = store.entries_with_prefix(Table::Unflushed, b"k").count();
        assert_eq!(
            unflushed, 2,
            "inbox file and archive link await their flush"
        );
        store.close();
    }
    // The archive copy is a link to the same file: both lose the data.
    std::fs::write(&delivered[0], vec![0u8; envelope.len()]).unwrap();
    assert_ne!(std::fs::read(&files(".Archivio/new")[0]).unwrap(), envelope);
    b.spawn();
    wait_for("the envelope written again", 30, || {
        std::fs::read(&delivered[0]).is_ok_and(|d| d == envelope)
    });
    wait_for("its archive copy written again", 30, || {
        files(".Archivio/new")
            .first()
            .is_some_and(|p| std::fs::read(p).is_ok_and(|d| d == envelope))
    });
    assert_eq!(b.mailbox(GIULIA).len(), 1, "there once");
    // No second presa in carico or consegna for it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.mailbox(MARIO).len(), 2);
    b.kill();
    let store = Store::open(&b.data.join("store"), "redb").unwrap();
    assert_eq!(store.entries(Table::Unflushed).count(), 0);
    store.close();
}

/// The accettazione and the sender's archive copy are stored within the
/// submission's own commit. When that fails (here the archive folder
/// cannot be made), nothing shows in the mailbox and they are queued
/// instead; the retry, once the cause is gone, leaves the accettazione
/// there once, not twice.
#[test]
fn a_failed_immediate_delivery_is_queued_and_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let plan =
        "[[plans]]\nname = \"base\"\ninbox = \"1GB\"\narchive = \"3GB\"\non_expiry = \"suspend\"\n";
    let (a, _b) = pair_with(dir.path(), "12h", "23h", [plan, ""]);
    let mario = pecd::maildir::mailbox_path(&a.data.join("mail"), MARIO).unwrap();
    std::fs::create_dir_all(&mario).unwrap();
    std::fs::write(mario.join(".Archivio"), b"in the way").unwrap();
    mario_sends(&a, &[GIULIA], "Archivio occupato");
    let log = || std::fs::read_to_string(a.cfg.with_extension("stderr")).unwrap_or_default();
    wait_for("the failed attempt", 30, || {
        log().contains("store_now_failed")
    });
    // A delivery counts only with its archive copy: nothing yet.
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.mailbox(MARIO).is_empty());
    std::fs::remove_file(mario.join(".Archivio")).unwrap();
    wait_for("accettazione + consegna", 30, || {
        a.mailbox(MARIO).len() >= 2
    });
    let archived = || std::fs::read_dir(mario.join(".Archivio/new")).map_or(0, |rd| rd.count());
    // The accettazione, the envelope sent, the consegna.
    wait_for("the archive copies", 30, || archived() >= 3);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(archived(), 3);
    let inbox = a.mailbox(MARIO);
    assert_eq!(inbox.len(), 2, "accettazione and consegna, once each");
    let subjects: Vec<String> = inbox
        .iter()
        .map(|m| {
            let t = String::from_utf8_lossy(m);
            t.lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("ACCETTAZIONE")),
        "{subjects:?}"
    );
}

/// A store written by an older version: a queue item under the old key
/// layout (`t/<due>/<id>`, no lane) and an open transaction without a timer
/// entry. After an upgrade the item is re-keyed and runs, and the
/// transaction gets its timer (here already past its 12 h mark).
#[test]
fn an_older_store_is_upgraded_at_start_up() {
    use pecd::store::{Batch, Store, Table};
    let dir = tempfile::tempdir().unwrap();
    let mut a = Daemon::start(Spec {
        warning: "2s",
        final_after: "1h",
        ..Spec::new('a', dir.path(), free_port(), vec![])
    });
    a.kill();
    let now = chrono::Utc::now();
    let note =
        b"From: x@y.it\r\nTo: mario.rossi@pec.provider-a.test\r\nSubject: Vecchio\r\n\r\ncorpo\r\n";
    let spool = pecd::queue::Spool::open(&a.data.join("spool")).unwrap();
    let blob = spool.put(note).unwrap();
    let work = pecd::queue::Work::Local {
        mailbox: MARIO.into(),
        receipt_to: None,
    };
    let item = pecd::queue::Item::new("legacy1".into(), work, blob, now, None);
    let st = pecd::app::TxState {
        pec_id: "opec-old@pec.provider-a.test".into(),
        recipient: GIULIA.into(),
        sent_at: now - chrono::Duration::hours(1),
        warned: false,
        sender: MARIO.into(),
        recipients: vec![(GIULIA.into(), true)],
        reply_to: MARIO.into(),
        subject: "Vecchia transazione".into(),
        msgid: None,
    };
    {
        let store = Store::open(&a.data.join("store"), "redb").unwrap();
        let mut b = Batch::new();
        let old_key = format!("t/{}/legacy1", pecd::store::time_key(now));
        b.put(Table::Queue, old_key, serde_json::to_vec(&item).unwrap());
        let tx = format!("{}\n{GIULIA}", st.pec_id);
        b.put(Table::Transactions, tx, serde_json::to_vec(&st).unwrap());
        // What an older version's store lacks: the marks of both upgrades.
        b.delete(Table::Meta, b"timers/indexed".to_vec());
        b.delete(Table::Meta, b"queue/lanes".to_vec());
        store.commit(b).unwrap();
        store.close();
    }
    a.spawn();
    wait_for("the re-keyed item's delivery", 20, || {
        a.mailbox(MARIO)
            .iter()
            .any(|m| m.windows(7).any(|w| w == b"Vecchio"))
    });
    wait_for("the indexed transaction's 12 h notice", 20, || {
        // (The plain note above is not signed: no `kinds` here.)
        a.mailbox(MARIO).iter().any(|m| {
            let text = String::from_utf8_lossy(m);
            text.contains("X-Ricevuta: preavviso-errore-consegna")
                && text.contains("Vecchia transazione")
        })
    });
}

/// A relay retried after a crash (its 250 lost) sends the same envelope
/// again: the recipient provider delivers it once and acknowledges it once.
#[test]
fn the_same_envelope_relayed_twice_is_delivered_and_acknowledged_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    mario_sends(&a, &[GIULIA], "Doppio");
    wait_for("consegna", 30, || a.mailbox(MARIO).len() >= 2);
    let envelope = b.mailbox(GIULIA).remove(0);
    let reply = send_inbound(b.ports.inbound, MARIO, GIULIA, &envelope);
    assert!(reply.starts_with("250"), "{reply}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.mailbox(GIULIA).len(), 1, "delivered once");
    assert_eq!(a.mailbox(MARIO).len(), 2, "one accettazione, one consegna");
    assert_eq!(
        a.mailbox("posta-certificata@pec.provider-a.test").len(),
        1,
        "one presa in carico"
    );
}

/// The mailbox CLI works while the daemon runs (through the admin API), and
/// a mailbox created that way can submit at once.
#[test]
fn mailbox_cli_talks_to_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    let new_user = "nuovo.utente@pec.provider-a.test";
    let cli = |args: &[&str]| pecd_ok(args, &a.cfg);
    let add = || {
        cli(&[
            "mailbox",
            "add",
            new_user,
            "--password",
            "una-password-nuova",
        ])
    };
    add();
    let out = pecd()
        .args([
            "mailbox",
            "add",
            new_user,
            "--password",
            "xxxxxxxxxxxx",
            "--config",
        ])
        .arg(&a.cfg)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(cli(&["mailbox", "list"]).contains(&format!("{new_user}\tactive")));
    a.submit(
        new_user,
        "una-password-nuova",
        new_user,
        &[GIULIA],
        &message(new_user, &[GIULIA], &[], "", "Nuovo"),
    )
    .unwrap();
    wait_for("delivery to B", 30, || !b.mailbox(GIULIA).is_empty());
    wait_for("accettazione and consegna", 30, || {
        a.mailbox(new_user).len() >= 2
    });
    // Removed, its mail is set aside, not handed to whoever gets the
    // address next.
    cli(&["mailbox", "remove", new_user]);
    assert!(a.mailbox(new_user).is_empty());
    let aside: Vec<_> = std::fs::read_dir(a.data.join("mail/.removed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(
        aside[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(new_user)
    );
    assert_eq!(std::fs::read_dir(aside[0].join("new")).unwrap().count(), 2);
    add();
    assert!(a.mailbox(new_user).is_empty(), "a new mailbox starts empty");
    // Wrong token: refused.
    let adm: std::net::SocketAddr = std::fs::read_to_string(&a.cfg)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("admin = \"")
                .map(|x| x.trim_end_matches('"').parse().unwrap())
        })
        .unwrap();
    let (status, v) = pecd::admin::call(adm, "wrong", "GET", "/mailboxes", None).unwrap();
    assert_eq!(status, 401);
    assert_eq!(v["error"], "unauthorized");
}

/// A recipient outside PEC refused at the SMTP level gets no PEC notice
/// (RT §8.6): the sender gets a non-delivery report, at once, in a busta
/// di anomalia, as every provider's bounce arrives.
#[test]
fn an_ordinary_recipient_refused_by_its_server_gets_the_sender_a_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![
            ("pec.provider-b.test", b_in),
            ("altro.provider-b.test", b_in),
        ],
    ));
    let _b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    let rcpt = "qualcuno@altro.provider-b.test";
    mario_sends(&a, &[rcpt], "Rifiutato");
    let report = bounce(&a);
    assert!(
        report.contains(&format!(
            "Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.7.1\r\n"
        )),
        "{report}"
    );
    assert!(report.contains("Diagnostic-Code: smtp; 5"), "{report}");
    // The returned header is the envelope's.
    assert!(
        report.contains("Subject: POSTA CERTIFICATA: Rifiutato"),
        "{report}"
    );
}

/// Waits for Mario's accettazione and one more message, which must be a
/// busta di anomalia signed by A: the non-delivery report it wraps.
fn bounce(a: &Daemon) -> String {
    wait_for("the bounce", 20, || a.mailbox(MARIO).len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    let got = a.mailbox(MARIO);
    assert_eq!(got.len(), 2, "an accettazione and a bounce, nothing else");
    let c = checker();
    let kinds: Vec<_> = got
        .iter()
        .map(|m| c.check("m", m).kind.unwrap_or_default())
        .collect();
    assert!(kinds.contains(&"accettazione".to_string()), "{kinds:?}");
    bounce_in(&got)
}

/// The non-delivery report inside the one busta di anomalia of `msgs`,
/// which must be signed (by A) and titled as every bounce is.
fn bounce_in(msgs: &[Vec<u8>]) -> String {
    let c = checker();
    let anomalies: Vec<_> = msgs
        .iter()
        .filter(|m| c.check("m", m).kind.as_deref() == Some("busta-anomalia"))
        .collect();
    assert_eq!(anomalies.len(), 1, "one busta di anomalia");
    let anomaly = anomalies[0];
    openssl_verify(anomaly).unwrap();
    assert!(
        String::from_utf8_lossy(anomaly)
            .contains("Subject: ANOMALIA MESSAGGIO: Undelivered Mail Returned to Sender"),
    );
    let report = part_named(anomaly, "postacert.eml").expect("the report inside");
    let report = String::from_utf8(report).unwrap();
    assert!(
        report.contains("report-type=\"delivery-status\""),
        "{report}"
    );
    report
}

/// A host that will not open a session (a 5xx greeting, as a blocklist
/// answers) is a final refusal once every host of the domain said so: the
/// sender hears of it at once, not 24 h later.
#[test]
fn a_domain_whose_hosts_will_not_talk_gets_a_mancata_consegna_at_once() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let blocked = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let _ = s.write_all(b"554 5.7.1 Client host blocked\r\n");
            let mut sink = String::new();
            let _ = BufReader::new(s).read_line(&mut sink);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        free_port(),
        vec![("pec.provider-b.test", blocked), ("blocked.test", blocked)],
    ));
    // A certified recipient and one outside PEC.
    let other = "someone@blocked.test";
    mario_sends(&a, &[GIULIA, other], "Bloccato");
    wait_for("the notices", 20, || a.mailbox(MARIO).len() >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let got = a.mailbox(MARIO);
    assert_eq!(got.len(), 3, "accettazione, avviso, bounce");
    // Certified: an avviso di mancata consegna with the reply's code.
    let c = checker();
    let avvisi: Vec<_> = got
        .iter()
        .filter(|m| c.check("m", m).kind.as_deref() == Some("errore-consegna"))
        .map(|m| kinds(std::slice::from_ref(m)).remove(0).1)
        .collect();
    assert_eq!(avvisi.len(), 1);
    assert_eq!(avvisi[0].consegna.as_deref(), Some(GIULIA));
    let text = avvisi[0].errore_esteso.clone().unwrap();
    assert!(text.starts_with("5.7.1 - "), "{text}");
    // Outside PEC: the bounce, naming only that recipient.
    let report = bounce_in(&got);
    assert!(
        report.contains(&format!(
            "Final-Recipient: rfc822; {other}\r\nAction: failed\r\nStatus: 5.7.1\r\n"
        )),
        "{report}"
    );
    assert!(
        !report.contains(&format!("Final-Recipient: rfc822; {GIULIA}")),
        "{report}"
    );
}

/// A tiny LMTP peer (RFC 2033): accepts the envelope for GIULIA, refuses
/// LUCA's copy after DATA with 552 5.2.2 (mailbox full) and every
/// anna.neri's with 452 4.2.2 (for ever), records what it got.
/// What the LMTP peer stored: (recipient, message).
type Stored = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

fn lmtp_server() -> (u16, Stored) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            s.write_all(b"220 lmtp ready\r\n").unwrap();
            let mut rcpt = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_string();
                let up = cmd.to_ascii_uppercase();
                if up.starts_with("LHLO") {
                    s.write_all(b"250-lmtp\r\n250 8BITMIME\r\n").unwrap();
                } else if up.starts_with("MAIL") {
                    s.write_all(b"250 2.1.0 ok\r\n").unwrap();
                } else if up.starts_with("RCPT") {
                    rcpt = cmd[cmd.find('<').unwrap() + 1..cmd.find('>').unwrap()].to_string();
                    s.write_all(b"250 2.1.5 ok\r\n").unwrap();
                } else if up == "DATA" {
                    s.write_all(b"354 go\r\n").unwrap();
                    let mut data = Vec::new();
                    loop {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        if line == ".\r\n" {
                            break;
                        }
                        data.extend_from_slice(line.strip_prefix('.').unwrap_or(&line).as_bytes());
                    }
                    if rcpt == LUCA {
                        s.write_all(b"552 5.2.2 Mailbox full\r\n").unwrap();
                    } else if rcpt.starts_with("anna.neri@") {
                        s.write_all(b"452 4.2.2 Over quota, try later\r\n").unwrap();
                    } else {
                        g.lock().unwrap().push((rcpt.clone(), data));
                        s.write_all(b"250 2.0.0 delivered\r\n").unwrap();
                    }
                } else if up == "QUIT" {
                    s.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    s.write_all(b"500 5.5.2 what\r\n").unwrap();
                }
            }
        }
    });
    (port, got)
}

/// LMTP delivery: the receipt after storage, a permanent refusal (quota)
/// with its code, and (RT §1.4) a mailbox the server keeps refusing (4xx)
/// given up at `give_up_after` with an avviso di mancata consegna (5.4.7),
/// the message kept for an operator; the presa in carico never waits for
/// the mailbox server.
#[test]
fn lmtp_delivery_with_receipts_after_storage_quota_refusal_and_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let (lmtp_port, got) = lmtp_server();
    let extra = format!("[delivery]\nlmtp = \"127.0.0.1:{lmtp_port}\"\n");
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![
            ("pec.provider-b.test", b_in),
            ("mail.provider-b.test", b_in),
        ],
    ));
    let b = Daemon::start(Spec {
        extra: &extra,
        give_up_after: "2s",
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    mario_sends(&a, &[GIULIA, LUCA, ANNA], "Via LMTP");
    wait_for("consegna + two mancate consegne", 30, || {
        a.mailbox(MARIO).len() >= 4
    });
    let notices = kinds(&a.mailbox(MARIO));
    let ok = notices
        .iter()
        .find(|n| n.0 == "avvenuta-consegna")
        .expect("consegna");
    assert_eq!(ok.1.consegna.as_deref(), Some(GIULIA));
    let error_for = |rcpt: &str| {
        notices
            .iter()
            .find(|n| n.0 == "errore-consegna" && n.1.consegna.as_deref() == Some(rcpt))
            .unwrap_or_else(|| panic!("mancata consegna for {rcpt}"))
            .1
            .errore_esteso
            .clone()
            .unwrap()
    };
    let full = error_for(LUCA);
    assert!(
        full.starts_with("5.2.2 - Provider B S.p.A. - casella piena"),
        "{full}"
    );
    let late = error_for(ANNA);
    assert!(late.starts_with("5.4.7 - Provider B S.p.A. - "), "{late}");
    let stored = got.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, GIULIA);
    assert!(String::from_utf8_lossy(&stored[0].1).contains("X-Trasporto: posta-certificata"));
    // The presa in carico (one per domain relayed to) did not wait for
    // the mailbox server.
    let pic = kinds(&a.mailbox("posta-certificata@pec.provider-a.test"));
    assert!(pic.iter().all(|p| p.0 == "presa-in-carico"));
    assert!(pic.iter().any(|p| p.1.ricezione.iter().any(|r| r == ANNA)));
    // Kept for an operator, whose release could no longer send a consegna.
    let out = pecd()
        .args(["queue", "list", "--json", "--config"])
        .arg(&b.cfg)
        .output()
        .unwrap();
    let kept = kept_for(&String::from_utf8_lossy(&out.stdout), ANNA);
    assert!(!kept.contains("receipt_to"), "{kept}");
}

/// The quarantined entry (a JSON line) of `pecd queue list --json` whose
/// item goes to `rcpt`.
fn kept_for(listing: &str, rcpt: &str) -> String {
    listing
        .lines()
        .find(|l| l.contains("\"quarantined\"") && l.contains(rcpt))
        .unwrap_or_else(|| panic!("{rcpt} not kept: {listing}"))
        .to_string()
}

/// RT §8.2: the daemon seals the legal log's head in signed checkpoints
/// (checkable with openssl alone); records cut off the end of the log, or
/// a checkpoint not signed by the provider, then make `log verify` fail.
#[test]
fn the_log_head_is_sealed_and_records_cut_off_the_end_show() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(Spec {
        extra: "[log]\ncheckpoint_every = \"300ms\"\n",
        // B never answers: only A's records matter here.
        ..Spec::new(
            'a',
            dir.path(),
            free_port(),
            vec![("pec.provider-b.test", free_port())],
        )
    });
    mario_sends(&a, &[GIULIA], "Sigillo");
    let seals = a.data.join("log-checkpoints");
    let newest = || -> Option<(u64, std::path::PathBuf)> {
        let mut v: Vec<_> = std::fs::read_dir(&seals)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "p7s"))
            .collect();
        v.sort();
        let p = v.pop()?.with_extension("txt");
        let text = std::fs::read_to_string(&p).ok()?;
        Some((pecd::checkpoint::Checkpoint::parse(&text).ok()?.seq, p))
    };
    // A seal that covers the acceptance (record 1 on).
    wait_for("a checkpoint", 20, || newest().is_some());
    std::thread::sleep(Duration::from_millis(800));
    let cfg = a.cfg.clone();
    drop(a);
    common::assert_log_verifies(&cfg);
    let (seq, txt) = newest().unwrap();
    let ok = std::process::Command::new("openssl")
        .args([
            "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-in",
        ])
        .arg(txt.with_extension("p7s"))
        .arg("-content")
        .arg(&txt)
        .arg("-CAfile")
        .arg(certs().join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let verify = || {
        let out = pecd()
            .args(["log", "verify", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A checkpoint edited (not what the provider signed).
    let original = std::fs::read_to_string(&txt).unwrap();
    std::fs::write(&txt, original.replace("seq: ", "seq: 1")).unwrap();
    let (fine, said) = verify();
    assert!(
        !fine && said.contains("not signed by this provider"),
        "{said}"
    );
    std::fs::write(&txt, &original).unwrap();
    // The sealed records cut off the end, the chain otherwise intact.
    {
        let store =
            pecd::store::Store::open(&cfg.parent().unwrap().join("data-a/store"), "redb").unwrap();
        let head = store.log_head().unwrap().seq;
        let mut b = pecd::store::Batch::new();
        for s in seq..=head {
            b.delete(pecd::store::Table::Log, s.to_be_bytes().to_vec());
        }
        store.commit(b).unwrap();
    }
    let (fine, said) = verify();
    assert!(
        !fine && said.contains("records removed from the end"),
        "{said}"
    );
}

/// RT §8.1 with a local recipient: once the 24 h notice told the sender
/// the transmission failed, the delivery its mailbox server kept refusing
/// is not attempted again, nor does a second negative notice follow: the
/// message is kept for an operator.
#[test]
fn a_local_delivery_stops_at_the_24h_notice() {
    let dir = tempfile::tempdir().unwrap();
    let (lmtp_port, got) = lmtp_server();
    let extra = format!(
        "[delivery]\nlmtp = \"127.0.0.1:{lmtp_port}\"\n[[dev_mailboxes]]\naddress = \"anna.neri@pec.provider-a.test\"\npassword = \"password-anna\"\n"
    );
    let a = Daemon::start(Spec {
        warning: "1s",
        final_after: "3s",
        give_up_after: "5s",
        extra: &extra,
        ..Spec::new('a', dir.path(), free_port(), vec![])
    });
    mario_sends(&a, &["anna.neri@pec.provider-a.test"], "Vicina ma piena");
    // Every mailbox is behind the LMTP server, Mario's too.
    let marios = || -> Vec<(String, pecd::pec::daticert::Daticert)> {
        let got = got.lock().unwrap();
        let msgs: Vec<Vec<u8>> = got
            .iter()
            .filter(|(r, _)| r == MARIO)
            .map(|(_, m)| m.clone())
            .collect();
        kinds(&msgs)
    };
    wait_for("24h notice", 20, || {
        marios().iter().any(|g| {
            g.1.errore_esteso
                .as_deref()
                .is_some_and(|e| e.starts_with("5.4.1"))
        })
    });
    // Past give_up_after: no 5.4.7 avviso after the 24 h notice.
    std::thread::sleep(Duration::from_secs(4));
    let notices: Vec<_> = marios()
        .into_iter()
        .map(|k| (k.0, k.1.errore_esteso))
        .collect();
    assert_eq!(notices.len(), 2, "accettazione, 24 h: {notices:?}");
    let out = pecd()
        .args(["queue", "list", "--json", "--config"])
        .arg(&a.cfg)
        .output()
        .unwrap();
    let kept = kept_for(
        &String::from_utf8_lossy(&out.stdout),
        "anna.neri@pec.provider-a.test",
    );
    assert!(!kept.contains("receipt_to"), "{kept}");
}

/// The dedup memory is bounded: entries older than the retention go.
#[test]
fn seen_pairs_are_purged_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    mario_sends(&a, &[GIULIA], "Memoria");
    wait_for("consegna", 30, || a.mailbox(MARIO).len() >= 2);
    let cfg_b = b.cfg.clone();
    drop(a);
    drop(b);
    let cfg = pecd::config::Config::load(&cfg_b).unwrap();
    let app = pecd::app::App::open(cfg).unwrap();
    let now = chrono::Utc::now();
    assert_eq!(
        app.purge_seen(now - chrono::Duration::days(7)).unwrap(),
        0,
        "recent pairs stay"
    );
    assert!(app.purge_seen(now + chrono::Duration::seconds(5)).unwrap() >= 1);
    assert_eq!(
        app.purge_seen(now + chrono::Duration::seconds(5)).unwrap(),
        0
    );
}

/// Review regressions: (1) a plain mail that carries a genuine envelope's
/// future Message-ID must not suppress the envelope; (2) a genuine signed
/// receipt replayed to a mailbox that does not exist creates nothing.
/// `raw` with its top-level header `name` set to `value` (the unsigned
/// part of a signed message, which anyone holding a copy can rewrite).
fn with_header(raw: &[u8], name: &str, value: &str) -> Vec<u8> {
    let (header, _) = pecd::pec::mime::split_header(raw);
    let text = String::from_utf8_lossy(header);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let start = text
        .to_ascii_lowercase()
        .find(&format!("\n{prefix}"))
        .map(|i| i + 1)
        .or_else(|| text.to_ascii_lowercase().starts_with(&prefix).then_some(0))
        .unwrap_or_else(|| panic!("no {name} header"));
    // The field runs to the first line break not followed by white space.
    let mut end = start;
    while let Some(nl) = raw[end..].iter().position(|&c| c == b'\n') {
        end += nl + 1;
        if !matches!(raw.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let mut out = raw[..start].to_vec();
    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    out.extend_from_slice(&raw[end..]);
    out
}

/// Provider A's certification of the test original, dated now (a genuine
/// envelope dated days ago is a replay, not certified again).
fn certification_now() -> pecd::pec::build::Certification {
    let mut c = certification(provider_a());
    c.time = pecd::clock::LegalTime::new(chrono::Utc::now());
    c
}

/// An envelope dated days ago (beyond any relay retry) is a replay: not
/// certified again, wrapped as an anomaly, no presa in carico.
#[test]
fn an_envelope_dated_days_ago_is_not_certified_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    let mut c = certification(provider_a());
    c.pec_id = "vecchia.1@pec.provider-a.test".into();
    c.time = pecd::clock::LegalTime::new(chrono::Utc::now() - chrono::Duration::days(5));
    let envelope = signer("provider-a", pecd::smime::Digest::Sha256)
        .sign(&pecd::pec::build::transport(&c, ORIGINAL))
        .unwrap();
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &envelope).starts_with("250"));
    wait_for("the anomaly", 30, || !b.mailbox(GIULIA).is_empty());
    let got = b.mailbox(GIULIA).remove(0);
    assert_eq!(
        checker().check("m", &got).kind.as_deref(),
        Some("busta-anomalia")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        a.mailbox("posta-certificata@pec.provider-a.test")
            .is_empty(),
        "no presa in carico"
    );
}

/// One of a provider's own envelopes reaching its local recipient after
/// the 24 h notice (its reception waited): stored, without a consegna the
/// closed transaction no longer takes (as a relay after it is not made).
#[test]
fn an_own_envelope_delivered_after_the_final_notice_gets_no_consegna() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, b) = pair(dir.path(), "12h", "23h");
    let mut c = certification(provider_b());
    c.pec_id = "tardiva.1@pec.provider-b.test".into();
    c.sender = GIULIA.into();
    c.recipients = vec![pecd::pec::Recipient {
        address: LUCA.into(),
        class: pecd::pec::RecipientClass::Certified,
        role: pecd::pec::RecipientRole::To,
    }];
    c.time = pecd::clock::LegalTime::new(chrono::Utc::now() - chrono::Duration::days(2));
    let envelope = signer("provider-b", pecd::smime::Digest::Sha256)
        .sign(&pecd::pec::build::transport(&c, ORIGINAL))
        .unwrap();
    assert!(send_inbound(b.ports.inbound, GIULIA, LUCA, &envelope).starts_with("250"));
    wait_for("the late envelope", 30, || !b.mailbox(LUCA).is_empty());
    assert_eq!(
        checker().check("m", &b.mailbox(LUCA)[0]).kind.as_deref(),
        Some("posta-certificata")
    );
    std::thread::sleep(Duration::from_secs(2));
    let consegne = kinds(&b.mailbox(GIULIA))
        .into_iter()
        .filter(|(k, _)| k == "avvenuta-consegna")
        .count();
    assert_eq!(consegne, 0);
}

/// Who was in To and who in Cc (completa or sintetica, RT §3.8) is read
/// from the signed original, not from the envelope's own unsigned header.
#[test]
fn receipt_variants_follow_the_signed_original_not_the_envelope_header() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    let mut c = certification_now();
    c.pec_id = "ruoli.1@pec.provider-a.test".into();
    let envelope = signer("provider-a", pecd::smime::Digest::Sha256)
        .sign(&pecd::pec::build::transport(&c, ORIGINAL))
        .unwrap();
    // On the way, Giulia (To in the original) is moved into Cc.
    let swapped = with_header(&with_header(&envelope, "To", LUCA), "Cc", GIULIA);
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &swapped).starts_with("250"));
    let consegna = || {
        a.mailbox(MARIO).into_iter().find(|m| {
            part_named(m, "daticert.xml")
                .and_then(|x| pecd::pec::daticert::Daticert::parse(&x).ok())
                .is_some_and(|d| {
                    d.tipo == pecd::pec::PecType::Delivery
                        && d.identificativo == c.pec_id
                        && d.consegna.as_deref() == Some(GIULIA)
                })
        })
    };
    wait_for("Giulia's consegna", 30, || consegna().is_some());
    // Completa, as for a To recipient: the original is attached (a
    // sintetica, for a Cc, would not carry it).
    assert!(part_named(&consegna().unwrap(), "postacert.eml").is_some());
}

/// Genuine signatures over messages that must not be taken as they are:
/// another provider's busta di anomalia (made for its own user, it
/// certifies nothing here and was never scanned here) and an envelope
/// whose signed part has a bare CR (verified once its line endings are
/// repaired, while the stored bytes would read as other parts). Both are
/// wrapped in B's own busta di anomalia; the envelope gets no presa in
/// carico.
#[test]
fn another_providers_anomaly_and_a_repaired_signed_part_are_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    let rcpts = vec![GIULIA.to_string()];
    let ordinary = format!(
        "From: someone@example.com\r\nTo: {GIULIA}\r\nSubject: ciao\r\nMessage-ID: <ordinaria.7@example.com>\r\n\r\nhello\r\n"
    );
    let anomaly = signer("provider-a", pecd::smime::Digest::Sha256)
        .sign(&pecd::pec::build::anomaly(
            &pecd::pec::build::AnomalyInput {
                provider: &provider_a(),
                time: pecd::clock::LegalTime::new(chrono::Utc::now()),
                envelope_from: "someone@example.com",
                recipients: &rcpts,
                received: ordinary.as_bytes(),
                reason: "messaggio non firmato da un gestore di posta certificata",
                fallback_message_id: "anomalia.7@pec.provider-a.test",
            },
        ))
        .unwrap();
    assert_eq!(
        checker().check("m", &anomaly).kind.as_deref(),
        Some("busta-anomalia")
    );
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &anomaly).starts_with("250"));
    let mut c = certification_now();
    c.pec_id = "cr.1@pec.provider-a.test".into();
    let envelope = signer("provider-a", pecd::smime::Digest::Sha256)
        .sign(&pecd::pec::build::transport(&c, ORIGINAL))
        .unwrap();
    let at = envelope.windows(9).position(|w| w == b"Il giorno").unwrap();
    let eol = at
        + envelope[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap();
    let mut bare_cr = envelope.clone();
    bare_cr.remove(eol + 1);
    // Still a valid signature, once canonicalised.
    let report = checker().check("m", &bare_cr);
    assert_eq!(report.outcome, pecd::report::Outcome::Pec);
    assert!(!report.canonical);
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &bare_cr).starts_with("250"));
    wait_for("both at Giulia's", 30, || b.mailbox(GIULIA).len() == 2);
    for m in b.mailbox(GIULIA) {
        let r = checker().check("m", &m);
        assert_eq!(r.kind.as_deref(), Some("busta-anomalia"));
        let from = pecd::pec::mime::header_value(pecd::pec::mime::split_header(&m).0, "From")
            .unwrap_or_default();
        assert!(
            from.contains("posta-certificata@pec.provider-b.test"),
            "{from}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        a.mailbox("posta-certificata@pec.provider-a.test")
            .is_empty(),
        "no presa in carico"
    );
}

#[test]
fn forged_message_id_and_replayed_receipts_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = pair(dir.path(), "12h", "23h");
    // A genuine envelope from provider A, built and signed here.
    let c = certification_now();
    let envelope = signer("provider-a", pecd::smime::Digest::Sha256)
        .sign(&pecd::pec::build::transport(&c, ORIGINAL))
        .unwrap();
    let forged = format!(
        "From: someone@example.com\r\nTo: {GIULIA}\r\nSubject: finto\r\nMessage-ID: <{}>\r\n\r\nx\r\n",
        c.pec_id
    );
    assert!(
        send_inbound(
            b.ports.inbound,
            "someone@example.com",
            GIULIA,
            forged.as_bytes()
        )
        .starts_with("250")
    );
    wait_for("anomaly", 20, || b.mailbox(GIULIA).len() == 1);
    // Genuine A messages with their unsigned headers rewritten: a notice
    // under the envelope's identificativo as Message-ID, and a copy of the
    // envelope itself claiming to be a busta di anomalia. Neither may make
    // the envelope a "duplicate", and the second is no genuine anomaly.
    mario_sends(&a, &[LUCA], "Accettazione altrui");
    wait_for("accettazione", 20, || !a.mailbox(MARIO).is_empty());
    let renamed = with_header(
        &a.mailbox(MARIO)[0],
        "Message-ID",
        &format!("<{}>", c.pec_id),
    );
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &renamed).starts_with("250"));
    wait_for("the renamed notice", 20, || b.mailbox(GIULIA).len() == 2);
    let flipped = with_header(&envelope, "X-Trasporto", "errore");
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &flipped).starts_with("250"));
    wait_for("the flipped envelope", 20, || b.mailbox(GIULIA).len() == 3);
    let from = |m: &Vec<u8>| {
        pecd::pec::mime::header_value(pecd::pec::mime::split_header(m).0, "From")
            .unwrap_or_default()
    };
    let wrapped_by_b = b
        .mailbox(GIULIA)
        .iter()
        .filter(|m| from(m).contains("posta-certificata@pec.provider-b.test"))
        .count();
    // The plain forgery, the notice (not Giulia's to receive: she is not
    // the sender it reports to) and the flipped envelope, each in B's own
    // busta di anomalia.
    assert_eq!(wrapped_by_b, 3);
    assert!(send_inbound(b.ports.inbound, MARIO, GIULIA, &envelope).starts_with("250"));
    wait_for("the genuine envelope", 20, || b.mailbox(GIULIA).len() == 4);
    let kinds_b: Vec<String> = b
        .mailbox(GIULIA)
        .iter()
        .map(|m| checker().check("m", m).kind.unwrap())
        .collect();
    assert!(
        kinds_b.contains(&"posta-certificata".to_string()),
        "{kinds_b:?}"
    );
    // A genuine receipt (B's consegna went to A; take A's accettazione here)
    // replayed to a ghost mailbox at B.
    mario_sends(&a, &[LUCA], "Ricevuta");
    wait_for("receipts", 20, || a.mailbox(MARIO).len() >= 2);
    let receipt = a.mailbox(MARIO).remove(0);
    let ghost = "fantasma@pec.provider-b.test";
    assert!(send_inbound(b.ports.inbound, MARIO, ghost, &receipt).starts_with("250"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.mailbox(ghost).is_empty());
    assert!(
        !pecd::maildir::mailbox_path(&b.data.join("mail"), ghost)
            .unwrap()
            .exists()
    );
}

#[test]
fn a_relay_failing_past_give_up_after_is_given_up_on_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, dead) = (free_port(), free_port());
    let a = Daemon::start(Spec {
        give_up_after: "2s",
        ..Spec::new('a', dir.path(), a_in, vec![("ordinaria.test", dead)])
    });
    let rcpt = "someone@ordinaria.test";
    mario_sends(&a, &[rcpt], "Resa");
    let events = || log_records(&a.cfg, "Resa@client.test");
    wait_for("the give-up record", 20, || {
        events().iter().any(|e| {
            e["event"] == "delivery-error"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("gave up after 2s"))
        })
    });
    // Given up means gone: no further attempt is made or logged.
    let before = events().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(events().len(), before);
    // No PEC notice for a recipient outside PEC (RT §8.6): a bounce.
    let report = bounce(&a);
    assert!(
        report.contains(&format!(
            "Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 4.4.7\r\n\
             Diagnostic-Code: X-pecd; "
        )),
        "{report}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(report.as_bytes())
        .unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains("entro 2 secondi"), "{text}");
    assert!(text.contains(&format!("<{rcpt}>: connect")), "{text}");
}

/// An acknowledged message whose processing keeps failing is not dropped
/// when the queue gives up on it: it is kept for an operator, and the log
/// says where.
#[test]
fn an_acknowledged_message_given_up_is_kept_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let b = Daemon::start(Spec {
        give_up_after: "2s",
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    // Luca's mailbox cannot be made: every delivery to it fails.
    let root = pecd::maildir::mailbox_path(&b.data.join("mail"), LUCA).unwrap();
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    std::fs::write(&root, b"not a mailbox").unwrap();
    mario_sends(&a, &[LUCA], "Bloccato");
    let kept = b.data.join("quarantine").join("new");
    wait_for("the message kept", 30, || {
        std::fs::read_dir(&kept).is_ok_and(|d| d.count() == 1)
    });
    let file = std::fs::read_dir(&kept)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let body = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    assert!(body.contains("POSTA CERTIFICATA: Bloccato"), "{body}");
    // The record commits just after the file is kept.
    wait_for("the give-up record", 20, || {
        let out = pecd()
            .args(["log", "search", "--since", "2000-01-01T00:00:00Z"])
            .arg("--config")
            .arg(&b.cfg)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            // Whom it concerned is on the record too (RT §8.2).
            l.contains("gave up after 2s")
                && l.contains("the message is kept in")
                && l.contains(LUCA)
        })
    });
    // The operator sees it, mends the mailbox and releases it: it is
    // delivered and the sender gets its consegna.
    let listing = queue_cli(&b, &["list"]).unwrap();
    assert!(listing.contains("0 queued\n1 quarantined\n"), "{listing}");
    assert!(
        listing.contains(&format!("kept in {}", file.display())),
        "{listing}"
    );
    let name = listing
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let not_queued = queue_cli(&b, &["retry", name]).unwrap_err();
    assert!(not_queued.contains("it is in quarantine"), "{not_queued}");
    std::fs::remove_file(&root).unwrap();
    // Say an earlier try had stored it before a later step failed, and
    // Luca's mail program has since moved it to cur/: released, it is
    // found there, not stored twice.
    for d in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let seen = format!("{}:2,S", file.file_name().unwrap().to_str().unwrap());
    std::fs::copy(&file, root.join("cur").join(seen)).unwrap();
    let released = queue_cli(&b, &["release", name]).unwrap();
    assert!(released.contains("queued again"), "{released}");
    wait_for("the consegna", 30, || {
        kinds(&a.mailbox(MARIO))
            .iter()
            .any(|k| k.0 == "avvenuta-consegna")
    });
    assert!(!file.exists(), "the quarantine file goes with the release");
    assert_eq!(b.mailbox(LUCA).len(), 1, "stored once");
    let listing = queue_cli(&b, &["list"]).unwrap();
    assert!(listing.contains("0 quarantined"), "{listing}");
    // Released once: a second release finds nothing.
    let again = queue_cli(&b, &["release", name]).unwrap_err();
    assert!(again.contains("no such item"), "{again}");
    // A file no entry names (a crash between a release's commit and the
    // file's removal) is shown, not kept unseen.
    std::fs::write(kept.join("stray,S=3"), b"abc").unwrap();
    let listing = queue_cli(&b, &["list"]).unwrap();
    assert!(
        listing.contains("1 quarantined\nstray,S=3  a kept message no entry names"),
        "{listing}"
    );
}

/// `pecd queue ARGS --config` of `d` (through its admin API while it
/// runs): stdout, or stderr when it fails.
fn queue_cli(d: &Daemon, args: &[&str]) -> Result<String, String> {
    let out = pecd()
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(&d.cfg)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// A relay waiting an hour for its next try goes now when the operator
/// says so (the peer is back).
#[test]
fn an_operator_retries_a_waiting_relay_now() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec {
        retry_initial: "1h",
        ..Spec::new('a', dir.path(), a_in, vec![("pec.provider-b.test", b_in)])
    });
    mario_sends(&a, &[GIULIA], "Riprova");
    // B is down: the relay failed once and waits an hour.
    let mut id = String::new();
    wait_for("the failed relay", 20, || {
        let listing = queue_cli(&a, &["list", "--json"]).unwrap();
        let waiting = listing
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| {
                v["state"] == "queued"
                    && v["item"]["work"]["kind"] == "relay"
                    && v["item"]["attempts"] == 1
            });
        if let Some(v) = waiting {
            id = v["item"]["id"].as_str().unwrap().to_string();
        }
        !id.is_empty()
    });
    let listing = queue_cli(&a, &["list"]).unwrap();
    assert!(
        listing.contains(&format!("{id}  due ")) && listing.contains("tries 1  relay to pec.provider-b.test: giulia.bianchi@pec.provider-b.test  (last error: "),
        "{listing}"
    );
    let missing = queue_cli(&a, &["retry", "no-such-item@x"]).unwrap_err();
    assert!(
        missing.contains("no such item: no-such-item@x"),
        "{missing}"
    );
    // Through the admin API: tried again at once (B still down).
    let retried = queue_cli(&a, &["retry", &id]).unwrap();
    assert!(retried.contains("due now"), "{retried}");
    wait_for("the second try", 20, || {
        queue_cli(&a, &["list"]).unwrap().contains("tries 2  relay")
    });
    // With the daemon stopped, in the store itself; B is back.
    let mut a = a;
    a.kill();
    let listing = queue_cli(&a, &["list"]).unwrap();
    assert!(listing.contains(&format!("{id}  due ")), "{listing}");
    let retried = queue_cli(&a, &["retry", &id]).unwrap();
    assert!(retried.contains("due now"), "{retried}");
    let b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    a.spawn();
    wait_for("the delivery at B", 20, || b.mailbox(GIULIA).len() == 1);
}

/// A DNS server on 127.0.0.1 (UDP) with one MX zone: `domain` → MX 10
/// `mx.<domain>` → A 127.0.0.1; everything else is NXDOMAIN. Counts the MX
/// queries it answers.
fn dns_stub(domain: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, MX};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let mx_queries = Arc::new(AtomicUsize::new(0));
    let counter = mx_queries.clone();
    std::thread::spawn(move || {
        let zone = Name::from_ascii(format!("{domain}.")).unwrap();
        let host = Name::from_ascii(format!("mx.{domain}.")).unwrap();
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(q.op_code())
                .set_recursion_desired(q.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            let mut known = false;
            for query in q.queries() {
                r.add_query(query.clone());
                let name = query.name();
                if name == &zone {
                    known = true;
                    if query.query_type() == RecordType::MX {
                        counter.fetch_add(1, Ordering::SeqCst);
                        r.add_answer(Record::from_rdata(
                            zone.clone(),
                            60,
                            RData::MX(MX::new(10, host.clone())),
                        ));
                    }
                } else if name == &host {
                    known = true;
                    if query.query_type() == RecordType::A {
                        r.add_answer(Record::from_rdata(
                            host.clone(),
                            60,
                            RData::A(A::new(127, 0, 0, 1)),
                        ));
                    }
                }
            }
            if !known {
                r.set_response_code(ResponseCode::NXDomain);
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from);
        }
    });
    (addr, mx_queries)
}

#[test]
fn another_provider_is_found_by_its_mx_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let (dns, mx_queries) = dns_stub("pec.provider-b.test");
    // No static route to B: A must look up B's MX.
    let extra = format!("[delivery]\nnameservers = [\"{dns}\"]\nmx_port = {b_in}\n");
    let a = Daemon::start(Spec {
        extra: &extra,
        ..Spec::new('a', dir.path(), a_in, vec![])
    });
    let b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    mario_sends(&a, &[GIULIA], "Via MX");
    wait_for("consegna via MX", 30, || {
        kinds(&a.mailbox(MARIO))
            .iter()
            .any(|g| g.0 == "avvenuta-consegna")
    });
    assert_eq!(kinds(&b.mailbox(GIULIA)).len(), 1);
    assert!(mx_queries.load(Ordering::SeqCst) >= 1);
}

/// Names of the files in a mailbox's `new/` and `cur/`.
fn mailbox_files(d: &Daemon, address: &str) -> Vec<std::path::PathBuf> {
    let dir = pecd::maildir::mailbox_path(&d.data.join("mail"), address).unwrap();
    ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(dir.join(s)).unwrap())
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn inbox_quota_refuses_with_5_2_2_warns_at_70_and_90_once_and_sees_imap_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let (sink, captured) = capture_smtp();
    let mini = "mini@pec.provider-b.test";
    let extra = format!(
        r#"[notify]
smarthost = "127.0.0.1:{sink}"
[[plans]]
name = "base"
inbox = "1GB"
on_expiry = "suspend"
[[plans]]
name = "mini"
inbox = "40KB"
on_expiry = "suspend"
[[dev_mailboxes]]
address = "{mini}"
password = "password-mini"
plan = "mini"
reference_email = "mini.home@ordinaria.test"
"#
    );
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let b = Daemon::start(Spec {
        extra: &extra,
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    let envelopes = |d: &Daemon| {
        let pec: Vec<Vec<u8>> = d
            .mailbox(mini)
            .into_iter()
            .filter(|m| !String::from_utf8_lossy(m).contains("Auto-Submitted: auto-generated"))
            .collect();
        kinds(&pec)
            .iter()
            .filter(|k| k.0 == "posta-certificata")
            .count()
    };
    let refused = |d: &Daemon| {
        kinds(&d.mailbox(MARIO))
            .iter()
            .filter(|k| {
                k.1.errore_esteso
                    .as_deref()
                    .is_some_and(|e| e.starts_with("5.2.2"))
            })
            .count()
    };
    // Fill the 40 KB inbox one message at a time until the first refusal.
    let mut sent = 0;
    while refused(&a) == 0 {
        assert!(sent < 12, "no 5.2.2 after {sent} messages");
        sent += 1;
        let subject = format!("Riempimento {sent}");
        a.submit(
            MARIO,
            "password-mario",
            MARIO,
            &[mini],
            &message(MARIO, &[mini], &[], "", &subject),
        )
        .unwrap();
        wait_for("consegna or mancata consegna", 30, || {
            kinds(&a.mailbox(MARIO)).len() >= 2 * sent
        });
    }
    let stored = envelopes(&b);
    assert_eq!(stored, sent - 1, "the refused message is not stored");
    let used: u64 = mailbox_files(&b, mini)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(used <= 40 * 1024, "{used} bytes stored in a 40 KB inbox");
    // The warnings: 70 % and 90 %, once each, in the mailbox and at the sink.
    let warnings = |d: &Daemon| -> Vec<String> {
        d.mailbox(mini)
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .filter(|m| m.contains("Auto-Submitted: auto-generated"))
            .collect()
    };
    wait_for("two warnings at the sink", 20, || {
        captured.lock().unwrap().len() >= 2
    });
    let w = warnings(&b);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().any(|m| m.contains("oltre il 70%")));
    assert!(w.iter().any(|m| m.contains("oltre il 90%")));
    {
        let c = captured.lock().unwrap();
        assert_eq!(c.len(), 2);
        assert!(
            c.iter()
                .all(|(r, _)| r == &vec!["mini.home@ordinaria.test".to_string()])
        );
    }
    // An IMAP client deletes every envelope behind pecd's back…
    for p in mailbox_files(&b, mini) {
        if !String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains("Auto-Submitted") {
            std::fs::remove_file(p).unwrap();
        }
    }
    // …and the next message fits again at once (a refusal is made only on
    // the folders as they are now), with no new warning.
    sent += 1;
    mario_sends(&a, &[mini], "Dopo pulizia");
    wait_for("consegna after the deletion", 30, || {
        kinds(&a.mailbox(MARIO)).len() >= 2 * sent
    });
    assert_eq!(envelopes(&b), 1);
    assert_eq!(refused(&a), 1);
    assert_eq!(warnings(&b).len(), 2);
}

fn archive_files(d: &Daemon, address: &str) -> Vec<String> {
    let dir = pecd::maildir::mailbox_path(&d.data.join("mail"), address)
        .unwrap()
        .join(".Archivio");
    ["new", "cur"]
        .iter()
        .flat_map(|s| std::fs::read_dir(dir.join(s)).into_iter().flatten())
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()).into_owned())
        .collect()
}

fn archive_scenario(policy: &str) -> (Daemon, Daemon, Captured, String, usize) {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let (a_in, b_in) = (free_port(), free_port());
    let (sink, captured) = capture_smtp();
    let extra = format!(
        r#"[notify]
smarthost = "127.0.0.1:{sink}"
[lifecycle]
archive_policy = "{policy}"
[[plans]]
name = "base"
inbox = "1GB"
archive = "3GB"
on_expiry = "suspend"
[[plans]]
name = "piccolo"
inbox = "1MB"
archive = "20KB"
on_expiry = "suspend"
"#
    );
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let b = Daemon::start(Spec {
        extra: &extra,
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    let admin = b.admin_token();
    let (s, v) = b.api(
        &admin,
        "POST",
        "/tenants",
        Some(serde_json::json!({
        "id": "ordine-lodi", "name": "Ordine", "domain": "pec.provider-b.test",
        "provincia": "LO", "secretariat_email": "segreteria@ordine.test"})),
    );
    assert_eq!(s, 201, "{v}");
    let first15 = "FRRLNE80A41H501";
    let cf = format!(
        "{first15}{}",
        pecd::membership::tax_code::check_char(first15.as_bytes())
    );
    let (s, v) = b.api(
        &admin,
        "POST",
        "/tenants/ordine-lodi/mailboxes",
        Some(serde_json::json!({
        "nome": "Elena", "cognome": "Ferri", "codice_fiscale": cf, "indirizzo": "Via Roma 1",
        "comune": "Lodi", "provincia": "LO", "cap": "26900",
        "reference_email": "elena@casa.test", "plan": "piccolo"})),
    );
    assert_eq!(s, 201, "{v}");
    let elena = v["address"].as_str().unwrap().to_string();
    let n = 6;
    for i in 1..=n {
        a.submit(
            MARIO,
            "password-mario",
            MARIO,
            &[&elena],
            &message(MARIO, &[&elena], &[], "", &format!("Archivio {i}")),
        )
        .unwrap();
        wait_for("consegna", 30, || kinds(&a.mailbox(MARIO)).len() >= 2 * i);
    }
    (a, b, captured, elena, n)
}

#[test]
fn the_archive_keeps_copies_and_rotates_the_oldest_when_full() {
    let (a, b, captured, elena, n) = archive_scenario("rotate-oldest");
    // The recipient's archive: within its 20 KB, newest kept, oldest gone.
    let arch = archive_files(&b, &elena);
    let size: usize = arch.iter().map(|m| m.len()).sum();
    assert!(size <= 20 * 1024, "{size}");
    assert!(
        arch.iter().any(|m| m.contains(&format!("Archivio {n}"))),
        "newest kept"
    );
    assert!(
        !arch.iter().any(|m| m.contains("Archivio 1\r\n")),
        "oldest rotated out"
    );
    // Warned once: into the mailbox, to the holder's and the order's addresses.
    wait_for("archive warnings at the sink", 20, || {
        captured.lock().unwrap().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let c = captured.lock().unwrap();
    let to: Vec<&str> = c.iter().map(|(r, _)| r[0].as_str()).collect();
    assert_eq!(c.len(), 2, "{to:?}");
    assert!(to.contains(&"elena@casa.test") && to.contains(&"segreteria@ordine.test"));
    assert!(c.iter().all(|(_, d)| d.contains("archivio della casella")));
    let in_box = b
        .mailbox(&elena)
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains("Auto-Submitted: auto-generated"))
        .count();
    assert_eq!(in_box, 1);
    // The sender's archive (base plan, 3 GB): what it sent and its receipts.
    let sent = archive_files(&a, MARIO);
    let count = |what: &str| sent.iter().filter(|m| m.contains(what)).count();
    assert_eq!(count("X-Trasporto: posta-certificata"), n, "sent envelopes");
    assert_eq!(count("X-Ricevuta: accettazione"), n);
    assert_eq!(count("X-Ricevuta: avvenuta-consegna"), n);
}

#[test]
fn with_the_stop_policy_a_full_archive_takes_no_new_copies() {
    let (_a, b, captured, elena, n) = archive_scenario("stop");
    let arch = archive_files(&b, &elena);
    let size: usize = arch.iter().map(|m| m.len()).sum();
    assert!(size <= 20 * 1024, "{size}");
    assert!(
        arch.iter().any(|m| m.contains("Archivio 1\r\n")),
        "oldest kept"
    );
    assert!(
        !arch
            .iter()
            .any(|m| m.contains(&format!("Archivio {n}\r\n"))),
        "no new copies"
    );
    // Nothing lost from the inbox itself.
    let envelopes = b
        .mailbox(&elena)
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains("X-Trasporto: posta-certificata"))
        .count();
    assert_eq!(envelopes, n);
    wait_for("archive warnings", 20, || {
        captured.lock().unwrap().len() >= 2
    });
}

#[test]
fn an_inbox_add_on_raises_the_quota_at_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let extra = r#"[[plans]]
name = "base"
inbox = "1GB"
on_expiry = "suspend"
[[plans]]
name = "piccolo"
inbox = "20KB"
addon_step = "20KB"
addon_max_steps = 1
on_expiry = "suspend"
"#;
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let b = Daemon::start(Spec {
        extra,
        ..Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)])
    });
    let admin = b.admin_token();
    let (s, v) = b.api(&admin, "POST", "/tenants", Some(serde_json::json!({
        "id": "ordine-lodi", "name": "Ordine", "domain": "pec.provider-b.test", "provincia": "LO"})));
    assert_eq!(s, 201, "{v}");
    let first15 = "VRDPLA80A01H501";
    let cf = format!(
        "{first15}{}",
        pecd::membership::tax_code::check_char(first15.as_bytes())
    );
    let (_, v) = b.api(
        &admin,
        "POST",
        "/tenants/ordine-lodi/mailboxes",
        Some(serde_json::json!({
        "nome": "Paola", "cognome": "Verdi", "codice_fiscale": cf, "indirizzo": "Via Roma 1",
        "comune": "Lodi", "provincia": "LO", "cap": "26900", "plan": "piccolo"})),
    );
    let paola = v["address"].as_str().unwrap().to_string();
    let refused = || {
        kinds(&a.mailbox(MARIO))
            .iter()
            .filter(|k| {
                k.1.errore_esteso
                    .as_deref()
                    .is_some_and(|e| e.starts_with("5.2.2"))
            })
            .count()
    };
    let mut sent = 0;
    // Fill until `want` refusals; returns how many were stored meanwhile.
    let mut fill_until = |want: usize| {
        let mut stored = 0;
        while refused() < want {
            assert!(sent < 30, "no 5.2.2");
            sent += 1;
            a.submit(
                MARIO,
                "password-mario",
                MARIO,
                &[&paola],
                &message(MARIO, &[&paola], &[], "", &format!("Spazio {sent}")),
            )
            .unwrap();
            wait_for("a receipt", 30, || {
                kinds(&a.mailbox(MARIO)).len() >= 2 * sent
            });
            if refused() < want {
                stored += 1;
            }
        }
        stored
    };
    let base = fill_until(1);
    assert!(base >= 1, "the plan's own space takes messages");
    // One add-on step (+20 KB): deliveries resume, then stop again.
    let (s, v) = b.api(
        &admin,
        "POST",
        &format!("/tenants/ordine-lodi/mailboxes/{paola}/plan"),
        Some(serde_json::json!({"plan": "piccolo", "addons": 1})),
    );
    assert_eq!(
        (s, v["inbox_quota"].as_u64()),
        (200, Some(40 * 1024)),
        "{v}"
    );
    let more = fill_until(2);
    assert!(more >= 1, "the add-on's space takes more messages");
    // Beyond the plan's add-on limit: refused, naming the field.
    let (s, v) = b.api(
        &admin,
        "POST",
        &format!("/tenants/ordine-lodi/mailboxes/{paola}/plan"),
        Some(serde_json::json!({"plan": "piccolo", "addons": 2})),
    );
    assert_eq!((s, v["field"].as_str()), (400, Some("addons")), "{v}");
}
