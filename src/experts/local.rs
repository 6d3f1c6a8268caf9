//! Local experts behind the same call interface as remote ones: the OpenAI request is
//! turned into a generation job for the expert's worker thread, and its events into an
//! OpenAI `chat.completion` or a stream of `chat.completion.chunk` events (for a legacy
//! text completion, `text_completion` objects).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::StatusCode;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout, timeout_at, Instant};

use super::{CallOptions, ExpertError, Reply, ReplyHead, Usage};
use crate::api::error::error_json;
use crate::config::{LocalSettings, NotHot, Timeouts};
use crate::dispatch::request::{type_name, Endpoint};
use crate::local::{
    Arch, ChatMessage, FinishReason, GenEvent, GenRequest, LocalConfig, LocalError, LocalExpert, WeightFormat,
};
use crate::tiers::{Lease, Registration, TierError, TierManager, Wait};

/// A full queue clears in about one generation; tell clients to come back after that.
const QUEUE_FULL_RETRY_AFTER_SECS: u64 = 1;
/// `max_tokens` of a text completion that does not say: OpenAI's default for the endpoint.
const COMPLETION_MAX_TOKENS: u64 = 16;
/// The roles a chat template places; any other is refused, as OpenAI refuses it.
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];
/// `GenEvent::TooLong` is only ever a first event, which both paths turn into
/// `ContextExceeded`; should one come later, both report it with these words.
const TOO_LONG_LATE: &str = "refused the prompt after generation had started";

pub struct LocalBackend {
    name: String,
    residency: Residency,
    timeouts: Timeouts,
}

enum Residency {
    /// No `[tiers]`: loaded at start, hot for the process's life.
    Fixed(LocalExpert),
    /// Loaded and evicted by the tier manager; each request holds a lease.
    Tiered(TierManager),
}

fn tier_error(name: &str, e: TierError) -> ExpertError {
    match e {
        TierError::NotHot { .. } | TierError::Timeout { .. } => {
            ExpertError::NotHot { expert: name.to_string(), detail: e.to_string() }
        }
        TierError::Unavailable { detail, .. } => unavailable(name, detail),
        TierError::Unknown(_) | TierError::DoesNotFit { .. } => unavailable(name, e.to_string()),
    }
}

fn unavailable(name: &str, detail: impl Into<String>) -> ExpertError {
    ExpertError::Unavailable { expert: name.to_string(), detail: detail.into() }
}

/// A client error the expert found in the request: a 400 that is not retried.
fn bad_request(name: &str, message: &str, param: Option<&str>) -> ExpertError {
    ExpertError::Status {
        expert: name.to_string(),
        status: StatusCode::BAD_REQUEST,
        body: error_json(message, "invalid_request_error", param, None),
        retry_after: None,
    }
}

impl LocalBackend {
    /// Loads the model and starts its worker. Blocks for the load (seconds): call it
    /// off the async workers.
    /// With `tiers`, the expert is registered there instead (loaded now only if pinned).
    pub fn new(name: &str, s: &LocalSettings, tiers: Option<&TierManager>) -> Result<Self, ExpertError> {
        let mut cfg = LocalConfig::new(&s.path);
        cfg.arch = match s.arch.as_deref() {
            None => None,
            Some(a) => Some(
                serde_json::from_value::<Arch>(Value::String(a.to_string()))
                    .map_err(|_| unavailable(name, format!("unknown arch {a:?} (llama, qwen2, gemma3)")))?,
            ),
        };
        cfg.device = s.device.clone();
        cfg.context_length = s.context_length;
        cfg.threads = s.threads;
        cfg.queue_limit = s.queue_limit;
        cfg.tenant_queue_limit = s.tenant_queue_limit;
        cfg.weights = match s.weights.as_deref() {
            Some("f16") => WeightFormat::F16,
            Some("f32") => WeightFormat::F32,
            _ => WeightFormat::Quantized,
        };
        cfg.tokenizer = s.tokenizer.clone();
        cfg.chat_template = s.chat_template.clone();
        if let Some(t) = tiers {
            t.register(name, Registration { cfg, pin: s.pin, min_tier: s.min_tier })
                .map_err(|e| tier_error(name, e))?;
            return Ok(Self {
                name: name.to_string(),
                residency: Residency::Tiered(t.clone()),
                timeouts: s.timeouts.clone(),
            });
        }
        if !s.path.exists() {
            return Err(unavailable(
                name,
                format!(
                    "model file {} does not exist (run scripts/setup.sh to fetch the shipped models)",
                    s.path.display()
                ),
            ));
        }
        let expert = LocalExpert::spawn(name, cfg).map_err(|e| unavailable(name, e.to_string()))?;
        // `spawn` logs the load (architecture, weights, size, time).
        Ok(Self { name: name.to_string(), residency: Residency::Fixed(expert), timeouts: s.timeouts.clone() })
    }

