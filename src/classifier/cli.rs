//! `triage router ...` subcommands.

/// `triage router <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum RouterCommand {
    /// Train a router's head and write its artifacts.
    Train {
        /// The router folder, e.g. routers/default.
        dir: std::path::PathBuf,
    },
}

/// Runs one `triage router` subcommand.
pub fn run(cmd: RouterCommand) -> anyhow::Result<()> {
    match cmd {
        RouterCommand::Train { dir } => anyhow::bail!("training {} is not implemented yet", dir.display()),
    }
}
