//! `agent` / `agent chat`: the interactive session. Each line is a goal or a
//! follow-up; slash commands inspect and steer the session.
//!
//! Decisions:
//! - One model stays loaded for the whole session (a local model takes
//!   seconds to load); `/model` swaps it.
//! - Each goal is its own run in the journal (resumable with `agent runs
//!   resume` like any other); the conversation carries over by composing the
//!   next goal with the earlier exchanges ([`crate::ui::repl::compose_goal`]).
//! - Sessions are saved in the store's `sessions` tree after every goal, so
//!   `--resume` finds them even after a crash.
//! - Events are rendered on this task, not a separate one, and the approval
//!   prompt first prints every pending event: the step a question is about is
//!   always on screen above the question.
//! - Ctrl-C while the agent works cancels the run's token (the model call
//!   and the tool call stop, the run is recorded as cancelled) and returns to
//!   the prompt; at the prompt rustyline reads Ctrl-C as a key.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;
use super::context::{Session, on_ctrl_c};
use super::run::{RunOptions, parse_duration};
use crate::agent::Event;
use crate::agent::Strategy;
use crate::agent::hooks::{MemoryHook, Recalled};
use crate::agent::plan::{PlanReview, PlanReviewer, PlanStep};
use crate::memory::journal::{RunSettings, new_run_id, now_rfc3339};
use crate::memory::{RunRecord, StepRecord};
use crate::model::ModelBackend;
use crate::plugin::{GrantSummary, PluginInfo};
use crate::sanitize::{one_line, strip_terminal_escapes};
use crate::tools::ToolRegistry;
use crate::ui::approve::{Mode, PolicyApprover, Prompter, TerminalPrompter, class_words};
use crate::ui::human::Human;
use crate::ui::repl::{self, CtrlC, Exchange, Input, ReplHelper, TranscriptStep, TranscriptTurn};
use crate::ui::{Renderer, Verbosity};

/// `agent chat`.
#[derive(Debug, Clone, Default, Args)]
pub struct ChatArgs {
    /// Continue a saved session: its id, or the latest one when no id is given.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "last")]
    pub resume: Option<String>,
    #[command(flatten)]
    pub options: RunOptions,
    /// Never ask anything (no approvals, no `ask_human`): continuous mode.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approval policy for every tool class in this session: auto, ask, deny
    /// (`/approve` changes it). A deny in the config still applies.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub approve: Option<crate::ui::approve::Policy>,
}

/// A saved session: its exchanges, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSession {
    /// Session id (time-sortable).
    pub id: String,
    /// When it began (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Each goal, its run and its outcome.
    pub turns: Vec<SavedTurn>,
}

/// One exchange of a saved session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedTurn {
    /// The user's words.
    pub goal: String,
    /// The run in the journal.
    pub run_id: String,
    /// How it ended.
    pub status: String,
    /// The answer, or why it stopped.
    pub outcome: String,
}

impl SavedSession {
    fn new() -> Self {
        let now = now_rfc3339();
        Self {
            id: new_run_id(),
            created_at: now.clone(),
            updated_at: now,
            turns: Vec::new(),
        }
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.turns
            .iter()
            .map(|t| Exchange {
                goal: t.goal.clone(),
                status: t.status.clone(),
                outcome: t.outcome.clone(),
            })
            .collect()
    }
}

/// Saved sessions in the store's `sessions` tree.
struct Sessions(sled::Tree);

impl Sessions {
    fn save(&self, s: &SavedSession) -> anyhow::Result<()> {
        self.0
            .insert(s.id.as_bytes(), serde_json::to_vec(s)?)
            .context("cannot save the session in the store")?;
        self.0.flush().context("cannot flush the session store")?;
        Ok(())
    }

