//! Builders for every message of the catalogue (RT §3), unsigned.
//!
//! Owns: headers, Subject prefixes, From/To/Reply-To rules, the MIME tree of
//! RT §3.0 and the daticert content of RT §5.2 for each type. Each builder
//! returns an [`UnsignedMessage`]; `smime` signs its entity and `assemble`
//! produces the bytes that travel. Must not touch: crypto, I/O, clocks (the
//! transaction's [`LegalTime`] is an input: one time reference per transaction).

use super::daticert::{Daticert, Destinatario};
use super::headers::{
    MessageKind, SECURITY_ERROR, TimeoutStage, X_MITTENTE, X_RICEVUTA, X_RIFERIMENTO_MESSAGE_ID,
    X_TIPO_RICEVUTA, X_TRASPORTO,
};
use super::mime::{
    HeaderLine, UnsignedMessage, base64_lines, canonical_header, header_fields, latin1, one_line,
    quoted_printable, to_crlf,
};
use super::original::OriginalHeaders;
use super::text::{self, Body, Facts};
use super::{
    ErrorKind, PecType, Provider, ReceiptVariant, Recipient, RecipientClass, RecipientRole,
};
use crate::clock::LegalTime;
use mail_builder::headers::HeaderType;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};

/// The certification data of one transaction: what every message about it
/// repeats (RT §2.1: taken from the SMTP envelope; To/Cc only decide roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certification {
    /// The provider emitting the message being built.
    pub provider: Provider,
    /// The one time reference of this emission (RT §8.3).
    pub time: LegalTime,
    /// `identificativo`: the PEC msgid of the envelope.
    pub pec_id: String,
    /// `mittente`: the original sender (MAIL FROM).
    pub sender: String,
    /// `destinatari`: every To/Cc recipient, with class and role.
    pub recipients: Vec<Recipient>,
    /// `risposte`: original Reply-To, else From.
    pub reply_to: String,
    /// `oggetto`: the original subject, decoded.
    pub subject: String,
    /// `msgid`: the original Message-ID with angle brackets, if it had one.
    pub msgid: Option<String>,
    /// The receipt the sender asked for (`X-TipoRicevuta`, absent ⇒ completa).
    pub receipt_request: ReceiptVariant,
}

impl Certification {
    /// The certification data a receiving provider reads back from a genuine
    /// envelope's daticert; roles come from the envelope's To/Cc headers
    /// (`headers`): Cc only for an address in Cc and not in To, as the
    /// access point decides (RT §3.8: an ambiguous recipient is primary).
    pub fn from_daticert(
        d: &Daticert,
        provider: Provider,
        time: LegalTime,
        headers: &OriginalHeaders,
    ) -> Certification {
        Certification {
            provider,
            time,
            pec_id: d.identificativo.clone(),
            sender: d.mittente.clone(),
            recipients: d
                .destinatari
                .iter()
                .map(|x| Recipient {
                    address: x.address.clone(),
                    class: x.tipo,
                    role: if headers.is_copy(&x.address) {
                        RecipientRole::Cc
                    } else {
                        RecipientRole::To
                    },
                })
                .collect(),
            reply_to: d.risposte.clone(),
            subject: one_line(d.oggetto.as_deref().unwrap_or_default()),
            msgid: d.msgid.clone(),
            receipt_request: d.ricevuta.unwrap_or_default(),
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            time: self.time,
            subject: &self.subject,
            sender: &self.sender,
            pec_id: &self.pec_id,
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.recipients.iter().map(|r| r.address.clone()).collect()
    }

    /// The daticert skeleton common to every type (RT §5.2).
    pub fn daticert(&self, tipo: PecType) -> Daticert {
        Daticert {
            tipo,
            errore: ErrorKind::None,
            mittente: self.sender.clone(),
            destinatari: self
                .recipients
                .iter()
                .map(|r| Destinatario {
                    address: r.address.clone(),
                    tipo: r.class,
                })
                .collect(),
            risposte: self.reply_to.clone(),
            oggetto: Some(self.subject.clone()),
            gestore_emittente: self.provider.name.clone(),
            data: self.time.into(),
            identificativo: self.pec_id.clone(),
            msgid: self.msgid.clone(),
            ricevuta: None,
            consegna: None,
            ricezione: Vec::new(),
            errore_esteso: None,
        }
    }

    /// The delivery-receipt variant a recipient gets (RT §3.8 table): Cc
    /// recipients always sintetica, To recipients what the sender asked for.
    pub fn delivery_variant(&self, recipient: &str) -> ReceiptVariant {
        let cc = self
            .recipients
            .iter()
            .any(|r| r.role == RecipientRole::Cc && r.address.eq_ignore_ascii_case(recipient));
        if cc {
            ReceiptVariant::Summary
        } else {
            self.receipt_request
        }
    }
}

/// The causes of an *avviso di mancata consegna*, with their NOTA 12 codes
/// (RT §3.9; the code table is the strongly supported reading, [INF]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// Group 1: unknown user, mailbox missing, invalid or revoked — `5.1.1`.
    UnknownRecipient,
    /// Group 2: mailbox exists but is disabled or cannot accept — `5.2.1`.
    MailboxDisabled,
    /// Group 3: mailbox full — `5.2.2`.
    MailboxFull,
    /// Any other permanent cause, with its own enhanced code and text.
    Other { code: String, description: String },
}

