#![no_main]
//! The chat, text-completion and embeddings request parsers, their limit checks and everything the gateway
//! derives from a parsed body (prompt hash, routing text, the usage option it adds, the
//! error response) never panic, whatever the bytes.
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use triage::config::Limits;
use triage::dispatch::request::{ChatRequest, EmbeddingsRequest};

/// Small enough that a fuzzed body of a few KiB reaches every limit's error branch.
fn tight() -> Limits {
    Limits { max_messages: 2, max_prompt_chars: 16, max_tokens: 8, ..Limits::default() }
}

fuzz_target!(|data: &[u8]| {
    for parsed in [ChatRequest::parse(data), ChatRequest::parse_completion(data), ChatRequest::parse_either(data)] {
        match parsed {
            Ok(mut req) => {
                for limits in [Limits::default(), tight()] {
                    if let Err(e) = req.check_limits(&limits) {
                        drop(e.into_response());
                    }
                }
                let _ = req.prompt_hash();
                let _ = req.routing_text();
                req.request_usage();
                let usage = req.body.get("stream_options").and_then(|o| o.get("include_usage"));
                assert_eq!(usage, Some(&serde_json::Value::Bool(true)), "request_usage did not set include_usage");
            }
            Err(e) => drop(e.into_response()),
        }
    }
    match EmbeddingsRequest::parse(data) {
        Ok(req) => {
            for limits in [Limits::default(), tight()] {
                if let Err(e) = req.check_limits(&limits) {
                    drop(e.into_response());
                }
            }
        }
        Err(e) => drop(e.into_response()),
    }
});
