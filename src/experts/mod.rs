//! Experts: the models a request can be sent to, remote (OpenAI-compatible HTTP) or
//! local (GGUF in-process), behind one call interface.

pub mod breaker;
pub mod local;
pub mod remote;

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::{ExpertConfig, ExpertKind, Resilience};
use breaker::Breaker;

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// What the gateway reads of a complete JSON reply (chat or embeddings), in one pass over
/// the body: `usage` for the ledger, the spend limits and the metrics, `model` and `id`
/// for telemetry, and where `choices` lies, which telemetry reads again only for a sampled
/// span. A reply that is not JSON fails the parse (the expert broke the protocol); a
/// `model` or `id` of another type than string is read as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyHead {
    pub usage: Option<Usage>,
    pub model: Option<String>,
    pub id: Option<String>,
    /// The byte range of the `choices` value in the body.
    pub choices: Option<std::ops::Range<usize>>,
}

impl ReplyHead {
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default, deserialize_with = "lenient_string")]
            model: Option<String>,
            #[serde(default, deserialize_with = "lenient_string")]
            id: Option<String>,
            #[serde(borrow, default)]
            choices: Option<&'a serde_json::value::RawValue>,
            #[serde(borrow, default)]
            error: Option<&'a serde_json::value::RawValue>,
        }
        // serde reads a struct from a JSON array too (by position): a reply is an object.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("malformed JSON: the reply is not a JSON object".into());
        }
        let w: Wire = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
        if let Some(error) = w.error {
            // Some servers answer a failure with status 200 and an error object.
            return Err(format!("the reply is an error: {}", error_text(error.get().as_bytes())));
        }
        let choices = w.choices.map(|raw| {
            // The raw value borrows from `body`: its offset is where it starts.
            let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
            start..start + raw.get().len()
        });
        Ok(Self { usage: w.usage, model: w.model, id: w.id, choices })
    }
}

/// What a backend's error says, in a line: the `message` of `{"message"}`,
/// `{"error": {"message"}}` (OpenAI), `{"error": "..."}` (TGI), `{"detail"}` (FastAPI) or
/// `{"object": "error", "message"}` (older vLLM), else the text itself; cut to 300 bytes.
pub fn error_text(body: &[u8]) -> String {
    const MAX: usize = 300;
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = match &v {
        Some(v) => [&v["message"], &v["error"]["message"], &v["error"], &v["detail"]]
            .into_iter()
            .find_map(|m| m.as_str())
            .map_or_else(|| v.to_string(), str::to_string),
        None => String::from_utf8_lossy(body).trim().to_string(),
    };
    let mut cut = text.len().min(MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].replace(['\n', '\r'], " ")
}

/// The status the error object of a reply (`{"error": {...}}`) carries when a backend
/// answered it with 200 (vLLM reports
/// errors found while generating inside the reply or the stream), if it is a client error
/// (`"code": 400` or `"status": 429` ...): the request's fault, or a rate limit, not the
/// backend's. Anything else is a failure of the backend.
pub fn embedded_client_status(reply: &[u8]) -> Option<StatusCode> {
    let v: serde_json::Value = serde_json::from_slice(reply).ok()?;
    let code = ["code", "status"].iter().find_map(|k| {
        let c = &v["error"][k];
        c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok()))
    })?;
    let status = StatusCode::from_u16(u16::try_from(code).ok()?).ok()?;
    status.is_client_error().then_some(status)
}

/// `: <what the backend said>` for an error status's message, or nothing for an empty body.
fn status_detail(body: &Bytes) -> String {
    let text = error_text(body);
    if text.is_empty() {
        text
    } else {
        format!(": {text}")
    }
}

/// A string, or `None` for a value of any other type.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    })
}

