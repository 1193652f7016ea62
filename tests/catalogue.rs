//! Every message type pecd builds is accepted by independent checkers
//! (`openssl smime -verify` against the dev CA, `xmllint --dtdvalid` with the
//! daticert DTD), classified back to its own kind by `pecd verify`, and
//! rejected once a single signed byte changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pecd::index::ProviderIndex;
use pecd::pec::build::{self, AnomalyInput, DeliveryFailure, Rejection};
use pecd::pec::headers::{MessageKind, TimeoutStage};
use pecd::pec::mime::{header_value, split_header};
use pecd::pec::{ReceiptVariant, daticert::Daticert};
use pecd::report::{Checker, Outcome};
use pecd::smime::{Digest, SignatureStatus, Verifier, VerifyTime};

struct Built {
    kind: MessageKind,
    bytes: Vec<u8>,
}

/// Build and sign the whole catalogue. Messages emitted by the recipient's
/// provider (presa in carico, consegna, mancata consegna, anomalia,
/// rilevazione virus) are signed by provider B, the rest by provider A.
fn catalogue(digest: Digest) -> Vec<Built> {
    let a = signer("provider-a", digest);
    let b = signer("provider-b", digest);
    let ca = certification(provider_a());
    let cb = certification(provider_b());
    let rcpt = "giulia.bianchi@pec.provider-b.test";
    let receipt_box = "posta-certificata@pec.provider-a.test";
    let envelope = a.sign(&build::transport(&ca, ORIGINAL)).unwrap();
    let postacert = part_named(&envelope, "postacert.eml").unwrap();
    let mut short = cb.clone();
    short.receipt_request = ReceiptVariant::Short;
    let ordinary = b"From: someone@example.com\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: ciao\r\n\r\nhello\r\n";
    let rcpts = vec![rcpt.to_string()];
    let anomaly = AnomalyInput {
        provider: &provider_b(),
        time: time(),
        envelope_from: "someone@example.com",
        recipients: &rcpts,
        received: ordinary,
        reason: "messaggio non firmato da un gestore di posta certificata",
        fallback_message_id: "anomalia.1@pec.provider-b.test",
    };
    let s = |signer: &pecd::smime::Signer, m| signer.sign(&m).unwrap();
    vec![
        Built {
            kind: MessageKind::Transport,
            bytes: envelope.clone(),
        },
        Built {
            kind: MessageKind::Anomaly,
            bytes: s(&b, build::anomaly(&anomaly)),
        },
        Built {
            kind: MessageKind::Acceptance,
            bytes: s(&a, build::acceptance(&ca, "acc.1@pec.provider-a.test")),
        },
        Built {
            kind: MessageKind::NonAcceptance,
            bytes: s(
                &a,
                build::non_acceptance(
                    &ca,
                    "nacc.1@pec.provider-a.test",
                    &Rejection::Formal("destinatario non presente in To o Cc".into()),
                ),
            ),
        },
        Built {
            kind: MessageKind::NonAcceptanceVirus,
            bytes: s(
                &a,
                build::non_acceptance(
                    &ca,
                    "nacc.2@pec.provider-a.test",
                    &Rejection::Virus("Eicar-Test-Signature".into()),
                ),
            ),
        },
        Built {
            kind: MessageKind::TakenInCharge,
            bytes: s(
                &b,
                build::taken_in_charge(&cb, "pic.1@pec.provider-b.test", receipt_box, &rcpts),
            ),
        },
        Built {
            kind: MessageKind::Delivery(ReceiptVariant::Full),
            bytes: s(
                &b,
                build::delivery(
                    &cb,
                    "cons.1@pec.provider-b.test",
                    rcpt,
                    ReceiptVariant::Full,
                    Some(&postacert),
                ),
            ),
        },
        Built {
            kind: MessageKind::Delivery(ReceiptVariant::Short),
            bytes: s(
                &b,
                build::delivery(
                    &short,
                    "cons.2@pec.provider-b.test",
                    rcpt,
                    ReceiptVariant::Short,
                    Some(&postacert),
                ),
            ),
        },
        Built {
            kind: MessageKind::Delivery(ReceiptVariant::Summary),
            bytes: s(
                &b,
                build::delivery(
                    &cb,
                    "cons.3@pec.provider-b.test",
                    rcpt,
                    ReceiptVariant::Summary,
                    None,
                ),
            ),
        },
        Built {
            kind: MessageKind::DeliveryError,
            bytes: s(
                &b,
                build::delivery_error(
                    &cb,
                    "err.1@pec.provider-b.test",
                    "nessuno@pec.provider-b.test",
                    &DeliveryFailure::UnknownRecipient,
                ),
            ),
        },
        Built {
            kind: MessageKind::DeliveryErrorVirus,
            bytes: s(
                &a,
                build::delivery_error_virus(
                    &ca,
                    "err.2@pec.provider-a.test",
                    rcpt,
                    "Eicar-Test-Signature",
                ),
            ),
        },
        Built {
            kind: MessageKind::VirusDetected,
            bytes: s(
                &b,
                build::virus_detected(
                    &cb,
                    "vir.1@pec.provider-b.test",
                    receipt_box,
                    rcpt,
                    "Eicar-Test-Signature",
                ),
            ),
        },
        Built {
            kind: MessageKind::Timeout(TimeoutStage::H12),
            bytes: s(
                &a,
                build::timeout(&ca, "t12.1@pec.provider-a.test", rcpt, TimeoutStage::H12),
            ),
        },
        Built {
            kind: MessageKind::Timeout(TimeoutStage::H24),
            bytes: s(
                &a,
                build::timeout(&ca, "t24.1@pec.provider-a.test", rcpt, TimeoutStage::H24),
            ),
        },
    ]
}

