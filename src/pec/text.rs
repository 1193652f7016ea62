//! The Italian texts a person reads in every PEC message (RT §3).
//!
//! Owns: the wording, in one place, so that a change after checking the
//! Italian Allegato tecnico is one edit. Machines never read these texts
//! (RT §3.0): they parse `daticert.xml`. Texts marked [INF] in pec-rules.md
//! are reconstructions; the confirmed ones (envelope, accettazione, consegna,
//! mancata consegna) follow real provider output.
//! Must not touch: MIME encoding (see `build`), headers.

use super::ReceiptVariant;
use super::headers::TimeoutStage;
use crate::clock::LegalTime;

/// A human-readable body: a title line and the following lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub title: String,
    pub lines: Vec<String>,
}

/// The facts every text mentions.
pub struct Facts<'a> {
    pub time: LegalTime,
    pub subject: &'a str,
    pub sender: &'a str,
    pub pec_id: &'a str,
}

impl Facts<'_> {
    fn when(&self) -> String {
        format!(
            "Il giorno {} alle ore {} ({})",
            self.time.giorno(),
            self.time.ora(),
            self.time.zona()
        )
    }

    fn id_line(&self) -> String {
        format!("Identificativo messaggio: {}", self.pec_id)
    }
}

fn body(title: &str, lines: Vec<String>) -> Body {
    Body {
        title: title.to_string(),
        lines,
    }
}

/// RT §3.1 (confirmed by Namirial/Sogei output).
pub fn transport(f: &Facts<'_>, recipients: &[String]) -> Body {
    let mut l = vec![
        format!("{} il messaggio", f.when()),
        format!("\"{}\" è stato inviato da \"{}\"", f.subject, f.sender),
        "indirizzato a:".to_string(),
    ];
    l.extend(recipients.iter().cloned());
    l.push("Il messaggio originale è incluso in allegato.".into());
    l.push(f.id_line());
    body("Messaggio di posta certificata", l)
}

/// RT §3.2 (confirmed by Aruba's HTML part). `recipients` pairs an address
/// with whether it is certified.
pub fn acceptance(f: &Facts<'_>, recipients: &[(String, bool)]) -> Body {
    let mut l = vec![
        format!("{} il messaggio", f.when()),
        format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
        "ed indirizzato a:".to_string(),
    ];
    for (a, certified) in recipients {
        let class = if *certified {
            "posta certificata"
        } else {
            "posta ordinaria"
        };
        l.push(format!("{a} (\"{class}\")"));
    }
    l.push("Il messaggio è stato accettato dal sistema ed inoltrato.".into());
    l.push(f.id_line());
    body("Ricevuta di accettazione", l)
}

/// RT §3.3 [INF]. `virus` switches to the virus variant.
pub fn non_acceptance(f: &Facts<'_>, recipients: &[String], reason: &str, virus: bool) -> Body {
    let mut l = vec![
        format!("{} nel messaggio", f.when()),
        format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
        "ed indirizzato a:".to_string(),
    ];
    l.extend(recipients.iter().cloned());
    if virus {
        l.push(format!(
            "è stato rilevato un problema di sicurezza: {reason}."
        ));
    } else {
        l.push("è stato rilevato un problema che ne impedisce l'accettazione".into());
        l.push(format!("a causa di {reason}."));
    }
    l.push("Il messaggio non è stato accettato.".into());
    l.push(f.id_line());
    let title = if virus {
        "Errore nell'accettazione del messaggio per presenza di virus"
    } else {
        "Errore nell'accettazione del messaggio"
    };
    body(title, l)
}

/// RT §3.4 [INF].
pub fn taken_in_charge(f: &Facts<'_>, covered: &[String]) -> Body {
    let mut l = vec![
        format!("{} il messaggio", f.when()),
        format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
        "ed indirizzato a:".to_string(),
    ];
    l.extend(covered.iter().cloned());
    l.push("è stato accettato dal sistema.".into());
    l.push(f.id_line());
    body("Ricevuta di presa in carico", l)
}

/// RT §3.5 [INF, consistent with the Namirial help-desk quote].
pub fn anomaly(f: &Facts<'_>, recipients: &[String], reason: &str) -> Body {
    let mut l = vec![
        format!("{} è stato ricevuto", f.when()),
        format!(
            "il messaggio \"{}\" proveniente da \"{}\"",
            f.subject, f.sender
        ),
        "ed indirizzato a:".to_string(),
    ];
    l.extend(recipients.iter().cloned());
    l.push("Tali dati non sono stati certificati per il seguente errore:".into());
    l.push(reason.to_string());
    l.push("Il messaggio originale è incluso in allegato.".into());
    body("Anomalia nel messaggio", l)
}

