//! kill -9 of provider A and of provider B in the middle of a burst: after
//! restart every acknowledged message is delivered exactly once, every
//! receipt due exists exactly once, and both legal logs verify.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every file of a mailbox; a truncated one would be a durability bug.
fn mailbox(d: &Daemon, address: &str) -> Vec<Vec<u8>> {
    let msgs = d.mailbox(address);
    for m in &msgs {
        assert!(
            m.ends_with(b"--\r\n"),
            "truncated Maildir file in {address}"
        );
    }
    msgs
}

fn restart(d: &mut Daemon) {
    d.kill(); // SIGKILL
    std::thread::sleep(Duration::from_millis(300));
    d.spawn();
}

/// (daticert tipo, oggetto, consegna) → count
fn census(msgs: &[Vec<u8>]) -> HashMap<(String, String, String), usize> {
    let mut m = HashMap::new();
    for raw in msgs {
        let xml = part_named(raw, "daticert.xml").expect("daticert");
        let d = pecd::pec::daticert::Daticert::parse(&xml).unwrap();
        let key = (
            d.tipo.token().to_string(),
            d.oggetto.unwrap_or_default(),
            d.consegna.unwrap_or_default(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

const GIULIA: &str = "giulia.bianchi@pec.provider-b.test";
const LUCA: &str = "luca.verdi@pec.provider-b.test";

/// Every other message goes to two mailboxes of B (stored in both within
/// one reception commit).
fn recipients(i: usize) -> &'static [&'static str] {
    if i % 2 == 1 {
        &[GIULIA, LUCA]
    } else {
        &[GIULIA]
    }
}

fn submit(port: u16, i: usize) -> bool {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{SmtpTransport, Transport};
    let ca = Certificate::from_pem(&std::fs::read(certs().join("ca.pem")).unwrap()).unwrap();
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(
            "mario.rossi@pec.provider-a.test".into(),
            "password-mario".into(),
        ))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let to = recipients(i);
    let msg = format!(
        "From: mario.rossi@pec.provider-a.test\r\nTo: {}\r\nSubject: Burst {i}\r\nMessage-ID: <burst{i}@client>\r\n\r\nmessaggio {i}\r\n",
        to.join(", ")
    );
    let env = lettre::address::Envelope::new(
        Some("mario.rossi@pec.provider-a.test".parse().unwrap()),
        to.iter().map(|r| r.parse().unwrap()).collect(),
    )
    .unwrap();
    mailer.send_raw(&env, msg.as_bytes()).is_ok()
}

#[test]
fn kill_9_during_a_burst_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a_in, b_in) = (free_port(), free_port());
    let a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    let a_sub = a.ports.submission;
    let (a, b) = (Arc::new(Mutex::new(a)), Arc::new(Mutex::new(b)));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let attempted = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (acked, attempted, stop) = (acked.clone(), attempted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                attempted.lock().unwrap().push(i);
                if submit(a_sub, i) {
                    acked.lock().unwrap().push(i);
                } else {
                    std::thread::sleep(Duration::from_millis(100));
                }
                i += 1;
            }
        })
    };
    // A random daemon at a random moment, `PECD_CRASH_CYCLES` times (8 in
    // the test suite; `bench/crash.sh` runs 50), so that some kills land
    // between a relay's SMTP 250 and the commit that retires it (the
    // duplicate-prone window).
    let cycles: usize = std::env::var("PECD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut random = move || {
        // xorshift64: enough to spread kills over time and targets.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..cycles {
        let r = random();
        let (who, node) = if r & 1 == 0 { ("a", &a) } else { ("b", &b) };
        std::thread::sleep(Duration::from_millis(300 + (r >> 8) % 900));
        restart(&mut node.lock().unwrap());
        eprintln!("restarted {who}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "too few acknowledged messages: {}",
        acked.len()
    );

    // Wait until every acknowledged message has its consegna.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = census(&mailbox(
            &a.lock().unwrap(),
            "mario.rossi@pec.provider-a.test",
        ));
        let done = acked.iter().all(|i| {
            recipients(*i).iter().all(|r| {
                c.contains_key(&(
                    "avvenuta-consegna".into(),
                    format!("Burst {i}"),
                    r.to_string(),
                ))
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every acknowledged message was delivered"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    let sender = census(&mailbox(
        &a.lock().unwrap(),
        "mario.rossi@pec.provider-a.test",
    ));
    let service = census(
        &a.lock()
            .unwrap()
            .mailbox("posta-certificata@pec.provider-a.test"),
    );
    let boxes: HashMap<&str, _> = [GIULIA, LUCA]
        .into_iter()
        .map(|r| (r, census(&mailbox(&b.lock().unwrap(), r))))
        .collect();
    let mut lost = 0;
    let mut duplicated = 0;
    for i in &attempted {
        let s = format!("Burst {i}");
        let get = |m: &HashMap<(String, String, String), usize>, tipo: &str, r: &str| {
            m.get(&(tipo.to_string(), s.clone(), r.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let mut counts = vec![
            get(&sender, "accettazione", ""),
            get(&service, "presa-in-carico", ""),
        ];
        for r in recipients(*i) {
            counts.push(get(&sender, "avvenuta-consegna", r));
            counts.push(get(&boxes[r], "posta-certificata", ""));
        }
        duplicated += counts.iter().filter(|c| **c > 1).count();
        if acked.contains(i) {
            lost += counts.iter().filter(|c| **c == 0).count();
        }
    }
    eprintln!(
        "cycles={cycles} attempted={} acked={} lost={lost} duplicated={duplicated}",
        attempted.len(),
        acked.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    for node in [&a, &b] {
        let mut n = node.lock().unwrap();
        n.kill();
        common::assert_log_verifies(&n.cfg);
        let tmp: Vec<_> = walk_tmp(&n.data.join("mail"));
        assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
    }
}

fn walk_tmp(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.ends_with("tmp") {
                out.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                out.extend(walk_tmp(&p));
            }
        }
    }
    out
}
