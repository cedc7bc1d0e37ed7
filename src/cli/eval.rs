//! `agent eval DIR`: run a suite of challenges (AutoGPT's benchmark format)
//! with one model and print how the agent did. See [`crate::eval`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::context::{Session, on_ctrl_c};
use super::flags::{BudgetFlags, ModelFlags, RunOptions, StrategyFlag};
use crate::agent::Strategy;
use crate::agent::plan::PlanStore;
use crate::eval::runner::ProgressFn;
use crate::eval::{EvalOptions, EvalRunner, Report, load_suite};
use crate::model::roles::{ModelRole, RoleSpec};
use crate::prompt::PromptLibrary;

/// `agent eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A challenge directory (holding data.json) or a folder of them.
    #[arg(required_unless_present = "compare")]
    pub dir: Option<PathBuf>,
    /// Compare two reports written by `agent eval --json` (A the baseline,
    /// B the change), challenge by challenge and in total, instead of
    /// running a suite.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"], conflicts_with = "dir")]
    pub compare: Option<Vec<PathBuf>>,
    /// Prove the suite's graders instead of running a model: each
    /// challenge's reference solution (artifacts_out/) must pass, and an
    /// untouched workspace and each known-wrong attempt
    /// (artifacts_wrong/NAME/) must fail.
    #[arg(long, conflicts_with = "compare")]
    pub check: bool,
    /// The model is loaded once for the whole suite.
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub strategy: StrategyFlag,
    /// Attempts per challenge.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: u32,
    /// Attempts run at once (they share the one loaded model).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallel: usize,
    /// Only challenges whose name contains this, or in this category (repeatable).
    #[arg(long, value_name = "NAME|CATEGORY")]
    pub filter: Vec<String>,
    /// Budgets of each attempt; --timeout overrides each challenge's cutoff.
    #[command(flatten)]
    pub budgets: BudgetFlags,
    /// A model that grades `llm` challenges (same forms as --model); without
    /// one they are skipped.
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Grade `python` and `pytest` challenges with the host's python3 (and
    /// pytest) instead of the sandbox. That runs model-written code as your
    /// user, outside any sandbox: only for suites that need packages the
    /// sandboxed interpreter lacks, and only with models you trust.
    #[arg(long)]
    pub unsafe_host_grading: bool,
}

/// Run the suite; exit 0 when every graded attempt passed, 3 when some failed.
pub async fn execute(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let dir = match (&args.dir, &args.compare) {
        (_, Some(files)) => return compare(files, args.json),
        (Some(dir), None) => dir.clone(),
        (None, None) => anyhow::bail!("give a challenge directory, or --compare A.json B.json"),
    };
    let challenges = load_suite(&dir)?;
    let options = EvalOptions {
        strategy: args.strategy.agent,
        repeat: args.repeat.max(1),
        parallel: args.parallel.max(1),
        filters: args.filter.clone(),
        timeout: args.budgets.timeout.map(Duration::from_secs),
        unsafe_host_grading: args.unsafe_host_grading,
        ..EvalOptions::default()
    };
    if args.unsafe_host_grading {
        eprintln!(
            "warning: --unsafe-host-grading: python and pytest challenges are graded with the host's python3, which runs model-written code (and any pytest.py it wrote) as your user, outside the sandbox"
        );
    }
    if EvalRunner::select(&challenges, &options).is_empty() {
        anyhow::bail!(
            "no challenge under {} matches {}; names: {}",
            dir.display(),
            args.filter.join(", "),
            challenges
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if args.check {
        return check(&challenges, &options, args.json).await;
    }
    let run_options = RunOptions {
        model: args.model.clone(),
        budgets: BudgetFlags {
            // The time of an attempt is the challenge's cutoff or --timeout,
            // applied per attempt by the runner, not the config's run timeout.
            timeout: None,
            ..args.budgets.clone()
        },
        ..RunOptions::default()
    };
    let session = Session::open(&run_options)?;
    // Each attempt gets its own workspace; the runner sets it.
    let mut settings = session.run_settings(false)?;
    settings.workspace = String::new();
    if let Some(name) = &args.judge {
        settings
            .roles
            .insert(ModelRole::Judge, RoleSpec::named(name.clone()));
    }
    let roles = session.models(&settings, 0).await?;
    // Grading with the model under test would be no grading at all.
    let judge = roles
        .has_own(ModelRole::Judge)
        .then(|| roles.get(ModelRole::Judge).clone());
    let model_name = roles.get(ModelRole::Default).name().to_string();
    let progress: Option<ProgressFn> = (!args.json || std::io::stderr().is_terminal()).then(|| {
        Box::new(|o: &crate::eval::Outcome| {
            eprintln!(
                "{} {}{} ({} steps, {:.1} s): {}",
                o.result,
                o.challenge,
                if o.attempt > 1 {
                    format!(" #{}", o.attempt)
                } else {
                    String::new()
                },
                o.steps,
                o.seconds,
                o.stop_reason
            )
        }) as ProgressFn
    });
    let runner = EvalRunner {
        roles,
        dirs: session.dirs.clone(),
        plugins: session.config.plugins.clone(),
        prompts: PromptLibrary::new(&session.dirs.prompts),
        journal: session.journal.clone(),
        plans: PlanStore::new(&session.store)?,
        agent: session.agent_settings(&settings),
        settings,
        progress,
        judge,
    };
    let cancel = CancellationToken::new();
    let ctrl_c = on_ctrl_c(&cancel, true);
    let results = runner.run(&challenges, &options, &cancel).await;
    drop(ctrl_c);
    let strategy = match args.strategy.agent {
        Strategy::React => "react",
        Strategy::Plan => "plan",
    };
    let report = Report::new(model_name, strategy.into(), results);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_STOPPED)
    })
}

/// `agent eval --compare A.json B.json`.
fn compare(files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let [a_file, b_file] = files else {
        anyhow::bail!("--compare takes two reports: A.json B.json");
    };
    let a = crate::eval::compare::load(a_file)?;
    let b = crate::eval::compare::load(b_file)?;
    let comparison = crate::eval::compare::compare(&a, a_file, &b, b_file);
    if json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", comparison.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// `agent eval DIR --check`.
async fn check(
    challenges: &[crate::eval::Challenge],
    options: &EvalOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let session = Session::open(&RunOptions::default())?;
    let selected = EvalRunner::select(challenges, options);
    let checks = crate::eval::check::check_graders(
        &session.dirs,
        &session.config.plugins,
        &selected,
        options.grade_timeout,
    )
    .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", crate::eval::check::table(&checks));
    }
    Ok(if checks.iter().all(|c| c.ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_STOPPED)
    })
}
