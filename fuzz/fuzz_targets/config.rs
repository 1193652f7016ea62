//! The config loader on arbitrary TOML: every problem comes back as a list
//! of errors with key paths, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pecd::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(text, std::path::Path::new("/nonexistent"));
});
