//! `agent runs list|show ID|resume ID`: the run journal for people and
//! scripts, and continuing an interrupted run from its last committed step.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use super::GlobalArgs;
use super::context::{Session, check_workspace, interactive};
use super::flags::{ApprovalFlags, BudgetFlags, RunOptions};
use super::run::{Start, drive_run};
use crate::agent::approval::RecordedApprovals;
use crate::agent::react::summarize;
use crate::memory::{RunJournal, RunRecord, RunStatus, Store};
use crate::sanitize::{observation, one_line, strip_terminal_escapes};

/// `agent runs export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// `sft` or `preference`.
    #[arg(long, value_enum, default_value = "sft")]
    pub format: crate::dataset::Format,
    /// Only runs that ended so: finished, unverified, budget_exhausted,
    /// stopped, failed, cancelled, running.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only runs started on or after this day (YYYY-MM-DD).
    #[arg(long, value_name = "DAY")]
    pub since: Option<String>,
    /// Only this run (repeat for more; an id, a unique prefix, or `last`).
    #[arg(long = "run", value_name = "ID")]
    pub runs: Vec<String>,
    /// Write to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Leave out what tools read from outside (files, pages, code
    /// output) from the prompts.
    #[arg(long)]
    pub redact_observations: bool,
    /// A JSON summary (runs, records, tokens, what was left out).
    #[arg(long)]
    pub json: bool,
}

/// Journal commands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The newest runs, newest first.
    List {
        /// How many.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run with every step (ID, a unique prefix, or `last`).
    Show {
        id: String,
        /// As JSON: {"run": {...}, "steps": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Training data from runs as JSON lines: `sft` (each step's exact
    /// prompt and the action chosen) or `preference` (refused vs accepted
    /// actions, failing vs passing eval runs). Secrets are always redacted.
    Export(ExportArgs),
    /// Continue an interrupted or stopped run from its last committed step.
    /// It keeps its model and workspace; budgets may be raised (e.g.
    /// --max-steps 40).
    Resume {
        id: String,
        #[command(flatten)]
        budgets: BudgetFlags,
        #[command(flatten)]
        approvals: ApprovalFlags,
        /// JSON lines instead of the transcript.
        #[arg(long)]
        json: bool,
    },
}

/// The workspace a run recorded, which must still exist: a resumed run
/// never moves to another directory (case 40).
fn recorded_workspace(run: &RunRecord) -> anyhow::Result<std::path::PathBuf> {
    let recorded = &run.settings.workspace;
    if recorded.is_empty() {
        bail!(
            "run {} did not record its workspace, so it cannot be resumed safely; start a new run",
            run.id
        );
    }
    let path = std::path::PathBuf::from(recorded);
    if !path.is_dir() {
        bail!(
            "run {} worked in {}, which no longer exists; a resumed run never moves to another directory. Restore that directory, or start a new run",
            run.id,
            strip_terminal_escapes(recorded)
        );
    }
    Ok(path)
}

/// Refuse to resume when a plugin's grants differ from those the run
/// started with, or a plugin was added since: resuming must not widen what
/// the run may do (case 40). Records written before grants were kept
/// (an empty map: the built-in plugins always have grants) are not checked.
fn check_grants(
    run: &RunRecord,
    now: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    if run.settings.grants.is_empty() {
        return Ok(());
    }
    for (name, words) in now {
        match run.settings.grants.get(name) {
            Some(then) if then == words => {}
            Some(then) => bail!(
                "plugin `{}` has other grants than when run {} started (then: {}; now: {}); a resume cannot change them. Restore the plugin's manifest or config, or start a new run",
                strip_terminal_escapes(name),
                run.id,
                strip_terminal_escapes(then),
                strip_terminal_escapes(words)
            ),
            None => bail!(
                "plugin `{}` (grants: {}) was added after run {} started; a resume cannot give the run new tools. Disable it for now, or start a new run",
                strip_terminal_escapes(name),
                strip_terminal_escapes(words),
                run.id
            ),
        }
    }
    Ok(())
}

fn open_journal() -> anyhow::Result<(Store, RunJournal)> {
    let dirs = super::dirs()?;
    let store = Store::open(&dirs.store())?;
    let journal = RunJournal::new(&store)?;
    Ok((store, journal))
}

/// Width of the goal column of `agent runs list`, in characters.
const GOAL_COLUMN: usize = 60;

/// A run's status as listed: `running` runs found in the journal when no
/// process holds the store were interrupted.
fn shown_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "interrupted",
        other => other.as_str(),
    }
}

