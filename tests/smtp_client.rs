//! The outbound client against scripted peers on 127.0.0.1: per-recipient
//! outcomes, and a lost final reply reported as ambiguous (not re-sent).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use pecd::smtp::client::{ClientError, Pool, deliver};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A peer that answers RCPT with `rcpt_reply(addr)` and, after the data,
/// either replies `final_reply` or hangs up without a word.
fn peer(
    rcpt_reply: fn(&str) -> &'static str,
    final_reply: Option<&'static str>,
) -> std::net::SocketAddr {
    scripted(rcpt_reply, final_reply, true, 1, usize::MAX).0
}

/// The scripted peer in full: PIPELINING offered or not, `connections`
/// accepted one after the other, each closed after `per_connection`
/// transactions. Also returns how many connections were accepted.
fn scripted(
    rcpt_reply: fn(&str) -> &'static str,
    final_reply: Option<&'static str>,
    pipelining: bool,
    connections: usize,
    per_connection: usize,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let (s, _) = l.accept().unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            serve(s, rcpt_reply, final_reply, pipelining, per_connection);
        }
    });
    (addr, accepted)
}

fn serve(
    mut s: std::net::TcpStream,
    rcpt_reply: fn(&str) -> &'static str,
    final_reply: Option<&'static str>,
    pipelining: bool,
    per_connection: usize,
) {
    let (mut done, mut rcpts) = (0, 0);
    {
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
                if pipelining {
                    s.write_all(b"250-peer\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                        .unwrap();
                } else {
                    s.write_all(b"250-peer\r\n250 8BITMIME\r\n").unwrap();
                }
            } else if up.starts_with("RSET") {
                s.write_all(b"250 2.0.0 ok\r\n").unwrap();
            } else if up.starts_with("MAIL") {
                rcpts = 0;
                s.write_all(b"250 2.1.0 ok\r\n").unwrap();
            } else if up.starts_with("RCPT") {
                let a = &line[line.find('<').unwrap() + 1..line.find('>').unwrap()];
                let reply = rcpt_reply(a);
                rcpts += usize::from(reply.starts_with('2'));
                s.write_all(reply.as_bytes()).unwrap();
            } else if up.starts_with("DATA") && rcpts == 0 {
                s.write_all(b"554 5.5.1 no valid recipients\r\n").unwrap();
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
                done += 1;
                if done >= per_connection {
                    return; // an idle session the server drops
                }
            } else if up.starts_with("QUIT") {
                let _ = s.write_all(b"221 bye\r\n");
                return;
            }
        }
    }
}

/// A peer for one connection: it greets, then hands each command line to
/// `answer` with the socket and its reader, until `answer` says stop or
/// the client goes.
fn one_session(
    greeting: &'static [u8],
    mut answer: impl FnMut(&str, &mut std::net::TcpStream, &mut BufReader<std::net::TcpStream>) -> bool
    + Send
    + 'static,
) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        s.write_all(greeting).unwrap();
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if !answer(&line, &mut s, &mut r) {
                return;
            }
            line.clear();
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
    let err = send_to(addr, &["x@x.test"]).unwrap_err();
    assert!(matches!(err, ClientError::AfterData(_)), "{err}");
    assert!(err.is_ambiguous() && err.is_temporary());
}

fn mixed(a: &str) -> &'static str {
    if a.starts_with("no") {
        "550 5.1.1 unknown\r\n"
    } else {
        "250 2.1.5 ok\r\n"
    }
}

#[test]
fn without_pipelining_outcomes_are_the_same() {
    let (addr, _) = scripted(mixed, Some("250 2.0.0 queued\r\n"), false, 1, 1);
    let o = send_to(addr, &["yes@x.test", "no@x.test"]).unwrap();
    assert_eq!(o.delivered, vec!["yes@x.test"]);
    assert_eq!(o.permanent.len(), 1);
}

