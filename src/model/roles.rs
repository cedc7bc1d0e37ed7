//! Model roles: which model answers which kind of call, and what each
//! model cost.
//!
//! A run has a `default` model (its ReAct steps) and may name others by
//! role: `smart` (planning, replanning, and the step after the default model
//! stumbled: an escalation), `fast` (history summaries and end-of-run
//! reflections) and `judge` (`agent eval`'s LLM grading). A role left out is
//! the default model. [`RoleModels`] holds them; one that is not the
//! default is opened on its first call ([`Lazy`]), so a role a run never
//! uses is never loaded, and roles naming the same model share one backend.
//!
//! Every call goes through [`Metered`], which adds its tokens, seconds and
//! (where the config gives prices) money to the run's [`CostAccount`]; the
//! account ends up in the run record, `run_finished`, `agent runs show`,
//! the REPL's `/cost` and eval reports.
//!
//! Before two local models share a process, [`estimate_bytes`] reads what
//! each needs from its GGUF header (the weights, and the KV cache at the
//! context the run uses) so that the caller can refuse with both figures
//! instead of swapping.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::gguf::GgufMetadata;
use super::{Completion, CompletionRequest, ModelBackend, ModelError, TokenSink};

/// What a model is asked to do in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelRole {
    /// The ReAct steps.
    Default,
    /// Planning, replanning, and the step after an escalation.
    Smart,
    /// History summaries and end-of-run reflections.
    Fast,
    /// `agent eval`'s LLM grading.
    Judge,
}

impl ModelRole {
    /// Every role, in the order they are shown.
    pub const ALL: [ModelRole; 4] = [Self::Default, Self::Smart, Self::Fast, Self::Judge];

    /// The role's name in config, flags and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Smart => "smart",
            Self::Fast => "fast",
            Self::Judge => "judge",
        }
    }

    /// The role called `name`; the error names the roles there are.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown model role `{name}`; the roles are {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

impl fmt::Display for ModelRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model one role names in config (`models:`), in a run's settings and
/// on the command line (`--smart MODEL`): a model reference, or a server's
/// model id with `endpoint`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// A model reference (`smollm2-135m`, a `.gguf` path, `hf:...`,
    /// `scripted:...`), or the server's model id with `endpoint`.
    pub model: String,
    /// An OpenAI-compatible server for this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The environment variable with the endpoint's API key (default: the
    /// config's `api_key_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Price per million prompt tokens, for the cost account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_in: Option<f64>,
    /// Price per million completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_out: Option<f64>,
}

impl RoleSpec {
    /// A role naming just a model reference.
    pub fn named(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Its price, where either side is given (the other counts 0).
    pub fn price(&self) -> Option<Price> {
        (self.price_in.is_some() || self.price_out.is_some()).then(|| Price {
            input: self.price_in.unwrap_or(0.0),
            output: self.price_out.unwrap_or(0.0),
        })
    }

    /// What is wrong with it, if anything (empty model, negative price).
    pub fn problem(&self) -> Option<String> {
        if self.model.trim().is_empty() {
            return Some("names no model".into());
        }
        if [self.price_in, self.price_out]
            .into_iter()
            .flatten()
            .any(|p| !(p >= 0.0 && p.is_finite()))
        {
            return Some("has a price that is not a number of 0 or more".into());
        }
        None
    }
}

/// A role's entry as written: a bare model reference, or a map.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct RoleEntry(pub RoleSpec);

impl<'de> Deserialize<'de> for RoleEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(model) => Ok(Self(RoleSpec::named(model))),
            map @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value(map)
                .map(Self)
                .map_err(|e| D::Error::custom(format!("in a model role: {e}"))),
            other => Err(D::Error::custom(format!(
                "a model role is a model reference or a map with `model` (and `endpoint`, `api_key_env`, `price_in`, `price_out`), not {other:?}"
            ))),
        }
    }
}

/// What one model costs, per million tokens (an endpoint's price list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

/// One model's share of a run's (or a session's) cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCost {
    /// The model's name (as `ModelBackend::name`).
    pub model: String,
    /// The roles it served, in role order.
    pub roles: Vec<ModelRole>,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Seconds spent in its calls.
    pub seconds: f64,
    /// Money, where the config gives the model a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money: Option<f64>,
}

impl ModelCost {
    /// Add `other` (the same model) to this one.
    fn add(&mut self, other: &ModelCost) {
        for role in &other.roles {
            if !self.roles.contains(role) {
                self.roles.push(*role);
                self.roles.sort();
            }
        }
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.seconds += other.seconds;
        self.money = match (self.money, other.money) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }

