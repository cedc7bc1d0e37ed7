//! Approvals: whether a tool call may run, decided from policies and, when a
//! policy says so, by asking a person through a [`Prompter`].
//!
//! This is the policy engine; it sits next to the agent so that `config`
//! and the agent can use it without reaching into `ui/`. The terminal
//! prompter is in `ui::approve`.
//!
//! A policy (`auto`, `ask`, `deny`) is found in this order, first match wins:
//! 1. "always" answers given in this session (per tool; forgotten when the
//!    session-wide setting changes);
//! 2. a session-wide setting (`--approve`, `/approve`), except that a `deny`
//!    written in the config file is never loosened by it (a config deny is
//!    the user's standing rule; change the file to lift it);
//! 3. `approvals.tools.<name>` in the config;
//! 4. `approvals.<class>` in the config (`read`, `write`, `execute`, `network`).
//!
//! Internal tools (finish, recall) and talking to the human always run: they
//! touch nothing outside the agent, and asking the human is oversight itself.
//!
//! Untrusted content: once a run has read a file, a web page, a kb passage,
//! code output or a tainted memory (the run's [`crate::tools::Taint`]), a
//! call that writes, runs code or uses the network asks even when its
//! policy is `auto` (prompt injection turns reading into acting), unless the
//! config says `ask_after_untrusted: false` or the user answered "always"
//! for it. The taint is sticky: it lasts until a person approves an action
//! ([`Approval::PersonApproved`]), not one step (security case 39).
//!
//! Nobody to ask: in continuous mode (`--yes`) "ask" means run; in a run
//! with no terminal (piped, CI, `--json`) "ask" means deny, and the model is
//! told why, so a non-interactive run never hangs on a question.
//!
//! Everything shown in a prompt (tool, arguments, permissions) is stripped
//! of terminal escapes first: a model or a web page must not be able to
//! repaint the question the user is answering.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::hooks::{Approval, ApprovalRequest, Approver};
use crate::sanitize::{cap_head_tail, strip_terminal_escapes};
use crate::tools::{ToolClass, ToolSpec};

/// What to do with a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Run without asking.
    #[default]
    Auto,
    /// Ask the person first (deny when nobody can answer).
    Ask,
    /// Never run; the model is told it was refused.
    Deny,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Auto => "auto",
            Policy::Ask => "ask",
            Policy::Deny => "deny",
        })
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Policy::Auto),
            "ask" => Ok(Policy::Ask),
            "deny" => Ok(Policy::Deny),
            other => Err(format!("`{other}` is not a policy; use auto, ask or deny")),
        }
    }
}

/// The `approvals:` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Tools that read the workspace.
    pub read: Policy,
    /// Tools that write the workspace.
    pub write: Policy,
    /// Tools that run code.
    pub execute: Policy,
    /// Tools that use the network.
    pub network: Policy,
    /// Per-tool policies, by tool name; they win over the class policies.
    pub tools: BTreeMap<String, Policy>,
    /// Ask before a write, code run or network call that follows untrusted content.
    pub ask_after_untrusted: bool,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            read: Policy::Auto,
            write: Policy::Auto,
            execute: Policy::Auto,
            network: Policy::Auto,
            tools: BTreeMap::new(),
            ask_after_untrusted: true,
        }
    }
}

impl ApprovalConfig {
    /// The configured policy of a class (`None` for classes that always run).
    pub fn class_policy(&self, class: ToolClass) -> Option<Policy> {
        match class {
            ToolClass::Read => Some(self.read),
            ToolClass::Write => Some(self.write),
            ToolClass::Execute => Some(self.execute),
            ToolClass::Network => Some(self.network),
            ToolClass::Internal | ToolClass::Human => None,
        }
    }
}

