//! Challenges in AutoGPT's benchmark format, so existing suites run
//! unchanged: a directory per challenge holding `data.json` (the task, a
//! `cutoff` in seconds, and the `ground` truth to grade against), and
//! optionally `artifacts_in/` (copied into the fresh workspace before the
//! run), `custom_python/` (copied in after the run, for `python` grading)
//! and `artifacts_out/` (a reference solution, never shown to the agent).
//! Ours adds `artifacts_wrong/NAME/`: known-wrong attempts, which
//! `agent eval --check` proves the grader fails ([`super::check`]).
//!
//! Unknown fields are accepted (AutoGPT's files carry `eval_id`, `info`,
//! `dependencies` and more that grading does not need). Suites are found by
//! walking a directory for `data.json` files, in path order with numbers
//! compared as numbers (`2_…` before `10_…`), so a run is reproducible.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How a challenge's outputs are graded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalKind {
    /// Read each listed file and check the strings.
    File,
    /// Run each listed Python file in the workspace; check its output.
    Python,
    /// Run `python3 -m pytest` in the workspace; pass when it passes.
    Pytest,
    /// Needs a language model to judge (`llm`); skipped without one.
    Llm,
    /// Something this runner does not know; reported as skipped.
    Other(String),
}

/// `ground.eval`.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub scoring: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
}

/// `ground`: what a passing workspace holds.
#[derive(Debug, Clone, Deserialize)]
pub struct Ground {
    #[serde(default)]
    pub answer: String,
    #[serde(default)]
    pub should_contain: Vec<String>,
    #[serde(default)]
    pub should_not_contain: Vec<String>,
    /// File names, or extensions such as `.txt` (every file with it).
    #[serde(default)]
    pub files: Vec<String>,
    pub eval: EvalSpec,
    /// AutoGPT's default: comparisons are case-sensitive.
    #[serde(default = "yes")]
    pub case_sensitive: bool,
}

fn yes() -> bool {
    true
}

/// `data.json` as written.
#[derive(Debug, Clone, Deserialize)]
struct DataJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    category: Vec<String>,
    task: String,
    #[serde(default)]
    cutoff: Option<u64>,
    ground: Ground,
}

/// One challenge, ready to run.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `name` from data.json, or the directory name.
    pub name: String,
    pub category: Vec<String>,
    pub task: String,
    /// Seconds the agent gets (AutoGPT's `cutoff`), when given.
    pub cutoff: Option<u64>,
    pub ground: Ground,
    /// The challenge directory (holding data.json).
    pub dir: PathBuf,
}

/// A suite that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("cannot read the challenge directory {path}: {detail}")]
    Walk { path: PathBuf, detail: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid challenge ({detail}); it needs at least `task` and `ground` with `eval.type`"
    )]
    Parse { path: PathBuf, detail: String },
    #[error("no challenges (data.json files) under {0}")]
    Empty(PathBuf),
}

impl Challenge {
    /// Load the challenge whose `data.json` is at `path`.
    pub fn load(path: &Path) -> Result<Self, ChallengeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ChallengeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let data: DataJson = serde_json::from_str(&text).map_err(|e| ChallengeError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = data
            .name
            .filter(|n| !n.trim().is_empty())
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "challenge".into());
        Ok(Self {
            name,
            category: data.category,
            task: data.task,
            cutoff: data.cutoff,
            ground: data.ground,
            dir,
        })
    }

    /// How it is graded.
    pub fn kind(&self) -> EvalKind {
        match self.ground.eval.kind.as_str() {
            "file" => EvalKind::File,
            "python" => EvalKind::Python,
            "pytest" => EvalKind::Pytest,
            "llm" => EvalKind::Llm,
            other => EvalKind::Other(other.to_string()),
        }
    }

    /// True when `filter` names it (case-insensitive part of the name) or one of its categories.
    pub fn matches(&self, filter: &str) -> bool {
        let f = filter.to_lowercase();
        self.name.to_lowercase().contains(&f) || self.category.iter().any(|c| c.to_lowercase() == f)
    }

    /// `artifacts_in/` (copied into the workspace before the run).
    pub fn artifacts_in(&self) -> PathBuf {
        self.dir.join("artifacts_in")
    }

    /// `custom_python/` (copied into the workspace after the run).
    pub fn custom_python(&self) -> PathBuf {
        self.dir.join("custom_python")
    }

    /// `artifacts_out/` (the reference solution).
    pub fn artifacts_out(&self) -> PathBuf {
        self.dir.join("artifacts_out")
    }

    /// The known-wrong attempts under `artifacts_wrong/`, by name, in order.
    pub fn wrong_attempts(&self) -> Result<Vec<(String, PathBuf)>, ChallengeError> {
        let dir = self.dir.join("artifacts_wrong");
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let entries = std::fs::read_dir(&dir).map_err(|source| ChallengeError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ChallengeError::Read {
                path: dir.clone(),
                source,
            })?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
        out.sort_by_key(|a| natural_key(&a.0));
        Ok(out)
    }
}

