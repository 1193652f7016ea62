//! Two real pecd daemons on 127.0.0.1 for the black-box tests: config
//! written from a template, free ports, start/kill/restart, Maildir reading,
//! submission through lettre (STARTTLS + AUTH PLAIN).

use super::*;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on, below the kernel's ephemeral range: a port
/// taken from that range (bind to 0) can be grabbed by any outgoing
/// connection before the daemon binds it, and a daemon that cannot bind
/// fails to start. Each test process (nextest runs one per test) starts
/// from its own slice of 10000–32767 and walks on from there.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    const SPAN: u32 = 32_768 - LOW;
    let start = (std::process::id() % (SPAN / 32)) * 32;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port below 32768");
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Ports {
    pub submission: u16,
    pub inbound: u16,
}

pub struct Daemon {
    pub child: Option<Child>,
    pub cfg: PathBuf,
    pub data: PathBuf,
    pub ports: Ports,
    pub admin: std::net::SocketAddr,
}

pub const A_MAILBOXES: &[(&str, &str)] = &[("mario.rossi@pec.provider-a.test", "password-mario")];
pub const B_MAILBOXES: &[(&str, &str)] = &[
    ("giulia.bianchi@pec.provider-b.test", "password-giulia"),
    ("luca.verdi@pec.provider-b.test", "password-luca"),
    ("anna.neri@mail.provider-b.test", "password-anna"),
];

pub struct Spec<'a> {
    pub who: char,
    pub dir: &'a Path,
    pub ports: Ports,
    /// domain → port of its inbound listener
    pub routes: Vec<(&'a str, u16)>,
    pub warning: &'a str,
    pub final_after: &'a str,
    pub give_up_after: &'a str,
    /// `queue.retry_initial`: the first wait after a failure.
    pub retry_initial: &'a str,
    /// Extra TOML appended to the config.
    pub extra: &'a str,
    /// The `[limits]` section's body.
    pub limits: &'a str,
}

impl<'a> Spec<'a> {
    /// Production-length timers, a free submission port, nothing extra:
    /// tests override only what they are about.
    pub fn new(who: char, dir: &'a Path, inbound: u16, routes: Vec<(&'a str, u16)>) -> Self {
        Spec {
            who,
            dir,
            ports: Ports {
                submission: free_port(),
                inbound,
            },
            routes,
            warning: "12h",
            final_after: "23h",
            give_up_after: "24h",
            retry_initial: "200ms",
            extra: "",
            limits: "max_message_size = 20000\n",
        }
    }
}

