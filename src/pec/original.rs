//! The original message as the sender wrote it, and the edit the access point
//! makes to it before it travels inside `postacert.eml`.
//!
//! Owns: extracting what certification needs (From, To, Cc, Bcc, Reply-To,
//! Subject, Message-ID, X-TipoRicevuta) and the Message-ID swap of RT §2.2.
//! Must not touch: anything but the header block; the body stays byte-exact.

use super::ReceiptVariant;
use super::headers::{X_RIFERIMENTO_MESSAGE_ID, X_TIPO_RICEVUTA};
use super::mime::{canonical_header, header_fields, split_header, to_crlf, unfold};
use mail_parser::{Address, MessageParser};

/// Fields that certification reads and that may appear once: RFC 5322
/// §3.6 for the standard ones, and X-TipoRicevuta, one request. (Bcc may
/// repeat as long as it is empty: any value is refused anyway.)
const ONCE: [&str; 7] = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Message-ID",
    X_TIPO_RICEVUTA,
];

/// What certification reads from an original message's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginalHeaders {
    /// Addresses in `From:` (the formal check wants exactly one).
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Whether a `Bcc:` field is present, whether any carries a value
    /// (an address or not), and the addresses of the last one.
    pub bcc_present: bool,
    pub bcc_value: bool,
    pub bcc: Vec<String>,
    /// A field RFC 5322 §3.6 allows once that appears more often: the
    /// parser reads one of the copies, a mail client may show another.
    pub repeated: Option<&'static str>,
    pub reply_to: Option<String>,
    /// Decoded subject (RFC 2047), empty when absent.
    pub subject: String,
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// The receipt variant asked for; `None` when the header is absent.
    pub receipt_request: Option<ReceiptVariant>,
    /// The raw `X-TipoRicevuta` value when it is not one of the three tokens.
    pub receipt_request_invalid: Option<String>,
    /// The first header line (1-based) that is neither a field (`Name:`,
    /// a name of printable characters without spaces) nor the continuation
    /// of one. Parsers read such lines differently (`F rom:` is a From to
    /// one and garbage to another): a check passed on one reading would
    /// certify a message that shows another.
    pub malformed_line: Option<usize>,
}