/// Why an expert call failed. `retryable` decides whether the next expert is tried.
#[derive(Debug, thiserror::Error)]
pub enum ExpertError {
    #[error("could not connect to expert {expert}: {detail}")]
    Connect { expert: String, detail: String },
    #[error("expert {expert} sent no response within {}ms", .after.as_millis())]
    FirstByteTimeout { expert: String, after: Duration },
    #[error("expert {expert} did not finish within {}ms", .after.as_millis())]
    TotalTimeout { expert: String, after: Duration },
    #[error("expert {expert} answered HTTP {status}{}", status_detail(.body))]
    Status { expert: String, status: StatusCode, body: Bytes, retry_after: Option<http::HeaderValue> },
    #[error("expert {expert} sent an invalid response: {detail}")]
    Protocol { expert: String, detail: String },
    #[error("expert {expert} is busy: its queue is full")]
    Overloaded { expert: String, retry_after_secs: u64 },
    /// A tiered local expert is not loaded yet (its promotion is running or timed out).
    #[error("expert {expert} is not loaded yet: {detail}")]
    NotHot { expert: String, detail: String },
    #[error("expert {expert} is unavailable: {detail}")]
    Unavailable { expert: String, detail: String },
    #[error("expert {expert} failed: {detail}")]
    Stream { expert: String, detail: String },
    /// The prompt does not fit this expert's context window (a local expert counts the
    /// rendered prompt's tokens). Another expert with a larger window may take it.
    #[error(
        "This model's maximum context length is {context_length} tokens. However, your {input} resulted in \
         {prompt_tokens} tokens (expert {expert}, at least one token must be left to generate). Please reduce \
         the length of the {input}."
    )]
    ContextExceeded { expert: String, prompt_tokens: usize, context_length: usize, input: &'static str },
    /// The request needs what this expert cannot do: a text-only local model given an
    /// image, tools, JSON mode or log probabilities. Another expert in the list may.
    #[error("{message}")]
    Unsupported { expert: String, param: String, message: String },
}

impl ExpertError {
    /// Errors that say nothing about the request itself: another expert (or a later try)
    /// may well succeed. Client errors (400, 404, 422, ...) are the client's to fix.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    // The gateway's key for that backend is wrong: another backend may work,
                    // and the client must not be told its own key was refused.
                    || *status == StatusCode::UNAUTHORIZED
                    || *status == StatusCode::FORBIDDEN
            }
            Self::Connect { .. }
            | Self::FirstByteTimeout { .. }
            | Self::Protocol { .. }
            | Self::Overloaded { .. }
            | Self::NotHot { .. }
            | Self::Unavailable { .. }
            // A later expert in the list may have a larger context window, or read images.
            | Self::ContextExceeded { .. }
            | Self::Unsupported { .. } => true,
            Self::TotalTimeout { .. } | Self::Stream { .. } => false,
        }
    }

    /// Low-cardinality label for logs, metrics and the ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::FirstByteTimeout { .. } => "first_byte_timeout",
            Self::TotalTimeout { .. } => "total_timeout",
            Self::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => "upstream_429",
            Self::Status { status, .. } if status.is_server_error() => "upstream_5xx",
            Self::Status { .. } => "upstream_4xx",
            Self::Protocol { .. } => "protocol",
            Self::Overloaded { .. } => "overloaded",
            Self::NotHot { .. } => "not_hot",
            Self::Unavailable { .. } => "unavailable",
            Self::Stream { .. } => "stream",
            Self::ContextExceeded { .. } => "context_length_exceeded",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

/// A chat answer before it is sent to the client.
pub enum Reply {
    /// A complete JSON body.
    Json { body: Bytes, head: ReplyHead },
    /// SSE bytes as they arrive (`data: {...}\n\n` events); the first item has already
    /// been received, so committing to this expert is safe.
    Stream { events: BoxStream<'static, Result<Bytes, ExpertError>> },
}

/// What a chat (or text-completion) call needs besides the body.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions<'a> {
    /// Chat or legacy text completion: where a remote expert sends the body, and how a
    /// local one reads it and shapes its reply.
    pub endpoint: crate::dispatch::request::Endpoint,
    pub stream: bool,
    /// What a tiered local expert that is not hot does (the virtual model's `not_hot`).
    pub not_hot: crate::config::NotHot,
    /// No expert comes after this one: a `fallback` policy waits here instead.
    pub last_candidate: bool,
    /// The API key's tenant (None: no key): local experts queue requests per tenant.
    pub tenant: Option<&'a str>,
}

