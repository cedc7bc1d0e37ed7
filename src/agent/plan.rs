//! Plan-and-execute: a planner turns the goal into a short ordered plan
//! (JSON, constrained to a schema: each step a description and a success
//! criterion), each step is carried out by a bounded ReAct loop with the same
//! tools, and after each step a replanner keeps the plan, revises the steps
//! that remain, or finishes with the answer. Revisions are bounded.
//!
//! Decisions:
//! - Each plan step is a child run in the same [`RunJournal`] (`<parent>.s1`,
//!   `<parent>.s2`, … numbered by execution, not by plan position), driven by
//!   an unchanged [`ReactAgent`]. So a step gets the ReAct loop's guards,
//!   approvals, budgets and per-step commits for free, and its transcript is
//!   an ordinary run (`agent runs show <parent>.s2`). The parent run's record
//!   carries the totals (steps, tokens, time) and the final answer.
//! - The plan state (current plan, revisions, the step in progress, each
//!   step's outcome, how many model calls the planner made) lives in the
//!   store's `plans` tree under the parent run id, written and flushed at
//!   every phase change, so `agent runs resume` continues at the current
//!   step: an interrupted child run is resumed from its own last step.
//! - Escalation: a step stopped by the loop guard, or out of its own step
//!   budget, goes to the replanner (which sees that it was stuck) before the
//!   run gives up; running out of the run's own budget ends the run.
//! - When no revision is left, the replanner's schema no longer offers
//!   `revise`; a model that revises anyway (unconstrained backends) stops the
//!   run with the reason.
//! - The REPL can show the plan before it runs through a [`PlanReviewer`]
//!   (approve, edit as text the planner re-reads, or reject).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::events::Event;
use super::hooks::{Approver, MemoryHook, Recalled};
use super::react::{AgentError, AgentSettings, ReactAgent, summarize};
use super::run::{Clock, Ending, Lifecycle, ask_model, check_budgets};
use crate::json_extract;
use crate::memory::journal::now_rfc3339;
use crate::memory::{RunJournal, RunRecord, RunStatus, StepRecord, StopKind, Store, StoreError};
use crate::model::{ChatMessage, CompletionRequest, ModelBackend, Usage};
use crate::prompt::{Prompt, PromptError, PromptLibrary};
use crate::sanitize;
use crate::tools::ToolRegistry;

/// The store tree holding plan state, keyed by parent run id.
pub const PLANS_TREE: &str = "plans";

/// Longest description or criterion the schema allows, in characters.
const MAX_STEP_CHARS: u64 = 160;
/// Longest planner thought, in characters (short: the steps carry the plan).
const MAX_PLAN_THOUGHT_CHARS: u64 = 200;
/// Tokens a planner answer may take: room for the longest plan the schema allows.
const PLANNER_TOKENS: usize = 768;
/// Longest step result shown to the planner and the next steps.
const RESULT_CHARS: usize = 800;
/// Attempts at a valid plan or decision before the run stops.
const ATTEMPTS: u32 = 3;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// What to do.
    pub description: String,
    /// How to tell it is done.
    pub success_criterion: String,
}

/// Where a plan-and-execute run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// No plan yet (or the user asked for another).
    Planning,
    /// The current step is being carried out by the child run `child`.
    Executing { child: String },
    /// The current step ended; the replanner decides next.
    Replanning,
}

/// A version of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// 0 for the first plan.
    pub number: u32,
    /// The planner's reason.
    pub thought: String,
    /// Steps already done when it was made (kept unchanged).
    pub done: usize,
    /// The whole plan after the revision.
    pub steps: Vec<PlanStep>,
    pub at: String,
}

/// What became of one executed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// 1-based position in the plan.
    pub number: usize,
    pub description: String,
    /// The child run that carried it out.
    pub run_id: String,
    pub status: RunStatus,
    /// The step's answer, or why it stopped and what was done.
    pub result: String,
    pub steps: u32,
    pub usage: Usage,
}

/// One planner or replanner call, as the model answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannerCall {
    /// `plan` or `replan`.
    pub kind: String,
    /// What the model wrote (capped).
    pub raw: String,
    /// Why it was not accepted, when it was not.
    pub error: Option<String>,
    pub usage: Usage,
    pub at: String,
}

/// Everything needed to continue a plan-and-execute run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanState {
    pub phase: Phase,
    /// The current plan.
    pub steps: Vec<PlanStep>,
    /// Index (0-based) of the step being carried out or just finished.
    pub current: usize,
    pub revisions: Vec<Revision>,
    /// Revisions after the first plan.
    pub replans: u32,
    /// Plans the user sent back with feedback.
    pub edits: u32,
    /// The user's feedback on the last plan, for the planner.
    pub feedback: Option<String>,
    pub results: Vec<StepResult>,
    /// Child runs created so far.
    pub children: u32,
    /// Planner and replanner model calls (a resumed scripted model skips them).
    pub model_calls: u32,
    /// Tokens spent by the planner and replanner.
    pub usage: Usage,
    /// Every planner and replanner answer, in order (the planner's transcript).
    #[serde(default)]
    pub calls: Vec<PlannerCall>,
}

