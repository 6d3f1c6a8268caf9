//! Tokenizers built from a GGUF's own `tokenizer.ggml.*` metadata (or a `tokenizer.json`
//! override), and incremental detokenization for streaming.
//!
//! Two GGUF vocabulary kinds are handled, matching llama.cpp `src/llama-vocab.cpp`:
//! - `gpt2`: byte-level BPE with explicit merges; the `tokenizer.ggml.pre` name picks the
//!   pre-tokenizer regexes (llama.cpp `llm_tokenizer_bpe`), never adding a prefix space.
//! - `llama`: SentencePiece BPE with scores and byte fallback (llama.cpp `llm_tokenizer_spm`).
//!   HF `tokenizers` has no score-driven BPE, so merges are derived from the scores the way
//!   HF's `SentencePieceExtractor` does: every split of a vocabulary piece into two pieces is a
//!   merge, ranked by the merged piece's score (higher merges first), which reproduces SPM's
//!   "merge the best-scoring adjacent pair" loop.
//!
//! Control tokens (type 3) become special added tokens, user-defined tokens (type 4) plain
//! added tokens matched in raw text, as llama.cpp does when it parses special tokens.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::LocalError;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Control tokens that end a turn in common chat formats. llama.cpp treats the same texts as
/// end-of-generation when the GGUF does not list them (`llama_vocab::impl::load`), since chat
/// templates end an assistant turn with them rather than with the file's EOS token.
const END_OF_TURN_TEXTS: &[&str] =
    &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end|>", "<|end_of_text|>", "</s>"];

/// Regexes per `tokenizer.ggml.pre`, copied from llama.cpp `llm_tokenizer_bpe` (each applied
/// in turn; byte-level mapping follows).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer plus the special tokens generation needs.
pub struct TokenizerBundle {
    pub tokenizer: Tokenizer,
    pub bos: Option<(u32, String)>,
    pub eos: Option<(u32, String)>,
    /// Whether the model expects BOS in front of every prompt (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end generation with finish_reason `stop`.
    pub stop_ids: Vec<u32>,
}

impl TokenizerBundle {
    /// Prompt ids for rendered chat text. Special-token text in the template (e.g.
    /// `<|im_start|>`) maps to its single id. BOS is prepended only when the model wants it and
    /// the template did not already render it (llama.cpp `common_chat_templates_apply` strips the
    /// duplicate the same way).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| e.to_string())?;
        let mut ids = enc.get_ids().to_vec();
        if let (true, Some((bos, _))) = (self.add_bos, &self.bos) {
            if ids.first() != Some(bos) {
                ids.insert(0, *bos);
            }
        }
        Ok(ids)
    }
}

fn md_strings<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<Vec<&'a str>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_string().ok().map(String::as_str)).collect()
}

fn md_i32s(md: &HashMap<String, Value>, key: &str) -> Option<Vec<i32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_i32().ok()).collect()
}

fn md_f32s(md: &HashMap<String, Value>, key: &str) -> Option<Vec<f32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_f32().ok()).collect()
}

fn md_u32(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    let v = md.get(key)?;
    v.to_u32().ok().or_else(|| v.to_i32().ok().map(|x| x as u32))
}

fn md_bool(md: &HashMap<String, Value>, key: &str) -> Option<bool> {
    md.get(key)?.to_bool().ok()
}

