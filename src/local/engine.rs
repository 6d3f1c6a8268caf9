//! One loaded model and its generation loop. Lives on the expert's worker thread only.

use std::io::{Cursor, Read, Seek};
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Device;

use super::models::{gemma3, llama, qwen2, GgufSource, LanguageModel, Tensors};
use super::prepared::Prepared;
use super::sampling::{Sampler, SamplingParams, StopMatcher, StopOutcome};
use super::template::ChatTemplate;
use super::tokenizer::{self, StreamDecoder, TokenizerBundle};
use super::{Arch, FinishReason, GenRequest, LocalConfig, LocalError, ModelInfo};

/// Context used when neither the config nor the GGUF says: Llama 2's length.
const FALLBACK_CONTEXT_LENGTH: usize = 4096;
/// Default cap on the context the RoPE tables and KV cache are sized for. The GGUFs here
/// advertise 8k and 32k; on a two-core CPU attention over more than a few thousand tokens is
/// too slow to serve anyway, and the cap keeps per-expert memory predictable.
pub const DEFAULT_MAX_CONTEXT: usize = 8192;
/// Prompt tokens per forward pass. Bounds the (chunk x context) attention scores and lets a
/// cancelled request stop between chunks of a long prompt.
const PREFILL_CHUNK: usize = 512;

/// Where the GGUF bytes come from.
pub enum Source<'a> {
    File(&'a std::path::Path),
    Bytes(&'a [u8]),
}

pub struct Engine {
    model: Box<dyn LanguageModel>,
    /// Shared with the warm tier's [`Prepared`] copy, if any: both are immutable.
    pub tok: Arc<TokenizerBundle>,
    template: Arc<ChatTemplate>,
    pub info: ModelInfo,
}

/// What a model needs beside its weights, all built from the GGUF header (metadata):
/// device-independent, so the warm tier keeps it.
pub struct Header {
    pub arch: Arch,
    pub context_length: usize,
    pub tok: Arc<TokenizerBundle>,
    pub template: Arc<ChatTemplate>,
    /// Computed once: `Tokenizer::get_vocab_size(true)` clones the whole vocabulary (tens of
    /// milliseconds for Gemma's 262k entries), too slow to repeat on every promotion.
    pub vocab_size: usize,
}

impl Header {
    pub fn read(name: &str, cfg: &LocalConfig, origin: &str, content: &gguf_file::Content) -> Result<Self, LocalError> {
        let md_str = |key: &str| content.metadata.get(key).and_then(|v| v.to_string().ok());
        let arch = match cfg.arch {
            Some(a) => a,
            None => {
                let raw = md_str("general.architecture").ok_or_else(|| LocalError::Metadata {
                    origin: origin.to_string(),
                    key: "general.architecture",
                    problem: "missing (set `arch` in the config)".into(),
                })?;
                Arch::from_gguf(raw)
                    .ok_or_else(|| LocalError::UnsupportedArch { origin: origin.to_string(), arch: raw.clone() })?
            }
        };
        let gguf_ctx = arch
            .metadata_prefix()
            .and_then(|p| content.metadata.get(&format!("{p}.context_length")))
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize);
        let context_length =
            cfg.context_length.unwrap_or_else(|| gguf_ctx.unwrap_or(FALLBACK_CONTEXT_LENGTH).min(DEFAULT_MAX_CONTEXT));
        let tok = tokenizer::build(content, cfg.tokenizer.as_deref(), origin)?;
        let template = ChatTemplate::new(
            name,
            cfg.chat_template.as_deref(),
            md_str("tokenizer.chat_template").map(String::as_str),
            tok.bos.as_ref().map(|b| b.1.clone()).unwrap_or_default(),
            tok.eos.as_ref().map(|b| b.1.clone()).unwrap_or_default(),
        )?;
        let vocab_size = tok.tokenizer.get_vocab_size(true);
        Ok(Self { arch, context_length, tok: Arc::new(tok), template: Arc::new(template), vocab_size })
    }
}

/// The architecture's model from `src`'s weights.
fn build_model<R: Read + Seek>(
    arch: Arch,
    src: &mut GgufSource<'_, R>,
    origin: &str,
) -> Result<Box<dyn LanguageModel>, LocalError> {
    let load_err = |source| LocalError::Load { origin: origin.to_string(), source };
    Ok(match arch {
        Arch::Llama => Box::new(llama::Model::load(src, "llama", true).map_err(load_err)?),
        Arch::Qwen2 => Box::new(qwen2::load(src).map_err(load_err)?),
        Arch::Gemma3 => Box::new(gemma3::Model::load(src).map_err(load_err)?),
    })
}