impl PlanState {
    /// The state of a run that has not planned yet.
    pub fn new() -> Self {
        Self {
            phase: Phase::Planning,
            steps: Vec::new(),
            current: 0,
            revisions: Vec::new(),
            replans: 0,
            edits: 0,
            feedback: None,
            results: Vec::new(),
            children: 0,
            model_calls: 0,
            usage: Usage::default(),
            calls: Vec::new(),
        }
    }

    /// Ids of every child run created so far, in order.
    pub fn child_ids(&self, run_id: &str) -> Vec<String> {
        (1..=self.children).map(|n| child_id(run_id, n)).collect()
    }
}

impl Default for PlanState {
    fn default() -> Self {
        Self::new()
    }
}

/// The id of the `n`th child run of `run_id`.
pub fn child_id(run_id: &str, n: u32) -> String {
    format!("{run_id}.s{n}")
}

/// Plan state in the store.
#[derive(Clone)]
pub struct PlanStore {
    tree: sled::Tree,
}

impl PlanStore {
    /// The plans tree of `store`.
    pub fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(PLANS_TREE)?,
        })
    }

    /// The state of `run_id`, if it is a plan-and-execute run.
    pub fn get(&self, run_id: &str) -> Result<Option<PlanState>, StoreError> {
        match self.tree.get(run_id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::BadRecord {
                        key: format!("{PLANS_TREE}/{run_id}"),
                        detail: e.to_string(),
                    })
            }
        }
    }

    /// Write the state of `run_id`, durably.
    pub fn put(&self, run_id: &str, state: &PlanState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Write(e.to_string()))?;
        self.tree.insert(run_id.as_bytes(), bytes)?;
        // Flushing a tree flushes the whole database.
        self.tree.flush()?;
        Ok(())
    }

    /// Mark `run_id` as a plan-and-execute run (before it is first driven).
    pub fn mark(&self, run_id: &str) -> Result<(), StoreError> {
        self.put(run_id, &PlanState::new())
    }

    /// The plan-and-execute run that `run_id` is, or is a step of.
    pub fn owner(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        if self.tree.contains_key(run_id.as_bytes())? {
            return Ok(Some(run_id.to_string()));
        }
        if let Some((parent, n)) = run_id.rsplit_once(".s")
            && n.parse::<u32>().is_ok()
            && self.tree.contains_key(parent.as_bytes())?
        {
            return Ok(Some(parent.to_string()));
        }
        Ok(None)
    }

    /// Model responses a run has consumed so far (planner calls plus every
    /// child step), so a resumed scripted model continues where it stopped.
    pub fn responses_used(&self, journal: &RunJournal, run_id: &str) -> Result<usize, StoreError> {
        let Some(state) = self.get(run_id)? else {
            return Ok(journal.steps(run_id)?.len());
        };
        let mut n = state.model_calls as usize;
        for child in state.child_ids(run_id) {
            n += journal.steps(&child)?.len();
        }
        Ok(n)
    }
}

/// The user's answer to a proposed plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanReview {
    /// Carry it out.
    Approve,
    /// Plan again; the text is given to the planner with the goal.
    Edit(String),
    /// Do not run it; the run ends as cancelled with this reason.
    Reject(String),
}

/// Shown each new plan before it runs (the REPL's approve/edit/reject).
#[async_trait]
pub trait PlanReviewer: Send + Sync {
    /// Approve, edit or reject `plan` for `goal`.
    async fn review(&self, goal: &str, plan: &[PlanStep]) -> PlanReview;
}

/// Limits of the strategy itself (the run's budgets still apply to the total).
#[derive(Debug, Clone)]
pub struct PlanLimits {
    /// Most steps in a plan.
    pub max_plan_steps: usize,
    /// Most revisions after the first plan.
    pub max_replans: u32,
    /// Most ReAct steps one plan step may take.
    pub step_max_steps: u32,
    /// Most times the user may send a plan back with an edit.
    pub max_edits: u32,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_plan_steps: 5,
            max_replans: 3,
            step_max_steps: 10,
            max_edits: 3,
        }
    }
}

/// The templates the strategy uses.
#[derive(Debug, Clone)]
pub struct PlanPrompts {
    /// Where each step's ReAct loop loads its own templates.
    pub library: PromptLibrary,
    /// The planner (and the goal of each step: `messages.step_goal`).
    pub plan: Prompt,
    /// The replanner.
    pub replan: Prompt,
}

impl PlanPrompts {
    /// Load `plan` and `replan` from `library` (and check the ReAct ones load).
    pub fn load(library: &PromptLibrary) -> Result<Self, PromptError> {
        library.load("react")?;
        Ok(Self {
            library: library.clone(),
            plan: library.load("plan")?,
            replan: library.load("replan")?,
        })
    }
}

