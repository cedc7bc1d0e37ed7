//! Configuration: defaults < `config.yaml` < `AGENT_*` environment < flags.
//!
//! Every layer is read into the same all-optional [`ConfigLayer`] with
//! `deny_unknown_fields`, so an unknown key or a wrong type is an error that
//! names the file (or variable), the line and the key, before anything runs.
//! The resolved [`Config`] remembers where each value came from, for
//! `agent config show`. There is no global config: it is built once at the
//! binary's edge and passed down.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::approval::ApprovalConfig;
use crate::memory::settings::{MemoryLayer, MemorySettings};
use crate::model::local::Engine;
use crate::model::lora::LoraSpec;
use crate::model::roles::{ModelRole, RoleEntry, RoleSpec};
use crate::plugin::policy::PluginPolicy;

/// The default model reference.
pub use crate::model::registry::DEFAULT_MODEL;

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "from")]
pub enum Source {
    /// Built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// One layer of settings; every field optional. The same keys are valid in
/// `config.yaml`, as `AGENT_<KEY>` variables and (for most) as flags.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Model reference: a short name, a `.gguf` path, `hf:REPO/FILE.gguf`,
    /// `scripted:FILE.yaml`, or the server's model id with `endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Base URL of an OpenAI-compatible server (e.g. `http://127.0.0.1:8000/v1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The engine for local GGUF models: `auto` (llama.cpp on a CPU,
    /// mistral.rs in a CUDA build), `llama.cpp` or `mistral.rs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Name of the environment variable that holds the endpoint's API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// LoRA adapters on the local model: `PATH` or `PATH:SCALE` (PEFT
    /// folders), one or a list. A later layer replaces the list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<OneOrMany>,
    /// Most steps a run may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Most tokens (prompt + completion, summed over steps) a run may spend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Most tokens the model may generate in one step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_tokens: Option<u32>,
    /// Wall-clock limit of a run, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Limit of one model call, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_timeout_secs: Option<u64>,
    /// Sampling temperature (0 = deterministic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Candidate actions sampled per step; above 1 the majority wins
    /// (`agent::vote`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// The temperature the candidates are sampled at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_temperature: Option<f64>,
    /// Earlier runs with similar goals shown as worked examples (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub past_examples: Option<u32>,
    /// New samples drawn when the model's action repeats one the loop
    /// guard would refuse (0: none; `agent::react`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_resamples: Option<u32>,
    /// Offer every recipe on the search path (`./recipes/`, the config
    /// directory's `recipes/`) to runs as a tool `recipe_NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe_tools: Option<bool>,
    /// The only directory tools may see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    /// Context window to assume when the model does not say (tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u32>,
    /// Longest observation shown to the model, in characters (head and tail kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observation_chars: Option<u32>,
    /// Plugin permissions the user grants (intersected with each manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugins: Option<PluginPolicy>,
    /// Approval policies per tool class and per tool (auto, ask, deny).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalConfig>,
    /// The interactive session (`agent`, `agent chat`): edit mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repl: Option<ReplConfig>,
    /// Long-term memory and the knowledge base: embedder, recall, chunks.
    /// Merged key by key across layers; `AGENT_EMBEDDER` and
    /// `AGENT_EMBED_ENDPOINT` set its first two keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryLayer>,
    /// A model per role (`default`, `smart`, `fast`, `judge`;
    /// `crate::model::roles`), merged role by role across layers. A role
    /// left out is the default model; `models.default` is another way to
    /// write `model` (and `endpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<BTreeMap<String, RoleEntry>>,
    /// Memory the local models of a run may use together, in MiB (default:
    /// what the machine has free).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
    /// MCP servers whose tools runs may use (`crate::mcp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Vec<crate::mcp::ServerConfig>>,
}

