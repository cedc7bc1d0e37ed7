//! `agent bench`: the numbers the README's performance section records.
//!
//! - `agent bench agent`: per-step overhead of the ReAct loop with a
//!   scripted model (zero model time) and a no-op tool: prompt rendering,
//!   token accounting, parsing, schema checks, loop guards, events and the
//!   durable journal commit. Reported with and without the commit's flush
//!   (an fsync, which depends on the disk more than on our code).
//! - `agent bench model [--model REF] [--lora PATH] [--messages FILE] [--json]`: load
//!   time, decode tokens/s and seconds per constrained ReAct step of a real
//!   model, in a fresh process (so step 1 is what `agent run`'s first step
//!   costs). `--messages` takes the first step's messages from `agent run
//!   --dry-run --json`; `bench/engine-vs-llamacpp.sh` runs this beside
//!   llama.cpp's reference on the same prompt and prints the ratios.
//!
//! A subcommand rather than `cargo bench`: the bench profile would rebuild
//! mistral.rs and wasmtime in a second profile (40 minutes here).

use std::process::ExitCode;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use clap::Subcommand;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentParts, AgentSettings, Strategy};
use crate::memory::journal::RunSettings;
use crate::memory::{RunJournal, RunRecord, RunStatus, Store};
use crate::model::scripted::ScriptedBackend;
use crate::model::{Completion, CompletionRequest, ModelBackend, ModelError, TokenSink};
use crate::prompt::PromptLibrary;
use crate::tools::builtin::Finish;
use crate::tools::{Tool, ToolClass, ToolContext, ToolError, ToolRegistry, ToolSpec};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-step agent overhead, excluding model time.
    Agent {
        /// Steps per run.
        #[arg(long, default_value_t = 200)]
        steps: u32,
    },
    /// Load time, decode speed and seconds per constrained ReAct step of a model.
    Model {
        /// Model reference (default: the configured model).
        #[arg(long)]
        model: Option<String>,
        /// Engine for a local model: auto, llama.cpp, mistral.rs.
        #[arg(long)]
        engine: Option<String>,
        /// A LoRA adapter on the model (PATH[:SCALE]); repeatable. The load
        /// time then includes converting it (once; later loads find it
        /// cached).
        #[arg(long, value_name = "PATH[:SCALE]")]
        lora: Vec<String>,
        /// Constrained steps to time.
        #[arg(long, default_value_t = 5)]
        steps: u32,
        /// The first step's messages and schema (`agent run --dry-run --json`);
        /// default: the haiku goal with the configured tools.
        #[arg(long, value_name = "FILE")]
        messages: Option<std::path::PathBuf>,
        /// Tokens of the free (unconstrained) generation.
        #[arg(long, default_value_t = 200)]
        free_tokens: usize,
        /// One JSON object on stdout instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Long-term memory and knowledge base: insert/recall latency, ingestion, peak RSS.
    Memory {
        /// Largest collection (measured at 1k, 10k, 100k up to this).
        #[arg(long, default_value_t = 100_000)]
        max: usize,
        /// Vectors: `random` (384-dim stand-ins), `none`, `minilm[:PATH]`.
        #[arg(long, default_value = "random")]
        embedder: String,
    },
}

static NOOP_SPEC: LazyLock<ToolSpec> = LazyLock::new(|| ToolSpec {
    name: "bench_noop".into(),
    description: "Does nothing (benchmark only).".into(),
    args_schema: json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}),
    class: ToolClass::Internal,
    source: "bench".into(),
});

/// The benchmark's tool: returns a short observation at once.
struct Noop;

#[async_trait]
impl Tool for Noop {
    fn spec(&self) -> &ToolSpec {
        &NOOP_SPEC
    }
    async fn call(&self, args: serde_json::Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        Ok(format!(
            "noop {} done; nothing changed in the workspace",
            args["n"]
        ))
    }
}

/// The benchmark's model: the scripted actions in order, and a fixed
/// summary for the compaction requests (those without an action schema)
/// that a long run makes when its history outgrows the context. Without
/// it, summaries would draw on the actions and a 200-step run would run
/// out of script.
struct BenchModel(ScriptedBackend);

#[async_trait]
impl ModelBackend for BenchModel {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        on_token: TokenSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<Completion, ModelError> {
        if request.json_schema.is_none() {
            return Ok(Completion {
                text: "Earlier steps called bench_noop with increasing n; each succeeded.".into(),
                usage: Default::default(),
            });
        }
        self.0.complete(request, on_token, cancel).await
    }
}