#[test]
fn the_pool_reuses_one_session_for_many_messages() {
    // The peer accepts a single connection: every message after the first
    // succeeds only over the pooled session.
    let (addr, accepted) = scripted(mixed, Some("250 2.0.0 queued\r\n"), true, 1, usize::MAX);
    let pool = Pool::new(4, Duration::from_secs(60));
    let rt = rt();
    for i in 0..5 {
        let o = rt
            .block_on(pooled(&pool, addr, &format!("yes{i}@x.test")))
            .unwrap();
        assert_eq!(o.delivered.len(), 1, "message {i}");
    }
    // A transaction where nothing is accepted leaves the session usable.
    let o = rt.block_on(pooled(&pool, addr, "no@x.test")).unwrap();
    assert_eq!(o.permanent.len(), 1);
    let o = rt.block_on(pooled(&pool, addr, "yes@x.test")).unwrap();
    assert_eq!(o.delivered.len(), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_session_the_peer_dropped_is_replaced_before_anything_is_sent() {
    // Each connection carries one transaction, then the peer hangs up.
    let (addr, accepted) = scripted(mixed, Some("250 2.0.0 queued\r\n"), true, 3, 1);
    let pool = Pool::new(4, Duration::from_secs(60));
    let rt = rt();
    for i in 0..3 {
        let o = rt
            .block_on(pooled(&pool, addr, &format!("yes{i}@x.test")))
            .unwrap();
        assert_eq!(o.delivered.len(), 1, "message {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_pooled_session_never_resends_after_a_lost_final_reply() {
    let (addr, accepted) = scripted(|_| "250 2.1.5 ok\r\n", None, true, 2, usize::MAX);
    let pool = Pool::new(4, Duration::from_secs(60));
    let err = rt().block_on(pooled(&pool, addr, "x@x.test")).unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// One message from a@b.test to `rcpts` through `addr` (5 s timeout).
/// One small message to `rcpt` through `pool`.
async fn pooled(
    pool: &Pool,
    addr: std::net::SocketAddr,
    rcpt: &str,
) -> Result<pecd::smtp::client::Outcome, ClientError> {
    let rcpts = [rcpt.to_string()];
    pool.deliver(
        addr,
        "me",
        "a@b.test",
        &rcpts,
        b"S: x\r\n\r\nb\r\n",
        Duration::from_secs(5),
    )
    .await
}

fn send_to(
    addr: std::net::SocketAddr,
    rcpts: &[&str],
) -> Result<pecd::smtp::client::Outcome, ClientError> {
    let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
    rt().block_on(deliver(
        addr,
        "me",
        "a@b.test",
        &rcpts,
        b"S: x\r\n\r\nb\r\n",
        Duration::from_secs(5),
    ))
}

/// A peer greeting with `greeting`, offering PIPELINING, answering RCPT
/// with [`later_or_mixed`] and DATA with `data_reply` (not 354).
fn refusing(greeting: &'static str, data_reply: &'static str) -> std::net::SocketAddr {
    one_session(greeting.as_bytes(), move |line, s, _| {
        let up = line.to_ascii_uppercase();
        let reply = if up.starts_with("EHLO") {
            "250-peer\r\n250 PIPELINING\r\n"
        } else if up.starts_with("RCPT") {
            later_or_mixed(&line[line.find('<').unwrap() + 1..line.find('>').unwrap()])
        } else if up.starts_with("DATA") {
            data_reply
        } else if up.starts_with("QUIT") {
            let _ = s.write_all(b"221 bye\r\n");
            return false;
        } else {
            "250 2.0.0 ok\r\n"
        };
        s.write_all(reply.as_bytes()).unwrap();
        true
    })
}

fn later_or_mixed(a: &str) -> &'static str {
    if a.starts_with("later") {
        "451 4.3.0 busy\r\n"
    } else {
        mixed(a)
    }
}

#[test]
fn a_refused_data_settles_only_the_recipients_it_would_have_carried() {
    let addr = refusing("220 peer\r\n", "554 5.7.1 policy\r\n");
    let o = send_to(addr, &["yes@x.test", "later@x.test", "no@x.test"]).unwrap();
    assert!(o.delivered.is_empty());
    // The 4xx at RCPT stays a 4xx: tried again, not refused for good.
    assert_eq!(o.temporary.len(), 1);
    assert!(o.temporary[0].1.starts_with("451 4.3.0"), "{o:?}");
    let why = |r: &str| o.permanent.iter().find(|p| p.0 == r).unwrap().1.clone();
    assert!(why("no@x.test").starts_with("550 5.1.1"), "{o:?}");
    assert!(why("yes@x.test").starts_with("554 5.7.1"), "{o:?}");
}

#[test]
fn a_server_that_will_not_talk_is_another_hosts_turn_not_a_refusal() {
    let addr = refusing("554 5.7.1 go away\r\n", "354 go\r\n");
    let err = send_to(addr, &["yes@x.test"]).unwrap_err();
    assert!(
        matches!(err, ClientError::Unwilling { code: 554, .. }),
        "{err}"
    );
    assert!(err.is_temporary() && !err.is_ambiguous());
}

#[test]
fn a_large_message_to_a_slow_peer_is_not_cut_off_by_the_command_timeout() {
    // More than the socket buffers can absorb, read at about 25 MB/s:
    // the whole write takes over a second, each 64 KB block a few ms.
    let addr = one_session(b"220 peer\r\n", |line, s, r| {
        let up = line.to_ascii_uppercase();
        if up.starts_with("DATA") {
            s.write_all(b"354 go\r\n").unwrap();
            let (mut tail, mut buf) = (Vec::new(), vec![0u8; 1 << 20]);
            while !tail.ends_with(b"\r\n.\r\n") {
                std::thread::sleep(Duration::from_millis(40));
                let n = std::io::Read::read(r, &mut buf).unwrap();
                assert!(n > 0, "the client gave up");
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(5);
                tail.drain(..keep);
            }
            s.write_all(b"250 2.0.0 queued\r\n").is_ok()
        } else if up.starts_with("QUIT") {
            let _ = s.write_all(b"221 bye\r\n");
            false
        } else {
            s.write_all(b"250 ok\r\n").is_ok()
        }
    });
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    body.extend(
        std::iter::repeat_n(b"0123456789abcdef0123456789abcdef\r\n".iter(), 1_000_000).flatten(),
    );
    let o = rt()
        .block_on(deliver(
            addr,
            "me",
            "a@b.test",
            &["yes@x.test".into()],
            &body,
            Duration::from_millis(300),
        ))
        .unwrap();
    assert_eq!(o.delivered, vec!["yes@x.test"]);
}

#[test]
fn a_reply_to_data_that_is_neither_go_on_nor_a_refusal_settles_nothing() {
    let addr = refusing("220 peer\r\n", "250 2.0.0 out of step\r\n");
    let err = send_to(addr, &["yes@x.test"]).unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    assert!(err.is_temporary());
}

/// A peer that sends its greeting a byte at a time, each well within the
/// timeout, the whole far beyond it: one reply, one deadline.
#[test]
fn a_reply_trickled_byte_by_byte_is_held_to_one_deadline() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        for b in b"220-peer, slowly\r\n".iter().cycle().take(60) {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let err = rt()
        .block_on(deliver(
            addr,
            "me",
            "a@b.test",
            &["yes@x.test".into()],
            b"S: x\r\n\r\nb\r\n",
            Duration::from_secs(1),
        ))
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err}");
}

/// A 421 to the final dot says the server is closing: the session is not
/// pooled for the next message.
#[test]
fn a_session_that_got_421_is_not_reused() {
    let (addr, accepted) = scripted(mixed, Some("421 4.3.0 closing\r\n"), true, 2, usize::MAX);
    let pool = Pool::new(4, Duration::from_secs(60));
    let rt = rt();
    for _ in 0..2 {
        let o = rt.block_on(pooled(&pool, addr, "yes@x.test")).unwrap();
        assert_eq!(o.temporary.len(), 1);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// RFC 6152 §3: 8-bit data goes only to a server that offers 8BITMIME; a
/// signed message cannot be converted to 7 bits, so every recipient fails
/// for good (5.6.3) and nothing is sent.
#[test]
fn eight_bit_data_is_not_sent_to_a_server_without_8bitmime() {
    let commands = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = commands.clone();
    let addr = one_session(b"220 old peer\r\n", move |line, s, _| {
        let up = line.to_ascii_uppercase();
        seen.lock().unwrap().push(up.trim_end().to_string());
        let reply: &[u8] = if up.starts_with("EHLO") {
            b"250-old peer\r\n250 PIPELINING\r\n"
        } else if up.starts_with("QUIT") {
            b"221 bye\r\n"
        } else {
            b"250 2.0.0 ok\r\n"
        };
        s.write_all(reply).is_ok()
    });
    let o = rt()
        .block_on(deliver(
            addr,
            "me",
            "a@b.test",
            &["x@x.test".to_string(), "y@x.test".to_string()],
            "Subject: x\r\n\r\nperché\r\n".as_bytes(),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert!(o.delivered.is_empty());
    assert_eq!(o.permanent.len(), 2);
    assert!(
        o.permanent.iter().all(|(_, why)| why.contains("5.6.3")),
        "{o:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let commands = commands.lock().unwrap();
    assert!(
        !commands
            .iter()
            .any(|c| c.starts_with("MAIL") || c == "DATA"),
        "{commands:?}"
    );
}
