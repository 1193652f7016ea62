//! Transcript tests of the sans-IO SMTP session: every wrong sequence and
//! piece of garbage gets the RFC 5321 reply, never a panic or a silent drop.

use pecd::smtp::reply::Reply;
use pecd::smtp::session::{Event, Mode, Session, SessionConfig};

fn cfg(mode: Mode) -> SessionConfig {
    SessionConfig {
        mode,
        hostname: "mx.pec.provider-a.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        tls_available: true,
        local_domains: vec!["pec.provider-a.test".into()],
    }
}

/// A fake shell: TLS always succeeds, one valid account, messages are
/// acknowledged with their size. Returns everything written.
struct Shell {
    out: String,
    messages: Vec<pecd::smtp::session::Envelope>,
    closed: bool,
}

impl Shell {
    fn new(s: &Session) -> Shell {
        Shell {
            out: s.greeting().to_string(),
            messages: Vec::new(),
            closed: false,
        }
    }

    fn send(&mut self, s: &mut Session, input: &str) -> &mut Self {
        s.feed(input.as_bytes());
        while let Some(ev) = s.next_event() {
            match ev {
                Event::Reply(r) => self.out.push_str(&r.to_string()),
                Event::StartTls(r) => {
                    self.out.push_str(&r.to_string());
                    s.tls_started();
                }
                Event::Authenticate { user, password } => {
                    // A password "guasto" stands for a store that cannot
                    // be read.
                    let verdict = if password == "guasto" {
                        Err(Reply::new(
                            454,
                            (4, 7, 0),
                            "Temporary authentication failure",
                        ))
                    } else {
                        let ok = user == "mario@pec.provider-a.test" && password == "segreto";
                        Ok(ok.then_some(user))
                    };
                    let r = s.auth_result(verdict);
                    self.out.push_str(&r.to_string());
                }
                Event::Recipient { address, .. } => {
                    // Every mailbox exists but nobody's; postmaster is
                    // an alias of giulia's.
                    let lower = address.to_ascii_lowercase();
                    let known = if lower.starts_with("postmaster@") {
                        Some("giulia@pec.provider-a.test".into())
                    } else if lower.starts_with("nobody@") {
                        None
                    } else {
                        Some(address)
                    };
                    let r = s.recipient_result(Ok(known));
                    self.out.push_str(&r.to_string());
                }
                Event::Message(env) => {
                    let r = s.message_result(Reply::ok(format!("queued {} bytes", env.data.len())));
                    self.messages.push(env);
                    self.out.push_str(&r.to_string());
                }
                Event::Close(r) => {
                    self.out.push_str(&r.to_string());
                    self.closed = true;
                }
            }
        }
        self
    }

