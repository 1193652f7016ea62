//! Verification of received S/MIME messages (RT §6.3 steps 1–3).

use super::{SignedAttributes, certificate_sha1_hex, cms_info};
use crate::pec::mime::{split_header, to_crlf};
use base64::Engine;
use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509StoreContext};
use std::borrow::Cow;

/// The instant at which certificate validity is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyTime {
    /// The current time (what a reception point does).
    Now,
    /// A given instant (audits, replays of old messages).
    At(DateTime<Utc>),
    /// The signature's own `signingTime` attribute (archived messages whose
    /// certificates have since expired); falls back to now when absent.
    SigningTime,
}

/// The two halves of a `multipart/signed` body (RFC 1847).
#[derive(Debug, Clone)]
pub struct SignedParts<'a> {
    /// The signed entity, CRLF-canonical (RFC 5751 §3.1.1).
    pub content: Cow<'a, [u8]>,
    /// The detached CMS SignedData, DER.
    pub signature: Vec<u8>,
    /// `protocol` parameter (`application/pkcs7-signature` or the `x-` form).
    pub protocol: String,
    /// `micalg` parameter, if any.
    pub micalg: Option<String>,
}

fn is_delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    let closing = rest.starts_with(b"--");
    let tail = if closing { &rest[2..] } else { rest };
    // RFC 2046 §5.1.1: transport padding (white space) may follow.
    tail.iter()
        .all(|b| *b == b' ' || *b == b'\t')
        .then_some(closing)
}

/// Split a message whose top-level type is `multipart/signed`.
pub fn split_multipart_signed(raw: &[u8]) -> Result<SignedParts<'_>, String> {
    let (header, body) = split_header(raw);
    let mut h = header.to_vec();
    h.extend_from_slice(b"\r\n");
    let msg = MessageParser::default()
        .parse_headers(&h[..])
        .ok_or("unreadable header")?;
    let ct = msg.content_type().ok_or("no Content-Type")?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("signed"))
    {
        return Err(format!(
            "top-level type is {}/{}",
            ct.ctype(),
            ct.subtype().unwrap_or("")
        ));
    }
    let boundary = ct
        .attribute("boundary")
        .ok_or("multipart/signed without boundary")?
        .as_bytes()
        .to_vec();
    let protocol = ct.attribute("protocol").unwrap_or("").to_ascii_lowercase();
    let micalg = ct.attribute("micalg").map(str::to_ascii_lowercase);

    // Delimiter positions: (line start, line end, closing).
    let mut delims = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let end = body[i..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |p| i + p + 1);
        if let Some(closing) = is_delimiter(&body[i..end], &boundary) {
            delims.push((i, end, closing));
            if closing {
                break;
            }
        }
        i = end;
    }
    if delims.len() < 3 {
        return Err("multipart/signed needs two parts and a closing delimiter".into());
    }
    let part = |n: usize| -> &[u8] {
        let start = delims[n].1;
        let mut end = delims[n + 1].0;
        // The line break before a delimiter belongs to the delimiter.
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        &body[start..end]
    };
    let content = part(0);
    let sig_part = part(1);
    let (sig_header, sig_body) = split_header(sig_part);
    let sig_ct = crate::pec::mime::header_value(sig_header, "Content-Type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !sig_ct.contains("pkcs7-signature") {
        return Err(format!("second part is not a PKCS#7 signature ({sig_ct})"));
    }
    let cte = crate::pec::mime::header_value(sig_header, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let signature = if cte == "base64" || cte.is_empty() {
        let clean: Vec<u8> = sig_body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(&clean)
            .map_err(|e| format!("signature part is not valid base64: {e}"))?
    } else {
        sig_body.to_vec()
    };
    Ok(SignedParts {
        content: to_crlf(content),
        signature,
        protocol,
        micalg,
    })
}

/// Outcome of the cryptographic checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// Signature value and chain verified at the chosen time.
    Valid,
    /// No S/MIME structure (RT §6.3 step 1).
    NotSigned(String),
    /// The signature value does not match the content, or cannot be parsed.
    BadSignature(String),
    /// The signature is intact but the certificate does not chain to a trust
    /// anchor or is not valid at the chosen time (RT §6.3 step 3).
    UntrustedChain(String),
}

impl SignatureStatus {
    pub fn is_valid(&self) -> bool {
        matches!(self, SignatureStatus::Valid)
    }
}

/// Everything verification learnt about one message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub status: SignatureStatus,
    pub signer_subject: Option<String>,
    pub signer_emails: Vec<String>,
    /// Hex SHA-1 of the signer certificate DER (`providerCertificateHash`).
    pub signer_sha1: Option<String>,
    #[serde(skip)]
    pub signer_der: Option<Vec<u8>>,
    pub attributes: SignedAttributes,
    pub protocol: Option<String>,
    pub micalg: Option<String>,
    /// The instant used for certificate validity.
    pub checked_at: Option<DateTime<Utc>>,
    /// The signed entity (CRLF-canonical), for the classifier.
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
}

impl Verification {
    fn unsigned(reason: String) -> Self {
        Verification {
            status: SignatureStatus::NotSigned(reason),
            signer_subject: None,
            signer_emails: Vec::new(),
            signer_sha1: None,
            signer_der: None,
            attributes: SignedAttributes::default(),
            protocol: None,
            micalg: None,
            checked_at: None,
            content: None,
        }
    }
}

