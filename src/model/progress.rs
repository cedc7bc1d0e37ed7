//! What the model layer tells the user while it fetches or loads a model.
//!
//! Pulling a 5 GB file or loading weights takes long enough that silence
//! looks like a hang, but the model layer must not print (the UI decides how
//! things look, and `--json` wants no bars). So pulling and loading report
//! [`ModelEvent`]s to a [`ModelProgress`] sink; the CLI renders them with
//! indicatif, tests collect them, and [`NoProgress`] drops them.

use std::path::PathBuf;

/// Something worth telling the user while a model is fetched or loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// A download begins; `what` names the model, `source` where it comes from.
    DownloadStarted {
        what: String,
        source: String,
        total: Option<u64>,
    },
    /// Bytes have arrived (`done` of `total`, when the size is known).
    DownloadProgress { done: u64, total: Option<u64> },
    /// The first source failed; another one is tried.
    FallingBack { reason: String, source: String },
    /// The file is in the cache at `path` (`bytes` long).
    Cached { path: PathBuf, bytes: u64 },
    /// Weights are being loaded into memory.
    LoadStarted { what: String },
    /// The model is ready.
    LoadFinished { what: String, seconds: f64 },
}

/// Receives [`ModelEvent`]s. Any `Fn(&ModelEvent) + Send + Sync` closure is one.
pub trait ModelProgress: Send + Sync {
    /// Called for each event, in order, from the task doing the work.
    fn event(&self, event: &ModelEvent);
}

impl<F: Fn(&ModelEvent) + Send + Sync> ModelProgress for F {
    fn event(&self, event: &ModelEvent) {
        self(event)
    }
}

/// A sink that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ModelProgress for NoProgress {
    fn event(&self, _event: &ModelEvent) {}
}
