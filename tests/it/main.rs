//! Integration tests: one binary, one module per concern. Remote providers are the only
//! thing mocked (in-process servers speaking OpenAI's wire format); everything Triage
//! ships runs for real.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should stop at the first broken expectation"
)]

mod auth;
mod completions;
mod crash;
mod faults;
mod fuzz;
mod ledger;
mod local;
mod mock;
mod proxy;
mod reload;
mod sdk;
mod support;
mod telemetry;
mod tiers;
