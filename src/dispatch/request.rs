//! The parts of a request body the gateway reads. Everything else stays in `body` and
//! reaches the expert untouched (tools, response_format, logprobs, vendor extensions).

use serde_json::{Map, Value};

use crate::api::error::ApiError;
use crate::config::{Capability, Limits};

/// The OpenAI endpoint a generation request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`: `messages` in, `chat.completion` out.
    Chat,
    /// `POST /v1/completions`, OpenAI's legacy text completions: `prompt` in,
    /// `text_completion` out (code-completion plug-ins and evaluation harnesses use it).
    Completions,
}

impl Endpoint {
    /// The path under an expert's `base_url`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "chat/completions",
            Self::Completions => "completions",
        }
    }

    /// The body field that holds what the client asks about (and the `param` of errors
    /// about it).
    pub fn input_param(self) -> &'static str {
        match self {
            Self::Chat => "messages",
            Self::Completions => "prompt",
        }
    }

    /// What an expert must declare to be sent such a request.
    pub fn capability(self) -> Capability {
        match self {
            Self::Chat => Capability::Chat,
            Self::Completions => Capability::Completions,
        }
    }
}

/// A chat or a (legacy) text-completion request: the two differ in their input
/// (`messages` or `prompt`) and reply shape, and share everything the gateway does.
pub struct ChatRequest {
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub body: Map<String, Value>,
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::InvalidRequest { message: message.into(), param: Some(param.to_string()) }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => {
            Err(ApiError::InvalidRequest { message: "The request body must be a JSON object.".into(), param: None })
        }
        Err(e) => Err(ApiError::InvalidRequest {
            message: format!("We could not parse the JSON body of your request: {e}."),
            param: None,
        }),
    }
}

fn model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        None => Err(invalid("Missing required parameter: 'model'.", "model")),
        Some(v) => Err(invalid(
            format!("Invalid type for 'model': expected a non-empty string, got {}.", type_name(v)),
            "model",
        )),
    }
}