    fn all(&self) -> Vec<SavedSession> {
        self.0
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// `last` (the most recently changed), an id, or a unique id prefix.
    fn find(&self, query: &str) -> anyhow::Result<SavedSession> {
        let all = self.all();
        if query == "last" {
            return all
                .into_iter()
                .max_by(|a, b| a.updated_at.cmp(&b.updated_at).then(a.id.cmp(&b.id)))
                .context("there is no saved session yet; start one with `agent chat`");
        }
        let found: Vec<SavedSession> = all
            .into_iter()
            .filter(|s| s.id.starts_with(query))
            .collect();
        match found.len() {
            1 => Ok(found.into_iter().next().context("session vanished")?),
            0 => anyhow::bail!(
                "no session `{query}`; `agent chat --resume` continues the latest one"
            ),
            n => anyhow::bail!("`{query}` matches {n} sessions; give more of the id"),
        }
    }
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
    /// The user's words, shown instead of the composed goal.
    shown_goal: String,
    last_observation: Option<String>,
}

impl Pump {
    fn handle(&mut self, mut event: Event) {
        match &mut event {
            Event::RunStarted { goal, .. } => *goal = self.shown_goal.clone(),
            Event::Observation { observation, .. } => {
                self.last_observation = Some(observation.clone());
            }
            _ => {}
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
    model: Arc<dyn ModelBackend>,
    tools: Arc<ToolRegistry>,
    plugins: Vec<PluginInfo>,
    approver: Arc<PolicyApprover>,
    memory: Arc<dyn MemoryHook>,
    pump: Arc<Mutex<Pump>>,
    saved: SavedSession,
    sessions: Sessions,
    /// Tokens spent by the goals of this process.
    tokens: u64,
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
            strip_terminal_escapes(goal).lines().next().unwrap_or("")
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
        let goal = repl::compose_goal(&self.saved.exchanges(), words);
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let mut p = lock(&self.pump);
            p.rx = Some(rx);
            p.shown_goal = words.to_string();
            p.renderer = Human::new(self.verbosity);
        }
        let run = RunRecord::new(new_run_id(), goal, self.settings.clone());
        let run_id = run.id.clone();
        let strategy = if self.plan {
            Strategy::Plan
        } else {
            Strategy::React
        };
        let parts = self.session.parts(
            self.model.clone(),
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
        let result = {
            let drive = agent.start(run, &cancel);
            tokio::pin!(drive);
            let pump = self.pump.clone();
            loop {
                tokio::select! {
                    r = &mut drive => break r,
                    () = std::future::poll_fn(|cx| lock(&pump).poll(cx)) => {}
                }
            }
        };
        drop(ctrl_c);
        drop(agent);
        {
            let mut p = lock(&self.pump);
            p.drain();
            p.rx = None;
            p.renderer.close();
        }
        let run = match result {
            Ok(run) => run,
            Err(e) => {
                self.warn(&format!(
                    "error: the run {run_id} could not be recorded: {e}"
                ));
                return Ok(());
            }
        };
        self.tokens += run.usage.total();
        let outcome = run
            .answer
            .clone()
            .or(run.stop_reason.clone())
            .unwrap_or_default();
        self.saved.turns.push(SavedTurn {
            goal: words.to_string(),
            run_id: run.id.clone(),
            status: run.status.as_str().to_string(),
            outcome,
        });
        self.saved.updated_at = now_rfc3339();
        if let Err(e) = self.sessions.save(&self.saved) {
            self.warn(&format!("warning: {}", super::describe(&e)));
        }
        Ok(())
    }

    /// Handle a slash command; `false` means leave.
    async fn command(&mut self, name: &str, arg: &str) -> anyhow::Result<bool> {
        match name {
            "help" => {
                let h = repl::help_text();
                self.say(&h);
            }
            "exit" => return Ok(false),
            "model" => self.model_command(arg).await,
            "tools" => {
                let mut lines = Vec::new();
                for spec in self.tools.specs() {
                    let policy = self
                        .approver
                        .policy(spec)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "always runs".into());
                    lines.push(format!(
                        "  {BOLD}{:<16}{BOLD:#} {:<8} {DIM}{} · from {}{DIM:#}",
                        spec.name,
                        policy,
                        class_words(spec.class),
                        spec.source
                    ));
                }
                let text = lines.join("\n");
                self.say(&text);
            }
            "plugins" => {
                let mut lines = Vec::new();
                for p in &self.plugins {
                    let grant = p.granted.as_ref().map(grant_words).unwrap_or_default();
                    let detail = p.error.clone().unwrap_or(grant);
                    lines.push(format!(
                        "  {BOLD}{:<10}{BOLD:#} {:<8} {}",
                        p.name,
                        p.status,
                        strip_terminal_escapes(&detail)
                    ));
                }
                if lines.is_empty() {
                    lines.push("  (no plugins)".into());
                }
                let text = lines.join("\n");
                self.say(&text);
            }
            "memory" => self.memory_command(arg),
            "kb" => self.kb_command(arg),
            "runs" => {
                let runs = self.session.journal.list(10)?;
                let mut lines = Vec::new();
                for r in runs {
                    let goal = strip_terminal_escapes(r.goal.lines().last().unwrap_or_default());
                    lines.push(format!(
                        "  {} {:<16} {:>3} steps  {}",
                        r.id,
                        r.status.as_str(),
                        r.steps,
                        one_line(&goal, 60)
                    ));
                }
                if lines.is_empty() {
                    lines.push("  (no runs yet)".into());
                }
                let text = lines.join("\n");
                self.say(&text);
            }
            "agent" => match arg {
                "" => {
                    let now = if self.plan { "plan" } else { "react" };
                    self.say(&format!("strategy: {now} (set with /agent react|plan)"));
                }
                "plan" | "react" => {
                    self.plan = arg == "plan";
                    self.note(&format!("new goals run with the {arg} strategy"));
                }
                other => self.warn(&format!(
                    "unknown strategy `{other}`; use /agent react or /agent plan"
                )),
            },
            "approve" => {
                if arg.is_empty() {
                    let shown = self
                        .approver
                        .all()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "from the config (see /tools)".into());
                    self.say(&format!("approval policy for this session: {shown}"));
                } else {
                    match arg.parse() {
                        Ok(p) => {
                            self.approver.set_all(Some(p));
                            self.say(&format!(
                                "approval policy for this session: {p} (a deny in the config still applies)"
                            ));
                        }
                        Err(e) => self.warn(&e),
                    }
                }
            }
            "budget" => self.budget_command(arg),
            "clear" => {
                self.saved = SavedSession::new();
                self.approver.forget_always();
                lock(&self.pump).last_observation = None;
                let id = self.saved.id.clone();
                self.say(&format!(
                    "conversation cleared; new session {id} (\"always\" answers forgotten)"
                ));
            }
            "save" => self.save_command(arg)?,
            "last" => {
                let last = lock(&self.pump).last_observation.clone();
                match last {
                    Some(text) => {
                        let text = strip_terminal_escapes(&text);
                        self.say(&text);
                    }
                    None => self.note("no observation yet in this session"),
                }
            }
            other => self.warn(&format!("/{other} is not handled")),
        }
        Ok(true)
    }

