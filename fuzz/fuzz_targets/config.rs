#![no_main]
//! The config/policy parser returns Ok or a ConfigError for any text, never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = triage::config::load_str(text, "fuzz.toml");
    }
});
