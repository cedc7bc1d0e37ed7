//! The llama.cpp engine: a GGUF model run in-process through `llama-cpp-2`,
//! the default on CPU (see the README's performance section for the
//! side-by-side figures that chose it).
//!
//! Decisions:
//! - One engine thread per loaded model owns the llama.cpp context (it is
//!   not `Send`) and serves requests in order over a channel; tokens come
//!   back over another. The model itself is shared (`Arc`), so counting
//!   tokens needs no round trip to that thread.
//! - Prompts are the GGUF's own chat template rendered by
//!   [`ChatTemplate`], the same text mistral.rs would build.
//! - Constrained decoding is llguidance, as with mistral.rs: the request's
//!   JSON schema (made compact by [`compact_schema`]) becomes a sampler in
//!   front of greedy or temperature sampling, so every action parses, and
//!   the grammar's end admits only end-of-generation tokens, so a step
//!   stops where its object ends.
//! - Prefix reuse inside a process: the tokens in the KV cache are kept;
//!   a request re-processes only what follows the longest common prefix.
//! - Prefix reuse across processes: the part every run shares (the system
//!   prompt with the tool list, found with [`ChatTemplate::system_prefix`])
//!   has its KV state saved to the cache directory the first time it is
//!   computed, keyed by the model file, the engine, the context size and a
//!   hash of the tokens, and is loaded by the next process instead of
//!   being computed again. A loaded state is checked against the tokens it
//!   claims to hold; one that fails to load or does not match is deleted.
//!   So the first step of `agent run` costs about what a later step costs.
//! - llama.cpp's log goes to `tracing` (see it with `-v`); its last error
//!   line is kept so a failed load says why, instead of "null result".
//! - Cancellation is a flag the engine checks between tokens; the async
//!   side raises it when the token fires or the request is dropped.
//!
//! Size: one job, the engine (its thread, prompt-prefix states and sampler
//! share the context they drive), so it stays one file, with its tests.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::gguf::GgufMetadata;
use super::local::{LocalOptions, TokenCounts, compact_schema};
use super::progress::{ModelEvent, ModelProgress};
use super::template::ChatTemplate;
use super::{Completion, CompletionRequest, ModelBackend, ModelError, TokenSink, Usage};

/// Names the engine build and the cache layout in prefix-state keys: a
/// state saved by another llama.cpp, or with another KV layout (flash
/// attention changes how V is stored), may not load, or worse, load wrongly.
const ENGINE_TAG: &str = "llama-cpp-2/0.1.160 f16-kv flash-attn-off";
/// Prompt tokens decoded per batch.
const BATCH: usize = 512;
/// Shared prefixes shorter than this are not worth a file.
const MIN_SAVED_PREFIX: usize = 64;
/// Prefix states kept per model; older ones are removed.
const KEEP_STATES: usize = 8;

/// llama.cpp's process-wide state: initialised once, never freed.
fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            install_log_hook();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::Load(format!("cannot start llama.cpp: {e}")))
}

/// The last error line llama.cpp logged (for load failures).
static LAST_ERROR: Mutex<String> = Mutex::new(String::new());

fn install_log_hook() {
    unsafe extern "C" fn hook(
        level: llama_cpp_sys_2::ggml_log_level,
        text: *const std::os::raw::c_char,
        _data: *mut std::os::raw::c_void,
    ) {
        if text.is_null() {
            return;
        }
        // SAFETY: llama.cpp passes a NUL-terminated string valid for the call.
        let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
        let line = text.trim_end();
        if line.is_empty() {
            return;
        }
        if level == llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR {
            tracing::warn!(target: "llama.cpp", "{line}");
            if let Ok(mut last) = LAST_ERROR.lock() {
                *last = line.to_string();
            }
        } else {
            tracing::debug!(target: "llama.cpp", "{line}");
        }
    }
    // SAFETY: the hook is a plain function that lives for the whole process.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(hook), std::ptr::null_mut()) };
}

fn last_engine_error() -> String {
    LAST_ERROR
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default()
}

/// A GGUF model loaded in this process by llama.cpp.
pub struct LlamaCppBackend {
    name: String,
    model: Arc<LlamaModel>,
    template: ChatTemplate,
    jobs: std::sync::mpsc::Sender<Job>,
    context_length: usize,
    architecture: String,
    /// Token counts by text hash: history is re-counted every step.
    token_counts: TokenCounts,
}

