//! The scripted backend: replays raw model outputs from a YAML file, in
//! order, for tests and demos (`--model scripted:FILE.yaml`).
//!
//! ```yaml
//! responses:
//!   - '{"thought": "...", "tool": "finish", "args": {"answer": "..."}}'
//! ```
//!
//! Each request consumes the next response whatever the prompt says; when the
//! script runs out the backend returns [`ModelError::ScriptExhausted`], so a
//! run fails cleanly instead of looping. A response may also be a mapping with
//! `delay_ms` (to script a slow step, e.g. for cancellation tests) and `text`.
//! Output is streamed in small fragments, as a real model would, so the
//! transcript code is exercised the same way.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{
    ChatMessage, Completion, CompletionRequest, ModelBackend, ModelError, TokenSink, Usage,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    responses: Vec<ScriptedResponse>,
}

/// One scripted output.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ScriptedResponse {
    Text(String),
    Detailed {
        text: String,
        #[serde(default)]
        delay_ms: u64,
    },
}

/// Replays a fixed list of outputs.
#[derive(Debug)]
pub struct ScriptedBackend {
    name: String,
    responses: Vec<ScriptedResponse>,
    next: Mutex<usize>,
    /// Every request's messages, in order (what the agent showed the
    /// model), when recording was asked for: only tests read them, and
    /// `agent bench agent` must not pay for copies it never reads.
    seen: Option<Mutex<Vec<Vec<ChatMessage>>>>,
    /// Each request's temperature, alongside `seen`.
    temperatures: Option<Mutex<Vec<f32>>>,
}

impl ScriptedBackend {
    /// Load a script file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ModelError::ModelNotFound(format!("cannot read the script {}: {e}", path.display()))
        })?;
        let script: Script = serde_yaml::from_str(&text).map_err(|e| {
            ModelError::Load(format!(
                "{}: {e}. Expected `responses:` followed by a list of strings",
                path.display()
            ))
        })?;
        Ok(Self::new(
            format!("scripted:{}", path.display()),
            script.responses,
        ))
    }

    /// A backend replaying `responses` (for unit tests).
    pub fn from_texts(responses: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::new(
            "scripted".to_string(),
            responses
                .into_iter()
                .map(|r| ScriptedResponse::Text(r.into()))
                .collect(),
        )
    }

    /// A backend called `name` replaying `responses` (for unit tests of
    /// several models at once).
    pub fn named(name: &str, responses: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            name: name.to_string(),
            ..Self::from_texts(responses)
        }
    }

    fn new(name: String, responses: Vec<ScriptedResponse>) -> Self {
        Self {
            name,
            responses,
            next: Mutex::new(0),
            seen: None,
            temperatures: None,
        }
    }

    /// Keep the messages of every request, for [`ScriptedBackend::seen`].
    pub fn recording(mut self) -> Self {
        self.seen = Some(Mutex::new(Vec::new()));
        self.temperatures = Some(Mutex::new(Vec::new()));
        self
    }

    /// The messages of every request so far, oldest first (empty unless
    /// built with [`ScriptedBackend::recording`]).
    pub fn seen(&self) -> Vec<Vec<ChatMessage>> {
        self.seen
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.clone()))
            .unwrap_or_default()
    }

    /// The temperature of every request so far, oldest first (empty unless
    /// built with [`ScriptedBackend::recording`]).
    pub fn temperatures(&self) -> Vec<f32> {
        self.temperatures
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.clone()))
            .unwrap_or_default()
    }

    /// How many responses have been replayed.
    pub fn replayed(&self) -> usize {
        self.next.lock().map(|n| *n).unwrap_or(0)
    }

    /// Skip the first `n` responses (used when resuming a run: the script
    /// continues where the interrupted process left off).
    pub fn skip(&self, n: usize) {
        if let Ok(mut next) = self.next.lock() {
            *next = n.min(self.responses.len());
        }
    }
}

#[async_trait]
impl ModelBackend for ScriptedBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        let response = {
            let mut next = self
                .next
                .lock()
                .map_err(|_| ModelError::Engine("script state poisoned".into()))?;
            let Some(r) = self.responses.get(*next).cloned() else {
                return Err(ModelError::ScriptExhausted(*next));
            };
            *next += 1;
            r
        };
        if let Some(Ok(mut seen)) = self.seen.as_ref().map(Mutex::lock) {
            seen.push(request.messages.clone());
        }
        if let Some(Ok(mut temperatures)) = self.temperatures.as_ref().map(Mutex::lock) {
            temperatures.push(request.temperature);
        }
        let (text, delay_ms) = match response {
            ScriptedResponse::Text(t) => (t, 0),
            ScriptedResponse::Detailed { text, delay_ms } => (text, delay_ms),
        };
        if delay_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
            }
        }
        // Fragments of about 8 bytes, cut on character boundaries.
        let mut start = 0;
        for (end, _) in text.char_indices().skip(1).chain([(text.len(), ' ')]) {
            if end > start && (end - start >= 8 || end == text.len()) {
                on_token(&text[start..end]);
                start = end;
            }
        }
        let prompt_chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
        Ok(Completion {
            usage: Usage {
                prompt_tokens: prompt_chars.div_ceil(4) as u64,
                completion_tokens: text.len().div_ceil(4) as u64,
            },
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CompletionRequest {
        CompletionRequest {
            messages: vec![ChatMessage::user("hi")],
            max_tokens: 10,
            temperature: 0.0,
            json_schema: None,
        }
    }

    #[tokio::test]
    async fn replays_in_order_streams_fragments_then_runs_out() {
        let b = ScriptedBackend::from_texts(["first response, long enough to stream", "second"]);
        let seen = Mutex::new(String::new());
        let sink = |t: &str| seen.lock().unwrap().push_str(t);
        let cancel = CancellationToken::new();
        let c = b.complete(request(), &sink, &cancel).await.unwrap();
        assert_eq!(c.text, "first response, long enough to stream");
        assert_eq!(*seen.lock().unwrap(), c.text);
        assert_eq!(
            b.complete(request(), &sink, &cancel).await.unwrap().text,
            "second"
        );
        assert!(matches!(
            b.complete(request(), &sink, &cancel).await,
            Err(ModelError::ScriptExhausted(2))
        ));
    }

    #[test]
    fn script_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, "answers: []").unwrap();
        let e = ScriptedBackend::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("s.yaml") && e.contains("responses"), "{e}");
        let missing = ScriptedBackend::from_file(&dir.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(missing, ModelError::ModelNotFound(_)));
    }

    #[tokio::test]
    async fn a_delayed_response_is_cancellable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, "responses:\n  - text: slow\n    delay_ms: 60000\n").unwrap();
        let b = ScriptedBackend::from_file(&p).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let r = b.complete(request(), &|_: &str| {}, &cancel).await;
        assert!(matches!(r, Err(ModelError::Cancelled)));
    }
}