    fn codes(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| &l[..3])
            .collect()
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn submission_happy_path_with_starttls_auth_plain_and_pipelining() {
    let mut s = Session::new(cfg(Mode::Submission), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO client\r\n");
    assert!(sh.out.contains("250 STARTTLS"), "{}", sh.out);
    assert!(
        !sh.out.contains("AUTH"),
        "AUTH must not be offered before TLS"
    );
    sh.send(&mut s, "STARTTLS\r\n");
    sh.send(&mut s, "EHLO client\r\n");
    assert!(sh.out.contains("AUTH PLAIN LOGIN"));
    let plain = b64("\0mario@pec.provider-a.test\0segreto");
    // Pipelined: AUTH is not pipelinable, so send it alone; then the rest at once.
    sh.send(&mut s, &format!("AUTH PLAIN {plain}\r\n"));
    sh.send(
        &mut s,
        "MAIL FROM:<mario@pec.provider-a.test> SIZE=100\r\nRCPT TO:<a@pec.provider-b.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        sh.codes(),
        vec![
            "220", "250", "220", "250", "235", "250", "250", "250", "354", "250", "221"
        ]
    );
    assert!(sh.closed);
    let m = &sh.messages[0];
    assert_eq!(m.mail_from, "mario@pec.provider-a.test");
    assert_eq!(m.rcpt_to, vec!["a@pec.provider-b.test", "b@example.com"]);
    assert_eq!(
        m.authenticated.as_deref(),
        Some("mario@pec.provider-a.test")
    );
    assert!(m.tls);
    assert_eq!(
        m.data, b"Subject: x\r\n\r\n.dot\r\nbody\r\n",
        "dot-unstuffed, terminator removed"
    );
}

#[test]
fn auth_is_refused_without_tls_and_mail_without_auth() {
    let mut s = Session::new(cfg(Mode::Submission), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\n");
    sh.send(
        &mut s,
        &format!(
            "AUTH PLAIN {}\r\n",
            b64("\0mario@pec.provider-a.test\0segreto")
        ),
    );
    assert!(sh.out.contains("538 5.7.11"), "{}", sh.out);
    sh.send(&mut s, "MAIL FROM:<mario@pec.provider-a.test>\r\n");
    assert!(sh.out.contains("530 5.7.0"), "{}", sh.out);
}

#[test]
fn auth_login_wrong_password_then_sender_mismatch() {
    let mut s = Session::new(cfg(Mode::Submission), true);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\nAUTH LOGIN\r\n");
    sh.send(&mut s, &format!("{}\r\n", b64("mario@pec.provider-a.test")));
    sh.send(&mut s, &format!("{}\r\n", b64("sbagliata")));
    assert!(sh.out.contains("535 5.7.8"), "{}", sh.out);
    sh.send(
        &mut s,
        &format!(
            "AUTH LOGIN {}\r\n{}\r\n",
            b64("mario@pec.provider-a.test"),
            b64("segreto")
        ),
    );
    assert!(sh.out.contains("235 2.7.0"), "{}", sh.out);
    sh.send(&mut s, "MAIL FROM:<luigi@pec.provider-a.test>\r\n");
    assert!(sh.out.contains("553 5.7.1"), "{}", sh.out);
}

#[test]
fn three_failed_auths_close_the_connection() {
    let mut s = Session::new(cfg(Mode::Submission), true);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\n");
    for _ in 0..3 {
        sh.send(&mut s, &format!("AUTH PLAIN {}\r\n", b64("\0x@y.it\0no")));
    }
    assert!(sh.out.contains("421 4.7.0"));
    assert!(s.is_closed());
}

#[test]
fn a_credentials_check_that_cannot_be_made_is_a_temporary_failure() {
    let mut s = Session::new(cfg(Mode::Submission), true);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\n");
    // Not "wrong password", and never counted towards the lockout.
    for _ in 0..4 {
        let guasto = b64("\0mario@pec.provider-a.test\0guasto");
        sh.send(&mut s, &format!("AUTH PLAIN {guasto}\r\n"));
    }
    assert_eq!(sh.codes(), ["220", "250", "454", "454", "454", "454"]);
    assert!(!s.is_closed());
    let good = b64("\0mario@pec.provider-a.test\0segreto");
    sh.send(&mut s, &format!("AUTH PLAIN {good}\r\n"));
    assert!(sh.out.ends_with("235 2.7.0 Authentication successful\r\n"));
}

#[test]
fn inbound_refuses_relay_and_auth_but_takes_cleartext() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO other-provider\r\n");
    assert!(!sh.out.contains("AUTH"));
    sh.send(&mut s, &format!("AUTH PLAIN {}\r\n", b64("\0a\0b")));
    assert!(sh.out.contains("502 5.5.1"));
    sh.send(&mut s, "MAIL FROM:<x@example.com>\r\nRCPT TO:<victim@gmail.test>\r\nRCPT TO:<Mario@PEC.Provider-A.test>\r\nDATA\r\nhi\r\n.\r\n");
    assert!(sh.out.contains("550 5.7.1 Relaying denied"));
    assert_eq!(sh.messages.len(), 1);
    assert_eq!(sh.messages[0].rcpt_to, vec!["Mario@PEC.Provider-A.test"]);
    assert!(!sh.messages[0].tls);
}

#[test]
fn starttls_discards_pipelined_cleartext_commands() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.it>\r\n");
    // The injected MAIL must not be executed after the upgrade.
    sh.send(&mut s, "MAIL FROM:<a@b.it>\r\n");
    assert!(
        sh.out.ends_with("503 5.5.1 Send EHLO first\r\n"),
        "{}",
        sh.out
    );
}

#[test]
fn wrong_sequences_get_503_and_limits_apply() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "MAIL FROM:<a@b.it>\r\n");
    sh.send(
        &mut s,
        "EHLO c\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\n",
    );
    sh.send(&mut s, "MAIL FROM:<a@b.it> SIZE=5000\r\n");
    sh.send(
        &mut s,
        "MAIL FROM:<a@b.it>\r\nMAIL FROM:<a@b.it>\r\nDATA\r\n",
    );
    for i in 0..4 {
        sh.send(&mut s, &format!("RCPT TO:<u{i}@pec.provider-a.test>\r\n"));
    }
    assert_eq!(
        sh.codes(),
        vec![
            "220", "503", "250", "503", "503", "552", "250", "503", "554", "250", "250", "250",
            "452"
        ]
    );
}

