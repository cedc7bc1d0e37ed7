//! The offline evaluation runner behind `agent eval DIR`: run a suite of
//! challenges (AutoGPT's benchmark format, see [`challenge`]), each in a
//! fresh temporary workspace, grade the workspace ([`grade`]), and report a
//! table or JSON ([`Report`]). `--check` proves a suite's graders without
//! a model ([`check`]); `--compare` sets two reports side by side
//! ([`compare`]).
//!
//! Decisions:
//! - The runner uses the library directly, not subprocesses: one model is
//!   loaded and its `Arc<dyn ModelBackend>` shared by every challenge, also
//!   when `--parallel` runs several at once.
//! - Every attempt is an ordinary run in the user's journal (its transcript
//!   is `agent runs show ID`), so a failure can be read step by step.
//! - A challenge whose time runs out fails as timed out (AutoGPT's rule);
//!   challenges that need an LLM judge, or an evaluation type this runner
//!   does not know, are reported as skipped rather than failed.

pub mod challenge;
pub mod check;
pub mod compare;
pub mod grade;
pub mod runner;

use serde::{Deserialize, Serialize};

use crate::model::roles::{ModelCost, merge_costs};

pub use challenge::{Challenge, ChallengeError, load_suite};
pub use grade::Grade;
pub use runner::{EvalOptions, EvalRunner};

/// The result of one attempt at one challenge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub challenge: String,
    pub category: Vec<String>,
    /// 1-based repetition.
    pub attempt: u32,
    /// `passed`, `failed` or `skipped`.
    pub result: String,
    pub steps: u32,
    pub tokens: u64,
    pub seconds: f64,
    /// How the run ended (`finished`, `unverified`, `stopped`, …; see
    /// `RunStatus`), empty when no run was made. Reports written before
    /// this field existed read as empty.
    #[serde(default)]
    pub status: String,
    /// The run's status and why it stopped (or why it was skipped).
    pub stop_reason: String,
    pub timed_out: bool,
    /// The run in the journal, when one was made.
    pub run_id: Option<String>,
    /// The final answer the agent gave, if any.
    pub answer: Option<String>,
    pub grade: Option<Grade>,
    /// What each model cost the run, by role (`crate::model::roles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost: Vec<ModelCost>,
}

impl Outcome {
    /// True when graded and passed.
    pub fn passed(&self) -> bool {
        self.result == "passed"
    }

    /// True when not attempted.
    pub fn skipped(&self) -> bool {
        self.result == "skipped"
    }
}

/// Sums over every attempt (or over one challenge's attempts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub attempts: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Runs that ended `unverified` (the agent finished, but a check of
    /// what the goal asked for failed), passed or not.
    #[serde(default)]
    pub unverified: usize,
    /// Passing runs that ended `finished` (the goal: every passing run).
    #[serde(default)]
    pub passed_finished: usize,
    /// Runs that ended `finished` and failed the grader: a claimed success
    /// that did not happen (the goal: none).
    #[serde(default)]
    pub finished_failed: usize,
    /// passed / (passed + failed), 0 when nothing was graded.
    pub pass_rate: f64,
    pub steps: u64,
    /// Steps of the passing attempts (per success: this / `passed`).
    #[serde(default)]
    pub passed_steps: u64,
    pub tokens: u64,
    pub seconds: f64,
}

impl Totals {
    /// The sums over `outcomes`.
    pub fn over<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Self {
        let mut t = Totals::default();
        for r in outcomes {
            t.attempts += 1;
            let finished = r.status == "finished";
            if r.passed() {
                t.passed += 1;
                t.passed_finished += usize::from(finished);
                t.passed_steps += r.steps as u64;
            } else if r.skipped() {
                t.skipped += 1;
            } else {
                t.failed += 1;
                t.finished_failed += usize::from(finished);
            }
            t.unverified += usize::from(r.status == "unverified");
            t.steps += r.steps as u64;
            t.tokens += r.tokens;
            t.seconds += r.seconds;
        }
        if t.passed + t.failed > 0 {
            t.pass_rate = t.passed as f64 / (t.passed + t.failed) as f64;
        }
        t
    }
}

/// One challenge's attempts, summed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChallengeTotals {
    pub challenge: String,
    pub totals: Totals,
}

/// What an evaluation found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub strategy: String,
    pub results: Vec<Outcome>,
    /// Per challenge, in suite order (reports written before this field
    /// existed get it recomputed from `results` when read).
    #[serde(default)]
    pub challenges: Vec<ChallengeTotals>,
    pub totals: Totals,
    /// What each model cost over every attempt, with the roles it took, so
    /// a split (`--smart`, `--fast`) compares with one model alone.
    #[serde(default)]
    pub models: Vec<ModelCost>,
}

