//! Retrieval over a sled tree: a BM25 inverted index, optional dense vectors,
//! and reciprocal-rank fusion of the two. Long-term memories and knowledge
//! base chunks are each one [`Index`] (one sled tree each).
//!
//! Decisions:
//! - Everything an index knows lives in ONE sled tree under one-byte key
//!   prefixes (records, postings, document frequencies, vectors, caller
//!   metadata, statistics), so adding or removing documents is a single
//!   atomic sled batch: a crash leaves either all of a write or none of it.
//!   (A batch, not a transaction: sled's transactions cost ~25 µs a key.)
//!   Every write is flushed before [`Index::write`] returns.
//! - The store keeps a forward index (document → terms and length, in a
//!   compact binary record; stores written before it hold JSON, still
//!   read); the inverted index (term → postings with frequency and document
//!   length) is built from it in memory on the first query and topped up as
//!   ids grow (0.2 s at 100k documents). Writing postings to sled term by term made every insert cost
//!   thousands of keys, and scanning them made a query at 100k documents
//!   take tens of milliseconds.
//! - Terms whose document frequency exceeds a quarter of the collection are
//!   skipped when the query has rarer terms: their IDF is near zero and their
//!   posting lists are what would make a query slow at 100k documents.
//! - Dense vectors are scanned from an in-memory copy loaded on the first
//!   dense query, quantised to a byte a dimension (the `vecscan` crate,
//!   built at opt-level 3 while ours builds at 1): the scan is bound by
//!   memory bandwidth, and bytes make it four times cheaper than `f32`. The
//!   best `max(8k, 256)` candidates are then re-scored exactly from the
//!   stored vectors, so results and their cosines are those of an exact
//!   search unless a true top-k vector fell outside that candidate set.
//! - Tokenisation: lower-cased alphanumeric words (stop words dropped, a
//!   light plural stemmer), and CJK characters as unigrams plus bigrams of
//!   neighbours, so Chinese and Japanese text needs no word segmenter.
//!
//! Size: one job, the index (its writes, the two searches and their fusion
//! share the one tree's key layout), so it stays one file, with its tests.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::store::{Store, StoreError};

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Reciprocal-rank-fusion constant (the usual 60).
const RRF_K: f32 = 60.0;
/// Fewest candidates of the quantised scan re-scored exactly.
const RESCORE_MIN: usize = 256;

const REC: u8 = b'r';
const TERMS: u8 = b't';
const VEC: u8 = b'v';
const META: u8 = b'm';
const STATS: &[u8] = b"s";
const SPACE: &[u8] = b"e";
/// How [`Index::reembed`] marks an index while it runs.
const UNFINISHED: &str = "unfinished re-embedding with ";

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "in",
    "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will",
    "with", "what", "which", "who", "how", "do", "does", "did", "i", "you", "we", "they", "me",
    "my", "our", "your", "there", "their", "then", "than", "so", "if", "into", "about", "can",
];

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0x20000..=0x2FA1F) // extensions B+
}