/// On submission, recipients beyond the session's limit are taken and
/// counted, not refused with a 452 (the client would send them in a
/// second transaction, and part of a message over the limit would be
/// certified): the whole message then gets its avviso di non accettazione.
#[test]
fn submission_counts_recipients_beyond_the_limit_instead_of_refusing_them() {
    let mut s = Session::new(cfg(Mode::Submission), true);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\n");
    let plain = b64("\0mario@pec.provider-a.test\0segreto");
    sh.send(&mut s, &format!("AUTH PLAIN {plain}\r\n"));
    sh.send(&mut s, "MAIL FROM:<mario@pec.provider-a.test>\r\n");
    for i in 0..5 {
        sh.send(&mut s, &format!("RCPT TO:<u{i}@pec.provider-b.test>\r\n"));
    }
    sh.send(&mut s, "DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n");
    assert!(!sh.out.contains("452"), "{}", sh.out);
    let m = &sh.messages[0];
    assert_eq!(m.rcpt_to.len() + m.rcpt_overflow, 5);
    assert!(m.rcpt_overflow > 0);
}

#[test]
fn oversized_data_is_read_to_the_end_and_refused() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(
        &mut s,
        "EHLO c\r\nMAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\n",
    );
    let big = "x".repeat(700);
    sh.send(&mut s, &format!("{big}\r\n{big}\r\n.\r\nNOOP\r\n"));
    assert!(sh.out.contains("552 5.3.4"), "{}", sh.out);
    assert!(
        sh.out.ends_with("250 2.0.0 OK\r\n"),
        "session continues: {}",
        sh.out
    );
    assert!(sh.messages.is_empty());
}

#[test]
fn a_message_refused_midway_is_read_to_the_end_and_gets_that_reply() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(
        &mut s,
        "EHLO c\r\nMAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\n",
    );
    sh.send(&mut s, "Subject: x\r\n\r\nprima parte\r\n");
    assert_eq!(s.buffered(), "Subject: x\r\n\r\nprima parte\r\n".len());
    s.refuse_data(Reply::new(452, (4, 3, 1), "no memory now"));
    assert_eq!(s.buffered(), 0, "what it held is given back");
    sh.send(&mut s, "seconda parte\r\n");
    assert_eq!(s.buffered(), 0, "and nothing more is kept");
    sh.send(&mut s, ".\r\nNOOP\r\n");
    assert!(sh.out.contains("452 4.3.1 no memory now"), "{}", sh.out);
    assert!(sh.out.ends_with("250 2.0.0 OK\r\n"), "{}", sh.out);
    assert!(sh.messages.is_empty());
    // The next transaction is whole again.
    sh.send(
        &mut s,
        "MAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\nSubject: y\r\n\r\nok\r\n.\r\n",
    );
    assert_eq!(sh.messages.len(), 1);
}

#[test]
fn garbage_and_long_lines_get_errors_not_panics() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "HELLO\r\n\x00\x01\x02\r\nMAIL\r\nRCPT TO:\r\n");
    sh.send(&mut s, &format!("EHLO {}\r\n", "a".repeat(10_000)));
    sh.send(&mut s, "NOOP\r\nBDAT 10 LAST\r\nVRFY x\r\nHELP\r\n");
    let codes = sh.codes();
    assert!(
        codes.iter().filter(|c| c.starts_with('5')).count() >= 4,
        "{codes:?}"
    );
    assert!(
        codes.contains(&"502") && codes.contains(&"252") && codes.contains(&"214"),
        "{codes:?}"
    );
    assert!(!s.is_closed());
}

