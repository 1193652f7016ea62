//! A battery of malformed input against a real daemon: SMTP dialogues
//! (garbage, wrong sequences, bare LF, NUL bytes, 1 MB lines, injections)
//! and MIME messages (endless headers, broken base64, nesting 100 deep,
//! wrong boundaries, invalid UTF-8, Bcc tricks, forged PEC headers in mixed
//! case). Every command gets a well-formed reply, nothing panics or drops
//! the connection before its reply, every accepted message is processed
//! (an anomaly in the mailbox), and the daemon still works afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const MARIO: &str = "mario.rossi@pec.provider-a.test";

/// Read one reply (all its lines); None if the connection closed first.
fn reply(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        all.push_str(&line);
        let b = line.as_bytes();
        if b.len() < 4 || b[3] == b' ' || b[3] == b'\r' {
            return Some(all);
        }
    }
}

/// Send raw command lines one at a time; every reply must be a 3-digit
/// code with a final line. Returns the codes.
fn dialogue(port: u16, lines: &[Vec<u8>]) -> Vec<u16> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let greeting = reply(&mut r).expect("greeting");
    assert!(greeting.starts_with("220"), "{greeting}");
    let mut codes = Vec::new();
    for l in lines {
        w.write_all(l).unwrap();
        let Some(rep) = reply(&mut r) else {
            panic!(
                "connection dropped without a reply after {:?}",
                String::from_utf8_lossy(&l[..l.len().min(60)])
            );
        };
        let code: u16 = rep
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("malformed reply {rep:?}"));
        assert!((200..600).contains(&code), "{rep}");
        codes.push(code);
        let starttls = l.to_ascii_uppercase().starts_with(b"STARTTLS");
        if code == 221 || code == 421 || (starttls && code == 220) {
            break; // closed, or TLS begins: the dialogue is over
        }
    }
    codes
}

fn line(s: &str) -> Vec<u8> {
    format!("{s}\r\n").into_bytes()
}