fn stem(word: &str) -> String {
    let w = word.strip_suffix("'s").unwrap_or(word);
    let n = w.chars().count();
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

/// Split text into index terms (English words and CJK uni/bigrams).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_cjk: Option<char> = None;
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            let w = word.trim_end_matches('\'');
            if !w.is_empty() && w.len() <= 64 && !STOP_WORDS.contains(&w) {
                out.push(stem(w));
            }
            word.clear();
        }
    };
    for c in text.chars() {
        if is_cjk(c) {
            flush(&mut word, &mut out);
            out.push(c.to_string());
            if let Some(p) = prev_cjk {
                out.push(format!("{p}{c}"));
            }
            prev_cjk = Some(c);
        } else if c.is_alphanumeric() || (c == '\'' && !word.is_empty()) {
            prev_cjk = None;
            word.extend(c.to_lowercase());
        } else {
            prev_cjk = None;
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Roughly how many model tokens `text` costs (about 4 characters a token;
/// CJK characters one each).
pub fn estimate_tokens(text: &str) -> usize {
    let cjk = text.chars().filter(|c| is_cjk(*c)).count();
    let other = text.chars().count() - cjk;
    cjk + other.div_ceil(4)
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One document to add.
#[derive(Debug, Clone)]
pub struct NewDoc {
    /// Its id (from [`Index::reserve_ids`]).
    pub id: u64,
    /// The text indexed for BM25.
    pub text: String,
    /// The caller's record, stored as is.
    pub record: Vec<u8>,
    /// Its embedding, if an embedder is configured.
    pub vector: Option<Vec<f32>>,
}

/// One write: documents added, documents removed, metadata set or cleared.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Documents to add (or replace, for an existing id).
    pub add: Vec<NewDoc>,
    /// Documents to remove.
    pub remove: Vec<u64>,
    /// Records to overwrite without re-indexing (id, new record).
    pub update: Vec<(u64, Vec<u8>)>,
    /// Caller metadata: key → Some(value) to set, None to delete.
    pub meta: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// New vectors for existing documents (re-embedding), text unchanged.
    pub vectors: Vec<(u64, Vec<f32>)>,
    /// Record which embedder the stored vectors come from (see
    /// [`Index::check_space`]).
    pub space: Option<String>,
}

/// Embeds a batch of texts, for [`Index::reembed`].
pub type EmbedBatch<'a, E> = &'a dyn Fn(&[&str]) -> Result<Vec<Vec<f32>>, E>;
/// Turns a stored record into the text to embed and, optionally, an
/// updated record, for [`Index::reembed`].
pub type PrepareRecord<'a, E> = &'a dyn Fn(u64, &[u8]) -> Result<(String, Option<Vec<u8>>), E>;

/// Whether an index's vectors can be compared with an embedder's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpaceCheck {
    /// Same embedder, or no vectors recorded yet.
    Usable,
    /// The vectors come from another embedder (or a re-embedding that did
    /// not finish): comparing them with this one's would be noise.
    Mismatch { stored: String },
}

/// One scored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Document id.
    pub id: u64,
    /// Fused (or single-retriever) score, higher is better.
    pub score: f32,
    /// BM25 score normalised to 0..=1 by the query's best possible score.
    pub bm25: Option<f32>,
    /// Cosine similarity with the query vector.
    pub cosine: Option<f32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    docs: u64,
    total_len: u64,
    next_id: u64,
}

impl Stats {
    fn decode(bytes: Option<&[u8]>) -> Self {
        let Some(b) = bytes.filter(|b| b.len() == 24) else {
            return Self::default();
        };
        let n = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Self {
            docs: n(0),
            total_len: n(8),
            next_id: n(16),
        }
    }
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.docs.to_be_bytes());
        v.extend_from_slice(&self.total_len.to_be_bytes());
        v.extend_from_slice(&self.next_id.to_be_bytes());
        v
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn term_counts(text: &str) -> (Vec<(String, u32)>, u32) {
    let tokens = tokenize(text);
    let len = tokens.len() as u32;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for t in tokens {
        *counts.entry(t).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort();
    (v, len)
}

/// A term (borrowed from the record where it can be) and its frequency.
type TermCount<'a> = (Cow<'a, str>, u32);

/// Tag of the binary forward-index record (older stores hold JSON, `[`…).
const TERMS_V1: u8 = 1;

/// A document's terms and length: `1, len u32, then per term: its byte
/// length u16, its bytes, its frequency u32` (little-endian). Loading the
/// postings of 100k documents from this takes a fraction of the JSON time.
fn encode_terms(terms: &[(String, u32)], len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + terms.iter().map(|(t, _)| t.len() + 6).sum::<usize>());
    out.push(TERMS_V1);
    out.extend_from_slice(&len.to_le_bytes());
    for (term, tf) in terms {
        // Terms are at most 64 bytes (see `tokenize`).
        let n = term.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&term.as_bytes()[..n]);
        out.extend_from_slice(&tf.to_le_bytes());
    }
    out
}

/// The document length and its (term, frequency) pairs, from either the
/// binary record or the JSON one older versions wrote; None if damaged.
fn decode_terms(b: &[u8]) -> Option<(u32, Vec<TermCount<'_>>)> {
    if b.first() == Some(&b'[') {
        let (terms, len): (Vec<(String, u32)>, u32) = serde_json::from_slice(b).ok()?;
        return Some((
            len,
            terms.into_iter().map(|(t, f)| (Cow::Owned(t), f)).collect(),
        ));
    }
    if b.first() != Some(&TERMS_V1) {
        return None;
    }
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let len = u32_at(1)?;
    let mut terms = Vec::new();
    let mut i = 5;
    while i < b.len() {
        let n = u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as usize;
        let term = std::str::from_utf8(b.get(i + 2..i + 2 + n)?).ok()?;
        let tf = u32_at(i + 2 + n)?;
        terms.push((Cow::Borrowed(term), tf));
        i += 2 + n + 4;
    }
    Some((len, terms))
}

