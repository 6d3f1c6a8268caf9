use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "triage", version, about = "OpenAI-compatible LLM routing gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Router training and evaluation.
    Router {
        #[command(subcommand)]
        cmd: triage::classifier::cli::RouterCommand,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Router { cmd } => triage::classifier::cli::run(cmd),
    }
}
