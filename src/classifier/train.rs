//! `triage router train`: fits stage 1, fine-tunes the encoder's top layers + head with
//! candle-nn autograd, calibrates both stages on a held-out validation split, reports on
//! a held-out test split never used for any choice, and writes the artifacts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::Digest;

use super::cascade::{mix, Classifier, LoadError};
use super::config::{RouterConfig, DATA_DIR, FAST_FILE, WEIGHTS_FILE};
use super::data::{load_dir, DataError, Example};
use super::distill::StaticEmbeddings;
use super::encoder::{backbone_layers, backbone_top_tensors, Encoder, EncoderError};
use super::eval::{compute, Metrics};
use super::fast::{features_with, wordpiece_window, FastModel, Features, Statics};
use super::finetune::TrainTop;
use super::head::{Head, HEAD_PREFIX, TOP_PREFIX};
use super::{argmax, softmax_t, ConfigError};

/// Examples per forward pass when caching the frozen layers' outputs; bigger batches
/// waste compute on padding, smaller ones lose matmul efficiency.
const CACHE_BATCH: usize = 32;
/// Below this stage 1's top label holds less than half the mass: never trusted alone.
const MIN_ACCEPT_THRESHOLD: f32 = 0.5;
/// A threshold no calibrated probability reaches: stage 1 never decides.
const NEVER_ACCEPT: f32 = 1.01;
/// How much held-out cascade accuracy (a fraction) the stage-1 threshold may give up for
/// coverage: half a point, about two inputs of a 380-prompt validation split, i.e. within
/// the noise of that split, while each input stage 1 takes saves an encoder pass.
pub const CASCADE_ACCURACY_TOLERANCE: f64 = 0.005;
/// Stage-1 weights tried for the encoder stage's mix: 0, 0.1, ..., 1.
const MIX_GRID_STEPS: usize = 10;
/// Temperature search grid (log-spaced): wide enough for over- and under-confidence.
const TEMPERATURE_GRID: (f32, f32, usize) = (0.05, 20.0, 400);

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// Boxed: a load error is large and rare; it should not bloat every `Result`.
    #[error(transparent)]
    Load(Box<LoadError>),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("fast stage: {0}")]
    Fast(#[from] super::fast::FastError),
    #[error("{what} split is empty: category {label:?} needs more examples")]
    EmptySplit { what: &'static str, label: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("training state lock poisoned")]
    Poisoned,
}

impl From<LoadError> for TrainError {
    fn from(e: LoadError) -> Self {
        Self::Load(Box::new(e))
    }
}

/// Options outside router.toml.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub models_dir: PathBuf,
    /// Show indicatif progress bars.
    pub progress: bool,
}

/// What a run measured; written to `train_report.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    pub trainable_layers: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub val_accuracy_encoder: f64,
    pub temperature: f32,
    pub fast_temperature: f32,
    pub fast_accept_threshold: f32,
    /// Share of test inputs stage 1 decided.
    pub test_fast_coverage: f64,
    /// Accuracy of stage 1 on the inputs it decided.
    pub test_fast_accepted_accuracy: f64,
    pub fast_weight: f32,
    pub ensemble_temperature: f32,
    /// The encoder (fine-tuned layers + head) alone.
    pub test_encoder: Metrics,
    /// The encoder stage as shipped: encoder mixed with stage-1 evidence.
    pub test_encoder_stage: Metrics,
    pub test_fast_only: Metrics,
    pub test_cascade: Metrics,
}

/// A fitted router, not yet written.
pub struct Trained {
    pub config: RouterConfig,
    /// Exactly what goes into `model.safetensors` (top layers f16, head f32).
    pub tensors: HashMap<String, Tensor>,
    pub fast: FastModel,
    pub report: TrainReport,
    pub val: Vec<Example>,
    pub test: Vec<Example>,
}