fn encode_vec(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_vec(b: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(b.len() / 4);
    vecscan::decode_le_into(b, &mut out);
    out
}

/// Scale `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Vectors in memory, quantised to a byte a dimension (see `vecscan`): the
/// exhaustive scan reads a quarter of what `f32` rows would, and the best
/// candidates are re-scored exactly from the stored `f32` vectors.
#[derive(Default)]
struct VecCache {
    dims: usize,
    ids: Vec<u64>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// The store's next id when last synced: another handle on the same
    /// tree may have added vectors since (ids only grow).
    synced: u64,
}

impl VecCache {
    fn push(&mut self, id: u64, v: &[f32]) {
        if self.dims == 0 {
            self.dims = v.len();
        }
        if v.len() != self.dims || v.is_empty() {
            return;
        }
        self.ids.push(id);
        let scale = vecscan::quantize_into(v, &mut self.codes);
        self.scales.push(scale);
    }

    /// Approximate cosine of every cached vector with `q`, in `ids` order.
    fn scores(&self, q: &[f32]) -> Vec<f32> {
        let mut codes = Vec::with_capacity(q.len());
        let scale = vecscan::quantize_into(q, &mut codes);
        let mut out = Vec::with_capacity(self.ids.len());
        vecscan::scan(&self.codes, &self.scales, &codes, scale, &mut out);
        out
    }
}

/// Postings in memory: term → (doc id, term frequency, doc length),
/// loaded from the forward index on the first query and topped up with
/// newer ids (ids only grow) when the store's next id moves.
#[derive(Default)]
struct PostCache {
    postings: HashMap<String, Vec<(u64, u32, u32)>>,
    last_id: u64,
    synced: u64,
}

/// A BM25 + dense index over one sled tree.
pub struct Index {
    tree: sled::Tree,
    vectors: Mutex<Option<VecCache>>,
    postings: Mutex<Option<PostCache>>,
    writer: Mutex<()>,
    durable: bool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

impl Index {
    /// The index kept in tree `name` of `store`.
    pub fn open(store: &Store, name: &str) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(name)?,
            vectors: Mutex::new(None),
            postings: Mutex::new(None),
            writer: Mutex::new(()),
            durable: true,
        })
    }

    /// The same, without flushing each write (benchmarks only).
    pub fn open_unflushed(store: &Store, name: &str) -> Result<Self, StoreError> {
        Ok(Self {
            durable: false,
            ..Self::open(store, name)?
        })
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        Ok(Stats::decode(self.tree.get(STATS)?.as_deref()))
    }

    /// How many documents are indexed.
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(self.stats()?.docs)
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Reserve `n` fresh document ids (durably, so they are never reused).
    pub fn reserve_ids(&self, n: u64) -> Result<u64, StoreError> {
        let _w = self.writer.lock().map_err(|_| poisoned())?;
        let mut s = self.stats()?;
        let first = s.next_id.max(1);
        s.next_id = first + n;
        self.tree.insert(STATS, s.encode())?;
        Ok(first)
    }

    /// Apply `batch` atomically (one sled batch), then flush.
    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let prepared: Vec<_> = batch
            .add
            .iter()
            .map(|d| (d, term_counts(&d.text)))
            .collect();
        // One writer at a time: reads below must not race another write.
        let _w = self.writer.lock().map_err(|_| poisoned())?;
        let mut p = Pending {
            tree: &self.tree,
            writes: HashMap::new(),
        };
        let mut s = Stats::decode(p.get(STATS)?.as_deref());
        for id in &batch.remove {
            remove_doc(&mut p, &mut s, *id)?;
        }
        for (doc, (terms, len)) in &prepared {
            remove_doc(&mut p, &mut s, doc.id)?;
            p.set(key(REC, &doc.id.to_be_bytes()), doc.record.clone());
            let enc = encode_terms(terms, *len);
            p.set(key(TERMS, &doc.id.to_be_bytes()), enc);
            if let Some(v) = &doc.vector {
                p.set(key(VEC, &doc.id.to_be_bytes()), encode_vec(v));
            }
            s.docs += 1;
            s.total_len += u64::from(*len);
            s.next_id = s.next_id.max(doc.id + 1);
        }
        for (id, record) in &batch.update {
            let k = key(REC, &id.to_be_bytes());
            if p.get(&k)?.is_some() {
                p.set(k, record.clone());
            }
        }
        for (id, v) in &batch.vectors {
            if p.get(&key(REC, &id.to_be_bytes()))?.is_some() {
                p.set(key(VEC, &id.to_be_bytes()), encode_vec(v));
            }
        }
        if let Some(space) = &batch.space {
            p.set(SPACE.to_vec(), space.as_bytes().to_vec());
        }
        for (k, v) in &batch.meta {
            let k = key(META, k);
            match v {
                Some(v) => p.set(k, v.clone()),
                None => p.del(k),
            }
        }
        p.set(STATS.to_vec(), s.encode());
        let mut sled_batch = sled::Batch::default();
        for (k, v) in p.writes {
            match v {
                Some(v) => sled_batch.insert(k, v),
                None => sled_batch.remove(k),
            }
        }
        self.tree.apply_batch(sled_batch)?;
        if self.durable {
            self.tree.flush()?;
        }
        // New postings and vectors are picked up by the next query; a
        // removal or a replaced id needs a reload.
        if let Ok(mut cache) = self.postings.lock()
            && let Some(c) = cache.as_ref()
        {
            let replaced = batch.add.iter().any(|d| d.id <= c.last_id);
            if !batch.remove.is_empty() || replaced {
                *cache = None;
            }
        }
        if let Ok(mut cache) = self.vectors.lock()
            && let Some(c) = cache.as_ref()
        {
            let replaced = batch
                .add
                .iter()
                .any(|d| c.ids.last().is_some_and(|last| *last >= d.id));
            if !batch.remove.is_empty() || replaced || !batch.vectors.is_empty() {
                *cache = None;
            }
        }
        Ok(())
    }

    /// The embedder id recorded for the stored vectors, if any.
    pub fn space(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree
            .get(SPACE)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Whether the stored vectors can be searched with `embedder`'s.
    pub fn check_space(&self, embedder: &str) -> Result<SpaceCheck, StoreError> {
        Ok(match self.space()? {
            Some(stored) if stored != embedder => SpaceCheck::Mismatch { stored },
            _ => SpaceCheck::Usable,
        })
    }

    /// The other embedder the stored vectors come from, when `configured`
    /// is not it; says so in a warning naming `what` the index holds.
    pub fn space_mismatch(
        &self,
        configured: Option<&str>,
        what: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(id) = configured else {
            return Ok(None);
        };
        let SpaceCheck::Mismatch { stored } = self.check_space(id)? else {
            return Ok(None);
        };
        let was = match stored.strip_prefix(UNFINISHED) {
            Some(e) => format!("re-embedding {what} with {e} was interrupted"),
            None => format!("{what} were embedded with {stored}"),
        };
        // Said once per process, however often the index is opened.
        static WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());
        if let Ok(mut warned) = WARNED.lock()
            && !warned.contains(&was)
        {
            tracing::warn!(
                "{was}, but memory.embedder gives {id}: they are searched by keywords only \
                 until `agent memory reembed` is run"
            );
            warned.push(was);
        }
        Ok(Some(stored))
    }

    /// Give every document a new vector, in batches of 32: `prepare` turns
    /// a record into the text to embed and, optionally, an updated record;
    /// `embed` makes the vectors; `meta` is written with the final batch,
    /// which records `space` as the vectors' embedder. Until then the index
    /// is marked as mid-way, so a crash leaves it searched by keywords and
    /// running this again finishes the job. Progress is (done, total).
    pub fn reembed<E: From<StoreError>>(
        &self,
        space: &str,
        embed: EmbedBatch<'_, E>,
        prepare: PrepareRecord<'_, E>,
        meta: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<u64, E> {
        let total = self.len()?;
        self.write(&WriteBatch {
            space: Some(format!("{UNFINISHED}{space}")),
            ..Default::default()
        })?;
        let mut done = 0;
        let mut batch: Vec<(u64, String, Option<Vec<u8>>)> = Vec::new();
        let flush = |batch: &mut Vec<(u64, String, Option<Vec<u8>>)>, done: &mut u64| {
            if batch.is_empty() {
                return Ok::<(), E>(());
            }
            let texts: Vec<&str> = batch.iter().map(|(_, t, _)| t.as_str()).collect();
            let vectors = embed(&texts)?;
            let mut w = WriteBatch::default();
            for ((id, _, record), v) in batch.drain(..).zip(vectors) {
                if let Some(r) = record {
                    w.update.push((id, r));
                }
                w.vectors.push((id, v));
            }
            self.write(&w)?;
            *done += w.vectors.len() as u64;
            progress(*done, total);
            Ok(())
        };
        for item in self.records() {
            let (id, bytes) = item?;
            let (text, record) = prepare(id, &bytes)?;
            batch.push((id, text, record));
            if batch.len() == 32 {
                flush(&mut batch, &mut done)?;
            }
        }
        flush(&mut batch, &mut done)?;
        self.write(&WriteBatch {
            meta,
            space: Some(space.to_string()),
            ..Default::default()
        })?;
        Ok(done)
    }

    /// A document's record.
    pub fn record(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(key(REC, &id.to_be_bytes()))?
            .map(|v| v.to_vec()))
    }

    /// Every record, oldest id first.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = Result<(u64, Vec<u8>), StoreError>> {
        self.tree.scan_prefix([REC]).map(|item| {
            let (k, v) = item?;
            let id = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Ok((id, v.to_vec()))
        })
    }

    /// A document's stored vector.
    pub fn vector(&self, id: u64) -> Result<Option<Vec<f32>>, StoreError> {
        Ok(self
            .tree
            .get(key(VEC, &id.to_be_bytes()))?
            .map(|v| decode_vec(&v)))
    }

    /// Caller metadata under `k`.
    pub fn meta(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key(META, k))?.map(|v| v.to_vec()))
    }

    /// Caller metadata whose key starts with `prefix`.
    pub fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(key(META, prefix)) {
            let (k, v) = item?;
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The `k` best BM25 matches for `query`.
    pub fn bm25(&self, query: &str, k: usize) -> Result<Vec<Scored>, StoreError> {
        let stats = self.stats()?;
        if stats.docs == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let n = stats.docs as f32;
        let avgdl = (stats.total_len as f32 / n).max(1.0);
        let terms: HashSet<String> = tokenize(query).into_iter().collect();
        let mut guard = self.postings.lock().map_err(|_| poisoned())?;
        let cache = guard.get_or_insert_with(PostCache::default);
        self.sync_postings(cache, stats.next_id)?;
        let mut weighted = Vec::new();
        for t in terms {
            if let Some(list) = cache.postings.get(&t) {
                let df = list.len() as f32;
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                weighted.push((list, idf));
            }
        }
        if weighted.is_empty() {
            return Ok(Vec::new());
        }
        // The best score any document could reach: the normaliser.
        let best: f32 = weighted.iter().map(|(_, idf)| idf * (K1 + 1.0)).sum();
        let common = (stats.docs / 4).max(1000) as usize;
        if weighted.iter().any(|(l, _)| l.len() <= common) {
            weighted.retain(|(l, _)| l.len() <= common);
        }
        let mut scores: HashMap<u64, f32> = HashMap::new();
        for (list, idf) in &weighted {
            for (id, tf, dl) in list.iter() {
                let (tf, dl) = (*tf as f32, *dl as f32);
                let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl / avgdl));
                *scores.entry(*id).or_default() += s;
            }
        }
        let mut out: Vec<Scored> = scores
            .into_iter()
            .map(|(id, s)| Scored {
                id,
                score: s,
                bm25: Some((s / best).min(1.0)),
                cosine: None,
            })
            .collect();
        top_k(&mut out, k);
        Ok(out)
    }

    /// Bring `c` up to date with documents stored after its last id.
    fn sync_postings(&self, c: &mut PostCache, next: u64) -> Result<(), StoreError> {
        if next == c.synced {
            return Ok(());
        }
        let from = c.last_id + 1;
        for item in self
            .tree
            .range(key(TERMS, &from.to_be_bytes())..key(TERMS + 1, &[]))
        {
            let (k, v) = item?;
            let Some(id) = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            let Some((len, terms)) = decode_terms(&v) else {
                continue;
            };
            for (term, tf) in terms {
                match c.postings.get_mut(term.as_ref()) {
                    Some(list) => list.push((id, tf, len)),
                    None => {
                        c.postings.insert(term.into_owned(), vec![(id, tf, len)]);
                    }
                }
            }
            c.last_id = c.last_id.max(id);
        }
        c.synced = next;
        Ok(())
    }

    /// Bring `c` up to date with vectors stored after its last id.
    fn sync_vectors(&self, c: &mut VecCache) -> Result<(), StoreError> {
        let next = self.stats()?.next_id;
        if next == c.synced {
            return Ok(());
        }
        let from = c.ids.last().map(|l| l + 1).unwrap_or(0);
        let mut buf = Vec::new();
        for item in self
            .tree
            .range(key(VEC, &from.to_be_bytes())..key(VEC + 1, &[]))
        {
            let (k, v) = item?;
            if let Some(id) = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
            {
                vecscan::decode_le_into(&v, &mut buf);
                c.push(id, &buf);
            }
        }
        c.synced = next;
        Ok(())
    }

    /// The `k` nearest stored vectors to `query` (unit vectors: cosine).
    pub fn dense(&self, query: &[f32], k: usize) -> Result<Vec<Scored>, StoreError> {
        let mut guard = self
            .vectors
            .lock()
            .map_err(|_| StoreError::Write("vector cache poisoned".into()))?;
        let c = guard.get_or_insert_with(VecCache::default);
        self.sync_vectors(c)?;
        if c.dims == 0 || c.dims != query.len() || k == 0 {
            return Ok(Vec::new());
        }
        // Coarse pass over the quantised vectors, then the exact cosine
        // (from the stored f32 vector) for the best few hundred.
        let scores = c.scores(query);
        let keep = (k * 8).max(RESCORE_MIN);
        let mut order: Vec<u32> = (0..scores.len() as u32).collect();
        if order.len() > keep {
            order.select_nth_unstable_by(keep, |a, b| {
                scores[*b as usize].total_cmp(&scores[*a as usize])
            });
            order.truncate(keep);
        }
        let candidates: Vec<u64> = order.iter().map(|i| c.ids[*i as usize]).collect();
        drop(guard);
        let mut out = Vec::with_capacity(candidates.len());
        for id in candidates {
            // A vector removed since the cache was filled is skipped.
            if let Some(v) = self.vector(id)?
                && v.len() == query.len()
            {
                let cos: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
                out.push(Scored {
                    id,
                    score: cos,
                    bm25: None,
                    cosine: Some(cos),
                });
            }
        }
        top_k(&mut out, k);
        Ok(out)
    }

    /// BM25 and (with a query vector) dense results fused by reciprocal
    /// rank; each result keeps its BM25 and cosine scores for thresholds.
    pub fn hybrid(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        k: usize,
    ) -> Result<Vec<Scored>, StoreError> {
        match vector {
            None => Ok(fuse(&self.bm25(query, (k * 4).max(40))?, &[], k)),
            Some(v) => self.hybrid_with(query, k, || Some(v.to_vec())),
        }
    }

    /// [`Index::hybrid`] with the query vector made by `vector` (embedding
    /// the query) while the keyword search runs on another thread: the two
    /// share nothing, and the first query of a process loads both indexes
    /// (about 0.3 s each at 100k documents).
    pub fn hybrid_with(
        &self,
        query: &str,
        k: usize,
        vector: impl FnOnce() -> Option<Vec<f32>>,
    ) -> Result<Vec<Scored>, StoreError> {
        let depth = (k * 4).max(40);
        let (lexical, dense) = std::thread::scope(|s| {
            let lexical = s.spawn(|| self.bm25(query, depth));
            let dense = match vector() {
                Some(v) => self.dense(&v, depth),
                None => Ok(Vec::new()),
            };
            (lexical.join(), dense)
        });
        let lexical =
            lexical.map_err(|_| StoreError::Write("the keyword search panicked".into()))??;
        Ok(fuse(&lexical, &dense?, k))
    }
}

