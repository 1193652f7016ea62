//! The reception point's decision table (RT §6.3, §9), as a pure function.
//!
//! Owns: reading what a received message claims to be (headers, daticert,
//! MIME layout) and deciding, given what the signature and the provider
//! index said, whether it is (a) a genuine PEC message, (b) from a listed
//! provider but malformed — an anomaly, with the reason — or (c) ordinary
//! mail. Must not touch: cryptography (its outcome is an input: [`Origin`]).

use super::PecType;
use super::daticert::Daticert;
use super::headers::{
    TRANSPORT_ANOMALY, TRANSPORT_PEC, X_RICEVUTA, X_RIFERIMENTO_MESSAGE_ID, X_TIPO_RICEVUTA,
    X_TRASPORTO, X_VERIFICA_SICUREZZA,
};
use super::mime::{header_fields, header_value, split_header, unfold};
use mail_parser::MessageParser;

/// What the cryptographic and index checks established (RT §6.3 steps 1–3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No S/MIME structure.
    NotSigned(String),
    /// Signature value, chain or validity failed.
    SignatureInvalid(String),
    /// Valid signature by a certificate the provider index does not list.
    UnknownProvider(String),
    /// Valid signature by a listed provider. `managed_domains` is `None` when
    /// no index was consulted (then the domain check of step 4 is skipped).
    Provider {
        name: Option<String>,
        managed_domains: Option<Vec<String>>,
    },
}

/// What the headers say the message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum ClaimedKind {
    Pec(PecType),
    #[serde(serialize_with = "ser_anomaly")]
    AnomalyEnvelope,
}

fn ser_anomaly<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("busta-anomalia")
}

impl ClaimedKind {
    pub fn name(self) -> &'static str {
        match self {
            ClaimedKind::Pec(t) => t.token(),
            ClaimedKind::AnomalyEnvelope => "busta-anomalia",
        }
    }
}

/// The three outcomes of the decision table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A genuine PEC message.
    Pec,
    /// From a listed provider but not conforming: wrap in a busta di anomalia.
    Anomaly,
    /// Not from a PEC system.
    Ordinary,
}

/// The verdict with everything read on the way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub class: Class,
    /// Why the message is not a genuine PEC message (None when it is).
    pub reason: Option<String>,
    /// What the headers claim, even when the signature failed.
    pub claimed: Option<ClaimedKind>,
    /// `X-Ricevuta` / `X-Trasporto` raw values.
    pub x_ricevuta: Option<String>,
    pub x_trasporto: Option<String>,
    pub x_tipo_ricevuta: Option<String>,
    pub x_verifica_sicurezza: Option<String>,
    pub x_riferimento_message_id: Option<String>,
    pub provider: Option<String>,
    /// Also at the top of the report; not repeated in its JSON.
    #[serde(skip)]
    pub daticert: Option<Daticert>,
    pub daticert_error: Option<String>,
    /// Whether the entity carries a `postacert.eml`.
    pub has_postacert: bool,
    /// Whether this is an ETSI REM message (REM-Policy-IT), not PEC.
    pub rem: bool,
}

/// Facts read from the message, independent of the signature.
struct Reading {
    claimed: Option<ClaimedKind>,
    claim_error: Option<String>,
    x_ricevuta: Option<String>,
    x_trasporto: Option<String>,
    x_tipo_ricevuta: Option<String>,
    x_verifica_sicurezza: Option<String>,
    x_riferimento: Option<String>,
    from_domain: Option<String>,
    daticert: Option<Daticert>,
    daticert_error: Option<String>,
    has_postacert: bool,
    rem: bool,
}

