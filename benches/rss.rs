//! Memory benchmark (issue #6 targets): peak RSS of provider A and B while a
//! 30 MB message goes A→B until its ricevuta di consegna is back (target:
//! ≤ 3× the message size), and the RSS of a daemon holding 500 idle
//! submission sessions after STARTTLS (target: ≤ 150 MB).
//!
//! Run: `cargo bench --bench rss` (PECD_BENCH_MSG_MB, PECD_BENCH_IDLE to
//! change 30 MB / 500 sessions). Last line:
//! `msg_mb=… peak_rss_a_mb=… peak_rss_b_mb=… ratio_a=… ratio_b=… idle_sessions=… idle_rss_mb=…`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::daemon::{Daemon, Spec, free_port};
use common::root;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::daemon::proc_status_mb as status_mb;

fn pid(d: &Daemon) -> u32 {
    d.child.as_ref().map_or(0, |c| c.id())
}

const LIMITS: &str = "max_message_size = 104857600\nmax_connections = 2000\n";

fn env_usize(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One SMTP line-oriented exchange on a plain or TLS stream.
fn expect<S: Read + Write>(r: &mut BufReader<S>, send: Option<&str>, code: &str) {
    if let Some(s) = send {
        r.get_mut().write_all(s.as_bytes()).unwrap();
    }
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            return;
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mb = env_usize("PECD_BENCH_MSG_MB", 30);
    let idle = env_usize("PECD_BENCH_IDLE", 500);
    let dir = tempfile::tempdir().unwrap();

    // --- one large message, A → B, until the consegna is back
    let (a_in, b_in) = (free_port(), free_port());
    let mut sa = Spec::new('a', dir.path(), a_in, vec![("pec.provider-b.test", b_in)]);
    sa.limits = LIMITS;
    let mut sb = Spec::new('b', dir.path(), b_in, vec![("pec.provider-a.test", a_in)]);
    sb.limits = LIMITS;
    let mut a = Daemon::start(sa);
    let mut b = Daemon::start(sb);
    let base_a = status_mb(pid(&a), "VmRSS:");
    let base_b = status_mb(pid(&b), "VmRSS:");
    let mut body = String::with_capacity(mb << 20);
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while body.len() + line.len() <= mb << 20 {
        body.push_str(line);
    }
    let msg = format!(
        "From: mario.rossi@pec.provider-a.test\r\nTo: giulia.bianchi@pec.provider-b.test\r\nSubject: grande\r\nMessage-ID: <big@client>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nallegato\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\n\r\n{body}--b1--\r\n"
    );
    let size_mb = msg.len() as f64 / (1 << 20) as f64;
    let ca = lettre::transport::smtp::client::Certificate::from_pem(
        &std::fs::read(root().join("certs/ca.pem")).unwrap(),
    )
    .unwrap();
    let tls = lettre::transport::smtp::client::TlsParameters::builder("localhost".into())
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mailer = lettre::SmtpTransport::builder_dangerous("127.0.0.1")
        .port(a.ports.submission)
        .tls(lettre::transport::smtp::client::Tls::Required(tls))
        .timeout(Some(Duration::from_secs(300)))
        .credentials(lettre::transport::smtp::authentication::Credentials::new(
            "mario.rossi@pec.provider-a.test".into(),
            "password-mario".into(),
        ))
        .build();
    let env = lettre::address::Envelope::new(
        Some("mario.rossi@pec.provider-a.test".parse().unwrap()),
        vec!["giulia.bianchi@pec.provider-b.test".parse().unwrap()],
    )
    .unwrap();
    let t = Instant::now();
    // When each daemon's RSS peaks (PECD_BENCH_TRACE=1): where to look.
    let trace = std::env::var("PECD_BENCH_TRACE").is_ok();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (pa, pb, stop) = (pid(&a), pid(&b), stop.clone());
        std::thread::spawn(move || {
            let mut max = (0.0f64, 0.0f64);
            while trace && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (ra, rb) = (status_mb(pa, "VmRSS:"), status_mb(pb, "VmRSS:"));
                if ra > max.0 + 5.0 || rb > max.1 + 5.0 {
                    max = (max.0.max(ra), max.1.max(rb));
                    eprintln!(
                        "t={:.3}s rss_a={ra:.0} rss_b={rb:.0}",
                        t.elapsed().as_secs_f64()
                    );
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    {
        use lettre::Transport;
        mailer.send_raw(&env, msg.as_bytes()).expect("submission");
    }
    let accepted = t.elapsed();
    drop(msg);
    drop(body);
    let sender_box = a.data.join("mail/pec.provider-a.test/mario.rossi");
    let deadline = Instant::now() + Duration::from_secs(600);
    while common::maildir_count(&sender_box) < 2 {
        assert!(Instant::now() < deadline, "the consegna did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let e2e = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let (peak_a, peak_b) = (status_mb(pid(&a), "VmHWM:"), status_mb(pid(&b), "VmHWM:"));
    a.kill();
    b.kill();
    println!(
        "message_mb={size_mb:.1} accepted_s={:.2} e2e_s={:.2} base_rss_a_mb={base_a:.0} base_rss_b_mb={base_b:.0}",
        accepted.as_secs_f64(),
        e2e.as_secs_f64()
    );

    // --- idle sessions after STARTTLS
    let mut si = Spec::new('a', dir.path(), free_port(), vec![]);
    si.limits = LIMITS;
    let mut d = Daemon::start(si);
    let before = status_mb(pid(&d), "VmRSS:");
    let connector = {
        let mut c = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
        c.set_ca_file(root().join("certs/ca.pem")).unwrap();
        c.build()
    };
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        let s = TcpStream::connect(("127.0.0.1", d.ports.submission)).unwrap();
        let mut r = BufReader::new(s);
        expect(&mut r, None, "220");
        expect(&mut r, Some("EHLO bench.test\r\n"), "250");
        expect(&mut r, Some("STARTTLS\r\n"), "220");
        let tls = connector.connect("localhost", r.into_inner()).unwrap();
        let mut r = BufReader::new(tls);
        expect(&mut r, Some("EHLO bench.test\r\n"), "250");
        held.push(r);
    }
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = status_mb(pid(&d), "VmRSS:");
    drop(held);
    d.kill();
    println!("idle_before_mb={before:.0}");
    println!(
        "msg_mb={size_mb:.1} peak_rss_a_mb={peak_a:.0} peak_rss_b_mb={peak_b:.0} ratio_a={:.2} ratio_b={:.2} idle_sessions={idle} idle_rss_mb={idle_rss:.0}",
        peak_a / size_mb,
        peak_b / size_mb
    );
}