impl Report {
    /// A report over `results` (totals computed).
    pub fn new(model: String, strategy: String, results: Vec<Outcome>) -> Self {
        let models = results
            .iter()
            .fold(Vec::new(), |sum, r| merge_costs(&sum, &r.cost));
        let mut report = Self {
            model,
            strategy,
            totals: Totals::over(&results),
            results,
            challenges: Vec::new(),
            models,
        };
        report.challenges = report.per_challenge();
        report
    }

    /// The sums per challenge, in the order challenges first appear.
    pub fn per_challenge(&self) -> Vec<ChallengeTotals> {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.results {
            if !names.contains(&r.challenge.as_str()) {
                names.push(&r.challenge);
            }
        }
        names
            .into_iter()
            .map(|name| ChallengeTotals {
                challenge: name.to_string(),
                totals: Totals::over(self.results.iter().filter(|r| r.challenge == name)),
            })
            .collect()
    }

    /// The report as a plain-text table with totals.
    pub fn table(&self) -> String {
        let name_width = self
            .results
            .iter()
            .map(|r| r.challenge.chars().count() + if self.repeated() { 3 } else { 0 })
            .max()
            .unwrap_or(9)
            .clamp(9, 40);
        let mut out = format!(
            "{:<name_width$}  {:<7}  {:>5}  {:>7}  {:>7}  stop reason\n",
            "challenge", "result", "steps", "tokens", "seconds"
        );
        for r in &self.results {
            let name = if self.repeated() {
                format!("{} #{}", r.challenge, r.attempt)
            } else {
                r.challenge.clone()
            };
            let reason = crate::sanitize::one_line(&r.stop_reason, 70);
            out.push_str(&format!(
                "{:<name_width$}  {:<7}  {:>5}  {:>7}  {:>7.1}  {reason}\n",
                crate::sanitize::one_line(&name, name_width),
                r.result,
                r.steps,
                r.tokens,
                r.seconds
            ));
        }
        if self.repeated() {
            out.push_str(&format!(
                "\n{:<name_width$}  {:>7}  {:>10}  {:>7}  {:>7}\n",
                "challenge", "passed", "unverified", "steps", "seconds"
            ));
            for c in self.per_challenge() {
                let t = &c.totals;
                out.push_str(&format!(
                    "{:<name_width$}  {:>7}  {:>10}  {:>7}  {:>7.1}\n",
                    crate::sanitize::one_line(&c.challenge, name_width),
                    format!("{}/{}", t.passed, t.passed + t.failed),
                    t.unverified,
                    t.steps,
                    t.seconds
                ));
            }
        }
        let t = &self.totals;
        out.push_str(&format!(
            "\n{} passed, {} failed, {} skipped of {} ({:.0}% of graded) · {} unverified · {} of {} passes ended finished · {} finished with a failing result · {} steps · {} tokens · {:.1} s · model {} · agent {}\n",
            t.passed,
            t.failed,
            t.skipped,
            t.attempts,
            t.pass_rate * 100.0,
            t.unverified,
            t.passed_finished,
            t.passed,
            t.finished_failed,
            t.steps,
            t.tokens,
            t.seconds,
            self.model,
            self.strategy
        ));
        for cost in &self.models {
            out.push_str(&format!("  {}\n", cost.line()));
        }
        out
    }

    fn repeated(&self) -> bool {
        self.results.iter().any(|r| r.attempt > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, result: &str, tokens: u64) -> Outcome {
        Outcome {
            challenge: name.into(),
            category: vec![],
            attempt: 1,
            result: result.into(),
            steps: 2,
            tokens,
            seconds: 1.5,
            status: "finished".into(),
            stop_reason: "finished".into(),
            timed_out: false,
            run_id: None,
            answer: None,
            grade: None,
            cost: Vec::new(),
        }
    }

    #[test]
    fn totals_leave_skipped_challenges_out_of_the_pass_rate() {
        let r = Report::new(
            "m".into(),
            "react".into(),
            vec![
                outcome("a", "passed", 10),
                outcome("b", "failed", 5),
                outcome("c", "skipped", 0),
            ],
        );
        assert_eq!(
            (r.totals.passed, r.totals.failed, r.totals.skipped),
            (1, 1, 1)
        );
        assert!((r.totals.pass_rate - 0.5).abs() < 1e-9);
        assert_eq!(r.totals.tokens, 15);
        let table = r.table();
        assert!(
            table.contains("1 passed, 1 failed, 1 skipped of 3 (50% of graded)"),
            "{table}"
        );
        assert!(table.lines().nth(1).unwrap().starts_with("a "), "{table}");
    }
}
