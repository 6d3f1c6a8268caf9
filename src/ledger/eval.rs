//! `triage eval run`: ask experts the questions of an eval set, score each answer with the
//! item's checker, and record the results as accuracy evidence (feedback source `eval`).
//!
//! An eval set is JSON lines, one item each:
//! `{"id": "cap-fr", "category": "facts", "prompt": "...", "check": {"type": "contains", "value": "Paris"}}`
//! (`messages` may replace `prompt`; `max_tokens` is optional).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{cost_usd, prompt_hash, Feedback, Ledger, LedgerError, Origin, Record};

/// Feedback source for eval results.
pub const EVAL_SOURCE: &str = "eval";
/// Enough for the short answers eval items ask for; a model that rambles past it is wrong.
pub const DEFAULT_MAX_TOKENS: u32 = 64;
/// An external checker that takes longer is stuck, not thinking.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read eval set {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Item { file: String, line: usize, message: String },
    #[error("{file}: the eval set has no items")]
    Empty { file: String },
    #[error("checker command {cmd:?} failed to run: {detail}")]
    Command { cmd: Vec<String>, detail: String },
    #[error("calling the gateway failed: {0}")]
    Gateway(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// How an answer is judged. Every check but `command` is case-insensitive unless
/// `case_sensitive` is set, and ignores surrounding whitespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// The whole answer equals `value` (a trailing period is ignored).
    Exact {
        value: String,
        #[serde(default)]
        case_sensitive: bool,
    },
    /// The answer contains `value`.
    Contains {
        value: String,
        #[serde(default)]
        case_sensitive: bool,
    },
    /// The answer matches `pattern` somewhere (use `^...$` to anchor; `(?i)` for case).
    Regex {
        pattern: String,
        #[serde(skip)]
        compiled: Option<regex::Regex>,
    },
    /// The last number in the answer is within `tolerance` of `value`. The last, because
    /// small models restate the question ("7 + 5 = 12") before answering.
    Numeric {
        value: f64,
        #[serde(default)]
        tolerance: f64,
    },
    /// The answer (code fences stripped) is valid JSON, and an object with `keys` if given.
    Json {
        #[serde(default)]
        keys: Vec<String>,
    },
    /// Runs `cmd` (program, then arguments) with the answer on stdin; exit status 0 means
    /// correct. `TRIAGE_EVAL_ID` holds the item's id.
    Command { cmd: Vec<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    pub category: String,
    #[serde(default)]
    pub prompt: Option<String>,
    /// OpenAI chat messages; overrides `prompt`.
    #[serde(default)]
    pub messages: Option<Value>,
    pub check: Check,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

impl Item {
    pub fn messages(&self) -> Value {
        match (&self.messages, &self.prompt) {
            (Some(m), _) => m.clone(),
            (None, Some(p)) => json!([{"role": "user", "content": p}]),
            (None, None) => json!([]),
        }
    }
}

/// Reads and validates an eval set: every line parses, regexes compile, ids are unique.
pub fn load_set(path: &Path) -> Result<Vec<Item>, EvalError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read { file: file.clone(), source })?;
    let mut items: Vec<Item> = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| EvalError::Item { file: file.clone(), line: i + 1, message };
        if line.trim().is_empty() {
            continue;
        }
        let mut item: Item = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        if item.prompt.is_none() && item.messages.is_none() {
            return Err(err("an item needs `prompt` or `messages`".into()));
        }
        if let Check::Regex { pattern, compiled } = &mut item.check {
            *compiled = Some(regex::Regex::new(pattern).map_err(|e| err(format!("check.pattern: {e}")))?);
        }
        if let Check::Command { cmd } = &item.check {
            if cmd.is_empty() {
                return Err(err("check.cmd must name a program".into()));
            }
        }
        if let Some(prev) = seen.insert(item.id.clone(), i + 1) {
            return Err(err(format!("duplicate id {:?} (first on line {prev})", item.id)));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(EvalError::Empty { file });
    }
    Ok(items)
}

impl Check {
    /// 1.0 if the answer passes, else 0.0.
    pub async fn score(&self, item_id: &str, answer: &str) -> Result<f64, EvalError> {
        let answer = answer.trim();
        let fold = |s: &str, cs: bool| if cs { s.to_string() } else { s.to_lowercase() };
        let pass = match self {
            Check::Exact { value, case_sensitive } => {
                let a = answer.strip_suffix('.').unwrap_or(answer).trim();
                fold(a, *case_sensitive) == fold(value.trim(), *case_sensitive)
            }
            Check::Contains { value, case_sensitive } => {
                fold(answer, *case_sensitive).contains(&fold(value, *case_sensitive))
            }
            Check::Regex { pattern, compiled } => match compiled {
                Some(re) => re.is_match(answer),
                None => regex::Regex::new(pattern).is_ok_and(|re| re.is_match(answer)),
            },
            Check::Numeric { value, tolerance } => {
                last_number(answer).is_some_and(|n| (n - value).abs() <= tolerance.max(f64::EPSILON))
            }
            Check::Json { keys } => match serde_json::from_str::<Value>(strip_fences(answer)) {
                Ok(v) => keys.iter().all(|k| v.get(k).is_some()),
                Err(_) => false,
            },
            Check::Command { cmd } => run_command(cmd, item_id, answer).await?,
        };
        Ok(if pass { 1.0 } else { 0.0 })
    }
}

