//! Showing runs to people and programs: the human transcript (colour when
//! the terminal allows, a spinner with tokens/s while the model works) and
//! JSON lines for `--json`. Both consume [`crate::agent::Event`]s; neither
//! feeds anything back into the agent.

pub mod approve;
pub mod human;
pub mod jsonl;
pub mod repl;

use crate::agent::Event;

/// How much the human transcript shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Only the answer (and errors).
    Quiet,
    /// Thoughts, actions, shortened observations.
    Normal,
    /// Also whole observations and streamed model text.
    Verbose,
}

/// Something that shows events.
pub trait Renderer: Send {
    /// Show one event.
    fn event(&mut self, event: &Event);
    /// The run is over; clean up (stop spinners).
    fn close(&mut self) {}
}
