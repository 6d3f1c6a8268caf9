//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "triage", version, about = "OpenAI-compatible LLM routing gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config/policy file or folder of *.toml files; repeatable. The files are
        /// watched and hot-reloaded. Without it, the embedded default (local experts) is served.
        #[arg(long, short)]
        config: Vec<PathBuf>,
        /// Do not watch the files; reload only on SIGHUP or `POST /admin/reload`.
        #[arg(long)]
        no_watch: bool,
        /// Listen address; overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file and exit (status 1 on error).
    CheckConfig {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Routing policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCommand,
    },
    /// Router training and evaluation.
    Router {
        #[command(subcommand)]
        cmd: crate::classifier::cli::RouterCommand,
    },
    /// Explain the routing decision for a prompt: category probabilities, the expert list
    /// and why. Loads the config's routers; calls no expert and loads no model.
    Route {
        /// The user's message.
        prompt: String,
        /// Config/policy file or folder of *.toml files; repeatable. Without it, the
        /// embedded default.
        #[arg(long, short)]
        config: Vec<PathBuf>,
        /// The virtual model (or expert) the request names.
        #[arg(long, short, default_value = "triage")]
        model: String,
        /// A system prompt sent before the message (it is part of what is classified).
        #[arg(long)]
        system: Option<String>,
        /// Print the decision as JSON (the body `POST /v1/route` returns).
        #[arg(long)]
        json: bool,
    },
    /// Virtual API keys (offline: the gateway must be stopped; see /admin/keys otherwise).
    Keys(crate::auth::cli::KeysArgs),
    /// Local experts' memory tiers (hot/warm/cold), bytes, last use and load times, from a
    /// running gateway's `GET /admin/experts`.
    Experts {
        // `--gateway URL` and `--admin-key-env VAR` (default `TRIAGE_ADMIN_KEY`).
        #[command(flatten)]
        gateway: crate::tiers::cli::GatewayArgs,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    // --- ledger (src/ledger/cli.rs) ---
    /// The request ledger: export, compaction.
    Ledger {
        #[command(subcommand)]
        cmd: crate::ledger::cli::LedgerCommand,
    },
    /// Cost, latency, errors and accuracy per category and expert, from the ledger.
    Report(crate::ledger::cli::ReportArgs),
    /// Accuracy evaluation of experts on an eval set.
    Eval {
        #[command(subcommand)]
        cmd: crate::ledger::cli::EvalCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files offline with the gateway's own code (status 1 on error).
    Check {
        /// Files or folders, validated together as the gateway would load them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    #[command(flatten)]
    Fit(crate::ledger::cli::PolicyCommand),
}
