//! `agent run GOAL`: resolve the settings, open the store, gather the tools,
//! load the model, and drive one run to its end while a renderer shows it.
//! `agent runs resume` reuses [`Session`] and [`drive_run`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;
use super::model::ProgressBars;
use crate::agent::plan::{PlanAgent, PlanLimits, PlanPrompts, PlanStore};
use crate::agent::{AgentSettings, ReactAgent};
use crate::config::{Config, ConfigLayer};
use crate::memory::journal::{RunSettings, new_run_id};
use crate::memory::{RunJournal, RunRecord, RunStatus, StepRecord, Store};
use crate::model::ModelBackend;
use crate::model::open::{BackendOptions, open_backend};
use crate::model::progress::{ModelEvent, ModelProgress};
use crate::model::scripted::ScriptedBackend;
use crate::paths::Dirs;
use crate::plugin::PluginHost;
use crate::prompt::PromptLibrary;
use crate::tools::ToolRegistry;
use crate::tools::builtin::{AskHuman, Finish};
use crate::ui::human::{Human, TerminalHuman};
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

/// How a run pursues its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Strategy {
    /// One ReAct loop: think, act, observe, repeated.
    #[default]
    React,
    /// Plan-and-execute: an ordered plan, a bounded ReAct loop per step, replanning.
    Plan,
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

/// What every run needs before the model: settings, workspace, store, tools.
pub struct Session {
    pub dirs: Dirs,
    pub config: Config,
    pub workspace: PathBuf,
    pub store: Store,
    pub journal: RunJournal,
    /// `--approve`: one approval policy for every tool class of the run.
    pub approve: Option<crate::ui::approve::Policy>,
    /// `--yes`: never ask (approvals run without a question).
    pub continuous: bool,
    /// The plugins and their grants, as [`Session::tools`] found them.
    pub plugins: std::sync::Mutex<Vec<crate::plugin::PluginInfo>>,
}

