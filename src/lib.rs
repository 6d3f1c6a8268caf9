//! Triage: an OpenAI-compatible LLM routing gateway.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod api;
pub mod auth;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod experts;
pub mod ledger;
pub mod local;
pub mod reload;
pub mod routing;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tiers;