/// Runs goals with the plan-and-execute strategy.
pub struct PlanAgent {
    pub model: Arc<dyn ModelBackend>,
    pub tools: Arc<ToolRegistry>,
    pub prompts: PlanPrompts,
    pub journal: RunJournal,
    pub plans: PlanStore,
    pub events: UnboundedSender<Event>,
    /// The whole run's budgets (every step's ReAct loop counts against them).
    pub settings: AgentSettings,
    pub limits: PlanLimits,
    /// Asked before each tool call; `None` approves everything.
    pub approver: Option<Arc<dyn Approver>>,
    /// Long-term memory for the steps' ReAct loops.
    pub memory: Option<Arc<dyn MemoryHook>>,
    /// Shown each plan before it runs; `None` runs it at once.
    pub reviewer: Option<Arc<dyn PlanReviewer>>,
}

/// Long-term memory for a step's ReAct loop: recall as usual, but no
/// reflection when the step ends; the plan run reflects once at its end.
struct RecallOnly(Arc<dyn MemoryHook>);

#[async_trait]
impl MemoryHook for RecallOnly {
    async fn recall(&self, query: &str, budget_tokens: usize) -> Vec<Recalled> {
        self.0.recall(query, budget_tokens).await
    }

    async fn run_ended(&self, _run: &RunRecord, _steps: &[StepRecord], _model: &dyn ModelBackend) {}
}

/// How the planner's and replanner's answers are asked for again.
struct Retry {
    /// The call's kind in the journal (`plan`, `replan`).
    kind: &'static str,
    /// Who answers, for messages (`planner`).
    role: &'static str,
    /// What a valid answer is (`plan`, `decision`).
    noun: &'static str,
    /// The JSON object's shape, as told to the model.
    shape: &'static str,
}

/// The replanner's choice.
enum Decision {
    Keep,
    Revise(String, Vec<PlanStep>),
    Finish(String),
}

#[derive(Deserialize)]
struct PlanOutput {
    #[serde(default)]
    thought: String,
    steps: Vec<PlanStep>,
}

#[derive(Deserialize)]
struct ReplanOutput {
    #[serde(default)]
    thought: String,
    decision: String,
    #[serde(default)]
    steps: Option<Vec<PlanStep>>,
    #[serde(default)]
    answer: Option<String>,
}

fn steps_schema(max: usize) -> Value {
    json!({
        "type": "array",
        "minItems": 1,
        "maxItems": max,
        "items": {
            "type": "object",
            "properties": {
                "description": {"type": "string", "maxLength": MAX_STEP_CHARS},
                "success_criterion": {"type": "string", "maxLength": MAX_STEP_CHARS},
            },
            "required": ["description", "success_criterion"],
            "additionalProperties": false,
        }
    })
}

fn thought_schema() -> Value {
    json!({"type": "string", "maxLength": MAX_PLAN_THOUGHT_CHARS})
}

/// The schema of a plan with at most `max` steps.
pub fn plan_schema(max: usize) -> Value {
    json!({
        "type": "object",
        "properties": {"thought": thought_schema(), "steps": steps_schema(max)},
        "required": ["thought", "steps"],
        "additionalProperties": false,
    })
}

/// The schema of a replanner decision; `revise` only while revisions remain.
pub fn replan_schema(allow_revise: bool, max: usize) -> Value {
    let mut branches = vec![
        json!({
            "type": "object",
            "properties": {"thought": thought_schema(), "decision": {"const": "keep"}},
            "required": ["thought", "decision"],
            "additionalProperties": false,
        }),
        json!({
            "type": "object",
            "properties": {
                "thought": thought_schema(),
                "decision": {"const": "finish"},
                "answer": {"type": "string"},
            },
            "required": ["thought", "decision", "answer"],
            "additionalProperties": false,
        }),
    ];
    if allow_revise {
        branches.insert(
            1,
            json!({
                "type": "object",
                "properties": {
                    "thought": thought_schema(),
                    "decision": {"const": "revise"},
                    "steps": steps_schema(max),
                },
                "required": ["thought", "decision", "steps"],
                "additionalProperties": false,
            }),
        );
    }
    json!({"type": "object", "oneOf": branches})
}

fn check_steps(steps: Vec<PlanStep>, max: usize) -> Result<Vec<PlanStep>, String> {
    if steps.is_empty() {
        return Err("the plan has no steps".into());
    }
    if steps.len() > max {
        return Err(format!(
            "the plan has {} steps; at most {max} are allowed",
            steps.len()
        ));
    }
    if steps.iter().any(|s| s.description.trim().is_empty()) {
        return Err("a step has an empty description".into());
    }
    Ok(steps
        .into_iter()
        .map(|s| PlanStep {
            description: sanitize::strip_terminal_escapes(s.description.trim()),
            success_criterion: sanitize::strip_terminal_escapes(s.success_criterion.trim()),
        })
        .collect())
}

fn parse_plan(text: &str, max: usize) -> Result<(String, Vec<PlanStep>), String> {
    let out: PlanOutput =
        json_extract::first(text).map_err(|e| format!("not a plan object: {e}"))?;
    Ok((out.thought, check_steps(out.steps, max)?))
}

