//! The provider's ordinary notices to its holders — not PEC messages:
//! inbox-usage warnings now, expiry reminders with the lifecycle.
//!
//! Owns: their Italian texts and their RFC 5322 form (mail-builder).
//! Must not touch: the queue, the store (the caller decides where a notice
//! goes: into the PEC mailbox, to the reference address, or both).

use crate::clock::LegalTime;
use mail_builder::MessageBuilder;

/// Subject and text of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub subject: String,
    pub body: String,
}

fn human(bytes: u64) -> String {
    const MB: f64 = (1u64 << 20) as f64;
    const GB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b >= GB {
        format!("{:.2} GB", b / GB).replace('.', ",")
    } else {
        format!("{:.1} MB", b / MB).replace('.', ",")
    }
}

/// The inbox of `address` has crossed `level` % (70 or 90) of its quota.
/// The law asks a saturation warning for lawyers' mailboxes; pecd warns
/// every holder.
pub fn quota_warning(address: &str, level: u8, used: u64, quota: u64) -> Notice {
    let urgent = if level >= 90 {
        "\nQuando lo spazio sarà esaurito, i messaggi in arrivo saranno rifiutati e ai \
         mittenti sarà inviato un avviso di mancata consegna.\n"
    } else {
        ""
    };
    Notice {
        subject: format!("Avviso: casella PEC {address} oltre il {level}% dello spazio"),
        body: format!(
            "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
             occupa {} su {} disponibili (oltre il {level}%).\n{urgent}\n\
             Per liberare spazio elimini o archivi i messaggi non più necessari, \
             oppure richieda uno spazio aggiuntivo.\n\nIl gestore del servizio PEC\n",
            human(used),
            human(quota),
        ),
    }
}

/// What expiry brings a mailbox, for the reminders: the facts of
/// [`crate::lifecycle::DowngradePlan`] the holder needs, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtExpiry {
    /// Receive-only grace, then suspension, then deletion.
    Suspend,
    /// Cancelled at expiry, not renewable: the holder is struck off the
    /// order's roll.
    Lapse,
    /// Back to the plan `to`, its add-on steps dropped.
    Downgrade {
        to: String,
        addons_dropped: u32,
        /// None: not known (the mailbox could not be measured).
        inbox_used: Option<u64>,
        inbox_quota_after: u64,
        /// Whether the oldest excess moves into the archive (else new mail
        /// is refused until space is freed).
        excess_to_archive: bool,
    },
}

impl AtExpiry {
    fn explain(&self) -> String {
        match self {
            AtExpiry::Suspend => "Senza rinnovo la casella potrà solo ricevere per il periodo di \
                 tolleranza, poi sarà sospesa e infine cancellata."
                .into(),
            AtExpiry::Lapse => "La casella non può essere rinnovata, perché il titolare non \
                 risulta più iscritto all'ordine: alla scadenza sarà cessata. Salvi per tempo i \
                 messaggi che desidera conservare."
                .into(),
            AtExpiry::Downgrade {
                to,
                addons_dropped,
                inbox_used,
                inbox_quota_after,
                excess_to_archive,
            } => {
                let mut t = format!(
                    "Senza rinnovo la casella passerà al piano {to}, con {} di spazio per i \
                     messaggi",
                    human(*inbox_quota_after)
                );
                if *addons_dropped > 0 {
                    t.push_str(&format!(
                        ", e i {addons_dropped} spazi aggiuntivi acquistati decadranno"
                    ));
                }
                t.push('.');
                let Some(used) = *inbox_used else {
                    return t;
                };
                t.push_str(&format!(" Oggi la casella occupa {}.", human(used)));
                if used > *inbox_quota_after {
                    let over = human(used - inbox_quota_after);
                    t.push_str(&if *excess_to_archive {
                        format!(
                            " I messaggi più vecchi, per {over} oltre lo spazio del nuovo piano, \
                             saranno spostati nell'archivio della casella."
                        )
                    } else {
                        format!(
                            " Finché non libererà {over}, i nuovi messaggi saranno rifiutati \
                             e ai mittenti sarà inviato un avviso di mancata consegna."
                        )
                    });
                }
                t
            }
        }
    }
}

