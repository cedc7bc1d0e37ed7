//! `agent config show|path|init`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{self, Config, ConfigLayer};

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every resolved value and where it came from.
    Show {
        /// As JSON: {"key": {"value": ..., "source": ...}}.
        #[arg(long)]
        json: bool,
    },
    /// Print the config file's path (and the other directories).
    Path,
    /// Write a commented config file with every key (refuses to overwrite).
    Init,
}

/// Run a config command.
pub fn execute(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let dirs = super::dirs()?;
    let file = dirs.config_file();
    match cmd {
        ConfigCommand::Show { json } => {
            let config = Config::load(&file, &ConfigLayer::default(), &BTreeMap::new())?;
            let rows = config.show();
            if json {
                let value = serde_json::to_value(&config)?;
                let map: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(k, _, src)| {
                        (
                            k.clone(),
                            serde_json::json!({"value": value.get(k), "source": src}),
                        )
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&map)?);
            } else {
                let width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
                for (key, value, source) in rows {
                    println!("{key:width$}  {value}  ({source})");
                }
            }
        }
        ConfigCommand::Path => {
            println!("{}", file.display());
            eprintln!(
                "data:    {}\nprompts: {}\nplugins: {}\ncache:   {}",
                dirs.data.display(),
                dirs.prompts.display(),
                dirs.plugins.display(),
                dirs.cache.display()
            );
        }
        ConfigCommand::Init => {
            config::init_file(&file)?;
            println!("wrote {}", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
