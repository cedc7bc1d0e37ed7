//! The mistral.rs engine: a GGUF model run in-process by mistral.rs, the
//! default with CUDA (`--features cuda`) and available on CPU with
//! `engine: mistral.rs` (llama.cpp is the CPU default: see [`super::local`]).
//!
//! Decisions:
//! - The model is loaded once ([`MistralRsBackend::load`]) and the backend object
//!   owns it; the agent keeps that object across steps and goals, so
//!   mistral.rs's prefix cache lets a step re-process only its new tokens.
//! - Stop tokens are derived from the GGUF's tokenizer metadata (EOS, the
//!   end-of-text token, the chat template's end-of-turn token) and sent with
//!   every request. Measured on SmolLM2 with mistral.rs 0.8.1: after a
//!   constrained object is complete the grammar only allows `<|endoftext|>`,
//!   which is not the GGUF's EOS, so without this every step ran on to the
//!   token limit (13 s instead of 3).
//! - With a schema, `Constraint::JsonSchema` (llguidance) makes the output
//!   valid JSON of that schema; `"x-guidance": {"whitespace_flexible": false}`
//!   makes it compact, so an action costs fewer tokens.
//! - The GGUF header is read by our own reader first: unsupported
//!   architectures get a clear message before any weights are touched, and
//!   the context length is known without asking the engine.
//! - `count_tokens` uses the engine's own tokenizer (the trait method is
//!   synchronous; the engine runs on its own thread, so we wait for it on a
//!   short-lived helper thread outside any async runtime). A round trip
//!   costs about 1.5 ms here, so counts are cached by text hash.
//! - Cancellation drops the response stream; mistral.rs cancels a sequence
//!   whose receiver is gone at its next token.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use mistralrs::{
    ChatCompletionChunkResponse, Constraint, GgufModelBuilder, Model, RequestBuilder, Response,
    StopTokens, TextMessageRole, TextMessages, TokenSource,
};
use tokio_util::sync::CancellationToken;

use super::gguf::GgufMetadata;
use super::local::{LocalOptions, TokenCounts, compact_schema};
use super::progress::{ModelEvent, ModelProgress};
use super::{Completion, CompletionRequest, ModelBackend, ModelError, Role, TokenSink, Usage};

/// GGUF architectures the mistral.rs 0.8.1 GGUF loader accepts.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "llama",
    "phi2",
    "phi3",
    "starcoder2",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "mistral3",
];

/// A GGUF model loaded in this process.
pub struct MistralRsBackend {
    model: Model,
    name: String,
    stop_ids: Vec<u32>,
    context_length: Option<usize>,
    architecture: String,
    /// Token counts by text hash: history is re-counted every step, and a
    /// round trip to the engine costs about a millisecond.
    token_counts: TokenCounts,
}

impl std::fmt::Debug for MistralRsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MistralRsBackend")
            .field("name", &self.name)
            .field("architecture", &self.architecture)
            .field("stop_ids", &self.stop_ids)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

