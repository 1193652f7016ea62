//! Punto di accesso: the formal checks of a submission (RT §2.1) and the
//! certification data of an accepted one.
//!
//! Owns: deciding accept or reject, the reason (Italian, it goes into the
//! *avviso di non accettazione*), and the recipients' classification.
//! Must not touch: signing, storage, SMTP replies.

use crate::clock::LegalTime;
use crate::pec::build::Certification;
use crate::pec::original::OriginalHeaders;
use crate::pec::{Provider, ReceiptVariant, Recipient, RecipientClass, RecipientRole};

/// What the SMTP session hands to the access point.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    /// The authenticated identity (SMTP AUTH).
    pub authenticated: &'a str,
    /// SMTP MAIL FROM.
    pub mail_from: &'a str,
    /// SMTP RCPT TO, in order.
    pub rcpt_to: &'a [String],
    /// Recipients given beyond `rcpt_to` (the session keeps no more than
    /// twice the limit; the rest is only counted).
    pub rcpt_overflow: usize,
    /// The message as received (CRLF).
    pub message: &'a [u8],
}

/// The provider's limits that the formal checks apply.
#[derive(Debug, Clone, Copy)]
pub struct AccessLimits {
    pub max_message_size: u64,
    /// recipients × size (RT §8.5: at least 30 MB).
    pub max_total_size: u64,
    pub max_recipients: usize,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accepted: the certification data of the transaction.
    Accept(Certification),
    /// Refused: the data for the *avviso di non accettazione* and why.
    Reject {
        certification: Certification,
        reason: String,
    },
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Apply RT §2.1. `is_certified` says whether an address is in some
/// provider's `managedDomains` (provider index).
pub fn decide(
    sub: &Submission<'_>,
    limits: &AccessLimits,
    provider: &Provider,
    time: LegalTime,
    pec_id: String,
    is_certified: &dyn Fn(&str) -> bool,
) -> Decision {
    let h = OriginalHeaders::parse(sub.message);
    // Certification data come from the SMTP envelope; To/Cc decide roles
    // (RT §2.1).
    let recipients: Vec<Recipient> = sub
        .rcpt_to
        .iter()
        .map(|r| Recipient {
            address: r.to_lowercase(),
            class: if is_certified(r) {
                RecipientClass::Certified
            } else {
                RecipientClass::External
            },
            role: if h.is_copy(r) {
                RecipientRole::Cc
            } else {
                RecipientRole::To
            },
        })
        .collect();
    let certification = Certification {
        provider: provider.clone(),
        time,
        pec_id,
        sender: sub.mail_from.to_lowercase(),
        recipients,
        reply_to: h.risposte().unwrap_or_else(|| sub.mail_from.to_string()),
        subject: h.subject.clone(),
        msgid: h.msgid(),
        receipt_request: h.receipt_request.unwrap_or(ReceiptVariant::Full),
    };
    match formal_error(sub, limits, &h) {
        None => Decision::Accept(certification),
        Some(reason) => Decision::Reject {
            certification,
            reason,
        },
    }
}

/// The first formal error, worded to complete "a causa di …" (RT §3.3).
fn formal_error(
    sub: &Submission<'_>,
    limits: &AccessLimits,
    h: &OriginalHeaders,
) -> Option<String> {
    // RFC 6109 §5.2: an authenticated user sends only as his own address.
    if !same(sub.authenticated, sub.mail_from) {
        return Some(format!(
            "mittente SMTP ({}) diverso dall'utente autenticato ({})",
            sub.mail_from, sub.authenticated
        ));
    }
    if let Some(line) = h.malformed_line {
        return Some(format!(
            "intestazione non conforme alla riga {line} (RFC 5322 §2.2; forme obsolete come \"Subject :\" non accettate)"
        ));
    }
    if let Some(name) = h.repeated {
        return Some(format!("intestazione {name} ripetuta"));
    }
    match h.from.as_slice() {
        [] => return Some("intestazione From assente o non valida".into()),
        [one] if !same(one, sub.mail_from) => {
            return Some(format!(
                "mittente ({one}) diverso dal mittente SMTP ({})",
                sub.mail_from
            ));
        }
        [_] => {}
        _ => return Some("più di un indirizzo nell'intestazione From".into()),
    }
    if h.to.is_empty() {
        return Some("intestazione To assente o senza destinatari validi".into());
    }
    // An address without its domain (`To: <nobody>`) names nobody a
    // receipt could speak of (RFC 5322 §3.4.1: local-part "@" domain).
    let valid = |a: &str| {
        a.rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
    };
    for (field, list) in [("To", &h.to), ("Cc", &h.cc)] {
        if let Some(bad) = list.iter().find(|a| !valid(a)) {
            return Some(format!(
                "indirizzo non valido nell'intestazione {field}: {bad}"
            ));
        }
    }
    // An address in Bcc is invalid for the system (RT §2.1): any value,
    // parsable or not, since the field travels in postacert.eml.
    if h.bcc_value || !h.bcc.is_empty() {
        return Some("presenza di destinatari in copia nascosta (Bcc)".into());
    }
    if let Some(r) = sub
        .rcpt_to
        .iter()
        .find(|r| !h.to.iter().chain(&h.cc).any(|x| same(x, r)))
    {
        return Some(format!(
            "destinatario {r} non presente nelle intestazioni To o Cc"
        ));
    }
    if let Some(v) = &h.receipt_request_invalid {
        return Some(format!("valore non valido di X-TipoRicevuta ({v:?})"));
    }
    let recipients = sub.rcpt_to.len().saturating_add(sub.rcpt_overflow);
    if recipients > limits.max_recipients {
        return Some(format!(
            "numero di destinatari ({recipients}) superiore al massimo consentito ({})",
            limits.max_recipients
        ));
    }
    let size = sub.message.len() as u64;
    if size > limits.max_message_size {
        return Some(format!(
            "dimensione del messaggio ({size} byte) superiore al massimo consentito ({} byte)",
            limits.max_message_size
        ));
    }
    let total = size.saturating_mul(recipients as u64);
    if total > limits.max_total_size {
        return Some(format!(
            "dimensione per numero di destinatari ({total} byte) superiore al massimo consentito ({} byte)",
            limits.max_total_size
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    const LIMITS: AccessLimits = AccessLimits {
        max_message_size: 1000,
        max_total_size: 2500,
        max_recipients: 3,
    };

    fn run(auth: &str, from: &str, rcpt: &[&str], msg: &str) -> Decision {
        run_over(auth, from, rcpt, msg, 0)
    }

    /// [`run`] with `overflow` recipients given beyond those kept.
    fn run_over(auth: &str, from: &str, rcpt: &[&str], msg: &str, overflow: usize) -> Decision {
        let rcpt: Vec<String> = rcpt.iter().map(|s| s.to_string()).collect();
        let provider = Provider {
            name: "Provider A S.p.A.".into(),
            domain: "pec.provider-a.test".into(),
        };
        decide(
            &Submission {
                authenticated: auth,
                mail_from: from,
                rcpt_to: &rcpt,
                rcpt_overflow: overflow,
                message: msg.as_bytes(),
            },
            &LIMITS,
            &provider,
            LegalTime::new(Utc::now()),
            "id@pec.provider-a.test".into(),
            &|a: &str| a.ends_with(".test"),
        )
    }

    fn reason(d: Decision) -> String {
        match d {
            Decision::Reject { reason, .. } => reason,
            Decision::Accept(_) => panic!("accepted"),
        }
    }

    const OK: &str = "From: a@pec.provider-a.test\r\nTo: b@pec.provider-b.test\r\nCc: c@example.com\r\nSubject: s\r\n\r\nbody\r\n";

    #[test]
    fn a_conforming_message_is_accepted_with_roles_and_classes() {
        let Decision::Accept(c) = run(
            "a@pec.provider-a.test",
            "a@pec.provider-a.test",
            &["b@pec.provider-b.test", "c@example.com"],
            OK,
        ) else {
            panic!()
        };
        assert_eq!(c.recipients[0].role, RecipientRole::To);
        assert_eq!(c.recipients[0].class, RecipientClass::Certified);
        assert_eq!(c.recipients[1].role, RecipientRole::Cc);
        assert_eq!(c.recipients[1].class, RecipientClass::External);
        assert_eq!(c.receipt_request, ReceiptVariant::Full);
    }

    #[test]
    fn each_formal_error_is_named() {
        let a = "a@pec.provider-a.test";
        let b = &["b@pec.provider-b.test"];
        assert!(reason(run("x@pec.provider-a.test", a, b, OK)).contains("utente autenticato"));
        assert!(
            reason(run(a, a, b, &OK.replace("From: a@", "From: z@")))
                .contains("diverso dal mittente SMTP")
        );
        assert!(
            reason(run(
                a,
                a,
                b,
                &OK.replace("From: a@pec.provider-a.test\r\n", "")
            ))
            .contains("From assente")
        );
        assert!(
            reason(run(
                a,
                a,
                b,
                &OK.replace("To: b@pec.provider-b.test\r\n", "")
            ))
            .contains("To assente")
        );
        assert!(
            reason(run(
                a,
                a,
                b,
                &OK.replace("Subject", "Bcc: h@x.it\r\nSubject")
            ))
            .contains("Bcc")
        );
        assert!(
            reason(run(a, a, &["b@pec.provider-b.test", "hidden@x.it"], OK))
                .contains("hidden@x.it")
        );
        assert!(
            reason(run(
                a,
                a,
                b,
                &OK.replace("Subject", "X-TipoRicevuta: lunga\r\nSubject")
            ))
            .contains("X-TipoRicevuta")
        );
        let big = format!("{OK}{}", "x".repeat(1000));
        assert!(reason(run(a, a, b, &big)).contains("dimensione del messaggio"));
        let mid = format!("{OK}{}", "x".repeat(800));
        let three = "From: a@pec.provider-a.test\r\nTo: b@pec.provider-b.test, c@pec.provider-b.test, d@pec.provider-b.test\r\n\r\n";
        let mid3 = format!("{three}{}", "x".repeat(800));
        assert!(matches!(run(a, a, b, &mid), Decision::Accept(_)));
        assert!(
            reason(run(
                a,
                a,
                &[
                    "b@pec.provider-b.test",
                    "c@pec.provider-b.test",
                    "d@pec.provider-b.test"
                ],
                &mid3
            ))
            .contains("per numero di destinatari")
        );
        let four =
            "From: a@pec.provider-a.test\r\nTo: b@x.test, c@x.test, d@x.test, e@x.test\r\n\r\n";
        assert!(
            reason(run(
                a,
                a,
                &["b@x.test", "c@x.test", "d@x.test", "e@x.test"],
                four
            ))
            .contains("numero di destinatari")
        );
    }

    /// Lines one parser reads as a field and another as garbage: a From
    /// or Cc only some readers see, a first line of white space.
    #[test]
    fn header_lines_that_are_no_field_are_refused() {
        let a = "a@pec.provider-a.test";
        let b = &["b@pec.provider-b.test"];
        for (msg, line) in [
            (
                format!(
                    "From: capo@pec.provider-a.test\r\n{}",
                    OK.replacen("From:", "F rom:", 1)
                ),
                2,
            ),
            (
                OK.replace("Subject", "C c: spia@pec.provider-c.test\r\nSubject"),
                4,
            ),
            (OK.replace("Subject", "From : x@y.it\r\nSubject"), 4),
            (format!(" Cc: spia@pec.provider-c.test\r\n{OK}"), 1),
            (OK.replace("Subject", "senza due punti\r\nSubject"), 4),
        ] {
            let why = reason(run(a, a, b, &msg));
            assert!(why.contains(&format!("riga {line}")), "{msg:?}: {why}");
        }
        // Folded fields are fields.
        let folded = OK.replace("Subject: s", "Subject: una\r\n riga\r\n\tpiegata");
        assert!(matches!(run(a, a, b, &folded), Decision::Accept(_)));
    }

    #[test]
    fn an_address_without_its_domain_is_refused() {
        let a = "a@pec.provider-a.test";
        let msg = OK.replace("To: b@pec.provider-b.test", "To: <nobody>");
        let why = reason(run(a, a, &["c@example.com"], &msg));
        assert!(why.contains("intestazione To: nobody"), "{why}");
    }

    #[test]
    fn recipients_only_counted_by_the_session_count() {
        let a = "a@pec.provider-a.test";
        let b = &["b@pec.provider-b.test"];
        let why = reason(run_over(a, a, b, OK, 5));
        assert!(why.contains("numero di destinatari (6)"), "{why}");
    }

    /// mail-parser reads the last copy of a repeated field; a client
    /// shows the first. A second From, To or Subject would certify one
    /// thing and show another, a second Bcc would hide a value.
    #[test]
    fn repeated_fields_and_any_bcc_value_are_refused() {
        let a = "a@pec.provider-a.test";
        let b = &["b@pec.provider-b.test"];
        for (extra, named) in [
            ("From: capo@pec.provider-a.test\r\n", "From ripetuta"),
            ("To: b@pec.provider-b.test\r\n", "To ripetuta"),
            ("SUBJECT: altro\r\n", "Subject ripetuta"),
            ("Bcc:\r\nBcc: x@y.it\r\n", "Bcc"),
        ] {
            let msg = format!("{extra}{OK}");
            assert!(reason(run(a, a, b, &msg)).contains(named), "{extra}");
        }
        // A value that is no address still travels in postacert.eml.
        let msg = OK.replace("Subject", "Bcc: nascosto\r\nSubject");
        assert!(reason(run(a, a, b, &msg)).contains("Bcc"));
        // Empty Bcc fields, however many, and an empty group name nobody.
        for empty in ["Bcc:\r\nBcc: \r\n", "Bcc: undisclosed-recipients:;\r\n"] {
            let msg = OK.replace("Subject", &format!("{empty}Subject"));
            assert!(matches!(run(a, a, b, &msg), Decision::Accept(_)), "{empty}");
        }
    }

    #[test]
    fn a_receipt_request_is_read_without_case_and_blank_is_none() {
        let a = "a@pec.provider-a.test";
        let b = &["b@pec.provider-b.test"];
        for (value, want) in [
            ("Breve", ReceiptVariant::Short),
            ("SINTETICA", ReceiptVariant::Summary),
            ("", ReceiptVariant::Full),
        ] {
            let msg = OK.replace("Subject", &format!("X-TipoRicevuta: {value}\r\nSubject"));
            let Decision::Accept(c) = run(a, a, b, &msg) else {
                panic!("{value:?} refused")
            };
            assert_eq!(c.receipt_request, want, "{value:?}");
        }
    }

    #[test]
    fn empty_bcc_header_is_tolerated_and_case_does_not_matter() {
        let msg = OK.replace("Subject", "Bcc:\r\nSubject");
        assert!(matches!(
            run(
                "A@PEC.provider-a.test",
                "a@pec.provider-a.test",
                &["B@pec.provider-b.test"],
                &msg
            ),
            Decision::Accept(_)
        ));
    }
}
