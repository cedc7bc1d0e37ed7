//! Training data from the run journal (`agent runs export`): supervised
//! pairs (the exact prompt a step's model was given, and the action it
//! chose) and preference pairs (an action a person refused against the one
//! accepted next; a passing eval run's action against a failing one's at
//! the first step where they part). Secrets are always redacted (values of
//! the environment's secret-named variables, and API-key shapes); what the
//! journal marks as untrusted tool output is left out on request.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use serde_json::{Value, json};

use crate::memory::journal::{PersonSaid, StepOutcome};
use crate::memory::{RunJournal, RunRecord, RunStatus, StepRecord, StoreError};
use crate::model::{ChatMessage, Role};

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"messages": [...prompt, assistant action], "metadata": {...}}` per step.
    Sft,
    /// `{"prompt": [...], "chosen": [assistant], "rejected": [assistant], "metadata": {...}}`.
    Preference,
}

/// Which runs.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only runs that ended so.
    pub status: Option<RunStatus>,
    /// Only runs created on or after this day (`YYYY-MM-DD`).
    pub since: Option<String>,
    /// Only these runs (ids as `agent runs list` shows them); empty: all.
    pub runs: Vec<RunRecord>,
}

/// What went wrong exporting.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("`{0}` is not a day; write it as YYYY-MM-DD, e.g. 2026-12-01")]
    BadDate(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the dataset: {0}")]
    Write(#[from] std::io::Error),
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub format: String,
    /// Runs selected (top-level runs; their plan steps and recipe calls
    /// come with them).
    pub runs: usize,
    /// Runs that gave at least one record.
    pub runs_with_records: usize,
    pub records: usize,
    /// Tokens in the records, estimated (about four characters each).
    pub tokens: u64,
    /// Steps left out, by why.
    pub left_out: BTreeMap<String, usize>,
    /// Secrets replaced.
    pub redacted_secrets: usize,
    /// Observations left out (`--redact-observations`).
    pub redacted_observations: usize,
}

/// Check a `--since` day.
pub fn check_day(day: &str) -> Result<(), DatasetError> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| DatasetError::BadDate(day.to_string()))
}

/// Replaces secrets in exported text: the values of environment variables
/// whose names say they hold one, and strings shaped like API keys.
pub struct Redactor {
    values: Vec<(String, String)>,
    shapes: regex::Regex,
}

/// Names of variables whose values are secrets.
const SECRET_NAMES: [&str; 8] = [
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
];

impl Redactor {
    /// From `vars` (the process environment, in use), and `also` (names of
    /// variables that hold a secret whatever they are called: the config's
    /// `api_key_env`).
    pub fn new(vars: impl IntoIterator<Item = (String, String)>, also: &[String]) -> Self {
        let mut values: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, value)| {
                let upper = name.to_ascii_uppercase();
                (also.contains(name) || SECRET_NAMES.iter().any(|s| upper.contains(s)))
                    && value.trim().len() >= 6
            })
            .map(|(name, value)| (name, value.trim().to_string()))
            .collect();
        // Longest first, so a value that contains another goes whole.
        values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let shapes = regex::Regex::new(concat!(
            r"sk-[A-Za-z0-9_\-]{16,}",
            r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}",
            r"|hf_[A-Za-z0-9]{20,}",
            r"|AKIA[0-9A-Z]{16}",
            r"|xox[abpr]-[A-Za-z0-9\-]{10,}",
            r"|AIza[0-9A-Za-z_\-]{35}",
            r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*",
            r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ))
        .expect("the secret shapes are a valid pattern");
        Self { values, shapes }
    }

    /// Replace the secrets in every string of `value`; how many were.
    pub fn redact_value(&self, value: &mut Value) -> usize {
        match value {
            Value::String(text) => {
                let (out, n) = self.redact(text);
                if n > 0 {
                    *text = out;
                }
                n
            }
            Value::Array(items) => items.iter_mut().map(|v| self.redact_value(v)).sum(),
            Value::Object(map) => map.values_mut().map(|v| self.redact_value(v)).sum(),
            _ => 0,
        }
    }

    /// `text` with its secrets replaced, and how many were.
    pub fn redact(&self, text: &str) -> (String, usize) {
        let mut out = text.to_string();
        let mut n = 0;
        for (name, value) in &self.values {
            let found = out.matches(value.as_str()).count();
            if found > 0 {
                n += found;
                out = out.replace(value.as_str(), &format!("[redacted: ${name}]"));
            }
        }
        let found = self.shapes.find_iter(&out).count();
        if found > 0 {
            n += found;
            out = self
                .shapes
                .replace_all(&out, "[redacted secret]")
                .into_owned();
        }
        (out, n)
    }
}

/// Exports runs from a journal.
pub struct Exporter<'a> {
    pub journal: &'a RunJournal,
    pub redactor: Redactor,
    pub redact_observations: bool,
}

/// One run with its steps (a top-level run and its children, each alone).
struct Trail {
    run: RunRecord,
    steps: Vec<StepRecord>,
}

impl Exporter<'_> {
    /// Write `format` records for `selection` to `out`, one JSON object per
    /// line.
    pub fn export(
        &self,
        format: Format,
        selection: &Selection,
        out: &mut dyn Write,
    ) -> Result<Summary, DatasetError> {
        if let Some(day) = &selection.since {
            check_day(day)?;
        }
        let tops = self.select(selection)?;
        let mut summary = Summary {
            format: match format {
                Format::Sft => "sft",
                Format::Preference => "preference",
            }
            .to_string(),
            runs: tops.len(),
            ..Summary::default()
        };
        let mut gave = vec![false; tops.len()];
        match format {
            // One top-level run at a time: an SFT export streams, whatever
            // the journal's size.
            Format::Sft => {
                for (i, top) in tops.iter().enumerate() {
                    for trail in self.trails(top)? {
                        for step in &trail.steps {
                            if let Some(record) = self.sft(&trail, step, &mut summary)? {
                                self.write(record, out, &mut summary)?;
                                gave[i] = true;
                            }
                        }
                    }
                }
            }
            // Eval pairs look across runs: these are held together.
            Format::Preference => {
                let mut trails = Vec::new();
                for (i, top) in tops.iter().enumerate() {
                    trails.extend(self.trails(top)?.into_iter().map(|t| (i, t)));
                }
                let mut records = Vec::new();
                for (i, trail) in &trails {
                    for record in self.refusals(trail, &mut summary)? {
                        records.push((*i, record));
                    }
                }
                records.extend(self.eval_pairs(&trails, &mut summary)?);
                for (i, record) in records {
                    self.write(record, out, &mut summary)?;
                    gave[i] = true;
                }
            }
        }
        summary.runs_with_records = gave.iter().filter(|g| **g).count();
        Ok(summary)
    }

    /// `top` and its child runs (plan steps, recipe attempts and calls),
    /// each with its steps.
    fn trails(&self, top: &RunRecord) -> Result<Vec<Trail>, DatasetError> {
        let mut runs = vec![top.clone()];
        runs.extend(self.journal.children(&top.id)?);
        runs.into_iter()
            .map(|run| {
                let steps = self.journal.steps(&run.id)?;
                Ok(Trail { run, steps })
            })
            .collect()
    }

    /// Redact `record`, write it as one line, and count it.
    fn write(
        &self,
        mut record: Value,
        out: &mut dyn Write,
        summary: &mut Summary,
    ) -> Result<(), DatasetError> {
        summary.redacted_secrets += self.redactor.redact_value(&mut record);
        let line = record.to_string();
        summary.tokens += crate::memory::index::estimate_tokens(&line) as u64;
        summary.records += 1;
        writeln!(out, "{line}")?;
        Ok(())
    }

    /// The top-level runs of the selection, oldest first.
    fn select(&self, selection: &Selection) -> Result<Vec<RunRecord>, DatasetError> {
        let mut runs = if selection.runs.is_empty() {
            self.journal.list(usize::MAX)?
        } else {
            selection.runs.clone()
        };
        runs.retain(|r| {
            r.settings.mcp.is_none()
                && selection.status.is_none_or(|s| r.status == s)
                && selection
                    .since
                    .as_ref()
                    .is_none_or(|day| r.created_at.get(..10).unwrap_or("") >= day.as_str())
        });
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }

    /// A step as an SFT record, or why it is left out.
    fn sft(
        &self,
        trail: &Trail,
        step: &StepRecord,
        summary: &mut Summary,
    ) -> Result<Option<Value>, DatasetError> {
        let why = match (step.outcome, action_text(step)) {
            (StepOutcome::InvalidOutput, _) | (_, None) => "invalid_output",
            (StepOutcome::Denied, _) => "refused",
            (StepOutcome::Repeated, _) => "repeated",
            // The action did not work, or was a claim of success its checks
            // refused: not an example to imitate.
            (StepOutcome::ToolError, _) => "tool_error",
            (StepOutcome::Ok, Some(action)) => match self.prompt(trail, step, summary)? {
                Some(mut messages) => {
                    messages.push(ChatMessage::assistant(action));
                    return Ok(Some(json!({
                        "messages": messages,
                        "metadata": metadata(trail, step, "step"),
                    })));
                }
                None => "no_prompt_recorded",
            },
        };
        *summary.left_out.entry(why.to_string()).or_default() += 1;
        Ok(None)
    }

    /// Pairs from a person's refusals: the refused action is rejected, the
    /// next step's action (which ran) chosen, for the refused step's prompt.
    fn refusals(&self, trail: &Trail, summary: &mut Summary) -> Result<Vec<Value>, DatasetError> {
        let mut out = Vec::new();
        for pair in trail.steps.windows(2) {
            let (refused, next) = (&pair[0], &pair[1]);
            let by_person = matches!(
                refused.person,
                Some(PersonSaid::Declined | PersonSaid::Feedback)
            );
            if !by_person
                || refused.outcome != StepOutcome::Denied
                || next.outcome != StepOutcome::Ok
            {
                continue;
            }
            let (Some(rejected), Some(chosen)) = (action_text(refused), action_text(next)) else {
                continue;
            };
            let Some(prompt) = self.prompt(trail, refused, summary)? else {
                *summary
                    .left_out
                    .entry("no_prompt_recorded".into())
                    .or_default() += 1;
                continue;
            };
            out.push(pair_record(
                prompt,
                chosen,
                rejected,
                metadata(trail, refused, "approval"),
            ));
        }
        Ok(out)
    }

    /// Pairs from graded eval runs of one challenge (the same goal): for
    /// each failing run, against the newest passing one, the first step
    /// where their actions differ; the failing run's prompt there, its
    /// action rejected, the passing run's chosen.
    fn eval_pairs(
        &self,
        trails: &[(usize, Trail)],
        summary: &mut Summary,
    ) -> Result<Vec<(usize, Value)>, DatasetError> {
        let graded = |pass: bool| {
            trails
                .iter()
                .filter(move |(_, t)| t.run.graded == Some(pass) && !t.run.id.contains('.'))
        };
        let mut out = Vec::new();
        for (i, failed) in graded(false) {
            let Some((_, passed)) = graded(true)
                .filter(|(_, p)| p.run.goal == failed.run.goal)
                .max_by(|(_, a), (_, b)| a.run.id.cmp(&b.run.id))
            else {
                continue;
            };
            let parted = failed
                .steps
                .iter()
                .zip(&passed.steps)
                .find(|(f, p)| action_key(f) != action_key(p));
            let Some((f, p)) = parted else {
                continue;
            };
            let (Some(rejected), Some(chosen)) = (action_text(f), action_text(p)) else {
                *summary
                    .left_out
                    .entry("eval_pair_without_action".into())
                    .or_default() += 1;
                continue;
            };
            let Some(prompt) = self.prompt(failed, f, summary)? else {
                *summary
                    .left_out
                    .entry("no_prompt_recorded".into())
                    .or_default() += 1;
                continue;
            };
            let mut meta = metadata(failed, f, "eval");
            meta["chosen_from"] = json!(passed.run.id);
            out.push((*i, pair_record(prompt, chosen, rejected, meta)));
        }
        Ok(out)
    }

    /// The messages `step`'s model was given, with the observations of
    /// untrusted steps left out when asked.
    fn prompt(
        &self,
        trail: &Trail,
        step: &StepRecord,
        summary: &mut Summary,
    ) -> Result<Option<Vec<ChatMessage>>, DatasetError> {
        let Some(mut messages) = self.journal.prompt(&trail.run.id, step.index)? else {
            return Ok(None);
        };
        if self.redact_observations {
            summary.redacted_observations +=
                redact_observations(&mut messages, &trail.steps, step.index);
        }
        Ok(Some(messages))
    }
}

/// Leave out, in the prompt of step `index`, the observations of earlier
/// untrusted steps. The history is the prompt's tail: (the step's output,
/// its observation) per step, newest last, as far back as it reaches.
fn redact_observations(messages: &mut [ChatMessage], steps: &[StepRecord], index: u32) -> usize {
    let mut n = 0;
    let mut end = messages.len();
    let earlier = steps.iter().filter(|s| s.index < index).rev();
    for step in earlier {
        if end < 2 {
            break;
        }
        let (said, seen) = (end - 2, end - 1);
        let shown = crate::sanitize::cap_head_tail(step.raw_output.trim(), 2000);
        if messages[said].role != Role::Assistant
            || messages[said].content != shown
            || messages[seen].role != Role::User
        {
            break;
        }
        if step.untrusted {
            messages[seen].content = format!(
                "[the output of {} is left out of this dataset (--redact-observations)]",
                step.tool.as_deref().unwrap_or("a tool")
            );
            n += 1;
        }
        end = said;
    }
    n
}

/// The action a step's model chose, as the JSON object it writes.
fn action_text(step: &StepRecord) -> Option<String> {
    let tool = step.tool.as_ref()?;
    Some(
        json!({
            "thought": step.thought.clone().unwrap_or_default(),
            "tool": tool,
            "args": step.args.clone().unwrap_or_else(|| json!({})),
        })
        .to_string(),
    )
}

/// What makes two actions the same: the tool and its arguments.
fn action_key(step: &StepRecord) -> Option<(String, String)> {
    Some((
        step.tool.clone()?,
        step.args.as_ref().map(Value::to_string).unwrap_or_default(),
    ))
}

fn metadata(trail: &Trail, step: &StepRecord, source: &str) -> Value {
    json!({
        "run_id": trail.run.id,
        "step": step.index,
        "status": trail.run.status.as_str(),
        "model": trail.run.settings.model,
        "source": source,
    })
}

fn pair_record(
    prompt: Vec<ChatMessage>,
    chosen: String,
    rejected: String,
    metadata: Value,
) -> Value {
    json!({
        "prompt": prompt,
        "chosen": [ChatMessage::assistant(chosen)],
        "rejected": [ChatMessage::assistant(rejected)],
        "metadata": metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_environment_and_key_shapes_are_replaced() {
        let r = Redactor::new(
            [
                ("MY_API_KEY".to_string(), "abc123secretvalue".to_string()),
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("ENDPOINT_CREDS".to_string(), "hunter2hunter2".to_string()),
                ("SHORT_TOKEN".to_string(), "abc".to_string()),
            ],
            &["ENDPOINT_CREDS".to_string()],
        );
        let (out, n) = r.redact(
            "key abc123secretvalue; creds hunter2hunter2; path /usr/bin:/bin; sk-proj-AAAAAAAAAAAAAAAAAAAA; ghp_abcdefghijklmnopqrstuvwx; Authorization: Bearer abcdefghijklmnopqrstu; abc",
        );
        assert_eq!(n, 5, "{out}");
        for secret in [
            "abc123secretvalue",
            "hunter2hunter2",
            "sk-proj-",
            "ghp_",
            "abcdefghijklmnopqrstu",
        ] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(
            out.contains("[redacted: $MY_API_KEY]") && out.contains("/usr/bin:/bin"),
            "{out}"
        );
        assert!(out.ends_with("; abc"), "{out}");
    }

    fn step(index: u32, tool: &str, path: &str) -> StepRecord {
        StepRecord {
            thought: Some("t".into()),
            ..StepRecord::called(index, tool, json!({"path": path}), "ok")
        }
    }

    #[test]
    fn a_failing_eval_run_is_paired_with_a_passing_one_where_they_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::memory::Store::open(dir.path()).unwrap();
        let journal = RunJournal::new(&store).unwrap();
        for (id, graded, second) in [
            ("20261201-000001-aaaa", true, "a.txt"),
            ("20261201-000002-bbbb", false, "b.txt"),
        ] {
            let mut run = RunRecord::new(id.into(), "write a.txt".into(), Default::default());
            run.graded = Some(graded);
            run.status = RunStatus::Finished;
            journal.put_run(&run).unwrap();
            for (i, s) in [step(1, "list_files", "."), step(2, "write_file", second)]
                .iter()
                .enumerate()
            {
                run.steps = i as u32 + 1;
                let prompt = [
                    ChatMessage::system("sys"),
                    ChatMessage::user(format!("{id} {i}")),
                ];
                journal.commit_step_with_prompt(&run, s, &prompt).unwrap();
            }
        }
        let exporter = Exporter {
            journal: &journal,
            redactor: Redactor::new([], &[]),
            redact_observations: false,
        };
        let mut out = Vec::new();
        let summary = exporter
            .export(Format::Preference, &Selection::default(), &mut out)
            .unwrap();
        assert_eq!(summary.records, 1, "{summary:?}");
        let pair: Value = serde_json::from_slice(&out).unwrap();
        let said = |side: &str| -> Value {
            serde_json::from_str(pair[side][0]["content"].as_str().unwrap()).unwrap()
        };
        assert_eq!(said("chosen")["args"]["path"], "a.txt");
        assert_eq!(said("rejected")["args"]["path"], "b.txt");
        // The failing run's prompt at the step where they parted.
        assert_eq!(pair["prompt"][1]["content"], "20261201-000002-bbbb 1");
        assert_eq!(pair["metadata"]["source"], "eval");
        assert_eq!(pair["metadata"]["chosen_from"], "20261201-000001-aaaa");
    }

    #[test]
    fn days_are_checked() {
        check_day("2026-12-01").unwrap();
        assert!(
            check_day("yesterday")
                .unwrap_err()
                .to_string()
                .contains("YYYY-MM-DD")
        );
    }
}
