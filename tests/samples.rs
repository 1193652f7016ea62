//! The real provider messages in `shared/pec-samples/` are classified with
//! the right kind and daticert fields, and their signatures verify with the
//! chain to Actalis (system CA store) at their signing time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pecd::index::ProviderIndex;
use pecd::pec::daticert::Daticert;
use pecd::pec::{ErrorKind, PecType, ReceiptVariant, RecipientClass};
use pecd::report::{Checker, Outcome, Report};
use pecd::smime::{SignatureStatus, Verifier, VerifyTime};

fn system_checker(when: VerifyTime) -> Checker {
    Checker {
        verifier: Verifier::system().unwrap(),
        index: None,
        when,
    }
}

fn check(name: &str, when: VerifyTime) -> Report {
    let p = samples().join(name);
    system_checker(when).check(name, &read(&p))
}

fn daticert(r: &Report) -> &Daticert {
    r.verdict
        .as_ref()
        .unwrap()
        .daticert
        .as_ref()
        .expect("daticert")
}

fn assert_valid_chain(r: &Report) {
    let sig = r.signature.as_ref().unwrap();
    assert_eq!(
        sig.status,
        SignatureStatus::Valid,
        "{}: {:?}",
        r.file,
        sig.status
    );
    assert_eq!(r.outcome, Outcome::Pec, "{}: {:?}", r.file, r.reason);
    assert_eq!(sig.attributes.digest.as_deref(), Some("sha1"));
}

#[test]
fn aruba_2018_acceptance() {
    let r = check(
        "pec/01-aruba-2018-accettazione.eml",
        VerifyTime::SigningTime,
    );
    assert_valid_chain(&r);
    assert_eq!(r.kind.as_deref(), Some("accettazione"));
    let sig = r.signature.as_ref().unwrap();
    assert!(
        sig.signer_subject
            .as_deref()
            .unwrap()
            .contains("O=Aruba PEC S.p.A.")
    );
    assert_eq!(sig.signer_emails, vec!["posta-certificata@pec.aruba.it"]);
    let d = daticert(&r);
    assert_eq!(d.tipo, PecType::Acceptance);
    assert_eq!(d.errore, ErrorKind::None);
    assert_eq!(d.mittente, "l.battistini@pec.it");
    assert_eq!(d.destinatari.len(), 1);
    assert_eq!(d.destinatari[0].tipo, RecipientClass::Certified);
    assert_eq!(d.oggetto.as_deref(), Some("IT03339130126_00009.xml"));
    assert_eq!(d.gestore_emittente, "ARUBA PEC S.p.A.");
    assert_eq!(
        (
            d.data.giorno.as_str(),
            d.data.ora.as_str(),
            d.data.zona.as_str()
        ),
        ("13/11/2018", "16:39:26", "+0100")
    );
    assert_eq!(
        d.identificativo,
        "opec288.20181113163926.01838.310.1.63@pec.aruba.it"
    );
    assert_eq!(
        d.msgid.as_deref(),
        Some(
            "<1542123565.921546936035156.464602125997431-openerp-8-fatturapa.attachment.out@elbati-Vostro-3550>"
        )
    );
    assert_eq!(d.ricevuta, None);
}

#[test]
fn aruba_2018_delivery_completa() {
    let r = check(
        "pec/02-aruba-2018-avvenuta-consegna-completa.eml",
        VerifyTime::SigningTime,
    );
    assert_valid_chain(&r);
    assert_eq!(r.kind.as_deref(), Some("avvenuta-consegna"));
    assert!(r.verdict.as_ref().unwrap().has_postacert);
    let d = daticert(&r);
    assert_eq!(d.tipo, PecType::Delivery);
    assert_eq!(d.ricevuta, Some(ReceiptVariant::Full));
    assert_eq!(d.consegna.as_deref(), Some("l.battistini@pec.it"));
    assert_eq!(d.data.ora, "16:39:27");
}

#[test]
fn aruba_2021_acceptance_two_recipients() {
    let r = check(
        "pec/03-aruba-2021-accettazione-2-destinatari.eml",
        VerifyTime::SigningTime,
    );
    assert_valid_chain(&r);
    let d = daticert(&r);
    let dest: Vec<_> = d
        .destinatari
        .iter()
        .map(|x| (x.address.as_str(), x.tipo))
        .collect();
    assert_eq!(
        dest,
        vec![
            ("flosslabtest@legalmail.it", RecipientClass::Certified),
            ("test01@pec.flosslab.it", RecipientClass::Certified)
        ]
    );
    assert_eq!(d.oggetto.as_deref(), Some("Subject test prova pec"));
    assert_eq!(
        d.msgid.as_deref(),
        Some("<R43XS7$8A2B712B1EC45527B69E94AB60B8CA07@pec.it>")
    );
}