    /// One line: `qwen (default, smart): 3 calls, 4100+220 tokens, 12.3 s, $0.0012`.
    pub fn line(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        let mut line = format!(
            "{} ({}): {} call{}, {}+{} tokens, {:.1} s",
            self.model,
            roles.join(", "),
            self.calls,
            if self.calls == 1 { "" } else { "s" },
            self.prompt_tokens,
            self.completion_tokens,
            self.seconds
        );
        if let Some(m) = self.money {
            line.push_str(&format!(", {m:.4} in money"));
        }
        line
    }
}

/// Per-model costs, merged by model name; `base` first.
pub fn merge_costs(base: &[ModelCost], more: &[ModelCost]) -> Vec<ModelCost> {
    let mut out: Vec<ModelCost> = base.to_vec();
    for cost in more {
        match out.iter_mut().find(|c| c.model == cost.model) {
            Some(c) => c.add(cost),
            None => out.push(cost.clone()),
        }
    }
    out
}

/// Where a run's model calls are counted. Cloning shares the account.
#[derive(Clone, Default)]
pub struct CostAccount(Arc<Mutex<Vec<ModelCost>>>);

impl CostAccount {
    /// An empty account.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one call of `model` in `role`.
    fn record(
        &self,
        model: &str,
        role: ModelRole,
        usage: super::Usage,
        seconds: f64,
        price: Option<Price>,
    ) {
        let money = price.map(|p| {
            (usage.prompt_tokens as f64 * p.input + usage.completion_tokens as f64 * p.output) / 1e6
        });
        let call = ModelCost {
            model: model.to_string(),
            roles: vec![role],
            calls: 1,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            seconds,
            money,
        };
        if let Ok(mut costs) = self.0.lock() {
            *costs = merge_costs(&costs, &[call]);
        }
    }

    /// The costs so far, one entry per model, in the order first used.
    pub fn costs(&self) -> Vec<ModelCost> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Add `costs` (another run's) to this account.
    pub fn add(&self, costs: &[ModelCost]) {
        if let Ok(mut mine) = self.0.lock() {
            *mine = merge_costs(&mine, costs);
        }
    }
}

/// A backend whose calls are counted in a [`CostAccount`] under a role.
pub struct Metered {
    inner: Arc<dyn ModelBackend>,
    role: ModelRole,
    account: CostAccount,
    price: Option<Price>,
}

#[async_trait]
impl ModelBackend for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn ready(&self, cancel: &CancellationToken) -> Result<(), ModelError> {
        self.inner.ready(cancel).await
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        let started = Instant::now();
        let result = self.inner.complete(request, on_token, cancel).await;
        if let Ok(c) = &result {
            self.account.record(
                self.inner.name(),
                self.role,
                c.usage,
                started.elapsed().as_secs_f64(),
                self.price,
            );
        }
        result
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.inner.count_tokens(text)
    }

    fn context_length(&self) -> Option<usize> {
        self.inner.context_length()
    }
}

/// How a [`Lazy`] backend is opened.
pub type Opener =
    Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn ModelBackend>, ModelError>> + Send + Sync>;

/// A backend opened on its first call (or [`ModelBackend::ready`]): a role
/// the run never uses is never pulled or loaded.
pub struct Lazy {
    name: String,
    open: Opener,
    opened: tokio::sync::OnceCell<Arc<dyn ModelBackend>>,
}

impl Lazy {
    /// A backend called `name` that `open` opens when first needed.
    pub fn new(name: impl Into<String>, open: Opener) -> Self {
        Self {
            name: name.into(),
            open,
            opened: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether it has been opened.
    pub fn is_open(&self) -> bool {
        self.opened.initialized()
    }

    async fn get(&self, cancel: &CancellationToken) -> Result<&Arc<dyn ModelBackend>, ModelError> {
        tokio::select! {
            opened = self.opened.get_or_try_init(|| (self.open)()) => opened,
            _ = cancel.cancelled() => Err(ModelError::Cancelled),
        }
    }
}

#[async_trait]
impl ModelBackend for Lazy {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self, cancel: &CancellationToken) -> Result<(), ModelError> {
        self.get(cancel).await.map(|_| ())
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        self.get(cancel)
            .await?
            .complete(request, on_token, cancel)
            .await
    }

    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.opened.get()?.count_tokens(text)
    }

    fn context_length(&self) -> Option<usize> {
        self.opened.get()?.context_length()
    }
}

