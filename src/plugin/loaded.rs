//! One loaded plugin: its manifest, grant and tools, compiled on its first
//! call, and the [`Tool`] each of its tools is to the agent.
//!
//! Decisions:
//! - A plugin is compiled (or loaded from the compiled cache) on its first
//!   call, not when it loads (see `loader` for why); compilations are
//!   reported through the host's progress callback.
//! - Tool results are capped (head and tail kept) and terminal control
//!   characters in them are made visible instead of interpreted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::cache::CompiledCache;
use super::host::{self, CallEnv, CallFailure, CallState, PluginPre, Runtime};
use super::http::Resolver;
use super::manifest::{Manifest, WorkspaceAccess};
use super::policy::Grant;
use super::protect;
use super::{CompileEvent, Origin, PluginError, ProgressFn, io_err};
use crate::sanitize;
use crate::tools::{Tool, ToolContext, ToolError, ToolSpec};

#[derive(Clone)]
pub(super) enum WasmSource {
    Static(&'static [u8]),
    File(PathBuf),
}

/// Shared machinery every loaded plugin needs.
pub(super) struct Shared {
    pub(super) runtime: Arc<Runtime>,
    pub(super) cache: CompiledCache,
    pub(super) workspace: PathBuf,
    pub(super) resolver: Arc<dyn Resolver>,
    pub(super) progress: std::sync::RwLock<Option<ProgressFn>>,
}

impl Shared {
    fn report(&self, event: CompileEvent) {
        if let Ok(guard) = self.progress.read()
            && let Some(cb) = guard.as_ref()
        {
            cb(event);
        }
    }
}

/// One loaded plugin.
pub struct LoadedPlugin {
    pub(super) manifest: Manifest,
    pub(super) grant: Grant,
    pub(super) origin: Origin,
    pub(super) wasm: WasmSource,
    pub(super) specs: Vec<ToolSpec>,
    pub(super) pre: OnceCell<PluginPre<CallState>>,
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.manifest.name)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The result of one tool call, with the plugin's own output.
#[derive(Debug)]
pub struct CallReport {
    /// The observation, or the error told to the model.
    pub result: Result<String, ToolError>,
    /// Captured stdout (capped).
    pub stdout: String,
    /// Captured stderr (capped).
    pub stderr: String,
    /// Wall time of the call (compilation excluded).
    pub elapsed: Duration,
}

impl LoadedPlugin {
    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the plugin is granted.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Where it comes from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Its tools as the agent sees them.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// True once compiled (plugins with a cached tool list compile on first call).
    pub fn is_compiled(&self) -> bool {
        self.pre.initialized()
    }

    async fn compiled(&self) -> Result<&PluginPre<CallState>, PluginError> {
        self.pre
            .get_or_try_init(|| async {
                let wasm = read_wasm(&self.wasm)?;
                self.manifest.verify_wasm(&wasm)?;
                compile(&self.shared, &self.manifest, wasm)
                    .await
                    .map(|(pre, _)| pre)
            })
            .await
    }

