//! `agent bench`: the numbers the README's performance section records.
//!
//! - `agent bench agent`: per-step overhead of the ReAct loop with a
//!   scripted model (zero model time) and a no-op tool: prompt rendering,
//!   token accounting, parsing, schema checks, loop guards, events and the
//!   durable journal commit. Reported with and without the commit's flush
//!   (an fsync, which depends on the disk more than on our code).
//! - `agent bench model [--model REF]`: load time, decode tokens/s and
//!   seconds per constrained ReAct step of a real model.
//!
//! A subcommand rather than `cargo bench`: the bench profile would rebuild
//! mistral.rs and wasmtime in a second profile (40 minutes here).

use std::process::ExitCode;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Subcommand;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentSettings, ReactAgent};
use crate::memory::journal::{RunSettings, now_rfc3339};
use crate::memory::{RunJournal, RunRecord, RunStatus, Store};
use crate::model::scripted::ScriptedBackend;
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
        /// Constrained steps to time.
        #[arg(long, default_value_t = 5)]
        steps: u32,
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
    };
    let agent = ReactAgent::new(
        Arc::new(ScriptedBackend::from_texts(responses)),
        Arc::new(tools),
        &PromptLibrary::new(dir.path()),
        journal,
        events,
        AgentSettings {
            max_steps: steps,
            max_tokens: u64::MAX,
            step_tokens: 256,
            timeout: Duration::from_secs(3600),
            model_timeout: Duration::from_secs(60),
            temperature: 0.0,
            observation_chars: 4000,
            context_tokens: 8192,
        },
    )?;
    let run = RunRecord {
        id: "bench".into(),
        goal: "benchmark the loop".into(),
        settings,
        status: RunStatus::Running,
        created_at: now_rfc3339(),
        updated_at: now_rfc3339(),
        steps: 0,
        usage: Default::default(),
        elapsed_ms: 0,
        answer: None,
        stop_reason: None,
    };
    let started = Instant::now();
    let run = agent
        .drive(run, Vec::new(), &CancellationToken::new())
        .await?;
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
        BenchCommand::Model { model, steps } => model_speed(model, steps).await?,
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

/// Time a real model: load, a free 200-token generation, and `steps`
/// constrained ReAct steps over the real tool list with a growing history
/// (so prefix reuse shows: later steps re-process only new tokens).
async fn model_speed(model: Option<String>, steps: u32) -> anyhow::Result<()> {
    use crate::model::{ChatMessage, CompletionRequest};
    let options = super::run::RunOptions {
        model,
        ..Default::default()
    };
    let session = super::run::Session::open(&options)?;
    let settings = RunSettings {
        model: session.config.model.clone(),
        endpoint: session.config.endpoint.clone(),
        max_steps: steps,
        max_tokens: u64::MAX,
        step_tokens: session.config.step_tokens,
        timeout_secs: 3600,
        temperature: 0.0,
        workspace: session.workspace.display().to_string(),
        interactive: false,
    };
    let started = Instant::now();
    let backend = session.model(&settings, 0).await?;
    println!(
        "model {}: loaded in {:.2} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );

    let cancel = CancellationToken::new();
    let story = CompletionRequest {
        messages: vec![ChatMessage::user(
            "Write a long story about a lighthouse keeper.",
        )],
        max_tokens: 200,
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
    println!(
        "free generation: {} prompt + {} completion tokens in {total:.2} s; first token after {first_at:.2} s; decode {decode:.1} tok/s",
        c.usage.prompt_tokens, c.usage.completion_tokens
    );

    let tools = session.tools(false).await?;
    let prompts = PromptLibrary::new(&session.dirs.prompts);
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = ReactAgent::new(
        backend.clone(),
        Arc::new(tools),
        &prompts,
        session.journal.clone(),
        events,
        session.agent_settings(&settings),
    )?;
    let (system, schema) = agent.render_system()?;
    let mut messages = vec![
        ChatMessage::system(system),
        ChatMessage::user("Goal: Write a haiku about the sea to haiku.txt, then read it back."),
    ];
    let mut times = Vec::new();
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
        println!(
            "step {step}: {:.2} s, {} prompt + {} completion tokens, action {}",
            secs,
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            if parsed { "parses" } else { "INVALID" }
        );
        times.push(secs);
        messages.push(ChatMessage::assistant(c.text));
        messages.push(ChatMessage::user(format!(
            "Observation from tool: step {step} done; nothing else changed."
        )));
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!("constrained ReAct step: mean {mean:.2} s over {steps} steps");
    Ok(())
}
