//! Byte-level MIME helpers the PEC builders need and general MIME libraries
//! do not offer: exact header surgery on an original that must otherwise stay
//! untouched, CRLF canonicalisation, ISO-8859-1 quoted-printable text, and the
//! `multipart/signed` frame around an already-signed entity.
//!
//! Owns: raw header-block parsing (field boundaries, folding). Must not touch:
//! crypto (the signature arrives as DER bytes) and header *semantics*.

use mail_builder::headers::{Header, HeaderType};
use std::borrow::Cow;

/// One header field of a raw header block, with its exact bytes.
#[derive(Debug, Clone, Copy)]
pub struct RawField<'a> {
    /// Field name as written (case preserved).
    pub name: &'a str,
    /// The whole field: name, colon, value, folded lines and the final line break.
    pub bytes: &'a [u8],
}

impl<'a> RawField<'a> {
    /// The value after the colon: leading white space and the final line break removed.
    pub fn value(&self) -> &'a [u8] {
        let after = &self.bytes[self.name.len() + 1..];
        let start = after
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(after.len());
        let mut end = after.len();
        while end > start && (after[end - 1] == b'\n' || after[end - 1] == b'\r') {
            end -= 1;
        }
        &after[start..end]
    }

    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Where the header block ends: returns (header including its final line
/// break, body after the empty line). A message with no empty line is all header.
pub fn split_header(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    // An empty first line means no header at all.
    if raw.starts_with(b"\r\n") {
        return (&raw[..0], &raw[2..]);
    }
    if raw.starts_with(b"\n") {
        return (&raw[..0], &raw[1..]);
    }
    while let Some(nl) = memchr(b'\n', &raw[i..]) {
        let line_end = i + nl + 1;
        if raw[line_end..].starts_with(b"\r\n") {
            return (&raw[..line_end], &raw[line_end + 2..]);
        }
        if raw[line_end..].starts_with(b"\n") {
            return (&raw[..line_end], &raw[line_end + 1..]);
        }
        i = line_end;
    }
    (raw, &raw[raw.len()..])
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// The fields of a header block in order. Lines that are not a field and not a
/// continuation (garbage) are attached to the previous field, as MTAs do.
pub fn header_fields(header: &[u8]) -> Vec<RawField<'_>> {
    let mut fields: Vec<(usize, usize, usize)> = Vec::new(); // (start, name_len, end)
    let mut i = 0;
    while i < header.len() {
        let line_end = memchr(b'\n', &header[i..]).map_or(header.len(), |p| i + p + 1);
        let line = &header[i..line_end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        let colon = line.iter().position(|b| *b == b':');
        let name_ok = colon
            .is_some_and(|c| c > 0 && line[..c].iter().all(|b| b.is_ascii_graphic() && *b != b':'));
        match (continuation, name_ok, fields.last_mut()) {
            (false, true, _) => fields.push((i, colon.unwrap_or(0), line_end)),
            (_, _, Some(last)) => last.2 = line_end,
            (_, _, None) => {}
        }
        i = line_end;
    }
    fields
        .into_iter()
        .filter_map(|(start, name_len, end)| {
            let name = std::str::from_utf8(&header[start..start + name_len]).ok()?;
            Some(RawField {
                name,
                bytes: &header[start..end],
            })
        })
        .collect()
}

/// First value of a header, unfolded, lossily decoded (no RFC 2047 decoding).
pub fn header_value(header: &[u8], name: &str) -> Option<String> {
    header_fields(header)
        .into_iter()
        .find(|f| f.is(name))
        .map(|f| unfold(f.value()))
}

/// Remove folding line breaks from a raw value (RFC 5322 §2.2.3: unfolding
/// removes the CRLF, the white space stays).
pub fn unfold(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_string()
}

/// `text` as one line for a header field or the daticert: every control
/// character (CR and LF above all: a decoded `=0D=0A` would start a header
/// field of the sender's choosing, outside the signature) becomes a space.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The header block of `to_crlf(raw)`, computed from the header alone: what
/// the access point reads must be what it certifies (the original travels
/// canonical in postacert.eml), and a bare CR there is a line break.
pub fn canonical_header(raw: &[u8]) -> Cow<'_, [u8]> {
    let (header, _) = split_header(raw);
    match to_crlf(header) {
        Cow::Borrowed(h) => Cow::Borrowed(h),
        // A bare CR may have made an empty line: the header ends there.
        Cow::Owned(h) => Cow::Owned(split_header(&h).0.to_vec()),
    }
}

/// Convert every line break to CRLF (bare LF and bare CR alike). S/MIME signs
/// the canonical form (RFC 5751 §3.1.1), and SMTP carries nothing else.
pub fn to_crlf(raw: &[u8]) -> Cow<'_, [u8]> {
    let canonical = memchr::memchr2_iter(b'\r', b'\n', raw).all(|i| match raw[i] {
        b'\n' => i > 0 && raw[i - 1] == b'\r',
        _ => raw.get(i + 1) == Some(&b'\n'),
    });
    if canonical {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// ISO-8859-1 bytes of a string; characters outside Latin-1 become `?`
/// (the HTML alternative keeps them as character references).
pub fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u32::from(c).try_into().unwrap_or(b'?'))
        .collect()
}