    /// Run one tool with JSON arguments (already checked against its schema),
    /// returning the observation and the plugin's captured output.
    pub async fn call(&self, tool: &str, args_json: &str, cancel: CancellationToken) -> CallReport {
        let started = Instant::now();
        let fail = |result| CallReport {
            result,
            stdout: String::new(),
            stderr: String::new(),
            elapsed: started.elapsed(),
        };
        if !self.manifest.tools.iter().any(|t| t == tool) {
            return fail(Err(ToolError::Observation(format!(
                "plugin `{}` has no tool `{tool}`; it offers: {}",
                self.manifest.name,
                self.manifest.tools.join(", ")
            ))));
        }
        let pre = match self.compiled().await {
            Ok(p) => p,
            Err(e) => return fail(Err(ToolError::Observation(e.to_string()))),
        };
        // A read-only tool never gets more than a read-only workspace.
        let narrowed;
        let grant = if self.manifest.read_only_tools.iter().any(|t| t == tool)
            && self.grant.workspace == WorkspaceAccess::Write
        {
            narrowed = Grant {
                workspace: WorkspaceAccess::Read,
                ..self.grant.clone()
            };
            &narrowed
        } else {
            &self.grant
        };
        let env = CallEnv {
            plugin: &self.manifest.name,
            grant,
            workspace: &self.shared.workspace,
            full_access: true,
            resolver: self.shared.resolver.clone(),
            cancel,
        };
        let started = Instant::now();
        // Files git runs or obeys are put back as they were (case 42).
        let guard = (grant.workspace == WorkspaceAccess::Write)
            .then(|| protect::Snapshot::take(&self.shared.workspace));
        let (result, io) = host::invoke(&self.shared.runtime, pre, &env, tool, args_json).await;
        let undone = guard
            .map(|g| g.restore(&self.shared.workspace))
            .unwrap_or_default();
        let note = (!undone.is_empty()).then(|| {
            format!(
                "\n[agent undid this call's changes to {}: files that git runs or obeys are not writable by tools; ask the user to make such a change]",
                undone.join(", ")
            )
        });
        let cap = self.grant.output_bytes;
        let result = match result {
            Ok(text) => Ok(sanitize::neutralize_controls(
                &sanitize::cap_head_tail_bytes(&text, cap),
            )),
            Err(CallFailure::Cancelled) => Err(ToolError::Cancelled),
            Err(CallFailure::Setup(e)) => Err(ToolError::Fatal(e)),
            Err(CallFailure::Plugin(e)) => Err(ToolError::Observation(
                sanitize::neutralize_controls(&sanitize::cap_head_tail_bytes(&e, cap)),
            )),
            Err(other) => Err(ToolError::Observation(format!(
                "{}: {other}",
                self.manifest.name
            ))),
        };
        let result = match (result, note) {
            (Ok(text), Some(note)) => Ok(text + &note),
            (Err(ToolError::Observation(text)), Some(note)) => {
                Err(ToolError::Observation(text + &note))
            }
            (result, _) => result,
        };
        CallReport {
            result,
            stdout: io.stdout,
            stderr: io.stderr,
            elapsed: started.elapsed(),
        }
    }
}

pub(super) fn read_wasm(source: &WasmSource) -> Result<Vec<u8>, PluginError> {
    match source {
        WasmSource::Static(bytes) => Ok(bytes.to_vec()),
        WasmSource::File(path) => std::fs::read(path).map_err(io_err(path)),
    }
}

/// Compile (or load from cache) on a blocking thread, reporting progress when
/// it is a real compilation.
pub(super) async fn compile(
    shared: &Arc<Shared>,
    manifest: &Manifest,
    wasm: Vec<u8>,
) -> Result<(PluginPre<CallState>, bool), PluginError> {
    let sha = manifest.sha256.to_ascii_lowercase();
    let name = manifest.name.clone();
    let cached = shared
        .cache
        .compiled_path(&sha, &shared.runtime.engine_hash)
        .exists();
    let started = Instant::now();
    if !cached {
        shared.report(CompileEvent::Started {
            plugin: name.clone(),
            bytes: wasm.len(),
        });
    }
    let s = shared.clone();
    let result =
        tokio::task::spawn_blocking(move || host::prepare(&s.runtime, &s.cache, &wasm, &sha))
            .await
            .map_err(|e| PluginError::Engine(format!("the compiler thread failed: {e}")))?;
    if !cached {
        shared.report(CompileEvent::Finished {
            plugin: name.clone(),
            elapsed: started.elapsed(),
        });
    }
    result.map_err(|e| PluginError::Wasm {
        name,
        reason: e.to_string(),
    })
}

/// One tool of a plugin, as the agent's registry holds it.
pub struct PluginTool {
    pub(super) plugin: Arc<LoadedPlugin>,
    pub(super) spec: ToolSpec,
}

#[async_trait]
impl Tool for PluginTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args = serde_json::to_string(&args)
            .map_err(|e| ToolError::Observation(format!("bad arguments: {e}")))?;
        let report = self
            .plugin
            .call(&self.spec.name, &args, ctx.cancel.clone())
            .await;
        if !report.stderr.is_empty() {
            tracing::debug!(plugin = %self.spec.source, "stderr: {}", sanitize::neutralize_controls(&report.stderr));
        }
        report.result
    }
}