fn dev_checker() -> Checker {
    let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
    let idx =
        ProviderIndex::from_ldif(&String::from_utf8(read(&certs().join("index.ldif"))).unwrap())
            .unwrap();
    Checker {
        verifier: Verifier::with_anchors(anchors).unwrap(),
        index: Some(idx),
        when: VerifyTime::Now,
    }
}

fn expected_kind(kind: MessageKind) -> String {
    match kind {
        MessageKind::Anomaly => "busta-anomalia".into(),
        k => k.pec_type().unwrap().token().into(),
    }
}

fn check_catalogue(digest: Digest) {
    let checker = dev_checker();
    let built = catalogue(digest);
    assert_eq!(built.len(), 14);
    for m in &built {
        let name = m.kind.name();
        openssl_verify(&m.bytes)
            .unwrap_or_else(|e| panic!("{name}: openssl smime -verify failed: {e}"));
        if let Some(xml) = part_named(&m.bytes, "daticert.xml") {
            xmllint_dtd(&xml).unwrap_or_else(|e| panic!("{name}: daticert not DTD-valid: {e}"));
            let d = Daticert::parse(&xml).unwrap();
            assert_eq!(Some(d.tipo), m.kind.pec_type(), "{name}");
        } else {
            assert_eq!(
                m.kind,
                MessageKind::Anomaly,
                "{name}: only the anomaly has no daticert"
            );
        }
        let r = checker.check(name, &m.bytes);
        assert_eq!(r.outcome, Outcome::Pec, "{name}: {:?}", r.reason);
        assert_eq!(
            r.kind.as_deref(),
            Some(expected_kind(m.kind).as_str()),
            "{name}"
        );
        assert_eq!(
            r.signature.as_ref().unwrap().attributes.digest.as_deref(),
            Some(match digest {
                Digest::Sha1 => "sha1",
                Digest::Sha256 => "sha256",
                Digest::Sha384 => "sha384",
                Digest::Sha512 => "sha512",
            }),
            "{name}"
        );
        let (header, _) = split_header(&m.bytes);
        let subject = pecd::pec::classify::subject(header);
        assert!(
            subject.starts_with(m.kind.subject_prefix()),
            "{name}: {subject}"
        );
        let ct = header_value(header, "Content-Type").unwrap();
        assert!(
            ct.contains(&format!("micalg=\"{}\"", digest.micalg())),
            "{name}: {ct}"
        );
        assert_eq!(
            m.kind.carries_original(),
            part_named(&m.bytes, "postacert.eml").is_some(),
            "{name}: postacert presence"
        );
    }
}

