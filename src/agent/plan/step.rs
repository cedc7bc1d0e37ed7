//! Carrying out one plan step: a child run in the same journal, driven by
//! an ordinary [`ReactAgent`] with the step's share of the run's budgets,
//! resumed from its own last step when the plan run is resumed, and ended
//! as soon as the step's success criterion is met
//! ([`crate::agent::criterion`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::state::{PlanState, PlanStep, StepResult};
use super::{PlanAgent, RESULT_CHARS};
use crate::agent::criterion::StepCriterion;
use crate::agent::events::Event;
use crate::agent::hooks::{MemoryHook, Recalled};
use crate::agent::react::{AgentError, ReactAgent, summarize};
use crate::agent::run::{Clock, Ending, check_budgets};
use crate::agent::strategy::AgentParts;
use crate::memory::{RunRecord, RunStatus, StepRecord, StopKind};
use crate::model::ModelBackend;
use crate::sanitize;

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

/// What carrying out one step led to.
pub(super) enum StepEnd {
    /// The step ended; the replanner goes next.
    Done(StepResult),
    /// The run ends (cancelled, failed, out of the run's budget).
    Stop(Ending),
}

impl PlanAgent {
    /// Carry out the current step in child run `child` (resuming it if it exists).
    pub(super) async fn run_step(
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
        let existing = self.parts.journal.get(child)?;
        let (child_steps, child_usage, child_ms) = existing
            .as_ref()
            .map(|c| (c.steps, c.usage.total(), c.elapsed_ms))
            .unwrap_or((0, 0, 0));
        let other_steps = run.steps.saturating_sub(child_steps);
        let other_tokens = run.usage.total().saturating_sub(child_usage);
        if let Some(ending) = check_budgets(&self.parts.settings, run, clock, cancel) {
            return Ok(StepEnd::Stop(ending));
        }
        let step_budget = self
            .limits
            .step_max_steps
            .min(self.parts.settings.max_steps.saturating_sub(other_steps));
        let mut settings = self.parts.settings.clone();
        settings.max_steps = step_budget;
        settings.max_tokens = self.parts.settings.max_tokens.saturating_sub(other_tokens);
        // The child's clock counts its own earlier time; it may use that
        // plus what is left of the run's.
        settings.timeout = Duration::from_millis(child_ms) + clock.remaining();
        // A step's goal quotes the whole goal, whose outputs may be a later
        // step's job: steps are not verified, the plan's end is.
        settings.workspace = None;

        let (child_run, committed) = match existing {
            Some(c) => {
                let steps = self.parts.journal.steps(&c.id)?;
                let ended = match c.status {
                    RunStatus::Finished | RunStatus::Stopped | RunStatus::Unverified => true,
                    // Its own step budget, not the run's (which a resume may raise).
                    RunStatus::BudgetExhausted => c.steps >= self.limits.step_max_steps,
                    _ => false,
                };
                if ended {
                    // The step ended before the plan state could say so (a crash).
                    run.tainted = c.tainted.clone();
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
                let mut record = RunRecord::new(child.to_string(), goal, settings_record);
                // A step of a follow-up ("and twice that?") needs the
                // conversation as much as the planner did.
                record.earlier = run.earlier.clone();
                // What the plan's earlier steps read is still in the words
                // this step is given (case 39).
                record.tainted = run.tainted.clone();
                (record, Vec::new())
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
        let outer = self.parts.events.clone();
        let forward = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if !matches!(event, Event::RunStarted { .. } | Event::RunFinished { .. }) {
                    let _ = outer.send(event);
                }
            }
        });
        // The step is a ReAct run over the plan's own parts: its events go
        // through `tx`, its budgets are what is left, and its memory only
        // recalls (the plan reflects once, at its end).
        let mut react = ReactAgent::new(
            AgentParts {
                events: tx,
                settings,
                memory: self
                    .parts
                    .memory
                    .clone()
                    .map(|m| Arc::new(RecallOnly(m)) as Arc<dyn MemoryHook>),
                ..self.parts.with_own_account()
            },
            &self.prompts.library,
        )?;
        // The step ends as soon as its "done when" is met.
        react.criterion = Some(StepCriterion::new(
            &step.description,
            step.success_criterion.clone(),
            self.parts.settings.workspace.clone(),
        ));
        let result = react.drive(child_record, committed, cancel).await;
        drop(react);
        let _ = forward.await;
        let ended = result?;
        // The step's reads (or a person's approval in it) carry on.
        run.tainted = ended.tainted.clone();
        self.tally(run, state)?;
        let steps = self.parts.journal.steps(&ended.id)?;
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
            RunStatus::Stopped | RunStatus::Unverified => {
                self.emit(Event::Notice {
                    step: 0,
                    message: format!("step {number} got stuck ({reason}); replanning"),
                });
                StepEnd::Done(outcome)
            }
            RunStatus::BudgetExhausted => {
                match check_budgets(&self.parts.settings, run, clock, cancel) {
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
                }
            }
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
        criterion_met: child.status == RunStatus::Finished
            && child.stop_reason.as_deref() == Some(crate::agent::criterion::MET),
    }
}
