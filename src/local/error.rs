//! The local-expert boundary's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is not a readable GGUF model: {source}")]
    Gguf {
        origin: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{origin}: GGUF metadata `{key}` is {problem}")]
    Metadata { origin: String, key: &'static str, problem: String },
    #[error("{origin}: architecture `{arch}` is not supported (supported: llama, mistral, qwen2, gemma3)")]
    UnsupportedArch { origin: String, arch: String },
    #[error("{origin}: failed to load weights: {source}")]
    Load {
        origin: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("tokenizer for {origin}: {reason}")]
    Tokenizer { origin: String, reason: String },
    #[error(
        "model {model} has no `tokenizer.chat_template` in its GGUF and no `chat_template` is \
         configured; set `chat_template` to a Jinja template or to a built-in name ({builtins})"
    )]
    NoChatTemplate { model: String, builtins: String },
    #[error("chat template of {model}: {reason}")]
    Template { model: String, reason: String },
    #[error("invalid local expert config: `{key}` {reason}")]
    Config { key: &'static str, reason: String },
    #[error("device `{device}`: {reason}")]
    Device { device: String, reason: String },
    #[error("invalid request: `{param}` {reason}")]
    InvalidRequest { param: &'static str, reason: String },
    #[error("prompt of {prompt_tokens} tokens does not fit the context of {context_length} tokens (at least one token must be left to generate)")]
    PromptTooLong { prompt_tokens: usize, context_length: usize },
    #[error("local expert {model} queue is full ({limit} waiting)")]
    QueueFull { model: String, limit: usize },
    #[error("local expert {model}: tenant {tenant} already has {limit} requests waiting (its share of the queue)")]
    TenantQueueFull { model: String, tenant: String, limit: usize },
    #[error("local expert {model} worker has stopped")]
    WorkerGone { model: String },
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}
