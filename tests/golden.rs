//! Golden tests: the headers, the Italian text and the daticert of every
//! message type, compared with reviewed files in `tests/golden/`.
//! Regenerate after a deliberate change with `UPDATE_GOLDEN=1 cargo test --test golden`
//! and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pecd::pec::ReceiptVariant;
use pecd::pec::build::{self, AnomalyInput, DeliveryFailure, Rejection};
use pecd::pec::headers::{MessageKind, TimeoutStage};
use pecd::pec::mime::{UnsignedMessage, split_header};

fn render(m: &UnsignedMessage) -> String {
    let mut s = String::from_utf8_lossy(&m.header_block()).replace("\r\n", "\n");
    s.push_str("-- text/plain (decoded) --\n");
    let msg = mail_parser::MessageParser::default()
        .parse(&m.entity)
        .unwrap();
    let text = msg.body_text(0).unwrap();
    s.push_str(&text.replace("\r\n", "\n"));
    if let Some(x) = part_named(&m.entity, "daticert.xml") {
        s.push_str("-- daticert.xml --\n");
        s.push_str(&String::from_utf8(x).unwrap());
    }
    if let Some(p) = part_named(&m.entity, "postacert.eml") {
        s.push_str("-- postacert.eml (header) --\n");
        s.push_str(&String::from_utf8_lossy(split_header(&p).0).replace("\r\n", "\n"));
    }
    s
}

fn golden(kind: MessageKind, m: &UnsignedMessage) {
    let path = root()
        .join("tests/golden")
        .join(format!("{}.txt", kind.name()));
    let got = render(m);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 and review)",
            path.display()
        )
    });
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{} differs from golden at line {}:\n got: {:?}\nwant: {:?}",
            kind.name(),
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

#[test]
fn golden_catalogue() {
    let ca = certification(provider_a());
    let cb = certification(provider_b());
    let rcpt = "giulia.bianchi@pec.provider-b.test";
    let receipt_box = "posta-certificata@pec.provider-a.test";
    let env = build::transport(&ca, ORIGINAL);
    golden(MessageKind::Transport, &env);
    let postacert = part_named(&env.entity, "postacert.eml").unwrap();
    let rcpts = vec![rcpt.to_string()];
    golden(
        MessageKind::Anomaly,
        &build::anomaly(&AnomalyInput {
            provider: &provider_b(),
            time: time(),
            envelope_from: "someone@example.com",
            recipients: &rcpts,
            received: b"From: Someone <someone@example.com>\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: ciao\r\nMessage-ID: <x1@example.com>\r\n\r\nhello\r\n",
            reason: "messaggio non firmato da un gestore di posta certificata",
            fallback_message_id: "anomalia.1@pec.provider-b.test",
        }),
    );
    golden(
        MessageKind::Acceptance,
        &build::acceptance(&ca, "acc.1@pec.provider-a.test"),
    );
    golden(
        MessageKind::NonAcceptance,
        &build::non_acceptance(
            &ca,
            "nacc.1@pec.provider-a.test",
            &Rejection::Formal("destinatario non presente in To o Cc".into()),
        ),
    );
    golden(
        MessageKind::NonAcceptanceVirus,
        &build::non_acceptance(
            &ca,
            "nacc.2@pec.provider-a.test",
            &Rejection::Virus("Eicar-Test-Signature".into()),
        ),
    );
    golden(
        MessageKind::TakenInCharge,
        &build::taken_in_charge(&cb, "pic.1@pec.provider-b.test", receipt_box, &rcpts),
    );
    golden(
        MessageKind::Delivery(ReceiptVariant::Full),
        &build::delivery(
            &cb,
            "cons.1@pec.provider-b.test",
            rcpt,
            ReceiptVariant::Full,
            Some(&postacert),
        ),
    );
    let mut short = cb.clone();
    short.receipt_request = ReceiptVariant::Short;
    golden(
        MessageKind::Delivery(ReceiptVariant::Short),
        &build::delivery(
            &short,
            "cons.2@pec.provider-b.test",
            rcpt,
            ReceiptVariant::Short,
            Some(&postacert),
        ),
    );
    golden(
        MessageKind::Delivery(ReceiptVariant::Summary),
        &build::delivery(
            &cb,
            "cons.3@pec.provider-b.test",
            "segreteria@example.com",
            cb.delivery_variant("segreteria@example.com"),
            None,
        ),
    );
    golden(
        MessageKind::DeliveryError,
        &build::delivery_error(
            &cb,
            "err.1@pec.provider-b.test",
            "nessuno@pec.provider-b.test",
            &DeliveryFailure::UnknownRecipient,
        ),
    );
    golden(
        MessageKind::DeliveryErrorVirus,
        &build::delivery_error_virus(
            &ca,
            "err.2@pec.provider-a.test",
            rcpt,
            "Eicar-Test-Signature",
        ),
    );
    golden(
        MessageKind::VirusDetected,
        &build::virus_detected(
            &cb,
            "vir.1@pec.provider-b.test",
            receipt_box,
            rcpt,
            "Eicar-Test-Signature",
        ),
    );
    golden(
        MessageKind::Timeout(TimeoutStage::H12),
        &build::timeout(&ca, "t12.1@pec.provider-a.test", rcpt, TimeoutStage::H12),
    );
    golden(
        MessageKind::Timeout(TimeoutStage::H24),
        &build::timeout(&ca, "t24.1@pec.provider-a.test", rcpt, TimeoutStage::H24),
    );
}

