//! `agent eval --compare A.json B.json`: two reports of a suite (`agent
//! eval --json` output) side by side, so a change is judged by the whole
//! suite and not by the one challenge it was made for.
//!
//! Totals are compared over the challenges both reports ran (a challenge in
//! only one of them is listed, not counted), so a suite that grew between
//! the runs does not look like a change in pass rate.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Report, Totals};

/// A report that cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read the report {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a report of `agent eval --json` ({source}); write one with `agent eval DIR --json > FILE`"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Read a report written by `agent eval --json`.
pub fn load(path: &Path) -> Result<Report, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut report: Report = serde_json::from_str(&text).map_err(|source| CompareError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    // Reports from before `status` existed: the status leads the reason.
    for o in &mut report.results {
        if o.status.is_empty()
            && let Some((status, _)) = o.stop_reason.split_once(':')
            && crate::memory::RunStatus::parse(status).is_some()
        {
            o.status = status.to_string();
        }
    }
    report.totals = super::Totals::over(&report.results);
    report.challenges = report.per_challenge();
    Ok(report)
}

/// How one challenge did in each report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub challenge: String,
    pub a: Option<Totals>,
    pub b: Option<Totals>,
}

impl Row {
    /// `better`, `worse` or empty, by pass rate (then nothing).
    pub fn change(&self) -> &'static str {
        match (&self.a, &self.b) {
            (Some(a), Some(b)) if b.pass_rate > a.pass_rate + 1e-9 => "better",
            (Some(a), Some(b)) if b.pass_rate + 1e-9 < a.pass_rate => "worse",
            (Some(_), None) => "only in A",
            (None, Some(_)) => "only in B",
            _ => "",
        }
    }
}

/// Two reports compared.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: Label,
    pub b: Label,
    /// Every challenge of either report: A's order, then B's new ones.
    pub rows: Vec<Row>,
    /// Totals of each report over the challenges both ran.
    pub common_a: Totals,
    pub common_b: Totals,
    /// Challenges that pass less often in B than in A, and more often.
    pub worse: Vec<String>,
    pub better: Vec<String>,
}

/// Which run a side is.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub file: String,
    pub model: String,
    pub strategy: String,
}

/// Compare report `b` (the change) with `a` (the baseline).
pub fn compare(a: &Report, a_file: &Path, b: &Report, b_file: &Path) -> Comparison {
    let find = |r: &Report, name: &str| {
        r.challenges
            .iter()
            .find(|c| c.challenge == name)
            .map(|c| c.totals.clone())
    };
    let mut names: Vec<String> = a.challenges.iter().map(|c| c.challenge.clone()).collect();
    for c in &b.challenges {
        if !names.contains(&c.challenge) {
            names.push(c.challenge.clone());
        }
    }
    let rows: Vec<Row> = names
        .into_iter()
        .map(|name| Row {
            a: find(a, &name),
            b: find(b, &name),
            challenge: name,
        })
        .collect();
    let common = |r: &Report| {
        Totals::over(r.results.iter().filter(|o| {
            rows.iter()
                .any(|row| row.a.is_some() && row.b.is_some() && row.challenge == o.challenge)
        }))
    };
    let named = |change: &str| {
        rows.iter()
            .filter(|r| r.change() == change)
            .map(|r| r.challenge.clone())
            .collect()
    };
    let label = |r: &Report, file: &Path| Label {
        file: file.display().to_string(),
        model: r.model.clone(),
        strategy: r.strategy.clone(),
    };
    Comparison {
        a: label(a, a_file),
        b: label(b, b_file),
        common_a: common(a),
        common_b: common(b),
        worse: named("worse"),
        better: named("better"),
        rows,
    }
}

fn passes(t: Option<&Totals>) -> String {
    t.map_or("-".into(), |t| {
        if t.passed + t.failed == 0 {
            "skipped".into()
        } else {
            format!("{}/{}", t.passed, t.passed + t.failed)
        }
    })
}

fn per_pass(t: &Totals) -> String {
    if t.passed == 0 {
        "-".into()
    } else {
        format!("{:.1}", t.passed_steps as f64 / t.passed as f64)
    }
}