impl ChatRequest {
    /// A `POST /v1/chat/completions` body.
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        Self::from_object(parse_object(raw)?, Endpoint::Chat)
    }

    /// A `POST /v1/completions` body: `prompt` is a string, an array of strings, an array of
    /// token ids or an array of such arrays, as OpenAI takes it.
    pub fn parse_completion(raw: &[u8]) -> Result<Self, ApiError> {
        Self::from_object(parse_object(raw)?, Endpoint::Completions)
    }

    /// A body for either endpoint: a completion's when it has a `prompt` and no `messages`.
    pub fn parse_either(raw: &[u8]) -> Result<Self, ApiError> {
        let body = parse_object(raw)?;
        let completion = body.contains_key("prompt") && !body.contains_key("messages");
        Self::from_object(body, if completion { Endpoint::Completions } else { Endpoint::Chat })
    }

    fn from_object(body: Map<String, Value>, endpoint: Endpoint) -> Result<Self, ApiError> {
        let model = model(&body)?;
        match endpoint {
            Endpoint::Chat => check_messages(&body)?,
            Endpoint::Completions => check_prompt(&body)?,
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(invalid(
                    format!("Invalid type for 'stream': expected a boolean, got {}.", type_name(v)),
                    "stream",
                ))
            }
        };
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(invalid(
                        format!(
                            "Invalid type for 'stream_options.include_usage': expected a boolean, got {}.",
                            type_name(v)
                        ),
                        "stream_options.include_usage",
                    ))
                }
            },
            Some(v) => {
                return Err(invalid(
                    format!("Invalid type for 'stream_options': expected an object, got {}.", type_name(v)),
                    "stream_options",
                ))
            }
        };
        Ok(Self { endpoint, model, stream, include_usage, body })
    }

    /// Checks the configured `[limits]`; returns the prompt's length in characters (the
    /// basis of the token estimate).
    pub fn check_limits(&self, limits: &Limits) -> Result<usize, ApiError> {
        let messages = self.messages();
        if self.endpoint == Endpoint::Chat && messages.len() > limits.max_messages {
            return Err(out_of_bounds(
                format!(
                    "Invalid 'messages': array too long. Expected an array with maximum length {}, but got an array with length {} instead.",
                    limits.max_messages,
                    messages.len()
                ),
                "messages",
                "array_above_max_length",
            ));
        }
        for param in ["max_tokens", "max_completion_tokens"] {
            match self.body.get(param) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => match n.as_u64() {
                    // A completion that echoes its prompt with none generated scores the
                    // prompt (evaluation harnesses ask for its log probabilities so).
                    Some(0)
                        if self.endpoint == Endpoint::Completions
                            && self.body.get("echo") == Some(&Value::Bool(true)) => {}
                    // OpenAI's bound: a request for no tokens at all is a client mistake.
                    Some(0) => {
                        return Err(out_of_bounds(
                            format!(
                            "Invalid '{param}': integer below minimum value. Expected a value >= 1, but got 0 instead."
                        ),
                            param,
                            "integer_below_min_value",
                        ))
                    }
                    Some(v) if v <= limits.max_tokens => {}
                    Some(v) => {
                        return Err(out_of_bounds(
                            format!("Invalid '{param}': {v} is greater than the maximum of {}.", limits.max_tokens),
                            param,
                            "integer_above_max_value",
                        ))
                    }
                    None => {
                        return Err(invalid(
                            format!("Invalid '{param}': expected a non-negative integer, got {n}."),
                            param,
                        ))
                    }
                },
                Some(v) => {
                    return Err(invalid(
                        format!("Invalid type for '{param}': expected an integer, got {}.", type_name(v)),
                        param,
                    ))
                }
            }
        }
        let chars = match self.endpoint {
            Endpoint::Chat => prompt_chars(messages),
            Endpoint::Completions => self.input().map_or(0, text_chars),
        };
        if chars > limits.max_prompt_chars {
            return Err(prompt_too_long(chars, limits.max_prompt_chars, self.endpoint.input_param()));
        }
        Ok(chars)
    }

    /// Sets `stream_options.include_usage = true`, keeping any other stream options.
    pub fn request_usage(&mut self) {
        let opts = self.body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
        if !opts.is_object() {
            *opts = Value::Object(Map::new());
        }
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }

    /// sha256 of the messages JSON (or of a completion's `prompt`): its hex is the ledger's
    /// `prompt_hash`, its first 8 bytes place the request in traffic splits (the same
    /// prompt always lands on the same side).
    pub fn prompt_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        // A chat's validated `messages` array serializes as `messages()` did: same hashes.
        Sha256::digest(serde_json::to_vec(self.input().unwrap_or(&Value::Null)).unwrap_or_default()).into()
    }

    /// What the client asked about: the `messages` of a chat, the `prompt` of a completion.
    pub fn input(&self) -> Option<&Value> {
        self.body.get(self.endpoint.input_param())
    }

    /// The text a router classifies: the latest user turn with its context
    /// ([`crate::routing::prompt_text`]), or a completion's prompt (several prompts joined by
    /// blank lines; token ids have no text, so they read as an empty prompt, which the
    /// router's uncertainty rule sends to the fallback expert).
    pub fn routing_text(&self) -> String {
        match (self.endpoint, self.input()) {
            (Endpoint::Chat, _) => crate::routing::prompt_text(self.messages()),
            (Endpoint::Completions, Some(Value::String(s))) => s.clone(),
            (Endpoint::Completions, Some(Value::Array(items))) => {
                items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n\n")
            }
            (Endpoint::Completions, _) => String::new(),
        }
    }

    /// The split-placement hash: the digest's first 8 bytes.
    pub fn prompt_hash(&self) -> u64 {
        split_hash(&self.prompt_digest())
    }

    /// The chat messages (validated to be objects with a string `role`); none for a completion.
    pub fn messages(&self) -> &[Value] {
        if self.endpoint != Endpoint::Chat {
            return &[];
        }
        self.body.get("messages").and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }
}

