//! `daticert.xml`: the certification data carried by every PEC message but
//! the busta di anomalia.
//!
//! Owns: the model, the writer (DTD element order, real XML escaping, UTF-8,
//! 4-space indentation as the providers print it) and a lenient parser
//! (attribute order, whitespace, unknown elements, pre-2016 free-text errors).
//! Must not touch: MIME, signatures. RT §5, `shared/docs/daticert.dtd`.

use super::{ErrorKind, PecType, ReceiptVariant, RecipientClass};
use crate::clock::LegalTime;
use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

/// The `<data>` element as written: local legal date, time and offset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatiDate {
    /// `dd/mm/yyyy`
    pub giorno: String,
    /// `hh:mm:ss`
    pub ora: String,
    /// `+hhmm`
    pub zona: String,
}

impl DatiDate {
    /// The instant it names; none when it does not read as one.
    pub fn instant(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_str(
            &format!(
                "{} {} {}",
                self.giorno.trim(),
                self.ora.trim(),
                self.zona.trim()
            ),
            "%d/%m/%Y %H:%M:%S %z",
        )
        .ok()
        .map(|t| t.to_utc())
    }
}

impl From<LegalTime> for DatiDate {
    fn from(t: LegalTime) -> Self {
        DatiDate {
            giorno: t.giorno(),
            ora: t.ora(),
            zona: t.zona(),
        }
    }
}

/// One `<destinatari>` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Destinatario {
    pub address: String,
    pub tipo: RecipientClass,
}

/// The whole `postacert` document. Field names follow the DTD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Daticert {
    pub tipo: PecType,
    pub errore: ErrorKind,
    pub mittente: String,
    pub destinatari: Vec<Destinatario>,
    pub risposte: String,
    pub oggetto: Option<String>,
    pub gestore_emittente: String,
    pub data: DatiDate,
    /// PEC msgid of the envelope, without angle brackets.
    pub identificativo: String,
    /// Original Message-ID, with angle brackets.
    pub msgid: Option<String>,
    pub ricevuta: Option<ReceiptVariant>,
    pub consegna: Option<String>,
    pub ricezione: Vec<String>,
    pub errore_esteso: Option<String>,
}

