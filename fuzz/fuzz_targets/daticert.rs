//! The lenient daticert.xml parser on arbitrary bytes; what it accepts must
//! write back to XML that parses to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pecd::pec::daticert::Daticert;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Daticert::parse(data) {
        let again = Daticert::parse(&d.to_xml()).expect("our own XML parses");
        assert_eq!(again.to_xml(), d.to_xml(), "write/parse round trip");
    }
});
