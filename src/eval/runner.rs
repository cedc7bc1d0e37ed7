//! Running challenges: a fresh temporary workspace per attempt (with the
//! challenge's `artifacts_in/`), the tools bound to it (built-ins and every
//! plugin that loads), one run of the chosen strategy within the challenge's
//! time limit, then `custom_python/` copied in and the workspace graded.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use super::challenge::{Challenge, EvalKind};
use super::grade::{PythonGrader, grade};
use crate::agent::plan::PlanStore;
use crate::agent::{AgentParts, AgentSettings, PlanParts, Strategy};
use crate::confined::{Confined, copy_tree_into};
use crate::memory::journal::{RunSettings, new_run_id};
use crate::memory::{RunJournal, RunRecord, RunStatus, StopKind};
use crate::model::ModelBackend;
use crate::model::roles::RoleModels;
use crate::paths::Dirs;
use crate::plugin::PluginHost;
use crate::plugin::policy::PluginPolicy;
use crate::prompt::PromptLibrary;
use crate::tools::ToolRegistry;
use crate::tools::builtin::Finish;

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub strategy: Strategy,
    /// Attempts per challenge.
    pub repeat: u32,
    /// Attempts run at once (sharing the one model).
    pub parallel: usize,
    /// Run only challenges whose name contains one of these, or with one as a category.
    pub filters: Vec<String>,
    /// Time per attempt, overriding each challenge's `cutoff`.
    pub timeout: Option<Duration>,
    /// Time per attempt when neither `timeout` nor a `cutoff` is given.
    pub default_timeout: Duration,
    /// Time limit of each grading script.
    pub grade_timeout: Duration,
    /// Grade Python with the host's interpreter instead of the sandbox
    /// (`--unsafe-host-grading`; see [`super::grade`]).
    pub unsafe_host_grading: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::React,
            repeat: 1,
            parallel: 1,
            filters: Vec::new(),
            timeout: None,
            default_timeout: Duration::from_secs(300),
            grade_timeout: Duration::from_secs(60),
            unsafe_host_grading: false,
        }
    }
}

/// Called with each attempt's outcome as it is graded (for progress lines).
pub type ProgressFn = Box<dyn Fn(&Outcome) + Send + Sync>;

/// Runs challenges with one shared model.
pub struct EvalRunner {
    /// The models by role (`--smart`, `--fast`); every attempt's calls are
    /// counted in its own run's account.
    pub roles: RoleModels,
    pub dirs: Dirs,
    /// The user's plugin policy (e.g. `allow_local` for a fixture server).
    pub plugins: PluginPolicy,
    pub prompts: PromptLibrary,
    pub journal: RunJournal,
    pub plans: PlanStore,
    /// The settings recorded with each run (model, budgets); the workspace
    /// and time limit are set per attempt.
    pub settings: RunSettings,
    /// The agent's limits; `timeout` is set per attempt.
    pub agent: AgentSettings,
    pub progress: Option<ProgressFn>,
    /// Grades `llm` challenges; without one they are skipped.
    pub judge: Option<Arc<dyn ModelBackend>>,
}

