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
//!
//! [`PluginHost`] loads the built-in plugins and the installed ones (under
//! `Dirs::plugins/<name>/`: `manifest.yaml` and `plugin.wasm`), and exposes
//! each plugin tool through the [`Tool`] trait the agent loop dispatches to.
//!
//! Decisions:
//! - A plugin that fails to load (bad manifest, tampered `.wasm`, tools that
//!   disagree with the manifest) is reported and left out; the others load.
//! - Plugins are compiled (or loaded from the compiled cache) on their first
//!   call, not at start: the Python-based `code` plugin takes seconds to
//!   compile and a 36 MB `.cwasm` to load, and most runs never call it. Their
//!   tool lists come from a cached `describe()` answer (HMAC-checked like the
//!   compiled code); only the first load of a given `.wasm` ever (no cache
//!   yet) compiles at load, to learn its tools. Startup is then a manifest
//!   parse and a sha256 per plugin. A progress callback reports compilations
//!   so the CLI can show a spinner; the library never prints.
//! - Tool classes, which approvals key off: `Network` when any HTTP host is
//!   granted; otherwise `Execute` for the built-in `code` plugin (it runs
//!   arbitrary code given by the model); otherwise `Write` for workspace write,
//!   and `Read` for the rest.
//! - The workspace may not contain the agent's own config, data, plugins or
//!   cache: a plugin with workspace write could otherwise rewrite its own
//!   permissions or the agent's settings.
//! - Tool results are capped (head and tail kept) and terminal control
//!   characters in them are made visible instead of interpreted.

pub mod builtin;
pub mod cache;
pub(crate) mod host;
pub mod http;
pub mod manifest;
mod output;
pub mod policy;
pub mod scaffold;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::paths::Dirs;
use crate::tools::{Tool, ToolClass, ToolContext, ToolError, ToolSpec};
use cache::CompiledCache;
use host::{CallEnv, CallFailure, CallState, PluginPre, Runtime};
use http::{Resolver, SystemResolver};
use manifest::{Manifest, ManifestError, WorkspaceAccess};
use policy::{Grant, PluginPolicy, PolicyError};

pub use host::{GUEST_WORKSPACE, TICK};

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

#[derive(Clone)]
enum WasmSource {
    Static(&'static [u8]),
    File(PathBuf),
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

/// Shared machinery every loaded plugin needs.
struct Shared {
    runtime: Arc<Runtime>,
    cache: CompiledCache,
    workspace: PathBuf,
    resolver: Arc<dyn Resolver>,
    progress: std::sync::RwLock<Option<ProgressFn>>,
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
    manifest: Manifest,
    grant: Grant,
    origin: Origin,
    wasm: WasmSource,
    specs: Vec<ToolSpec>,
    pre: OnceCell<PluginPre<CallState>>,
    shared: Arc<Shared>,
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
        let (result, io) = host::invoke(&self.shared.runtime, pre, &env, tool, args_json).await;
        let cap = self.grant.output_bytes;
        let result = match result {
            Ok(text) => Ok(text::neutralize_controls(&text::cap_middle(&text, cap))),
            Err(CallFailure::Cancelled) => Err(ToolError::Cancelled),
            Err(CallFailure::Setup(e)) => Err(ToolError::Fatal(e)),
            Err(CallFailure::Plugin(e)) => Err(ToolError::Observation(text::neutralize_controls(
                &text::cap_middle(&e, cap),
            ))),
            Err(other) => Err(ToolError::Observation(format!(
                "{}: {other}",
                self.manifest.name
            ))),
        };
        CallReport {
            result,
            stdout: io.stdout,
            stderr: io.stderr,
            elapsed: started.elapsed(),
        }
    }
}

fn read_wasm(source: &WasmSource) -> Result<Vec<u8>, PluginError> {
    match source {
        WasmSource::Static(bytes) => Ok(bytes.to_vec()),
        WasmSource::File(path) => std::fs::read(path).map_err(io_err(path)),
    }
}

/// Compile (or load from cache) on a blocking thread, reporting progress when
/// it is a real compilation.
async fn compile(
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
    plugin: Arc<LoadedPlugin>,
    spec: ToolSpec,
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
            tracing::debug!(plugin = %self.spec.source, "stderr: {}", text::neutralize_controls(&report.stderr));
        }
        report.result
    }
}