impl MistralRsBackend {
    /// Load the GGUF file at `path`; `name` labels it in transcripts.
    /// Reports [`ModelEvent::LoadStarted`]/[`ModelEvent::LoadFinished`].
    pub async fn load(
        path: &Path,
        name: impl Into<String>,
        options: &LocalOptions,
        progress: &dyn ModelProgress,
    ) -> Result<Self, ModelError> {
        let name = name.into();
        let metadata =
            GgufMetadata::read_file(path).map_err(|e| ModelError::Load(e.to_string()))?;
        let architecture = metadata.architecture().unwrap_or("unknown").to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(ModelError::Load(format!(
                "{} is a `{architecture}` model, which mistral.rs cannot run; supported architectures: {}. \
                 Use the llama.cpp engine (`--engine llama.cpp`, the default on a CPU), choose another GGUF, or serve it elsewhere and use --endpoint",
                path.display(),
                SUPPORTED_ARCHITECTURES.join(", ")
            )));
        }
        let stop_ids = metadata.stop_token_ids();
        if stop_ids.is_empty() {
            tracing::warn!(model = %name, "the GGUF declares no EOS or end-of-turn token; constrained steps may run to the token limit");
        }
        let context_length = match (metadata.context_length(), options.context_tokens) {
            (Some(m), Some(c)) => Some(m.min(c)),
            (m, c) => m.or(c),
        };

        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file = path
            .file_name()
            .ok_or_else(|| ModelError::Load(format!("{} is not a file path", path.display())))?
            .to_string_lossy()
            .into_owned();
        // Local files never need the hub or a token.
        let mut builder = GgufModelBuilder::new(dir.to_string_lossy(), vec![file])
            .with_token_source(TokenSource::None);
        if options.force_cpu || !cfg!(feature = "cuda") {
            builder = builder.with_force_cpu();
        }
        progress.event(&ModelEvent::LoadStarted { what: name.clone() });
        let started = Instant::now();
        let model = builder
            .build()
            .await
            .map_err(|e| ModelError::Load(format!("{}: {e:#}", path.display())))?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(model = %name, seconds, ?stop_ids, "model loaded");
        progress.event(&ModelEvent::LoadFinished {
            what: name.clone(),
            seconds,
        });
        Ok(Self {
            model,
            name,
            stop_ids,
            context_length,
            architecture,
            token_counts: Default::default(),
        })
    }

    /// The token ids every request stops at.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The GGUF architecture (`llama`, `qwen3`, ...).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    fn build_request(&self, request: &CompletionRequest) -> RequestBuilder {
        let mut rb = RequestBuilder::new();
        for m in &request.messages {
            rb = rb.add_message(engine_role(m.role), &m.content);
        }
        // `RequestBuilder::new` samples greedily; only a positive
        // temperature turns sampling on.
        if request.temperature > 0.0 {
            rb = rb.set_sampler_temperature(f64::from(request.temperature));
        }
        rb = rb.set_sampler_max_len(request.max_tokens.max(1));
        if !self.stop_ids.is_empty() {
            rb = rb.set_sampler_stop_toks(StopTokens::Ids(self.stop_ids.clone()));
        }
        if let Some(schema) = &request.json_schema {
            rb = rb.set_constraint(Constraint::JsonSchema(compact_schema(schema)));
        }
        rb
    }

    /// Prompt tokens of `request`'s messages after the chat template.
    async fn prompt_tokens(&self, request: &CompletionRequest) -> Option<usize> {
        let mut messages = TextMessages::new();
        for m in &request.messages {
            messages = messages.add_message(engine_role(m.role), &m.content);
        }
        let ids = self
            .model
            .tokenize(either::Either::Left(messages), None, true, true, None)
            .await;
        ids.ok().map(|ids| ids.len())
    }

    async fn generate(
        &self,
        request: &CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let rb = self.build_request(request);
        let mut stream = self
            .model
            .stream_chat_request(rb)
            .await
            .map_err(|e| map_engine_error(e.to_string(), self.context_length))?;
        let mut text = String::new();
        let mut usage = None;
        let mut pieces = 0u64;
        loop {
            let next = tokio::select! {
                // Dropping the stream (on return) makes mistral.rs cancel
                // the sequence at its next token.
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Response::Chunk(ChatCompletionChunkResponse {
                    choices, usage: u, ..
                })) => {
                    let mut finished = false;
                    if let Some(choice) = choices.first() {
                        if let Some(piece) = choice.delta.content.as_deref()
                            && !piece.is_empty()
                        {
                            text.push_str(piece);
                            pieces += 1;
                            on_token(piece);
                        }
                        finished = choice.finish_reason.is_some();
                    }
                    if let Some(u) = u {
                        usage = Some(Usage {
                            prompt_tokens: u.prompt_tokens as u64,
                            completion_tokens: u.completion_tokens as u64,
                        });
                    }
                    if finished && usage.is_some() {
                        break;
                    }
                }
                Some(Response::Done(done)) => {
                    if let Some(c) = done
                        .choices
                        .first()
                        .and_then(|c| c.message.content.as_deref())
                        && text.is_empty()
                    {
                        text.push_str(c);
                        on_token(c);
                    }
                    usage = Some(Usage {
                        prompt_tokens: done.usage.prompt_tokens as u64,
                        completion_tokens: done.usage.completion_tokens as u64,
                    });
                    break;
                }
                Some(Response::ModelError(msg, _)) => {
                    return Err(map_engine_error(msg, self.context_length));
                }
                Some(Response::InternalError(e)) | Some(Response::ValidationError(e)) => {
                    return Err(map_engine_error(e.to_string(), self.context_length));
                }
                Some(_) => {}
            }
        }
        let usage = usage.unwrap_or(Usage {
            prompt_tokens: 0,
            completion_tokens: pieces,
        });
        Ok(Completion { text, usage })
    }
}

fn engine_role(role: Role) -> TextMessageRole {
    match role {
        Role::System => TextMessageRole::System,
        Role::User => TextMessageRole::User,
        Role::Assistant => TextMessageRole::Assistant,
    }
}

/// Map an engine message to a semantic error.
fn map_engine_error(message: String, context_length: Option<usize>) -> ModelError {
    // "Prompt sequence length is greater than N, perhaps consider using `truncate_sequence`?"
    if message.contains("sequence length is greater than") {
        let limit = message
            .split("greater than")
            .nth(1)
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|n| n.parse().ok())
            .or(context_length)
            .unwrap_or(0);
        return ModelError::ContextTooLong {
            limit,
            requested: limit + 1,
        };
    }
    ModelError::Engine(message)
}

#[async_trait]
impl ModelBackend for MistralRsBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        match self.generate(&request, on_token, cancel).await {
            // The engine names only the limit; count what was asked.
            Err(ModelError::ContextTooLong { limit, requested }) => {
                let requested = self.prompt_tokens(&request).await.unwrap_or(requested);
                Err(ModelError::ContextTooLong { limit, requested })
            }
            other => other,
        }
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.token_counts.get_or(text, || {
            let model = &self.model;
            let owned = text.to_string();
            // A plain thread: no tokio context, so no cooperative budget can
            // stall the wait, and no runtime worker is asked to block.
            std::thread::scope(|s| {
                s.spawn(move || {
                    let ids =
                        model.tokenize(either::Either::Right(owned), None, false, false, None);
                    futures::executor::block_on(ids).ok().map(|ids| ids.len())
                })
                .join()
                .ok()
                .flatten()
            })
        })
    }

    fn context_length(&self) -> Option<usize> {
        self.context_length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_too_long_becomes_context_too_long() {
        let e = map_engine_error(
            "Prompt sequence length is greater than 8192, perhaps consider using `truncate_sequence`?".into(),
            None,
        );
        assert!(
            matches!(e, ModelError::ContextTooLong { limit: 8192, .. }),
            "{e}"
        );
        assert!(matches!(
            map_engine_error("boom".into(), None),
            ModelError::Engine(_)
        ));
    }

    #[tokio::test]
    async fn unsupported_architectures_are_refused_before_loading() {
        use super::super::gguf::testing::{V, header};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.gguf");
        std::fs::write(&p, header(&[("general.architecture", V::Str("gemma3"))])).unwrap();
        let err = MistralRsBackend::load(
            &p,
            "g",
            &LocalOptions::default(),
            &super::super::progress::NoProgress,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gemma3") && err.contains("qwen3") && err.contains("--endpoint"),
            "{err}"
        );
    }
}
