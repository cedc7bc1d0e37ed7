//! `agent` / `agent chat`: the interactive session. Each line is a goal or a
//! follow-up; slash commands inspect and steer the session.
//!
//! Decisions:
//! - One model stays loaded for the whole session (a local model takes
//!   seconds to load); `/model` swaps it.
//! - Each goal is its own run in the journal (resumable with `agent runs
//!   resume` like any other) whose goal is the user's words; the earlier
//!   exchanges travel with it as messages ([`crate::agent::conversation`]).
//! - Sessions are saved ([`crate::memory::sessions`]) after every goal, so
//!   `--resume` finds them even after a crash.
//! - Events are rendered on this task, not a separate one, and the approval
//!   prompt first prints every pending event: the step a question is about is
//!   always on screen above the question.
//! - Ctrl-C while the agent works cancels the run's token (the model call
//!   and the tool call stop, the run is recorded as cancelled) and returns to
//!   the prompt; at the prompt rustyline reads Ctrl-C as a key.

mod commands;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;
use super::context::{Session, on_ctrl_c};
use super::flags::{ApprovalFlags, RunOptions, parse_duration};
use crate::agent::Event;
use crate::agent::Strategy;
use crate::agent::approval::{Mode, PolicyApprover, Prompter, class_words};
use crate::agent::hooks::{MemoryHook, Recalled};
use crate::agent::plan::{PlanReview, PlanReviewer, PlanStep};
use crate::memory::journal::{RunSettings, new_run_id, now_rfc3339};
use crate::memory::sessions::{SavedSession, SavedTurn, Sessions};
use crate::memory::{RunRecord, StepRecord};
use crate::model::ModelBackend;
use crate::model::roles::{CostAccount, RoleModels};
use crate::plugin::{GrantSummary, PluginInfo};
use crate::sanitize::{one_line, strip_terminal_escapes};
use crate::tools::ToolRegistry;
use crate::ui::approve::TerminalPrompter;
use crate::ui::human::Human;
use crate::ui::repl::{self, CtrlC, Input, ReplHelper, TranscriptStep, TranscriptTurn};
use crate::ui::{Renderer, Verbosity};

/// `agent chat`.
#[derive(Debug, Clone, Default, Args)]
pub struct ChatArgs {
    /// Continue a saved session: its id, or the latest one when no id is given.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "last")]
    pub resume: Option<String>,
    #[command(flatten)]
    pub options: RunOptions,
    /// `/approve` changes the policy during the session.
    #[command(flatten)]
    pub approvals: ApprovalFlags,
}

/// A plugin's grant in words: "workspace write · network: docs.rs · 64 MiB · 10 s".
pub fn grant_words(g: &GrantSummary) -> String {
    let workspace = serde_json::to_value(g.workspace)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{:?}", g.workspace).to_lowercase());
    let mut hosts: Vec<String> = g.http_hosts.clone();
    if g.any_public_host {
        hosts.insert(0, "any public host".into());
    }
    hosts.extend(g.allow_local.iter().map(|h| format!("local {h}")));
    let network = if hosts.is_empty() {
        "none".to_string()
    } else {
        hosts.join(", ")
    };
    let mut words = format!(
        "workspace {workspace} · network: {network} · {} MiB · {:.0} s",
        g.memory_mb,
        g.timeout_ms as f64 / 1000.0
    );
    if !g.env.is_empty() {
        words.push_str(&format!(" · env: {}", g.env.join(", ")));
    }
    words
}

/// Plugin name → its grant in words, for approval questions.
pub fn permissions(infos: &[PluginInfo]) -> BTreeMap<String, String> {
    infos
        .iter()
        .filter_map(|p| Some((p.name.clone(), grant_words(p.granted.as_ref()?))))
        .collect()
}

/// Long-term memory for the session's runs. A scripted model does not
/// reflect: it replays a fixed script, and a reflection would take the
/// response meant for the next goal.
struct SessionMemory {
    inner: Arc<dyn MemoryHook>,
    reflect: bool,
}

#[async_trait::async_trait]
impl MemoryHook for SessionMemory {
    async fn recall(&self, query: &str, budget_tokens: usize) -> Vec<Recalled> {
        self.inner.recall(query, budget_tokens).await
    }

    async fn run_ended(&self, run: &RunRecord, steps: &[StepRecord], model: &dyn ModelBackend) {
        if self.reflect {
            self.inner.run_ended(run, steps, model).await;
        }
    }
}

/// What the renderer was told during one run, kept for `/last`.
struct Pump {
    rx: Option<UnboundedReceiver<Event>>,
    renderer: Human,
    last_observation: Option<String>,
}

impl Pump {
    fn handle(&mut self, event: Event) {
        if let Event::Observation { observation, .. } = &event {
            self.last_observation = Some(observation.clone());
        }
        self.renderer.event(&event);
    }