/// An expiry reminder: `days_left` days before expiry (negative: after).
pub fn expiry_reminder(
    address: &str,
    expires: chrono::NaiveDate,
    days_left: i64,
    at_expiry: &AtExpiry,
) -> Notice {
    let date = expires.format("%d/%m/%Y");
    let what = at_expiry.explain();
    if days_left >= 0 {
        let when = match days_left {
            0 => "oggi".to_string(),
            1 => "domani".to_string(),
            n => format!("tra {n} giorni"),
        };
        Notice {
            subject: format!("Promemoria: la casella PEC {address} scade il {date}"),
            body: format!(
                "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
                 scade il {date} ({when}).\n{what}\n\nIl gestore del servizio PEC\n"
            ),
        }
    } else {
        Notice {
            subject: format!("Avviso: la casella PEC {address} è scaduta il {date}"),
            body: format!(
                "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
                 è scaduta il {date} e non è stata rinnovata.\n{what}\n\nIl gestore del servizio PEC\n"
            ),
        }
    }
}

/// The mailbox was not renewed and went back to the plan `to`: what it
/// lost, and where the mail beyond the new space went.
pub fn downgraded(
    address: &str,
    expired: chrono::NaiveDate,
    to: &str,
    addons_dropped: u32,
    inbox_quota_after: u64,
    moved: Option<(usize, u64)>,
    still_over: u64,
) -> Notice {
    let mut lost = format!(
        "Lo spazio per i messaggi è ora di {}",
        human(inbox_quota_after)
    );
    if addons_dropped > 0 {
        lost.push_str(&format!(
            "; i {addons_dropped} spazi aggiuntivi acquistati sono decaduti"
        ));
    }
    lost.push('.');
    if let Some((n, bytes)) = moved.filter(|(n, _)| *n > 0) {
        lost.push_str(&format!(
            "\n{n} messaggi tra i più vecchi ({}) sono stati spostati nell'archivio della casella.",
            human(bytes)
        ));
    }
    if still_over > 0 {
        lost.push_str(&format!(
            "\nLa casella supera ancora di {} lo spazio disponibile: finché non si libera \
             spazio, i nuovi messaggi sono rifiutati e ai mittenti è inviato un avviso di \
             mancata consegna.",
            human(still_over)
        ));
    }
    Notice {
        subject: format!("Avviso: la casella PEC {address} è passata al piano {to}"),
        body: format!(
            "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
             è scaduta il {} senza rinnovo ed è passata al piano {to}.\n{lost}\n\n\
             Per tornare al piano precedente può chiederne il rinnovo.\n\n\
             Il gestore del servizio PEC\n",
            expired.format("%d/%m/%Y")
        ),
    }
}

/// The archive space of `address` is full.
pub fn archive_full(address: &str, quota: u64, policy: &str) -> Notice {
    let effect = if policy == "rotate-oldest" {
        "Per fare spazio, le copie più vecchie dell'archivio vengono rimosse."
    } else {
        "Finché non si libera spazio, i nuovi messaggi non vengono copiati nell'archivio \
         (la casella continua a ricevere e inviare normalmente)."
    };
    Notice {
        subject: format!("Avviso: archivio della casella PEC {address} pieno"),
        body: format!(
            "Gentile titolare,\n\nl'archivio della casella di posta elettronica certificata \
             {address} ha esaurito lo spazio disponibile ({}).\n{effect}\n\n\
             Può liberare spazio eliminando copie dall'archivio oppure richiedere più spazio.\n\n\
             Il gestore del servizio PEC\n",
            human(quota)
        ),
    }
}

/// A password-reset link for `address`, valid `hours`.
pub fn reset_link(address: &str, url: &str, hours: i64) -> Notice {
    Notice {
        subject: format!("Ripristino della password della casella PEC {address}"),
        body: format!(
            "Gentile titolare,\n\nè stato richiesto il ripristino della password della casella \
             di posta elettronica certificata {address}.\nPer impostare una nuova password usi \
             questo collegamento entro {hours} ore (vale una sola volta):\n\n{url}\n\n\
             Se non ha richiesto il ripristino, ignori questo messaggio.\n\nIl gestore del servizio PEC\n"
        ),
    }
}

/// One recipient a relay could not reach, for a [`non_delivery_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub recipient: String,
    /// The last answer or error: an SMTP reply (`550 5.1.1 text`) or what
    /// went wrong before one (`connection refused`).
    pub why: String,
}