/// The approval settings a run starts with. They are kept in the run's
/// journal record, so `agent runs resume` goes on under the same rules
/// wherever it is typed (security case 40); "always" answers are not kept
/// (they belong to the session that gave them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedApprovals {
    /// The config's `approvals:` section.
    pub config: ApprovalConfig,
    /// `--approve` / `/approve`, if given.
    #[serde(default)]
    pub approve: Option<Policy>,
    /// `--yes`.
    #[serde(default)]
    pub continuous: bool,
}

impl RecordedApprovals {
    /// As a run's journal keeps them.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }

    /// From a run's journal record (`None`: the record is older than this
    /// field, or was written by another version and cannot be read).
    pub fn from_json(value: Option<&serde_json::Value>) -> Option<Self> {
        serde_json::from_value(value?.clone()).ok()
    }
}

/// Who answers when a policy says "ask".
#[derive(Clone)]
pub enum Mode {
    /// A person at a terminal, through this prompter.
    Interactive(Arc<dyn Prompter>),
    /// Nobody: "ask" becomes deny (piped, CI, `--json`).
    NonInteractive,
    /// Continuous mode (`--yes`): "ask" becomes run.
    Continuous,
}

/// Asks the person one question and returns the typed line (`None` when
/// they pressed Ctrl-C or Ctrl-D). Blocking; called off the async runtime.
pub trait Prompter: Send + Sync {
    /// Show `question` and read one answer.
    fn ask(&self, question: &str) -> Option<String>;
}

/// What the policies say about one call, before anyone is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it.
    Run,
    /// Ask; the text says why.
    Ask(String),
    /// Refuse; the text says why (it becomes the observation).
    Deny(String),
}

/// One parsed answer to an approval question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Run it once.
    Yes,
    /// Do not run it.
    No,
    /// Run it, and do not ask again for this tool in this session.
    Always,
    /// Do not run it; tell the model these words.
    Feedback(String),
}

/// Read a typed answer: y/yes, n/no (or nothing), a/always, else feedback.
pub fn parse_answer(line: &str) -> Answer {
    let t = line.trim();
    match t.to_ascii_lowercase().as_str() {
        "y" | "yes" => Answer::Yes,
        "" | "n" | "no" => Answer::No,
        "a" | "always" => Answer::Always,
        _ => Answer::Feedback(t.to_string()),
    }
}

#[derive(Debug, Default)]
struct Overrides {
    /// `--approve` / `/approve`: one policy for every class.
    all: Option<Policy>,
    /// "always" answers.
    tools: BTreeMap<String, Policy>,
}

/// The stricter of two policies (deny, then ask, then auto).
fn stricter(a: Policy, b: Policy) -> Policy {
    let rank = |p: Policy| match p {
        Policy::Auto => 0,
        Policy::Ask => 1,
        Policy::Deny => 2,
    };
    if rank(a) >= rank(b) { a } else { b }
}

/// Hook run before a question is shown (e.g. to print pending transcript lines first).
pub type BeforePrompt = Arc<dyn Fn() + Send + Sync>;

/// The [`Approver`] of runs and the REPL: policies, session overrides, and
/// a prompter when someone can answer.
pub struct PolicyApprover {
    config: ApprovalConfig,
    mode: Mode,
    overrides: Mutex<Overrides>,
    /// Plugin name → its granted permissions in words, shown in questions.
    permissions: BTreeMap<String, String>,
    /// Tool source → the policy of its tools where the config names none
    /// for the tool (an MCP server's `approve`, `ask` by default: it runs
    /// outside the sandbox). A class policy that is stricter still wins.
    sources: BTreeMap<String, Policy>,
    before_prompt: Option<BeforePrompt>,
}

impl PolicyApprover {
    /// An approver with `config`, answering through `mode`.
    pub fn new(config: ApprovalConfig, mode: Mode) -> Self {
        Self {
            config,
            mode,
            overrides: Mutex::new(Overrides::default()),
            permissions: BTreeMap::new(),
            sources: BTreeMap::new(),
            before_prompt: None,
        }
    }