    /// Render everything already sent.
    fn drain(&mut self) {
        let mut pending = Vec::new();
        if let Some(rx) = &mut self.rx {
            while let Ok(e) = rx.try_recv() {
                pending.push(e);
            }
        }
        for e in pending {
            self.handle(e);
        }
    }

    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let Some(rx) = &mut self.rx else {
            return Poll::Pending;
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(e)) => {
                self.handle(e);
                Poll::Ready(())
            }
            // Closed: the run is over; the caller is about to stop polling.
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn lock(p: &Mutex<Pump>) -> std::sync::MutexGuard<'_, Pump> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The interactive session's state.
struct Chat<'a> {
    session: &'a Session,
    verbosity: Verbosity,
    settings: RunSettings,
    /// The models by role; `/model` changes the default one.
    models: RoleModels,
    tools: Arc<ToolRegistry>,
    plugins: Vec<PluginInfo>,
    approver: Arc<PolicyApprover>,
    memory: Arc<dyn MemoryHook>,
    pump: Arc<Mutex<Pump>>,
    saved: SavedSession,
    sessions: Sessions,
    /// Tokens spent by the goals of this process.
    tokens: u64,
    /// What the goals of this process cost, by model (`/cost`).
    cost: CostAccount,
    out: anstream::AutoStream<std::io::Stdout>,
    /// `/agent plan`: new goals run plan-and-execute (the plan is shown for
    /// approval first) instead of plain ReAct.
    plan: bool,
}

/// Shows a proposed plan on the terminal: Enter or `y` runs it, `n` (or
/// Ctrl-C/Ctrl-D) rejects it, anything else goes back to the planner as the
/// user's edit.
struct TerminalPlanReviewer;

#[async_trait::async_trait]
impl PlanReviewer for TerminalPlanReviewer {
    async fn review(&self, goal: &str, plan: &[PlanStep]) -> PlanReview {
        let mut text = format!(
            "Proposed plan for: {}\n",
            one_line(&strip_terminal_escapes(goal), 300)
        );
        for (i, step) in plan.iter().enumerate() {
            text.push_str(&format!(
                "  {}. {} (done when: {})\n",
                i + 1,
                strip_terminal_escapes(&step.description),
                strip_terminal_escapes(&step.success_criterion)
            ));
        }
        text.push_str("Run this plan? [Y]es, [n]o, or type changes for the planner");
        let answer = tokio::task::spawn_blocking(move || TerminalPrompter.ask(&text))
            .await
            .ok()
            .flatten();
        match answer.as_deref().map(str::trim) {
            None => PlanReview::Reject("the user rejected the plan".into()),
            Some("" | "y" | "Y" | "yes") => PlanReview::Approve,
            Some("n" | "N" | "no") => PlanReview::Reject("the user rejected the plan".into()),
            Some(edit) => PlanReview::Edit(edit.to_string()),
        }
    }
}

const DIM: anstyle::Style = anstyle::Style::new().dimmed();
const BOLD: anstyle::Style = anstyle::Style::new().bold();
const WARN: anstyle::Style = anstyle::AnsiColor::Yellow.on_default().bold();