#[test]
fn cc_recipients_get_sintetica_and_the_requested_type_is_kept() {
    let mut c = certification(provider_b());
    c.receipt_request = ReceiptVariant::Short;
    assert_eq!(
        c.delivery_variant("segreteria@example.com"),
        ReceiptVariant::Summary
    );
    assert_eq!(
        c.delivery_variant("giulia.bianchi@pec.provider-b.test"),
        ReceiptVariant::Short
    );
    let m = build::delivery(
        &c,
        "x@pec.provider-b.test",
        "segreteria@example.com",
        ReceiptVariant::Summary,
        None,
    );
    let d = pecd::pec::daticert::Daticert::parse(&part_named(&m.entity, "daticert.xml").unwrap())
        .unwrap();
    // <ricevuta tipo> is the type requested by the sender (RT §3.8).
    assert_eq!(d.ricevuta, Some(ReceiptVariant::Short));
    assert!(part_named(&m.entity, "postacert.eml").is_none());
}

#[test]
fn envelope_carries_original_with_swapped_message_id_and_8bit_intact() {
    let ca = certification(provider_a());
    let env = build::transport(&ca, ORIGINAL);
    let p = part_named(&env.entity, "postacert.eml").unwrap();
    let (h, body) = split_header(&p);
    let h = String::from_utf8_lossy(h);
    assert!(h.starts_with(&format!(
        "Message-ID: <{}>\r\nX-Riferimento-Message-ID: <20261123150404.4242@client.example>\r\n",
        ca.pec_id
    )));
    assert!(!h.contains("Message-ID: <20261123150404.4242@client.example>\r\nDate"));
    // The body of the original is byte-exact, 8-bit included.
    let (_, orig_body) = split_header(ORIGINAL);
    assert_eq!(body, orig_body);
    assert!(String::from_utf8_lossy(&env.entity).contains("Content-Transfer-Encoding: 8bit"));
}

#[test]
fn message_without_message_id_still_works() {
    let mut ca = certification(provider_a());
    ca.msgid = None;
    let orig = b"From: mario.rossi@pec.provider-a.test\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: x\r\n\r\nhi\r\n";
    let env = build::transport(&ca, orig);
    let headers = String::from_utf8_lossy(&env.header_block()).into_owned();
    assert!(!headers.contains("X-Riferimento-Message-ID"));
    assert!(headers.contains(&format!("Message-ID: <{}>", ca.pec_id)));
    let d = pecd::pec::daticert::Daticert::parse(&part_named(&env.entity, "daticert.xml").unwrap())
        .unwrap();
    assert_eq!(d.msgid, None);
    xmllint_dtd(&d.to_xml()).unwrap();
}

#[test]
fn non_ascii_subject_round_trips() {
    let ca = certification(provider_a());
    let env = signer("provider-a", pecd::smime::Digest::Sha256)
        .sign(&build::transport(&ca, ORIGINAL))
        .unwrap();
    let (h, _) = split_header(&env);
    // RFC 2047 on the wire…
    let raw_subject = pecd::pec::mime::header_value(h, "Subject").unwrap();
    assert!(raw_subject.is_ascii(), "{raw_subject}");
    // …and the same text once decoded, prefix included.
    assert_eq!(
        pecd::pec::classify::subject(h),
        "POSTA CERTIFICATA: Fattura n° 12 — Nicolò & <soci>"
    );
    let d =
        pecd::pec::daticert::Daticert::parse(&part_named(&env, "daticert.xml").unwrap()).unwrap();
    assert_eq!(
        d.oggetto.as_deref(),
        Some("Fattura n° 12 — Nicolò & <soci>")
    );
    // Characters outside ISO-8859-1 survive in the HTML alternative.
    let html = mail_parser::MessageParser::default()
        .parse(&env)
        .unwrap()
        .body_html(0)
        .unwrap()
        .into_owned();
    assert!(html.contains("&#8212;"), "{html}");
}