/// Trains the router in `dir` from `dir/data/*.jsonl` and writes its artifacts.
pub fn train(dir: &Path, opts: &TrainOptions) -> Result<TrainReport, TrainError> {
    let config = RouterConfig::load(dir)?;
    let examples = load_dir(&dir.join(DATA_DIR), &config.labels)?;
    let trained = fit(config, examples, opts)?;
    write(dir, trained)
}

fn write(dir: &Path, mut t: Trained) -> Result<TrainReport, TrainError> {
    let weights = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&t.tensors, &weights)?;
    let fast = dir.join(FAST_FILE);
    t.fast.save(&fast)?;
    // The version names the artifacts, so a logged decision can be tied to them.
    let mut h = sha2::Sha256::new();
    for p in [&weights, &fast] {
        h.update(std::fs::read(p).map_err(|source| TrainError::Write { path: p.clone(), source })?);
    }
    t.config.version = hex::encode(h.finalize())[..12].to_owned();
    t.config.save(dir)?;
    let eval_dir = dir.join("eval");
    std::fs::create_dir_all(&eval_dir).map_err(|source| TrainError::Write { path: eval_dir.clone(), source })?;
    for (name, split) in [("val.jsonl", &t.val), ("test.jsonl", &t.test)] {
        let body: String = split
            .iter()
            .map(|e| serde_json::json!({"prompt": e.text, "category": t.config.labels[e.label]}).to_string() + "\n")
            .collect();
        let p = eval_dir.join(name);
        std::fs::write(&p, body).map_err(|source| TrainError::Write { path: p, source })?;
    }
    let p = dir.join("train_report.json");
    let body = serde_json::to_string_pretty(&t.report).unwrap_or_default();
    std::fs::write(&p, body).map_err(|source| TrainError::Write { path: p, source })?;
    Ok(t.report)
}