/// One run as `agent runs list` and the REPL's `/runs` show it.
pub fn run_line(r: &RunRecord) -> String {
    format!(
        "{}  {:16} {:>3} steps  {:>7} tok  {}",
        r.id,
        shown_status(r.status),
        r.steps,
        r.usage.total(),
        match (&r.settings.recipe, &r.settings.mcp) {
            (Some(recipe), _) => one_line(
                &format!("[recipe {}] {}", recipe.label(), r.goal),
                GOAL_COLUMN
            ),
            (None, Some(served)) =>
                one_line(&format!("[{}] {}", served.label(), r.goal), GOAL_COLUMN),
            (None, None) => one_line(&r.goal, GOAL_COLUMN),
        }
    )
}

/// Run a journal command.
pub async fn execute(cmd: RunsCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::List { limit, json } => {
            let (_store, journal) = open_journal()?;
            let runs = journal.list(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs yet; start one with: agent run \"your goal\"");
            } else {
                for r in runs {
                    println!("{}", run_line(&r));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { id, json } => {
            let (_store, journal) = open_journal()?;
            let run = journal.find(&id)?;
            let steps = journal.steps(&run.id)?;
            // A plan run's steps live in its child runs, one per plan step.
            let children = journal.children(&run.id)?;
            if json {
                let children: Vec<_> = children
                    .iter()
                    .map(|c| Ok(serde_json::json!({"run": c, "steps": journal.steps(&c.id)?})))
                    .collect::<Result<_, crate::memory::StoreError>>()?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"run": run, "steps": steps, "children": children})
                    )?
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("run      {}", run.id);
            println!("goal     {}", strip_terminal_escapes(&run.goal));
            if let Some(recipe) = &run.settings.recipe {
                println!(
                    "recipe   {} ({}{})",
                    strip_terminal_escapes(&recipe.label()),
                    strip_terminal_escapes(&recipe.location),
                    if recipe.attempt > 1 {
                        format!(", attempt {}", recipe.attempt)
                    } else {
                        String::new()
                    }
                );
            }
            if let Some(served) = &run.settings.mcp {
                println!("served   {}", strip_terminal_escapes(&served.label()));
            }
            if let Some(last) = run.earlier.last() {
                println!(
                    "after    {} earlier exchanges of a conversation, the last: {}",
                    run.earlier.len(),
                    one_line(&last.goal, GOAL_COLUMN)
                );
            }
            println!(
                "status   {}{}",
                shown_status(run.status),
                run.stop_reason
                    .as_deref()
                    .map(|r| format!(" ({})", strip_terminal_escapes(r)))
                    .unwrap_or_default()
            );
            println!("model    {}", run.settings.model);
            for lora in &run.settings.lora {
                println!(
                    "lora     {} (scale {}, sha256 {})",
                    strip_terminal_escapes(&lora.path),
                    lora.scale,
                    &lora.sha256[..lora.sha256.len().min(16)]
                );
            }
            println!("created  {}   updated {}", run.created_at, run.updated_at);
            println!(
                "usage    {} steps, {} prompt + {} completion tokens, {:.1} s",
                run.steps,
                run.usage.prompt_tokens,
                run.usage.completion_tokens,
                run.elapsed_ms as f64 / 1000.0
            );
            for (i, cost) in run.cost.iter().enumerate() {
                let head = if i == 0 { "cost" } else { "" };
                println!("{head:<8} {}", strip_terminal_escapes(&cost.line()));
            }
            if let Some(answer) = &run.answer {
                println!("answer   {}", strip_terminal_escapes(answer));
            }
            for s in &steps {
                println!(
                    "\n[{}] {}",
                    s.index,
                    s.thought
                        .as_deref()
                        .map(strip_terminal_escapes)
                        .unwrap_or_else(|| "(no valid action)".into())
                );
                if let Some(e) = &s.escalated {
                    println!(
                        "  # taken by the smart model {}: {}",
                        strip_terminal_escapes(&e.model),
                        strip_terminal_escapes(&e.reason)
                    );
                }
                match (&s.tool, &s.args) {
                    (Some(t), Some(a)) => println!("  → {t} {}", observation(&a.to_string(), 400)),
                    _ => println!("  raw: {}", observation(&s.raw_output, 400)),
                }
                if let Some(v) = &s.votes {
                    let top = v.ballots.first().map_or(0, |b| b.votes);
                    println!(
                        "  # {} of {} samples agreed ({} distinct, {} invalid): {}",
                        top,
                        v.samples,
                        v.ballots.len(),
                        v.invalid,
                        if v.chosen == "majority" {
                            "the majority's action"
                        } else {
                            "no majority, the greedy action"
                        }
                    );
                }
                println!(
                    "  ← {}",
                    strip_terminal_escapes(&s.observation).replace('\n', "\n    ")
                );
                if let Some(note) = &s.note {
                    println!("  ! {}", strip_terminal_escapes(note));
                }
            }
            for child in &children {
                let status = child
                    .stop_reason
                    .as_deref()
                    .map(strip_terminal_escapes)
                    .unwrap_or_default();
                let what = match child.id.rsplit('.').next().and_then(|t| t.chars().next()) {
                    Some('a') => "attempt",
                    Some('r') => "recipe call",
                    _ => "plan step",
                };
                println!(
                    "\n{what} {}: {}  ({}{})",
                    child.id,
                    strip_terminal_escapes(&child.goal)
                        .lines()
                        .next()
                        .unwrap_or(""),
                    shown_status(child.status),
                    if status.is_empty() {
                        String::new()
                    } else {
                        format!(": {status}")
                    }
                );
                println!(
                    "  {}",
                    summarize(&journal.steps(&child.id)?).replace('\n', "\n  ")
                );
            }
            if steps.is_empty() && children.is_empty() {
                println!("\n{}", summarize(&steps));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Export(args) => export(args),
        RunsCommand::Resume {
            id,
            budgets,
            approvals,
            json,
        } => {
            // The run's model, workspace, approvals and grants are part of
            // it; only budgets may change (case 40). `--approve`/`--yes`
            // given now are the person's choice and win over the record.
            let options = RunOptions::budgets(budgets.clone());
            let mut session = Session::open(&options)?;
            let yes = approvals.yes;
            let mut run = session.journal.find(&id)?;
            if run.settings.mcp.is_some() {
                bail!(
                    "run {} journals an MCP server's calls (agent mcp serve); there is nothing to resume. Start the server again",
                    run.id
                );
            }
            if run.status == RunStatus::Finished {
                bail!(
                    "run {} already finished; its answer: {}",
                    run.id,
                    run.answer.as_deref().unwrap_or("")
                );
            }
            let steps = session.journal.steps(&run.id)?;
            if let Some(n) = budgets.max_steps {
                run.settings.max_steps = n;
            }
            if let Some(n) = budgets.max_tokens {
                run.settings.max_tokens = n;
            }
            if let Some(n) = budgets.timeout {
                run.settings.timeout_secs = n;
            }
            session.workspace = recorded_workspace(&run)?;
            check_workspace(&session.workspace, &session.dirs)?;
            // A resumed run never runs another adapter than it recorded.
            for lora in &run.settings.lora {
                lora.check_unchanged()?;
            }
            match RecordedApprovals::from_json(run.settings.approvals.as_ref()) {
                Some(recorded) => {
                    session.config.approvals = recorded.config;
                    session.approve = approvals.approve.or(recorded.approve);
                    session.continuous = yes || recorded.continuous;
                }
                None => {
                    session.approve = approvals.approve;
                    session.continuous = yes;
                }
            }
            let interactive = interactive(session.continuous, json) && run.settings.interactive;
            // Never ask unless someone can answer now.
            run.settings.interactive = interactive;
            let tools = session.tools(interactive).await?;
            let now = session
                .plugins
                .lock()
                .map(|p| super::chat::permissions(&p))
                .unwrap_or_default();
            check_grants(&run, &now)?;
            let models = session.models(&run.settings, steps.len()).await?;
            let start = match run.settings.recipe.clone() {
                Some(recipe) => {
                    let loaded = session.library().load(&recipe.location)?;
                    let values = loaded.recipe.bind(
                        &crate::agent::recipe::recorded_values(&run),
                        &Default::default(),
                        &super::recipe::Terminal { ask: false },
                    )?;
                    Start::ResumeRecipe(Box::new(loaded), values, run, steps)
                }
                None => Start::Resume(run, steps),
            };
            drive_run(&session, start, models, tools, json, global).await
        }
    }
}

/// `agent runs export`.
fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let ExportArgs {
        format,
        status,
        since,
        runs: ids,
        output,
        redact_observations,
        json,
    } = args;
    use crate::dataset::{Exporter, Redactor, Selection};
    let status = match status {
        Some(name) => Some(RunStatus::parse(&name).ok_or_else(|| {
            anyhow::anyhow!(
                "`{name}` is not a run status; use finished, unverified, budget_exhausted, stopped, failed, cancelled or running"
            )
        })?),
        None => None,
    };
    if let Some(day) = &since {
        crate::dataset::check_day(day)?;
    }
    let (_dirs, config) = super::user_config()?;
    let (_store, journal) = open_journal()?;
    let runs = ids
        .iter()
        .map(|id| journal.find(id))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = Selection {
        status,
        since,
        runs,
    };
    let exporter = Exporter {
        journal: &journal,
        redactor: Redactor::new(std::env::vars(), std::slice::from_ref(&config.api_key_env)),
        redact_observations,
    };
    let summary = match &output {
        Some(path) => {
            // Whole or not at all: written beside it, then renamed.
            let partial = path.with_extension("partial");
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&partial)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", partial.display()))?,
            );
            let written = exporter
                .export(format, &selection, &mut file)
                .map_err(anyhow::Error::from)
                .and_then(|summary| {
                    std::io::Write::flush(&mut file)?;
                    Ok(summary)
                });
            drop(file);
            let summary = match written {
                Ok(summary) => summary,
                Err(e) => {
                    // Nothing half-written is left behind.
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            };
            std::fs::rename(&partial, path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            summary
        }
        None => exporter.export(format, &selection, &mut std::io::stdout().lock())?,
    };
    let left_out: Vec<String> = summary
        .left_out
        .iter()
        .map(|(why, n)| format!("{n} {}", why.replace('_', " ")))
        .collect();
    if json {
        let line = serde_json::to_string(&summary)?;
        // Records on stdout: the summary goes beside them, on stderr.
        if output.is_some() {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    } else {
        eprintln!(
            "exported {} {} records (≈{} tokens) from {} of {} runs{}{}{}",
            summary.records,
            summary.format,
            summary.tokens,
            summary.runs_with_records,
            summary.runs,
            match &output {
                Some(p) => format!(" to {}", p.display()),
                None => String::new(),
            },
            if left_out.is_empty() {
                String::new()
            } else {
                format!("; steps left out: {}", left_out.join(", "))
            },
            if summary.redacted_secrets > 0 {
                format!("; {} secrets redacted", summary.redacted_secrets)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::journal::RunSettings;

    #[test]
    fn case_40_a_resume_refuses_changed_or_added_plugin_grants() {
        let grants = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let settings = RunSettings {
            grants: grants(&[("files", "workspace write"), ("web", "network: docs.rs")]),
            ..Default::default()
        };
        let run = RunRecord::new("r1".into(), "g".into(), settings);
        // The same grants, or fewer plugins: fine.
        check_grants(&run, &grants(&[("files", "workspace write")])).unwrap();
        let wider = grants(&[
            ("files", "workspace write"),
            ("web", "network: any public host"),
        ]);
        let e = check_grants(&run, &wider).unwrap_err().to_string();
        assert!(
            e.contains("`web` has other grants") && e.contains("any public host"),
            "{e}"
        );
        let added = grants(&[
            ("files", "workspace write"),
            ("evil", "network: evil.example"),
        ]);
        let e = check_grants(&run, &added).unwrap_err().to_string();
        assert!(e.contains("`evil`") && e.contains("added after"), "{e}");
        // A record older than grants is not checked.
        let old = RunRecord::new("r0".into(), "g".into(), RunSettings::default());
        check_grants(&old, &added).unwrap();
    }
}
