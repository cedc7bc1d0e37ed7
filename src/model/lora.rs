//! LoRA adapters for local GGUF models: reading a PEFT adapter, checking
//! it against the base model, and writing the one GGUF LoRA file the
//! llama.cpp engine loads.
//!
//! Decisions:
//! - The input is the common PEFT layout: a folder with
//!   `adapter_config.json` and `adapter_model.safetensors`. Whatever the
//!   engine needs beyond that is made here, never by the user.
//! - The engine is llama.cpp. mistral.rs 0.8.1 has a GGUF LoRA path, but
//!   reading its source showed that it cannot carry an adapter: its merge
//!   (`QLoraLinear::merge_weights`) throws away the merged layer it
//!   builds, so the adapter has no effect; it panics unless all seven
//!   projections are targeted; and it applies q/k deltas unpermuted. A
//!   run with adapters on mistral.rs is refused with that reason.
//! - Architectures: `llama` (SmolLM2, Llama, Mistral GGUFs) and `qwen2`
//!   (Qwen2.5). llama.cpp's converter permutes the rows of a llama
//!   model's q and k projections (it interleaves each head's two rotary
//!   halves), so a delta trained against the original weights gets the
//!   same permutation of its `lora_B` rows (`lora_A` is untouched); qwen2
//!   is converted unpermuted. Any other architecture is refused by name,
//!   with the alternative (merge the adapter into the model before
//!   converting it), because a wrong guess would run silently wrong.
//! - Everything is checked before the model's weights are touched: the
//!   config (`r`, `lora_alpha`, features we cannot honour such as DoRA,
//!   `modules_to_save`, trained biases, `rank_pattern`), every tensor's
//!   name, pairing, rank and shape against the base model's own tensors.
//! - Several adapters become one file: their ranks are stacked (`A` rows,
//!   `B` columns), each `B` already multiplied by its scale
//!   (`SCALE·alpha/r`, or `alpha/√r` with rsLoRA), so the engine applies
//!   one adapter at scale 1. The file is cached by the content of the
//!   adapters, their scales and the base model's shapes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The files of a PEFT adapter folder.
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Bumped when the written file's layout changes (part of the cache key).
const FORMAT_TAG: &str = "agent-lora-gguf/1";

/// Architectures whose adapters are converted, and whether llama.cpp's
/// converter permuted their q/k rows.
const SUPPORTED: &[(&str, bool)] = &[("llama", true), ("qwen2", false)];

/// What went wrong with an adapter. Each says which adapter and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("`{spec}` is not a LoRA adapter reference: {why}")]
    Spec { spec: String, why: String },
    #[error(
        "{}: not a PEFT adapter folder ({why}); pass the folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}",
        path.display()
    )]
    NotAdapter { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Tensors { path: PathBuf, why: String },
    #[error(
        "LoRA adapters are not supported for the `{arch}` architecture (supported: {}); merge the adapter into the model (PEFT's merge_and_unload) and convert the merged model to GGUF instead",
        SUPPORTED.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
    )]
    Architecture { arch: String },
    #[error("the base model {}: {why}", path.display())]
    Base { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Io { path: PathBuf, why: String },
}

/// `PATH[:SCALE]`, as given to `--lora` or in `lora:` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl FromStr for LoraSpec {
    type Err = LoraError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| LoraError::Spec {
            spec: s.to_string(),
            why: why.to_string(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(bad("it is empty; write PATH or PATH:SCALE"));
        }
        // The scale is what follows the last `:` when that parses as a
        // number, so `C:\adapters\x` and `./a:b` stay paths.
        let (path, scale) = match text.rsplit_once(':') {
            Some((p, n)) if !p.is_empty() => match n.trim().parse::<f32>() {
                Ok(scale) => (p, scale),
                Err(_) => (text, 1.0),
            },
            _ => (text, 1.0),
        };
        if !scale.is_finite() || scale < 0.0 {
            return Err(bad("the scale must be a number of 0 or more, such as 0.5"));
        }
        Ok(Self {
            path: PathBuf::from(path),
            scale,
        })
    }
}

