//! `agent plugin ...`: list, inspect, call, scaffold, build, install and
//! remove WebAssembly plugins.
//!
//! `call` runs one tool through exactly the sandbox the agent uses (same
//! manifest checks, same grant from the user's `plugins:` config, same limits),
//! so a plugin can be tried and debugged without a model. Everything printed
//! that comes from a plugin or its manifest goes through
//! [`neutralize_controls`] first: a manifest or a tool result cannot drive the
//! terminal or dress up the install prompt.
//!
//! `install` shows what the plugin asks for and what it would be granted, and
//! asks on the terminal; without a terminal it refuses unless `--yes` is given.
//! What it approves is pinned (the manifest's sha256): an installed plugin
//! whose manifest changes afterwards is not loaded until `approve` shows the
//! new manifest (beside what was approved before) and is answered the same way.
//!
//! Size: one job, the `agent plugin` subcommands (list, inspect, new, build,
//! install, approve, remove, call, bench) and the text they print; their
//! logic lives in `crate::plugin`, their tests in tests/it/plugins.rs.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::paths::Dirs;
use crate::plugin::manifest::WorkspaceAccess;
use crate::plugin::policy::{Grant, PluginPolicy};
use crate::plugin::{ApprovalPlan, CompileEvent, InstallPlan, Origin, PluginHost, PluginInfo};
use crate::sanitize::{neutralize_controls, one_line};
use crate::tools::{ToolError, ToolRegistry};

