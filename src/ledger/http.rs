//! The logic behind the ledger's HTTP routes (`POST /v1/feedback`, `GET /admin/stats`);
//! the handlers in `api` only extract and call these.

use serde::{Deserialize, Serialize};

use super::report::{GroupBy, Report, ReportQuery};
use super::time::parse_since;
use super::{now_ms, Feedback, Ledger, LedgerError, Origin};
use crate::api::error::ApiError;

/// Feedback without a `source` is a user's.
pub const DEFAULT_FEEDBACK_SOURCE: &str = "user";
/// `/admin/stats` without `by` groups like `triage report`.
pub const DEFAULT_STATS_GROUPS: [GroupBy; 2] = [GroupBy::Category, GroupBy::Expert];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    pub request_id: String,
    /// 0 to 1; or give `label`.
    #[serde(default)]
    pub score: Option<f64>,
    /// "good" (1) or "bad" (0).
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FeedbackAck {
    pub object: &'static str,
    pub request_id: String,
    pub source: String,
    pub score: f64,
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::UnknownRequest(id) => ApiError::UnknownRequest(id),
            LedgerError::InvalidFeedback(message) => ApiError::InvalidRequest { message, param: None },
            other => ApiError::Ledger(other.to_string()),
        }
    }
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::InvalidRequest { message: message.into(), param: Some(param.to_string()) }
}

/// `POST /v1/feedback`: stores the score; repeated feedback from one source replaces it.
pub fn feedback(ledger: &Ledger, body: &[u8]) -> Result<FeedbackAck, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let b: FeedbackBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::InvalidRequest {
            message: format!("We could not parse the feedback body: {}", e.inner()),
            param: (path != ".").then_some(path),
        }
    })?;
    let score = match (b.score, b.label.as_deref()) {
        (Some(s), None) if (0.0..=1.0).contains(&s) => s,
        (Some(s), None) => return Err(invalid(format!("score must be between 0 and 1, got {s}"), "score")),
        (None, Some("good")) => 1.0,
        (None, Some("bad")) => 0.0,
        (None, Some(other)) => {
            return Err(invalid(format!("label must be \"good\" or \"bad\", got {other:?}"), "label"))
        }
        (Some(_), Some(_)) => return Err(invalid("give either score or label, not both", "score")),
        (None, None) => return Err(invalid("score (0 to 1) or label (\"good\"/\"bad\") is required", "score")),
    };
    let source = b.source.unwrap_or_else(|| DEFAULT_FEEDBACK_SOURCE.to_string());
    ledger.feedback(Feedback { request_id: b.request_id.clone(), score, source: source.clone(), ts_ms: 0 })?;
    Ok(FeedbackAck { object: "feedback", request_id: b.request_id, source, score })
}

/// Query string of `GET /admin/stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// `24h`, `7d` or an RFC 3339 time.
    pub since: Option<String>,
    /// `category,expert` (the default), `model`, `tenant`, `origin`, `status`.
    pub by: Option<String>,
    pub origin: Option<Origin>,
}

/// `GET /admin/stats`: the report `triage report --json` prints. The scan reads the
/// whole window from disk, so it runs on a blocking thread, not an async worker.
pub async fn stats(ledger: &Ledger, q: StatsQuery) -> Result<Report, ApiError> {
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || stats_blocking(&ledger, &q))
        .await
        .map_err(|e| ApiError::Ledger(format!("the report task failed: {e}")))?
}

fn stats_blocking(ledger: &Ledger, q: &StatsQuery) -> Result<Report, ApiError> {
    let since_ms = q
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ms()))
        .transpose()
        .map_err(|e| invalid(e.to_string(), "since"))?;
    let by = match q.by.as_deref() {
        Some(s) => GroupBy::parse_list(s).map_err(|e| invalid(e, "by"))?,
        None => DEFAULT_STATS_GROUPS.to_vec(),
    };
    Ok(ledger.report(&ReportQuery { since_ms, by, origin: q.origin })?)
}