impl fmt::Display for LoraSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.scale)
    }
}

/// An adapter as a run uses it, recorded in the run: its folder, its
/// scale and the sha256 of its two files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraUse {
    pub path: String,
    pub scale: f32,
    pub sha256: String,
}

impl LoraUse {
    /// Fingerprint the adapter `spec` names (its folder made absolute).
    pub fn of(spec: &LoraSpec) -> Result<Self, LoraError> {
        let dir = adapter_dir(&spec.path)?;
        Ok(Self {
            path: dir.display().to_string(),
            scale: spec.scale,
            sha256: fingerprint(&dir)?,
        })
    }

    /// The adapter is still the one recorded: the same files.
    pub fn check_unchanged(&self) -> Result<(), LoraError> {
        let dir = PathBuf::from(&self.path);
        let now = fingerprint(&dir)?;
        if now != self.sha256 {
            return Err(LoraError::Config {
                path: dir,
                why: format!(
                    "the adapter changed since the run started (sha256 {} then, {} now); restore it, or start a new run",
                    short(&self.sha256),
                    short(&now)
                ),
            });
        }
        Ok(())
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The adapter folder `path` names (the folder itself, or one of its two
/// files), made absolute.
fn adapter_dir(path: &Path) -> Result<PathBuf, LoraError> {
    let not = |why: String| LoraError::NotAdapter {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| not(format!("cannot read it: {e}")))?;
    let dir = if meta.is_dir() {
        path.to_path_buf()
    } else {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(CONFIG_FILE | WEIGHTS_FILE) => path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            _ => return Err(not("it is a file".into())),
        }
    };
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        if !dir.join(file).is_file() {
            return Err(not(format!("it has no {file}")));
        }
    }
    dir.canonicalize()
        .map_err(|e| not(format!("cannot resolve it: {e}")))
}

/// sha256 over the adapter's config and weights.
fn fingerprint(dir: &Path) -> Result<String, LoraError> {
    let mut h = Sha256::new();
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        let path = dir.join(file);
        let mut f = std::fs::File::open(&path).map_err(|e| LoraError::Io {
            path: path.clone(),
            why: format!("cannot read it: {e}"),
        })?;
        h.update(file.as_bytes());
        std::io::copy(&mut f, &mut h).map_err(|e| LoraError::Io {
            path: path.clone(),
            why: format!("cannot read it: {e}"),
        })?;
    }
    Ok(hex::encode(h.finalize()))
}

