//! Italian provinces (and metropolitan cities): sigla → name in full, as
//! the orders' own mailboxes are named (`ordine.<provincia>@…`).
//!
//! Owns: the table. The 2025 Sardinian reorganisation is not reflected
//! beyond the sigle in use on vehicle plates and in the orders' rolls.

/// (sigla, name) pairs, by sigla.
pub const PROVINCES: &[(&str, &str)] = &[
    ("AG", "Agrigento"),
    ("AL", "Alessandria"),
    ("AN", "Ancona"),
    ("AO", "Aosta"),
    ("AP", "Ascoli Piceno"),
    ("AQ", "L'Aquila"),
    ("AR", "Arezzo"),
    ("AT", "Asti"),
    ("AV", "Avellino"),
    ("BA", "Bari"),
    ("BG", "Bergamo"),
    ("BI", "Biella"),
    ("BL", "Belluno"),
    ("BN", "Benevento"),
    ("BO", "Bologna"),
    ("BR", "Brindisi"),
    ("BS", "Brescia"),
    ("BT", "Barletta-Andria-Trani"),
    ("BZ", "Bolzano"),
    ("CA", "Cagliari"),
    ("CB", "Campobasso"),
    ("CE", "Caserta"),
    ("CH", "Chieti"),
    ("CL", "Caltanissetta"),
    ("CN", "Cuneo"),
    ("CO", "Como"),
    ("CR", "Cremona"),
    ("CS", "Cosenza"),
    ("CT", "Catania"),
    ("CZ", "Catanzaro"),
    ("EN", "Enna"),
    ("FC", "Forlì-Cesena"),
    ("FE", "Ferrara"),
    ("FG", "Foggia"),
    ("FI", "Firenze"),
    ("FM", "Fermo"),
    ("FR", "Frosinone"),
    ("GE", "Genova"),
    ("GO", "Gorizia"),
    ("GR", "Grosseto"),
    ("IM", "Imperia"),
    ("IS", "Isernia"),
    ("KR", "Crotone"),
    ("LC", "Lecco"),
    ("LE", "Lecce"),
    ("LI", "Livorno"),
    ("LO", "Lodi"),
    ("LT", "Latina"),
    ("LU", "Lucca"),
    ("MB", "Monza e Brianza"),
    ("MC", "Macerata"),
    ("ME", "Messina"),
    ("MI", "Milano"),
    ("MN", "Mantova"),
    ("MO", "Modena"),
    ("MS", "Massa-Carrara"),
    ("MT", "Matera"),
    ("NA", "Napoli"),
    ("NO", "Novara"),
    ("NU", "Nuoro"),
    ("OR", "Oristano"),
    ("PA", "Palermo"),
    ("PC", "Piacenza"),
    ("PD", "Padova"),
    ("PE", "Pescara"),
    ("PG", "Perugia"),
    ("PI", "Pisa"),
    ("PN", "Pordenone"),
    ("PO", "Prato"),
    ("PR", "Parma"),
    ("PT", "Pistoia"),
    ("PU", "Pesaro e Urbino"),
    ("PV", "Pavia"),
    ("PZ", "Potenza"),
    ("RA", "Ravenna"),
    ("RC", "Reggio Calabria"),
    ("RE", "Reggio Emilia"),
    ("RG", "Ragusa"),
    ("RI", "Rieti"),
    ("RM", "Roma"),
    ("RN", "Rimini"),
    ("RO", "Rovigo"),
    ("SA", "Salerno"),
    ("SI", "Siena"),
    ("SO", "Sondrio"),
    ("SP", "La Spezia"),
    ("SR", "Siracusa"),
    ("SS", "Sassari"),
    ("SU", "Sud Sardegna"),
    ("SV", "Savona"),
    ("TA", "Taranto"),
    ("TE", "Teramo"),
    ("TN", "Trento"),
    ("TO", "Torino"),
    ("TP", "Trapani"),
    ("TR", "Terni"),
    ("TS", "Trieste"),
    ("TV", "Treviso"),
    ("UD", "Udine"),
    ("VA", "Varese"),
    ("VB", "Verbano-Cusio-Ossola"),
    ("VC", "Vercelli"),
    ("VE", "Venezia"),
    ("VI", "Vicenza"),
    ("VR", "Verona"),
    ("VT", "Viterbo"),
    ("VV", "Vibo Valentia"),
];

/// The province's name for a sigla (`"LO"`) or a name (`"lodi"`).
pub fn name(sigla_or_name: &str) -> Option<&'static str> {
    let s = sigla_or_name.trim();
    PROVINCES
        .iter()
        .find(|(sigla, name)| sigla.eq_ignore_ascii_case(s) || name.eq_ignore_ascii_case(s))
        .map(|(_, name)| *name)
}

/// Whether `sigla` is a province code.
pub fn is_sigla(sigla: &str) -> bool {
    PROVINCES
        .iter()
        .any(|(s, _)| s.eq_ignore_ascii_case(sigla.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_complete() {
        assert_eq!(PROVINCES.len(), 107);
        assert!(PROVINCES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(name("lo"), Some("Lodi"));
        assert_eq!(name("Reggio Emilia"), Some("Reggio Emilia"));
        assert!(is_sigla("MB") && !is_sigla("XX"));
    }
}
