//! What the ledger stores: one [`Record`] per request and [`Feedback`] about it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The status nginx uses for "client closed the request": the client went away before the
/// answer was complete. It is recorded, but it is the client's choice, not a failure.
pub const STATUS_CLIENT_CLOSED: u16 = 499;
/// Prices are quoted per million tokens, as every provider's price list does.
const TOKENS_PER_PRICE_UNIT: f64 = 1_000_000.0;

/// Where a record came from: client traffic through the gateway, or `triage eval run`.
/// Traffic shares in the fit come from `Gateway` records only, so evaluation runs do not
/// distort how often each category is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    #[default]
    Gateway,
    Eval,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Gateway => "gateway",
            Origin::Eval => "eval",
        }
    }
}

/// One request, routed or direct, whatever its outcome. (`Default` is an empty record with
/// no id, for moving one out of a holder; records are made with [`Record::with_id`].)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// A ULID: time-ordered, so the store's key order is arrival order. The same string as
    /// the `x-triage-request-id` response header.
    pub id: String,
    /// Unix time in milliseconds when the request arrived.
    pub ts_ms: u64,
    #[serde(default)]
    pub origin: Origin,
    /// API key or tenant id; never the key itself.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The name of the virtual API key that made the request (budgets are per key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The `model` the client asked for (a virtual model or an expert's own name).
    pub model: String,
    /// The API the request came through, by the capability it needs: `chat`
    /// (`/v1/chat/completions`), `completions` (`/v1/completions`) or `embeddings`. Empty
    /// for a request turned away on another path, and in records written before the field
    /// existed (all of them chat or embeddings).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub policy_version: String,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub confidence: Option<f32>,
    /// The classifier's most likely categories with their probabilities, best first.
    #[serde(default)]
    pub top_categories: Vec<(String, f32)>,
    /// The expert whose answer the client got; `None` when every expert failed.
    #[serde(default)]
    pub expert: Option<String>,
    /// Experts tried (and failed) before `expert`, in order.
    #[serde(default)]
    pub tried: Vec<String>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    /// The token counts (and so the cost) are the gateway's estimate, not the expert's:
    /// a stream that ended before its usage event (the client hung up, or the stream
    /// broke) is counted at one output token per event relayed and about four prompt
    /// characters per input token, rather than as free.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// US dollars, from the expert's prices per million tokens.
    #[serde(default)]
    pub cost_usd: f64,
    /// Parameters active per token of the expert that answered (local experts, MoE).
    #[serde(default)]
    pub active_params: Option<u64>,
    /// From arrival to the last byte sent.
    #[serde(default)]
    pub latency_ms: f64,
    /// Time to first token (streams; for JSON answers the time to the whole body).
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    #[serde(default)]
    pub stream: bool,
    /// The HTTP status the client saw ([`STATUS_CLIENT_CLOSED`] if it went away).
    pub status: u16,
    /// Low-cardinality error label (`ExpertError::kind()`, `client_disconnect`, ...).
    #[serde(default)]
    pub error: Option<String>,
    /// sha256 (hex) of the request's `messages` JSON: finds repeated prompts without
    /// storing them.
    #[serde(default)]
    pub prompt_hash: String,
    /// The prompt itself; dropped by the ledger unless `store_prompts` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

impl Record {
    /// A record for a request that arrives now, with a fresh id. Every other field starts
    /// empty or zero; `status` starts at 200.
    pub fn new(model: impl Into<String>) -> Record {
        Record::with_id(ulid::Ulid::new(), model)
    }

    /// A record whose id (and timestamp) is `id`, e.g. the id already sent in
    /// `x-triage-request-id`.
    pub fn with_id(id: ulid::Ulid, model: impl Into<String>) -> Record {
        Record { id: id.to_string(), ts_ms: id.timestamp_ms(), model: model.into(), status: 200, ..Record::default() }
    }

    /// Whether the request failed from the client's point of view. A client that hung up
    /// ([`STATUS_CLIENT_CLOSED`]) is not a failure of the gateway or the expert.
    pub fn is_error(&self) -> bool {
        self.status >= 400 && self.status != STATUS_CLIENT_CLOSED
    }
}

/// Cost in US dollars of one call at the given prices per million tokens.
pub fn cost_usd(input_tokens: u64, output_tokens: u64, input_per_mtok: f64, output_per_mtok: f64) -> f64 {
    (input_tokens as f64 * input_per_mtok + output_tokens as f64 * output_per_mtok) / TOKENS_PER_PRICE_UNIT
}

/// sha256 hex of the `messages` JSON as the client sent it.
pub fn prompt_hash(messages_json: &[u8]) -> String {
    hex::encode(Sha256::digest(messages_json))
}

/// Evidence about one answer's quality, from a user, a judge or an eval run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub request_id: String,
    /// 0 (wrong) to 1 (right).
    pub score: f64,
    /// Who judged: "user", "eval", "judge:gpt-4o", ... One score per source and request;
    /// a second one from the same source replaces the first.
    pub source: String,
    /// Unix milliseconds when the feedback arrived.
    #[serde(default)]
    pub ts_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
