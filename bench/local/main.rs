//! Prompt-processing and decode speed of one local expert, through the same
//! [`LocalExpert`] queue and worker the gateway uses, single stream and N concurrent streams.
//! See `bench/local/README.md` for the commands and recorded numbers.
//!
//! ```text
//! cargo run --release --example local_bench -- MODEL.gguf [--threads N] [--template NAME]
//!     [--weights quantized|f16|f32] [--runs R] [--streams 1,4] [--decode-only]
//! ```
//! Prints one markdown table row per stream count, medians over `--runs`:
//! `| model | weights | threads | streams | prompt tokens | prompt tok/s | decode tok/s |`.

use std::time::Instant;

use triage::local::{ChatMessage, GenEvent, GenRequest, LocalConfig, LocalExpert, WeightFormat};

/// Generated tokens per decode measurement: enough for a stable rate at 100+ tokens/s,
/// few enough to keep the shared CPU free.
const DECODE_TOKENS: u32 = 64;
/// Repeats of the prefill sentence: ~250 prompt tokens, a typical chat request, within one
/// prefill chunk (512) so it measures the batched matmuls, not chunking.
const PREFILL_REPEATS: usize = 18;
/// Runs per measurement; the median is reported (the machine is shared: medians resist the
/// odd run that lost its core).
const DEFAULT_RUNS: usize = 5;
const PREFILL_SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the river bank. ";
const DECODE_PROMPT: &str = "Tell me a long story about a dragon.";

struct Args {
    path: String,
    weights: WeightFormat,
    threads: Option<usize>,
    template: Option<String>,
    runs: usize,
    streams: Vec<usize>,
    /// Decode only (for profiling it): the prompt-processing rows read 0.
    decode_only: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        path: String::new(),
        weights: WeightFormat::Quantized,
        threads: None,
        template: None,
        runs: DEFAULT_RUNS,
        streams: vec![1, 4],
        decode_only: false,
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--threads" => args.threads = Some(value()?.parse()?),
            "--template" => args.template = Some(value()?),
            "--runs" => args.runs = value()?.parse()?,
            "--decode-only" => args.decode_only = true,
            "--streams" => {
                args.streams = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--weights" => {
                args.weights = match value()?.as_str() {
                    "quantized" => WeightFormat::Quantized,
                    "f16" => WeightFormat::F16,
                    "f32" => WeightFormat::F32,
                    other => anyhow::bail!("unknown weights format {other}"),
                }
            }
            _ if args.path.is_empty() => args.path = a,
            other => anyhow::bail!("unexpected argument {other}"),
        }
    }
    if args.path.is_empty() {
        anyhow::bail!(
            "usage: local_bench MODEL.gguf [--threads N] [--template NAME] [--runs R] [--streams 1,4] [--decode-only]"
        );
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let cfg = LocalConfig {
        weights: args.weights,
        threads: args.threads,
        chat_template: args.template.clone(),
        // Every stream of a concurrent measurement must be admitted.
        queue_limit: 16,
        tenant_queue_limit: Some(16),
        ..LocalConfig::new(&args.path)
    };
    let expert = LocalExpert::spawn("bench", cfg)?;
    let info = expert.info();
    eprintln!("{}: {:?} weights, {:.0} MB in memory", args.path, info.weights, info.bytes as f64 / 1e6);
    // Warm-up: first-touch page faults and lazily built tables are not what is measured.
    run_streams(&expert, 1, &request(DECODE_PROMPT, 8))?;

    let long = PREFILL_SENTENCE.repeat(PREFILL_REPEATS);
    let model = args.path.rsplit('/').next().unwrap_or(&args.path);
    let threads = args.threads.map_or_else(|| "default".to_string(), |t| t.to_string());
    for &streams in &args.streams {
        let mut prefill = Vec::with_capacity(args.runs);
        let mut decode = Vec::with_capacity(args.runs);
        let mut prompt_tokens = 0;
        for _ in 0..args.runs {
            if args.decode_only {
                prefill.push(0.0);
            } else {
                let pp = run_streams(&expert, streams, &request(&long, 1))?;
                prompt_tokens = pp.prompt_tokens / streams as u32;
                prefill.push(pp.prompt_tokens as f64 / pp.first_token_s);
            }
            let tg = run_streams(&expert, streams, &request(DECODE_PROMPT, DECODE_TOKENS))?;
            decode.push(tg.decode_rate());
        }
        println!(
            "| {model} | {:?} | {threads} | {streams} | {prompt_tokens} | {:.0} | {:.1} |",
            info.weights,
            median(&mut prefill),
            median(&mut decode),
        );
    }
    Ok(())
}

fn request(text: &str, max_tokens: u32) -> GenRequest {
    GenRequest {
        messages: vec![ChatMessage::new("user", text)],
        max_tokens: Some(max_tokens),
        // Greedy with a mild penalty keeps the story going instead of ending early.
        repetition_penalty: Some(1.1),
        ..Default::default()
    }
}

/// Totals over the streams of one measurement.
struct Totals {
    prompt_tokens: u32,
    /// Per stream: completion tokens and seconds from its first token to its end.
    decode: Vec<(u32, f64)>,
    /// Seconds from submission until every stream had its first token.
    first_token_s: f64,
    /// Seconds from submission until every stream was done.
    wall_s: f64,
    completion_tokens: u32,
}

impl Totals {
    /// Single stream: tokens after the first over the time after the first (prefill
    /// excluded). Several streams: every generated token over the wall time, since the
    /// streams share the worker (aggregate throughput, what a server delivers).
    fn decode_rate(&self) -> f64 {
        match self.decode.as_slice() {
            [(n, s)] => n.saturating_sub(1) as f64 / s,
            _ => self.completion_tokens as f64 / self.wall_s,
        }
    }
}

/// Submits `n` copies of `req` at once and drains them all.
fn run_streams(expert: &LocalExpert, n: usize, req: &GenRequest) -> anyhow::Result<Totals> {
    let started = Instant::now();
    let receivers: Vec<_> = (0..n).map(|_| expert.submit(req.clone())).collect::<Result<_, _>>()?;
    let handles: Vec<_> = receivers
        .into_iter()
        .map(|mut rx| {
            std::thread::spawn(move || -> anyhow::Result<(Instant, Instant, u32, u32)> {
                let mut first = None;
                while let Some(ev) = rx.blocking_recv() {
                    match ev {
                        GenEvent::Delta(_) => {
                            first.get_or_insert_with(Instant::now);
                        }
                        GenEvent::Done { prompt_tokens, completion_tokens, .. } => {
                            let done = Instant::now();
                            return Ok((first.unwrap_or(done), done, prompt_tokens, completion_tokens));
                        }
                        GenEvent::Error(e) => anyhow::bail!(e),
                        ev @ GenEvent::TooLong { .. } => anyhow::bail!("{ev:?}"),
                    }
                }
                anyhow::bail!("stream ended without Done")
            })
        })
        .collect();
    let mut totals =
        Totals { prompt_tokens: 0, decode: Vec::new(), first_token_s: 0.0, wall_s: 0.0, completion_tokens: 0 };
    for h in handles {
        let (first, done, p, c) = h.join().map_err(|_| anyhow::anyhow!("stream thread panicked"))??;
        totals.prompt_tokens += p;
        totals.completion_tokens += c;
        totals.decode.push((c, (done - first).as_secs_f64()));
        totals.first_token_s = totals.first_token_s.max((first - started).as_secs_f64());
        totals.wall_s = totals.wall_s.max((done - started).as_secs_f64());
    }
    Ok(totals)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}