fn read(top_header: &[u8], entity: &[u8]) -> Reading {
    let mut r = Reading {
        claimed: None,
        claim_error: None,
        x_ricevuta: None,
        x_trasporto: None,
        x_tipo_ricevuta: None,
        x_verifica_sicurezza: None,
        x_riferimento: None,
        from_domain: None,
        daticert: None,
        daticert_error: None,
        has_postacert: false,
        rem: false,
    };
    let mut repeated = None;
    for f in header_fields(top_header) {
        let v = || Some(unfold(f.value()));
        // RT §3.11: names case-insensitive (`X-Tiporicevuta` in the wild).
        if f.is(X_RICEVUTA) {
            if r.x_ricevuta.is_some() {
                repeated = Some(X_RICEVUTA);
            }
            r.x_ricevuta = v();
        } else if f.is(X_TRASPORTO) {
            if r.x_trasporto.is_some() {
                repeated = Some(X_TRASPORTO);
            }
            r.x_trasporto = v();
        } else if f.is(X_TIPO_RICEVUTA) {
            r.x_tipo_ricevuta = v();
        } else if f.is(X_VERIFICA_SICUREZZA) {
            r.x_verifica_sicurezza = v();
        } else if f.is(X_RIFERIMENTO_MESSAGE_ID) {
            r.x_riferimento = v();
        } else if f.name.to_ascii_lowercase().starts_with("rem-") {
            r.rem = true;
        }
    }
    // Classification rule of every consumer (RT §3.11): X-Ricevuta ⇒ notice;
    // else X-Trasporto decides envelope or anomaly.
    if let Some(v) = &r.x_ricevuta {
        match PecType::from_token(v) {
            Some(PecType::Transport) | None => {
                r.claim_error = Some(format!("valore X-Ricevuta non valido: {v:?}"))
            }
            Some(t) => r.claimed = Some(ClaimedKind::Pec(t)),
        }
    } else if let Some(v) = &r.x_trasporto {
        match v.as_str() {
            TRANSPORT_PEC => r.claimed = Some(ClaimedKind::Pec(PecType::Transport)),
            TRANSPORT_ANOMALY => r.claimed = Some(ClaimedKind::AnomalyEnvelope),
            _ => r.claim_error = Some(format!("valore X-Trasporto non valido: {v:?}")),
        }
    }
    // Outside the signature, and each reader may take another copy.
    if let Some(name) = repeated {
        r.claim_error = Some(format!("intestazione {name} ripetuta"));
    }
    let mut h = top_header.to_vec();
    h.extend_from_slice(b"\r\n");
    if let Some(m) = MessageParser::default().parse_headers(&h[..]) {
        r.from_domain = m
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
    }
    // The entity's parts are walked, not parsed: only daticert.xml is
    // decoded, so a large original inside postacert.eml costs nothing here.
    for leaf in super::mime::leaf_parts(entity).unwrap_or_default() {
        let Some(name) = &leaf.name else {
            continue;
        };
        if name.eq_ignore_ascii_case("daticert.xml") && r.daticert.is_none() {
            match Daticert::parse(&super::mime::decoded_body(leaf.header, leaf.body)) {
                Ok(d) => r.daticert = Some(d),
                Err(e) => r.daticert_error = Some(e.to_string()),
            }
        } else if name.eq_ignore_ascii_case("postacert.eml") {
            r.has_postacert = true;
        }
    }
    r
}

/// RT §5.2: the elements each tipo must carry.
fn daticert_consistent(d: &Daticert) -> Result<(), String> {
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("daticert di tipo {} senza {what}", d.tipo))
        }
    };
    match d.tipo {
        PecType::Transport => need(d.ricevuta.is_some(), "<ricevuta>"),
        PecType::Delivery => {
            need(d.ricevuta.is_some(), "<ricevuta>")?;
            need(d.consegna.is_some(), "<consegna>")
        }
        PecType::DeliveryError | PecType::DeliveryTimeout => {
            need(d.consegna.is_some(), "<consegna>")
        }
        // Older implementations put the recipient in <ricezione> (RT §8.4).
        PecType::VirusDetected => need(
            d.consegna.is_some() || !d.ricezione.is_empty(),
            "<consegna>",
        ),
        PecType::TakenInCharge => need(!d.ricezione.is_empty(), "<ricezione>"),
        PecType::Acceptance | PecType::NonAcceptance => Ok(()),
    }
}

/// RT §6.3 step 4, applied to what the signature covers: the From domain
/// is unsigned (a provider passes that check with its own service address),
/// so the party the signed daticert speaks for must be one of the signer's
/// domains too. The sender's provider speaks for its `mittente` (envelope,
/// accettazione, non accettazione, the timers' notices); the recipient's
/// provider for the recipient(s) a receipt is about (`consegna`,
/// `ricezione`), whom nobody else can report on. An avviso di mancata
/// consegna comes from either side (the recipient's provider refusing, or
/// the sender's after a failed relay or a virus). Otherwise a listed
/// provider could close another provider's transactions with a consegna,
/// or send envelopes in another provider's name.
fn parties_served(domains: &[String], d: &Daticert) -> Result<(), String> {
    let served = |addr: &str| {
        addr.rsplit_once('@')
            .is_some_and(|(_, dom)| domains.iter().any(|x| x.eq_ignore_ascii_case(dom.trim())))
    };
    let recipients = || -> Vec<&str> {
        d.consegna.as_deref().map_or_else(
            || d.ricezione.iter().map(String::as_str).collect(),
            |c| vec![c],
        )
    };
    let about: Vec<&str> = match d.tipo {
        PecType::Transport
        | PecType::Acceptance
        | PecType::NonAcceptance
        | PecType::DeliveryTimeout => vec![d.mittente.as_str()],
        PecType::TakenInCharge => d.ricezione.iter().map(String::as_str).collect(),
        PecType::DeliveryError if served(&d.mittente) => Vec::new(),
        PecType::Delivery | PecType::DeliveryError | PecType::VirusDetected => recipients(),
    };
    match about.into_iter().find(|a| !served(a)) {
        None => Ok(()),
        Some(a) => Err(format!(
            "il daticert ({}) riguarda {a}, di un dominio non gestito dal gestore firmatario",
            d.tipo
        )),
    }
}

