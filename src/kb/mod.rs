//! The knowledge base: the user's own documents, split into chunks and
//! indexed like memories, for `agent kb` and the `kb_search` tool.
//!
//! Pipeline: [`load`] (text, Markdown, HTML, code) → [`split`] (token-sized
//! chunks with overlap, respecting headings and paragraphs) → the `kb`
//! [`Index`] (BM25 + optional dense) → [`KnowledgeBase::search`].
//!
//! Decisions:
//! - A document is keyed by its absolute path (or URL) and remembered with
//!   the SHA-256 of its bytes: re-adding unchanged bytes is skipped, changed
//!   bytes replace all of its chunks.
//! - A document's chunks, their postings and its record are written in one
//!   sled transaction and flushed before `add` returns, so `kill -9` during
//!   `agent kb add` leaves every acknowledged document whole and nothing of
//!   the one in flight.
//! - Only regular files are read (case 41): a FIFO, a device or a socket is
//!   refused by its type before it is opened (a FIFO named directly is an
//!   error; one met inside a folder is skipped with the reason), and the open
//!   itself does not wait (`O_NONBLOCK`) and is checked again on the handle,
//!   so a path swapped for a FIFO in between cannot hang `kb add` either.

pub mod load;
pub mod split;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::memory::embed::{EmbedError, Embedder};
use crate::memory::index::{Index, NewDoc, Scored, WriteBatch};
use crate::memory::journal::now_rfc3339;
use crate::memory::{Store, StoreError};
use load::{DocKind, LoadError};
use split::SplitOptions;

/// Largest document accepted, in bytes.
pub const MAX_DOC_BYTES: usize = 20 * 1024 * 1024;
/// The same, in MiB (for messages).
const MAX_DOC_MIB: usize = MAX_DOC_BYTES >> 20;

/// A document in the knowledge base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// Absolute path or URL.
    pub source: String,
    /// How it was read.
    pub kind: DocKind,
    /// SHA-256 of its bytes (hex).
    pub hash: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its chunks' ids, in order.
    pub chunks: Vec<u64>,
    /// When it was (last) added.
    pub added_at: String,
    /// The embedder its vectors come from (`none` without): re-adding the
    /// same bytes under another embedder indexes them again.
    #[serde(default)]
    pub embedder: String,
    /// The chunk size and overlap it was cut with (`256/32`): re-adding the
    /// same bytes with other sizes cuts them again. (Both are empty in
    /// records written before they existed; those are indexed again once.)
    #[serde(default)]
    pub chunking: String,
}

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The document it came from.
    pub source: String,
    /// The heading path it sits under.
    pub heading: String,
    /// First line (block number for HTML; 0 when unknown).
    pub line: usize,
    /// Last line.
    pub end_line: usize,
    /// Its text.
    pub text: String,
}

impl Chunk {
    /// `source:10-24 (Heading > Sub)`: where to look.
    pub fn location(&self) -> String {
        let mut s = self.source.clone();
        if self.line > 0 {
            s.push_str(&format!(":{}-{}", self.line, self.end_line));
        } else if self.end_line > 0 {
            s.push_str(&format!(" block {}", self.end_line));
        }
        if !self.heading.is_empty() {
            s.push_str(&format!(" ({})", self.heading));
        }
        s
    }
}

/// A search result.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    /// The chunk.
    pub chunk: Chunk,
    /// Its scores.
    pub scored: Scored,
}

/// What adding a document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// New, with this many chunks.
    Added(usize),
    /// Changed since last time; its chunks were replaced.
    Updated(usize),
    /// Same bytes as before; nothing done.
    Unchanged,
}

/// A knowledge-base failure.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{doc}: {error}")]
    Load { doc: String, error: LoadError },
    #[error("{0}: larger than {MAX_DOC_BYTES} bytes; split it first")]
    TooLarge(String),
    #[error(
        "{0}: the download passed the {MAX_DOC_MIB} MiB cap on a document ({MAX_DOC_BYTES} bytes) and was stopped there; \
         save the part you need to a file and add that"
    )]
    DownloadTooLarge(String),
    #[error("{0}: nothing to index (no text)")]
    Empty(String),
    #[error("{doc}: embedding failed: {error}")]
    Embed { doc: String, error: EmbedError },
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: not a regular file ({kind}); only regular files and folders of them can be added"
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot fetch {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("nothing in the knowledge base matches `{0}`; `agent kb list` shows what is there")]
    NotFound(String),
    #[error("record `{key}` is unreadable: {detail}")]
    BadRecord { key: String, detail: String },
}