impl DeliveryFailure {
    pub fn code(&self) -> &str {
        match self {
            DeliveryFailure::UnknownRecipient => "5.1.1",
            DeliveryFailure::MailboxDisabled => "5.2.1",
            DeliveryFailure::MailboxFull => "5.2.2",
            DeliveryFailure::Other { code, .. } => code,
        }
    }

    /// daticert `errore`: `no-dest` for group 1, `altro` otherwise (RT §3.9 [INF]);
    /// a cause known only by its code (another provider's `550 5.1.1`) is
    /// group 1 too.
    pub fn error_kind(&self) -> ErrorKind {
        match self.code() {
            "5.1.1" => ErrorKind::NoRecipient,
            _ => ErrorKind::Other,
        }
    }

    pub fn description(&self) -> &str {
        match self {
            DeliveryFailure::UnknownRecipient => "indirizzo non valido",
            DeliveryFailure::MailboxDisabled => "casella disattivata o non in grado di ricevere",
            DeliveryFailure::MailboxFull => "casella piena",
            DeliveryFailure::Other { description, .. } => description,
        }
    }
}

/// `<code> - <gestore> - <descrizione>`: the NOTA 12 form used both in the
/// text and in `errore-esteso` (RT §3.9).
pub fn nota12(code: &str, provider: &Provider, description: &str) -> String {
    format!("{code} - {} - {description}", provider.name)
}

/// Why a submission was refused (RT §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A formal check failed; the text completes "a causa di …".
    Formal(String),
    /// A virus was found; the text names what was detected.
    Virus(String),
}

// ---------------------------------------------------------------------------
// MIME parts

fn text_parts(b: &Body) -> MimePart<'static> {
    let plain = MimePart::new(
        ContentType::new("text/plain").attribute("charset", "iso-8859-1"),
        BodyPart::Binary(quoted_printable(&latin1(&b.to_text())).into()),
    )
    .transfer_encoding("quoted-printable")
    .inline();
    let html = MimePart::new(
        ContentType::new("text/html").attribute("charset", "iso-8859-1"),
        BodyPart::Binary(quoted_printable(&latin1(&b.to_html())).into()),
    )
    .transfer_encoding("quoted-printable")
    .inline();
    MimePart::new(
        ContentType::new("multipart/alternative"),
        BodyPart::Multipart(vec![plain, html]),
    )
}

fn daticert_part(d: &Daticert) -> MimePart<'static> {
    MimePart::new(
        ContentType::new("application/xml").attribute("name", "daticert.xml"),
        BodyPart::Binary(base64_lines(&d.to_xml()).into()),
    )
    .transfer_encoding("base64")
    .header(
        "Content-Disposition",
        HeaderType::ContentType(ContentType::new("inline").attribute("filename", "daticert.xml")),
    )
}