/// One string or a list of them (`lora: a` or `lora: [a, b]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Serialise a value by its `Display` form.
fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serialise a list by its items' `Display` forms.
fn display_all<T: fmt::Display, S: serde::Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// The resolved configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub model: String,
    pub endpoint: Option<String>,
    #[serde(serialize_with = "display")]
    pub engine: Engine,
    pub api_key_env: String,
    /// LoRA adapters on the local default model.
    #[serde(serialize_with = "display_all")]
    pub lora: Vec<LoraSpec>,
    pub max_steps: u32,
    pub max_tokens: u64,
    pub step_tokens: u32,
    pub timeout_secs: u64,
    pub model_timeout_secs: u64,
    pub temperature: f64,
    pub samples: u32,
    pub sample_temperature: f64,
    pub past_examples: u32,
    pub repeat_resamples: u32,
    pub recipe_tools: bool,
    pub workspace: PathBuf,
    pub context_tokens: u32,
    pub observation_chars: u32,
    pub plugins: PluginPolicy,
    pub approvals: ApprovalConfig,
    pub repl: ReplConfig,
    pub memory: MemorySettings,
    /// The model of each role that has one of its own (`models:`, `--smart`,
    /// `--fast`); `default` is `model`/`endpoint`, and its price is
    /// `default_price`.
    pub models: BTreeMap<ModelRole, RoleSpec>,
    /// What the default model costs (`models.default.price_in`/`price_out`),
    /// while `model` is still the one `models.default` named.
    pub default_price: Option<crate::model::roles::Price>,
    /// Cap, in MiB, on the memory the local models of a run use together.
    pub memory_limit_mb: Option<u64>,
    /// MCP servers whose tools runs may use.
    pub mcp: Vec<crate::mcp::ServerConfig>,
    /// Where each key's value came from.
    #[serde(skip)]
    pub sources: BTreeMap<&'static str, Source>,
}

/// A configuration problem; each says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("invalid value for {key} ({source_desc}): {message}")]
    Invalid {
        key: &'static str,
        source_desc: String,
        message: String,
    },
    #[error("cannot write config file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {0} already exists; edit it, or move it aside to start over")]
    Exists(PathBuf),
}

/// The most candidate actions a step may sample.
pub const MAX_SAMPLES: u32 = 16;

const KEYS: &[&str] = &[
    "model",
    "endpoint",
    "engine",
    "api_key_env",
    "lora",
    "max_steps",
    "max_tokens",
    "step_tokens",
    "timeout_secs",
    "model_timeout_secs",
    "temperature",
    "samples",
    "sample_temperature",
    "past_examples",
    "repeat_resamples",
    "recipe_tools",
    "workspace",
    "context_tokens",
    "observation_chars",
    "plugins",
    "approvals",
    "repl",
    "memory",
    "models",
    "memory_limit_mb",
    "mcp",
];

impl ConfigLayer {
    /// The built-in defaults.
    pub fn defaults() -> Self {
        Self {
            model: Some(DEFAULT_MODEL.into()),
            endpoint: None,
            engine: Some("auto".into()),
            api_key_env: Some("OPENAI_API_KEY".into()),
            lora: None,
            max_steps: Some(20),
            max_tokens: Some(200_000),
            step_tokens: Some(512),
            timeout_secs: Some(900),
            model_timeout_secs: Some(300),
            temperature: Some(0.0),
            samples: Some(1),
            sample_temperature: Some(0.7),
            past_examples: Some(2),
            repeat_resamples: Some(2),
            recipe_tools: Some(true),
            workspace: Some(PathBuf::from("workspace")),
            context_tokens: Some(8192),
            observation_chars: Some(4000),
            plugins: Some(PluginPolicy::default()),
            approvals: Some(ApprovalConfig::default()),
            repl: Some(ReplConfig::default()),
            memory: Some(MemoryLayer::default()),
            models: None,
            memory_limit_mb: None,
            mcp: None,
        }
    }

