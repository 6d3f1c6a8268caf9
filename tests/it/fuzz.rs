//! Seeded fuzzing inside `cargo test`, next to the coverage-guided cargo-fuzz targets in
//! `fuzz/` (scripts/fuzz.sh): random and mutated inputs for the request parser, the SSE
//! relay and the config parser assert no panic; through the HTTP app, malformed input never
//! gets a gateway 5xx. Inputs that once crashed a cargo-fuzz target are replayed here.

use std::sync::Arc;

use axum::body::Body;
use futures::StreamExt;
use http::Request;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::ServiceExt;

use crate::mock::{Behavior, Mock};
use crate::support::remote_config;

/// Enough to hit every branch of the parsers many times; a few seconds in a debug build.
const CASES: usize = 10_000;
/// HTTP cases go through the whole app (and sometimes the mock): fewer, same coverage of shapes.
const HTTP_CASES: usize = 2_000;
/// Fixed so a failure reproduces; the failing input is printed.
const SEED: u64 = 0x0072_6961_6765;

const CHAT_SEEDS: [&str; 8] = [
    r#"{"model":"triage","prompt":"def add(a, b):","max_tokens":8,"echo":true}"#,
    r#"{"model":"a","prompt":[[1,2],[3]],"stream":true}"#,
    r#"{"model":"triage","messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"model":"triage","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":[{"type":"text","text":"x"}]}],"max_tokens":5}"#,
    r#"{"model":"a","messages":[{"role":"user","content":null}],"max_completion_tokens":1e30}"#,
    r#"{"model":"triage","messages":[],"tools":[{"type":"function"}]}"#,
    r#"[{"model":"triage"}]"#,
    r#"{"model":"a","input":["x",[1,2,3]]}"#,
];
const TOKENS: [&str; 14] =
    ["{", "}", "[", "]", "\"", ":", ",", "null", "-1", "1e999", "\u{0}", "\\u0000", "\u{fffd}", "18446744073709551616"];

fn mutate(rng: &mut StdRng, seeds: &[&str]) -> Vec<u8> {
    if rng.random_range(0..10) == 0 {
        let len = rng.random_range(0..256);
        return (0..len).map(|_| rng.random::<u8>()).collect();
    }
    let mut b = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=b.len());
        match rng.random_range(0..5) {
            0 => b.truncate(at),
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                b.splice(at..at, t.bytes());
            }
            2 if at < b.len() => b[at] = rng.random(),
            3 if at < b.len() => {
                let end = rng.random_range(at..b.len());
                b.drain(at..end);
            }
            _ => {
                let depth = rng.random_range(1..200);
                b.splice(at..at, std::iter::repeat_n(b'[', depth));
            }
        }
    }
    b
}

#[test]
fn the_request_parsers_never_panic() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let limits = triage::config::Limits::default();
    for _ in 0..CASES {
        let input = mutate(&mut rng, &CHAT_SEEDS);
        let result = std::panic::catch_unwind(|| {
            let chat = triage::dispatch::request::ChatRequest::parse(&input);
            let completion = triage::dispatch::request::ChatRequest::parse_completion(&input);
            for req in [chat, completion].into_iter().flatten() {
                let _ = req.check_limits(&limits);
                let _ = req.prompt_hash();
                let _ = req.routing_text();
            }
            if let Ok(req) = triage::dispatch::request::EmbeddingsRequest::parse(&input) {
                let _ = req.check_limits(&limits);
            }
        });
        assert!(result.is_ok(), "parser panicked on {:?}", String::from_utf8_lossy(&input));
    }
}

#[tokio::test]
async fn the_sse_relay_never_panics_on_arbitrary_upstream_bytes() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let seeds = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ": keep-alive\r\n\r\nevent: x\ndata: {\"usage\":null}\n\n",
    ];
    for _ in 0..CASES {
        let input = mutate(&mut rng, &seeds);
        let cut = rng.random_range(0..=input.len());
        let chunks: Vec<Result<bytes::Bytes, triage::experts::ExpertError>> =
            vec![Ok(bytes::Bytes::copy_from_slice(&input[..cut])), Ok(bytes::Bytes::copy_from_slice(&input[cut..]))];
        let strip = rng.random::<bool>();
        let relay = triage::dispatch::sse::Relay::new(futures::stream::iter(chunks).boxed(), strip, |_| {});
        let out = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(relay.collect::<Vec<_>>())).await;
        assert!(out.is_ok(), "relay panicked on {:?} cut at {cut}", String::from_utf8_lossy(&input));
    }
}

#[test]
fn the_config_parser_never_panics() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let seeds = [
        "[server]\nlisten = \"127.0.0.1:1\"\n[[experts]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n[[models]]\nname = \"m\"\nexperts = [\"a\"]\n",
        "[auth]\nkeys_db = \"k\"\n[limits]\nmax_messages = 0\nmax_header_bytes = 1\n[ledger]\npath = \"l\"\n",
        "[[models]]\nname = \"m\"\nfallback = \"a\"\ncategories = { \"*\" = [\"a\"] }\ntop_p = { p = 2.0 }\n",
    ];
    for _ in 0..CASES {
        let input = mutate(&mut rng, &seeds);
        let text = String::from_utf8_lossy(&input).into_owned();
        let result = std::panic::catch_unwind(|| triage::config::load_str(&text, "fuzz.toml"));
        assert!(result.is_ok(), "config parser panicked on {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_get_a_gateway_5xx() {
    let mock = Mock::start("a", Behavior::Ok).await;
    let config = triage::config::load_str(&remote_config(&[("a", &mock.url())], ""), "t.toml").unwrap();
    let state = triage::state::AppState::new(config, &triage::routing::no_routers, None).unwrap();
    let app = triage::api::app(Arc::new(state));
    let mut rng = StdRng::seed_from_u64(SEED);
    let paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/route", "/v1/feedback"];
    for _ in 0..HTTP_CASES {
        let input = mutate(&mut rng, &CHAT_SEEDS);
        let path = paths[rng.random_range(0..paths.len())];
        let req =
            Request::post(path).header("content-type", "application/json").body(Body::from(input.clone())).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        // A 5xx may only come from the (mock) expert, never from the gateway's own handling.
        let from_upstream =
            text.contains("\"upstream_") || text.contains("no_expert_available") || text.contains("ledger_disabled");
        assert!(
            !status.is_server_error() || from_upstream,
            "{path} answered {status} {text} to {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}