/// A summary of one plugin for `agent plugin list/inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Version from the manifest (empty when the manifest did not load).
    pub version: String,
    /// Description.
    pub description: String,
    /// `builtin` or the install directory.
    pub origin: Origin,
    /// `ok`, `disabled` or `error`.
    pub status: String,
    /// The load error, if any.
    pub error: Option<String>,
    /// The tools.
    pub tools: Vec<ToolSpec>,
    /// What the manifest asks.
    pub requested: Option<manifest::Permissions>,
    /// What is granted.
    pub granted: Option<GrantSummary>,
}

/// A grant in words and numbers, for display and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct GrantSummary {
    /// `none`, `read` or `write`.
    pub workspace: WorkspaceAccess,
    /// Hosts it may reach.
    pub http_hosts: Vec<String>,
    /// Any public host.
    pub any_public_host: bool,
    /// Local endpoints it may reach.
    pub allow_local: Vec<String>,
    /// Memory cap, MiB.
    pub memory_mb: u32,
    /// Time limit, ms.
    pub timeout_ms: u64,
    /// Result cap, KiB.
    pub output_kb: usize,
    /// Environment variable names set for it (values not shown).
    pub env: Vec<String>,
}

impl From<&Grant> for GrantSummary {
    fn from(g: &Grant) -> Self {
        Self {
            workspace: g.workspace,
            http_hosts: g.http.hosts.iter().map(ToString::to_string).collect(),
            any_public_host: g.http.any_public_host,
            allow_local: g.http.allow_local.iter().map(ToString::to_string).collect(),
            memory_mb: g.memory_mb,
            timeout_ms: g.timeout.as_millis() as u64,
            output_kb: g.output_bytes / 1024,
            env: g.env.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
}

/// A plugin checked and ready to be installed; show it, then commit it.
#[derive(Debug)]
pub struct InstallPlan {
    /// Its manifest.
    pub manifest: Manifest,
    /// What it would be granted under the current policy.
    pub grant: Grant,
    /// Its tools.
    pub tools: Vec<ToolSpec>,
    wasm: Vec<u8>,
}

/// The plugin host of one process: loaded plugins and the machinery to run them.
pub struct PluginHost {
    dirs: Dirs,
    policy: PluginPolicy,
    shared: Arc<Shared>,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    order: Vec<String>,
    failures: Vec<(String, Origin, PluginError)>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.order)
            .field("workspace", &self.shared.workspace)
            .finish()
    }
}

