//! kill -9 of provider A and of provider B in the middle of a burst: after
//! restart every acknowledged message is delivered exactly once, every
//! receipt due exists exactly once, and both legal logs verify.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    cfg: PathBuf,
    data: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, who: char, sub: u16, inb: u16, peer: u16) -> Node {
        let data = dir.join(format!("data-{who}"));
        let c = certs();
        let other = if who == 'a' { 'b' } else { 'a' };
        let user = if who == 'a' {
            "mario.rossi@pec.provider-a.test"
        } else {
            "giulia.bianchi@pec.provider-b.test"
        };
        let cfg = format!(
            "data_dir = \"{}\"\nhostname = \"mx.{who}\"\n[provider]\nname = \"Provider {} S.p.A.\"\ndomain = \"pec.provider-{who}.test\"\nlocal_domains = [\"pec.provider-{who}.test\"]\nsigning_cert = \"{c}/provider-{who}.pem\"\nsigning_key = \"{c}/provider-{who}.key\"\ntrust_anchors = \"{c}/ca.pem\"\nprovider_index = \"{c}/index.ldif\"\n[tls]\ncert = \"{c}/localhost.pem\"\nkey = \"{c}/localhost.key\"\n[listen]\nsubmission = \"127.0.0.1:{sub}\"\ninbound = \"127.0.0.1:{inb}\"\n[timers]\nwarning_after = \"12h\"\nfinal_after = \"23h\"\n[queue]\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n[[routes]]\ndomain = \"pec.provider-{other}.test\"\nhost = \"127.0.0.1:{peer}\"\n[[dev_mailboxes]]\naddress = \"{user}\"\npassword = \"password-1234\"\n",
            data.display(),
            who.to_ascii_uppercase(),
            c = c.display()
        );
        let path = dir.join(format!("{who}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let mut n = Node {
            cfg: path,
            data,
            child: None,
        };
        n.start();
        n
    }

    fn start(&mut self) {
        let mut child = pecd()
            .args(["serve", "--config"])
            .arg(&self.cfg)
            .env("PECD_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(l)) = lines.next() {
            if l.starts_with("listening inbound") {
                break;
            }
        }
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn mailbox(&self, address: &str) -> Vec<Vec<u8>> {
        let dir = pecd::maildir::mailbox_path(&self.data.join("mail"), address).unwrap();
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                for e in rd {
                    let p = e.unwrap().path();
                    let bytes = std::fs::read(&p).unwrap();
                    // A truncated Maildir file would be a durability bug.
                    assert!(
                        bytes.ends_with(b"--\r\n"),
                        "truncated Maildir file {}",
                        p.display()
                    );
                    out.push(bytes);
                }
            }
        }
        // Nothing may be left half-written in tmp/ after recovery either.
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// (daticert tipo, oggetto) → count
fn census(msgs: &[Vec<u8>]) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for raw in msgs {
        let xml = part_named(raw, "daticert.xml").expect("daticert");
        let d = pecd::pec::daticert::Daticert::parse(&xml).unwrap();
        *m.entry((d.tipo.token().to_string(), d.oggetto.unwrap_or_default()))
            .or_insert(0) += 1;
    }
    m
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
            "password-1234".into(),
        ))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let msg = format!(
        "From: mario.rossi@pec.provider-a.test\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: Burst {i}\r\nMessage-ID: <burst{i}@client>\r\n\r\nmessaggio {i}\r\n"
    );
    let env = lettre::address::Envelope::new(
        Some("mario.rossi@pec.provider-a.test".parse().unwrap()),
        vec!["giulia.bianchi@pec.provider-b.test".parse().unwrap()],
    )
    .unwrap();
    mailer.send_raw(&env, msg.as_bytes()).is_ok()
}

#[test]
fn kill_9_during_a_burst_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a_sub, a_in, b_sub, b_in) = (free_port(), free_port(), free_port(), free_port());
    let a = Arc::new(Mutex::new(Node::new(dir.path(), 'a', a_sub, a_in, b_in)));
    let b = Arc::new(Mutex::new(Node::new(dir.path(), 'b', b_sub, b_in, a_in)));
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
    // Kill at varying moments so that some kills land between a relay's
    // SMTP 250 and the commit that retires it (the duplicate-prone window).
    for (k, (who, node)) in [("a", &a), ("b", &b)].iter().cycle().take(8).enumerate() {
        std::thread::sleep(Duration::from_millis(500 + 137 * (k as u64 % 5)));
        let mut n = node.lock().unwrap();
        n.kill9();
        std::thread::sleep(Duration::from_millis(300));
        n.start();
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
        let c = census(&a.lock().unwrap().mailbox("mario.rossi@pec.provider-a.test"));
        let done = acked
            .iter()
            .all(|i| c.contains_key(&("avvenuta-consegna".into(), format!("Burst {i}"))));
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
    let sender = census(&a.lock().unwrap().mailbox("mario.rossi@pec.provider-a.test"));
    let service = census(
        &a.lock()
            .unwrap()
            .mailbox("posta-certificata@pec.provider-a.test"),
    );
    let rcpt = census(
        &b.lock()
            .unwrap()
            .mailbox("giulia.bianchi@pec.provider-b.test"),
    );
    let mut lost = 0;
    let mut duplicated = 0;
    for i in &attempted {
        let s = format!("Burst {i}");
        let counts = [
            sender
                .get(&("accettazione".into(), s.clone()))
                .copied()
                .unwrap_or(0),
            sender
                .get(&("avvenuta-consegna".into(), s.clone()))
                .copied()
                .unwrap_or(0),
            service
                .get(&("presa-in-carico".into(), s.clone()))
                .copied()
                .unwrap_or(0),
            rcpt.get(&("posta-certificata".into(), s.clone()))
                .copied()
                .unwrap_or(0),
        ];
        duplicated += counts.iter().filter(|c| **c > 1).count();
        if acked.contains(i) {
            lost += counts.iter().filter(|c| **c == 0).count();
        }
    }
    eprintln!(
        "attempted={} acked={} lost={lost} duplicated={duplicated}",
        attempted.len(),
        acked.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    for node in [&a, &b] {
        let mut n = node.lock().unwrap();
        n.kill9();
        let out = pecd()
            .args(["log", "verify", "--config"])
            .arg(&n.cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
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
