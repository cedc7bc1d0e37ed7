//! Local models: which in-process engine runs a GGUF file, and the options
//! both engines take.
//!
//! Two engines sit behind [`super::ModelBackend`] with the same semantics
//! (chat template from the GGUF, JSON-schema-constrained decoding by
//! llguidance, prefix reuse, cancellation): llama.cpp
//! ([`super::llamacpp`]) and mistral.rs ([`super::mistralrs`]). The
//! `engine:` setting chooses; `auto` takes what our side-by-side
//! measurements found fastest for the device: llama.cpp on a CPU (several
//! times faster than mistral.rs 0.8.1 there, see the README), mistral.rs in
//! a CUDA build.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::llamacpp::LlamaCppBackend;
use super::mistralrs::MistralRsBackend;
use super::progress::ModelProgress;
use super::{ModelBackend, ModelError};

/// Which engine runs local models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// The fastest for this build and device.
    #[default]
    Auto,
    /// llama.cpp (through `llama-cpp-2`).
    LlamaCpp,
    /// mistral.rs.
    MistralRs,
}

impl Engine {
    /// The names accepted in config and flags.
    pub const NAMES: &'static str = "auto, llama.cpp, mistral.rs";

    /// The concrete engine `auto` stands for, given whether a GPU build runs
    /// on its GPU.
    pub fn resolve(self, force_cpu: bool) -> Engine {
        match self {
            Engine::Auto if cfg!(feature = "cuda") && !force_cpu => Engine::MistralRs,
            Engine::Auto => Engine::LlamaCpp,
            other => other,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Auto => "auto",
            Engine::LlamaCpp => "llama.cpp",
            Engine::MistralRs => "mistral.rs",
        })
    }
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Engine::Auto),
            "llama.cpp" | "llamacpp" | "llama-cpp" => Ok(Engine::LlamaCpp),
            "mistral.rs" | "mistralrs" | "mistral-rs" => Ok(Engine::MistralRs),
            other => Err(format!(
                "unknown engine `{other}`; choose one of {}",
                Engine::NAMES
            )),
        }
    }
}

/// How to load a local model. Plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalOptions {
    /// Cap the context below the model's own (to bound memory).
    pub context_tokens: Option<usize>,
    /// Run on the CPU even in a CUDA build.
    pub force_cpu: bool,
    /// Which engine.
    pub engine: Engine,
    /// Where the llama.cpp engine keeps prompt-prefix states between
    /// processes (`None`: it does not).
    pub state_dir: Option<PathBuf>,
    /// A GGUF LoRA file (made by [`super::lora::prepare`]) applied at
    /// scale 1 on top of the model.
    pub lora: Option<PathBuf>,
}

/// Why a run with adapters does not use mistral.rs (see `super::lora`).
pub const NO_MISTRALRS_LORA: &str = "LoRA adapters run on the llama.cpp engine: mistral.rs 0.8.1 drops a GGUF adapter's merged weights, so it would run without the adapter; use --engine llama.cpp";

/// Load the GGUF at `path` with the engine `options` choose.
pub async fn load(
    path: &Path,
    name: impl Into<String>,
    options: &LocalOptions,
    progress: &dyn ModelProgress,
) -> Result<Arc<dyn ModelBackend>, ModelError> {
    Ok(match options.engine.resolve(options.force_cpu) {
        Engine::MistralRs if options.lora.is_some() => {
            return Err(ModelError::Load(NO_MISTRALRS_LORA.into()));
        }
        Engine::MistralRs => Arc::new(MistralRsBackend::load(path, name, options, progress).await?),
        Engine::LlamaCpp | Engine::Auto => {
            Arc::new(LlamaCppBackend::load(path, name, options, progress).await?)
        }
    })
}

/// The schema with llguidance told to emit compact JSON (no free whitespace),
/// unless the caller already set `x-guidance` options.
pub fn compact_schema(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| json!({"whitespace_flexible": false}));
    }
    s
}

/// A memo of token counts by text, shared by both engines: the context
/// budget counts the same prompt pieces every step, and tokenizing them
/// again costs more than a hash. Cleared when it reaches its size.
#[derive(Default)]
pub(crate) struct TokenCounts(Mutex<HashMap<u64, usize>>);

impl TokenCounts {
    const MAX: usize = 4096;

    /// The count of `text`, from the memo or from `count` (then kept).
    pub(crate) fn get_or(
        &self,
        text: &str,
        count: impl FnOnce() -> Option<usize>,
    ) -> Option<usize> {
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            h.finish()
        };
        if let Some(n) = self.0.lock().ok().and_then(|c| c.get(&key).copied()) {
            return Some(n);
        }
        let n = count()?;
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= Self::MAX {
                cache.clear();
            }
            cache.insert(key, n);
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_are_counted_once_per_text() {
        let memo = TokenCounts::default();
        let calls = std::cell::Cell::new(0);
        let count = || {
            calls.set(calls.get() + 1);
            Some(3)
        };
        assert_eq!(memo.get_or("a b c", count), Some(3));
        assert_eq!(memo.get_or("a b c", count), Some(3));
        assert_eq!(calls.get(), 1);
        // A failed count is not remembered.
        assert_eq!(memo.get_or("x", || None), None);
        assert_eq!(memo.get_or("x", || Some(1)), Some(1));
    }

    #[test]
    fn schemas_get_compact_whitespace_unless_the_caller_chose() {
        let s = compact_schema(&json!({"type": "object"}));
        assert_eq!(s["x-guidance"], json!({"whitespace_flexible": false}));
        let mine = json!({"type": "object", "x-guidance": {"whitespace_flexible": true}});
        assert_eq!(compact_schema(&mine), mine);
    }

    #[test]
    fn engines_parse_and_auto_picks_llama_cpp_on_a_cpu() {
        assert_eq!("llama.cpp".parse(), Ok(Engine::LlamaCpp));
        assert_eq!("Mistral.rs".parse(), Ok(Engine::MistralRs));
        assert_eq!("auto".parse(), Ok(Engine::Auto));
        let e = "vllm".parse::<Engine>().unwrap_err();
        assert!(e.contains("vllm") && e.contains("llama.cpp"), "{e}");
        assert_eq!(Engine::Auto.resolve(true), Engine::LlamaCpp);
        if !cfg!(feature = "cuda") {
            assert_eq!(Engine::Auto.resolve(false), Engine::LlamaCpp);
        }
        assert_eq!(Engine::MistralRs.resolve(false), Engine::MistralRs);
        assert_eq!(Engine::LlamaCpp.to_string(), "llama.cpp");
    }
}