/// Resolve `p` as far as it exists, then append the rest (for containment checks).
fn canonical_lenient(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

impl PluginHost {
    /// A host for `workspace` (which must exist and must not contain the
    /// agent's own files), with nothing loaded yet.
    pub fn new(dirs: Dirs, policy: PluginPolicy, workspace: PathBuf) -> Result<Self, PluginError> {
        policy.validate()?;
        let ws = workspace
            .canonicalize()
            .map_err(|e| PluginError::Workspace {
                path: workspace.clone(),
                reason: format!("{e}; create it or pass --workspace DIR"),
            })?;
        if !ws.is_dir() {
            return Err(PluginError::Workspace {
                path: ws,
                reason: "is not a directory".into(),
            });
        }
        for own in [
            &dirs.config,
            &dirs.data,
            &dirs.plugins,
            &dirs.cache,
            &dirs.prompts,
        ] {
            let own_c = canonical_lenient(own);
            if own_c.starts_with(&ws) {
                return Err(PluginError::Workspace {
                    path: ws,
                    reason: format!(
                        "contains the agent's own files ({}); plugins could change the agent's config or plugins there. \
                         Choose a workspace that does not contain them (--workspace DIR)",
                        own.display()
                    ),
                });
            }
            if ws.starts_with(&own_c) {
                return Err(PluginError::Workspace {
                    path: ws,
                    reason: format!(
                        "lies inside the agent's own directory {}; plugins could change the agent's files there. \
                         Choose a workspace outside it (--workspace DIR)",
                        own.display()
                    ),
                });
            }
        }
        let runtime = host::runtime().map_err(PluginError::Engine)?;
        let cache = CompiledCache::open(&dirs.compiled_plugins())?;
        let shared = Arc::new(Shared {
            runtime,
            cache,
            workspace: ws,
            resolver: Arc::new(SystemResolver),
            progress: std::sync::RwLock::new(None),
        });
        Ok(Self {
            dirs,
            policy,
            shared,
            plugins: BTreeMap::new(),
            order: Vec::new(),
            failures: Vec::new(),
        })
    }

    /// Be told when a plugin compiles (13-29 s for the Python one).
    pub fn set_progress(&self, progress: ProgressFn) {
        if let Ok(mut p) = self.shared.progress.write() {
            *p = Some(progress);
        }
    }

    /// The canonical workspace plugins see as `/workspace`.
    pub fn workspace(&self) -> &Path {
        &self.shared.workspace
    }

    /// The policy in force.
    pub fn policy(&self) -> &PluginPolicy {
        &self.policy
    }

    /// Load the built-in plugins and every installed one not disabled. A plugin
    /// that fails is recorded (see [`PluginHost::failures`]) and skipped.
    pub async fn load_all(&mut self) {
        for b in builtin::BUILTINS {
            let origin = Origin::Builtin;
            let name = b.name.to_string();
            if self.policy.is_disabled(&name) {
                continue;
            }
            let result = self
                .load_one(
                    &format!("built-in {name}"),
                    b.manifest,
                    WasmSource::Static(b.wasm),
                    origin.clone(),
                )
                .await;
            self.record(name, origin, result);
        }
        let mut dirs: Vec<PathBuf> = match std::fs::read_dir(&self.dirs.plugins) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
            Err(_) => Vec::new(),
        };
        dirs.sort();
        for dir in dirs {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || self.policy.is_disabled(&name) {
                continue;
            }
            let origin = Origin::Installed(dir.clone());
            let result = self.load_installed(&dir).await;
            let result = result.and_then(|p| {
                if p.manifest.name != name {
                    Err(PluginError::Source {
                        path: dir.clone(),
                        reason: format!(
                            "holds plugin `{}`; the directory must be named after it",
                            p.manifest.name
                        ),
                    })
                } else if builtin::is_builtin(&name) {
                    Err(PluginError::Builtin(name.clone()))
                } else {
                    Ok(p)
                }
            });
            self.record(name, origin, result);
        }
    }

    fn record(&mut self, name: String, origin: Origin, result: Result<LoadedPlugin, PluginError>) {
        let result = result.and_then(|p| {
            for spec in &p.specs {
                for other in self.plugins.values() {
                    if other.specs.iter().any(|s| s.name == spec.name) {
                        return Err(PluginError::DuplicateTool {
                            plugin: name.clone(),
                            tool: spec.name.clone(),
                            other: other.manifest.name.clone(),
                        });
                    }
                }
            }
            Ok(p)
        });
        match result {
            Ok(p) => {
                self.order.push(name.clone());
                self.plugins.insert(name, Arc::new(p));
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.failures.push((name, origin, e));
            }
        }
    }

    async fn load_installed(&self, dir: &Path) -> Result<LoadedPlugin, PluginError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let origin = Origin::Installed(dir.to_path_buf());
        self.load_one(
            &manifest_path.display().to_string(),
            &text,
            WasmSource::File(dir.join(WASM_FILE)),
            origin,
        )
        .await
    }

    async fn load_one(
        &self,
        label: &str,
        manifest_text: &str,
        wasm: WasmSource,
        origin: Origin,
    ) -> Result<LoadedPlugin, PluginError> {
        let manifest = Manifest::from_yaml(manifest_text, label)?;
        // A built-in's manifest hash was computed by build.rs from these very
        // bytes, and both live in this binary: hashing 19 MB of CPython at
        // every start (20 ms) proves nothing. Installed files are checked.
        let bytes = match &wasm {
            WasmSource::File(_) => {
                let bytes = read_wasm(&wasm)?;
                manifest.verify_wasm(&bytes)?;
                Some(bytes)
            }
            WasmSource::Static(_) => None,
        };
        let grant = self.policy.grant(&manifest);
        let is_builtin = origin == Origin::Builtin;
        let sha = manifest.sha256.to_ascii_lowercase();
        let pre = OnceCell::new();
        let cached_tools = self
            .shared
            .cache
            .load_describe(&sha)
            .and_then(|json| serde_json::from_str::<Vec<(String, String, String)>>(&json).ok());
        let described = match cached_tools {
            Some(t) => t,
            None => {
                let bytes = match bytes {
                    Some(b) => b,
                    None => read_wasm(&wasm)?,
                };
                let (p, _) = compile(&self.shared, &manifest, bytes).await?;
                let tools = self.describe(&manifest, &grant, &p).await?;
                let _ = pre.set(p);
                if let Ok(json) = serde_json::to_string(&tools)
                    && let Err(e) = self.shared.cache.store_describe(&sha, &json)
                {
                    tracing::warn!("could not cache the tool list of `{}`: {e}", manifest.name);
                }
                tools
            }
        };
        let specs = build_specs(&manifest, &grant, is_builtin, &described)?;
        Ok(LoadedPlugin {
            manifest,
            grant,
            origin,
            wasm,
            specs,
            pre,
            shared: self.shared.clone(),
        })
    }

    async fn describe(
        &self,
        manifest: &Manifest,
        grant: &Grant,
        pre: &PluginPre<CallState>,
    ) -> Result<Vec<(String, String, String)>, PluginError> {
        let env = CallEnv {
            plugin: &manifest.name,
            grant,
            workspace: &self.shared.workspace,
            full_access: false,
            resolver: self.shared.resolver.clone(),
            cancel: CancellationToken::new(),
        };
        let tools = host::describe(&self.shared.runtime, pre, &env)
            .await
            .map_err(|e| PluginError::Describe {
                name: manifest.name.clone(),
                reason: format!("failed: {e}"),
            })?;
        Ok(tools
            .into_iter()
            .map(|t| (t.name, t.description, t.args_schema))
            .collect())
    }

    /// Plugins that failed to load, with why.
    pub fn failures(&self) -> &[(String, Origin, PluginError)] {
        &self.failures
    }

    /// A loaded plugin by name.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }

    /// Every loaded plugin tool, ready for the agent's registry.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let mut out: Vec<Arc<dyn Tool>> = Vec::new();
        for name in &self.order {
            if let Some(p) = self.plugins.get(name) {
                for spec in &p.specs {
                    out.push(Arc::new(PluginTool {
                        plugin: p.clone(),
                        spec: spec.clone(),
                    }));
                }
            }
        }
        out
    }

    fn info(&self, p: &LoadedPlugin) -> PluginInfo {
        PluginInfo {
            name: p.manifest.name.clone(),
            version: p.manifest.version.clone(),
            description: p.manifest.description.clone(),
            origin: p.origin.clone(),
            status: "ok".into(),
            error: None,
            tools: p.specs.clone(),
            requested: Some(p.manifest.permissions.clone()),
            granted: Some(GrantSummary::from(&p.grant)),
        }
    }

    /// Every plugin: loaded, failed, and disabled.
    pub fn list(&self) -> Vec<PluginInfo> {
        let mut out: Vec<PluginInfo> = self
            .order
            .iter()
            .filter_map(|n| self.plugins.get(n))
            .map(|p| self.info(p))
            .collect();
        for (name, origin, e) in &self.failures {
            out.push(PluginInfo {
                name: name.clone(),
                version: String::new(),
                description: String::new(),
                origin: origin.clone(),
                status: "error".into(),
                error: Some(e.to_string()),
                tools: Vec::new(),
                requested: None,
                granted: None,
            });
        }
        for name in &self.policy.disabled {
            out.push(PluginInfo {
                name: name.clone(),
                version: String::new(),
                description: String::new(),
                origin: if builtin::is_builtin(name) {
                    Origin::Builtin
                } else {
                    Origin::Installed(self.dirs.plugins.join(name))
                },
                status: "disabled".into(),
                error: None,
                tools: Vec::new(),
                requested: None,
                granted: None,
            });
        }
        out
    }

    /// One plugin's details; `NotFound` if it is not loaded (the error of a
    /// plugin that failed to load is returned as that error).
    pub fn inspect(&self, name: &str) -> Result<PluginInfo, PluginError> {
        if let Some(p) = self.plugins.get(name) {
            return Ok(self.info(p));
        }
        if let Some((_, _, e)) = self.failures.iter().find(|(n, _, _)| n == name) {
            return Err(PluginError::Wasm {
                name: name.to_string(),
                reason: e.to_string(),
            });
        }
        Err(PluginError::NotFound(name.to_string()))
    }

    /// Check a plugin for installation: find its manifest and `.wasm`, verify
    /// both, compile it and ask it for its tools. Nothing is written to the
    /// plugins directory yet.
    pub async fn prepare_install(&self, path: &Path) -> Result<InstallPlan, PluginError> {
        let (manifest_path, wasm_path) = locate_install_source(path)?;
        let text = std::fs::read_to_string(&manifest_path).map_err(io_err(&manifest_path))?;
        let manifest = Manifest::from_yaml(&text, &manifest_path.display().to_string())?;
        if builtin::is_builtin(&manifest.name) {
            return Err(PluginError::Builtin(manifest.name));
        }
        if self.dirs.plugins.join(&manifest.name).exists() {
            return Err(PluginError::AlreadyInstalled(manifest.name));
        }
        let wasm = std::fs::read(&wasm_path).map_err(io_err(&wasm_path))?;
        manifest.verify_wasm(&wasm)?;
        let grant = self.policy.grant(&manifest);
        let (pre, _) = compile(&self.shared, &manifest, wasm.clone()).await?;
        let described = self.describe(&manifest, &grant, &pre).await?;
        let tools = build_specs(&manifest, &grant, false, &described)?;
        for spec in &tools {
            for other in self.plugins.values() {
                if other.specs.iter().any(|s| s.name == spec.name) {
                    return Err(PluginError::DuplicateTool {
                        plugin: manifest.name.clone(),
                        tool: spec.name.clone(),
                        other: other.manifest.name.clone(),
                    });
                }
            }
        }
        Ok(InstallPlan {
            manifest,
            grant,
            tools,
            wasm,
        })
    }

    /// Install a prepared plugin under `Dirs::plugins/<name>/` (atomically).
    pub fn commit_install(&self, plan: InstallPlan) -> Result<PathBuf, PluginError> {
        let root = &self.dirs.plugins;
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let dest = root.join(&plan.manifest.name);
        if dest.exists() {
            return Err(PluginError::AlreadyInstalled(plan.manifest.name));
        }
        let tmp = root.join(format!(
            ".install-{}-{}",
            plan.manifest.name,
            rand::random::<u32>()
        ));
        let write = || -> Result<(), PluginError> {
            std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
            let yaml = plan.manifest.to_yaml().map_err(|e| PluginError::Source {
                path: tmp.clone(),
                reason: e.to_string(),
            })?;
            cache::write_atomic(&tmp.join(MANIFEST_FILE), yaml.as_bytes(), false)
                .map_err(io_err(&tmp))?;
            cache::write_atomic(&tmp.join(WASM_FILE), &plan.wasm, false).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &dest).map_err(io_err(&dest))
        };
        let result = write();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result.map(|()| dest)
    }

    /// Remove an installed plugin; returns the directory removed.
    pub fn remove(&self, name: &str) -> Result<PathBuf, PluginError> {
        if builtin::is_builtin(name) {
            return Err(PluginError::Builtin(name.to_string()));
        }
        if !manifest::valid_plugin_name(name) {
            return Err(PluginError::NotFound(name.to_string()));
        }
        let dir = self.dirs.plugins.join(name);
        if !dir.join(MANIFEST_FILE).exists() && !dir.join(WASM_FILE).exists() {
            return Err(PluginError::NotFound(name.to_string()));
        }
        // Move aside first so a half-removed plugin never loads.
        let trash = self
            .dirs
            .plugins
            .join(format!(".remove-{name}-{}", rand::random::<u32>()));
        std::fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        std::fs::remove_dir_all(&trash).map_err(io_err(&trash))?;
        Ok(dir)
    }

    /// Replace the DNS resolver (tests use this to simulate DNS tricks).
    #[doc(hidden)]
    pub fn set_resolver_for_tests(
        &mut self,
        resolver: Arc<dyn Resolver>,
    ) -> Result<(), PluginError> {
        match Arc::get_mut(&mut self.shared) {
            Some(s) => {
                s.resolver = resolver;
                Ok(())
            }
            None => Err(PluginError::Engine(
                "set the resolver before loading plugins".into(),
            )),
        }
    }
}