impl std::fmt::Debug for LlamaCppBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCppBackend")
            .field("name", &self.name)
            .field("architecture", &self.architecture)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

/// One request for the engine thread.
struct Job {
    prompt: Vec<LlamaToken>,
    /// The prompt's shared prefix (system prompt and tools), when it has one.
    shared: Option<Vec<LlamaToken>>,
    max_tokens: usize,
    temperature: f32,
    schema: Option<serde_json::Value>,
    /// Send the prompt's last logits ([`Reply::Logits`]) instead of
    /// generating.
    logits: bool,
    cancel: Arc<AtomicBool>,
    out: tokio::sync::mpsc::UnboundedSender<Reply>,
}

/// What the engine thread sends back.
enum Reply {
    Piece(String),
    Logits(Vec<f32>),
    Done(Usage),
    Failed(ModelError),
}

impl LlamaCppBackend {
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
        let template = ChatTemplate::from_gguf(&metadata)
            .map_err(|e| ModelError::Load(format!("{}: {e}", path.display())))?;
        if template.fallback {
            tracing::warn!(model = %name, "the GGUF has no chat template; using ChatML");
        }
        let context_length = match (metadata.context_length(), options.context_tokens) {
            (Some(m), Some(c)) => m.min(c),
            (m, c) => m.or(c).unwrap_or(4096),
        };
        let state_dir = options
            .state_dir
            .as_ref()
            .map(|dir| dir.join(model_key(path, options.lora.as_deref(), context_length)));

        progress.event(&ModelEvent::LoadStarted { what: name.clone() });
        let started = Instant::now();
        let file = path.to_path_buf();
        let lora = options.lora.clone();
        let (model, adapter) = tokio::task::spawn_blocking(move || {
            let backend = backend()?;
            let mut model =
                LlamaModel::load_from_file(backend, &file, &LlamaModelParams::default()).map_err(
                    |e| {
                        let why = last_engine_error();
                        ModelError::Load(format!(
                            "{}: llama.cpp could not load it ({})",
                            file.display(),
                            if why.is_empty() { e.to_string() } else { why }
                        ))
                    },
                )?;
            let adapter = match &lora {
                Some(lora) => Some(model.lora_adapter_init(lora).map_err(|e| {
                    let why = last_engine_error();
                    ModelError::Load(format!(
                        "{}: llama.cpp could not load the LoRA adapter ({})",
                        lora.display(),
                        if why.is_empty() { e.to_string() } else { why }
                    ))
                })?),
                None => None,
            };
            Ok::<_, ModelError>((model, adapter))
        })
        .await
        .map_err(|e| ModelError::Load(format!("the loading thread stopped: {e}")))??;
        let model = Arc::new(model);

