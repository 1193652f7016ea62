//! The provider index (IGPEC LDIF export) parser on arbitrary text, then
//! the lookups on whatever it accepted. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pecd::index::ProviderIndex;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(idx) = ProviderIndex::from_ldif(text) {
        for p in idx.providers() {
            for d in &p.managed_domains {
                let _ = idx.provider_for_domain(d);
                let _ = idx.is_certified_address(&format!("x@{d}"));
            }
        }
        let _ = idx.lookup_signer("00", b"");
    }
});