/// Quoted-printable body encoding (RFC 2045 §6.7), CRLF line breaks.
pub fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 11 / 10 + 16);
    // Writing into a Vec cannot fail.
    let _ =
        mail_builder::encoders::quoted_printable::quoted_printable_encode(bytes, &mut out, true);
    out
}

/// A top-level header line of a generated message.
pub enum HeaderLine {
    /// Encoded by mail-builder (RFC 2047 where needed, folding).
    Encoded(&'static str, HeaderType<'static>),
    /// Copied byte for byte from the original (RT §3.1: `Received:`, `To:`, …).
    Verbatim(Vec<u8>),
}

/// A generated PEC message before its signature: the top-level headers and the
/// MIME entity to be signed (CRLF canonical, starting with its own headers).
pub struct UnsignedMessage {
    pub headers: Vec<HeaderLine>,
    pub entity: Vec<u8>,
}

impl UnsignedMessage {
    /// The top-level header block as it will be written (without the
    /// MIME-Version and multipart/signed Content-Type that `assemble` adds).
    pub fn header_block(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_headers(&mut out);
        out
    }

    /// How many lines of [`UnsignedMessage::header_block`] start a field
    /// (the others continue one): one per header line built, unless a value
    /// carried a line break of its own.
    pub fn field_starts(&self) -> usize {
        self.header_block()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty() && l[0] != b' ' && l[0] != b'\t')
            .count()
    }

    fn write_headers(&self, out: &mut Vec<u8>) {
        for h in &self.headers {
            match h {
                HeaderLine::Encoded(name, value) => {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    // Writing into a Vec cannot fail.
                    let _ = value.write_header(&mut *out, name.len() + 2);
                }
                HeaderLine::Verbatim(bytes) => {
                    out.extend_from_slice(bytes);
                    if !bytes.ends_with(b"\r\n") {
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
    }

    /// Wrap the entity and its detached signature in `multipart/signed`
    /// (RFC 5751 §3.5.3). `protocol` is `application/pkcs7-signature` or the
    /// `x-` form the providers still use (RT §6.2).
    pub fn assemble(&self, signature_der: &[u8], micalg: &str, protocol: &str) -> Vec<u8> {
        let boundary = boundary_for(&self.entity);
        let mut out = Vec::with_capacity(self.entity.len() + signature_der.len() * 2 + 2048);
        out.extend_from_slice(&self.signed_preamble(&boundary, micalg, protocol));
        out.extend_from_slice(&self.entity);
        Self::signature_part(&mut out, &boundary, signature_der, protocol);
        out
    }

    /// [`assemble`](Self::assemble), reusing the entity's buffer: the
    /// header goes in front of it in place, so a large message is never
    /// held twice (an envelope of a 30 MB original, a ricevuta completa).
    pub fn assemble_owned(self, signature_der: &[u8], micalg: &str, protocol: &str) -> Vec<u8> {
        let boundary = boundary_for(&self.entity);
        let preamble = self.signed_preamble(&boundary, micalg, protocol);
        let mut out = self.entity;
        out.reserve_exact(preamble.len() + signature_der.len() * 2 + 512);
        out.splice(0..0, preamble);
        Self::signature_part(&mut out, &boundary, signature_der, protocol);
        out
    }

    /// Everything before the signed entity.
    fn signed_preamble(&self, boundary: &str, micalg: &str, protocol: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        self.write_headers(&mut out);
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/signed; protocol=\"{protocol}\"; micalg=\"{micalg}\";\r\n\tboundary=\"{boundary}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(b"This is an S/MIME signed message\r\n\r\n");
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out
    }

    /// Everything after the signed entity.
    fn signature_part(out: &mut Vec<u8>, boundary: &str, signature_der: &[u8], protocol: &str) {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        out.extend_from_slice(
            format!(
                "Content-Type: {protocol}; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Description: S/MIME Cryptographic Signature\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(&base64_lines(signature_der));
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    }
}

/// Base64 in 76-column lines, CRLF separated, no final line break.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(b64.len() + b64.len() / 38 + 2);
    for (i, chunk) in b64.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(chunk);
    }
    out
}

const BOUNDARY_PREFIX: &str = "----pecd";

/// A boundary that cannot occur in `content` (RFC 2046 §5.1.1): a fixed
/// prefix plus a random part. A delimiter only counts at a line start, so
/// when no line of `content` starts with `--` + the prefix (one SIMD scan),
/// no random suffix can collide; otherwise every candidate is checked.
pub fn boundary_for(content: &[u8]) -> String {
    use std::hash::{BuildHasher, Hasher};
    let prefix_line = format!("\n--{BOUNDARY_PREFIX}");
    let prefix_seen = content.starts_with(&prefix_line.as_bytes()[1..])
        || memchr::memmem::find(content, prefix_line.as_bytes()).is_some();
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(content.len());
        let a = h.finish();
        h.write_u64(a);
        let b = format!("{BOUNDARY_PREFIX}{a:016X}{:016X}", h.finish());
        if !prefix_seen {
            return b;
        }
        let delimiter = format!("--{b}");
        let clash = content
            .split(|c| *c == b'\n')
            .any(|line| line.starts_with(delimiter.as_bytes()));
        if !clash {
            return b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_folding_and_order() {
        let h = b"Received: from a\r\n\tby b\r\nTo: x@y.it,\r\n z@w.it\r\nSubject: hi\r\n";
        let f = header_fields(h);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "Received");
        assert_eq!(f[0].bytes, b"Received: from a\r\n\tby b\r\n");
        assert_eq!(unfold(f[1].value()), "x@y.it, z@w.it");
        assert_eq!(header_value(h, "subject").as_deref(), Some("hi"));
    }

    #[test]
    fn split_header_on_lf_and_crlf() {
        assert_eq!(split_header(b"A: b\r\n\r\nbody").1, b"body");
        assert_eq!(split_header(b"A: b\n\nbody").1, b"body");
        assert_eq!(split_header(b"A: b\r\n").1, b"");
    }

    #[test]
    fn crlf_canonical() {
        assert_eq!(&*to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert!(matches!(to_crlf(b"a\r\nb"), Cow::Borrowed(_)));
    }

    #[test]
    fn boundary_never_collides() {
        let b = boundary_for(b"hello\r\n");
        assert!(b.starts_with(BOUNDARY_PREFIX));
        // Content full of lines that start like our delimiters.
        let mut hostile = Vec::new();
        for _ in 0..50 {
            hostile.extend_from_slice(format!("--{}\r\n", boundary_for(b"")).as_bytes());
        }
        let b2 = boundary_for(&hostile);
        assert!(
            !hostile
                .split(|c| *c == b'\n')
                .any(|l| l.starts_with(format!("--{b2}").as_bytes()))
        );
    }

    #[test]
    fn latin1_maps_and_replaces() {
        assert_eq!(latin1("è€"), vec![0xE8, b'?']);
    }
}

// ---------------------------------------------------------------------------
// Walking a multipart body without decoding it (large messages)

/// Whether `line` is a delimiter of `boundary` (RFC 2046 §5.1.1), and if so
/// whether it is the closing one.
pub fn is_delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    let closing = rest.starts_with(b"--");
    let tail = if closing { &rest[2..] } else { rest };
    // Transport padding (white space) may follow.
    tail.iter()
        .all(|b| *b == b' ' || *b == b'\t')
        .then_some(closing)
}

/// The body parts of a multipart `body` delimited by `boundary`, borrowed,
/// and whether the closing delimiter was found (without it the last part
/// runs to the end, as lenient readers take it).
pub fn multipart_bodies<'a>(body: &'a [u8], boundary: &[u8]) -> (Vec<&'a [u8]>, bool) {
    // Delimiter lines: (line start, line end).
    let mut delims: Vec<(usize, usize)> = Vec::new();
    let mut closed = false;
    let mut i = 0;
    while i < body.len() {
        let end = memchr::memchr(b'\n', &body[i..]).map_or(body.len(), |p| i + p + 1);
        if let Some(closing) = is_delimiter(&body[i..end], boundary) {
            delims.push((i, end));
            if closing {
                closed = true;
                break;
            }
        }
        i = end;
    }
    if !closed && !delims.is_empty() {
        delims.push((body.len(), body.len()));
    }
    let parts = delims
        .windows(2)
        .map(|w| {
            let (start, mut end) = (w[0].1, w[1].0);
            // The line break before a delimiter belongs to the delimiter.
            if end > start && body[end - 1] == b'\n' {
                end -= 1;
                if end > start && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            &body[start..end.max(start)]
        })
        .collect();
    (parts, closed)
}

/// One leaf part of a multipart entity: its header block and undecoded
/// body (borrowed) and its file name, if it has one.
pub struct Leaf<'a> {
    pub header: &'a [u8],
    pub body: &'a [u8],
    /// Content-Disposition `filename`, else Content-Type `name` (RFC 2183,
    /// and the older habit).
    pub name: Option<String>,
}

/// What one parse of a header block tells the walk: the boundary, when the
/// part is a multipart, and the file name.
fn header_info(header: &[u8]) -> (Option<Vec<u8>>, Option<String>) {
    use mail_parser::MimeHeaders;
    let mut h = header.to_vec();
    h.extend_from_slice(b"\r\n");
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(&h[..]) else {
        return (None, None);
    };
    let boundary = msg
        .content_type()
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        .and_then(|ct| ct.attribute("boundary"))
        .map(|b| b.as_bytes().to_vec());
    (boundary, msg.attachment_name().map(str::to_string))
}

/// The leaf parts of a multipart entity, walking nested multiparts but not
/// into `message/rfc822` parts, in order, borrowed: nothing is decoded or
/// copied, however large the message. None when `raw` is not multipart.
pub fn leaf_parts(raw: &[u8]) -> Option<Vec<Leaf<'_>>> {
    let mut out = Vec::new();
    walk(raw, 0, &mut out).then_some(out)
}

/// Deeper nesting than this is not followed (a bomb of nested multiparts).
const MAX_DEPTH: usize = 16;

/// Walk `raw` into `out`; whether it was a multipart.
fn walk<'a>(raw: &'a [u8], depth: usize, out: &mut Vec<Leaf<'a>>) -> bool {
    let (header, body) = split_header(raw);
    match header_info(header) {
        (Some(b), _) if depth < MAX_DEPTH => {
            for part in multipart_bodies(body, &b).0 {
                walk(part, depth + 1, out);
            }
            true
        }
        (_, name) => {
            out.push(Leaf { header, body, name });
            false
        }
    }
}