fn parse_decision(text: &str, max: usize) -> Result<Decision, String> {
    let out: ReplanOutput =
        json_extract::first(text).map_err(|e| format!("not a decision object: {e}"))?;
    match out.decision.as_str() {
        "keep" => Ok(Decision::Keep),
        "finish" => match out.answer {
            Some(a) if !a.trim().is_empty() => Ok(Decision::Finish(a)),
            _ => Err("`finish` needs a non-empty `answer`".into()),
        },
        "revise" => {
            let steps = out
                .steps
                .ok_or_else(|| "`revise` needs the new `steps`".to_string())?;
            Ok(Decision::Revise(out.thought, check_steps(steps, max)?))
        }
        other => Err(format!(
            "unknown decision `{other}`; use keep, revise or finish"
        )),
    }
}

/// What carrying out one step led to.
enum StepEnd {
    /// The step ended; the replanner goes next.
    Done(StepResult),
    /// The run ends (cancelled, failed, out of the run's budget).
    Stop(Ending),
}

impl PlanAgent {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn save(&self, run: &RunRecord, state: &PlanState) -> Result<(), AgentError> {
        self.plans.put(&run.id, state)?;
        Ok(())
    }

    /// Drive `run` (new, or resumed at its current step) to its end.
    pub async fn drive(
        &self,
        mut run: RunRecord,
        cancel: &CancellationToken,
    ) -> Result<RunRecord, AgentError> {
        let mut state = self.plans.get(&run.id)?.unwrap_or_default();
        let resumed = state.model_calls > 0 || state.children > 0;
        let life = self.lifecycle();
        let resumed_after = resumed.then_some(run.steps);
        let clock = life.start(&mut run, resumed_after)?;
        self.save(&run, &state)?;
        let ending = match self.run_plan(&mut run, &mut state, &clock, cancel).await {
            Ok(ending) => ending,
            Err(e) => {
                let ending = Ending::new(StopKind::Failed, e.to_string());
                if life.record_end(&mut run, &ending, &clock).is_ok() {
                    let _ = self.save(&run, &state);
                    self.announce(&run, &state, ending).await;
                }
                return Err(e);
            }
        };
        life.record_end(&mut run, &ending, &clock)?;
        self.save(&run, &state)?;
        self.announce(&run, &state, ending).await;
        Ok(run)
    }

    fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            model: &self.model,
            tools: &self.tools,
            journal: &self.journal,
            events: &self.events,
            memory: self.memory.as_ref(),
            settings: &self.settings,
        }
    }

    /// One reflection for the whole run, over every step's actions, and
    /// the end announced with the plan as the list of what was done.
    async fn announce(&self, run: &RunRecord, state: &PlanState, ending: Ending) {
        let mut steps = Vec::new();
        for child in state.child_ids(&run.id) {
            steps.extend(self.journal.steps(&child).unwrap_or_default());
        }
        self.lifecycle()
            .announce_end(run, ending, &steps, summarize_plan(state))
            .await;
    }

    /// Recompute the parent's totals from the plan state and the child runs.
    fn tally(&self, run: &mut RunRecord, state: &PlanState) -> Result<(), AgentError> {
        let mut steps = 0;
        let mut usage = state.usage;
        for child in state.child_ids(&run.id) {
            if let Some(c) = self.journal.get(&child)? {
                steps += c.steps;
                usage += c.usage;
            }
        }
        run.steps = steps;
        run.usage = usage;
        run.updated_at = now_rfc3339();
        self.journal.put_run(run)?;
        Ok(())
    }

    async fn run_plan(
        &self,
        run: &mut RunRecord,
        state: &mut PlanState,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Result<Ending, AgentError> {
        loop {
            self.tally(run, state)?;
            if cancel.is_cancelled() {
                return Ok(Ending::cancelled());
            }
            match state.phase.clone() {
                Phase::Planning => {
                    if let Some(ending) = check_budgets(&self.settings, run, clock, cancel) {
                        return Ok(ending);
                    }
                    let (thought, steps) = match self.make_plan(run, state, clock, cancel).await? {
                        Ok(plan) => plan,
                        Err(ending) => return Ok(ending),
                    };
                    state.steps = steps;
                    state.current = 0;
                    state.revisions.push(Revision {
                        number: state.revisions.len() as u32,
                        thought: thought.clone(),
                        done: 0,
                        steps: state.steps.clone(),
                        at: now_rfc3339(),
                    });
                    self.save(run, state)?;
                    self.emit(Event::PlanCreated {
                        run_id: run.id.clone(),
                        thought,
                        steps: state.steps.clone(),
                    });
                    if let Some(reviewer) = &self.reviewer {
                        match reviewer.review(&run.goal, &state.steps).await {
                            PlanReview::Approve => {}
                            PlanReview::Edit(text) => {
                                if state.edits >= self.limits.max_edits {
                                    return Ok(Ending::new(
                                        StopKind::Guard,
                                        format!(
                                            "the plan was edited {} times (the limit)",
                                            state.edits
                                        ),
                                    ));
                                }
                                state.edits += 1;
                                state.feedback = Some(text);
                                self.save(run, state)?;
                                continue;
                            }
                            PlanReview::Reject(reason) => {
                                let reason = if reason.trim().is_empty() {
                                    "the user rejected the plan".to_string()
                                } else {
                                    format!("the user rejected the plan: {reason}")
                                };
                                return Ok(Ending::new(StopKind::Cancelled, reason));
                            }
                        }
                    }
                    state.feedback = None;
                    state.children += 1;
                    state.phase = Phase::Executing {
                        child: child_id(&run.id, state.children),
                    };
                    self.save(run, state)?;
                }
                Phase::Executing { child } => {
                    match self.run_step(run, state, &child, clock, cancel).await? {
                        StepEnd::Stop(ending) => return Ok(ending),
                        StepEnd::Done(result) => {
                            state.results.push(result);
                            state.phase = Phase::Replanning;
                            self.save(run, state)?;
                        }
                    }
                }
                Phase::Replanning => {
                    if let Some(ending) = check_budgets(&self.settings, run, clock, cancel) {
                        return Ok(ending);
                    }
                    let decision = match self.decide(run, state, clock, cancel).await? {
                        Ok(d) => d,
                        Err(ending) => return Ok(ending),
                    };
                    match decision {
                        Decision::Finish(answer) => {
                            return Ok(Ending::finished(answer, "the plan reached the goal"));
                        }
                        Decision::Keep => {
                            if state.current + 1 >= state.steps.len() {
                                // The plan ran out; its last result is the answer if it finished.
                                return Ok(match state.results.last() {
                                    Some(r) if r.status == RunStatus::Finished => Ending::finished(
                                        r.result.clone(),
                                        "every step of the plan is done",
                                    ),
                                    _ => Ending::new(
                                        StopKind::Guard,
                                        "the plan ran out of steps without reaching the goal",
                                    ),
                                });
                            }
                            state.current += 1;
                        }
                        Decision::Revise(thought, steps) => {
                            if state.replans >= self.limits.max_replans {
                                return Ok(Ending::new(
                                    StopKind::Guard,
                                    format!(
                                        "the replanner asked for another revision, but the plan was already revised {} times (the limit)",
                                        state.replans
                                    ),
                                ));
                            }
                            state.replans += 1;
                            let done = state.current + 1;
                            state.steps.truncate(done);
                            state.steps.extend(steps);
                            state.current = done;
                            state.revisions.push(Revision {
                                number: state.revisions.len() as u32,
                                thought: thought.clone(),
                                done,
                                steps: state.steps.clone(),
                                at: now_rfc3339(),
                            });
                            self.emit(Event::PlanRevised {
                                revision: state.replans,
                                thought,
                                done,
                                steps: state.steps.clone(),
                            });
                        }
                    }
                    state.children += 1;
                    state.phase = Phase::Executing {
                        child: child_id(&run.id, state.children),
                    };
                    self.save(run, state)?;
                }
            }
        }
    }

    /// Ask the model once for a JSON answer; `Err` ends the run.
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &self,
        state: &mut PlanState,
        run: &RunRecord,
        kind: &str,
        messages: Vec<ChatMessage>,
        schema: Value,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Result<Result<String, Ending>, AgentError> {
        let request = CompletionRequest {
            messages,
            max_tokens: (self.settings.step_tokens as usize).max(PLANNER_TOKENS),
            temperature: self.settings.temperature,
            json_schema: Some(schema),
        };
        let completion = match ask_model(
            self.model.as_ref(),
            request,
            &|_| {},
            &self.settings,
            clock,
            cancel,
        )
        .await
        {
            Ok(c) => c,
            Err(ending) => return Ok(Err(ending)),
        };
        state.model_calls += 1;
        state.usage += completion.usage;
        state.calls.push(PlannerCall {
            kind: kind.to_string(),
            raw: sanitize::cap_head_tail(&completion.text, 4000),
            error: None,
            usage: completion.usage,
            at: now_rfc3339(),
        });
        self.save(run, state)?;
        Ok(Ok(completion.text))
    }

    fn tool_list(&self) -> Vec<Value> {
        self.tools
            .specs()
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "description": s.description,
                    "signature": crate::action::signature(&s.args_schema),
                })
            })
            .collect()
    }

    /// Ask the model (as `retry.kind`) until `parse` accepts its answer, at
    /// most [`ATTEMPTS`] times; each rejection is journaled, shown as a notice
    /// and told to the model so it can correct itself.
    #[allow(clippy::too_many_arguments)]
    async fn ask_until_valid<T>(
        &self,
        run: &mut RunRecord,
        state: &mut PlanState,
        retry: &Retry,
        mut messages: Vec<ChatMessage>,
        schema: Value,
        clock: &Clock,
        cancel: &CancellationToken,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Result<T, Ending>, AgentError> {
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            let text = match self
                .ask(
                    state,
                    run,
                    retry.kind,
                    messages.clone(),
                    schema.clone(),
                    clock,
                    cancel,
                )
                .await?
            {
                Ok(t) => t,
                Err(ending) => return Ok(Err(ending)),
            };
            self.tally(run, state)?;
            match parse(&text) {
                Ok(value) => return Ok(Ok(value)),
                Err(e) => {
                    if let Some(call) = state.calls.last_mut() {
                        call.error = Some(e.clone());
                    }
                    self.save(run, state)?;
                    self.emit(Event::Notice {
                        step: 0,
                        message: format!(
                            "the {}'s output was not a valid {}: {e}",
                            retry.role, retry.noun
                        ),
                    });
                    messages.push(ChatMessage::assistant(sanitize::cap_head_tail(&text, 2000)));
                    messages.push(ChatMessage::user(format!(
                        "That is not a valid {} ({e}). Answer with exactly one JSON object {}.",
                        retry.noun, retry.shape
                    )));
                    last_error = e;
                }
            }
        }
        Ok(Err(Ending::new(
            StopKind::Guard,
            format!(
                "the {} gave no valid {} in {ATTEMPTS} tries (last error: {last_error})",
                retry.role, retry.noun
            ),
        )))
    }

    async fn make_plan(
        &self,
        run: &mut RunRecord,
        state: &mut PlanState,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Result<Result<(String, Vec<PlanStep>), Ending>, AgentError> {
        let max = self.limits.max_plan_steps;
        let system = self.prompts.plan.render(
            "system",
            &json!({"tools": self.tool_list(), "max_steps": max}),
        )?;
        let goal = self.prompts.plan.render(
            "goal",
            &json!({"goal": run.goal, "feedback": state.feedback}),
        )?;
        let messages = vec![ChatMessage::system(system), ChatMessage::user(goal)];
        let retry = Retry {
            kind: "plan",
            role: "planner",
            noun: "plan",
            shape: "{\"thought\", \"steps\"}",
        };
        self.ask_until_valid(
            run,
            state,
            &retry,
            messages,
            plan_schema(max),
            clock,
            cancel,
            |t| parse_plan(t, max),
        )
        .await
    }

    fn done_list(state: &PlanState) -> Vec<Value> {
        state
            .results
            .iter()
            .map(|r| {
                json!({
                    "number": r.number,
                    "status": r.status.as_str(),
                    "result": sanitize::cap_head_tail(&r.result, RESULT_CHARS),
                })
            })
            .collect()
    }

    async fn decide(
        &self,
        run: &mut RunRecord,
        state: &mut PlanState,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Result<Result<Decision, Ending>, AgentError> {
        let max = self.limits.max_plan_steps;
        let replans_left = self.limits.max_replans.saturating_sub(state.replans);
        let system = self.prompts.replan.render("system", &json!({}))?;
        let review = self.prompts.replan.render(
            "review",
            &json!({
                "goal": run.goal,
                "plan": state.steps,
                "current": state.current,
                "done": Self::done_list(state),
                "remaining": state.steps.len().saturating_sub(state.current + 1),
                "replans_left": replans_left,
            }),
        )?;
        let messages = vec![ChatMessage::system(system), ChatMessage::user(review)];
        let retry = Retry {
            kind: "replan",
            role: "replanner",
            noun: "decision",
            shape: "with `thought` and `decision`",
        };
        let schema = replan_schema(replans_left > 0, max);
        self.ask_until_valid(run, state, &retry, messages, schema, clock, cancel, |t| {
            parse_decision(t, max)
        })
        .await
    }

    /// Carry out the current step in child run `child` (resuming it if it exists).
    async fn run_step(
        &self,
        run: &mut RunRecord,
        state: &mut PlanState,
        child: &str,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, AgentError> {
        let Some(step) = state.steps.get(state.current).cloned() else {
            return Ok(StepEnd::Stop(Ending::new(
                StopKind::Failed,
                "the plan state points past the end of the plan",
            )));
        };
        let number = state.current + 1;
        // Budgets left for this step, from the run's totals without it.
        let existing = self.journal.get(child)?;
        let (child_steps, child_usage, child_ms) = existing
            .as_ref()
            .map(|c| (c.steps, c.usage.total(), c.elapsed_ms))
            .unwrap_or((0, 0, 0));
        let other_steps = run.steps.saturating_sub(child_steps);
        let other_tokens = run.usage.total().saturating_sub(child_usage);
        if let Some(ending) = check_budgets(&self.settings, run, clock, cancel) {
            return Ok(StepEnd::Stop(ending));
        }
        let step_budget = self
            .limits
            .step_max_steps
            .min(self.settings.max_steps.saturating_sub(other_steps));
        let mut settings = self.settings.clone();
        settings.max_steps = step_budget;
        settings.max_tokens = self.settings.max_tokens.saturating_sub(other_tokens);
        // The child's clock counts its own earlier time; it may use that
        // plus what is left of the run's.
        settings.timeout = Duration::from_millis(child_ms) + clock.remaining();

        let (child_run, committed) = match existing {
            Some(c) => {
                let steps = self.journal.steps(&c.id)?;
                let ended = match c.status {
                    RunStatus::Finished | RunStatus::Stopped => true,
                    // Its own step budget, not the run's (which a resume may raise).
                    RunStatus::BudgetExhausted => c.steps >= self.limits.step_max_steps,
                    _ => false,
                };
                if ended {
                    // The step ended before the plan state could say so (a crash).
                    let result = step_result(number, &step, &c, &summarize(&steps));
                    return Ok(StepEnd::Done(result));
                }
                (c, steps)
            }
            None => {
                let done = Self::done_list(state);
                let goal = self.prompts.plan.render(
                    "step_goal",
                    &json!({
                        "goal": run.goal,
                        "plan": state.steps,
                        "current": state.current,
                        "step": step,
                        "done": done,
                    }),
                )?;
                let mut settings_record = run.settings.clone();
                settings_record.max_steps = step_budget;
                (
                    RunRecord::new(child.to_string(), goal, settings_record),
                    Vec::new(),
                )
            }
        };
        let mut child_record = child_run;
        child_record.settings.max_steps = step_budget;
        self.emit(Event::PlanStepStarted {
            number,
            of: state.steps.len(),
            description: step.description.clone(),
            success_criterion: step.success_criterion.clone(),
            run_id: child.to_string(),
        });

        // The step's own events go to the same watchers, without its start and end.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let outer = self.events.clone();
        let forward = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if !matches!(event, Event::RunStarted { .. } | Event::RunFinished { .. }) {
                    let _ = outer.send(event);
                }
            }
        });
        let mut react = ReactAgent::new(
            self.model.clone(),
            self.tools.clone(),
            &self.prompts.library,
            self.journal.clone(),
            tx,
            settings,
        )?;
        react.approver = self.approver.clone();
        react.memory = self
            .memory
            .clone()
            .map(|m| Arc::new(RecallOnly(m)) as Arc<dyn MemoryHook>);
        let result = react.drive(child_record, committed, cancel).await;
        drop(react);
        let _ = forward.await;
        let ended = result?;
        self.tally(run, state)?;
        let steps = self.journal.steps(&ended.id)?;
        let outcome = step_result(number, &step, &ended, &summarize(&steps));
        self.emit(Event::PlanStepFinished {
            number,
            status: ended.status,
            result: outcome.result.clone(),
            steps: ended.steps,
            usage: ended.usage,
        });
        let reason = ended.stop_reason.clone().unwrap_or_default();
        Ok(match ended.status {
            RunStatus::Finished => StepEnd::Done(outcome),
            RunStatus::Stopped => {
                self.emit(Event::Notice {
                    step: 0,
                    message: format!("step {number} got stuck ({reason}); replanning"),
                });
                StepEnd::Done(outcome)
            }
            RunStatus::BudgetExhausted => match check_budgets(&self.settings, run, clock, cancel) {
                Some(ending) => StepEnd::Stop(ending),
                None => {
                    self.emit(Event::Notice {
                        step: 0,
                        message: format!(
                            "step {number} used its {step_budget}-step budget; replanning"
                        ),
                    });
                    StepEnd::Done(outcome)
                }
            },
            RunStatus::Cancelled => StepEnd::Stop(Ending::cancelled()),
            RunStatus::Failed | RunStatus::Running => StepEnd::Stop(Ending::new(
                StopKind::Failed,
                format!("step {number} failed: {reason}"),
            )),
        })
    }
}

