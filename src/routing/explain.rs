//! `triage route "<prompt>"`: the routing decision for a prompt, explained offline, with
//! the same code `POST /v1/route` and every routed request use, and no expert called.

use std::fmt::Write as _;

use serde_json::json;

use super::{BuildError, Decision, RouteError, RouterFactory, Snapshot};
use crate::config::Config;
use crate::dispatch::request::ChatRequest;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{0}; the config's models are: {1}")]
    Route(RouteError, String),
    #[error("{0}")]
    Request(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Routes a chat request for `model` made of an optional system prompt and one user turn.
/// Loads the config's routers but none of its experts.
pub fn explain(
    config: Config,
    routers: RouterFactory<'_>,
    model: &str,
    system: Option<&str>,
    prompt: &str,
) -> Result<Decision, ExplainError> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": prompt}));
    let body = json!({"model": model, "messages": messages}).to_string();
    // Parsed as the gateway parses a request body (an empty model name fails here); the
    // hash places it in traffic splits exactly as the gateway would.
    let req = ChatRequest::parse(body.as_bytes()).map_err(|e| ExplainError::Request(e.to_string()))?;
    let names: Vec<String> =
        config.models.iter().map(|m| m.name.clone()).chain(config.experts.iter().map(|e| e.name.clone())).collect();
    let snapshot = Snapshot::routing_only(config, routers)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime
        .block_on(snapshot.route(model, || super::prompt_text(req.messages()), req.prompt_hash()))
        .map_err(|e| ExplainError::Route(e, names.join(", ")))
}

/// The decision as text for a terminal.
pub fn render(d: &Decision) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model:      {} (policy version {})", d.model, d.policy_version);
    if let Some(c) = &d.category {
        let stage = d.classifier_stage.unwrap_or("-");
        let micros = d.classify_micros.map_or(String::new(), |us| format!(", {:.2} ms", us as f64 / 1000.0));
        let _ = writeln!(
            out,
            "category:   {c} (confidence {:.3}; decided by {stage}{micros})",
            d.confidence.unwrap_or(0.0)
        );
    }
    if !d.top_categories.is_empty() {
        let top: Vec<String> = d.top_categories.iter().map(|(c, p)| format!("{c} {p:.3}")).collect();
        let _ = writeln!(out, "top:        {}", top.join(", "));
    }
    let _ = writeln!(out, "experts:    {}", d.experts.join(" -> "));
    let _ = writeln!(
        out,
        "fallback:   {}",
        if d.fallback { "yes (the uncertainty rule or no classification)" } else { "no" }
    );
    let _ = writeln!(out, "why:");
    for r in &d.reasons {
        let _ = writeln!(out, "  - {r}");
    }
    out
}
