//! Long-term memory: what the agent (or the user) decided is worth keeping
//! across runs, with where it came from.
//!
//! Each memory is a JSON record in the `memories` [`Index`] (BM25 terms, an
//! optional embedding, and provenance: source, run id, step). Decisions:
//! - Provenance is mandatory and travels with every recalled memory, so a
//!   "memory" planted by a web page is shown as coming from that page, as
//!   data (security case 29).
//! - Near-duplicates are merged, not piled up: the same text after
//!   normalisation (case, punctuation, spacing) is found by its hash; a text
//!   whose term set overlaps an existing memory's by 85% or more (Jaccard)
//!   counts as the same memory. A merge bumps `merged` and `updated_at` and
//!   keeps the first text and provenance.
//! - An embedder failure never loses a memory: it is stored without a vector
//!   (BM25 still finds it) and a warning is logged.
//! - Vectors from two embedders are never compared: the index records which
//!   embedder its vectors come from, and when the configured one differs,
//!   memories are searched by keywords alone (and stored without vectors)
//!   until `agent memory reembed` embeds them all again.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::embed::{EmbedError, Embedder};
use super::index::{Index, NewDoc, Scored, WriteBatch, tokenize};
use super::journal::now_rfc3339;
use super::store::{Store, StoreError};

/// Longest memory text accepted, in characters.
pub const MAX_MEMORY_CHARS: usize = 4000;

/// What a memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// Something true about the world or the user's setup.
    Fact,
    /// How the user likes things done.
    Preference,
    /// The outcome of a run or an action.
    Result,
    /// A lesson the agent drew at the end of a run.
    Reflection,
}

impl MemoryKind {
    /// The name used in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::Fact => "fact",
            MemoryKind::Preference => "preference",
            MemoryKind::Result => "result",
            MemoryKind::Reflection => "reflection",
        }
    }
}

/// Where a memory came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `user`, `agent`, `agent reflection`, `tool:NAME`, a web URL, or
    /// `file:PATH`.
    pub source: String,
    /// The run that stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The step of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The untrusted content the storing run had read (a page, a file, a
    /// memory that was itself tainted): the text may carry its words, so
    /// it is recalled as untrusted too (security case 43).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tainted_by: Option<String>,
}

impl Provenance {
    /// Stored by the user by hand.
    pub fn user() -> Self {
        Self::new("user")
    }

    /// From `source`, outside any run.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            run_id: None,
            step: None,
            tainted_by: None,
        }
    }

    /// True when the text may carry words from outside the user and the
    /// agent: it was stored after untrusted content, or it came from a
    /// page, a file or a tool. Records written before `tainted_by` existed
    /// said so in their source (`agent, after fetch_page …`).
    pub fn is_untrusted(&self) -> bool {
        let own = matches!(self.source.as_str(), "user" | "agent" | "agent reflection");
        self.tainted_by.is_some() || !own
    }

    /// A short label for prompts and listings, on one line.
    pub fn label(&self) -> String {
        let mut s = self.source.clone();
        if let Some(from) = &self.tainted_by {
            s.push_str(&format!(", after {from}"));
        }
        if let Some(run) = &self.run_id {
            s.push_str(&format!(", run {run}"));
        }
        if let Some(step) = self.step {
            s.push_str(&format!(" step {step}"));
        }
        crate::sanitize::one_line(&s, 300)
    }
}

/// One stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Its id (`agent memory show ID`).
    pub id: u64,
    /// What is remembered.
    pub text: String,
    /// What kind of memory.
    pub kind: MemoryKind,
    /// Where it came from.
    pub provenance: Provenance,
    /// When it was first stored (RFC 3339).
    pub created_at: String,
    /// When it was last stored or merged.
    pub updated_at: String,
    /// How many near-duplicates were merged into it.
    #[serde(default)]
    pub merged: u32,
    /// The embedder its vector came from, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
}

/// A memory to store.
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// What to remember.
    pub text: String,
    /// What kind.
    pub kind: MemoryKind,
    /// Where it came from.
    pub provenance: Provenance,
    /// When it was created (now if `None`; kept from an import).
    pub created_at: Option<String>,
}

/// The outcome of [`LongTermMemory::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The memory's id (the existing one when merged).
    pub id: u64,
    /// True when it was merged into an existing memory.
    pub merged: bool,
}

/// A search result.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The memory.
    pub memory: Memory,
    /// Its scores.
    pub scored: Scored,
}