pub fn build(content: &Content, tokenizer_json: Option<&Path>, origin: &str) -> Result<TokenizerBundle, LocalError> {
    let md = &content.metadata;
    let err = |reason: String| LocalError::Tokenizer { origin: origin.to_string(), reason };
    let tokens = md_strings(md, "tokenizer.ggml.tokens");
    let model = md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok());
    let tokenizer = match tokenizer_json {
        Some(path) => Tokenizer::from_file(path).map_err(|e| err(format!("cannot load {}: {e}", path.display())))?,
        None => {
            let tokens = tokens
                .as_ref()
                .ok_or_else(|| err("GGUF has no `tokenizer.ggml.tokens`; configure `tokenizer`".into()))?;
            let types =
                md_i32s(md, "tokenizer.ggml.token_type").unwrap_or_else(|| vec![TOKEN_TYPE_NORMAL; tokens.len()]);
            let add_space_prefix = md_bool(md, "tokenizer.ggml.add_space_prefix");
            let mut tok = match model.map(String::as_str) {
                Some("gpt2") => {
                    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok());
                    gpt2_bpe(md, tokens, pre.map(String::as_str)).map_err(err)?
                }
                Some("llama") => {
                    let scores = md_f32s(md, "tokenizer.ggml.scores")
                        .ok_or_else(|| err("SentencePiece vocabulary without `tokenizer.ggml.scores`".into()))?;
                    // SentencePiece's default is to add the dummy prefix; Gemma turns it off.
                    sentencepiece_bpe(tokens, &scores, &types, add_space_prefix.unwrap_or(true)).map_err(err)?
                }
                other => {
                    return Err(err(format!(
                        "vocabulary type {other:?} is not supported (gpt2 and llama are); configure `tokenizer`"
                    )))
                }
            };
            add_gguf_added_tokens(&mut tok, tokens, &types);
            tok
        }
    };
    let token_text = |id: u32| -> Option<String> {
        tokens.as_ref().and_then(|t| t.get(id as usize).map(|s| s.to_string())).or_else(|| tokenizer.id_to_token(id))
    };
    let bos = md_u32(md, "tokenizer.ggml.bos_token_id").and_then(|id| token_text(id).map(|t| (id, t)));
    let eos = md_u32(md, "tokenizer.ggml.eos_token_id").and_then(|id| token_text(id).map(|t| (id, t)));
    let add_bos = md_bool(md, "tokenizer.ggml.add_bos_token")
        // llama.cpp: SentencePiece vocabularies add BOS unless told otherwise, BPE ones do not.
        .unwrap_or(model.map(String::as_str) == Some("llama"));
    let mut stop_ids: Vec<u32> = Vec::new();
    stop_ids.extend(eos.as_ref().map(|(id, _)| *id));
    stop_ids.extend(md_u32(md, "tokenizer.ggml.eot_token_id"));
    stop_ids.extend(md_u32(md, "tokenizer.ggml.eom_token_id"));
    for text in END_OF_TURN_TEXTS {
        if let Some(id) = tokenizer.token_to_id(text) {
            stop_ids.push(id);
        }
    }
    stop_ids.sort_unstable();
    stop_ids.dedup();
    Ok(TokenizerBundle { tokenizer, bos, eos, add_bos, stop_ids })
}

fn vocab_map(tokens: &[&str]) -> HashMap<String, u32> {
    let mut vocab = HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        // First occurrence wins if a (broken) file repeats a piece.
        vocab.entry((*t).to_string()).or_insert(id as u32);
    }
    vocab
}

fn gpt2_bpe(md: &HashMap<String, Value>, tokens: &[&str], pre: Option<&str>) -> Result<Tokenizer, String> {
    let merges =
        md_strings(md, "tokenizer.ggml.merges").ok_or("byte-level BPE vocabulary without `tokenizer.ggml.merges`")?;
    let merges: Vec<(String, String)> =
        merges.iter().filter_map(|m| m.split_once(' ')).map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens).into_iter().collect::<Vocab>(), merges)
        .build()
        .map_err(|e| format!("invalid BPE vocabulary: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let split = |re: &str| -> Result<PreTokenizerWrapper, String> {
        Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)
            .map(PreTokenizerWrapper::Split)
            .map_err(|e| e.to_string())
    };
    let byte_level_plain = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false));
    let byte_level_gpt2 = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let pre_tokenizer = match pre.unwrap_or("default") {
        // llama.cpp groups these: single digits first, then the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            PreSequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), byte_level_gpt2])
        }
        "llama-bpe" | "llama3" | "falcon3" => PreSequence::new(vec![split(LLAMA3_REGEX)?, byte_level_plain]),
        "qwen2" | "deepseek-r1-qwen" => PreSequence::new(vec![split(QWEN2_REGEX)?, byte_level_plain]),
        "gpt-2" | "gpt2" | "default" => PreSequence::new(vec![split(GPT2_REGEX)?, byte_level_plain]),
        other => {
            tracing::warn!(pre = other, "Unknown `tokenizer.ggml.pre`; using the GPT-2 pre-tokenizer.");
            PreSequence::new(vec![split(GPT2_REGEX)?, byte_level_plain])
        }
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevel::default()));
    Ok(tok)
}