/// See [`OriginalHeaders::malformed_line`].
fn malformed_line(header: &[u8]) -> Option<usize> {
    let mut lines = header.split(|b| *b == b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && lines.peek().is_none() {
            break; // the header block's own last line break
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation && i > 0 {
            continue;
        }
        let field = line
            .iter()
            .position(|b| *b == b':')
            .is_some_and(|c| c > 0 && line[..c].iter().all(|b| b.is_ascii_graphic()));
        if !field {
            return Some(i + 1);
        }
    }
    None
}

fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// An address list that names nobody: empty, or an empty group
/// (`undisclosed-recipients:;`, RFC 5322 §3.4).
fn is_blank_list(value: &str) -> bool {
    let v = value.trim();
    v.is_empty()
        || v.strip_suffix(';')
            .and_then(|g| g.split_once(':'))
            .is_some_and(|(name, members)| !name.contains(['@', ',']) && members.trim().is_empty())
}

impl OriginalHeaders {
    /// Read the headers. Never fails: missing fields stay empty and the formal
    /// checks decide what that means.
    pub fn parse(raw: &[u8]) -> OriginalHeaders {
        let canonical = canonical_header(raw);
        let header = &canonical[..];
        let mut out = OriginalHeaders::default();
        // mail-parser reads the header block only, so a broken body cannot
        // hide or alter what the headers say.
        let mut header_only = header.to_vec();
        header_only.extend_from_slice(b"\r\n");
        if let Some(msg) = MessageParser::default().parse_headers(&header_only[..]) {
            out.from = addresses(msg.from());
            out.to = addresses(msg.to());
            out.cc = addresses(msg.cc());
            out.bcc = addresses(msg.bcc());
            out.reply_to = addresses(msg.reply_to()).into_iter().next();
            out.subject = super::mime::one_line(msg.subject().unwrap_or_default());
            out.message_id = msg
                .message_id()
                .map(str::to_string)
                .filter(|s| !s.is_empty());
        }
        out.malformed_line = malformed_line(header);
        let fields = header_fields(header);
        out.repeated = ONCE
            .iter()
            .find(|name| fields.iter().filter(|f| f.is(name)).count() > 1)
            .copied();
        for f in &fields {
            if f.is("Bcc") {
                out.bcc_present = true;
                out.bcc_value |= !is_blank_list(&unfold(f.value()));
            } else if f.is(X_TIPO_RICEVUTA) {
                // Tokens are compared as the other PEC headers are, without
                // case; an empty value is no request (completa).
                let v = unfold(f.value());
                if v.is_empty() {
                    continue;
                }
                match ReceiptVariant::from_token(&v.to_ascii_lowercase()) {
                    Some(r) => out.receipt_request = Some(r),
                    None => out.receipt_request_invalid = Some(v),
                }
            }
        }
        out
    }

    /// The angle-bracketed original Message-ID, as daticert `<msgid>` and
    /// `X-Riferimento-Message-ID` carry it.
    pub fn msgid(&self) -> Option<String> {
        self.message_id.as_ref().map(|m| format!("<{m}>"))
    }

    /// Whether `address` is a copy recipient: in Cc and not in To (RT §3.8:
    /// an ambiguous recipient is primary).
    pub fn is_copy(&self, address: &str) -> bool {
        let listed = |list: &[String]| {
            list.iter()
                .any(|x| x.trim().eq_ignore_ascii_case(address.trim()))
        };
        listed(&self.cc) && !listed(&self.to)
    }

    /// The `risposte` value: Reply-To, else From (DTD comment).
    pub fn risposte(&self) -> Option<String> {
        self.reply_to.clone().or_else(|| self.from.first().cloned())
    }
}

/// The original as it goes into `postacert.eml` (RT §2.2, §3.1): canonical
/// CRLF, every `Message-ID:` replaced by the PEC msgid, the client's own id
/// moved to `X-Riferimento-Message-ID`; the rest of the message byte-exact.
/// Without a client Message-ID no `X-Riferimento-Message-ID` is added
/// (RT §2.2 [?]: no rule found; this is the sensible reading).
pub fn rewrite_for_envelope(raw: &[u8], pec_id: &str, original_msgid: Option<&str>) -> Vec<u8> {
    rewrite_for_envelope_traced(b"", raw, pec_id, original_msgid)
}

/// [`rewrite_for_envelope`] of `trace` (header lines, CRLF) followed by
/// `raw`, without building that concatenation first.
pub fn rewrite_for_envelope_traced(
    trace: &[u8],
    raw: &[u8],
    pec_id: &str,
    original_msgid: Option<&str>,
) -> Vec<u8> {
    let raw = to_crlf(raw);
    let (header, body) = split_header(&raw);
    let mut out = Vec::with_capacity(trace.len() + raw.len() + 256);
    out.extend_from_slice(&to_crlf(trace));
    out.extend_from_slice(format!("Message-ID: <{pec_id}>\r\n").as_bytes());
    if let Some(m) = original_msgid {
        out.extend_from_slice(format!("{X_RIFERIMENTO_MESSAGE_ID}: {m}\r\n").as_bytes());
    }
    for f in header_fields(header) {
        if f.is("Message-ID") || f.is(X_RIFERIMENTO_MESSAGE_ID) {
            continue;
        }
        out.extend_from_slice(f.bytes);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Mario Rossi <mario.rossi@pec.provider-a.test>\r\n\
To: a@pec.provider-b.test, \"B\" <b@pec.provider-b.test>\r\n\
Cc: c@example.com\r\n\
Subject: =?utf-8?q?Fattura_n=C2=B0_12_=E2=80=94_Nicol=C3=B2?=\r\n\
Message-ID: <abc@client>\r\n\
X-Tiporicevuta: breve\r\n\
\r\n\
body \xe8 8-bit\r\n";

    #[test]
    fn parses_what_certification_needs() {
        let h = OriginalHeaders::parse(MSG);
        assert_eq!(h.from, vec!["mario.rossi@pec.provider-a.test"]);
        assert_eq!(h.to, vec!["a@pec.provider-b.test", "b@pec.provider-b.test"]);
        assert_eq!(h.cc, vec!["c@example.com"]);
        assert_eq!(h.subject, "Fattura n° 12 — Nicolò");
        assert_eq!(h.msgid().as_deref(), Some("<abc@client>"));
        assert_eq!(h.receipt_request, Some(ReceiptVariant::Short));
        assert!(!h.bcc_present);
    }

    #[test]
    fn empty_bcc_is_still_seen() {
        let h = OriginalHeaders::parse(b"From: a@b.it\r\nBcc:\r\n\r\nx");
        assert!(h.bcc_present);
        assert!(h.bcc.is_empty());
    }

    #[test]
    fn rewrite_swaps_message_id_and_keeps_body() {
        let out = rewrite_for_envelope(MSG, "pecd.1@pec.provider-a.test", Some("<abc@client>"));
        let s = String::from_utf8_lossy(&out);
        assert!(s.starts_with(
            "Message-ID: <pecd.1@pec.provider-a.test>\r\nX-Riferimento-Message-ID: <abc@client>\r\n"
        ));
        assert_eq!(s.matches("Message-ID:").count(), 2);
        assert!(out.ends_with(b"\r\n\r\nbody \xe8 8-bit\r\n"));
    }

    #[test]
    fn rewrite_without_message_id() {
        let out = rewrite_for_envelope(b"From: a@b.it\nSubject: x\n\nhi\n", "id@d", None);
        assert_eq!(
            out,
            b"Message-ID: <id@d>\r\nFrom: a@b.it\r\nSubject: x\r\n\r\nhi\r\n"
        );
    }
}