    /// The policy of the tools of each source (tool source → policy).
    pub fn with_source_policies(mut self, sources: BTreeMap<String, Policy>) -> Self {
        self.sources = sources;
        self
    }

    /// What a run started now records of these approvals.
    pub fn record(&self) -> RecordedApprovals {
        RecordedApprovals {
            config: self.config.clone(),
            approve: self.overrides().all,
            continuous: matches!(self.mode, Mode::Continuous),
        }
    }

    /// Show these permissions (plugin name → words) in questions.
    pub fn with_permissions(mut self, permissions: BTreeMap<String, String>) -> Self {
        self.permissions = permissions;
        self
    }

    /// Run `hook` before each question.
    pub fn with_before_prompt(mut self, hook: BeforePrompt) -> Self {
        self.before_prompt = Some(hook);
        self
    }

    fn overrides(&self) -> std::sync::MutexGuard<'_, Overrides> {
        // A panic while holding the lock leaves plain data; keep using it.
        self.overrides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Set (or with `None` clear) the session-wide policy (`--approve`,
    /// `/approve`). A new session-wide choice also forgets "always" answers.
    pub fn set_all(&self, policy: Option<Policy>) {
        let mut o = self.overrides();
        o.all = policy;
        o.tools.clear();
    }

    /// The session-wide policy, if set.
    pub fn all(&self) -> Option<Policy> {
        self.overrides().all
    }

    /// Forget "always" answers (a new conversation).
    pub fn forget_always(&self) {
        self.overrides().tools.clear();
    }

    /// The policy in force for `spec` (`None`: the class always runs).
    pub fn policy(&self, spec: &ToolSpec) -> Option<Policy> {
        let class = self.config.class_policy(spec.class)?;
        let o = self.overrides();
        if let Some(p) = o.tools.get(&spec.name) {
            return Some(*p);
        }
        let default = match self.sources.get(&spec.source) {
            Some(source) => stricter(*source, class),
            None => class,
        };
        let configured = self
            .config
            .tools
            .get(&spec.name)
            .copied()
            .unwrap_or(default);
        Some(match o.all {
            Some(_) if configured == Policy::Deny => Policy::Deny,
            Some(all) => all,
            None => configured,
        })
    }

    /// What the policies say about a call, before anyone is asked.
    pub fn decide(&self, spec: &ToolSpec, tainted_by: Option<&str>) -> Decision {
        let Some(policy) = self.policy(spec) else {
            return Decision::Run;
        };
        let always = self.overrides().tools.contains_key(&spec.name);
        let what = class_words(spec.class);
        match policy {
            Policy::Deny => Decision::Deny(format!(
                "The user's approval policy denies `{}` ({what}); do not try it again, choose another way or finish.",
                spec.name
            )),
            Policy::Ask => Decision::Ask(format!("its approval policy is `ask` ({what})")),
            Policy::Auto
                if tainted_by.is_some()
                    && !always
                    && self.config.ask_after_untrusted
                    && matches!(
                        spec.class,
                        ToolClass::Write | ToolClass::Execute | ToolClass::Network
                    ) =>
            {
                Decision::Ask(format!(
                    "it {what} after the run read untrusted content ({}) and no person has approved an action since",
                    crate::sanitize::one_line(tainted_by.unwrap_or_default(), 200)
                ))
            }
            Policy::Auto => Decision::Run,
        }
    }

    /// The question shown to the person, free of terminal escapes. The
    /// arguments are listed shortest first and long ones are cut, so the
    /// ones that matter (a path, a URL) are in sight before any long
    /// content (security case 44).
    pub fn question(&self, request: &ApprovalRequest<'_>, why: &str) -> String {
        let spec = request.spec;
        let mut q = format!(
            "? approve step {}: {} ({}), from {}\n  because {why}\n  arguments:\n{}\n",
            request.step,
            strip_terminal_escapes(&spec.name),
            class_words(spec.class),
            strip_terminal_escapes(&spec.source),
            arguments(request.args),
        );
        if let Some(p) = self.permissions.get(&spec.source) {
            q.push_str(&format!(
                "  permissions of plugin {}: {}\n",
                strip_terminal_escapes(&spec.source),
                strip_terminal_escapes(p)
            ));
        }
        q.push_str(&format!(
            "  [y]es · [n]o · [a]lways for {} in this session · or type feedback for the agent",
            strip_terminal_escapes(&spec.name)
        ));
        q
    }
}

/// Longest argument value shown in full on its own line in a question.
const SHORT_ARG_CHARS: usize = 200;
/// How much of a long argument a question shows (head and tail).
const LONG_ARG_CHARS: usize = 1500;

/// The arguments of a call for a question: one `name: value` line per
/// short argument, shortest first, then each long one cut to its head and
/// tail below its name and size.
fn arguments(args: &serde_json::Value) -> String {
    let fields: Vec<(String, String)> = match args.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (strip_terminal_escapes(k), strip_terminal_escapes(&text))
            })
            .collect(),
        None => vec![("(value)".into(), strip_terminal_escapes(&args.to_string()))],
    };
    let mut fields = fields;
    fields.sort_by_key(|(_, v)| v.chars().count());
    let mut out = Vec::new();
    for (name, value) in fields {
        let chars = value.chars().count();
        if chars <= SHORT_ARG_CHARS && !value.contains('\n') {
            out.push(format!("    {name}: {value}"));
        } else {
            out.push(format!("    {name} ({chars} characters):"));
            out.push(indent(&cap_head_tail(&value, LONG_ARG_CHARS), "      "));
        }
    }
    out.join("\n")
}

