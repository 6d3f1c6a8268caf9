//! The config file as written (serde), before validation.
//!
//! Every struct denies unknown fields: a typo in a key is an error at start-up, not a
//! silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub resilience: RawResilience,
    #[serde(default)]
    pub experts: Vec<RawExpert>,
    #[serde(default)]
    pub models: Vec<RawVirtualModel>,
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
    Chat,
    Embeddings,
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
    pub weights: Option<String>,
    pub tokenizer: Option<String>,
    pub chat_template: Option<String>,
}

/// A routed virtual model: what a client names in `model` to let the gateway choose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVirtualModel {
    pub name: String,
    /// Ordered experts used when no category decides (and, for now, always).
    pub experts: Vec<String>,
}
