//! The plugin host: WebAssembly components that give the agent its hands,
//! each sandboxed by what its manifest asks and what the user allows.
//!
//! - [`manifest`]: the YAML beside each `.wasm` (strict, checked against the
//!   `.wasm`'s sha256 and the plugin's own `describe()`).
//! - [`policy`]: the user's `plugins:` config and the grant it yields.
//! - `host`: wasmtime (engine, cache, one fresh store per call).
//! - [`http`]: the `http-fetch` capability and its egress checks.
//! - [`builtin`]: `files`, `web` and `code`, compiled into the binary.
//! - [`scaffold`]: `agent plugin new/build` (writing and building plugin crates).
//! - `loader`: [`PluginHost`], the workspace check and the loading of plugins.
//! - `loaded`: one loaded plugin ([`LoadedPlugin`]), its calls, and the
//!   [`Tool`] each of its tools is to the agent ([`PluginTool`]).
//! - `specs`: `describe()`'s answer checked and turned into tool specs and
//!   classes.
//! - `install`: `agent plugin install/remove` (finding, checking, writing).
//! - `approval`: what the user approved for each installed plugin (the
//!   manifest's sha256), checked at every load; `agent plugin approve`.
//! - `info`: the summaries `agent plugin list/inspect` show.
//!
//! [`PluginHost`] loads the built-in plugins and the installed ones (under
//! `Dirs::plugins/<name>/`: `manifest.yaml` and `plugin.wasm`), and exposes
//! each plugin tool through the [`Tool`] trait the agent loop dispatches to.
//!
//! This module holds the public types the others share: [`PluginError`],
//! [`Origin`], [`CompileEvent`] and the file names of an installed plugin.
//! The decisions are noted in the module that carries each out: loading,
//! lazy compilation and the workspace check in `loader`, tool classes in
//! `specs`, the capping of results in `loaded`.
//!
//! [`Tool`]: crate::tools::Tool

mod approval;
pub mod builtin;
pub mod cache;
pub(crate) mod host;
pub mod http;
mod info;
mod install;
mod loaded;
mod loader;
pub mod manifest;
mod output;
pub mod policy;
pub mod protect;
pub mod scaffold;
mod specs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use manifest::ManifestError;
use policy::PolicyError;

pub use approval::{Approval, ApprovalPlan};
pub use host::{GUEST_WORKSPACE, TICK};
pub use info::{GrantSummary, PluginInfo};
pub use install::{InstallPlan, locate_install_source};
pub use loaded::{CallReport, LoadedPlugin, PluginTool};
pub use loader::PluginHost;

/// File names inside an installed plugin's directory.
pub const MANIFEST_FILE: &str = "manifest.yaml";
/// File names inside an installed plugin's directory.
pub const WASM_FILE: &str = "plugin.wasm";

/// Things that go wrong loading, installing or removing plugins.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The user's `plugins:` config was refused.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// wasmtime could not start.
    #[error("{0}")]
    Engine(String),
    /// The `.wasm` is not a usable component.
    #[error("plugin `{name}` cannot be loaded: {reason}")]
    Wasm {
        /// Plugin name.
        name: String,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// `describe()` failed or returned something unusable.
    #[error("plugin `{name}`: describe() {reason}")]
    Describe {
        /// Plugin name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The compiled-plugin cache could not be opened.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    /// No plugin of that name.
    #[error("no plugin named `{0}`; `agent plugin list` shows the installed ones")]
    NotFound(String),
    /// Installing over an existing plugin.
    #[error(
        "a plugin named `{0}` is already installed; remove it first with `agent plugin remove {0}`"
    )]
    AlreadyInstalled(String),
    /// An installed plugin whose manifest is not the one the user approved.
    #[error(
        "plugin `{name}` is not approved: {reason}; its tools are not loaded. \
         Review what it asks now and approve it with `agent plugin approve {name}`"
    )]
    NotApproved {
        /// Plugin name.
        name: String,
        /// What differs from the approval.
        reason: String,
    },
    /// Installing or removing a built-in.
    #[error(
        "`{0}` is a built-in plugin; it cannot be replaced or removed (disable it with `plugins.disabled: [{0}]` in config.yaml)"
    )]
    Builtin(String),
    /// Two plugins offer one tool name.
    #[error(
        "plugin `{plugin}` offers tool `{tool}`, which plugin `{other}` already offers; tool names must be unique"
    )]
    DuplicateTool {
        /// The plugin refused.
        plugin: String,
        /// The tool name.
        tool: String,
        /// The plugin loaded first.
        other: String,
    },
    /// An install source could not be understood.
    #[error("{path}: {reason}")]
    Source {
        /// What was given.
        path: PathBuf,
        /// What was expected.
        reason: String,
    },
    /// The workspace is unusable for plugins.
    #[error("workspace {path}: {reason}")]
    Workspace {
        /// The workspace.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PluginError + '_ {
    move |source| PluginError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Compiled into the binary.
    Builtin,
    /// Installed under this directory.
    Installed(PathBuf),
}

/// Compilation events, for a progress display.
#[derive(Debug, Clone)]
pub enum CompileEvent {
    /// Compiling `plugin` (`bytes` of wasm) started; this can take a while.
    Started {
        /// Plugin name.
        plugin: String,
        /// Size of its `.wasm`.
        bytes: usize,
    },
    /// Compiling `plugin` finished after `elapsed`.
    Finished {
        /// Plugin name.
        plugin: String,
        /// How long it took.
        elapsed: Duration,
    },
}

/// A callback told about compilations.
pub type ProgressFn = Arc<dyn Fn(CompileEvent) + Send + Sync>;