/// `messages`: a non-empty array of objects with a string `role`.
fn check_messages(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.get("messages") {
        None => return Err(invalid("Missing required parameter: 'messages'.", "messages")),
        Some(Value::Array(msgs)) if msgs.is_empty() => {
            return Err(invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1.",
                "messages",
            ))
        }
        Some(Value::Array(msgs)) => {
            for (i, m) in msgs.iter().enumerate() {
                match m.get("role") {
                    Some(Value::String(_)) => {}
                    Some(v) => {
                        return Err(invalid(
                            format!("Invalid type for 'messages[{i}].role': expected a string, got {}.", type_name(v)),
                            &format!("messages[{i}].role"),
                        ))
                    }
                    None if m.is_object() => {
                        return Err(invalid(
                            format!("Missing required parameter: 'messages[{i}].role'."),
                            &format!("messages[{i}].role"),
                        ))
                    }
                    None => {
                        return Err(invalid(
                            format!("Invalid type for 'messages[{i}]': expected an object, got {}.", type_name(m)),
                            &format!("messages[{i}]"),
                        ))
                    }
                }
            }
        }
        Some(v) => {
            return Err(invalid(
                format!("Invalid type for 'messages': expected an array, got {}.", type_name(v)),
                "messages",
            ))
        }
    }
    Ok(())
}

/// `prompt`: a string, a non-empty array of strings, of token ids, or of non-empty arrays of
/// token ids.
fn check_prompt(body: &Map<String, Value>) -> Result<(), ApiError> {
    const EXPECTED: &str = "a string, an array of strings, an array of integers or an array of integer arrays";
    let token = |v: &Value| v.as_u64().is_some_and(|t| t <= u64::from(u32::MAX));
    match body.get("prompt") {
        None | Some(Value::Null) => Err(invalid("Missing required parameter: 'prompt'.", "prompt")),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(invalid("Invalid 'prompt': empty array. Expected an array with minimum length 1.", "prompt"))
        }
        Some(Value::Array(items)) => {
            let same_kind = items.iter().all(Value::is_string)
                || items.iter().all(token)
                || items.iter().all(|i| i.as_array().is_some_and(|t| !t.is_empty() && t.iter().all(token)));
            if same_kind {
                Ok(())
            } else {
                Err(invalid(format!("Invalid 'prompt': expected {EXPECTED}, with every item of one kind."), "prompt"))
            }
        }
        Some(v) => {
            Err(invalid(format!("Invalid type for 'prompt': expected {EXPECTED}, got {}.", type_name(v)), "prompt"))
        }
    }
}

/// The first 8 bytes of a prompt digest, big-endian.
pub fn split_hash(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

pub struct EmbeddingsRequest {
    pub model: String,
    pub body: Map<String, Value>,
}

impl EmbeddingsRequest {
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let body = parse_object(raw)?;
        let model = model(&body)?;
        match body.get("input") {
            None => return Err(invalid("Missing required parameter: 'input'.", "input")),
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(v) => {
                return Err(invalid(
                    format!("Invalid type for 'input': expected a string or an array, got {}.", type_name(v)),
                    "input",
                ))
            }
        }
        Ok(Self { model, body })
    }

    /// Checks the prompt-length limit; returns the input's length in characters.
    pub fn check_limits(&self, limits: &Limits) -> Result<usize, ApiError> {
        let chars = self.body.get("input").map_or(0, text_chars);
        if chars > limits.max_prompt_chars {
            return Err(prompt_too_long(chars, limits.max_prompt_chars, "input"));
        }
        Ok(chars)
    }
}

fn out_of_bounds(message: String, param: &str, code: &'static str) -> ApiError {
    ApiError::LimitExceeded { message, param: Some(param.to_string()), code }
}

fn prompt_too_long(chars: usize, limit: usize, param: &str) -> ApiError {
    out_of_bounds(
        format!("The prompt is {chars} characters long, more than this gateway's limit of {limit} characters."),
        param,
        "context_length_exceeded",
    )
}

/// Characters of text in the messages' contents (strings, or text parts of arrays).
fn prompt_chars(messages: &[Value]) -> usize {
    messages.iter().map(|m| m.get("content").map_or(0, text_chars)).sum()
}

/// Characters of every string inside `v`, at any depth (content parts, token arrays as text).
fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => o.values().map(text_chars).sum(),
        // A token id (a completion's or an embedding's prompt) stands for a token's text.
        Value::Number(_) => crate::auth::CHARS_PER_TOKEN as usize,
        Value::Null | Value::Bool(_) => 0,
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