impl Undelivered {
    /// RFC 3464 `Status`: the reply's enhanced code, else the class of its
    /// basic code, else 4.4.7 (delivery time expired) for a give-up that
    /// never had a reply.
    fn status(&self) -> String {
        let basic = self.smtp_code();
        // RFC 3463 §2: the enhanced code's class is the reply's.
        if let Some(code) = crate::smtp::client::enhanced_code(&self.why)
            && basic.is_none_or(|b| b[..1] == code[..1])
        {
            return code.to_string();
        }
        match basic {
            Some(c) => format!("{}.0.0", &c[..1]),
            None => "4.4.7".into(),
        }
    }

    /// The basic reply code when `why` is an SMTP reply.
    fn smtp_code(&self) -> Option<&str> {
        let code = self.why.get(..3)?;
        let is_reply = code.bytes().all(|b| b.is_ascii_digit())
            && matches!(code.as_bytes()[0], b'4' | b'5')
            && self.why.as_bytes().get(3).is_none_or(|b| *b == b' ');
        is_reply.then_some(code)
    }
}

/// An address for a delivery-status field: `rfc822; a@b`, or RFC 6533's
/// `utf-8;` form with each character outside printable ASCII (and `+`,
/// `=`, `\\`) as `\\x{HEX}`.
fn address_field(a: &str) -> String {
    if a.bytes().all(|b| b.is_ascii_graphic()) {
        return format!("rfc822; {a}");
    }
    let mut out = String::from("utf-8; ");
    for c in a.chars() {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", c as u32));
        }
    }
    out
}

/// `text` on one line of printable ASCII, single-spaced (a peer's reply
/// may hold anything).
fn ascii(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A header-style field folded at spaces to lines of at most 78
/// characters where it can be (RFC 5322 §2.2.3), ending in CRLF.
fn folded(field: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for (i, word) in field.split(' ').enumerate() {
        if i > 0 {
            if line + 1 + word.len() > 78 {
                out.push_str("\r\n ");
                line = 1;
            } else {
                out.push(' ');
                line += 1;
            }
        }
        out.push_str(word);
        line += word.len();
    }
    out.push_str("\r\n");
    out
}

/// `24 ore`, `90 minuti`, `2 secondi`: the largest whole unit.
pub(crate) fn duration_it(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (n, one, many) = if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "ora", "ore")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minuto", "minuti")
    } else {
        (s, "secondo", "secondi")
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a non-delivery report tells.
#[derive(Debug, Clone)]
pub struct NonDelivery<'a> {
    /// This provider's host name (`Reporting-MTA`, the report's sender).
    pub hostname: &'a str,
    /// Who sent the undelivered message.
    pub to: &'a str,
    pub time: LegalTime,
    pub message_id: &'a str,
    /// The undelivered message's subject, as its holder wrote it.
    pub subject: &'a str,
    /// The undelivered message's header, returned to its sender.
    pub returned_header: &'a [u8],
    pub recipients: &'a [Undelivered],
    /// Given up after trying this long; None: refused for good.
    pub gave_up_after: Option<std::time::Duration>,
}

/// A non-delivery report (RFC 3464: `multipart/report`, a text, the
/// `message/delivery-status`, the returned header) for recipients outside
/// PEC: they get no avviso di mancata consegna (RT §8.6), yet the holder
/// must learn that the message did not reach them, as any mail system
/// would tell.
pub fn non_delivery_report(r: &NonDelivery<'_>) -> Vec<u8> {
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::mime::{BodyPart, MimePart};
    let list: String = r
        .recipients
        .iter()
        .map(|u| format!("  <{}>: {}\n", u.recipient, u.why))
        .collect();
    let cause = match r.gave_up_after {
        Some(after) => format!(
            "non è stato possibile recapitarlo entro {} dall'invio: il sistema di posta \
             dei destinatari non lo ha accettato.",
            duration_it(after)
        ),
        None => "il sistema di posta dei destinatari lo ha rifiutato.".into(),
    };
    let text = format!(
        "Gentile titolare,\n\nil messaggio \"{}\" non è stato recapitato ai destinatari \
         che seguono, indirizzi di posta ordinaria (non PEC): {cause}\n\n{list}\n\
         Per i destinatari di posta ordinaria il gestore non emette ricevute PEC: questo \
         avviso non ha valore legale. In allegato l'intestazione del messaggio non \
         recapitato.\n\nIl gestore del servizio PEC ({})\n\n\
         This is the mail system at {}: your message could not be delivered to the \
         recipients above.\n",
        r.subject, r.hostname, r.hostname
    );
    // 7bit, as RFC 3464 §2.1 wants it.
    let mut status = format!("Reporting-MTA: dns; {}\r\n", r.hostname);
    for u in r.recipients {
        status.push_str(&format!(
            "\r\nFinal-Recipient: {}\r\nAction: failed\r\nStatus: {}\r\n",
            address_field(&u.recipient),
            u.status()
        ));
        let kind = if u.smtp_code().is_some() {
            "smtp"
        } else {
            "X-pecd"
        };
        status.push_str(&folded(&format!(
            "Diagnostic-Code: {kind}; {}",
            ascii(&u.why)
        )));
    }
    // The returned header is 8bit when its fields are.
    let raw_part = |ct: &'static str, body: Vec<u8>| {
        let cte = if body.is_ascii() { "7bit" } else { "8bit" };
        MimePart::new(ContentType::new(ct), BodyPart::Binary(body.into())).transfer_encoding(cte)
    };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                BodyPart::Text(text.into()),
            ),
            raw_part("message/delivery-status", status.into_bytes()),
            raw_part(
                "text/rfc822-headers",
                crate::pec::mime::to_crlf(r.returned_header).into_owned(),
            ),
        ]),
    );
    MessageBuilder::new()
        .from((
            "Mail Delivery System".to_string(),
            format!("MAILER-DAEMON@{}", r.hostname),
        ))
        .to(r.to)
        // The subject every mail system uses, which holders recognise.
        .subject("Undelivered Mail Returned to Sender")
        .date(r.time.utc().timestamp())
        .message_id(r.message_id)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

