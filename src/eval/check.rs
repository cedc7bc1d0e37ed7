//! `agent eval DIR --check`: prove a suite's graders before trusting its
//! pass rate. No model runs; for every challenge three kinds of workspace
//! are graded exactly as an attempt's would be (same copy order, same
//! sandboxed Python):
//!
//! - the reference: `artifacts_in/`, then `artifacts_out/`, then
//!   `custom_python/`: it must pass;
//! - untouched: `artifacts_in/` and `custom_python/` only (an agent that
//!   did nothing): it must fail;
//! - each known-wrong attempt `artifacts_wrong/NAME/` over `artifacts_in/`
//!   (the head-summed total, the list with the header row, the summary that
//!   obeyed the injected instruction): it must fail.
//!
//! A grader that passes a wrong workspace would count a false success as a
//! pass, which is the one thing this suite exists to catch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::challenge::{Challenge, EvalKind};
use super::grade::{PythonGrader, grade};
use super::runner::challenge_tools;
use crate::confined::{Confined, copy_tree_into};
use crate::paths::Dirs;
use crate::plugin::policy::PluginPolicy;

/// What one challenge's grader did with each workspace.
#[derive(Debug, Clone, Serialize)]
pub struct GraderCheck {
    pub challenge: String,
    /// Not checked (an `llm` challenge, an unknown eval type), and why.
    pub skipped: Option<String>,
    /// Each problem found: a reference that fails, a wrong workspace that passes.
    pub problems: Vec<String>,
    /// Workspaces graded, the reference included.
    pub graded: usize,
}

impl GraderCheck {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Grade one workspace made of `layers` copied in order; `Ok(passed)`.
async fn grade_layers(
    dirs: &Dirs,
    plugins: &PluginPolicy,
    challenge: &Challenge,
    layers: &[PathBuf],
    limit: Duration,
) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::Builder::new().prefix("agent-check-").tempdir()?;
    let workspace = dir.path().canonicalize()?;
    let confined = Confined::open(&workspace)?;
    for layer in layers {
        copy_tree_into(layer, &confined)?;
    }
    copy_tree_into(&challenge.custom_python(), &confined)?;
    let tools = challenge_tools(dirs, plugins, &workspace).await?;
    let python = PythonGrader::Sandbox(tools.get("run_python").map(|t| t.as_ref()));
    let graded = grade(challenge, &workspace, limit, None, python).await;
    let why = graded
        .outputs
        .iter()
        .find_map(|o| o.reason.clone())
        .unwrap_or_default();
    Ok((graded.passed, why))
}

/// Check the graders of `challenges`.
pub async fn check_graders(
    dirs: &Dirs,
    plugins: &PluginPolicy,
    challenges: &[&Challenge],
    limit: Duration,
) -> Vec<GraderCheck> {
    let mut out = Vec::new();
    for challenge in challenges {
        let mut check = GraderCheck {
            challenge: challenge.name.clone(),
            skipped: None,
            problems: Vec::new(),
            graded: 0,
        };
        match challenge.kind() {
            EvalKind::Llm => {
                check.skipped = Some("graded by an LLM judge".into());
                out.push(check);
                continue;
            }
            EvalKind::Other(kind) => {
                check.skipped = Some(format!("unknown eval type `{kind}`"));
                out.push(check);
                continue;
            }
            _ => {}
        }
        if let Err(e) = check_one(dirs, plugins, challenge, limit, &mut check).await {
            check.problems.push(format!(
                "cannot check: {}",
                crate::errors::chain(e.as_ref())
            ));
        }
        out.push(check);
    }
    out
}

async fn check_one(
    dirs: &Dirs,
    plugins: &PluginPolicy,
    challenge: &Challenge,
    limit: Duration,
    check: &mut GraderCheck,
) -> anyhow::Result<()> {
    let input = challenge.artifacts_in();
    let reference = challenge.artifacts_out();
    if reference.is_dir() {
        let (passed, why) =
            grade_layers(dirs, plugins, challenge, &[input.clone(), reference], limit).await?;
        check.graded += 1;
        if !passed {
            check.problems.push(format!(
                "the reference solution (artifacts_out/) fails: {why}"
            ));
        }
    } else {
        check
            .problems
            .push("no reference solution (artifacts_out/) to prove the grader can pass".into());
    }
    let mut wrong: Vec<(String, Option<&Path>)> = vec![("the untouched workspace".into(), None)];
    let attempts = challenge.wrong_attempts()?;
    wrong.extend(
        attempts
            .iter()
            .map(|(name, path)| (format!("wrong attempt `{name}`"), Some(path.as_path()))),
    );
    for (label, layer) in wrong {
        let mut layers = vec![input.clone()];
        layers.extend(layer.map(Path::to_path_buf));
        let (passed, _) = grade_layers(dirs, plugins, challenge, &layers, limit).await?;
        check.graded += 1;
        if passed {
            check.problems.push(format!("{label} passes"));
        }
    }
    Ok(())
}

/// The checks as lines, one per challenge, and a total.
pub fn table(checks: &[GraderCheck]) -> String {
    let mut out = String::new();
    for c in checks {
        let name = crate::sanitize::one_line(&c.challenge, 40);
        if let Some(why) = &c.skipped {
            out.push_str(&format!("skipped {name}: {why}\n"));
        } else if c.ok() {
            out.push_str(&format!(
                "ok      {name}: the reference passes, {} wrong workspace{} fail\n",
                c.graded - 1,
                if c.graded == 2 { "" } else { "s" }
            ));
        } else {
            out.push_str(&format!("FAILED  {name}: {}\n", c.problems.join("; ")));
        }
    }
    let failed = checks.iter().filter(|c| !c.ok()).count();
    let checked = checks.iter().filter(|c| c.skipped.is_none()).count();
    out.push_str(&format!(
        "\n{} of {checked} graders proved ({} workspaces graded){}\n",
        checked - failed,
        checks.iter().map(|c| c.graded).sum::<usize>(),
        if failed > 0 {
            format!("; {failed} with problems")
        } else {
            String::new()
        }
    ));
    out
}
