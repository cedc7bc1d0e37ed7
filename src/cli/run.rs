//! `agent run GOAL`: resolve the settings, open the store, gather the tools,
//! load the model, and drive one run to its end while a renderer shows it.
//! `agent runs resume` reuses [`drive_run`]; what a run is built from lives
//! in [`super::context`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;
use super::context::{Session, interactive, on_ctrl_c};
use crate::agent::Strategy;
use crate::agent::plan::PlanStore;
use crate::config::ConfigLayer;
use crate::memory::journal::{RunSettings, new_run_id};
use crate::memory::{RunRecord, RunStatus, StepRecord};
use crate::model::ModelBackend;
use crate::model::scripted::ScriptedBackend;
use crate::tools::ToolRegistry;
use crate::ui::human::Human;
use crate::ui::jsonl::JsonLines;
use crate::ui::{Renderer, Verbosity};

/// Settings a run takes from flags (also accepted by `agent runs resume`).
#[derive(Debug, Clone, Default, Args)]
pub struct RunOptions {
    /// Model: a short name (`agent model list`), a .gguf path, hf:OWNER/REPO/FILE.gguf,
    /// scripted:FILE.yaml, or the served model id with --endpoint.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Engine for local models: auto, llama.cpp or mistral.rs.
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<String>,
    /// Most steps the run may take.
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u32>,
    /// Most tokens (prompt + completion, all steps) the run may spend.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Wall-clock limit of the run: seconds, or with a unit (90s, 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<u64>,
    /// The only directory tools may see (created if missing).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

/// `agent run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to achieve, in plain words.
    pub goal: String,
    #[command(flatten)]
    pub options: RunOptions,
    /// Never ask anything (no approvals, no `ask_human`): continuous mode.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approval policy for every tool class in this run: auto, ask (refused
    /// when nobody can answer), deny. A deny in the config still applies.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub approve: Option<crate::ui::approve::Policy>,
    /// One JSON event per line on stdout instead of the transcript.
    #[arg(long)]
    pub json: bool,
    /// Print the rendered prompt and the action schema; call no model.
    #[arg(long)]
    pub dry_run: bool,
    /// Strategy: react (think, act, observe) or plan (plan, a ReAct loop per step, replan).
    #[arg(long, value_enum, default_value_t = Strategy::React)]
    pub agent: Strategy,
}

/// Parse `90`, `90s`, `10m`, `1h` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use seconds or 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use s, m or h")),
    };
    if secs == 0 {
        return Err("the timeout must be at least 1 second".into());
    }
    Ok(secs)
}

impl RunOptions {
    /// The flags as a config layer, with the flag name of each key set.
    pub fn layer(&self) -> (ConfigLayer, BTreeMap<&'static str, String>) {
        let mut names = BTreeMap::new();
        let mut note = |key: &'static str, set: bool, flag: &str| {
            if set {
                names.insert(key, flag.to_string());
            }
        };
        note("model", self.model.is_some(), "--model");
        note("endpoint", self.endpoint.is_some(), "--endpoint");
        note("engine", self.engine.is_some(), "--engine");
        note("max_steps", self.max_steps.is_some(), "--max-steps");
        note("max_tokens", self.max_tokens.is_some(), "--max-tokens");
        note("timeout_secs", self.timeout.is_some(), "--timeout");
        note("workspace", self.workspace.is_some(), "--workspace");
        let layer = ConfigLayer {
            model: self.model.clone(),
            endpoint: self.endpoint.clone(),
            engine: self.engine.clone(),
            max_steps: self.max_steps,
            max_tokens: self.max_tokens,
            timeout_secs: self.timeout,
            workspace: self.workspace.clone(),
            ..ConfigLayer::default()
        };
        (layer, names)
    }
}

/// `agent run`.
pub async fn execute(args: RunArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.goal.trim().is_empty() {
        bail!(
            "the goal is empty; say what you want done, e.g. agent run \"list the files in the workspace\""
        );
    }
    let mut session = Session::open(&args.options)?;
    session.continuous = args.yes;
    session.approve = args.approve;
    let interactive = interactive(args.yes, args.json);
    let settings = session.run_settings(interactive);
    let tools = session.tools(interactive).await?;

    if args.dry_run {
        return dry_run(&session, &args.goal, tools, &settings, args.json);
    }

    let model = session.model(&settings, 0).await?;
    let run = RunRecord::new(new_run_id(), args.goal.clone(), settings);
    drive_run(
        &session,
        Start::New(run, args.agent),
        model,
        tools,
        args.json,
        global,
    )
    .await
}