fn sentencepiece_bpe(
    tokens: &[&str],
    scores: &[f32],
    types: &[i32],
    add_space_prefix: bool,
) -> Result<Tokenizer, String> {
    if scores.len() != tokens.len() {
        return Err(format!("{} scores for {} tokens", scores.len(), tokens.len()));
    }
    let vocab = vocab_map(tokens);
    let mut merges: Vec<(f32, u32, &str, &str)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types.get(id).copied().unwrap_or(TOKEN_TYPE_NORMAL) != TOKEN_TYPE_NORMAL {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((scores[id], id as u32, left, right));
            }
        }
    }
    // Higher score merges first; ties by id so the order is deterministic.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges: Vec<(String, String)> = merges.into_iter().map(|(_, _, l, r)| (l.to_string(), r.to_string())).collect();
    let mut builder =
        BPE::builder().vocab_and_merges(vocab.clone().into_iter().collect::<Vocab>(), merges).byte_fallback(true);
    if vocab.contains_key("<unk>") {
        builder = builder.unk_token("<unk>".into()).fuse_unk(true);
    }
    let bpe = builder.build().map_err(|e| format!("invalid SentencePiece vocabulary: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let space = Replace::new(" ", "\u{2581}").map_err(|e| e.to_string())?;
    let unspace = Replace::new("\u{2581}", " ").map_err(|e| e.to_string())?;
    let mut decoders = vec![
        DecoderWrapper::Replace(unspace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        tok.with_normalizer(Some(tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("\u{2581}".into()).into(),
            space.into(),
        ])));
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    } else {
        tok.with_normalizer(Some(space));
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

fn add_gguf_added_tokens(tok: &mut Tokenizer, tokens: &[&str], types: &[i32]) {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        match types.get(id).copied() {
            Some(TOKEN_TYPE_CONTROL) => special.push(AddedToken::from(*t, true)),
            Some(TOKEN_TYPE_USER_DEFINED) => user.push(AddedToken::from(*t, false).normalized(false)),
            _ => {}
        }
    }
    tok.add_special_tokens(&special);
    tok.add_tokens(&user);
}

/// Turns generated ids into text deltas that are always whole UTF-8 characters.
///
/// Same scheme as text-generation-inference's `decode_token`: decode a short window of recent
/// ids twice (without and with the newest id) and emit the difference once it no longer ends
/// in U+FFFD, i.e. once a multi-byte character split over byte-fallback or byte-level tokens is
/// complete. Decoding a window rather than one id keeps context-dependent decoders (leading
/// spaces, byte fusion) right; the deltas concatenate to `decode(all ids)`.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>, String> {
        self.ids.push(id);
        let prefix =
            tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true).map_err(|e| e.to_string())?;
        let full = tokenizer.decode(&self.ids[self.prefix_offset..], true).map_err(|e| e.to_string())?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(delta) = full.get(prefix.len()..).filter(|_| full.starts_with(&prefix)) {
                let delta = delta.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                return Ok(Some(delta));
            }
        }
        Ok(None)
    }

    /// Whatever is still held back when generation ends. Trailing bytes of a character the
    /// model never finished are dropped rather than emitted as U+FFFD, so a delta is never a
    /// broken character.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>, String> {
        let prefix =
            tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true).map_err(|e| e.to_string())?;
        let full = tokenizer.decode(&self.ids[self.prefix_offset..], true).map_err(|e| e.to_string())?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full
            .get(prefix.len()..)
            .filter(|d| !d.is_empty() && !d.ends_with('\u{FFFD}') && full.starts_with(&prefix))
            .map(str::to_string))
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
