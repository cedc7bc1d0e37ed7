//! Plan-and-execute: a planner turns the goal into a short ordered plan
//! (JSON, constrained to a schema: each step a description and a success
//! criterion), each step is carried out by a bounded ReAct loop with the same
//! tools, and after each step a replanner keeps the plan, revises the steps
//! that remain, or finishes with the answer. Revisions are bounded.
//!
//! Decisions:
//! - The replanner reviews a step that ended by its model's word, got
//!   stuck or ran out of budget, and the plan's last step. A step that
//!   ended because its "done when" was checked and met
//!   ([`crate::agent::criterion`]) goes straight on to the next one: after
//!   such a step a replanner call (seconds of a CPU's time, on a plan whose
//!   runs already hit their time limits) could only keep the plan, finish
//!   before the goal's outputs exist (overruled) or redo the work.
//! - The plan ends as soon as the goal's outputs are all there and pass
//!   every check, including what the goal states its code returns, unless
//!   the goal asks for more after them; the end of a plan is checked the
//!   same way, and what is missing becomes one more step while revisions
//!   remain.
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
//!
//! Layout: [`state`] holds the plan's data and its store, [`schema`] what
//! the planner may answer, [`step`] the child run of one step; this file is
//! the strategy itself (plan, review, run a step, replan, end).

mod schema;
mod state;
mod step;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::events::Event;
use super::react::AgentError;
use super::run::{Clock, Ending, ask_model, check_budgets};
use super::strategy::AgentParts;
use crate::memory::journal::now_rfc3339;
use crate::memory::{RunRecord, RunStatus, StepRecord, StopKind};
use crate::model::roles::ModelRole;
use crate::model::{ChatMessage, CompletionRequest};
use crate::prompt::{Prompt, PromptError, PromptLibrary};
use crate::sanitize;

use schema::{Decision, parse_decision, parse_plan};
use step::StepEnd;

pub use schema::{plan_schema, replan_schema};
pub use state::{
    PLANS_TREE, Phase, PlanState, PlanStep, PlanStore, PlannerCall, Revision, StepResult, child_id,
    summarize_plan,
};

/// Tokens a planner answer may take: room for the longest plan the schema allows.
const PLANNER_TOKENS: usize = 768;
/// Longest step result shown to the planner and the next steps.
const RESULT_CHARS: usize = 800;
/// Attempts at a valid plan or decision before the run stops.
const ATTEMPTS: u32 = 3;

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
    /// What every strategy runs with; the budgets are the whole run's
    /// (every step's ReAct loop counts against them).
    pub parts: AgentParts,
    pub prompts: PlanPrompts,
    pub plans: PlanStore,
    pub limits: PlanLimits,
    /// Shown each plan before it runs; `None` runs it at once.
    pub reviewer: Option<Arc<dyn PlanReviewer>>,
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

impl PlanAgent {
    fn emit(&self, event: Event) {
        let _ = self.parts.events.send(event);
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
        let life = self.parts.lifecycle();
        let resumed_after = resumed.then_some(run.steps);
        let clock = life.start(&mut run, resumed_after)?;
        self.save(&run, &state)?;
        let outcome = self.run_plan(&mut run, &mut state, &clock, cancel).await;
        life.conclude(&mut run, outcome, &clock, async |run, ending| {
            // The plan state is saved with the end; the end is announced
            // even when that save fails (the error is still returned).
            let saved = self.save(run, &state);
            self.announce(run, &state, ending).await;
            saved
        })
        .await?;
        Ok(run)
    }

