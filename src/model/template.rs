//! Chat templates: turning messages into the text a local model reads.
//!
//! A GGUF carries its chat template (`tokenizer.chat_template`) as Jinja,
//! written for Python's jinja2 by the model's authors. We render it with
//! minijinja plus its Python-compatibility methods (`.strip()`,
//! `.startswith()`, …), the same way Hugging Face's tokenizers and
//! mistral.rs do, so both local engines see the same text for the same
//! messages. A GGUF without a template gets ChatML, the format of the
//! models we ship, and a warning in the log.
//!
//! [`ChatTemplate::system_prefix`] renders the system message alone: the
//! llama.cpp engine uses it to find where the part of a prompt that every
//! run shares (system prompt and tool list) ends, so that part's state can
//! be kept across processes.

use minijinja::{Environment, ErrorKind, context};

use super::gguf::{GgufMetadata, GgufValue};
use super::{ChatMessage, Role};

/// ChatML, for models that declare no template.
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A chat template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("the model's chat template cannot be rendered: {0}")]
pub struct TemplateError(String);

/// A model's chat template, ready to render.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// True when the GGUF had no template and ChatML stands in.
    pub fallback: bool,
}

impl ChatTemplate {
    /// The template of the GGUF described by `meta` (ChatML when it has none).
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self, TemplateError> {
        let token = |key: &str| -> String {
            let tokens = meta.tokens();
            meta.get(key)
                .and_then(GgufValue::as_u64)
                .and_then(|id| tokens.as_ref()?.get(usize::try_from(id).ok()?).copied())
                .unwrap_or_default()
                .to_string()
        };
        let (source, fallback) = match meta.chat_template() {
            Some(t) if !t.trim().is_empty() => (t.to_string(), false),
            _ => (CHATML.to_string(), true),
        };
        Self::new(
            source,
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
            fallback,
        )
    }

    /// A template from its Jinja source and the tokenizer's BOS/EOS strings.
    pub fn new(
        source: String,
        bos: String,
        eos: String,
        fallback: bool,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| {
            chrono::Local::now().format(&format).to_string()
        });
        env.add_template_owned("chat", source)
            .map_err(|e| TemplateError(e.to_string()))?;
        Ok(Self {
            env,
            bos,
            eos,
            fallback,
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened
    /// when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let messages: Vec<_> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                context! { role => role, content => m.content }
            })
            .collect();
        self.env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => self.bos,
                    eos_token => self.eos,
                })
            })
            .map_err(|e| TemplateError(format!("{e:#}")))
    }

    /// The rendered system message alone (no generation prompt), when the
    /// conversation starts with one.
    pub fn system_prefix(&self, messages: &[ChatMessage]) -> Option<String> {
        let first = messages.first().filter(|m| m.role == Role::System)?;
        self.render(std::slice::from_ref(first), false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::testing::{V, header};

    fn qwen_like() -> ChatTemplate {
        // The shape of Qwen2.5's template: Python string methods, a default
        // system message, loop variables.
        let source = r#"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'].strip() + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"#;
        ChatTemplate::new(source.into(), String::new(), "<|im_end|>".into(), false).unwrap()
    }

    #[test]
    fn renders_python_style_templates_and_the_generation_prompt() {
        let t = qwen_like();
        let text = t
            .render(
                &[ChatMessage::system(" Be brief. "), ChatMessage::user("hi")],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn the_system_prefix_is_a_prefix_of_every_prompt_that_starts_with_it() {
        let t = qwen_like();
        let system = ChatMessage::system("Tools: a, b");
        let prefix = t.system_prefix(std::slice::from_ref(&system)).unwrap();
        for goal in ["one", "two, longer"] {
            let full = t
                .render(&[system.clone(), ChatMessage::user(goal)], true)
                .unwrap();
            assert!(full.starts_with(&prefix), "{full:?} / {prefix:?}");
        }
        assert!(t.system_prefix(&[ChatMessage::user("no system")]).is_none());
    }

    #[test]
    fn a_gguf_without_a_template_gets_chatml_and_raise_exception_is_an_error() {
        let meta = GgufMetadata::read(
            &header(&[("general.architecture", V::Str("llama"))])[..],
            "t",
        )
        .unwrap();
        let t = ChatTemplate::from_gguf(&meta).unwrap();
        assert!(t.fallback);
        assert_eq!(
            t.render(&[ChatMessage::user("x")], true).unwrap(),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
        let strict = ChatTemplate::new(
            "{{ raise_exception('roles must alternate') }}".into(),
            String::new(),
            String::new(),
            false,
        )
        .unwrap();
        let e = strict.render(&[], true).unwrap_err().to_string();
        assert!(e.contains("roles must alternate"), "{e}");
    }
}
