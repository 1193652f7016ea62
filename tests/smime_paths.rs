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

/// A CRL of the dev CA revoking provider B's certificate, made with the
/// `openssl ca` command (revoked ten minutes ago; the list valid 30 days).
fn crl_revoking_provider_b(dir: &std::path::Path) -> std::path::PathBuf {
    let run = |args: &[&str]| output_ok(std::process::Command::new("openssl").args(args));
    let b = certs().join("provider-b.pem");
    let serial = run(&["x509", "-in", b.to_str().unwrap(), "-noout", "-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    let ago = (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%y%m%d%H%M%SZ");
    std::fs::write(
        dir.join("index.txt"),
        format!(
            "R\t491231000000Z\t{ago}\t{serial}\tunknown\t/C=IT/O=Provider B S.p.A./CN=Posta Certificata Provider B\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    let cnf = dir.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {0}/index.txt\ncrlnumber = {0}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = dir.join("crl.pem");
    run(&[
        "ca",
        "-gencrl",
        "-config",
        cnf.to_str().unwrap(),
        "-keyfile",
        certs().join("ca.key").to_str().unwrap(),
        "-cert",
        certs().join("ca.pem").to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ]);
    out
}

#[test]
fn a_revoked_signer_is_refused_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let crl = crl_revoking_provider_b(dir.path());
    let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
    let crls = pecd::smime::load_crls(&crl).unwrap();
    assert_eq!(crls.len(), 1);
    let v = Verifier::with_anchors(anchors).unwrap().with_crls(crls);
    let c = certification(provider_a());
    let by = |who: &str| {
        signer(who, Digest::Sha256)
            .sign(&build::acceptance(&c, "x@y"))
            .unwrap()
    };
    assert_eq!(
        compare(&v, "provider B", &by("provider-b"), VerifyTime::Now),
        "chain"
    );
    assert_eq!(
        compare(&v, "provider A", &by("provider-a"), VerifyTime::Now),
        "valid"
    );
    // Before its revocation (an hour ago, inside its validity) the
    // certificate was good.
    let before = chrono::Utc::now() - chrono::Duration::hours(1);
    let m = by("provider-b");
    let parts = split_multipart_signed(&m).unwrap();
    let now = v.verify_parts(&parts, VerifyTime::Now);
    assert!(
        matches!(&now.status, SignatureStatus::UntrustedChain(why) if why.contains("revoked")),
        "{:?}",
        now.status
    );
    let r = v.verify_parts(&parts, VerifyTime::At(before));
    assert!(matches!(r.status, SignatureStatus::Valid), "{:?}", r.status);
    // The same CRL as DER reads too.
    let der = dir.path().join("crl.der");
    output_ok(std::process::Command::new("openssl").args([
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]));
    assert_eq!(pecd::smime::load_crls(&der).unwrap().len(), 1);
}

/// A message signed with a self-made certificate of about `size` bytes
/// (a long subjectAltName), as anyone can send to the MX.
fn signed_with_large_certificate(
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
    serial: u32,
    size: usize,
) -> Vec<u8> {
    use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", &format!("big {serial}"))
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &openssl::bn::BigNum::from_u32(serial)
            .unwrap()
            .to_asn1_integer()
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    for i in 0..size / 40 {
        san.dns(&format!("host-{i:08}.large-certificate.test"));
    }
    let san = san.build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(key, openssl::hash::MessageDigest::sha256()).unwrap();
    let cert = b.build();
    assert!(cert.to_der().unwrap().len() >= size / 2);
    let content = b"Content-Type: text/plain\r\n\r\nciao\r\n";
    let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY;
    let p7 = Pkcs7::sign(
        &cert,
        key,
        &openssl::stack::Stack::new().unwrap(),
        content,
        flags,
    )
    .unwrap();
    let mut m =
        b"From: x@y.test\r\nTo: mario.rossi@pec.provider-a.test\r\nSubject: big\r\n".to_vec();
    m.extend(p7.to_smime(content, flags).unwrap());
    m
}

#[test]
fn large_certificates_sent_by_anyone_are_not_kept() {
    let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
    let v = Verifier::with_anchors(anchors).unwrap();
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    for serial in 1..=20 {
        let m = signed_with_large_certificate(&key, serial, 200_000);
        // Untrusted (self-made), whichever path verifies it.
        assert_eq!(
            compare(&v, "large certificate", &m, VerifyTime::Now),
            "chain"
        );
    }
    // Twenty 100+ KB certificates seen: what stays is bounded by entries,
    // not by what senders pack into them.
    assert!(
        v.cache_footprint() < 64 * 1024,
        "{} bytes cached",
        v.cache_footprint()
    );
    // A provider's certificate is still cached (and verifies again).
    let c = certification(provider_a());
    let m = signer("provider-a", Digest::Sha256)
        .sign(&build::acceptance(&c, "x@y"))
        .unwrap();
    let before = v.cache_footprint();
    assert_eq!(compare(&v, "provider", &m, VerifyTime::Now), "valid");
    assert!(v.cache_footprint() > before);
}

/// The signature part of a signed message, rewritten by `edit` (its
/// header text and its decoded DER).
fn with_signature_part(m: &[u8], edit: impl Fn(&mut String, &mut Vec<u8>)) -> Vec<u8> {
    let find = |from: usize, what: &[u8]| {
        m[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|i| from + i)
    };
    let mut at = 0;
    while let Some(i) = find(at + 1, b"Content-Type: application/") {
        at = i;
    }
    let body = find(at, b"\r\n\r\n").unwrap() + 4;
    let end = find(body, b"\r\n--").unwrap();
    let mut header = String::from_utf8(m[at..body].to_vec()).unwrap();
    assert!(header.contains("pkcs7-signature"));
    let b64 = String::from_utf8(m[body..end].to_vec()).unwrap();
    let mut der = openssl::base64::decode_block(&b64.replace("\r\n", "")).unwrap();
    edit(&mut header, &mut der);
    let b64 = openssl::base64::encode_block(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut out = m[..at].to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(lines.join("\r\n").as_bytes());
    out.extend_from_slice(&m[end..]);
    out
}

#[test]
fn the_signature_part_is_a_signature_and_nothing_more() {
    let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
    let v = Verifier::with_anchors(anchors).unwrap();
    let c = certification(provider_a());
    let m = signer("provider-a", Digest::Sha256)
        .sign(&build::transport(&c, ORIGINAL))
        .unwrap();
    let same = with_signature_part(&m, |_, _| {});
    assert_eq!(compare(&v, "unchanged", &same, VerifyTime::Now), "valid");
    // Bytes after the DER (a part of its own, in a binary body) are read
    // by nobody who checks the signature.
    let trailing = with_signature_part(&m, |_, der| der.extend_from_slice(b"\r\n--Z\r\n"));
    assert_eq!(
        compare(&v, "trailing", &trailing, VerifyTime::Now),
        "not-signed"
    );
    // A type that only mentions pkcs7-signature in a parameter.
    let mixed = with_signature_part(&m, |h, _| {
        let media = if h.contains("x-pkcs7") {
            "application/x-pkcs7-signature"
        } else {
            "application/pkcs7-signature"
        };
        *h = h.replacen(
            media,
            "multipart/mixed; boundary=Z; x=\"pkcs7-signature\"",
            1,
        )
    });
    assert_eq!(compare(&v, "mixed", &mixed, VerifyTime::Now), "not-signed");
}
