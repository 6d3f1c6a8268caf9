//! `triage ledger|report|policy|eval ...`: the ledger's subcommands.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::eval::{self, EvalError, ExpertFacts, Target};
use super::export::{self, ExportError, Format};
use super::fit::{self, FitError, Metric, DEFAULT_MIN_SAMPLES};
use super::report::{self, GroupBy, ReportQuery};
use super::time::{parse_since, TimeError};
use super::{now_ms, Ledger, LedgerConfig, LedgerError, Origin};

/// Frontier rows `policy fit` prints; longer frontiers are thinned evenly.
const FRONTIER_ROWS: usize = 25;
/// Where `eval run` sends requests unless told otherwise: `triage serve`'s default listen.
const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("--since: {0}")]
    Since(#[from] TimeError),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("in-process gateway: {0}")]
    Gateway(String),
}

#[derive(Debug, clap::Subcommand)]
pub enum LedgerCommand {
    /// Write records as JSON lines or CSV (to stdout unless --out).
    Export {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// An age (30m, 24h, 7d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply retention now and report how many records were deleted.
    Compact {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        retention_days: Option<u32>,
        #[arg(long)]
        max_records: Option<u64>,
        #[arg(long)]
        max_bytes: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// An age (30m, 24h, 7d) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Group keys: category, expert, model, tenant, origin, status, endpoint.
    #[arg(long, default_value = "category,expert")]
    pub by: String,
    /// Only gateway traffic or only eval runs.
    #[arg(long, value_parser = parse_origin)]
    pub origin: Option<Origin>,
    /// Print JSON (the same document as GET /admin/stats).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Choose one expert per category: best traffic-weighted accuracy within a budget.
    Fit {
        #[arg(long)]
        db: PathBuf,
        /// Mean cost per request in dollars (--metric cost) or mean active parameters
        /// (--metric params; 135M, 1.5B are accepted).
        #[arg(long)]
        budget: String,
        #[arg(long, value_enum, default_value = "cost")]
        metric: Metric,
        /// The policy file to write, e.g. policies/fitted.toml.
        #[arg(long)]
        out: PathBuf,
        /// The virtual model's name; defaults to the file name without extension.
        #[arg(long)]
        name: Option<String>,
        /// Scored answers needed per category and expert.
        #[arg(long, default_value_t = DEFAULT_MIN_SAMPLES)]
        min_samples: u64,
        #[arg(long)]
        since: Option<String>,
        /// The router whose categories the policy maps (a folder under routers/).
        #[arg(long, default_value = "default")]
        router: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Ask each expert every item of an eval set and record the scores.
    Run {
        /// The eval set (JSON lines), e.g. evals/local-smoke.jsonl.
        #[arg(long)]
        set: PathBuf,
        /// Experts to evaluate, comma-separated (sent as `model`).
        #[arg(long, value_delimiter = ',', required = true)]
        experts: Vec<String>,
        /// A running gateway's base URL.
        #[arg(long, default_value = DEFAULT_GATEWAY, conflicts_with = "config")]
        gateway: String,
        /// Build the gateway in this process from a config file instead of calling one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Environment variable holding the gateway's API key, if it needs one.
        #[arg(long)]
        api_key_env: Option<String>,
        /// The ledger to record into.
        #[arg(long)]
        db: PathBuf,
        /// Prices for cost accounting: NAME=INPUT:OUTPUT in dollars per million tokens.
        #[arg(long = "price", value_name = "NAME=IN:OUT")]
        prices: Vec<String>,
        /// Active parameters: NAME=COUNT (135M, 1.5B).
        #[arg(long = "active-params", value_name = "NAME=COUNT")]
        active_params: Vec<String>,
    },
}

fn parse_origin(s: &str) -> Result<Origin, String> {
    match s {
        "gateway" => Ok(Origin::Gateway),
        "eval" => Ok(Origin::Eval),
        _ => Err(format!("expected gateway or eval, got {s:?}")),
    }
}

/// 135M -> 135e6; plain numbers as they are.
pub fn parse_amount(s: &str) -> Result<f64, CliError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1e3),
        Some((i, 'M' | 'm')) => (&s[..i], 1e6),
        Some((i, 'B' | 'b' | 'G' | 'g')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let num = num.strip_prefix('$').unwrap_or(num);
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * mult),
        _ => Err(CliError::Usage(format!("expected a non-negative number like 0.002 or 135M, got {s:?}"))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io { what: "starting the async runtime".into(), source })
}

fn since_ms(since: Option<&str>) -> Result<Option<u64>, CliError> {
    Ok(since.map(|s| parse_since(s, now_ms())).transpose()?)
}

/// Opens the ledger, runs `f`, and closes it (flushing) whatever `f` returned.
fn with_ledger<T>(db: &Path, f: impl AsyncFnOnce(&Ledger) -> Result<T, CliError>) -> Result<T, CliError> {
    runtime()?.block_on(async {
        let ledger = Ledger::open(LedgerConfig::new(db))?;
        let result = f(&ledger).await;
        ledger.close().await?;
        result
    })
}

/// `triage ledger <command>`.
pub fn ledger(cmd: LedgerCommand) -> Result<(), CliError> {
    match cmd {
        LedgerCommand::Export { db, format, since, out } => {
            let since = since_ms(since.as_deref())?.unwrap_or(0);
            let n = with_ledger(&db, async |l| {
                let n = match &out {
                    Some(path) => {
                        let file = std::fs::File::create(path)
                            .map_err(|source| CliError::Io { what: format!("creating {}", path.display()), source })?;
                        export::export(l, since, format, &mut std::io::BufWriter::new(file))?
                    }
                    None => match export::export(l, since, format, &mut std::io::stdout().lock()) {
                        // `| head` closing the pipe is the reader's choice, not a failure.
                        Err(ExportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(None),
                        other => other?,
                    },
                };
                Ok(Some(n))
            })?;
            if let Some(n) = n {
                eprintln!("exported {n} records");
            }
            Ok(())
        }
        LedgerCommand::Compact { db, retention_days, max_records, max_bytes } => {
            let cfg = LedgerConfig { retention_days, max_records, max_bytes, ..LedgerConfig::new(&db) };
            let n = with_ledger(&db, async |l| Ok(l.compact(&cfg, now_ms())?))?;
            println!("removed {n} records");
            Ok(())
        }
    }
}

/// `triage report`.
pub fn report(args: ReportArgs) -> Result<(), CliError> {
    let by = GroupBy::parse_list(&args.by).map_err(CliError::Usage)?;
    let q = ReportQuery { since_ms: since_ms(args.since.as_deref())?, by, origin: args.origin };
    let r = with_ledger(&args.db, async |l| Ok(l.report(&q)?))?;
    if args.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| CliError::Usage(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", report::render_table(&r));
    }
    Ok(())
}

/// `triage policy <command>`.
pub fn policy(cmd: PolicyCommand) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Fit { db, budget, metric, out, name, min_samples, since, router } => {
            let budget = parse_amount(&budget)?;
            let since = since_ms(since.as_deref())?;
            let problem = with_ledger(&db, async |l| Ok(fit::gather(l, since, metric, min_samples)?))?;
            for r in &problem.refused {
                match &r.expert {
                    Some(e) => eprintln!("left out {}/{}: {}", r.category, e, r.reason),
                    None => eprintln!("not fitted: category {:?}: {}", r.category, r.reason),
                }
            }
            let fit = fit::solve(problem, budget)?;
            print!("{}", fit::render_frontier(&fit, FRONTIER_ROWS));
            let name = name.unwrap_or_else(|| {
                out.file_stem().map_or_else(|| "fitted".into(), |s| s.to_string_lossy().into_owned())
            });
            let text = fit::policy_toml(&name, &router, &fit, &format!("ledger {}", db.display()));
            std::fs::write(&out, text)
                .map_err(|source| CliError::Io { what: format!("writing {}", out.display()), source })?;
            println!(
                "chosen: quality {:.4} at {} per request (budget {}); wrote {}",
                fit.chosen.quality,
                metric.format(fit.chosen.cost),
                metric.format(fit.budget),
                out.display()
            );
            Ok(())
        }
    }
}

