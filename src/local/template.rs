//! Chat formatting: the GGUF's `tokenizer.chat_template` (or a configured one) rendered with
//! minijinja the way HF `apply_chat_template` and llama.cpp's server do: `messages`,
//! `add_generation_prompt=true`, `bos_token`, `eos_token`, `raise_exception`, Python string
//! methods via minijinja-contrib's pycompat, and Jinja `trim_blocks`/`lstrip_blocks` on.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use super::{ChatMessage, LocalError};

/// Google's Gemma 3 instruction format (text-only part of the `chat_template` shipped with
/// google/gemma-3-*-it): no system role, so a system message is prefixed to the first user
/// turn; assistant turns are called `model`. Named `gemma` in config.
pub const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = \"\" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = \"model\" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}";

/// ChatML (`<|im_start|>role ... <|im_end|>`), used by SmolLM, Qwen and many fine-tunes.
/// Named `chatml` in config.
pub const CHATML_CHAT_TEMPLATE: &str = "{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";

/// Plain text completion for base models: BOS then the message contents back to back, no
/// roles and no generation prompt. Named `completion` in config.
pub const COMPLETION_TEMPLATE: &str =
    "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}";

/// Names `chat_template` may use instead of a template source.
pub const BUILTIN_TEMPLATES: &[(&str, &str)] =
    &[("gemma", GEMMA_CHAT_TEMPLATE), ("chatml", CHATML_CHAT_TEMPLATE), ("completion", COMPLETION_TEMPLATE)];

const TEMPLATE_NAME: &str = "chat";

pub fn builtin_names() -> String {
    BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// A compiled chat template with the model's special-token texts bound.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    model: String,
}

#[derive(Serialize)]
struct Ctx<'a> {
    messages: &'a [ChatMessage],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

impl ChatTemplate {
    /// `configured` (a built-in name or Jinja source) wins over the GGUF's template.
    pub fn new(
        model: &str,
        configured: Option<&str>,
        from_gguf: Option<&str>,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, LocalError> {
        let source = match configured {
            Some(c) => BUILTIN_TEMPLATES.iter().find(|(name, _)| *name == c).map_or(c, |(_, src)| *src),
            None => from_gguf
                .ok_or_else(|| LocalError::NoChatTemplate { model: model.to_string(), builtins: builtin_names() })?,
        };
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| LocalError::Template { model: model.to_string(), reason: format!("does not compile: {e}") })?;
        Ok(Self { env, bos_token, eos_token, model: model.to_string() })
    }

    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, LocalError> {
        let err = |e: minijinja::Error| LocalError::Template { model: self.model.clone(), reason: e.to_string() };
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(err)?;
        tmpl.render(Ctx {
            messages,
            add_generation_prompt: true,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
        })
        .map_err(err)
    }
}
