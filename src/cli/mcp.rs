//! `agent mcp list|call`: the MCP servers of the config (`crate::mcp`),
//! each started to list its tools or to call one, as `agent plugin list`
//! and `agent plugin call` do for plugins.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::config::Config;
use crate::mcp::Server;
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
}

/// Run an MCP command.
pub async fn execute(cmd: McpCommand) -> anyhow::Result<ExitCode> {
    let dirs = super::dirs()?;
    let config = Config::load(
        &dirs.config_file(),
        &Default::default(),
        &Default::default(),
    )?;
    match cmd {
        McpCommand::List { json } => {
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
    }
}