/// Directories that belong to a challenge and hold no challenges.
const NOT_CHALLENGES: [&str; 4] = [
    "artifacts_in",
    "artifacts_out",
    "artifacts_wrong",
    "custom_python",
];

/// A sort key that compares a leading number as a number (`2_a` < `10_a`).
fn natural_key(name: &str) -> (u64, String) {
    let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
    let number = digits.parse().unwrap_or(u64::MAX);
    (number, name[digits.len()..].to_string())
}

/// Every challenge under `root` (or `root` itself when it holds data.json), in path order.
pub fn load_suite(root: &Path) -> Result<Vec<Challenge>, ChallengeError> {
    let mut paths = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| ChallengeError::Walk {
            path: root.to_path_buf(),
            detail: e.to_string(),
        })?;
        // Reference solutions and inputs are not challenges of their own.
        if entry.file_type().is_file()
            && entry.file_name() == "data.json"
            && !entry.path().components().any(|c| {
                c.as_os_str()
                    .to_str()
                    .is_some_and(|c| NOT_CHALLENGES.contains(&c))
            })
        {
            paths.push(entry.into_path());
        }
    }
    if paths.is_empty() {
        return Err(ChallengeError::Empty(root.to_path_buf()));
    }
    let key = |p: &PathBuf| -> Vec<(u64, String)> {
        p.components()
            .map(|c| natural_key(&c.as_os_str().to_string_lossy()))
            .collect()
    };
    paths.sort_by_key(key);
    paths.iter().map(|p| Challenge::load(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_autogpt_data_json_loads_with_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("suite/1_read");
        std::fs::create_dir_all(c.join("artifacts_out")).unwrap();
        std::fs::write(
            c.join("data.json"),
            r#"{"category": ["general", "coding"], "cutoff": 60, "dependencies": [], "eval_id": "x",
                "ground": {"answer": "a", "eval": {"type": "file"}, "files": ["output.txt"],
                           "should_contain": ["Hello World!"], "should_not_contain": []},
                "info": {"difficulty": "interface"}, "name": "ReadFile", "task": "Read it"}"#,
        )
        .unwrap();
        // A data.json inside artifacts is not a challenge.
        std::fs::write(c.join("artifacts_out/data.json"), "{}").unwrap();
        std::fs::create_dir_all(c.join("artifacts_wrong/empty")).unwrap();
        std::fs::write(c.join("artifacts_wrong/empty/data.json"), "{}").unwrap();
        let suite = load_suite(&dir.path().join("suite")).unwrap();
        assert_eq!(suite.len(), 1);
        let ch = &suite[0];
        assert_eq!(ch.name, "ReadFile");
        assert_eq!(ch.cutoff, Some(60));
        assert!(
            ch.ground.case_sensitive,
            "AutoGPT compares case-sensitively by default"
        );
        assert_eq!(ch.kind(), EvalKind::File);
        assert!(ch.matches("readf") && ch.matches("coding") && !ch.matches("cod"));
    }

    #[test]
    fn challenges_are_in_path_order_with_numbers_compared_as_numbers() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["10_b", "2_a", "1_c", "notes"] {
            let c = dir.path().join(name);
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(
                c.join("data.json"),
                r#"{"task": "t", "ground": {"eval": {"type": "file"}}}"#,
            )
            .unwrap();
        }
        let names: Vec<_> = load_suite(dir.path())
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["1_c", "2_a", "10_b", "notes"]);
    }

    #[test]
    fn a_broken_data_json_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.json"), r#"{"task": "x"}"#).unwrap();
        let e = load_suite(dir.path()).unwrap_err().to_string();
        assert!(e.contains("data.json") && e.contains("ground"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_suite(empty.path()),
            Err(ChallengeError::Empty(_))
        ));
    }
}
