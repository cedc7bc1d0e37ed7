//! `agent model list|pull|info|rm`: the model registry and cache from the
//! command line, plus [`ProgressBars`], the indicatif renderer of model
//! events that `agent run` reuses for "pulling on first use" and loading.
//!
//! Results go to stdout (`--json` where a script may want them); progress
//! goes to stderr and disappears when stderr is not a terminal.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::model::gguf::GgufMetadata;
use crate::model::lora::{self, LoraSpec, LoraUse};
use crate::model::progress::{ModelEvent, ModelProgress};
use crate::model::pull::{self, Puller};
use crate::model::reference::ModelRef;
use crate::model::registry::{DEFAULT_MODEL, KNOWN_MODELS};
use crate::paths::Dirs;

/// The `agent model` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ModelCommand {
    /// Show the built-in models and the files in the model cache.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download a model into the cache (a short name or hf:OWNER/NAME/FILE.gguf).
    Pull {
        /// The model to pull.
        #[arg(default_value = DEFAULT_MODEL)]
        reference: String,
    },
    /// Show where a model comes from, where it is cached, its size, hash,
    /// architecture and context length.
    Info {
        /// A short name, hf:OWNER/NAME/FILE.gguf, or a path to a .gguf file.
        #[arg(default_value = DEFAULT_MODEL)]
        reference: String,
        /// A LoRA adapter to show (and check against the model, when it is
        /// cached); repeatable. Without it, the config's `lora:` adapters
        /// are shown for the configured model.
        #[arg(long, value_name = "PATH[:SCALE]")]
        lora: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a model from the cache (never touches files outside it).
    Rm {
        /// A short name or hf:OWNER/NAME/FILE.gguf.
        reference: String,
    },
}