#[test]
fn every_type_verifies_validates_and_classifies_back_sha256() {
    check_catalogue(Digest::Sha256);
}

#[test]
fn every_type_verifies_validates_and_classifies_back_sha1() {
    check_catalogue(Digest::Sha1);
}

#[test]
fn sha384_and_sha512_signatures_verify() {
    let c = certification(provider_a());
    for d in [Digest::Sha384, Digest::Sha512] {
        let m = signer("provider-a", d)
            .sign(&build::acceptance(&c, "x@pec.provider-a.test"))
            .unwrap();
        openssl_verify(&m).unwrap();
        assert_eq!(dev_checker().check("x", &m).outcome, Outcome::Pec);
    }
}

/// Flip one byte of the signed entity (inside the text, the daticert or the
/// original): both pecd and openssl must reject the message.
#[test]
fn tampering_with_one_signed_byte_breaks_verification() {
    let checker = dev_checker();
    for m in catalogue(Digest::Sha256) {
        let name = m.kind.name();
        let text = m.bytes.clone();
        // Inside the signed entity: the "Identificativo"/"Anomalia" text line.
        let needle: &[u8] = if m.kind == MessageKind::Anomaly {
            b"Anomalia nel messaggio"
        } else {
            b"Identificativo messaggio"
        };
        let pos = text
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap_or_else(|| panic!("{name}"));
        let mut tampered = text.clone();
        tampered[pos] ^= 0x01;
        let r = checker.check(name, &tampered);
        assert!(
            matches!(
                r.signature.as_ref().unwrap().status,
                SignatureStatus::BadSignature(_)
            ),
            "{name}: {:?}",
            r.signature.unwrap().status
        );
        assert_eq!(r.outcome, Outcome::Ordinary, "{name}");
        assert!(
            openssl_verify(&tampered).is_err(),
            "{name}: openssl accepted a tampered message"
        );
    }
}

#[test]
fn signer_not_in_index_is_ordinary_mail() {
    let c = certification(pecd::pec::Provider {
        name: "Rogue S.p.A.".into(),
        domain: "pec.rogue.test".into(),
    });
    let m = signer("rogue", Digest::Sha256)
        .sign(&build::acceptance(&c, "r@pec.rogue.test"))
        .unwrap();
    openssl_verify(&m).unwrap(); // the chain is fine…
    let r = dev_checker().check("rogue", &m);
    assert_eq!(r.outcome, Outcome::Ordinary); // …but the signer is not a listed provider
    assert!(r.reason.unwrap().contains("indice"));
}

#[test]
fn provider_signing_for_a_domain_it_does_not_manage_is_an_anomaly() {
    // Provider A's key, but a From: in provider B's domain (RT §6.3 step 4).
    let c = certification(provider_b());
    let m = signer("provider-a", Digest::Sha256)
        .sign(&build::acceptance(&c, "x@pec.provider-b.test"))
        .unwrap();
    let r = dev_checker().check("x", &m);
    assert_eq!(r.outcome, Outcome::Anomaly);
    assert!(r.reason.unwrap().contains("non è gestito"));
}

