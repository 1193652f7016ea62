//! Detached S/MIME v3 signing with the provider key (RT §3.0, §6).

use super::SmimeError;
use crate::pec::mime::UnsignedMessage;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::X509;

/// The digest of the CMS signature. RT §6.2: providers still sign with SHA-1
/// (`micalg="sha1"`); SHA-256 is pecd's default, SHA-1 is there for
/// byte-compatibility with today's peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    Sha1,
    #[default]
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    fn md(self) -> MessageDigest {
        match self {
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha512 => MessageDigest::sha512(),
        }
    }

    /// The `micalg` parameter. RFC 5751 §3.4.3.2 names are `sha-256` etc.;
    /// for SHA-1 the providers write `sha1` (RT §6.2) and so does pecd.
    pub fn micalg(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha256 => "sha-256",
            Digest::Sha384 => "sha-384",
            Digest::Sha512 => "sha-512",
        }
    }

    pub fn from_name(s: &str) -> Option<Digest> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Some(Digest::Sha1),
            "sha256" | "sha-256" => Some(Digest::Sha256),
            "sha384" | "sha-384" => Some(Digest::Sha384),
            "sha512" | "sha-512" => Some(Digest::Sha512),
            _ => None,
        }
    }
}

/// The `protocol` of the multipart/signed and the type of the signature part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureProtocol {
    /// `application/pkcs7-signature` (RFC 5751).
    Standard,
    /// `application/x-pkcs7-signature`, what every provider sends (RT §6.2).
    #[default]
    Legacy,
}

impl SignatureProtocol {
    pub fn mime_type(self) -> &'static str {
        match self {
            SignatureProtocol::Standard => "application/pkcs7-signature",
            SignatureProtocol::Legacy => "application/x-pkcs7-signature",
        }
    }
}

