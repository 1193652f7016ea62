//! Verification of received S/MIME messages (RT §6.3 steps 1–3).

use super::{SignedAttributes, certificate_sha1_hex, cms_info};
use crate::pec::mime::{split_header, to_crlf};
use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Public};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509Crl, X509StoreContext};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Split a message whose top-level type is `multipart/signed`.
pub fn split_multipart_signed(raw: &[u8]) -> Result<SignedParts<'_>, String> {
    let (header, body) = split_header(raw);
    // Readers disagree on which of two Content-Types counts (mail-parser
    // and this split take the last, many mail clients the first): one
    // copy of a genuine message could show parts nothing signs.
    let types = crate::pec::mime::header_fields(header)
        .iter()
        .filter(|f| f.is("Content-Type"))
        .count();
    if types > 1 {
        return Err(format!("{types} Content-Type fields in the message header"));
    }
    let mut h = header.to_vec();
    h.extend_from_slice(b"\r\n");
    let msg = MessageParser::default()
        .parse_headers(&h[..])
        .ok_or("unreadable header")?;
    let ct = msg.content_type().ok_or("no Content-Type")?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("signed"))
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

    let (parts, closed) = crate::pec::mime::multipart_bodies(body, &boundary);
    // Exactly two parts, closed; or (unclosed) a third delimiter after them
    // and nothing but white space beyond it. A third part would be shown by
    // mail readers as if it belonged to the signed message, and nothing
    // signs it (RFC 1847 §2.1: the body has exactly two parts).
    let blank = |p: &[u8]| p.iter().all(u8::is_ascii_whitespace);
    let two = if closed {
        parts.len() == 2
    } else {
        parts.len() == 3 && blank(parts[2])
    };
    if !two {
        return Err("multipart/signed needs exactly two parts and a closing delimiter".into());
    }
    let part = |n: usize| -> &[u8] { parts[n] };
    let content = part(0);
    let sig_part = part(1);
    let (sig_header, sig_body) = split_header(sig_part);
    let sig_ct = crate::pec::mime::header_value(sig_header, "Content-Type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    // The media type itself, not a parameter that mentions it: a
    // `multipart/mixed; x="pkcs7-signature"` would carry parts of its own
    // that a MIME walker of the stored message reads and nothing signs.
    let media = sig_ct.split(';').next().unwrap_or_default().trim();
    if !matches!(
        media,
        "application/pkcs7-signature" | "application/x-pkcs7-signature"
    ) {
        return Err(format!("second part is not a PKCS#7 signature ({sig_ct})"));
    }
    let cte = crate::pec::mime::header_value(sig_header, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let signature = if cte == "base64" || cte.is_empty() {
        crate::pec::mime::base64_body(sig_body)
            .map_err(|e| format!("signature part is not valid base64: {e}"))?
    } else {
        sig_body.to_vec()
    };
    if der_length(&signature).is_some_and(|n| n < signature.len()) {
        return Err("data after the PKCS#7 signature".into());
    }
    Ok(SignedParts {
        content: to_crlf(content),
        signature,
        protocol,
        micalg,
    })
}

/// The length of the DER element `der` starts with (tag, length, value),
/// when its header is readable (definite lengths only; an indefinite
/// length, BER, is left to the CMS parser).
fn der_length(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = der
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    (2 + n).checked_add(len)
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
}

impl Verification {
    /// The verification of a message with no S/MIME structure.
    pub fn not_signed(reason: String) -> Self {
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
        }
    }
}

/// Verifies signatures against a set of trust anchors.
///
/// A reception point sees the same few provider certificates over and over:
/// parsed certificates and, for [`VerifyTime::Now`], chain results are
/// cached (bounded; chain results for [`CHAIN_TTL`]), so a message costs one
/// digest and one RSA verification. Unusual signatures (no signed
/// attributes, non-RSA keys, SKI identifiers without a match) take the
/// OpenSSL PKCS#7 path, [`Verifier::verify_parts_pkcs7`], which is also the
/// reference the fast path is tested against.
pub struct Verifier {
    anchors: Vec<X509>,
    system: bool,
    /// Store for [`VerifyTime::Now`], built once.
    now_store: X509Store,
    /// Revocation lists of the CAs that issue providers' certificates.
    crls: Vec<X509Crl>,
    /// Parsed certificates by the SHA-256 of their DER.
    certs: Mutex<HashMap<[u8; 32], Arc<CachedCert>>>,
    chains: Mutex<HashMap<ChainKey, ChainEntry>>,
}

/// A chain result verified "now", and when.
struct ChainEntry {
    at: Instant,
    result: Result<(), String>,
}