/// The models of a run, by role. A role without its own model is the
/// default one.
#[derive(Clone)]
pub struct RoleModels {
    default: Arc<dyn ModelBackend>,
    others: BTreeMap<ModelRole, Arc<dyn ModelBackend>>,
    prices: BTreeMap<ModelRole, Price>,
}

impl RoleModels {
    /// One model for every role.
    pub fn single(model: Arc<dyn ModelBackend>) -> Self {
        Self {
            default: model,
            others: BTreeMap::new(),
            prices: BTreeMap::new(),
        }
    }

    /// `model` takes `role` (a no-op for `default`, which [`Self::single`] set).
    pub fn with(mut self, role: ModelRole, model: Arc<dyn ModelBackend>) -> Self {
        if role == ModelRole::Default {
            self.default = model;
        } else {
            self.others.insert(role, model);
        }
        self
    }

    /// Calls in `role` cost `price`.
    pub fn priced(mut self, role: ModelRole, price: Price) -> Self {
        self.prices.insert(role, price);
        self
    }

    /// The model that takes `role`.
    pub fn get(&self, role: ModelRole) -> &Arc<dyn ModelBackend> {
        self.others.get(&role).unwrap_or(&self.default)
    }

    /// Whether `role` has a model of its own, other than the default one.
    pub fn has_own(&self, role: ModelRole) -> bool {
        self.others
            .get(&role)
            .is_some_and(|m| !Arc::ptr_eq(m, &self.default) && m.name() != self.default.name())
    }

    /// The same models, each counted in `account` under its role.
    pub fn metered(&self, account: &CostAccount) -> Self {
        let wrap = |role: ModelRole, model: &Arc<dyn ModelBackend>| -> Arc<dyn ModelBackend> {
            Arc::new(Metered {
                inner: model.clone(),
                role,
                account: account.clone(),
                price: self.prices.get(&role).copied(),
            })
        };
        // Every role gets its wrapper, so that a call is counted under the
        // role it served even where that is the default model.
        Self {
            default: wrap(ModelRole::Default, &self.default),
            others: ModelRole::ALL
                .into_iter()
                .filter(|r| *r != ModelRole::Default)
                .map(|role| (role, wrap(role, self.get(role))))
                .collect(),
            prices: self.prices.clone(),
        }
    }

    /// Each role and the name of the model that takes it.
    pub fn names(&self) -> Vec<(ModelRole, String)> {
        ModelRole::ALL
            .into_iter()
            .map(|r| (r, self.get(r).name().to_string()))
            .collect()
    }
}

/// About how many bytes a local GGUF model needs once loaded: its file
/// (the weights, mapped), the KV cache for `context` tokens in f16, and a
/// compute buffer. `None` when the header lacks the shape.
pub fn estimate_bytes(path: &Path, context: usize) -> Result<u64, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let meta = GgufMetadata::read_file(path).map_err(|e| e.to_string())?;
    Ok(size + kv_bytes(&meta, context).unwrap_or(size / 4) + COMPUTE_BYTES)
}

/// A compute buffer's allowance, whatever the model.
const COMPUTE_BYTES: u64 = 64 << 20;

/// Bytes of an f16 KV cache for `context` tokens, from the header.
fn kv_bytes(meta: &GgufMetadata, context: usize) -> Option<u64> {
    let arch = meta.architecture()?;
    let key = |k: &str| meta.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64());
    let layers = key("block_count")?;
    let embedding = key("embedding_length")?;
    let heads = key("attention.head_count")?.max(1);
    let kv_heads = key("attention.head_count_kv").unwrap_or(heads);
    let context = meta.context_length().map_or(context, |c| c.min(context)) as u64;
    let head_dim = embedding / heads;
    Some(2 * layers * context * kv_heads * head_dim * 2)
}

/// Memory the machine has free for models: `MemAvailable` on Linux.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as `1.3 GB` / `210 MB`.
pub fn show_bytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MB", bytes.div_ceil(1 << 20))
    }
}

