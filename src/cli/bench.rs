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