    /// Parameters of the model (known from the GGUF header even while it is cold).
    pub fn params(&self) -> Option<u64> {
        match &self.residency {
            Residency::Fixed(e) => Some(e.info().params as u64),
            Residency::Tiered(t) => t.params(&self.name),
        }
    }

    /// The loaded model, when it is loaded for good (no `[tiers]`).
    pub fn fixed(&self) -> Option<&LocalExpert> {
        match &self.residency {
            Residency::Fixed(e) => Some(e),
            Residency::Tiered(_) => None,
        }
    }

    pub async fn chat(&self, body: &Map<String, Value>, opts: CallOptions<'_>) -> Result<Reply, ExpertError> {
        let req = self.gen_request(body, opts.endpoint)?;
        let include_usage =
            body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
        let deadline = Instant::now() + self.timeouts.total;
        // The lease keeps the model hot until the reply (or the stream) is finished.
        let (expert, lease) = match &self.residency {
            Residency::Fixed(e) => (e.clone(), None),
            Residency::Tiered(t) => {
                let wait = match opts.not_hot {
                    NotHot::Wait(d) => Wait::Upto(d),
                    NotHot::Fallback { last_resort_wait } if opts.last_candidate => Wait::Upto(last_resort_wait),
                    NotHot::Fallback { .. } => Wait::No,
                };
                let lease = t.acquire(&self.name, wait).await.map_err(|e| tier_error(&self.name, e))?;
                (lease.expert().clone(), Some(lease))
            }
        };
        let mut rx = expert.submit_as(opts.tenant, req).map_err(|e| match e {
            LocalError::QueueFull { .. } | LocalError::TenantQueueFull { .. } => {
                ExpertError::Overloaded { expert: self.name.clone(), retry_after_secs: QUEUE_FULL_RETRY_AFTER_SECS }
            }
            LocalError::InvalidRequest { param, reason } => {
                bad_request(&self.name, &format!("Invalid '{param}': {reason}."), Some(param))
            }
            other => unavailable(&self.name, other.to_string()),
        })?;
        // Waiting in the queue and prompt processing happen before the first event.
        let first = match timeout(self.timeouts.first_byte, rx.recv()).await {
            Err(_) => {
                return Err(ExpertError::FirstByteTimeout {
                    expert: self.name.clone(),
                    after: self.timeouts.first_byte,
                })
            }
            Ok(None) => return Err(unavailable(&self.name, "the worker stopped")),
            Ok(Some(GenEvent::Error(e))) => return Err(unavailable(&self.name, e)),
            Ok(Some(GenEvent::TooLong { prompt_tokens, context_length })) => {
                let input = opts.endpoint.input_param();
                return Err(ExpertError::ContextExceeded {
                    expert: self.name.clone(),
                    prompt_tokens,
                    context_length,
                    input,
                });
            }
            Ok(Some(ev)) => ev,
        };
        let shape = Shape::new(opts.endpoint, &self.name);
        if opts.stream {
            return Ok(self.stream(first, rx, shape, include_usage, deadline, lease));
        }
        let mut text = String::new();
        let mut event = first;
        loop {
            match event {
                GenEvent::Delta(d) => text.push_str(&d),
                GenEvent::Error(e) => return Err(unavailable(&self.name, e)),
                GenEvent::TooLong { .. } => return Err(unavailable(&self.name, TOO_LONG_LATE)),
                GenEvent::Done { finish_reason, prompt_tokens, completion_tokens } => {
                    let usage = usage(prompt_tokens, completion_tokens);
                    let body = Bytes::from(shape.whole(text, finish(finish_reason), usage).to_string());
                    let head = ReplyHead::parse(&body).map_err(|e| unavailable(&self.name, e))?;
                    return Ok(Reply::Json { body, head });
                }
            }
            event = match timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    return Err(ExpertError::TotalTimeout { expert: self.name.clone(), after: self.timeouts.total })
                }
                Ok(None) => return Err(unavailable(&self.name, "the worker stopped mid-generation")),
                Ok(Some(ev)) => ev,
            };
        }
    }

    fn stream(
        &self,
        first: GenEvent,
        rx: Receiver<GenEvent>,
        shape: Shape,
        include_usage: bool,
        deadline: Instant,
        lease: Option<Lease>,
    ) -> Reply {
        let name = self.name.clone();
        let total = self.timeouts.total;
        let opening = shape.opening();
        let shape = std::sync::Arc::new(shape);
        struct St {
            rx: Receiver<GenEvent>,
            pending: Option<GenEvent>,
            done: bool,
            /// Dropped with the stream: when it ended or the client went away.
            _lease: Option<Lease>,
        }
        let st = St { rx, pending: Some(first), done: false, _lease: lease };
        let events = futures::stream::unfold(st, move |mut st| {
            let (shape, name) = (shape.clone(), name.clone());
            async move {
                if st.done {
                    return None;
                }
                let ev = match st.pending.take() {
                    Some(ev) => ev,
                    None => match timeout_at(deadline, st.rx.recv()).await {
                        Err(_) => {
                            st.done = true;
                            return Some((Err(ExpertError::TotalTimeout { expert: name, after: total }), st));
                        }
                        Ok(None) => {
                            st.done = true;
                            return Some((
                                Err(ExpertError::Stream {
                                    expert: name,
                                    detail: "the worker stopped mid-generation".into(),
                                }),
                                st,
                            ));
                        }
                        Ok(Some(ev)) => ev,
                    },
                };
                let out = match ev {
                    GenEvent::Delta(d) => Ok(shape.chunk(Some(&d), None)),
                    GenEvent::Error(e) => {
                        st.done = true;
                        Err(ExpertError::Stream { expert: name, detail: e })
                    }
                    GenEvent::TooLong { .. } => {
                        st.done = true;
                        Err(ExpertError::Stream { expert: name, detail: TOO_LONG_LATE.into() })
                    }
                    GenEvent::Done { finish_reason, prompt_tokens, completion_tokens } => {
                        st.done = true;
                        let mut b = shape.chunk(None, Some(finish(finish_reason))).to_vec();
                        if include_usage {
                            b.extend_from_slice(&shape.usage_chunk(usage(prompt_tokens, completion_tokens)));
                        }
                        b.extend_from_slice(b"data: [DONE]\n\n");
                        Ok(Bytes::from(b))
                    }
                };
                Some((out, st))
            }
        });
        let events = match opening {
            Some(role) => futures::stream::once(async move { Ok(role) }).chain(events).boxed(),
            None => events.boxed(),
        };
        Reply::Stream { events }
    }

    /// Whether [`Self::gen_request`] refuses `body` as [`ExpertError::Unsupported`].
    pub fn refuses(&self, body: &Map<String, Value>, endpoint: Endpoint) -> bool {
        matches!(self.gen_request(body, endpoint), Err(ExpertError::Unsupported { .. }))
    }

    /// The sampling parameters the local engine understands, checked as OpenAI checks them.
    /// Fields with no meaning for a local model (`user`, `metadata`, `store`, ...) are
    /// ignored, as llama.cpp's server does. A request that needs what a text-only local
    /// model cannot do (an image, tools, JSON mode, log probabilities) is refused with
    /// [`ExpertError::Unsupported`], so a routed list moves on to an expert that can.
    /// A text completion's `prompt` is generated from as it is, without the chat template.
    fn gen_request(&self, body: &Map<String, Value>, endpoint: Endpoint) -> Result<GenRequest, ExpertError> {
        let bad =
            |param: &str, what: &str| bad_request(&self.name, &format!("Invalid '{param}': {what}."), Some(param));
        let wrong_type = |param: &str, expected: &str, v: &Value| {
            let message = format!("Invalid type for '{param}': expected {expected}, got {}.", type_name(v));
            bad_request(&self.name, &message, Some(param))
        };
        let unsupported = |param: &str, what: &str| self.unsupported(param, what);
        let present = |k: &str| body.get(k).filter(|v| !v.is_null());
        let number = |k: &str| match present(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| wrong_type(k, "a number", v)),
        };
        let count = |k: &str| match present(k) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| wrong_type(k, "a non-negative integer", v)),
        };
        if count("n")?.is_some_and(|n| n != 1) {
            return Err(unsupported("n", "Only one choice ('n' = 1) can be generated"));
        }
        let tool_choice_none = body.get("tool_choice").and_then(Value::as_str) == Some("none");
        for param in ["tools", "functions"] {
            let asked = present(param).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()));
            if asked && !tool_choice_none {
                return Err(unsupported(param, &format!("'{param}' cannot be used")));
            }
        }
        if let Some(f) = present("response_format") {
            let Some(kind) = f.get("type").and_then(Value::as_str) else {
                return Err(wrong_type("response_format", "an object with a string 'type'", f));
            };
            if kind != "text" {
                return Err(unsupported(
                    "response_format",
                    &format!("'response_format' of type '{kind}' cannot be met"),
                ));
            }
        }
        let no_logprobs = "Log probabilities cannot be returned";
        match (endpoint, present("logprobs")) {
            (_, None) | (Endpoint::Chat, Some(Value::Bool(false))) => {}
            (Endpoint::Chat, Some(Value::Bool(true))) => return Err(unsupported("logprobs", no_logprobs)),
            (Endpoint::Chat, Some(v)) => return Err(wrong_type("logprobs", "a boolean", v)),
            // A text completion asks for the top `logprobs` alternatives of each token.
            (Endpoint::Completions, Some(v)) if v.is_u64() => return Err(unsupported("logprobs", no_logprobs)),
            (Endpoint::Completions, Some(v)) => return Err(wrong_type("logprobs", "an integer", v)),
        }
        let prompt = match endpoint {
            Endpoint::Chat => None,
            Endpoint::Completions => Some(self.completion_prompt(body)?),
        };
        let chat = if endpoint == Endpoint::Chat { body.get("messages").and_then(Value::as_array) } else { None };
        let mut messages = Vec::new();
        for (i, m) in chat.into_iter().flatten().enumerate() {
            // `ChatRequest::parse` has checked that every message has a string role.
            let role = m["role"].as_str().unwrap_or_default();
            if !ROLES.contains(&role) {
                let what = format!("unknown role '{role}' (supported: {})", ROLES.join(", "));
                return Err(bad(&format!("messages[{i}].role"), &what));
            }
            let text = match &m["content"] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Array(parts) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, part) in parts.iter().enumerate() {
                        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(text)) => texts.push(text),
                            (Some("text"), None) => {
                                let param = format!("messages[{i}].content[{j}].text");
                                return Err(wrong_type(&param, "a string", part.get("text").unwrap_or(&Value::Null)));
                            }
                            (Some(kind), _) => {
                                let param = format!("messages[{i}].content[{j}].type");
                                return Err(unsupported(&param, &format!("Content of type '{kind}' cannot be read")));
                            }
                            (None, _) => {
                                let param = format!("messages[{i}].content[{j}].type");
                                return Err(bad(&param, "each content part needs a string 'type'"));
                            }
                        }
                    }
                    texts.join("\n")
                }
                other => return Err(wrong_type(&format!("messages[{i}].content"), "a string or an array", other)),
            };
            // OpenAI's newer name for the system role; chat templates know `system`.
            let role = if role == "developer" { "system" } else { role };
            messages.push(ChatMessage::new(role, text));
        }
        let max_tokens = match count("max_completion_tokens")? {
            Some(t) => Some(t),
            // OpenAI's (and vLLM's) default for a text completion is 16 tokens; a chat
            // answer runs to its end.
            None => count("max_tokens")?.or((endpoint == Endpoint::Completions).then_some(COMPLETION_MAX_TOKENS)),
        };
        let stop = match body.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| wrong_type(&format!("stop[{i}]"), "a string", v))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("stop", "expected a string or an array of strings")),
        };
        let float = |k: &str| number(k).map(|v| v.map(|v| v as f32));
        Ok(GenRequest {
            messages,
            prompt,
            max_tokens: max_tokens.map(|t| t.min(u64::from(u32::MAX)) as u32),
            temperature: number("temperature")?,
            top_p: number("top_p")?,
            top_k: count("top_k")?.map(|k| k as usize),
            // Any 64-bit integer, as OpenAI takes it (llama.cpp's clients send -1).
            seed: match present("seed") {
                None => None,
                Some(v) => Some(
                    v.as_i64().map(|s| s as u64).or(v.as_u64()).ok_or_else(|| wrong_type("seed", "an integer", v))?,
                ),
            },
            stop,
            presence_penalty: float("presence_penalty")?,
            frequency_penalty: float("frequency_penalty")?,
            repetition_penalty: float("repetition_penalty")?,
        })
    }
}

