#![no_main]
//! The config/policy parser (TOML -> validated config) returns a config or a ConfigError
//! for any text, never panics. A NUL byte splits the input into several files, which
//! exercises the merge of experts and models across files and the one-file-only sections.
use libfuzzer_sys::fuzz_target;
use triage::config::{load_sources, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let sources: Vec<Source> = text
        .split('\0')
        .enumerate()
        .map(|(i, part)| Source { file: format!("fuzz-{i}.toml"), text: part.to_string() })
        .collect();
    if let Err(e) = load_sources(&sources) {
        // The message quotes the key path and the value: formatting it must not panic either.
        let _ = e.to_string();
    }
});