#[test]
fn aruba_2021_delivery_per_recipient() {
    let r = check(
        "pec/04-aruba-2021-avvenuta-consegna-completa.eml",
        VerifyTime::SigningTime,
    );
    assert_valid_chain(&r);
    let d = daticert(&r);
    assert_eq!(d.consegna.as_deref(), Some("test01@pec.flosslab.it"));
    // identificativo is the envelope's PEC msgid, the same as in 03.
    assert_eq!(
        d.identificativo,
        "opec296.20211214143608.11149.382.1.69@pec.aruba.it"
    );
}

#[test]
fn aruba_2021_delivery_error_nota12() {
    let r = check(
        "pec/05-aruba-2021-errore-consegna-no-dest.eml",
        VerifyTime::SigningTime,
    );
    assert_valid_chain(&r);
    assert_eq!(r.kind.as_deref(), Some("errore-consegna"));
    let d = daticert(&r);
    assert_eq!(d.errore, ErrorKind::NoRecipient);
    assert_eq!(d.consegna.as_deref(), Some("provaprova@pec.flosslab.it"));
    assert_eq!(
        d.errore_esteso.as_deref(),
        Some("5.1.1 - Aruba Pec S.p.A. - indirizzo non valido")
    );
}

#[test]
fn namirial_2024_envelope_inside_mailing_list_wrapper() {
    let r = check(
        "pec/06-namirial-2024-busta-trasporto-via-mailing-list.eml",
        VerifyTime::SigningTime,
    );
    assert!(r.wrapped);
    assert_valid_chain(&r);
    assert_eq!(r.kind.as_deref(), Some("posta-certificata"));
    let d = daticert(&r);
    assert_eq!(d.tipo, PecType::Transport);
    assert_eq!(d.mittente, "altea.l@namirialpec.it");
    assert_eq!(d.destinatari.len(), 7);
    assert!(
        d.destinatari
            .iter()
            .all(|x| x.tipo == RecipientClass::External)
    );
    assert_eq!(d.gestore_emittente, "Namirial S.p.A.");
    assert_eq!(d.ricevuta, Some(ReceiptVariant::Full));
    assert_eq!(
        d.identificativo,
        "opec21192.20241205000210.24820.46.1.184@sicurezzapostale.it"
    );
    let sig = r.signature.as_ref().unwrap();
    assert!(sig.signer_subject.as_deref().unwrap().contains("Namirial"));
}

