//! End-to-end benchmark: N certified messages (10 KB, 1 recipient) from a real
//! SMTP client (lettre, STARTTLS + AUTH, pooled connections, C concurrent
//! senders) through provider A to provider B on loopback, fsync on, until
//! every ricevuta di avvenuta consegna is back in the sender's mailbox.
//! In the same run: the raw RSA-2048 sign rate of the provider key, and the
//! signing bound (sign rate ÷ 4: accettazione, busta di trasporto, presa in
//! carico, consegna are 4 signatures per message).
//!
//! Run: `cargo bench --bench e2e`. Environment: PECD_BENCH_N messages
//! (400), PECD_BENCH_C concurrent senders (8), PECD_BENCH_R recipients per
//! message (1; with R they are R mailboxes at B, and the bound is the sign
//! rate ÷ (3 + R): accettazione, busta, presa in carico, R consegne),
//! PECD_BENCH_RATE a paced open-loop rate in msgs/s (unset: as fast as the
//! senders go), PECD_BENCH_KEEP_IN a directory to leave the data in
//! (deleted by the caller later). `bench/run.sh` runs it with the issue's
//! settings. Last line:
//! `e2e_msgs_per_s=… signing_bound_msgs_per_s=… ratio_signing=… p50_ms=… p95_ms=… p99_ms=… rss_a_mb=… rss_b_mb=…`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::daemon::{Daemon, Spec, free_port};
use common::root;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_mb(pid: u32) -> f64 {
    common::daemon::proc_status_mb(pid, "VmHWM:")
}

/// CPU time (user + system) a process has used so far, in ms (`self` for
/// this one: the load client).
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses, may hold spaces): state is
    // field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks * 1000.0 / hz
}

