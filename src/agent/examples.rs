//! Examples chosen for the task (LangChain's example selectors): runs of
//! this user's that reached their goal are an example bank. A new run is
//! shown the one or two whose goals are most like its own, ranked by BM25
//! over the goals (the memory index's tokeniser: stop words dropped, plurals
//! stemmed), as worked examples before its goal, within a token budget.
//!
//! What counts as reaching the goal: a top-level run that ended `finished`
//! (so it passed verified finishing, [`super::verify`]) and that `agent
//! eval` did not grade as failed ([`RunRecord::graded`]). Plan runs' steps
//! are not examples of their own. A run with exactly the goal being run is
//! left out: the bank teaches the shape of similar work, and an eval suite
//! re-run must not be shown its own answers.
//!
//! An example shows each action that ran (thought, tool, arguments; long
//! strings cut) and the first line of what it returned, and the final
//! answer. Failed, refused and repeated actions are left out. The words
//! come from the user's own earlier runs, which may have read untrusted
//! files: the prompt frames them as examples, not instructions, and cuts
//! them short.

use serde_json::Value;

use crate::memory::index::tokenize;
use crate::memory::journal::StepOutcome;
use crate::memory::{RunJournal, RunRecord, RunStatus, StepRecord};
use crate::model::{self, ModelBackend};
use crate::sanitize;

/// Most past runs scanned for examples (newest first).
const SCANNED: usize = 2000;
/// The longest string argument shown in an example action.
const ARG_CHARS: usize = 160;
/// The longest observation line shown.
const OBSERVATION_CHARS: usize = 160;
/// A goal must reach at least this share of the best BM25 score the query
/// could get in the bank to be an example at all.
const MIN_SCORE: f32 = 0.3;

/// One worked example, ready for the prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PastExample {
    pub run_id: String,
    pub goal: String,
    /// Each action as JSON, and the first line of its result.
    pub steps: Vec<ExampleStep>,
    pub answer: String,
}

/// One action of an example.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExampleStep {
    pub action: String,
    pub observation: String,
}

fn eligible(run: &RunRecord, goal: &str) -> bool {
    run.status == RunStatus::Finished
        && run.graded != Some(false)
        && run.settings.mcp.is_none()
        && !run.id.contains('.')
        && run.goal.trim().to_lowercase() != goal.trim().to_lowercase()
}

/// Goals of `candidates` ranked by BM25 against `goal`, best first, with
/// their scores normalised to the best a goal could reach with the query's
/// words that occur in the bank at all. A goal must share at least two
/// informative words with the query (words not in every goal of the bank,
/// such as `txt`), so one common word is not a match.
fn rank(goal: &str, candidates: &[RunRecord]) -> Vec<(usize, f32)> {
    const K1: f32 = 1.2;
    const B: f32 = 0.75;
    let docs: Vec<Vec<String>> = candidates.iter().map(|r| tokenize(&r.goal)).collect();
    if docs.is_empty() {
        return Vec::new();
    }
    let n = docs.len() as f32;
    let avgdl = (docs.iter().map(Vec::len).sum::<usize>() as f32 / n).max(1.0);
    let mut terms = tokenize(goal);
    terms.sort();
    terms.dedup();
    // (term, idf, informative) for the query's words found in the bank.
    let found: Vec<(String, f32, bool)> = terms
        .into_iter()
        .filter_map(|t| {
            let df = docs.iter().filter(|d| d.contains(&t)).count();
            (df > 0).then(|| {
                let idf = (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
                (t, idf, df < docs.len() || docs.len() == 1)
            })
        })
        .collect();
    let best: f32 = found.iter().map(|(_, idf, _)| idf * (K1 + 1.0)).sum();
    if best <= 0.0 {
        return Vec::new();
    }
    let mut scored: Vec<(usize, f32)> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let dl = d.len() as f32;
            let mut score = 0.0;
            let mut informative = 0;
            for (t, idf, useful) in &found {
                let tf = d.iter().filter(|w| *w == t).count() as f32;
                if tf > 0.0 {
                    informative += usize::from(*useful);
                    score += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl / avgdl));
                }
            }
            (informative >= 2 && score / best >= MIN_SCORE).then_some((i, score / best))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