/// `message/rfc822` permits only 7bit, 8bit or binary (RFC 2046 §5.2.1): the
/// original travels unencoded, with the narrowest label that is true.
/// The `postacert.eml` part, its body kept apart: [`entity`] writes the
/// small parts around it into the body's own buffer, so a large original
/// is never copied to build an envelope or a ricevuta completa.
struct Postacert {
    part: MimePart<'static>,
    body: Vec<u8>,
}

/// Stands for the postacert body while the parts are written. The other
/// parts are ours (text and XML) and never contain NUL bytes.
const POSTACERT_MARK: &[u8] = b"\0pecd:postacert\0";

fn postacert_part(original: Vec<u8>) -> Postacert {
    let cte = if original.iter().all(|b| *b < 0x80 && *b != 0) {
        "7bit"
    } else if original.contains(&0) {
        "binary"
    } else {
        "8bit"
    };
    let part = MimePart::new(
        ContentType::new("message/rfc822").attribute("name", "postacert.eml"),
        BodyPart::Binary(POSTACERT_MARK.into()),
    )
    .transfer_encoding(cte)
    .header(
        "Content-Disposition",
        HeaderType::ContentType(ContentType::new("inline").attribute("filename", "postacert.eml")),
    );
    Postacert {
        part,
        body: original,
    }
}

/// The multipart/mixed entity of `parts`, then `postacert` last.
fn entity(mut parts: Vec<MimePart<'static>>, postacert: Option<Postacert>) -> Vec<u8> {
    let body = postacert.map(|p| {
        parts.push(p.part);
        p.body
    });
    let mut small =
        Vec::with_capacity(parts.iter().map(MimePart::size).sum::<usize>() * 4 / 3 + 2048);
    // Writing into a Vec cannot fail.
    let _ = MimePart::new(
        ContentType::new("multipart/mixed"),
        BodyPart::Multipart(parts),
    )
    .write_part(&mut small);
    let Some(mut body) = body else {
        return small;
    };
    // The part's CTE header is set, so its body is written as it is: the
    // mark is there once.
    let Some(at) = memchr::memmem::find(&small, POSTACERT_MARK) else {
        return small;
    };
    body.reserve_exact(small.len() - POSTACERT_MARK.len());
    body.splice(0..0, small[..at].iter().copied());
    body.extend_from_slice(&small[at + POSTACERT_MARK.len()..]);
    body
}

/// Every value we write is one line, whatever it came from: a line break
/// in it would start a header field outside the signature.
fn raw(name: &'static str, value: impl Into<String>) -> HeaderLine {
    HeaderLine::Encoded(name, HeaderType::Raw(Raw::new(one_line(&value.into()))))
}

