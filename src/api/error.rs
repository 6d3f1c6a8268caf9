//! The one error type at the HTTP edge, shaped exactly like OpenAI's
//! `{"error":{"message","type","param","code"}}` so every OpenAI client raises its own
//! exception classes for it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::experts::ExpertError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON we need; `param` is the serde path of the problem.
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("The model `{model}` does not support {what}.")]
    Unsupported { model: String, what: &'static str },
    #[error("Request body is larger than the limit of {limit} bytes.")]
    BodyTooLarge { limit: usize },
    #[error("Unsupported content type: send application/json.")]
    ContentType,
    /// Every expert failed; the last error decides the status.
    #[error("{0}")]
    Upstream(ExpertError),
    /// Every expert was skipped by its breaker (or none could be tried); `retry_after_secs`:
    /// when the first of them lets a request through again.
    #[error("No expert is available for `{model}`: all are failing or cooling down.")]
    NoExpertAvailable { model: String, retry_after_secs: Option<u64> },
    #[error("The gateway is shutting down.")]
    ShuttingDown,
    /// `serve` listens before its experts and routers are loaded; until then, this.
    #[error("The gateway is still loading its experts and routers; retry shortly.")]
    Loading,
    #[error("Not found.")]
    RouteNotFound,
    #[error("Invalid method for URL ({method} {path}).")]
    MethodNotAllowed { method: String, path: String },
    #[error("No request with id `{0}` is in the ledger.")]
    UnknownRequest(String),
    #[error("The request ledger is not enabled on this gateway.")]
    LedgerDisabled,
    #[error("The request ledger failed: {0}")]
    Ledger(String),
    #[error(
        "You didn't provide an API key. Send it in the Authorization header: `Authorization: Bearer sk-triage-...`."
    )]
    MissingApiKey,
    #[error("Incorrect API key provided.")]
    InvalidApiKey,
    #[error("This API key has been revoked.")]
    RevokedApiKey,
    #[error("This route needs the gateway's admin key.")]
    AdminKeyRequired,
    #[error("This API key is not allowed to use the model `{0}`.")]
    ModelNotAllowed(String),
    #[error("You exceeded this key's {period} budget of {limit:.4} (spent {spent:.4}).")]
    QuotaExceeded { period: QuotaPeriod, limit: f64, spent: f64, retry_after_secs: u64 },
    #[error("{}", rate_limit_message(kind, *limit))]
    RateLimited { kind: RateLimitKind, limit: u64, retry_after_secs: u64 },
    /// A configured `[limits]` bound; the message names the parameter, the limit and the value.
    #[error("{message}")]
    LimitExceeded { message: String, param: Option<String>, code: &'static str },
    #[error("Request headers are {got} bytes, more than the limit of {limit} bytes.")]
    HeadersTooLarge { limit: usize, got: usize },
    #[error("No key named `{0}`.")]
    KeyNotFound(String),
    #[error("The keys database failed: {0}")]
    Keys(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    Daily,
    Monthly,
}

impl std::fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuotaPeriod::Daily => "daily",
            QuotaPeriod::Monthly => "monthly",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKind {
    Requests,
    Tokens,
    /// One request's estimated tokens exceed the whole per-minute limit.
    RequestTooLarge {
        requested: u64,
    },
}

fn rate_limit_message(kind: &RateLimitKind, limit: u64) -> String {
    match kind {
        RateLimitKind::Requests => format!("Rate limit reached for requests: limit {limit} per minute."),
        RateLimitKind::Tokens => format!("Rate limit reached for tokens: limit {limit} per minute."),
        RateLimitKind::RequestTooLarge { requested } => {
            format!("Request too large: about {requested} tokens requested, the limit is {limit} tokens per minute.")
        }
    }
}

impl From<crate::auth::KeyError> for ApiError {
    fn from(e: crate::auth::KeyError) -> Self {
        use crate::auth::KeyError as K;
        match e {
            K::NotFound(name) => ApiError::KeyNotFound(name),
            K::Duplicate(_) | K::BadName(_) | K::BadLimit { .. } => {
                ApiError::InvalidRequest { message: e.to_string(), param: None }
            }
            K::Open { .. } | K::Storage(_) | K::Corrupt(_) => ApiError::Keys(e.to_string()),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// Serializes an OpenAI-shaped error body.
pub fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let body = Body { error: Inner { message, kind, param, code } };
    // Serializing plain strings cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// An error inside an already-started SSE stream: OpenAI's SDKs raise `APIError` on a
/// `data:` event that carries an `error` object.
pub fn stream_error_event(message: &str, code: &str) -> Bytes {
    let json = error_json(message, "server_error", None, Some(code));
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl ApiError {
    /// Low-cardinality label for the ledger, logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Upstream(e) => e.kind(),
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ModelNotFound(_) => "model_not_found",
            Self::Unsupported { .. } => "unsupported",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NoExpertAvailable { .. } => "no_expert_available",
            Self::ShuttingDown => "shutting_down",
            Self::Loading => "loading",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::ContentType => "content_type",
            Self::UnknownRequest(_) => "request_not_found",
            Self::LedgerDisabled => "ledger_disabled",
            Self::Ledger(_) => "ledger",
            Self::MissingApiKey | Self::InvalidApiKey | Self::RevokedApiKey | Self::AdminKeyRequired => "unauthorized",
            Self::ModelNotAllowed(_) => "model_not_allowed",
            Self::QuotaExceeded { .. } => "insufficient_quota",
            Self::RateLimited { .. } => "rate_limited",
            Self::LimitExceeded { code, .. } => code,
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::KeyNotFound(_) | Self::Keys(_) => "keys",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::Unsupported { .. } | Self::LimitExceeded { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::ModelNotFound(_)
            | Self::RouteNotFound
            | Self::UnknownRequest(_)
            | Self::LedgerDisabled
            | Self::KeyNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Ledger(_) | Self::Keys(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MissingApiKey | Self::InvalidApiKey | Self::RevokedApiKey | Self::AdminKeyRequired => {
                StatusCode::UNAUTHORIZED
            }
            Self::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::QuotaExceeded { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NoExpertAvailable { .. } | Self::ShuttingDown | Self::Loading => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(e) => upstream_status(e),
        }
    }

    /// OpenAI's `type` and `code` for this error.
    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::InvalidRequest { .. } | Self::Unsupported { .. } | Self::ContentType => {
                ("invalid_request_error", None)
            }
            Self::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            Self::RouteNotFound => ("invalid_request_error", Some("not_found")),
            Self::MethodNotAllowed { .. } => ("invalid_request_error", Some("method_not_allowed")),
            Self::UnknownRequest(_) => ("invalid_request_error", Some("request_not_found")),
            Self::LedgerDisabled => ("invalid_request_error", Some("ledger_disabled")),
            Self::Ledger(_) => ("server_error", Some("ledger_error")),
            Self::Keys(_) => ("server_error", Some("keys_error")),
            Self::KeyNotFound(_) => ("invalid_request_error", Some("key_not_found")),
            Self::MissingApiKey => ("invalid_request_error", Some("missing_api_key")),
            Self::InvalidApiKey | Self::RevokedApiKey | Self::AdminKeyRequired => {
                ("invalid_request_error", Some("invalid_api_key"))
            }
            Self::ModelNotAllowed(_) => ("permission_error", Some("model_not_allowed")),
            Self::QuotaExceeded { .. } => ("insufficient_quota", Some("insufficient_quota")),
            Self::RateLimited { kind: RateLimitKind::Requests, .. } => ("requests", Some("rate_limit_exceeded")),
            Self::RateLimited { .. } => ("tokens", Some("rate_limit_exceeded")),
            Self::LimitExceeded { code, .. } => ("invalid_request_error", Some(code)),
            Self::HeadersTooLarge { .. } => ("invalid_request_error", Some("headers_too_large")),
            Self::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Self::NoExpertAvailable { .. } => ("server_error", Some("no_expert_available")),
            Self::ShuttingDown => ("server_error", Some("shutting_down")),
            Self::Loading => ("server_error", Some("loading")),
            Self::Upstream(e) => match e {
                ExpertError::Overloaded { .. } => ("rate_limit_error", Some("expert_overloaded")),
                ExpertError::NotHot { .. } => ("server_error", Some("expert_not_hot")),
                ExpertError::ContextExceeded { .. } => ("invalid_request_error", Some("context_length_exceeded")),
                ExpertError::Unsupported { .. } => ("invalid_request_error", Some("unsupported_parameter")),
                ExpertError::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                    ("rate_limit_error", Some("upstream_rate_limited"))
                }
                ExpertError::FirstByteTimeout { .. } | ExpertError::TotalTimeout { .. } => {
                    ("server_error", Some("upstream_timeout"))
                }
                ExpertError::Status { status, .. } if status.is_client_error() => {
                    ("invalid_request_error", Some("upstream_rejected"))
                }
                _ => ("server_error", Some("upstream_error")),
            },
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } | Self::LimitExceeded { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) | Self::Unsupported { .. } | Self::ModelNotAllowed(_) => Some("model"),
            Self::UnknownRequest(_) => Some("request_id"),
            Self::Upstream(ExpertError::ContextExceeded { input, .. }) => Some(input),
            Self::Upstream(ExpertError::Unsupported { param, .. }) => Some(param),
            _ => None,
        }
    }
}

fn upstream_status(e: &ExpertError) -> StatusCode {
    match e {
        ExpertError::FirstByteTimeout { .. } | ExpertError::TotalTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        ExpertError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        // Loading: the gateway's own capacity, not an upstream failure.
        ExpertError::NotHot { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ExpertError::ContextExceeded { .. } | ExpertError::Unsupported { .. } => StatusCode::BAD_REQUEST,
        ExpertError::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
        // The backend judged the request itself invalid (400, 404, 422): that is the
        // client's to fix, so it gets the backend's status, not a 502.
        ExpertError::Status { status, .. }
            if status.is_client_error() && *status != StatusCode::UNAUTHORIZED && *status != StatusCode::FORBIDDEN =>
        {
            *status
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A backend's own OpenAI-shaped client error is more useful verbatim than rewrapped.
        if let ApiError::Upstream(ExpertError::Status { status: up, body, retry_after, .. }) = &self {
            if (up.is_client_error() && *up != StatusCode::UNAUTHORIZED && *up != StatusCode::FORBIDDEN)
                && is_openai_error(body)
            {
                let mut resp =
                    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.clone())
                        .into_response();
                if let Some(ra) = retry_after {
                    resp.headers_mut().insert(header::RETRY_AFTER, ra.clone());
                }
                return resp;
            }
        }
        let (kind, code) = self.kind_and_code();
        let message = self.to_string();
        let body = error_json(&message, kind, self.param(), code);
        let mut resp =
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        let retry_after = match &self {
            ApiError::Upstream(ExpertError::Status { retry_after: Some(ra), .. }) => Some(ra.clone()),
            ApiError::Upstream(ExpertError::Overloaded { retry_after_secs, .. }) => {
                Some(HeaderValue::from(*retry_after_secs))
            }
            ApiError::QuotaExceeded { retry_after_secs, .. } | ApiError::RateLimited { retry_after_secs, .. } => {
                Some(HeaderValue::from(*retry_after_secs))
            }
            // The embedded default loads in seconds; OpenAI's SDKs wait this long and retry.
            ApiError::Loading => Some(HeaderValue::from_static("1")),
            ApiError::NoExpertAvailable { retry_after_secs: Some(secs), .. } => Some(HeaderValue::from(*secs)),
            _ => None,
        };
        if let Some(ra) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        resp
    }
}

fn is_openai_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.get("error").is_some_and(|e| e.is_object()))
}
