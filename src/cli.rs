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
        /// Config file (TOML). Without it, the embedded default (local experts) is served.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address; overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file and exit (status 1 on error).
    CheckConfig { file: PathBuf },
    /// Router training and evaluation.
    Router {
        #[command(subcommand)]
        cmd: crate::classifier::cli::RouterCommand,
    },
    // --- ledger (src/ledger/cli.rs) ---
    /// The request ledger: export, compaction.
    Ledger {
        #[command(subcommand)]
        cmd: crate::ledger::cli::LedgerCommand,
    },
    /// Cost, latency, errors and accuracy per category and expert, from the ledger.
    Report(crate::ledger::cli::ReportArgs),
    /// Routing policies: fit one from the ledger's evidence.
    Policy {
        #[command(subcommand)]
        cmd: crate::ledger::cli::PolicyCommand,
    },
    /// Accuracy evaluation of experts on an eval set.
    Eval {
        #[command(subcommand)]
        cmd: crate::ledger::cli::EvalCommand,
    },
}
