//! Truncated, mangled and random inputs never panic the parsers, the
//! verifier or the classifier; they end in a verdict or a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pecd::index::ProviderIndex;
use pecd::pec::daticert::Daticert;
use pecd::pec::original::OriginalHeaders;
use pecd::report::Checker;
use pecd::smime::{Verifier, VerifyTime};
use proptest::prelude::*;
use std::sync::OnceLock;

fn checker() -> &'static Checker {
    static C: OnceLock<Checker> = OnceLock::new();
    C.get_or_init(|| {
        let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
        let idx = ProviderIndex::from_ldif(
            &String::from_utf8(read(&certs().join("index.ldif"))).unwrap(),
        )
        .unwrap();
        Checker {
            verifier: Verifier::with_anchors(anchors).unwrap(),
            index: Some(idx),
            when: VerifyTime::Now,
        }
    })
}

/// Seeds: every real sample plus a freshly signed envelope.
fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v = Vec::new();
        for dir in ["pec", "rem"] {
            for e in std::fs::read_dir(samples().join(dir)).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "eml") {
                    v.push(read(&p));
                }
            }
        }
        let c = certification(provider_a());
        let env = pecd::pec::build::transport(&c, ORIGINAL);
        v.push(
            signer("provider-a", pecd::smime::Digest::Sha256)
                .sign(&env)
                .unwrap(),
        );
        v
    })
}

fn exercise(bytes: &[u8]) {
    let _ = checker().check("fuzz", bytes);
    let _ = OriginalHeaders::parse(bytes);
    let _ = Daticert::parse(bytes);
    let _ = pecd::pec::breve::hash_attachments(bytes);
    let _ = pecd::smime::split_multipart_signed(bytes);
    let _ = ProviderIndex::from_ldif(&String::from_utf8_lossy(bytes));
}

#[test]
fn every_truncation_of_every_sample() {
    for s in seeds() {
        // Every prefix would be slow for the biggest samples; a dense sweep
        // near the start (headers) and a coarse one through the body.
        let step = (s.len() / 400).max(1);
        let mut cut = 0;
        while cut <= s.len() {
            exercise(&s[..cut]);
            cut += if cut < 2048 { 7 } else { step };
        }
    }
}

#[test]
fn daticert_truncations_and_garbage() {
    let xml = read(&samples().join("pec/08-postecom-2012-daticert.xml"));
    for cut in 0..xml.len() {
        let _ = Daticert::parse(&xml[..cut]);
    }
    for bad in [
        &b"<postacert tipo=\"boh\"/>"[..],
        b"<postacert tipo=\"accettazione\"><intestazione><mittente>a</mittente></intestazione></postacert>",
        b"<?xml version=\"1.0\"?><postacert tipo=\"accettazione\">&bogus;</postacert>",
        b"\xff\xfe<\x00p\x00",
    ] {
        assert!(Daticert::parse(bad).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Random single-byte edits, deletions and insertions of real messages.
    #[test]
    fn mangled_samples_never_panic(
        which in 0usize..64,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..16),
    ) {
        let seeds = seeds();
        let mut m = seeds[which % seeds.len()].clone();
        for (idx, byte, op) in edits {
            if m.is_empty() { break; }
            let i = idx.index(m.len());
            match op {
                0 => m[i] = byte,
                1 => { m.remove(i); }
                _ => m.insert(i, byte),
            }
        }
        exercise(&m);
    }

    /// Arbitrary bytes, with a bias to MIME-looking structure.
    #[test]
    fn arbitrary_bytes_never_panic(
        head in "(([A-Za-z-]{1,12}: [ -~]{0,40}\r?\n){0,6}\r?\n)?",
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut m = head.into_bytes();
        m.extend_from_slice(&body);
        exercise(&m);
    }

    /// LDIF-looking text never panics the index importer.
    #[test]
    fn arbitrary_ldif_never_panics(s in "((dn|objectclass|providerName|providerCertificateHash|providerCertificate;binary|mailReceipt|managedDomains|#|  ?)(:|::)? ?[ -~]{0,30}\n){0,20}") {
        let _ = ProviderIndex::from_ldif(&s);
    }
}

#[test]
fn bad_index_lines_are_named() {
    let bad = std::fs::read_to_string(certs().join("index-bad.ldif")).unwrap();
    let errs = ProviderIndex::from_ldif(&bad).unwrap_err();
    assert!(!errs.is_empty());
    let broken_line = bad
        .lines()
        .position(|l| l.starts_with("managedDomains "))
        .unwrap()
        + 1;
    assert!(errs.iter().any(|e| e.line == broken_line), "{errs:?}");
    // And from the command line: the file and the line are named.
    let out = pecd()
        .args(["verify", "--index"])
        .arg(certs().join("index-bad.ldif"))
        .arg(samples().join("pec/01-aruba-2018-accettazione.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("index-bad.ldif:line {broken_line}:")),
        "{err}"
    );
}
