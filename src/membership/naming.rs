//! How a member's PEC address is derived from the anagrafica.
//!
//! `nome.cognome@<domain>`: lower case; accents folded (Nicolò → nicolo,
//! Müller → muller); apostrophes, spaces and hyphens dropped, so compound
//! names and surnames are joined (De Santis → desantis, D'Angelo →
//! dangelo, Maria Grazia → mariagrazia). A homonym gets `.alias` after the
//! surname: the order's own alias, or the next free number from 2
//! (`mario.rossi.2`) — the numbering is pecd's choice, the rule only says
//! "an alias". The order's own mailbox is `ordine.<provincia>@<domain>`
//! with the province name in full (`ordine.reggioemilia`).
//!
//! Owns: the local-part rules, pure.

use unicode_normalization::UnicodeNormalization;

/// Why a name cannot give an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("{field} gives no letters for an address: {value:?}")]
    Empty { field: &'static str, value: String },
    #[error("{0:?} is not a valid alias (letters and digits only)")]
    Alias(String),
    #[error("{0:?} is not a valid domain")]
    Domain(String),
    #[error("{0:?} is not an Italian province (sigla or name)")]
    Province(String),
}

/// Fold one name part: NFKD, combining marks dropped, lower case, only
/// `a-z0-9` kept (apostrophes, spaces, hyphens, dots go).
pub fn fold(part: &str) -> String {
    part.nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(|c| match c {
            // Letters that do not decompose.
            'ß' => "ss".chars().collect::<Vec<_>>(),
            'æ' | 'Æ' => vec!['a', 'e'],
            'ø' | 'Ø' => vec!['o'],
            'đ' | 'Đ' => vec!['d'],
            'ł' | 'Ł' => vec!['l'],
            c => vec![c],
        })
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect()
}

fn domain(d: &str) -> Result<String, NamingError> {
    let d = d.trim().to_ascii_lowercase();
    let ok = d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(d)
    } else {
        Err(NamingError::Domain(d))
    }
}

/// The address the rules give, without homonym lookup.
pub fn derive(nome: &str, cognome: &str, dom: &str) -> Result<String, NamingError> {
    derive_with_alias(nome, cognome, dom, None)
}

/// The address with an alias after the surname (homonyms).
pub fn derive_with_alias(
    nome: &str,
    cognome: &str,
    dom: &str,
    alias: Option<&str>,
) -> Result<String, NamingError> {
    let n = fold(nome);
    if n.is_empty() {
        return Err(NamingError::Empty {
            field: "nome",
            value: nome.into(),
        });
    }
    let c = fold(cognome);
    if c.is_empty() {
        return Err(NamingError::Empty {
            field: "cognome",
            value: cognome.into(),
        });
    }
    let d = domain(dom)?;
    match alias {
        None => Ok(format!("{n}.{c}@{d}")),
        Some(a) => {
            let f = fold(a);
            if f.is_empty() || f.len() != a.trim().len() {
                return Err(NamingError::Alias(a.into()));
            }
            Ok(format!("{n}.{c}.{f}@{d}"))
        }
    }
}

/// The first free address: the plain one, else `.2`, `.3`, … (or the
/// order's alias when given; taken is then an error for the caller).
pub fn derive_free(
    nome: &str,
    cognome: &str,
    dom: &str,
    alias: Option<&str>,
    taken: impl Fn(&str) -> bool,
) -> Result<String, NamingError> {
    if alias.is_some() {
        return derive_with_alias(nome, cognome, dom, alias);
    }
    let plain = derive(nome, cognome, dom)?;
    if !taken(&plain) {
        return Ok(plain);
    }
    let mut n = 2u32;
    loop {
        let a = derive_with_alias(nome, cognome, dom, Some(&n.to_string()))?;
        if !taken(&a) {
            return Ok(a);
        }
        n += 1;
    }
}

/// The order's own mailbox: `ordine.<provincia in full>@<domain>`.
pub fn order_address(provincia: &str, dom: &str) -> Result<String, NamingError> {
    let name =
        super::province::name(provincia).ok_or_else(|| NamingError::Province(provincia.into()))?;
    Ok(format!("ordine.{}@{}", fold(name), domain(dom)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_looking_names() {
        let d = "ingpec.test";
        let table = [
            ("Mario", "Rossi", "mario.rossi"),
            ("Nicolò", "Bianchi", "nicolo.bianchi"),
            ("Niccolò", "Dell'Acqua", "niccolo.dellacqua"),
            ("Maria Grazia", "De Santis", "mariagrazia.desantis"),
            ("Anna-Lisa", "D'Angelo", "annalisa.dangelo"),
            ("Giosuè", "Carducci", "giosue.carducci"),
            ("Ilaria", "Lo Presti", "ilaria.lopresti"),
            ("Jürgen", "Müller", "jurgen.muller"),
            ("José", "Peña", "jose.pena"),
            ("Zoë", "Dall’Ò", "zoe.dallo"),
            ("FRANCESCA", "DI GIOVANNI", "francesca.digiovanni"),
            ("  Luca ", " Verdi  ", "luca.verdi"),
            ("Łukasz", "Straße", "lukasz.strasse"),
        ];
        for (n, c, want) in table {
            assert_eq!(derive(n, c, d).unwrap(), format!("{want}@{d}"), "{n} {c}");
        }
    }

    #[test]
    fn homonyms_get_the_next_number_or_the_orders_alias() {
        let taken = ["mario.rossi@x.it", "mario.rossi.2@x.it"];
        let free = derive_free("Mario", "Rossi", "x.it", None, |a| taken.contains(&a)).unwrap();
        assert_eq!(free, "mario.rossi.3@x.it");
        let alias = derive_free("Mario", "Rossi", "x.it", Some("arch"), |_| true).unwrap();
        assert_eq!(alias, "mario.rossi.arch@x.it");
        assert!(matches!(
            derive_with_alias("Mario", "Rossi", "x.it", Some("a.b")),
            Err(NamingError::Alias(_))
        ));
    }

    #[test]
    fn order_mailboxes_and_errors() {
        assert_eq!(order_address("LO", "x.it").unwrap(), "ordine.lodi@x.it");
        assert_eq!(
            order_address("re", "x.it").unwrap(),
            "ordine.reggioemilia@x.it"
        );
        assert_eq!(
            order_address("FC", "x.it").unwrap(),
            "ordine.forlicesena@x.it"
        );
        assert!(matches!(
            order_address("XX", "x.it"),
            Err(NamingError::Province(_))
        ));
        assert!(matches!(
            derive("'", "Rossi", "x.it"),
            Err(NamingError::Empty { field: "nome", .. })
        ));
        assert!(matches!(
            derive("Mario", "Rossi", "nodot"),
            Err(NamingError::Domain(_))
        ));
    }
}