/// Verifies signatures against a set of trust anchors.
pub struct Verifier {
    anchors: Vec<X509>,
    system: bool,
    /// Store for [`VerifyTime::Now`], built once.
    now_store: X509Store,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("anchors", &self.anchors.len())
            .field("system", &self.system)
            .finish()
    }
}

impl Verifier {
    /// Trust the given anchors only.
    pub fn with_anchors(anchors: Vec<X509>) -> Result<Verifier, super::SmimeError> {
        Self::build(anchors, false)
    }

    /// Trust the operating system's CA store (where AgID CA1's root, Actalis,
    /// lives: RT §6.2).
    pub fn system() -> Result<Verifier, super::SmimeError> {
        Self::build(Vec::new(), true)
    }

    fn build(anchors: Vec<X509>, system: bool) -> Result<Verifier, super::SmimeError> {
        let now_store = store(&anchors, system, None)?;
        Ok(Verifier {
            anchors,
            system,
            now_store,
        })
    }

    /// Verify a whole message (top-level `multipart/signed`).
    pub fn verify(&self, raw: &[u8], when: VerifyTime) -> Verification {
        match split_multipart_signed(raw) {
            Ok(parts) => self.verify_parts(&parts, when),
            Err(e) => Verification::unsigned(e),
        }
    }

    /// Verify an already split message.
    pub fn verify_parts(&self, parts: &SignedParts<'_>, when: VerifyTime) -> Verification {
        let mut v = Verification::unsigned(String::new());
        v.protocol = Some(parts.protocol.clone());
        v.micalg = parts.micalg.clone();
        v.content = Some(parts.content.to_vec());
        v.attributes = cms_info::read(&parts.signature);
        let p7 = match Pkcs7::from_der(&parts.signature) {
            Ok(p) => p,
            Err(e) => {
                v.status = SignatureStatus::BadSignature(format!("unreadable PKCS#7 structure: {e}"));
                return v;
            }
        };
        let Ok(empty) = Stack::<X509>::new() else {
            v.status = SignatureStatus::BadSignature("out of memory".into());
            return v;
        };
        let signer = p7
            .signers(&empty, Pkcs7Flags::empty())
            .ok()
            .and_then(|s| s.iter().next().map(|c| c.to_owned()));
        let Some(signer) = signer else {
            v.status = SignatureStatus::BadSignature("signer certificate not included".into());
            return v;
        };
        v.signer_subject = Some(subject_string(&signer));
        v.signer_emails = signer
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.email().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(der) = signer.to_der() {
            v.signer_sha1 = Some(certificate_sha1_hex(&der));
            v.signer_der = Some(der);
        }

        // Step 1: the signature value over the content, chain not considered.
        if let Err(e) = p7.verify(
            &empty,
            &self.now_store,
            Some(&parts.content),
            None,
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY,
        ) {
            v.status = SignatureStatus::BadSignature(first_reason(&e));
            return v;
        }

        // Step 2: the chain, at the chosen time. CRLs are not consulted here:
        // they need network access; RT §6.3 allows a cached CRL, which the
        // daemon's trust refresher provides.
        let at = match when {
            VerifyTime::Now => None,
            VerifyTime::At(t) => Some(t),
            VerifyTime::SigningTime => v.attributes.signing_time,
        };
        v.checked_at = Some(at.unwrap_or_else(Utc::now));
        let custom;
        let store_ref = match at {
            None => &self.now_store,
            Some(t) => match store(&self.anchors, self.system, Some(t)) {
                Ok(s) => {
                    custom = s;
                    &custom
                }
                Err(e) => {
                    v.status = SignatureStatus::UntrustedChain(e.to_string());
                    return v;
                }
            },
        };
        let chain = p7
            .signed()
            .and_then(|s| s.certificates())
            .map(|c| c.iter().map(|x| x.to_owned()).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut untrusted = match Stack::new() {
            Ok(s) => s,
            Err(e) => {
                v.status = SignatureStatus::UntrustedChain(e.to_string());
                return v;
            }
        };
        for c in chain {
            let _ = untrusted.push(c);
        }
        let result = X509StoreContext::new().and_then(|mut ctx| {
            ctx.init(store_ref, &signer, &untrusted, |c| {
                let ok = c.verify_cert()?;
                Ok((ok, c.error().error_string().to_string(), c.error_depth()))
            })
        });
        v.status = match result {
            Ok((true, _, _)) => SignatureStatus::Valid,
            Ok((false, why, depth)) => {
                SignatureStatus::UntrustedChain(format!("{why} (at depth {depth})"))
            }
            Err(e) => SignatureStatus::UntrustedChain(first_reason(&e)),
        };
        v
    }
}

fn store(anchors: &[X509], system: bool, at: Option<DateTime<Utc>>) -> Result<X509Store, super::SmimeError> {
    let mut b = X509StoreBuilder::new()?;
    if system {
        b.set_default_paths()?;
    }
    for a in anchors {
        b.add_cert(a.clone())?;
    }
    if let Some(t) = at {
        let mut p = X509VerifyParam::new()?;
        p.set_time(t.timestamp() as _);
        b.set_param(&p)?;
    }
    Ok(b.build())
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .map(|x| x.reason().unwrap_or("unknown error").to_string())
        .unwrap_or_else(|| "verification failed".into())
}

/// `C=IT, O=…, CN=…` in certificate order.
pub fn subject_string(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