async fn agent_overhead(steps: u32, flush: bool) -> anyhow::Result<(Duration, u32)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let journal = if flush {
        RunJournal::new(&store)?
    } else {
        RunJournal::new_unflushed(&store)?
    };
    let mut responses: Vec<String> = (0..steps - 1)
        .map(|n| json!({"thought": "keep going with the next item", "tool": "bench_noop", "args": {"n": n}}).to_string())
        .collect();
    responses
        .push(json!({"thought": "done", "tool": "finish", "args": {"answer": "ok"}}).to_string());
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(Finish))?;
    tools.register(Arc::new(Noop))?;
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let settings = RunSettings {
        model: "scripted".into(),
        endpoint: None,
        max_steps: steps,
        max_tokens: u64::MAX,
        step_tokens: 256,
        timeout_secs: 3600,
        temperature: 0.0,
        workspace: dir.path().display().to_string(),
        interactive: false,
        ..Default::default()
    };
    let model: Arc<dyn crate::model::ModelBackend> =
        Arc::new(BenchModel(ScriptedBackend::from_texts(responses)));
    let agent = AgentParts::new(
        &crate::model::roles::RoleModels::single(model),
        Arc::new(tools),
        journal,
        events,
        AgentSettings {
            max_steps: steps,
            max_tokens: u64::MAX,
            step_tokens: 256,
            timeout: Duration::from_secs(3600),
            model_timeout: Duration::from_secs(60),
            temperature: 0.0,
            samples: 1,
            sample_temperature: 0.0,
            past_examples: 0,
            repeat_resamples: 0,
            observation_chars: 4000,
            context_tokens: 8192,
            workspace: None,
            instructions: None,
        },
    )
    .build(Strategy::React, &PromptLibrary::new(dir.path()), None)?;

    let run = RunRecord::new("bench".into(), "benchmark the loop".into(), settings);
    let started = Instant::now();
    let run = agent.start(run, &CancellationToken::new()).await?;
    let elapsed = started.elapsed();
    drop(agent);
    let _ = drain.await;
    anyhow::ensure!(
        run.status == RunStatus::Finished,
        "the benchmark run ended {:?}: {:?}",
        run.status,
        run.stop_reason
    );
    Ok((elapsed, run.steps))
}

