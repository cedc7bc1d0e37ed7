//! Running recipes (`crate::recipe`): the one place a recipe becomes runs.
//! [`RecipeKit`] holds what a session built once (models by role, the
//! tools, the journal, the approver, memory, the events channel) and
//! starts, for one recipe and its values:
//!
//! - an agent recipe: a normal run (journaled, resumable) whose goal is the
//!   rendered prompt, with the recipe's instructions, settings, plugin
//!   subset, `response` schema (a [`StructuredFinish`]) and sub-recipes
//!   offered as tools ([`tool`]); after a finished run its checks run (a
//!   file check by the host, Python in the `code` plugin's sandbox), and a
//!   failed check starts a fresh attempt (`ID.a2`, ...) told what failed;
//! - a chain recipe ([`chain`]): its steps, each a model call whose output
//!   is bound to its name, journaled as the steps of one run.
//!
//! A recipe run never gets more than the session has: its tools are a
//! subset of the session's (a name it lists that is not loaded is an
//! error), its approvals are the session's approver, and a run called as a
//! tool starts from its caller's taint and hands its own back.

pub mod chain;
pub mod tool;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::hooks::MemoryHook;
use super::plan::PlanStore;
use super::react::AgentError;
use super::strategy::{AgentParts, PlanParts, Strategy};
use crate::memory::journal::{RunSettings, StopKind};
use crate::memory::{RunRecord, RunStatus, StepRecord};
use crate::model::roles::ModelRole;
use crate::prompt::PromptLibrary;
use crate::recipe::{Check, Kind, Library, Loaded, RecipeRun, Values};
use crate::tools::builtin::{FINISH, Finish, StructuredFinish};
use crate::tools::{Tool, ToolClass, ToolContext, ToolError, ToolRegistry};

/// Deepest a recipe may call recipes (a run by a person is depth 0).
pub const MAX_DEPTH: u32 = 3;

/// What a session built once, from which recipe runs are started.
pub struct RecipeKit {
    /// The session's parts (models by role, journal, events, approver,
    /// memory, limits); each run gets a copy with its own tools, limits
    /// and account.
    pub parts: AgentParts,
    /// The settings a run of this session records.
    pub settings: RunSettings,
    /// The session's tools other than `finish` and recipe tools.
    pub tools: Vec<Arc<dyn Tool>>,
    /// The sandbox Python checks run in (the `code` plugin's tool), also
    /// where the runs may not call it (`agent mcp serve --read-only`).
    pub checker: Option<Arc<dyn Tool>>,
    pub prompts: PromptLibrary,
    /// For recipes with `settings.agent: plan`.
    pub plans: Option<PlanStore>,
    pub library: Library,
    /// Opens a model a recipe names by reference (not by role), on its
    /// first call; `None` where the session cannot open models.
    pub open_model: Option<ModelOpener>,
    /// The models opened so far, by reference: a recipe called again
    /// shares its model.
    pub opened: std::sync::Mutex<BTreeMap<String, Arc<dyn crate::model::ModelBackend>>>,
}

/// Opens a model by reference (`agent model list` names them).
pub type ModelOpener =
    Arc<dyn Fn(&str) -> Result<Arc<dyn crate::model::ModelBackend>, String> + Send + Sync>;

/// One use of a recipe: who asked, with what budget.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The run id of the (first) attempt.
    pub id: String,
    /// 0 when a person runs it.
    pub depth: u32,
    /// At most this much of the caller's budgets (steps, tokens, seconds).
    pub limits: Option<(u32, u64, u64)>,
    /// The caller's taint (security case 39): the run starts with it.
    pub tainted: Option<String>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// How a recipe run ended.
#[derive(Debug, Clone)]
pub struct RecipeOutcome {
    /// The first attempt's record, updated to say how the whole ended.
    pub run: RunRecord,
    /// The attempts made (1 without a retry).
    pub attempts: u32,
    /// The last attempt's checks.
    pub checks: Vec<CheckResult>,
    /// The answer as data: parsed JSON when the recipe has a `response`
    /// schema (or is a chain), else the answer's text.
    pub answer: Option<Value>,
}