#[test]
fn split_input_byte_by_byte_gives_the_same_result() {
    let script = "EHLO c\r\nMAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\nline\r\n.\r\nQUIT\r\n";
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    for b in script.chars() {
        sh.send(&mut s, &b.to_string());
    }
    assert_eq!(
        sh.codes(),
        vec!["220", "250", "250", "250", "354", "250", "221"]
    );
    assert_eq!(sh.messages[0].data, b"line\r\n");
}

#[test]
fn an_empty_message_ends_at_the_first_dot_and_a_first_line_is_unstuffed() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    let tx = "MAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\n";
    sh.send(&mut s, &format!("EHLO c\r\n{tx}.\r\n"));
    sh.send(&mut s, tx);
    sh.send(&mut s, "..starts with a dot\r\nx\r\n.\r\n");
    assert_eq!(
        sh.codes(),
        vec![
            "220", "250", "250", "250", "354", "250", "250", "250", "354", "250"
        ]
    );
    assert_eq!(sh.messages[0].data, b"");
    assert_eq!(sh.messages[1].data, b".starts with a dot\r\nx\r\n");
}

#[test]
fn a_malformed_command_does_not_eat_the_next_pipelined_one() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\nMAIL FROM\r\nRSET\r\nRCPT TO\r\nNOOP\r\n");
    assert_eq!(sh.codes(), vec!["220", "250", "501", "250", "501", "250"]);
}

#[test]
fn an_over_long_line_gets_one_reply_however_it_arrives() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\n");
    // In pieces, then its end with a pipelined command after it.
    for _ in 0..5 {
        sh.send(&mut s, &"MAIL FROM:<a@b.it> ".repeat(100));
    }
    sh.send(&mut s, "tail of the line\r\nNOOP\r\n");
    // In one piece.
    sh.send(&mut s, &format!("HELO {}\r\nNOOP\r\n", "h".repeat(5000)));
    assert_eq!(sh.codes(), vec!["220", "250", "500", "250", "500", "250"]);
    // An over-long AUTH continuation line is dropped whole too.
    let mut s = Session::new(cfg(Mode::Submission), true);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\nAUTH PLAIN\r\n");
    sh.send(&mut s, &"QUFBQUFB".repeat(300));
    sh.send(&mut s, "QUFB\r\nNOOP\r\n");
    assert_eq!(sh.codes(), vec!["220", "250", "334", "500", "250"]);
}

#[test]
fn parameters_of_extensions_not_offered_get_555() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\n");
    for mail in [
        "MAIL FROM:<a@b.it> XFOO=1",
        "MAIL FROM:<a@b.it> REQUIRETLS",
        "MAIL FROM:<a@b.it> SMTPUTF8",
        "MAIL FROM:<a@b.it> BODY=BINARYMIME",
        "MAIL FROM:<a@b.it> RET=HDRS",
        "MAIL FROM:<a@b.it> ENVID=x",
        "MAIL FROM:<a@b.it> AUTH=<>",
    ] {
        sh.send(&mut s, &format!("{mail}\r\n"));
    }
    sh.send(&mut s, "MAIL FROM:<a@b.it> BODY=8BITMIME SIZE=10\r\n");
    sh.send(&mut s, "RCPT TO:<m@pec.provider-a.test> NOTIFY=NEVER\r\n");
    sh.send(
        &mut s,
        "RCPT TO:<m@pec.provider-a.test> ORCPT=rfc822;m@x.it\r\n",
    );
    sh.send(&mut s, "RCPT TO:<m@pec.provider-a.test>\r\n");
    let mut want = vec!["220", "250"];
    want.extend(["555"; 7]);
    want.extend(["250", "555", "555", "250"]);
    assert_eq!(sh.codes(), want, "{}", sh.out);
    assert!(sh.out.contains("555 5.5.4"), "{}", sh.out);
    // Where AUTH is offered, its MAIL parameter is taken (RFC 4954 §5).
    let mut s = Session::new(cfg(Mode::Submission), true);
    let mut sh = Shell::new(&s);
    let plain = b64("\0mario@pec.provider-a.test\0segreto");
    sh.send(
        &mut s,
        &format!(
            "EHLO c\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<mario@pec.provider-a.test> AUTH=<>\r\n"
        ),
    );
    assert_eq!(sh.codes(), vec!["220", "250", "235", "250"], "{}", sh.out);
}

