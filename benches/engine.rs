//! Engine benchmark: build+sign of a 10 KB busta di trasporto, verify+classify
//! of it, and the raw RSA sign of the same key, measured side by side in one
//! run (interleaved rounds, median per operation, one thread).
//!
//! Run: `cargo bench --bench engine` (release build). Prints one summary line:
//! `raw_sign_us=… build_sign_us=… ratio_build_sign_to_raw=… verify_us=… verify_msgs_per_s=…`
//! Targets (issue #2): ratio ≤ 1.25, verify ≥ 5000 msgs/s.
//! `PECD_BENCH_DIGEST=sha1` for the SHA-1 profile; `PECD_BENCH_SMIMECAP=1`
//! to add the SMIMECapabilities attribute as Aruba/Sogei do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use pecd::clock::LegalTime;
use pecd::index::ProviderIndex;
use pecd::pec::build::{self, Certification};
use pecd::pec::{Provider, ReceiptVariant, Recipient, RecipientClass, RecipientRole};
use pecd::report::{Checker, Outcome};
use pecd::smime::{Digest, Signer, Verifier, VerifyTime};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs")
}

fn original_10k() -> Vec<u8> {
    let mut m = b"From: mario.rossi@pec.provider-a.test\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: Benchmark\r\nMessage-ID: <bench@client>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
    while m.len() < 10 * 1024 {
        m.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    m
}

fn certification(i: u64) -> Certification {
    Certification {
        provider: Provider {
            name: "Provider A S.p.A.".into(),
            domain: "pec.provider-a.test".into(),
        },
        time: LegalTime::new(Utc.with_ymd_and_hms(2026, 11, 23, 14, 4, 5).unwrap()),
        pec_id: format!("pecd.20261123150405.00000000000000aa.{i}@pec.provider-a.test"),
        sender: "mario.rossi@pec.provider-a.test".into(),
        recipients: vec![Recipient {
            address: "giulia.bianchi@pec.provider-b.test".into(),
            class: RecipientClass::Certified,
            role: RecipientRole::To,
        }],
        reply_to: "mario.rossi@pec.provider-a.test".into(),
        subject: "Benchmark".into(),
        msgid: Some("<bench@client>".into()),
        receipt_request: ReceiptVariant::Full,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing:
    // run a single quick round then, to keep the harness itself tested.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, per_round) = if quick { (1, 3) } else { (15, 40) };

    let digest = std::env::var("PECD_BENCH_DIGEST")
        .ok()
        .and_then(|d| Digest::from_name(&d))
        .unwrap_or(Digest::Sha256);
    let caps = std::env::var_os("PECD_BENCH_SMIMECAP").is_some();
    let signer = Signer::from_files(
        &certs().join("provider-a.pem"),
        &certs().join("provider-a.key"),
        digest,
    )
    .unwrap()
    .with_smime_capabilities(caps);
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(certs().join("provider-a.key")).unwrap(),
    )
    .unwrap();
    let original = original_10k();
    let anchors = pecd::smime::load_certificates(&certs().join("ca.pem")).unwrap();
    let index =
        ProviderIndex::from_ldif(&std::fs::read_to_string(certs().join("index.ldif")).unwrap())
            .unwrap();
    let checker = Checker {
        verifier: Verifier::with_anchors(anchors).unwrap(),
        index: Some(index),
        when: VerifyTime::Now,
    };
    let sample = signer
        .sign(&build::transport(&certification(0), &original))
        .unwrap();
    assert_eq!(checker.check("bench", &sample).outcome, Outcome::Pec);

    let (mut raw, mut bs, mut ver) = (Vec::new(), Vec::new(), Vec::new());
    let (mut build_only, mut cms_only) = (Vec::new(), Vec::new());
    let entity = build::transport(&certification(0), &original).entity;
    let mut n = 0u64;
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..per_round {
            let mut s = openssl::sign::Signer::new(digest_md(digest), &key).unwrap();
            s.update(&(i as u64).to_le_bytes()).unwrap();
            black_box(s.sign_to_vec().unwrap());
        }
        raw.push(t.elapsed().as_secs_f64() / per_round as f64);

        let t = Instant::now();
        for _ in 0..per_round {
            n += 1;
            let c = certification(n);
            black_box(signer.sign(&build::transport(&c, &original)).unwrap());
        }
        bs.push(t.elapsed().as_secs_f64() / per_round as f64);

        let t = Instant::now();
        for _ in 0..per_round {
            n += 1;
            black_box(build::transport(&certification(n), &original));
        }
        build_only.push(t.elapsed().as_secs_f64() / per_round as f64);

        let t = Instant::now();
        for _ in 0..per_round {
            black_box(signer.sign_detached(&entity).unwrap());
        }
        cms_only.push(t.elapsed().as_secs_f64() / per_round as f64);

        let t = Instant::now();
        for _ in 0..per_round * 4 {
            black_box(checker.check("bench", &sample));
        }
        ver.push(t.elapsed().as_secs_f64() / (per_round * 4) as f64);
    }
    let (raw, bs, ver) = (median(raw), median(bs), median(ver));
    let (build_only, cms_only) = (median(build_only), median(cms_only));
    println!(
        "digest={} smime_capabilities={caps} message_bytes={} signed_bytes={} rounds={rounds}x{per_round}",
        digest.micalg(),
        original.len(),
        sample.len()
    );
    println!(
        "parts: build_only_us={:.1} cms_sign_detached_us={:.1}",
        build_only * 1e6,
        cms_only * 1e6
    );
    println!(
        "raw_sign_us={:.1} build_sign_us={:.1} ratio_build_sign_to_raw={:.3} verify_us={:.1} verify_msgs_per_s={:.0}",
        raw * 1e6,
        bs * 1e6,
        bs / raw,
        ver * 1e6,
        1.0 / ver
    );
}

fn digest_md(d: Digest) -> openssl::hash::MessageDigest {
    match d {
        Digest::Sha1 => openssl::hash::MessageDigest::sha1(),
        Digest::Sha256 => openssl::hash::MessageDigest::sha256(),
        Digest::Sha384 => openssl::hash::MessageDigest::sha384(),
        Digest::Sha512 => openssl::hash::MessageDigest::sha512(),
    }
}