/// Reciprocal-rank fusion of two ranked lists.
pub fn fuse(lexical: &[Scored], dense: &[Scored], k: usize) -> Vec<Scored> {
    let mut merged: HashMap<u64, Scored> = HashMap::new();
    for (list, is_dense) in [(lexical, false), (dense, true)] {
        for (rank, s) in list.iter().enumerate() {
            let e = merged.entry(s.id).or_insert(Scored {
                id: s.id,
                score: 0.0,
                bm25: None,
                cosine: None,
            });
            e.score += 1.0 / (RRF_K + rank as f32 + 1.0);
            if is_dense {
                e.cosine = s.cosine;
            } else {
                e.bm25 = s.bm25;
            }
        }
    }
    let mut out: Vec<Scored> = merged.into_values().collect();
    top_k(&mut out, k);
    out
}

fn top_k(v: &mut Vec<Scored>, k: usize) {
    let cmp = |a: &Scored, b: &Scored| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id));
    if v.len() > k {
        v.select_nth_unstable_by(k, cmp);
        v.truncate(k);
    }
    v.sort_by(cmp);
}

fn poisoned() -> StoreError {
    StoreError::Write("an earlier write panicked; restart agent".into())
}

/// Writes gathered for one atomic batch, readable before they are applied.
struct Pending<'a> {
    tree: &'a sled::Tree,
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Pending<'_> {
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(k)?.map(|v| v.to_vec())),
        }
    }
    fn set(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }
    fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }
}