impl EvalRunner {
    /// The challenges `options.filters` selects (all when there are none).
    pub fn select<'a>(challenges: &'a [Challenge], options: &EvalOptions) -> Vec<&'a Challenge> {
        challenges
            .iter()
            .filter(|c| options.filters.is_empty() || options.filters.iter().any(|f| c.matches(f)))
            .collect()
    }

    /// Run every selected challenge `repeat` times; outcomes in suite order.
    pub async fn run(
        &self,
        challenges: &[Challenge],
        options: &EvalOptions,
        cancel: &CancellationToken,
    ) -> Vec<Outcome> {
        let selected = Self::select(challenges, options);
        let jobs: Vec<(usize, &Challenge, u32)> = selected
            .iter()
            .enumerate()
            .flat_map(|(i, c)| (1..=options.repeat.max(1)).map(move |a| (i, *c, a)))
            .collect();
        let mut done: Vec<(usize, u32, Outcome)> = futures::stream::iter(jobs)
            .map(|(i, c, attempt)| async move {
                let outcome = self.attempt(c, attempt, options, cancel).await;
                if let Some(progress) = &self.progress {
                    progress(&outcome);
                }
                (i, attempt, outcome)
            })
            .buffer_unordered(options.parallel.max(1))
            .collect()
            .await;
        done.sort_by_key(|(i, a, _)| (*i, *a));
        done.into_iter().map(|(_, _, o)| o).collect()
    }

    fn skipped(challenge: &Challenge, attempt: u32, why: String) -> Outcome {
        Outcome {
            challenge: challenge.name.clone(),
            category: challenge.category.clone(),
            attempt,
            result: "skipped".into(),
            steps: 0,
            tokens: 0,
            seconds: 0.0,
            status: String::new(),
            stop_reason: why,
            timed_out: false,
            run_id: None,
            answer: None,
            grade: None,
            cost: Vec::new(),
        }
    }

    /// One attempt at one challenge.
    pub async fn attempt(
        &self,
        challenge: &Challenge,
        attempt: u32,
        options: &EvalOptions,
        cancel: &CancellationToken,
    ) -> Outcome {
        match challenge.kind() {
            EvalKind::Llm if self.judge.is_none() => {
                return Self::skipped(
                    challenge,
                    attempt,
                    "needs an LLM judge (eval type `llm`); give one with --judge MODEL".into(),
                );
            }
            EvalKind::Other(kind) => {
                return Self::skipped(
                    challenge,
                    attempt,
                    format!("unknown eval type `{kind}`; supported: file, python, pytest"),
                );
            }
            _ => {}
        }
        let started = Instant::now();
        match self.try_attempt(challenge, attempt, options, cancel).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome {
                result: "failed".into(),
                seconds: started.elapsed().as_secs_f64(),
                stop_reason: format!("error: {}", crate::errors::chain(e.as_ref())),
                ..Self::skipped(challenge, attempt, String::new())
            },
        }
    }

    fn new_id(&self) -> anyhow::Result<String> {
        loop {
            let id = new_run_id();
            if self.journal.get(&id)?.is_none() {
                return Ok(id);
            }
        }
    }

    async fn try_attempt(
        &self,
        challenge: &Challenge,
        attempt: u32,
        options: &EvalOptions,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("agent-eval-").tempdir()?;
        let workspace = dir.path().canonicalize()?;
        let confined = Confined::open(&workspace)?;
        copy_tree_into(&challenge.artifacts_in(), &confined)?;
        let tools = Arc::new(challenge_tools(&self.dirs, &self.plugins, &workspace).await?);
        let limit = options
            .timeout
            .or(challenge.cutoff.map(Duration::from_secs))
            .unwrap_or(options.default_timeout)
            .max(Duration::from_secs(1));

        let mut settings = self.settings.clone();
        settings.workspace = workspace.display().to_string();
        settings.timeout_secs = limit.as_secs();
        settings.interactive = false;
        let mut agent_settings = self.agent.clone();
        agent_settings.timeout = limit;
        agent_settings.workspace = Some(workspace.clone());
        let run = RunRecord::new(self.new_id()?, challenge.task.clone(), settings);
        let run_id = run.id.clone();
        // Nobody watches the events; the journal keeps the transcript.
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let stop = cancel.child_token();
        let parts = AgentParts::new(
            &self.roles,
            tools.clone(),
            self.journal.clone(),
            events,
            agent_settings,
        );
        let plan = PlanParts {
            plans: self.plans.clone(),
            reviewer: None,
        };
        let agent = parts.build(options.strategy, &self.prompts, Some(plan))?;
        let drive = agent.start(run, &stop);
        // The agent keeps its own time budget; this is a backstop for a
        // model or tool that does not return when cancelled.
        let grace = Duration::from_secs(30);
        let ended = tokio::select! {
            r = drive => Some(r?),
            _ = tokio::time::sleep(limit + grace) => {
                stop.cancel();
                None
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let (stop, reason, steps, tokens, answer) = match &ended {
            Some(r) => (
                r.stop,
                r.stop_reason.clone().unwrap_or_default(),
                r.steps,
                r.usage.total(),
                r.answer.clone(),
            ),
            None => {
                let r = self.journal.get(&run_id)?;
                (
                    Some(StopKind::TimeBudget),
                    format!(
                        "time budget used: {} s (the run did not stop in time)",
                        limit.as_secs()
                    ),
                    r.as_ref().map(|r| r.steps).unwrap_or(0),
                    r.as_ref().map(|r| r.usage.total()).unwrap_or(0),
                    None,
                )
            }
        };
        let timed_out = stop == Some(StopKind::TimeBudget);
        let status = stop.map_or(RunStatus::Running, StopKind::status);
        // The model may have planted links where the test files go: they
        // are replaced, never written through (case 38).
        copy_tree_into(&challenge.custom_python(), &confined)?;
        let python = if options.unsafe_host_grading {
            PythonGrader::Host
        } else {
            PythonGrader::Sandbox(tools.get("run_python").map(|t| t.as_ref()))
        };
        let grade = grade(
            challenge,
            &workspace,
            options.grade_timeout,
            self.judge.as_deref(),
            python,
        )
        .await;
        let result = if grade.passed && !timed_out {
            "passed"
        } else {
            "failed"
        };
        // The grade stays with the run: a claimed success that failed it is
        // not an example for later runs (agent::examples).
        let mut cost = Vec::new();
        if let Some(mut record) = self.journal.get(&run_id)? {
            record.graded = Some(result == "passed");
            self.journal.put_run(&record)?;
            cost = record.cost;
        }
        let stop_reason = if timed_out {
            format!("timed out after {} s", limit.as_secs())
        } else {
            format!("{}: {reason}", status.as_str())
        };
        Ok(Outcome {
            challenge: challenge.name.clone(),
            category: challenge.category.clone(),
            attempt,
            result: result.into(),
            steps,
            tokens,
            seconds,
            status: status.as_str().into(),
            stop_reason,
            timed_out,
            run_id: Some(run_id),
            answer,
            grade: Some(grade),
            cost,
        })
    }
}

/// The tools of an attempt: `finish`, and every plugin that loads, bound to
/// `workspace`.
pub(super) async fn challenge_tools(
    dirs: &Dirs,
    plugins: &PluginPolicy,
    workspace: &Path,
) -> anyhow::Result<ToolRegistry> {
    let mut registry = ToolRegistry::new();
    registry.register(Arc::new(Finish))?;
    let mut host = PluginHost::new(dirs.clone(), plugins.clone(), workspace.to_path_buf())?;
    host.load_all().await;
    for (name, _origin, error) in host.failures() {
        tracing::warn!("plugin `{name}` was not loaded for the challenge: {error}");
    }
    for tool in host.tools() {
        registry.register(tool)?;
    }
    Ok(registry)
}