        let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let engine_model = model.clone();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get().min(16))
            .unwrap_or(4);
        std::thread::Builder::new()
            .name(format!("llama.cpp {name}"))
            .spawn(move || {
                engine_thread(
                    engine_model,
                    adapter,
                    context_length,
                    threads,
                    state_dir,
                    receiver,
                    ready_tx,
                )
            })
            .map_err(|e| ModelError::Load(format!("cannot start the engine thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| ModelError::Load("the engine thread stopped while starting".into()))??;

        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(model = %name, seconds, threads, context_length, "model loaded (llama.cpp)");
        progress.event(&ModelEvent::LoadFinished {
            what: name.clone(),
            seconds,
        });
        Ok(Self {
            name,
            model,
            template,
            jobs,
            context_length,
            architecture,
            token_counts: Default::default(),
        })
    }

    /// The GGUF architecture (`llama`, `qwen2`, ...).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The prompt text for `request`, as the model reads it.
    pub fn render(&self, request: &CompletionRequest) -> Result<String, ModelError> {
        self.template
            .render(&request.messages, true)
            .map_err(|e| ModelError::Engine(e.to_string()))
    }

    /// The token ids of `text` as a prompt (special tokens parsed, BOS
    /// added where the model wants one).
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        self.tokenize(text)
            .into_iter()
            .map(|t| u32::try_from(t.0).unwrap_or(0))
            .collect()
    }

    /// The logits the model gives the token after `tokens`: for checking
    /// the engine (and an adapter on it) against a reference computation.
    pub async fn next_token_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        if tokens.is_empty() || tokens.len() >= self.context_length {
            return Err(ModelError::Engine(format!(
                "{} tokens do not fit a context of {}",
                tokens.len(),
                self.context_length
            )));
        }
        let prompt = tokens
            .iter()
            .map(|&t| i32::try_from(t).map(LlamaToken))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ModelError::Engine("a token id is out of range".into()))?;
        let (out, mut replies) = tokio::sync::mpsc::unbounded_channel();
        self.jobs
            .send(Job {
                prompt,
                shared: None,
                max_tokens: 0,
                temperature: 0.0,
                schema: None,
                logits: true,
                cancel: Arc::new(AtomicBool::new(false)),
                out,
            })
            .map_err(|_| ModelError::Engine("the llama.cpp engine thread has stopped".into()))?;
        let mut logits = None;
        loop {
            match replies.recv().await {
                Some(Reply::Logits(l)) => logits = Some(l),
                Some(Reply::Done(_)) => {
                    return logits
                        .ok_or_else(|| ModelError::Engine("the engine sent no logits".into()));
                }
                Some(Reply::Failed(e)) => return Err(e),
                Some(Reply::Piece(_)) => {}
                None => {
                    return Err(ModelError::Engine(
                        "the llama.cpp engine thread stopped mid-request".into(),
                    ));
                }
            }
        }
    }

    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        // The template writes special tokens as text; parse them. A BOS the
        // template already wrote is not added a second time.
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), true, true);
        let bos = vocab.bos();
        if tokens.len() >= 2 && tokens[0] == bos && tokens[1] == bos {
            tokens.remove(0);
        }
        tokens
    }
}

#[async_trait]
impl ModelBackend for LlamaCppBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let text = self.render(&request)?;
        let prompt = self.tokenize(&text);
        if prompt.len() >= self.context_length {
            return Err(ModelError::ContextTooLong {
                limit: self.context_length,
                requested: prompt.len(),
            });
        }
        let shared = self
            .template
            .system_prefix(&request.messages)
            .map(|p| self.tokenize(&p))
            .filter(|p| p.len() >= MIN_SAVED_PREFIX && prompt.starts_with(p));
        let flag = Arc::new(AtomicBool::new(false));
        // Raised on every way out of this function, so a dropped request
        // stops the engine at its next token.
        struct Raise(Arc<AtomicBool>);
        impl Drop for Raise {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _raise = Raise(flag.clone());
        let (out, mut replies) = tokio::sync::mpsc::unbounded_channel();
        self.jobs
            .send(Job {
                prompt,
                shared,
                max_tokens: request.max_tokens.max(1),
                temperature: request.temperature,
                schema: request.json_schema.as_ref().map(compact_schema),
                logits: false,
                cancel: flag.clone(),
                out,
            })
            .map_err(|_| ModelError::Engine("the llama.cpp engine thread has stopped".into()))?;
        let mut text = String::new();
        loop {
            let reply = tokio::select! {
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                reply = replies.recv() => reply,
            };
            match reply {
                Some(Reply::Piece(piece)) => {
                    on_token(&piece);
                    text.push_str(&piece);
                }
                Some(Reply::Done(usage)) => return Ok(Completion { text, usage }),
                Some(Reply::Failed(e)) => return Err(e),
                Some(Reply::Logits(_)) => {}
                None => {
                    return Err(ModelError::Engine(
                        "the llama.cpp engine thread stopped mid-request".into(),
                    ));
                }
            }
        }
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.token_counts.get_or(text, || {
            Some(
                self.model
                    .vocab()
                    .tokenize(text.as_bytes(), false, false)
                    .len(),
            )
        })
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.context_length)
    }
}

/// The folder name for `path`'s prefix states: the file (path, size,
/// modification time), its LoRA adapter, the engine and the context size.
fn model_key(path: &Path, lora: Option<&Path>, context_length: usize) -> String {
    let mut h = Sha256::new();
    // An adapter changes every state; its file name is its content's hash.
    if let Some(lora) = lora {
        h.update(b"lora:");
        h.update(lora.as_os_str().as_encoded_bytes());
    }
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    h.update(canonical.as_os_str().as_encoded_bytes());
    if let Ok(meta) = std::fs::metadata(path) {
        h.update(meta.len().to_le_bytes());
        if let Ok(modified) = meta.modified()
            && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
        {
            h.update(since.as_nanos().to_le_bytes());
        }
    }
    h.update(ENGINE_TAG.as_bytes());
    h.update(context_length.to_le_bytes());
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{stem}-{}", &hex::encode(h.finalize())[..16])
}

