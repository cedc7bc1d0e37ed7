//! `agent mcp list|call`: the MCP servers of the config (`crate::mcp`),
//! each started to list its tools or to call one, as `agent plugin list`
//! and `agent plugin call` do for plugins. `agent mcp serve`: the session's
//! plugin tools and recipes offered to MCP clients (`crate::mcp::serve`),
//! gathered by the same [`Session`] as a run's.

use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use super::context::{Session, on_ctrl_c};
use super::flags::{ApprovalFlags, RunOptions};
use crate::agent::approval::Policy;
use crate::mcp::Server;
use crate::mcp::serve::{CallLog, Handler, Listener, Offer, ServeError, Served};
use crate::sanitize::{one_line, strip_terminal_escapes};
use crate::tools::{ToolContext, ToolRegistry};

/// `agent mcp ...`.
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// The configured MCP servers, whether they start, and their tools with classes.
    List {
        /// One JSON object per server.
        #[arg(long)]
        json: bool,
    },
    /// Call one tool of an MCP server (no approval is asked: you are calling it).
    Call {
        /// The server's name (`mcp:` in the config).
        server: String,
        /// The tool's name as the server lists it.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
    },
    /// Offer agent's sandboxed plugin tools and its recipes to MCP clients,
    /// on stdio (the default) or streamable HTTP (--listen).
    Serve(Box<ServeArgs>),
}

/// `agent mcp serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Model, budgets and workspace (the model answers recipe calls, and is
    /// loaded on the first one).
    #[command(flatten)]
    pub options: RunOptions,
    /// Who approves what the tools do (nobody can be asked here).
    #[command(flatten)]
    pub approvals: ApprovalFlags,
    /// Serve streamable HTTP at this address (e.g. 127.0.0.1:8765, path
    /// /mcp) instead of stdio; loopback only unless --allow-remote.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow a --listen address other machines can reach; needs --token-env.
    #[arg(long, requires = "listen")]
    pub allow_remote: bool,
    /// The environment variable holding the bearer token every HTTP request
    /// must carry (`Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "VAR", requires = "listen")]
    pub token_env: Option<String>,
    /// Offer no tool that writes or runs code; recipes run with the read
    /// tools only.
    #[arg(long)]
    pub read_only: bool,
    /// Offer only this plugin's tools (repeat for more; default: every
    /// plugin that loads).
    #[arg(long = "plugin", value_name = "NAME")]
    pub plugins: Vec<String>,
    /// Offer only this recipe (repeat for more; default: every recipe on
    /// the search path, `agent recipe list`).
    #[arg(long = "recipe", value_name = "NAME")]
    pub recipes: Vec<String>,
    /// Offer no recipes.
    #[arg(long, conflicts_with = "recipes")]
    pub no_recipes: bool,
}

