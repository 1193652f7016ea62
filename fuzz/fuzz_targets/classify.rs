//! The reception point's classifier on arbitrary MIME, under every kind of
//! origin (the S/MIME verdict is an input: the signature check itself is
//! openssl's). Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pecd::pec::classify::{Origin, classify, subject, top_header};

fuzz_target!(|data: &[u8]| {
    let top = top_header(data);
    let _ = subject(top);
    for origin in [
        Origin::NotSigned("x".into()),
        Origin::SignatureInvalid("x".into()),
        Origin::UnknownProvider("x".into()),
        Origin::Provider {
            name: Some("Provider".into()),
            managed_domains: Some(vec!["pec.example.test".into()]),
        },
        Origin::Provider {
            name: None,
            managed_domains: None,
        },
    ] {
        let _ = classify(top, data, &origin);
    }
});