    async fn model_command(&mut self, arg: &str) {
        if arg.is_empty() {
            let m = self.model.name();
            self.say(&format!("model: {m} ({})", self.settings.model));
            return;
        }
        let mut settings = self.settings.clone();
        settings.model = arg.to_string();
        self.note(&format!("loading model {arg} …"));
        match self.session.model(&settings, 0).await {
            Ok(model) => {
                self.model = model;
                self.settings = settings;
                self.say(&format!("model: {arg}"));
            }
            Err(e) => self.warn(&format!(
                "could not load {arg}: {}; keeping the current model",
                super::describe(&e)
            )),
        }
    }

    /// The configured embedder (loaded once per process), or a warning
    /// and `None` when it cannot be loaded.
    fn embedder(&mut self) -> Option<Option<std::sync::Arc<dyn crate::memory::embed::Embedder>>> {
        match super::memory::shared_embedder(&self.session.dirs, &self.session.config) {
            Ok(e) => Some(e),
            Err(e) => {
                self.warn(&format!(
                    "cannot load the embedder: {}",
                    super::describe(&e)
                ));
                None
            }
        }
    }

    fn memory_command(&mut self, query: &str) {
        let Some(embedder) = self.embedder() else {
            return;
        };
        let memory =
            match crate::memory::longterm::LongTermMemory::open(&self.session.store, embedder) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&format!("cannot open long-term memory: {e}"));
                    return;
                }
            };
        let found = if query.is_empty() {
            memory.list().map(|mut all| {
                all.reverse();
                all.truncate(10);
                all
            })
        } else {
            memory
                .search(query, 10)
                .map(|hits| hits.into_iter().map(|h| h.memory).collect())
        };
        match found {
            Ok(list) if list.is_empty() => self.note("no memories found"),
            Ok(list) => {
                let text = list
                    .iter()
                    .map(|m| {
                        format!(
                            "  {:>4}  {}  {DIM}({}){DIM:#}",
                            m.id,
                            one_line(&m.text, 200),
                            strip_terminal_escapes(&m.provenance.label())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                self.say(&text);
            }
            Err(e) => self.warn(&format!("memory search failed: {e}")),
        }
    }

    fn kb_command(&mut self, query: &str) {
        let Some(embedder) = self.embedder() else {
            return;
        };
        let kb = match super::memory::knowledge_base(
            &self.session.store,
            &self.session.config,
            embedder,
        ) {
            Ok(kb) => kb,
            Err(e) => return self.warn(&format!("cannot open the knowledge base: {e}")),
        };
        if query.is_empty() {
            match kb.list() {
                Ok(docs) if docs.is_empty() => {
                    self.note("the knowledge base is empty; add documents with `agent kb add PATH`")
                }
                Ok(docs) => {
                    let text = docs
                        .iter()
                        .map(|d| {
                            format!(
                                "  {}  {DIM}({} chunks){DIM:#}",
                                strip_terminal_escapes(&d.source),
                                d.chunks.len()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    self.say(&text);
                }
                Err(e) => self.warn(&format!("cannot list the knowledge base: {e}")),
            }
            return;
        }
        match kb.search(query, 5) {
            Ok(hits) if hits.is_empty() => self.note("nothing found in the knowledge base"),
            Ok(hits) => {
                let text = hits
                    .iter()
                    .map(|h| {
                        format!(
                            "  {BOLD}{}{BOLD:#}\n    {}",
                            strip_terminal_escapes(&h.chunk.location()),
                            one_line(&h.chunk.text, 300)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                self.say(&text);
            }
            Err(e) => self.warn(&format!("knowledge base search failed: {e}")),
        }
    }

    fn budget_command(&mut self, arg: &str) {
        let mut words = arg.split_whitespace();
        match (words.next(), words.next()) {
            (None, _) => {}
            (Some("steps"), Some(n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => self.settings.max_steps = n,
                _ => return self.warn("steps must be a whole number of at least 1"),
            },
            (Some("tokens"), Some(n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => self.settings.max_tokens = n,
                _ => return self.warn("tokens must be a whole number of at least 1"),
            },
            (Some("time"), Some(d)) => match parse_duration(d) {
                Ok(secs) => self.settings.timeout_secs = secs,
                Err(e) => return self.warn(&e),
            },
            _ => return self.warn("usage: /budget [steps N | tokens N | time DURATION]"),
        }
        let s = &self.settings;
        let text = format!(
            "each goal: at most {} steps, {} tokens, {} s · spent in this session: {} tokens",
            s.max_steps, s.max_tokens, s.timeout_secs, self.tokens
        );
        self.say(&text);
    }

    fn save_command(&mut self, arg: &str) -> anyhow::Result<()> {
        if arg.is_empty() {
            self.warn("usage: /save FILE (the conversation as Markdown)");
            return Ok(());
        }
        let mut turns = Vec::new();
        for t in &self.saved.turns {
            let record = self.session.journal.get(&t.run_id)?;
            let steps = self
                .session
                .journal
                .steps(&t.run_id)?
                .into_iter()
                .map(|s| TranscriptStep {
                    thought: s.thought.unwrap_or_default(),
                    tool: s.tool,
                    args: s.args,
                    observation: s.observation,
                })
                .collect();
            turns.push(TranscriptTurn {
                goal: t.goal.clone(),
                run_id: t.run_id.clone(),
                status: t.status.clone(),
                answer: record.and_then(|r| r.answer),
                steps,
            });
        }
        let md = repl::transcript_markdown(&self.saved.id, &turns);
        let path = PathBuf::from(arg);
        match std::fs::write(&path, md) {
            Ok(()) => self.say(&format!(
                "saved {} exchanges to {}",
                turns.len(),
                path.display()
            )),
            Err(e) => self.warn(&format!("cannot write {}: {e}", path.display())),
        }
        Ok(())
    }
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
    let sessions = Sessions(session.store.tree("sessions")?);
    let saved = match &args.resume {
        Some(query) => sessions.find(query)?,
        None => SavedSession::new(),
    };
    let settings = session.run_settings(terminal && !args.yes);
    let tools = session.tools(terminal && !args.yes).await?;
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
    let model = session.model(&settings, 0).await?;

    let pump = Arc::new(Mutex::new(Pump {
        rx: None,
        renderer: Human::new(verbosity),
        shown_goal: String::new(),
        last_observation: None,
    }));
    let mode = if args.yes {
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
            .with_before_prompt(Arc::new(move || {
                let mut p = lock(&flush);
                p.drain();
                p.renderer.close();
            })),
    );
    approver.set_all(args.approve);

    let helper = ReplHelper {
        tools: tools.specs().iter().map(|s| s.name.clone()).collect(),
        workspace: session.workspace.clone(),
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
        model,
        tools: Arc::new(tools),
        plugins,
        approver,
        memory,
        pump,
        saved,
        sessions,
        tokens: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_last_id_or_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::memory::Store::open(&dir.path().join("store")).unwrap();
        let sessions = Sessions(store.tree("sessions").unwrap());
        assert!(sessions.find("last").is_err());
        let mut a = SavedSession::new();
        a.id = "20260101-000000-aaaa".into();
        a.updated_at = "2026-01-01T00:00:00Z".into();
        let mut b = SavedSession::new();
        b.id = "20250101-000000-bbbb".into();
        b.updated_at = "2026-02-01T00:00:00Z".into();
        b.turns.push(SavedTurn {
            goal: "g".into(),
            run_id: "r".into(),
            status: "finished".into(),
            outcome: "o".into(),
        });
        sessions.save(&a).unwrap();
        sessions.save(&b).unwrap();
        assert_eq!(sessions.find("last").unwrap().id, b.id);
        assert_eq!(sessions.find("2026").unwrap().id, a.id);
        assert!(
            sessions
                .find("2")
                .unwrap_err()
                .to_string()
                .contains("matches 2")
        );
        assert!(sessions.find("nope").is_err());
        assert_eq!(sessions.find(&b.id).unwrap().exchanges()[0].outcome, "o");
    }
}