/// `agent plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List plugins with their tools and permissions.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one plugin: tools, argument schemas, requested and granted permissions.
    Inspect {
        /// Plugin name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one tool in the agent's sandbox and print its result (exit 1 on a tool error).
    Call {
        /// Plugin name.
        name: String,
        /// Tool name.
        tool: String,
        /// Arguments as a JSON object (`-` reads them from stdin).
        #[arg(default_value = "{}")]
        args: String,
        /// The workspace the plugin sees as /workspace (default: the configured one).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
    },
    /// Create a new Rust plugin crate with the WIT and a manifest.
    New {
        /// Plugin name (a-z, 0-9, `-`, `_`).
        name: String,
    },
    /// Build a plugin crate into a component and fill in its manifest's sha256.
    Build {
        /// The plugin crate (default: the current directory).
        dir: Option<PathBuf>,
    },
    /// Install a plugin (a directory with manifest.yaml and its .wasm) after showing its permissions.
    Install {
        /// Plugin directory, manifest or .wasm.
        path: PathBuf,
        /// Install without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Review an installed plugin whose manifest changed since it was approved
    /// (or that was never approved) and approve it, so it loads again.
    Approve {
        /// Plugin name.
        name: String,
        /// Approve without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Remove an installed plugin.
    Remove {
        /// Plugin name.
        name: String,
    },
    /// Measure plugin compile and call latency.
    #[command(hide = true)]
    Bench {
        /// Calls to time.
        #[arg(long, default_value_t = 2000)]
        iterations: u32,
        /// Also measure the Python `code` plugin (compiles it: 15-30 s).
        #[arg(long)]
        with_code: bool,
    },
}

/// Append one formatted line to a `String`.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Write to stdout; a closed pipe (`agent plugin list | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A directory removed on drop (for commands that need no real workspace).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!(
            "agent-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spinner on stderr while a plugin compiles (a plain line without a terminal).
pub fn progress_reporter() -> crate::plugin::ProgressFn {
    let bar: Arc<std::sync::Mutex<Option<indicatif::ProgressBar>>> = Arc::default();
    Arc::new(move |event| match event {
        CompileEvent::Started { plugin, bytes } => {
            let msg = format!(
                "compiling plugin `{plugin}` ({:.1} MB; once, then cached)",
                bytes as f64 / 1e6
            );
            if std::io::stderr().is_terminal() {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_message(msg);
                pb.enable_steady_tick(Duration::from_millis(100));
                if let Ok(mut b) = bar.lock() {
                    *b = Some(pb);
                }
            } else if bytes > 4 * 1024 * 1024 {
                eprintln!("{msg}");
            }
        }
        CompileEvent::Finished { plugin, elapsed } => {
            let spinner = bar.lock().ok().and_then(|mut b| b.take());
            if let Some(pb) = spinner {
                pb.finish_and_clear();
            }
            if elapsed > Duration::from_secs(1) {
                eprintln!(
                    "compiled plugin `{plugin}` in {:.1} s",
                    elapsed.as_secs_f64()
                );
            }
        }
    })
}

async fn open_host(
    dirs: &Dirs,
    policy: &PluginPolicy,
    workspace: &Path,
) -> anyhow::Result<PluginHost> {
    let mut host = PluginHost::new(dirs.clone(), policy.clone(), workspace.to_path_buf())?;
    host.set_progress(progress_reporter());
    host.load_all().await;
    Ok(host)
}

/// Run `agent plugin ...`. `workspace` is the configured workspace (used by `call`).
pub async fn execute(
    cmd: PluginCommand,
    dirs: &Dirs,
    policy: &PluginPolicy,
    workspace: &Path,
) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::List { json } => {
            let scratch = ScratchDir::new("plugins")?;
            let host = open_host(dirs, policy, &scratch.0).await?;
            let list = host.list();
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&list)?))?;
            } else {
                emit(&render_list(&list))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Inspect { name, json } => {
            let scratch = ScratchDir::new("plugins")?;
            let host = open_host(dirs, policy, &scratch.0).await?;
            let info = host.inspect(&name)?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&info)?))?;
            } else {
                emit(&render_inspect(&info))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Call {
            name,
            tool,
            args,
            workspace: ws,
        } => {
            let ws = match ws {
                Some(w) => w,
                None => {
                    let w = std::path::absolute(workspace)?;
                    std::fs::create_dir_all(&w)
                        .with_context(|| format!("cannot create workspace {}", w.display()))?;
                    w
                }
            };
            call(dirs, policy, &ws, &name, &tool, &args).await
        }
        PluginCommand::New { name } => {
            let dir = crate::plugin::scaffold::new_plugin(&std::env::current_dir()?, &name)?;
            println!("created plugin crate {}", dir.display());
            println!(
                "next: agent plugin build {0} && agent plugin install {0}",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => std::env::current_dir()?,
            };
            let built = crate::plugin::scaffold::build_plugin(
                &dir,
                &crate::plugin::scaffold::BuildOptions::default(),
            )?;
            println!(
                "built {} ({} bytes, sha256 {})",
                built.wasm.display(),
                built.size,
                built.sha256
            );
            println!("next: agent plugin install {}", built.dir.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Install { path, yes } => {
            let scratch = ScratchDir::new("plugins")?;
            let host = open_host(dirs, policy, &scratch.0).await?;
            let plan = host.prepare_install(&path).await?;
            print_plan(&plan);
            if !yes && !confirm("install", &plan.manifest.name)? {
                eprintln!("not installed");
                return Ok(ExitCode::from(1));
            }
            let name = plan.manifest.name.clone();
            let dest = host.commit_install(plan)?;
            println!("installed `{name}` in {}", dest.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Approve { name, yes } => {
            let scratch = ScratchDir::new("plugins")?;
            let host = open_host(dirs, policy, &scratch.0).await?;
            let plan = host.prepare_approve(&name).await?;
            if plan.unchanged {
                println!("`{name}` is approved already: its manifest is the one approved");
                return Ok(ExitCode::SUCCESS);
            }
            print_approval(&plan);
            if !yes && !confirm("approve", &name)? {
                eprintln!("not approved; `{name}` stays unloaded");
                return Ok(ExitCode::from(1));
            }
            host.commit_approve(plan)?;
            println!("approved `{name}`; it loads from the next start");
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Remove { name } => {
            let scratch = ScratchDir::new("plugins")?;
            let host = PluginHost::new(dirs.clone(), policy.clone(), scratch.0.clone())?;
            let dir = host.remove(&name)?;
            println!("removed `{name}` ({})", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Bench {
            iterations,
            with_code,
        } => bench(policy, iterations, with_code).await,
    }
}

async fn call(
    dirs: &Dirs,
    policy: &PluginPolicy,
    ws: &Path,
    name: &str,
    tool: &str,
    args: &str,
) -> anyhow::Result<ExitCode> {
    let args_text = if args == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        args.to_string()
    };
    let args: serde_json::Value = match serde_json::from_str(&args_text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "error: ARGS_JSON is not valid JSON ({e}); pass an object such as '{{\"path\": \".\"}}'"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let host = open_host(dirs, policy, ws).await?;
    let Some(plugin) = host.get(name) else {
        // A plugin that failed to load says why.
        host.inspect(name)?;
        bail!("no plugin named `{name}`");
    };
    // The agent checks arguments against the tool's schema before dispatch; so do we.
    let mut registry = ToolRegistry::new();
    for t in host.tools().into_iter().filter(|t| t.spec().source == name) {
        registry.register(t)?;
    }
    if registry.get(tool).is_none() {
        eprintln!(
            "error: plugin `{name}` has no tool `{tool}`; it offers: {}",
            registry.names().join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    if let Err(msg) = registry.check_args(tool, &args) {
        eprintln!("error: {}", neutralize_controls(&msg));
        return Ok(ExitCode::from(1));
    }
    let cancel = CancellationToken::new();
    let ctrl_c = super::context::on_ctrl_c(&cancel, false);
    let report = plugin.call(tool, &args.to_string(), cancel).await;
    drop(ctrl_c);
    tracing::debug!("{name}.{tool} took {:?}", report.elapsed);
    if !report.stderr.is_empty() {
        tracing::info!("plugin stderr:\n{}", neutralize_controls(&report.stderr));
    }
    if !report.stdout.is_empty() {
        tracing::info!("plugin stdout:\n{}", neutralize_controls(&report.stdout));
    }
    match report.result {
        Ok(text) => {
            emit(&format!("{text}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(ToolError::Observation(e)) => {
            eprintln!("tool error: {}", neutralize_controls(&e));
            Ok(ExitCode::from(1))
        }
        Err(ToolError::Cancelled) => {
            eprintln!("cancelled");
            Ok(ExitCode::from(1))
        }
        Err(ToolError::Fatal(e)) => bail!("{}", neutralize_controls(&e)),
    }
}

/// Ask `Install/Approve plugin NAME with these permissions?` on the terminal;
/// without one, refuse and say to pass `--yes`.
fn confirm(verb: &str, name: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "not done: there is no terminal to confirm on; pass --yes to {verb} `{name}` non-interactively"
        );
    }
    let mut question = verb.to_string();
    if let Some(first) = question.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    eprint!("{question} plugin `{name}` with these permissions? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn network_words(hosts: &[String], any_public: bool, local: &[String]) -> String {
    let mut parts = Vec::new();
    if any_public {
        parts.push("any public host".to_string());
    }
    if !hosts.is_empty() {
        parts.push(hosts.join(", "));
    }
    if !local.is_empty() {
        parts.push(format!("local: {}", local.join(", ")));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        neutralize_controls(&parts.join("; "))
    }
}

fn render_list(list: &[PluginInfo]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        outln!(out, "no plugins");
        return out;
    }
    // A plugin's name may be a directory name anyone could choose (case 44).
    let names: Vec<String> = list.iter().map(|p| one_line(&p.name, 64)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    for (p, name) in list.iter().zip(&names) {
        let origin = match &p.origin {
            Origin::Builtin => "built-in".to_string(),
            Origin::Installed(_) => "installed".to_string(),
        };
        match (&p.granted, &p.error) {
            (Some(g), _) => {
                let tools: Vec<&str> = p.tools.iter().map(|t| t.name.as_str()).collect();
                outln!(
                    out,
                    "{:width$}  {:8}  {:9}  workspace {:5}  network {}  tools: {}",
                    name,
                    neutralize_controls(&p.version),
                    origin,
                    g.workspace.to_string(),
                    network_words(&g.http_hosts, g.any_public_host, &g.allow_local),
                    tools.join(", ")
                );
            }
            (None, Some(e)) => outln!(
                out,
                "{:width$}  {:8}  {:9}  {}: {}",
                name,
                "",
                origin,
                if p.status == "not_approved" {
                    "NOT APPROVED"
                } else {
                    "error"
                },
                one_line(e, 500)
            ),
            (None, None) => outln!(out, "{:width$}  {:8}  {:9}  {}", name, "", origin, p.status),
        }
    }
    out
}

fn render_inspect(p: &PluginInfo) -> String {
    let mut out = String::new();
    outln!(out, "{} {}", p.name, neutralize_controls(&p.version));
    if !p.description.is_empty() {
        outln!(out, "  {}", neutralize_controls(&p.description));
    }
    match &p.origin {
        Origin::Builtin => outln!(out, "  built in"),
        Origin::Installed(dir) => outln!(out, "  installed in {}", dir.display()),
    }
    if let (Some(r), Some(g)) = (&p.requested, &p.granted) {
        outln!(
            out,
            "permissions      requested                      granted"
        );
        outln!(
            out,
            "  workspace      {:30} {}",
            r.workspace.to_string(),
            g.workspace
        );
        outln!(
            out,
            "  network        {:30} {}",
            network_words(&r.http.hosts, false, &[]),
            network_words(&g.http_hosts, g.any_public_host, &g.allow_local)
        );
        outln!(
            out,
            "  memory         {:30} {} MB",
            format!("{} MB", r.memory_mb),
            g.memory_mb
        );
        outln!(
            out,
            "  time limit     {:30} {} ms",
            format!("{} ms", r.timeout_ms),
            g.timeout_ms
        );
        outln!(
            out,
            "  output         {:30} {} KB",
            format!("{} KB", r.output_kb),
            g.output_kb
        );
        if !g.env.is_empty() {
            outln!(
                out,
                "  environment    {}",
                neutralize_controls(&g.env.join(", "))
            );
        }
    }
    outln!(
        out,
        "tools ({}):",
        p.tools
            .first()
            .map(|t| format!("{:?}", t.class).to_lowercase())
            .unwrap_or_default()
    );
    for t in &p.tools {
        outln!(
            out,
            "  {} — {}",
            t.name,
            neutralize_controls(&t.description)
        );
        let schema = serde_json::to_string_pretty(&t.args_schema).unwrap_or_default();
        for line in schema.lines() {
            outln!(out, "      {}", neutralize_controls(line));
        }
    }
    out
}

fn describe_grant(g: &Grant) -> Vec<String> {
    let ws = match g.workspace {
        WorkspaceAccess::None => "no access to the workspace".to_string(),
        WorkspaceAccess::Read => "read the workspace".to_string(),
        WorkspaceAccess::Write => "read and WRITE the workspace".to_string(),
    };
    let hosts: Vec<String> = g.http.hosts.iter().map(ToString::to_string).collect();
    let local: Vec<String> = g.http.allow_local.iter().map(ToString::to_string).collect();
    vec![
        ws,
        format!(
            "network: {}",
            network_words(&hosts, g.http.any_public_host, &local)
        ),
        format!(
            "limits: {} MB memory, {} ms per call, {} KB output",
            g.memory_mb,
            g.timeout.as_millis(),
            g.output_bytes / 1024
        ),
    ]
}

fn permission_lines(r: &crate::plugin::manifest::Permissions) -> Vec<String> {
    vec![
        format!("workspace: {}", r.workspace),
        format!("network: {}", network_words(&r.http.hosts, false, &[])),
        format!(
            "limits: {} MB memory, {} ms per call, {} KB output",
            r.memory_mb, r.timeout_ms, r.output_kb
        ),
    ]
}

fn print_approval(plan: &ApprovalPlan) {
    let m = &plan.manifest;
    eprintln!("Plugin `{}` {}", m.name, neutralize_controls(&m.version));
    if !m.description.is_empty() {
        eprintln!("  {}", neutralize_controls(&m.description));
    }
    let tools: Vec<&str> = plan.tools.iter().map(|t| t.name.as_str()).collect();
    eprintln!("  tools: {}", tools.join(", "));
    match &plan.previous {
        Some(p) => {
            eprintln!(
                "Its manifest changed since you approved it on {}. It was approved to ask:",
                neutralize_controls(&p.approved_at)
            );
            for line in permission_lines(&p.permissions) {
                eprintln!("  {line}");
            }
            if p.wasm_sha256 != m.sha256.to_ascii_lowercase() {
                eprintln!("  (and its code changed: another .wasm)");
            }
        }
        None => eprintln!("There is no record of it being approved."),
    }
    eprintln!("It now asks to:");
    for line in permission_lines(&m.permissions) {
        eprintln!("  {line}");
    }
    eprintln!("Under your config it will be allowed to:");
    for line in describe_grant(&plan.grant) {
        eprintln!("  {line}");
    }
}

fn print_plan(plan: &InstallPlan) {
    let m = &plan.manifest;
    eprintln!("Plugin `{}` {}", m.name, neutralize_controls(&m.version));
    if !m.description.is_empty() {
        eprintln!("  {}", neutralize_controls(&m.description));
    }
    let tools: Vec<&str> = plan.tools.iter().map(|t| t.name.as_str()).collect();
    eprintln!("  tools: {}", tools.join(", "));
    eprintln!("It asks to:");
    for line in permission_lines(&m.permissions) {
        eprintln!("  {line}");
    }
    eprintln!("Under your config it will be allowed to:");
    for line in describe_grant(&plan.grant) {
        eprintln!("  {line}");
    }
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let n = samples.len().max(1);
    let mean = samples.iter().sum::<Duration>() / n as u32;
    let pct = |p: f64| {
        samples
            .get(((n as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    format!(
        "mean {:?}, p50 {:?}, p99 {:?}, min {:?} (n={})",
        mean,
        pct(0.5),
        pct(0.99),
        samples.first().copied().unwrap_or_default(),
        samples.len()
    )
}

/// `agent plugin bench`: cold compile, load from cache, first call, fresh-instance calls.
async fn bench(
    policy: &PluginPolicy,
    iterations: u32,
    with_code: bool,
) -> anyhow::Result<ExitCode> {
    let home = ScratchDir::new("bench-home")?;
    let ws = ScratchDir::new("bench-ws")?;
    std::fs::write(ws.0.join("hello.txt"), "hello\n")?;
    let dirs = Dirs::resolve(Some(&home.0), None)?;
    let mut policy = policy.clone();
    policy.disabled = vec!["web".into()];
    if !with_code {
        policy.disabled.push("code".into());
    }
    let runs: Vec<(&str, &str, serde_json::Value)> = {
        let mut v = vec![("files", "list_files", serde_json::json!({}))];
        if with_code {
            v.push((
                "code",
                "run_python",
                serde_json::json!({"code": "print(1)"}),
            ));
        }
        v
    };
    // Cold: an empty cache compiles every plugin.
    let t = Instant::now();
    let host = PluginHost::new(dirs.clone(), policy.clone(), ws.0.clone())?;
    let mut host = host;
    host.load_all().await;
    let cold = t.elapsed();
    if let Some((name, _, e)) = host.failures().first() {
        bail!(
            "plugin `{}` failed to load: {}",
            one_line(name, 64),
            one_line(&e.to_string(), 500)
        );
    }
    println!(
        "cold load (compile + describe, {}): {cold:?}",
        runs.iter().map(|r| r.0).collect::<Vec<_>>().join(" + ")
    );
    for (name, tool, args) in &runs {
        let Some(plugin) = host.get(name) else {
            bail!("plugin `{name}` is not available in this build")
        };
        let args = args.to_string();
        // Lazy plugins compile on their first call.
        let t = Instant::now();
        let first = plugin.call(tool, &args, CancellationToken::new()).await;
        if let Err(e) = first.result {
            bail!("{name}.{tool} failed: {e}");
        }
        println!("{name}: first call after cold load: {:?}", t.elapsed());
        // A new host: everything comes from the compiled cache.
        let t = Instant::now();
        let mut warm_host = PluginHost::new(dirs.clone(), policy.clone(), ws.0.clone())?;
        warm_host.load_all().await;
        let loaded = t.elapsed();
        let Some(p) = warm_host.get(name) else {
            bail!("plugin `{name}` did not reload")
        };
        let t = Instant::now();
        let r = p.call(tool, &args, CancellationToken::new()).await;
        let first_cached = t.elapsed();
        if let Err(e) = r.result {
            bail!("{name}.{tool} failed: {e}");
        }
        println!(
            "{name}: load from cache (all plugins): {loaded:?}; first call from cache: {first_cached:?}"
        );
        let n = if *name == "code" {
            iterations.min(200)
        } else {
            iterations
        };
        let mut samples = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = Instant::now();
            let r = p.call(tool, &args, CancellationToken::new()).await;
            samples.push(t.elapsed());
            if r.result.is_err() {
                bail!("{name}.{tool} failed during the benchmark");
            }
        }
        println!("{name}.{tool}: fresh instance per call: {}", stats(samples));
    }
    Ok(ExitCode::SUCCESS)
}
