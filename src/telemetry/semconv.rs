//! Attribute and metric names.
//!
//! The `gen_ai.*` names follow the OpenTelemetry GenAI semantic conventions v1.37 (the
//! version that renamed `gen_ai.system` to `gen_ai.provider.name`). They are still
//! "development" status upstream, so they are pinned here instead of taken from the
//! `opentelemetry-semantic-conventions` crate, whose experimental set moves with every
//! release and would rename dashboard series under the operators' feet.

// GenAI attributes.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";

// General attributes.
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const ERROR_TYPE: &str = "error.type";
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_ROUTE: &str = "http.route";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";

// Triage's own attributes.
pub const TRIAGE_CATEGORY: &str = "triage.category";
pub const TRIAGE_CONFIDENCE: &str = "triage.confidence";
pub const TRIAGE_EXPERT: &str = "triage.expert";
pub const TRIAGE_EXPERTS: &str = "triage.experts";
pub const TRIAGE_ATTEMPT: &str = "triage.attempt";
pub const TRIAGE_TIER: &str = "triage.tier";
pub const TRIAGE_COST: &str = "triage.cost.usd";
pub const TRIAGE_FALLBACK_REASON: &str = "triage.fallback.reason";
pub const TRIAGE_POLICY_VERSION: &str = "triage.policy.version";
pub const TRIAGE_ROUTE_REASONS: &str = "triage.route.reasons";
pub const TRIAGE_OUTCOME: &str = "triage.outcome";
pub const TRIAGE_FROM_TIER: &str = "triage.tier.from";
pub const TRIAGE_TO_TIER: &str = "triage.tier.to";
pub const TRIAGE_SIGNAL: &str = "triage.signal";
pub const TRIAGE_REASON: &str = "triage.reason";
pub const TRIAGE_STREAM: &str = "triage.stream";

/// `gen_ai.provider.name` for OpenAI-compatible HTTP experts: the conventions name the
/// provider by the API it speaks when the vendor is not known, and ours all speak OpenAI's.
pub const PROVIDER_OPENAI: &str = "openai";
/// `gen_ai.provider.name` for experts the gateway runs itself.
pub const PROVIDER_LOCAL: &str = "triage.local";

/// Label value for "no category": requests that named an expert, or a virtual model
/// without a router. A fixed value keeps the label set small and the dashboards' `by
/// (triage_category)` groups complete.
pub const NO_CATEGORY: &str = "none";
