//! Token selection (greedy, temperature, top-k, top-p, seeded), logit penalties, and stop
//! strings over streamed text.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many recent tokens `repetition_penalty` looks at: llama.cpp's `penalty_last_n` default.
const REPETITION_WINDOW: usize = 64;
/// top-p first tries this many best candidates before sorting the whole vocabulary; the
/// nucleus is a prefix of the sorted order, so the answer is exact either way, and for
/// 262k-token vocabularies a full sort per token would cost more than a decode step.
const TOP_P_FAST_CANDIDATES: usize = 256;

#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: u64,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Counts of generated tokens (OpenAI presence/frequency penalties look at the completion).
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Self { rng: StdRng::seed_from_u64(params.seed), params, counts: HashMap::new() }
    }

    fn greedy(&self) -> bool {
        self.params.temperature.is_none_or(|t| t <= 0.0) || self.params.top_k == Some(1)
    }

    /// Picks the next token. `context` is prompt + generated ids (for repetition_penalty).
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        self.apply_penalties(logits, context);
        let id = if self.greedy() { argmax(logits) } else { self.sample_random(logits) };
        *self.counts.entry(id).or_default() += 1;
        id
    }

    fn apply_penalties(&self, logits: &mut [f32], context: &[u32]) {
        if let Some(p) = self.params.repetition_penalty.filter(|p| *p != 1.0 && *p > 0.0) {
            let start = context.len().saturating_sub(REPETITION_WINDOW);
            let mut seen: Vec<u32> = context[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    // CTRL-paper penalty as in HF and llama.cpp: always moves the logit down.
                    *l = if *l > 0.0 { *l / p } else { *l * p };
                }
            }
        }
        let presence = self.params.presence_penalty.unwrap_or(0.0);
        let frequency = self.params.frequency_penalty.unwrap_or(0.0);
        if presence != 0.0 || frequency != 0.0 {
            for (&id, &n) in &self.counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= presence + frequency * n as f32;
                }
            }
        }
    }

    fn sample_random(&mut self, logits: &[f32]) -> u32 {
        let temperature = self.params.temperature.unwrap_or(1.0) as f32;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l / temperature))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if let Some(k) = self.params.top_k.filter(|k| *k > 0 && *k < cand.len()) {
            cand.select_nth_unstable_by(k - 1, by_logit_desc);
            cand.truncate(k);
        }
        softmax_in_place(&mut cand);
        if let Some(p) = self.params.top_p.filter(|p| *p < 1.0) {
            let p = p as f32;
            let fast = TOP_P_FAST_CANDIDATES.min(cand.len());
            cand.select_nth_unstable_by(fast - 1, by_logit_desc);
            cand[..fast].sort_by(by_logit_desc);
            let mut keep = nucleus_len(&cand[..fast], p);
            if keep.is_none() {
                cand.sort_by(by_logit_desc);
                keep = nucleus_len(&cand, p);
            }
            cand.truncate(keep.unwrap_or(cand.len()));
        }
        let total: f32 = cand.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for (id, prob) in &cand {
            r -= prob;
            if r <= 0.0 {
                return *id;
            }
        }
        cand.last().map_or(0, |c| c.0)
    }
}

/// Number of leading (sorted) candidates whose probability mass reaches `p`, if any do.
fn nucleus_len(sorted: &[(u32, f32)], p: f32) -> Option<usize> {
    let mut acc = 0.0;
    for (i, c) in sorted.iter().enumerate() {
        acc += c.1;
        if acc >= p {
            return Some(i + 1);
        }
    }
    None
}

fn softmax_in_place(cand: &mut [(u32, f32)]) {
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for c in cand.iter_mut() {
        c.1 = (c.1 - max).exp();
        sum += c.1;
    }
    for c in cand.iter_mut() {
        c.1 /= sum;
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Holds back streamed text that could be the start of a stop string, so a stop string is
/// never emitted even when it spans several tokens.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

pub enum StopOutcome {
    /// Safe to emit; no stop string seen.
    Continue(String),
    /// A stop string was found; emit this text (everything before it) and finish.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), pending: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_string());
        }
        self.pending.push_str(text);
        let first_match = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = first_match {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        // Keep the longest suffix of `pending` that is a prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in self.pending.char_indices() {
                let suffix = &self.pending[i..];
                if suffix.len() > hold && s.starts_with(suffix) {
                    hold = suffix.len();
                    break;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Continue(out)
    }

    /// Text held back when generation ended for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for c in chunks {
            match m.push(c) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_string_spanning_chunks_is_never_emitted() {
        assert_eq!(run(&["END"], &["abc E", "N", "D more"]), ("abc ".into(), true));
        assert_eq!(run(&["\n\n"], &["one\n", "\ntwo"]), ("one".into(), true));
    }

    #[test]
    fn partial_stop_prefix_is_released_when_it_does_not_complete() {
        assert_eq!(run(&["END"], &["abc E", "x"]), ("abc Ex".into(), false));
        assert_eq!(run(&["END"], &["tail EN"]), ("tail EN".into(), false));
    }

    #[test]
    fn greedy_and_seeded_sampling() {
        let logits = vec![0.1, 2.0, 1.9, -1.0];
        let params = |t: Option<f64>, seed| SamplingParams {
            temperature: t,
            top_p: Some(0.9),
            top_k: Some(3),
            seed,
            presence_penalty: None,
            frequency_penalty: None,
            repetition_penalty: None,
        };
        assert_eq!(Sampler::new(params(None, 1)).sample(&mut logits.clone(), &[]), 1);
        let draw = |seed| {
            let mut s = Sampler::new(params(Some(1.0), seed));
            (0..20).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).iter().all(|id| *id == 1 || *id == 2), "top-k/top-p keep only 1 and 2");
    }
}