/// The engine thread: creates the context, then serves jobs until the
/// backend (the only sender) is dropped.
fn engine_thread(
    model: Arc<LlamaModel>,
    mut adapter: Option<LlamaLoraAdapter>,
    context_length: usize,
    threads: usize,
    state_dir: Option<PathBuf>,
    jobs: std::sync::mpsc::Receiver<Job>,
    ready: tokio::sync::oneshot::Sender<Result<(), ModelError>>,
) {
    let started = (|| {
        let backend = backend()?;
        let threads = i32::try_from(threads).unwrap_or(4);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(
                u32::try_from(context_length).unwrap_or(4096),
            ))
            .with_n_batch(BATCH as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            // Flash attention off: measured here on CPU, llama.cpp's default
            // (auto, which turns it on) decodes SmolLM2 at ~1000 tokens of
            // context at 38 tok/s, off at 68; Qwen2.5-1.5B is the same
            // either way.
            .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED);
        let mut ctx = model.new_context(backend, params).map_err(|e| {
            let why = last_engine_error();
            ModelError::Load(format!(
                "llama.cpp could not create a context of {context_length} tokens ({}); try a smaller context_tokens",
                if why.is_empty() { e.to_string() } else { why }
            ))
        })?;
        // The adapter lives as long as the model (llama.cpp frees it
        // with the model); its scales are already in its weights.
        if let Some(adapter) = adapter.as_mut() {
            ctx.lora_adapter_set(adapter, 1.0).map_err(|e| {
                ModelError::Load(format!("llama.cpp could not apply the LoRA adapter: {e}"))
            })?;
        }
        // The vocabulary walk takes a few hundred milliseconds: once per model.
        let tok_env = LlamaSampler::llguidance_tok_env(&model);
        let factory = llguidance::ParserFactory::new_simple(&tok_env)
            .map_err(|e| ModelError::Load(format!("cannot prepare constrained decoding: {e}")))?;
        Ok::<_, ModelError>((ctx, factory))
    })();
    let (ctx, factory) = match started {
        Ok(parts) => {
            let _ = ready.send(Ok(()));
            parts
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut engine = Engine {
        model: &model,
        ctx,
        factory,
        cached: Vec::new(),
        states: state_dir.map(PrefixStates::new),
    };
    while let Ok(job) = jobs.recv() {
        let out = job.out.clone();
        match engine.run(&job) {
            Ok(usage) => {
                let _ = out.send(Reply::Done(usage));
            }
            Err(e) => {
                // The cache may hold half a prompt: forget it.
                engine.reset();
                let _ = out.send(Reply::Failed(e));
            }
        }
    }
}

/// The engine thread's state.
struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    factory: llguidance::ParserFactory,
    /// The tokens whose state is in the KV cache (sequence 0), in order.
    cached: Vec<LlamaToken>,
    states: Option<PrefixStates>,
}