fn smtp_cases() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut cases: Vec<(&'static str, Vec<Vec<u8>>)> = vec![
        ("empty line", vec![line("")]),
        ("garbage", vec![line("HELLO WORLD")]),
        (
            "lowercase ok",
            vec![line("ehlo x"), line("noop"), line("quit")],
        ),
        ("mail before helo", vec![line("MAIL FROM:<a@b.it>")]),
        (
            "rcpt before mail",
            vec![
                line("EHLO x"),
                line("RCPT TO:<mario.rossi@pec.provider-a.test>"),
            ],
        ),
        (
            "data before rcpt",
            vec![line("EHLO x"), line("MAIL FROM:<a@b.it>"), line("DATA")],
        ),
        (
            "double mail",
            vec![
                line("EHLO x"),
                line("MAIL FROM:<a@b.it>"),
                line("MAIL FROM:<c@d.it>"),
            ],
        ),
        (
            "bad address",
            vec![line("EHLO x"), line("MAIL FROM:<not an address>")],
        ),
        (
            "unclosed bracket",
            vec![line("EHLO x"), line("MAIL FROM:<a@b.it")],
        ),
        (
            "no brackets",
            vec![line("EHLO x"), line("MAIL FROM:a@b.it")],
        ),
        (
            "null sender ok",
            vec![line("EHLO x"), line("MAIL FROM:<>"), line("RSET")],
        ),
        (
            "relay attempt",
            vec![
                line("EHLO x"),
                line("MAIL FROM:<a@b.it>"),
                line("RCPT TO:<x@gmail.com>"),
            ],
        ),
        (
            "source route",
            vec![
                line("EHLO x"),
                line("MAIL FROM:<a@b.it>"),
                line("RCPT TO:<@evil.it:mario.rossi@pec.provider-a.test>"),
            ],
        ),
        (
            "auth on inbound",
            vec![line("EHLO x"), line("AUTH PLAIN AGZvbwBiYXI=")],
        ),
        (
            "starttls twice",
            vec![line("EHLO x"), line("STARTTLS junk")],
        ),
        ("unknown verb", vec![line("EHLO x"), line("XYZZY")]),
        ("vrfy", vec![line("EHLO x"), line("VRFY mario")]),
        ("expn", vec![line("EHLO x"), line("EXPN list")]),
        ("help", vec![line("HELP")]),
        (
            "size too big",
            vec![line("EHLO x"), line("MAIL FROM:<a@b.it> SIZE=999999999999")],
        ),
        (
            "size garbage",
            vec![line("EHLO x"), line("MAIL FROM:<a@b.it> SIZE=abc")],
        ),
        (
            "unknown param",
            vec![line("EHLO x"), line("MAIL FROM:<a@b.it> FOO=BAR")],
        ),
        (
            "body param",
            vec![
                line("EHLO x"),
                line("MAIL FROM:<a@b.it> BODY=8BITMIME"),
                line("RSET"),
            ],
        ),
        ("bare LF", vec![b"EHLO x\n".to_vec(), b"NOOP\n".to_vec()]),
        ("NUL in command", vec![b"EHLO x\0y\r\n".to_vec()]),
        ("NUL only", vec![b"\0\0\0\r\n".to_vec()]),
        ("tab separated", vec![line("EHLO\tx")]),
        ("high bytes", vec![b"EHLO \xff\xfe\xfd\r\n".to_vec()]),
        ("utf8 helo", vec![line("EHLO città.it")]),
        (
            "1 MB line",
            vec![[vec![b'A'; 1 << 20], b"\r\n".to_vec()].concat()],
        ),
        (
            "long helo",
            vec![line(&format!("EHLO {}", "h".repeat(2000)))],
        ),
        (
            "long address",
            vec![
                line("EHLO x"),
                line(&format!("MAIL FROM:<{}@b.it>", "a".repeat(600))),
            ],
        ),
        ("crlf injection", vec![line("EHLO x\r\nMAIL FROM:<a@b.it>")]),
        ("quit", vec![line("QUIT")]),
        ("rset loop", (0..20).map(|_| line("RSET")).collect()),
        ("noop flood", (0..50).map(|_| line("NOOP")).collect()),
        ("helo then ehlo", vec![line("HELO x"), line("EHLO y")]),
        (
            "bdat",
            vec![
                line("EHLO x"),
                line("MAIL FROM:<a@b.it>"),
                line("BDAT 10 LAST"),
            ],
        ),
        ("turn", vec![line("TURN")]),
        ("etrn", vec![line("ETRN pec.provider-a.test")]),
    ];
    // Too many recipients and repeated ones.
    let mut many = vec![line("EHLO x"), line("MAIL FROM:<a@b.it>")];
    for i in 0..120 {
        many.push(line(&format!("RCPT TO:<u{i}@pec.provider-a.test>")));
    }
    cases.push(("120 recipients", many));
    let mut dup = vec![line("EHLO x"), line("MAIL FROM:<a@b.it>")];
    for _ in 0..5 {
        dup.push(line(&format!("RCPT TO:<{MARIO}>")));
    }
    cases.push(("repeated recipient", dup));
    for verb in [
        "MAIL", "RCPT", "DATA", "AUTH", "STARTTLS", "EHLO", "HELO", "QUIT", "NOOP", "RSET",
    ] {
        cases.push((
            "bare verbs",
            vec![line(verb), line(&format!("{verb} {}", "x".repeat(700)))],
        ));
    }
    for junk in [
        "MAIL FROM",
        "MAIL FROM:",
        "RCPT TO",
        "RCPT TO:<>",
        "MAIL  FROM:<a@b.it>",
        "mail from:<A@B.IT>",
    ] {
        cases.push((
            "malformed paths",
            vec![line("EHLO x"), line(junk), line("RSET")],
        ));
    }
    cases
}