/// The provider's signing identity.
pub struct Signer {
    cert: X509,
    key: PKey<Private>,
    chain: Stack<X509>,
    digest: Digest,
    protocol: SignatureProtocol,
    capabilities: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.cert.subject_name())
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Build from PEM: the certificate file may carry intermediates after the
    /// leaf; they are included in the CMS so receivers can build the chain.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], digest: Digest) -> Result<Signer, SmimeError> {
        let mut certs = X509::stack_from_pem(cert_pem).map_err(|e| SmimeError::Pem {
            what: "certificate".into(),
            detail: e.to_string(),
        })?;
        if certs.is_empty() {
            return Err(SmimeError::Pem {
                what: "certificate".into(),
                detail: "no certificate found".into(),
            });
        }
        let cert = certs.remove(0);
        let key = PKey::private_key_from_pem(key_pem).map_err(|e| SmimeError::Pem {
            what: "private key".into(),
            detail: e.to_string(),
        })?;
        let pubkey = cert.public_key()?;
        if !pubkey.public_eq(&key) {
            return Err(SmimeError::KeyMismatch);
        }
        let mut chain = Stack::new()?;
        for c in certs {
            chain.push(c)?;
        }
        Ok(Signer {
            cert,
            key,
            chain,
            digest,
            protocol: SignatureProtocol::default(),
            capabilities: false,
        })
    }

    /// Load from files.
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        digest: Digest,
    ) -> Result<Signer, SmimeError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| SmimeError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Self::from_pem(&read(cert)?, &read(key)?, digest)
    }

    pub fn with_protocol(mut self, protocol: SignatureProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Add the SMIMECapabilities signed attribute (off by default). It lists
    /// the algorithms the signer can *decrypt*; a PEC service address never
    /// receives encrypted mail, so it informs no one, and building it costs
    /// about 5 % of a signature. Aruba and Sogei include it (RT §6.2): turn
    /// it on for byte-level likeness with them.
    pub fn with_smime_capabilities(mut self, on: bool) -> Self {
        self.capabilities = on;
        self
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn certificate(&self) -> &X509 {
        &self.cert
    }

    /// The detached CMS SignedData (DER) over `content`, which must already
    /// be CRLF-canonical: it is signed as binary, byte for byte.
    /// Signed attributes: contentType, signingTime, messageDigest, and
    /// smimeCapabilities when enabled ([`Signer::with_smime_capabilities`]).
    pub fn sign_detached(&self, content: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::PARTIAL;
        let cms = CmsContentInfo::sign(
            None,
            None::<&PKeyRef<Private>>,
            Some(&self.chain),
            None,
            flags,
        )?;
        let signer_flags = if self.capabilities {
            CMSOptions::BINARY
        } else {
            CMSOptions::BINARY | CMSOptions::NOSMIMECAP
        };
        ffi::add_signer_and_finalize(
            &cms,
            &self.cert,
            &self.key,
            self.digest.md(),
            content,
            flags,
            signer_flags,
        )?;
        Ok(cms.to_der()?)
    }

    /// Sign a generated message and return the bytes that travel.
    pub fn sign(&self, message: &UnsignedMessage) -> Result<Vec<u8>, SmimeError> {
        let der = self.sign_detached(&message.entity)?;
        Ok(message.assemble(&der, self.digest.micalg(), self.protocol.mime_type()))
    }

    /// [`sign`](Self::sign), consuming the message: its entity's buffer
    /// becomes the output (no second copy of a large message).
    pub fn sign_owned(&self, message: UnsignedMessage) -> Result<Vec<u8>, SmimeError> {
        let der = self.sign_detached(&message.entity)?;
        Ok(message.assemble_owned(&der, self.digest.micalg(), self.protocol.mime_type()))
    }
}

/// The Rust `openssl` crate builds CMS signatures only with the key's default
/// digest (SHA-256 for RSA). Choosing the digest (SHA-1 for today's peers)
/// needs `CMS_add1_signer`, which the crate does not wrap; these two calls are
/// the whole unsafe surface of pecd.
#[allow(unsafe_code)]
mod ffi {
    use foreign_types::ForeignType;
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::error::ErrorStack;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::X509;
    use std::os::raw::{c_int, c_uint, c_void};

    unsafe extern "C" {
        fn CMS_add1_signer(
            cms: *mut openssl_sys::CMS_ContentInfo,
            signer: *mut openssl_sys::X509,
            pk: *mut openssl_sys::EVP_PKEY,
            md: *const openssl_sys::EVP_MD,
            flags: c_uint,
        ) -> *mut c_void;
        fn CMS_final(
            cms: *mut openssl_sys::CMS_ContentInfo,
            data: *mut openssl_sys::BIO,
            dcont: *mut openssl_sys::BIO,
            flags: c_uint,
        ) -> c_int;
    }

    pub(super) fn add_signer_and_finalize(
        cms: &CmsContentInfo,
        cert: &X509,
        key: &PKey<Private>,
        md: MessageDigest,
        content: &[u8],
        flags: CMSOptions,
        signer_flags: CMSOptions,
    ) -> Result<(), ErrorStack> {
        let len = c_int::try_from(content.len()).map_err(|_| ErrorStack::get())?;
        // SAFETY: every pointer comes from a live owned OpenSSL object borrowed
        // for the duration of the calls; CMS_add1_signer takes its own
        // references to cert and key; the memory BIO only reads `content`,
        // which outlives it, and is freed before returning.
        unsafe {
            let si = CMS_add1_signer(
                cms.as_ptr(),
                cert.as_ptr(),
                key.as_ptr(),
                md.as_ptr(),
                signer_flags.bits(),
            );
            if si.is_null() {
                return Err(ErrorStack::get());
            }
            let bio = openssl_sys::BIO_new_mem_buf(content.as_ptr() as *const c_void, len);
            if bio.is_null() {
                return Err(ErrorStack::get());
            }
            let ok = CMS_final(cms.as_ptr(), bio, std::ptr::null_mut(), flags.bits());
            openssl_sys::BIO_free_all(bio);
            if ok != 1 {
                return Err(ErrorStack::get());
            }
        }
        Ok(())
    }
}