/// What a chunk's BM25 terms and vector are made from.
fn indexed_text(heading: &str, text: &str) -> String {
    format!("{heading}\n{text}")
}

impl Chunk {
    /// The text indexed for this chunk.
    pub fn indexed_text(&self) -> String {
        indexed_text(&self.heading, &self.text)
    }
}

fn doc_key(source: &str) -> Vec<u8> {
    let mut k = b"d".to_vec();
    k.extend_from_slice(source.as_bytes());
    k
}

/// The knowledge base in the store.
pub struct KnowledgeBase {
    index: Index,
    embedder: Option<Arc<dyn Embedder>>,
    split: SplitOptions,
    /// The embedder the stored vectors come from, when it is not ours: then
    /// chunks are searched by keywords only, and stored without vectors,
    /// until [`KnowledgeBase::reembed`].
    mismatch: Option<String>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase").finish_non_exhaustive()
    }
}

impl KnowledgeBase {
    /// The knowledge base in `store`, embedding chunks with `embedder` when given.
    pub fn open(store: &Store, embedder: Option<Arc<dyn Embedder>>) -> Result<Self, KbError> {
        let index = Index::open(store, "kb")?;
        let mismatch =
            index.space_mismatch(embedder.as_ref().map(|e| e.id()), "knowledge-base chunks")?;
        Ok(Self {
            index,
            embedder,
            split: SplitOptions::default(),
            mismatch,
        })
    }

    /// The embedder for new vectors and queries: none while the stored
    /// vectors come from another one.
    fn active(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref().filter(|_| self.mismatch.is_none())
    }

    /// The embedder the stored vectors come from, when it is not ours.
    pub fn space_mismatch(&self) -> Option<&str> {
        self.mismatch.as_deref()
    }

    /// Embed every chunk again with the configured embedder, reporting
    /// (done, total); returns how many. Like the memories' re-embedding, a
    /// crash part-way leaves the index marked unfinished.
    pub fn reembed(&mut self, progress: &dyn Fn(u64, u64)) -> Result<u64, KbError> {
        let Some(e) = self.embedder.clone() else {
            return Ok(0);
        };
        // The documents keep their chunks; their records name the new embedder.
        let mut meta = Vec::new();
        for mut doc in self.list()? {
            doc.embedder = e.id().to_string();
            let bytes = serde_json::to_vec(&doc).map_err(|err| KbError::BadRecord {
                key: doc.source.clone(),
                detail: err.to_string(),
            })?;
            meta.push((doc_key(&doc.source), Some(bytes)));
        }
        let done = self.index.reembed::<KbError>(
            e.id(),
            &|texts| {
                e.embed(texts).map_err(|error| KbError::Embed {
                    doc: "the knowledge base".into(),
                    error,
                })
            },
            &|id, bytes| {
                let chunk: Chunk =
                    serde_json::from_slice(bytes).map_err(|err| KbError::BadRecord {
                        key: id.to_string(),
                        detail: err.to_string(),
                    })?;
                Ok((chunk.indexed_text(), None))
            },
            meta,
            progress,
        )?;
        self.mismatch = None;
        Ok(done)
    }

    /// Change chunk sizes (`memory.kb_chunk_tokens`, `kb_overlap_tokens`).
    pub fn with_split(mut self, split: SplitOptions) -> Self {
        self.split = split;
        self
    }

    /// What a document's index entries depend on besides its bytes: the
    /// embedder making vectors now, and the chunk sizes.
    fn indexed_with(&self) -> (String, String) {
        (
            self.active().map_or("none", |e| e.id()).to_string(),
            format!("{}/{}", self.split.max_tokens, self.split.overlap),
        )
    }