/// The extraction recipe of shared/pec-samples/README.md, then a plain verify
/// of the inner envelope at its signing time (1733353330).
#[test]
fn namirial_inner_envelope_verifies_alone_at_signing_time() {
    let raw = read(&samples().join("pec/06-namirial-2024-busta-trasporto-via-mailing-list.eml"));
    let text = String::from_utf8_lossy(&raw);
    let boundary = text
        .split("boundary=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let marker = format!("--{boundary}");
    let start = text.find(&marker).unwrap() + marker.len();
    let end = start + text[start..].find(&marker).unwrap();
    let inner = format!(
        "MIME-Version: 1.0\n{}",
        text[start..end].trim_start_matches(['\r', '\n'])
    );
    let at = chrono::DateTime::from_timestamp(1_733_353_330, 0).unwrap();
    let r = system_checker(VerifyTime::At(at)).check("inner", inner.as_bytes());
    assert_eq!(r.signature.as_ref().unwrap().status, SignatureStatus::Valid);
    assert!(!r.wrapped);
}

#[test]
fn sogei_2018_breve_bad_signature_but_parsed() {
    let r = check(
        "pec/07-sogei-sdi-2018-busta-trasporto-breve.eml",
        VerifyTime::SigningTime,
    );
    assert!(matches!(
        r.signature.as_ref().unwrap().status,
        SignatureStatus::BadSignature(_)
    ));
    assert_eq!(r.outcome, Outcome::Ordinary);
    assert_eq!(r.kind.as_deref(), Some("posta-certificata"));
    let v = r.verdict.as_ref().unwrap();
    // `X-Tiporicevuta` (Sogei's case) is read case-insensitively.
    assert_eq!(v.x_tipo_ricevuta.as_deref(), Some("breve"));
    let d = daticert(&r);
    assert_eq!(d.ricevuta, Some(ReceiptVariant::Short));
    assert_eq!(d.mittente, "sdi03@pec.fatturapa.it");
    assert_eq!(d.gestore_emittente, "Sogei SpA");
    assert_eq!(
        d.oggetto.as_deref(),
        Some("Invio File 7339338 (SIMULAZIONE)")
    );
}

#[test]
fn expired_certificates_fail_at_the_current_time() {
    let r = check("pec/01-aruba-2018-accettazione.eml", VerifyTime::Now);
    match &r.signature.as_ref().unwrap().status {
        SignatureStatus::UntrustedChain(why) => assert!(why.contains("expired"), "{why}"),
        other => panic!("expected an expired chain, got {other:?}"),
    }
    assert_eq!(r.outcome, Outcome::Ordinary);
}

#[test]
fn rem_samples_are_not_pec_and_do_not_error() {
    let dir = samples().join("rem");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "eml") {
            let r =
                system_checker(VerifyTime::SigningTime).check(&p.display().to_string(), &read(&p));
            assert_eq!(r.outcome, Outcome::Ordinary, "{}", r.file);
            assert_eq!(r.kind, None, "{}", r.file);
            assert!(
                r.verdict.as_ref().unwrap().rem,
                "{}: REM headers not recognised",
                r.file
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 6);
}

#[test]
fn rem_samples_chain_to_their_test_ca() {
    // With the REM test root and intermediate as anchors, the REM signatures
    // verify: the chain logic is not PEC-specific.
    let mut anchors =
        pecd::smime::load_certificates(&samples().join("rem/REM-ROOT-CA.crt")).unwrap();
    anchors.extend(
        pecd::smime::load_certificates(
            &samples().join("rem/REM-POLICY-IT-INTERMEDIATE-CERTIFICATE.crt"),
        )
        .unwrap(),
    );
    let checker = Checker {
        verifier: Verifier::with_anchors(anchors).unwrap(),
        index: None,
        when: VerifyTime::SigningTime,
    };
    let p = samples().join("rem/10-rem-policy-it-REM_SubmissionAcceptance.RA01.eml");
    let r = checker.check("rem10", &read(&p));
    assert_eq!(r.signature.as_ref().unwrap().status, SignatureStatus::Valid);
    // Signed by a trusted key but with no PEC headers: signed by a "provider"
    // with no index consulted, yet not a PEC message ⇒ anomaly-class.
    assert_eq!(r.outcome, Outcome::Anomaly);
}

#[test]
fn postecom_2012_daticert_parses_leniently() {
    let xml = read(&samples().join("pec/08-postecom-2012-daticert.xml"));
    let d = Daticert::parse(&xml).unwrap();
    assert_eq!(d.tipo, PecType::Transport);
    assert_eq!(d.destinatari[0].tipo, RecipientClass::External);
    assert!(
        d.identificativo
            .ends_with(".posta-certificata@postecert.it"),
        "{}",
        d.identificativo
    );
}

#[test]
fn index_check_rejects_a_provider_that_is_not_listed() {
    // Aruba is not in the dev index: a valid Aruba signature is then an
    // unknown provider ⇒ ordinary mail (RT §6.3).
    let idx =
        ProviderIndex::from_ldif(&String::from_utf8(read(&certs().join("index.ldif"))).unwrap())
            .unwrap();
    let checker = Checker {
        verifier: Verifier::system().unwrap(),
        index: Some(idx),
        when: VerifyTime::SigningTime,
    };
    let r = checker.check(
        "01",
        &read(&samples().join("pec/01-aruba-2018-accettazione.eml")),
    );
    assert_eq!(r.outcome, Outcome::Ordinary);
    assert!(
        r.reason.as_deref().unwrap().contains("indice dei gestori"),
        "{:?}",
        r.reason
    );
}

#[test]
fn cli_verify_samples_exit_codes_and_json() {
    let out = pecd()
        .args(["verify", "--at", "signing-time", "--json"])
        .arg(samples().join("pec/01-aruba-2018-accettazione.eml"))
        .arg(samples().join("pec/05-aruba-2021-errore-consegna-no-dest.eml"))
        .output()
        .unwrap();
    // Valid, but with no provider index to say the signers are providers.
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "accettazione");
    assert_eq!(lines[0]["signature"]["status"]["status"], "valid");
    assert_eq!(
        lines[1]["daticert"]["errore_esteso"],
        "5.1.1 - Aruba Pec S.p.A. - indirizzo non valido"
    );
    assert_eq!(lines[1]["daticert"]["errore"], "no-dest");

    // 07: bad signature ⇒ ordinary (3); with 01 the worst wins.
    let out = pecd()
        .args(["verify", "--at", "signing-time"])
        .arg(samples().join("pec/01-aruba-2018-accettazione.eml"))
        .arg(samples().join("pec/07-sogei-sdi-2018-busta-trasporto-breve.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("BAD SIGNATURE"), "{text}");
    assert!(
        text.contains("provider:          not checked (no --index)"),
        "{text}"
    );

    // Unreadable input: a one-line reason, exit 4.
    let out = pecd()
        .args(["verify", "/nonexistent/file.eml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read"));

    // Bad --at: usage error 2 with a clear message.
    let out = pecd()
        .args(["verify", "--at", "yesterday"])
        .arg(samples().join("pec/01-aruba-2018-accettazione.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}
