//! Read-only walk of a CMS SignedData structure (RFC 5652 §5): the parts the
//! verifier needs and the OpenSSL bindings do not expose — certificates as
//! raw DER, the first SignerInfo (sid, algorithms, signed attributes,
//! signature) and the signingTime. Nothing here decides validity.

use chrono::{DateTime, TimeZone, Utc};
use der_parser::asn1_rs::{Any, FromDer, Tag};

/// What the first SignerInfo declares, for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignedAttributes {
    /// `sha1`, `sha256`, … or the dotted OID when unknown.
    pub digest: Option<String>,
    /// The `signingTime` attribute, if present.
    pub signing_time: Option<DateTime<Utc>>,
}

/// How the SignerInfo names its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerId<'a> {
    /// issuer Name (whole TLV) and serial INTEGER content bytes.
    IssuerSerial {
        issuer: &'a [u8],
        serial: &'a [u8],
    },
    SubjectKeyId(&'a [u8]),
}

/// The first signer of a SignedData.
#[derive(Debug, Clone)]
pub struct SignerInfo<'a> {
    pub sid: SignerId<'a>,
    pub digest_oid: String,
    /// `[0] IMPLICIT SET OF Attribute`, whole TLV as encoded.
    pub signed_attrs: Option<&'a [u8]>,
    pub signature_oid: String,
    pub signature: &'a [u8],
    pub content_type: Option<String>,
    pub message_digest: Option<&'a [u8]>,
    pub signing_time: Option<DateTime<Utc>>,
}

/// The parts of a detached SignedData the verifier uses.
#[derive(Debug, Clone)]
pub struct SignedData<'a> {
    /// Every certificate, whole DER TLV.
    pub certificates: Vec<&'a [u8]>,
    pub signer: SignerInfo<'a>,
}

const OID_SIGNING_TIME: &str = "1.2.840.113549.1.9.5";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";

/// One element: (whole TLV, parsed).
fn tlv(b: &[u8]) -> Option<(&[u8], &[u8], Any<'_>)> {
    let (rest, a) = Any::from_der(b).ok()?;
    let len = b.len() - rest.len();
    Some((&b[..len], rest, a))
}

/// The elements inside a constructed value, with their TLVs.
fn children(data: &[u8]) -> Vec<(&[u8], Any<'_>)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match tlv(rest) {
            Some((whole, r, a)) => {
                out.push((whole, a));
                rest = r;
            }
            None => break,
        }
    }
    out
}

fn oid_string(a: &Any<'_>) -> Option<String> {
    if a.tag() != Tag::Oid {
        return None;
    }
    Some(der_parser::asn1_rs::Oid::new(a.data.into()).to_id_string())
}

/// Short name of a digest OID (dotted OID when unknown).
pub fn digest_name(oid: &str) -> String {
    match oid {
        "1.3.14.3.2.26" => "sha1".into(),
        "2.16.840.1.101.3.4.2.1" => "sha256".into(),
        "2.16.840.1.101.3.4.2.2" => "sha384".into(),
        "2.16.840.1.101.3.4.2.3" => "sha512".into(),
        "2.16.840.1.101.3.4.2.4" => "sha224".into(),
        "1.2.840.113549.2.5" => "md5".into(),
        other => other.to_string(),
    }
}

fn parse_time(a: &Any<'_>) -> Option<DateTime<Utc>> {
    let s = std::str::from_utf8(a.data).ok()?;
    let s = s.trim_end_matches('Z');
    let (year, rest) = if a.tag() == Tag::UtcTime {
        let yy: i32 = s.get(0..2)?.parse().ok()?;
        // RFC 5280 §4.1.2.5.1: 50..99 → 19xx, 00..49 → 20xx.
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
    } else if a.tag() == Tag::GeneralizedTime {
        (s.get(0..4)?.parse().ok()?, s.get(4..)?)
    } else {
        return None;
    };
    let n = |i: usize| -> Option<u32> { rest.get(i..i + 2)?.parse().ok() };
    Utc.with_ymd_and_hms(year, n(0)?, n(2)?, n(4)?, n(6)?, n(8).unwrap_or(0))
        .single()
}

/// Parse ContentInfo → SignedData → certificates and signerInfos[0].
pub fn parse(der: &[u8]) -> Option<SignedData<'_>> {
    let (_, _, content_info) = tlv(der)?;
    let ci = children(content_info.data);
    // ci[0] = contentType OID (signedData), ci[1] = [0] EXPLICIT SignedData
    if oid_string(&ci.first()?.1)? != "1.2.840.113549.1.7.2" {
        return None;
    }
    let (_, _, signed_data) = tlv(ci.get(1)?.1.data)?;
    let sd = children(signed_data.data);
    let mut certificates = Vec::new();
    for (_, a) in &sd {
        if a.header.is_contextspecific() && a.tag() == Tag(0) {
            certificates = children(a.data)
                .into_iter()
                .filter(|(_, c)| c.tag() == Tag::Sequence)
                .map(|(whole, _)| whole)
                .collect();
        }
    }
    // The last SET of SignedData is signerInfos.
    let (_, signer_infos) = sd.iter().rev().find(|(_, a)| a.tag() == Tag::Set)?;
    let (_, first) = children(signer_infos.data).into_iter().next()?;
    let si = children(first.data);
    let sid = {
        let (whole, a) = si.get(1)?;
        if a.tag() == Tag::Sequence {
            let parts = children(a.data);
            let issuer = parts.first()?.0;
            let serial = parts.get(1)?.1.data;
            SignerId::IssuerSerial { issuer, serial }
        } else if a.header.is_contextspecific() && a.tag() == Tag(0) {
            let _ = whole;
            SignerId::SubjectKeyId(a.data)
        } else {
            return None;
        }
    };
    let digest_oid = oid_string(&children(si.get(2)?.1.data).into_iter().next()?.1)?;
    let mut idx = 3;
    let mut signed_attrs = None;
    let (mut content_type, mut message_digest, mut signing_time) = (None, None, None);
    if let Some((whole, a)) = si.get(3)
        && a.header.is_contextspecific()
        && a.tag() == Tag(0)
    {
        signed_attrs = Some(*whole);
        idx = 4;
        for (_, attr) in children(a.data) {
            let parts = children(attr.data);
            let Some(oid) = parts.first().and_then(|p| oid_string(&p.1)) else {
                continue;
            };
            let Some((_, values)) = parts.get(1) else {
                continue;
            };
            let Some((_, value)) = children(values.data).into_iter().next() else {
                continue;
            };
            match oid.as_str() {
                OID_SIGNING_TIME => signing_time = parse_time(&value),
                OID_CONTENT_TYPE => content_type = oid_string(&value),
                OID_MESSAGE_DIGEST if value.tag() == Tag::OctetString => {
                    message_digest = Some(value.data)
                }
                _ => {}
            }
        }
    }
    let signature_oid = oid_string(&children(si.get(idx)?.1.data).into_iter().next()?.1)?;
    let (_, sig) = si.get(idx + 1)?;
    if sig.tag() != Tag::OctetString {
        return None;
    }
    Some(SignedData {
        certificates,
        signer: SignerInfo {
            sid,
            digest_oid,
            signed_attrs,
            signature_oid,
            signature: sig.data,
            content_type,
            message_digest,
            signing_time,
        },
    })
}

/// The report view of a signature.
pub fn read(der: &[u8]) -> SignedAttributes {
    parse(der)
        .map(|sd| SignedAttributes {
            digest: Some(digest_name(&sd.signer.digest_oid)),
            signing_time: sd.signer.signing_time,
        })
        .unwrap_or_default()
}
