//! Triage: an OpenAI-compatible LLM routing gateway.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod classifier;
pub mod local;
