#![no_main]
//! The chat request parser and its limit checks never panic, whatever the bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = triage::dispatch::request::ChatRequest::parse(data) {
        let _ = req.check_limits(&triage::config::Limits::default());
        let _ = req.prompt_hash();
    }
    let _ = triage::dispatch::request::EmbeddingsRequest::parse(data);
});