/// The last decimal number in `s` ("1,000" counts as 1000).
pub fn last_number(s: &str) -> Option<f64> {
    let re_free = s.replace(',', "");
    let bytes = re_free.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_digit()
            || (bytes[i] == b'-'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
                && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()));
        if starts {
            let mut j = i + 1;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit() || (bytes[j] == b'.' && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)))
            {
                j += 1;
            }
            last = re_free[i..j].parse().ok().or(last);
            i = j;
        } else {
            i += 1;
        }
    }
    last
}

/// Small models wrap JSON in Markdown fences; the JSON inside is what they were asked for.
fn strip_fences(s: &str) -> &str {
    let s = s.trim();
    match s.strip_prefix("```") {
        Some(rest) => {
            let rest = rest.strip_prefix("json").unwrap_or(rest);
            rest.strip_suffix("```").unwrap_or(rest).trim()
        }
        None => s,
    }
}

async fn run_command(cmd: &[String], item_id: &str, answer: &str) -> Result<bool, EvalError> {
    use tokio::io::AsyncWriteExt;
    let fail = |detail: String| EvalError::Command { cmd: cmd.to_vec(), detail };
    let (program, args) = cmd.split_first().ok_or_else(|| fail("empty command".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("TRIAGE_EVAL_ID", item_id)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A checker that exits without reading stdin is fine: its status still decides.
        let _ = stdin.write_all(answer.as_bytes()).await;
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => Ok(status.success()),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail(format!("no exit within {}s", COMMAND_TIMEOUT.as_secs()))),
    }
}

/// Where chat requests go: a running gateway, or a gateway built in this process.
pub enum Target {
    Http { base_url: String, client: reqwest::Client, api_key: Option<String> },
    InProcess(axum::Router),
}

/// One answer from the target, successful or not.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl Target {
    pub async fn chat(&self, body: &Value) -> Result<Answer, EvalError> {
        let start = Instant::now();
        let (status, bytes) = match self {
            Target::Http { base_url, client, api_key } => {
                let mut req = client.post(format!("{}/v1/chat/completions", base_url.trim_end_matches('/'))).json(body);
                if let Some(k) = api_key {
                    req = req.bearer_auth(k);
                }
                let resp = req.send().await.map_err(|e| EvalError::Gateway(e.to_string()))?;
                let status = resp.status().as_u16();
                (status, resp.bytes().await.map_err(|e| EvalError::Gateway(e.to_string()))?)
            }
            Target::InProcess(app) => {
                use tower::ServiceExt;
                let req = http::Request::post("/v1/chat/completions")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(axum::body::Body::from(body.to_string()))
                    .map_err(|e| EvalError::Gateway(e.to_string()))?;
                let resp = app.clone().oneshot(req).await.map_err(|e| EvalError::Gateway(e.to_string()))?;
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .map_err(|e| EvalError::Gateway(e.to_string()))?;
                (status, bytes)
            }
        };
        let latency_ms = start.elapsed().as_secs_f64() * 1e3;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let usage = |k: &str| v["usage"][k].as_u64().unwrap_or(0);
        let error = if (200..300).contains(&status) {
            None
        } else {
            Some(v["error"]["code"].as_str().or(v["error"]["type"].as_str()).unwrap_or("http_error").to_string())
        };
        Ok(Answer {
            status,
            content: v["choices"][0]["message"]["content"].as_str().map(str::to_string),
            input_tokens: usage("prompt_tokens"),
            output_tokens: usage("completion_tokens"),
            latency_ms,
            error,
        })
    }
}

/// What an expert costs, for the records an eval run writes.
#[derive(Debug, Clone, Default)]
pub struct ExpertFacts {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub active_params: Option<u64>,
}