#[test]
fn a_provider_reports_only_on_its_own_users() {
    // Provider A, with its own From:, signs receipts that only provider B
    // can issue: a consegna and a presa in carico about B's user, and an
    // envelope for a sender of B. Each speaks for a party A does not serve.
    let ca = certification(provider_a());
    let a = signer("provider-a", Digest::Sha256);
    let giulia = "giulia.bianchi@pec.provider-b.test";
    let mut from_b = ca.clone();
    from_b.sender = giulia.to_string();
    for (name, m) in [
        (
            "consegna",
            build::delivery(
                &ca,
                "c.1@pec.provider-a.test",
                giulia,
                ReceiptVariant::Full,
                None,
            ),
        ),
        (
            "presa in carico",
            build::taken_in_charge(
                &ca,
                "p.1@pec.provider-a.test",
                "posta-certificata@pec.provider-a.test",
                &[giulia.to_string()],
            ),
        ),
        ("busta", build::transport(&from_b, ORIGINAL)),
    ] {
        let r = dev_checker().check(name, &a.sign(&m).unwrap());
        assert_eq!(r.outcome, Outcome::Anomaly, "{name}");
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .contains("non gestito dal gestore firmatario"),
            "{name}: {:?}",
            r.reason
        );
    }
    // A mancata consegna comes from either side: the sender's provider
    // after a failed relay reports on B's recipient to its own user.
    let m = build::delivery_error(
        &ca,
        "e.1@pec.provider-a.test",
        giulia,
        &DeliveryFailure::UnknownRecipient,
    );
    let r = dev_checker().check("errore", &a.sign(&m).unwrap());
    assert_eq!(r.outcome, Outcome::Pec, "{:?}", r.reason);
}

#[test]
fn daticert_type_mismatch_is_an_anomaly() {
    // Signed by a listed provider, X-Ricevuta says accettazione but the
    // daticert says otherwise: malformed ⇒ anomaly with the reason.
    let c = certification(provider_a());
    let mut unsigned = build::timeout(
        &c,
        "t@pec.provider-a.test",
        "x@pec.provider-b.test",
        TimeoutStage::H12,
    );
    for h in unsigned.headers.iter_mut() {
        if let pecd::pec::mime::HeaderLine::Encoded(name, _) = h
            && *name == "X-Ricevuta"
        {
            *h = pecd::pec::mime::HeaderLine::Verbatim(b"X-Ricevuta: accettazione\r\n".to_vec());
        }
    }
    let m = signer("provider-a", Digest::Sha256)
        .sign(&unsigned)
        .unwrap();
    let r = dev_checker().check("x", &m);
    assert_eq!(r.outcome, Outcome::Anomaly);
    assert!(r.reason.unwrap().contains("diverso"));
}

#[test]
fn cli_classifies_every_built_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, m) in catalogue(Digest::Sha1).into_iter().enumerate() {
        let p = dir.path().join(format!("{i:02}-{}.eml", m.kind.name()));
        std::fs::write(&p, &m.bytes).unwrap();
        files.push((p, expected_kind(m.kind)));
    }
    let out = pecd()
        .arg("verify")
        .arg("--json")
        .arg("--trust")
        .arg(certs().join("ca.pem"))
        .arg("--index")
        .arg(certs().join("index.ldif"))
        .args(files.iter().map(|f| f.0.clone()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for (line, (_, kind)) in stdout.lines().zip(&files) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kind"], kind.as_str());
        assert_eq!(v["outcome"], "pec");
        assert!(v["provider"].as_str().unwrap().starts_with("Provider "));
    }
}

#[test]
fn standard_protocol_name_verifies_too() {
    let c = certification(provider_a());
    let m = signer("provider-a", Digest::Sha256)
        .with_protocol(pecd::smime::SignatureProtocol::Standard)
        .sign(&build::acceptance(&c, "std@pec.provider-a.test"))
        .unwrap();
    assert!(String::from_utf8_lossy(&m).contains("protocol=\"application/pkcs7-signature\""));
    openssl_verify(&m).unwrap();
    assert_eq!(dev_checker().check("std", &m).outcome, Outcome::Pec);
}

