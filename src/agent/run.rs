//! The lifecycle every strategy shares: starting a run (status, journal,
//! `RunStarted`), its clock and budgets (steps, tokens, wall time, Ctrl-C),
//! the model call with its deadline and cancellation, and the end of a run
//! (the record, the reflection into long-term memory, `RunFinished`).
//!
//! A strategy (ReAct in [`super::react`], plan-and-execute in
//! [`super::plan`]) supplies only its own step logic and ends with an
//! [`Ending`], whose [`StopKind`] is what eval, the exit code and the
//! transcript read: nobody parses the sentence in `stop_reason`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::events::Event;
use super::hooks::MemoryHook;
use super::react::{AgentError, AgentSettings};
use crate::memory::journal::now_rfc3339;
use crate::memory::{RunJournal, RunRecord, RunStatus, StepRecord, StopKind};
use crate::model::roles::CostAccount;
use crate::model::{Completion, CompletionRequest, ModelBackend, ModelError, TokenSink};
use crate::tools::ToolRegistry;

/// How a run ended (before it is written down).
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub(crate) stop: StopKind,
    pub(crate) reason: String,
    pub(crate) answer: Option<String>,
}

impl Ending {
    pub(crate) fn new(stop: StopKind, reason: impl Into<String>) -> Self {
        Self {
            stop,
            reason: reason.into(),
            answer: None,
        }
    }

    /// The user pressed Ctrl-C (or the caller cancelled).
    pub(crate) fn cancelled() -> Self {
        Self::new(StopKind::Cancelled, "interrupted by the user")
    }

    /// The goal was reached, with the agent's `answer`.
    pub(crate) fn finished(answer: String, reason: impl Into<String>) -> Self {
        Self {
            answer: Some(answer),
            ..Self::new(StopKind::Finished, reason)
        }
    }

    pub(crate) fn status(&self) -> RunStatus {
        self.stop.status()
    }
}

/// A run's clock: wall time spent by earlier processes plus this one's,
/// against the run's time budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    started: Instant,
    before_ms: u64,
    budget_ms: u64,
}

impl Clock {
    pub(crate) fn new(run: &RunRecord, settings: &AgentSettings) -> Self {
        Self {
            started: Instant::now(),
            before_ms: run.elapsed_ms,
            budget_ms: settings.timeout.as_millis() as u64,
        }
    }

    /// Milliseconds spent on the run, over every process.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.before_ms + self.started.elapsed().as_millis() as u64
    }

    /// Time left in the budget (zero when it is used).
    pub(crate) fn remaining(&self) -> Duration {
        Duration::from_millis(self.budget_ms.saturating_sub(self.elapsed_ms()))
    }
}

/// The ending for a used budget (steps, then tokens, then time) or a
/// cancellation, if any; checked before each model call.
pub(crate) fn check_budgets(
    settings: &AgentSettings,
    run: &RunRecord,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Option<Ending> {
    if run.steps >= settings.max_steps {
        return Some(Ending::new(
            StopKind::StepBudget,
            format!(
                "step budget used: {} of {} steps",
                run.steps, settings.max_steps
            ),
        ));
    }
    if run.usage.total() >= settings.max_tokens {
        return Some(Ending::new(
            StopKind::TokenBudget,
            format!(
                "token budget used: {} of {} tokens",
                run.usage.total(),
                settings.max_tokens
            ),
        ));
    }
    let elapsed = clock.elapsed_ms();
    if elapsed >= clock.budget_ms {
        return Some(Ending::new(
            StopKind::TimeBudget,
            format!(
                "time budget used: {} of {} s",
                elapsed / 1000,
                clock.budget_ms / 1000
            ),
        ));
    }
    if cancel.is_cancelled() {
        return Some(Ending::cancelled());
    }
    None
}

/// Ask the model within the run's time and the per-call limit. A call cut
/// off by the run's budget ends the run as a time budget; one cut off by
/// the per-call limit, or an engine error, as a failure.
pub(crate) async fn ask_model(
    model: &dyn ModelBackend,
    request: CompletionRequest,
    sink: TokenSink<'_>,
    settings: &AgentSettings,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<Completion, Ending> {
    // A model opened on first use is pulled and loaded outside the call's
    // limit (within the run's time budget all the same).
    let ready = tokio::time::timeout(clock.remaining(), model.ready(cancel)).await;
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(ModelError::Cancelled)) => return Err(Ending::cancelled()),
        Ok(Err(e)) => {
            return Err(Ending::new(
                StopKind::Failed,
                format!("model error: {} ({e})", model.name()),
            ));
        }
        Err(_) => {
            return Err(Ending::new(
                StopKind::TimeBudget,
                format!("time budget used: {} s", clock.budget_ms / 1000),
            ));
        }
    }
    let limit = settings.model_timeout.min(clock.remaining());
    match tokio::time::timeout(limit, model.complete(request, sink, cancel)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(ModelError::Cancelled)) => Err(Ending::cancelled()),
        Ok(Err(e)) => Err(Ending::new(StopKind::Failed, format!("model error: {e}"))),
        Err(_) if limit < settings.model_timeout => Err(Ending::new(
            StopKind::TimeBudget,
            format!("time budget used: {} s", clock.budget_ms / 1000),
        )),
        Err(_) => Err(Ending::new(
            StopKind::Failed,
            format!("model error: {}", ModelError::Timeout(limit.as_secs())),
        )),
    }
}