fn remove_doc(p: &mut Pending<'_>, s: &mut Stats, id: u64) -> Result<(), StoreError> {
    let tk = key(TERMS, &id.to_be_bytes());
    let Some(enc) = p.get(&tk)? else {
        return Ok(());
    };
    let len = decode_terms(&enc).map_or(0, |(len, _)| len);
    p.del(tk);
    p.del(key(REC, &id.to_be_bytes()));
    p.del(key(VEC, &id.to_be_bytes()));
    s.docs = s.docs.saturating_sub(1);
    s.total_len = s.total_len.saturating_sub(u64::from(len));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(idx: &Index, text: &str) -> u64 {
        let id = idx.reserve_ids(1).unwrap();
        idx.write(&WriteBatch {
            add: vec![NewDoc {
                id,
                text: text.into(),
                record: text.as_bytes().to_vec(),
                vector: None,
            }],
            ..Default::default()
        })
        .unwrap();
        id
    }

    #[test]
    fn english_words_are_lowercased_stemmed_and_stop_words_dropped() {
        assert_eq!(
            tokenize("The Cats' libraries, and Rust's crates!"),
            vec!["cat", "library", "rust", "crate"]
        );
    }

    #[test]
    fn cjk_becomes_unigrams_and_bigrams() {
        assert_eq!(tokenize("東京都"), vec!["東", "京", "東京", "都", "京都"]);
        // Mixed text keeps both scripts.
        assert_eq!(tokenize("rust 语言"), vec!["rust", "语", "言", "语言"]);
    }

    #[test]
    fn bm25_ranks_the_matching_document_first_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let store = Store::open(dir.path()).unwrap();
            let idx = Index::open(&store, "t").unwrap();
            let a = doc(&idx, "the deploy script lives in tools/deploy.sh");
            let b = doc(&idx, "my favourite colour is green");
            let c = doc(&idx, "用户喜欢喝绿茶");
            (a, b, c)
        };
        let store = Store::open(dir.path()).unwrap();
        let idx = Index::open(&store, "t").unwrap();
        assert_eq!(idx.len().unwrap(), 3);
        assert_eq!(
            idx.bm25("where is the deploy script?", 5).unwrap()[0].id,
            ids.0
        );
        assert_eq!(idx.bm25("favourite colour", 5).unwrap()[0].id, ids.1);
        assert_eq!(idx.bm25("绿茶", 5).unwrap()[0].id, ids.2);
        assert!(idx.bm25("quantum chromodynamics", 5).unwrap().is_empty());
    }

    #[test]
    fn removing_a_document_removes_it_from_results_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let idx = Index::open(&store, "t").unwrap();
        let a = doc(&idx, "alpha beta");
        let b = doc(&idx, "alpha gamma");
        idx.write(&WriteBatch {
            remove: vec![a],
            ..Default::default()
        })
        .unwrap();
        let hits = idx.bm25("alpha", 5).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![b]);
        assert_eq!(idx.len().unwrap(), 1);
        assert!(idx.record(a).unwrap().is_none());
        assert!(idx.bm25("beta", 5).unwrap().is_empty());
    }

    #[test]
    fn dense_and_fusion_prefer_documents_both_retrievers_like() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let idx = Index::open(&store, "t").unwrap();
        let half = std::f32::consts::FRAC_1_SQRT_2;
        let vecs = [[1.0, 0.0], [0.0, 1.0], [half, half]];
        let texts = ["red apple", "green pear", "red pear"];
        let first = idx.reserve_ids(3).unwrap();
        idx.write(&WriteBatch {
            add: (0..3)
                .map(|i| NewDoc {
                    id: first + i as u64,
                    text: texts[i].into(),
                    record: vec![],
                    vector: Some(vecs[i].to_vec()),
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
        let d = idx.dense(&[1.0, 0.0], 3).unwrap();
        assert_eq!(d[0].id, first);
        let h = idx.hybrid("pear", Some(&[0.9, 0.436]), 3).unwrap();
        assert_eq!(h[0].id, first + 2, "{h:?}");
        assert!(h[0].bm25.is_some() && h[0].cosine.is_some());
    }

    #[test]
    fn the_quantised_scan_returns_the_exact_top_k_and_skips_removed_vectors() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let idx = Index::open_unflushed(&store, "t").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let unit = |rng: &mut rand::rngs::StdRng| {
            let mut v: Vec<f32> = (0..48).map(|_| rng.random::<f32>() - 0.5).collect();
            normalize(&mut v);
            v
        };
        let vectors: Vec<Vec<f32>> = (0..3000).map(|_| unit(&mut rng)).collect();
        let first = idx.reserve_ids(3000).unwrap();
        idx.write(&WriteBatch {
            add: vectors
                .iter()
                .enumerate()
                .map(|(i, v)| NewDoc {
                    id: first + i as u64,
                    text: String::new(),
                    record: vec![],
                    vector: Some(v.clone()),
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
        for _ in 0..20 {
            let q = unit(&mut rng);
            let mut exact: Vec<(u64, f32)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (first + i as u64, v.iter().zip(&q).map(|(a, b)| a * b).sum()))
                .collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got = idx.dense(&q, 10).unwrap();
            let got_ids: Vec<u64> = got.iter().map(|s| s.id).collect();
            let want: Vec<u64> = exact[..10].iter().map(|e| e.0).collect();
            assert_eq!(got_ids, want);
            // The reported cosine is the exact one, not the quantised guess.
            assert_eq!(got[0].cosine, Some(exact[0].1));
        }
        // A removed vector is never returned, even though the cache held it.
        let q = vectors[5].clone();
        assert_eq!(idx.dense(&q, 1).unwrap()[0].id, first + 5);
        idx.write(&WriteBatch {
            remove: vec![first + 5],
            ..Default::default()
        })
        .unwrap();
        assert!(idx.dense(&q, 10).unwrap().iter().all(|s| s.id != first + 5));
    }

    #[test]
    fn an_interrupted_reembedding_leaves_the_index_keyword_only_until_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let idx = Index::open(&store, "t").unwrap();
        for i in 0..40 {
            doc(&idx, &format!("note number {i}"));
        }
        let calls = std::cell::Cell::new(0);
        let failing = |texts: &[&str]| -> Result<Vec<Vec<f32>>, StoreError> {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                return Err(StoreError::Write("the embedder died".into()));
            }
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        };
        let prepare = |_: u64, r: &[u8]| -> Result<(String, Option<Vec<u8>>), StoreError> {
            Ok((String::from_utf8_lossy(r).into_owned(), None))
        };
        assert!(
            idx.reembed("new/2", &failing, &prepare, Vec::new(), &|_, _| {})
                .is_err()
        );
        assert!(matches!(
            idx.check_space("new/2").unwrap(),
            SpaceCheck::Mismatch { .. }
        ));
        assert!(
            idx.space_mismatch(Some("new/2"), "notes")
                .unwrap()
                .is_some()
        );
        let ok = |texts: &[&str]| -> Result<Vec<Vec<f32>>, StoreError> {
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        };
        assert_eq!(
            idx.reembed("new/2", &ok, &prepare, Vec::new(), &|_, _| {})
                .unwrap(),
            40
        );
        assert_eq!(idx.check_space("new/2").unwrap(), SpaceCheck::Usable);
        assert_eq!(idx.dense(&[1.0, 0.0], 50).unwrap().len(), 40);
    }

    #[test]
    fn forward_records_round_trip_and_json_ones_from_older_stores_still_read() {
        let terms = vec![("deploy".to_string(), 2), ("東京".to_string(), 1)];
        let enc = encode_terms(&terms, 7);
        let (len, got) = decode_terms(&enc).unwrap();
        assert_eq!(len, 7);
        assert_eq!(
            got.iter()
                .map(|(t, f)| (t.to_string(), *f))
                .collect::<Vec<_>>(),
            terms
        );
        let json = serde_json::to_vec(&(terms.clone(), 7u32)).unwrap();
        let (len, got) = decode_terms(&json).unwrap();
        assert_eq!((len, got.len()), (7, 2));
        // Damage is reported as None, never a panic.
        assert!(decode_terms(&enc[..enc.len() - 2]).is_none());
        assert!(decode_terms(b"").is_none());
        assert!(decode_terms(&[9, 1, 2]).is_none());
    }
}
