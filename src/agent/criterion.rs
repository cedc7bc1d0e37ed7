//! A plan step's "done when", checked after each action of the step's
//! ReAct loop, so a step ends as soon as its criterion is met instead of
//! looping until the repetition guard stops it (measured with the 1.5B
//! model: "sum numbers.txt into sum.txt" under `--agent plan` took 7 min
//! 47 s because each step kept acting after its first action had met its
//! criterion).
//!
//! Where the criterion names files, it is checked directly, without a
//! model call: a file that did not exist when the step began must exist now
//! and not be empty ("sum.txt holds the total"); a file that already existed
//! must have been named in one of the step's successful actions ("the
//! listing shows numbers.txt", "numbers.txt has been read"), or shown by a
//! listing of the workspace root. A step that ends this way goes on to the
//! plan's next step without a replanner call. A step that works on files,
//! folders or pages may not make `finish` its first action (its schema
//! leaves `finish` out): only a tool can show what such a step finds. A criterion that names no file is left to
//! the step's model, which ends the step with `finish` as before: asking it
//! a yes/no question after every action would cost a model call per action
//! (seconds each on a CPU), and the planner is asked to name the file a
//! step produces or reads in its criterion, so most steps are checked
//! directly.

use std::path::{Path, PathBuf};

use super::verify::file_name;
use crate::confined::Confined;
use crate::memory::StepRecord;
use crate::memory::journal::StepOutcome;

/// The stop reason of a step that ended because its criterion was checked
/// and met; the plan goes on from such a step without asking the
/// replanner (`agent::plan`).
pub const MET: &str = "the step's success criterion is met";

/// Words that make a step's description or criterion about the
/// workspace or the web, besides a file's name.
const WORKSPACE_WORDS: &[&str] = &[
    "file",
    "files",
    "directory",
    "directories",
    "folder",
    "folders",
    "page",
    "url",
];

/// Whether a step described by `description`, done when `criterion`,
/// works on files, folders or pages: then only a tool can show its result.
pub fn works_on_files(description: &str, criterion: &str) -> bool {
    [description, criterion]
        .iter()
        .flat_map(|t| t.split_whitespace())
        .any(|word| {
            file_name(word).is_some() || word.contains("://") || {
                let w = word
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase();
                WORKSPACE_WORDS.contains(&w.as_str())
            }
        })
}

/// One plan step's criterion, as its ReAct loop checks it.
#[derive(Debug, Clone)]
pub struct StepCriterion {
    /// When it is done (the plan's `success_criterion`).
    pub text: String,
    /// The step works on files, folders or pages ([`works_on_files`]), so
    /// its first action may not be `finish`: measured (2026-12-02, plan
    /// mode with the 1.5B model), steps finished at once with the result
    /// they were to find made up ("The file 'numbers.txt' does not exist",
    /// "output.txt should exist.", "The directory 'vowels' exists") and the
    /// plan built on it.
    pub acts_first: bool,
    /// The plan's workspace, where named files are looked for.
    pub workspace: Option<PathBuf>,
    /// The files the criterion names that existed when the step began.
    pub existed: Vec<String>,
}

/// The files `text` names, in order, without repeats.
pub fn named_files(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        if let Some(name) = file_name(word)
            && !out.iter().any(|o| o == name)
        {
            out.push(name.to_string());
        }
    }
    out
}

fn usable(dir: &Confined, name: &str) -> bool {
    let path = Path::new(name);
    dir.is_file(path)
        && dir
            .read_head(path, 4096)
            .is_ok_and(|b| b.iter().any(|c| !c.is_ascii_whitespace()))
}

impl StepCriterion {
    /// The criterion of a step starting now in `workspace`, described by
    /// `description`.
    pub fn new(description: &str, text: String, workspace: Option<PathBuf>) -> Self {
        let existed = match workspace.as_deref().map(Confined::open) {
            Some(Ok(dir)) => named_files(&text)
                .into_iter()
                .filter(|n| dir.is_file(Path::new(n)))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            acts_first: works_on_files(description, &text),
            text,
            workspace,
            existed,
        }
    }

