//! The ledger behind the HTTP API and the eval runner, against a real sled database and
//! the mock provider.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use triage::ledger::eval::{self, Check, ExpertFacts, Item, Target};
use triage::ledger::{GroupBy, Ledger, LedgerConfig, Origin, Record, ReportQuery};
use triage::{api, config, state::AppState};

use crate::mock::{Behavior, Mock};
use crate::support::remote_config;

async fn app_with_ledger(mock: &Mock, ledger: Option<Ledger>) -> axum::Router {
    let text = remote_config(&[("alpha", &mock.url())], "");
    let cfg = config::load_str(&text, "test.toml").unwrap();
    let mut state = AppState::new(cfg.clone(), &triage::routing::no_routers, None).unwrap();
    state.ledger = ledger;
    api::app(Arc::new(state))
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    assert!(resp.headers().contains_key("x-triage-request-id"), "every response carries a request id");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post_feedback(body: Value) -> Request<Body> {
    Request::post("/v1/feedback").header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

/// OpenAI's error shape: exactly message, type, param, code.
fn assert_openai_error(v: &Value, code: &str) {
    let e = v["error"].as_object().unwrap_or_else(|| panic!("not an OpenAI error: {v}"));
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert_eq!(e["code"], code, "{v}");
}

#[tokio::test]
async fn feedback_endpoint_scores_requests_and_stats_show_it() {
    let mock = Mock::start("alpha", Behavior::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path().join("db"))).unwrap();
    let app = app_with_ledger(&mock, Some(ledger.clone())).await;

    let (status, body) =
        call(&app, post_feedback(json!({"request_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "label": "good"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&body, "request_not_found");
    assert_eq!(body["error"]["param"], "request_id");

    let mut rec = Record::new("triage");
    rec.expert = Some("alpha".into());
    rec.category = Some("math".into());
    ledger.record(rec.clone()).await;
    // Straight after the request, before the writer's flush: must not 404.
    let (status, body) = call(&app, post_feedback(json!({"request_id": rec.id, "label": "bad"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["score"], 0.0);
    // The user changes their mind: same source, so it replaces the first verdict.
    let (status, _) = call(&app, post_feedback(json!({"request_id": rec.id, "score": 1.0, "source": "user"}))).await;
    assert_eq!(status, StatusCode::OK);
    ledger.flush().await.unwrap();

    let (status, stats) =
        call(&app, Request::get("/admin/stats?since=1h&by=category,expert").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let g = &stats["groups"][0];
    assert_eq!(g["key"], json!(["math", "alpha"]), "{stats}");
    assert_eq!(g["accuracy"]["n"], 1, "{stats}");
    assert_eq!(g["accuracy"]["mean"], 1.0, "{stats}");

    for (bad, param) in [
        (json!({"request_id": rec.id, "score": 2.0}), "score"),
        (json!({"request_id": rec.id, "label": "meh"}), "label"),
        (json!({"request_id": rec.id}), "score"),
        (json!({"request_id": 5, "score": 1}), "request_id"),
    ] {
        let (status, body) = call(&app, post_feedback(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], param, "{bad} -> {body}");
    }
    let (status, body) = call(&app, Request::get("/admin/stats?by=colour").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    ledger.close().await.unwrap();
}

#[tokio::test]
async fn without_a_ledger_the_routes_say_so() {
    let mock = Mock::start("alpha", Behavior::Ok).await;
    let app = app_with_ledger(&mock, None).await;
    let (status, body) = call(&app, post_feedback(json!({"request_id": "x", "score": 1}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_openai_error(&body, "ledger_disabled");
}

#[tokio::test]
async fn eval_records_answers_and_scores_as_evidence() {
    let good = Mock::start("alpha", Behavior::Ok).await;
    let bad = Mock::start("beta", Behavior::ServerError).await;
    let text = remote_config(&[("alpha", &good.url()), ("beta", &bad.url())], "");
    let cfg = config::load_str(&text, "test.toml").unwrap();
    let target =
        Target::InProcess(api::app(Arc::new(AppState::new(cfg.clone(), &triage::routing::no_routers, None).unwrap())));
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerConfig::new(dir.path().join("db"))).unwrap();
    let item = |id: &str, value: &str| Item {
        id: id.into(),
        category: "greeting".into(),
        prompt: Some("Say hello".into()),
        messages: None,
        check: Check::Contains { value: value.into(), case_sensitive: false },
        max_tokens: None,
    };
    let facts = ExpertFacts { input_per_mtok: 1.0, output_per_mtok: 2.0, active_params: Some(135_000_000) };
    // The mock answers "Hello from the mock".
    assert_eq!(eval::run_one(&target, &ledger, &item("a", "mock"), "alpha", &facts).await.unwrap(), Some(1.0));
    assert_eq!(eval::run_one(&target, &ledger, &item("b", "goodbye"), "alpha", &facts).await.unwrap(), Some(0.0));
    // An expert that errors leaves a record with its status but no score.
    assert_eq!(eval::run_one(&target, &ledger, &item("c", "mock"), "beta", &facts).await.unwrap(), None);
    ledger.flush().await.unwrap();

    let r =
        ledger.report(&ReportQuery { since_ms: None, by: vec![GroupBy::Model], origin: Some(Origin::Eval) }).unwrap();
    let alpha = r.groups.iter().find(|g| g.key == ["alpha"]).unwrap();
    let acc = alpha.accuracy.unwrap();
    assert_eq!((alpha.requests, acc.n, acc.mean), (2, 2, 0.5));
    // 11 prompt + 4 completion tokens at $1/$2 per million.
    assert!((alpha.cost_mean_usd - 19e-6).abs() < 1e-12, "{}", alpha.cost_mean_usd);
    assert_eq!(alpha.active_params_mean, Some(135e6));
    let beta = r.groups.iter().find(|g| g.key == ["beta"]).unwrap();
    assert_eq!((beta.requests, beta.error_rate, beta.accuracy), (1, 1.0, None));
    ledger.close().await.unwrap();
}

/// Through a real gateway: every outcome a client can see leaves one record, with the
/// id the client got in `x-triage-request-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_outcome_is_recorded_with_its_request_id() {
    use crate::support::{client, Gateway};
    use futures::StreamExt;
    let bad = Mock::start("bad", Behavior::ServerError).await;
    let good = Mock::start("good", Behavior::Ok).await;
    let hang = Mock::start("hang", Behavior::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger");
    let extra = format!("[ledger]\npath = {:?}\nflush_interval_ms = 20\n", db.display().to_string());
    let cfg = remote_config(&[("bad", &bad.url()), ("good", &good.url()), ("hang", &hang.url())], &extra).replace(
        "capabilities = [\"chat\", \"embeddings\", \"completions\"]\n",
        "capabilities = [\"chat\", \"embeddings\", \"completions\"]\nprice = { input_per_mtok = 1.0, output_per_mtok = 2.0 }\n",
    );
    let mut gw = Gateway::start(&cfg).await;
    let url = gw.url("/v1/chat/completions");
    let body = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let id = |r: &reqwest::Response| r.headers()["x-triage-request-id"].to_str().unwrap().to_string();

    // Fallback (bad -> good), non-streaming.
    let r = client().post(&url).json(&body("triage", false)).send().await.unwrap();
    let fallback_id = id(&r);
    assert_eq!(r.status(), 200);
    // A complete stream.
    let r = client().post(&url).json(&body("good", true)).send().await.unwrap();
    let stream_id = id(&r);
    r.text().await.unwrap();
    // Upstream error on every attempt.
    let r = client().post(&url).json(&body("bad", false)).send().await.unwrap();
    let error_id = id(&r);
    assert_eq!(r.status(), 502);
    // A client that hangs up mid-stream.
    let r = client().post(&url).json(&body("good", true)).send().await.unwrap();
    let gone_id = id(&r);
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    // A client that gives up before any answer (it never saw a request id).
    let gave_up = client().post(&url).timeout(std::time::Duration::from_millis(150)).json(&body("hang", false)).send();
    assert!(gave_up.await.is_err(), "the client timed out");
    // Invalid input.
    let r = client().post(&url).body("{").header("content-type", "application/json").send().await.unwrap();
    let invalid_id = id(&r);
    // A legacy text completion, streamed, routed past the failing expert.
    let completion = json!({"model": "triage", "stream": true, "prompt": "def add(a, b):"});
    let r = client().post(gw.url("/v1/completions")).json(&completion).send().await.unwrap();
    let completion_id = id(&r);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let r =
        client().post(gw.url("/v1/embeddings")).json(&json!({"model": "good", "input": "hi"})).send().await.unwrap();
    let embedding_id = id(&r);
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // Graceful shutdown flushes; then read the database as `triage ledger export` would.
    gw.shutdown();
    gw.task.await.unwrap().unwrap();
    let ledger = gw.state.ledger.clone().unwrap();
    ledger.close().await.unwrap();
    let get = |id: &str| ledger.get(id).unwrap().unwrap_or_else(|| panic!("no record for {id}"));

    let r = get(&fallback_id);
    assert_eq!((r.status, r.expert.as_deref(), r.tried.clone()), (200, Some("good"), vec!["bad".to_string()]));
    assert_eq!((r.input_tokens, r.output_tokens), (11, 4));
    assert!((r.cost_usd - (11.0 * 1.0 + 4.0 * 2.0) / 1e6).abs() < 1e-12, "{}", r.cost_usd);
    assert_eq!(r.policy, "triage");
    assert_eq!(r.policy_version.len(), 16);
    assert_eq!(r.prompt_hash.len(), 64);
    assert!(r.prompt.is_none(), "prompts are not stored by default");
    let r = get(&stream_id);
    assert!(r.stream && r.status == 200 && r.error.is_none(), "{r:?}");
    assert_eq!(r.output_tokens, 4, "usage read from the stream");
    assert!(r.ttft_ms.unwrap() <= r.latency_ms);
    let r = get(&error_id);
    assert_eq!((r.status, r.error.as_deref(), r.expert.as_deref()), (502, Some("upstream_5xx"), None));
    assert_eq!(r.tried, vec!["bad", "bad", "bad"]);
    let r = get(&gone_id);
    assert_eq!((r.status, r.error.as_deref()), (triage::ledger::STATUS_CLIENT_CLOSED, Some("client_disconnect")));
    // It left before the usage event: the tokens it was streamed are estimated, not free.
    assert!(r.usage_estimated, "{r:?}");
    assert_eq!(r.input_tokens, 1, "\"hi\" is about one token: {r:?}");
    assert!((1..=6).contains(&r.output_tokens), "one token an event relayed: {r:?}");
    assert!(r.cost_usd > 0.0, "{r:?}");
    assert!(!get(&stream_id).usage_estimated, "a stream with its usage event is counted exactly");
    let r = get(&invalid_id);
    assert_eq!((r.status, r.error.as_deref()), (400, Some("invalid_request")));
    let r = get(&completion_id);
    assert_eq!((r.status, r.expert.as_deref(), r.tried.clone()), (200, Some("good"), vec!["bad".to_string()]));
    assert_eq!((r.input_tokens, r.output_tokens, r.stream), (11, 4, true), "usage read from the completion stream");
    assert_eq!(r.prompt_hash.len(), 64);
    // Each record names the API it came through, and reports split by it.
    let endpoint = |id: &str| get(id).endpoint;
    assert_eq!(
        [&fallback_id, &invalid_id, &completion_id, &embedding_id].map(|id| endpoint(id)),
        ["chat", "chat", "completions", "embeddings"]
    );
    let report = ledger.report(&ReportQuery { by: vec![GroupBy::Endpoint], ..Default::default() }).unwrap();
    let requests: Vec<(String, u64)> = report.groups.iter().map(|g| (g.key[0].clone(), g.requests)).collect();
    assert_eq!(
        requests,
        [("chat".to_string(), 6), ("completions".to_string(), 1), ("embeddings".to_string(), 1)],
        "{report:?}"
    );
    let abandoned: Vec<Record> = ledger.scan(0).map(Result::unwrap).filter(|r| r.model == "hang").collect();
    assert_eq!(abandoned.len(), 1, "the abandoned request is recorded once: {abandoned:?}");
    let r = &abandoned[0];
    assert_eq!((r.status, r.error.as_deref()), (triage::ledger::STATUS_CLIENT_CLOSED, Some("client_disconnect")));
    assert!(r.latency_ms < 400.0, "recorded when the client left, not at the first-byte timeout: {r:?}");
}