/// What went wrong with long-term memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a memory needs some text")]
    Empty,
    #[error(
        "a memory is at most {MAX_MEMORY_CHARS} characters (this one has {0}); store a summary, or add the document to the knowledge base with `agent kb add`"
    )]
    TooLong(usize),
    #[error("no memory with id {0}; `agent memory list` shows them")]
    NotFound(String),
    #[error("memory record {id} is unreadable: {detail}")]
    BadRecord { id: u64, detail: String },
    #[error(
        "import line {line}: {detail}; each line must be one JSON memory as `agent memory export` writes"
    )]
    BadImport { line: usize, detail: String },
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(
        "memory.embedder is `none`, so there is nothing to embed with; set it in config.yaml (e.g. `embedder: minilm`) first"
    )]
    NoEmbedder,
}

/// Case, punctuation and spacing removed: what "the same text" means.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

fn text_hash(text: &str) -> Vec<u8> {
    let mut k = b"h".to_vec();
    k.extend_from_slice(&Sha256::digest(normalize_text(text).as_bytes())[..16]);
    k
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    let inter = a.intersection(b).count() as f32;
    let union = a.union(b).count() as f32;
    if union == 0.0 { 0.0 } else { inter / union }
}

/// Parse a memory id as typed by a user (`42` or `m42`).
pub fn parse_id(text: &str) -> Result<u64, MemoryError> {
    text.trim()
        .trim_start_matches('m')
        .parse()
        .map_err(|_| MemoryError::NotFound(text.into()))
}

/// The long-term memory store.
pub struct LongTermMemory {
    index: Index,
    embedder: Option<Arc<dyn Embedder>>,
    /// The embedder the stored vectors come from, when it is not ours.
    mismatch: Option<String>,
}

impl std::fmt::Debug for LongTermMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongTermMemory")
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.id().to_string()),
            )
            .finish()
    }
}

impl LongTermMemory {
    /// Memories in `store`, embedded with `embedder` when given.
    pub fn open(store: &Store, embedder: Option<Arc<dyn Embedder>>) -> Result<Self, MemoryError> {
        Self::with_index(Index::open(store, "memories")?, embedder)
    }