impl Engine<'_> {
    fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
    }

    fn run(&mut self, job: &Job) -> Result<Usage, ModelError> {
        let started = Instant::now();
        let prompt = &job.prompt;
        let mut sampler = self.sampler(job)?;

        // What the cache already holds, from this process or a saved state.
        let mut keep = common_prefix(&self.cached, prompt);
        let mut save_shared = false;
        if let Some(shared) = &job.shared
            && keep < shared.len()
            && let Some(states) = &self.states
        {
            match states.load(&mut self.ctx, shared) {
                Some(true) => {
                    self.cached = shared.clone();
                    keep = shared.len();
                }
                Some(false) => {
                    self.cached.clear();
                    keep = 0;
                    save_shared = true;
                }
                None => save_shared = true,
            }
        }
        // The last prompt token is always decoded: its logits start the answer.
        keep = keep.min(prompt.len() - 1);
        self.truncate(keep)?;

        // The shared prefix is always its own batch, so a state loaded from
        // a file leaves the cache exactly as computing it would (batch
        // boundaries change the floating-point sums, and so, rarely, a
        // greedy choice).
        let mut start = keep;
        if let Some(shared) = &job.shared
            && start < shared.len()
        {
            self.decode(&prompt[start..shared.len()], false, job)?;
            start = shared.len();
            if save_shared && let Some(states) = &self.states {
                states.save(&self.ctx, shared);
            }
        }
        self.decode(&prompt[start..], true, job)?;
        if job.logits {
            // -1: the last token decoded, the only one asked for logits.
            let logits = self.ctx.get_logits_ith(-1).to_vec();
            let _ = job.out.send(Reply::Logits(logits));
            return Ok(Usage {
                prompt_tokens: prompt.len() as u64,
                completion_tokens: 0,
            });
        }

        let model: &LlamaModel = self.model;
        let vocab = model.vocab();
        let mut pending: Vec<u8> = Vec::new();
        let mut generated = 0usize;
        let prefilled = Instant::now();
        let mut sampling = std::time::Duration::ZERO;
        let limit = self
            .ctx
            .n_ctx()
            .saturating_sub(1)
            .min(u32::try_from(prompt.len() + job.max_tokens).unwrap_or(u32::MAX))
            as usize;
        while generated < job.max_tokens && self.cached.len() < limit {
            if job.cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            // -1: the logits of the last token decoded.
            let t = Instant::now();
            let token = sampler.sample(&self.ctx, -1);
            sampling += t.elapsed();
            if vocab.is_eog(token) {
                break;
            }
            generated += 1;
            pending.extend(vocab.token_to_piece(token, false, None));
            let valid = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
            if valid > 0 {
                let piece = String::from_utf8_lossy(&pending[..valid]).into_owned();
                pending.drain(..valid);
                if job.out.send(Reply::Piece(piece)).is_err() {
                    return Err(ModelError::Cancelled);
                }
            }
            if generated == job.max_tokens {
                break;
            }
            self.decode(&[token], true, job)?;
        }
        if !pending.is_empty() {
            let _ = job
                .out
                .send(Reply::Piece(String::from_utf8_lossy(&pending).into_owned()));
        }
        tracing::debug!(
            reused = keep,
            prompt = prompt.len(),
            generated,
            prefill_ms = (prefilled - started).as_millis() as u64,
            generate_ms = prefilled.elapsed().as_millis() as u64,
            sampling_ms = sampling.as_millis() as u64,
            "llama.cpp request"
        );
        Ok(Usage {
            prompt_tokens: prompt.len() as u64,
            completion_tokens: generated as u64,
        })
    }

    /// Samplers for `job`: its grammar (if any), then greedy or temperature.
    fn sampler(&self, job: &Job) -> Result<LlamaSampler, ModelError> {
        let mut chain = Vec::new();
        if let Some(schema) = &job.schema {
            let grammar = llguidance::api::TopLevelGrammar::from_json_schema(schema.clone());
            let parser = self.factory.create_parser(grammar).map_err(|e| {
                ModelError::Engine(format!("the action schema cannot be compiled: {e}"))
            })?;
            chain.push(LlamaSampler::from(llguidance::Matcher::new(Ok(parser))));
        }
        if job.temperature > 0.0 {
            chain.push(LlamaSampler::temp(job.temperature));
            chain.push(LlamaSampler::dist(rand::random()));
        } else {
            chain.push(LlamaSampler::greedy());
        }
        Ok(LlamaSampler::chain_simple(chain))
    }

    /// Drop everything in the cache after the first `keep` tokens.
    fn truncate(&mut self, keep: usize) -> Result<(), ModelError> {
        if keep < self.cached.len() {
            let from = u32::try_from(keep).unwrap_or(u32::MAX);
            match self.ctx.clear_kv_cache_seq(Some(0), Some(from), None) {
                Ok(true) => {}
                _ => {
                    // Some caches cannot cut in the middle: start over.
                    self.reset();
                    return Ok(());
                }
            }
        }
        self.cached.truncate(keep);
        Ok(())
    }

    /// Run `tokens` through the model after what is cached, asking for the
    /// last one's logits when `logits`.
    fn decode(&mut self, tokens: &[LlamaToken], logits: bool, job: &Job) -> Result<(), ModelError> {
        let mut batch = LlamaBatch::new(BATCH, 1);
        for (i, chunk) in tokens.chunks(BATCH).enumerate() {
            if job.cancel.load(Ordering::Relaxed) {
                return Err(ModelError::Cancelled);
            }
            batch.clear();
            let last_chunk = (i + 1) * BATCH >= tokens.len();
            for (j, token) in chunk.iter().enumerate() {
                let pos = i32::try_from(self.cached.len() + j).unwrap_or(i32::MAX);
                let want = logits && last_chunk && j + 1 == chunk.len();
                batch
                    .add(*token, pos, &[0], want)
                    .map_err(|e| ModelError::Engine(e.to_string()))?;
            }
            self.ctx.decode(&mut batch).map_err(|e| {
                let why = last_engine_error();
                ModelError::Engine(format!(
                    "llama.cpp could not decode: {}",
                    if why.is_empty() { e.to_string() } else { why }
                ))
            })?;
            self.cached.extend_from_slice(chunk);
        }
        Ok(())
    }
}