fn expert_facts(
    prices: &[String],
    params: &[String],
    config: Option<&crate::config::Config>,
) -> Result<HashMap<String, ExpertFacts>, CliError> {
    let mut facts: HashMap<String, ExpertFacts> = HashMap::new();
    for e in config.map(|c| c.experts.as_slice()).unwrap_or_default() {
        let f = facts.entry(e.name.clone()).or_default();
        f.input_per_mtok = e.price.input_per_mtok;
        f.output_per_mtok = e.price.output_per_mtok;
    }
    let split = |s: &str, flag: &str| {
        s.split_once('=')
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .ok_or_else(|| CliError::Usage(format!("{flag}: expected NAME=VALUE, got {s:?}")))
    };
    for p in prices {
        let (name, v) = split(p, "--price")?;
        let (i, o) =
            v.split_once(':').ok_or_else(|| CliError::Usage(format!("--price: expected IN:OUT, got {v:?}")))?;
        let f = facts.entry(name).or_default();
        f.input_per_mtok = parse_amount(i)?;
        f.output_per_mtok = parse_amount(o)?;
    }
    for p in params {
        let (name, v) = split(p, "--active-params")?;
        facts.entry(name).or_default().active_params = Some(parse_amount(&v)? as u64);
    }
    Ok(facts)
}

