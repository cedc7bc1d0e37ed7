//! Extension points of the agent loop, so the REPL, long-term memory and
//! other strategies can take part in a run without the loop knowing them:
//!
//! - an [`Approver`] decides, before a tool runs, whether it may (the REPL's
//!   approval prompt, `--approve` policies, `--yes`);
//! - a [`MemoryHook`] adds recalled memories to each step's prompt (as data,
//!   never as instructions) and hears when a run ends (to reflect on it).
//!
//! Both are optional; a run without them behaves as `--yes` with no memory.

use async_trait::async_trait;

use crate::memory::{RunRecord, StepRecord};
use crate::model::ModelBackend;
use crate::tools::ToolSpec;

/// What the loop asks an [`Approver`].
#[derive(Debug)]
pub struct ApprovalRequest<'a> {
    /// The step number.
    pub step: u32,
    /// The tool about to run (its class says what it may touch).
    pub spec: &'a ToolSpec,
    /// Its arguments, already checked against its schema.
    pub args: &'a serde_json::Value,
    /// The untrusted content the run has read (a web page, a workspace
    /// file, a kb passage…) and no person has approved an action since:
    /// writes, code and network deserve a second look (case 39).
    pub tainted_by: Option<&'a str>,
}

/// An approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Run it (a policy allowed it, or nobody is asked under `--yes`).
    Approve,
    /// Run it: a person was asked and said yes. This also clears the run's
    /// taint, since they saw the action and took the risk.
    PersonApproved,
    /// Do not run it; the reason becomes the observation.
    Deny(String),
    /// Do not run it: a person was asked and said no (the reason becomes
    /// the observation; the step is marked as a person's refusal).
    Declined(String),
    /// Do not run it; the user's words go to the model as the observation.
    Feedback(String),
}

/// Decides whether a tool call may run.
#[async_trait]
pub trait Approver: Send + Sync {
    /// Approve, deny, or answer with feedback.
    async fn approve(&self, request: &ApprovalRequest<'_>) -> Approval;
}

/// One recalled memory for the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    /// The memory's text.
    pub text: String,
    /// Where it came from (`user`, `agent run 2026…`, a URL, a file).
    pub source: String,
    /// True when its words may come from outside the user and the agent
    /// (see [`crate::memory::longterm::Provenance::is_untrusted`]): showing
    /// it to the model taints the run.
    pub untrusted: bool,
    /// Relevance, higher is better.
    pub score: f32,
}

/// Long-term memory as the loop sees it.
#[async_trait]
pub trait MemoryHook: Send + Sync {
    /// Memories relevant to this step (`query` holds the goal and the latest
    /// thought and observation), within `budget_tokens`, best first.
    async fn recall(&self, query: &str, budget_tokens: usize) -> Vec<Recalled>;
    /// The run ended (any status); e.g. store a reflection of what it learned.
    async fn run_ended(&self, run: &RunRecord, steps: &[StepRecord], model: &dyn ModelBackend);
}