/// A part's body decoded by its Content-Transfer-Encoding (base64,
/// quoted-printable, or as it is).
pub fn decoded_body(header: &[u8], body: &[u8]) -> Vec<u8> {
    let cte = header_value(header, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match cte.as_str() {
        "base64" => base64_body(body).unwrap_or_default(),
        "quoted-printable" => {
            // Rare for these parts; mail-parser's decoder, on this part only.
            let mut m = header.to_vec();
            m.extend_from_slice(b"\r\n\r\n");
            m.extend_from_slice(body);
            mail_parser::MessageParser::default()
                .parse(&m[..])
                .and_then(|msg| msg.parts.first().map(|p| p.contents().to_vec()))
                .unwrap_or_default()
        }
        _ => body.to_vec(),
    }
}

/// A base64 body (line breaks and padding as senders write them).
pub fn base64_body(body: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .or_else(|e| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(&clean)
                .map_err(|_| e)
        })
        .map_err(|e| e.to_string())
}

/// The decoded bodies of the first leaf parts named `names` (any depth,
/// not inside attached messages), one multipart walk for all.
pub fn named_parts(raw: &[u8], names: &[&str]) -> Vec<Option<Vec<u8>>> {
    let leaves = leaf_parts(raw).unwrap_or_default();
    names
        .iter()
        .map(|want| {
            leaves
                .iter()
                .find(|l| {
                    l.name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(want))
                })
                .map(|l| decoded_body(l.header, l.body))
        })
        .collect()
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    const NESTED: &[u8] = b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
preamble\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=in\r\n\r\n\
--in\r\nContent-Type: text/plain\r\n\r\nciao\r\n--in\r\nContent-Type: text/html\r\n\r\n<p>ciao</p>\r\n--in--\r\n\
--outer\r\n\
Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\nPHg+MTwveD4=\r\n\
--outer\r\n\
Content-Type: message/rfc822; name=\"postacert.eml\"\r\n\r\n\
Content-Type: multipart/mixed; boundary=\"deep\"\r\n\r\n--deep\r\nContent-Type: text/plain; name=\"hidden.txt\"\r\n\r\nno\r\n--deep--\r\n\
--outer--  \r\nepilogue\r\n";

    #[test]
    fn leaves_are_found_in_nested_multiparts_but_not_inside_attached_messages() {
        let leaves = leaf_parts(NESTED).unwrap();
        let names: Vec<Option<String>> = leaves.iter().map(|l| l.name.clone()).collect();
        assert_eq!(
            names,
            vec![
                None,
                None,
                Some("daticert.xml".into()),
                Some("postacert.eml".into())
            ]
        );
        assert_eq!(leaves[0].body, b"ciao");
        let got = named_parts(NESTED, &["daticert.xml", "hidden.txt", "postacert.eml"]);
        assert_eq!(got[0].as_deref(), Some(&b"<x>1</x>"[..]));
        assert_eq!(got[1], None, "not inside the attached message");
        assert!(
            got[2]
                .as_deref()
                .unwrap()
                .starts_with(b"Content-Type: multipart/mixed; boundary=\"deep\"")
        );
    }

    #[test]
    fn an_unclosed_multipart_runs_to_the_end_and_is_said_so() {
        let (parts, closed) = multipart_bodies(b"--b\r\none\r\n--b\r\ntwo", b"b");
        assert_eq!((parts, closed), (vec![&b"one"[..], &b"two"[..]], false));
        let (parts, closed) = multipart_bodies(b"x\r\n--b\r\none\r\n--b--\r\nafter", b"b");
        assert_eq!((parts, closed), (vec![&b"one"[..]], true));
        assert_eq!(multipart_bodies(b"no delimiters", b"b").0.len(), 0);
        assert_eq!(is_delimiter(b"--b-- \t\r\n", b"b"), Some(true));
        assert_eq!(is_delimiter(b"--bx\r\n", b"b"), None);
    }

    #[test]
    fn nesting_beyond_the_limit_is_not_followed() {
        let mut m = Vec::new();
        for i in 0..40 {
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nend\r\n");
        let leaves = leaf_parts(&m).unwrap();
        assert_eq!(leaves.len(), 1);
        assert!(leaf_parts(b"Content-Type: text/plain\r\n\r\nnot multipart").is_none());
    }
}