/// Stratified split into (train, val, test) after de-duplication, deterministic in seed.
pub fn split(config: &RouterConfig, examples: Vec<Example>) -> Result<[Vec<Example>; 3], TrainError> {
    let tc = &config.train;
    let mut seen = HashSet::new();
    let mut by_class: Vec<Vec<Example>> = vec![Vec::new(); config.labels.len()];
    for e in examples {
        // Duplicates across splits would make the held-out numbers a lie.
        if seen.insert(e.text.trim().to_lowercase()) {
            by_class[e.label].push(e);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(tc.seed);
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for (label, mut items) in by_class.into_iter().enumerate() {
        items.shuffle(&mut rng);
        if tc.max_per_class > 0 {
            items.truncate(tc.max_per_class);
        }
        let n = items.len() as f64;
        let n_test = (n * tc.test_fraction).round().max(1.0) as usize;
        let n_val = (n * tc.val_fraction).round().max(1.0) as usize;
        if items.len() < n_test + n_val + 1 {
            return Err(TrainError::EmptySplit { what: "train", label: config.labels[label].clone() });
        }
        let train = items.split_off(n_test + n_val);
        let val = items.split_off(n_test);
        out[0].extend(train);
        out[1].extend(val);
        out[2].extend(items);
    }
    Ok(out)
}

fn bar(len: usize, msg: &'static str, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}<{eta} {per_sec}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

/// Fits both stages and calibrates them; writes nothing.
pub fn fit(mut config: RouterConfig, examples: Vec<Example>, opts: &TrainOptions) -> Result<Trained, TrainError> {
    let [train, val, test] = split(&config, examples)?;
    let classes = config.labels.len();
    let tc = config.train.clone();
    let device = Device::Cpu;

    let layers = backbone_layers(&opts.models_dir, &config.backbone)?;
    let k = config.trainable_layers.min(layers);
    config.trainable_layers = k;
    let encoder =
        Encoder::load(&opts.models_dir, &config.backbone, Some(layers - k), config.max_tokens, config.pooling)?;

    // Stage 1: cheap, so it trains first. Its static embeddings come from the untouched
    // backbone (all layers), weighted by IDF over the training split only.
    let statics = if config.fast.static_dims > 0 {
        let backbone = Encoder::load(&opts.models_dir, &config.backbone, None, config.max_tokens, config.pooling)?;
        let pb = bar(backbone.vocab_size(), "distill", opts.progress);
        let mut emb = StaticEmbeddings::distill(&backbone, config.fast.static_dims, tc.distill_vocab_limit, &|n| {
            pb.inc(n as u64)
        })?;
        pb.finish_and_clear();
        let docs =
            train.iter().map(|e| encoder.wordpiece_ids(&wordpiece_window(&e.text))).collect::<Result<Vec<_>, _>>()?;
        emb.weight_by_idf(&docs);
        Some(Statics { embeddings: emb, scale: config.fast.static_scale })
    } else {
        None
    };
    let use_statics = statics.is_some();
    let wordpieces = |text: &str| -> Result<Vec<u32>, EncoderError> {
        if use_statics {
            encoder.wordpiece_ids(&wordpiece_window(text))
        } else {
            Ok(Vec::new())
        }
    };
    let train_feats = train
        .iter()
        .map(|e| Ok((features_with(&e.text, config.fast.hash_bits, statics.as_ref(), &wordpieces(&e.text)?), e.label)))
        .collect::<Result<Vec<(Features, usize)>, TrainError>>()?;
    let fast = FastModel::train(&train_feats, classes, config.fast.hash_bits, statics, tc.fast_epochs, tc.seed);
    let fast_logits = |s: &[Example]| -> Result<Vec<Vec<f32>>, TrainError> {
        s.iter().map(|e| Ok(fast.logits_of(&fast.features(&e.text, &wordpieces(&e.text)?)))).collect()
    };
    let (fast_val, fast_test) = (fast_logits(&val)?, fast_logits(&test)?);

    // Stage 2: frozen bottom layers run once per example; only the top k train.
    let all: Vec<&Example> = train.iter().chain(&val).collect();
    let cached = cache_bottom(&encoder, &all, k == 0, opts.progress)?;
    let (cached_train, cached_val) = cached.split_at(train.len());

    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().map_err(|_| TrainError::Poisoned)?;
        if k > 0 {
            for (name, t) in backbone_top_tensors(&opts.models_dir, &config.backbone, layers - k)? {
                data.insert(format!("{TOP_PREFIX}.{name}"), Var::from_tensor(&t)?);
            }
        }
        // Zero init is deterministic and fine for a softmax layer on varied features.
        let h = encoder.hidden_size();
        data.insert(format!("{HEAD_PREFIX}.weight"), Var::zeros((classes, h), DType::F32, &device)?);
        data.insert(format!("{HEAD_PREFIX}.bias"), Var::zeros(classes, DType::F32, &device)?);
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let top = if k > 0 {
        let mut cfg = encoder.bert_config().clone();
        cfg.num_hidden_layers = k;
        Some(TrainTop::load(vb.pp(TOP_PREFIX), &cfg, k)?)
    } else {
        None
    };
    let head = Head::load(vb.clone(), encoder.hidden_size(), classes)?;
    let named_vars = || -> Result<Vec<(String, Var)>, TrainError> {
        let data = varmap.data().lock().map_err(|_| TrainError::Poisoned)?;
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    };
    let vars = named_vars()?;
    let pick = |head: bool| {
        vars.iter().filter(|(n, _)| n.starts_with(HEAD_PREFIX) == head).map(|(_, v)| v.clone()).collect::<Vec<_>>()
    };
    let mut opt_head =
        AdamW::new(pick(true), ParamsAdamW { lr: tc.lr_head, weight_decay: tc.weight_decay, ..Default::default() })?;
    let mut opt_enc = AdamW::new(
        pick(false),
        ParamsAdamW { lr: tc.lr_encoder, weight_decay: tc.weight_decay, ..Default::default() },
    )?;

    let forward = |batch: &[&Tensor], dropout: Option<&mut rand::rngs::StdRng>| -> Result<Tensor, TrainError> {
        let pooled = if let Some(top) = &top {
            let (hidden, mask) = pad_hidden(batch)?;
            encoder.top_and_pool(Some(top), &hidden, &mask)?
        } else {
            Tensor::stack(batch, 0)?
        };
        let pooled = match dropout {
            Some(rng) if tc.dropout > 0.0 => {
                // Our own seeded mask: candle's dropout draws from an unseeded RNG.
                let keep = 1.0 - tc.dropout;
                let m: Vec<f32> = (0..pooled.elem_count())
                    .map(|_| if rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 })
                    .collect();
                {
                    let shape = pooled.shape().clone();
                    (pooled * Tensor::from_vec(m, shape, &device)?)?
                }
            }
            _ => pooled,
        };
        Ok(head.forward(&pooled)?)
    };
    let logits_of = |cache: &[Tensor]| -> Result<Vec<Vec<f32>>, TrainError> {
        let mut out = Vec::with_capacity(cache.len());
        for chunk in cache.chunks(CACHE_BATCH) {
            let refs: Vec<&Tensor> = chunk.iter().collect();
            out.extend(forward(&refs, None)?.to_vec2::<f32>()?);
        }
        Ok(out)
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(tc.seed.wrapping_add(1));
    let steps_per_epoch = train.len().div_ceil(tc.batch_size.max(1));
    let pb = bar(steps_per_epoch * tc.epochs, "fine-tune", opts.progress);
    let val_gold: Vec<usize> = val.iter().map(|e| e.label).collect();
    let mut best: Option<(f64, f64, usize, Vec<Tensor>)> = None; // (acc, -loss, epoch, weights)
    let mut epochs_run = 0;
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in 0..tc.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(tc.batch_size.max(1)) {
            let batch: Vec<&Tensor> = chunk.iter().map(|&i| &cached_train[i]).collect();
            let y = Tensor::from_vec(
                chunk.iter().map(|&i| train[i].label as u32).collect::<Vec<_>>(),
                chunk.len(),
                &device,
            )?;
            let logits = forward(&batch, Some(&mut rng))?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let grads = loss.backward()?;
            opt_head.step(&grads)?;
            if k > 0 {
                opt_enc.step(&grads)?;
            }
            pb.inc(1);
        }
        epochs_run = epoch + 1;
        let vl = logits_of(cached_val)?;
        let (acc, nll) = acc_nll(&vl, &val_gold, 1.0);
        if opts.progress {
            // Through `suspend`, not `pb.println`: a hidden bar (stderr not a terminal)
            // swallows its println, and logs of a training run are worth keeping.
            pb.suspend(|| eprintln!("epoch {epochs_run}: val accuracy {acc:.4} nll {nll:.4}"));
        }
        let better = best.as_ref().is_none_or(|(a, l, _, _)| acc > *a || (acc == *a && -nll > *l));
        if better {
            let snap = vars.iter().map(|(_, v)| v.as_tensor().copy()).collect::<Result<Vec<_>, _>>()?;
            best = Some((acc, -nll, epoch, snap));
        } else if best.as_ref().is_some_and(|(_, _, e, _)| epoch - e >= tc.patience) {
            if opts.progress {
                pb.suspend(|| eprintln!("early stop: no validation gain for {} epochs", tc.patience));
            }
            break;
        }
    }
    pb.finish_and_clear();
    let (_, _, best_epoch, snap) = best.ok_or(TrainError::EmptySplit { what: "epochs", label: String::new() })?;

    // Stored form: top layers in f16 (half the bytes), head in f32 (tiny). Calibration
    // and the reported test numbers below are computed with exactly these weights.
    let mut tensors = HashMap::new();
    for ((name, _), t) in vars.iter().zip(snap) {
        let t = if name.starts_with(TOP_PREFIX) { t.to_dtype(DType::F16)? } else { t };
        tensors.insert(name.clone(), t);
    }
    drop(encoder);
    let mut eval_config = config.clone();
    eval_config.temperature = 1.0;
    let clf = Classifier::from_parts(eval_config, &opts.models_dir, tensors.clone(), fast.clone())?;
    let enc_logits = |s: &[Example]| -> Result<Vec<Vec<f32>>, TrainError> {
        let mut out = Vec::new();
        for chunk in s.chunks(CACHE_BATCH) {
            out.extend(clf.encoder_logits(&chunk.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(), None)?);
        }
        Ok(out)
    };
    let (enc_val, enc_test) = (enc_logits(&val)?, enc_logits(&test)?);

    let temperature = fit_temperature(&enc_val, &val_gold);
    let fast_temperature = fit_temperature(&fast_val, &val_gold);
    let probs = |l: &[Vec<f32>], t: f32| l.iter().map(|x| softmax_t(x, t)).collect::<Vec<_>>();
    let (enc_val_p, fast_val_p) = (probs(&enc_val, temperature), probs(&fast_val, fast_temperature));
    let (fast_weight, ensemble_temperature) = fit_mix(&enc_val_p, &fast_val_p, &val_gold);
    let mixed = |e: &[Vec<f32>], f: &[Vec<f32>]| {
        e.iter().zip(f).map(|(e, f)| mix(e, f, fast_weight, ensemble_temperature)).collect::<Vec<_>>()
    };
    let mix_val_p = mixed(&enc_val_p, &fast_val_p);
    let threshold = if config.fast.enabled { fit_threshold(&fast_val_p, &mix_val_p, &val_gold) } else { NEVER_ACCEPT };

    let test_gold: Vec<usize> = test.iter().map(|e| e.label).collect();
    let (enc_test_p, fast_test_p) = (probs(&enc_test, temperature), probs(&fast_test, fast_temperature));
    let enc_only_test_p = enc_test_p.clone();
    let enc_test_p = mixed(&enc_test_p, &fast_test_p);
    let accepted: Vec<bool> = fast_test_p.iter().map(|p| p[argmax(p)] >= threshold).collect();
    let cascade_p: Vec<Vec<f32>> = accepted
        .iter()
        .zip(fast_test_p.iter().zip(&enc_test_p))
        .map(|(&a, (f, e))| if a { f.clone() } else { e.clone() })
        .collect();
    let n_acc = accepted.iter().filter(|&&a| a).count();
    let acc_ok = accepted.iter().zip(&fast_test_p).zip(&test_gold).filter(|((&a, p), &g)| a && argmax(p) == g).count();

    config.temperature = temperature;
    config.fast.temperature = fast_temperature;
    config.fast.accept_threshold = threshold;
    config.fast_weight = fast_weight;
    config.ensemble_temperature = ensemble_temperature;
    let report = TrainReport {
        n_train: train.len(),
        n_val: val.len(),
        n_test: test.len(),
        trainable_layers: k,
        epochs_run,
        best_epoch: best_epoch + 1,
        val_accuracy_encoder: acc_nll(&enc_val, &val_gold, temperature).0,
        temperature,
        fast_temperature,
        fast_accept_threshold: threshold,
        test_fast_coverage: n_acc as f64 / test.len().max(1) as f64,
        test_fast_accepted_accuracy: if n_acc > 0 { acc_ok as f64 / n_acc as f64 } else { 0.0 },
        fast_weight,
        ensemble_temperature,
        test_encoder: compute(&config.labels, &test_gold, &enc_only_test_p),
        test_encoder_stage: compute(&config.labels, &test_gold, &enc_test_p),
        test_fast_only: compute(&config.labels, &test_gold, &fast_test_p),
        test_cascade: compute(&config.labels, &test_gold, &cascade_p),
    };
    Ok(Trained { config, tensors, fast, report, val, test })
}

/// Runs the frozen layers once per example: `[len, hidden]` states (or pooled
/// `[hidden]` vectors when nothing above them trains), in input order.
fn cache_bottom(
    encoder: &Encoder,
    examples: &[&Example],
    pooled: bool,
    progress: bool,
) -> Result<Vec<Tensor>, TrainError> {
    let ids = examples.iter().map(|e| encoder.token_ids(&e.text)).collect::<Result<Vec<_>, _>>()?;
    // Sorting by length keeps padding (wasted compute) small.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out: Vec<Option<Tensor>> = vec![None; ids.len()];
    let pb = bar(ids.len(), "encode", progress);
    for chunk in order.chunks(CACHE_BATCH) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let batch = encoder.pad(&seqs)?;
        let hidden = encoder.bottom_forward(&batch)?;
        let hidden = if pooled { encoder.top_and_pool(None, &hidden, &batch.mask)? } else { hidden };
        for (row, &i) in chunk.iter().enumerate() {
            let h = hidden.get(row)?;
            let h = if pooled { h } else { h.narrow(0, 0, ids[i].len())? };
            out[i] = Some(h.contiguous()?);
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out.into_iter().flatten().collect())
}

/// Pads `[len_i, h]` states to `[b, max_len, h]` with a 0/1 mask `[b, max_len]`.
fn pad_hidden(batch: &[&Tensor]) -> Result<(Tensor, Tensor), TrainError> {
    let max = batch.iter().map(|t| t.dim(0)).collect::<Result<Vec<_>, _>>()?.into_iter().max().unwrap_or(0);
    let mut rows = Vec::with_capacity(batch.len());
    let mut mask = Vec::with_capacity(batch.len() * max);
    for t in batch {
        let (len, h) = t.dims2()?;
        rows.push(if len < max {
            Tensor::cat(&[*t, &Tensor::zeros((max - len, h), t.dtype(), t.device())?], 0)?
        } else {
            (*t).clone()
        });
        mask.extend(std::iter::repeat_n(1f32, len).chain(std::iter::repeat_n(0f32, max - len)));
    }
    let device = batch.first().map(|t| t.device().clone()).unwrap_or(Device::Cpu);
    Ok((Tensor::stack(&rows, 0)?, Tensor::from_vec(mask, (batch.len(), max), &device)?))
}

/// Accuracy and mean negative log-likelihood of logits at temperature `t`.
pub fn acc_nll(logits: &[Vec<f32>], gold: &[usize], t: f32) -> (f64, f64) {
    let mut ok = 0usize;
    let mut nll = 0f64;
    for (l, &g) in logits.iter().zip(gold) {
        let p = softmax_t(l, t);
        ok += usize::from(argmax(&p) == g);
        nll -= f64::from(p[g].max(1e-12)).ln();
    }
    let n = gold.len().max(1) as f64;
    (ok as f64 / n, nll / n)
}

/// Temperature scaling (Guo et al. 2017): the T minimising held-out NLL.
pub fn fit_temperature(logits: &[Vec<f32>], gold: &[usize]) -> f32 {
    let (lo, hi, n) = TEMPERATURE_GRID;
    let mut best = (f64::INFINITY, 1.0f32);
    for i in 0..n {
        let t = lo * (hi / lo).powf(i as f32 / (n - 1) as f32);
        let nll = acc_nll(logits, gold, t).1;
        if nll < best.0 {
            best = (nll, t);
        }
    }
    best.1
}

/// Stage-1 weight in the encoder stage's mix: the grid value with the best held-out
/// accuracy (ties: lower NLL), and the temperature that calibrates the mix.
pub fn fit_mix(enc: &[Vec<f32>], fast: &[Vec<f32>], gold: &[usize]) -> (f32, f32) {
    let mut best = (f64::NEG_INFINITY, f64::INFINITY, 0.0f32);
    for step in 0..=MIX_GRID_STEPS {
        let w = step as f32 / MIX_GRID_STEPS as f32;
        let z: Vec<Vec<f32>> =
            enc.iter().zip(fast).map(|(e, f)| mix(e, f, w, 1.0).iter().map(|p| p.max(1e-12).ln()).collect()).collect();
        let (acc, nll) = acc_nll(&z, gold, 1.0);
        if acc > best.0 || (acc == best.0 && nll < best.1) {
            best = (acc, nll, w);
        }
    }
    let w = best.2;
    let z: Vec<Vec<f32>> =
        enc.iter().zip(fast).map(|(e, f)| mix(e, f, w, 1.0).iter().map(|p| p.max(1e-12).ln()).collect()).collect();
    (w, fit_temperature(&z, gold))
}

/// The lowest stage-1 confidence threshold whose cascade (stage 1 on the inputs it
/// accepts, the encoder stage on the rest) is, on held-out data, within
/// `CASCADE_ACCURACY_TOLERANCE` of the most accurate cascade any threshold gives.
///
/// Why a tolerance rather than "stage 1's accepted inputs must be at least as accurate as
/// the encoder's": every input stage 1 decides skips a 10-40 ms encoder pass, and near the
/// top of the confidence range the two stages mostly agree, so the strict rule stops at
/// the first cut where stage 1 is one input behind and gives up coverage the cascade's
/// accuracy never notices (0.935 kept 59 % of inputs; ~0.85 would keep ~72 % at the same
/// test accuracy). Measuring the whole cascade also counts what the strict rule ignored:
/// inputs the encoder gets wrong too cost nothing to hand to stage 1. The reference is the
/// best cascade, not the encoder alone, so a stage 1 that is better than the encoder on
/// its confident inputs is not penalised for it. One condition of the old rule stays: the
/// inputs stage 1 takes must be at least as accurate as the encoder stage is overall, so
/// the tolerance never hands a small, confidently wrong pocket to stage 1.
pub fn fit_threshold(fast: &[Vec<f32>], enc: &[Vec<f32>], gold: &[usize]) -> f32 {
    let n = gold.len();
    if n == 0 {
        return NEVER_ACCEPT;
    }
    let mut order: Vec<usize> = (0..n).collect();
    let conf = |i: usize| fast[i][argmax(&fast[i])];
    order.sort_by(|&a, &b| conf(b).total_cmp(&conf(a)));
    // Cascade accuracy (correct count) when the `k` most confident inputs go to stage 1:
    // the encoder's correct count, plus, for each accepted input, stage 1's verdict minus
    // the encoder's.
    let enc_ok_all = (0..n).filter(|&i| argmax(&enc[i]) == gold[i]).count() as i64;
    let enc_acc = enc_ok_all as f64 / n as f64;
    let mut cuts = vec![(NEVER_ACCEPT, enc_ok_all)];
    let (mut correct, mut fast_ok) = (enc_ok_all, 0usize);
    for (k, &i) in order.iter().enumerate() {
        let fast_right = argmax(&fast[i]) == gold[i];
        fast_ok += usize::from(fast_right);
        correct += i64::from(fast_right) - i64::from(argmax(&enc[i]) == gold[i]);
        let c = conf(i);
        // Only cut between distinct confidences: a threshold accepts all ties.
        let tie_next = order.get(k + 1).is_some_and(|&j| conf(j) == c);
        if !tie_next && c >= MIN_ACCEPT_THRESHOLD && fast_ok as f64 / (k + 1) as f64 >= enc_acc {
            cuts.push((c, correct));
        }
    }
    let best = cuts.iter().map(|&(_, ok)| ok).max().unwrap_or(enc_ok_all) as f64 / n as f64;
    cuts.iter()
        .filter(|&&(_, ok)| ok as f64 / n as f64 >= best - CASCADE_ACCURACY_TOLERANCE)
        .map(|&(c, _)| c)
        .fold(NEVER_ACCEPT, f32::min)
}
