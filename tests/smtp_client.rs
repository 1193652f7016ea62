//! The outbound client against scripted peers on 127.0.0.1: per-recipient
//! outcomes, and a lost final reply reported as ambiguous (not re-sent).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use pecd::smtp::client::{ClientError, deliver};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

/// A peer that answers RCPT with `rcpt_reply(addr)` and, after the data,
/// either replies `final_reply` or hangs up without a word.
fn peer(
    rcpt_reply: fn(&str) -> &'static str,
    final_reply: Option<&'static str>,
) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        s.write_all(b"220 peer\r\n").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let up = line.to_ascii_uppercase();
            if up.starts_with("EHLO") {
                s.write_all(b"250-peer\r\n250 8BITMIME\r\n").unwrap();
            } else if up.starts_with("MAIL") {
                s.write_all(b"250 2.1.0 ok\r\n").unwrap();
            } else if up.starts_with("RCPT") {
                let a = &line[line.find('<').unwrap() + 1..line.find('>').unwrap()];
                s.write_all(rcpt_reply(a).as_bytes()).unwrap();
            } else if up.starts_with("DATA") {
                s.write_all(b"354 go\r\n").unwrap();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if line == ".\r\n" {
                        break;
                    }
                }
                match final_reply {
                    Some(reply) => s.write_all(reply.as_bytes()).unwrap(),
                    None => return, // hang up: the outcome is unknown
                }
            } else if up.starts_with("QUIT") {
                let _ = s.write_all(b"221 bye\r\n");
                return;
            }
        }
    });
    addr
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn each_recipient_gets_its_own_outcome() {
    let addr = peer(
        |a| {
            if a.starts_with("no") {
                "550 5.1.1 unknown\r\n"
            } else if a.starts_with("later") {
                "451 4.3.0 busy\r\n"
            } else {
                "250 2.1.5 ok\r\n"
            }
        },
        Some("250 2.0.0 queued\r\n"),
    );
    let rcpts = vec![
        "yes@x.test".to_string(),
        "no@x.test".to_string(),
        "later@x.test".to_string(),
    ];
    let o = rt()
        .block_on(deliver(
            addr,
            "me",
            "a@b.test",
            &rcpts,
            b"Subject: x\r\n\r\n.dot\r\n",
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(o.delivered, vec!["yes@x.test"]);
    assert_eq!(o.permanent.len(), 1);
    assert!(
        o.permanent[0].1.starts_with("550 5.1.1"),
        "{:?}",
        o.permanent
    );
    assert_eq!(o.temporary.len(), 1);
    assert!(o.temporary[0].1.starts_with("451 4.3.0"));
}

#[test]
fn a_lost_final_reply_is_ambiguous() {
    let addr = peer(|_| "250 2.1.5 ok\r\n", None);
    let err = rt()
        .block_on(deliver(
            addr,
            "me",
            "a@b.test",
            &["x@x.test".into()],
            b"Subject: x\r\n\r\nbody\r\n",
            Duration::from_secs(5),
        ))
        .unwrap_err();
    assert!(matches!(err, ClientError::AfterData(_)), "{err}");
    assert!(err.is_ambiguous() && err.is_temporary());
}