    /// A document's record.
    pub fn doc(&self, source: &str) -> Result<Option<DocRecord>, KbError> {
        match self.index.meta(&doc_key(source))? {
            Some(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                KbError::BadRecord {
                    key: source.into(),
                    detail: e.to_string(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// Every document, by source.
    pub fn list(&self) -> Result<Vec<DocRecord>, KbError> {
        let mut out = Vec::new();
        for (k, v) in self.index.meta_scan(b"d")? {
            out.push(serde_json::from_slice(&v).map_err(|e| KbError::BadRecord {
                key: String::from_utf8_lossy(&k).into(),
                detail: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Index `bytes` as the document `source`; durable on return.
    pub fn add_bytes(
        &self,
        source: &str,
        bytes: &[u8],
        kind: DocKind,
    ) -> Result<AddOutcome, KbError> {
        if bytes.len() > MAX_DOC_BYTES {
            return Err(KbError::TooLarge(source.into()));
        }
        let hash = hex::encode(Sha256::digest(bytes));
        let old = self.doc(source)?;
        let (embedder, chunking) = self.indexed_with();
        if old
            .as_ref()
            .is_some_and(|d| d.hash == hash && d.embedder == embedder && d.chunking == chunking)
        {
            return Ok(AddOutcome::Unchanged);
        }
        let sections = load::load(source, bytes, kind).map_err(|error| KbError::Load {
            doc: source.into(),
            error,
        })?;
        let drafts = split::split(&sections, self.split);
        if drafts.is_empty() {
            return Err(KbError::Empty(source.into()));
        }
        let indexed: Vec<String> = drafts
            .iter()
            .map(|d| indexed_text(&d.heading, &d.text))
            .collect();
        let vectors = match self.active() {
            Some(e) => {
                let refs: Vec<&str> = indexed.iter().map(String::as_str).collect();
                let v = e.embed(&refs).map_err(|error| KbError::Embed {
                    doc: source.into(),
                    error,
                })?;
                v.into_iter().map(Some).collect()
            }
            None => vec![None; drafts.len()],
        };
        let first = self.index.reserve_ids(drafts.len() as u64)?;
        let mut add = Vec::with_capacity(drafts.len());
        for (i, ((d, text), vector)) in drafts.iter().zip(indexed).zip(vectors).enumerate() {
            let chunk = Chunk {
                source: source.into(),
                heading: d.heading.clone(),
                line: d.line,
                end_line: d.end_line,
                text: d.text.clone(),
            };
            add.push(NewDoc {
                id: first + i as u64,
                text,
                record: serde_json::to_vec(&chunk).map_err(|e| KbError::BadRecord {
                    key: source.into(),
                    detail: e.to_string(),
                })?,
                vector,
            });
        }
        let record = DocRecord {
            source: source.into(),
            kind,
            hash,
            bytes: bytes.len() as u64,
            chunks: add.iter().map(|d| d.id).collect(),
            added_at: now_rfc3339(),
            embedder,
            chunking,
        };
        let n = add.len();
        self.index.write(&WriteBatch {
            add,
            remove: old.as_ref().map(|d| d.chunks.clone()).unwrap_or_default(),
            meta: vec![(
                doc_key(source),
                Some(serde_json::to_vec(&record).map_err(|e| KbError::BadRecord {
                    key: source.into(),
                    detail: e.to_string(),
                })?),
            )],
            space: self.active().map(|e| e.id().to_string()),
            ..Default::default()
        })?;
        Ok(if old.is_some() {
            AddOutcome::Updated(n)
        } else {
            AddOutcome::Added(n)
        })
    }

    /// Index the file at `path` (absolute); anything but a regular file is
    /// refused without being opened for long (see the module docs).
    pub fn add_file(&self, path: &Path) -> Result<AddOutcome, KbError> {
        let read_err = |error| KbError::Read {
            path: path.into(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        regular_file(path, &meta)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options.open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        regular_file(path, &meta)?;
        if meta.len() > MAX_DOC_BYTES as u64 {
            return Err(KbError::TooLarge(path.display().to_string()));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_DOC_BYTES as u64 + 1),
            &mut bytes,
        )
        .map_err(read_err)?;
        if bytes.len() > MAX_DOC_BYTES {
            return Err(KbError::TooLarge(path.display().to_string()));
        }
        let name = path.display().to_string();
        self.add_bytes(&name, &bytes, load::kind_for(&name, None))
    }

    /// Remove the document `source`, or every document under it when it
    /// names a folder; returns the sources removed.
    pub fn remove(&self, source: &str) -> Result<Vec<String>, KbError> {
        let folder = format!("{}/", source.trim_end_matches('/'));
        let docs: Vec<DocRecord> = self
            .list()?
            .into_iter()
            .filter(|d| d.source == source || d.source.starts_with(&folder))
            .collect();
        if docs.is_empty() {
            return Err(KbError::NotFound(source.into()));
        }
        let mut batch = WriteBatch::default();
        for d in &docs {
            batch.remove.extend(&d.chunks);
            batch.meta.push((doc_key(&d.source), None));
        }
        self.index.write(&batch)?;
        Ok(docs.into_iter().map(|d| d.source).collect())
    }

    /// The `k` chunks most relevant to `query`.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<ChunkHit>, KbError> {
        let scored = match self.active() {
            Some(e) => self
                .index
                .hybrid_with(query, k, || match e.embed(&[query]) {
                    Ok(mut v) if !v.is_empty() => Some(v.swap_remove(0)),
                    Ok(_) => None,
                    Err(err) => {
                        tracing::warn!("embedding the query failed, keyword search only: {err}");
                        None
                    }
                })?,
            None => self.index.hybrid(query, None, k)?,
        };
        let mut out = Vec::new();
        for s in scored {
            if let Some(bytes) = self.index.record(s.id)? {
                let chunk: Chunk =
                    serde_json::from_slice(&bytes).map_err(|e| KbError::BadRecord {
                        key: s.id.to_string(),
                        detail: e.to_string(),
                    })?;
                out.push(ChunkHit { chunk, scored: s });
            }
        }
        Ok(out)
    }

    /// How many chunks are indexed.
    pub fn chunk_count(&self) -> Result<u64, KbError> {
        Ok(self.index.len()?)
    }
}

/// `Ok` for a regular file, else why not.
fn regular_file(path: &Path, meta: &std::fs::Metadata) -> Result<(), KbError> {
    if meta.is_file() {
        return Ok(());
    }
    Err(KbError::NotRegular {
        path: path.into(),
        kind: special_kind(&meta.file_type()),
    })
}

/// What a file that is not a regular one is, in words.
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a named pipe";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

/// The files to ingest under `path`: itself if a regular file, else every
/// file below it that is not hidden, sorted. A FIFO, device or socket named
/// directly is refused; one below a folder is listed, for [`KnowledgeBase::add_file`]
/// to refuse and the caller to report as skipped.
pub fn collect_files(path: &Path) -> Result<Vec<PathBuf>, KbError> {
    let meta = std::fs::metadata(path).map_err(|error| KbError::Read {
        path: path.into(),
        error,
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !meta.is_dir() {
        return Err(KbError::NotRegular {
            path: path.into(),
            kind: special_kind(&meta.file_type()),
        });
    }
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with('.') || n == "node_modules" || n == "target")
        });
    for entry in walker {
        let entry = entry.map_err(|e| KbError::Read {
            path: path.into(),
            error: std::io::Error::other(e.to_string()),
        })?;
        let kind = entry.file_type();
        // Links are not followed; special files are listed to be reported.
        if !kind.is_dir() && !kind.is_symlink() {
            out.push(entry.into_path());
        }
    }
    out.sort();
    Ok(out)
}

/// Fetch a URL (http or https) for ingestion: (content type, bytes).
///
/// The body is streamed and reading stops one byte past [`MAX_DOC_BYTES`]
/// (at once when the server announces a larger `Content-Length`): a huge or
/// endless body costs at most the cap in memory, never its own size.
pub fn fetch_url(url: &str) -> Result<(Option<String>, Vec<u8>), KbError> {
    let fail = |detail: String| KbError::Fetch {
        url: url.into(),
        detail,
    };
    let parsed = url::Url::parse(url).map_err(|e| fail(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(fail("only http and https URLs can be added".into()));
    }
    // reqwest's blocking client must not run on an async executor thread.
    std::thread::scope(|s| {
        s.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| fail(e.to_string()))?;
            let resp = client.get(url).send().map_err(|e| fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(fail(format!("HTTP {}", resp.status())));
            }
            let ct = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_DOC_BYTES as u64)
            {
                return Err(KbError::DownloadTooLarge(url.into()));
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(resp, MAX_DOC_BYTES as u64 + 1),
                &mut bytes,
            )
            .map_err(|e| fail(e.to_string()))?;
            if bytes.len() > MAX_DOC_BYTES {
                return Err(KbError::DownloadTooLarge(url.into()));
            }
            Ok((ct, bytes))
        })
        .join()
        .unwrap_or_else(|_| Err(fail("the download thread panicked".into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Case 41: a FIFO nobody writes to would block `read`'s open for ever.
    #[cfg(unix)]
    #[test]
    fn case_41_a_fifo_is_refused_without_being_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let kb = KnowledgeBase::open(&store, None).unwrap();
        let fifo = dir.path().join("pipe.md");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        let e = kb.add_file(&fifo).unwrap_err();
        assert!(
            matches!(
                e,
                KbError::NotRegular {
                    kind: "a named pipe",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = collect_files(&fifo).unwrap_err();
        assert!(matches!(e, KbError::NotRegular { .. }), "{e}");
        // In a folder it is listed, to be reported as skipped by add_file.
        std::fs::write(dir.path().join("notes.md"), "# Notes\n\nSome text.\n").unwrap();
        let files = collect_files(dir.path()).unwrap();
        assert!(files.contains(&fifo), "{files:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn unchanged_files_are_skipped_and_changed_ones_replace_their_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let kb = KnowledgeBase::open(&store, None).unwrap();
        let f = dir.path().join("notes.md");
        std::fs::write(
            &f,
            "# Deploy\n\nThe deploy key is in vault path ops/deploy.\n",
        )
        .unwrap();
        assert_eq!(kb.add_file(&f).unwrap(), AddOutcome::Added(1));
        assert_eq!(kb.add_file(&f).unwrap(), AddOutcome::Unchanged);
        // Other chunk sizes index the same bytes again.
        let smaller = KnowledgeBase::open(&store, None)
            .unwrap()
            .with_split(SplitOptions {
                max_tokens: 64,
                overlap: 8,
            });
        assert!(matches!(
            smaller.add_file(&f).unwrap(),
            AddOutcome::Updated(_)
        ));
        assert_eq!(smaller.add_file(&f).unwrap(), AddOutcome::Unchanged);
        let hits = kb.search("where is the deploy key", 3).unwrap();
        assert_eq!(hits[0].chunk.heading, "Deploy");
        assert!(hits[0].chunk.location().contains("notes.md:3-3"));
        std::fs::write(&f, "# Deploy\n\nDeploys now use OIDC tokens.\n").unwrap();
        assert_eq!(kb.add_file(&f).unwrap(), AddOutcome::Updated(1));
        assert!(kb.search("vault", 3).unwrap().is_empty());
        assert_eq!(kb.chunk_count().unwrap(), 1);
        let removed = kb.remove(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(kb.chunk_count().unwrap(), 0);
        assert!(matches!(kb.remove("/nope"), Err(KbError::NotFound(_))));
    }

    struct Fixed(&'static str);

    impl Embedder for Fixed {
        fn id(&self) -> &str {
            self.0
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
        }
    }

    #[test]
    fn another_embedder_means_keywords_only_until_reembed_and_then_files_are_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let f = dir.path().join("notes.md");
        std::fs::write(&f, "# Deploy\n\nThe deploy key lives in vault.\n").unwrap();
        let a = KnowledgeBase::open(&store, Some(Arc::new(Fixed("fake-a/2")))).unwrap();
        assert_eq!(a.add_file(&f).unwrap(), AddOutcome::Added(1));
        drop(a);
        let mut b = KnowledgeBase::open(&store, Some(Arc::new(Fixed("fake-b/2")))).unwrap();
        assert_eq!(b.space_mismatch(), Some("fake-a/2"));
        let hits = b.search("deploy key", 3).unwrap();
        assert!(hits[0].scored.cosine.is_none());
        assert_eq!(b.reembed(&|_, _| {}).unwrap(), 1);
        assert_eq!(b.space_mismatch(), None);
        assert!(
            b.search("deploy key", 3).unwrap()[0]
                .scored
                .cosine
                .is_some()
        );
        // The file's record now names the new embedder: re-adding skips it.
        assert_eq!(b.add_file(&f).unwrap(), AddOutcome::Unchanged);
    }
}
