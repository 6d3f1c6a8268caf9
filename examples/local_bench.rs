//! Prompt (prefill) and decode speed of one local expert, single stream.
//!
//! ```text
//! CANDLE_NUM_THREADS=2 cargo run --release --example local_bench -- \
//!     models/smollm2-135m-instruct-q4_1.gguf f32 [chat_template]
//! ```
//! `weights` is `quantized`, `f16` or `f32`. Thread count comes from `CANDLE_NUM_THREADS`
//! (candle reads it once per process). Prints one markdown table row.

use std::time::Instant;

use triage::local::{ChatMessage, GenEvent, GenRequest, LocalConfig, LocalExpert, WeightFormat};

/// Enough decode steps for a stable rate, few enough to keep the shared CPU free.
const DECODE_TOKENS: u32 = 64;
/// Repeats of the prefill sentence: ~250 prompt tokens, a typical chat request.
const PREFILL_REPEATS: usize = 20;
const RUNS: usize = 2;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: local_bench MODEL.gguf [quantized|f16|f32] [chat_template]"))?;
    let weights = match args.get(1).map(String::as_str).unwrap_or("quantized") {
        "quantized" => WeightFormat::Quantized,
        "f16" => WeightFormat::F16,
        "f32" => WeightFormat::F32,
        other => anyhow::bail!("unknown weights format {other}"),
    };
    let cfg = LocalConfig { weights, chat_template: args.get(2).cloned(), ..LocalConfig::new(path) };
    let expert = LocalExpert::spawn("bench", cfg)?;
    let info = expert.info();

    let mut best_prefill = 0f64;
    let mut best_decode = 0f64;
    for _ in 0..RUNS {
        // Prefill: a long prompt and a single generated token.
        let long = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(PREFILL_REPEATS);
        let started = Instant::now();
        let (_, prompt_tokens, _) = drain(&expert, request(&long, 1))?;
        best_prefill = best_prefill.max(prompt_tokens as f64 / started.elapsed().as_secs_f64());

        // Decode: time between the first streamed token and the end.
        let (first_at, _, completion) = drain(&expert, request("Tell me a long story about a dragon.", DECODE_TOKENS))?;
        if let Some((t0, n0)) = first_at {
            let steps = completion.saturating_sub(n0);
            best_decode = best_decode.max(steps as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "| {} | {:?} | {} | {:.0} | {:.1} | {:.0} MB | {:.2} s |",
        path.rsplit('/').next().unwrap_or(path),
        info.weights,
        threads,
        best_prefill,
        best_decode,
        info.bytes as f64 / 1e6,
        info.load_time.as_secs_f64()
    );
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

/// Returns (time and token count at the first delta, prompt tokens, completion tokens).
#[expect(clippy::type_complexity, reason = "a private three-field result used once")]
fn drain(expert: &LocalExpert, req: GenRequest) -> anyhow::Result<(Option<(Instant, u32)>, u32, u32)> {
    let mut rx = expert.submit(req)?;
    let mut first = None;
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            GenEvent::Delta(_) => {
                if first.is_none() {
                    first = Some((Instant::now(), 1));
                }
            }
            GenEvent::Done { prompt_tokens, completion_tokens, .. } => {
                return Ok((first, prompt_tokens, completion_tokens));
            }
            GenEvent::Error(e) => anyhow::bail!(e),
        }
    }
    anyhow::bail!("stream ended without Done")
}