/// RT §6.3 step 5: formal correctness for the claimed type.
fn well_formed(r: &Reading) -> Result<(), String> {
    if let Some(e) = &r.claim_error {
        return Err(e.clone());
    }
    let claimed = r.claimed.ok_or(
        "messaggio firmato da un gestore senza intestazioni PEC (X-Ricevuta o X-Trasporto)",
    )?;
    let ClaimedKind::Pec(t) = claimed else {
        // A busta di anomalia carries no daticert (RT §3.5). One with a
        // daticert is a certified message whose unsigned X-Trasporto was
        // rewritten (an envelope turned "anomaly" would be delivered with
        // no presa in carico and no receipt).
        return if r.daticert.is_some() || r.daticert_error.is_some() {
            Err("busta di anomalia con daticert.xml: X-Trasporto non coerente con il contenuto firmato".into())
        } else if r.has_postacert {
            Ok(())
        } else {
            Err("busta di anomalia senza il messaggio originale".into())
        };
    };
    let d = match (&r.daticert, &r.daticert_error) {
        (Some(d), _) => d,
        (None, Some(e)) => return Err(format!("daticert.xml non valido: {e}")),
        (None, None) => return Err("daticert.xml assente".into()),
    };
    if d.tipo != t {
        return Err(format!(
            "tipo del daticert ({}) diverso da quello dichiarato nelle intestazioni ({t})",
            d.tipo
        ));
    }
    daticert_consistent(d)?;
    if t == PecType::Transport && !r.has_postacert {
        return Err("busta di trasporto senza postacert.eml".into());
    }
    Ok(())
}

/// How [`classify`] words a message that no PEC provider certifies: an
/// Italian clause, then (after `: `) the technical detail, which may be in
/// English (OpenSSL's, the MIME reader's).
const NOT_SIGNED: &str = "messaggio non firmato";
const BAD_SIGNATURE: &str = "la firma digitale del messaggio non risulta attendibile";
const UNKNOWN_SIGNER: &str = "il firmatario non è un gestore dell'indice dei gestori PEC";

/// The part of a [`Verdict::reason`] a busta di anomalia shows its reader
/// (RT §3.5: a short description, "la firma digitale del messaggio non
/// risulta attendibile"): the Italian clause without the technical detail,
/// which stays in the log.
pub fn reason_for_holder(reason: &str) -> &str {
    for clause in [NOT_SIGNED, BAD_SIGNATURE, UNKNOWN_SIGNER] {
        if reason.starts_with(clause) {
            return clause;
        }
    }
    reason
}

/// Classify a received message.
///
/// `top_header` is the top-level header block (where the PEC headers live);
/// `entity` is the signed entity when there is one, else the whole message.
pub fn classify(top_header: &[u8], entity: &[u8], origin: &Origin) -> Verdict {
    let r = read(top_header, entity);
    let (class, reason, provider) = match origin {
        Origin::NotSigned(why) => (Class::Ordinary, Some(format!("{NOT_SIGNED}: {why}")), None),
        Origin::SignatureInvalid(why) => (
            Class::Ordinary,
            Some(format!("{BAD_SIGNATURE}: {why}")),
            None,
        ),
        Origin::UnknownProvider(why) => (
            Class::Ordinary,
            Some(format!("{UNKNOWN_SIGNER}: {why}")),
            None,
        ),
        Origin::Provider {
            name,
            managed_domains,
        } => {
            let domain_ok = match (managed_domains, &r.from_domain) {
                (None, _) => Ok(()),
                (Some(ds), Some(d)) if ds.iter().any(|x| x.eq_ignore_ascii_case(d)) => Ok(()),
                (Some(_), Some(d)) => Err(format!(
                    "il dominio del mittente ({d}) non è gestito dal gestore firmatario"
                )),
                (Some(_), None) => Err("mittente (From) assente o non valido".to_string()),
            };
            let signed_ok = || match (managed_domains, &r.daticert) {
                (Some(ds), Some(d)) => parties_served(ds, d),
                _ => Ok(()),
            };
            match domain_ok
                .and_then(|_| well_formed(&r))
                .and_then(|_| signed_ok())
            {
                Ok(()) => (Class::Pec, None, name.clone()),
                Err(e) => (Class::Anomaly, Some(e), name.clone()),
            }
        }
    };
    Verdict {
        class,
        reason,
        claimed: r.claimed,
        x_ricevuta: r.x_ricevuta,
        x_trasporto: r.x_trasporto,
        x_tipo_ricevuta: r.x_tipo_ricevuta,
        x_verifica_sicurezza: r.x_verifica_sicurezza,
        x_riferimento_message_id: r.x_riferimento,
        provider,
        daticert: r.daticert,
        daticert_error: r.daticert_error,
        has_postacert: r.has_postacert,
        rem: r.rem,
    }
}

/// Convenience for whole messages: split the header block off `raw`.
pub fn top_header(raw: &[u8]) -> &[u8] {
    split_header(raw).0
}

/// The decoded Subject of a header block (RFC 2047), empty if absent.
pub fn subject(top_header: &[u8]) -> String {
    let mut h = top_header.to_vec();
    h.extend_from_slice(b"\r\n");
    MessageParser::default()
        .parse_headers(&h[..])
        .and_then(|m| m.subject().map(str::to_string))
        .or_else(|| header_value(top_header, "Subject"))
        .unwrap_or_default()
}
