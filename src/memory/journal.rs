//! The run journal: every run and every step, committed and flushed before
//! the next step starts, so `kill -9` at any moment loses no acknowledged step
//! and `agent runs resume ID` can continue from the last one.
//!
//! Layout: tree `runs` maps a run id to its JSON [`RunRecord`]; tree `steps`
//! maps `run id \0 step index (big-endian u32)` to a JSON [`StepRecord`], so a
//! prefix scan returns a run's steps in order. A step and its run's counters
//! are written in one sled transaction.
//!
//! Run ids sort by creation time (`20261129-141503-7f3a`), so listing is a
//! reverse scan, and a unique prefix (or `last`) names a run.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::sessions::Exchange;
use super::store::{Store, StoreError};
use crate::model::Usage;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// In progress (or interrupted, when no process is running it).
    Running,
    /// The agent called `finish`.
    Finished,
    /// The agent called `finish`, but what the goal asked for could not be
    /// verified (a named output file is missing or empty).
    Unverified,
    /// A step, token or time budget ran out.
    BudgetExhausted,
    /// A loop guard or repeated invalid output stopped it.
    Stopped,
    /// An error stopped it (model unavailable, tool machinery broken).
    Failed,
    /// The user interrupted it.
    Cancelled,
}

impl RunStatus {
    /// The name used in `--json` and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Unverified => "unverified",
            RunStatus::BudgetExhausted => "budget_exhausted",
            RunStatus::Stopped => "stopped",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `name` (as [`RunStatus::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        [
            RunStatus::Running,
            RunStatus::Finished,
            RunStatus::Unverified,
            RunStatus::BudgetExhausted,
            RunStatus::Stopped,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Why a run stopped, as a kind that code reads (eval's "timed out", the
/// exit code, the transcript); [`RunRecord::stop_reason`] says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// The agent called `finish`.
    Finished,
    /// The agent called `finish` again after a failed verification.
    Unverified,
    /// The step budget ran out.
    StepBudget,
    /// The token budget ran out.
    TokenBudget,
    /// The wall-time budget ran out.
    TimeBudget,
    /// A loop guard, repeated invalid output or an exhausted plan stopped it.
    Guard,
    /// An error stopped it (model unavailable, tool machinery broken).
    Failed,
    /// The user interrupted it.
    Cancelled,
}

impl StopKind {
    /// The run status this kind of stop leaves.
    pub fn status(self) -> RunStatus {
        match self {
            StopKind::Finished => RunStatus::Finished,
            StopKind::Unverified => RunStatus::Unverified,
            StopKind::StepBudget | StopKind::TokenBudget | StopKind::TimeBudget => {
                RunStatus::BudgetExhausted
            }
            StopKind::Guard => RunStatus::Stopped,
            StopKind::Failed => RunStatus::Failed,
            StopKind::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// A run's settings, kept so a resumed run behaves like the original.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub model: String,
    pub endpoint: Option<String>,
    pub max_steps: u32,
    pub max_tokens: u64,
    pub step_tokens: u32,
    pub timeout_secs: u64,
    pub temperature: f32,
    pub workspace: String,
    pub interactive: bool,
    /// The approval settings in force when the run started (the config's
    /// `approvals:` section, `--approve`, `--yes`), as the agent recorded
    /// them; a resume uses them again (security case 40). Opaque here: the
    /// agent owns their shape. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<serde_json::Value>,
    /// Each plugin's grants when the run started, in words; a resume
    /// refuses to go on with a plugin whose grants changed since.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub grants: std::collections::BTreeMap<String, String>,
    /// Candidate actions sampled per step (1: the greedy action alone);
    /// 1 in older records.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub samples: u32,
    /// The temperature candidates were sampled at.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sample_temperature: f32,
    /// The model of each role other than `default` (`model`), where the
    /// run had one; a resume opens the same ones. Absent in older records.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub roles:
        std::collections::BTreeMap<crate::model::roles::ModelRole, crate::model::roles::RoleSpec>,
    /// The recipe this run carries out, with its parameters, instructions,
    /// response schema and plugins; absent for a plain goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<crate::recipe::RecipeRun>,
    /// Set when the run journals an MCP server (`agent mcp serve`): each
    /// step is a client's call. Such a run is not resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::mcp::serve::Served>,
    /// The LoRA adapters on the default model, with their sha256; a
    /// resume refuses an adapter whose files changed since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora: Vec<crate::model::lora::LoraUse>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(t: &f32) -> bool {
    *t == 0.0
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub goal: String,
    pub settings: RunSettings,
    pub status: RunStatus,
    pub created_at: String,
    pub updated_at: String,
    /// Steps committed so far.
    pub steps: u32,
    pub usage: Usage,
    /// Wall time spent, summed over every process that worked on it.
    pub elapsed_ms: u64,
    pub answer: Option<String>,
    /// Why it stopped, in a sentence.
    pub stop_reason: Option<String>,
    /// Why it stopped, as a kind (absent in records written before it was
    /// kept, and while the run is running).
    #[serde(default)]
    pub stop: Option<StopKind>,
    /// The conversation this run continues (earlier REPL exchanges, oldest
    /// first); the model sees them as messages before `goal`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Exchange>,
    /// The untrusted content this run has read (the tool and its URL, path
    /// or query) since a person last approved an action; kept here so that
    /// it outlives steps, plan steps and resumes (security case 39).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tainted: Option<String>,
    /// What `agent eval` found when it graded this run's workspace (absent
    /// for runs it did not grade): a run that claimed success and failed
    /// the grader is not an example to learn from (`agent::examples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graded: Option<bool>,
    /// What each model cost the run (calls, tokens, seconds, money), summed
    /// over every process that worked on it; absent in older records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost: Vec<crate::model::roles::ModelCost>,
}

impl RunRecord {
    /// A new run, not yet started: status `running`, no steps, created now.
    pub fn new(id: String, goal: String, settings: RunSettings) -> Self {
        let now = now_rfc3339();
        Self {
            id,
            goal,
            settings,
            status: RunStatus::Running,
            created_at: now.clone(),
            updated_at: now,
            steps: 0,
            usage: Usage::default(),
            elapsed_ms: 0,
            answer: None,
            stop_reason: None,
            stop: None,
            earlier: Vec::new(),
            tainted: None,
            graded: None,
            cost: Vec::new(),
        }
    }
}

/// What became of a step's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// The tool ran and returned.
    Ok,
    /// The tool ran and reported an error (told to the model).
    ToolError,
    /// The model's output was not a valid action.
    InvalidOutput,
    /// The action repeated an earlier one; the tool was not run again.
    Repeated,
    /// The user (or the approval policy) did not let the tool run.
    Denied,
}

/// One committed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based.
    pub index: u32,
    /// Exactly what the model wrote.
    pub raw_output: String,
    pub thought: Option<String>,
    pub tool: Option<String>,
    pub args: Option<serde_json::Value>,
    /// What the model is shown next (already capped and sanitised).
    pub observation: String,
    pub outcome: StepOutcome,
    /// A guard's message to the model, shown after the observation.
    pub note: Option<String>,
    pub usage: Usage,
    pub model_ms: u64,
    pub tool_ms: u64,
    pub at: String,
    /// How the action was chosen when several were sampled (`--samples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes: Option<Votes>,
    /// The model that took the step when it was not the run's default
    /// one, and why (an escalation to `smart`; `crate::model::roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated: Option<Escalation>,
    /// What a person said of the action when one was asked (absent when
    /// nobody was): the preference pairs of `agent runs export`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<PersonSaid>,
    /// The observation carries content from outside the agent (a file, a
    /// page, code output): untrusted for the taint rule, and what
    /// `agent runs export --redact-observations` leaves out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
}