/// Cut every string in `v` to `ARG_CHARS`.
fn cut_strings(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(sanitize::cap_head_tail(s, ARG_CHARS)),
        Value::Array(a) => Value::Array(a.iter().map(cut_strings).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), cut_strings(v))).collect())
        }
        other => other.clone(),
    }
}

fn example(run: &RunRecord, steps: &[StepRecord]) -> Option<PastExample> {
    let shown: Vec<ExampleStep> = steps
        .iter()
        .filter(|s| s.outcome == StepOutcome::Ok)
        .filter_map(|s| {
            let action = serde_json::json!({
                "thought": sanitize::one_line(s.thought.as_deref().unwrap_or(""), ARG_CHARS),
                "tool": s.tool.as_deref()?,
                "args": cut_strings(s.args.as_ref()?),
            });
            Some(ExampleStep {
                action: action.to_string(),
                observation: sanitize::one_line(
                    s.observation.lines().next().unwrap_or(""),
                    OBSERVATION_CHARS,
                ),
            })
        })
        .collect();
    (!shown.is_empty()).then(|| PastExample {
        run_id: run.id.clone(),
        goal: sanitize::one_line(&run.goal, 300),
        steps: shown,
        answer: sanitize::one_line(run.answer.as_deref().unwrap_or(""), 300),
    })
}

fn tokens(model: &dyn ModelBackend, ex: &PastExample) -> usize {
    let text: String = std::iter::once(ex.goal.as_str())
        .chain(
            ex.steps
                .iter()
                .flat_map(|s| [s.action.as_str(), s.observation.as_str()]),
        )
        .collect::<Vec<_>>()
        .join("\n");
    model::count_tokens(model, &text) + 16
}

/// At most `k` examples for `goal` from `journal`, the most similar first,
/// together within `budget` tokens (as `model` counts them); `exclude` is
/// the run being started.
pub fn select(
    journal: &RunJournal,
    model: &dyn ModelBackend,
    goal: &str,
    exclude: &str,
    k: usize,
    budget: usize,
) -> Vec<PastExample> {
    if k == 0 || budget == 0 {
        return Vec::new();
    }
    let candidates: Vec<RunRecord> = journal
        .list(SCANNED)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.id != exclude && eligible(r, goal))
        .collect();
    let mut out = Vec::new();
    let mut used = 0;
    for (i, _) in rank(goal, &candidates) {
        if out.len() >= k {
            break;
        }
        let run = &candidates[i];
        let Some(ex) = example(run, &journal.steps(&run.id).unwrap_or_default()) else {
            continue;
        };
        let cost = tokens(model, &ex);
        if used + cost > budget {
            continue;
        }
        used += cost;
        out.push(ex);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(goal: &str) -> RunRecord {
        let mut r = RunRecord::new("r".into(), goal.into(), Default::default());
        r.status = RunStatus::Finished;
        r
    }

    #[test]
    fn goals_rank_by_shared_rare_words_and_unrelated_ones_are_left_out() {
        let runs = vec![
            run("Write the word Washington to output.txt"),
            run("Add up the numbers in numbers.txt and write the total to sum.txt"),
            run("Summarise notes.txt into summary.txt"),
        ];
        let ranked = rank("Compute the total of the numbers in values.txt", &runs);
        assert_eq!(ranked.first().map(|r| r.0), Some(1), "{ranked:?}");
        assert!(rank("Translate a poem into French", &runs).is_empty());
    }

    #[test]
    fn only_runs_that_reached_a_different_goal_are_eligible() {
        let goal = "Write hi to a.txt";
        assert!(eligible(&run("Write bye to b.txt"), goal));
        assert!(!eligible(&run("write hi to a.txt "), goal), "the same goal");
        let mut failed = run("Write bye to b.txt");
        failed.graded = Some(false);
        assert!(!eligible(&failed, goal), "graded as failed by eval");
        let mut stopped = run("Write bye to b.txt");
        stopped.status = RunStatus::Unverified;
        assert!(!eligible(&stopped, goal));
        let child = RunRecord {
            id: "x.s1".into(),
            ..run("Write bye to b.txt")
        };
        assert!(!eligible(&child, goal));
    }
}