/// An internationalised sender address (RFC 6532) and display text survive
/// building, signing, verification and parsing back.
#[test]
fn non_ascii_addresses_round_trip() {
    let mut c = certification(provider_a());
    c.sender = "nicolò.d'amico@pec.provider-a.test".into();
    c.reply_to = c.sender.clone();
    c.recipients[0].address = "zoë.ünal@pec.provider-b.test".into();
    let original = "From: nicolò.d'amico@pec.provider-a.test\r\nTo: zoë.ünal@pec.provider-b.test\r\nSubject: Perché sì\r\n\r\nciao\r\n";
    let env = signer("provider-a", Digest::Sha256)
        .sign(&build::transport(&c, original.as_bytes()))
        .unwrap();
    openssl_verify(&env).unwrap();
    let r = dev_checker().check("utf8", &env);
    assert_eq!(r.outcome, Outcome::Pec, "{:?}", r.reason);
    let d = r.daticert.unwrap();
    assert_eq!(d.mittente, "nicolò.d'amico@pec.provider-a.test");
    assert_eq!(d.destinatari[0].address, "zoë.ünal@pec.provider-b.test");
    let from = mail_parser::MessageParser::default().parse(&env).unwrap();
    let name = from
        .from()
        .unwrap()
        .first()
        .unwrap()
        .name()
        .unwrap()
        .to_string();
    assert_eq!(name, "Per conto di: nicolò.d'amico@pec.provider-a.test");
    xmllint_dtd(&part_named(&env, "daticert.xml").unwrap()).unwrap();
    // Control characters XML cannot carry, even escaped, in what the
    // sender wrote (a Reply-To, a Message-ID): the daticert stays valid.
    let mut odd = c.clone();
    odd.reply_to = "a\u{1}b@pec.provider-a.test".into();
    odd.msgid = Some("<id\u{8}x@client.test>".into());
    odd.recipients[0].address = "\"a\u{1}\"@pec.provider-b.test".into();
    let env = signer("provider-a", Digest::Sha256)
        .sign(&build::transport(&odd, ORIGINAL))
        .unwrap();
    xmllint_dtd(&part_named(&env, "daticert.xml").unwrap()).unwrap();
}

#[test]
fn smime_capabilities_attribute_is_optional_and_verifies() {
    let c = certification(provider_a());
    let plain = signer("provider-a", Digest::Sha1)
        .sign(&build::acceptance(&c, "a@pec.provider-a.test"))
        .unwrap();
    let caps = signer("provider-a", Digest::Sha1)
        .with_smime_capabilities(true)
        .sign(&build::acceptance(&c, "b@pec.provider-a.test"))
        .unwrap();
    for m in [&plain, &caps] {
        openssl_verify(m).unwrap();
        assert_eq!(dev_checker().check("caps", m).outcome, Outcome::Pec);
    }
    // The attribute makes the signature visibly larger (it lists algorithms).
    let sig_len = |m: &[u8]| part_named(m, "smime.p7s").map(|p| p.len()).unwrap_or(0);
    assert!(
        sig_len(&caps) > sig_len(&plain) + 40,
        "{} vs {}",
        sig_len(&caps),
        sig_len(&plain)
    );
}

/// A subject whose encoded words decode to line breaks (`=0D=0A`) cannot
/// add header fields to what pecd signs and sends: the top-level header
/// of an envelope or notice is outside the signature, and a forged
/// `X-Ricevuta` there would mislead the peer's classification.
#[test]
fn a_subject_cannot_add_header_fields() {
    let injected = b"From: mario.rossi@pec.provider-a.test\r\n\
To: giulia.bianchi@pec.provider-b.test\r\n\
Subject: =?us-ascii?Q?x=0D=0AX-Ricevuta:_avvenuta-consegna?=\r\n\
\r\nbody\r\n";
    let h = pecd::pec::original::OriginalHeaders::parse(injected);
    assert_eq!(h.subject, "x  X-Ricevuta: avvenuta-consegna");
    // Certification data from elsewhere (a peer's daticert `oggetto`)
    // are made one line where they become header fields.
    let mut c = certification(provider_a());
    c.subject = "x\r\nX-Ricevuta: avvenuta-consegna\r\n\r\nbody".into();
    let a = signer("provider-a", Digest::Sha256);
    for m in [
        a.sign(&build::acceptance(&c, "acc.9@pec.provider-a.test"))
            .unwrap(),
        a.sign(&build::transport(&c, injected)).unwrap(),
    ] {
        let (header, _) = split_header(&m);
        let fields: Vec<String> = pecd::pec::mime::header_fields(header)
            .iter()
            .filter(|f| f.is("X-Ricevuta"))
            .map(|f| String::from_utf8_lossy(f.value()).trim().to_string())
            .collect();
        assert!(
            fields.iter().all(|v| v != "avvenuta-consegna"),
            "{fields:?} in {}",
            String::from_utf8_lossy(header)
        );
        openssl_verify(&m).unwrap();
    }
}