/// Runs one item on one expert, records the request and (for answers) its score.
/// Returns the score, or `None` when the expert gave no answer (an error status).
pub async fn run_one(
    target: &Target,
    ledger: &Ledger,
    item: &Item,
    expert: &str,
    facts: &ExpertFacts,
) -> Result<Option<f64>, EvalError> {
    let messages = item.messages();
    let body = json!({
        "model": expert,
        "messages": messages,
        "max_tokens": item.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "temperature": 0,
    });
    let answer = target.chat(&body).await?;
    let mut rec = Record::new(expert);
    rec.endpoint = crate::config::Capability::Chat.name().to_string();
    rec.origin = Origin::Eval;
    rec.policy = "eval".into();
    rec.category = Some(item.category.clone());
    rec.status = answer.status;
    rec.error = answer.error.clone();
    rec.expert = answer.error.is_none().then(|| expert.to_string());
    rec.input_tokens = answer.input_tokens;
    rec.output_tokens = answer.output_tokens;
    rec.cost_usd = cost_usd(answer.input_tokens, answer.output_tokens, facts.input_per_mtok, facts.output_per_mtok);
    rec.active_params = facts.active_params;
    rec.latency_ms = answer.latency_ms;
    rec.ttft_ms = Some(answer.latency_ms);
    rec.prompt_hash = prompt_hash(messages.to_string().as_bytes());
    rec.prompt = Some(messages.to_string());
    let id = rec.id.clone();
    ledger.record(rec).await;
    // Errors are in the record's status; accuracy is about answers the client received.
    let Some(content) = answer.content.filter(|_| answer.error.is_none()) else { return Ok(None) };
    let score = item.check.score(&item.id, &content).await?;
    ledger.feedback(Feedback { request_id: id, score, source: EVAL_SOURCE.into(), ts_ms: 0 })?;
    Ok(Some(score))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Check {
        let mut c: Check = serde_json::from_str(json).unwrap();
        if let Check::Regex { pattern, compiled } = &mut c {
            *compiled = Some(regex::Regex::new(pattern).unwrap());
        }
        c
    }

    async fn s(c: &Check, answer: &str) -> f64 {
        c.score("t", answer).await.unwrap()
    }

    #[tokio::test]
    async fn exact_ignores_case_whitespace_and_a_final_period() {
        let c = check(r#"{"type":"exact","value":"yes"}"#);
        assert_eq!(s(&c, "  Yes.\n").await, 1.0);
        assert_eq!(s(&c, "yes, sure").await, 0.0);
        let cs = check(r#"{"type":"exact","value":"yes","case_sensitive":true}"#);
        assert_eq!(s(&cs, "Yes").await, 0.0);
    }

    #[tokio::test]
    async fn contains_and_regex() {
        let c = check(r#"{"type":"contains","value":"Paris"}"#);
        assert_eq!(s(&c, "The capital is paris.").await, 1.0);
        assert_eq!(s(&c, "Lyon").await, 0.0);
        let r = check(r#"{"type":"regex","pattern":"^\\s*APPLE\\b"}"#);
        assert_eq!(s(&r, "APPLE").await, 1.0);
        assert_eq!(s(&r, "apple").await, 0.0);
    }

    #[tokio::test]
    async fn numeric_takes_the_last_number_within_tolerance() {
        let c = check(r#"{"type":"numeric","value":12}"#);
        assert_eq!(s(&c, "7 + 5 = 12").await, 1.0);
        assert_eq!(s(&c, "12 is wrong, it is 13").await, 0.0);
        assert_eq!(s(&c, "no number").await, 0.0);
        let t = check(r#"{"type":"numeric","value":3.14,"tolerance":0.01}"#);
        assert_eq!(s(&t, "about 3.141").await, 1.0);
        assert_eq!(last_number("-4 degrees"), Some(-4.0));
        assert_eq!(last_number("1,000 items."), Some(1000.0));
        assert_eq!(last_number("x-2"), Some(2.0));
    }

    #[tokio::test]
    async fn json_accepts_fenced_json_and_checks_keys() {
        let c = check(r#"{"type":"json","keys":["name"]}"#);
        assert_eq!(s(&c, "```json\n{\"name\": \"Alice\"}\n```").await, 1.0);
        assert_eq!(s(&c, "{\"nom\": \"Alice\"}").await, 0.0);
        assert_eq!(s(&c, "Sure! {\"name\": \"Alice\"}").await, 0.0);
        assert_eq!(s(&check(r#"{"type":"json"}"#), "[1, 2, 3]").await, 1.0);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn command_passes_on_exit_zero_with_the_answer_on_stdin() {
        let c = check(r#"{"type":"command","cmd":["grep","-q","forty-two"]}"#);
        assert_eq!(s(&c, "it is forty-two").await, 1.0);
        assert_eq!(s(&c, "it is 41").await, 0.0);
        let missing = check(r#"{"type":"command","cmd":["/nonexistent/checker"]}"#);
        assert!(missing.score("t", "x").await.is_err());
    }

    #[test]
    fn shipped_smoke_set_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("evals/local-smoke.jsonl");
        let items = load_set(&path).unwrap();
        assert!(items.len() >= 20, "{} items", items.len());
        let cats: std::collections::HashSet<&str> = items.iter().map(|i| i.category.as_str()).collect();
        assert!(cats.len() >= 3, "{cats:?}");
        // Categories are the default router's labels, so `policy fit` maps onto it.
        let router =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("routers/default/router.toml")).unwrap();
        for c in cats {
            assert!(router.contains(&format!("\"{c}\"")), "{c} is not a label of routers/default");
        }
    }

    #[test]
    fn bad_items_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("set.jsonl");
        std::fs::write(
            &p,
            "{\"id\":\"a\",\"category\":\"c\",\"prompt\":\"p\",\"check\":{\"type\":\"regex\",\"pattern\":\"(\"}}\n",
        )
        .unwrap();
        let e = load_set(&p).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("check.pattern"), "{e}");
    }
}
