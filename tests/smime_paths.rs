//! The cached fast verification path and OpenSSL's PKCS#7 path agree on every
//! real sample, every built message and their tampered copies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pecd::pec::build;
use pecd::smime::{Digest, SignatureStatus, Verifier, VerifyTime, split_multipart_signed};

fn class(s: &SignatureStatus) -> &'static str {
    match s {
        SignatureStatus::Valid => "valid",
        SignatureStatus::NotSigned(_) => "not-signed",
        SignatureStatus::BadSignature(_) => "bad",
        SignatureStatus::UntrustedChain(_) => "chain",
    }
}

fn compare(verifier: &Verifier, name: &str, raw: &[u8], when: VerifyTime) -> &'static str {
    let Ok(parts) = split_multipart_signed(raw) else {
        return "not-signed";
    };
    let fast = verifier.verify_parts(&parts, when);
    let reference = verifier.verify_parts_pkcs7(&parts, when);
    assert_eq!(
        class(&fast.status),
        class(&reference.status),
        "{name}: {:?} vs {:?}",
        fast.status,
        reference.status
    );
    assert_eq!(fast.signer_sha1, reference.signer_sha1, "{name}");
    assert_eq!(fast.signer_subject, reference.signer_subject, "{name}");
    assert_eq!(fast.attributes, reference.attributes, "{name}");
    class(&fast.status)
}

fn tampered(raw: &[u8]) -> Vec<u8> {
    let mut t = raw.to_vec();
    let pos = t
        .windows(8)
        .position(|w| w == b"Il giorn")
        .or_else(|| t.windows(4).position(|w| w == b"<dat"))
        .unwrap_or(t.len() / 2);
    t[pos] ^= 0x20;
    t
}

#[test]
fn samples_agree() {
    let v = Verifier::system().unwrap();
    let mut seen = Vec::new();
    for f in [
        "01-aruba-2018-accettazione",
        "02-aruba-2018-avvenuta-consegna-completa",
        "03-aruba-2021-accettazione-2-destinatari",
        "04-aruba-2021-avvenuta-consegna-completa",
        "05-aruba-2021-errore-consegna-no-dest",
        "07-sogei-sdi-2018-busta-trasporto-breve",
    ] {
        let raw = read(&samples().join(format!("pec/{f}.eml")));
        seen.push(compare(&v, f, &raw, VerifyTime::SigningTime));
        seen.push(compare(&v, f, &raw, VerifyTime::Now));
        assert_eq!(
            compare(&v, f, &tampered(&raw), VerifyTime::SigningTime),
            "bad",
            "{f} tampered"
        );
    }
    assert_eq!(seen.iter().filter(|s| **s == "valid").count(), 5);
    assert_eq!(
        seen.iter().filter(|s| **s == "chain").count(),
        5,
        "expired now"
    );
}

#[test]
fn built_messages_agree_for_every_digest() {
    let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
    let v = Verifier::with_anchors(anchors).unwrap();
    let c = certification(provider_a());
    for d in [Digest::Sha1, Digest::Sha256, Digest::Sha384, Digest::Sha512] {
        let m = signer("provider-a", d)
            .sign(&build::transport(&c, ORIGINAL))
            .unwrap();
        assert_eq!(compare(&v, "envelope", &m, VerifyTime::Now), "valid");
        assert_eq!(
            compare(&v, "envelope", &m, VerifyTime::Now),
            "valid",
            "cached path"
        );
        assert_eq!(
            compare(&v, "tampered", &tampered(&m), VerifyTime::Now),
            "bad"
        );
        // Far in the future the dev certificates have expired: both paths say so.
        let later = chrono::DateTime::parse_from_rfc3339("2090-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(compare(&v, "expired", &m, VerifyTime::At(later)), "chain");
    }
    // A third part after the signature is signed by nobody: a reader would
    // show it as part of the certified message. Not a signed message.
    let m = signer("provider-a", Digest::Sha256)
        .sign(&build::acceptance(&c, "x@y"))
        .unwrap();
    assert_eq!(compare(&v, "two parts", &m, VerifyTime::Now), "valid");
    let text = String::from_utf8_lossy(&m).into_owned();
    let close = text.trim_end().rfind("\r\n--").unwrap() + 2;
    let boundary = text[close..].trim_end().trim_end_matches('-').to_string();
    let extra = format!("{boundary}\r\nContent-Type: text/plain\r\n\r\nnon firmato\r\n");
    let three = format!("{}{extra}{}", &text[..close], &text[close..]);
    assert_eq!(
        compare(&v, "three parts", three.as_bytes(), VerifyTime::Now),
        "not-signed"
    );
    // A signer chained to another root is untrusted on both paths.
    let sys = Verifier::system().unwrap();
    let m = signer("provider-b", Digest::Sha1)
        .sign(&build::acceptance(&c, "x@y"))
        .unwrap();
    assert_eq!(compare(&sys, "untrusted", &m, VerifyTime::Now), "chain");
}