/// The notice as a message from `from` to `to`.
pub fn message(n: &Notice, from: &str, to: &str, time: LegalTime, message_id: &str) -> Vec<u8> {
    MessageBuilder::new()
        .from(("Gestore PEC", from))
        .to(to)
        .subject(n.subject.as_str())
        .date(time.utc().timestamp())
        .message_id(message_id)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-generated"),
        )
        .text_body(n.body.as_str())
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reminder_says_what_the_downgrade_will_take() {
        let expires = chrono::NaiveDate::from_ymd_opt(2028, 1, 10).unwrap();
        let at = |excess_to_archive| AtExpiry::Downgrade {
            to: "base".into(),
            addons_dropped: 2,
            inbox_used: Some(3 << 30),
            inbox_quota_after: 1 << 30,
            excess_to_archive,
        };
        let n = expiry_reminder("a@pec.test", expires, 30, &at(false));
        assert!(n.body.contains("(tra 30 giorni)"), "{}", n.body);
        assert!(
            n.body.contains("passerà al piano base, con 1,00 GB"),
            "{}",
            n.body
        );
        assert!(
            n.body
                .contains("i 2 spazi aggiuntivi acquistati decadranno"),
            "{}",
            n.body
        );
        assert!(n.body.contains("occupa 3,00 GB"), "{}", n.body);
        assert!(n.body.contains("Finché non libererà 2,00 GB"), "{}", n.body);
        let n = expiry_reminder("a@pec.test", expires, 1, &at(true));
        assert!(n.body.contains("(domani)"), "{}", n.body);
        assert!(n.body.contains("spostati nell'archivio"), "{}", n.body);
    }

    use mail_parser::MimeHeaders;

    fn report(recipients: &[Undelivered], gave_up_after: Option<std::time::Duration>) -> Vec<u8> {
        non_delivery_report(&NonDelivery {
            hostname: "mx.provider-a.test",
            to: "mario@pec.a.test",
            time: LegalTime::new(chrono::Utc::now()),
            message_id: "nd1@a.test",
            subject: "Atto di citazione",
            returned_header:
                b"Subject: POSTA CERTIFICATA: Atto di citazione\nX-Trasporto: posta-certificata\n",
            recipients,
            gave_up_after,
        })
    }

    fn undelivered(recipient: &str, why: &str) -> Undelivered {
        Undelivered {
            recipient: recipient.into(),
            why: why.into(),
        }
    }

    /// RFC 3464: a multipart/report whose delivery-status part has one
    /// group per recipient, with the Status a client can act on.
    #[test]
    fn a_non_delivery_report_is_an_rfc3464_report() {
        let m = report(
            &[
                undelivered("a@x.test", "550 5.1.1 No such user"),
                undelivered("b@x.test", "554 Client host blocked"),
            ],
            None,
        );
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        let ct = parsed.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        assert!(text.contains("MAILER-DAEMON@mx.provider-a.test"), "{text}");
        assert!(
            text.contains("Reporting-MTA: dns; mx.provider-a.test\r\n"),
            "{text}"
        );
        for group in [
            "Final-Recipient: rfc822; a@x.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n",
            "Final-Recipient: rfc822; b@x.test\r\nAction: failed\r\nStatus: 5.0.0\r\n\
             Diagnostic-Code: smtp; 554 Client host blocked\r\n",
        ] {
            assert!(text.contains(group), "{group} in {text}");
        }
        // The returned header, line ends made CRLF.
        assert!(
            text.contains("Content-Type: text/rfc822-headers\r\n"),
            "{text}"
        );
        assert!(text.contains("Subject: POSTA CERTIFICATA: Atto di citazione\r\n"));
        // The holder's text names the message, the recipients and why.
        let body = parsed.body_text(0).unwrap();
        assert!(body.contains("\"Atto di citazione\""), "{body}");
        assert!(
            body.contains("<a@x.test>: 550 5.1.1 No such user"),
            "{body}"
        );
        assert!(body.contains("rifiutato"), "{body}");
    }

    /// The delivery-status part is 7bit whatever the peer said, its long
    /// lines folded, its Status of the reply's own class.
    #[test]
    fn the_delivery_status_stays_7bit_and_consistent() {
        let long = format!("550 4.1.1 {}", "parola ".repeat(40));
        let m = report(
            &[
                undelivered("josé@x.test", &long),
                undelivered(
                    "b@x.test",
                    "550 5.1.1 utente sconosciuto: è così\r\nseconda riga",
                ),
            ],
            None,
        );
        let text = String::from_utf8_lossy(&m);
        let status = text
            .split("Content-Type: message/delivery-status\r\n")
            .nth(1)
            .unwrap()
            .split("\r\n--")
            .next()
            .unwrap();
        assert!(
            status.starts_with("Content-Transfer-Encoding: 7bit\r\n"),
            "{status}"
        );
        assert!(status.is_ascii(), "{status}");
        assert!(status.lines().all(|l| l.len() <= 78), "{status}");
        assert!(
            status.contains("Final-Recipient: utf-8; jos\\x{E9}@x.test\r\n"),
            "{status}"
        );
        // 550 with a 4.x.x enhanced code: the reply's class wins.
        assert!(
            status.contains("Status: 5.0.0\r\nDiagnostic-Code: smtp; 550 4.1.1 parola"),
            "{status}"
        );
        assert!(status.contains("\r\n parola"), "folded: {status}");
        assert!(
            status.contains(
                "Diagnostic-Code: smtp; 550 5.1.1 utente sconosciuto: ? cos? seconda riga\r\n"
            ),
            "{status}"
        );
    }

    #[test]
    fn a_give_up_without_a_reply_says_how_long_and_what_went_wrong() {
        let m = report(
            &[undelivered(
                "a@x.test",
                "connect to 127.0.0.1:25: connection refused",
            )],
            Some(std::time::Duration::from_secs(24 * 3600)),
        );
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("Status: 4.4.7\r\n"), "{text}");
        assert!(
            text.contains(
                "Diagnostic-Code: X-pecd; connect to 127.0.0.1:25: connection refused\r\n"
            ),
            "{text}"
        );
        let parsed = mail_parser::MessageParser::default().parse(&m).unwrap();
        assert!(parsed.body_text(0).unwrap().contains("entro 24 ore"));
        // A temporary reply keeps its own code.
        let m = report(
            &[undelivered("a@x.test", "451 4.3.0 try later")],
            Some(std::time::Duration::from_secs(90)),
        );
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("Status: 4.3.0\r\n"), "{text}");
        assert!(text.contains("entro 90 secondi"), "{text}");
    }

    #[test]
    fn quota_warning_reads_well() {
        let n = quota_warning("a@b.it", 90, 966_367_641, 1 << 30);
        assert!(n.subject.contains("oltre il 90%"));
        assert!(n.body.contains("occupa 921,6 MB su 1,00 GB"), "{}", n.body);
        assert!(n.body.contains("mancata consegna"));
        assert!(
            !quota_warning("a@b.it", 70, 1, 2)
                .body
                .contains("mancata consegna")
        );
        let m = message(
            &n,
            "noreply@x.it",
            "ref@y.it",
            LegalTime::new(chrono::Utc::now()),
            "id1@x.it",
        );
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("Auto-Submitted: auto-generated"));
        assert!(text.contains("Message-ID: <id1@x.it>"));
    }
}
