//! S/MIME: the only module that touches OpenSSL's CMS/PKCS#7.
//!
//! Owns: producing the detached signature of a generated message
//! ([`Signer`]), and checking a received one ([`Verifier`]): signature value,
//! chain to the configured trust anchors, validity at a given time, and the
//! facts the classifier needs (signer certificate, its SHA-1 for the provider
//! index, digest algorithm, signing time). Must not touch: PEC semantics
//! (that is `pec::classify`), the provider index, I/O beyond reading the
//! PEM files it is pointed at.

mod cms_info;
mod sign;
mod verify;

pub use cms_info::SignedAttributes;
pub use sign::{Digest, SignatureProtocol, Signer};
pub use verify::{
    SignatureStatus, SignedParts, Verification, Verifier, VerifyTime, split_multipart_signed,
};

/// Errors of the S/MIME layer.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid certificate or key in {what}: {detail}")]
    Pem { what: String, detail: String },
    #[error("the signing key does not match the certificate")]
    KeyMismatch,
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("not an S/MIME multipart/signed message: {0}")]
    NotSigned(String),
}

/// The content of a signed CMS (`.p7m`, DER or PEM, content attached)
/// whose signature verifies and whose signer is, or chains to, one of
/// `trusted` (empty: the system CA store) (RT §7: the published provider
/// index). None: not a CMS at all (the caller decides what a plain
/// document is worth).
pub fn open_signed(
    data: &[u8],
    trusted: &[openssl::x509::X509],
) -> Option<Result<Vec<u8>, SmimeError>> {
    use openssl::cms::{CMSOptions, CmsContentInfo};
    let cms = if data.starts_with(b"-----BEGIN") {
        CmsContentInfo::from_pem(data)
    } else {
        CmsContentInfo::from_der(data)
    };
    let mut cms = cms.ok()?;
    Some((|| {
        let mut b = openssl::x509::store::X509StoreBuilder::new()?;
        if trusted.is_empty() {
            b.set_default_paths()?;
        }
        for c in trusted {
            b.add_cert(c.clone())?;
        }
        // A signer named directly (not its CA) is trusted as it stands;
        // the index signer's certificate need not be an e-mail one.
        b.set_flags(openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN)?;
        b.set_purpose(openssl::x509::X509PurposeId::ANY)?;
        let store = b.build();
        let mut out = Vec::new();
        cms.verify(None, Some(&store), None, Some(&mut out), CMSOptions::BINARY)?;
        Ok(out)
    })())
}

/// Certificate revocation lists from a file: PEM (one or more CRLs) or
/// DER (one), as CAs publish them.
pub fn load_crls(path: &std::path::Path) -> Result<Vec<openssl::x509::X509Crl>, SmimeError> {
    let bytes = std::fs::read(path).map_err(|source| SmimeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let bad = |detail: String| SmimeError::Pem {
        what: path.display().to_string(),
        detail,
    };
    const BEGIN: &[u8] = b"-----BEGIN X509 CRL-----";
    if !bytes.windows(BEGIN.len()).any(|w| w == BEGIN) {
        return openssl::x509::X509Crl::from_der(&bytes)
            .map(|c| vec![c])
            .map_err(|e| bad(format!("not a CRL (PEM or DER): {e}")));
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for chunk in text.split("-----BEGIN X509 CRL-----").skip(1) {
        let pem = format!("-----BEGIN X509 CRL-----{chunk}");
        out.push(openssl::x509::X509Crl::from_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// Hex SHA-1 of a DER certificate, uppercase, as `providerCertificateHash`
/// values are usually written (lookups are case-insensitive: RT §7).
pub fn certificate_sha1_hex(der: &[u8]) -> String {
    openssl::sha::sha1(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Load every certificate in a PEM file or in the PEM files of a directory.
pub fn load_certificates(path: &std::path::Path) -> Result<Vec<openssl::x509::X509>, SmimeError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| SmimeError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let mut out = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|source| SmimeError::Read {
                path: path.display().to_string(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            // A directory such as /etc/ssl/certs holds other files too;
            // anything that is not PEM certificates is skipped.
            if let Ok(certs) = openssl::x509::X509::stack_from_pem(&read(&p)?) {
                out.extend(certs);
            }
        }
    } else {
        let pem = read(path)?;
        let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| SmimeError::Pem {
            what: path.display().to_string(),
            detail: e.to_string(),
        })?;
        out.extend(certs);
    }
    if out.is_empty() {
        return Err(SmimeError::Pem {
            what: path.display().to_string(),
            detail: "no certificate found".into(),
        });
    }
    Ok(out)
}
