//! The config file as written (serde), before validation.
//!
//! Every struct denies unknown fields: a typo in a key is an error at start-up, not a
//! silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub resilience: Option<RawResilience>,
    #[serde(default)]
    pub experts: Vec<RawExpert>,
    #[serde(default)]
    pub models: Vec<RawVirtualModel>,
    pub routing: Option<RawRouting>,
    pub ledger: Option<RawLedger>,
    pub auth: Option<RawAuth>,
    pub limits: Option<RawLimits>,
    pub tiers: Option<RawTiers>,
}

/// `[auth]`: virtual API keys. No section means authentication is off (logged loudly).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Defaults to true: writing an `[auth]` section means wanting authentication.
    pub enabled: Option<bool>,
    /// The sled database holding the `keys` tree.
    pub keys_db: Option<String>,
    /// Name of the environment variable holding the admin key for `/admin/*`.
    pub admin_key_env: Option<String>,
}

/// `[limits]`: bounds on what one client can make the gateway hold or do.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_messages: Option<usize>,
    pub max_prompt_chars: Option<usize>,
    pub max_tokens: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
}

/// `[tiers]`: memory budgets for local experts (all hot at start when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiers {
    /// Bytes of loaded weights on the compute device, all hot experts together.
    pub hot_bytes: u64,
    /// Bytes of GGUF files kept in host RAM, all warm copies together.
    #[serde(default)]
    pub warm_bytes: u64,
    pub min_residency_ms: Option<u64>,
    pub demand_half_life_ms: Option<u64>,
}

/// `[ledger]`: where every request's record goes (off when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    pub path: String,
    pub flush_interval_ms: Option<u64>,
    pub retention_days: Option<u32>,
    pub max_records: Option<u64>,
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub store_prompts: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawResilience {
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawExpertKind {
    Openai,
    Local,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
}

impl Capability {
    /// The name a config file uses, and the ledger's `endpoint` of a request that needed it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
            Self::Completions => "completions",
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    #[serde(default)]
    pub input_per_mtok: f64,
    #[serde(default)]
    pub output_per_mtok: f64,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

/// One expert. Kind-specific keys are checked against `kind` during validation, so the
/// error can say "`base_url` is required for kind = \"openai\"" with the key path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpert {
    pub name: String,
    pub kind: RawExpertKind,
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
    #[serde(default)]
    pub price: RawPrice,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    // kind = "openai"
    pub base_url: Option<String>,
    /// Model name sent upstream; defaults to `name`.
    pub model: Option<String>,
    /// Name of the environment variable that holds the API key. Keys never live in the file.
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    // kind = "local"
    pub path: Option<String>,
    pub arch: Option<String>,
    pub device: Option<String>,
    pub context_length: Option<usize>,
    pub threads: Option<usize>,
    pub queue_limit: Option<usize>,
    /// How many of `queue_limit` one tenant may hold; default half, rounded up.
    pub tenant_queue_limit: Option<usize>,
    pub weights: Option<String>,
    pub tokenizer: Option<String>,
    pub chat_template: Option<String>,
    /// With `[tiers]`: never leaves the hot tier.
    pub pin: Option<bool>,
    /// With `[tiers]`: `warm` keeps the GGUF bytes in RAM at all times; `cold` (default) does not.
    pub min_tier: Option<String>,
}

/// A routed virtual model (a policy): what a client names in `model` to let the gateway
/// choose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVirtualModel {
    pub name: String,
    /// A trained router under the routers folder (e.g. "default"), or "centroid" for a
    /// router built from the `centroid` examples below. None: the static `experts` list.
    pub router: Option<String>,
    /// Ordered experts for requests no category decides (the catch-all when no router).
    #[serde(default)]
    pub experts: Vec<String>,
    /// The general expert for uncertain inputs (and when classification is unavailable).
    pub fallback: Option<String>,
    /// Category -> ordered experts. The key "*" is an explicit catch-all.
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub uncertainty: RawUncertainty,
    pub top_p: Option<RawTopP>,
    /// Send a share of one category's traffic to a candidate expert, for evaluation.
    #[serde(default)]
    pub split: Vec<RawSplit>,
    /// For `router = "centroid"`: a handful of example prompts per category.
    #[serde(default)]
    pub centroid: BTreeMap<String, Vec<String>>,
    /// With `[tiers]`: what a request to a local expert that is not hot does, `wait` for
    /// the promotion (up to `promote_timeout_ms`) or `fallback` to the next expert.
    pub not_hot: Option<String>,
    pub promote_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUncertainty {
    /// Below this top probability the request goes to the fallback.
    pub min_confidence: Option<f32>,
    /// Above this normalized entropy (0..1) the request goes to the fallback.
    pub max_entropy: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopP {
    /// Take the smallest set of categories whose probabilities sum to at least `p`.
    pub p: f32,
    /// Experts from strongest to weakest; the strongest expert mapped by any category in
    /// the set wins. Defaults to the order of `experts`.
    #[serde(default)]
    pub strength: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub category: String,
    pub expert: String,
    pub percent: f32,
}

/// `[routing]`: where routers live.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub routers_dir: Option<String>,
}