pub enum Backend {
    /// Boxed: its client, parsed URLs and headers dwarf a local backend handle.
    Remote(Box<remote::RemoteExpert>),
    Local(local::LocalBackend),
}

/// One configured expert with its live state.
pub struct Expert {
    pub config: ExpertConfig,
    pub breaker: Breaker,
    pub backend: Backend,
    /// Telemetry attributes, formatted once.
    pub otel: crate::telemetry::spans::ExpertAttrs,
}

impl Expert {
    /// `tiers`: the tier manager local experts register with (None: loaded now, always hot).
    pub fn new(
        config: ExpertConfig,
        resilience: &Resilience,
        tiers: Option<&crate::tiers::TierManager>,
    ) -> Result<Self, ExpertError> {
        let backend = match &config.kind {
            ExpertKind::OpenAi(remote) => Backend::Remote(Box::new(remote::RemoteExpert::new(&config.name, remote)?)),
            ExpertKind::Local(settings) => Backend::Local(local::LocalBackend::new(&config.name, settings, tiers)?),
        };
        Ok(Self {
            breaker: Breaker::new(resilience.breaker_failures, resilience.breaker_cooldown),
            otel: crate::telemetry::spans::ExpertAttrs::new(&config),
            config,
            backend,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Parameters per token, for local experts (remote providers do not say).
    pub fn active_params(&self) -> Option<u64> {
        match &self.backend {
            Backend::Local(l) => l.params(),
            Backend::Remote(_) => None,
        }
    }

    /// Whether a local expert would refuse this body for what a text model cannot do
    /// (an image, tools, JSON mode, ...); a remote expert is never known to refuse.
    pub fn refuses(
        &self,
        body: &serde_json::Map<String, serde_json::Value>,
        endpoint: crate::dispatch::request::Endpoint,
    ) -> bool {
        match &self.backend {
            Backend::Local(l) => l.refuses(body, endpoint),
            Backend::Remote(_) => false,
        }
    }

    /// Sends a chat or text-completion request (`opts.endpoint`). `body` is the client's
    /// JSON object; the expert sets `model` and whatever else its protocol needs.
    pub async fn chat(
        &self,
        body: &serde_json::Map<String, serde_json::Value>,
        opts: CallOptions<'_>,
        trace: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<Reply, ExpertError> {
        match &self.backend {
            Backend::Remote(r) => r.chat(body, opts, trace).await,
            Backend::Local(l) => l.chat(body, opts).await,
        }
    }

    pub async fn embeddings(
        &self,
        body: &serde_json::Map<String, serde_json::Value>,
        trace: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<(Bytes, ReplyHead), ExpertError> {
        match &self.backend {
            Backend::Remote(r) => r.embeddings(body, trace).await,
            Backend::Local(_) => Err(ExpertError::Unavailable {
                expert: self.name().to_string(),
                detail: "local experts serve chat and completions only".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_once_for_usage_model_id_and_where_its_choices_are() {
        let body = br#"{"id":"chatcmpl-1","model":"m-2","choices":[{"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#;
        let head = ReplyHead::parse(body).unwrap();
        assert_eq!(head.usage, Some(Usage { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 }));
        assert_eq!(head.model.as_deref(), Some("m-2"));
        assert_eq!(head.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(&body[head.choices.unwrap()], br#"[{"index":0,"finish_reason":"stop"}]"#);

        // Odd types of what only telemetry reads do not fail the reply; broken JSON does.
        let odd = ReplyHead::parse(br#"{"model":7,"id":null,"data":[[0.1,0.2]]}"#).unwrap();
        assert_eq!(odd, ReplyHead::default());
        assert!(ReplyHead::parse(b"{\"model\":\"m\"").unwrap_err().starts_with("malformed JSON"));
        assert!(ReplyHead::parse(br#"{"usage":"many"}"#).is_err(), "a usage the ledger cannot count is a broken reply");
        assert!(ReplyHead::parse(b"[]").is_err() && ReplyHead::parse(b" [null]").is_err(), "an array is not a reply");
    }
}