fn step_result(number: usize, step: &PlanStep, child: &RunRecord, summary: &str) -> StepResult {
    let result = match (&child.answer, child.status) {
        (Some(answer), RunStatus::Finished) => answer.clone(),
        _ => format!(
            "{}: {}. What was done:\n{}",
            child.status.as_str(),
            child.stop_reason.as_deref().unwrap_or("no reason recorded"),
            sanitize::cap_head_tail(summary, RESULT_CHARS)
        ),
    };
    StepResult {
        number,
        description: step.description.clone(),
        run_id: child.id.clone(),
        status: child.status,
        result,
        steps: child.steps,
        usage: child.usage,
    }
}

/// What a plan-and-execute run did, step by step.
pub fn summarize_plan(state: &PlanState) -> String {
    if state.results.is_empty() {
        return if state.steps.is_empty() {
            "No plan was made.".into()
        } else {
            "A plan was made; no step was carried out.".into()
        };
    }
    let mut lines: Vec<String> = state
        .results
        .iter()
        .map(|r| {
            format!(
                "{}. {} → {} in {} steps: {}",
                r.number,
                sanitize::one_line(&r.description, 120),
                r.status.as_str(),
                r.steps,
                sanitize::one_line(&r.result, 160)
            )
        })
        .collect();
    if state.replans > 0 {
        lines.push(format!("(the plan was revised {} times)", state.replans));
    }
    lines.join("\n")
}