pub struct Outcome {
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Generated ids (the stop token excluded).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by tests to compare streamed text with a full decode"))]
    pub ids: Vec<u32>,
}

/// Why generation ended early.
pub enum Abort {
    /// The consumer went away (client disconnected).
    Cancelled,
    Failed(LocalError),
}

impl From<LocalError> for Abort {
    fn from(e: LocalError) -> Self {
        Abort::Failed(e)
    }
}

impl From<candle_core::Error> for Abort {
    fn from(e: candle_core::Error) -> Self {
        Abort::Failed(LocalError::Inference(e))
    }
}

pub fn parse_device(spec: &str) -> Result<Device, LocalError> {
    let err = |reason: String| LocalError::Device { device: spec.to_string(), reason };
    match spec.split_once(':') {
        None if spec == "cpu" => Ok(Device::Cpu),
        Some(("cuda", n)) => {
            let n: usize = n.parse().map_err(|_| err("expected `cuda:N` with N a GPU index".into()))?;
            if cfg!(feature = "cuda") {
                Device::new_cuda(n).map_err(|e| err(e.to_string()))
            } else {
                Err(err("this binary was built without the `cuda` cargo feature".into()))
            }
        }
        _ => Err(err("expected `cpu` or `cuda:N`".into())),
    }
}

impl Engine {
    pub fn load(name: &str, cfg: &LocalConfig, source: Source<'_>) -> Result<Self, LocalError> {
        let started = Instant::now();
        let device = parse_device(&cfg.device)?;
        let origin = match &source {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(b) => format!("in-memory GGUF for {name} ({} bytes)", b.len()),
        };
        let (engine, bytes_on_disk) = match source {
            Source::File(path) => {
                let file =
                    std::fs::File::open(path).map_err(|source| LocalError::Io { path: path.to_path_buf(), source })?;
                let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
                let mut reader = std::io::BufReader::new(file);
                (Self::load_from(name, cfg, &origin, &mut reader, &device)?, len)
            }
            Source::Bytes(bytes) => {
                let mut reader = Cursor::new(bytes);
                (Self::load_from(name, cfg, &origin, &mut reader, &device)?, bytes.len())
            }
        };
        let mut engine = engine;
        engine.info.file_bytes = bytes_on_disk;
        engine.info.load_time = started.elapsed();
        Ok(engine)
    }

