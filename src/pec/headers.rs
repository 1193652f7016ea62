//! PEC header names, their values and the Subject prefixes (RT §3.11).
//!
//! Owns: the mapping between a message kind and what its headers say. Header
//! names are matched case-insensitively (`X-Tiporicevuta` exists in the wild),
//! values are exact lowercase tokens. Must not touch: MIME building or parsing.

use super::{PecType, ReceiptVariant};

pub const X_RICEVUTA: &str = "X-Ricevuta";
pub const X_TRASPORTO: &str = "X-Trasporto";
pub const X_RIFERIMENTO_MESSAGE_ID: &str = "X-Riferimento-Message-ID";
pub const X_TIPO_RICEVUTA: &str = "X-TipoRicevuta";
pub const X_VERIFICA_SICUREZZA: &str = "X-VerificaSicurezza";
pub const X_MITTENTE: &str = "X-Mittente";

/// `X-Trasporto` value of a busta di trasporto.
pub const TRANSPORT_PEC: &str = "posta-certificata";
/// `X-Trasporto` value of a busta di anomalia (RFC 6109 misspells it "X-Trasplorto").
pub const TRANSPORT_ANOMALY: &str = "errore";
/// `X-VerificaSicurezza` value on the virus variants.
pub const SECURITY_ERROR: &str = "errore";

/// The 12 h / 24 h stage of a *preavviso di mancata consegna* (RT §3.10, §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutStage {
    H12,
    H24,
}

/// Every message pecd builds; one variant per row of RT §3.11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// *busta di trasporto*
    Transport,
    /// *busta di anomalia*
    Anomaly,
    /// *ricevuta di accettazione*
    Acceptance,
    /// *avviso di non accettazione*
    NonAcceptance,
    /// *avviso di non accettazione per virus*
    NonAcceptanceVirus,
    /// *ricevuta di presa in carico*
    TakenInCharge,
    /// *ricevuta di avvenuta consegna* completa / breve / sintetica
    Delivery(ReceiptVariant),
    /// *avviso di mancata consegna*
    DeliveryError,
    /// *avviso di mancata consegna per virus*
    DeliveryErrorVirus,
    /// *avviso di rilevazione virus*
    VirusDetected,
    /// *avviso di mancata consegna per superamento dei tempi massimi*
    Timeout(TimeoutStage),
}

impl MessageKind {
    pub fn subject_prefix(self) -> &'static str {
        match self {
            MessageKind::Transport => "POSTA CERTIFICATA: ",
            MessageKind::Anomaly => "ANOMALIA MESSAGGIO: ",
            MessageKind::Acceptance => "ACCETTAZIONE: ",
            MessageKind::NonAcceptance => "AVVISO DI NON ACCETTAZIONE: ",
            MessageKind::NonAcceptanceVirus => "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
            MessageKind::TakenInCharge => "PRESA IN CARICO: ",
            MessageKind::Delivery(_) => "CONSEGNA: ",
            MessageKind::DeliveryError => "AVVISO DI MANCATA CONSEGNA: ",
            MessageKind::DeliveryErrorVirus => "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
            MessageKind::VirusDetected => "PROBLEMA DI SICUREZZA: ",
            MessageKind::Timeout(_) => "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
        }
    }

    /// The daticert `tipo` (None for the anomaly envelope, which has no daticert).
    pub fn pec_type(self) -> Option<PecType> {
        Some(match self {
            MessageKind::Transport => PecType::Transport,
            MessageKind::Anomaly => return None,
            MessageKind::Acceptance => PecType::Acceptance,
            MessageKind::NonAcceptance | MessageKind::NonAcceptanceVirus => PecType::NonAcceptance,
            MessageKind::TakenInCharge => PecType::TakenInCharge,
            MessageKind::Delivery(_) => PecType::Delivery,
            MessageKind::DeliveryError | MessageKind::DeliveryErrorVirus => PecType::DeliveryError,
            MessageKind::VirusDetected => PecType::VirusDetected,
            MessageKind::Timeout(_) => PecType::DeliveryTimeout,
        })
    }

    /// `X-Ricevuta` value (notices only).
    pub fn x_ricevuta(self) -> Option<&'static str> {
        match self {
            MessageKind::Transport | MessageKind::Anomaly => None,
            k => k.pec_type().map(PecType::token),
        }
    }

    /// `X-Trasporto` value (envelopes only).
    pub fn x_trasporto(self) -> Option<&'static str> {
        match self {
            MessageKind::Transport => Some(TRANSPORT_PEC),
            MessageKind::Anomaly => Some(TRANSPORT_ANOMALY),
            _ => None,
        }
    }

    /// Whether `X-VerificaSicurezza: errore` is set.
    pub fn security_error(self) -> bool {
        matches!(
            self,
            MessageKind::NonAcceptanceVirus | MessageKind::DeliveryErrorVirus
        )
    }

    /// Whether the message carries the original as `postacert.eml`.
    /// Originals are forbidden in non-acceptance, timeout and virus notices (RT §3.0).
    pub fn carries_original(self) -> bool {
        matches!(
            self,
            MessageKind::Transport
                | MessageKind::Anomaly
                | MessageKind::Delivery(ReceiptVariant::Full)
                | MessageKind::Delivery(ReceiptVariant::Short)
        )
    }

    /// A stable name for reports and logs.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Transport => "busta-trasporto",
            MessageKind::Anomaly => "busta-anomalia",
            MessageKind::Acceptance => "accettazione",
            MessageKind::NonAcceptance => "non-accettazione",
            MessageKind::NonAcceptanceVirus => "non-accettazione-virus",
            MessageKind::TakenInCharge => "presa-in-carico",
            MessageKind::Delivery(ReceiptVariant::Full) => "avvenuta-consegna-completa",
            MessageKind::Delivery(ReceiptVariant::Short) => "avvenuta-consegna-breve",
            MessageKind::Delivery(ReceiptVariant::Summary) => "avvenuta-consegna-sintetica",
            MessageKind::DeliveryError => "errore-consegna",
            MessageKind::DeliveryErrorVirus => "errore-consegna-virus",
            MessageKind::VirusDetected => "rilevazione-virus",
            MessageKind::Timeout(TimeoutStage::H12) => "preavviso-errore-consegna-12h",
            MessageKind::Timeout(TimeoutStage::H24) => "preavviso-errore-consegna-24h",
        }
    }
}

/// Strip one PEC Subject prefix, if present, to recover the original subject.
pub fn strip_subject_prefix(subject: &str) -> &str {
    const PREFIXES: [&str; 11] = [
        "POSTA CERTIFICATA: ",
        "ANOMALIA MESSAGGIO: ",
        "ACCETTAZIONE: ",
        "AVVISO DI NON ACCETTAZIONE PER VIRUS: ",
        "AVVISO DI NON ACCETTAZIONE: ",
        "PRESA IN CARICO: ",
        "CONSEGNA: ",
        "AVVISO DI MANCATA CONSEGNA PER VIRUS: ",
        "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ",
        "AVVISO DI MANCATA CONSEGNA: ",
        "PROBLEMA DI SICUREZZA: ",
    ];
    PREFIXES
        .iter()
        .find_map(|p| subject.strip_prefix(p))
        .unwrap_or(subject)
}
