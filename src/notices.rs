//! The provider's ordinary notices to its holders — not PEC messages:
//! inbox-usage warnings now, expiry reminders with the lifecycle.
//!
//! Owns: their Italian texts and their RFC 5322 form (mail-builder).
//! Must not touch: the queue, the store (the caller decides where a notice
//! goes: into the PEC mailbox, to the reference address, or both).

use crate::clock::LegalTime;
use mail_builder::MessageBuilder;

/// Subject and text of a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub subject: String,
    pub body: String,
}

fn human(bytes: u64) -> String {
    const MB: f64 = (1u64 << 20) as f64;
    const GB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b >= GB {
        format!("{:.2} GB", b / GB).replace('.', ",")
    } else {
        format!("{:.1} MB", b / MB).replace('.', ",")
    }
}

/// The inbox of `address` has crossed `level` % (70 or 90) of its quota.
/// The law asks a saturation warning for lawyers' mailboxes; pecd warns
/// every holder.
pub fn quota_warning(address: &str, level: u8, used: u64, quota: u64) -> Notice {
    let urgent = if level >= 90 {
        "\nQuando lo spazio sarà esaurito, i messaggi in arrivo saranno rifiutati e ai \
         mittenti sarà inviato un avviso di mancata consegna.\n"
    } else {
        ""
    };
    Notice {
        subject: format!("Avviso: casella PEC {address} oltre il {level}% dello spazio"),
        body: format!(
            "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
             occupa {} su {} disponibili (oltre il {level}%).\n{urgent}\n\
             Per liberare spazio elimini o archivi i messaggi non più necessari, \
             oppure richieda uno spazio aggiuntivo.\n\nIl gestore del servizio PEC\n",
            human(used),
            human(quota),
        ),
    }
}

/// An expiry reminder: `days` before expiry (negative: after).
pub fn expiry_reminder(
    address: &str,
    expires: chrono::NaiveDate,
    days: i64,
    at_expiry: &str,
) -> Notice {
    let date = expires.format("%d/%m/%Y");
    let what = match at_expiry {
        "downgrade" => {
            "Senza rinnovo la casella tornerà al piano base: i servizi aggiuntivi \
             decadranno e, se lo spazio occupato supera quello del piano base, i nuovi \
             messaggi saranno rifiutati finché non si libera spazio."
        }
        _ => {
            "Senza rinnovo la casella potrà solo ricevere per il periodo di tolleranza, \
             poi sarà sospesa e infine cancellata."
        }
    };
    if days >= 0 {
        Notice {
            subject: format!("Promemoria: la casella PEC {address} scade il {date}"),
            body: format!(
                "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
                 scade il {date} (tra {days} giorni).\n{what}\n\nIl gestore del servizio PEC\n"
            ),
        }
    } else {
        Notice {
            subject: format!("Avviso: la casella PEC {address} è scaduta il {date}"),
            body: format!(
                "Gentile titolare,\n\nla casella di posta elettronica certificata {address} \
                 è scaduta il {date} e non è stata rinnovata.\n{what}\n\nIl gestore del servizio PEC\n"
            ),
        }
    }
}

/// The archive space of `address` is full.
pub fn archive_full(address: &str, quota: u64, policy: &str) -> Notice {
    let effect = if policy == "rotate-oldest" {
        "Per fare spazio, le copie più vecchie dell'archivio vengono rimosse."
    } else {
        "Finché non si libera spazio, i nuovi messaggi non vengono copiati nell'archivio \
         (la casella continua a ricevere e inviare normalmente)."
    };
    Notice {
        subject: format!("Avviso: archivio della casella PEC {address} pieno"),
        body: format!(
            "Gentile titolare,\n\nl'archivio della casella di posta elettronica certificata \
             {address} ha esaurito lo spazio disponibile ({}).\n{effect}\n\n\
             Può liberare spazio eliminando copie dall'archivio oppure richiedere più spazio.\n\n\
             Il gestore del servizio PEC\n",
            human(quota)
        ),
    }
}

/// A password-reset link for `address`, valid `hours`.
pub fn reset_link(address: &str, url: &str, hours: i64) -> Notice {
    Notice {
        subject: format!("Ripristino della password della casella PEC {address}"),
        body: format!(
            "Gentile titolare,\n\nè stato richiesto il ripristino della password della casella \
             di posta elettronica certificata {address}.\nPer impostare una nuova password usi \
             questo collegamento entro {hours} ore (vale una sola volta):\n\n{url}\n\n\
             Se non ha richiesto il ripristino, ignori questo messaggio.\n\nIl gestore del servizio PEC\n"
        ),
    }
}

/// The notice as a message from `from` to `to`.
pub fn message(n: &Notice, from: &str, to: &str, time: LegalTime, message_id: &str) -> Vec<u8> {
    MessageBuilder::new()
        .from(("Gestore PEC", from))
        .to(to)
        .subject(n.subject.as_str())
        .date(time.utc().timestamp())
        .message_id(message_id)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-generated"),
        )
        .text_body(n.body.as_str())
        .write_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_warning_reads_well() {
        let n = quota_warning("a@b.it", 90, 966_367_641, 1 << 30);
        assert!(n.subject.contains("oltre il 90%"));
        assert!(n.body.contains("occupa 921,6 MB su 1,00 GB"), "{}", n.body);
        assert!(n.body.contains("mancata consegna"));
        assert!(
            !quota_warning("a@b.it", 70, 1, 2)
                .body
                .contains("mancata consegna")
        );
        let m = message(
            &n,
            "noreply@x.it",
            "ref@y.it",
            LegalTime::new(chrono::Utc::now()),
            "id1@x.it",
        );
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("Auto-Submitted: auto-generated"));
        assert!(text.contains("Message-ID: <id1@x.it>"));
    }
}
