//! The provider index (*Indice dei gestori PEC*, IGPEC) as a local copy
//! imported from LDIF (RT §7, RFC 6109 §4.5, RFC 2849).
//!
//! Owns: parsing the LDIF (folded lines, `::` base64 values, multi-valued
//! attributes, comments) into provider records, and the two lookups the
//! points need: signer certificate hash → provider, domain → certified?
//! Must not touch: signature verification (the caller brings the hash and
//! the DER of the signer), network retrieval of the file.
//!
//! A bad record fails the whole import with every error and its line: a
//! forged or half-read index compromises everything (RT §7, Security).

use base64::Engine;
use std::collections::HashMap;

/// One provider (or secondary environment) record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderRecord {
    pub dn: String,
    pub name: String,
    /// `providerCertificateHash` values, uppercase hex.
    pub certificate_hashes: Vec<String>,
    /// `providerCertificate;binary` values, DER.
    #[serde(skip)]
    pub certificates: Vec<Vec<u8>>,
    /// Service mailbox for presa in carico and rilevazione virus.
    pub mail_receipt: String,
    /// PEC mail domains, lowercase.
    pub managed_domains: Vec<String>,
    pub ldif_location_url: Option<String>,
    pub unit: Option<String>,
    pub description: Option<String>,
    /// Line where the record starts in the LDIF.
    pub line: usize,
}

/// A problem found while importing, with the LDIF line it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IndexError {
    pub line: usize,
    pub message: String,
}

/// The imported index.
#[derive(Debug, Clone, Default)]
pub struct ProviderIndex {
    providers: Vec<ProviderRecord>,
    by_hash: HashMap<String, usize>,
    by_domain: HashMap<String, usize>,
    /// Every record that lists a certificate hash (a provider's secondary
    /// environments, several records with one certificate).
    records_by_hash: HashMap<String, Vec<usize>>,
}

/// Outcome of looking a signer up (RT §6.3 step 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerLookup<'a> {
    Found(&'a ProviderRecord),
    /// No record lists this certificate hash.
    Unknown,
    /// A record lists the hash but not this certificate (hash collision or a
    /// corrupted index): treated as unknown, reported distinctly.
    CertificateMismatch(&'a ProviderRecord),
}

struct RawRecord {
    line: usize,
    attrs: Vec<(String, Vec<u8>, usize)>,
}

fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut in_comment = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let lineno = n + 1;
        if let Some(cont) = line.strip_prefix(' ') {
            // RFC 2849: a continuation line starts with exactly one space,
            // which is removed; continuation of a comment is still comment.
            if in_comment {
                continue;
            }
            if let Some(last) = out.last_mut()
                && !last.1.is_empty()
            {
                last.1.push_str(cont);
                continue;
            }
            out.push((lineno, line.to_string()));
            continue;
        }
        in_comment = line.starts_with('#');
        if in_comment {
            continue;
        }
        out.push((lineno, line.to_string()));
    }
    out
}

fn records(text: &str) -> (Vec<RawRecord>, Vec<IndexError>) {
    let mut recs = Vec::new();
    let mut errors = Vec::new();
    let mut cur: Option<RawRecord> = None;
    for (line, l) in logical_lines(text) {
        if l.trim().is_empty() {
            if let Some(r) = cur.take() {
                recs.push(r);
            }
            continue;
        }
        let Some(colon) = l.find(':') else {
            errors.push(IndexError {
                line,
                message: format!("not an attribute line (no ':'): {:?}", truncate(&l)),
            });
            continue;
        };
        let name = l[..colon].trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';' || c == '.')
        {
            errors.push(IndexError {
                line,
                message: format!("invalid attribute name {name:?}"),
            });
            continue;
        }
        let rest = &l[colon + 1..];
        let value = if let Some(b64) = rest.strip_prefix(':') {
            match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(IndexError {
                        line,
                        message: format!("attribute {name}: invalid base64 value: {e}"),
                    });
                    continue;
                }
            }
        } else if rest.starts_with('<') {
            errors.push(IndexError {
                line,
                message: format!("attribute {name}: URL values are not supported"),
            });
            continue;
        } else {
            rest.trim_start_matches(' ').as_bytes().to_vec()
        };
        if name.eq_ignore_ascii_case("version") && cur.is_none() {
            continue;
        }
        cur.get_or_insert_with(|| RawRecord {
            line,
            attrs: Vec::new(),
        })
        .attrs
        .push((name, value, line));
    }
    if let Some(r) = cur.take() {
        recs.push(r);
    }
    (recs, errors)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

