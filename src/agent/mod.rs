//! The agent: strategies and what they share. [`strategy`] builds an agent
//! for a [`Strategy`]: ReAct ([`react`]: think, act, observe, repeated) or
//! plan-and-execute ([`plan`]: a plan, a ReAct child run per step that
//! ends when its criterion is met ([`criterion`]), replanning). Both run inside one lifecycle ([`run`]: start, budgets, the
//! model call, the end and its [`crate::memory::StopKind`]). Beside them:
//! the conversation a run continues ([`conversation`]), the approval policy
//! ([`approval`]), loop guards ([`guard`]), majority votes over sampled
//! actions ([`vote`]), verified finishing ([`verify`], and the results a goal states for its code, run in the sandbox: [`stated`]) and the code it suggests where a model is stuck ([`hints`]), recipes as runs
//! ([`recipe`]), the hooks a run calls out
//! through ([`hooks`]) and long-term memory's hook ([`recall`]), and the
//! [`Event`]s a run sends instead of printing. Nothing here imports `cli`
//! or `ui`.

pub mod approval;
pub mod conversation;
pub mod criterion;
pub mod events;
pub mod examples;
pub mod guard;
pub mod hints;
pub mod hooks;
pub mod plan;
pub mod react;
pub mod recall;
pub mod recipe;
pub mod run;
pub mod stated;
pub mod strategy;
pub mod verify;
pub mod vote;

pub use events::Event;
pub use hooks::{Approval, ApprovalRequest, Approver, MemoryHook, Recalled};
pub use react::{AgentError, AgentSettings, ReactAgent};
pub use strategy::{Agent, AgentParts, PlanParts, Strategy};