/// Run a benchmark and print its results.
pub async fn execute(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Model {
            model,
            engine,
            lora,
            steps,
            messages,
            free_tokens,
            json,
        } => {
            let flags = super::flags::ModelFlags {
                model,
                engine,
                lora,
                ..Default::default()
            };
            let report = model_speed(flags, steps, messages, free_tokens, json).await?;
            if json {
                println!("{report}");
            }
        }
        BenchCommand::Memory { max, embedder } => super::memory::bench(max, &embedder)?,
        BenchCommand::Agent { steps } => {
            anyhow::ensure!(steps >= 2, "--steps must be at least 2");
            for (label, flush) in [
                ("durable (flush every step)", true),
                ("without flush", false),
            ] {
                let mut per_step = Vec::new();
                for _ in 0..5 {
                    let (elapsed, n) = agent_overhead(steps, flush).await?;
                    per_step.push(elapsed.as_secs_f64() * 1e6 / n as f64);
                }
                per_step.sort_by(f64::total_cmp);
                println!(
                    "agent step overhead, {label}: median {:.0} µs, min {:.0} µs, max {:.0} µs ({steps} steps x 5 runs)",
                    per_step[2], per_step[0], per_step[4]
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Time a real model: load, `steps` constrained ReAct steps over the real
/// tool list with a growing history (so prefix reuse shows: later steps
/// re-process only new tokens), then a free generation for decode speed.
/// Steps come first so that step 1 is a fresh process's first step.
async fn model_speed(
    model: super::flags::ModelFlags,
    steps: u32,
    messages: Option<std::path::PathBuf>,
    free_tokens: usize,
    json: bool,
) -> anyhow::Result<serde_json::Value> {
    use crate::model::{ChatMessage, CompletionRequest};
    anyhow::ensure!(steps >= 1, "--steps must be at least 1");
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let options = super::flags::RunOptions {
        model,
        ..Default::default()
    };
    let session = super::context::Session::open(&options)?;
    let settings = RunSettings {
        max_steps: steps,
        max_tokens: u64::MAX,
        timeout_secs: 3600,
        temperature: 0.0,
        ..session.run_settings(false)?
    };
    let (mut messages, schema) = match messages {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not the JSON of `agent run --dry-run --json`",
                    path.display()
                )
            })?;
            let messages: Vec<ChatMessage> = serde_json::from_value(v["messages"].clone())
                .with_context(|| format!("{}: no `messages` list", path.display()))?;
            anyhow::ensure!(
                !messages.is_empty() && v["schema"].is_object(),
                "{}: needs `messages` and `schema`",
                path.display()
            );
            (messages, v["schema"].clone())
        }
        None => {
            let tools = session.tools(false).await?;
            let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
            let parts = session.parts(
                &crate::model::roles::RoleModels::single(Arc::new(ScriptedBackend::from_texts(
                    Vec::<String>::new(),
                ))),
                Arc::new(tools),
                events,
                &settings,
                None,
                None,
            );
            let agent = session.agent(Strategy::React, parts, None)?;
            let agent = agent
                .react()
                .context("the benchmark renders the ReAct prompt")?;
            let (system, schema) = agent.render_system()?;
            (
                vec![
                    ChatMessage::system(system),
                    ChatMessage::user(
                        "Goal: Write a haiku about the sea to haiku.txt, then read it back.",
                    ),
                ],
                schema,
            )
        }
    };

    let started = Instant::now();
    let backend = session.model(&settings, 0).await?;
    let load_s = started.elapsed().as_secs_f64();
    say(format!("model {}: loaded in {load_s:.2} s", backend.name()));

    let cancel = CancellationToken::new();
    let mut step_reports = Vec::new();
    for step in 1..=steps {
        let request = CompletionRequest {
            messages: messages.clone(),
            max_tokens: settings.step_tokens as usize,
            temperature: 0.0,
            json_schema: Some(schema.clone()),
        };
        let t = Instant::now();
        let c = backend.complete(request, &|_: &str| {}, &cancel).await?;
        let secs = t.elapsed().as_secs_f64();
        let parsed = crate::action::parse(&c.text).is_ok();
        say(format!(
            "step {step}: {secs:.2} s, {} prompt + {} completion tokens, action {}",
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            if parsed { "parses" } else { "INVALID" }
        ));
        let observation = format!("Observation: step {step} done; nothing else changed.");
        step_reports.push(json!({
            "secs": secs,
            "prompt_tokens": c.usage.prompt_tokens,
            "completion_tokens": c.usage.completion_tokens,
            "messages": messages,
            "output": c.text,
            "parses": parsed,
        }));
        messages.push(ChatMessage::assistant(c.text));
        messages.push(ChatMessage::user(observation));
    }
    let times: Vec<f64> = step_reports
        .iter()
        .filter_map(|s| s["secs"].as_f64())
        .collect();
    let later = &times[1.min(times.len() - 1)..];
    say(format!(
        "constrained ReAct step: first {:.2} s, later mean {:.2} s",
        times[0],
        later.iter().sum::<f64>() / later.len().max(1) as f64
    ));

    let story = CompletionRequest {
        messages: vec![ChatMessage::user(
            "Write a long story about a lighthouse keeper.",
        )],
        max_tokens: free_tokens.max(2),
        temperature: 0.0,
        json_schema: None,
    };
    let first = std::sync::Mutex::new(None::<Instant>);
    let sink = |_: &str| {
        if let Ok(mut f) = first.lock() {
            f.get_or_insert_with(Instant::now);
        }
    };
    let t = Instant::now();
    let c = backend.complete(story, &sink, &cancel).await?;
    let total = t.elapsed().as_secs_f64();
    let first_at = first
        .lock()
        .ok()
        .and_then(|f| *f)
        .map(|f| f.duration_since(t).as_secs_f64())
        .unwrap_or(total);
    let decode = c.usage.completion_tokens.saturating_sub(1) as f64 / (total - first_at).max(1e-6);
    say(format!(
        "free generation: {} prompt + {} completion tokens in {total:.2} s; first token after {first_at:.2} s; decode {decode:.1} tok/s",
        c.usage.prompt_tokens, c.usage.completion_tokens
    ));
    Ok(json!({
        "model": backend.name(),
        "engine": session.config.engine.to_string(),
        "lora": settings.lora,
        "load_s": load_s,
        "steps": step_reports,
        "free": {
            "prompt_tokens": c.usage.prompt_tokens,
            "completion_tokens": c.usage.completion_tokens,
            "secs": total,
            "first_token_s": first_at,
            "decode_tps": decode,
        },
    }))
}
