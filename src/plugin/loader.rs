//! [`PluginHost`]: the plugins of one process, and loading them.
//!
//! A host is made for one workspace, loads the built-in plugins and the
//! installed ones, and hands their tools to the agent's registry.
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
//! - The workspace may not contain the agent's own config, data, plugins or
//!   cache: a plugin with workspace write could otherwise rewrite its own
//!   permissions or the agent's settings.
//! - An installed plugin loads only if its `manifest.yaml` is byte for byte
//!   the one the user approved (see `approval`); otherwise it is reported as
//!   not approved and left out, never loaded with what its edited manifest
//!   asks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::approval;
use super::cache::CompiledCache;
use super::host::{self, CallEnv, CallState, PluginPre};
use super::http::{Resolver, SystemResolver};
use super::loaded::{LoadedPlugin, PluginTool, Shared, WasmSource, compile, read_wasm};
use super::manifest::Manifest;
use super::policy::{Grant, PluginPolicy};
use super::specs::build_specs;
use super::{MANIFEST_FILE, Origin, PluginError, ProgressFn, WASM_FILE, builtin, io_err};
use crate::paths::Dirs;
use crate::tools::Tool;

/// The plugin host of one process: loaded plugins and the machinery to run them.
pub struct PluginHost {
    pub(super) dirs: Dirs,
    pub(super) policy: PluginPolicy,
    pub(super) shared: Arc<Shared>,
    pub(super) plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    pub(super) order: Vec<String>,
    pub(super) failures: Vec<(String, Origin, PluginError)>,
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
            let result = if builtin::is_builtin(&name) {
                Err(PluginError::Builtin(name.clone()))
            } else {
                self.load_installed(&dir, &name).await
            };
            let result = result.and_then(|p| {
                if p.manifest.name != name {
                    Err(PluginError::Source {
                        path: dir.clone(),
                        reason: format!(
                            "holds plugin `{}`; the directory must be named after it",
                            p.manifest.name
                        ),
                    })
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
                // The error names a directory anyone could name (case 44).
                tracing::warn!("{}", crate::sanitize::one_line(&e.to_string(), 500));
                self.failures.push((name, origin, e));
            }
        }
    }

    async fn load_installed(&self, dir: &Path, name: &str) -> Result<LoadedPlugin, PluginError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
        approval::check(&self.dirs.data, name, &bytes)?;
        let text = String::from_utf8(bytes).map_err(|_| PluginError::Source {
            path: manifest_path.clone(),
            reason: "is not UTF-8 text".into(),
        })?;
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

    pub(super) async fn describe(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
