//! `pecd verify`: verify and classify message files, and render the result.
//!
//! Owns: the glue between `smime` (signature, chain, time), `index` (is the
//! signer a listed provider?) and `pec::classify` (what is it?), the report
//! shape (human and JSON) and the exit-code policy. Must not touch: files
//! (callers pass bytes), the process exit (callers map [`Outcome::exit_code`]).

use crate::index::{ProviderIndex, SignerLookup};
use crate::pec::classify::{self, ClaimedKind, Class, Origin, Verdict};
use crate::pec::daticert::Daticert;
use crate::pec::mime::{header_fields, split_header};
use crate::smime::{SignatureStatus, Verification, Verifier, VerifyTime, split_multipart_signed};
use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;

/// The verdict of one file, ordered by severity for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pec,
    Anomaly,
    Ordinary,
    Unreadable,
}

impl Outcome {
    /// 0 valid PEC, 1 anomaly-class, 3 ordinary mail, 4 unreadable input
    /// (2 is left to command-line usage errors).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Pec => 0,
            Outcome::Anomaly => 1,
            Outcome::Ordinary => 3,
            Outcome::Unreadable => 4,
        }
    }
}

/// Everything `pecd verify` says about one message.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub outcome: Outcome,
    /// daticert-style kind (`accettazione`, `posta-certificata`, …) or null.
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub signature: Option<Verification>,
    /// The listed provider that signed, when an index was consulted.
    pub provider: Option<String>,
    /// False when no provider index was given.
    pub provider_checked: bool,
    /// The signed envelope was found inside a wrapper (e.g. a mailing list).
    pub wrapped: bool,
    /// The signed entity needed no line-ending repair: it was verified as
    /// the very bytes that will be stored and read again. A saved file may
    /// have bare LFs (verified after canonicalisation, RFC 5751 §3.1.1);
    /// over SMTP a provider's message never does, and a bare CR reads as a
    /// line break to the canonicalised copy and not to a MIME walker of the
    /// stored bytes, so those two would see different parts.
    #[serde(skip)]
    pub canonical: bool,
    /// The certification data (`daticert.xml`), when readable.
    pub daticert: Option<Daticert>,
    pub verdict: Option<Verdict>,
}

/// The trust context of a verification run.
pub struct Checker {
    pub verifier: Verifier,
    pub index: Option<ProviderIndex>,
    pub when: VerifyTime,
}

/// A signed envelope inside a wrapper: the first part of a `multipart/mixed`
/// (a mailing list re-sending a PEC envelope, sample 06).
fn wrapped_signed_part(raw: &[u8]) -> Option<&[u8]> {
    let msg = MessageParser::default().parse(raw)?;
    let part = msg.parts.get(1)?;
    let is_signed = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("signed"))
    });
    let (h, e) = (part.offset_header as usize, part.offset_end as usize);
    (is_signed && h < e && e <= raw.len()).then(|| &raw[h..e])
}

impl Checker {
    /// Verify and classify one message, certificates checked at
    /// `self.when`.
    pub fn check(&self, file: &str, raw: &[u8]) -> Report {
        self.check_at(file, raw, self.when)
    }

    /// [`Checker::check`] with certificates checked at `when`.
    pub fn check_at(&self, file: &str, raw: &[u8], when: VerifyTime) -> Report {
        let (header, _) = split_header(raw);
        if raw.iter().all(u8::is_ascii_whitespace) || header_fields(header).is_empty() {
            return Report {
                file: file.to_string(),
                outcome: Outcome::Unreadable,
                kind: None,
                reason: Some(if raw.is_empty() {
                    "empty file".into()
                } else {
                    "not an e-mail message: no header fields".into()
                }),
                signature: None,
                provider: None,
                provider_checked: self.index.is_some(),
                wrapped: false,
                canonical: true,
                daticert: None,
                verdict: None,
            };
        }
        // The signed entity is classified where it lies (borrowed from
        // `raw` when canonical): a large message is not copied for it.
        let (parts, wrapped) = match split_multipart_signed(raw) {
            Ok(parts) => (Ok(parts), false),
            Err(why) => match wrapped_signed_part(raw) {
                Some(inner) => (split_multipart_signed(inner), true),
                None => (Err(why), false),
            },
        };
        let v = match &parts {
            Ok(p) => self.verifier.verify_parts(p, when),
            Err(why) => Verification::not_signed(why.clone()),
        };
        let mut provider = None;
        let origin = match &v.status {
            SignatureStatus::NotSigned(why) => Origin::NotSigned(why.clone()),
            SignatureStatus::BadSignature(why) | SignatureStatus::UntrustedChain(why) => {
                Origin::SignatureInvalid(why.clone())
            }
            SignatureStatus::Valid => match &self.index {
                None => Origin::Provider {
                    name: None,
                    managed_domains: None,
                },
                Some(idx) => {
                    let hash = v.signer_sha1.clone().unwrap_or_default();
                    let der = v.signer_der.clone().unwrap_or_default();
                    match idx.lookup_signer(&hash, &der) {
                        SignerLookup::Found(p) => {
                            provider = Some(p.name.clone());
                            Origin::Provider {
                                name: Some(p.name.clone()),
                                managed_domains: Some(idx.signer_domains(&hash, &der)),
                            }
                        }
                        SignerLookup::Unknown => {
                            Origin::UnknownProvider(format!("certificato {hash} non presente"))
                        }
                        SignerLookup::CertificateMismatch(p) => Origin::UnknownProvider(format!(
                            "l'hash {hash} è di {:?} ma il certificato non coincide",
                            p.name
                        )),
                    }
                }
            },
        };
        let entity: &[u8] = match &parts {
            Ok(p) => &p.content,
            Err(_) => raw,
        };
        let canonical = match &parts {
            Ok(p) => matches!(p.content, std::borrow::Cow::Borrowed(_)),
            Err(_) => true,
        };
        let verdict = classify::classify(header, entity, &origin);
        let outcome = match verdict.class {
            Class::Pec => Outcome::Pec,
            Class::Anomaly => Outcome::Anomaly,
            Class::Ordinary => Outcome::Ordinary,
        };
        Report {
            file: file.to_string(),
            outcome,
            kind: verdict.claimed.map(|k| k.name().to_string()),
            reason: verdict.reason.clone(),
            signature: Some(v),
            provider,
            provider_checked: self.index.is_some(),
            wrapped,
            canonical,
            daticert: verdict.daticert.clone(),
            verdict: Some(verdict),
        }
    }
}

