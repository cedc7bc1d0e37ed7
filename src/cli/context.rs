//! The composition root of a run: resolves the settings (config file,
//! environment, flags), prepares the workspace, opens the store and the
//! journal, gathers the tools (built-ins, memory and kb tools, plugins),
//! opens the model, builds the approver and the memory hook, and hands them
//! to [`crate::agent::AgentParts::build`] for a [`Strategy`]. `agent run`,
//! `agent runs resume`, the REPL, `agent eval` and `agent bench` all start
//! here; Ctrl-C is wired in one place ([`on_ctrl_c`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::flags::RunOptions;
use super::model::ProgressBars;
use crate::agent::plan::{PlanReviewer, PlanStore};
use crate::agent::{
    Agent, AgentParts, AgentSettings, Approver, Event, MemoryHook, PlanParts, Strategy,
};
use crate::config::Config;
use crate::memory::journal::RunSettings;
use crate::memory::{RunJournal, Store};
use crate::model::open::{BackendOptions, lora_applies, open_backend};
use crate::model::progress::{ModelEvent, ModelProgress};
use crate::model::reference::ModelRef;
use crate::model::roles::{Lazy, ModelRole, RoleModels, RoleSpec, check_fit, estimate_bytes};
use crate::model::scripted::ScriptedBackend;
use crate::model::{ModelBackend, ModelError};
use crate::paths::Dirs;
use crate::plugin::PluginHost;
use crate::prompt::PromptLibrary;
use crate::tools::ToolRegistry;
use crate::tools::builtin::{AskHuman, Finish};
use crate::ui::human::TerminalHuman;

/// What every run needs before the model: settings, workspace, store, tools.
pub struct Session {
    pub dirs: Dirs,
    pub config: Config,
    pub workspace: PathBuf,
    pub store: Store,
    pub journal: RunJournal,
    /// `--approve`: one approval policy for every tool class of the run.
    pub approve: Option<crate::agent::approval::Policy>,
    /// `--yes`: never ask (approvals run without a question).
    pub continuous: bool,
    /// The plugins and their grants, as [`Session::tools`] found them.
    pub plugins: std::sync::Mutex<Vec<crate::plugin::PluginInfo>>,
    /// What runs recipes, set each time [`Session::parts`] builds parts;
    /// the recipe tools of [`Session::tools`] find it here.
    pub recipes: crate::agent::recipe::tool::Slot,
    /// The local models [`Session::models`] opened, for models opened later.
    resident: std::sync::Mutex<Option<Resident>>,
    /// The plugin tool recipes' Python checks run in (the `code` plugin's),
    /// as [`Session::plugin_tools`] loaded it, whatever a run may call.
    checker: std::sync::Mutex<Option<Arc<dyn crate::tools::Tool>>>,
}

