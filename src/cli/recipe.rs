//! `agent recipe list|show|validate|new|run`: recipes from the search path
//! (`crate::recipe`) shown, checked, written from a template, and run
//! through the session (`super::context`) and its recipe kit
//! (`crate::agent::recipe`), like any other run.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::GlobalArgs;
use super::context::{Session, interactive};
use super::flags::{ApprovalFlags, RunOptions};
use super::run::{Start, drive_run};
use crate::recipe::format::{Kind, Parameter};
use crate::recipe::values::parse_pairs;
use crate::recipe::{Library, Loaded, Provide, Recipe};

/// `agent recipe ...`.
#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Every recipe on the search path: name, title, parameters, source.
    List {
        /// One JSON object per recipe.
        #[arg(long)]
        json: bool,
    },
    /// The rendered prompt (or a chain's steps) for the given parameters; calls no model.
    Show {
        /// A recipe's name, or a path to its file.
        recipe: String,
        /// A parameter's value: KEY=VALUE (repeat for several).
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Check a recipe file (and its sub-recipes) without running it.
    Validate {
        /// A recipe's name, or a path to its file.
        recipe: String,
    },
    /// Write a commented recipe template to ./recipes/NAME.yaml.
    New {
        /// The recipe's name (letters, digits, `-` and `_`).
        name: String,
        /// Write it to this directory instead of ./recipes/.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a recipe: an agent run toward its prompt, or a chain's steps.
    Run(Box<RecipeRunArgs>),
}

/// `agent recipe run`.
#[derive(Debug, Args)]
pub struct RecipeRunArgs {
    /// A recipe's name, or a path to its file.
    pub recipe: String,
    /// A parameter's value: KEY=VALUE (repeat for several).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub options: RunOptions,
    #[command(flatten)]
    pub approvals: ApprovalFlags,
    /// One JSON event per line, ending with `recipe_finished` whose
    /// `answer` is the answer as data.
    #[arg(long)]
    pub json: bool,
}

/// Values a person gives on the terminal: files read from where agent runs,
/// `user_prompt` parameters asked when someone is there to answer.
pub struct Terminal {
    pub ask: bool,
}

impl Provide for Terminal {
    fn read_file(&self, path: &str) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        if meta.len() > 1 << 20 {
            return Err(format!(
                "{path} is {} bytes; a file parameter may be at most 1 MiB",
                meta.len()
            ));
        }
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
    }

    fn ask(&self, param: &Parameter) -> Option<String> {
        if !self.ask || !std::io::stdin().is_terminal() {
            return None;
        }
        let mut err = std::io::stderr();
        let what = if param.description.is_empty() {
            String::new()
        } else {
            format!(" ({})", param.description)
        };
        let _ = write!(err, "{}{what}: ", param.key);
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        (!line.is_empty()).then_some(line)
    }
}

fn library() -> anyhow::Result<Library> {
    let dirs = super::dirs()?;
    let here = std::env::current_dir().context("cannot read the current directory")?;
    Ok(Library::new(&here, &dirs.config))
}

/// Run a recipe command.
pub async fn execute(cmd: RecipeCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        RecipeCommand::List { json } => list(json),
        RecipeCommand::Show { recipe, params } => {
            let loaded = library()?.load(&recipe)?;
            let values = loaded.recipe.bind(
                &parse_pairs(&params)?,
                &BTreeMap::new(),
                &Terminal { ask: true },
            )?;
            print!("{}", show(&loaded, &values)?);
            Ok(ExitCode::SUCCESS)
        }
        RecipeCommand::Validate { recipe } => {
            let library = library()?;
            let loaded = library.load(&recipe)?;
            validate_subs(&library, &loaded)?;
            let r = &loaded.recipe;
            println!(
                "ok: {} ({}, {} parameter{}{})",
                loaded.location(),
                match r.kind {
                    Kind::Agent => "agent recipe".to_string(),
                    Kind::Chain => format!("chain of {} steps", r.steps.len()),
                },
                r.parameters.len(),
                if r.parameters.len() == 1 { "" } else { "s" },
                if r.sub_recipes.is_empty() {
                    String::new()
                } else {
                    format!(", {} sub-recipes", r.sub_recipes.len())
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        RecipeCommand::New { name, dir } => {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("`{name}` is not a recipe name: use letters, digits, `-` and `_`");
            }
            let dir = dir.unwrap_or_else(|| PathBuf::from("recipes"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join(format!("{name}.yaml"));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| {
                    format!(
                        "cannot create {} (a recipe of that name may exist; it is left as it is)",
                        path.display()
                    )
                })?;
            file.write_all(crate::recipe::library::template(&name).as_bytes())?;
            println!(
                "wrote {}; edit it, then: agent recipe validate {} && agent recipe run {name} --param topic=...",
                path.display(),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        RecipeCommand::Run(args) => run(*args, global).await,
    }
}

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let listed = library()?.list();
    for l in &listed {
        let place = l
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("builtin:{}", l.name));
        match &l.recipe {
            Ok(r) => {
                let params: Vec<String> = r
                    .parameters
                    .iter()
                    .map(|p| {
                        if p.default.is_some() {
                            format!("[{}]", p.key)
                        } else {
                            p.key.clone()
                        }
                    })
                    .collect();
                if json {
                    println!(
                        "{}",
                        json!({
                            "name": l.name, "title": r.title, "kind": r.kind,
                            "parameters": r.parameters, "source": l.source.as_str(),
                            "path": place,
                        })
                    );
                } else {
                    println!(
                        "{:18} {:9} {}{}  ({})",
                        l.name,
                        l.source.as_str(),
                        r.title,
                        if params.is_empty() {
                            String::new()
                        } else {
                            format!(" · {}", params.join(" "))
                        },
                        place
                    );
                }
            }
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        json!({"name": l.name, "source": l.source.as_str(), "path": place, "error": e.to_string()})
                    );
                } else {
                    println!(
                        "{:18} {:9} (invalid: {})",
                        l.name,
                        l.source.as_str(),
                        crate::sanitize::one_line(&e.to_string(), 200)
                    );
                }
            }
        }
    }
    if listed.is_empty() && !json {
        println!("no recipes; write one with: agent recipe new NAME");
    }
    Ok(ExitCode::SUCCESS)
}

