//! `agent memory list|search|show|add|forget|export|import`: the user's view
//! of long-term memory. Every change is flushed before it is reported.

use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Config;
use crate::memory::Store;
use crate::memory::embed::Embedder;
use crate::memory::longterm::{
    LongTermMemory, Memory, MemoryKind, NewMemory, Provenance, parse_id,
};
use crate::paths::Dirs;
use crate::sanitize::one_line;

/// Long-term memory commands.
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// List memories, newest first.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Show at most N.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Search memories (BM25, plus dense vectors when an embedder is set).
    Search {
        /// What to look for.
        query: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Results to show.
        #[arg(short = 'k', long, default_value_t = 10)]
        limit: usize,
    },
    /// Show one memory with its provenance.
    Show {
        /// Its id (`42` or `m42`).
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a memory by hand (source: user).
    Add {
        /// What to remember.
        text: String,
        /// What kind of memory.
        #[arg(long, value_enum, default_value_t = MemoryKind::Fact)]
        kind: MemoryKind,
    },
    /// Forget a memory.
    Forget {
        /// Its id.
        id: String,
    },
    /// Write every memory as JSON lines (to FILE, or stdout).
    Export {
        /// Where to write; stdout when absent.
        file: Option<PathBuf>,
    },
    /// Read memories written by `export` (from FILE, or `-` for stdin).
    Import {
        /// The JSON-lines file.
        file: PathBuf,
    },
    /// Embed every memory and knowledge-base chunk again with the
    /// configured embedder (after changing `memory.embedder`).
    Reembed,
}

