//! Virtual API keys, budgets, rate limits and limits on hostile input, against a real
//! gateway on a socket, the real keys database and ledger, and the official openai SDK.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mock::{Behavior, Mock};
use crate::support::{client, Gateway};

const ADMIN_ENV: &str = "TRIAGE_TEST_ADMIN_KEY";
const ADMIN_KEY: &str = "sk-admin-test-only";

/// One priced remote expert `a` (1 USD per token: the mock's 11 + 4 tokens cost 15 USD),
/// a virtual model `triage` over it, and `extra` sections.
fn config(mock: &Mock, extra: &str) -> String {
    // SAFETY of set_var: every test sets the same value, so concurrent writers agree.
    std::env::set_var(ADMIN_ENV, ADMIN_KEY);
    format!(
        "[[experts]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}\"\ncapabilities = [\"chat\", \"embeddings\"]\nprice = {{ input_per_mtok = 1000000.0, output_per_mtok = 1000000.0 }}\n[[models]]\nname = \"triage\"\nexperts = [\"a\"]\n{extra}",
        mock.url()
    )
}

fn auth_section(db: &std::path::Path) -> String {
    format!("[auth]\nkeys_db = \"{}\"\nadmin_key_env = \"{ADMIN_ENV}\"\n", db.display())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}]})
}

async fn post_key(gw: &Gateway, key: Option<&str>, path: &str, body: &Value) -> reqwest::Response {
    let mut req = client().post(gw.url(path)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// Creates a key through the running gateway's admin endpoint; returns its secret.
async fn create_key(gw: &Gateway, spec: Value) -> String {
    let resp = post_key(gw, Some(ADMIN_KEY), "/admin/keys", &spec).await;
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["key"]["name"], spec["name"]);
    v["secret"].as_str().unwrap().to_string()
}

async fn error_of(resp: reqwest::Response, status: u16) -> (reqwest::header::HeaderMap, Value) {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    let v: Value = resp.json().await.unwrap();
    let e = v["error"].as_object().unwrap_or_else(|| panic!("not an OpenAI error: {v}"));
    let mut keys: Vec<&str> = e.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    (headers, v)
}

fn triage_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_triage"))
}