/// Each sub-recipe loads, and its pinned values name its parameters.
fn validate_subs(library: &Library, loaded: &Loaded) -> anyhow::Result<()> {
    for sub in &loaded.recipe.sub_recipes {
        let child = library.load_sub(loaded, sub)?;
        for key in sub.values.keys() {
            if child.recipe.parameter(key).is_none() {
                bail!(
                    "sub-recipe `{}` pins `{key}`, which {} does not declare",
                    sub.name,
                    child.location()
                );
            }
        }
    }
    Ok(())
}

/// What `agent recipe show` prints.
fn show(loaded: &Loaded, values: &crate::recipe::Values) -> anyhow::Result<String> {
    let r: &Recipe = &loaded.recipe;
    let mut out = format!("# {} ({})\n", r.title, loaded.location());
    match r.kind {
        Kind::Agent => {
            let rendered = r.render(values)?;
            if let Some(i) = &rendered.instructions {
                out.push_str(&format!("\n=== instructions ===\n{i}\n"));
            }
            out.push_str(&format!("\n=== prompt ===\n{}\n", rendered.goal));
            if let Some(resp) = &r.response {
                out.push_str(&format!(
                    "\n=== response schema ===\n{}\n",
                    serde_json::to_string_pretty(&resp.json_schema)?
                ));
            }
            let checks = r.rendered_checks(values)?;
            if !checks.is_empty() {
                out.push_str(&format!(
                    "\n=== checks (up to {} retries) ===\n{}",
                    r.retry.as_ref().map_or(0, |x| x.max_retries),
                    serde_yaml::to_string(&checks)?
                ));
            }
            if let Some(p) = &r.plugins {
                out.push_str(&format!("\nplugins: {}\n", p.join(", ")));
            }
            for s in &r.sub_recipes {
                out.push_str(&format!("sub-recipe tool: {} ({})\n", s.name, s.path));
            }
        }
        Kind::Chain => {
            if let Some(t) = &r.instructions {
                let ctx = serde_json::to_value(&values.context)?;
                let text = crate::recipe::values::render("instructions", t, &ctx)?;
                out.push_str(&format!("\n=== instructions (system) ===\n{text}\n"));
            }
            // Later steps see earlier outputs; shown as placeholders.
            let mut ctx = serde_json::to_value(&values.context)?;
            for (i, step) in r.steps.iter().enumerate() {
                let text = crate::recipe::values::render(
                    &format!("steps.{}", step.name),
                    &step.prompt,
                    &ctx,
                )?;
                out.push_str(&format!(
                    "\n=== step {} `{}` ({}{}) ===\n{text}\n",
                    i + 1,
                    step.name,
                    if step.output.schema().is_some() {
                        "json"
                    } else {
                        "text"
                    },
                    if step.samples > 1 {
                        format!(
                            ", {} samples{}",
                            step.samples,
                            step.select
                                .map(|s| format!(
                                    ", {}",
                                    serde_json::to_value(s)
                                        .ok()
                                        .and_then(|v| v.as_str().map(str::to_string))
                                        .unwrap_or_default()
                                ))
                                .unwrap_or_default()
                        )
                    } else {
                        String::new()
                    }
                ));
                if let Some(map) = ctx.as_object_mut() {
                    map.insert(
                        step.name.clone(),
                        Value::String(format!("<output of step `{}`>", step.name)),
                    );
                }
            }
        }
    }
    Ok(out)
}

/// `agent recipe run`.
async fn run(args: RecipeRunArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let library = library()?;
    let loaded = library.load(&args.recipe)?;
    validate_subs(&library, &loaded)?;
    let mut options = args.options.clone();
    // The recipe's model, unless the command line names one; a role is the
    // session's model of that role.
    if options.model.model.is_none()
        && let Some(model) = &loaded.recipe.settings.model
        && crate::model::roles::ModelRole::parse(model).is_err()
    {
        options.model.model = Some(model.clone());
    }
    if options.budgets.max_steps.is_none() {
        options.budgets.max_steps = loaded.recipe.settings.max_steps;
    }
    let mut session = Session::open(&options)?;
    session.continuous = args.approvals.yes;
    session.approve = args.approvals.approve;
    let interactive = interactive(args.approvals.yes, args.json);
    let values = loaded.recipe.bind(
        &parse_pairs(&args.params)?,
        &BTreeMap::new(),
        &Terminal { ask: interactive },
    )?;
    // A chain calls no tools: no plugin is loaded for it.
    let tools = match loaded.recipe.kind {
        Kind::Agent => session.tools(interactive).await?,
        Kind::Chain => crate::tools::ToolRegistry::new(),
    };
    let settings = session.run_settings(interactive)?;
    let models = session.models(&settings, 0).await?;
    drive_run(
        &session,
        Start::Recipe(Box::new(loaded), values, Box::new(settings)),
        models,
        tools,
        args.json,
        global,
    )
    .await
}