/// A bare CR inside a copied field (found by the `submission` fuzz
/// target): the original travels canonical in postacert.eml, where a bare
/// CR is a line break, so the access point reads it canonical too, and a
/// field copied to the envelope's header stays one field.
#[test]
fn a_bare_cr_cannot_add_header_fields() {
    let sneaky = b"From: mario.rossi@pec.provider-a.test\r\n\
To: giulia.bianchi@pec.provider-b.test\r\n\
Cc: luca@pec.provider-b.test\rX-Ricevuta: avvenuta-consegna\r\n\
Cc2: x\r\nest\r\n\
Subject: s\r\n\
\r\nbody\r\n";
    let mut c = certification(provider_a());
    c.subject = "s".into();
    let m = build::transport(&c, sneaky);
    let header = m.header_block();
    assert_eq!(
        m.field_starts(),
        m.headers.len(),
        "{}",
        String::from_utf8_lossy(&header)
    );
    let fields = pecd::pec::mime::header_fields(&header);
    assert!(!fields.iter().any(|f| f.is("X-Ricevuta")));
    // Read canonical, the Cc holds one address, and a Bcc hidden the same
    // way is seen.
    let h = pecd::pec::original::OriginalHeaders::parse(sneaky);
    assert_eq!(h.cc, vec!["luca@pec.provider-b.test".to_string()]);
    let hidden =
        b"From: a@pec.provider-a.test\r\nTo: b@pec.provider-b.test\rBcc: spia@x.it\r\n\r\nbody\r\n";
    assert!(pecd::pec::original::OriginalHeaders::parse(hidden).bcc_value);
}

/// A subject that looks like an encoded word is written encoded, so mail
/// programs show what daticert's `oggetto` says, not its decoding.
#[test]
fn a_subject_that_looks_encoded_is_shown_as_written() {
    let mut c = certification(provider_a());
    c.subject =
        "vedi =?utf-8?q?Fattura_pagata?= e poi una riga ben piu lunga di settantacinque caratteri"
            .into();
    let env = signer("provider-a", Digest::Sha256)
        .sign(&build::transport(&c, ORIGINAL))
        .unwrap();
    openssl_verify(&env).unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&env).unwrap();
    assert_eq!(
        parsed.subject().unwrap(),
        format!("POSTA CERTIFICATA: {}", c.subject)
    );
    let (header, _) = pecd::pec::mime::split_header(&env);
    for line in String::from_utf8_lossy(header).lines() {
        assert!(line.len() <= 998, "{line}");
    }
}

/// RT §3.11: the prefix stays plain text, as every provider writes it and
/// as filters match it; only an original that needs it is RFC 2047-encoded
/// after it, and a long plain one is folded, not encoded.
#[test]
fn the_subject_prefix_is_never_encoded() {
    let long = "Richiesta di integrazione documentale relativa alla pratica numero 2026/000123 del 12 novembre";
    for (subject, encoded) in [("Fattura n° 12 — Nicolò", true), (long, false), ("", false)] {
        let mut c = certification(provider_a());
        c.subject = subject.into();
        for (prefix, m) in [
            ("ACCETTAZIONE: ", build::acceptance(&c, "x@y")),
            (
                "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
                build::timeout(
                    &c,
                    "x@y",
                    "giulia.bianchi@pec.provider-b.test",
                    TimeoutStage::H24,
                ),
            ),
        ] {
            let header = String::from_utf8(m.header_block()).unwrap();
            let line = header
                .split("\r\n")
                .skip_while(|l| !l.starts_with("Subject:"))
                .take_while(|l| l.starts_with("Subject:") || l.starts_with([' ', '\t']))
                .collect::<Vec<_>>();
            assert!(
                line[0].starts_with(&format!("Subject: {}", prefix.trim_end())),
                "{line:?}"
            );
            assert_eq!(line.concat().contains("=?"), encoded, "{line:?}");
            assert!(line.iter().all(|l| l.len() <= 78), "{line:?}");
            let parsed = mail_parser::MessageParser::default()
                .parse(header.as_bytes())
                .unwrap();
            assert_eq!(
                parsed.subject().unwrap_or_default().trim_end(),
                format!("{prefix}{subject}").trim_end()
            );
        }
    }
}