/// The keys of `adapter_config.json` we read; the others (task type, base
/// model name, dropout) do not change inference.
#[derive(Debug, Deserialize)]
struct PeftConfig {
    #[serde(default)]
    peft_type: Option<String>,
    r: Option<usize>,
    lora_alpha: Option<f64>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    modules_to_save: Option<serde_json::Value>,
    #[serde(default)]
    rank_pattern: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    alpha_pattern: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A checked adapter: its scale and its deltas by base tensor name.
#[derive(Debug)]
pub struct Adapter {
    pub dir: PathBuf,
    pub rank: usize,
    /// What `B·A` is multiplied by (`SCALE·alpha/r`).
    pub scale: f64,
    /// `(A [r, in], B [out, r])` by GGUF tensor name (`blk.0.attn_q.weight`).
    pub deltas: BTreeMap<String, (Tensor, Tensor)>,
}

impl Adapter {
    /// Read and check the adapter `use_` names (config and tensor names,
    /// pairs and ranks; shapes are checked against a base by [`Base`]).
    pub fn read(use_: &LoraUse) -> Result<Self, LoraError> {
        let dir = PathBuf::from(&use_.path);
        let config_path = dir.join(CONFIG_FILE);
        let cfg_err = |why: String| LoraError::Config {
            path: config_path.clone(),
            why,
        };
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| cfg_err(format!("cannot read it: {e}")))?;
        let config: PeftConfig =
            serde_json::from_str(&text).map_err(|e| cfg_err(format!("is not valid JSON: {e}")))?;
        if let Some(t) = &config.peft_type
            && !t.eq_ignore_ascii_case("lora")
        {
            return Err(cfg_err(format!(
                "peft_type is `{t}`; only LORA adapters are supported"
            )));
        }
        let rank = config
            .r
            .filter(|r| *r > 0)
            .ok_or_else(|| cfg_err("has no rank `r` (a whole number above 0)".into()))?;
        let alpha = config
            .lora_alpha
            .filter(|a| a.is_finite())
            .ok_or_else(|| cfg_err("has no `lora_alpha`".into()))?;
        if config.use_dora {
            return Err(cfg_err(
                "is a DoRA adapter (use_dora); only plain LoRA is supported".into(),
            ));
        }
        if config.fan_in_fan_out {
            return Err(cfg_err(
                "stores its weights transposed (fan_in_fan_out, a GPT-2 style model); only Linear layers are supported".into(),
            ));
        }
        if let Some(b) = &config.bias
            && b != "none"
        {
            return Err(cfg_err(format!(
                "trains biases (bias: {b}); only adapters with bias \"none\" are supported"
            )));
        }
        if let Some(m) = &config.modules_to_save
            && !m.is_null()
            && m.as_array().is_none_or(|a| !a.is_empty())
        {
            return Err(cfg_err(format!(
                "saves whole modules beside the adapter (modules_to_save: {m}); those are not applied, so the adapter is refused"
            )));
        }
        for (key, map) in [
            ("rank_pattern", &config.rank_pattern),
            ("alpha_pattern", &config.alpha_pattern),
        ] {
            if map.as_ref().is_some_and(|m| !m.is_empty()) {
                return Err(cfg_err(format!(
                    "sets `{key}`; per-module ranks and alphas are not supported"
                )));
            }
        }
        let scale = f64::from(use_.scale)
            * if config.use_rslora {
                alpha / (rank as f64).sqrt()
            } else {
                alpha / rank as f64
            };