/// Why a daticert could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DaticertError {
    #[error("daticert.xml is not well-formed XML: {0}")]
    Xml(String),
    #[error("daticert.xml has no <postacert> root element")]
    NoRoot,
    #[error("daticert.xml: missing required element or attribute <{0}>")]
    Missing(&'static str),
    #[error("daticert.xml: invalid value {value:?} for {field}")]
    BadValue { field: &'static str, value: String },
}

impl Daticert {
    /// Serialise in DTD element order. RT §5.1: UTF-8, no DOCTYPE, no namespace.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut w = Writer::new_with_indent(Vec::with_capacity(1024), b' ', 4);
        // Writing into a Vec cannot fail; the io::Result is only the Writer's
        // generic signature.
        let _ = self.write(&mut w);
        let mut out = w.into_inner();
        out.push(b'\n');
        out
    }

    fn write(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.create_element("postacert")
            .with_attribute(("tipo", self.tipo.token()))
            .with_attribute(("errore", self.errore.token()))
            .write_inner_content(|w| {
                w.create_element("intestazione").write_inner_content(|w| {
                    text_el(w, "mittente", &self.mittente)?;
                    for d in &self.destinatari {
                        w.create_element("destinatari")
                            .with_attribute(("tipo", d.tipo.token()))
                            .write_text_content(BytesText::new(&xml_chars(&d.address)))?;
                    }
                    text_el(w, "risposte", &self.risposte)?;
                    if let Some(o) = &self.oggetto {
                        text_el(w, "oggetto", o)?;
                    }
                    Ok(())
                })?;
                w.create_element("dati").write_inner_content(|w| {
                    text_el(w, "gestore-emittente", &self.gestore_emittente)?;
                    w.create_element("data")
                        .with_attribute(("zona", self.data.zona.as_str()))
                        .write_inner_content(|w| {
                            text_el(w, "giorno", &self.data.giorno)?;
                            text_el(w, "ora", &self.data.ora)
                        })?;
                    text_el(w, "identificativo", &self.identificativo)?;
                    if let Some(m) = &self.msgid {
                        text_el(w, "msgid", m)?;
                    }
                    if let Some(r) = self.ricevuta {
                        w.create_element("ricevuta")
                            .with_attribute(("tipo", r.token()))
                            .write_empty()?;
                    }
                    if let Some(c) = &self.consegna {
                        text_el(w, "consegna", c)?;
                    }
                    for r in &self.ricezione {
                        text_el(w, "ricezione", r)?;
                    }
                    if let Some(e) = &self.errore_esteso {
                        text_el(w, "errore-esteso", e)?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
        Ok(())
    }

    /// Lenient parse of a daticert as found in real messages.
    ///
    /// ```
    /// use pecd::pec::daticert::Daticert;
    /// let xml = br#"<postacert errore="nessuno" tipo="accettazione">
    ///   <intestazione><mittente>a@pec.it</mittente>
    ///   <destinatari tipo="esterno">b@x.it</destinatari><risposte>a@pec.it</risposte></intestazione>
    ///   <dati><gestore-emittente>G &amp; C</gestore-emittente><data zona="+0100"><giorno>01/02/2026</giorno>
    ///   <ora>10:00:00</ora></data><identificativo>id@pec.it</identificativo></dati></postacert>"#;
    /// let d = Daticert::parse(xml).unwrap();
    /// assert_eq!(d.gestore_emittente, "G & C");
    /// assert_eq!(Daticert::parse(&d.to_xml()).unwrap(), d);
    /// ```
    pub fn parse(xml: &[u8]) -> Result<Daticert, DaticertError> {
        let text = String::from_utf8_lossy(xml);
        // Some producers prepend a UTF-8 BOM.
        let text = text.trim_start_matches('\u{feff}');
        let mut reader = Reader::from_str(text);
        let mut path: Vec<String> = Vec::new();
        let mut buf = String::new();
        let mut root_seen = false;
        let mut tipo: Option<String> = None;
        let mut errore: Option<String> = None;
        let mut mittente = None;
        let mut destinatari = Vec::new();
        let mut dest_tipo: Option<String> = None;
        let mut risposte = None;
        let mut oggetto = None;
        let mut gestore = None;
        let mut zona: Option<String> = None;
        let mut giorno = None;
        let mut ora = None;
        let mut identificativo = None;
        let mut msgid = None;
        let mut ricevuta: Option<String> = None;
        let mut consegna = None;
        let mut ricezione = Vec::new();
        let mut errore_esteso = None;

        loop {
            let ev = reader.read_event().map_err(|e| {
                DaticertError::Xml(format!("at byte {}: {e}", reader.error_position()))
            })?;
            match ev {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let name =
                        String::from_utf8_lossy(e.local_name().as_ref()).to_ascii_lowercase();
                    let attr = |n: &str| -> Option<String> {
                        e.attributes().flatten().find_map(|a| {
                            if a.key
                                .local_name()
                                .as_ref()
                                .eq_ignore_ascii_case(n.as_bytes())
                            {
                                a.unescape_value().ok().map(|v| v.trim().to_string())
                            } else {
                                None
                            }
                        })
                    };
                    match name.as_str() {
                        "postacert" => {
                            root_seen = true;
                            tipo = attr("tipo");
                            errore = attr("errore");
                        }
                        "destinatari" => dest_tipo = attr("tipo"),
                        "data" => zona = attr("zona"),
                        "ricevuta" => ricevuta = attr("tipo"),
                        _ => {}
                    }
                    buf.clear();
                    // An empty element (<ricevuta .../>) has no End event.
                    if matches!(ev, Event::Start(_)) {
                        path.push(name);
                    }
                }
                Event::Text(t) => {
                    buf.push_str(&t.decode().map_err(|e| DaticertError::Xml(e.to_string()))?);
                }
                Event::CData(t) => {
                    buf.push_str(&String::from_utf8_lossy(&t));
                }
                Event::GeneralRef(r) => {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        buf.push(c);
                    } else {
                        let name = r.decode().map_err(|e| DaticertError::Xml(e.to_string()))?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => buf.push_str(s),
                            None => {
                                return Err(DaticertError::Xml(format!("unknown entity &{name};")));
                            }
                        }
                    }
                }
                Event::End(_) => {
                    let value = buf.trim().to_string();
                    buf.clear();
                    let Some(name) = path.pop() else { continue };
                    match name.as_str() {
                        "mittente" => mittente = Some(value),
                        "destinatari" => destinatari.push((value, dest_tipo.take())),
                        "risposte" => risposte = Some(value),
                        "oggetto" => oggetto = Some(value),
                        "gestore-emittente" => gestore = Some(value),
                        "giorno" => giorno = Some(value),
                        "ora" => ora = Some(value),
                        "identificativo" => identificativo = Some(value),
                        "msgid" => msgid = Some(value),
                        "consegna" => consegna = Some(value),
                        "ricezione" => ricezione.push(value),
                        "errore-esteso" => errore_esteso = Some(value),
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }

        if !root_seen {
            return Err(DaticertError::NoRoot);
        }
        let tipo_s = tipo.ok_or(DaticertError::Missing("postacert tipo"))?;
        let tipo = PecType::from_token(&tipo_s).ok_or(DaticertError::BadValue {
            field: "postacert/@tipo",
            value: tipo_s,
        })?;
        let errore = match errore {
            None => ErrorKind::None,
            Some(s) => ErrorKind::from_token(&s).ok_or(DaticertError::BadValue {
                field: "postacert/@errore",
                value: s,
            })?,
        };
        let destinatari = destinatari
            .into_iter()
            .map(|(address, t)| {
                let tipo = match t {
                    None => RecipientClass::Certified,
                    Some(s) => RecipientClass::from_token(&s).ok_or(DaticertError::BadValue {
                        field: "destinatari/@tipo",
                        value: s,
                    })?,
                };
                Ok(Destinatario { address, tipo })
            })
            .collect::<Result<Vec<_>, DaticertError>>()?;
        if destinatari.is_empty() {
            return Err(DaticertError::Missing("destinatari"));
        }
        let ricevuta = match ricevuta {
            None => None,
            Some(s) => Some(
                ReceiptVariant::from_token(&s).ok_or(DaticertError::BadValue {
                    field: "ricevuta/@tipo",
                    value: s,
                })?,
            ),
        };
        Ok(Daticert {
            tipo,
            errore,
            mittente: mittente.ok_or(DaticertError::Missing("mittente"))?,
            destinatari,
            risposte: risposte.ok_or(DaticertError::Missing("risposte"))?,
            oggetto,
            gestore_emittente: gestore.ok_or(DaticertError::Missing("gestore-emittente"))?,
            data: DatiDate {
                giorno: giorno.ok_or(DaticertError::Missing("giorno"))?,
                ora: ora.ok_or(DaticertError::Missing("ora"))?,
                zona: zona.ok_or(DaticertError::Missing("data zona"))?,
            },
            identificativo: identificativo.ok_or(DaticertError::Missing("identificativo"))?,
            msgid,
            ricevuta,
            consegna,
            ricezione,
            errore_esteso,
        })
    }
}

fn text_el(w: &mut Writer<Vec<u8>>, name: &str, value: &str) -> std::io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(&xml_chars(value)))?;
    Ok(())
}

/// `value` with the characters XML 1.0 §2.2 forbids even escaped (most
/// controls) as U+FFFD: one in an address, a Reply-To or a Message-ID the
/// sender wrote would make the daticert malformed, and a strict peer would
/// call the envelope an anomaly after we had accepted it.
fn xml_chars(value: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    };
    if value.chars().all(allowed) {
        value.into()
    } else {
        value
            .chars()
            .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
            .collect::<String>()
            .into()
    }
}