impl RecipeKit {
    /// Run `loaded` with `values` to its end (checks and retries
    /// included), and announce how it ended.
    pub async fn run(
        self: &Arc<Self>,
        loaded: &Loaded,
        values: &Values,
        call: Call,
        cancel: &CancellationToken,
    ) -> Result<RecipeOutcome, AgentError> {
        let outcome = self.attempts(loaded, values, call, None, cancel).await?;
        self.announce(loaded, &outcome);
        Ok(outcome)
    }

    fn announce(&self, loaded: &Loaded, outcome: &RecipeOutcome) {
        let _ = self.parts.events.send(super::Event::RecipeFinished {
            run_id: outcome.run.id.clone(),
            recipe: loaded.name.clone(),
            status: outcome.run.status,
            attempts: outcome.attempts,
            checks: outcome.checks.clone(),
            answer: outcome.answer.clone(),
        });
    }

    /// The attempts of an agent recipe (a chain's one run): each a fresh
    /// run, checked when it finishes, until the checks pass or the retries
    /// are spent. With `resumed`, the first is that interrupted attempt
    /// driven on from its steps (and `first` the recipe run's record when
    /// that attempt is a retry).
    async fn attempts(
        self: &Arc<Self>,
        loaded: &Loaded,
        values: &Values,
        mut call: Call,
        resumed: Option<(RunRecord, Vec<StepRecord>, Option<RunRecord>)>,
        cancel: &CancellationToken,
    ) -> Result<RecipeOutcome, AgentError> {
        if loaded.recipe.kind == Kind::Chain {
            let (run, steps) = match resumed {
                Some((run, steps, _)) => (run, steps),
                None => (
                    self.record(loaded, values, &call, 1, String::new(), None)?,
                    Vec::new(),
                ),
            };
            return chain::run(self, loaded, values, run, steps, cancel).await;
        }
        let rendered = loaded.recipe.render(values).map_err(setup)?;
        let checks = loaded.recipe.rendered_checks(values).map_err(setup)?;
        let cleanup = loaded.recipe.rendered_on_failure(values).map_err(setup)?;
        let retries = loaded.recipe.retry.as_ref().map_or(0, |r| r.max_retries);
        let mut goal = rendered.goal.clone();
        let (mut attempt, mut first, mut pending) = match resumed {
            Some((run, steps, first)) => {
                let attempt = run.settings.recipe.as_ref().map_or(1, |r| r.attempt);
                (attempt, first, Some((run, steps)))
            }
            None => (1, None, None),
        };
        loop {
            let checked = !checks.is_empty();
            let run = match pending.take() {
                Some((run, steps)) => {
                    self.drive(loaded, values, run, Some(steps), checked, cancel)
                        .await?
                }
                None => {
                    let mut record = self.record(
                        loaded,
                        values,
                        &call,
                        attempt,
                        goal.clone(),
                        rendered.instructions.clone(),
                    )?;
                    if attempt > 1 {
                        record.id = format!("{}.a{attempt}", call.id);
                    }
                    self.drive(loaded, values, record, None, checked, cancel)
                        .await?
                }
            };
            let results = if run.status == RunStatus::Finished && checked {
                self.check(&checks, &run, cancel).await
            } else {
                Vec::new()
            };
            if checked && results.iter().all(|r| r.passed) {
                self.reflect(&run).await;
            }
            let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed).collect();
            let done = run.status != RunStatus::Finished || failed.is_empty();
            let mut run = run;
            if !failed.is_empty() {
                let told: Vec<String> = failed
                    .iter()
                    .map(|r| format!("{}: {}", r.check, r.detail))
                    .collect();
                self.mark_unverified(&mut run, &told)?;
            }
            if done || attempt > retries || cancel.is_cancelled() {
                return self.conclude(first, run, attempt, results, loaded);
            }
            if let Some(code) = &cleanup {
                self.check(&[Check::Python { code: code.clone() }], &run, cancel)
                    .await;
            }
            let told: Vec<String> = failed
                .iter()
                .map(|r| format!("- {}: {}", r.check, r.detail))
                .collect();
            goal = format!(
                "{}\n\nAn earlier attempt at this finished, but these checks of its result failed:\n{}\nDo the task again so that they pass.",
                rendered.goal,
                told.join("\n")
            );
            // What this attempt read stays read (case 39): the next one,
            // told about this one's result, starts from its taint.
            call.tainted = run.tainted.clone();
            first.get_or_insert(run);
            attempt += 1;
        }
    }

    /// Drive a recipe run on from its committed `steps` (`agent runs
    /// resume`): a chain skips the steps it has; an agent run continues its
    /// history, then is checked and retried like any attempt.
    pub async fn resume(
        self: &Arc<Self>,
        loaded: &Loaded,
        values: &Values,
        run: RunRecord,
        steps: Vec<StepRecord>,
        cancel: &CancellationToken,
    ) -> Result<RecipeOutcome, AgentError> {
        let recipe = run.settings.recipe.clone().unwrap_or_default();
        // A retry `ID.aN` belongs to the recipe run `ID`.
        let base = match run.id.rsplit_once(".a") {
            Some((base, n)) if recipe.attempt > 1 && n.parse::<u32>().is_ok() => base.to_string(),
            _ => run.id.clone(),
        };
        let first = if base == run.id {
            None
        } else {
            self.parts.journal.get(&base)?
        };
        let call = Call {
            id: base,
            depth: recipe.depth,
            limits: None,
            tainted: run.tainted.clone(),
        };
        let outcome = self
            .attempts(loaded, values, call, Some((run, steps, first)), cancel)
            .await?;
        self.announce(loaded, &outcome);
        Ok(outcome)
    }

    /// A new run record for `loaded` toward `goal`, with the rendered
    /// `instructions` (not yet written; an empty goal is a chain's).
    fn record(
        &self,
        loaded: &Loaded,
        values: &Values,
        call: &Call,
        attempt: u32,
        goal: String,
        instructions: Option<String>,
    ) -> Result<RunRecord, AgentError> {
        let recipe = &loaded.recipe;
        let mut settings = self.settings.clone();
        if let Some(t) = recipe.settings.temperature {
            settings.temperature = t as f32;
        }
        if let Some(n) = recipe.settings.max_steps {
            settings.max_steps = n;
        }
        if let Some(model) = &recipe.settings.model {
            // A role's model; for a run a person started, the model the
            // session opened for it; else the model named, opened when the
            // run first asks it.
            match ModelRole::parse(model) {
                Ok(role) => settings.model = self.parts.roles.get(role).name().to_string(),
                Err(_) if call.depth == 0 => {}
                Err(_) => settings.model = model.clone(),
            }
        }
        if let Some((steps, tokens, secs)) = call.limits {
            settings.max_steps = settings.max_steps.min(steps);
            settings.max_tokens = settings.max_tokens.min(tokens);
            settings.timeout_secs = settings.timeout_secs.min(secs);
        }
        settings.recipe = Some(RecipeRun {
            name: loaded.name.clone(),
            location: loaded.location(),
            params: values.shown.clone(),
            instructions,
            response: recipe.response.as_ref().map(|r| r.json_schema.clone()),
            plugins: recipe.plugins.clone(),
            depth: call.depth,
            attempt,
        });
        let goal = if goal.is_empty() {
            format!("recipe {}: {}", loaded.name, recipe.title)
        } else {
            goal
        };
        let mut run = RunRecord::new(call.id.clone(), goal, settings);
        run.tainted = call.tainted.clone();
        Ok(run)
    }

    /// Build the agent for `run` (its recipe, settings and tools) and start
    /// it, or (with `resumed`, its committed steps) drive it on: a plan
    /// run goes on from its own saved state.
    /// With `checked`, the end-of-run reflection waits for the checks
    /// ([`AfterChecks`]).
    async fn drive(
        self: &Arc<Self>,
        loaded: &Loaded,
        values: &Values,
        run: RunRecord,
        resumed: Option<Vec<StepRecord>>,
        checked: bool,
        cancel: &CancellationToken,
    ) -> Result<RunRecord, AgentError> {
        let mut parts = self.parts_for(loaded, values, &run)?;
        if checked {
            parts.memory = parts
                .memory
                .take()
                .map(|m| Arc::new(AfterChecks(m)) as Arc<dyn MemoryHook>);
        }
        let strategy = match loaded.recipe.settings.agent.as_deref() {
            Some("plan") => Strategy::Plan,
            _ => Strategy::React,
        };
        let plan = match (strategy, &self.plans) {
            (Strategy::Plan, Some(plans)) => Some(PlanParts {
                plans: plans.clone(),
                reviewer: None,
            }),
            _ => None,
        };
        let agent = parts.build(strategy, &self.prompts, plan)?;
        match resumed {
            None => agent.start(run, cancel).await,
            Some(steps) => agent.resume(run, steps, cancel).await,
        }
    }

    /// The parts of `run`: the session's, with the recipe's tools, limits,
    /// instructions and model, and an account of its own.
    pub(crate) fn parts_for(
        self: &Arc<Self>,
        loaded: &Loaded,
        values: &Values,
        run: &RunRecord,
    ) -> Result<AgentParts, AgentError> {
        let mut parts = self.parts.with_own_account();
        let recipe = run.settings.recipe.clone().unwrap_or_default();
        // A chain calls no tools.
        parts.tools = Arc::new(match loaded.recipe.kind {
            Kind::Agent => self.registry(loaded, values, &recipe)?,
            Kind::Chain => ToolRegistry::new(),
        });
        let s = &run.settings;
        parts.settings.max_steps = s.max_steps;
        parts.settings.max_tokens = s.max_tokens;
        parts.settings.timeout = std::time::Duration::from_secs(s.timeout_secs);
        parts.settings.temperature = s.temperature;
        parts.settings.instructions = recipe.instructions.clone();
        if let Some(model) = loaded.recipe.settings.model.as_deref() {
            match ModelRole::parse(model) {
                Ok(role) => parts.model = parts.roles.get(role).clone(),
                // A person's run: the session opened this model for it.
                Err(_) if recipe.depth == 0 => {}
                Err(_) => {
                    let opened = self.model(model)?;
                    // Counted in this run's account, as its default model.
                    parts.model = crate::model::roles::RoleModels::single(opened)
                        .metered(&parts.account)
                        .get(ModelRole::Default)
                        .clone();
                }
            }
        }
        Ok(parts)
    }

    /// The model `reference`, opened once per kit.
    fn model(&self, reference: &str) -> Result<Arc<dyn crate::model::ModelBackend>, AgentError> {
        let mut opened = self
            .opened
            .lock()
            .map_err(|_| AgentError::Setup("the recipe kit's models are poisoned".into()))?;
        if let Some(m) = opened.get(reference) {
            return Ok(m.clone());
        }
        let open = self.open_model.as_ref().ok_or_else(|| {
            AgentError::Setup(format!(
                "the model `{reference}` a recipe names cannot be opened here; name a role (default, smart, fast) instead"
            ))
        })?;
        let model = open(reference).map_err(|e| {
            AgentError::Setup(format!(
                "cannot open the model `{reference}` a recipe names: {e}"
            ))
        })?;
        opened.insert(reference.to_string(), model.clone());
        Ok(model)
    }

    /// The tools of a recipe run: the session's tools the recipe may use,
    /// `finish` (bound to the response schema), and its sub-recipes.
    fn registry(
        self: &Arc<Self>,
        loaded: &Loaded,
        values: &Values,
        recipe: &RecipeRun,
    ) -> Result<ToolRegistry, AgentError> {
        let mut registry = ToolRegistry::new();
        let add = |registry: &mut ToolRegistry, tool: Arc<dyn Tool>| {
            registry
                .register(tool)
                .map_err(|e| AgentError::Setup(e.to_string()))
        };
        match &recipe.response {
            Some(schema) => add(
                &mut registry,
                Arc::new(StructuredFinish::new(schema.clone())),
            )?,
            None => add(&mut registry, Arc::new(Finish))?,
        }
        // A plugin by name, a single tool, or an MCP server by name.
        let names_it = |n: &str, spec: &crate::tools::ToolSpec| {
            n == spec.source || n == spec.name || spec.source.strip_prefix("mcp:") == Some(n)
        };
        let allowed = |t: &Arc<dyn Tool>| {
            let spec = t.spec();
            match &recipe.plugins {
                None => true,
                Some(names) => {
                    names.iter().any(|n| names_it(n, spec))
                        || (spec.source == "builtin"
                            && matches!(spec.class, ToolClass::Internal | ToolClass::Human))
                }
            }
        };
        if let Some(names) = &recipe.plugins {
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !self.tools.iter().any(|t| names_it(n, t.spec())))
                .collect();
            if !missing.is_empty() {
                let mut have: Vec<String> = self
                    .tools
                    .iter()
                    .map(|t| t.spec().source.clone())
                    .filter(|s| s != "builtin")
                    .collect();
                have.dedup();
                return Err(AgentError::Setup(format!(
                    "recipe `{}` lists {} under `plugins`, which this session has not loaded (loaded plugins: {}); a recipe can only narrow what the config allows: install or enable it (`agent plugin list`), or remove it from the recipe",
                    loaded.name,
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                )));
            }
        }
        for tool in self.tools.iter().filter(|t| allowed(t)) {
            if tool.spec().name != FINISH {
                add(&mut registry, tool.clone())?;
            }
        }
        if recipe.depth < MAX_DEPTH {
            for sub in &loaded.recipe.sub_recipes {
                let child = self
                    .library
                    .load_sub(loaded, sub)
                    .map_err(|e| AgentError::Setup(e.to_string()))?;
                let pinned = loaded
                    .recipe
                    .pinned(sub, values)
                    .map_err(|e| AgentError::Setup(e.to_string()))?;
                let tool = tool::RecipeTool::new(
                    tool::Target::Kit(Arc::downgrade(self)),
                    child,
                    sub.name.clone(),
                    sub.description.clone(),
                    pinned,
                    recipe.depth,
                );
                add(&mut registry, Arc::new(tool))?;
            }
        }
        Ok(registry)
    }

    /// Store the reflection on `run`, whose checks passed (it was held
    /// back until then).
    async fn reflect(&self, run: &RunRecord) {
        let Some(memory) = &self.parts.memory else {
            return;
        };
        let steps = self.parts.journal.steps(&run.id).unwrap_or_default();
        let model = self.parts.roles.get(ModelRole::Fast);
        memory.run_ended(run, &steps, model.as_ref()).await;
    }

    /// Run `checks` after `run`; each says whether it passed and why not.
    async fn check(
        &self,
        checks: &[Check],
        run: &RunRecord,
        cancel: &CancellationToken,
    ) -> Vec<CheckResult> {
        let mut out = Vec::new();
        for check in checks {
            out.push(match check {
                Check::File {
                    path,
                    contains,
                    not_contains,
                    matches,
                } => file_check(
                    Path::new(&run.settings.workspace),
                    path,
                    contains.as_deref(),
                    not_contains.as_deref(),
                    matches.as_deref(),
                ),
                Check::Python { code } => self.python_check(code, run, cancel).await,
                Check::Shell { command } => CheckResult {
                    check: format!("shell `{command}`"),
                    passed: false,
                    detail: "checks never run on the host shell".into(),
                },
            });
        }
        out
    }

    /// Python in the `code` plugin's sandbox: it passes when it ends
    /// without an exception.
    async fn python_check(
        &self,
        code: &str,
        run: &RunRecord,
        cancel: &CancellationToken,
    ) -> CheckResult {
        let first_line = code.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let check = format!(
            "python check `{}`",
            crate::sanitize::one_line(first_line, 60)
        );
        let Some(tool) = &self.checker else {
            return CheckResult {
                check,
                passed: false,
                detail: "no plugin that runs code is loaded (the `code` plugin runs Python checks)"
                    .into(),
            };
        };
        let ctx = ToolContext {
            cancel: cancel.clone(),
            run_id: Some(run.id.clone()),
            step: None,
            taint: Default::default(),
        };
        match tool.call(serde_json::json!({ "code": code }), &ctx).await {
            Ok(_) => CheckResult {
                check,
                passed: true,
                detail: String::new(),
            },
            Err(ToolError::Observation(e) | ToolError::Fatal(e)) => CheckResult {
                check,
                passed: false,
                detail: failure(&e),
            },
            Err(ToolError::Cancelled) => CheckResult {
                check,
                passed: false,
                detail: "cancelled".into(),
            },
        }
    }

    /// Record that `run` finished but `failed` checks.
    fn mark_unverified(&self, run: &mut RunRecord, failed: &[String]) -> Result<(), AgentError> {
        run.status = RunStatus::Unverified;
        run.stop = Some(StopKind::Unverified);
        run.stop_reason = Some(format!(
            "the agent finished, but the recipe's checks failed: {}",
            failed.join("; ")
        ));
        self.parts.journal.put_run(run)?;
        Ok(())
    }

    /// The outcome: the first attempt's record says how the last ended.
    fn conclude(
        &self,
        first: Option<RunRecord>,
        last: RunRecord,
        attempts: u32,
        checks: Vec<CheckResult>,
        loaded: &Loaded,
    ) -> Result<RecipeOutcome, AgentError> {
        let answer = answer_value(&last, loaded.recipe.response.is_some());
        let run = match first {
            Some(mut first) => {
                first.status = last.status;
                first.stop = last.stop;
                first.answer = last.answer.clone();
                first.tainted = last.tainted.clone();
                first.stop_reason = Some(format!(
                    "attempt {attempts} (run {}): {}",
                    last.id,
                    last.stop_reason.clone().unwrap_or_default()
                ));
                self.parts.journal.put_run(&first)?;
                first
            }
            None => last,
        };
        Ok(RecipeOutcome {
            run,
            attempts,
            checks,
            answer,
        })
    }
}