/// What a class may do, in words ("writes the workspace").
pub fn class_words(class: ToolClass) -> &'static str {
    match class {
        ToolClass::Internal => "touches nothing outside the agent",
        ToolClass::Read => "reads the workspace",
        ToolClass::Write => "writes the workspace",
        ToolClass::Execute => "runs code",
        ToolClass::Network => "uses the network",
        ToolClass::Human => "talks to you",
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first argument of a write that names a file git runs or obeys
/// (see [`crate::plugin::protect`]).
fn protected_target(spec: &ToolSpec, args: &serde_json::Value) -> Option<String> {
    if spec.class != ToolClass::Write {
        return None;
    }
    args.as_object()?
        .values()
        .filter_map(|v| v.as_str())
        .find(|p| crate::plugin::protect::is_protected(p))
        .map(|p| crate::sanitize::one_line(p, 200))
}

#[async_trait]
impl Approver for PolicyApprover {
    async fn approve(&self, request: &ApprovalRequest<'_>) -> Approval {
        // Files git executes or obeys: a person decides, whatever the
        // policy, "always" or --yes (case 42).
        let protected = protected_target(request.spec, request.args);
        let decision = match &protected {
            Some(path) => Decision::Ask(format!(
                "it writes {path}, which git runs or obeys (a command written there runs when you use git); such writes always ask"
            )),
            None => self.decide(request.spec, request.tainted_by),
        };
        let why = match decision {
            Decision::Run => return Approval::Approve,
            Decision::Deny(reason) => return Approval::Deny(reason),
            Decision::Ask(why) => why,
        };
        let prompter = match &self.mode {
            Mode::Continuous | Mode::NonInteractive if protected.is_some() => {
                return Approval::Deny(format!(
                    "Not run: `{}` writes {}, a file git runs or obeys, and only a person at the approval prompt can allow that (not a policy, not --yes). Do not try again; tell the user what change is needed so they can make it.",
                    request.spec.name,
                    protected.unwrap_or_default()
                ));
            }
            Mode::Continuous => return Approval::Approve,
            Mode::NonInteractive => {
                return Approval::Deny(format!(
                    "Not run: nobody can answer an approval question in this non-interactive run, and `{}` needs approval ({why}). The user can allow it with --yes, --approve auto, or `approvals:` in the config.",
                    request.spec.name
                ));
            }
            Mode::Interactive(p) => p.clone(),
        };
        match &self.before_prompt {
            Some(hook) => hook(),
            // The transcript is drawn by another task; let it show the step
            // this question is about before the question.
            None => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
        let question = self.question(request, &why);
        let answer = tokio::task::spawn_blocking(move || prompter.ask(&question))
            .await
            .ok()
            .flatten();
        match answer.as_deref().map(parse_answer) {
            Some(Answer::Yes) => Approval::PersonApproved,
            // "always" does not extend to protected files: this once.
            Some(Answer::Always) if protected.is_some() => Approval::PersonApproved,
            Some(Answer::Always) => {
                self.overrides()
                    .tools
                    .insert(request.spec.name.clone(), Policy::Auto);
                Approval::PersonApproved
            }
            Some(Answer::Feedback(words)) => Approval::Feedback(words),
            Some(Answer::No) => Approval::Declined(format!(
                "The user declined `{}`; do not repeat it. Choose another way, or finish and say what is needed.",
                request.spec.name
            )),
            None => Approval::Deny(format!(
                "The user declined `{}`; do not repeat it. Choose another way, or finish and say what is needed.",
                request.spec.name
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn spec(name: &str, class: ToolClass) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            args_schema: serde_json::json!({"type": "object"}),
            class,
            source: "files".into(),
        }
    }

    struct Scripted {
        answers: Mutex<Vec<Option<String>>>,
        asked: AtomicUsize,
        last: Mutex<String>,
    }

    impl Scripted {
        fn new(answers: &[Option<&str>]) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.iter().rev().map(|a| a.map(String::from)).collect()),
                asked: AtomicUsize::new(0),
                last: Mutex::new(String::new()),
            })
        }
    }

    impl Prompter for Scripted {
        fn ask(&self, question: &str) -> Option<String> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            *self.last.lock().unwrap() = question.to_string();
            self.answers.lock().unwrap().pop().flatten()
        }
    }

    const TAINT: Option<&str> = Some("read_file notes.txt");

    async fn ask(
        a: &PolicyApprover,
        s: &ToolSpec,
        args: serde_json::Value,
        untrusted: bool,
    ) -> Approval {
        a.approve(&ApprovalRequest {
            step: 1,
            spec: s,
            args: &args,
            tainted_by: untrusted.then_some("fetch_page https://x.example"),
        })
        .await
    }

    #[test]
    fn defaults_run_everything_but_ask_after_untrusted_content() {
        let a = PolicyApprover::new(ApprovalConfig::default(), Mode::NonInteractive);
        let write = spec("write_file", ToolClass::Write);
        let read = spec("read_file", ToolClass::Read);
        assert_eq!(a.decide(&write, None), Decision::Run);
        assert_eq!(a.decide(&read, TAINT), Decision::Run);
        assert!(matches!(a.decide(&write, TAINT), Decision::Ask(_)));
        assert!(matches!(
            a.decide(&spec("run_python", ToolClass::Execute), TAINT),
            Decision::Ask(_)
        ));
        assert!(matches!(
            a.decide(&spec("fetch", ToolClass::Network), TAINT),
            Decision::Ask(_)
        ));
        let off = ApprovalConfig {
            ask_after_untrusted: false,
            ..Default::default()
        };
        let a = PolicyApprover::new(off, Mode::NonInteractive);
        assert_eq!(a.decide(&write, TAINT), Decision::Run);
    }

    #[test]
    fn tool_policy_beats_class_policy_and_internal_tools_always_run() {
        let config: ApprovalConfig =
            serde_yaml::from_str("write: ask\nexecute: deny\ntools:\n  write_file: auto\n")
                .unwrap();
        let a = PolicyApprover::new(config, Mode::NonInteractive);
        assert_eq!(
            a.decide(&spec("write_file", ToolClass::Write), None),
            Decision::Run
        );
        assert!(matches!(
            a.decide(&spec("append_file", ToolClass::Write), None),
            Decision::Ask(_)
        ));
        assert!(matches!(
            a.decide(&spec("run_python", ToolClass::Execute), None),
            Decision::Deny(_)
        ));
        a.set_all(Some(Policy::Deny));
        assert_eq!(
            a.decide(&spec("finish", ToolClass::Internal), TAINT),
            Decision::Run
        );
        assert_eq!(
            a.decide(&spec("ask_human", ToolClass::Human), TAINT),
            Decision::Run
        );
    }

    #[test]
    fn session_policy_overrides_config_but_never_lifts_a_config_deny() {
        let config: ApprovalConfig = serde_yaml::from_str("read: ask\nexecute: deny\n").unwrap();
        let a = PolicyApprover::new(config, Mode::NonInteractive);
        a.set_all(Some(Policy::Auto));
        assert_eq!(
            a.decide(&spec("read_file", ToolClass::Read), None),
            Decision::Run
        );
        assert!(matches!(
            a.decide(&spec("run_python", ToolClass::Execute), None),
            Decision::Deny(_)
        ));
        a.set_all(Some(Policy::Ask));
        assert!(matches!(
            a.decide(&spec("read_file", ToolClass::Read), None),
            Decision::Ask(_)
        ));
        a.set_all(None);
        assert_eq!(
            a.policy(&spec("read_file", ToolClass::Read)),
            Some(Policy::Ask)
        );
    }

    #[test]
    fn unknown_config_keys_and_bad_policies_are_refused() {
        assert!(serde_yaml::from_str::<ApprovalConfig>("writes: ask\n").is_err());
        assert!(serde_yaml::from_str::<ApprovalConfig>("write: maybe\n").is_err());
        assert_eq!("DENY".parse::<Policy>(), Ok(Policy::Deny));
        assert!("sometimes".parse::<Policy>().is_err());
    }

    #[test]
    fn answers_are_read_generously() {
        assert_eq!(parse_answer(" Y "), Answer::Yes);
        assert_eq!(parse_answer("yes"), Answer::Yes);
        assert_eq!(parse_answer(""), Answer::No);
        assert_eq!(parse_answer("no"), Answer::No);
        assert_eq!(parse_answer("a"), Answer::Always);
        assert_eq!(parse_answer("always"), Answer::Always);
        assert_eq!(
            parse_answer("use notes.md instead"),
            Answer::Feedback("use notes.md instead".into())
        );
    }

    #[tokio::test]
    async fn non_interactive_ask_denies_with_a_reason_and_continuous_runs() {
        let config: ApprovalConfig = serde_yaml::from_str("write: ask\n").unwrap();
        let write = spec("write_file", ToolClass::Write);
        let a = PolicyApprover::new(config.clone(), Mode::NonInteractive);
        match ask(&a, &write, serde_json::json!({}), false).await {
            Approval::Deny(r) => {
                assert!(
                    r.contains("nobody can answer") && r.contains("--yes"),
                    "{r}"
                )
            }
            other => panic!("{other:?}"),
        }
        let a = PolicyApprover::new(config, Mode::Continuous);
        assert_eq!(
            ask(&a, &write, serde_json::json!({}), true).await,
            Approval::Approve
        );
    }

    #[tokio::test]
    async fn each_answer_does_what_it_says_and_always_sticks_for_the_tool() {
        let p = Scripted::new(&[
            Some("n"),
            Some("write it to b.md"),
            None,
            Some("always"),
            Some("no"),
            Some("always"),
        ]);
        let config: ApprovalConfig = serde_yaml::from_str("write: ask\n").unwrap();
        let a = PolicyApprover::new(config, Mode::Interactive(p.clone()));
        let write = spec("write_file", ToolClass::Write);
        let args = serde_json::json!({"path": "a.md"});
        assert!(matches!(
            ask(&a, &write, args.clone(), false).await,
            Approval::Declined(_)
        ));
        assert_eq!(
            ask(&a, &write, args.clone(), false).await,
            Approval::Feedback("write it to b.md".into())
        );
        // Ctrl-C / Ctrl-D declines.
        assert!(matches!(
            ask(&a, &write, args.clone(), false).await,
            Approval::Deny(_)
        ));
        assert_eq!(
            ask(&a, &write, args.clone(), false).await,
            Approval::PersonApproved
        );
        assert_eq!(p.asked.load(Ordering::SeqCst), 4);
        // "always": no more questions for this tool, even after untrusted content.
        assert_eq!(ask(&a, &write, args.clone(), true).await, Approval::Approve);
        assert_eq!(p.asked.load(Ordering::SeqCst), 4);
        // ... but other tools still ask.
        let p2 = spec("append_file", ToolClass::Write);
        assert!(matches!(
            ask(&a, &p2, args.clone(), false).await,
            Approval::Declined(_)
        ));
        assert_eq!(p.asked.load(Ordering::SeqCst), 5);
        a.forget_always();
        assert!(matches!(a.decide(&write, None), Decision::Ask(_)));
        // A new session-wide choice replaces earlier "always" answers.
        assert_eq!(
            ask(&a, &write, args.clone(), false).await,
            Approval::PersonApproved
        );
        a.set_all(Some(Policy::Deny));
        assert!(matches!(a.decide(&write, None), Decision::Deny(_)));
    }

    #[tokio::test]
    async fn the_question_shows_arguments_and_permissions_without_escapes() {
        let p = Scripted::new(&[Some("y")]);
        let config: ApprovalConfig = serde_yaml::from_str("write: ask\n").unwrap();
        let a = PolicyApprover::new(config, Mode::Interactive(p.clone())).with_permissions(
            [(
                "files".to_string(),
                "workspace write\u{1b}[2J · no network\u{1b}]0;owned\u{7}".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        let write = spec("write_file", ToolClass::Write);
        let args = serde_json::json!({"path": "a.md", "content": "hi"});
        assert_eq!(ask(&a, &write, args, false).await, Approval::PersonApproved);
        let q = p.last.lock().unwrap().clone();
        assert!(q.contains("write_file") && q.contains("path: a.md"), "{q}");
        assert!(q.contains("workspace write · no network"), "{q}");
        assert!(!q.contains('\u{1b}') && !q.contains('\u{7}'), "{q:?}");
    }

    #[tokio::test]
    async fn case_44_the_path_is_shown_before_long_content_and_long_content_is_cut() {
        let p = Scripted::new(&[Some("n")]);
        let config: ApprovalConfig = serde_yaml::from_str("write: ask\n").unwrap();
        let a = PolicyApprover::new(config, Mode::Interactive(p.clone()));
        let write = spec("write_file", ToolClass::Write);
        // The model puts the content first, hoping the path scrolls away.
        let content = format!("{}\u{202e}txt.exe\n{}", "A".repeat(4100), "B".repeat(300));
        let args = serde_json::json!({"content": content, "path": "../../.bashrc"});
        ask(&a, &write, args, false).await;
        let q = p.last.lock().unwrap().clone();
        let path_at = q.find("path: ../../.bashrc").expect(&q);
        let content_at = q.find("content (4408 characters):").expect(&q);
        assert!(path_at < content_at, "{q}");
        assert!(
            q.chars().count() < 2500,
            "the question is {} characters",
            q.chars().count()
        );
        assert!(
            !q.contains('\u{202e}'),
            "bidi override reached the question"
        );
    }

    #[test]
    fn the_reason_to_ask_names_the_untrusted_content_read() {
        let a = PolicyApprover::new(ApprovalConfig::default(), Mode::NonInteractive);
        let write = spec("write_file", ToolClass::Write);
        match a.decide(&write, TAINT) {
            Decision::Ask(why) => assert!(why.contains("read_file notes.txt"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