/// The decoded content of the first MIME part named `name` (e.g.
/// `postacert.eml`), at any depth of the top-level message.
pub fn part(raw: &[u8], name: &str) -> Option<Vec<u8>> {
    parts(raw, &[name]).pop().flatten()
}

/// Several named parts with one walk of the MIME structure, in the order
/// asked. Nothing but those parts is decoded (a large attachment inside
/// `postacert.eml` is never expanded).
pub fn parts(raw: &[u8], names: &[&str]) -> Vec<Option<Vec<u8>>> {
    crate::pec::mime::named_parts(raw, names)
}

impl Report {
    /// One JSON object (one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Human-readable block.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n", self.file);
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<19}{v}\n"));
        let outcome = match self.outcome {
            Outcome::Pec => "valid PEC message".to_string(),
            Outcome::Anomaly => "anomaly (from a PEC provider, not conforming)".to_string(),
            Outcome::Ordinary => "ordinary mail (not from a PEC system)".to_string(),
            Outcome::Unreadable => "unreadable".to_string(),
        };
        line("result:", outcome);
        if let Some(r) = &self.reason {
            line("reason:", r.clone());
        }
        if let Some(v) = &self.verdict {
            let header = match (v.claimed, &v.x_ricevuta, &v.x_trasporto) {
                (Some(ClaimedKind::Pec(_)), Some(x), _) => format!(" (X-Ricevuta: {x})"),
                (Some(_), None, Some(x)) => format!(" (X-Trasporto: {x})"),
                _ => String::new(),
            };
            line(
                "kind:",
                format!(
                    "{}{header}",
                    self.kind.as_deref().unwrap_or("none (no PEC headers)")
                ),
            );
            if let Some(t) = &v.x_tipo_ricevuta {
                line("X-TipoRicevuta:", t.clone());
            }
            if v.rem {
                line("note:", "ETSI REM message (REM-Policy-IT), not PEC".into());
            }
        }
        if self.wrapped {
            line(
                "note:",
                "signed envelope found inside a wrapper (first MIME part)".into(),
            );
        }
        if let Some(sig) = &self.signature {
            let status = match &sig.status {
                SignatureStatus::Valid => "valid".to_string(),
                SignatureStatus::NotSigned(r) => format!("not signed: {r}"),
                SignatureStatus::BadSignature(r) => format!("BAD SIGNATURE: {r}"),
                SignatureStatus::UntrustedChain(r) => format!("untrusted chain: {r}"),
            };
            line("signature:", status);
            if let Some(subj) = &sig.signer_subject {
                let emails = if sig.signer_emails.is_empty() {
                    String::new()
                } else {
                    format!(" <{}>", sig.signer_emails.join(", "))
                };
                line("signer:", format!("{subj}{emails}"));
            }
            if let Some(d) = &sig.attributes.digest {
                line("digest:", d.clone());
            }
            if let Some(t) = sig.attributes.signing_time {
                line("signing time:", t.to_rfc3339());
            }
            if let Some(t) = sig.checked_at {
                line("checked at:", t.to_rfc3339());
            }
        }
        line(
            "provider:",
            match (&self.provider, self.provider_checked) {
                (Some(p), _) => p.clone(),
                (None, false) => "not checked (no --index)".into(),
                (None, true) => "not in the provider index".into(),
            },
        );
        if let Some(d) = self.verdict.as_ref().and_then(|v| v.daticert.as_ref()) {
            line("tipo:", d.tipo.to_string());
            line("errore:", d.errore.token().to_string());
            line("mittente:", d.mittente.clone());
            for x in &d.destinatari {
                line(
                    "destinatari:",
                    format!("{} ({})", x.address, x.tipo.token()),
                );
            }
            line("risposte:", d.risposte.clone());
            if let Some(o) = &d.oggetto {
                line("oggetto:", o.clone());
            }
            line("gestore-emittente:", d.gestore_emittente.clone());
            line(
                "data:",
                format!("{} {} (zona {})", d.data.giorno, d.data.ora, d.data.zona),
            );
            line("identificativo:", d.identificativo.clone());
            if let Some(m) = &d.msgid {
                line("msgid:", m.clone());
            }
            if let Some(r) = d.ricevuta {
                line("ricevuta:", r.token().to_string());
            }
            if let Some(c) = &d.consegna {
                line("consegna:", c.clone());
            }
            for r in &d.ricezione {
                line("ricezione:", r.clone());
            }
            if let Some(e) = &d.errore_esteso {
                line("errore-esteso:", e.clone());
            }
        } else if let Some(e) = self
            .verdict
            .as_ref()
            .and_then(|v| v.daticert_error.as_ref())
        {
            line("daticert:", format!("unreadable: {e}"));
        }
        s
    }
}
