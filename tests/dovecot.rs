//! Dovecot (Debian dovecot-imapd, dovecot-lmtpd) next to pecd, started here
//! on 127.0.0.1: it serves over IMAP the Maildir pecd writes (read with
//! Python's imaplib), and as pecd's LMTP delivery target its quota refusals
//! become avvisi di mancata consegna 5.2.2. `.ci/run` installs Dovecot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MARIO: &str = "mario.rossi@pec.provider-a.test";
const ANNA: &str = "anna.blu@pec.provider-a.test";

struct Dovecot {
    child: Child,
    imap: u16,
    lmtp: u16,
    log: PathBuf,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dovecot reads mail as the `dovecot` user (never uid 0): in production
/// pecd and Dovecot share one mail user; here the tree is handed over.
fn hand_over(root: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "dovecot:dovecot"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut p = root.to_path_buf();
    while let Some(parent) = p.parent() {
        if parent == Path::new("/") || parent == Path::new("/tmp") {
            break;
        }
        let mode = std::fs::metadata(parent).unwrap().permissions().mode();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        p = parent.to_path_buf();
    }
}

fn dovecot(dir: &Path, mail_root: &Path, users: &[(&str, &str, Option<&str>)]) -> Dovecot {
    for d in ["run", "state"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::create_dir_all(mail_root).unwrap();
    let passwd: String = users
        .iter()
        .map(|(u, p, quota)| {
            let extra = quota.map_or(String::new(), |q| {
                format!("userdb_quota_rule=*:storage={q}")
            });
            format!("{u}:{{PLAIN}}{p}::::::{extra}\n")
        })
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let (imap, lmtp) = (free_port(), free_port());
    let conf = dir.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:{m}/%d/%n
mail_plugins = $mail_plugins quota
lmtp_rcpt_check_quota = yes
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
  default_fields = uid=dovecot gid=dovecot home={m}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
"#,
            d = dir.display(),
            m = mail_root.display(),
        ),
    )
    .unwrap();
    let child = Command::new("dovecot")
        .args(["-F", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dovecot is installed (.ci/run installs dovecot-imapd dovecot-lmtpd)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", lmtp)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", imap)).is_err()
    {
        assert!(Instant::now() < deadline, "dovecot did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Dovecot {
        child,
        imap,
        lmtp,
        log: dir.join("dovecot.log"),
    }
}

/// Every message's header in every folder, read over IMAP with imaplib:
/// lines `<folder>\t<X-Ricevuta or X-Trasporto value>`, after one
/// `subscribed\t<folder>` line per subscribed folder.
fn imap_headers(dv: &Dovecot, user: &str, password: &str) -> Vec<(String, String)> {
    let port = dv.imap;
    let script = format!(
        r#"
import imaplib, email
m = imaplib.IMAP4("127.0.0.1", {port})
m.login({user:?}, {password:?})
typ, subscribed = m.lsub()
for f in filter(None, subscribed):
    print("subscribed\t" + f.decode().split(' "." ')[-1].strip('"'))
typ, folders = m.list()
for f in folders:
    name = f.decode().split(' "." ')[-1].strip('"')
    m.select(name, readonly=True)
    typ, ids = m.search(None, "ALL")
    for i in ids[0].split():
        typ, data = m.fetch(i, "(BODY.PEEK[HEADER])")
        h = email.message_from_bytes(data[0][1])
        print(name + "\t" + (h.get("X-Ricevuta") or h.get("X-Trasporto") or "-"))
m.logout()
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&dv.log).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {MARIO}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\n{}\r\n",
        subject.replace(' ', "-"),
        "Testo della prova. ".repeat(200)
    )
    .into_bytes()
}

#[test]
fn dovecot_serves_the_maildir_pecd_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('a', dir.path(), free_port(), vec![]));
    d.submit(
        MARIO,
        "password-mario",
        MARIO,
        &[MARIO],
        &message(MARIO, "Per me"),
    )
    .unwrap();
    wait_for("envelope and receipts", 30, || d.mailbox(MARIO).len() >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let mail: PathBuf = d.data.join("mail");
    hand_over(&mail);
    let dv = dovecot(
        &dir.path().join("dovecot"),
        &mail,
        &[(MARIO, "imap-password", None)],
    );
    let got = imap_headers(&dv, MARIO, "imap-password");
    let count =
        |folder: &str, kind: &str| got.iter().filter(|(f, k)| f == folder && k == kind).count();
    assert_eq!(count("INBOX", "posta-certificata"), 1, "{got:?}");
    assert_eq!(count("INBOX", "accettazione"), 1, "{got:?}");
    assert_eq!(count("INBOX", "avvenuta-consegna"), 1, "{got:?}");
    // The archive is an IMAP folder with the same messages.
    assert_eq!(
        count("Archivio", "posta-certificata"),
        2,
        "sent and received: {got:?}"
    );
    assert_eq!(count("Archivio", "avvenuta-consegna"), 1, "{got:?}");
    // And a folder the holder's client shows without being told to.
    assert_eq!(count("subscribed", "Archivio"), 1, "{got:?}");
}

#[test]
fn lmtp_into_dovecot_maps_its_quota_refusal_to_mancata_consegna() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("dovecot-mail");
    std::fs::create_dir_all(&mail).unwrap();
    hand_over(&mail);
    let dv = dovecot(
        &dir.path().join("dovecot"),
        &mail,
        &[(MARIO, "pw-mario", None), (ANNA, "pw-anna", Some("12K"))],
    );
    let extra = format!(
        "[delivery]\nlmtp = \"127.0.0.1:{}\"\n[[dev_mailboxes]]\naddress = \"{ANNA}\"\npassword = \"password-anna\"\n",
        dv.lmtp
    );
    let d = Daemon::start(Spec {
        extra: &extra,
        ..Spec::new('a', dir.path(), free_port(), vec![])
    });
    let full = || {
        imap_headers(&dv, MARIO, "pw-mario")
            .iter()
            .filter(|(_, k)| k == "errore-consegna")
            .count()
    };
    let mut sent = 0;
    while full() == 0 {
        assert!(sent < 8, "no mancata consegna after {sent} messages");
        sent += 1;
        d.submit(
            MARIO,
            "password-mario",
            MARIO,
            &[ANNA],
            &message(ANNA, &format!("Quota {sent}")),
        )
        .unwrap();
        wait_for("a receipt for each", 30, || {
            imap_headers(&dv, MARIO, "pw-mario")
                .iter()
                .filter(|(f, k)| {
                    f == "INBOX" && (k == "avvenuta-consegna" || k == "errore-consegna")
                })
                .count()
                >= sent
        });
    }
    // Over IMAP, Anna's inbox holds only what fitted; Mario's refusal notice
    // carries the quota code.
    let anna = imap_headers(&dv, ANNA, "pw-anna");
    assert_eq!(
        anna.iter()
            .filter(|(_, k)| k == "posta-certificata")
            .count(),
        sent - 1
    );
    let log = std::fs::read_to_string(dir.path().join("dovecot/dovecot.log")).unwrap_or_default();
    assert!(log.contains("quota") || log.contains("Quota"), "{log}");
    let mario_files: Vec<String> =
        std::fs::read_dir(mail.join("pec.provider-a.test/mario.rossi/new"))
            .into_iter()
            .flatten()
            .chain(
                std::fs::read_dir(mail.join("pec.provider-a.test/mario.rossi/cur"))
                    .into_iter()
                    .flatten(),
            )
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect();
    assert!(
        mario_files
            .iter()
            .any(|m| m.contains("X-Ricevuta: errore-consegna") && m.contains("5.2.2"))
    );
}
