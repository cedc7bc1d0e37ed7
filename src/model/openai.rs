//! The OpenAI-compatible chat-completions backend: how a user outgrows one
//! machine (vLLM, mistralrs-server, llama.cpp's server, hosted APIs).
//!
//! Decisions:
//! - Always stream (`stream: true`) and parse server-sent events by hand:
//!   tokens reach the UI as they come, and a dead server is noticed early.
//!   `stream_options.include_usage` asks for token counts; where a server
//!   sends none, completion tokens are counted from the deltas and prompt
//!   tokens estimated.
//! - Servers take a JSON schema in different forms, and reject the others
//!   in different ways (llama-cpp-python answers 500 to the OpenAI form).
//!   The schema goes out in the first form of [`SchemaForm::LADDER`] that
//!   the endpoint has not refused: OpenAI's `json_schema` (vLLM,
//!   mistralrs-server, llama.cpp's server, hosted APIs), then
//!   `json_object` with a `schema` (llama-cpp-python, llama.cpp), then none
//!   (the caller's tolerant parser reads the action out of prose). A
//!   rejection that names the schema or the response format (400, 422 or
//!   500) moves to the next form at once; what worked is remembered per
//!   endpoint for the rest of the process. A rejected `stream_options` is
//!   dropped the same way.
//! - Retries with exponential backoff and jitter on 429, 5xx and broken
//!   connections, honouring `Retry-After`; a refused connection is reported
//!   at once (nothing is listening, waiting will not help). Retries happen
//!   only before the first token: a stream that breaks midway is an error,
//!   never a silently duplicated answer.
//! - Errors are mapped by meaning at this boundary (see [`ModelError`]).
//! - The API key comes from an environment variable named in config; an
//!   unset variable means no `Authorization` header (local servers).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    ChatMessage, Completion, CompletionRequest, ModelBackend, ModelError, TokenSink, Usage,
};

/// When and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub base_delay: Duration,
    /// Longest single wait, backoff or `Retry-After`; a server asking for
    /// longer gets a [`ModelError::RateLimited`] at once.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Settings of one OpenAI-compatible endpoint. Plain data.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1` (`http://127.0.0.1:8000/v1`).
    pub base_url: String,
    /// The server's model id.
    pub model: String,
    /// The name of the environment variable holding the API key.
    pub api_key_env: String,
    /// The key itself (read from `api_key_env` by [`OpenAiConfig::new`]).
    pub api_key: Option<String>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for a whole completion, retries included.
    pub request_timeout: Duration,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// The model's context window, where the user told us.
    pub context_length: Option<usize>,
}

impl OpenAiConfig {
    /// Settings for `model` at `base_url`, reading the key from `api_key_env`.
    pub fn new(
        base_url: impl Into<String>,
        model: impl Into<String>,
        api_key_env: impl Into<String>,
    ) -> Self {
        let api_key_env = api_key_env.into();
        let api_key = std::env::var(&api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty());
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env,
            api_key,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            context_length: None,
        }
    }
}

/// A model behind an OpenAI-compatible `/chat/completions` endpoint.
#[derive(Debug)]
pub struct OpenAiBackend {
    client: reqwest::Client,
    config: OpenAiConfig,
    url: String,
    name: String,
}

impl OpenAiBackend {
    /// A backend for this endpoint (no request is made yet).
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let base = config.base_url.trim_end_matches('/').to_string();
        let url = format!("{base}/chat/completions");
        url::Url::parse(&url).map_err(|e| ModelError::EndpointUnreachable {
            url: config.base_url.clone(),
            reason: format!("not a valid URL ({e}); expected e.g. http://127.0.0.1:8000/v1"),
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ModelError::Engine(format!("HTTP client: {e}")))?;
        let name = format!("{}@{base}", config.model);
        Ok(Self {
            client,
            config,
            url,
            name,
        })
    }