/// A message for the inbound listener; `\n` is written as CRLF.
fn msg(header: &str, body: &str) -> Vec<u8> {
    format!("{header}\r\n\r\n{body}\r\n")
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn mime_cases() -> Vec<(&'static str, Vec<u8>)> {
    let base = format!("From: a@esterno.it\nTo: {MARIO}\nSubject: prova");
    let mut nested = String::from("testo finale");
    for i in 0..100 {
        nested = format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\nContent-Type: message/rfc822\n\nSubject: livello {i}\nContent-Type: text/plain\n\n{nested}\n--b{i}--"
        );
    }
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("plain", msg(&base, "ciao")),
        ("no headers at all", b"\r\njust a body\r\n".to_vec()),
        ("only headers", format!("{base}\r\n").into_bytes()),
        (
            "bare LF everywhere",
            format!("{base}\n\nbody\n").into_bytes(),
        ),
        ("NUL in body", msg(&base, "a\0b\0c")),
        ("NUL in header", msg(&format!("{base}\nX-Null: a\0b"), "x")),
        (
            "invalid UTF-8 subject",
            [
                format!("From: a@b.it\r\nTo: {MARIO}\r\nSubject: ").into_bytes(),
                b"\xff\xfe\xc3\x28\r\n\r\nx\r\n".to_vec(),
            ]
            .concat(),
        ),
        (
            "encoded-word garbage",
            msg(
                &format!("{base}\nX-Test: =?utf-8?B?!!!!?= =?x?Q?=ZZ?="),
                "x",
            ),
        ),
        (
            "endless headers",
            msg(
                &format!(
                    "{base}\n{}",
                    (0..5000)
                        .map(|i| format!("X-H{i}: v"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                "x",
            ),
        ),
        (
            "endless folding",
            msg(&format!("{base}\nX-Fold: a{}", "\n b".repeat(5000)), "x"),
        ),
        (
            "10 KB header line",
            msg(&format!("{base}\nX-Long: {}", "y".repeat(10_000)), "x"),
        ),
        (
            "broken base64",
            msg(
                &format!(
                    "{base}\nMIME-Version: 1.0\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64"
                ),
                "!!!!not base64@@@@\n====",
            ),
        ),
        (
            "broken qp",
            msg(
                &format!("{base}\nContent-Transfer-Encoding: quoted-printable"),
                "=ZZ=\n=4",
            ),
        ),
        (
            "nested 100 deep",
            msg(&format!("{base}\nMIME-Version: 1.0"), &nested),
        ),
        (
            "missing boundary",
            msg(
                &format!("{base}\nContent-Type: multipart/mixed"),
                "--x\n\nbody\n--x--",
            ),
        ),
        (
            "wrong boundary",
            msg(
                &format!("{base}\nContent-Type: multipart/mixed; boundary=\"aaa\""),
                "--bbb\nContent-Type: text/plain\n\nx\n--bbb--",
            ),
        ),
        (
            "unterminated multipart",
            msg(
                &format!("{base}\nContent-Type: multipart/mixed; boundary=z"),
                "--z\nContent-Type: text/plain\n\nx\n",
            ),
        ),
        (
            "empty boundary",
            msg(
                &format!("{base}\nContent-Type: multipart/mixed; boundary=\"\""),
                "--\n\nx\n----",
            ),
        ),
        ("Bcc header", msg(&format!("{base}\nBcc: {MARIO}"), "x")),
        (
            "Bcc in body part",
            msg(
                &format!("{base}\nContent-Type: message/rfc822"),
                &format!("Bcc: {MARIO}\nSubject: dentro\n\nx"),
            ),
        ),
        (
            "forged X-Trasporto mixed case",
            msg(
                &format!("{base}\nx-TRASPORTO: posta-certificata\nX-RIFERIMENTO-MESSAGE-ID: <a@b>"),
                "x",
            ),
        ),
        (
            "forged X-Ricevuta",
            msg(&format!("{base}\nX-Ricevuta: avvenuta-consegna"), "x"),
        ),
        (
            "fake multipart/signed",
            msg(
                &format!(
                    "{base}\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s"
                ),
                "--s\nContent-Type: text/plain\n\nx\n--s\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nMIIBAAAA\n--s--",
            ),
        ),
        (
            "daticert attachment only",
            msg(
                &format!("{base}\nContent-Type: application/xml; name=daticert.xml"),
                "<postacert tipo=\"avvenuta-consegna\" errore=\"nessuno\"><intestazione/></postacert>",
            ),
        ),
        ("duplicate From", msg(&format!("{base}\nFrom: b@c.it"), "x")),
        ("no From", msg(&format!("To: {MARIO}\nSubject: x"), "x")),
        ("8-bit body", msg(&base, "città àèìòù €")),
        ("dot lines", msg(&base, ".\n..\n. \n.x")),
        ("long body line", msg(&base, &"z".repeat(200_000))),
        (
            "many parts",
            msg(
                &format!("{base}\nContent-Type: multipart/mixed; boundary=p"),
                &(0..500)
                    .map(|i| format!("--p\nContent-Type: text/plain\n\n{i}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ),
    ];
    for ct in [
        "text/html",
        "image/png",
        "application/octet-stream",
        "message/partial; id=1",
        "multipart/alternative",
        "x/y; ;;; a=\"",
        "message/rfc822",
    ] {
        cases.push((
            "content types",
            msg(&format!("{base}\nContent-Type: {ct}"), "x"),
        ));
    }
    for cte in [
        "7bit",
        "8bit",
        "binary",
        "x-uuencode",
        "BASE64",
        "quoted-printable; x",
        "",
    ] {
        cases.push((
            "encodings",
            msg(&format!("{base}\nContent-Transfer-Encoding: {cte}"), "QUJD"),
        ));
    }
    cases
}

#[test]
fn malformed_dialogues_and_messages_get_replies_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inbound = free_port();
    let d = Daemon::start(Spec::new('a', dir.path(), inbound, vec![]));
    let smtp = smtp_cases();
    for (name, lines) in &smtp {
        let codes = dialogue(inbound, lines);
        assert!(!codes.is_empty(), "{name}");
    }
    // Every MIME case is accepted at the MX and becomes one anomaly in the
    // mailbox (ordinary mail to a PEC mailbox): none is lost.
    let mime = mime_cases();
    let mut accepted = 0;
    for (name, data) in &mime {
        let mut lines = vec![
            line("EHLO x"),
            line("MAIL FROM:<a@esterno.it>"),
            line(&format!("RCPT TO:<{MARIO}>")),
            line("DATA"),
        ];
        let codes = dialogue(inbound, &lines);
        assert_eq!(codes, vec![250, 250, 250, 354], "{name}");
        lines.clear();
        let (mut w, mut r) = in_data(inbound);
        w.write_all(&pecd::smtp::client::dot_stuff(data)).unwrap();
        let done = reply(&mut r).unwrap_or_else(|| panic!("{name}: dropped after DATA"));
        match &done[..3] {
            "250" => accepted += 1,
            "552" | "554" | "550" => eprintln!("REFUSED {name}: {done}"),
            other => panic!("{name}: {other} {done}"),
        }
    }
    assert!(
        smtp.len() + mime.len() >= 100,
        "{} cases",
        smtp.len() + mime.len()
    );
    assert!(accepted >= mime.len() - 3, "{accepted} of {}", mime.len());
    wait_for("every accepted message delivered as an anomaly", 60, || {
        d.mailbox(MARIO).len() >= accepted
    });
    std::thread::sleep(Duration::from_millis(500));
    let subjects: Vec<String> = d
        .mailbox(MARIO)
        .iter()
        .map(|m| {
            let t = String::from_utf8_lossy(m).into_owned();
            t.lines()
                .filter(|l| {
                    l.starts_with("Subject:")
                        || l.starts_with("X-Trasporto:")
                        || l.starts_with("X-Ricevuta:")
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    assert_eq!(
        d.mailbox(MARIO).len(),
        accepted,
        "one anomaly each, none twice: {subjects:#?}"
    );
    // Still serving, and the legal log intact.
    let codes = dialogue(inbound, &[line("EHLO after"), line("QUIT")]);
    assert_eq!(codes, vec![250, 221]);
    common::assert_log_verifies(&d.cfg);
}

/// An open connection after its greeting, and its reader.
fn open(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let greeting = reply(&mut r).expect("greeting");
    assert!(greeting.starts_with("220"), "{greeting}");
    (s, r)
}

/// A connection to the MX at the start of a message from outside to
/// Mario (after its DATA's 354).
fn in_data(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let (mut w, mut r) = open(port);
    for l in [
        "EHLO x",
        "MAIL FROM:<a@esterno.it>",
        &format!("RCPT TO:<{MARIO}>"),
        "DATA",
    ] {
        w.write_all(&line(l)).unwrap();
        reply(&mut r).unwrap();
    }
    (w, r)
}

/// Open MX connections cannot hold more message data in memory than
/// `limits.data_memory`: the message that would pass it gets 452 4.3.1
/// (its sender tries later), the others are taken, and the memory is
/// free again for the next one.
#[test]
fn message_data_held_in_memory_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let inbound = free_port();
    let mut spec = Spec::new('a', dir.path(), inbound, vec![]);
    spec.limits = "max_message_size = 20000\ndata_memory = 40000\n";
    let d = Daemon::start(spec);
    let body = format!(
        "Subject: grande\r\n\r\n{}",
        ("y".repeat(78) + "\r\n").repeat(180)
    );
    let open_data = || {
        let (mut w, r) = in_data(inbound);
        // About 15 kB each, held until the final dot.
        w.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        (w, r)
    };
    let mut held: Vec<_> = (0..3).map(|_| open_data()).collect();
    let mut codes: Vec<String> = held
        .iter_mut()
        .map(|(w, r)| {
            w.write_all(b".\r\n").unwrap();
            reply(r).unwrap()[..9].to_string()
        })
        .collect();
    codes.sort();
    assert_eq!(codes, ["250 2.0.0", "250 2.0.0", "452 4.3.1"]);
    // Given back: two more at once fit again.
    let mut again: Vec<_> = (0..2).map(|_| open_data()).collect();
    for (w, r) in &mut again {
        w.write_all(b".\r\n").unwrap();
        assert!(reply(r).unwrap().starts_with("250"));
    }
    wait_for("four messages delivered", 30, || {
        d.mailbox(MARIO).len() >= 4
    });
}

/// A peer that keeps sending commands without reading the replies holds
/// its connection only for the command timeout: its slot is free again.
#[test]
fn a_peer_that_does_not_read_its_replies_loses_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let inbound = free_port();
    let mut spec = Spec::new('a', dir.path(), inbound, vec![]);
    spec.limits = "max_message_size = 20000\nmax_connections = 1\ncommand_timeout = \"1s\"\n";
    let d = Daemon::start(spec);
    let (mut w, _never_read) = open(inbound);
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let flood = std::thread::spawn(move || {
        let noops = "NOOP\r\n".repeat(100_000);
        // Until the server stops reading (stuck writing replies nobody
        // reads), then until it gives up and closes.
        while w.write_all(noops.as_bytes()).is_ok() {}
    });
    // Only slot taken: others are turned away meanwhile ...
    let s = TcpStream::connect(("127.0.0.1", inbound)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let busy = reply(&mut BufReader::new(s)).unwrap();
    assert!(busy.starts_with("421"), "{busy}");
    // (the MX's peers have their own slots: users still submit)
    let _user = open(d.ports.submission);
    // ... until the stuck write times out and the slot is given back.
    wait_for("the slot given back", 30, || {
        let s = TcpStream::connect(("127.0.0.1", inbound)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        reply(&mut BufReader::new(s)).is_some_and(|g| g.starts_with("220"))
    });
    flood.join().unwrap();
}

/// Password guessing over SMTP AUTH is throttled across connections, as
/// on the web: after ten failures for one mailbox, even its right
/// password waits; other mailboxes are not held up by it.
#[test]
fn smtp_password_guessing_is_throttled_across_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Spec::new('b', dir.path(), free_port(), vec![]));
    let (giulia, luca) = (B_MAILBOXES[0], B_MAILBOXES[1]);
    let msg = |from: &str| format!("From: {from}\r\nTo: {from}\r\nSubject: x\r\n\r\nx\r\n");
    let send = |(user, pw): (&str, &str)| d.submit(user, pw, user, &[user], msg(user).as_bytes());
    for _ in 0..10 {
        let err = send((giulia.0, "indovina")).unwrap_err();
        assert!(err.contains("535"), "{err}");
    }
    let err = send(giulia).unwrap_err();
    assert!(err.contains("454"), "{err}");
    send(luca).unwrap();
    // A good password clears its mailbox's count: a client's occasional
    // typos never add up to a lockout.
    for _ in 0..2 {
        for _ in 0..9 {
            assert!(send((luca.0, "refuso")).is_err());
        }
        send(luca).unwrap();
    }
}