impl Daemon {
    pub fn start(spec: Spec<'_>) -> Daemon {
        let who = spec.who;
        let data = spec.dir.join(format!("data-{who}"));
        let certs = certs();
        let mut routes = String::new();
        for (d, p) in &spec.routes {
            routes.push_str(&format!(
                "[[routes]]\ndomain = \"{d}\"\nhost = \"127.0.0.1:{p}\"\n"
            ));
        }
        let mut boxes = String::new();
        for (a, p) in if who == 'a' { A_MAILBOXES } else { B_MAILBOXES } {
            boxes.push_str(&format!(
                "[[dev_mailboxes]]\naddress = \"{a}\"\npassword = \"{p}\"\n"
            ));
        }
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = format!(
            r#"data_dir = "{data}"
hostname = "mx.pec.provider-{who}.test"
[provider]
name = "Provider {upper} S.p.A."
domain = "pec.provider-{who}.test"
local_domains = ["pec.provider-{who}.test", "mail.provider-{who}.test"]
signing_cert = "{certs}/provider-{who}.pem"
signing_key = "{certs}/provider-{who}.key"
digest = "sha1"
trust_anchors = "{certs}/ca.pem"
provider_index = "{certs}/index.ldif"
[tls]
cert = "{certs}/localhost.pem"
key = "{certs}/localhost.key"
[listen]
submission = "127.0.0.1:{sub}"
inbound = "127.0.0.1:{inb}"
admin = "127.0.0.1:{adm}"
[limits]
{limits}[timers]
warning_after = "{warning}"
final_after = "{final_after}"
[queue]
retry_initial = "{retry_initial}"
retry_max = "{retry_max}"
give_up_after = "{give_up}"
{routes}{boxes}{extra}"#,
            data = data.display(),
            upper = who.to_ascii_uppercase(),
            certs = certs.display(),
            sub = spec.ports.submission,
            inb = spec.ports.inbound,
            adm = admin.port(),
            warning = spec.warning,
            final_after = spec.final_after,
            give_up = spec.give_up_after,
            retry_initial = spec.retry_initial,
            // 1s, or no doubling from a longer first wait.
            retry_max = if spec.retry_initial == "200ms" {
                "1s"
            } else {
                spec.retry_initial
            },
            extra = spec.extra,
            limits = spec.limits,
        );
        let cfg_path = spec.dir.join(format!("pecd-{who}.toml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut d = Daemon {
            child: None,
            cfg: cfg_path,
            data,
            ports: spec.ports,
            admin,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let mut child = pecd()
            .args(["serve", "--config"])
            .arg(&self.cfg)
            .env("PECD_LOG", "warn")
            .stdout(Stdio::piped())
            // Kept (PECD_LOG=warn) so that a failed start says why.
            .stderr(std::fs::File::create(self.cfg.with_extension("stderr")).unwrap())
            .spawn()
            .unwrap();
        // Ready when it has printed its inbound listener.
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "daemon did not start");
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening inbound") => break,
                Some(Ok(_)) => continue,
                _ => panic!(
                    "daemon exited: {:?}\n{}",
                    child.try_wait(),
                    std::fs::read_to_string(self.cfg.with_extension("stderr")).unwrap_or_default()
                ),
            }
        }
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn mailbox(&self, address: &str) -> Vec<Vec<u8>> {
        let dir = pecd::maildir::mailbox_path(&self.data.join("mail"), address).unwrap();
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                let mut files: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
                files.sort();
                out.extend(files.into_iter().map(|p| std::fs::read(p).unwrap()));
            }
        }
        out
    }

    pub fn submit(
        &self,
        user: &str,
        password: &str,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<(), String> {
        let ca = Certificate::from_pem(&std::fs::read(certs().join("ca.pem")).unwrap()).unwrap();
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
            .port(self.ports.submission)
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![Mechanism::Plain])
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let env = Envelope::new(
            Some(from.parse().unwrap()),
            to.iter().map(|t| t.parse().unwrap()).collect(),
        )
        .unwrap();
        mailer
            .send_raw(&env, message)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `f` returns true (polling), or fail with `what`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A mail sink on 127.0.0.1 (a smarthost stand-in): accepts every
/// transaction and keeps (recipients, data) of each.
pub type Captured = std::sync::Arc<std::sync::Mutex<Vec<(Vec<String>, String)>>>;

pub fn capture_smtp() -> (u16, Captured) {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Captured = Default::default();
    let out = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let got = got.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let _ = s.write_all(b"220 sink\r\n");
                let (mut rcpts, mut line) = (Vec::new(), String::new());
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let up = line.to_ascii_uppercase();
                    let reply: &[u8] = if up.starts_with("EHLO") {
                        b"250-sink\r\n250 PIPELINING\r\n"
                    } else if up.starts_with("RCPT") {
                        rcpts.push(
                            line[line.find('<').unwrap() + 1..line.find('>').unwrap()].to_string(),
                        );
                        b"250 2.1.5 ok\r\n"
                    } else if up.starts_with("DATA") {
                        let _ = s.write_all(b"354 go\r\n");
                        let mut data = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        got.lock().unwrap().push((std::mem::take(&mut rcpts), data));
                        b"250 2.0.0 ok\r\n"
                    } else if up.starts_with("QUIT") {
                        let _ = s.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = s.write_all(reply);
                }
            });
        }
    });
    (port, out)
}

impl Daemon {
    /// The national admin token the daemon wrote at start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token")).unwrap()
    }

    /// One admin API call with `token`; (status, JSON body).
    pub fn api(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        pecd::admin::call(self.admin, token, method, path, body.as_ref()).unwrap()
    }
}

/// A `/proc/<pid>/status` figure in MB (e.g. `VmHWM:`, `VmRSS:`); 0 when
/// unreadable (the benches' memory figures).
pub fn proc_status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// One message over plain SMTP to an inbound listener; the reply to the
/// end of data.
pub fn send_inbound(port: u16, from: &str, to: &str, data: &[u8]) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let mut read_reply = |r: &mut BufReader<std::net::TcpStream>| {
        let mut all = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    };
    read_reply(&mut r);
    for cmd in [
        "EHLO test".to_string(),
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
        "DATA".into(),
    ] {
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        read_reply(&mut r);
    }
    s.write_all(&pecd::smtp::client::dot_stuff(data)).unwrap();
    read_reply(&mut r)
}
