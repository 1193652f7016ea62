//! Shared helpers for the integration tests: paths to fixtures, the dev
//! signing identities, a sample transaction, and the external checkers
//! (`openssl smime -verify`, `xmllint --dtdvalid`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod daemon;

use chrono::{TimeZone, Utc};
use pecd::clock::LegalTime;
use pecd::pec::build::Certification;
use pecd::pec::{Provider, ReceiptVariant, Recipient, RecipientClass, RecipientRole};
use pecd::smime::{Digest, Signer};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn certs() -> PathBuf {
    root().join("certs")
}

/// `../shared/pec-samples` next to the repository.
pub fn samples() -> PathBuf {
    root().join("../shared/pec-samples")
}

pub fn dtd() -> PathBuf {
    root().join("../shared/docs/daticert.dtd")
}

pub fn provider_a() -> Provider {
    Provider {
        name: "Provider A S.p.A.".into(),
        domain: "pec.provider-a.test".into(),
    }
}

pub fn provider_b() -> Provider {
    Provider {
        name: "Provider B S.p.A.".into(),
        domain: "pec.provider-b.test".into(),
    }
}

pub fn signer(who: &str, digest: Digest) -> Signer {
    Signer::from_files(
        &certs().join(format!("{who}.pem")),
        &certs().join(format!("{who}.key")),
        digest,
    )
    .expect("dev signing identity")
}

/// 23/11/2026 15:04:05 in Rome (winter time, +0100).
pub fn time() -> LegalTime {
    LegalTime::new(Utc.with_ymd_and_hms(2026, 11, 23, 14, 4, 5).unwrap())
}

pub const ORIGINAL: &[u8] = b"Received: from client.example (client.example [192.0.2.1])\r\n\
\tby smtp.pec.provider-a.test with ESMTPSA; Mon, 23 Nov 2026 15:04:04 +0100\r\n\
From: Mario Rossi <mario.rossi@pec.provider-a.test>\r\n\
To: Giulia Bianchi <giulia.bianchi@pec.provider-b.test>,\r\n \
luca.verdi@pec.provider-b.test\r\n\
Cc: segreteria@example.com\r\n\
Subject: =?utf-8?q?Fattura_n=C2=B0_12_=E2=80=94_Nicol=C3=B2_&_<soci>?=\r\n\
Message-ID: <20261123150404.4242@client.example>\r\n\
Date: Mon, 23 Nov 2026 15:04:04 +0100\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\
\r\n\
--XYZ\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Buongiorno, in allegato la fattura. Perch\xe8 no?\r\n\
--XYZ\r\n\
Content-Type: application/pdf; name=\"fattura.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"fattura.pdf\"\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n\
--XYZ--\r\n";

/// The certification data of [`ORIGINAL`] as provider A's access point sees it.
pub fn certification(provider: Provider) -> Certification {
    Certification {
        provider,
        time: time(),
        pec_id: "pecd.20261123150405.00000000000000aa.1@pec.provider-a.test".into(),
        sender: "mario.rossi@pec.provider-a.test".into(),
        recipients: vec![
            Recipient {
                address: "giulia.bianchi@pec.provider-b.test".into(),
                class: RecipientClass::Certified,
                role: RecipientRole::To,
            },
            Recipient {
                address: "luca.verdi@pec.provider-b.test".into(),
                class: RecipientClass::Certified,
                role: RecipientRole::To,
            },
            Recipient {
                address: "segreteria@example.com".into(),
                class: RecipientClass::External,
                role: RecipientRole::Cc,
            },
        ],
        reply_to: "mario.rossi@pec.provider-a.test".into(),
        subject: "Fattura n° 12 — Nicolò & <soci>".into(),
        msgid: Some("<20261123150404.4242@client.example>".into()),
        receipt_request: ReceiptVariant::Full,
    }
}

/// Run `openssl smime -verify` against the dev CA; Ok(()) or its stderr.
pub fn openssl_verify(message: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.eml");
    std::fs::write(&p, message).unwrap();
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-purpose", "any", "-CAfile"])
        .arg(certs().join("ca.pem"))
        .arg("-in")
        .arg(&p)
        .args(["-out", "/dev/null"])
        .output()
        .expect("openssl CLI");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Validate XML against the daticert DTD with `xmllint`.
pub fn xmllint_dtd(xml: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("daticert.xml");
    std::fs::write(&p, xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--dtdvalid"])
        .arg(dtd())
        .arg(&p)
        .output()
        .expect("xmllint (apt-get install libxml2-utils)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Decoded content of the first MIME part named `name`, at any depth.
pub fn part_named(message: &[u8], name: &str) -> Option<Vec<u8>> {
    pecd::report::part(message, name)
}

/// The `pecd` binary built by cargo for this test run, or the one named by
/// `PECD_BENCH_BIN` (a benchmark comparing two builds side by side).
pub fn pecd() -> Command {
    match std::env::var_os("PECD_BENCH_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_pecd")),
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `cmd` run to success (a failure shows its stderr); what it printed.
pub fn output_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pecd ARGS --config CFG` run to success; what it printed.
pub fn pecd_ok(args: &[&str], cfg: &Path) -> String {
    output_ok(pecd().args(args).arg("--config").arg(cfg))
}

/// `pecd log verify --config CFG` succeeds (the legal log's chain holds);
/// what it printed.
pub fn assert_log_verifies(cfg: &Path) -> String {
    let out = pecd()
        .args(["log", "verify", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "log verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Messages in a Maildir (`new` and `cur`).
pub fn maildir_count(dir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(dir.join(d))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .sum()
}