/// Refuse a workspace that holds agent's own files or lies inside them:
/// tools could otherwise rewrite the config, prompts, plugins or the store.
pub fn check_workspace(workspace: &Path, dirs: &Dirs) -> anyhow::Result<()> {
    let ws = workspace
        .canonicalize()
        .with_context(|| format!("cannot open workspace {}", workspace.display()))?;
    for (what, dir) in [
        ("config", &dirs.config),
        ("data", &dirs.data),
        ("cache", &dirs.cache),
        ("plugins", &dirs.plugins),
    ] {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        let dir = dir.canonicalize().unwrap_or(dir);
        if dir.starts_with(&ws) || ws.starts_with(&dir) {
            bail!(
                "the workspace {} overlaps agent's {what} directory {}; tools could change agent's own files. Choose another --workspace",
                ws.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

impl Session {
    /// Resolve settings (with `flags`), prepare the workspace, open the store.
    pub fn open(options: &RunOptions) -> anyhow::Result<Self> {
        let dirs = super::dirs()?;
        let (layer, names) = options.layer();
        let config = Config::load(&dirs.config_file(), &layer, &names)?;
        let workspace = super::absolute(&config.workspace)?;
        std::fs::create_dir_all(&workspace)
            .with_context(|| format!("cannot create workspace {}", workspace.display()))?;
        check_workspace(&workspace, &dirs)?;
        let store = Store::open(&dirs.store())?;
        let journal = RunJournal::new(&store)?;
        Ok(Self {
            dirs,
            config,
            workspace,
            store,
            journal,
            approve: None,
            continuous: false,
            plugins: Default::default(),
            recipes: Default::default(),
            resident: Default::default(),
            checker: Default::default(),
        })
    }

    /// The approver of a run: the config's policies and `--approve`; asks on
    /// the terminal when the run is interactive and one is attached, runs
    /// everything with `--yes`, and otherwise refuses what would need asking.
    pub fn approver(&self, interactive: bool) -> Arc<crate::agent::approval::PolicyApprover> {
        use crate::agent::approval::{Mode, PolicyApprover};
        use crate::ui::approve::TerminalPrompter;
        let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        let mode = if self.continuous {
            Mode::Continuous
        } else if interactive && terminal {
            Mode::Interactive(Arc::new(TerminalPrompter))
        } else {
            Mode::NonInteractive
        };
        let permissions = self
            .plugins
            .lock()
            .map(|p| super::chat::permissions(&p))
            .unwrap_or_default();
        let approver = PolicyApprover::new(self.config.approvals.clone(), mode)
            .with_permissions(permissions)
            .with_source_policies(self.source_policies());
        approver.set_all(self.approve);
        Arc::new(approver)
    }

    /// The tools of a run: built-ins, then every plugin that loads. A plugin
    /// that fails to load is reported and left out; the run goes on without it.
    pub async fn tools(&self, interactive: bool) -> anyhow::Result<ToolRegistry> {
        let mut registry = ToolRegistry::new();
        registry.register(Arc::new(Finish))?;
        for tool in super::memory::run_tools(&self.store, &self.dirs, &self.config)? {
            registry.register(tool)?;
        }
        if interactive {
            registry.register(Arc::new(AskHuman::new(Arc::new(TerminalHuman))))?;
        }
        for tool in self.plugin_tools().await? {
            registry.register(tool)?;
        }
        for tool in self.mcp_tools().await {
            if let Err(e) = registry.register(tool) {
                eprintln!("warning: an MCP tool is left out: {e}");
            }
        }
        if self.config.recipe_tools {
            self.recipe_tools(&mut registry);
        }
        Ok(registry)
    }

    /// The tools of every plugin that loads (one that does not is reported
    /// and left out), with the workspace and grants of their manifests;
    /// [`Session::plugins`] then lists them.
    pub async fn plugin_tools(&self) -> anyhow::Result<Vec<Arc<dyn crate::tools::Tool>>> {
        let mut host = PluginHost::new(
            self.dirs.clone(),
            self.config.plugins.clone(),
            self.workspace.clone(),
        )?;
        host.set_progress(super::plugin::progress_reporter());
        host.load_all().await;
        for (name, _origin, error) in host.failures() {
            eprintln!(
                "warning: plugin `{}` was not loaded: {}",
                crate::sanitize::one_line(name, 64),
                crate::sanitize::one_line(&error.to_string(), 500)
            );
        }
        if let Ok(mut p) = self.plugins.lock() {
            *p = host.list();
        }
        let tools = host.tools();
        if let Ok(mut c) = self.checker.lock() {
            *c = tools
                .iter()
                .find(|t| t.spec().class == crate::tools::ToolClass::Execute)
                .cloned();
        }
        Ok(tools)
    }

    /// The tools of the enabled MCP servers of the config, each server
    /// started now; one that does not start is reported and left out.
    async fn mcp_tools(&self) -> Vec<Arc<dyn crate::tools::Tool>> {
        let mut out = Vec::new();
        for config in self.config.mcp.iter().filter(|s| s.enabled) {
            match crate::mcp::Server::start(config.clone()).await {
                Ok((server, listed)) => {
                    let (tools, problems) = server.tools(&listed);
                    for p in problems {
                        eprintln!(
                            "warning: MCP server `{}`: {}",
                            config.name,
                            crate::sanitize::one_line(&p, 300)
                        );
                    }
                    out.extend(tools);
                }
                Err(e) => eprintln!(
                    "warning: {}; its tools are left out",
                    crate::sanitize::one_line(&e.to_string(), 500)
                ),
            }
        }
        out
    }

    /// The approval of each MCP server's tools (by tool source), where the
    /// config does not name the tool.
    pub fn source_policies(
        &self,
    ) -> std::collections::BTreeMap<String, crate::agent::approval::Policy> {
        self.config
            .mcp
            .iter()
            .filter_map(|s| Some((s.source(), s.approve.parse().ok()?)))
            .collect()
    }

    /// Where recipes are found: `./recipes/`, the config directory's
    /// `recipes/`, the built-in ones.
    pub fn library(&self) -> crate::recipe::Library {
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        crate::recipe::Library::new(&here, &self.dirs.config)
    }

    /// Offer the user's recipes (project and config directory; the
    /// built-in ones are run by name, not offered to every run) as tools
    /// `recipe_NAME`. A recipe that does not load is reported and left out.
    fn recipe_tools(&self, registry: &mut ToolRegistry) {
        let (tools, invalid) = self.recipes_as_tools(self.library().own());
        for tool in tools {
            let name = crate::tools::Tool::spec(&tool).name.clone();
            if let Err(e) = registry.register(Arc::new(tool)) {
                eprintln!("warning: recipe tool `{name}` is left out: {e}");
            }
        }
        if !invalid.is_empty() {
            eprintln!(
                "warning: {} {} not valid and not offered as tools (from ./recipes/ or the config directory's recipes/); `agent recipe list` says why, `recipe_tools: false` stops offering recipes",
                invalid.join(", "),
                if invalid.len() == 1 { "is" } else { "are" },
            );
        }
    }

    /// `listed` recipes as tools `recipe_NAME`, run by this session's kit,
    /// and the names of those that do not load (`agent recipe list` says
    /// why).
    pub fn recipes_as_tools(
        &self,
        listed: Vec<crate::recipe::Listed>,
    ) -> (Vec<crate::agent::recipe::tool::RecipeTool>, Vec<String>) {
        use crate::agent::recipe::tool::{RecipeTool, Target};
        let (mut tools, mut invalid) = (Vec::new(), Vec::new());
        for listed in listed {
            let name = listed.name.clone();
            match listed.into_loaded() {
                Ok(loaded) => {
                    let name = loaded.tool_name();
                    tools.push(RecipeTool::new(
                        Target::Slot(self.recipes.clone()),
                        loaded,
                        name,
                        None,
                        Default::default(),
                        0,
                    ));
                }
                Err(e) => {
                    tracing::debug!("recipe `{name}` is not offered as a tool: {e}");
                    invalid.push(crate::sanitize::one_line(&name, 64));
                }
            }
        }
        (tools, invalid)
    }

    /// Opens a model a recipe names, on its first call, sized beside the
    /// local models the session holds.
    fn opener(&self) -> crate::agent::recipe::ModelOpener {
        let (dirs, config) = (self.dirs.clone(), self.config.clone());
        let resident = self
            .resident
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| Resident::new(self.memory_limit()));
        Arc::new(move |model: &str| {
            let spec = RoleSpec::named(model.to_string());
            lazy_model(
                &dirs,
                &config,
                ModelRole::Default,
                &spec,
                &resident,
                Vec::new(),
            )
            .map(|l| Arc::new(l) as Arc<dyn ModelBackend>)
            .map_err(|e| format!("{e:#}"))
        })
    }

    /// What runs recipes for the parts [`Session::parts`] built last.
    pub fn kit(&self) -> anyhow::Result<Arc<crate::agent::recipe::RecipeKit>> {
        self.recipes
            .lock()
            .ok()
            .and_then(|k| k.clone())
            .context("the session has no parts yet to run a recipe with")
    }

    /// Open the model backend the settings name, pulling it on first use.
    /// A scripted model resumes after the `skip_responses` it already gave.
    pub async fn model(
        &self,
        settings: &RunSettings,
        skip_responses: usize,
    ) -> anyhow::Result<Arc<dyn ModelBackend>> {
        if !settings.lora.is_empty() {
            lora_applies(
                &settings.model,
                settings.endpoint.as_deref(),
                self.config.engine,
                false,
            )?;
        }
        if settings.endpoint.is_none()
            && let Some(path) = settings.model.strip_prefix("scripted:")
        {
            let backend = ScriptedBackend::from_file(Path::new(path))?;
            backend.skip(skip_responses);
            return Ok(Arc::new(backend));
        }
        let options = BackendOptions {
            model: settings.model.clone(),
            endpoint: settings.endpoint.clone(),
            api_key_env: self.config.api_key_env.clone(),
            request_timeout: Duration::from_secs(self.config.model_timeout_secs),
            context_tokens: Some(self.config.context_tokens as usize),
            force_cpu: false,
            engine: self.config.engine,
            lora: settings.lora.clone(),
        };
        let progress = PullProgress(ProgressBars::new());
        let backend = open_backend(&options, &self.dirs, &progress).await;
        progress.0.clear();
        Ok(backend?)
    }

    /// The models of a run by role: the default one opened now (as
    /// [`Session::model`]), every other one when it is first called. A role
    /// naming the default model, or the same model as another role, shares
    /// its backend. Local models are checked to fit in memory together
    /// before any is loaded (those already pulled now, the others when they
    /// are pulled).
    pub async fn models(
        &self,
        settings: &RunSettings,
        skip_responses: usize,
    ) -> anyhow::Result<RoleModels> {
        let resident = Resident::new(self.memory_limit());
        if let Ok(mut r) = self.resident.lock() {
            *r = Some(resident.clone());
        }
        let mut locals = Vec::new();
        for (model, endpoint) in std::iter::once((&settings.model, &settings.endpoint))
            .chain(settings.roles.values().map(|s| (&s.model, &s.endpoint)))
        {
            if endpoint.is_none()
                && let Some(need) = self.local_need(model)?
                && !locals.iter().any(|(m, _)| m == &need.0)
            {
                locals.push(need);
            }
        }
        resident.check(&locals)?;
        let default = self.model(settings, skip_responses).await?;
        if settings.endpoint.is_none()
            && let Some(need) = locals.iter().find(|(m, _)| *m == settings.model)
        {
            resident.add(need.clone());
        }
        self.with_roles(settings, default, &resident)
    }

    /// The models of a run by role, every one (the default too) opened when
    /// it is first called: for `agent mcp serve`, which may never need one.
    pub fn models_on_first_use(&self, settings: &RunSettings) -> anyhow::Result<RoleModels> {
        let resident = Resident::new(self.memory_limit());
        if let Ok(mut r) = self.resident.lock() {
            *r = Some(resident.clone());
        }
        let spec = RoleSpec {
            model: settings.model.clone(),
            endpoint: settings.endpoint.clone(),
            ..RoleSpec::default()
        };
        let default = lazy_model(
            &self.dirs,
            &self.config,
            ModelRole::Default,
            &spec,
            &resident,
            settings.lora.clone(),
        )?;
        self.with_roles(settings, Arc::new(default), &resident)
    }

    /// `default` with the other roles of `settings`: a role naming the
    /// default model, or the same model as another role, shares its
    /// backend; any other is opened on its first call.
    fn with_roles(
        &self,
        settings: &RunSettings,
        default: Arc<dyn ModelBackend>,
        resident: &Resident,
    ) -> anyhow::Result<RoleModels> {
        let mut models = RoleModels::single(default.clone());
        if let Some(price) = self
            .config
            .default_price
            .filter(|_| settings.model == self.config.model)
        {
            models = models.priced(ModelRole::Default, price);
        }
        let mut opened: Vec<(&RoleSpec, Arc<dyn ModelBackend>)> = Vec::new();
        for (role, spec) in &settings.roles {
            if let Some(price) = spec.price() {
                models = models.priced(*role, price);
            }
            let same = |model: &str, endpoint: &Option<String>| {
                spec.model == model && &spec.endpoint == endpoint
            };
            if same(&settings.model, &settings.endpoint) {
                models = models.with(*role, default.clone());
                continue;
            }
            if let Some((_, backend)) = opened.iter().find(|(s, _)| same(&s.model, &s.endpoint)) {
                models = models.with(*role, backend.clone());
                continue;
            }
            let backend: Arc<dyn ModelBackend> = Arc::new(self.lazy(*role, spec, resident)?);
            opened.push((spec, backend.clone()));
            models = models.with(*role, backend);
        }
        Ok(models)
    }

    /// The cap on the memory local models may use: `memory_limit_mb`, else
    /// what the machine has free; `None` where neither is known.
    fn memory_limit(&self) -> Option<(u64, String)> {
        match self.config.memory_limit_mb {
            Some(mb) => Some((mb << 20, format!("memory_limit_mb: {mb}"))),
            None => crate::model::roles::available_bytes()
                .map(|b| (b, "what the machine has available now".to_string())),
        }
    }

    /// What the local model `model` needs in memory, when it is a GGUF
    /// file already here (a path, or pulled into the cache); an unknown
    /// reference is an error naming the choices.
    fn local_need(&self, model: &str) -> anyhow::Result<Option<(String, u64)>> {
        let reference = ModelRef::parse(model)?;
        if matches!(reference, ModelRef::Scripted(_)) {
            return Ok(None);
        }
        let Some(cached) = crate::model::pull::cached(&reference, &self.dirs.models()) else {
            return Ok(None);
        };
        let bytes = estimate_bytes(&cached.path, self.config.context_tokens as usize)
            .map_err(|e| anyhow::anyhow!("cannot size the model {model}: {e}"))?;
        Ok(Some((model.to_string(), bytes)))
    }

    /// The backend of `role`, opened on its first call.
    fn lazy(&self, role: ModelRole, spec: &RoleSpec, resident: &Resident) -> anyhow::Result<Lazy> {
        lazy_model(&self.dirs, &self.config, role, spec, resident, Vec::new())
    }
    /// The settings a new run records, from the resolved configuration,
    /// `--approve`/`--yes`, and the grants of the plugins [`Session::tools`]
    /// loaded (call it first).
    /// Fails when a LoRA adapter the settings name cannot be read.
    pub fn run_settings(&self, interactive: bool) -> anyhow::Result<RunSettings> {
        let c = &self.config;
        if !c.lora.is_empty() {
            lora_applies(&c.model, c.endpoint.as_deref(), c.engine, false)?;
        }
        let lora = c
            .lora
            .iter()
            .map(crate::model::lora::LoraUse::of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunSettings {
            model: c.model.clone(),
            endpoint: c.endpoint.clone(),
            max_steps: c.max_steps,
            max_tokens: c.max_tokens,
            step_tokens: c.step_tokens,
            timeout_secs: c.timeout_secs,
            temperature: c.temperature as f32,
            samples: c.samples,
            sample_temperature: if c.samples > 1 {
                c.sample_temperature as f32
            } else {
                0.0
            },
            workspace: self.workspace.display().to_string(),
            interactive,
            approvals: crate::agent::approval::RecordedApprovals {
                config: c.approvals.clone(),
                approve: self.approve,
                continuous: self.continuous,
            }
            .to_json(),
            grants: self
                .plugins
                .lock()
                .map(|p| super::chat::permissions(&p))
                .unwrap_or_default(),
            roles: c.models.clone(),
            recipe: None,
            mcp: None,
            lora,
        })
    }

    /// The agent's limits for `settings`.
    pub fn agent_settings(&self, settings: &RunSettings) -> AgentSettings {
        AgentSettings {
            max_steps: settings.max_steps,
            max_tokens: settings.max_tokens,
            step_tokens: self.config.step_tokens,
            timeout: Duration::from_secs(settings.timeout_secs),
            model_timeout: Duration::from_secs(self.config.model_timeout_secs),
            temperature: settings.temperature,
            samples: settings.samples.max(1),
            // Also what a repeated action is drawn again at, when the run
            // samples nothing else (recorded as 0 then).
            sample_temperature: if settings.sample_temperature > 0.0 {
                settings.sample_temperature
            } else {
                self.config.sample_temperature as f32
            },
            past_examples: self.config.past_examples,
            repeat_resamples: self.config.repeat_resamples,
            observation_chars: self.config.observation_chars as usize,
            context_tokens: self.config.context_tokens as usize,
            workspace: (!settings.workspace.is_empty()).then(|| PathBuf::from(&settings.workspace)),
            instructions: settings
                .recipe
                .as_ref()
                .and_then(|r| r.instructions.clone()),
        }
    }
}

/// The backend of `role` from `spec`, opened on its first call (pulled
/// if need be, and sized beside the local models `resident` holds).
fn lazy_model(
    dirs: &Dirs,
    config: &Config,
    role: ModelRole,
    spec: &RoleSpec,
    resident: &Resident,
    lora: Vec<crate::model::lora::LoraUse>,
) -> anyhow::Result<Lazy> {
    let name = match &spec.endpoint {
        Some(endpoint) => format!("{}@{endpoint}", spec.model.trim()),
        None => ModelRef::parse(&spec.model)
            .with_context(|| format!("the `{role}` model"))?
            .label(),
    };
    let options = BackendOptions {
        model: spec.model.clone(),
        endpoint: spec.endpoint.clone(),
        api_key_env: spec
            .api_key_env
            .clone()
            .unwrap_or_else(|| config.api_key_env.clone()),
        request_timeout: Duration::from_secs(config.model_timeout_secs),
        context_tokens: Some(config.context_tokens as usize),
        force_cpu: false,
        engine: config.engine,
        lora,
    };
    let dirs = dirs.clone();
    let resident = resident.clone();
    let context = config.context_tokens as usize;
    Ok(Lazy::new(
        name,
        Box::new(move || {
            let (options, dirs, resident) = (options.clone(), dirs.clone(), resident.clone());
            Box::pin(async move {
                tracing::info!(role = %role, model = %options.model, "opening a model on first use");
                let progress = PullProgress::new();
                if options.endpoint.is_none()
                    && let Ok(reference) = ModelRef::parse(&options.model)
                    && !matches!(reference, ModelRef::Scripted(_))
                {
                    // Pulled first (if need be), then sized beside what
                    // is loaded already, then loaded.
                    let puller = crate::model::pull::Puller::from_env()
                        .map_err(crate::model::open::pull_error)?;
                    let path = puller
                        .resolve_or_pull(&reference, &dirs.models(), &progress)
                        .await
                        .map_err(crate::model::open::pull_error)?;
                    let bytes = estimate_bytes(&path, context).map_err(ModelError::Load)?;
                    let need = (options.model.clone(), bytes);
                    resident.check_with(&need).map_err(ModelError::Load)?;
                    resident.add(need);
                }
                let backend = open_backend(&options, &dirs, &progress).await;
                progress.clear();
                backend
            })
        }),
    ))
}

/// The local models a run holds in memory, and the cap they must fit under
/// together (`crate::model::roles::check_fit`). Cloning shares the list.
#[derive(Clone)]
struct Resident {
    limit: Option<(u64, String)>,
    loaded: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
}

impl Resident {
    fn new(limit: Option<(u64, String)>) -> Self {
        Self {
            limit,
            loaded: Default::default(),
        }
    }

    /// Refuse `needs` (models not loaded yet) if they do not fit.
    fn check(&self, needs: &[(String, u64)]) -> anyhow::Result<()> {
        let Some((limit, source)) = &self.limit else {
            return Ok(());
        };
        check_fit(needs, *limit, source).map_err(anyhow::Error::msg)
    }

    /// Refuse `need` if it does not fit beside the models loaded already.
    fn check_with(&self, need: &(String, u64)) -> Result<(), String> {
        let Some((limit, source)) = &self.limit else {
            return Ok(());
        };
        let mut all = self.loaded.lock().map(|l| l.clone()).unwrap_or_default();
        all.push(need.clone());
        check_fit(&all, *limit, source)
    }

    fn add(&self, need: (String, u64)) {
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.push(need);
        }
    }
}

/// Model download and load progress: bars on a terminal, and a plain line
/// on stderr either way when a model is pulled, so a first run says why it
/// is waiting.
pub(crate) struct PullProgress(ProgressBars);

impl PullProgress {
    pub(crate) fn new() -> Self {
        Self(ProgressBars::new())
    }

    /// Remove whatever bar is showing.
    pub(crate) fn clear(&self) {
        self.0.clear();
    }
}

impl ModelProgress for PullProgress {
    fn event(&self, event: &ModelEvent) {
        if !std::io::stderr().is_terminal() {
            match event {
                ModelEvent::DownloadStarted { what, source, .. } => {
                    eprintln!("pulling model {what} from {source} (first use; cached afterwards)")
                }
                // The bars would say it a second time.
                ModelEvent::FallingBack { reason, source } => {
                    eprintln!("{reason}; trying {source}");
                    return;
                }
                _ => {}
            }
        }
        self.0.event(event);
    }
}

/// True when the run may ask the user things.
pub fn interactive(yes: bool, json: bool) -> bool {
    !yes && !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

impl Session {
    /// The long-term memory hook of a run.
    pub fn memory_hook(&self) -> anyhow::Result<Arc<dyn MemoryHook>> {
        super::memory::run_hook(&self.store, &self.dirs, &self.config)
    }

    /// The parts of an agent for a run with `settings`: this session's
    /// journal, the run's limits, and the given approver and memory.
    pub fn parts(
        &self,
        models: &RoleModels,
        tools: Arc<ToolRegistry>,
        events: UnboundedSender<Event>,
        settings: &RunSettings,
        approver: Option<Arc<dyn Approver>>,
        memory: Option<Arc<dyn MemoryHook>>,
    ) -> AgentParts {
        let parts = AgentParts {
            approver,
            memory,
            ..AgentParts::new(
                models,
                tools.clone(),
                self.journal.clone(),
                events,
                self.agent_settings(settings),
            )
        };
        // Recipes run by these parts, or called as tools, use the same
        // models, approver, memory and events, with the session's tools.
        let kit = crate::agent::recipe::RecipeKit {
            parts: AgentParts {
                tools: Arc::new(ToolRegistry::new()),
                ..parts.clone()
            },
            settings: settings.clone(),
            tools: tools
                .tools()
                .into_iter()
                .filter(|t| {
                    let spec = t.spec();
                    spec.name != crate::tools::builtin::FINISH
                        && !spec.source.starts_with("recipe:")
                })
                .collect(),
            checker: self.checker.lock().ok().and_then(|c| c.clone()),
            prompts: self.prompts(),
            plans: PlanStore::new(&self.store).ok(),
            library: self.library(),
            open_model: Some(self.opener()),
            opened: Default::default(),
        };
        if let Ok(mut slot) = self.recipes.lock() {
            *slot = Some(Arc::new(kit));
        }
        parts
    }

    /// The agent of `strategy` from `parts`; a plan run gets this
    /// session's plan store and `reviewer`.
    pub fn agent(
        &self,
        strategy: Strategy,
        parts: AgentParts,
        reviewer: Option<Arc<dyn PlanReviewer>>,
    ) -> anyhow::Result<Agent> {
        let plan = match strategy {
            Strategy::Plan => Some(PlanParts {
                plans: PlanStore::new(&self.store)?,
                reviewer,
            }),
            Strategy::React => None,
        };
        Ok(parts.build(strategy, &self.prompts(), plan)?)
    }

    /// The prompt library (the user's prompts dir over the built-in ones).
    pub fn prompts(&self) -> PromptLibrary {
        PromptLibrary::new(&self.dirs.prompts)
    }
}

/// Ctrl-C wired to a cancellation token, while this value lives.
pub struct CtrlC(tokio::task::JoinHandle<()>);

impl Drop for CtrlC {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cancel `cancel` on Ctrl-C. With `second_exits`, a second Ctrl-C leaves
/// at once with status 130 (the journal is consistent after every step);
/// a session instead stays open for the next request.
pub fn on_ctrl_c(cancel: &CancellationToken, second_exits: bool) -> CtrlC {
    let on_signal = cancel.clone();
    CtrlC(tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
            if second_exits && tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_around_agents_files_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let dirs = Dirs::resolve(Some(&home.path().join("agent-home")), None).unwrap();
        std::fs::create_dir_all(&dirs.config).unwrap();
        let e = check_workspace(home.path(), &dirs).unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        let ws = home.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        check_workspace(&ws, &dirs).unwrap();
    }
}