impl Chat<'_> {
    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "{DIM}{text}{DIM:#}");
        let _ = self.out.flush();
    }

    fn warn(&mut self, text: &str) {
        let mut err = anstream::AutoStream::auto(std::io::stderr());
        let _ = writeln!(err, "{WARN}{text}{WARN:#}");
    }

    /// Run one goal to its end; Ctrl-C cancels it.
    async fn goal(&mut self, words: &str) -> anyhow::Result<()> {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let mut p = lock(&self.pump);
            p.rx = Some(rx);
            p.renderer = Human::new(self.verbosity);
        }
        let mut run = RunRecord::new(new_run_id(), words.to_string(), self.settings.clone());
        run.earlier = self.saved.exchanges();
        run.tainted = self.saved.tainted.clone();
        // `/approve` may have changed them since the session began.
        run.settings.approvals = self.approver.record().to_json();
        let run_id = run.id.clone();
        let strategy = if self.plan {
            Strategy::Plan
        } else {
            Strategy::React
        };
        let parts = self.session.parts(
            &self.models,
            self.tools.clone(),
            events,
            &self.settings,
            Some(self.approver.clone()),
            Some(self.memory.clone()),
        );
        // With --yes nothing is asked, plans included.
        let reviewer = self
            .settings
            .interactive
            .then(|| Arc::new(TerminalPlanReviewer) as Arc<dyn PlanReviewer>);
        let agent = match self.session.agent(strategy, parts, reviewer) {
            Ok(agent) => agent,
            Err(e) => {
                self.warn(&format!("error: {e}"));
                return Ok(());
            }
        };
        let cancel = CancellationToken::new();
        let ctrl_c = on_ctrl_c(&cancel, false);
        let result = pumped(&self.pump, agent.start(run, &cancel)).await;
        drop(ctrl_c);
        drop(agent);
        self.end_pump();
        match result {
            Ok(run) => self.record_turn(words, &run),
            Err(e) => {
                self.warn(&format!(
                    "error: the run {run_id} could not be recorded: {e}"
                ));
                Ok(())
            }
        }
    }

    /// Show the rest of a run's events and close its transcript.
    fn end_pump(&mut self) {
        // The recipe kit holds the run's events channel too.
        self.session.recipes.lock().map(|mut k| k.take()).ok();
        let mut p = lock(&self.pump);
        p.drain();
        p.rx = None;
        p.renderer.close();
    }

    /// `/recipe NAME KEY=VALUE ...`: run a recipe as this session's next
    /// turn, with its models, tools, approvals and memory.
    async fn recipe_command(&mut self, arg: &str) -> anyhow::Result<()> {
        let words = split_words(arg);
        let Some((name, pairs)) = words.split_first() else {
            let names: Vec<String> = self
                .session
                .library()
                .list()
                .into_iter()
                .map(|l| l.name)
                .collect();
            self.say(&format!(
                "usage: /recipe NAME KEY=VALUE ... (recipes: {})",
                names.join(", ")
            ));
            return Ok(());
        };
        let loaded = match self.session.library().load(name) {
            Ok(l) => l,
            Err(e) => {
                self.warn(&format!("error: {e}"));
                return Ok(());
            }
        };
        let ask = crate::cli::recipe::Terminal {
            ask: self.settings.interactive,
        };
        let values = match crate::recipe::values::parse_pairs(pairs)
            .and_then(|given| loaded.recipe.bind(&given, &BTreeMap::new(), &ask))
        {
            Ok(v) => v,
            Err(e) => {
                self.warn(&format!("error: {e}"));
                return Ok(());
            }
        };
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let mut p = lock(&self.pump);
            p.rx = Some(rx);
            p.renderer = Human::new(self.verbosity);
        }
        let mut settings = self.settings.clone();
        settings.approvals = self.approver.record().to_json();
        let _ = self.session.parts(
            &self.models,
            self.tools.clone(),
            events,
            &settings,
            Some(self.approver.clone()),
            Some(self.memory.clone()),
        );
        let kit = self.session.kit()?;
        let call = crate::agent::recipe::Call {
            id: new_run_id(),
            tainted: self.saved.tainted.clone(),
            ..Default::default()
        };
        let cancel = CancellationToken::new();
        let ctrl_c = on_ctrl_c(&cancel, false);
        let result = pumped(&self.pump, kit.run(&loaded, &values, call, &cancel)).await;
        drop(ctrl_c);
        drop(kit);
        self.end_pump();
        match result {
            Ok(outcome) => self.record_turn(&format!("/recipe {arg}"), &outcome.run),
            Err(e) => {
                self.warn(&format!("error: {e}"));
                Ok(())
            }
        }
    }

    /// Count a finished run and keep it as a turn of the conversation.
    fn record_turn(&mut self, words: &str, run: &RunRecord) -> anyhow::Result<()> {
        self.tokens += run.usage.total();
        self.cost.add(&run.cost);
        let outcome = run
            .answer
            .clone()
            .or(run.stop_reason.clone())
            .unwrap_or_default();
        self.saved.tainted = run.tainted.clone();
        self.saved.turns.push(SavedTurn {
            goal: words.to_string(),
            run_id: run.id.clone(),
            status: run.status.as_str().to_string(),
            outcome,
        });
        self.saved.updated_at = now_rfc3339();
        if let Err(e) = self.sessions.save(&self.saved) {
            self.warn(&format!("warning: {e}"));
        }
        Ok(())
    }
}

/// Drive `fut` while showing the run's events as they come.
async fn pumped<F: std::future::Future>(pump: &Arc<Mutex<Pump>>, fut: F) -> F::Output {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => break r,
            () = std::future::poll_fn(|cx| lock(pump).poll(cx)) => {}
        }
    }
}

/// Words of a REPL line; `"..."` or `'...'` keep spaces in one word
/// (`text="two words"`).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

