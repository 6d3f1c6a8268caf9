//! `triage keys create|list|revoke`: manage virtual API keys while the gateway is stopped.
//!
//! sled lets one process open a database at a time, so these commands open the keys
//! database directly and refuse (naming the admin endpoint) while a gateway holds it. A
//! running gateway manages keys through `POST /admin/keys`, `GET /admin/keys` and
//! `DELETE /admin/keys/{name}`, with the admin key.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::keys::{KeySpec, KeyStore};
use crate::config::AuthMode;

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Config file(s) whose `[auth] keys_db` names the database.
    #[arg(long, short, required_unless_present = "db")]
    pub config: Vec<PathBuf>,
    /// The keys database directly (instead of `--config`).
    #[arg(long)]
    pub db: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown this once only).
    Create {
        name: String,
        /// Tenant the ledger attributes requests to; defaults to the name.
        #[arg(long)]
        tenant: Option<String>,
        /// Virtual model or expert this key may call; repeatable. None: all.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Spend limit per UTC day, in US dollars.
        #[arg(long)]
        budget_daily: Option<f64>,
        /// Spend limit per UTC month, in US dollars.
        #[arg(long)]
        budget_monthly: Option<f64>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u32>,
    },
    /// List keys (never their secrets).
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: requests with it get 401 from then on.
    Revoke { name: String },
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let db = match args.db {
        Some(db) => db,
        None => match crate::config::load_paths(&args.config)?.auth {
            AuthMode::On(s) => s.keys_db,
            AuthMode::Off { reason } => {
                anyhow::bail!("authentication is off in this config ({reason}): no keys database")
            }
        },
    };
    if !matches!(args.cmd, KeysCommand::Create { .. }) && !db.exists() {
        // Opening would create an empty database: a mistyped path would list no keys.
        anyhow::bail!("no keys database at {} (`triage keys create` makes one)", db.display());
    }
    let store = KeyStore::open(&db)?;
    match args.cmd {
        KeysCommand::Create { name, tenant, models, budget_daily, budget_monthly, rpm, tpm } => {
            let (secret, info) =
                store.create(KeySpec { name, tenant, models, budget_daily, budget_monthly, rpm, tpm })?;
            eprintln!("Created key {:?} (tenant {:?}). The secret is shown only now:", info.spec.name, info.tenant());
            println!("{}", secret.expose());
        }
        KeysCommand::List { json } => {
            let keys = store.list()?;
            if json {
                for k in keys {
                    println!("{}", serde_json::to_string(&k)?);
                }
            } else {
                println!("{:<20} {:<16} {:<22} {:<8} {:<24} models", "name", "tenant", "key", "status", "limits");
                for k in keys {
                    let s = &k.spec;
                    let limits = [
                        s.budget_daily.map(|v| format!("${v}/day")),
                        s.budget_monthly.map(|v| format!("${v}/month")),
                        s.rpm.map(|v| format!("{v}rpm")),
                        s.tpm.map(|v| format!("{v}tpm")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(",");
                    let models = if s.models.is_empty() { "*".to_string() } else { s.models.join(",") };
                    let status = if k.is_revoked() { "revoked" } else { "active" };
                    println!("{:<20} {:<16} {:<22} {:<8} {:<24} {models}", s.name, k.tenant(), k.hint, status, limits);
                }
            }
        }
        KeysCommand::Revoke { name } => {
            store.revoke(&name)?;
            println!("Revoked key {name:?}.");
        }
    }
    Ok(())
}
