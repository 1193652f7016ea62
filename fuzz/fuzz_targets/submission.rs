//! The punto di accesso on arbitrary messages: the formal checks (RT §2.1)
//! and, whatever they decide, the notice and the busta di trasporto built
//! from what they read. Must never panic, and nothing built may carry a
//! line break in a header field value that the message put there (a
//! decoded `=0D=0A` in a Subject would start a header field of its own).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pecd::clock::LegalTime;
use pecd::pec::Provider;
use pecd::pec::build::{self, Rejection};
use pecd::points::access::{AccessLimits, Decision, Submission, decide};

fuzz_target!(|data: &[u8]| {
    let sender = "mario@pec.example.test";
    let rcpt = vec!["a@pec.example.test".to_string(), "b@example.com".to_string()];
    let provider = Provider {
        name: "Provider".into(),
        domain: "pec.example.test".into(),
    };
    let time = LegalTime::now(&pecd::clock::SystemClock);
    let decision = decide(
        &Submission {
            authenticated: sender,
            mail_from: sender,
            rcpt_to: &rcpt,
            rcpt_overflow: 0,
            message: data,
        },
        &AccessLimits {
            max_message_size: 1 << 20,
            max_total_size: 30 << 20,
            max_recipients: 50,
        },
        &provider,
        time,
        "id.1@pec.example.test".into(),
        &|a: &str| a.ends_with("@pec.example.test"),
    );
    let built = match decision {
        Decision::Accept(c) => vec![
            build::acceptance(&c, "acc.1@pec.example.test"),
            build::transport(&c, data),
        ],
        Decision::Reject { certification, reason } => vec![build::non_acceptance(
            &certification,
            "non.1@pec.example.test",
            &Rejection::Formal(reason),
        )],
    };
    for m in built {
        // One field per header line built: every other line is a
        // continuation (it starts with a space or a tab).
        assert_eq!(
            m.field_starts(),
            m.headers.len(),
            "{}",
            String::from_utf8_lossy(&m.header_block())
        );
    }
});