/// Run an MCP command.
pub async fn execute(cmd: McpCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        McpCommand::List { json } => {
            let (dirs, config) = super::user_config()?;
            if config.mcp.is_empty() && !json {
                println!(
                    "no MCP servers; add them under `mcp:` in {} (see the README, MCP)",
                    dirs.config_file().display()
                );
            }
            for cfg in &config.mcp {
                let started = if cfg.enabled {
                    Some(Server::start(cfg.clone()).await)
                } else {
                    None
                };
                let (state, tools) = match &started {
                    None => ("disabled".to_string(), Vec::new()),
                    Some(Err(e)) => (format!("failed: {e}"), Vec::new()),
                    Some(Ok((server, listed))) => ("running".to_string(), server.tools(listed).0),
                };
                if json {
                    let tools: Vec<serde_json::Value> = tools
                        .iter()
                        .map(|t| serde_json::json!({"name": t.spec().name, "class": t.spec().class, "description": t.spec().description}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"name": cfg.name, "state": state, "approve": cfg.approve, "sandboxed": false, "tools": tools})
                    );
                    continue;
                }
                println!(
                    "{}  {}  (unsandboxed process: {} {}; approval {})",
                    cfg.name,
                    one_line(&strip_terminal_escapes(&state), 300),
                    cfg.command.as_deref().unwrap_or(""),
                    cfg.args.join(" "),
                    cfg.approve
                );
                for t in &tools {
                    let spec = t.spec();
                    println!(
                        "  {:<28} {:<8} {}",
                        spec.name,
                        serde_json::to_value(spec.class)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        one_line(&spec.description, 100)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        McpCommand::Call { server, tool, args } => {
            let (_dirs, config) = super::user_config()?;
            let Some(cfg) = config.mcp.iter().find(|s| s.name == server) else {
                let names: Vec<&str> = config.mcp.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "no MCP server `{server}` in the config (configured: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            };
            let args: serde_json::Value = serde_json::from_str(&args).with_context(|| {
                "the arguments are not valid JSON; pass an object such as '{\"a\": 1}'".to_string()
            })?;
            let (srv, listed) = Server::start(cfg.clone()).await?;
            let mut registry = ToolRegistry::new();
            for t in srv.tools(&listed).0 {
                registry.register(t)?;
            }
            let name = format!("{server}.{tool}");
            let Some(t) = registry.get(&name) else {
                let offered: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
                bail!(
                    "server `{server}` offers no tool `{tool}` (it offers: {})",
                    offered.join(", ")
                );
            };
            if let Err(msg) = registry.check_args(&name, &args) {
                bail!("{msg}");
            }
            match t.call(args, &ToolContext::default()).await {
                Ok(out) => {
                    println!("{out}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        McpCommand::Serve(args) => serve(*args).await,
    }
}

/// `agent mcp serve`: gather what is offered, then answer until the client
/// leaves (stdio) or the server is stopped (Ctrl-C, SIGTERM).
async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ServeError::TokenMissing(var.clone()))?,
        ),
        None => None,
    };
    let listener = match args.listen {
        Some(addr) => {
            crate::mcp::serve::check_listen(addr, args.allow_remote, token.as_deref())?;
            Some(Listener::bind(addr).await?)
        }
        None => None,
    };
    let mut session = Session::open(&args.options)?;
    session.continuous = args.approvals.yes;
    session.approve = args.approvals.approve;

    let mut plugin_tools = session.plugin_tools().await?;
    for name in &args.plugins {
        if !plugin_tools.iter().any(|t| &t.spec().source == name) {
            let mut loaded: Vec<String> = plugin_tools
                .iter()
                .map(|t| t.spec().source.clone())
                .collect();
            loaded.dedup();
            bail!(
                "no plugin `{}` with tools was loaded (loaded: {}); `agent plugin list` shows them",
                crate::sanitize::one_line(name, 64),
                loaded.join(", ")
            );
        }
    }
    if !args.plugins.is_empty() {
        plugin_tools.retain(|t| args.plugins.contains(&t.spec().source));
    }
    if args.read_only {
        plugin_tools.retain(|t| {
            !matches!(
                t.spec().class,
                crate::tools::ToolClass::Write | crate::tools::ToolClass::Execute
            )
        });
    }
    // A tool the approval policy denies is not offered at all.
    let approver = session.approver(false);
    let (denied, plugin_tools): (Vec<_>, Vec<_>) = plugin_tools
        .into_iter()
        .partition(|t| approver.policy(t.spec()) == Some(Policy::Deny));
    if !denied.is_empty() {
        let names: Vec<&str> = denied.iter().map(|t| t.spec().name.as_str()).collect();
        eprintln!(
            "agent mcp serve: not offered, as the approval policy denies them: {}",
            names.join(", ")
        );
    }

    let recipes = if args.no_recipes {
        Vec::new()
    } else {
        let mut listed = session.library().list();
        for name in &args.recipes {
            if !listed.iter().any(|l| &l.name == name) {
                bail!(
                    "no recipe `{}` on the search path; `agent recipe list` shows them",
                    crate::sanitize::one_line(name, 64)
                );
            }
        }
        if !args.recipes.is_empty() {
            listed.retain(|l| args.recipes.contains(&l.name));
        }
        let (tools, invalid) = session.recipes_as_tools(listed);
        if !invalid.is_empty() {
            eprintln!(
                "agent mcp serve: not offered, as they are not valid recipes: {} (`agent recipe list` says why)",
                invalid.join(", ")
            );
        }
        tools
    };

    // What recipe runs may use: the plugin tools offered, nothing more.
    let mut kit_tools = ToolRegistry::new();
    let mut offered = ToolRegistry::new();
    for tool in &plugin_tools {
        kit_tools.register(tool.clone())?;
        offered.register(tool.clone())?;
    }
    for recipe in recipes {
        offered.register(Arc::new(recipe.with_own_budget()))?;
    }
    if offered.names().is_empty() {
        bail!(
            "there is nothing to offer: no plugin tool is left (after --plugin, --read-only and the approval policies) and no recipe"
        );
    }

    let transport = match &listener {
        Some(l) => l.url(),
        None => "stdio".to_string(),
    };
    let mut settings = session.run_settings(false)?;
    settings.mcp = Some(Served {
        transport: transport.clone(),
        clients: Vec::new(),
    });
    let models = session.models_on_first_use(&settings)?;
    // Recipe runs report to nobody: stdout is the protocol's on stdio.
    let (events, mut quiet) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while quiet.recv().await.is_some() {} });
    session.parts(
        &models,
        Arc::new(kit_tools),
        events,
        &settings,
        Some(approver.clone()),
        Some(session.memory_hook()?),
    );
    let log = Arc::new(CallLog::new(
        session.journal.clone(),
        crate::memory::journal::new_run_id(),
        settings,
    ));
    let mut grants = session
        .plugins
        .lock()
        .map(|p| super::chat::permissions(&p))
        .unwrap_or_default();
    if args.read_only {
        for words in grants.values_mut() {
            words.push_str("; --read-only: its write and code tools are not offered");
        }
    }
    let names = offered
        .names()
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>();
    let instructions = format!(
        "Tools of agent (a local autonomous agent). Plugin tools run in agent's WebAssembly sandbox, confined to the workspace {} and to their manifests' grants; paths are relative to it. recipe_* tools each run one of agent's recipes with its own model and return the answer.",
        session.workspace.display()
    );
    let offer = Offer {
        tools: offered,
        gate: Arc::new(Approvals(approver)),
        log: log.clone(),
        observation_chars: session.config.observation_chars as usize,
        instructions,
        grants,
    };
    let handler = Handler::new(Arc::new(offer));

    // Set by Ctrl-C or SIGTERM only (the service ends its own token when
    // the client leaves).
    let stop = CancellationToken::new();
    let _ctrl_c = on_ctrl_c(&stop, true);
    let on_term = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            term.recv().await;
            on_term.cancel();
        }
    });
    eprintln!(
        "agent mcp serve: {} tools ({}) in workspace {}; calls are journaled in run {} (agent runs show {})",
        names.len(),
        names.join(", "),
        session.workspace.display(),
        log.id(),
        log.id()
    );
    let served = match listener {
        None => crate::mcp::serve::serve_stdio(handler, stop.child_token()).await,
        Some(listener) => {
            eprintln!(
                "agent mcp serve: listening at {}{}",
                listener.url(),
                if token.is_some() {
                    " (bearer token required)"
                } else {
                    ""
                }
            );
            crate::mcp::serve::serve_http(handler, listener, token, stop.child_token()).await
        }
    };
    let reason = match (&served, stop.is_cancelled()) {
        (Err(e), _) => format!("the server failed: {e}"),
        (Ok(()), true) => "the server was stopped".to_string(),
        (Ok(()), false) => "the client closed the connection".to_string(),
    };
    log.close(&reason)?;
    session.recipes.lock().map(|mut k| k.take()).ok();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The session's approval policies as the server's gate: what a
/// non-interactive run would refuse (or, with `--yes`, allow), a client's
/// call is refused (allowed) too.
struct Approvals(Arc<crate::agent::approval::PolicyApprover>);

#[async_trait::async_trait]
impl crate::mcp::serve::Gate for Approvals {
    async fn check(
        &self,
        spec: &crate::tools::ToolSpec,
        args: &serde_json::Value,
        step: u32,
    ) -> Result<(), String> {
        use crate::agent::{Approval, ApprovalRequest, Approver};
        let request = ApprovalRequest {
            step,
            spec,
            args,
            tainted_by: None,
        };
        match self.0.approve(&request).await {
            Approval::Approve | Approval::PersonApproved => Ok(()),
            Approval::Deny(reason) | Approval::Declined(reason) | Approval::Feedback(reason) => {
                Err(reason)
            }
        }
    }
}