impl LocalBackend {
    /// A refusal of what a text-only local model cannot do: a routed list moves on.
    fn unsupported(&self, param: &str, what: &str) -> ExpertError {
        ExpertError::Unsupported {
            expert: self.name.clone(),
            param: param.to_string(),
            message: format!("{what}: `{}` is a local text model. Use an expert that supports it.", self.name),
        }
    }

    /// A text completion's one prompt, or why this expert cannot complete the request.
    fn completion_prompt(&self, body: &Map<String, Value>) -> Result<String, ExpertError> {
        let unsupported = |param: &str, what: &str| self.unsupported(param, what);
        let present = |k: &str| body.get(k).filter(|v| !v.is_null());
        if present("echo").and_then(Value::as_bool) == Some(true) {
            return Err(unsupported("echo", "The prompt cannot be echoed ('echo')"));
        }
        if present("suffix").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "Fill-in-the-middle ('suffix') cannot be generated"));
        }
        match present("best_of") {
            None => {}
            Some(v) if v.as_u64() == Some(1) => {}
            Some(v) if v.is_u64() => {
                return Err(unsupported("best_of", "Only one candidate ('best_of' = 1) can be generated"))
            }
            Some(v) => {
                let message = format!("Invalid type for 'best_of': expected an integer, got {}.", type_name(v));
                return Err(bad_request(&self.name, &message, Some("best_of")));
            }
        }
        // `ChatRequest::parse_completion` has checked the prompt's shape.
        let prompt = match &body["prompt"] {
            Value::String(s) => s.clone(),
            Value::Array(items) => match items.as_slice() {
                [Value::String(s)] => s.clone(),
                [Value::String(_), ..] => {
                    return Err(unsupported("prompt", "Only one prompt a request can be completed"));
                }
                _ => return Err(unsupported("prompt", "A prompt of token ids cannot be read")),
            },
            _ => return Err(unsupported("prompt", "This prompt cannot be read")),
        };
        if prompt.is_empty() {
            // OpenAI's models take it (they continue from their start token); another expert may.
            return Err(unsupported("prompt", "An empty prompt cannot be continued"));
        }
        Ok(prompt)
    }
}