/// Find the manifest and `.wasm` of an install source: a directory (holding
/// `manifest.yaml` or one `*.manifest.yaml`, and `<name>.wasm`, `plugin.wasm`
/// or a single `.wasm`), a manifest file, or a `.wasm` file with its manifest
/// beside it (`<stem>.manifest.yaml` or `manifest.yaml`).
pub fn locate_install_source(path: &Path) -> Result<(PathBuf, PathBuf), PluginError> {
    let src_err = |reason: String| PluginError::Source {
        path: path.to_path_buf(),
        reason,
    };
    let list = |dir: &Path, suffix: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let name_of = |manifest: &Path| -> Option<String> {
        let text = std::fs::read_to_string(manifest).ok()?;
        let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        v.get("name")?.as_str().map(str::to_owned)
    };
    let wasm_in = |dir: &Path, name: Option<&str>| -> Result<PathBuf, PluginError> {
        let mut candidates = Vec::new();
        if let Some(n) = name {
            candidates.push(dir.join(format!("{n}.wasm")));
            candidates.push(dir.join(format!("{}.wasm", n.replace('-', "_"))));
        }
        candidates.push(dir.join(WASM_FILE));
        if let Some(found) = candidates.into_iter().find(|c| c.is_file()) {
            return Ok(found);
        }
        let all = list(dir, ".wasm");
        match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(src_err(format!(
                "no .wasm found in {}; build the plugin first (`agent plugin build`)",
                dir.display()
            ))),
            _ => Err(src_err(format!(
                "several .wasm files in {}; name it {}.wasm",
                dir.display(),
                name.unwrap_or("plugin")
            ))),
        }
    };
    if path.is_dir() {
        let manifest = if path.join(MANIFEST_FILE).is_file() {
            path.join(MANIFEST_FILE)
        } else {
            match list(path, ".manifest.yaml").as_slice() {
                [one] => one.clone(),
                [] => return Err(src_err(
                    "no manifest.yaml here; a plugin directory holds manifest.yaml and its .wasm"
                        .into(),
                )),
                _ => {
                    return Err(src_err(
                        "several *.manifest.yaml here; pass the one to install".into(),
                    ));
                }
            }
        };
        let name = name_of(&manifest);
        let wasm = wasm_in(path, name.as_deref())?;
        return Ok((manifest, wasm));
    }
    if !path.is_file() {
        return Err(src_err("no such file or directory".into()));
    }
    let file = path.to_string_lossy();
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if file.ends_with(".yaml") || file.ends_with(".yml") {
        let name = name_of(path);
        let wasm = wasm_in(&dir, name.as_deref())?;
        Ok((path.to_path_buf(), wasm))
    } else if file.ends_with(".wasm") {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = [
            dir.join(format!("{stem}.manifest.yaml")),
            dir.join(MANIFEST_FILE),
        ]
        .into_iter()
        .find(|m| m.is_file())
        .ok_or_else(|| {
            src_err(format!(
                "no manifest beside it ({stem}.manifest.yaml or manifest.yaml)"
            ))
        })?;
        Ok((manifest, path.to_path_buf()))
    } else {
        Err(src_err(
            "expected a plugin directory, a manifest (.yaml) or a .wasm file".into(),
        ))
    }
}