    fn load_from<R: Read + Seek>(
        name: &str,
        cfg: &LocalConfig,
        origin: &str,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self, LocalError> {
        let content = gguf_file::Content::read(reader)
            .map_err(|source| LocalError::Gguf { origin: origin.to_string(), source })?;
        let header = Header::read(name, cfg, origin, &content)?;
        let mut src = GgufSource {
            content: &content,
            tensors: Tensors::File { reader, format: cfg.weights },
            device,
            context_length: header.context_length,
            params: 0,
            bytes: 0,
        };
        let model = build_model(header.arch, &mut src, origin)?;
        let (params, bytes) = (src.params, src.bytes);
        Ok(Self::assemble(model, header, cfg, params, bytes))
    }

    fn assemble(model: Box<dyn LanguageModel>, header: Header, cfg: &LocalConfig, params: usize, bytes: usize) -> Self {
        let info = ModelInfo {
            arch: header.arch,
            params,
            bytes,
            file_bytes: 0,
            context_length: header.context_length,
            weights: cfg.weights,
            vocab_size: header.vocab_size,
            load_time: Default::default(),
        };
        Self { model, tok: header.tok, template: header.template, info }
    }

    /// Builds the model from a warm [`Prepared`] copy: no file I/O, no parsing, no tokenizer
    /// or template build, no dequantization. On the CPU the weights are shared with `p`
    /// (reference counts); on another device they are copied there.
    pub fn from_prepared(name: &str, cfg: &LocalConfig, p: &Prepared) -> Result<Self, LocalError> {
        let started = Instant::now();
        let device = parse_device(&cfg.device)?;
        let origin = format!("prepared GGUF for {name}");
        let mut src = GgufSource::<Cursor<&[u8]>> {
            content: &p.content,
            tensors: Tensors::Host(&p.weights),
            device: &device,
            context_length: p.header.context_length,
            params: 0,
            bytes: 0,
        };
        let model = build_model(p.header.arch, &mut src, &origin)?;
        let header = Header {
            arch: p.header.arch,
            context_length: p.header.context_length,
            tok: Arc::clone(&p.header.tok),
            template: Arc::clone(&p.header.template),
            vocab_size: p.header.vocab_size,
        };
        let (params, bytes) = (src.params, src.bytes);
        let mut engine = Self::assemble(model, header, cfg, params, bytes);
        engine.info.file_bytes = p.file_bytes;
        engine.info.load_time = started.elapsed();
        Ok(engine)
    }

    /// Renders and tokenizes the chat prompt (or takes a text completion's prompt as it is)
    /// exactly as generation will.
    pub fn prompt_ids(&self, req: &GenRequest) -> Result<Vec<u32>, LocalError> {
        let rendered;
        let text = match &req.prompt {
            Some(p) => p.as_str(),
            None => {
                rendered = self.template.render(&req.messages)?;
                rendered.as_str()
            }
        };
        self.tok
            .encode_prompt(text)
            .map_err(|reason| LocalError::Tokenizer { origin: self.info.arch.to_string(), reason })
    }

    /// Runs one request. `emit` receives text deltas (whole UTF-8 characters, stop strings
    /// removed) and returns false when the consumer is gone; `alive` is polled before every
    /// forward pass so an abandoned request stops within one token.
    pub fn generate(
        &mut self,
        req: &GenRequest,
        mut emit: impl FnMut(&str) -> bool,
        alive: impl Fn() -> bool,
    ) -> Result<Outcome, Abort> {
        let prompt = self.prompt_ids(req)?;
        let ctx = self.info.context_length;
        if prompt.len() >= ctx {
            return Err(LocalError::PromptTooLong { prompt_tokens: prompt.len(), context_length: ctx }.into());
        }
        let room = ctx - prompt.len();
        let max_new = req.max_tokens.map_or(room, |m| (m as usize).min(room));
        let mut sampler = Sampler::new(SamplingParams {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            seed: req.seed.unwrap_or_else(rand::random),
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
            repetition_penalty: req.repetition_penalty,
        });
        let mut stops = StopMatcher::new(&req.stop);
        let mut decoder = StreamDecoder::default();
        let mut context = prompt.clone();
        let prompt_tokens = prompt.len() as u32;
        let mut completion_tokens = 0u32;

        self.model.reset();
        let mut logits = None;
        for (i, chunk) in prompt.chunks(PREFILL_CHUNK).enumerate() {
            if !alive() {
                return Err(Abort::Cancelled);
            }
            logits = Some(self.model.forward(chunk, i * PREFILL_CHUNK)?);
        }
        let mut logits = logits.ok_or_else(|| {
            Abort::Failed(LocalError::InvalidRequest { param: "messages", reason: "render to an empty prompt".into() })
        })?;

        let finish_reason = loop {
            if max_new == 0 {
                break FinishReason::Length;
            }
            let mut l = logits.to_vec1::<f32>()?;
            let id = sampler.sample(&mut l, &context);
            completion_tokens += 1;
            if self.tok.stop_ids.contains(&id) {
                break FinishReason::Stop;
            }
            context.push(id);
            let piece = decoder.push(&self.tok.tokenizer, id).map_err(|reason| self.tok_err(reason))?;
            if let Some(piece) = piece {
                match stops.push(&piece) {
                    StopOutcome::Continue(t) => {
                        if !t.is_empty() && !emit(&t) {
                            return Err(Abort::Cancelled);
                        }
                    }
                    StopOutcome::Stopped(t) => {
                        if !t.is_empty() && !emit(&t) {
                            return Err(Abort::Cancelled);
                        }
                        return Ok(Outcome {
                            finish_reason: FinishReason::Stop,
                            prompt_tokens,
                            completion_tokens,
                            ids: decoder.ids().to_vec(),
                        });
                    }
                }
            }
            if completion_tokens as usize >= max_new {
                break FinishReason::Length;
            }
            if !alive() {
                return Err(Abort::Cancelled);
            }
            logits = self.model.forward(&[id], context.len() - 1)?;
        };
        // Flush what the decoder and the stop matcher were holding back.
        let tail = decoder.finish(&self.tok.tokenizer).map_err(|reason| self.tok_err(reason))?;
        let mut rest = String::new();
        if let Some(tail) = tail {
            match stops.push(&tail) {
                StopOutcome::Continue(t) => rest.push_str(&t),
                StopOutcome::Stopped(t) => {
                    if !t.is_empty() && !emit(&t) {
                        return Err(Abort::Cancelled);
                    }
                    return Ok(Outcome {
                        finish_reason: FinishReason::Stop,
                        prompt_tokens,
                        completion_tokens,
                        ids: decoder.ids().to_vec(),
                    });
                }
            }
        }
        rest.push_str(&stops.flush());
        if !rest.is_empty() && !emit(&rest) {
            return Err(Abort::Cancelled);
        }
        Ok(Outcome { finish_reason, prompt_tokens, completion_tokens, ids: decoder.ids().to_vec() })
    }

    fn tok_err(&self, reason: String) -> Abort {
        Abort::Failed(LocalError::Tokenizer { origin: self.info.arch.to_string(), reason })
    }
}