        let weights_path = dir.join(WEIGHTS_FILE);
        let t_err = |why: String| LoraError::Tensors {
            path: weights_path.clone(),
            why,
        };
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| t_err(format!("cannot be read as safetensors: {e}")))?;
        let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (name, tensor) in tensors {
            let (target, half) = gguf_target(&name).map_err(t_err)?;
            let tensor = tensor
                .to_dtype(DType::F32)
                .map_err(|e| t_err(format!("tensor `{name}`: {e}")))?;
            let dims = tensor.dims().to_vec();
            if dims.len() != 2 {
                return Err(t_err(format!(
                    "tensor `{name}` has shape {dims:?}; a LoRA matrix has two dimensions"
                )));
            }
            let (r, entry) = match half {
                Half::A => (dims[0], &mut halves.entry(target).or_default().0),
                Half::B => (dims[1], &mut halves.entry(target).or_default().1),
            };
            if r != rank {
                return Err(t_err(format!(
                    "tensor `{name}` has rank {r}, but {CONFIG_FILE} says r = {rank}"
                )));
            }
            *entry = Some(tensor);
        }
        let mut deltas = BTreeMap::new();
        for (target, pair) in halves {
            match pair {
                (Some(a), Some(b)) => {
                    deltas.insert(target, (a, b));
                }
                (a, _) => {
                    return Err(t_err(format!(
                        "the adapter for `{target}` has no lora_{} tensor",
                        if a.is_some() { "B" } else { "A" }
                    )));
                }
            }
        }
        if deltas.is_empty() {
            return Err(t_err("holds no LoRA tensors".into()));
        }
        Ok(Self {
            dir,
            rank,
            scale,
            deltas,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Half {
    A,
    B,
}

/// The GGUF tensor a PEFT tensor name adapts, and which half it is:
/// `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` is
/// the `A` of `blk.3.attn_q.weight`.
fn gguf_target(name: &str) -> Result<(String, Half), String> {
    let unsupported = |what: &str| Err(format!("tensor `{name}`: {what} are not supported"));
    if name.contains("lora_embedding_") {
        return unsupported("embedding adapters");
    }
    if name.contains("lora_magnitude_vector") {
        return unsupported("DoRA magnitudes");
    }
    let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
    let (module, half) = [(".lora_A", Half::A), (".lora_B", Half::B)]
        .iter()
        .find_map(|(marker, half)| {
            let (module, tail) = rest.split_once(marker)?;
            // `.weight`, or `.default.weight` from an adapter saved unmerged.
            matches!(tail, ".weight" | ".default.weight").then_some((module, *half))
        })
        .ok_or_else(|| {
            format!("tensor `{name}` is not a LoRA matrix (…lora_A.weight or …lora_B.weight)")
        })?;
    if module == "lm_head" {
        return Ok(("output.weight".into(), half));
    }
    let parts: Vec<&str> = module.split('.').collect();
    let target = match parts.as_slice() {
        ["model", "layers", layer, group, proj] if layer.parse::<usize>().is_ok() => {
            let gguf = match (*group, *proj) {
                ("self_attn", "q_proj") => "attn_q",
                ("self_attn", "k_proj") => "attn_k",
                ("self_attn", "v_proj") => "attn_v",
                ("self_attn", "o_proj") => "attn_output",
                ("mlp", "gate_proj") => "ffn_gate",
                ("mlp", "up_proj") => "ffn_up",
                ("mlp", "down_proj") => "ffn_down",
                _ => {
                    return Err(format!(
                        "tensor `{name}` adapts `{group}.{proj}`; supported: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"
                    ));
                }
            };
            format!("blk.{layer}.{gguf}.weight")
        }
        _ => {
            return Err(format!(
                "tensor `{name}` adapts `{module}`, which is not a layer of a llama-style model"
            ));
        }
    };
    Ok((target, half))
}

/// What an adapter is checked and permuted against: the base GGUF's
/// architecture, head counts and tensor shapes (read from its header; no
/// weights are loaded).
#[derive(Debug)]
pub struct Base {
    pub path: PathBuf,
    pub arch: String,
    permuted: bool,
    n_head: usize,
    n_head_kv: usize,
    /// `[out, in]` by tensor name.
    shapes: HashMap<String, Vec<usize>>,
}

impl Base {
    /// Read the header of the GGUF at `path`; refuse architectures whose
    /// layout is not known here.
    pub fn read(path: &Path) -> Result<Self, LoraError> {
        let base_err = |why: String| LoraError::Base {
            path: path.to_path_buf(),
            why,
        };
        let mut file = std::fs::File::open(path).map_err(|e| base_err(format!("{e}")))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| base_err(format!("cannot read its GGUF header: {e}")))?;
        let text = |key: &str| {
            content
                .metadata
                .get(key)
                .and_then(|v| v.to_string().ok())
                .cloned()
        };
        let arch = text("general.architecture")
            .ok_or_else(|| base_err("has no general.architecture".into()))?;
        let permuted = SUPPORTED
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, p)| *p)
            .ok_or_else(|| LoraError::Architecture { arch: arch.clone() })?;
        let number = |key: &str| {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| {
                    v.to_u32()
                        .ok()
                        .or_else(|| v.to_u64().ok().map(|n| n as u32))
                })
                .map(|n| n as usize)
        };
        let n_head = number("attention.head_count")
            .filter(|n| *n > 0)
            .ok_or_else(|| base_err(format!("has no {arch}.attention.head_count")))?;
        let n_head_kv = number("attention.head_count_kv").unwrap_or(n_head);
        let shapes = content
            .tensor_infos
            .iter()
            .map(|(name, info)| (name.clone(), info.shape.dims().to_vec()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            arch,
            permuted,
            n_head,
            n_head_kv,
            shapes,
        })
    }

    /// Check `adapter`'s deltas against this model's tensors.
    fn check(&self, adapter: &Adapter) -> Result<(), LoraError> {
        let t_err = |why: String| LoraError::Tensors {
            path: adapter.dir.join(WEIGHTS_FILE),
            why,
        };
        for (name, (a, b)) in &adapter.deltas {
            let Some(shape) = self.shapes.get(name) else {
                let hint = if name == "output.weight" {
                    "the model ties its output layer to its embeddings, so lm_head cannot be adapted"
                } else {
                    "was the adapter trained for another model?"
                };
                return Err(t_err(format!(
                    "the base model has no tensor `{name}` ({hint})"
                )));
            };
            let (out, inp) = (b.dims()[0], a.dims()[1]);
            if shape.as_slice() != [out, inp] {
                return Err(t_err(format!(
                    "the delta for `{name}` is {out}×{inp}, but the base model's tensor is {} (was the adapter trained for another model?)",
                    shape
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("×")
                )));
            }
        }
        Ok(())
    }

    /// `b`'s rows in the order llama.cpp's converter put `name`'s rows.
    fn arrange(&self, name: &str, b: &Tensor) -> candle_core::Result<Tensor> {
        if !self.permuted {
            return Ok(b.clone());
        }
        let heads = if name.ends_with(".attn_q.weight") {
            self.n_head
        } else if name.ends_with(".attn_k.weight") {
            self.n_head_kv
        } else {
            return Ok(b.clone());
        };
        permute_rows(b, heads)
    }
}

