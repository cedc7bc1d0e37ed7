//! Model backends: one trait, four implementations (in-process llama.cpp
//! and mistral.rs, OpenAI-compatible HTTP, scripted replay), and the model
//! references and cache that say which one a run uses.
//!
//! The agent only sees [`ModelBackend`]: messages in, streamed tokens and a
//! final [`Completion`] out, an optional JSON-schema constraint, a
//! cancellation token, and semantic [`ModelError`]s. Each backend maps its
//! engine's errors at this boundary, so an engine upgrade stays local.

pub mod gguf;
pub mod llamacpp;
pub mod local;
pub mod lora;
pub mod mistralrs;
pub mod open;
pub mod openai;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod roles;
pub mod scripted;
pub mod template;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// When set, the output must be a JSON value matching this schema
    /// (enforced by the engine where it can, checked by the caller anyway).
    pub json_schema: Option<serde_json::Value>,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.prompt_tokens += rhs.prompt_tokens;
        self.completion_tokens += rhs.completion_tokens;
    }
}

/// The finished output of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The whole generated text.
    pub text: String,
    pub usage: Usage,
}

/// Receives text fragments as the model writes them.
pub type TokenSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A model failure, by meaning rather than by engine.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the prompt ({requested} tokens) does not fit the model's context ({limit} tokens)")]
    ContextTooLong { limit: usize, requested: usize },
    #[error("model not found: {0}")]
    ModelNotFound(String),
    #[error(
        "cannot reach the model endpoint {url}: {reason}. Is the server running? Check --endpoint"
    )]
    EndpointUnreachable { url: String, reason: String },
    #[error("rate limited by the model endpoint{}", retry_after_secs.map(|s| format!(" (retry after {s} s)")).unwrap_or_default())]
    RateLimited { retry_after_secs: Option<u64> },
    #[error("the model endpoint answered with an error or an unreadable response: {0}")]
    BadResponse(String),
    #[error("the model call timed out after {0} s")]
    Timeout(u64),
    #[error(
        "the scripted model has no more responses (it replayed {0}); add responses to the script"
    )]
    ScriptExhausted(usize),
    #[error("cannot load the model: {0}")]
    Load(String),
    #[error("model engine error: {0}")]
    Engine(String),
    #[error("cancelled")]
    Cancelled,
}

/// A language model the agent can ask.
#[async_trait]
pub trait ModelBackend: Send + Sync {
    /// A short label for transcripts and the journal (`smollm2-135m`, `scripted:demo.yaml`).
    fn name(&self) -> &str;

    /// Get ready to answer: a model opened on first use ([`roles::Lazy`])
    /// pulls and loads here, so that the caller can keep that out of the
    /// time limit of a call. Others are always ready.
    async fn ready(&self, _cancel: &CancellationToken) -> Result<(), ModelError> {
        Ok(())
    }

    /// Generate one completion, calling `on_token` with each fragment as it
    /// comes, and stopping early when `cancel` fires.
    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError>;

    /// Tokens in `text` by the model's own tokenizer, where the backend has one.
    fn count_tokens(&self, _text: &str) -> Option<usize> {
        None
    }

    /// The model's context window in tokens, where known.
    fn context_length(&self) -> Option<usize> {
        None
    }
}

/// Per-message allowance for chat-template tokens, when counting a prompt.
pub const MESSAGE_OVERHEAD: usize = 8;

/// Count tokens with the backend's tokenizer, or estimate (about four bytes a
/// token for English) where it has none.
pub fn count_tokens(model: &dyn ModelBackend, text: &str) -> usize {
    model
        .count_tokens(text)
        .unwrap_or_else(|| text.len().div_ceil(4))
}