/// Header fields outside the signature that readers may each take another
/// copy of: a second Content-Type (mail clients take the first, this
/// verifier the last), a second X-Ricevuta or X-Trasporto. Such a copy of
/// a genuine message is not taken as genuine.
#[test]
fn repeated_outer_fields_readers_disagree_on_are_not_genuine() {
    let c = certification(provider_a());
    let m = signer("provider-a", Digest::Sha256)
        .sign(&build::transport(&c, ORIGINAL))
        .unwrap();
    assert_eq!(dev_checker().check("m", &m).outcome, Outcome::Pec);
    let first = |field: &str| {
        let mut out = field.as_bytes().to_vec();
        out.extend_from_slice(&m);
        out
    };
    let two_types = first("Content-Type: multipart/mixed; boundary=\"altro\"\r\n");
    let r = dev_checker().check("m", &two_types);
    assert_eq!(r.outcome, Outcome::Ordinary, "{:?}", r.reason);
    assert!(r.reason.unwrap().contains("Content-Type"));
    let r = dev_checker().check("m", &first("X-Trasporto: errore\r\n"));
    assert_eq!(r.outcome, Outcome::Anomaly, "{:?}", r.reason);
    assert!(r.reason.unwrap().contains("X-Trasporto ripetuta"));
    let acceptance = signer("provider-a", Digest::Sha256)
        .sign(&build::acceptance(&c, "x@y"))
        .unwrap();
    assert_eq!(dev_checker().check("m", &acceptance).outcome, Outcome::Pec);
    let mut two = b"X-Ricevuta: avvenuta-consegna\r\n".to_vec();
    two.extend_from_slice(&acceptance);
    let r = dev_checker().check("m", &two);
    assert_eq!(r.outcome, Outcome::Anomaly, "{:?}", r.reason);
    assert!(r.reason.unwrap().contains("X-Ricevuta ripetuta"));
}

/// `From: "Per conto di: <sender>"`: a sender outside ASCII is written as
/// bare encoded words, never inside quotes (RFC 2047 §5), and reads back.
#[test]
fn an_on_behalf_of_name_outside_ascii_is_not_quoted_encoded_words() {
    for sender in [
        "nicolò.rossi@pec.provider-a.test",
        "un.indirizzo.molto.lungo.di.un.ufficio.della.pubblica.amministrazione@pec.provider-a.test",
    ] {
        let mut c = certification(provider_a());
        c.sender = sender.into();
        let header = String::from_utf8(build::transport(&c, ORIGINAL).header_block()).unwrap();
        let from: String = header
            .split("\r\n")
            .skip_while(|l| !l.starts_with("From:"))
            .take_while(|l| l.starts_with("From:") || l.starts_with([' ', '\t']))
            .collect();
        assert!(!from.contains("\"=?"), "{from}");
        let parsed = mail_parser::MessageParser::default()
            .parse(header.as_bytes())
            .unwrap();
        let a = parsed.from().unwrap().first().unwrap();
        assert_eq!(a.name(), Some(format!("Per conto di: {sender}").as_str()));
        assert_eq!(a.address(), Some("posta-certificata@pec.provider-a.test"));
        // A strict reader (Python's e-mail package) sees one address too.
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys, email.utils; print(email.utils.getaddresses([sys.argv[1]]))")
            .arg(from.trim_start_matches("From:").replace("\r\n", ""))
            .output()
            .unwrap();
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(seen.starts_with("[(") && !seen.contains("), ("), "{seen}");
        assert!(
            seen.contains("'posta-certificata@pec.provider-a.test')]"),
            "{seen}"
        );
    }
}