/// llama.cpp's q/k permutation of a matrix's rows, for `heads` heads: in
/// each head, the row `t·d/2 + i` of the original (half `t` of the rotary
/// pairs) becomes row `2i + t`.
pub fn permute_rows(m: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = m.dims2()?;
    if heads == 0 || rows % (heads * 2) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {heads} heads of rotary pairs");
    }
    m.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// What `agent model info` says of an adapter.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub path: String,
    pub scale: f32,
    pub sha256: String,
    pub rank: usize,
    /// What `B·A` is multiplied by, the scale included.
    pub effective_scale: f64,
    /// The projections it adapts (`attn_q`, `ffn_down`, ...).
    pub modules: Vec<String>,
    /// How many layers it touches.
    pub layers: usize,
    /// Against the base model, when that is at hand: `None` when it fits,
    /// else why not.
    pub problem: Option<String>,
}

/// Read `use_` and, when `base` is given, check it against that model.
pub fn summarize(use_: &LoraUse, base: Option<&Path>) -> Result<Summary, LoraError> {
    let adapter = Adapter::read(use_)?;
    let mut modules: Vec<String> = Vec::new();
    let mut layers = std::collections::BTreeSet::new();
    for name in adapter.deltas.keys() {
        let mut parts = name.split('.');
        let kind = match (parts.next(), parts.next(), parts.next()) {
            (Some("blk"), Some(layer), Some(kind)) => {
                layers.insert(layer.to_string());
                kind.to_string()
            }
            (Some(first), _, _) => first.to_string(),
            _ => continue,
        };
        if !modules.contains(&kind) {
            modules.push(kind);
        }
    }
    let problem = match base {
        Some(path) => Base::read(path)
            .and_then(|b| b.check(&adapter))
            .err()
            .map(|e| e.to_string()),
        None => None,
    };
    Ok(Summary {
        path: use_.path.clone(),
        scale: use_.scale,
        sha256: use_.sha256.clone(),
        rank: adapter.rank,
        effective_scale: adapter.scale,
        modules,
        layers: layers.len(),
        problem,
    })
}