/// `Subject: <prefix><original>` with the prefix always as plain text (RT
/// §3.11; every provider's sample has it so, and filters match it there):
/// an original that needs RFC 2047 is encoded on its own after it, and a
/// plain one is folded at its spaces. mail-builder would encode the whole
/// value, prefix included, as soon as any of it needs encoding.
fn subject(kind: MessageKind, original: &str) -> HeaderLine {
    let prefix = kind.subject_prefix();
    let original = one_line(original);
    let mut line = format!("Subject: {prefix}").into_bytes();
    let plain = original.is_ascii()
        && !original.contains("=?")
        && !original.contains("  ")
        && !original.ends_with([' ', '\t'])
        && !original.contains('\t')
        && original.split(' ').all(|w| w.len() < 900);
    if plain {
        let mut width = line.len();
        for (i, word) in original.split(' ').enumerate() {
            if i > 0 {
                if width + 1 + word.len() > 76 {
                    line.extend_from_slice(b"\r\n");
                    width = 0;
                }
                line.push(b' ');
                width += 1;
            }
            line.extend_from_slice(word.as_bytes());
            width += word.len();
        }
    } else {
        // The prefix ends with a space, where the line folds: each
        // encoded word (up to 72 characters) starts a line of its own.
        line.pop();
        line.extend_from_slice(b"\r\n ");
        line.extend_from_slice(encoded_words(&original).as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    HeaderLine::Verbatim(line)
}

/// `text` as RFC 2047 `B` encoded words, folded one per line: `B` because
/// in a phrase (a display name) `Q` may not carry `:`, `@`, `.` or `'`
/// raw (§5), and each word at most 75 characters whole (§2), split only
/// between characters.
fn encoded_words(text: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        // 45 bytes make 60 base64 characters, 72 with the word's frame.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            // Encoding into memory cannot fail; inline: no line breaks.
            let b64 =
                mail_builder::encoders::base64::base64_encode(w.as_bytes()).unwrap_or_default();
            format!("=?utf-8?B?{}?=", String::from_utf8_lossy(&b64))
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// `From: "Per conto di: <sender>" <service address>` (RT §3.1, §3.5). A
/// name outside ASCII is written as bare encoded words: mail-builder puts
/// them inside quotes, where RFC 2047 §5 forbids them and strict readers
/// show them undecoded.
fn on_behalf_of(sender: &str, provider: &Provider) -> HeaderLine {
    let name = format!("Per conto di: {}", one_line(sender));
    let mut line = b"From: ".to_vec();
    if name.is_ascii() {
        line.push(b'"');
        for c in name.bytes() {
            if c == b'"' || c == b'\\' {
                line.push(b'\\');
            }
            line.push(c);
        }
        line.push(b'"');
    } else {
        line.extend_from_slice(encoded_words(&name).as_bytes());
    }
    let last_line = line.len() - line.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let address = provider.service_address();
    line.extend_from_slice(if last_line + 3 + address.len() > 78 {
        b"\r\n <".as_slice()
    } else {
        b" <".as_slice()
    });
    line.extend_from_slice(address.as_bytes());
    line.extend_from_slice(b">\r\n");
    HeaderLine::Verbatim(line)
}

/// Header lines of a notice (RT §3.0): From is the bare service address,
/// notices go to the reverse-path (or a provider's mailReceipt), never to Reply-To.
fn notice_headers(
    kind: MessageKind,
    c: &Certification,
    message_id: &str,
    to: &str,
) -> Vec<HeaderLine> {
    let mut h = vec![
        raw("Date", c.time.rfc5322()),
        // Bare addresses, as the providers write them (RT §3.0, §11).
        raw("From", c.provider.service_address()),
        raw("To", to.to_string()),
        subject(kind, &c.subject),
        raw("Message-ID", format!("<{message_id}>")),
    ];
    if let Some(m) = &c.msgid {
        h.push(raw(X_RIFERIMENTO_MESSAGE_ID, m.clone()));
    }
    if let Some(v) = kind.x_ricevuta() {
        h.push(raw(X_RICEVUTA, v));
    }
    if kind.security_error() {
        h.push(raw("X-VerificaSicurezza", SECURITY_ERROR));
    }
    h
}

fn notice(
    kind: MessageKind,
    c: &Certification,
    message_id: &str,
    to: &str,
    body: &Body,
    d: &Daticert,
    original: Option<Vec<u8>>,
) -> UnsignedMessage {
    UnsignedMessage {
        headers: notice_headers(kind, c, message_id, to),
        entity: entity(
            vec![text_parts(body), daticert_part(d)],
            original.map(postacert_part),
        ),
    }
}

/// Copy these fields of the original verbatim, in their order, from its
/// canonical form (a bare CR there is a line break, as in postacert.eml).
/// A line of a field that is neither a field nor a continuation (garbage
/// that [`header_fields`] attaches to the field before) becomes a
/// continuation: each copy stays one field.
fn copied_fields(raw_msg: &[u8], names: &[&str]) -> (Vec<HeaderLine>, bool) {
    let header = canonical_header(raw_msg);
    let mut out = Vec::new();
    let mut has_reply_to = false;
    for f in header_fields(&header) {
        if names.iter().any(|n| f.is(n)) {
            has_reply_to |= f.is("Reply-To");
            let mut field = Vec::with_capacity(f.bytes.len() + 2);
            for (i, line) in f.bytes.split_inclusive(|b| *b == b'\n').enumerate() {
                if i > 0 && !matches!(line.first(), Some(b' ' | b'\t')) {
                    field.push(b' ');
                }
                field.extend_from_slice(line);
            }
            out.push(HeaderLine::Verbatim(to_crlf(&field).into_owned()));
        }
    }
    (out, has_reply_to)
}

// ---------------------------------------------------------------------------
// The catalogue

/// *Busta di trasporto* (RT §3.1). `original` is the message as submitted;
/// it travels as `postacert.eml` with its Message-ID swapped (RT §2.2).
pub fn transport(c: &Certification, original: &[u8]) -> UnsignedMessage {
    transport_traced(c, b"", original)
}

/// [`transport`] with `trace` (the submission's `Received:` line, CRLF
/// terminated) in front of the original's header, without copying the
/// original to put it there: a large message is held once less.
pub fn transport_traced(c: &Certification, trace: &[u8], original: &[u8]) -> UnsignedMessage {
    let kind = MessageKind::Transport;
    // Only the header block is searched: copy that, never the body.
    let mut head = trace.to_vec();
    head.extend_from_slice(super::mime::split_header(original).0);
    head.extend_from_slice(b"\r\n");
    let (mut headers, has_reply_to) =
        copied_fields(&head, &["Received", "Return-Path", "To", "Cc", "Reply-To"]);
    headers.push(raw(X_TRASPORTO, kind.x_trasporto().unwrap_or_default()));
    // RFC 6109 lists X-TipoRicevuta as set by the access point; Namirial omits
    // it when the original has none. pecd always states it (absent ⇒ completa
    // either way), so receivers need no default. RT §3.1.
    headers.push(raw(X_TIPO_RICEVUTA, c.receipt_request.token()));
    headers.push(raw("Date", c.time.rfc5322()));
    headers.push(subject(kind, &c.subject));
    headers.push(on_behalf_of(&c.sender, &c.provider));
    if !has_reply_to {
        headers.push(raw("Reply-To", c.sender.clone()));
    }
    headers.push(raw("Message-ID", format!("<{}>", c.pec_id)));
    if let Some(m) = &c.msgid {
        headers.push(raw(X_RIFERIMENTO_MESSAGE_ID, m.clone()));
    }
    let mut d = c.daticert(PecType::Transport);
    d.ricevuta = Some(c.receipt_request);
    let body = text::transport(&c.facts(), &c.addresses());
    let postacert = super::original::rewrite_for_envelope_traced(
        trace,
        original,
        &c.pec_id,
        c.msgid.as_deref(),
    );
    UnsignedMessage {
        headers,
        entity: entity(
            vec![text_parts(&body), daticert_part(&d)],
            Some(postacert_part(postacert)),
        ),
    }
}

/// What the reception point knows about a message it wraps as an anomaly.
pub struct AnomalyInput<'a> {
    pub provider: &'a Provider,
    /// Arrival time.
    pub time: LegalTime,
    /// SMTP reverse-path (empty for the null sender).
    pub envelope_from: &'a str,
    /// The local recipients of this transaction.
    pub recipients: &'a [String],
    /// The entire message as received.
    pub received: &'a [u8],
    /// Short Italian description of why the data are not certified.
    pub reason: &'a str,
    /// Message-ID to use when the received message has none.
    pub fallback_message_id: &'a str,
}

/// *Busta di anomalia* (RT §3.5): the whole received message as
/// `postacert.eml`, a text part, and nothing else (no daticert).
pub fn anomaly(a: &AnomalyInput<'_>) -> UnsignedMessage {
    let kind = MessageKind::Anomaly;
    let orig = OriginalHeaders::parse(a.received);
    let sender = orig
        .from
        .first()
        .cloned()
        .unwrap_or_else(|| a.envelope_from.to_string());
    let (mut headers, has_reply_to) = copied_fields(
        a.received,
        &[
            "Received",
            "Return-Path",
            "To",
            "Cc",
            "Message-ID",
            "Reply-To",
        ],
    );
    if orig.message_id.is_none() {
        headers.push(raw("Message-ID", format!("<{}>", a.fallback_message_id)));
    }
    headers.push(raw(X_TRASPORTO, kind.x_trasporto().unwrap_or_default()));
    headers.push(raw("Date", a.time.rfc5322()));
    headers.push(subject(kind, &orig.subject));
    headers.push(on_behalf_of(&sender, a.provider));
    if !has_reply_to && !sender.is_empty() {
        headers.push(raw("Reply-To", sender.clone()));
    }
    let facts = Facts {
        time: a.time,
        subject: &orig.subject,
        sender: &sender,
        pec_id: "",
    };
    let body = text::anomaly(&facts, a.recipients, a.reason);
    UnsignedMessage {
        headers,
        entity: entity(
            vec![text_parts(&body)],
            Some(postacert_part(to_crlf(a.received).into_owned())),
        ),
    }
}

/// *Ricevuta di accettazione* (RT §3.2).
pub fn acceptance(c: &Certification, message_id: &str) -> UnsignedMessage {
    let kind = MessageKind::Acceptance;
    let list: Vec<(String, bool)> = c
        .recipients
        .iter()
        .map(|r| (r.address.clone(), r.class == RecipientClass::Certified))
        .collect();
    let body = text::acceptance(&c.facts(), &list);
    notice(
        kind,
        c,
        message_id,
        &c.sender,
        &body,
        &c.daticert(PecType::Acceptance),
        None,
    )
}

/// *Avviso di non accettazione*, formal or for virus (RT §3.3).
pub fn non_acceptance(c: &Certification, message_id: &str, why: &Rejection) -> UnsignedMessage {
    let (kind, reason, virus) = match why {
        Rejection::Formal(r) => (MessageKind::NonAcceptance, r, false),
        Rejection::Virus(r) => (MessageKind::NonAcceptanceVirus, r, true),
    };
    let mut d = c.daticert(PecType::NonAcceptance);
    d.errore = if virus {
        ErrorKind::Virus
    } else {
        ErrorKind::Other
    };
    d.errore_esteso = Some(reason.clone());
    let body = text::non_acceptance(&c.facts(), &c.addresses(), reason, virus);
    notice(kind, c, message_id, &c.sender, &body, &d, None)
}

/// *Ricevuta di presa in carico* (RT §3.4): to the sending provider's
/// `mailReceipt`, listing in `<ricezione>` the recipients of this transaction.
pub fn taken_in_charge(
    c: &Certification,
    message_id: &str,
    mail_receipt: &str,
    covered: &[String],
) -> UnsignedMessage {
    let mut d = c.daticert(PecType::TakenInCharge);
    d.ricezione = covered.to_vec();
    let body = text::taken_in_charge(&c.facts(), covered);
    notice(
        MessageKind::TakenInCharge,
        c,
        message_id,
        mail_receipt,
        &body,
        &d,
        None,
    )
}

/// *Ricevuta di avvenuta consegna* (RT §3.8). `variant` is what this
/// recipient gets ([`Certification::delivery_variant`]); `postacert` is the
/// original as carried by the envelope (needed for completa and breve).
pub fn delivery(
    c: &Certification,
    message_id: &str,
    recipient: &str,
    variant: ReceiptVariant,
    postacert: Option<&[u8]>,
) -> UnsignedMessage {
    delivery_owned(
        c,
        message_id,
        recipient,
        variant,
        postacert.map(<[u8]>::to_vec),
    )
}

/// [`delivery`] taking the original by value: a completa carries that very
/// buffer (a large original is not copied once more).
pub fn delivery_owned(
    c: &Certification,
    message_id: &str,
    recipient: &str,
    variant: ReceiptVariant,
    postacert: Option<Vec<u8>>,
) -> UnsignedMessage {
    let mut d = c.daticert(PecType::Delivery);
    // `<ricevuta tipo>` is the type *requested*, not the variant produced (RT §3.8).
    d.ricevuta = Some(c.receipt_request);
    d.consegna = Some(recipient.to_string());
    let original = match (variant, postacert) {
        (ReceiptVariant::Full, Some(p)) => Some(match to_crlf(&p) {
            std::borrow::Cow::Borrowed(_) => p,
            std::borrow::Cow::Owned(o) => o,
        }),
        (ReceiptVariant::Short, Some(p)) => Some(super::breve::hash_attachments(&to_crlf(&p))),
        _ => None,
    };
    // Without the original a completa/breve cannot be built: degrade to sintetica.
    let variant = if original.is_none() {
        ReceiptVariant::Summary
    } else {
        variant
    };
    let body = text::delivery(&c.facts(), recipient, variant);
    notice(
        MessageKind::Delivery(variant),
        c,
        message_id,
        &c.sender,
        &body,
        &d,
        original,
    )
}

/// *Avviso di mancata consegna* (RT §3.9), one per recipient.
pub fn delivery_error(
    c: &Certification,
    message_id: &str,
    recipient: &str,
    failure: &DeliveryFailure,
) -> UnsignedMessage {
    let error = nota12(failure.code(), &c.provider, failure.description());
    let mut d = c.daticert(PecType::DeliveryError);
    d.errore = failure.error_kind();
    d.consegna = Some(recipient.to_string());
    d.errore_esteso = Some(error.clone());
    let body = text::delivery_error(&c.facts(), recipient, &error);
    notice(
        MessageKind::DeliveryError,
        c,
        message_id,
        &c.sender,
        &body,
        &d,
        None,
    )
}

/// *Avviso di mancata consegna per virus* (RT §3.7): emitted by the sender's
/// provider from a received *rilevazione virus*; `description` is its
/// `errore-esteso`.
pub fn delivery_error_virus(
    c: &Certification,
    message_id: &str,
    recipient: &str,
    description: &str,
) -> UnsignedMessage {
    let mut d = c.daticert(PecType::DeliveryError);
    d.errore = ErrorKind::Virus;
    d.consegna = Some(recipient.to_string());
    d.errore_esteso = Some(description.to_string());
    let body = text::delivery_error_virus(&c.facts(), recipient, description);
    notice(
        MessageKind::DeliveryErrorVirus,
        c,
        message_id,
        &c.sender,
        &body,
        &d,
        None,
    )
}

/// *Avviso di rilevazione virus* (RT §3.6): to the sending provider's
/// `mailReceipt`, one per recipient, with `X-Mittente`.
pub fn virus_detected(
    c: &Certification,
    message_id: &str,
    mail_receipt: &str,
    recipient: &str,
    description: &str,
) -> UnsignedMessage {
    let mut d = c.daticert(PecType::VirusDetected);
    d.errore = ErrorKind::Virus;
    d.consegna = Some(recipient.to_string());
    d.errore_esteso = Some(description.to_string());
    let body = text::virus_detected(&c.facts(), recipient, description);
    let mut m = notice(
        MessageKind::VirusDetected,
        c,
        message_id,
        mail_receipt,
        &body,
        &d,
        None,
    );
    m.headers.push(raw(X_MITTENTE, c.sender.clone()));
    m
}

/// *Avviso di mancata consegna per superamento dei tempi massimi* (RT §3.10).
/// Both stages are `preavviso-errore-consegna`; the 24 h one carries `5.4.1`
/// in `errore-esteso` (observed at Aruba, InfoCert, Namirial). `errore` is
/// `altro` for both and the 12 h notice has no code ([?] in RT §3.10: none seen).
pub fn timeout(
    c: &Certification,
    message_id: &str,
    recipient: &str,
    stage: TimeoutStage,
) -> UnsignedMessage {
    let mut d = c.daticert(PecType::DeliveryTimeout);
    d.errore = ErrorKind::Other;
    d.consegna = Some(recipient.to_string());
    d.errore_esteso = Some(match stage {
        TimeoutStage::H12 => format!(
            "{} - il messaggio non è stato consegnato nelle prime dodici ore dal suo invio",
            c.provider.name
        ),
        TimeoutStage::H24 => nota12(
            "5.4.1",
            &c.provider,
            "il messaggio non è stato consegnato nelle prime ventiquattro ore dal suo invio",
        ),
    });
    let body = text::timeout(&c.facts(), recipient, stage);
    notice(
        MessageKind::Timeout(stage),
        c,
        message_id,
        &c.sender,
        &body,
        &d,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_refusal_for_an_unknown_user_is_no_dest() {
        let peer = |code: &str| DeliveryFailure::Other {
            code: code.into(),
            description: "rifiutato".into(),
        };
        assert_eq!(peer("5.1.1").error_kind(), ErrorKind::NoRecipient);
        assert_eq!(peer("5.7.1").error_kind(), ErrorKind::Other);
        assert_eq!(DeliveryFailure::MailboxFull.error_kind(), ErrorKind::Other);
    }
}