    /// Parse `config.yaml` text; errors name the file, line and key.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read `path` if it exists (a missing file is an empty layer).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_yaml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Read `AGENT_<KEY>` variables through `get` (values are YAML scalars).
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, BTreeMap<&'static str, String>), ConfigError> {
        let mut map = serde_yaml::Mapping::new();
        let mut vars = BTreeMap::new();
        for key in KEYS.iter().copied().filter(|k| {
            !matches!(
                *k,
                "plugins" | "approvals" | "repl" | "memory" | "models" | "mcp"
            )
        }) {
            let var = format!("AGENT_{}", key.to_ascii_uppercase());
            let Some(value) = get(&var) else { continue };
            // Strings stay strings even when they look like numbers or bools.
            let parsed = match key {
                "model" | "endpoint" | "engine" | "api_key_env" | "workspace" | "lora" => {
                    serde_yaml::Value::String(value.clone())
                }
                _ => {
                    serde_yaml::from_str(&value).unwrap_or(serde_yaml::Value::String(value.clone()))
                }
            };
            let one: serde_yaml::Mapping =
                [(serde_yaml::Value::String(key.into()), parsed.clone())]
                    .into_iter()
                    .collect();
            serde_yaml::from_value::<ConfigLayer>(serde_yaml::Value::Mapping(one)).map_err(
                |e| ConfigError::Env {
                    var: var.clone(),
                    value: value.clone(),
                    message: e.to_string(),
                },
            )?;
            map.insert(serde_yaml::Value::String(key.into()), parsed);
            vars.insert(key, var);
        }
        let mut layer: ConfigLayer = serde_yaml::from_value(serde_yaml::Value::Mapping(map))
            .map_err(|e| ConfigError::Env {
                var: "AGENT_*".into(),
                value: String::new(),
                message: e.to_string(),
            })?;
        // Two keys of the `memory:` section have variables of their own.
        let embedder = get("AGENT_EMBEDDER");
        let embed_endpoint = get("AGENT_EMBED_ENDPOINT");
        if embedder.is_some() || embed_endpoint.is_some() {
            let var = if embedder.is_some() {
                "AGENT_EMBEDDER"
            } else {
                "AGENT_EMBED_ENDPOINT"
            };
            vars.insert("memory", var.to_string());
            layer.memory = Some(MemoryLayer {
                embedder,
                embed_endpoint,
                ..Default::default()
            });
        }
        Ok((layer, vars))
    }
}

/// Fill `merged` from `layer` where it sets a key, recording `source(key)`
/// for each key it sets. Layers that cannot set a key (sections have no
/// environment variable or flag) simply leave it `None`.
fn overlay(
    merged: &mut ConfigLayer,
    sources: &mut BTreeMap<&'static str, Source>,
    layer: &ConfigLayer,
    source: &dyn Fn(&str) -> Source,
) {
    macro_rules! keys {
        ($($key:ident),*) => {
            $(
                if let Some(v) = &layer.$key {
                    merged.$key = Some(v.clone());
                    sources.insert(stringify!($key), source(stringify!($key)));
                }
            )*
        };
    }
    keys!(
        model,
        endpoint,
        engine,
        api_key_env,
        lora,
        max_steps,
        max_tokens,
        step_tokens,
        timeout_secs,
        model_timeout_secs,
        temperature,
        samples,
        sample_temperature,
        past_examples,
        repeat_resamples,
        recipe_tools,
        workspace,
        context_tokens,
        observation_chars,
        plugins,
        approvals,
        repl
    );
    if let Some(m) = &layer.memory {
        merged.memory.get_or_insert_default().merge(m);
        sources.insert("memory", source("memory"));
    }
    keys!(memory_limit_mb, mcp);
    if let Some(models) = &layer.models {
        let merged_models = merged.models.get_or_insert_default();
        for (role, entry) in models {
            merged_models.insert(role.clone(), entry.clone());
        }
        sources.insert("models", source("models"));
        // `models.default` is `model` (and `endpoint`) by another name:
        // whichever layer sets it last wins.
        if let Some(RoleEntry(default)) = models.get("default") {
            merged.model = Some(default.model.clone());
            merged.endpoint = default.endpoint.clone().or(Some(String::new()));
            sources.insert("model", source("models"));
        }
    }
}