/// Length of the longest common prefix.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Saved KV states of shared prompt prefixes, one folder per model.
///
/// A file is our own envelope around llama.cpp's sequence state: a magic
/// line, the tokens it holds, the state's length and a SHA-256 over both.
/// llama.cpp does not check the bytes it is given (a truncated state
/// aborts the process), so nothing reaches it until the envelope verifies;
/// the folder key (model file, engine build, context size) makes sure the
/// bytes were made by the same engine for the same model.
struct PrefixStates {
    dir: PathBuf,
}

/// First bytes of a prefix-state file.
const STATE_MAGIC: &[u8; 8] = b"AGENTKV1";

impl PrefixStates {
    fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, tokens: &[LlamaToken]) -> PathBuf {
        self.dir.join(format!(
            "{}.kvstate",
            &hex::encode(token_hash(tokens))[..32]
        ))
    }

    /// Load the state of `tokens` into an emptied cache: `None` when none
    /// was saved (the cache is untouched), `Some(true)` when it loaded and
    /// holds exactly those tokens, `Some(false)` when it failed (the state
    /// is deleted and the cache left empty).
    fn load(&self, ctx: &mut LlamaContext<'_>, tokens: &[LlamaToken]) -> Option<bool> {
        let path = self.path(tokens);
        let bytes = std::fs::read(&path).ok()?;
        let started = Instant::now();
        ctx.clear_kv_cache();
        let loaded = match open_envelope(&bytes, tokens) {
            Ok(state) => {
                // SAFETY: `state` passed the envelope's checksum and was
                // written by this engine build for this model and context
                // size (the folder's key), from `state_seq_get_data_ext`.
                let ok =
                    unsafe { ctx.state_seq_set_data_ext(state, 0, LlamaStateSeqFlags::empty()) };
                if ok {
                    Ok(())
                } else {
                    Err("llama.cpp refused it".to_string())
                }
            }
            Err(why) => Err(why),
        };
        match loaded {
            Ok(()) => {
                tracing::info!(tokens = tokens.len(), ms = started.elapsed().as_millis() as u64, path = %path.display(), "prefix state loaded");
                // Mark it recently used, for pruning.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(true)
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), "removing a saved prefix state: {why}");
                let _ = std::fs::remove_file(&path);
                ctx.clear_kv_cache();
                Some(false)
            }
        }
    }

    /// Save the cache's state (which holds exactly `tokens`), atomically,
    /// and keep only the newest few states. Failures only cost speed.
    fn save(&self, ctx: &LlamaContext<'_>, tokens: &[LlamaToken]) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "cannot keep prefix states: {e}");
            return;
        }
        let flags = LlamaStateSeqFlags::empty();
        let size = ctx.state_seq_get_size_ext(0, flags);
        let mut state = vec![0u8; size];
        // SAFETY: the buffer holds the size llama.cpp just reported.
        let written = unsafe { ctx.state_seq_get_data_ext(state.as_mut_ptr(), 0, flags) };
        if written != size {
            tracing::warn!(
                size,
                written,
                "cannot save a prefix state: llama.cpp wrote another size"
            );
            return;
        }
        let path = self.path(tokens);
        let tmp = self.dir.join(format!(
            ".{}-{}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = std::fs::write(&tmp, seal_envelope(tokens, &state))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!("cannot save a prefix state: {e}");
            let _ = std::fs::remove_file(&tmp);
        }
        self.prune();
    }

    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut states: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "kvstate"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if states.len() <= KEEP_STATES {
            return;
        }
        states.sort();
        for (_, p) in &states[..states.len() - KEEP_STATES] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn token_hash(tokens: &[LlamaToken]) -> [u8; 32] {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.0.to_le_bytes());
    }
    h.finalize().into()
}