/// The transcript text of a plan event (`None` for other events).
pub fn describe(event: &Event) -> Option<String> {
    let list = |steps: &[PlanStep], from: usize| {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mark = if i < from { " (done)" } else { "" };
                format!(
                    "  {}. {}{mark}\n     done when: {}",
                    i + 1,
                    sanitize::strip_terminal_escapes(&s.description),
                    sanitize::strip_terminal_escapes(&s.success_criterion)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    match event {
        Event::PlanCreated { steps, .. } => Some(format!("Plan:\n{}", list(steps, 0))),
        Event::PlanRevised {
            revision,
            thought,
            done,
            steps,
        } => Some(format!(
            "Plan revised ({revision}): {}\n{}",
            sanitize::strip_terminal_escapes(thought),
            list(steps, *done)
        )),
        Event::PlanStepStarted {
            number,
            of,
            description,
            run_id,
            ..
        } => Some(format!(
            "── step {number} of {of}: {} ({run_id})",
            sanitize::strip_terminal_escapes(description)
        )),
        Event::PlanStepFinished {
            number,
            status,
            result,
            steps,
            ..
        } => Some(format!(
            "── step {number} {} after {steps} steps: {}",
            status.as_str(),
            sanitize::observation(result, 300)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_strictly_or_from_a_wrapped_object_and_are_bounded() {
        let text = r#"Sure! {"thought": "t", "steps": [{"description": "a", "success_criterion": "b"}]} ok"#;
        let (thought, steps) = parse_plan(text, 3).unwrap();
        assert_eq!(thought, "t");
        assert_eq!(steps[0].description, "a");
        let too_many = json!({"thought": "", "steps": vec![json!({"description": "x", "success_criterion": "y"}); 4]});
        assert!(
            parse_plan(&too_many.to_string(), 3)
                .unwrap_err()
                .contains("at most 3")
        );
        assert!(parse_plan(r#"{"thought": "", "steps": []}"#, 3).is_err());
        assert!(parse_plan("no json here", 3).is_err());
    }

    #[test]
    fn decisions_need_their_fields() {
        assert!(matches!(
            parse_decision(r#"{"thought": "", "decision": "keep"}"#, 3),
            Ok(Decision::Keep)
        ));
        assert!(parse_decision(r#"{"thought": "", "decision": "finish"}"#, 3).is_err());
        assert!(parse_decision(r#"{"thought": "", "decision": "revise"}"#, 3).is_err());
        assert!(parse_decision(r#"{"thought": "", "decision": "maybe"}"#, 3).is_err());
        match parse_decision(
            r#"{"thought": "t", "decision": "finish", "answer": "42"}"#,
            3,
        ) {
            Ok(Decision::Finish(a)) => assert_eq!(a, "42"),
            _ => panic!("expected finish"),
        }
    }

    #[test]
    fn the_summary_has_one_short_line_per_step() {
        let mut state = PlanState::new();
        state.results.push(StepResult {
            number: 1,
            description: "read it".into(),
            run_id: "r.s1".into(),
            status: RunStatus::Finished,
            result: format!("{}\nsecond line", "x".repeat(500)),
            steps: 2,
            usage: Usage::default(),
        });
        state.replans = 1;
        let summary = summarize_plan(&state);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(lines.len(), 2, "{summary}");
        assert!(lines[0].starts_with("1. read it → finished in 2 steps: xxx"));
        assert!(lines[0].ends_with('…') && lines[0].chars().count() < 220);
        assert_eq!(lines[1], "(the plan was revised 1 times)");
    }

    #[test]
    fn the_replan_schema_drops_revise_when_no_revision_is_left() {
        let with = replan_schema(true, 4).to_string();
        let without = replan_schema(false, 4).to_string();
        assert!(with.contains("\"revise\""));
        assert!(!without.contains("\"revise\""));
    }

    #[test]
    fn the_embedded_prompts_render() {
        let dir = tempfile::tempdir().unwrap();
        let prompts = PlanPrompts::load(&PromptLibrary::new(dir.path())).unwrap();
        let system = prompts
            .plan
            .render("system", &json!({"tools": [{"name": "read_file", "description": "Read.", "signature": "path: string"}], "max_steps": 5}))
            .unwrap();
        assert!(system.contains("read_file(path: string)") && system.contains("at most 5"));
        let step = PlanStep {
            description: "read a.txt".into(),
            success_criterion: "its text is known".into(),
        };
        let goal = prompts
            .plan
            .render(
                "step_goal",
                &json!({"goal": "G", "plan": [step, step], "current": 1, "step": step,
                        "done": [{"number": 1, "status": "finished", "result": "R1"}]}),
            )
            .unwrap();
        assert!(goal.contains("Do only step 2 now: read a.txt"), "{goal}");
        assert!(goal.contains("step 1: R1"), "{goal}");
        let review = prompts
            .replan
            .render(
                "review",
                &json!({"goal": "G", "plan": [step], "current": 0, "remaining": 0,
                        "replans_left": 0,
                        "done": [{"number": 1, "status": "stopped", "result": "stuck"}]}),
            )
            .unwrap();
        assert!(review.contains("step 1 (stopped): stuck"), "{review}");
        assert!(review.contains("can no longer be revised"), "{review}");
    }

    #[test]
    fn the_owner_of_a_step_run_is_its_plan_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let plans = PlanStore::new(&store).unwrap();
        plans.mark("20260101-000000-aaaa").unwrap();
        assert_eq!(
            plans.owner("20260101-000000-aaaa.s3").unwrap().as_deref(),
            Some("20260101-000000-aaaa")
        );
        assert_eq!(
            plans.owner("20260101-000000-aaaa").unwrap().as_deref(),
            Some("20260101-000000-aaaa")
        );
        assert_eq!(plans.owner("20260101-000000-bbbb").unwrap(), None);
        assert_eq!(plans.owner("20260101-000000-bbbb.s1").unwrap(), None);
    }
}
