//! `agent run GOAL`: resolve the settings, open the store, gather the tools,
//! load the model, and drive one run to its end while a renderer shows it.
//! `agent runs resume` reuses [`drive_run`]; what a run is built from lives
//! in [`super::context`].

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;
use super::context::{Session, interactive, on_ctrl_c};
use super::flags::{ApprovalFlags, RunOptions, StrategyFlag};
use crate::agent::Strategy;
use crate::agent::plan::PlanStore;
use crate::memory::journal::{RunSettings, new_run_id};
use crate::memory::{RunRecord, RunStatus, StepRecord};
use crate::model::roles::RoleModels;
use crate::model::scripted::ScriptedBackend;
use crate::tools::ToolRegistry;
use crate::ui::human::Human;
use crate::ui::jsonl::JsonLines;
use crate::ui::{Renderer, Verbosity};

/// `agent run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to achieve, in plain words.
    pub goal: String,
    #[command(flatten)]
    pub options: RunOptions,
    #[command(flatten)]
    pub approvals: ApprovalFlags,
    /// One JSON event per line on stdout instead of the transcript.
    #[arg(long)]
    pub json: bool,
    /// Print the rendered prompt and the action schema; call no model.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub strategy: StrategyFlag,
}

/// `agent run`.
pub async fn execute(args: RunArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if args.goal.trim().is_empty() {
        bail!(
            "the goal is empty; say what you want done, e.g. agent run \"list the files in the workspace\""
        );
    }
    let mut session = Session::open(&args.options)?;
    session.continuous = args.approvals.yes;
    session.approve = args.approvals.approve;
    let interactive = interactive(args.approvals.yes, args.json);
    let tools = session.tools(interactive).await?;
    let settings = session.run_settings(interactive)?;

    if args.dry_run {
        return dry_run(&session, &args.goal, tools, &settings, args.json);
    }

    let models = session.models(&settings, 0).await?;
    let run = RunRecord::new(new_run_id(), args.goal.clone(), settings);
    drive_run(
        &session,
        Start::New(run, args.strategy.agent),
        models,
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
        &RoleModels::single(Arc::new(ScriptedBackend::from_texts(Vec::<String>::new()))),
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

/// What [`drive_run`] drives: a new run with its strategy, a run to
/// resume after its committed steps, or a recipe with its values (a new
/// run `id`, or a recipe run to resume).
pub enum Start {
    New(RunRecord, Strategy),
    Resume(RunRecord, Vec<StepRecord>),
    Recipe(
        Box<crate::recipe::Loaded>,
        crate::recipe::Values,
        Box<RunSettings>,
    ),
    ResumeRecipe(
        Box<crate::recipe::Loaded>,
        crate::recipe::Values,
        RunRecord,
        Vec<StepRecord>,
    ),
}

/// Drive a run with a renderer attached and Ctrl-C wired to cancellation;
/// returns the exit code for its final status.
pub async fn drive_run(
    session: &Session,
    start: Start,
    models: RoleModels,
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
        Start::Recipe(..) | Start::ResumeRecipe(..) => {
            let result = drive_recipe(session, start, &models, tools, events, json, &cancel).await;
            // The kit holds the events channel; the transcript ends when it goes.
            session.recipes.lock().map(|mut k| k.take()).ok();
            drop(ctrl_c);
            let _ = ui.await;
            return Ok(exit_code(result?.run.status));
        }
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
    let models = if !fresh
        && strategy == Strategy::Plan
        && run.settings.endpoint.is_none()
        && run.settings.model.starts_with("scripted:")
    {
        let used = plans.responses_used(&session.journal, &run.id)?;
        session.models(&run.settings, used).await?
    } else {
        models
    };
    let approver = session.approver(run.settings.interactive && !json);
    let parts = session.parts(
        &models,
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
    // The kit holds the events channel too; the transcript ends when both go.
    session.recipes.lock().map(|mut k| k.take()).ok();
    drop(ctrl_c);
    let _ = ui.await;
    Ok(exit_code(result?.status))
}

/// A recipe run (or its resume) by the session's recipe kit, with the
/// parts of this session.
async fn drive_recipe(
    session: &Session,
    start: Start,
    models: &RoleModels,
    tools: ToolRegistry,
    events: tokio::sync::mpsc::UnboundedSender<crate::agent::Event>,
    json: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<crate::agent::recipe::RecipeOutcome> {
    let settings = match &start {
        Start::Recipe(_, _, settings) => (**settings).clone(),
        Start::ResumeRecipe(_, _, run, _) => run.settings.clone(),
        Start::New(..) | Start::Resume(..) => bail!("not a recipe run"),
    };
    let approver = session.approver(settings.interactive && !json);
    session.parts(
        models,
        Arc::new(tools),
        events,
        &settings,
        Some(approver),
        Some(session.memory_hook()?),
    );
    let kit = session.kit()?;
    Ok(match start {
        Start::Recipe(loaded, values, _) => {
            let call = crate::agent::recipe::Call {
                id: new_run_id(),
                ..Default::default()
            };
            kit.run(&loaded, &values, call, cancel).await?
        }
        Start::ResumeRecipe(loaded, values, run, steps) => {
            kit.resume(&loaded, &values, run, steps, cancel).await?
        }
        Start::New(..) | Start::Resume(..) => bail!("not a recipe run"),
    })
}

/// The exit code for a run's final status.
pub fn exit_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Finished => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(1),
        RunStatus::Unverified => ExitCode::from(super::EXIT_UNVERIFIED),
        RunStatus::Running
        | RunStatus::BudgetExhausted
        | RunStatus::Stopped
        | RunStatus::Cancelled => ExitCode::from(super::EXIT_STOPPED),
    }
}
