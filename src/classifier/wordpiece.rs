//! A fast path for BERT's uncased WordPiece on ASCII text, giving exactly the ids of the
//! `tokenizers` pipeline it replaces (`BertNormalizer` with cleaning and lower-casing,
//! `BertPreTokenizer`, `WordPiece`), which stays the path for everything else.
//!
//! Why: stage 1 tokenizes every routed prompt (up to 768 bytes from each end) for its
//! static embedding, and `tokenizers` keeps an alignment entry per character through
//! normalization and allocates per word and per sub-word attempt: ~0.4 µs a byte on a
//! 2-core AVX2 EPYC, 80 % of stage 1's time (see `bench/classifier/README.md`).
//!
//! What the pipeline does to ASCII text, step by step (`tokenizers` 0.22: `normalizers/
//! bert.rs`, `pre_tokenizers/bert.rs`, `models/wordpiece/mod.rs`):
//! - cleaning drops NUL and control characters (`\t`, `\n`, `\r` excepted) and turns
//!   whitespace into spaces; accent stripping and CJK spacing change no ASCII character;
//!   then lower-casing;
//! - pre-tokenization splits on whitespace (dropped) and isolates every ASCII punctuation
//!   character;
//! - WordPiece: a word longer than `max_input_chars_per_word` is one `[UNK]`; otherwise
//!   greedy longest match from the left, later pieces looked up with the `##` prefix, and
//!   a word with an unmatched rest becomes one `[UNK]`.
//!
//! Text that is not ASCII, or that contains an added token's text (such as `[SEP]`, which
//! the pipeline matches before normalizing), takes the `tokenizers` path; so does every
//! tokenizer whose pipeline is not the one above. A test holds both paths to the same ids.

use std::collections::HashMap;

use tokenizers::{ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

/// The WordPiece vocabulary of a BERT-uncased tokenizer, for ASCII input.
pub struct FastWordPiece {
    /// Every token, for a word's first piece.
    first: HashMap<String, u32>,
    /// Tokens that start with the continuing prefix, keyed without it.
    rest: HashMap<String, u32>,
    unk: u32,
    max_word: usize,
    /// Added tokens' text, lower-cased: input holding one takes the slow path.
    added: Vec<String>,
}

impl FastWordPiece {
    /// The fast path for `tokenizer`, or `None` when its pipeline is not the one this
    /// module reproduces.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        match tokenizer.get_normalizer()? {
            NormalizerWrapper::BertNormalizer(n) if n.clean_text && n.lowercase => {}
            _ => return None,
        }
        if !matches!(tokenizer.get_pre_tokenizer()?, PreTokenizerWrapper::BertPreTokenizer(_)) {
            return None;
        }
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else { return None };
        let vocab = tokenizers::Model::get_vocab(model);
        let unk = *vocab.get(&model.unk_token)?;
        let prefix = model.continuing_subword_prefix.as_str();
        let rest = vocab
            .iter()
            .filter_map(|(k, &id)| k.strip_prefix(prefix).filter(|r| !r.is_empty()).map(|r| (r.to_string(), id)))
            .collect();
        let added = tokenizer.get_added_tokens_decoder().values().map(|t| t.content.to_ascii_lowercase()).collect();
        Some(Self { first: vocab.into_iter().collect(), rest, unk, max_word: model.max_input_chars_per_word, added })
    }

    /// The ids of `text`, or `None` when the text must take the `tokenizers` path.
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        if !text.is_ascii() {
            return None;
        }
        let mut norm = Vec::with_capacity(text.len());
        for b in text.bytes() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => norm.push(b' '),
                0..=0x1f | 0x7f => {}
                _ => norm.push(b.to_ascii_lowercase()),
            }
        }
        if !self.added.is_empty() {
            // Special tokens are matched in the raw text, others in the normalized one.
            let (lower, normalized) = (text.to_ascii_lowercase(), String::from_utf8_lossy(&norm));
            if self.added.iter().any(|a| lower.contains(a.as_str()) || normalized.contains(a.as_str())) {
                return None;
            }
        }
        let mut ids = Vec::with_capacity(norm.len() / 3 + 1);
        let mut word_start = None;
        for (i, &b) in norm.iter().enumerate() {
            if b == b' ' || b.is_ascii_punctuation() {
                if let Some(s) = word_start.take() {
                    self.word(&norm[s..i], &mut ids);
                }
                if b != b' ' {
                    self.word(&norm[i..=i], &mut ids);
                }
            } else {
                word_start.get_or_insert(i);
            }
        }
        if let Some(s) = word_start {
            self.word(&norm[s..], &mut ids);
        }
        Some(ids)
    }

    /// Appends the pieces of one pre-tokenized ASCII word.
    fn word(&self, word: &[u8], ids: &mut Vec<u32>) {
        if word.len() > self.max_word {
            ids.push(self.unk);
            return;
        }
        let mark = ids.len();
        let mut start = 0;
        while start < word.len() {
            let map = if start == 0 { &self.first } else { &self.rest };
            // ASCII, so every byte range is a str; `from_utf8` only proves it.
            let found = (start + 1..=word.len())
                .rev()
                .find_map(|end| Some((end, *map.get(std::str::from_utf8(&word[start..end]).ok()?)?)));
            match found {
                Some((end, id)) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(mark);
                    ids.push(self.unk);
                    return;
                }
            }
        }
    }
}