impl Config {
    /// Resolve from the layers, lowest precedence first. `env_vars` maps each
    /// key set by the environment layer to its variable name; `flag_names`
    /// maps each key set by flags to its flag.
    pub fn resolve(
        file: Option<(&ConfigLayer, &Path)>,
        env: Option<(&ConfigLayer, &BTreeMap<&'static str, String>)>,
        flags: Option<(&ConfigLayer, &BTreeMap<&'static str, String>)>,
    ) -> Result<Self, ConfigError> {
        for (layer, from) in [
            file.map(|(l, p)| (l, p.display().to_string())),
            env.map(|(l, _)| (l, "the environment".to_string())),
            flags.map(|(l, _)| (l, "the flags".to_string())),
        ]
        .into_iter()
        .flatten()
        {
            let default_role = layer.models.as_ref().and_then(|m| m.get("default"));
            if layer.model.is_some() && default_role.is_some() {
                return Err(ConfigError::Invalid {
                    key: "models",
                    source_desc: from,
                    message: "sets both `model` and `models.default`, which are the same setting; keep one".into(),
                });
            }
        }
        let mut merged = ConfigLayer::defaults();
        let mut sources: BTreeMap<&'static str, Source> =
            KEYS.iter().map(|k| (*k, Source::Default)).collect();
        if let Some((layer, path)) = file {
            let src = |_: &str| Source::File(path.to_path_buf());
            overlay(&mut merged, &mut sources, layer, &src);
        }
        if let Some((layer, vars)) = env {
            let src = |k: &str| {
                Source::Env(
                    vars.get(k)
                        .cloned()
                        .unwrap_or_else(|| format!("AGENT_{}", k.to_ascii_uppercase())),
                )
            };
            overlay(&mut merged, &mut sources, layer, &src);
        }
        if let Some((layer, names)) = flags {
            let src = |k: &str| {
                Source::Flag(
                    names
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| format!("--{}", k.replace('_', "-"))),
                )
            };
            overlay(&mut merged, &mut sources, layer, &src);
        }
        let invalid = |key: &'static str, message: &str| ConfigError::Invalid {
            key,
            source_desc: sources
                .get(key)
                .map(ToString::to_string)
                .unwrap_or_default(),
            message: message.to_string(),
        };
        // Every field is Some after the defaults layer.
        let mut config = Config {
            model: merged.model.unwrap_or_else(|| DEFAULT_MODEL.into()),
            endpoint: merged.endpoint.filter(|e| !e.is_empty()),
            engine: merged
                .engine
                .as_deref()
                .unwrap_or("auto")
                .parse()
                .map_err(|message: String| invalid("engine", &message))?,
            api_key_env: merged.api_key_env.unwrap_or_default(),
            lora: merged
                .lora
                .as_ref()
                .map(OneOrMany::items)
                .unwrap_or_default()
                .iter()
                .map(|s| s.parse::<LoraSpec>())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("lora", &e.to_string()))?,
            max_steps: merged.max_steps.unwrap_or(20),
            max_tokens: merged.max_tokens.unwrap_or(200_000),
            step_tokens: merged.step_tokens.unwrap_or(512),
            timeout_secs: merged.timeout_secs.unwrap_or(900),
            model_timeout_secs: merged.model_timeout_secs.unwrap_or(300),
            temperature: merged.temperature.unwrap_or(0.0),
            samples: merged.samples.unwrap_or(1),
            sample_temperature: merged.sample_temperature.unwrap_or(0.7),
            past_examples: merged.past_examples.unwrap_or(2),
            repeat_resamples: merged.repeat_resamples.unwrap_or(2),
            recipe_tools: merged.recipe_tools.unwrap_or(true),
            workspace: merged
                .workspace
                .unwrap_or_else(|| PathBuf::from("workspace")),
            context_tokens: merged.context_tokens.unwrap_or(8192),
            observation_chars: merged.observation_chars.unwrap_or(4000),
            plugins: merged.plugins.unwrap_or_default(),
            approvals: merged.approvals.unwrap_or_default(),
            repl: merged.repl.unwrap_or_default(),
            memory: merged
                .memory
                .unwrap_or_default()
                .resolve()
                .map_err(|(key, message)| ConfigError::Invalid {
                    key,
                    source_desc: sources
                        .get("memory")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    message,
                })?,
            models: BTreeMap::new(),
            default_price: None,
            memory_limit_mb: merged.memory_limit_mb,
            mcp: merged.mcp.clone().unwrap_or_default(),
            sources: BTreeMap::new(),
        };
        for (name, RoleEntry(spec)) in merged.models.unwrap_or_default() {
            let role = ModelRole::parse(&name).map_err(|message| invalid("models", &message))?;
            if let Some(problem) = spec.problem() {
                return Err(invalid("models", &format!("the `{role}` role {problem}")));
            }
            if let Some(endpoint) = &spec.endpoint
                && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            {
                return Err(invalid(
                    "models",
                    &format!("the `{role}` role's endpoint must be an http:// or https:// URL"),
                ));
            }
            if role == ModelRole::Default {
                config.default_price = (spec.model == config.model).then(|| spec.price()).flatten();
            } else {
                config.models.insert(role, spec);
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for server in &config.mcp {
            if let Some(problem) = server.problems().first() {
                return Err(invalid(
                    "mcp",
                    &format!("server `{}`: {problem}", server.name),
                ));
            }
            if !names.insert(server.name.as_str()) {
                return Err(invalid(
                    "mcp",
                    &format!("server `{}` is listed twice", server.name),
                ));
            }
        }
        if config.memory_limit_mb == Some(0) {
            return Err(invalid("memory_limit_mb", "must be at least 1 (MiB)"));
        }
        if config.model.trim().is_empty() {
            return Err(invalid(
                "model",
                "must not be empty; e.g. qwen2.5-coder-1.5b",
            ));
        }
        if config.max_steps == 0 {
            return Err(invalid("max_steps", "must be at least 1"));
        }
        if config.max_tokens == 0 {
            return Err(invalid("max_tokens", "must be at least 1"));
        }
        if !(16..=32768).contains(&config.step_tokens) {
            return Err(invalid("step_tokens", "must be between 16 and 32768"));
        }
        if config.timeout_secs == 0 || config.model_timeout_secs == 0 {
            return Err(invalid(
                if config.timeout_secs == 0 {
                    "timeout_secs"
                } else {
                    "model_timeout_secs"
                },
                "must be at least 1 second",
            ));
        }
        if !(0.0..=2.0).contains(&config.temperature) {
            return Err(invalid("temperature", "must be between 0 and 2"));
        }
        if !(1..=MAX_SAMPLES).contains(&config.samples) {
            return Err(invalid(
                "samples",
                &format!("must be between 1 (one greedy action per step) and {MAX_SAMPLES}"),
            ));
        }
        if config.repeat_resamples > 5 {
            return Err(invalid(
                "repeat_resamples",
                "must be between 0 (never resample a repeated action) and 5",
            ));
        }
        if config.past_examples > 5 {
            return Err(invalid(
                "past_examples",
                "must be between 0 (none) and 5; each example costs prompt tokens",
            ));
        }
        if !(config.sample_temperature > 0.0 && config.sample_temperature <= 2.0) {
            return Err(invalid(
                "sample_temperature",
                "must be above 0 and at most 2 (samples at temperature 0 would all be the same)",
            ));
        }
        if config.context_tokens < 512 {
            return Err(invalid("context_tokens", "must be at least 512"));
        }
        if config.observation_chars < 200 {
            return Err(invalid("observation_chars", "must be at least 200"));
        }
        if let Some(endpoint) = &config.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "endpoint",
                "must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1",
            ));
        }
        Ok(Config { sources, ..config })
    }

    /// Load defaults < file < environment < `flags` for the user of `dirs`.
    pub fn load(
        config_file: &Path,
        flags: &ConfigLayer,
        flag_names: &BTreeMap<&'static str, String>,
    ) -> Result<Self, ConfigError> {
        let file = ConfigLayer::from_file(config_file)?;
        let (env, vars) = ConfigLayer::from_env(|k| std::env::var(k).ok())?;
        Self::resolve(
            Some((&file, config_file)),
            Some((&env, &vars)),
            Some((flags, flag_names)),
        )
    }

    /// `key: value  (source)` lines for `agent config show`.
    pub fn show(&self) -> Vec<(String, String, String)> {
        let value = serde_json::to_value(self).unwrap_or_default();
        KEYS.iter()
            .map(|k| {
                let v = value.get(*k).cloned().unwrap_or_default();
                let shown = match &v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "(none)".into(),
                    other => other.to_string(),
                };
                let src = self
                    .sources
                    .get(k)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "default".into());
                (k.to_string(), shown, src)
            })
            .collect()
    }
}