/// The embedder `memory.embedder` selects, pulled on first use (with
/// progress on stderr); a broken one is an error that says how to fix it.
pub fn embedder(dirs: &Dirs, config: &Config) -> anyhow::Result<Option<Arc<dyn Embedder>>> {
    let key = std::env::var(&config.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let progress = super::context::PullProgress::new();
    let e = crate::memory::embed::open(
        &config.memory.embedder,
        &dirs.models(),
        config.memory.embed_endpoint.as_deref(),
        key,
        &progress,
    );
    progress.clear();
    Ok(e?)
}

/// The knowledge base with the configured embedder and chunk sizes.
pub fn knowledge_base(
    store: &Store,
    config: &Config,
    embedder: Option<Arc<dyn Embedder>>,
) -> anyhow::Result<crate::kb::KnowledgeBase> {
    Ok(crate::kb::KnowledgeBase::open(store, embedder)?.with_split(
        crate::kb::split::SplitOptions {
            max_tokens: config.memory.kb_chunk_tokens as usize,
            overlap: config.memory.kb_overlap_tokens as usize,
        },
    ))
}

/// The user's store, config and directories.
pub fn open_store() -> anyhow::Result<(Dirs, Config, Store)> {
    let (dirs, config) = super::user_config()?;
    let store = Store::open(&dirs.store())?;
    Ok((dirs, config, store))
}

/// One memory as `agent memory list|search` and the REPL's `/memory` show it.
pub fn line(m: &Memory) -> String {
    format!(
        "m{:<5} {:<10} {:<30} {}",
        m.id,
        m.kind.as_str(),
        // A memory stored after untrusted content says so (case 43).
        one_line(
            &match &m.provenance.tainted_by {
                Some(from) => format!("{}, after {from}", m.provenance.source),
                None => m.provenance.source.clone(),
            },
            30
        ),
        one_line(&m.text, 100)
    )
}

/// Run a memory command.
pub fn execute(cmd: MemoryCommand) -> anyhow::Result<ExitCode> {
    let (dirs, config, store) = open_store()?;
    // Listing, showing, forgetting and exporting need no model: do not load
    // (or fetch) one for them.
    let needs_embedder = matches!(
        cmd,
        MemoryCommand::Search { .. }
            | MemoryCommand::Add { .. }
            | MemoryCommand::Import { .. }
            | MemoryCommand::Reembed
    );
    let embedder = if needs_embedder {
        embedder(&dirs, &config)?
    } else {
        None
    };
    let mut memory = LongTermMemory::open(&store, embedder.clone())?;
    let mut out = std::io::stdout().lock();
    match cmd {
        MemoryCommand::Reembed => {
            let Some(e) = &embedder else {
                return Err(crate::memory::longterm::MemoryError::NoEmbedder.into());
            };
            let memories = with_bar("memories", |p| memory.reembed(p))?;
            let mut kb = knowledge_base(&store, &config, embedder.clone())?;
            let chunks = with_bar("knowledge base", |p| kb.reembed(p))?;
            writeln!(
                out,
                "re-embedded {memories} memories and {chunks} knowledge-base chunks with {}",
                e.id()
            )?;
        }
        MemoryCommand::List { json, limit } => {
            let all = memory.list()?;
            if all.is_empty() && !json {
                writeln!(
                    out,
                    "No memories yet. Add one with `agent memory add TEXT`."
                )?;
            }
            for m in all.iter().take(limit) {
                if json {
                    writeln!(out, "{}", serde_json::to_string(m)?)?;
                } else {
                    writeln!(out, "{}", line(m))?;
                }
            }
            if !json && all.len() > limit {
                writeln!(out, "({} more; --limit N shows more)", all.len() - limit)?;
            }
        }
        MemoryCommand::Search { query, json, limit } => {
            let hits = memory.search(&query, limit)?;
            if hits.is_empty() && !json {
                writeln!(out, "No memories match `{query}`.")?;
            }
            for h in hits {
                if json {
                    let mut v = serde_json::to_value(&h.memory)?;
                    v["score"] = serde_json::json!(h.scored.score);
                    v["bm25"] = serde_json::json!(h.scored.bm25);
                    v["cosine"] = serde_json::json!(h.scored.cosine);
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(out, "{}", line(&h.memory))?;
                }
            }
        }
        MemoryCommand::Show { id, json } => {
            let id = parse_id(&id)?;
            let m = memory
                .get(id)?
                .ok_or_else(|| crate::memory::longterm::MemoryError::NotFound(id.to_string()))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&m)?)?;
            } else {
                writeln!(out, "id:       m{}", m.id)?;
                writeln!(out, "kind:     {}", m.kind.as_str())?;
                writeln!(
                    out,
                    "source:   {}",
                    crate::sanitize::strip_terminal_escapes(&m.provenance.label())
                )?;
                writeln!(out, "created:  {}", m.created_at)?;
                writeln!(
                    out,
                    "updated:  {} (merged {} times)",
                    m.updated_at, m.merged
                )?;
                if let Some(e) = &m.embedder {
                    writeln!(out, "vector:   {e}")?;
                }
                writeln!(
                    out,
                    "\n{}",
                    crate::sanitize::strip_terminal_escapes(&m.text)
                )?;
            }
        }
        MemoryCommand::Add { text, kind } => {
            let added = memory.add(NewMemory {
                text,
                kind,
                provenance: Provenance::user(),
                created_at: None,
            })?;
            if added.merged {
                writeln!(out, "merged into m{} (a near-duplicate)", added.id)?;
            } else {
                writeln!(out, "stored m{}", added.id)?;
            }
        }
        MemoryCommand::Forget { id } => {
            let m = memory.forget(parse_id(&id)?)?;
            writeln!(out, "forgot m{}", m.id)?;
        }
        MemoryCommand::Export { file } => match file {
            Some(path) => {
                let f = std::fs::File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let mut w = std::io::BufWriter::new(f);
                let n = memory.export(&mut w)?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                writeln!(out, "exported {n} memories to {}", path.display())?;
            }
            None => {
                let n = memory.export(&mut out)?;
                if std::io::stderr().is_terminal() {
                    eprintln!("exported {n} memories");
                }
            }
        },
        MemoryCommand::Import { file } => {
            let (added, merged) = if file.as_os_str() == "-" {
                memory.import(std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                memory.import(BufReader::new(f))?
            };
            writeln!(
                out,
                "imported {added} memories ({merged} merged into existing ones)"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `job` with a progress bar on stderr (hidden when it is not a
/// terminal) fed by the (done, total) it reports.
fn with_bar<T>(what: &'static str, job: impl FnOnce(&dyn Fn(u64, u64)) -> T) -> T {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what);
    let out = job(&|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    out
}

/// The embedder loaded once per process (a MiniLM load reads 90 MB).
static EMBEDDER: std::sync::Mutex<Option<Option<Arc<dyn Embedder>>>> = std::sync::Mutex::new(None);

pub(crate) fn shared_embedder(
    dirs: &Dirs,
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn Embedder>>> {
    let mut slot = EMBEDDER
        .lock()
        .map_err(|_| anyhow::anyhow!("embedder cache poisoned"))?;
    if let Some(e) = slot.as_ref() {
        return Ok(e.clone());
    }
    let e = embedder(dirs, config)?;
    *slot = Some(e.clone());
    Ok(e)
}

/// The memory tools of a run: `remember`, `recall`, `kb_search`.
pub fn run_tools(
    store: &Store,
    dirs: &Dirs,
    config: &Config,
) -> anyhow::Result<Vec<Arc<dyn crate::tools::Tool>>> {
    use crate::tools::memory::{KbSearch, Recall, Remember};
    let e = shared_embedder(dirs, config)?;
    let memory = Arc::new(LongTermMemory::open(store, e.clone())?);
    let kb = Arc::new(knowledge_base(store, config, e)?);
    Ok(vec![
        Arc::new(Remember::new(memory.clone())),
        Arc::new(Recall::new(memory)),
        Arc::new(KbSearch::new(kb)),
    ])
}

/// The run's memory hook: recall before each step, reflect at the end.
pub fn run_hook(
    store: &Store,
    dirs: &Dirs,
    config: &Config,
) -> anyhow::Result<Arc<dyn crate::agent::hooks::MemoryHook>> {
    let memory = Arc::new(LongTermMemory::open(store, shared_embedder(dirs, config)?)?);
    let reflect = if config.memory.reflect {
        Some(crate::prompt::PromptLibrary::new(&dirs.prompts).load("reflect")?)
    } else {
        None
    };
    Ok(Arc::new(crate::agent::recall::LongTermHook::new(
        memory,
        reflect,
        config.memory.clone(),
    )))
}

/// Deterministic stand-in vectors (of a given size; 384 like MiniLM) so the
/// benchmark measures the dense search and fusion cost, not a model.
struct RandomEmbedder(usize);

impl Embedder for RandomEmbedder {
    fn id(&self) -> &str {
        "random"
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, crate::memory::embed::EmbedError> {
        use rand::{Rng, SeedableRng};
        use std::hash::{Hash, Hasher};
        Ok(texts
            .iter()
            .map(|t| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                t.hash(&mut h);
                let mut rng = rand::rngs::StdRng::seed_from_u64(h.finish());
                let mut v: Vec<f32> = (0..self.0).map(|_| rng.random_range(-1.0..1.0)).collect();
                crate::memory::index::normalize(&mut v);
                v
            })
            .collect())
    }
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn sentence(rng: &mut rand::rngs::StdRng, words: usize) -> String {
    use rand::Rng;
    // Log-uniform over a 20k-word vocabulary: a few common words, a long tail.
    (0..words)
        .map(|_| format!("w{}", (20_000f64.powf(rng.random::<f64>()) as usize)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `agent bench memory`: insert and recall latency at 1k, 10k, 100k
/// memories (BM25 and hybrid with stand-in vectors, or a real embedder),
/// knowledge-base ingestion MB/s, and peak RSS.
pub fn bench(max: usize, embedder_spec: &str) -> anyhow::Result<()> {
    use crate::memory::index::{Index, NewDoc, WriteBatch};
    use rand::SeedableRng;
    use std::time::Instant;
    anyhow::ensure!(
        max >= 1_000,
        "--max {max} measures nothing: the collections are 1k, 10k and 100k; give --max 1000 or more"
    );
    let dirs = super::dirs()?;
    let embedder: Option<Arc<dyn Embedder>> = match embedder_spec {
        "random" => Some(Arc::new(RandomEmbedder(384))),
        spec => crate::memory::embed::open(
            spec,
            &dirs.models(),
            None,
            None,
            &super::context::PullProgress::new(),
        )?,
    };
    let label = embedder.as_ref().map(|e| e.id().to_string());
    let dims = match &embedder {
        Some(e) => e.embed(&["probe"])?.first().map_or(384, Vec::len),
        None => 384,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for n in [1_000usize, 10_000, 100_000]
        .into_iter()
        .filter(|n| *n <= max)
    {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        // Bulk load without per-write flushes (a fresh store filled fast).
        let bulk = Index::open_unflushed(&store, "memories")?;
        let loaded = Instant::now();
        let mut done = 0;
        while done < n {
            let batch = 1000.min(n - done);
            let first = bulk.reserve_ids(batch as u64)?;
            let texts: Vec<String> = (0..batch).map(|_| sentence(&mut rng, 12)).collect();
            // Stand-in vectors (of the embedder's size, labelled as its) so
            // 100k memories load in seconds; a real model would take an hour
            // here. Recall cost does not depend on what the vectors say.
            let vectors = match &embedder {
                Some(_) => {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    RandomEmbedder(dims)
                        .embed(&refs)?
                        .into_iter()
                        .map(Some)
                        .collect()
                }
                None => vec![None; batch],
            };
            let add = texts
                .into_iter()
                .zip(vectors)
                .enumerate()
                .map(|(i, (text, vector))| {
                    let m = Memory {
                        id: first + i as u64,
                        text: text.clone(),
                        kind: MemoryKind::Fact,
                        provenance: Provenance::user(),
                        created_at: String::new(),
                        updated_at: String::new(),
                        merged: 0,
                        embedder: label.clone(),
                    };
                    Ok(NewDoc {
                        id: m.id,
                        text,
                        record: serde_json::to_vec(&m)?,
                        vector,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            bulk.write(&WriteBatch {
                add,
                space: label.clone(),
                ..Default::default()
            })?;
            done += batch;
        }
        store.flush()?;
        let load_s = loaded.elapsed().as_secs_f64();
        let memory = LongTermMemory::open(&store, embedder.clone())?;
        // Durable single inserts at this size (dedup check + embed + flush).
        let mut insert = Vec::new();
        for _ in 0..100 {
            let text = sentence(&mut rng, 12);
            let t = Instant::now();
            memory.add(NewMemory {
                text,
                kind: MemoryKind::Fact,
                provenance: Provenance::user(),
                created_at: None,
            })?;
            insert.push(t.elapsed().as_secs_f64() * 1e3);
        }
        // Recall: top-10, BM25 alone and hybrid (first query loads the vectors).
        let queries: Vec<String> = (0..200).map(|_| sentence(&mut rng, 4)).collect();
        let warm = Instant::now();
        memory.search(&queries[0], 10)?;
        let warm_ms = warm.elapsed().as_secs_f64() * 1e3;
        let (mut bm25, mut hybrid, mut embed, mut e2e) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for q in &queries {
            // What a recall costs the agent: embedding the query (alongside
            // the keyword search), the vector search, fusion, the records.
            let t = Instant::now();
            memory.search(q, 10)?;
            e2e.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            memory.index().bm25(q, 10)?;
            bm25.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let v = embedder.as_ref().map(|e| e.embed(&[q])).transpose()?;
            embed.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            memory
                .index()
                .hybrid(q, v.as_ref().map(|v| v[0].as_slice()), 10)?;
            hybrid.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "memories {n:>6}: bulk load {load_s:.1}s; durable insert median {:.2} ms p95 {:.2} ms; recall top-10 BM25 median {:.2} ms p95 {:.2} ms; hybrid ({}) median {:.2} ms p95 {:.2} ms, embedding the query median {:.2} ms; whole recall (embedding alongside BM25) median {:.2} ms p95 {:.2} ms (first query {warm_ms:.0} ms loads vectors)",
            percentile(&mut insert, 0.5),
            percentile(&mut insert, 0.95),
            percentile(&mut bm25, 0.5),
            percentile(&mut bm25, 0.95),
            label.as_deref().unwrap_or("no embedder"),
            percentile(&mut hybrid, 0.5),
            percentile(&mut hybrid, 0.95),
            percentile(&mut embed, 0.5),
            percentile(&mut e2e, 0.5),
            percentile(&mut e2e, 0.95),
        );
    }
    // Knowledge-base ingestion: 200 Markdown documents of ~50 KB, durable.
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let kb = crate::kb::KnowledgeBase::open(&store, None)?;
    let docs: Vec<String> = (0..200)
        .map(|d| {
            let mut s = format!("# Document {d}\n\n");
            for sec in 0..10 {
                s.push_str(&format!("## Section {sec}\n\n"));
                for _ in 0..6 {
                    s.push_str(&sentence(&mut rng, 120));
                    s.push_str(".\n\n");
                }
            }
            s
        })
        .collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    let t = Instant::now();
    for (i, d) in docs.iter().enumerate() {
        kb.add_bytes(
            &format!("/bench/doc{i}.md"),
            d.as_bytes(),
            crate::kb::load::DocKind::Markdown,
        )?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "kb ingestion (BM25 only, durable per document): {:.1} MB in {secs:.1}s = {:.2} MB/s, {} chunks",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        kb.chunk_count()?
    );
    if let Some(mb) = peak_rss_mb() {
        println!("peak RSS (VmHWM): {mb:.0} MB");
    }
    Ok(())
}