/// The OpenAI objects a local reply is made of: `chat.completion` (and `.chunk`) for a chat,
/// `text_completion` for a legacy completion, with one id and creation time throughout.
struct Shape {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
}

impl Shape {
    fn new(endpoint: Endpoint, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{}", ulid::Ulid::new()),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: model.to_string(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    /// The whole reply of a non-streamed request.
    fn whole(&self, text: String, finish_reason: &str, usage: Usage) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                     "logprobs": null, "finish_reason": finish_reason}),
            Endpoint::Completions => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model,
               "choices": [choice], "usage": usage})
    }

    /// One stream event: a piece of text, or the end with its finish reason.
    fn chunk(&self, text: Option<&str>, finish_reason: Option<&str>) -> Bytes {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = text.map_or_else(|| json!({}), |t| json!({"content": t}));
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
            }
            Endpoint::Completions => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason})
            }
        };
        self.event(&json!({"id": self.id, "object": self.object(true), "created": self.created,
                           "model": self.model, "choices": [choice]}))
    }

    /// The event a chat stream opens with (the assistant's role); a completion has none.
    fn opening(&self) -> Option<Bytes> {
        (self.endpoint == Endpoint::Chat).then(|| {
            let choice = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                                "finish_reason": null});
            self.event(&json!({"id": self.id, "object": self.object(true), "created": self.created,
                               "model": self.model, "choices": [choice]}))
        })
    }

    /// The usage event that ends a stream whose client asked for usage.
    fn usage_chunk(&self, usage: Usage) -> Bytes {
        self.event(&json!({"id": self.id, "object": self.object(true), "created": self.created,
                           "model": self.model, "choices": [], "usage": usage}))
    }

    fn event(&self, v: &Value) -> Bytes {
        Bytes::from(format!("data: {v}\n\n"))
    }
}

fn finish(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(prompt: u32, completion: u32) -> Usage {
    Usage {
        prompt_tokens: prompt.into(),
        completion_tokens: completion.into(),
        total_tokens: u64::from(prompt) + u64::from(completion),
    }
}