/// RT §3.6 [INF].
pub fn virus_detected(f: &Facts<'_>, recipient: &str, description: &str) -> Body {
    body(
        "Avviso di rilevazione virus",
        vec![
            format!("{} nel messaggio", f.when()),
            format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
            format!("ed indirizzato a \"{recipient}\""),
            format!("è stato rilevato un problema di sicurezza: {description}."),
            f.id_line(),
        ],
    )
}

/// RT §3.7 [INF].
pub fn delivery_error_virus(f: &Facts<'_>, recipient: &str, description: &str) -> Body {
    body(
        "Avviso di mancata consegna per virus",
        vec![
            format!("{} nel messaggio", f.when()),
            format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
            format!("ed indirizzato a \"{recipient}\""),
            format!("è stato rilevato un problema di sicurezza: {description}."),
            "Il messaggio non è stato consegnato.".into(),
            f.id_line(),
        ],
    )
}

/// RT §3.8 (completa confirmed by Aruba; breve and sintetica titles [INF]).
pub fn delivery(f: &Facts<'_>, recipient: &str, variant: ReceiptVariant) -> Body {
    let title = match variant {
        ReceiptVariant::Full => "Ricevuta di avvenuta consegna",
        ReceiptVariant::Short => "Ricevuta di avvenuta consegna breve",
        ReceiptVariant::Summary => "Ricevuta sintetica di avvenuta consegna",
    };
    let mut l = vec![
        format!("{} il messaggio", f.when()),
        format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
        format!("ed indirizzato a \"{recipient}\""),
        "è stato consegnato nella casella di destinazione.".into(),
    ];
    match variant {
        ReceiptVariant::Full => l.push("Il messaggio originale è incluso in allegato.".into()),
        ReceiptVariant::Short => l.push(
            "Il messaggio originale è incluso in allegato, con gli allegati sostituiti dalla loro impronta (hash)."
                .into(),
        ),
        ReceiptVariant::Summary => {}
    }
    l.push(f.id_line());
    body(title, l)
}

/// RT §3.9 (confirmed verbatim by Aruba's HTML part). `error` is the NOTA 12
/// string `<code> - <gestore> - <descrizione>`.
pub fn delivery_error(f: &Facts<'_>, recipient: &str, error: &str) -> Body {
    body(
        "Avviso di mancata consegna",
        vec![
            format!("{} nel messaggio", f.when()),
            format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
            format!("e destinato all'utente \"{recipient}\""),
            format!("è stato rilevato un errore: {error}"),
            "Il messaggio è stato rifiutato dal sistema.".into(),
            f.id_line(),
        ],
    )
}

/// RT §3.10 [INF wording].
pub fn timeout(f: &Facts<'_>, recipient: &str, stage: TimeoutStage) -> Body {
    let mut l = vec![
        format!("{} il messaggio", f.when()),
        format!("\"{}\" proveniente da \"{}\"", f.subject, f.sender),
        format!("ed indirizzato a \"{recipient}\""),
    ];
    match stage {
        TimeoutStage::H12 => {
            l.push("non è stato consegnato nelle prime 12 ore dal suo invio.".into());
            l.push(
                "La consegna potrebbe ancora avvenire; se non sarà consegnato entro le 24 ore dal suo invio, seguirà un ulteriore avviso."
                    .into(),
            );
        }
        TimeoutStage::H24 => {
            l.push("non è stato consegnato entro le 24 ore dal suo invio.".into());
            l.push("La trasmissione è da considerarsi conclusa con esito negativo.".into());
        }
    }
    l.push(f.id_line());
    body("Avviso di mancata consegna", l)
}

impl Body {
    /// Plain text, CRLF line breaks.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(256);
        s.push_str(&self.title);
        s.push_str("\r\n");
        for l in &self.lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s
    }

    /// The HTML alternative: same information, no external or internal
    /// resources, no active content (RT §3.0 / RFC 6109 §4.3.1). Characters
    /// outside ISO-8859-1 become numeric references so nothing is lost.
    pub fn to_html(&self) -> String {
        let mut s = String::from(
            "<!DOCTYPE html>\r\n<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"><title>",
        );
        s.push_str(&html_escape(&self.title));
        s.push_str("</title></head><body>\r\n<h3>");
        s.push_str(&html_escape(&self.title));
        s.push_str("</h3>\r\n<p>");
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                s.push_str("<br>\r\n");
            }
            s.push_str(&html_escape(l));
        }
        s.push_str("</p>\r\n</body></html>\r\n");
        s
    }
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c if (c as u32) > 0xFF => o.push_str(&format!("&#{};", c as u32)),
            c => o.push(c),
        }
    }
    o
}