/// `agent chat` (and `agent` with no subcommand).
pub async fn execute(args: ChatArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(&args.options)?;
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let verbosity = match (global.quiet, global.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, 0) => Verbosity::Normal,
        _ => Verbosity::Verbose,
    };
    let sessions = Sessions::open(&session.store)?;
    let saved = match &args.resume {
        Some(query) => sessions.find(query)?,
        None => SavedSession::new(),
    };
    let tools = session.tools(terminal && !args.approvals.yes).await?;
    let settings = session.run_settings(terminal && !args.approvals.yes)?;
    let plugins = session
        .plugins
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    let memory: Arc<dyn MemoryHook> = Arc::new(SessionMemory {
        inner: super::memory::run_hook(&session.store, &session.dirs, &session.config)?,
        reflect: !settings.model.starts_with("scripted:") || settings.endpoint.is_some(),
    });
    // Fail at the start, not at the first goal, when a template is broken.
    session.prompts().load("react")?;
    let models = session.models(&settings, 0).await?;

    let pump = Arc::new(Mutex::new(Pump {
        rx: None,
        renderer: Human::new(verbosity),
        last_observation: None,
    }));
    let mode = if args.approvals.yes {
        Mode::Continuous
    } else if terminal {
        Mode::Interactive(Arc::new(TerminalPrompter))
    } else {
        Mode::NonInteractive
    };
    let flush = pump.clone();
    let approver = Arc::new(
        PolicyApprover::new(session.config.approvals.clone(), mode)
            .with_permissions(permissions(&plugins))
            .with_source_policies(session.source_policies())
            .with_before_prompt(Arc::new(move || {
                let mut p = lock(&flush);
                p.drain();
                p.renderer.close();
            })),
    );
    approver.set_all(args.approvals.approve);

    let helper = ReplHelper {
        tools: tools.specs().iter().map(|s| s.name.clone()).collect(),
        workspace: session.workspace.clone(),
        recipes: session
            .library()
            .list()
            .into_iter()
            .filter_map(|l| {
                let keys = l
                    .recipe
                    .ok()?
                    .parameters
                    .into_iter()
                    .map(|p| p.key)
                    .collect();
                Some((l.name, keys))
            })
            .collect(),
    };
    let ctrl_c = CtrlC::default();
    let mut editor = repl::editor(&session.config.repl, helper, ctrl_c.clone())
        .context("cannot start the line editor")?;
    std::fs::create_dir_all(&session.dirs.data).ok();
    let history = repl::history_file(&session.dirs.data);
    if history.exists()
        && let Err(e) = editor.load_history(&history)
    {
        eprintln!(
            "warning: cannot read the history {}: {e}",
            history.display()
        );
    }

    let mut chat = Chat {
        session: &session,
        verbosity,
        settings,
        models,
        tools: Arc::new(tools),
        plugins,
        approver,
        memory,
        pump,
        saved,
        sessions,
        tokens: 0,
        cost: CostAccount::new(),
        out: anstream::AutoStream::auto(std::io::stdout()),
        plan: false,
    };
    let resumed = if chat.saved.turns.is_empty() {
        String::new()
    } else {
        format!(" (resumed, {} earlier exchanges)", chat.saved.turns.len())
    };
    let banner = format!(
        "{BOLD}agent{BOLD:#} {DIM}· model {} · workspace {} · session {}{resumed}\nType a goal, /help for commands, Ctrl-D to leave.{DIM:#}",
        chat.settings.model,
        session.workspace.display(),
        chat.saved.id
    );
    if !global.quiet {
        chat.say(&banner);
        for t in chat.saved.turns.clone() {
            let line = format!(
                "  {DIM}›{DIM:#} {}  {DIM}→ {} {}{DIM:#}",
                strip_terminal_escapes(&t.goal),
                t.status,
                one_line(&t.outcome, 120)
            );
            chat.say(&line);
        }
    }

    loop {
        let line = tokio::task::block_in_place(|| editor.readline("agent> "));
        let line = match line {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                if ctrl_c.take_had_text() {
                    continue;
                }
                let answer =
                    tokio::task::block_in_place(|| editor.readline("Leave the session? [y/N] "));
                match answer {
                    Ok(a) if matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes") => {
                        break;
                    }
                    Err(
                        rustyline::error::ReadlineError::Interrupted
                        | rustyline::error::ReadlineError::Eof,
                    ) => break,
                    _ => continue,
                }
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the terminal"),
        };
        if !line.trim().is_empty() && !line.starts_with(' ') {
            let _ = editor.add_history_entry(line.as_str());
            if let Err(e) = editor.append_history(&history) {
                eprintln!(
                    "warning: cannot write the history {}: {e}",
                    history.display()
                );
            }
        }
        match repl::parse_input(&line) {
            Input::Empty => {}
            Input::Goal(goal) => chat.goal(&goal).await?,
            Input::Command { name, arg } => {
                if !chat.command(&name, &arg).await? {
                    break;
                }
            }
            Input::Unknown(msg) => chat.warn(&msg),
        }
    }
    if !chat.saved.turns.is_empty() && !global.quiet {
        let id = chat.saved.id.clone();
        chat.note(&format!(
            "session {id} saved; continue it with: agent chat --resume {id}"
        ));
    }
    Ok(ExitCode::SUCCESS)
}