/// Long-term memory for an attempt that has checks: recall as usual, but
/// no reflection when the run ends. A lesson drawn from a run whose result
/// then fails its checks teaches the next attempt the wrong thing (seen
/// 2026-12-01: the folder recipe's second attempt began with the first
/// one's claim); the kit reflects once the checks have passed.
struct AfterChecks(Arc<dyn MemoryHook>);

#[async_trait::async_trait]
impl MemoryHook for AfterChecks {
    async fn recall(&self, query: &str, budget_tokens: usize) -> Vec<crate::agent::Recalled> {
        self.0.recall(query, budget_tokens).await
    }

    async fn run_ended(
        &self,
        _run: &RunRecord,
        _steps: &[StepRecord],
        _model: &dyn crate::model::ModelBackend,
    ) {
    }
}

/// The answer of `run` as data: parsed when it is JSON by contract.
pub(crate) fn answer_value(run: &RunRecord, structured: bool) -> Option<Value> {
    let answer = run.answer.as_ref()?;
    if structured {
        serde_json::from_str(answer)
            .ok()
            .or_else(|| Some(Value::String(answer.clone())))
    } else {
        Some(Value::String(answer.clone()))
    }
}

fn setup(e: crate::recipe::RecipeError) -> AgentError {
    AgentError::Setup(e.to_string())
}