/// `--dry-run`: the first step's messages and the action schema, as text
/// or (with `--json`) as one object that `agent bench model --messages`
/// and the engine benchmark read.
fn dry_run(
    session: &Session,
    goal: &str,
    tools: ToolRegistry,
    settings: &RunSettings,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let parts = session.parts(
        Arc::new(ScriptedBackend::from_texts(Vec::<String>::new())),
        Arc::new(tools),
        events,
        settings,
        None,
        None,
    );
    let agent = session.agent(Strategy::React, parts, None)?;
    let agent = agent
        .react()
        .context("the dry run renders the ReAct prompt")?;
    let (system, schema) = agent.render_system()?;
    let goal_msg = agent.prompt.render(
        "goal",
        &serde_json::json!({"goal": goal, "omitted": 0, "summary": null}),
    )?;
    if json {
        let out = serde_json::json!({
            "messages": [
                crate::model::ChatMessage::system(&system),
                crate::model::ChatMessage::user(&goal_msg),
            ],
            "schema": schema,
            "model": settings.model,
            "workspace": session.workspace.display().to_string(),
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "=== system ===\n{system}\n\n=== user ===\n{goal_msg}\n\n=== action schema ===\n{}",
        serde_json::to_string_pretty(&schema)?
    );
    println!(
        "\n(dry run: model {} was not called; workspace {})",
        settings.model,
        session.workspace.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What [`drive_run`] drives: a new run with its strategy, or a run to
/// resume after its committed steps.
pub enum Start {
    New(RunRecord, Strategy),
    Resume(RunRecord, Vec<StepRecord>),
}

/// Drive a run with a renderer attached and Ctrl-C wired to cancellation;
/// returns the exit code for its final status.
pub async fn drive_run(
    session: &Session,
    start: Start,
    model: Arc<dyn ModelBackend>,
    tools: ToolRegistry,
    json: bool,
    global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let verbosity = match (global.quiet, global.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, 0) => Verbosity::Normal,
        _ => Verbosity::Verbose,
    };
    let mut renderer: Box<dyn Renderer> = if json {
        Box::new(JsonLines::new(std::io::stdout()))
    } else {
        Box::new(Human::new(verbosity))
    };
    let ui = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            renderer.event(&event);
        }
        renderer.close();
    });
    let cancel = CancellationToken::new();
    let ctrl_c = on_ctrl_c(&cancel, true);

    // A run being resumed keeps its strategy: a plan-and-execute run (or one
    // of its steps, named by the resume) continues at its current step.
    let plans = PlanStore::new(&session.store)?;
    let (run, steps, strategy, fresh) = match start {
        Start::New(run, strategy) => (run, Vec::new(), strategy, true),
        Start::Resume(run, steps) => match plans.owner(&run.id)? {
            Some(parent) => {
                let run = match session.journal.get(&parent)? {
                    Some(parent_run) if parent != run.id => parent_run,
                    _ => run,
                };
                (run, Vec::new(), Strategy::Plan, false)
            }
            None => (run, steps, Strategy::React, false),
        },
    };
    // A scripted model resumes after every response the plan used.
    let model = if !fresh
        && strategy == Strategy::Plan
        && run.settings.endpoint.is_none()
        && run.settings.model.starts_with("scripted:")
    {
        let used = plans.responses_used(&session.journal, &run.id)?;
        session.model(&run.settings, used).await?
    } else {
        model
    };
    let approver = session.approver(run.settings.interactive && !json);
    let parts = session.parts(
        model,
        Arc::new(tools),
        events,
        &run.settings,
        Some(approver),
        Some(session.memory_hook()?),
    );
    let agent = session.agent(strategy, parts, None)?;
    let result = if fresh {
        agent.start(run, &cancel).await
    } else {
        agent.resume(run, steps, &cancel).await
    };
    drop(agent);
    drop(ctrl_c);
    let _ = ui.await;
    let run = result?;
    Ok(match run.status {
        RunStatus::Finished => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(1),
        RunStatus::Running
        | RunStatus::BudgetExhausted
        | RunStatus::Stopped
        | RunStatus::Cancelled => ExitCode::from(super::EXIT_STOPPED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("").is_err());
    }
}
