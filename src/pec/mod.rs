//! The PEC domain: vocabulary, message builders, daticert, classification.
//!
//! Owns: every rule of the technical rules (RT, DM 2/11/2005 and its Allegato,
//! as digested in `shared/docs/pec-rules.md`) that can be decided without I/O.
//! Must not touch: sockets, files, the store, OpenSSL. Everything here is a pure
//! function of its inputs, so it can be tested and fuzzed in isolation.

pub mod breve;
pub mod build;
pub mod classify;
pub mod daticert;
pub mod headers;
pub mod ids;
pub mod mime;
pub mod original;
pub mod text;

use std::fmt;

/// The type of a PEC message as written in daticert `tipo` and, for notices,
/// in `X-Ricevuta`. RT §3.11, DTD `postacert/@tipo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum PecType {
    /// *ricevuta di accettazione*
    Acceptance,
    /// *avviso di non accettazione* (formal or virus)
    NonAcceptance,
    /// *ricevuta di presa in carico*
    TakenInCharge,
    /// *ricevuta di avvenuta consegna* (completa, breve, sintetica)
    Delivery,
    /// *busta di trasporto* (daticert only; the header is `X-Trasporto`)
    Transport,
    /// *avviso di mancata consegna* (ordinary or virus)
    DeliveryError,
    /// *avviso di mancata consegna per superamento dei tempi massimi* (12 h / 24 h)
    DeliveryTimeout,
    /// *avviso di rilevazione virus*
    VirusDetected,
}

impl PecType {
    pub const ALL: [PecType; 8] = [
        PecType::Acceptance,
        PecType::NonAcceptance,
        PecType::TakenInCharge,
        PecType::Delivery,
        PecType::Transport,
        PecType::DeliveryError,
        PecType::DeliveryTimeout,
        PecType::VirusDetected,
    ];

    /// The token used in daticert `tipo` and `X-Ricevuta`.
    pub fn token(self) -> &'static str {
        match self {
            PecType::Acceptance => "accettazione",
            PecType::NonAcceptance => "non-accettazione",
            PecType::TakenInCharge => "presa-in-carico",
            PecType::Delivery => "avvenuta-consegna",
            PecType::Transport => "posta-certificata",
            PecType::DeliveryError => "errore-consegna",
            PecType::DeliveryTimeout => "preavviso-errore-consegna",
            PecType::VirusDetected => "rilevazione-virus",
        }
    }

    /// Exact match: header and attribute values are case-sensitive tokens (RT §3.11).
    pub fn from_token(s: &str) -> Option<Self> {
        PecType::ALL.into_iter().find(|t| t.token() == s)
    }
}

impl From<PecType> for &'static str {
    fn from(t: PecType) -> Self {
        t.token()
    }
}

impl fmt::Display for PecType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The receipt the sender asked for with `X-TipoRicevuta` (RT §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum ReceiptVariant {
    /// *completa*: the original with attachments.
    #[default]
    Full,
    /// *breve*: the original with attachments replaced by their hashes.
    Short,
    /// *sintetica*: text and daticert only.
    Summary,
}

impl ReceiptVariant {
    pub fn token(self) -> &'static str {
        match self {
            ReceiptVariant::Full => "completa",
            ReceiptVariant::Short => "breve",
            ReceiptVariant::Summary => "sintetica",
        }
    }

    pub fn from_token(s: &str) -> Option<Self> {
        match s {
            "completa" => Some(ReceiptVariant::Full),
            "breve" => Some(ReceiptVariant::Short),
            "sintetica" => Some(ReceiptVariant::Summary),
            _ => None,
        }
    }
}

impl From<ReceiptVariant> for &'static str {
    fn from(v: ReceiptVariant) -> Self {
        v.token()
    }
}

/// daticert `errore` attribute. RT §5.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum ErrorKind {
    #[default]
    None,
    NoRecipient,
    NoDomain,
    Virus,
    Other,
}

impl ErrorKind {
    pub fn token(self) -> &'static str {
        match self {
            ErrorKind::None => "nessuno",
            ErrorKind::NoRecipient => "no-dest",
            ErrorKind::NoDomain => "no-dominio",
            ErrorKind::Virus => "virus",
            ErrorKind::Other => "altro",
        }
    }

    pub fn from_token(s: &str) -> Option<Self> {
        [
            ErrorKind::None,
            ErrorKind::NoRecipient,
            ErrorKind::NoDomain,
            ErrorKind::Virus,
            ErrorKind::Other,
        ]
        .into_iter()
        .find(|e| e.token() == s)
    }
}

impl From<ErrorKind> for &'static str {
    fn from(e: ErrorKind) -> Self {
        e.token()
    }
}

/// daticert `destinatari/@tipo`: is the recipient's domain a PEC domain
/// (`managedDomains` of some provider) or ordinary mail? RT §1.3 step 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum RecipientClass {
    #[default]
    Certified,
    External,
}

impl RecipientClass {
    pub fn token(self) -> &'static str {
        match self {
            RecipientClass::Certified => "certificato",
            RecipientClass::External => "esterno",
        }
    }

    pub fn from_token(s: &str) -> Option<Self> {
        match s {
            "certificato" => Some(RecipientClass::Certified),
            "esterno" => Some(RecipientClass::External),
            _ => None,
        }
    }
}

impl From<RecipientClass> for &'static str {
    fn from(c: RecipientClass) -> Self {
        c.token()
    }
}

/// Whether a recipient was named in `To:` (primary) or `Cc:` (copy). Decides
/// the delivery-receipt variant (RT §3.8: Cc recipients always get sintetica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientRole {
    #[default]
    To,
    Cc,
}

/// One recipient of a transaction, as the certification data see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub class: RecipientClass,
    pub role: RecipientRole,
}

/// The certifying provider: who signs and in whose name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// `gestore-emittente` and the name used in NOTA 12 error strings.
    pub name: String,
    /// The provider mail domain (msgid suffix, service address domain).
    pub domain: String,
}

impl Provider {
    /// The service address, the `From:` of everything the provider generates
    /// and the rfc822Name of its signing certificate (RT §1.1, §3.0).
    pub fn service_address(&self) -> String {
        format!("posta-certificata@{}", self.domain)
    }
}
