//! Opening the backend a run asked for: one entry point for `agent run`.
//!
//! [`BackendOptions`] is plain data (the resolved config and flags); the
//! factory picks the backend: `--endpoint` means the OpenAI-compatible
//! client with the model string as the server's model id; otherwise the
//! string is a [`ModelRef`]: a script, or a GGUF file that is pulled on
//! first use and loaded in-process.

use std::sync::Arc;
use std::time::Duration;

use super::local::{Engine, LocalOptions};
use super::lora::LoraUse;
use super::openai::{OpenAiBackend, OpenAiConfig};
use super::progress::ModelProgress;
use super::pull::{PullError, Puller};
use super::reference::ModelRef;
use super::registry::DEFAULT_MODEL;
use super::{ModelBackend, ModelError};
use crate::paths::Dirs;

/// Which model to open and how. Plain data, filled from config and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendOptions {
    /// A model reference, or the server's model id with `endpoint`.
    pub model: String,
    /// Base URL of an OpenAI-compatible server (`http://127.0.0.1:8000/v1`).
    pub endpoint: Option<String>,
    /// The environment variable holding the endpoint's API key.
    pub api_key_env: String,
    /// Limit for one model call (endpoint backends).
    pub request_timeout: Duration,
    /// Cap on the context window, in tokens.
    pub context_tokens: Option<usize>,
    /// Run a local model on the CPU even in a CUDA build.
    pub force_cpu: bool,
    /// The engine for local models.
    pub engine: Engine,
    /// LoRA adapters on a local model, as the run records them.
    pub lora: Vec<LoraUse>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.to_string(),
            endpoint: None,
            api_key_env: "OPENAI_API_KEY".to_string(),
            request_timeout: Duration::from_secs(600),
            context_tokens: None,
            force_cpu: false,
            engine: Engine::Auto,
            lora: Vec::new(),
        }
    }
}

/// Open the backend `opts` describes, pulling a model on first use and
/// reporting downloads and loading through `progress`.
pub async fn open_backend(
    opts: &BackendOptions,
    dirs: &Dirs,
    progress: &dyn ModelProgress,
) -> Result<Arc<dyn ModelBackend>, ModelError> {
    if !opts.lora.is_empty() {
        lora_applies(
            &opts.model,
            opts.endpoint.as_deref(),
            opts.engine,
            opts.force_cpu,
        )?;
    }
    if let Some(endpoint) = &opts.endpoint {
        if opts.model.trim().is_empty() {
            return Err(ModelError::ModelNotFound(format!(
                "no model id for the endpoint {endpoint}: pass --model with the server's model id"
            )));
        }
        let mut config = OpenAiConfig::new(endpoint.clone(), opts.model.trim(), &opts.api_key_env);
        config.request_timeout = opts.request_timeout;
        config.context_length = opts.context_tokens;
        return Ok(Arc::new(OpenAiBackend::new(config)?));
    }
    let reference =
        ModelRef::parse(&opts.model).map_err(|e| ModelError::ModelNotFound(e.to_string()))?;
    if let ModelRef::Scripted(path) = &reference {
        return Ok(Arc::new(super::scripted::ScriptedBackend::from_file(path)?));
    }
    let puller = Puller::from_env().map_err(pull_error)?;
    let path = puller
        .resolve_or_pull(&reference, &dirs.models(), progress)
        .await
        .map_err(pull_error)?;
    let lora = if opts.lora.is_empty() {
        None
    } else {
        // Checked against the model's header and written before any
        // weights are loaded.
        let (uses, base, cache) = (opts.lora.clone(), path.clone(), dirs.lora());
        Some(
            tokio::task::spawn_blocking(move || super::lora::prepare(&uses, &base, &cache))
                .await
                .map_err(|e| ModelError::Load(format!("the adapter thread stopped: {e}")))?
                .map_err(|e| ModelError::Load(e.to_string()))?,
        )
    };
    let options = LocalOptions {
        context_tokens: opts.context_tokens,
        force_cpu: opts.force_cpu,
        engine: opts.engine,
        state_dir: Some(dirs.prefix_states()),
        lora,
    };
    super::local::load(&path, reference.label(), &options, progress).await
}

/// Whether LoRA adapters can go on `model`: a local GGUF model run by
/// llama.cpp (not a server's model, a script, or mistral.rs).
pub fn lora_applies(
    model: &str,
    endpoint: Option<&str>,
    engine: Engine,
    force_cpu: bool,
) -> Result<(), ModelError> {
    let refuse = |why: &str| Err(ModelError::Load(why.to_string()));
    if endpoint.is_some() {
        return refuse(
            "LoRA adapters apply to local GGUF models; a model behind --endpoint is served with whatever adapters its server loaded",
        );
    }
    if model.trim_start().starts_with("scripted:") {
        return refuse("LoRA adapters apply to local GGUF models, not to a scripted model");
    }
    if engine.resolve(force_cpu) == Engine::MistralRs {
        return refuse(super::local::NO_MISTRALRS_LORA);
    }
    Ok(())
}

/// Map a pull failure to the model error the agent reports.
pub fn pull_error(e: PullError) -> ModelError {
    match e {
        PullError::Status { status: 404, .. } => ModelError::ModelNotFound(e.to_string()),
        other => ModelError::Load(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_models_are_model_not_found_with_the_choices() {
        let dirs = Dirs::resolve(Some(std::path::Path::new("/nonexistent-home")), None).unwrap();
        let opts = BackendOptions {
            model: "gpt-17".into(),
            ..Default::default()
        };
        let err = open_backend(&opts, &dirs, &super::super::progress::NoProgress)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, ModelError::ModelNotFound(m) if m.contains("smollm2-135m")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_endpoint_needs_a_model_id_and_makes_no_request_when_opened() {
        let dirs = Dirs::resolve(Some(std::path::Path::new("/nonexistent-home")), None).unwrap();
        let opts = BackendOptions {
            model: " ".into(),
            endpoint: Some("http://127.0.0.1:9/v1".into()),
            ..Default::default()
        };
        assert!(matches!(
            open_backend(&opts, &dirs, &super::super::progress::NoProgress).await,
            Err(ModelError::ModelNotFound(_))
        ));
        let opts = BackendOptions {
            model: "m".into(),
            ..opts
        };
        let b = open_backend(&opts, &dirs, &super::super::progress::NoProgress)
            .await
            .unwrap();
        assert_eq!(b.name(), "m@http://127.0.0.1:9/v1");
    }

    #[test]
    fn opening_can_run_on_a_spawned_task() {
        // `agent run` may spawn the (slow) load beside a spinner: the future
        // must be Send. This fails to compile otherwise; it is never polled.
        fn is_send<T: Send>(_: &T) {}
        let dirs = Dirs::resolve(Some(std::path::Path::new("/nonexistent-home")), None).unwrap();
        let opts = BackendOptions::default();
        let fut = open_backend(&opts, &dirs, &super::super::progress::NoProgress);
        is_send(&fut);
    }
}
