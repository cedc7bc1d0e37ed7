//! `agent prompts list|show NAME`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::prompt::{PromptLibrary, PromptSource};

/// Prompt template commands.
#[derive(Debug, Subcommand)]
pub enum PromptsCommand {
    /// List templates and where each comes from.
    List,
    /// Print a template's YAML (copy it into the prompts directory to override).
    Show { name: String },
}

/// Run a prompts command.
pub fn execute(cmd: PromptsCommand) -> anyhow::Result<ExitCode> {
    let dirs = super::dirs()?;
    let lib = PromptLibrary::new(&dirs.prompts);
    match cmd {
        PromptsCommand::List => {
            for name in lib.names() {
                let prompt = lib.load(&name)?;
                let origin = match &prompt.source {
                    PromptSource::Embedded => "built-in".to_string(),
                    PromptSource::User(p) => p.display().to_string(),
                };
                println!("{name:12} {}  ({origin})", prompt.template.description);
            }
        }
        PromptsCommand::Show { name } => {
            let prompt = lib.load(&name)?;
            print!("{}", prompt.text);
            if !prompt.text.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
