//! Everything `agent` remembers, in one embedded sled store per user: the run
//! journal now; long-term memories and the knowledge base build on the same
//! [`Store`].

pub mod embed;
pub mod embed_pull;
pub mod index;
pub mod journal;
pub mod longterm;
pub mod sessions;
pub mod settings;
pub mod store;

pub use journal::{RunJournal, RunRecord, RunStatus, StepRecord, StopKind};
pub use store::{Store, StoreError};
