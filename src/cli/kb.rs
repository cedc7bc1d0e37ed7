//! `agent kb add|list|search|remove`: the user's documents for `kb_search`.
//!
//! `add` prints one line per document on stdout only after that document
//! is durably committed, so a line seen is a document kept, even if the
//! process is killed right after. The progress bar (stderr, terminals only)
//! counts files.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::memory::{embedder, open_store};
use crate::kb::load::kind_for;
use crate::kb::{AddOutcome, KbError, collect_files, fetch_url};

/// Knowledge-base commands.
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Add files, folders (recursively) or http(s) URLs; changed files are
    /// re-indexed, unchanged ones skipped.
    Add {
        /// Paths or URLs.
        #[arg(required = true)]
        sources: Vec<String>,
    },
    /// List the documents.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Search the documents.
    Search {
        /// What to look for.
        query: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Results to show.
        #[arg(short = 'k', long, default_value_t = 5)]
        limit: usize,
    },
    /// Remove a document, or every document under a folder.
    Remove {
        /// The path (or URL) as added.
        path: String,
    },
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The absolute form of a path argument (canonical when it exists).
fn source_key(arg: &str) -> String {
    if is_url(arg) {
        return arg.to_string();
    }
    let p = PathBuf::from(arg);
    p.canonicalize()
        .or_else(|_| std::path::absolute(&p))
        .unwrap_or(p)
        .display()
        .to_string()
}

/// One document as `agent kb list` and the REPL's `/kb` show it.
pub fn doc_line(d: &crate::kb::DocRecord) -> String {
    format!(
        "{}  ({:?}, {} chunks, {} bytes, added {})",
        crate::sanitize::one_line(&d.source, 300),
        d.kind,
        d.chunks.len(),
        d.bytes,
        d.added_at
    )
}

/// One search hit as `agent kb search` and the REPL's `/kb QUERY` show it.
pub fn hit_text(h: &crate::kb::ChunkHit) -> String {
    let text = crate::sanitize::strip_terminal_escapes(&h.chunk.text);
    format!(
        "== {}\n{}",
        crate::sanitize::one_line(&h.chunk.location(), 300),
        crate::sanitize::cap_head_tail(&text, 600)
    )
}

/// Run a knowledge-base command.
pub fn execute(cmd: KbCommand) -> anyhow::Result<ExitCode> {
    let (dirs, config, store) = open_store()?;
    // Listing and removing need no model: do not load (or fetch) one.
    let embedder = if matches!(cmd, KbCommand::Add { .. } | KbCommand::Search { .. }) {
        embedder(&dirs, &config)?
    } else {
        None
    };
    let kb = super::memory::knowledge_base(&store, &config, embedder)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        KbCommand::Add { sources } => {
            // Gather first, so the bar knows the total.
            let mut work: Vec<(String, bool)> = Vec::new();
            let mut failed = 0;
            for s in &sources {
                if is_url(s) {
                    work.push((s.clone(), true));
                    continue;
                }
                let path = PathBuf::from(source_key(s));
                match collect_files(&path) {
                    Ok(files) => {
                        // A file named directly fails the command; one met in
                        // a folder (binary, special, ...) is skipped.
                        let explicit = !path.is_dir();
                        work.extend(
                            files
                                .into_iter()
                                .map(|f| (f.display().to_string(), explicit)),
                        );
                    }
                    Err(e) => {
                        eprintln!("error: {}", crate::sanitize::one_line(&e.to_string(), 500));
                        failed += 1;
                    }
                }
            }
            let bar = ProgressBar::new(work.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let (mut added, mut updated, mut unchanged, mut skipped) = (0, 0, 0, 0);
            let started = std::time::Instant::now();
            let mut bytes = 0u64;
            for (source, explicit) in work {
                // A file name is untrusted text (case 44): one clean line.
                let shown = crate::sanitize::one_line(&source, 300);
                bar.set_message(shown.clone());
                let result = if is_url(&source) {
                    fetch_url(&source).and_then(|(ct, body)| {
                        bytes += body.len() as u64;
                        kb.add_bytes(&source, &body, kind_for(&source, ct.as_deref()))
                    })
                } else {
                    bytes += std::fs::metadata(&source).map(|m| m.len()).unwrap_or(0);
                    kb.add_file(std::path::Path::new(&source))
                };
                bar.inc(1);
                let line = match result {
                    Ok(AddOutcome::Added(n)) => {
                        added += 1;
                        format!("added {shown} ({n} chunks)")
                    }
                    Ok(AddOutcome::Updated(n)) => {
                        updated += 1;
                        format!("updated {shown} ({n} chunks)")
                    }
                    Ok(AddOutcome::Unchanged) => {
                        unchanged += 1;
                        format!("unchanged {shown}")
                    }
                    Err(e @ KbError::Store(_)) => {
                        bar.finish_and_clear();
                        return Err(e.into());
                    }
                    Err(e) => {
                        if explicit {
                            failed += 1;
                        } else {
                            skipped += 1;
                        }
                        bar.suspend(|| {
                            eprintln!("skipped {}", crate::sanitize::one_line(&e.to_string(), 500))
                        });
                        continue;
                    }
                };
                bar.suspend(|| {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                });
            }
            bar.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            writeln!(
                out,
                "{added} added, {updated} updated, {unchanged} unchanged, {skipped} skipped, {failed} failed; {:.1} MB in {:.1}s; {} chunks in the knowledge base",
                bytes as f64 / 1e6,
                secs,
                kb.chunk_count()?
            )?;
            if failed > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        KbCommand::List { json } => {
            let docs = kb.list()?;
            if docs.is_empty() && !json {
                writeln!(
                    out,
                    "The knowledge base is empty. Add documents with `agent kb add PATH`."
                )?;
            }
            for d in docs {
                if json {
                    let mut v = serde_json::to_value(&d)?;
                    if let Some(o) = v.as_object_mut() {
                        o.remove("chunks");
                        o.insert("chunk_count".into(), d.chunks.len().into());
                    }
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(out, "{}", doc_line(&d))?;
                }
            }
        }
        KbCommand::Search { query, json, limit } => {
            let hits = kb.search(&query, limit)?;
            if hits.is_empty() && !json {
                writeln!(out, "Nothing matches `{query}`.")?;
            }
            for h in hits {
                if json {
                    let mut v = serde_json::to_value(&h.chunk)?;
                    v["location"] = h.chunk.location().into();
                    v["score"] = serde_json::json!(h.scored.score);
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(out, "{}\n", hit_text(&h))?;
                }
            }
        }
        KbCommand::Remove { path } => {
            let removed = kb.remove(&source_key(&path))?;
            for r in &removed {
                writeln!(out, "removed {}", crate::sanitize::one_line(r, 300))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
