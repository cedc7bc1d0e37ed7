//! The data of a plan-and-execute run: the plan and its revisions, each
//! executed step's result, every planner call, and the [`PlanStore`] that
//! keeps them in the store's `plans` tree (written and flushed at every
//! phase change, so a resumed run continues at its current step).

use serde::{Deserialize, Serialize};

use crate::memory::{RunJournal, RunStatus, Store, StoreError};
use crate::model::Usage;
use crate::sanitize;

/// The store tree holding plan state, keyed by parent run id.
pub const PLANS_TREE: &str = "plans";

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
    /// The step ended because its "done when" was checked and met
    /// (`agent::criterion`), not by its model's word.
    #[serde(default)]
    pub criterion_met: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            criterion_met: false,
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