/// SHA-256 over the leaf's DER and then the message's other certificates'
/// (each length-prefixed): a key of fixed size, whatever a sender packs
/// into its signature.
type ChainKey = [u8; 32];

/// How long a chain verified "now" is reused (certificate expiry inside this
/// window is caught on the next check).
pub const CHAIN_TTL: Duration = Duration::from_secs(60);
/// Bound on cached certificates and chain results: anyone can send
/// arbitrary certificates, and they are parsed before the signature is
/// checked. A few hundred providers' certificates and intermediates fit.
const CERT_CACHE_MAX: usize = 1024;
/// Larger certificates are parsed for the message at hand and not kept: a
/// provider's is 1–3 KB, and a cache of 100 MB certificates would hold
/// gigabytes.
const CACHED_CERT_MAX_BYTES: usize = 16 * 1024;

/// A parsed certificate and the facts reports need.
struct CachedCert {
    x509: X509,
    pubkey: PKey<Public>,
    der: Vec<u8>,
    sha1_hex: String,
    subject: String,
    emails: Vec<String>,
    issuer_raw: Vec<u8>,
    serial: Vec<u8>,
    ski: Option<Vec<u8>>,
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

    /// Also refuse signers whose certificate one of `crls` revokes (RT
    /// §6.3 step 3). A CRL counts only for certificates of its own issuer,
    /// and only once its signature verifies with that issuer's key.
    pub fn with_crls(mut self, crls: Vec<X509Crl>) -> Verifier {
        self.crls = crls;
        self
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
            crls: Vec::new(),
            certs: Mutex::new(HashMap::new()),
            chains: Mutex::new(HashMap::new()),
        })
    }

    /// Verify a whole message (top-level `multipart/signed`).
    pub fn verify(&self, raw: &[u8], when: VerifyTime) -> Verification {
        match split_multipart_signed(raw) {
            Ok(parts) => self.verify_parts(&parts, when),
            Err(e) => Verification::not_signed(e),
        }
    }

    /// Verify an already split message.
    pub fn verify_parts(&self, parts: &SignedParts<'_>, when: VerifyTime) -> Verification {
        match cms_info::parse(&parts.signature) {
            Some(sd) => match self.verify_fast(parts, &sd, when) {
                Some(v) => v,
                None => self.verify_parts_pkcs7(parts, when),
            },
            None => self.verify_parts_pkcs7(parts, when),
        }
    }

    /// Bytes the caches hold for what senders sent: certificates' DER and
    /// the keys of both maps (for tests and metrics; the parsed forms are
    /// about the size of their DER).
    pub fn cache_footprint(&self) -> usize {
        let certs = self.certs.lock().map_or(0, |m| {
            m.values()
                .map(|c| c.der.len() + std::mem::size_of::<[u8; 32]>())
                .sum()
        });
        let chains = self
            .chains
            .lock()
            .map_or(0, |m| m.len() * std::mem::size_of::<ChainKey>());
        certs + chains
    }

    fn cached_cert(&self, der: &[u8]) -> Option<Arc<CachedCert>> {
        let digest = openssl::sha::sha256(der);
        if let Ok(map) = self.certs.lock()
            && let Some(c) = map.get(&digest)
        {
            return Some(c.clone());
        }
        let x509 = X509::from_der(der).ok()?;
        let pubkey = x509.public_key().ok()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
        let ski = parsed
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            });
        let entry = Arc::new(CachedCert {
            subject: subject_string(&x509),
            emails: san_emails(&x509),
            sha1_hex: certificate_sha1_hex(der),
            issuer_raw: parsed.issuer().as_raw().to_vec(),
            serial: strip_zeros(parsed.raw_serial()).to_vec(),
            ski,
            der: der.to_vec(),
            pubkey,
            x509,
        });
        if der.len() <= CACHED_CERT_MAX_BYTES
            && let Ok(mut map) = self.certs.lock()
        {
            if map.len() >= CERT_CACHE_MAX {
                map.clear();
            }
            map.insert(digest, entry.clone());
        }
        Some(entry)
    }

    /// RFC 5652 §5.4–5.6 on the common shape (RSA PKCS#1 v1.5 with signed
    /// attributes). `None` means "not this shape": the PKCS#7 path decides.
    fn verify_fast(
        &self,
        parts: &SignedParts<'_>,
        sd: &cms_info::SignedData<'_>,
        when: VerifyTime,
    ) -> Option<Verification> {
        let si = &sd.signer;
        let attrs = si.signed_attrs?;
        let md = digest_by_oid(&si.digest_oid)?;
        if !RSA_SIGNATURE_OIDS.contains(&si.signature_oid.as_str()) {
            return None;
        }
        let certs: Vec<Arc<CachedCert>> = sd
            .certificates
            .iter()
            .filter_map(|d| self.cached_cert(d))
            .collect();
        let signer = certs.iter().find(|c| match &si.sid {
            cms_info::SignerId::IssuerSerial { issuer, serial } => {
                c.issuer_raw == *issuer && c.serial == strip_zeros(serial)
            }
            cms_info::SignerId::SubjectKeyId(k) => c.ski.as_deref() == Some(*k),
        })?;
        if signer.pubkey.id() != openssl::pkey::Id::RSA {
            return None;
        }
        let mut v = Verification::not_signed(String::new());
        v.protocol = Some(parts.protocol.clone());
        v.micalg = parts.micalg.clone();
        v.attributes = SignedAttributes {
            digest: Some(cms_info::digest_name(&si.digest_oid)),
            signing_time: si.signing_time,
        };
        v.signer_subject = Some(signer.subject.clone());
        v.signer_emails = signer.emails.clone();
        v.signer_sha1 = Some(signer.sha1_hex.clone());
        v.signer_der = Some(signer.der.clone());

        // The content must hash to messageDigest, the content type must be
        // id-data, and the signature must cover the DER SET of attributes.
        let digest = openssl::hash::hash(md, &parts.content).ok()?;
        if si.message_digest != Some(&digest[..]) {
            v.status = SignatureStatus::BadSignature("digest failure".into());
            return Some(v);
        }
        if si.content_type.as_deref() != Some("1.2.840.113549.1.7.1") {
            v.status =
                SignatureStatus::BadSignature("content type attribute is not id-data".into());
            return Some(v);
        }
        let mut set = attrs.to_vec();
        set[0] = 0x31; // [0] IMPLICIT → SET OF (RFC 5652 §5.4)
        let ok = openssl::sign::Verifier::new(md, &signer.pubkey)
            .and_then(|mut ver| {
                ver.update(&set)?;
                ver.verify(si.signature)
            })
            .unwrap_or(false);
        if !ok {
            v.status = SignatureStatus::BadSignature("signature failure".into());
            return Some(v);
        }
        let others: Vec<X509> = certs
            .iter()
            .filter(|c| !Arc::ptr_eq(c, signer))
            .map(|c| c.x509.clone())
            .collect();
        v.status = self.chain_status(
            &signer.x509,
            &signer.der,
            &others,
            when,
            &mut v.checked_at,
            si.signing_time,
        );
        Some(v)
    }

    fn chain_status(
        &self,
        leaf: &X509,
        leaf_der: &[u8],
        others: &[X509],
        when: VerifyTime,
        checked_at: &mut Option<DateTime<Utc>>,
        signing_time: Option<DateTime<Utc>>,
    ) -> SignatureStatus {
        let at = match when {
            VerifyTime::Now => None,
            VerifyTime::At(t) => Some(t),
            VerifyTime::SigningTime => signing_time,
        };
        *checked_at = Some(at.unwrap_or_else(Utc::now));
        let key: ChainKey = {
            let mut h = openssl::sha::Sha256::new();
            for der in std::iter::once(leaf_der.to_vec())
                .chain(others.iter().map(|c| c.to_der().unwrap_or_default()))
            {
                h.update(&(der.len() as u64).to_be_bytes());
                h.update(&der);
            }
            h.finish()
        };
        if at.is_none()
            && let Ok(map) = self.chains.lock()
            && let Some(e) = map.get(&key)
            && e.at.elapsed() < CHAIN_TTL
        {
            return status_of(e.result.clone());
        }
        let result = self.verify_chain(leaf, others, at);
        if at.is_none()
            && let Ok(mut map) = self.chains.lock()
        {
            if map.len() >= CERT_CACHE_MAX {
                map.clear();
            }
            map.insert(
                key,
                ChainEntry {
                    at: Instant::now(),
                    result: result.clone(),
                },
            );
        }
        status_of(result)
    }

    /// Chain of `leaf` to a trust anchor at `at` (None: now), then the
    /// revocation lists given with [`Verifier::with_crls`] (RT §6.3 allows
    /// a cached CRL; fetching it is left to the operator, see
    /// `provider.crls`). A certificate revoked after `at` was good then.
    fn verify_chain(
        &self,
        leaf: &X509,
        others: &[X509],
        at: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        let custom;
        let store_ref = match at {
            None => &self.now_store,
            Some(t) => {
                custom = store(&self.anchors, self.system, Some(t)).map_err(|e| e.to_string())?;
                &custom
            }
        };
        let mut untrusted = Stack::new().map_err(|e| first_reason(&e))?;
        for c in others {
            untrusted.push(c.clone()).map_err(|e| first_reason(&e))?;
        }
        let result = X509StoreContext::new().and_then(|mut ctx| {
            ctx.init(store_ref, leaf, &untrusted, |c| {
                let ok = c.verify_cert()?;
                // The issuer as the chain was built (the leaf itself when
                // self-signed): the key a CRL of it must verify with.
                let issuer = c
                    .chain()
                    .and_then(|ch| ch.get(1).or_else(|| ch.get(0)))
                    .map(|i| i.to_owned());
                Ok((
                    ok,
                    c.error().error_string().to_string(),
                    c.error_depth(),
                    issuer,
                ))
            })
        });
        match result {
            Ok((true, _, _, issuer)) => match issuer {
                Some(issuer) => self.revocation(leaf, &issuer, at),
                None => Ok(()),
            },
            Ok((false, why, depth, _)) => Err(format!("{why} (at depth {depth})")),
            Err(e) => Err(first_reason(&e)),
        }
    }

    /// Whether a CRL of `issuer` lists `leaf` as revoked on or before `at`.
    fn revocation(
        &self,
        leaf: &X509,
        issuer: &X509,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), String> {
        if self.crls.is_empty() {
            return Ok(());
        }
        let name = |n: &openssl::x509::X509NameRef| n.to_der().unwrap_or_default();
        let issuer_name = name(leaf.issuer_name());
        let Ok(key) = issuer.public_key() else {
            return Ok(());
        };
        let when = openssl::asn1::Asn1Time::from_unix(at.unwrap_or_else(Utc::now).timestamp())
            .map_err(|e| first_reason(&e))?;
        for crl in &self.crls {
            if name(crl.issuer_name()) != issuer_name || !crl.verify(&key).unwrap_or(false) {
                continue;
            }
            if let openssl::x509::CrlStatus::Revoked(r) = crl.get_by_serial(leaf.serial_number())
                && r.revocation_date() <= when
            {
                return Err(format!(
                    "certificate revoked on {} (CRL of its issuer)",
                    r.revocation_date()
                ));
            }
        }
        Ok(())
    }

    /// The OpenSSL PKCS#7 path: reference implementation and fallback.
    pub fn verify_parts_pkcs7(&self, parts: &SignedParts<'_>, when: VerifyTime) -> Verification {
        let mut v = Verification::not_signed(String::new());
        v.protocol = Some(parts.protocol.clone());
        v.micalg = parts.micalg.clone();
        v.attributes = cms_info::read(&parts.signature);
        let p7 = match Pkcs7::from_der(&parts.signature) {
            Ok(p) => p,
            Err(e) => {
                v.status =
                    SignatureStatus::BadSignature(format!("unreadable PKCS#7 structure: {e}"));
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
        v.signer_emails = san_emails(&signer);
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

        // Step 2: the chain, at the chosen time.
        let chain: Vec<X509> = p7
            .signed()
            .and_then(|s| s.certificates())
            .map(|c| c.iter().map(|x| x.to_owned()).collect::<Vec<_>>())
            .unwrap_or_default();
        let signing_time = v.attributes.signing_time;
        let der = v.signer_der.clone().unwrap_or_default();
        v.status = self.chain_status(&signer, &der, &chain, when, &mut v.checked_at, signing_time);
        v
    }
}

const RSA_SIGNATURE_OIDS: [&str; 6] = [
    "1.2.840.113549.1.1.1",  // rsaEncryption (what S/MIME writes)
    "1.2.840.113549.1.1.5",  // sha1WithRSAEncryption
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.113549.1.1.14", // sha224WithRSAEncryption
];

fn digest_by_oid(oid: &str) -> Option<MessageDigest> {
    Some(match oid {
        "1.3.14.3.2.26" => MessageDigest::sha1(),
        "2.16.840.1.101.3.4.2.4" => MessageDigest::sha224(),
        "2.16.840.1.101.3.4.2.1" => MessageDigest::sha256(),
        "2.16.840.1.101.3.4.2.2" => MessageDigest::sha384(),
        "2.16.840.1.101.3.4.2.3" => MessageDigest::sha512(),
        _ => return None,
    })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count();
    &b[n.min(b.len().saturating_sub(1))..]
}

fn status_of(r: Result<(), String>) -> SignatureStatus {
    match r {
        Ok(()) => SignatureStatus::Valid,
        Err(e) => SignatureStatus::UntrustedChain(e),
    }
}

fn store(
    anchors: &[X509],
    system: bool,
    at: Option<DateTime<Utc>>,
) -> Result<X509Store, super::SmimeError> {
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

/// The rfc822Name entries of the subjectAltName (where PEC puts the
/// service address, RT §6.1).
fn san_emails(cert: &X509) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.email().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
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