/// `MAGIC | n_tokens u32 | tokens i32… | state_len u64 | sha256(tokens, state) | state`.
fn seal_envelope(tokens: &[LlamaToken], state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + tokens.len() * 4 + 64);
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    let mut h = Sha256::new();
    for t in tokens {
        out.extend_from_slice(&t.0.to_le_bytes());
        h.update(t.0.to_le_bytes());
    }
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    h.update(state);
    out.extend_from_slice(&h.finalize());
    out.extend_from_slice(state);
    out
}

/// The state inside `bytes`, if the envelope is whole, its checksum holds
/// and it was saved for exactly `tokens`.
fn open_envelope<'b>(bytes: &'b [u8], tokens: &[LlamaToken]) -> Result<&'b [u8], String> {
    let mut rest = bytes
        .strip_prefix(STATE_MAGIC.as_slice())
        .ok_or("not a prefix-state file")?;
    let mut take = |n: usize| -> Result<&'b [u8], String> {
        if rest.len() < n {
            return Err("the file is cut short".to_string());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "bad count")?) as usize;
    if count != tokens.len() {
        return Err(format!("it holds {count} tokens, not {}", tokens.len()));
    }
    let saved = take(count * 4)?;
    let same = saved
        .chunks_exact(4)
        .zip(tokens)
        .all(|(b, t)| b == t.0.to_le_bytes());
    if !same {
        return Err("it holds other tokens".to_string());
    }
    let len = u64::from_le_bytes(take(8)?.try_into().map_err(|_| "bad length")?);
    let sum = take(32)?;
    let len = usize::try_from(len).map_err(|_| "bad length")?;
    let state = take(len)?;
    if !rest.is_empty() {
        return Err("it has trailing bytes".to_string());
    }
    let mut h = Sha256::new();
    h.update(saved);
    h.update(state);
    if h.finalize().as_slice() != sum {
        return Err("its checksum does not match".to_string());
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_change_with_the_file_the_adapter_and_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m v1.gguf");
        std::fs::write(&p, b"GGUF one").unwrap();
        let a = model_key(&p, None, 8192);
        assert!(a.starts_with("m_v1-"), "{a}");
        assert_ne!(a, model_key(&p, None, 4096));
        assert_ne!(a, model_key(&p, Some(Path::new("lora/ab12.gguf")), 8192));
        std::fs::write(&p, b"GGUF two, longer").unwrap();
        assert_ne!(a, model_key(&p, None, 8192));
    }

    #[test]
    fn state_envelopes_verify_length_checksum_and_tokens() {
        let t = |v: &[i32]| v.iter().map(|&i| LlamaToken(i)).collect::<Vec<_>>();
        let tokens = t(&[5, 6, 7]);
        let sealed = seal_envelope(&tokens, b"kv bytes");
        assert_eq!(open_envelope(&sealed, &tokens), Ok(&b"kv bytes"[..]));
        for cut in [0, 8, 20, sealed.len() - 1] {
            assert!(
                open_envelope(&sealed[..cut], &tokens).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(
            open_envelope(&flipped, &tokens)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(open_envelope(&sealed, &t(&[5, 6, 8])).is_err());
        assert!(open_envelope(&sealed, &t(&[5, 6])).is_err());
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open_envelope(&longer, &tokens).is_err());
    }

    #[test]
    fn common_prefixes() {
        let t = |v: &[i32]| v.iter().map(|&i| LlamaToken(i)).collect::<Vec<_>>();
        assert_eq!(common_prefix(&t(&[1, 2, 3]), &t(&[1, 2, 4])), 2);
        assert_eq!(common_prefix(&t(&[]), &t(&[1])), 0);
        assert_eq!(common_prefix(&t(&[1, 2]), &t(&[1, 2, 3])), 2);
    }
}
