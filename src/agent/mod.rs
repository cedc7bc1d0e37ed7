//! Agent strategies. ReAct (think → act → observe, repeated) drives every
//! run today; the pieces it is made of (events, loop guards, budgets) are
//! shared so other strategies can reuse them.

pub mod approval;
pub mod conversation;
pub mod events;
pub mod guard;
pub mod hooks;
pub mod plan;
pub mod react;
pub mod recall;
pub mod run;
pub mod strategy;

pub use events::Event;
pub use hooks::{Approval, ApprovalRequest, Approver, MemoryHook, Recalled};
pub use react::{AgentError, AgentSettings, ReactAgent};
pub use strategy::{Agent, AgentParts, PlanParts, Strategy};