/// What a failed Python check says: the message of its last exception
/// (an `assert`'s text), else the end of its output.
fn failure(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    match lines
        .iter()
        .rev()
        .find(|l| !l.starts_with(' ') && l.contains("Error"))
    {
        Some(line) => line
            .strip_prefix("AssertionError: ")
            .unwrap_or(line)
            .to_string(),
        None => lines[lines.len().saturating_sub(3)..].join(" | "),
    }
}

/// A file check, read through `crate::confined` (no link followed, nothing
/// outside the workspace).
fn file_check(
    workspace: &Path,
    path: &str,
    contains: Option<&str>,
    not_contains: Option<&str>,
    matches: Option<&str>,
) -> CheckResult {
    let check = format!("file check on {path}");
    let fail = |detail: String| CheckResult {
        check: check.clone(),
        passed: false,
        detail,
    };
    let text = match crate::confined::Confined::open(workspace)
        .and_then(|d| d.read_head(Path::new(path.trim_start_matches("./")), 16 << 20))
    {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!("{path} does not exist: nothing wrote it"));
        }
        Err(e) => return fail(format!("{path} cannot be read: {e}")),
    };
    if let Some(c) = contains
        && !text.contains(c)
    {
        return fail(format!("{path} does not contain {c:?}"));
    }
    if let Some(c) = not_contains
        && text.contains(c)
    {
        return fail(format!("{path} contains {c:?}, which it must not"));
    }
    if let Some(re) = matches {
        match crate::recipe::format::regex_lite(re) {
            Ok(re) if re.is_match(&text) => {}
            Ok(_) => return fail(format!("{path} does not match the pattern {:?}", re)),
            Err(e) => return fail(format!("bad pattern: {e}")),
        }
    }
    if contains.is_none() && not_contains.is_none() && matches.is_none() && text.trim().is_empty() {
        return fail(format!("{path} is empty"));
    }
    CheckResult {
        check,
        passed: true,
        detail: String::new(),
    }
}

/// The values of a recipe from a run's record (a resume): the parameters
/// as they were given, read again.
pub fn recorded_values(run: &RunRecord) -> BTreeMap<String, Value> {
    run.settings
        .recipe
        .as_ref()
        .map(|r| {
            r.params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
