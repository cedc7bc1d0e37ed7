//! What the agent tells the world. The core never prints: it sends
//! [`Event`]s on a channel, and the UI (human transcript, JSON lines, REPL)
//! decides how to show them. Serialised with a `type` tag for `--json`.

use serde::Serialize;

use crate::memory::RunStatus;
use crate::model::Usage;
use crate::model::roles::ModelCost;

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A run began (or resumed).
    RunStarted {
        run_id: String,
        goal: String,
        model: String,
        tools: Vec<String>,
        /// Set when an interrupted run continues after this many steps.
        resumed_after: Option<u32>,
        /// The recipe the run carries out and its parameters
        /// (`NAME key=value ...`), when it does.
        #[serde(skip_serializing_if = "Option::is_none")]
        recipe: Option<String>,
    },
    /// The model is being asked for step `step`.
    Thinking { step: u32 },
    /// A fragment of model output as it streams (not written in `--json`).
    Token { step: u32, text: String },
    /// The model chose an action.
    Step {
        step: u32,
        thought: String,
        tool: String,
        args: serde_json::Value,
    },
    /// The model's output was not a valid action.
    InvalidOutput {
        step: u32,
        error: String,
        raw: String,
    },
    /// The result of the step's action (or of the rejection), as the model sees it.
    Observation {
        step: u32,
        tool: Option<String>,
        observation: String,
        is_error: bool,
        tool_ms: u64,
    },
    /// A guard's message (repetition nudge, history trimmed, ...).
    Notice { step: u32, message: String },
    /// A plan-and-execute run made a plan (again, after the user's edit).
    PlanCreated {
        run_id: String,
        thought: String,
        steps: Vec<crate::agent::plan::PlanStep>,
    },
    /// The replanner replaced the steps not yet done (`done` steps are kept).
    PlanRevised {
        revision: u32,
        thought: String,
        done: usize,
        steps: Vec<crate::agent::plan::PlanStep>,
    },
    /// A plan step begins; its ReAct loop's events follow, numbered from 1.
    PlanStepStarted {
        number: usize,
        of: usize,
        description: String,
        success_criterion: String,
        /// The child run that carries it out.
        run_id: String,
    },
    /// A plan step ended.
    PlanStepFinished {
        number: usize,
        status: RunStatus,
        result: String,
        steps: u32,
        usage: Usage,
    },
    /// The run ended.
    RunFinished {
        run_id: String,
        status: RunStatus,
        answer: Option<String>,
        reason: String,
        steps: u32,
        usage: Usage,
        elapsed_ms: u64,
        /// What was done, step by step.
        summary: String,
        /// What each model cost the run (`crate::model::roles`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cost: Vec<ModelCost>,
    },
    /// A recipe run ended, after its checks and retries: its answer as data.
    RecipeFinished {
        run_id: String,
        recipe: String,
        status: RunStatus,
        attempts: u32,
        checks: Vec<crate::agent::recipe::CheckResult>,
        answer: Option<serde_json::Value>,
    },
}
