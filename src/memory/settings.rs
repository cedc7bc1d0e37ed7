//! The `memory:` section of `config.yaml`: which embedder turns text into
//! vectors, whether memories are recalled into prompts and reflections
//! stored, how relevant a memory must be to be recalled, and how the
//! knowledge base cuts documents into chunks.
//!
//! Decisions: every key is optional in a layer ([`MemoryLayer`]) and layers
//! merge key by key, so `AGENT_EMBEDDER` in the environment changes the
//! embedder without discarding the thresholds set in the file. The resolved
//! [`MemorySettings`] is checked once, at start-up, with messages that say
//! which value is wrong and what would be right.

use serde::{Deserialize, Serialize};

/// One layer of the `memory:` section (file or environment); unset keys
/// fall through to the layer below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLayer {
    /// `none`, `minilm`, `minilm:PATH`, `hf:OWNER/NAME[@REVISION]` or
    /// `openai:MODEL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// Base URL of the OpenAI-compatible embeddings server (for `openai:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_endpoint: Option<String>,
    /// Put relevant memories into each step's prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<bool>,
    /// Store a short reflection at the end of each run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reflect: Option<bool>,
    /// Least normalised BM25 score (0–1) for a memory to be recalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bm25: Option<f64>,
    /// Least cosine similarity (-1–1) for a memory to be recalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    /// Target size of a knowledge-base chunk, in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kb_chunk_tokens: Option<u32>,
    /// Tokens a chunk repeats from the one before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kb_overlap_tokens: Option<u32>,
}

/// The resolved `memory:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySettings {
    pub embedder: String,
    pub embed_endpoint: Option<String>,
    pub recall: bool,
    pub reflect: bool,
    pub min_bm25: f64,
    pub min_cosine: f64,
    pub kb_chunk_tokens: u32,
    pub kb_overlap_tokens: u32,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            embedder: "none".into(),
            embed_endpoint: None,
            recall: true,
            reflect: true,
            min_bm25: 0.3,
            min_cosine: 0.5,
            kb_chunk_tokens: 256,
            kb_overlap_tokens: 32,
        }
    }
}

impl MemoryLayer {
    /// Take every key `upper` sets.
    pub fn merge(&mut self, upper: &MemoryLayer) {
        macro_rules! take {
            ($($k:ident),*) => { $( if upper.$k.is_some() { self.$k = upper.$k.clone(); } )* };
        }
        take!(
            embedder,
            embed_endpoint,
            recall,
            reflect,
            min_bm25,
            min_cosine,
            kb_chunk_tokens,
            kb_overlap_tokens
        );
    }

    /// The layer over the defaults, checked; an error names the key
    /// (`memory.KEY`) and says what is allowed.
    pub fn resolve(&self) -> Result<MemorySettings, (&'static str, String)> {
        let d = MemorySettings::default();
        let s = MemorySettings {
            embedder: self
                .embedder
                .clone()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .unwrap_or(d.embedder),
            embed_endpoint: self.embed_endpoint.clone().filter(|e| !e.is_empty()),
            recall: self.recall.unwrap_or(d.recall),
            reflect: self.reflect.unwrap_or(d.reflect),
            min_bm25: self.min_bm25.unwrap_or(d.min_bm25),
            min_cosine: self.min_cosine.unwrap_or(d.min_cosine),
            kb_chunk_tokens: self.kb_chunk_tokens.unwrap_or(d.kb_chunk_tokens),
            kb_overlap_tokens: self.kb_overlap_tokens.unwrap_or(d.kb_overlap_tokens),
        };
        if let Err(e) = super::embed::EmbedderSpec::parse(&s.embedder) {
            return Err(("memory.embedder", e.to_string()));
        }
        if s.embedder.starts_with("openai:") && s.embed_endpoint.is_none() {
            return Err((
                "memory.embed_endpoint",
                format!(
                    "embedder {} needs the server's base URL, e.g. embed_endpoint: http://127.0.0.1:8000/v1",
                    s.embedder
                ),
            ));
        }
        if let Some(e) = &s.embed_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err((
                "memory.embed_endpoint",
                "must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&s.min_bm25) {
            return Err((
                "memory.min_bm25",
                "must be between 0 and 1 (a share of the best score the query could reach)".into(),
            ));
        }
        if !(-1.0..=1.0).contains(&s.min_cosine) {
            return Err(("memory.min_cosine", "must be between -1 and 1".into()));
        }
        if !(32..=8192).contains(&s.kb_chunk_tokens) {
            return Err((
                "memory.kb_chunk_tokens",
                "must be between 32 and 8192".into(),
            ));
        }
        if s.kb_overlap_tokens > s.kb_chunk_tokens / 2 {
            return Err((
                "memory.kb_overlap_tokens",
                format!(
                    "must be at most half of kb_chunk_tokens ({})",
                    s.kb_chunk_tokens / 2
                ),
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_merge_key_by_key_and_bad_values_name_their_key() {
        let mut file = MemoryLayer {
            min_bm25: Some(0.6),
            embedder: Some("minilm".into()),
            ..Default::default()
        };
        file.merge(&MemoryLayer {
            embedder: Some("none".into()),
            ..Default::default()
        });
        let s = file.resolve().unwrap();
        assert_eq!((s.embedder.as_str(), s.min_bm25), ("none", 0.6));
        assert_eq!(s.kb_chunk_tokens, 256);

        let bad = |l: MemoryLayer| l.resolve().unwrap_err();
        let (key, msg) = bad(MemoryLayer {
            embedder: Some("word2vec".into()),
            ..Default::default()
        });
        assert_eq!(key, "memory.embedder");
        assert!(msg.contains("minilm"), "{msg}");
        let (key, msg) = bad(MemoryLayer {
            embedder: Some("openai:text-embedding-3-small".into()),
            ..Default::default()
        });
        assert_eq!(key, "memory.embed_endpoint");
        assert!(msg.contains("http://"), "{msg}");
        let (key, _) = bad(MemoryLayer {
            min_cosine: Some(1.5),
            ..Default::default()
        });
        assert_eq!(key, "memory.min_cosine");
        let (key, msg) = bad(MemoryLayer {
            kb_chunk_tokens: Some(64),
            kb_overlap_tokens: Some(40),
            ..Default::default()
        });
        assert_eq!(key, "memory.kb_overlap_tokens");
        assert!(msg.contains("32"), "{msg}");
    }
}