/// The GGUF LoRA file for `uses` on the base model at `base_path`, made
/// (and cached in `cache_dir`) if need be. Every adapter is read and
/// checked first; nothing is written for one that fails.
pub fn prepare(uses: &[LoraUse], base_path: &Path, cache_dir: &Path) -> Result<PathBuf, LoraError> {
    let base = Base::read(base_path)?;
    let mut key = Sha256::new();
    key.update(FORMAT_TAG.as_bytes());
    key.update(base.arch.as_bytes());
    let mut shapes: Vec<_> = base.shapes.iter().collect();
    shapes.sort();
    for (name, dims) in shapes {
        key.update(name.as_bytes());
        for d in dims {
            key.update((*d as u64).to_le_bytes());
        }
    }
    key.update((base.n_head as u64).to_le_bytes());
    key.update((base.n_head_kv as u64).to_le_bytes());
    for u in uses {
        key.update(u.sha256.as_bytes());
        key.update(u.scale.to_le_bytes());
    }
    let out = cache_dir.join(format!("{}.gguf", &hex::encode(key.finalize())[..32]));
    if out.is_file() {
        return Ok(out);
    }
    let mut adapters = Vec::new();
    for u in uses {
        let adapter = Adapter::read(u)?;
        base.check(&adapter)?;
        adapters.push(adapter);
    }
    write_combined(&base, &adapters, &out)?;
    Ok(out)
}

/// Write `adapters`, stacked and scaled, as one GGUF LoRA file at `out`.
fn write_combined(base: &Base, adapters: &[Adapter], out: &Path) -> Result<(), LoraError> {
    let io = |why: String| LoraError::Io {
        path: out.to_path_buf(),
        why,
    };
    let candle = |e: candle_core::Error| io(format!("cannot build the adapter tensors: {e}"));
    let mut stacked: BTreeMap<&str, (Vec<Tensor>, Vec<Tensor>)> = BTreeMap::new();
    for adapter in adapters {
        for (name, (a, b)) in &adapter.deltas {
            let b = base
                .arrange(name, &(b * adapter.scale).map_err(candle)?)
                .map_err(candle)?;
            let entry = stacked.entry(name.as_str()).or_default();
            entry.0.push(a.clone());
            entry.1.push(b);
        }
    }
    let mut tensors = Vec::new();
    for (name, (a, b)) in &stacked {
        let a = Tensor::cat(a, 0).map_err(candle)?;
        let b = Tensor::cat(b, 1).map_err(candle)?;
        tensors.push((
            format!("{name}.lora_a"),
            QTensor::quantize(&a, GgmlDType::F32).map_err(candle)?,
        ));
        tensors.push((
            format!("{name}.lora_b"),
            QTensor::quantize(&b, GgmlDType::F32).map_err(candle)?,
        ));
    }
    let sources = adapters
        .iter()
        .map(|a| a.dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let metadata = [
        (
            "general.architecture",
            gguf_file::Value::String(base.arch.clone()),
        ),
        ("general.type", gguf_file::Value::String("adapter".into())),
        (
            "general.name",
            gguf_file::Value::String(format!("agent: {sources}")),
        ),
        ("adapter.type", gguf_file::Value::String("lora".into())),
        // No alpha: the scales are in B, and the engine applies scale 1.
    ];
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(format!("cannot create its folder: {e}")))?;
    }
    let partial = out.with_extension("gguf.partial");
    let written = (|| {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&partial).map_err(|e| io(format!("cannot create it: {e}")))?,
        );
        gguf_file::write(&mut file, &metadata, &tensor_refs)
            .map_err(|e| io(format!("cannot write it: {e}")))?;
        use std::io::Write;
        file.flush()
            .map_err(|e| io(format!("cannot write it: {e}")))?;
        std::fs::rename(&partial, out).map_err(|e| io(format!("cannot move it into place: {e}")))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

#[cfg(test)]
mod tests;