/// `triage eval <command>`.
pub fn eval(cmd: EvalCommand) -> Result<(), CliError> {
    let EvalCommand::Run { set, experts, gateway, config, api_key_env, db, prices, active_params } = cmd;
    let items = eval::load_set(&set)?;
    let loaded =
        config.as_deref().map(crate::config::load_file).transpose().map_err(|e| CliError::Gateway(e.to_string()))?;
    let facts = expert_facts(&prices, &active_params, loaded.as_ref())?;
    let start = now_ms();
    let summary = with_ledger(&db, async |ledger| {
        let target = match &loaded {
            Some(c) => {
                let routers = crate::routing::classifiers::factory(crate::config::models_dir());
                let state = crate::state::AppState::new(c.clone(), &*routers, None)
                    .map_err(|e| CliError::Gateway(e.to_string()))?;
                Target::InProcess(crate::api::app(Arc::new(state)))
            }
            None => Target::Http {
                base_url: gateway.clone(),
                client: reqwest::Client::new(),
                api_key: api_key_env.as_deref().and_then(|k| std::env::var(k).ok()),
            },
        };
        let total = (items.len() * experts.len()) as u64;
        let pb = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta}] {msg}")
        {
            pb.set_style(style);
        }
        let mut failed = 0u64;
        for expert in &experts {
            let f = facts.get(expert).cloned().unwrap_or_default();
            for item in &items {
                pb.set_message(format!("{expert} {}", item.id));
                if eval::run_one(&target, ledger, item, expert, &f).await?.is_none() {
                    failed += 1;
                }
                pb.inc(1);
            }
        }
        pb.finish_and_clear();
        ledger.flush().await?;
        let q = ReportQuery {
            since_ms: Some(start),
            by: vec![GroupBy::Category, GroupBy::Expert],
            origin: Some(Origin::Eval),
        };
        Ok((ledger.report(&q)?, failed, total))
    })?;
    let (r, failed, total) = summary;
    print!("{}", report::render_table(&r));
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{total} calls, {failed} without an answer; evidence recorded in {}", db.display());
    Ok(())
}