    /// The direct check, where the criterion names files and there is a
    /// workspace: `Some(met)` after the step's actions `steps`; `None` when
    /// it names no file (the step's model decides).
    pub fn check_files(&self, steps: &[&StepRecord]) -> Option<bool> {
        let names = named_files(&self.text);
        let dir = Confined::open(self.workspace.as_deref()?).ok()?;
        if names.is_empty() {
            return None;
        }
        // Named in the action, or shown by a listing of the workspace root.
        let touched = |name: &str| {
            steps.iter().any(|s| {
                let Some(args) = s.args.as_ref().filter(|_| s.outcome == StepOutcome::Ok) else {
                    return false;
                };
                let root_listing = s.tool.as_deref() == Some("list_files")
                    && matches!(
                        args.get("path").and_then(|p| p.as_str()),
                        None | Some("." | "./" | "")
                    );
                root_listing || args.to_string().contains(name)
            })
        };
        Some(names.iter().all(|n| {
            if self.existed.contains(n) {
                touched(n)
            } else {
                usable(&dir, n)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(tool: &str, args: serde_json::Value, outcome: StepOutcome) -> StepRecord {
        StepRecord {
            outcome,
            ..StepRecord::called(1, tool, args, "")
        }
    }

    #[test]
    fn a_criterion_that_names_files_is_checked_without_the_model() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join("numbers.txt"), "1\n2\n").unwrap();
        let c = StepCriterion::new(
            "add them up",
            "sum.txt holds the total of numbers.txt".into(),
            Some(ws.path().to_path_buf()),
        );
        assert_eq!(c.existed, ["numbers.txt"]);
        let read = step("read_file", json!({"path": "numbers.txt"}), StepOutcome::Ok);
        // sum.txt is not written yet.
        assert_eq!(c.check_files(&[&read]), Some(false));
        std::fs::write(ws.path().join("sum.txt"), "3").unwrap();
        assert_eq!(c.check_files(&[&read]), Some(true));
        // numbers.txt existed: the step must have used it.
        let other = step("list_files", json!({"path": "sub"}), StepOutcome::Ok);
        assert_eq!(c.check_files(&[&other]), Some(false));
        let failed = step(
            "read_file",
            json!({"path": "numbers.txt"}),
            StepOutcome::ToolError,
        );
        assert_eq!(c.check_files(&[&failed]), Some(false));
        // A listing of the workspace root counts as seeing the file.
        let listing = step("list_files", json!({}), StepOutcome::Ok);
        assert_eq!(c.check_files(&[&listing]), Some(true));
        // No file named: the step's model decides.
        let vague = StepCriterion::new(
            "add them up",
            "the total is known".into(),
            Some(ws.path().to_path_buf()),
        );
        assert_eq!(vague.check_files(&[&read]), None);
    }

    /// The steps plan mode finished at once with a made-up result
    /// (2026-12-02) must act first; a step of thought need not.
    #[test]
    fn a_step_on_files_folders_or_pages_acts_before_it_finishes() {
        for (description, criterion) in [
            (
                "Read the numbers from 'numbers.txt' into a list.",
                "The list 'numbers' contains all the numbers.",
            ),
            (
                "Create a new directory named 'vowels' in the workspace.",
                "The directory 'vowels' exists.",
            ),
            ("Create the file `output.txt`.", "It should exist."),
            (
                "Read the page",
                "the price from http://127.0.0.1:18765/ is known",
            ),
            ("Look in the Folder.", "done"),
        ] {
            assert!(
                StepCriterion::new(description, criterion.into(), None).acts_first,
                "{description} / {criterion}"
            );
        }
        for (description, criterion) in [
            (
                "Sum the numbers in the list.",
                "The variable 'total' holds the sum.",
            ),
            ("Report the answer to the user", "the user has the answer"),
            ("Profile the data", "the profile is known"),
        ] {
            assert!(
                !StepCriterion::new(description, criterion.into(), None).acts_first,
                "{description} / {criterion}"
            );
        }
    }
}