fn run_keys(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    triage_bin().arg("keys").arg("--db").arg(db).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cli_create_list_revoke_round_trip_and_the_gateway_honours_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys");
    // Listing a database that is not there (a mistyped path) says so, and creates nothing.
    let out = run_keys(&db, &["list"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no keys database"));
    assert!(!db.exists());
    let out = run_keys(&db, &["create", "alice", "--tenant", "acme", "--model", "triage", "--rpm", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alice = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(alice.starts_with("sk-triage-") && alice.len() > 60, "{alice}");
    let bob = String::from_utf8(run_keys(&db, &["create", "bob"]).stdout).unwrap().trim().to_string();
    let list = String::from_utf8(run_keys(&db, &["list"]).stdout).unwrap();
    assert!(list.contains("alice") && list.contains("acme") && list.contains("bob"), "{list}");
    assert!(!list.contains(&alice) && !list.contains(&alice[20..]), "list never shows secrets:\n{list}");
    let out = run_keys(&db, &["revoke", "bob"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = String::from_utf8(run_keys(&db, &["list", "--json"]).stdout).unwrap();
    let bob_line: Value =
        json.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["name"] == "bob").unwrap();
    assert!(bob_line["revoked_ms"].is_u64(), "{json}");

    let mock = Mock::start("a", Behavior::Ok).await;
    let ledger_dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(
        &mock,
        &format!("{}[ledger]\npath = \"{}\"\n", auth_section(&db), ledger_dir.path().display()),
    ))
    .await;
    // While the gateway holds the database the CLI refuses and points at the admin API.
    let out = run_keys(&db, &["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/admin/keys"), "{}", String::from_utf8_lossy(&out.stderr));

    let ok = post_key(&gw, Some(&alice), "/v1/chat/completions", &chat("triage")).await;
    assert_eq!(ok.status(), 200);
    let id = ok.headers()["x-triage-request-id"].to_str().unwrap().to_string();
    let (_, v) = error_of(post_key(&gw, Some(&bob), "/v1/chat/completions", &chat("triage")).await, 401).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"].as_str().unwrap().contains("revoked"), "{v}");

    // Revoking through the admin API takes effect on the next request.
    let resp = client().delete(gw.url("/admin/keys/alice")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    error_of(post_key(&gw, Some(&alice), "/v1/chat/completions", &chat("triage")).await, 401).await;

    // The ledger names the tenant and the key, never the secret.
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await.unwrap();
    let rec = ledger.get(&id).unwrap().unwrap();
    assert_eq!(rec.tenant.as_deref(), Some("acme"));
    assert_eq!(rec.api_key.as_deref(), Some("alice"));
    let raw = serde_json::to_string(&rec).unwrap();
    assert!(!raw.contains(&alice[10..]), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_the_probes_needs_a_key_and_admin_routes_the_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, &auth_section(&dir.path().join("keys")))).await;
    let key = create_key(&gw, json!({"name": "c", "models": ["triage"]})).await;
    for path in ["/health", "/ready"] {
        assert_eq!(client().get(gw.url(path)).send().await.unwrap().status(), 200, "{path} is public");
    }
    for path in ["/v1/models", "/admin/policies", "/admin/keys", "/no/such/route"] {
        let (_, v) = error_of(client().get(gw.url(path)).send().await.unwrap(), 401).await;
        assert_eq!(v["error"]["code"], "missing_api_key", "{path}");
    }
    let (_, v) = error_of(post_key(&gw, None, "/v1/embeddings", &json!({"model": "a", "input": "x"})).await, 401).await;
    assert_eq!(v["error"]["code"], "missing_api_key");
    // A client key is not an admin key, and the admin key is not a client key.
    let (_, v) = error_of(client().get(gw.url("/admin/keys")).bearer_auth(&key).send().await.unwrap(), 401).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    error_of(post_key(&gw, Some(ADMIN_KEY), "/v1/chat/completions", &chat("triage")).await, 401).await;
    let list: Value =
        client().get(gw.url("/admin/keys")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["data"][0]["name"], "c");
    assert!(!list.to_string().contains(&key[10..]), "secrets are never listed: {list}");
    // /v1/models shows only what the key may use.
    let models: Value =
        client().get(gw.url("/v1/models")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["triage"]);
    // 403 for a model the key may not use, before any expert is called.
    let hits = mock.hits();
    let (_, v) = error_of(post_key(&gw, Some(&key), "/v1/chat/completions", &chat("a")).await, 403).await;
    assert_eq!((v["error"]["code"].as_str(), v["error"]["param"].as_str()), (Some("model_not_allowed"), Some("model")));
    error_of(post_key(&gw, Some(&key), "/v1/embeddings", &json!({"model": "a", "input": "x"})).await, 403).await;
    assert_eq!(mock.hits(), hits);
}

/// `triage experts` against the running gateway, with `env` set (or removed when `None`).
fn run_experts(gw: &Gateway, args: &[&str], env: &[(&str, Option<&str>)]) -> std::process::Output {
    let mut cmd = triage_bin();
    cmd.args(["experts", "--gateway", &gw.url("")]).args(args);
    for (var, value) in env {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experts_cli_sends_the_admin_key_from_the_variable_and_names_it_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, &auth_section(&dir.path().join("keys")))).await;
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The key from the variable --admin-key-env names, as a bearer token.
    let out = run_experts(&gw, &["--admin-key-env", ADMIN_ENV, "--json"], &[(ADMIN_ENV, Some(ADMIN_KEY))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["experts"][0]["name"], "a", "{v}");
    // The default variable is TRIAGE_ADMIN_KEY.
    let out = run_experts(&gw, &[], &[("TRIAGE_ADMIN_KEY", Some(ADMIN_KEY))]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("expert "), "a table");

    // Without the variable: 401, and the error says which variable and which flag.
    let out =
        run_experts(&gw, &["--admin-key-env", "TRIAGE_TEST_UNSET_ADMIN_KEY"], &[("TRIAGE_TEST_UNSET_ADMIN_KEY", None)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("HTTP 401") && err.contains("$TRIAGE_TEST_UNSET_ADMIN_KEY is not set"), "{err}");
    assert!(err.contains("--admin-key-env"), "{err}");
    let out = run_experts(&gw, &[], &[("TRIAGE_ADMIN_KEY", None)]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("$TRIAGE_ADMIN_KEY is not set"), "{err}");
    // A wrong key: refused, and the secret is not echoed.
    let out = run_experts(&gw, &["--admin-key-env", ADMIN_ENV], &[(ADMIN_ENV, Some("sk-wrong-admin"))]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains(&format!("refused the admin key in ${ADMIN_ENV}")), "{err}");
    assert!(err.contains("--admin-key-env") && !err.contains("sk-wrong-admin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_budget_gives_insufficient_quota_while_another_tenant_still_works_and_the_sdk_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, &auth_section(&dir.path().join("keys")))).await;
    // One request costs 15 USD: the first starts under budget, the second would start over it.
    let broke = create_key(&gw, json!({"name": "broke", "tenant": "t1", "budget_daily": 10.0})).await;
    let rich = create_key(&gw, json!({"name": "rich", "tenant": "t2", "budget_daily": 1000.0})).await;
    let narrow = create_key(&gw, json!({"name": "narrow", "models": ["a"]})).await;
    assert_eq!(post_key(&gw, Some(&broke), "/v1/chat/completions", &chat("triage")).await.status(), 200);
    let (h, v) = error_of(post_key(&gw, Some(&broke), "/v1/chat/completions", &chat("triage")).await, 429).await;
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("insufficient_quota"), Some("insufficient_quota"))
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "until the next UTC midnight: {retry}");
    // Streams and embeddings are refused alike.
    let stream = json!({"model": "triage", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    error_of(post_key(&gw, Some(&broke), "/v1/chat/completions", &stream).await, 429).await;
    error_of(post_key(&gw, Some(&broke), "/v1/embeddings", &json!({"model": "a", "input": "x"})).await, 429).await;
    assert_eq!(post_key(&gw, Some(&rich), "/v1/chat/completions", &chat("triage")).await.status(), 200);

    let base = gw.url("/v1");
    let script = format!("{}/tests/python/auth_check.py", env!("CARGO_MANIFEST_DIR"));
    let py = crate::sdk::python();
    let out =
        tokio::task::spawn_blocking(move || Command::new(&py).args([&script, &base, &rich, &narrow, &broke]).output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test.sh", crate::sdk::python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "auth_check.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("auth checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_is_seeded_from_the_ledger_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger");
    {
        let ledger = triage::ledger::Ledger::open(triage::ledger::LedgerConfig::new(&ledger_path)).unwrap();
        let mut rec = triage::ledger::Record::new("triage");
        rec.api_key = Some("spender".into());
        rec.cost_usd = 50.0;
        ledger.record(rec).await;
        ledger.close().await.unwrap();
    }
    let mock = Mock::start("a", Behavior::Ok).await;
    let extra = format!("{}[ledger]\npath = \"{}\"\n", auth_section(&dir.path().join("keys")), ledger_path.display());
    let gw = Gateway::start(&config(&mock, &extra)).await;
    let spender = create_key(&gw, json!({"name": "spender", "budget_monthly": 40.0})).await;
    let (h, v) = error_of(post_key(&gw, Some(&spender), "/v1/chat/completions", &chat("triage")).await, 429).await;
    assert_eq!(v["error"]["code"], "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("monthly"), "{v}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(mock.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_and_tpm_limits_trip_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, &auth_section(&dir.path().join("keys")))).await;
    let key = create_key(&gw, json!({"name": "slow", "rpm": 2})).await;
    for _ in 0..2 {
        assert_eq!(post_key(&gw, Some(&key), "/v1/chat/completions", &chat("triage")).await.status(), 200);
    }
    let (h, v) = error_of(post_key(&gw, Some(&key), "/v1/chat/completions", &chat("triage")).await, 429).await;
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["code"].as_str()),
        (Some("requests"), Some("rate_limit_exceeded"))
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "one request frees up every 30 s: {retry}");
    // Every endpoint counts against RPM.
    error_of(client().get(gw.url("/v1/models")).bearer_auth(&key).send().await.unwrap(), 429).await;

    // TPM: the mock reports 15 tokens per answer; the estimate of a short prompt is ~3.
    // Two answers use 30 of 40 tokens; the third request fits the estimate only once the
    // correction by actual usage is counted, so it is refused.
    let tok = create_key(&gw, json!({"name": "tok", "tpm": 40})).await;
    for _ in 0..2 {
        assert_eq!(post_key(&gw, Some(&tok), "/v1/chat/completions", &chat("triage")).await.status(), 200);
    }
    let big = json!({"model": "triage", "messages": [{"role": "user", "content": "x".repeat(60)}]});
    let (h, v) = error_of(post_key(&gw, Some(&tok), "/v1/chat/completions", &big).await, 429).await;
    assert_eq!(v["error"]["type"], "tokens", "{v}");
    assert!(h.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_messages_max_tokens_prompt_and_headers_give_clear_errors() {
    let mock = Mock::start("a", Behavior::Ok).await;
    let limits = "[limits]\nmax_messages = 3\nmax_tokens = 100\nmax_prompt_chars = 50\nmax_header_bytes = 2048\n";
    let gw = Gateway::start(&config(&mock, limits)).await;
    let msgs: Vec<Value> = (0..4).map(|_| json!({"role": "user", "content": "x"})).collect();
    let (_, v) =
        error_of(post_key(&gw, None, "/v1/chat/completions", &json!({"model": "triage", "messages": msgs})).await, 400)
            .await;
    assert_eq!(v["error"]["param"], "messages");
    assert!(v["error"]["message"].as_str().unwrap().contains("maximum length 3"), "{v}");
    let body = json!({"model": "triage", "max_tokens": 101, "messages": [{"role": "user", "content": "x"}]});
    let (_, v) = error_of(post_key(&gw, None, "/v1/chat/completions", &body).await, 400).await;
    assert_eq!(
        (v["error"]["param"].as_str(), v["error"]["code"].as_str()),
        (Some("max_tokens"), Some("integer_above_max_value"))
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("100"), "{v}");
    let body = json!({"model": "triage", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]});
    let (_, v) = error_of(post_key(&gw, None, "/v1/chat/completions", &body).await, 400).await;
    assert_eq!(
        (v["error"]["param"].as_str(), v["error"]["code"].as_str()),
        (Some("max_tokens"), Some("integer_below_min_value"))
    );
    let body =
        json!({"model": "triage", "max_completion_tokens": 5000, "messages": [{"role": "user", "content": "x"}]});
    error_of(post_key(&gw, None, "/v1/chat/completions", &body).await, 400).await;
    let long = json!({"model": "triage", "messages": [{"role": "user", "content": "y".repeat(51)}]});
    let (_, v) = error_of(post_key(&gw, None, "/v1/chat/completions", &long).await, 400).await;
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let (_, v) =
        error_of(post_key(&gw, None, "/v1/embeddings", &json!({"model": "a", "input": ["z".repeat(51)]})).await, 400)
            .await;
    assert_eq!(v["error"]["param"], "input");
    // Headers over the limit: an OpenAI-shaped 431 ...
    let resp = client().get(gw.url("/v1/models")).header("x-filler", "f".repeat(3000)).send().await.unwrap();
    let (_, v) = error_of(resp, 431).await;
    assert_eq!(v["error"]["code"], "headers_too_large");
    // ... and far over it, hyper cuts the connection off (no unbounded buffering).
    let huge = client().get(gw.url("/v1/models")).header("x-filler", "f".repeat(64 * 1024)).send().await;
    assert!(huge.is_err() || huge.unwrap().status() == 431);
    assert_eq!(mock.hits(), 0, "nothing over a limit reached the expert");
    assert_eq!(post_key(&gw, None, "/v1/chat/completions", &chat("triage")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_disconnected_after_the_header_timeout() {
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, "[limits]\nheader_read_timeout_ms = 300\n")).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut closed = false;
    for b in request {
        if tcp.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        // Under the timeout per byte, far over it for the whole header block.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !closed {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await;
        // EOF (or a reset, or an error response) — anything but a served request.
        closed = match n {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            Err(_) => false,
        };
    }
    assert!(closed, "the slow client was still connected after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "disconnected soon after the 300 ms timeout");
    // A normal client is unaffected.
    assert_eq!(client().get(gw.url("/health")).send().await.unwrap().status(), 200);
}

/// Reads the child's stderr until `needle` appears (or 20 s pass); kills the child.
fn stderr_until(mut child: std::process::Child, needle: &str) -> String {
    use std::io::Read;
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(needle) && Instant::now() < deadline {
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&s);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn authentication_is_off_only_by_config_and_the_log_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let expert = "[[experts]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    let cases = [
        ("none.toml", String::new(), "authentication is OFF"),
        ("off.toml", "[auth]\nenabled = false\n".to_string(), "authentication is OFF"),
        ("on.toml", format!("[auth]\nkeys_db = \"{}\"\n", dir.path().join("keys").display()), "Authentication is on"),
    ];
    for (name, section, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{expert}{section}")).unwrap();
        let child = triage_bin()
            .args(["serve", "--no-watch", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = stderr_until(child, needle);
        assert!(log.contains(needle), "{name}: expected {needle:?} in the log:\n{log}");
        if needle == "Authentication is on" {
            assert!(!log.contains("authentication is OFF"), "{log}");
        }
    }
    // [auth] without a keys database is a config error, not a silently open gateway.
    let err = triage::config::load_str("[auth]\n", "x.toml").unwrap_err().to_string();
    assert!(err.contains("auth.keys_db"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_in_the_ledger_with_the_tenant_when_the_key_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start("a", Behavior::Ok).await;
    let extra =
        format!("{}[ledger]\npath = \"{}\"\n", auth_section(&dir.path().join("keys")), dir.path().join("l").display());
    let gw = Gateway::start(&config(&mock, &extra)).await;
    let key = create_key(&gw, json!({"name": "once", "tenant": "acme", "rpm": 1, "models": ["triage"]})).await;
    let id = |r: &reqwest::Response| r.headers()["x-triage-request-id"].to_str().unwrap().to_string();
    let no_key = post_key(&gw, None, "/v1/chat/completions", &chat("triage")).await;
    let completion = json!({"model": "triage", "prompt": "hi"});
    let bad_key = post_key(&gw, Some("sk-triage-nope"), "/v1/completions", &completion).await;
    assert_eq!(post_key(&gw, Some(&key), "/v1/chat/completions", &chat("triage")).await.status(), 200);
    let over_rpm = post_key(&gw, Some(&key), "/v1/chat/completions", &chat("triage")).await;
    let listing = post_key(&gw, None, "/v1/models", &json!({})).await;
    let ids = [
        (id(&no_key), 401, "unauthorized", None, "chat"),
        (id(&bad_key), 401, "unauthorized", None, "completions"),
        (id(&over_rpm), 429, "rate_limited", Some("acme"), "chat"),
        (id(&listing), 401, "unauthorized", None, ""),
    ];
    assert!(over_rpm.headers().contains_key("content-length"), "counted bodies keep their length");
    error_of(over_rpm, 429).await;
    let ledger = gw.state.ledger.as_ref().unwrap();
    ledger.flush().await.unwrap();
    for (id, status, label, tenant, endpoint) in ids {
        let rec =
            ledger.get(&id).unwrap().unwrap_or_else(|| panic!("refusal {id} ({status} {label}) is not in the ledger"));
        assert_eq!((rec.status, rec.error.as_deref(), rec.tenant.as_deref()), (status, Some(label), tenant), "{rec:?}");
        assert_eq!(rec.endpoint, endpoint, "the API it was refused on: {rec:?}");
        if tenant.is_some() {
            assert_eq!(rec.api_key.as_deref(), Some("once"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_wait_until_one_closes() {
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, "[limits]\nmax_connections = 2\nheader_read_timeout_ms = 5000\n")).await;
    // Two idle connections take both slots (they have sent nothing yet).
    let first = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let start = Instant::now();
    while gw.state.load.connections() < 2 {
        assert!(start.elapsed() < Duration::from_secs(2), "the idle connections were never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = fresh().get(format!("http://{}/health", gw.addr)).send().await.map(|r| r.status().as_u16());
        (r, started.elapsed(), gw)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection was served while two were open");
    drop(first);
    let (status, took, gw) = tokio::time::timeout(Duration::from_secs(3), waiting).await.unwrap().unwrap();
    assert_eq!(status.unwrap(), 200, "served once a slot freed up");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(gw.state.load.connections() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_upload_is_cut_off_after_the_body_read_timeout() {
    let mock = Mock::start("a", Behavior::Ok).await;
    let gw = Gateway::start(&config(&mock, "[limits]\nbody_read_timeout_ms = 300\n")).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The rest of the body never comes; the answer (then EOF) must.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&buf).contains("\"error\"") {
            break;
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "answered after {took:?}: {text}");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("not received within the designated timeout"), "{text}");
    assert!(text.contains("\"error\"") && text.contains("x-triage-request-id"), "OpenAI-shaped error: {text}");
    assert_eq!(mock.hits(), 0);
    drop(tcp);
    let start = Instant::now();
    while gw.state.load.requests() + gw.state.load.connections() > 0 {
        assert!(start.elapsed() < Duration::from_secs(3), "the stalled request was never let go");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