    fn body(&self, request: &CompletionRequest, dropped: &Dropped) -> Value {
        let form = self.schema_form();
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        });
        if !dropped.stream_options {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(schema) = &request.json_schema {
            match form {
                SchemaForm::JsonSchema => {
                    body["response_format"] = json!({
                        "type": "json_schema",
                        "json_schema": {"name": "action", "schema": schema, "strict": true},
                    });
                }
                SchemaForm::JsonObject => {
                    body["response_format"] = json!({"type": "json_object", "schema": schema});
                }
                SchemaForm::None => {}
            }
        }
        body
    }

    /// The schema form this endpoint gets now (see the module docs).
    fn schema_form(&self) -> SchemaForm {
        learned_forms()
            .lock()
            .ok()
            .and_then(|m| m.get(&self.config.base_url).copied())
            .unwrap_or(SchemaForm::JsonSchema)
    }

    /// The endpoint refused `form`: move on to the next one, unless another
    /// request already did. False when there is no form left to try.
    fn refuse_form(&self, form: SchemaForm) -> bool {
        let Ok(mut map) = learned_forms().lock() else {
            return false;
        };
        let current = map
            .get(&self.config.base_url)
            .copied()
            .unwrap_or(SchemaForm::JsonSchema);
        if current != form {
            return true;
        }
        match form.next() {
            Some(next) => {
                tracing::info!(endpoint = %self.config.base_url, refused = ?form, next = ?next, "the endpoint refused a schema form; trying the next");
                map.insert(self.config.base_url.clone(), next);
                true
            }
            None => false,
        }
    }

    async fn run(
        &self,
        request: &CompletionRequest,
        on_token: TokenSink<'_>,
    ) -> Result<Completion, ModelError> {
        let mut dropped = Dropped::default();
        let mut attempt = 0u32;
        loop {
            let body = self.body(request, &dropped);
            let mut req = self.client.post(&self.url).json(&body);
            if let Some(key) = &self.config.api_key {
                req = req.bearer_auth(key);
            }
            let retry = match req.send().await {
                Err(e) if e.is_connect() => {
                    return Err(ModelError::EndpointUnreachable {
                        url: self.config.base_url.clone(),
                        reason: crate::errors::chain(&e.without_url()),
                    });
                }
                Err(e) if e.is_timeout() => {
                    return Err(ModelError::Timeout(self.config.request_timeout.as_secs()));
                }
                // Reset or closed before an answer: worth another try.
                Err(e) => Failure::Retry {
                    after: None,
                    last: ModelError::EndpointUnreachable {
                        url: self.config.base_url.clone(),
                        reason: crate::errors::chain(&e.without_url()),
                    },
                },
                Ok(resp) if resp.status().is_success() => {
                    return self.read_stream(resp, request, on_token).await;
                }
                Ok(resp) => self.classify(resp, request, &mut dropped).await,
            };
            match retry {
                Failure::Fatal(e) => return Err(e),
                Failure::Again => continue,
                Failure::Retry { after, last } => {
                    if attempt >= self.config.retry.max_retries {
                        return Err(last);
                    }
                    let wait = match after {
                        Some(secs) if Duration::from_secs(secs) > self.config.retry.max_delay => {
                            return Err(last);
                        }
                        Some(secs) => Duration::from_secs(secs),
                        None => backoff(&self.config.retry, attempt),
                    };
                    tracing::debug!(attempt, ?wait, error = %last, "retrying the model endpoint");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Decide what a non-success answer means.
    async fn classify(
        &self,
        resp: reqwest::Response,
        request: &CompletionRequest,
        dropped: &mut Dropped,
    ) -> Failure {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = resp.text().await.unwrap_or_default();
        let (message, raw) = error_message(&text);
        let lower = raw.to_ascii_lowercase();
        let form = self.schema_form();
        let names_schema = [
            "response_format",
            "json_schema",
            "json_object",
            "schema",
            "grammar",
        ]
        .iter()
        .any(|w| lower.contains(w));
        if request.json_schema.is_some()
            && form != SchemaForm::None
            && matches!(status, 400 | 422 | 500)
            && names_schema
            && !is_context_error(&lower)
            && self.refuse_form(form)
        {
            return Failure::Again;
        }
        match status {
            429 => Failure::Retry {
                after: retry_after,
                last: ModelError::RateLimited {
                    retry_after_secs: retry_after,
                },
            },
            500..=599 => Failure::Retry {
                after: retry_after,
                last: ModelError::BadResponse(format!("server error {status}: {message}")),
            },
            404 => Failure::Fatal(ModelError::ModelNotFound(format!(
                "`{}` at {} ({message}); check --model against the server's /models list",
                self.config.model, self.config.base_url
            ))),
            401 | 403 => Failure::Fatal(ModelError::BadResponse(format!(
                "{status} {message}: the server refused the API key; set it in ${}",
                self.config.api_key_env
            ))),
            400 | 413 | 422 if is_context_error(&lower) => {
                let (limit, requested) = context_numbers(&raw);
                Failure::Fatal(ModelError::ContextTooLong {
                    limit: limit.or(self.config.context_length).unwrap_or(0),
                    requested: requested.unwrap_or(0),
                })
            }
            400 | 422 if !dropped.stream_options && lower.contains("stream_options") => {
                dropped.stream_options = true;
                Failure::Again
            }
            _ => Failure::Fatal(ModelError::BadResponse(format!("{status}: {message}"))),
        }
    }

    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        request: &CompletionRequest,
        on_token: TokenSink<'_>,
    ) -> Result<Completion, ModelError> {
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let broken = |e: reqwest::Error| {
            if e.is_timeout() {
                ModelError::Timeout(self.config.request_timeout.as_secs())
            } else {
                ModelError::BadResponse(format!(
                    "the stream broke off: {}",
                    crate::errors::chain(&e.without_url())
                ))
            }
        };
        let mut acc = Accumulator::default();
        if is_json {
            // The server ignored `stream: true` and answered in one piece.
            let text = resp.text().await.map_err(broken)?;
            acc.whole_response(&text, on_token)?;
        } else {
            let mut sse = SseParser::default();
            'read: while let Some(chunk) = resp.chunk().await.map_err(broken)? {
                for data in sse.push(&chunk) {
                    if acc.event(&data, on_token)? {
                        break 'read;
                    }
                }
            }
            for data in sse.finish() {
                if acc.event(&data, on_token)? {
                    break;
                }
            }
            if !acc.saw_event {
                return Err(ModelError::BadResponse(
                    "the server answered 200 but sent no events".to_string(),
                ));
            }
        }
        let usage = acc.usage.unwrap_or_else(|| Usage {
            prompt_tokens: estimate_prompt(&request.messages),
            completion_tokens: acc.deltas,
        });
        Ok(Completion {
            text: acc.text,
            usage,
        })
    }
}

#[async_trait]
impl ModelBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        let limit = self.config.request_timeout;
        let started = Instant::now();
        tokio::select! {
            _ = cancel.cancelled() => Err(ModelError::Cancelled),
            r = tokio::time::timeout(limit, self.run(&request, on_token)) => match r {
                Ok(r) => r,
                Err(_) => Err(ModelError::Timeout(started.elapsed().as_secs())),
            },
        }
    }

    fn context_length(&self) -> Option<usize> {
        self.config.context_length
    }
}