#[test]
fn inbound_refuses_unknown_mailboxes_and_takes_postmaster() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(
        &mut s,
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@pec.provider-a.test>\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<>\r\nRCPT TO:<postmaster@PEC.provider-a.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(
        sh.codes(),
        vec![
            "220", "250", "250", "550", "250", "501", "250", "354", "250"
        ],
        "{}",
        sh.out
    );
    assert!(sh.out.contains("550 5.1.1"), "{}", sh.out);
    assert_eq!(sh.messages[0].rcpt_to, vec!["giulia@pec.provider-a.test"]);
}

#[test]
fn a_recipient_named_twice_is_one_recipient() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "EHLO c\r\nMAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nRCPT TO:<M@PEC.provider-a.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(sh.messages[0].rcpt_to, vec!["m@pec.provider-a.test"]);
}

#[test]
fn trace_header_names_peer_server_protocol_and_recipient() {
    let env = pecd::smtp::session::Envelope {
        mail_from: "a@x.it".into(),
        rcpt_to: vec!["b@y.it".into()],
        authenticated: Some("a@x.it".into()),
        tls: true,
        helo: "client\r\nX-Evil: 1".into(),
        esmtp: true,
        rcpt_overflow: 0,
        data: Vec::new(),
        peer: Some("::1".parse().unwrap()),
    };
    assert_eq!(
        env.trace_header("mx.x.it", "ID1", "Mon, 23 Nov 2026 10:00:00 +0100"),
        "Received: from clientX-Evil:1 ([IPv6:::1])\r\n\tby mx.x.it (pecd) with ESMTPSA id ID1\r\n\tfor <b@y.it>;\r\n\tMon, 23 Nov 2026 10:00:00 +0100\r\n"
    );
    let plain = pecd::smtp::session::Envelope {
        authenticated: None,
        tls: false,
        rcpt_to: vec!["b@y.it".into(), "c@y.it".into()],
        helo: String::new(),
        peer: None,
        ..env
    };
    assert_eq!(
        plain.trace_header("mx", "I", "D"),
        "Received: from unknown\r\n\tby mx (pecd) with ESMTP id I;\r\n\tD\r\n"
    );
    // RFC 3848: a client that said HELO spoke SMTP.
    let old = pecd::smtp::session::Envelope {
        esmtp: false,
        ..plain
    };
    assert!(old.trace_header("mx", "I", "D").contains(" with SMTP id "));
}

#[test]
fn helo_gets_one_line_lhlo_is_not_smtp() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(&mut s, "HELO c\r\n");
    assert!(
        sh.out
            .ends_with("\r\n250 mx.pec.provider-a.test greets c\r\n"),
        "{}",
        sh.out
    );
    assert!(!sh.out.contains("PIPELINING"));
    sh.send(&mut s, "LHLO c\r\n");
    assert!(
        sh.out
            .ends_with("500 5.5.1 LHLO is LMTP (RFC 2033): use EHLO\r\n"),
        "{}",
        sh.out
    );
    sh.send(
        &mut s,
        "MAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(!sh.messages[0].esmtp);
    sh.send(&mut s, "EHLO c\r\n");
    assert!(sh.out.contains("250-PIPELINING"), "{}", sh.out);
}

/// SMTP smuggling: only CRLF "." CRLF ends a message; "." CR CR LF is a
/// stuffed line of data, and what follows it is not read as commands.
#[test]
fn a_dot_followed_by_two_crs_does_not_end_the_message() {
    let mut s = Session::new(cfg(Mode::Inbound), false);
    let mut sh = Shell::new(&s);
    sh.send(
        &mut s,
        "EHLO c\r\nMAIL FROM:<a@b.it>\r\nRCPT TO:<m@pec.provider-a.test>\r\nDATA\r\n\
         Subject: uno\r\n\r\nx\r\n.\r\r\nMAIL FROM:<forged@b.it>\r\n.\r\n",
    );
    assert_eq!(sh.messages.len(), 1);
    assert_eq!(
        sh.messages[0].data,
        b"Subject: uno\r\n\r\nx\r\n\r\r\nMAIL FROM:<forged@b.it>\r\n"
    );
    assert_eq!(sh.codes(), ["220", "250", "250", "250", "354", "250"]);
}