impl StepRecord {
    /// Step `index` with `tool` called with `args`, which ran and returned
    /// `observation`; nothing else set (no model output, no timings).
    pub fn called(index: u32, tool: &str, args: serde_json::Value, observation: &str) -> Self {
        Self {
            index,
            raw_output: String::new(),
            thought: None,
            tool: Some(tool.to_string()),
            args: Some(args),
            observation: observation.to_string(),
            outcome: StepOutcome::Ok,
            note: None,
            usage: Usage::default(),
            model_ms: 0,
            tool_ms: 0,
            at: now_rfc3339(),
            votes: None,
            escalated: None,
            person: None,
            untrusted: false,
        }
    }
}

/// A person's answer to an approval question about a step's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonSaid {
    Approved,
    Declined,
    /// Declined, with words for the model.
    Feedback,
}

/// A step that went to the `smart` model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The model's name.
    pub model: String,
    /// Why: what the default model did at the step before.
    pub reason: String,
}

/// The candidates of one step and how one was chosen (`agent::vote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Votes {
    /// Candidates sampled.
    pub samples: u32,
    pub temperature: f32,
    /// Each distinct valid action (`tool {sorted args}`) and its votes, most first.
    pub ballots: Vec<Ballot>,
    /// Candidates that were not a valid action.
    pub invalid: u32,
    /// `majority`, or `greedy` when no action had more than half the votes
    /// and the step fell back to the greedy (temperature 0) answer.
    pub chosen: String,
}

