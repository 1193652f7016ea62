//! The *ricevuta breve* transformation (RT §4): the original with every named
//! part replaced by a `text/plain` `<name>.hash` part holding the SHA-1 of the
//! part as transported.
//!
//! Owns: which parts are replaced and how the replacement looks. Must not
//! touch: anything outside the original's bytes. SHA-1 is computed with
//! OpenSSL's plain digest (no CMS), a pure function like the rest of `pec`.

use mail_parser::{MessageParser, MimeHeaders};

/// Return the original with attachments replaced by their hashes.
///
/// - Hash = SHA-1 over the part's body bytes exactly as transported (the
///   base64 text for base64 parts: RT §4, "SHOULD be computed on the
///   base64-encoded form"), lowercase hex. [?] case unspecified; lowercase
///   is what `sha1sum` prints.
/// - An attached `message/rfc822` is replaced whole.
/// - `multipart/signed`: the signature part stays untouched (the user's
///   signature then fails — accepted by RT §4).
/// - `application/(x-)pkcs7-mime`: nothing can be replaced; returned as is.
pub fn hash_attachments(original: &[u8]) -> Vec<u8> {
    let Some(msg) = MessageParser::default().parse(original) else {
        return original.to_vec();
    };
    let root_ct = msg
        .root_part()
        .content_type()
        .map(|ct| {
            format!(
                "{}/{}",
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase()
            )
        })
        .unwrap_or_default();
    if root_ct.ends_with("pkcs7-mime") {
        return original.to_vec();
    }
    let mut ranges: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (i, part) in msg.parts.iter().enumerate() {
        if i == 0 {
            continue;
        }
        let Some(name) = part.attachment_name() else {
            continue;
        };
        let is_signature = part.content_type().is_some_and(|ct| {
            ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("pkcs7-signature")
                    || s.eq_ignore_ascii_case("x-pkcs7-signature")
            })
        });
        if is_signature {
            continue;
        }
        let (h, b, e) = (
            part.offset_header as usize,
            part.offset_body as usize,
            part.offset_end as usize,
        );
        if !(h <= b && b <= e && e <= original.len()) {
            continue;
        }
        // Inside an already replaced part (e.g. a named multipart): skip.
        if ranges.iter().any(|(s, end, _)| h >= *s && h < *end) {
            continue;
        }
        let body = trim_final_break(&original[b..e]);
        let digest = openssl::sha::sha1(body);
        let hex: String = digest.iter().map(|x| format!("{x:02x}")).collect();
        let hashed = format!("{name}.hash");
        // A header is 7-bit: a name that is not ASCII goes in RFC 2231's
        // `name*=utf-8''…` form, percent-encoded.
        let (name_param, filename_param) = if hashed.is_ascii() {
            let n = sanitize(&hashed);
            (format!("name=\"{n}\""), format!("filename=\"{n}\""))
        } else {
            let n = rfc2231(&hashed);
            (format!("name*=utf-8''{n}"), format!("filename*=utf-8''{n}"))
        };
        let replacement = format!(
            "Content-Type: text/plain; charset=\"us-ascii\"; {name_param}\r\n\
Content-Transfer-Encoding: 7bit\r\n\
Content-Disposition: attachment; {filename_param}\r\n\
\r\n\
{hex}"
        )
        .into_bytes();
        ranges.push((h, h + (b - h) + body.len(), replacement));
    }
    ranges.sort_by_key(|r| r.0);
    let mut out = Vec::with_capacity(original.len());
    let mut pos = 0;
    for (s, e, rep) in ranges {
        if s < pos {
            continue;
        }
        out.extend_from_slice(&original[pos..s]);
        out.extend_from_slice(&rep);
        pos = e;
    }
    out.extend_from_slice(&original[pos..]);
    out
}

/// The line break before a boundary delimiter belongs to the delimiter
/// (RFC 2046 §5.1.1), not to the part.
fn trim_final_break(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r\n")
        .or_else(|| b.strip_suffix(b"\n"))
        .unwrap_or(b)
}

/// A file name safe inside a quoted parameter.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// RFC 2231 §4 value characters: `attribute-char`s as they are, every other
/// byte of the UTF-8 text as `%XX`.
fn rfc2231(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