impl Comparison {
    /// The comparison as a plain-text table and a totals block.
    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.challenge.chars().count())
            .max()
            .unwrap_or(9)
            .clamp(9, 40);
        let mut out = format!(
            "A: {} (model {}, agent {})\nB: {} (model {}, agent {})\n\n",
            self.a.file, self.a.model, self.a.strategy, self.b.file, self.b.model, self.b.strategy
        );
        out.push_str(&format!(
            "{:<width$}  {:>8}  {:>8}  {:>7}  {:>7}  {:>8}  {:>8}  change\n",
            "challenge", "A passed", "B passed", "A steps", "B steps", "A s", "B s"
        ));
        let num = |t: Option<&Totals>, f: &dyn Fn(&Totals) -> String| t.map_or("-".into(), f);
        for r in &self.rows {
            out.push_str(&format!(
                "{:<width$}  {:>8}  {:>8}  {:>7}  {:>7}  {:>8}  {:>8}  {}\n",
                crate::sanitize::one_line(&r.challenge, width),
                passes(r.a.as_ref()),
                passes(r.b.as_ref()),
                num(r.a.as_ref(), &|t| t.steps.to_string()),
                num(r.b.as_ref(), &|t| t.steps.to_string()),
                num(r.a.as_ref(), &|t| format!("{:.1}", t.seconds)),
                num(r.b.as_ref(), &|t| format!("{:.1}", t.seconds)),
                r.change()
            ));
        }
        let (a, b) = (&self.common_a, &self.common_b);
        let common = self
            .rows
            .iter()
            .filter(|r| r.a.is_some() && r.b.is_some())
            .count();
        out.push_str(&format!(
            "\nover the {common} challenges both ran:          A          B\n"
        ));
        let mut line = |what: &str, x: String, y: String| {
            out.push_str(&format!("  {what:<34}  {x:>9}  {y:>9}\n"));
        };
        line(
            "pass rate",
            format!("{:.0}%", a.pass_rate * 100.0),
            format!("{:.0}%", b.pass_rate * 100.0),
        );
        line(
            "passed",
            format!("{}/{}", a.passed, a.passed + a.failed),
            format!("{}/{}", b.passed, b.passed + b.failed),
        );
        line(
            "passes that ended finished",
            a.passed_finished.to_string(),
            b.passed_finished.to_string(),
        );
        line(
            "finished with a failing result",
            a.finished_failed.to_string(),
            b.finished_failed.to_string(),
        );
        line(
            "unverified",
            a.unverified.to_string(),
            b.unverified.to_string(),
        );
        line("steps per pass", per_pass(a), per_pass(b));
        line("tokens", a.tokens.to_string(), b.tokens.to_string());
        line(
            "seconds",
            format!("{:.1}", a.seconds),
            format!("{:.1}", b.seconds),
        );
        if !self.worse.is_empty() {
            out.push_str(&format!("\nworse in B: {}\n", self.worse.join(", ")));
        }
        if !self.better.is_empty() {
            out.push_str(&format!("better in B: {}\n", self.better.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Outcome;

    fn outcome(name: &str, result: &str, status: &str, steps: u32) -> Outcome {
        Outcome {
            challenge: name.into(),
            category: vec![],
            attempt: 1,
            result: result.into(),
            steps,
            tokens: 100,
            seconds: 2.0,
            status: status.into(),
            stop_reason: String::new(),
            timed_out: false,
            run_id: None,
            answer: None,
            grade: None,
            cost: Vec::new(),
        }
    }

    #[test]
    fn a_change_is_judged_over_the_challenges_both_ran() {
        let a = Report::new(
            "m".into(),
            "react".into(),
            vec![
                outcome("Sum", "failed", "finished", 3),
                outcome("Csv", "passed", "finished", 4),
                outcome("Old", "passed", "finished", 2),
            ],
        );
        let b = Report::new(
            "m".into(),
            "react".into(),
            vec![
                outcome("Sum", "passed", "finished", 3),
                outcome("Csv", "failed", "unverified", 6),
                outcome("New", "passed", "finished", 2),
            ],
        );
        let c = compare(&a, Path::new("a.json"), &b, Path::new("b.json"));
        assert_eq!(c.better, vec!["Sum"]);
        assert_eq!(c.worse, vec!["Csv"]);
        // Old and New are each in one report only: not counted.
        assert_eq!((c.common_a.passed, c.common_a.failed), (1, 1));
        assert_eq!((c.common_b.passed, c.common_b.failed), (1, 1));
        assert_eq!(c.common_a.finished_failed, 1);
        assert_eq!(c.common_b.unverified, 1);
        let table = c.table();
        assert!(table.contains("only in A"), "{table}");
        assert!(table.contains("only in B"), "{table}");
        assert!(table.contains("worse in B: Csv"), "{table}");
        assert!(table.contains("over the 2 challenges both ran"), "{table}");
    }

    #[test]
    fn a_report_from_before_per_challenge_totals_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        // An older report: no `status`, no `challenges`, no new totals.
        std::fs::write(
            &path,
            r#"{"model":"m","strategy":"react","results":[{"challenge":"W","category":[],"attempt":1,"result":"passed","steps":2,"tokens":5,"seconds":1.0,"stop_reason":"finished: done","timed_out":false,"run_id":null,"answer":null,"grade":null}],"totals":{"attempts":1,"passed":1,"failed":0,"skipped":0,"pass_rate":1.0,"steps":2,"tokens":5,"seconds":1.0}}"#,
        )
        .unwrap();
        let report = load(&path).unwrap();
        assert_eq!(report.challenges.len(), 1);
        assert_eq!(report.challenges[0].totals.passed, 1);
        assert_eq!(report.results[0].status, "finished");
        assert_eq!(report.totals.passed_finished, 1);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"results\": 3}").unwrap();
        let error = load(&bad).unwrap_err().to_string();
        assert!(error.contains("agent eval DIR --json"), "{error}");
    }
}