/// Run one `agent model` subcommand.
pub async fn execute(cmd: ModelCommand, dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let models = dirs.models();
    match cmd {
        ModelCommand::List { json } => list(&models, json),
        ModelCommand::Pull { reference } => {
            let r = ModelRef::parse(&reference)?;
            if matches!(r, ModelRef::File(_) | ModelRef::Scripted(_)) {
                println!("{} is local; nothing to pull", r.label());
                return Ok(ExitCode::SUCCESS);
            }
            let puller = Puller::from_env()?;
            let bars = ProgressBars::new();
            let path = puller.pull(&r, &models, &bars).await?;
            bars.clear();
            let c = pull::cached(&r, &models);
            let size = c.as_ref().map(|c| human_bytes(c.bytes)).unwrap_or_default();
            println!("{} is ready: {} ({size})", r.label(), path.display());
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Info {
            reference,
            lora,
            json,
        } => {
            let adapters = if lora.is_empty() {
                let (_, config) = super::user_config()?;
                let configured = ModelRef::parse(&config.model)
                    .map(|r| r.label())
                    .unwrap_or_default();
                let asked = ModelRef::parse(&reference)?.label();
                if config.endpoint.is_none() && configured == asked {
                    config.lora
                } else {
                    Vec::new()
                }
            } else {
                lora.iter()
                    .map(|s| s.parse::<LoraSpec>())
                    .collect::<Result<_, _>>()?
            };
            info(&reference, &models, &adapters, json)
        }
        ModelCommand::Rm { reference } => {
            let r = ModelRef::parse(&reference)?;
            if let ModelRef::File(p) = &r {
                anyhow::bail!(
                    "{} is not in agent's cache; agent never deletes other files",
                    p.display()
                );
            }
            match pull::remove_cached(&r, &models)? {
                Some(c) => {
                    println!("removed {} ({})", c.path.display(), human_bytes(c.bytes));
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("{} is not in the cache ({})", r.label(), models.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn list(models: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let cached = pull::list_cached(models);
    let known: Vec<_> = KNOWN_MODELS
        .iter()
        .map(|k| {
            let r = ModelRef::Known(k);
            (k, pull::cached(&r, models), r.hub_file())
        })
        .collect();
    if as_json {
        let v = json!({
            "cache_dir": models.display().to_string(),
            "default": DEFAULT_MODEL,
            "known": known.iter().map(|(k, c, h)| json!({
                "name": k.name,
                "description": k.description,
                "source": h.as_ref().map(|h| format!("hf:{}/{}", h.repo, h.file)),
                "pypi": k.pypi.map(|p| p.describe()),
                "size": k.size,
                "sha256": k.sha256,
                "gpu_recommended": k.gpu_recommended,
                "cached": c.as_ref().map(|c| c.path.display().to_string()),
            })).collect::<Vec<_>>(),
            "cached": cached.iter().map(|c| json!({"path": c.path.display().to_string(), "bytes": c.bytes, "sha256": c.sha256})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<14} {:>9}  {:<7} DESCRIPTION", "NAME", "SIZE", "CACHED");
    for (k, c, _) in &known {
        let size = k
            .size
            .or(c.as_ref().map(|c| c.bytes))
            .map(human_bytes)
            .unwrap_or_else(|| "?".into());
        let mark = if k.name == DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        println!(
            "{:<14} {:>9}  {:<7} {}{mark}",
            k.name,
            size,
            if c.is_some() { "yes" } else { "no" },
            k.description
        );
    }
    println!();
    if cached.is_empty() {
        println!(
            "The cache ({}) is empty; `agent model pull NAME` fills it.",
            models.display()
        );
    } else {
        println!("In the cache ({}):", models.display());
        for c in &cached {
            let shown = c.path.strip_prefix(models).unwrap_or(&c.path);
            println!("  {:>9}  {}", human_bytes(c.bytes), shown.display());
        }
    }
    println!(
        "Other references: hf:OWNER/NAME/FILE.gguf, a path to a .gguf file, or --endpoint URL --model ID."
    );
    Ok(ExitCode::SUCCESS)
}

fn info(
    reference: &str,
    models: &Path,
    adapters: &[LoraSpec],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let r = ModelRef::parse(reference)?;
    if let ModelRef::Scripted(p) = &r {
        println!("{}: scripted replay of {}", r.label(), p.display());
        return Ok(ExitCode::SUCCESS);
    }
    let source = match &r {
        ModelRef::File(p) => format!("local file {}", p.display()),
        _ => {
            let h = r.hub_file().context("a hub reference has a hub file")?;
            let mut s = format!(
                "hub {}/{} (revision {})",
                h.repo,
                h.file,
                h.revision_or_main()
            );
            if let ModelRef::Known(k) = &r
                && let Some(p) = k.pypi
            {
                s.push_str(&format!("; fallback: PyPI {}", p.describe()));
            }
            s
        }
    };
    let cached = pull::cached(&r, models);
    let expected = pull::Expected::of(&r);
    let sha = match &cached {
        Some(c) if c.sha256.is_some() => c.sha256.clone(),
        Some(c) => Some(pull::sha256_file(&c.path)?),
        None => expected.sha256.clone(),
    };
    let metadata = cached
        .as_ref()
        .map(|c| GgufMetadata::read_file(&c.path))
        .transpose()?;
    let arch = metadata
        .as_ref()
        .and_then(|m| m.architecture().map(str::to_string));
    let ctx = metadata.as_ref().and_then(GgufMetadata::context_length);
    let quant = metadata.as_ref().and_then(GgufMetadata::file_type);
    let name = metadata.as_ref().and_then(|m| m.name().map(str::to_string));
    let size = cached.as_ref().map(|c| c.bytes).or(expected.size);
    let stops = metadata.as_ref().map(GgufMetadata::stop_token_ids);
    let base = cached.as_ref().map(|c| c.path.as_path());
    let lora = adapters
        .iter()
        .map(|spec| {
            let use_ = LoraUse::of(spec)?;
            lora::summarize(&use_, base)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if as_json {
        let v = json!({
            "reference": r.label(),
            "source": source,
            "cached": cached.as_ref().map(|c| c.path.display().to_string()),
            "path": r.gguf_path(models).map(|p| p.display().to_string()),
            "size": size,
            "sha256": sha,
            "architecture": arch,
            "context_length": ctx,
            "quantisation": quant,
            "name": name,
            "stop_token_ids": stops,
            "lora": lora,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("reference     {}", r.label());
    if let ModelRef::Known(k) = &r {
        println!("description   {}", k.description);
    }
    println!("source        {source}");
    match (&cached, r.gguf_path(models)) {
        (Some(c), _) => println!("cached        {}", c.path.display()),
        (None, Some(p)) => println!(
            "cached        no (would be {}; `agent model pull {}`)",
            p.display(),
            r.label()
        ),
        (None, None) => println!("cached        no"),
    }
    if let Some(s) = size {
        println!("size          {} ({s} bytes)", human_bytes(s));
    }
    if let Some(s) = &sha {
        println!("sha256        {s}");
    }
    if let Some(m) = &metadata {
        println!("architecture  {}", arch.as_deref().unwrap_or("?"));
        println!(
            "context       {}",
            ctx.map(|c| format!("{c} tokens"))
                .unwrap_or_else(|| "?".into())
        );
        println!("quantisation  {}", quant.unwrap_or("?"));
        if let Some(n) = &name {
            println!("name          {n}");
        }
        println!("stop tokens   {:?}", m.stop_token_ids());
    }
    for a in &lora {
        println!(
            "lora          {} (scale {}; rank {}, B·A × {:.4}; {} in {} layers)",
            a.path,
            a.scale,
            a.rank,
            a.effective_scale,
            a.modules.join(", "),
            a.layers
        );
        println!("  sha256      {}", a.sha256);
        match (&a.problem, base) {
            (Some(p), _) => println!("  does not fit this model: {p}"),
            (None, Some(_)) => println!("  fits this model"),
            (None, None) => println!("  not checked against the model (not cached yet)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `1234567` → `1.2 MB` (decimal units, as download sizes are usually given).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Renders model events on stderr: a byte progress bar while downloading, a
/// spinner while loading. Hidden automatically when stderr is not a terminal.
#[derive(Debug, Default)]
pub struct ProgressBars {
    bar: Mutex<Option<ProgressBar>>,
}

impl ProgressBars {
    /// No bar yet; one appears with the first event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove whatever bar is showing.
    pub fn clear(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(bar) = b.take()
        {
            bar.finish_and_clear();
        }
    }

    fn replace(&self, bar: ProgressBar) {
        if let Ok(mut b) = self.bar.lock()
            && let Some(old) = b.replace(bar)
        {
            old.finish_and_clear();
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(b) = self.bar.lock()
            && let Some(bar) = b.as_ref()
        {
            f(bar);
        }
    }
}

impl ModelProgress for ProgressBars {
    fn event(&self, event: &ModelEvent) {
        match event {
            ModelEvent::DownloadStarted {
                what,
                source,
                total,
            } => {
                let bar = match total {
                    Some(n) => ProgressBar::new(*n).with_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    ),
                    None => ProgressBar::new_spinner().with_style(
                        ProgressStyle::with_template("{spinner} {msg} {bytes} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    ),
                };
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message(format!("pulling {what}"));
                bar.println(format!("pulling {what} from {source}"));
                self.replace(bar);
            }
            ModelEvent::DownloadProgress { done, total } => self.with_bar(|b| {
                if let Some(t) = total
                    && b.length() != Some(*t)
                {
                    b.set_length(*t);
                }
                b.set_position(*done);
            }),
            ModelEvent::FallingBack { reason, source } => {
                let msg = format!("the hub failed ({reason}); trying {source}");
                let mut shown = false;
                self.with_bar(|b| {
                    b.println(&msg);
                    shown = true;
                });
                if !shown {
                    eprintln!("{msg}");
                }
            }
            ModelEvent::Cached { .. } => self.clear(),
            ModelEvent::LoadStarted { what } => {
                let bar = ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message(format!("loading {what}"));
                self.replace(bar);
            }
            ModelEvent::LoadFinished { .. } => self.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ModelCommand,
    }

    #[test]
    fn subcommands_parse_with_the_default_model() {
        let c = Cli::try_parse_from(["model", "pull"]).unwrap();
        assert_eq!(
            c.cmd,
            ModelCommand::Pull {
                reference: DEFAULT_MODEL.into()
            }
        );
        let c = Cli::try_parse_from(["model", "list", "--json"]).unwrap();
        assert_eq!(c.cmd, ModelCommand::List { json: true });
        assert!(
            Cli::try_parse_from(["model", "rm"]).is_err(),
            "rm needs an explicit reference"
        );
    }

    #[test]
    fn sizes_read_like_download_sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(98_362_432), "98.4 MB");
        assert_eq!(human_bytes(5_000_000_000), "5.0 GB");
    }

    #[tokio::test]
    async fn rm_of_an_uncached_model_fails_and_local_files_are_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::resolve(Some(dir.path()), None).unwrap();
        let code = execute(
            ModelCommand::Rm {
                reference: "qwen3-4b".into(),
            },
            &dirs,
        )
        .await
        .unwrap();
        assert_eq!(code, ExitCode::from(1));
        let f = dir.path().join("mine.gguf");
        std::fs::write(&f, b"GGUF").unwrap();
        let err = execute(
            ModelCommand::Rm {
                reference: f.display().to_string(),
            },
            &dirs,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("never deletes"));
        assert!(f.exists());
    }

    #[test]
    fn registry_names_are_listed() {
        // `list` must show every known model; guard against a registry that
        // drifts from the short-name parser.
        for k in KNOWN_MODELS {
            assert!(matches!(ModelRef::parse(k.name), Ok(ModelRef::Known(_))));
        }
        assert!(crate::model::registry::known_names().contains(DEFAULT_MODEL));
    }
}