    /// The same over an existing index (benchmarks use an unflushed one).
    pub fn with_index(
        index: Index,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self, MemoryError> {
        let mismatch = index.space_mismatch(embedder.as_ref().map(|e| e.id()), "memories")?;
        Ok(Self {
            index,
            embedder,
            mismatch,
        })
    }

    /// The embedder used for new vectors and queries: none while the stored
    /// vectors come from another one.
    fn active(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref().filter(|_| self.mismatch.is_none())
    }

    /// The embedder the stored vectors come from, when it is not the
    /// configured one (`agent memory reembed` fixes that).
    pub fn space_mismatch(&self) -> Option<&str> {
        self.mismatch.as_deref()
    }

    /// Embed every memory again with the configured embedder, in batches,
    /// reporting (done, total) to `progress`; returns how many. A crash
    /// part-way leaves the index marked as mid-way, so keyword search goes
    /// on and running this again finishes the job.
    pub fn reembed(&mut self, progress: &dyn Fn(u64, u64)) -> Result<u64, MemoryError> {
        let e = self.embedder.clone().ok_or(MemoryError::NoEmbedder)?;
        let done = self.index.reembed::<MemoryError>(
            e.id(),
            &|texts| Ok(e.embed(texts)?),
            &|id, bytes| {
                let mut m = decode(id, bytes)?;
                m.embedder = Some(e.id().to_string());
                Ok((m.text.clone(), Some(encode(&m)?)))
            },
            Vec::new(),
            progress,
        )?;
        self.mismatch = None;
        Ok(done)
    }

    /// The underlying index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    fn embed_one(&self, text: &str) -> Option<(Vec<f32>, String)> {
        let e = self.active()?;
        match e.embed(&[text]) {
            Ok(mut v) if !v.is_empty() => Some((v.swap_remove(0), e.id().to_string())),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!("embedding failed, using keyword search only: {err}");
                None
            }
        }
    }

    /// Store a memory (or merge it into a near-duplicate); durable on return.
    pub fn add(&self, new: NewMemory) -> Result<Added, MemoryError> {
        let text = new.text.trim().to_string();
        if text.is_empty() || normalize_text(&text).is_empty() {
            return Err(MemoryError::Empty);
        }
        let chars = text.chars().count();
        if chars > MAX_MEMORY_CHARS {
            return Err(MemoryError::TooLong(chars));
        }
        let hash = text_hash(&text);
        let mut same = self
            .index
            .meta(&hash)?
            .and_then(|b| b.try_into().ok().map(u64::from_be_bytes));
        if same.is_none() {
            let terms: HashSet<String> = tokenize(&text).into_iter().collect();
            if terms.len() >= 3 {
                for hit in self.index.bm25(&text, 3)? {
                    if let Some(m) = self.get(hit.id)? {
                        let other: HashSet<String> = tokenize(&m.text).into_iter().collect();
                        if jaccard(&terms, &other) >= 0.85 {
                            same = Some(m.id);
                            break;
                        }
                    }
                }
            }
        }
        let now = now_rfc3339();
        if let Some(id) = same
            && let Some(mut m) = self.get(id)?
        {
            m.merged += 1;
            m.updated_at = now;
            self.index.write(&WriteBatch {
                update: vec![(id, encode(&m)?)],
                ..Default::default()
            })?;
            return Ok(Added { id, merged: true });
        }
        let id = self.index.reserve_ids(1)?;
        let embedded = self.embed_one(&text);
        let memory = Memory {
            id,
            text: text.clone(),
            kind: new.kind,
            provenance: new.provenance,
            created_at: new.created_at.unwrap_or_else(|| now.clone()),
            updated_at: now,
            merged: 0,
            embedder: embedded.as_ref().map(|(_, e)| e.clone()),
        };
        self.index.write(&WriteBatch {
            add: vec![NewDoc {
                id,
                text,
                record: encode(&memory)?,
                vector: embedded.as_ref().map(|(v, _)| v.clone()),
            }],
            meta: vec![(hash, Some(id.to_be_bytes().to_vec()))],
            space: embedded.map(|(_, e)| e),
            ..Default::default()
        })?;
        Ok(Added { id, merged: false })
    }

    /// A memory by id.
    pub fn get(&self, id: u64) -> Result<Option<Memory>, MemoryError> {
        match self.index.record(id)? {
            Some(bytes) => Ok(Some(decode(id, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every memory, newest first.
    pub fn list(&self) -> Result<Vec<Memory>, MemoryError> {
        let mut out = Vec::new();
        for item in self.index.records().rev() {
            let (id, bytes) = item?;
            out.push(decode(id, &bytes)?);
        }
        Ok(out)
    }

    /// How many memories are stored.
    pub fn len(&self) -> Result<u64, MemoryError> {
        Ok(self.index.len()?)
    }

    /// True when none are stored.
    pub fn is_empty(&self) -> Result<bool, MemoryError> {
        Ok(self.len()? == 0)
    }

    /// Forget a memory; durable on return.
    pub fn forget(&self, id: u64) -> Result<Memory, MemoryError> {
        let m = self
            .get(id)?
            .ok_or_else(|| MemoryError::NotFound(id.to_string()))?;
        self.index.write(&WriteBatch {
            remove: vec![id],
            meta: vec![(text_hash(&m.text), None)],
            ..Default::default()
        })?;
        Ok(m)
    }

    /// The `k` most relevant memories: BM25, fused with dense similarity
    /// when an embedder is configured.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, MemoryError> {
        let scored = if self.active().is_some() {
            self.index
                .hybrid_with(query, k, || self.embed_one(query).map(|(v, _)| v))?
        } else {
            self.index.hybrid(query, None, k)?
        };
        let mut out = Vec::with_capacity(scored.len());
        for s in scored {
            if let Some(memory) = self.get(s.id)? {
                out.push(Hit { memory, scored: s });
            }
        }
        Ok(out)
    }

    /// Write every memory as one JSON line, oldest first.
    pub fn export(&self, mut out: impl Write) -> Result<u64, MemoryError> {
        let mut n = 0;
        for item in self.index.records() {
            let (id, bytes) = item?;
            let m = decode(id, &bytes)?;
            serde_json::to_writer(&mut out, &m).map_err(|e| MemoryError::BadRecord {
                id,
                detail: e.to_string(),
            })?;
            out.write_all(b"\n")?;
            n += 1;
        }
        out.flush()?;
        Ok(n)
    }

    /// Read memories written by [`export`](Self::export); returns (added,
    /// merged). Ids are assigned afresh; provenance and creation time kept.
    pub fn import(&self, input: impl BufRead) -> Result<(u64, u64), MemoryError> {
        let (mut added, mut merged) = (0, 0);
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let m: Memory = serde_json::from_str(&line).map_err(|e| MemoryError::BadImport {
                line: i + 1,
                detail: e.to_string(),
            })?;
            let r = self.add(NewMemory {
                text: m.text,
                kind: m.kind,
                provenance: m.provenance,
                created_at: Some(m.created_at),
            })?;
            if r.merged {
                merged += 1;
            } else {
                added += 1;
            }
        }
        Ok((added, merged))
    }
}

fn encode(m: &Memory) -> Result<Vec<u8>, MemoryError> {
    serde_json::to_vec(m).map_err(|e| MemoryError::BadRecord {
        id: m.id,
        detail: e.to_string(),
    })
}

fn decode(id: u64, bytes: &[u8]) -> Result<Memory, MemoryError> {
    serde_json::from_slice(bytes).map_err(|e| MemoryError::BadRecord {
        id,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(text: &str) -> NewMemory {
        NewMemory {
            text: text.into(),
            kind: MemoryKind::Fact,
            provenance: Provenance::user(),
            created_at: None,
        }
    }

    #[test]
    fn near_duplicates_merge_and_distinct_texts_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mem = LongTermMemory::open(&store, None).unwrap();
        let a = mem.add(new("The build server is ci.example.com")).unwrap();
        let b = mem.add(new("the build server is CI.example.com!")).unwrap();
        assert!(b.merged);
        assert_eq!(a.id, b.id);
        let c = mem
            .add(new("The build server is ci.example.com, port 8080"))
            .unwrap();
        assert!(!c.merged, "different content must not merge");
        let d = mem
            .add(new("Deploys run every Friday at noon from the main branch"))
            .unwrap();
        let e = mem
            .add(new("deploys run every Friday at noon from main branch"))
            .unwrap();
        assert!(e.merged && e.id == d.id);
        assert_eq!(mem.len().unwrap(), 3);
        assert_eq!(mem.get(a.id).unwrap().unwrap().merged, 1);
    }

    #[test]
    fn search_finds_and_forget_removes_and_export_import_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mem = LongTermMemory::open(&store, None).unwrap();
        let id = mem.add(new("User prefers tabs over spaces")).unwrap().id;
        mem.add(new("The database password rotates monthly"))
            .unwrap();
        let hits = mem.search("does the user like tabs or spaces?", 5).unwrap();
        assert_eq!(hits[0].memory.id, id);
        let mut out = Vec::new();
        assert_eq!(mem.export(&mut out).unwrap(), 2);
        mem.forget(id).unwrap();
        assert!(mem.search("tabs", 5).unwrap().is_empty());
        let (added, merged) = mem.import(out.as_slice()).unwrap();
        assert_eq!((added, merged), (1, 1));
        assert!(matches!(mem.add(new("  ")), Err(MemoryError::Empty)));
        assert!(matches!(
            mem.add(new(&"x".repeat(MAX_MEMORY_CHARS + 1))),
            Err(MemoryError::TooLong(_))
        ));
    }

    /// A deterministic stand-in: words hashed into 16 buckets.
    struct Hashed(&'static str);

    impl Embedder for Hashed {
        fn id(&self) -> &str {
            self.0
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.01f32; 16];
                    for w in tokenize(t) {
                        let h = w.bytes().fold(self.0.len(), |h, b| h * 31 + b as usize);
                        v[h % 16] += 1.0;
                    }
                    super::super::index::normalize(&mut v);
                    v
                })
                .collect())
        }
    }

    #[test]
    fn vectors_of_another_embedder_are_not_compared_until_reembedded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a: Arc<dyn Embedder> = Arc::new(Hashed("fake-a/16"));
        let b: Arc<dyn Embedder> = Arc::new(Hashed("fake-b/16"));
        let first = {
            let mem = LongTermMemory::open(&store, Some(a.clone())).unwrap();
            let id = mem
                .add(new("The staging database listens on port 5433"))
                .unwrap()
                .id;
            assert!(mem.index().vector(id).unwrap().is_some());
            assert_eq!(mem.index().space().unwrap().as_deref(), Some("fake-a/16"));
            id
        };
        let mut mem = LongTermMemory::open(&store, Some(b.clone())).unwrap();
        assert_eq!(mem.space_mismatch(), Some("fake-a/16"));
        // Keywords still find it; no cosine against the other model's vector.
        let hits = mem.search("staging database port", 5).unwrap();
        assert_eq!(hits[0].memory.id, first);
        assert!(hits[0].scored.cosine.is_none());
        // A memory added meanwhile gets no vector of the wrong kind.
        let second = mem
            .add(new("Lunch is served at noon on Fridays"))
            .unwrap()
            .id;
        assert!(mem.index().vector(second).unwrap().is_none());

        let last = std::cell::Cell::new((0, 0));
        let n = mem.reembed(&|done, total| last.set((done, total))).unwrap();
        assert_eq!(n, 2);
        assert_eq!(last.get(), (2, 2), "progress reaches the total");
        assert_eq!(mem.space_mismatch(), None);
        assert_eq!(mem.index().space().unwrap().as_deref(), Some("fake-b/16"));
        let hit = &mem.search("staging database port", 5).unwrap()[0];
        assert!(hit.scored.cosine.is_some(), "{hit:?}");
        assert_eq!(hit.memory.embedder.as_deref(), Some("fake-b/16"));
        assert!(mem.index().vector(second).unwrap().is_some());
        drop(mem);
        let again = LongTermMemory::open(&store, Some(b)).unwrap();
        assert_eq!(again.space_mismatch(), None);
        // Without an embedder there is nothing to re-embed with.
        let mut none = LongTermMemory::open(&store, None).unwrap();
        assert!(matches!(
            none.reembed(&|_, _| {}),
            Err(MemoryError::NoEmbedder)
        ));
    }
}