    /// A finished plan checked against what the goal asked for
    /// (agent::verify, then what the goal states its code returns:
    /// agent::stated): with an output missing it ends `unverified`. The
    /// plan's steps are not verified one by one (their goals quote the
    /// whole goal), so there is no second chance here.
    async fn verified(
        &self,
        run: &RunRecord,
        state: &PlanState,
        ending: Ending,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Ending {
        if ending.stop != StopKind::Finished {
            return ending;
        }
        let mut unmet = self.unmet(run, state, ending.answer.as_deref());
        if unmet.is_empty() {
            unmet = self.stated_unmet(run, clock, cancel).await;
        }
        if unmet.is_empty() {
            return ending;
        }
        Ending {
            answer: ending.answer,
            ..Ending::new(
                StopKind::Unverified,
                format!("the plan finished, but {}", unmet.join("; ")),
            )
        }
    }

    /// What the goal states its code returns that does not hold
    /// (agent::stated), run as the plan run, which has read what its steps
    /// read.
    async fn stated_unmet(
        &self,
        run: &RunRecord,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Vec<String> {
        let taint = crate::tools::Taint::new(run.tainted.clone());
        self.parts
            .stated_unmet(run, 0, &taint, cancel, clock.remaining())
            .await
    }

    /// [`Self::unmet`], then, when that is empty, [`Self::stated_unmet`].
    async fn all_unmet(
        &self,
        run: &RunRecord,
        state: &PlanState,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Vec<String> {
        let unmet = self.unmet(run, state, None);
        if !unmet.is_empty() {
            return unmet;
        }
        self.stated_unmet(run, clock, cancel).await
    }

    /// What is not yet true of what the goal asks for (agent::verify),
    /// with every step of the plan as the evidence.
    fn unmet(&self, run: &RunRecord, state: &PlanState, answer: Option<&str>) -> Vec<String> {
        let steps = self.child_steps(run, state);
        let steps: Vec<&StepRecord> = steps.iter().collect();
        self.parts.unmet(&run.goal, &steps, answer)
    }

    /// Whether the goal names outputs and every check of them passes with
    /// the plan's steps as the evidence (what the goal states its code
    /// returns is run apart: [`Self::stated_unmet`]).
    fn outputs_pass(&self, run: &RunRecord, state: &PlanState) -> bool {
        self.parts.settings.workspace.is_some()
            && !super::verify::named_outputs(&run.goal).is_empty()
            && self.unmet(run, state, None).is_empty()
    }

    /// Every step of the plan's step runs, in order.
    fn child_steps(&self, run: &RunRecord, state: &PlanState) -> Vec<StepRecord> {
        state
            .child_ids(&run.id)
            .iter()
            .flat_map(|child| self.parts.journal.steps(child).unwrap_or_default())
            .collect()
    }

    /// One reflection for the whole run, over every step's actions, and
    /// the end announced with the plan as the list of what was done.
    async fn announce(&self, run: &RunRecord, state: &PlanState, ending: Ending) {
        let steps = self.child_steps(run, state);
        self.parts
            .lifecycle()
            .announce_end(run, ending, &steps, summarize_plan(state))
            .await;
    }

    /// Recompute the parent's totals from the plan state and the child runs.
    fn tally(&self, run: &mut RunRecord, state: &PlanState) -> Result<(), AgentError> {
        let mut steps = 0;
        let mut usage = state.usage;
        for child in state.child_ids(&run.id) {
            if let Some(c) = self.parts.journal.get(&child)? {
                steps += c.steps;
                usage += c.usage;
            }
        }
        run.steps = steps;
        run.usage = usage;
        run.updated_at = now_rfc3339();
        self.parts.journal.put_run(run)?;
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
                    if let Some(ending) = check_budgets(&self.parts.settings, run, clock, cancel) {
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
                            let met = result.criterion_met;
                            let answer = result.result.clone();
                            state.results.push(result);
                            let last = state.current + 1 >= state.steps.len();
                            // Knowing when it is done: the goal's outputs
                            // all there and passing every check (its stated
                            // results run too) leave the plan's other steps
                            // nothing to do
                            // (measured: WriteFile's plan wrote output.txt
                            // in step 1, wrote it again in step 2 and ran
                            // out of time in step 3). Not when the goal asks
                            // for more after them ("then tell me what it
                            // holds"): the replanner words that answer.
                            if !super::verify::asks_for_more_after_outputs(&run.goal)
                                && self.outputs_pass(run, state)
                                && self.stated_unmet(run, clock, cancel).await.is_empty()
                            {
                                let outputs = super::verify::named_outputs(&run.goal);
                                let answer = format!(
                                    "{} {} as the goal asks. {answer}",
                                    outputs.join(", "),
                                    if outputs.len() == 1 {
                                        "exists"
                                    } else {
                                        "exist"
                                    },
                                );
                                return Ok(Ending::finished(
                                    answer,
                                    "the goal's outputs are done and pass their checks",
                                ));
                            }
                            // A step whose "done when" was checked and met
                            // (agent::criterion) is on plan: the next step
                            // goes on without a replanner call, which costs
                            // seconds of a CPU's time and, after a success,
                            // could only keep the plan, finish too early
                            // (overruled below) or redo the work. A step
                            // that ended any other way, or the last one, is
                            // reviewed.
                            if met && !last {
                                state.current += 1;
                                state.children += 1;
                                state.phase = Phase::Executing {
                                    child: child_id(&run.id, state.children),
                                };
                            } else {
                                state.phase = Phase::Replanning;
                            }
                            self.save(run, state)?;
                        }
                    }
                }
                Phase::Replanning => {
                    if let Some(ending) = check_budgets(&self.parts.settings, run, clock, cancel) {
                        return Ok(ending);
                    }
                    let decision = match self.decide(run, state, clock, cancel).await? {
                        Ok(d) => d,
                        Err(ending) => return Ok(ending),
                    };
                    // A finish while the goal's outputs are missing and
                    // steps remain would drop the unfinished work: go on.
                    let decision = match decision {
                        Decision::Finish(_) if state.current + 1 < state.steps.len() => {
                            let unmet = self.all_unmet(run, state, clock, cancel).await;
                            if unmet.is_empty() {
                                decision
                            } else {
                                self.emit(Event::Notice {
                                    step: 0,
                                    message: format!(
                                        "the replanner would finish, but {}; going on with step {}",
                                        unmet.join("; "),
                                        state.current + 2
                                    ),
                                });
                                Decision::Keep
                            }
                        }
                        // No step left to go on with (a finish, or a plan
                        // that ran out): the missing work becomes one more
                        // step, while revisions remain.
                        Decision::Finish(_) | Decision::Keep
                            if state.replans < self.limits.max_replans
                                && (matches!(decision, Decision::Finish(_))
                                    || state.current + 1 >= state.steps.len()) =>
                        {
                            let unmet = self.all_unmet(run, state, clock, cancel).await;
                            if unmet.is_empty() {
                                decision
                            } else {
                                let outputs = super::verify::named_outputs(&run.goal);
                                self.emit(Event::Notice {
                                    step: 0,
                                    message: format!(
                                        "the replanner would finish, but {}; adding a step for it",
                                        unmet.join("; ")
                                    ),
                                });
                                Decision::Revise(
                                    format!("not done yet: {}", unmet.join("; ")),
                                    vec![PlanStep {
                                        description: format!(
                                            "Finish what the goal still needs: {}",
                                            unmet.join("; ")
                                        ),
                                        success_criterion: if outputs.is_empty() {
                                            "what the goal asks for is done".into()
                                        } else {
                                            format!(
                                                "{} hold what the goal asks",
                                                outputs.join(", ")
                                            )
                                        },
                                    }],
                                )
                            }
                        }
                        other => other,
                    };
                    match decision {
                        Decision::Finish(answer) => {
                            let done = Ending::finished(answer, "the plan reached the goal");
                            return Ok(self.verified(run, state, done, clock, cancel).await);
                        }
                        Decision::Keep => {
                            if state.current + 1 >= state.steps.len() {
                                // The plan ran out; its last result is the answer if it finished.
                                return Ok(match state.results.last() {
                                    Some(r) if r.status == RunStatus::Finished => {
                                        let done = Ending::finished(
                                            r.result.clone(),
                                            "every step of the plan is done",
                                        );
                                        self.verified(run, state, done, clock, cancel).await
                                    }
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
            max_tokens: (self.parts.settings.step_tokens as usize).max(PLANNER_TOKENS),
            temperature: self.parts.settings.temperature,
            json_schema: Some(schema),
        };
        // Planning and replanning are the smart model's (model roles).
        let completion = match ask_model(
            self.parts.roles.get(ModelRole::Smart).as_ref(),
            request,
            &|_| {},
            &self.parts.settings,
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
        self.parts
            .tools
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
        let messages = self.messages(run, system, goal);
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

    /// System, the conversation the run continues (a quarter of the
    /// context at most), then `user`.
    fn messages(&self, run: &RunRecord, system: String, user: String) -> Vec<ChatMessage> {
        let context = self.parts.context_tokens();
        let earlier = self.parts.earlier(run, context);
        let mut messages = vec![ChatMessage::system(system)];
        messages.extend(earlier.messages);
        messages.push(ChatMessage::user(user));
        messages
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
                "unmet": self.unmet(run, state, None),
                "replans_left": replans_left,
            }),
        )?;
        let messages = self.messages(run, system, review);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
