//! The SMTP server session (command parser and state machine) on arbitrary
//! client bytes, both listener modes, answering every event as the I/O
//! shell would. Must never panic, and must always make progress: each
//! feed ends with no event pending or the session closed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pecd::smtp::reply::Reply;
use pecd::smtp::session::{Event, Mode, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let cfg = SessionConfig {
        mode: if flags & 1 == 0 { Mode::Submission } else { Mode::Inbound },
        hostname: "mx.pec.example.test".into(),
        max_message_size: 4096,
        max_recipients: 5,
        tls_available: flags & 2 != 0,
        local_domains: vec!["pec.example.test".into()],
    };
    let mut s = Session::new(cfg, flags & 4 != 0);
    let _ = s.greeting();
    // Feed in chunks at the positions of 0xff bytes, as TCP reads would.
    for chunk in rest.split(|b| *b == 0xff) {
        s.feed(chunk);
        let mut guard = 0;
        while let Some(ev) = s.next_event() {
            guard += 1;
            assert!(guard < 100_000, "the session loops");
            match ev {
                Event::StartTls(_) => s.tls_started(),
                Event::Authenticate { user, .. } => {
                    // Good, wrong, or a check that could not be made.
                    let verdict = match user.len() % 3 {
                        0 => Ok(Some(user)),
                        1 => Ok(None),
                        _ => Err(pecd::smtp::reply::Reply::new(454, (4, 7, 0), "try later")),
                    };
                    let _ = s.auth_result(verdict);
                }
                Event::Recipient { address, .. } => {
                    // Known, unknown, or a lookup that failed.
                    let verdict = match address.len() % 3 {
                        0 => Ok(Some(address)),
                        1 => Ok(None),
                        _ => Err(Reply::new(451, (4, 3, 0), "lookup failed")),
                    };
                    let _ = s.recipient_result(verdict);
                }
                Event::Message(env) => {
                    assert!(env.data.len() <= 4096 + 1024, "over the size limit");
                    let _ = s.message_result(Reply::new(250, (2, 0, 0), "ok"));
                }
                Event::Reply(_) => {}
                Event::Close(_) => return,
            }
        }
        if s.is_closed() {
            return;
        }
    }
});