/// The class approvals key off (see the module doc).
fn tool_class(manifest: &Manifest, grant: &Grant, is_builtin: bool, tool: &str) -> ToolClass {
    if grant.http.enabled() {
        ToolClass::Network
    } else if is_builtin && manifest.name == "code" {
        ToolClass::Execute
    } else if grant.workspace == WorkspaceAccess::Write
        && !manifest.read_only_tools.iter().any(|t| t == tool)
    {
        ToolClass::Write
    } else {
        ToolClass::Read
    }
}

/// Check `describe()`'s answer against the manifest and turn it into specs.
fn build_specs(
    manifest: &Manifest,
    grant: &Grant,
    is_builtin: bool,
    described: &[(String, String, String)],
) -> Result<Vec<ToolSpec>, PluginError> {
    let bad = |reason: String| PluginError::Describe {
        name: manifest.name.clone(),
        reason,
    };
    manifest.check_tools(described.iter().map(|(n, _, _)| n.as_str()))?;
    let mut specs = Vec::new();
    for (name, description, schema) in described {
        if specs.iter().any(|s: &ToolSpec| &s.name == name) {
            return Err(bad(format!("returned tool `{name}` twice")));
        }
        if description.len() > 4096 {
            return Err(bad(format!(
                "returned a description of `{name}` longer than 4096 bytes"
            )));
        }
        if schema.len() > 64 * 1024 {
            return Err(bad(format!(
                "returned an arguments schema for `{name}` larger than 64 KiB"
            )));
        }
        let args_schema: serde_json::Value = serde_json::from_str(schema).map_err(|e| {
            bad(format!(
                "returned an arguments schema for `{name}` that is not JSON: {e}"
            ))
        })?;
        if args_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(bad(format!(
                "returned an arguments schema for `{name}` whose top level is not `{{\"type\": \"object\"}}`"
            )));
        }
        specs.push(ToolSpec {
            name: name.clone(),
            description: text::neutralize_controls(description),
            args_schema,
            class: tool_class(manifest, grant, is_builtin, name),
            source: manifest.name.clone(),
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, ws: &str, hosts: &str) -> Manifest {
        let text = format!(
            "name: {name}\nversion: 0.1.0\ninterface: agent:plugin@0.1.0\nsha256: \
             0000000000000000000000000000000000000000000000000000000000000000\ntools: [a, b]\n\
             permissions:\n  workspace: {ws}\n  http:\n    hosts: {hosts}\n"
        );
        Manifest::from_yaml(&text, "t").unwrap()
    }

    fn described(names: &[&str]) -> Vec<(String, String, String)> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!("does {n}"),
                    r#"{"type":"object"}"#.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn classes_follow_the_grant() {
        let p = PluginPolicy::default();
        let m = manifest("web", "none", "[example.com]");
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Network);
        let m = manifest("code", "write", "[]");
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Execute);
        assert_eq!(
            tool_class(&m, &p.grant(&m), false, "t"),
            ToolClass::Write,
            "only the built-in `code` is Execute"
        );
        let m = manifest("files", "write", "[]");
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Write);
        let p = PluginPolicy {
            max_workspace: WorkspaceAccess::Read,
            ..Default::default()
        };
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Read);
        // A tool the manifest declares read-only is a read even with write access.
        let mut m = manifest("files", "write", "[]");
        m.read_only_tools = vec!["t".into()];
        let p = PluginPolicy::default();
        assert_eq!(tool_class(&m, &p.grant(&m), true, "t"), ToolClass::Read);
        assert_eq!(
            tool_class(&m, &p.grant(&m), true, "other"),
            ToolClass::Write
        );
    }

    #[test]
    fn describe_answers_are_checked() {
        let m = manifest("x", "none", "[]");
        let g = PluginPolicy::default().grant(&m);
        let specs = build_specs(&m, &g, false, &described(&["a", "b"])).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].source, "x");
        assert!(
            build_specs(&m, &g, false, &described(&["a"]))
                .unwrap_err()
                .to_string()
                .contains("listed but not offered: [b]")
        );
        assert!(build_specs(&m, &g, false, &described(&["a", "b", "c"])).is_err());
        let mut d = described(&["a", "b"]);
        d[1].2 = r#"{"type":"string"}"#.into();
        assert!(
            build_specs(&m, &g, false, &d)
                .unwrap_err()
                .to_string()
                .contains("top level")
        );
        d[1].2 = "not json".into();
        assert!(
            build_specs(&m, &g, false, &d)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }

    #[test]
    fn workspaces_holding_the_agents_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs::resolve(Some(&tmp.path().join("home")), None).unwrap();
        let e = PluginHost::new(
            dirs.clone(),
            PluginPolicy::default(),
            tmp.path().to_path_buf(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("agent's own files"), "{e}");
        let ws = tmp.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        PluginHost::new(dirs.clone(), PluginPolicy::default(), ws).unwrap();
        let inside = tmp.path().join("home/data/plugins/x");
        std::fs::create_dir_all(&inside).unwrap();
        let e = PluginHost::new(dirs.clone(), PluginPolicy::default(), inside).unwrap_err();
        assert!(e.to_string().contains("lies inside"), "{e}");
        let e =
            PluginHost::new(dirs, PluginPolicy::default(), tmp.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("--workspace"), "{e}");
    }

    #[test]
    fn install_sources_are_located() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("manifest.yaml"), "name: my-tool\n").unwrap();
        std::fs::write(d.join("my_tool.wasm"), b"x").unwrap();
        std::fs::write(d.join("other.wasm"), b"x").unwrap();
        assert_eq!(
            locate_install_source(d).unwrap(),
            (d.join("manifest.yaml"), d.join("my_tool.wasm"))
        );
        assert_eq!(
            locate_install_source(&d.join("manifest.yaml")).unwrap().1,
            d.join("my_tool.wasm")
        );
        assert_eq!(
            locate_install_source(&d.join("other.wasm")).unwrap(),
            (d.join("manifest.yaml"), d.join("other.wasm"))
        );
        assert!(locate_install_source(&d.join("nope")).is_err());
    }
}