fn sign_rate() -> f64 {
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(root().join("certs/provider-a.key")).unwrap(),
    )
    .unwrap();
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_secs(2) {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        s.update(&n.to_le_bytes()).unwrap();
        std::hint::black_box(s.sign_to_vec().unwrap());
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches`: nothing to smoke-test without daemons
    }
    let n: usize = std::env::var("PECD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let conc: usize = std::env::var("PECD_BENCH_C")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rcpts: usize = std::env::var("PECD_BENCH_R")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let rate: Option<f64> = std::env::var("PECD_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r: &f64| *r > 0.0);
    // PECD_BENCH_KEEP_IN: leave the data under that directory instead of
    // deleting it at the end (bench/run.sh deletes it after its last run:
    // on ext4 without a journal, inodes freed in the last minutes are
    // skipped, one by one, by every file creation, so a run made right after
    // a deletion of thousands of files would pay for its predecessor's).
    let keep_in = std::env::var_os("PECD_BENCH_KEEP_IN").map(PathBuf::from);
    let dir = match &keep_in {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    // The test harness's daemons (tests/common/daemon.rs: fast retries, sha1).
    let (a_in, b_in) = (free_port(), free_port());
    let mut a = Daemon::start(Spec::new(
        'a',
        dir.path(),
        a_in,
        vec![("pec.provider-b.test", b_in)],
    ));
    let mut b = Daemon::start(Spec::new(
        'b',
        dir.path(),
        b_in,
        vec![("pec.provider-a.test", a_in)],
    ));
    let a_sub = a.ports.submission;
    // Recipients at B: the demo mailbox, then bench mailboxes.
    let mut to = vec!["giulia.bianchi@pec.provider-b.test".to_string()];
    for i in 1..rcpts {
        let address = format!("bench{i}@pec.provider-b.test");
        let (status, v) = b.api(
            &b.admin_token(),
            "POST",
            "/mailboxes",
            Some(serde_json::json!({"address": address, "password": "bench-password"})),
        );
        assert_eq!(status, 201, "{v}");
        to.push(address);
    }
    let to = Arc::new(to);
    let sender_box = a.data.join("mail/pec.provider-a.test/mario.rossi");

    let mut body = String::new();
    while body.len() < 10 * 1024 {
        body.push_str(
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    let ca = lettre::transport::smtp::client::Certificate::from_pem(
        &std::fs::read(root().join("certs/ca.pem")).unwrap(),
    )
    .unwrap();
    let tls = lettre::transport::smtp::client::TlsParameters::builder("localhost".into())
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mailer = lettre::SmtpTransport::builder_dangerous("127.0.0.1")
        .port(a_sub)
        .tls(lettre::transport::smtp::client::Tls::Required(tls))
        .credentials(lettre::transport::smtp::authentication::Credentials::new(
            "mario.rossi@pec.provider-a.test".into(),
            "password-mario".into(),
        ))
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(conc as u32))
        .build();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let pid = |d: &Daemon| d.child.as_ref().map_or(0, |c| c.id());
    let cpu = |pid: String| cpu_ms(&pid);
    let cpu_before = [pid(&a).to_string(), pid(&b).to_string(), "self".into()].map(cpu);
    let start_all = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..conc)
        .map(|_| {
            let (mailer, latencies, next, body, to) = (mailer.clone(), latencies.clone(), next.clone(), body.clone(), to.clone());
            std::thread::spawn(move || {
                use lettre::Transport;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    if let Some(r) = rate {
                        // Open loop: message i is due at i / rate.
                        let due = start_all + Duration::from_secs_f64(i as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let msg = format!(
                        "From: mario.rossi@pec.provider-a.test\r\nTo: {}\r\nSubject: Bench {i}\r\nMessage-ID: <bench{i}@client>\r\n\r\n{body}",
                        to.join(", ")
                    );
                    let env = lettre::address::Envelope::new(
                        Some("mario.rossi@pec.provider-a.test".parse().unwrap()),
                        to.iter().map(|a| a.parse().unwrap()).collect(),
                    )
                    .unwrap();
                    let t = Instant::now();
                    mailer.send_raw(&env, msg.as_bytes()).expect("submission");
                    latencies.lock().unwrap().push(t.elapsed());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let accepted_s = start_all.elapsed().as_secs_f64();
    // accettazione + one consegna per recipient, per message, in the
    // sender's mailbox.
    let deadline = Instant::now() + Duration::from_secs(1200);
    while common::maildir_count(&sender_box) < (1 + rcpts) * n {
        assert!(Instant::now() < deadline, "receipts did not all arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    let e2e_s = start_all.elapsed().as_secs_f64();
    let cpu_after = [pid(&a).to_string(), pid(&b).to_string(), "self".into()].map(cpu);
    let (rss_a, rss_b) = (rss_mb(pid(&a)), rss_mb(pid(&b)));
    // After the run, once drained: what stays (a leak) against the peak.
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "after_drain_rss_a_mb={:.0} after_drain_rss_b_mb={:.0}",
        common::daemon::proc_status_mb(pid(&a), "VmRSS:"),
        common::daemon::proc_status_mb(pid(&b), "VmRSS:")
    );
    a.kill();
    b.kill();
    let sign_per_s = sign_rate();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    let e2e = n as f64 / e2e_s;
    let bound = sign_per_s / (3 + rcpts) as f64;
    // Where the machine's time went, per certified message: the two
    // daemons, the load client, and the share that is the signatures.
    let per_msg = |i: usize| (cpu_after[i] - cpu_before[i]) / n as f64;
    println!(
        "cpu_ms_per_msg_a={:.2} cpu_ms_per_msg_b={:.2} cpu_ms_per_msg_client={:.2} signing_ms_per_msg={:.2}",
        per_msg(0),
        per_msg(1),
        per_msg(2),
        (3 + rcpts) as f64 * 1000.0 / sign_per_s
    );
    println!(
        "messages={n} senders={conc} recipients={rcpts} paced_rate={} accepted_msgs_per_s={:.1} raw_rsa2048_sign_per_s={sign_per_s:.0}",
        rate.map_or("none".to_string(), |r| format!("{r:.1}")),
        n as f64 / accepted_s
    );
    println!(
        "e2e_msgs_per_s={e2e:.1} signing_bound_msgs_per_s={bound:.1} ratio_signing={:.2} p50_ms={:.1} p95_ms={:.1} p99_ms={:.1} rss_a_mb={rss_a:.0} rss_b_mb={rss_b:.0}",
        e2e / bound,
        pct(0.50),
        pct(0.95),
        pct(0.99)
    );
    if keep_in.is_some() {
        let _ = dir.keep();
    }
}