/// The commented template written by `agent config init`.
pub const CONFIG_TEMPLATE: &str = include_str!("config_template.yaml");

/// Write the template to `path`, refusing to overwrite.
pub fn init_file(path: &Path) -> Result<(), ConfigError> {
    if path.exists() {
        return Err(ConfigError::Exists(path.to_path_buf()));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, CONFIG_TEMPLATE).map_err(|source| ConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Line editing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EditMode {
    /// Emacs keys (the default).
    #[default]
    Emacs,
    /// Vi keys.
    Vi,
}

/// The `repl:` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReplConfig {
    /// `emacs` or `vi`.
    pub edit_mode: EditMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_file(text: &str) -> Result<Config, ConfigError> {
        let path = Path::new("/home/u/.config/agent/config.yaml");
        let layer = ConfigLayer::from_yaml(text, path)?;
        Config::resolve(Some((&layer, path)), None, None)
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = resolve_file("max_steps: 3\nmodle: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.yaml"), "{e}");
        assert!(e.contains("modle"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let e = resolve_file("model: x\nmax_steps: many\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_steps"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let path = Path::new("/c.yaml");
        let file =
            ConfigLayer::from_yaml("max_steps: 5\nmodel: a\ntemperature: 0.5\n", path).unwrap();
        let (env, vars) = ConfigLayer::from_env(|k| match k {
            "AGENT_MAX_STEPS" => Some("7".into()),
            "AGENT_MODEL" => Some("b".into()),
            _ => None,
        })
        .unwrap();
        let flags = ConfigLayer {
            model: Some("c".into()),
            ..Default::default()
        };
        let names = [("model", "--model".to_string())].into_iter().collect();
        let c = Config::resolve(
            Some((&file, path)),
            Some((&env, &vars)),
            Some((&flags, &names)),
        )
        .unwrap();
        assert_eq!(c.model, "c");
        assert_eq!(c.sources["model"], Source::Flag("--model".into()));
        assert_eq!(c.max_steps, 7);
        assert_eq!(
            c.sources["max_steps"],
            Source::Env("AGENT_MAX_STEPS".into())
        );
        assert_eq!(c.temperature, 0.5);
        assert_eq!(c.sources["temperature"], Source::File(path.into()));
        assert_eq!(c.step_tokens, 512);
        assert_eq!(c.sources["step_tokens"], Source::Default);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let e = ConfigLayer::from_env(|k| (k == "AGENT_MAX_STEPS").then(|| "lots".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("AGENT_MAX_STEPS"), "{e}");
    }

    #[test]
    fn numeric_looking_model_names_stay_strings() {
        let (env, _) =
            ConfigLayer::from_env(|k| (k == "AGENT_MODEL").then(|| "123".to_string())).unwrap();
        assert_eq!(env.model.as_deref(), Some("123"));
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_source() {
        let e = resolve_file("max_steps: 0\n").unwrap_err().to_string();
        assert!(e.contains("max_steps") && e.contains("config.yaml"), "{e}");
        let e = resolve_file("endpoint: localhost:8000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoint"), "{e}");
    }

    #[test]
    fn the_memory_section_merges_with_the_embedder_variables() {
        let path = Path::new("/c.yaml");
        let file = ConfigLayer::from_yaml(
            "memory:\n  embedder: minilm\n  min_bm25: 0.6\n  kb_chunk_tokens: 128\n",
            path,
        )
        .unwrap();
        let (env, vars) = ConfigLayer::from_env(|k| {
            (k == "AGENT_EMBEDDER").then(|| "hf:BAAI/bge-small-en-v1.5".to_string())
        })
        .unwrap();
        let c = Config::resolve(Some((&file, path)), Some((&env, &vars)), None).unwrap();
        assert_eq!(c.memory.embedder, "hf:BAAI/bge-small-en-v1.5");
        assert_eq!(c.memory.min_bm25, 0.6);
        assert_eq!(c.memory.kb_chunk_tokens, 128);
        assert_eq!(c.sources["memory"], Source::Env("AGENT_EMBEDDER".into()));

        let e = resolve_file("memory:\n  min_cosine: 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("memory.min_cosine") && e.contains("config.yaml"),
            "{e}"
        );
        let e = resolve_file("memory:\n  embeder: minilm\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("embeder") && e.contains("line 2"), "{e}");
        let (env, vars) =
            ConfigLayer::from_env(|k| (k == "AGENT_EMBEDDER").then(|| "glove".to_string()))
                .unwrap();
        let e = Config::resolve(None, Some((&env, &vars)), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AGENT_EMBEDDER") && e.contains("glove"), "{e}");
    }

    #[test]
    fn the_template_is_a_valid_config() {
        resolve_file(CONFIG_TEMPLATE).unwrap();
    }
}
