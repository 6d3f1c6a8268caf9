//! `triage router ...` subcommands.

use std::path::PathBuf;

use anyhow::Context as _;

use super::data::load_jsonl;
use super::eval::compute;
use super::train::{train, TrainOptions};
use super::{Classifier, Stage};

/// Where `scripts/setup.sh` puts the backbone.
const DEFAULT_MODELS_DIR: &str = "models";

/// `triage router <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum RouterCommand {
    /// Train a router (stage 1 + fine-tuned encoder + head), calibrate it on held-out
    /// data and write its artifacts into the router folder.
    Train {
        /// The router folder, e.g. routers/default.
        dir: PathBuf,
        /// Folder holding the backbone (see scripts/setup.sh).
        #[arg(long, env = "TRIAGE_MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
        models: PathBuf,
        /// Fine-tune this many top encoder layers instead of router.toml's value.
        #[arg(long)]
        trainable_layers: Option<usize>,
        /// Hide progress bars (for logs).
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate a trained router on labelled JSONL data.
    Eval {
        /// The router folder, e.g. routers/default.
        dir: PathBuf,
        /// JSONL lines {"prompt": ..., "category": ...} or {"messages": [...], "category": ...}.
        #[arg(long)]
        data: PathBuf,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Skip stage 1 (measure the encoder alone).
        #[arg(long)]
        encoder_only: bool,
        /// Also write one JSON line per example (in input order, blank lines skipped):
        /// gold and predicted category, confidence and the deciding stage.
        #[arg(long)]
        predictions: Option<PathBuf>,
        #[arg(long, env = "TRIAGE_MODELS_DIR", default_value = DEFAULT_MODELS_DIR)]
        models: PathBuf,
    },
}

/// Runs one `triage router` subcommand.
pub fn run(cmd: RouterCommand) -> anyhow::Result<()> {
    match cmd {
        RouterCommand::Train { dir, models, trainable_layers, quiet } => {
            if let Some(k) = trainable_layers {
                let mut cfg = super::RouterConfig::load(&dir)?;
                cfg.trainable_layers = k;
                cfg.save(&dir)?;
            }
            let report = train(&dir, &TrainOptions { models_dir: models, progress: !quiet })
                .with_context(|| format!("training {}", dir.display()))?;
            println!(
                "train {} / val {} / test {}; {} fine-tuned layer(s); best epoch {} of {}",
                report.n_train,
                report.n_val,
                report.n_test,
                report.trainable_layers,
                report.best_epoch,
                report.epochs_run
            );
            println!(
                "temperature {:.3}; stage-1 temperature {:.3}, accept threshold {:.3}",
                report.temperature, report.fast_temperature, report.fast_accept_threshold
            );
            println!(
                "stage-1 weight in the encoder stage {:.2}, its temperature {:.3}",
                report.fast_weight, report.ensemble_temperature
            );
            println!("\n## held-out test: encoder alone\n{}", report.test_encoder.render());
            println!(
                "## held-out test: encoder stage (encoder mixed with stage-1 evidence)\n{}",
                report.test_encoder_stage.render()
            );
            println!("## held-out test: stage 1 alone\n{}", report.test_fast_only.render());
            println!(
                "## held-out test: cascade (stage 1 decided {:.1}% at accuracy {:.4})\n{}",
                report.test_fast_coverage * 100.0,
                report.test_fast_accepted_accuracy,
                report.test_cascade.render()
            );
            Ok(())
        }
        RouterCommand::Eval { dir, data, json, encoder_only, predictions, models } => {
            let clf = Classifier::load(&dir, &models).with_context(|| format!("loading router {}", dir.display()))?;
            let examples = load_jsonl(&data, clf.labels())?;
            let mut probs = Vec::with_capacity(examples.len());
            let mut stages = Vec::with_capacity(examples.len());
            for chunk in examples.chunks(32) {
                let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
                let res = if encoder_only { clf.classify_encoder(&texts)? } else { clf.classify_batch(&texts)? };
                stages.extend(res.iter().map(|c| c.stage));
                probs.extend(res.into_iter().map(|c| c.probs));
            }
            let fast = stages.iter().filter(|s| **s == Stage::Fast).count();
            let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
            if let Some(path) = predictions {
                let labels = clf.labels();
                let mut out = String::new();
                for ((g, p), stage) in gold.iter().zip(&probs).zip(&stages) {
                    let (best, conf) =
                        p.iter()
                            .copied()
                            .enumerate()
                            .fold((0, f32::MIN), |acc, (i, v)| if v > acc.1 { (i, v) } else { acc });
                    let line = serde_json::json!({"gold": labels[*g], "predicted": labels[best], "confidence": conf, "stage": stage});
                    out.push_str(&line.to_string());
                    out.push('\n');
                }
                std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
            }
            let m = compute(clf.labels(), &gold, &probs);
            let fast_share = fast as f64 / examples.len().max(1) as f64;
            if json {
                let mut v = serde_json::to_value(&m)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("router_version".into(), clf.config().version.clone().into());
                    o.insert(
                        "stage_share".into(),
                        serde_json::json!({"fast": fast_share, "encoder": 1.0 - fast_share}),
                    );
                }
                println!("{v}");
            } else {
                println!("router {} version {}", clf.config().name, clf.config().version);
                println!("stage 1 decided {:.1}% of inputs", fast_share * 100.0);
                print!("{}", m.render());
            }
            Ok(())
        }
    }
}