impl RawRecord {
    fn values<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a (String, Vec<u8>, usize)> + 'a {
        self.attrs.iter().filter(move |(n, _, _)| {
            let base = n.split(';').next().unwrap_or(n);
            base.eq_ignore_ascii_case(name)
        })
    }

    fn text(&self, name: &str) -> Option<String> {
        self.values(name)
            .next()
            .map(|(_, v, _)| String::from_utf8_lossy(v).trim().to_string())
    }

    fn texts(&self, name: &str) -> Vec<String> {
        self.values(name)
            .map(|(_, v, _)| String::from_utf8_lossy(v).trim().to_string())
            .collect()
    }
}

impl ProviderIndex {
    /// Import an LDIF text. Every problem is reported; nothing is skipped.
    pub fn from_ldif(text: &str) -> Result<ProviderIndex, Vec<IndexError>> {
        let (recs, mut errors) = records(text);
        let mut providers = Vec::new();
        for r in recs {
            let Some(dn) = r.text("dn") else {
                errors.push(IndexError {
                    line: r.line,
                    message: "record without dn".into(),
                });
                continue;
            };
            if r.attrs
                .first()
                .is_some_and(|(n, _, _)| !n.eq_ignore_ascii_case("dn"))
            {
                errors.push(IndexError {
                    line: r.line,
                    message: "a record must start with dn".into(),
                });
            }
            let is_provider = r
                .texts("objectclass")
                .iter()
                .any(|c| c.eq_ignore_ascii_case("provider"));
            if !is_provider {
                continue; // o=postacert and other directory scaffolding
            }
            let mut missing = Vec::new();
            for a in [
                "providerName",
                "providerCertificateHash",
                "providerCertificate",
                "mailReceipt",
                "managedDomains",
            ] {
                if r.values(a).next().is_none() {
                    missing.push(a);
                }
            }
            if !missing.is_empty() {
                errors.push(IndexError {
                    line: r.line,
                    message: format!("provider record {dn:?} lacks {}", missing.join(", ")),
                });
                continue;
            }
            let mut hashes = Vec::new();
            for (_, v, line) in r.values("providerCertificateHash") {
                let h = String::from_utf8_lossy(v)
                    .trim()
                    .replace(':', "")
                    .to_ascii_uppercase();
                if h.len() != 40 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    errors.push(IndexError {
                        line: *line,
                        message: format!("providerCertificateHash is not a SHA-1 hex value: {h:?}"),
                    });
                }
                hashes.push(h);
            }
            let mut certs = Vec::new();
            for (_, v, line) in r.values("providerCertificate") {
                // DER certificates start with a SEQUENCE tag.
                if v.first() != Some(&0x30) {
                    errors.push(IndexError {
                        line: *line,
                        message: "providerCertificate is not a DER certificate (use providerCertificate;binary:: base64)".into(),
                    });
                }
                certs.push(v.clone());
            }
            let mail_receipt = r.text("mailReceipt").unwrap_or_default();
            if !mail_receipt.contains('@') {
                errors.push(IndexError {
                    line: r.line,
                    message: format!("mailReceipt {mail_receipt:?} is not an address"),
                });
            }
            providers.push(ProviderRecord {
                dn,
                name: r.text("providerName").unwrap_or_default(),
                certificate_hashes: hashes,
                certificates: certs,
                mail_receipt,
                managed_domains: r
                    .texts("managedDomains")
                    .into_iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect(),
                ldif_location_url: r.text("LDIFLocationURL"),
                unit: r.text("providerUnit"),
                description: r.text("description"),
                line: r.line,
            });
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(errors);
        }
        let mut idx = ProviderIndex {
            providers,
            ..Default::default()
        };
        for (i, p) in idx.providers.iter().enumerate() {
            for h in &p.certificate_hashes {
                idx.by_hash.insert(h.clone(), i);
                idx.records_by_hash.entry(h.clone()).or_default().push(i);
            }
            for d in &p.managed_domains {
                idx.by_domain.insert(d.clone(), i);
            }
        }
        Ok(idx)
    }

    pub fn providers(&self) -> &[ProviderRecord] {
        &self.providers
    }

    /// The domains the certificate `der` (with this hash) signs for: over
    /// every record that lists it and holds that very certificate (a
    /// record naming the hash alone widens nothing).
    pub fn signer_domains(&self, sha1_hex: &str, der: &[u8]) -> Vec<String> {
        self.records_by_hash
            .get(&sha1_hex.to_ascii_uppercase())
            .into_iter()
            .flatten()
            .map(|&i| &self.providers[i])
            .filter(|p| p.certificates.iter().any(|c| c == der))
            .flat_map(|p| p.managed_domains.iter().cloned())
            .collect()
    }

    /// RT §6.3 step 2: hash lookup, then the whole certificate compared.
    pub fn lookup_signer(&self, sha1_hex: &str, der: &[u8]) -> SignerLookup<'_> {
        match self.by_hash.get(&sha1_hex.to_ascii_uppercase()) {
            None => SignerLookup::Unknown,
            Some(&i) => {
                let p = &self.providers[i];
                if p.certificates.iter().any(|c| c == der) {
                    SignerLookup::Found(p)
                } else {
                    SignerLookup::CertificateMismatch(p)
                }
            }
        }
    }

    /// The provider managing a mail domain (case-insensitive).
    pub fn provider_for_domain(&self, domain: &str) -> Option<&ProviderRecord> {
        self.by_domain
            .get(&domain.trim_end_matches('.').to_ascii_lowercase())
            .map(|&i| &self.providers[i])
    }

    /// Whether an address is a PEC address (its domain is in some
    /// provider's `managedDomains`): daticert `certificato` vs `esterno`.
    pub fn is_certified_address(&self, address: &str) -> bool {
        address
            .rsplit_once('@')
            .is_some_and(|(_, d)| self.provider_for_domain(d).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDIF: &str = "version: 1\n\
# comment\n\
dn: o=postacert\n\
objectclass: top\n\
o: postacert\n\
\n\
dn: providerName=Anon S.p.A.,o=postacert\n\
objectclass: top\n\
objectclass: provider\n\
providerName: Anon S.p.A.\n\
providerCertificateHash: 7e7aef1059ae0f454f2643a95f69ec3556009239\n\
providerCertificate;binary:: MAMCAQ\n \
E=\n\
mailReceipt: ricevute@pec.anon.test\n\
managedDomains: pec.anon.test\n\
managedDomains: Cert.Company.test\n";

    #[test]
    fn folded_base64_and_multivalued() {
        let idx = ProviderIndex::from_ldif(LDIF).unwrap();
        assert_eq!(idx.providers().len(), 1);
        let p = &idx.providers()[0];
        assert_eq!(p.certificates[0], vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert_eq!(
            p.managed_domains,
            vec!["pec.anon.test", "cert.company.test"]
        );
        assert!(idx.is_certified_address("x@CERT.company.test"));
        assert!(!idx.is_certified_address("x@gmail.test"));
        assert!(matches!(
            idx.lookup_signer(
                "7E7AEF1059AE0F454F2643A95F69EC3556009239",
                &[0x30, 3, 2, 1, 1]
            ),
            SignerLookup::Found(_)
        ));
        assert!(matches!(
            idx.lookup_signer("7E7AEF1059AE0F454F2643A95F69EC3556009239", &[0x30, 0]),
            SignerLookup::CertificateMismatch(_)
        ));
    }

    #[test]
    fn a_certificate_signs_for_the_domains_of_every_record_listing_it() {
        // The same certificate in a second record (a secondary environment).
        let second = LDIF
            .split("dn: providerName=Anon")
            .nth(1)
            .unwrap()
            .replace("managedDomains: pec.anon.test\n", "")
            .replace("Cert.Company.test", "pec2.anon.test")
            .replacen("S.p.A.,o=postacert", "S.p.A. Bis,o=postacert", 1)
            .replacen(
                "providerName: Anon S.p.A.",
                "providerName: Anon S.p.A. Bis",
                1,
            );
        let both = format!("{LDIF}\ndn: providerName=Anon{second}");
        let idx = ProviderIndex::from_ldif(&both).unwrap();
        assert_eq!(idx.providers().len(), 2);
        let hash = "7e7aef1059ae0f454f2643a95f69ec3556009239";
        let der = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut domains = idx.signer_domains(hash, &der);
        domains.sort();
        assert_eq!(
            domains,
            vec!["cert.company.test", "pec.anon.test", "pec2.anon.test"]
        );
        assert!(idx.signer_domains("00", &der).is_empty());
        // Another certificate under the same hash signs for nothing.
        assert!(idx.signer_domains(hash, &[0x30, 0]).is_empty());
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let bad = LDIF.replace(
            "managedDomains: pec.anon.test",
            "managedDomains pec.anon.test",
        );
        let errs = ProviderIndex::from_ldif(&bad).unwrap_err();
        assert_eq!(errs[0].line, 15);
        assert!(errs[0].message.contains("no ':'"));
        let missing = LDIF.replace("mailReceipt: ricevute@pec.anon.test\n", "");
        let errs = ProviderIndex::from_ldif(&missing).unwrap_err();
        assert_eq!(errs[0].line, 7);
        assert!(errs[0].message.contains("mailReceipt"));
    }
}