/// The refusal when local models that would share this process need more
/// than `available` bytes: each model and its estimate, and what is free.
pub fn check_fit(needs: &[(String, u64)], available: u64, source: &str) -> Result<(), String> {
    let total: u64 = needs.iter().map(|(_, b)| b).sum();
    if total <= available {
        return Ok(());
    }
    let each: Vec<String> = needs
        .iter()
        .map(|(name, b)| format!("{name} needs about {}", show_bytes(*b)))
        .collect();
    Err(format!(
        "the local models of this run do not fit in memory: {} ({} together), and the limit is {} ({source}). \
         Give a role a smaller model or an endpoint, or raise memory_limit_mb",
        each.join(", "),
        show_bytes(total),
        show_bytes(available)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scripted::ScriptedBackend;
    use crate::model::{ChatMessage, Usage};

    fn scripted(name: &str, texts: &[&str]) -> Arc<dyn ModelBackend> {
        Arc::new(ScriptedBackend::named(name, texts.iter().copied()))
    }

    fn request() -> CompletionRequest {
        CompletionRequest {
            messages: vec![ChatMessage::user("hi")],
            max_tokens: 8,
            temperature: 0.0,
            json_schema: None,
        }
    }

    #[test]
    fn roles_parse_by_name_and_an_unknown_one_lists_them() {
        assert_eq!(ModelRole::parse("smart"), Ok(ModelRole::Smart));
        let e = ModelRole::parse("clever").unwrap_err();
        assert!(
            e.contains("`clever`") && e.contains("default, smart, fast, judge"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_role_without_a_model_is_the_default_and_calls_are_counted_by_model() {
        let default = scripted("small", &["a", "b"]);
        let smart = scripted("big", &["c"]);
        let roles = RoleModels::single(default)
            .with(ModelRole::Smart, smart)
            .priced(
                ModelRole::Smart,
                Price {
                    input: 1.0,
                    output: 2.0,
                },
            );
        assert!(roles.has_own(ModelRole::Smart) && !roles.has_own(ModelRole::Fast));
        assert_eq!(roles.get(ModelRole::Fast).name(), "small");
        let account = CostAccount::new();
        let metered = roles.metered(&account);
        let cancel = CancellationToken::new();
        for role in [ModelRole::Default, ModelRole::Smart, ModelRole::Fast] {
            metered
                .get(role)
                .complete(request(), &|_| {}, &cancel)
                .await
                .unwrap();
        }
        let costs = account.costs();
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert_eq!(costs[0].model, "small");
        assert_eq!(costs[0].roles, [ModelRole::Default, ModelRole::Fast]);
        assert_eq!(costs[0].calls, 2);
        assert_eq!(costs[0].money, None);
        assert_eq!(costs[1].roles, [ModelRole::Smart]);
        let u = Usage {
            prompt_tokens: costs[1].prompt_tokens,
            completion_tokens: costs[1].completion_tokens,
        };
        let want = (u.prompt_tokens as f64 + 2.0 * u.completion_tokens as f64) / 1e6;
        assert!((costs[1].money.unwrap() - want).abs() < 1e-12);
        // Merging another run's costs adds by model.
        let merged = merge_costs(&costs, &costs);
        assert_eq!(merged[0].calls, 4);
        assert_eq!(merged.len(), 2);
    }

    #[tokio::test]
    async fn a_lazy_model_is_opened_once_on_first_use() {
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = opened.clone();
        let lazy = Lazy::new(
            "later",
            Box::new(move || {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async { Ok(scripted("later", &["x", "y"])) })
            }),
        );
        assert!(!lazy.is_open());
        assert_eq!(lazy.name(), "later");
        let cancel = CancellationToken::new();
        lazy.complete(request(), &|_| {}, &cancel).await.unwrap();
        lazy.complete(request(), &|_| {}, &cancel).await.unwrap();
        assert!(lazy.is_open());
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn the_memory_estimate_reads_the_header_and_a_misfit_names_each_model() {
        use crate::model::gguf::testing::{V, header};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(
            &path,
            header(&[
                ("general.architecture", V::Str("llama")),
                ("llama.context_length", V::U32(4096)),
                ("llama.block_count", V::U32(2)),
                ("llama.embedding_length", V::U32(64)),
                ("llama.attention.head_count", V::U32(4)),
                ("llama.attention.head_count_kv", V::U32(2)),
            ]),
        )
        .unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        // 2 (k, v) x 2 layers x 4096 tokens (the model's cap) x 2 heads x 16 x 2 bytes.
        let kv = 2 * 2 * 4096 * 2 * 16 * 2;
        assert_eq!(
            estimate_bytes(&path, 8192).unwrap(),
            size + kv + COMPUTE_BYTES
        );
        let needs = [("a".to_string(), 300 << 20), ("b".to_string(), 200 << 20)];
        check_fit(&needs, 600 << 20, "free").unwrap();
        let e = check_fit(&needs, 400 << 20, "memory_limit_mb: 400").unwrap_err();
        assert!(
            e.contains("a needs about 300 MB, b needs about 200 MB (500 MB together), and the limit is 400 MB (memory_limit_mb: 400)"),
            "{e}"
        );
    }
}