/// Refuse a workspace that holds agent's own files or lies inside them:
/// tools could otherwise rewrite the config, prompts, plugins or the store.
pub fn check_workspace(workspace: &Path, dirs: &Dirs) -> anyhow::Result<()> {
    let ws = workspace
        .canonicalize()
        .with_context(|| format!("cannot open workspace {}", workspace.display()))?;
    for (what, dir) in [
        ("config", &dirs.config),
        ("data", &dirs.data),
        ("cache", &dirs.cache),
        ("plugins", &dirs.plugins),
    ] {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        let dir = dir.canonicalize().unwrap_or(dir);
        if dir.starts_with(&ws) || ws.starts_with(&dir) {
            bail!(
                "the workspace {} overlaps agent's {what} directory {}; tools could change agent's own files. Choose another --workspace",
                ws.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

impl Session {
    /// Resolve settings (with `flags`), prepare the workspace, open the store.
    pub fn open(options: &RunOptions) -> anyhow::Result<Self> {
        let dirs = super::dirs()?;
        let (layer, names) = options.layer();
        let config = Config::load(&dirs.config_file(), &layer, &names)?;
        let workspace = super::absolute(&config.workspace)?;
        std::fs::create_dir_all(&workspace)
            .with_context(|| format!("cannot create workspace {}", workspace.display()))?;
        check_workspace(&workspace, &dirs)?;
        let store = Store::open(&dirs.store())?;
        let journal = RunJournal::new(&store)?;
        Ok(Self {
            dirs,
            config,
            workspace,
            store,
            journal,
            approve: None,
            continuous: false,
            plugins: Default::default(),
        })
    }

    /// The approver of a run: the config's policies and `--approve`; asks on
    /// the terminal when the run is interactive and one is attached, runs
    /// everything with `--yes`, and otherwise refuses what would need asking.
    pub fn approver(&self, interactive: bool) -> Arc<crate::ui::approve::PolicyApprover> {
        use crate::ui::approve::{Mode, PolicyApprover, TerminalPrompter};
        let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        let mode = if self.continuous {
            Mode::Continuous
        } else if interactive && terminal {
            Mode::Interactive(Arc::new(TerminalPrompter))
        } else {
            Mode::NonInteractive
        };
        let permissions = self
            .plugins
            .lock()
            .map(|p| super::chat::permissions(&p))
            .unwrap_or_default();
        let approver =
            PolicyApprover::new(self.config.approvals.clone(), mode).with_permissions(permissions);
        approver.set_all(self.approve);
        Arc::new(approver)
    }

    /// The tools of a run: built-ins, then every plugin that loads. A plugin
    /// that fails to load is reported and left out; the run goes on without it.
    pub async fn tools(&self, interactive: bool) -> anyhow::Result<ToolRegistry> {
        let mut registry = ToolRegistry::new();
        registry.register(Arc::new(Finish))?;
        for tool in super::memory::run_tools(&self.store, &self.dirs, &self.config)? {
            registry.register(tool)?;
        }
        if interactive {
            registry.register(Arc::new(AskHuman::new(Arc::new(TerminalHuman))))?;
        }
        let mut host = PluginHost::new(
            self.dirs.clone(),
            self.config.plugins.clone(),
            self.workspace.clone(),
        )?;
        host.set_progress(super::plugin::progress_reporter());
        host.load_all().await;
        for (name, _origin, error) in host.failures() {
            eprintln!("warning: plugin `{name}` was not loaded: {error}");
        }
        for tool in host.tools() {
            registry.register(tool)?;
        }
        if let Ok(mut p) = self.plugins.lock() {
            *p = host.list();
        }
        Ok(registry)
    }

    /// Open the model backend the settings name, pulling it on first use.
    /// A scripted model resumes after the `skip_responses` it already gave.
    pub async fn model(
        &self,
        settings: &RunSettings,
        skip_responses: usize,
    ) -> anyhow::Result<Arc<dyn ModelBackend>> {
        if settings.endpoint.is_none()
            && let Some(path) = settings.model.strip_prefix("scripted:")
        {
            let backend = ScriptedBackend::from_file(Path::new(path))?;
            backend.skip(skip_responses);
            return Ok(Arc::new(backend));
        }
        let options = BackendOptions {
            model: settings.model.clone(),
            endpoint: settings.endpoint.clone(),
            api_key_env: self.config.api_key_env.clone(),
            request_timeout: Duration::from_secs(self.config.model_timeout_secs),
            context_tokens: Some(self.config.context_tokens as usize),
            force_cpu: false,
            engine: self.config.engine,
        };
        let progress = PullProgress(ProgressBars::new());
        let backend = open_backend(&options, &self.dirs, &progress).await;
        progress.0.clear();
        Ok(backend?)
    }

    /// The settings a new run records, from the resolved configuration.
    pub fn run_settings(&self, interactive: bool) -> RunSettings {
        let c = &self.config;
        RunSettings {
            model: c.model.clone(),
            endpoint: c.endpoint.clone(),
            max_steps: c.max_steps,
            max_tokens: c.max_tokens,
            step_tokens: c.step_tokens,
            timeout_secs: c.timeout_secs,
            temperature: c.temperature as f32,
            workspace: self.workspace.display().to_string(),
            interactive,
        }
    }

    /// The agent's limits for `settings`.
    pub fn agent_settings(&self, settings: &RunSettings) -> AgentSettings {
        AgentSettings {
            max_steps: settings.max_steps,
            max_tokens: settings.max_tokens,
            step_tokens: self.config.step_tokens,
            timeout: Duration::from_secs(settings.timeout_secs),
            model_timeout: Duration::from_secs(self.config.model_timeout_secs),
            temperature: settings.temperature,
            observation_chars: self.config.observation_chars as usize,
            context_tokens: self.config.context_tokens as usize,
        }
    }
}

/// Model download and load progress: bars on a terminal, and a plain line
/// on stderr either way when a model is pulled, so a first run says why it
/// is waiting.
pub(crate) struct PullProgress(ProgressBars);

impl PullProgress {
    pub(crate) fn new() -> Self {
        Self(ProgressBars::new())
    }

    /// Remove whatever bar is showing.
    pub(crate) fn clear(&self) {
        self.0.clear();
    }
}

impl ModelProgress for PullProgress {
    fn event(&self, event: &ModelEvent) {
        if !std::io::stderr().is_terminal() {
            match event {
                ModelEvent::DownloadStarted { what, source, .. } => {
                    eprintln!("pulling model {what} from {source} (first use; cached afterwards)")
                }
                // The bars would say it a second time.
                ModelEvent::FallingBack { reason, source } => {
                    eprintln!("{reason}; trying {source}");
                    return;
                }
                _ => {}
            }
        }
        self.0.event(event);
    }
}

/// True when the run may ask the user things.
pub fn interactive(yes: bool, json: bool) -> bool {
    !yes && !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
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
    let prompts = PromptLibrary::new(&session.dirs.prompts);

    if args.dry_run {
        return dry_run(&session, &args.goal, tools, &prompts, &settings, args.json);
    }

    let model = session.model(&settings, 0).await?;
    let run = RunRecord::new(new_run_id(), args.goal.clone(), settings);
    if args.agent == Strategy::Plan {
        PlanStore::new(&session.store)?.mark(&run.id)?;
    }
    drive_run(
        &session,
        run,
        Vec::new(),
        model,
        tools,
        &prompts,
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
    prompts: &PromptLibrary,
    settings: &RunSettings,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = ReactAgent::new(
        Arc::new(ScriptedBackend::from_texts(Vec::<String>::new())),
        Arc::new(tools),
        prompts,
        session.journal.clone(),
        events,
        session.agent_settings(settings),
    )?;
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

/// Drive a run with a renderer attached and Ctrl-C wired to cancellation;
/// returns the exit code for its final status.
#[allow(clippy::too_many_arguments)]
pub async fn drive_run(
    session: &Session,
    run: RunRecord,
    steps: Vec<StepRecord>,
    model: Arc<dyn ModelBackend>,
    tools: ToolRegistry,
    prompts: &PromptLibrary,
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
    let on_signal = cancel.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
            // A second Ctrl-C leaves at once; the journal is already consistent.
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    // A plan-and-execute run (or one of its steps, named by a resume) goes
    // to the plan strategy, which continues at its current step.
    let plans = PlanStore::new(&session.store)?;
    let result = match plans.owner(&run.id)? {
        Some(parent) => {
            let run = match session.journal.get(&parent)? {
                Some(parent_run) if parent != run.id => parent_run,
                _ => run,
            };
            // A scripted model resumes after every response the plan used.
            let model =
                if run.settings.endpoint.is_none() && run.settings.model.starts_with("scripted:") {
                    let used = plans.responses_used(&session.journal, &run.id)?;
                    session.model(&run.settings, used).await?
                } else {
                    model
                };
            let agent = PlanAgent {
                model,
                tools: Arc::new(tools),
                prompts: PlanPrompts::load(prompts)?,
                journal: session.journal.clone(),
                plans,
                events,
                settings: session.agent_settings(&run.settings),
                limits: PlanLimits::default(),
                approver: Some(session.approver(run.settings.interactive && !json)),
                memory: Some(super::memory::run_hook(
                    &session.store,
                    &session.dirs,
                    &session.config,
                )?),
                reviewer: None,
            };
            agent.drive(run, &cancel).await
        }
        None => {
            let mut agent = ReactAgent::new(
                model,
                Arc::new(tools),
                prompts,
                session.journal.clone(),
                events,
                session.agent_settings(&run.settings),
            )?;
            agent.approver = Some(session.approver(run.settings.interactive && !json));
            agent.memory = Some(super::memory::run_hook(
                &session.store,
                &session.dirs,
                &session.config,
            )?);
            agent.drive(run, steps, &cancel).await
        }
    };
    signals.abort();
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

    #[test]
    fn a_workspace_around_agents_files_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let dirs = Dirs::resolve(Some(&home.path().join("agent-home")), None).unwrap();
        std::fs::create_dir_all(&dirs.config).unwrap();
        let e = check_workspace(home.path(), &dirs).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        let ws = home.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        check_workspace(&ws, &dirs).unwrap();
    }
}