/// What starting and ending a run needs, borrowed from the strategy.
pub(crate) struct Lifecycle<'a> {
    pub(crate) model: &'a Arc<dyn ModelBackend>,
    /// Writes the end-of-run reflection (the `fast` role).
    pub(crate) reflector: &'a Arc<dyn ModelBackend>,
    /// What the run's model calls cost so far, in this process.
    pub(crate) account: &'a CostAccount,
    pub(crate) tools: &'a ToolRegistry,
    pub(crate) journal: &'a RunJournal,
    pub(crate) events: &'a UnboundedSender<Event>,
    pub(crate) memory: Option<&'a Arc<dyn MemoryHook>>,
    pub(crate) settings: &'a AgentSettings,
}

impl Lifecycle<'_> {
    /// Mark `run` running, record it and announce it; returns its clock.
    pub(crate) fn start(
        &self,
        run: &mut RunRecord,
        resumed_after: Option<u32>,
    ) -> Result<Clock, AgentError> {
        let clock = Clock::new(run, self.settings);
        // What earlier processes spent is the account's starting point.
        if self.account.costs().is_empty() {
            self.account.add(&run.cost);
        }
        run.status = RunStatus::Running;
        run.stop_reason = None;
        run.stop = None;
        run.updated_at = now_rfc3339();
        self.journal.put_run(run)?;
        let _ = self.events.send(Event::RunStarted {
            run_id: run.id.clone(),
            goal: run.goal.clone(),
            model: self.model.name().to_string(),
            tools: self.tools.names().iter().map(|s| s.to_string()).collect(),
            resumed_after,
            recipe: run.settings.recipe.as_ref().map(|r| r.label()),
        });
        Ok(clock)
    }

    /// End `run` with the strategy's `outcome`: write down how it ended,
    /// then let the strategy `announce` it (save its own state, reflect,
    /// `RunFinished`). An error is recorded as a failure where the store
    /// still takes it, announced, and returned.
    pub(crate) async fn conclude(
        &self,
        run: &mut RunRecord,
        outcome: Result<Ending, AgentError>,
        clock: &Clock,
        announce: impl AsyncFnOnce(&RunRecord, Ending) -> Result<(), AgentError>,
    ) -> Result<(), AgentError> {
        match outcome {
            Ok(ending) => {
                self.record_end(run, &ending, clock)?;
                announce(run, ending).await
            }
            Err(e) => {
                // Try to record the failure; the store may be what failed.
                let ending = Ending::new(StopKind::Failed, e.to_string());
                if self.record_end(run, &ending, clock).is_ok() {
                    let _ = announce(run, ending).await;
                }
                Err(e)
            }
        }
    }

    /// Write down how `run` ended (a strategy may save its own state after
    /// this, before [`Lifecycle::announce_end`]).
    pub(crate) fn record_end(
        &self,
        run: &mut RunRecord,
        ending: &Ending,
        clock: &Clock,
    ) -> Result<(), AgentError> {
        run.status = ending.status();
        run.stop = Some(ending.stop);
        run.stop_reason = Some(ending.reason.clone());
        run.answer = ending.answer.clone();
        run.elapsed_ms = clock.elapsed_ms();
        run.cost = self.account.costs();
        run.updated_at = now_rfc3339();
        self.journal.put_run(run)?;
        Ok(())
    }

    /// Reflect on the run's `steps` into long-term memory and announce the
    /// end, with `summary` saying what was done.
    pub(crate) async fn announce_end(
        &self,
        run: &RunRecord,
        ending: Ending,
        steps: &[StepRecord],
        summary: String,
    ) {
        if let Some(memory) = self.memory {
            memory.run_ended(run, steps, self.reflector.as_ref()).await;
        }
        // The reflection's calls count too.
        let cost = self.account.costs();
        if cost != run.cost {
            let mut updated = run.clone();
            updated.cost = cost.clone();
            if let Err(e) = self.journal.put_run(&updated) {
                tracing::warn!("cannot record the cost of run {}: {e}", run.id);
            }
        }
        let _ = self.events.send(Event::RunFinished {
            run_id: run.id.clone(),
            status: run.status,
            answer: run.answer.clone(),
            reason: ending.reason,
            steps: run.steps,
            usage: run.usage,
            elapsed_ms: run.elapsed_ms,
            summary,
            cost,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::journal::RunSettings;

    fn settings() -> AgentSettings {
        AgentSettings {
            max_steps: 3,
            max_tokens: 100,
            step_tokens: 10,
            timeout: Duration::from_secs(60),
            model_timeout: Duration::from_secs(5),
            temperature: 0.0,
            samples: 1,
            sample_temperature: 0.0,
            past_examples: 0,
            repeat_resamples: 0,
            observation_chars: 100,
            context_tokens: 1000,
            workspace: None,
            instructions: None,
        }
    }

    fn run() -> RunRecord {
        RunRecord::new(
            "r".into(),
            "goal".into(),
            RunSettings {
                model: "m".into(),
                endpoint: None,
                max_steps: 3,
                max_tokens: 100,
                step_tokens: 10,
                timeout_secs: 60,
                temperature: 0.0,
                workspace: String::new(),
                interactive: false,
                ..Default::default()
            },
        )
    }

    #[test]
    fn each_budget_ends_the_run_with_its_own_kind() {
        let s = settings();
        let cancel = CancellationToken::new();
        let mut r = run();
        let clock = Clock::new(&r, &s);
        assert!(check_budgets(&s, &r, &clock, &cancel).is_none());

        r.steps = 3;
        let e = check_budgets(&s, &r, &clock, &cancel).unwrap();
        assert_eq!(
            (e.stop, e.status()),
            (StopKind::StepBudget, RunStatus::BudgetExhausted)
        );

        r.steps = 0;
        r.usage.prompt_tokens = 100;
        assert_eq!(
            check_budgets(&s, &r, &clock, &cancel).unwrap().stop,
            StopKind::TokenBudget
        );

        r.usage.prompt_tokens = 0;
        r.elapsed_ms = 60_000; // spent by an earlier process
        let clock = Clock::new(&r, &s);
        let e = check_budgets(&s, &r, &clock, &cancel).unwrap();
        assert_eq!(e.stop, StopKind::TimeBudget);
        assert!(
            e.reason.starts_with("time budget used: 60 of 60 s"),
            "{}",
            e.reason
        );
        assert_eq!(clock.remaining(), Duration::ZERO);

        r.elapsed_ms = 0;
        let clock = Clock::new(&r, &s);
        cancel.cancel();
        assert_eq!(
            check_budgets(&s, &r, &clock, &cancel).unwrap().stop,
            StopKind::Cancelled
        );
    }

    #[test]
    fn a_model_call_cut_off_by_the_run_budget_is_a_time_budget_stop() {
        struct Slow;
        #[async_trait::async_trait]
        impl ModelBackend for Slow {
            fn name(&self) -> &str {
                "slow"
            }
            async fn complete(
                &self,
                _: CompletionRequest,
                _: TokenSink<'_>,
                _: &CancellationToken,
            ) -> Result<Completion, ModelError> {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(ModelError::Cancelled)
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut s = settings();
        let request = CompletionRequest {
            messages: Vec::new(),
            max_tokens: 1,
            temperature: 0.0,
            json_schema: None,
        };
        let cancel = CancellationToken::new();
        // The run has 50 ms left, the call may take 5 s: the run's budget cuts it.
        let mut r = run();
        r.elapsed_ms = 60_000 - 50;
        let clock = Clock::new(&r, &s);
        let e = rt
            .block_on(ask_model(
                &Slow,
                request.clone(),
                &|_| {},
                &s,
                &clock,
                &cancel,
            ))
            .unwrap_err();
        assert_eq!(e.stop, StopKind::TimeBudget);
        // The per-call limit is the shorter: a model failure, not a budget.
        s.model_timeout = Duration::from_millis(50);
        r.elapsed_ms = 0;
        let clock = Clock::new(&r, &s);
        let e = rt
            .block_on(ask_model(&Slow, request, &|_| {}, &s, &clock, &cancel))
            .unwrap_err();
        assert_eq!(e.stop, StopKind::Failed);
        assert!(e.reason.starts_with("model error"), "{}", e.reason);
    }
}