/// Fields the server rejected, left out of later attempts.
#[derive(Debug, Default)]
struct Dropped {
    stream_options: bool,
}

/// How a request carries the action schema, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaForm {
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` (OpenAI).
    JsonSchema,
    /// `{"type": "json_object", "schema": …}` (llama-cpp-python, llama.cpp).
    JsonObject,
    /// No `response_format`: the tolerant parser reads the answer.
    None,
}

impl SchemaForm {
    fn next(self) -> Option<Self> {
        match self {
            SchemaForm::JsonSchema => Some(SchemaForm::JsonObject),
            SchemaForm::JsonObject => Some(SchemaForm::None),
            SchemaForm::None => None,
        }
    }
}

/// The form each endpoint (by base URL) gets, learned in this process.
fn learned_forms() -> &'static std::sync::Mutex<std::collections::HashMap<String, SchemaForm>> {
    static FORMS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, SchemaForm>>,
    > = std::sync::OnceLock::new();
    FORMS.get_or_init(Default::default)
}

enum Failure {
    /// Give up with this error.
    Fatal(ModelError),
    /// Ask again at once (a rejected optional field was dropped).
    Again,
    /// Wait and retry; `last` is the error if retries run out.
    Retry {
        after: Option<u64>,
        last: ModelError,
    },
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let capped = exp.min(policy.max_delay);
    // Jitter: between half and all of the delay, so clients spread out.
    capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// The human message of an error body, and the text to search for hints.
fn error_message(body: &str) -> (String, String) {
    let short = |s: &str| s.chars().take(500).collect::<String>();
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return (short(body.trim()), body.to_string());
    };
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("error"))
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| short(body.trim()));
    (short(&msg), body.to_string())
}

fn is_context_error(lower: &str) -> bool {
    [
        "context length",
        "context_length",
        "maximum context",
        "context window",
        "context size",
        "exceed_context",
        "too many tokens",
        "prompt is too long",
    ]
    .iter()
    .any(|k| lower.contains(k))
}

/// (limit, requested) from the usual phrasings: OpenAI/vLLM ("maximum context
/// length is 4096 tokens. However, you requested 5000 tokens") and
/// llama.cpp's JSON fields (`n_ctx`, `n_prompt_tokens`).
fn context_numbers(raw: &str) -> (Option<usize>, Option<usize>) {
    if let Ok(v) = serde_json::from_str::<Value>(raw) {
        let e = v.get("error").unwrap_or(&v);
        let n = |k: &str| {
            e.get(k)
                .and_then(Value::as_u64)
                .and_then(|x| usize::try_from(x).ok())
        };
        if n("n_ctx").is_some() {
            return (n("n_ctx"), n("n_prompt_tokens"));
        }
    }
    let lower = raw.to_ascii_lowercase();
    let number_after = |key: &str| -> Option<usize> {
        let at = lower.find(key)? + key.len();
        let digits: String = lower[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    let limit =
        number_after("maximum context length is").or_else(|| number_after("context length of"));
    let requested = number_after("you requested")
        .or_else(|| number_after("resulted in"))
        .or_else(|| number_after("requested"));
    (limit, requested)
}

fn estimate_prompt(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| m.content.len().div_ceil(4) as u64 + 4)
        .sum()
}

/// Splits a byte stream into SSE `data` payloads.
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feed bytes; returns the complete payloads they finished.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&String::from_utf8_lossy(&line), &mut out);
        }
        out
    }

    /// The stream ended: whatever is pending.
    fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf))
                .trim_end()
                .to_string();
            self.line(&rest, &mut out);
        }
        out.extend(self.data.take());
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        if line.is_empty() {
            out.extend(self.data.take());
            return;
        }
        let Some(value) = line.strip_prefix("data:") else {
            return; // comments (":"), event:, id:, retry:
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        // Tolerate servers that omit the blank line between events: a
        // pending payload that is already complete is an event of its own.
        if let Some(pending) = self.data.take() {
            if pending == "[DONE]" || serde_json::from_str::<Value>(&pending).is_ok() {
                out.push(pending);
                self.data = Some(value.to_string());
            } else {
                self.data = Some(format!("{pending}\n{value}"));
            }
        } else {
            self.data = Some(value.to_string());
        }
    }
}

/// Collects text and usage from stream events.
#[derive(Debug, Default)]
struct Accumulator {
    text: String,
    usage: Option<Usage>,
    deltas: u64,
    saw_event: bool,
}

impl Accumulator {
    /// Handle one payload; `Ok(true)` at `[DONE]`.
    fn event(&mut self, data: &str, on_token: TokenSink<'_>) -> Result<bool, ModelError> {
        self.saw_event = true;
        if data.trim() == "[DONE]" {
            return Ok(true);
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            ModelError::BadResponse(format!("unreadable stream event ({e}): {}", clip(data)))
        })?;
        if let Some(err) = v.get("error") {
            let raw = err.to_string();
            if is_context_error(&raw.to_ascii_lowercase()) {
                let (limit, requested) = context_numbers(&raw);
                return Err(ModelError::ContextTooLong {
                    limit: limit.unwrap_or(0),
                    requested: requested.unwrap_or(0),
                });
            }
            return Err(ModelError::BadResponse(format!(
                "error in the stream: {}",
                clip(&raw)
            )));
        }
        if let Some(piece) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            && !piece.is_empty()
        {
            self.text.push_str(piece);
            self.deltas += 1;
            on_token(piece);
        }
        self.take_usage(&v);
        Ok(false)
    }

    /// A non-streamed `chat.completion` object.
    fn whole_response(&mut self, body: &str, on_token: TokenSink<'_>) -> Result<(), ModelError> {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            ModelError::BadResponse(format!("unreadable response ({e}): {}", clip(body)))
        })?;
        let text = v
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ModelError::BadResponse(format!("no choices[0].message.content in {}", clip(body)))
            })?;
        self.text = text.to_string();
        self.deltas = 1;
        on_token(text);
        self.take_usage(&v);
        Ok(())
    }

    fn take_usage(&mut self, v: &Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| u.get(k).and_then(Value::as_u64);
            if let (Some(p), Some(c)) = (n("prompt_tokens"), n("completion_tokens")) {
                self.usage = Some(Usage {
                    prompt_tokens: p,
                    completion_tokens: c,
                });
            }
        }
    }
}

/// A response body quoted in an error message: one line, its start.
fn clip(s: &str) -> String {
    crate::sanitize::one_line(s, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payloads_survive_arbitrary_chunking_and_crlf() {
        let stream =
            "data: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: x\ndata: {\"a\":2}\n\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream.as_bytes()[..split]);
            got.extend(p.push(&stream.as_bytes()[split..]));
            got.extend(p.finish());
            assert_eq!(
                got,
                vec!["{\"a\":1}", "{\"a\":2}", "[DONE]"],
                "split at {split}"
            );
        }
    }

    #[test]
    fn sse_without_blank_lines_and_multi_line_data_are_tolerated() {
        let mut p = SseParser::default();
        let mut got = p.push(b"data: {\"a\":1}\ndata: {\"a\":2}\ndata: {\"b\":\ndata: 3}\n\n");
        got.extend(p.finish());
        assert_eq!(got, vec!["{\"a\":1}", "{\"a\":2}", "{\"b\":\n3}"]);
    }

    #[test]
    fn context_errors_yield_their_numbers() {
        let openai = r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert!(is_context_error(&openai.to_ascii_lowercase()));
        assert_eq!(context_numbers(openai), (Some(4096), Some(5000)));
        let llama = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}"#;
        assert!(is_context_error(&llama.to_ascii_lowercase()));
        assert_eq!(context_numbers(llama), (Some(8192), Some(9000)));
        assert!(!is_context_error("model not found"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..50 {
            let d0 = backoff(&p, 0);
            let d1 = backoff(&p, 1);
            let d5 = backoff(&p, 5);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200));
            assert!(d5 <= Duration::from_millis(350));
        }
    }
}
