//! Facts read from a CMS SignedData structure that the OpenSSL bindings do not
//! expose: the digest algorithm and the signed attributes of the first signer.
//! Read-only DER walking; nothing here decides validity.

use chrono::{DateTime, TimeZone, Utc};
use der_parser::asn1_rs::{Any, FromDer, Tag};

/// What the first SignerInfo declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignedAttributes {
    /// `sha1`, `sha256`, … or the dotted OID when unknown.
    pub digest: Option<String>,
    /// The `signingTime` attribute, if present.
    pub signing_time: Option<DateTime<Utc>>,
}

fn any(b: &[u8]) -> Option<(&[u8], Any<'_>)> {
    Any::from_der(b).ok()
}

/// The elements inside a constructed value.
fn children<'a>(data: &'a [u8]) -> Vec<Any<'a>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match any(rest) {
            Some((r, a)) => {
                out.push(a);
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
    der_parser::asn1_rs::Oid::new(a.data.into())
        .to_id_string()
        .into()
}

fn digest_name(oid: &str) -> String {
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

/// Walk ContentInfo → SignedData → signerInfos[0].
pub fn read(der: &[u8]) -> SignedAttributes {
    read_inner(der).unwrap_or_default()
}

fn read_inner(der: &[u8]) -> Option<SignedAttributes> {
    let (_, content_info) = any(der)?;
    let ci = children(content_info.data);
    // ci[0] = contentType OID, ci[1] = [0] EXPLICIT SignedData
    let explicit = ci.get(1)?;
    let (_, signed_data) = any(explicit.data)?;
    let sd = children(signed_data.data);
    // The last SET of SignedData is signerInfos.
    let signer_infos = sd.iter().rev().find(|a| a.tag() == Tag::Set)?;
    let first = children(signer_infos.data).into_iter().next()?;
    let si = children(first.data);
    // version, sid, digestAlgorithm, [0] signedAttrs?, …
    let digest = si
        .get(2)
        .and_then(|alg| children(alg.data).into_iter().next())
        .and_then(|oid| oid_string(&oid))
        .map(|o| digest_name(&o));
    let mut signing_time = None;
    if let Some(attrs) = si.get(3).filter(|a| a.header.is_contextspecific() && a.tag() == Tag(0)) {
        for attr in children(attrs.data) {
            let parts = children(attr.data);
            let is_signing_time = parts
                .first()
                .and_then(oid_string)
                .is_some_and(|o| o == "1.2.840.113549.1.9.5");
            if is_signing_time
                && let Some(values) = parts.get(1)
                && let Some(t) = children(values.data).first()
            {
                signing_time = parse_time(t);
            }
        }
    }
    Some(SignedAttributes {
        digest,
        signing_time,
    })
}
