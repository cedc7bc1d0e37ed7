//! The command line: one file per subcommand, each turning its flags into
//! validated settings once and calling into the library. Exit codes are
//! documented on [`Cli`] and mapped here.

pub mod bench;
pub mod chat;
pub mod config;
pub mod context;
pub mod eval;
pub mod flags;
pub mod kb;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod plugin;
pub mod prompts;
pub mod recipe;
pub mod run;
pub mod runs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Exit code: a goal was stopped by a budget, a loop guard or the user.
pub const EXIT_STOPPED: u8 = 3;
/// Exit code of a run that finished without passing its checks (`unverified`).
pub const EXIT_UNVERIFIED: u8 = 4;

/// An autonomous agent for the terminal: local models, sandboxed WASM tools,
/// crash-safe resumable runs.
///
/// Exit codes: 0 goal finished (or command succeeded), 1 error, 2 usage
/// error, 3 stopped by a budget, a loop guard or the user.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about, long_about = None, args_conflicts_with_subcommands = true, after_help = "Exit codes: 0 finished, 1 error, 2 usage error, 3 stopped by a budget, a loop guard or the user.\nEnvironment: AGENT_HOME (config, data, prompts), AGENT_CACHE_DIR (models, compiled plugins), AGENT_<KEY> for any config key.")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Without a subcommand, `agent` opens an interactive session (`agent chat`),
    /// taking the same flags (`agent --model X` is `agent chat --model X`).
    #[command(flatten)]
    pub session: chat::ChatArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// More output (-v: whole observations and model text; -vv: debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only the answer and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to the agent: an interactive session where each line is a goal or a follow-up.
    Chat(chat::ChatArgs),
    /// Work toward a goal until it is reached or a budget runs out.
    Run(run::RunArgs),
    /// List, pull, inspect and remove models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Manage and call sandboxed WASM plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Inspect and change the configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// List and show prompt templates.
    #[command(subcommand)]
    Prompts(prompts::PromptsCommand),
    /// MCP servers from the config: list them and their tools, call one.
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// List, show, check, write and run recipes: reusable YAML runs and chains.
    #[command(subcommand)]
    Recipe(recipe::RecipeCommand),
    /// Run a suite of challenges (AutoGPT's format) and report how the agent did.
    Eval(eval::EvalArgs),
    /// List, show and resume runs from the journal.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// List, search, add and forget long-term memories.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// Add, list, search and remove documents in the knowledge base.
    #[command(subcommand)]
    Kb(kb::KbCommand),
    /// Measure agent overhead and model speed (results go in the README).
    #[command(subcommand, hide = true)]
    Bench(bench::BenchCommand),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// An error and its causes as one line, each once (see [`crate::errors`]).
pub fn describe(e: &anyhow::Error) -> String {
    crate::errors::chain(e.as_ref())
}

/// Set up `tracing` from `-v`/`-q` and `RUST_LOG`. Logs go to stderr.
pub fn init_tracing(global: &GlobalArgs) {
    // mistral.rs logs engine chatter (device mapping, paged attention) at
    // warn level; only its errors concern a user unless they ask with -vv.
    let default = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (_, 0 | 1) => {
            // sled logs each failed write itself; our error says it once.
            "warn,mistralrs_core=error,mistralrs_quant=error,mistralrs=error,candle_core=error,sled=off"
        }
        (_, 2) => "agent=debug,info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// Run the parsed command.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        None => chat::execute(cli.session, &global).await,
        Some(Command::Chat(args)) => chat::execute(args, &global).await,
        Some(Command::Run(args)) => run::execute(args, &global).await,
        Some(Command::Model(cmd)) => model::execute(cmd, &dirs()?).await,
        Some(Command::Plugin(cmd)) => {
            let (dirs, config) = user_config()?;
            let workspace = absolute(&config.workspace)?;
            plugin::execute(cmd, &dirs, &config.plugins, &workspace).await
        }
        Some(Command::Config(cmd)) => config::execute(cmd),
        Some(Command::Prompts(cmd)) => prompts::execute(cmd),
        Some(Command::Runs(cmd)) => runs::execute(cmd, &global).await,
        Some(Command::Memory(cmd)) => memory::execute(cmd),
        Some(Command::Kb(cmd)) => kb::execute(cmd),
        Some(Command::Eval(args)) => eval::execute(args).await,
        Some(Command::Recipe(cmd)) => recipe::execute(cmd, &global).await,
        Some(Command::Mcp(cmd)) => mcp::execute(cmd).await,
        Some(Command::Bench(cmd)) => bench::execute(cmd).await,
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "agent", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The user's directories, with a clear error when none can be found.
pub fn dirs() -> anyhow::Result<crate::paths::Dirs> {
    Ok(crate::paths::Dirs::from_env()?)
}

/// The user's directories and config (file and environment; no flags),
/// for commands that do not run the agent.
pub fn user_config() -> anyhow::Result<(crate::paths::Dirs, crate::config::Config)> {
    let dirs = dirs()?;
    let config = crate::config::Config::load(
        &dirs.config_file(),
        &Default::default(),
        &Default::default(),
    )?;
    Ok((dirs, config))
}

/// Make `path` absolute against the current directory.
pub fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_flags_without_a_subcommand_open_the_session_with_them() {
        let cli = Cli::try_parse_from(["agent", "--model", "smollm2-135m", "--yes"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.session.options.model.model.as_deref(),
            Some("smollm2-135m")
        );
        assert!(cli.session.approvals.yes);
        let cli = Cli::try_parse_from(["agent", "run", "--model", "m", "goal"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run(_))));
        // Session flags belong to the session, not before another subcommand.
        assert!(Cli::try_parse_from(["agent", "--model", "m", "run", "goal"]).is_err());
    }
}