/// One distinct candidate action and how many samples chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ballot {
    pub action: String,
    pub votes: u32,
}

/// Read and write runs and steps.
#[derive(Clone)]
pub struct RunJournal {
    store_flush: sled::Tree,
    durable: bool,
    runs: sled::Tree,
    steps: sled::Tree,
    /// Each distinct prompt message once, by its hash.
    messages: sled::Tree,
    /// Per step, the hashes of the messages the model was given.
    prompts: sled::Tree,
    /// What this process has stored of prompts (a run's system prompt and
    /// history come back every step).
    known: std::sync::Arc<std::sync::Mutex<Known>>,
}

/// Messages already stored, and the last prompt with each message's hash:
/// the next step's prompt repeats most of it, and only what differs is
/// hashed again.
#[derive(Default)]
struct Known {
    stored: std::collections::HashSet<[u8; 16]>,
    last: Vec<(crate::model::ChatMessage, [u8; 16])>,
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A new, time-sortable run id.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let suffix: u16 = rand::random();
    format!("{}-{suffix:04x}", now.format("%Y%m%d-%H%M%S"))
}

fn step_key(run_id: &str, index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_id.len() + 5);
    key.extend_from_slice(run_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::BadRecord {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Write(e.to_string()))
}

/// Errors looking a run up by id.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no run matches `{0}`; `agent runs list` shows them")]
    NotFound(String),
    #[error("`{prefix}` matches several runs ({}); give more of the id", matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunJournal {
    /// The journal inside `store`.
    pub fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            store_flush: store.tree("meta")?,
            durable: true,
            runs: store.tree("runs")?,
            steps: store.tree("steps")?,
            messages: store.tree("prompt_messages")?,
            prompts: store.tree("step_prompts")?,
            known: Default::default(),
        })
    }

    /// A journal that does not wait for the disk (benchmarks only: it shows
    /// what the flush costs; nothing a user relies on is written this way).
    pub fn new_unflushed(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            durable: false,
            ..Self::new(store)?
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Flushing any tree flushes the whole database.
        if self.durable {
            self.store_flush.flush()?;
        }
        Ok(())
    }

    /// Write (create or replace) a run record, durably.
    pub fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.runs.insert(run.id.as_bytes(), encode(run)?)?;
        self.flush()
    }

    /// Commit a step and the run's new counters together, durably.
    pub fn commit_step(&self, run: &RunRecord, step: &StepRecord) -> Result<(), StoreError> {
        let run_bytes = encode(run)?;
        let step_bytes = encode(step)?;
        let key = step_key(&run.id, step.index);
        (&self.runs, &self.steps)
            .transaction(|(runs, steps)| {
                steps.insert(key.as_slice(), step_bytes.as_slice())?;
                runs.insert(run.id.as_bytes(), run_bytes.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Write(format!("{e:?}")))?;
        self.flush()
    }

    /// Commit a step as [`RunJournal::commit_step`] does, with the exact
    /// messages the model was given for it (the prompt `agent runs export`
    /// writes). Each distinct message is stored once, by its hash, so a
    /// run's growing history costs each message once, not once per step.
    pub fn commit_step_with_prompt(
        &self,
        run: &RunRecord,
        step: &StepRecord,
        prompt: &[crate::model::ChatMessage],
    ) -> Result<(), StoreError> {
        use sha2::Digest;
        let mut known = self
            .known
            .lock()
            .map_err(|_| StoreError::Write("the prompt cache is poisoned".into()))?;
        let mut hashes = Vec::with_capacity(prompt.len());
        let mut new = Vec::new();
        let mut last = Vec::with_capacity(prompt.len());
        for (i, message) in prompt.iter().enumerate() {
            let hash = match known.last.get(i) {
                Some((seen, hash)) if seen == message => *hash,
                _ => {
                    let mut hasher = sha2::Sha256::new();
                    hasher.update(serde_json::to_vec(&message.role).unwrap_or_default());
                    hasher.update([0]);
                    hasher.update(message.content.as_bytes());
                    let mut hash = [0u8; 16];
                    hash.copy_from_slice(&hasher.finalize()[..16]);
                    hash
                }
            };
            hashes.push(hex::encode(hash));
            if !known.stored.contains(&hash) && !new.iter().any(|(h, _)| *h == hash) {
                new.push((hash, encode(message)?));
            }
            last.push((message.clone(), hash));
        }
        let list = encode(&hashes)?;
        let key = step_key(&run.id, step.index);
        let run_bytes = encode(run)?;
        let step_bytes = encode(step)?;
        // The step, the run's counters and the prompt go in together.
        (&self.runs, &self.steps, &self.messages, &self.prompts)
            .transaction(|(runs, steps, messages, prompts)| {
                for (hash, bytes) in &new {
                    messages.insert(hash.as_slice(), bytes.as_slice())?;
                }
                prompts.insert(key.as_slice(), list.as_slice())?;
                steps.insert(key.as_slice(), step_bytes.as_slice())?;
                runs.insert(run.id.as_bytes(), run_bytes.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Write(format!("{e:?}")))?;
        known.stored.extend(new.iter().map(|(h, _)| *h));
        known.last = last;
        drop(known);
        self.flush()
    }

    /// The messages the model was given for step `index` of `run_id`
    /// (`None` for a step journaled before prompts were kept, or one no
    /// model chose).
    pub fn prompt(
        &self,
        run_id: &str,
        index: u32,
    ) -> Result<Option<Vec<crate::model::ChatMessage>>, StoreError> {
        let key = step_key(run_id, index);
        let Some(list) = self.prompts.get(&key)? else {
            return Ok(None);
        };
        let hashes: Vec<String> = decode(&key, &list)?;
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let raw = hex::decode(&hash).map_err(|e| StoreError::BadRecord {
                key: hash.clone(),
                detail: e.to_string(),
            })?;
            match self.messages.get(&raw)? {
                Some(bytes) => out.push(decode(&raw, &bytes)?),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// A run by exact id.
    pub fn get(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self.runs.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(id.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// A run by id, unique prefix, or `last`.
    pub fn find(&self, query: &str) -> Result<RunRecord, LookupError> {
        if query == "last" {
            return self
                .list(1)?
                .into_iter()
                .next()
                .ok_or_else(|| LookupError::NotFound(query.into()));
        }
        if let Some(run) = self.get(query)? {
            return Ok(run);
        }
        let mut matches = Vec::new();
        for item in self.runs.scan_prefix(query.as_bytes()) {
            let (k, v) = item.map_err(StoreError::from)?;
            matches.push(decode::<RunRecord>(&k, &v)?);
            if matches.len() > 5 {
                break;
            }
        }
        match matches.len() {
            0 => Err(LookupError::NotFound(query.into())),
            1 => Ok(matches.remove(0)),
            _ => Err(LookupError::Ambiguous {
                prefix: query.into(),
                matches: matches.into_iter().map(|r| r.id).collect(),
            }),
        }
    }

    /// The newest `limit` top-level runs, newest first. Child runs (a plan's
    /// steps, `PARENT.sN`) belong to their parent and are not listed; `find`
    /// still reaches them by id.
    pub fn list(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.runs.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if k.contains(&b'.') {
                continue;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// A run's child runs, in execution order: a plan's steps (`ID.s1`,
    /// `ID.s2`, ...), a recipe's further attempts (`ID.a2`) and recipes it
    /// called (`ID.r3`, at step 3).
    pub fn children(&self, run_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        let prefix = format!("{run_id}.");
        let mut out: Vec<RunRecord> = Vec::new();
        for item in self.runs.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            // A child's own children are its business.
            if k[prefix.len()..].contains(&b'.') {
                continue;
            }
            out.push(decode(&k, &v)?);
        }
        // `.s10` sorts before `.s2` as bytes; order by the number.
        out.sort_by_key(|r| {
            r.id[prefix.len()..]
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<u32>()
                .unwrap_or(u32::MAX)
        });
        Ok(out)
    }

    /// A run's committed steps, in order.
    pub fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let mut prefix = run_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.steps.scan_prefix(&prefix) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str) -> RunRecord {
        RunRecord::new(
            id.into(),
            "g".into(),
            RunSettings {
                model: "m".into(),
                endpoint: None,
                max_steps: 5,
                max_tokens: 100,
                step_tokens: 50,
                timeout_secs: 10,
                temperature: 0.0,
                workspace: "/w".into(),
                interactive: false,
                ..Default::default()
            },
        )
    }

    fn step(index: u32) -> StepRecord {
        StepRecord {
            index,
            raw_output: "{}".into(),
            thought: None,
            tool: None,
            args: None,
            observation: format!("obs {index}"),
            outcome: StepOutcome::Ok,
            note: None,
            usage: Usage::default(),
            model_ms: 1,
            tool_ms: 1,
            at: now_rfc3339(),
            votes: None,
            escalated: None,
            person: None,
            untrusted: false,
        }
    }

    #[test]
    fn a_steps_prompt_comes_back_whole_and_shared_messages_are_stored_once() {
        use crate::model::ChatMessage;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let j = RunJournal::new(&store).unwrap();
        let mut r = run("20260101-000000-bbbb");
        j.put_run(&r).unwrap();
        let system = ChatMessage::system("you are an agent ".repeat(50));
        let mut prompt = vec![system.clone(), ChatMessage::user("goal")];
        for i in 1..=3 {
            r.steps = i;
            j.commit_step_with_prompt(&r, &step(i), &prompt).unwrap();
            prompt.push(ChatMessage::assistant(format!("action {i}")));
            prompt.push(ChatMessage::user(format!("obs {i}")));
        }
        let third = j.prompt(&r.id, 3).unwrap().unwrap();
        assert_eq!(third.len(), 6);
        assert_eq!(third[0], system);
        assert_eq!(third[5], ChatMessage::user("obs 2"));
        // 2 + 2 + 2 distinct messages, not 2 + 4 + 6.
        assert_eq!(j.messages.len(), 6);
        assert_eq!(j.steps(&r.id).unwrap().len(), 3);
        assert_eq!(j.prompt(&r.id, 4).unwrap(), None);
    }

    #[test]
    fn steps_come_back_in_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let j = RunJournal::new(&store).unwrap();
            let mut r = run("20260101-000000-aaaa");
            j.put_run(&r).unwrap();
            for i in 1..=12 {
                r.steps = i;
                j.commit_step(&r, &step(i)).unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let j = RunJournal::new(&store).unwrap();
        let steps = j.steps("20260101-000000-aaaa").unwrap();
        assert_eq!(
            steps.iter().map(|s| s.index).collect::<Vec<_>>(),
            (1..=12).collect::<Vec<_>>()
        );
        assert_eq!(j.get("20260101-000000-aaaa").unwrap().unwrap().steps, 12);
    }

    #[test]
    fn find_by_prefix_last_and_ambiguity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let j = RunJournal::new(&store).unwrap();
        j.put_run(&run("20260101-000000-aaaa")).unwrap();
        j.put_run(&run("20260102-000000-bbbb")).unwrap();
        assert_eq!(j.find("last").unwrap().id, "20260102-000000-bbbb");
        assert_eq!(j.find("20260101").unwrap().id, "20260101-000000-aaaa");
        assert!(matches!(j.find("2026"), Err(LookupError::Ambiguous { .. })));
        assert!(matches!(j.find("1999"), Err(LookupError::NotFound(_))));
        // A plan's child runs are reached by id but not listed, nor `last`.
        j.put_run(&run("20260102-000000-bbbb.s1")).unwrap();
        assert_eq!(j.find("last").unwrap().id, "20260102-000000-bbbb");
        assert_eq!(j.list(10).unwrap().len(), 2);
        assert_eq!(
            j.find("20260102-000000-bbbb.s1").unwrap().id,
            "20260102-000000-bbbb.s1"
        );
        // A run id that is a prefix of another run's id does not pick up its steps.
        assert!(j.steps("20260101-000000-aaa").unwrap().is_empty());
    }
}
