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
}

/// The embedder the environment selects; a broken one is an error that
/// says how to fix it.
pub fn embedder(dirs: &Dirs, config: &Config) -> anyhow::Result<Option<Arc<dyn Embedder>>> {
    Ok(crate::memory::embed::from_env(
        &dirs.models(),
        &config.api_key_env,
    )?)
}

/// The user's store, config and directories.
pub fn open_store() -> anyhow::Result<(Dirs, Config, Store)> {
    let dirs = super::dirs()?;
    let config = Config::load(
        &dirs.config_file(),
        &Default::default(),
        &Default::default(),
    )?;
    let store = Store::open(&dirs.store())?;
    Ok((dirs, config, store))
}

fn line(m: &Memory) -> String {
    let text: String = m.text.chars().take(100).collect();
    let more = if m.text.chars().count() > 100 {
        "…"
    } else {
        ""
    };
    format!(
        "m{:<5} {:<10} {:<20} {}{}",
        m.id,
        m.kind.as_str(),
        m.provenance.source.chars().take(20).collect::<String>(),
        crate::sanitize::strip_terminal_escapes(&text).replace('\n', " "),
        more
    )
}

/// Run a memory command.
pub fn execute(cmd: MemoryCommand) -> anyhow::Result<ExitCode> {
    let (dirs, config, store) = open_store()?;
    let memory = LongTermMemory::open(&store, embedder(&dirs, &config)?)?;
    let mut out = std::io::stdout().lock();
    match cmd {
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
                writeln!(out, "source:   {}", m.provenance.label())?;
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

/// The embedder loaded once per process (a MiniLM load reads 90 MB).
static EMBEDDER: std::sync::Mutex<Option<Option<Arc<dyn Embedder>>>> = std::sync::Mutex::new(None);

fn shared_embedder(dirs: &Dirs, config: &Config) -> anyhow::Result<Option<Arc<dyn Embedder>>> {
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
    let kb = Arc::new(crate::kb::KnowledgeBase::open(store, e)?);
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
    let reflect = crate::prompt::PromptLibrary::new(&dirs.prompts)
        .load("reflect")
        .ok();
    Ok(Arc::new(crate::memory::hook::LongTermHook::new(
        memory, reflect,
    )))
}
