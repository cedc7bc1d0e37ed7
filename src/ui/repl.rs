//! The pieces of the interactive session that know about the terminal and
//! text, not about runs: slash-command parsing, line editing (completion of
//! slash commands, tool names and workspace paths; multi-line input),
//! Ctrl-C on an empty line, and the Markdown transcript of `/save`.
//! `cli::chat` drives the session with them. The conversation itself is
//! carried as messages (see [`crate::agent::conversation`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Cmd, ConditionalEventHandler, Event, EventContext, Helper, RepeatCount};

use crate::config::{EditMode, ReplConfig};

/// Every slash command with its arguments and what it does (for `/help`).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("/help", "", "show this list"),
    (
        "/model",
        "[REF]",
        "show the model of each role, or load another default one",
    ),
    (
        "/cost",
        "",
        "what each model cost this session: calls, tokens, seconds, money",
    ),
    ("/tools", "", "list the tools and their approval policies"),
    ("/plugins", "", "list the plugins and their permissions"),
    ("/memory", "[QUERY]", "search long-term memory"),
    ("/kb", "[QUERY]", "search the knowledge base"),
    ("/runs", "", "list recent runs"),
    (
        "/agent",
        "[react|plan]",
        "show or set the strategy for new goals (plan: approve the plan first)",
    ),
    (
        "/approve",
        "[auto|ask|deny]",
        "show or set the approval policy for this session",
    ),
    (
        "/budget",
        "[steps N|tokens N|time DURATION]",
        "show or change the budgets of each goal",
    ),
    (
        "/clear",
        "",
        "forget the conversation and start a new session",
    ),
    (
        "/recipe",
        "NAME [KEY=VALUE ...]",
        "run a recipe (agent recipe list names them); parameters it asks for are asked here",
    ),
    ("/save", "FILE", "write the conversation as Markdown"),
    ("/last", "", "show the last observation whole"),
    ("/exit", "", "leave (Ctrl-D also leaves)"),
];

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing to do.
    Empty,
    /// A goal or follow-up for the agent.
    Goal(String),
    /// A slash command: its name (without `/`) and the rest of the line.
    Command { name: String, arg: String },
    /// A slash command that does not exist; the text says what does.
    Unknown(String),
}

/// Parse one (possibly multi-line) input. `//text` sends `/text` as a goal.
pub fn parse_input(line: &str) -> Input {
    let text = join_continuations(line);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Input::Empty;
    }
    if let Some(rest) = trimmed.strip_prefix("//") {
        return Input::Goal(format!("/{rest}"));
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Input::Goal(trimmed.to_string());
    };
    let (name, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let name = name.to_ascii_lowercase();
    let name = match name.as_str() {
        "quit" | "q" => "exit".to_string(),
        "?" => "help".to_string(),
        _ => name,
    };
    if COMMANDS.iter().any(|(c, _, _)| c[1..] == name) {
        Input::Command {
            name,
            arg: arg.trim().to_string(),
        }
    } else {
        let known: Vec<&str> = COMMANDS.iter().map(|(c, _, _)| *c).collect();
        Input::Unknown(format!(
            "unknown command /{name}; the commands are {} (to send a line starting with / as a goal, write //)",
            known.join(" ")
        ))
    }
}

/// `/help` text.
pub fn help_text() -> String {
    let mut out = String::from(
        "Type a goal and press Enter; follow-ups continue the conversation.\n\
         End a line with \\ (or open a ``` block) to go on writing on the next line.\n\
         Ctrl-C stops the agent's current step; on an empty line it asks before leaving.\n\
         Tab completes commands, tool names and workspace paths.\n\n",
    );
    for (cmd, args, what) in COMMANDS {
        let left = if args.is_empty() {
            cmd.to_string()
        } else {
            format!("{cmd} {args}")
        };
        out.push_str(&format!("  {left:<44} {what}\n"));
    }
    out
}

/// Lines ending in `\` continue on the next line (the backslash is dropped).
fn join_continuations(text: &str) -> String {
    text.replace("\\\r\n", "\n").replace("\\\n", "\n")
}

/// True while the input is not finished: it ends in `\`, or a ``` block is open.
pub fn needs_more(input: &str) -> bool {
    input.ends_with('\\') || input.matches("```").count() % 2 == 1
}

/// One step of a transcript, for `/save`.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptStep {
    /// The model's thought.
    pub thought: String,
    /// The tool it called.
    pub tool: Option<String>,
    /// Its arguments.
    pub args: Option<serde_json::Value>,
    /// What came back.
    pub observation: String,
}

/// One goal of a transcript, for `/save`.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptTurn {
    /// The user's words.
    pub goal: String,
    /// The run id.
    pub run_id: String,
    /// How it ended.
    pub status: String,
    /// The answer, if it finished.
    pub answer: Option<String>,
    /// Its steps.
    pub steps: Vec<TranscriptStep>,
}

/// The conversation as Markdown (terminal escapes removed).
pub fn transcript_markdown(session_id: &str, turns: &[TranscriptTurn]) -> String {
    use crate::sanitize::strip_terminal_escapes as clean;
    let mut md = format!("# agent session {session_id}\n");
    for (i, t) in turns.iter().enumerate() {
        md.push_str(&format!(
            "\n## {}. {}\n\n_run {} · {}_\n",
            i + 1,
            clean(&t.goal).lines().next().unwrap_or_default(),
            t.run_id,
            t.status
        ));
        if t.goal.lines().count() > 1 {
            md.push_str(&format!("\n{}\n", quote(&clean(&t.goal))));
        }
        for (n, s) in t.steps.iter().enumerate() {
            md.push_str(&format!("\n**Step {}.** {}\n", n + 1, clean(&s.thought)));
            if let Some(tool) = &s.tool
                && tool != crate::tools::builtin::FINISH
            {
                let args = s
                    .args
                    .as_ref()
                    .map(|a| serde_json::to_string(a).unwrap_or_default())
                    .unwrap_or_default();
                md.push_str(&format!(
                    "\n`{}` `{}`\n\n```text\n{}\n```\n",
                    clean(tool),
                    clean(&args).replace('`', "'"),
                    clean(&s.observation).replace("```", "'''")
                ));
            }
        }
        if let Some(a) = &t.answer {
            md.push_str(&format!("\n**Answer:**\n\n{}\n", clean(a)));
        }
    }
    md
}

fn quote(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Line-editing help: completion and multi-line input.
pub struct ReplHelper {
    /// Tool names offered by completion.
    pub tools: Vec<String>,
    /// The workspace, for path completion.
    pub workspace: PathBuf,
    /// Recipe names and their parameter keys, for `/recipe`.
    pub recipes: Vec<(String, Vec<String>)>,
}

impl ReplHelper {
    fn paths(&self, word: &str) -> Vec<String> {
        if word.starts_with('/') || word.starts_with('~') || word.contains("..") {
            return Vec::new();
        }
        let (dir, stem) = match word.rfind('/') {
            Some(i) => (&word[..=i], &word[i + 1..]),
            None => ("", word),
        };
        let Ok(entries) = std::fs::read_dir(self.workspace.join(dir)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(stem) || (name.starts_with('.') && !stem.starts_with('.')) {
                    return None;
                }
                let slash = if e.file_type().is_ok_and(|t| t.is_dir()) {
                    "/"
                } else {
                    ""
                };
                Some(format!("{dir}{name}{slash}"))
            })
            .collect();
        out.sort();
        out
    }

    /// Completions for the word before `pos` in `line`: its start and the candidates.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &before[start..];
        if start == 0 && word.starts_with('/') {
            let found = COMMANDS
                .iter()
                .map(|(c, _, _)| c.to_string())
                .filter(|c| c.starts_with(word))
                .collect();
            return (0, found);
        }
        if let Some(rest) = before.strip_prefix("/recipe ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or("");
            // The name, then `KEY=` for each parameter not given yet.
            let found = if start == "/recipe ".len() {
                self.recipes
                    .iter()
                    .filter(|(n, _)| n.starts_with(word))
                    .map(|(n, _)| n.clone())
                    .collect()
            } else {
                self.recipes
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, keys)| {
                        keys.iter()
                            .filter(|k| !rest.contains(&format!(" {k}=")))
                            .map(|k| format!("{k}="))
                            .filter(|k| k.starts_with(word))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            return (start, found);
        }
        if before.starts_with("/approve ") {
            let found = ["auto", "ask", "deny"]
                .iter()
                .filter(|p| p.starts_with(word))
                .map(|p| p.to_string())
                .collect();
            return (start, found);
        }
        let mut found: Vec<String> = if word.is_empty() {
            Vec::new()
        } else {
            self.tools
                .iter()
                .filter(|t| t.starts_with(word))
                .cloned()
                .collect()
        };
        found.extend(self.paths(word));
        (start, found)
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.candidates(line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: c,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight_candidate<'c>(
        &self,
        candidate: &'c str,
        _completion: rustyline::CompletionType,
    ) -> Cow<'c, str> {
        Cow::Borrowed(candidate)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if needs_more(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ReplHelper {}

/// Notes whether the line was empty when Ctrl-C was pressed, then lets
/// rustyline interrupt as usual: Ctrl-C clears a line, and only on an empty
/// one does the session ask about leaving.
#[derive(Clone, Default)]
pub struct CtrlC {
    had_text: Arc<AtomicBool>,
}

impl CtrlC {
    /// True when the last Ctrl-C was pressed on a line with text (and reset).
    pub fn take_had_text(&self) -> bool {
        self.had_text.swap(false, Ordering::SeqCst)
    }
}

impl ConditionalEventHandler for CtrlC {
    fn handle(
        &self,
        _evt: &Event,
        _n: RepeatCount,
        _positive: bool,
        ctx: &EventContext,
    ) -> Option<Cmd> {
        self.had_text
            .store(!ctx.line().trim().is_empty(), Ordering::SeqCst);
        Some(Cmd::Interrupt)
    }
}

/// A line editor for the session: edit mode, history size, the helper, Ctrl-C.
pub fn editor(
    config: &ReplConfig,
    helper: ReplHelper,
    ctrl_c: CtrlC,
) -> rustyline::Result<rustyline::Editor<ReplHelper, rustyline::history::FileHistory>> {
    let mode = match config.edit_mode {
        EditMode::Emacs => rustyline::EditMode::Emacs,
        EditMode::Vi => rustyline::EditMode::Vi,
    };
    let rl_config = rustyline::Config::builder()
        .edit_mode(mode)
        .max_history_size(2000)?
        .auto_add_history(false)
        .history_ignore_space(true)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor = rustyline::Editor::with_config(rl_config)?;
    editor.set_helper(Some(helper));
    editor.bind_sequence(
        rustyline::KeyEvent::ctrl('C'),
        rustyline::EventHandler::Conditional(Box::new(ctrl_c)),
    );
    Ok(editor)
}

/// The history file of the session in the user's data directory.
pub fn history_file(data_dir: &Path) -> PathBuf {
    data_dir.join("repl_history.txt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_goals_commands_or_a_list_of_what_exists() {
        assert_eq!(parse_input("   "), Input::Empty);
        assert_eq!(
            parse_input(" list files "),
            Input::Goal("list files".into())
        );
        assert_eq!(
            parse_input("/model  qwen3-4b "),
            Input::Command {
                name: "model".into(),
                arg: "qwen3-4b".into()
            }
        );
        assert_eq!(
            parse_input("/quit"),
            Input::Command {
                name: "exit".into(),
                arg: String::new()
            }
        );
        match parse_input("/frobnicate now") {
            Input::Unknown(msg) => {
                assert!(msg.contains("/frobnicate"), "{msg}");
                assert!(msg.contains("/help") && msg.contains("/save"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_input("//etc is a dir"),
            Input::Goal("/etc is a dir".into())
        );
    }

    #[test]
    fn backslash_and_open_fences_continue_the_input() {
        assert!(needs_more("first line \\"));
        assert!(needs_more("look at\n```\ncode"));
        assert!(!needs_more("look at\n```\ncode\n```"));
        assert!(!needs_more("plain"));
        assert_eq!(parse_input("one \\\ntwo"), Input::Goal("one \ntwo".into()));
    }

    #[test]
    fn completion_offers_commands_tools_and_workspace_paths() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("notes")).unwrap();
        std::fs::write(ws.path().join("notes/todo.md"), "x").unwrap();
        std::fs::write(ws.path().join("readme.md"), "x").unwrap();
        let h = ReplHelper {
            tools: vec!["read_file".into(), "write_file".into()],
            workspace: ws.path().to_path_buf(),
            recipes: vec![
                ("classify".into(), vec!["text".into(), "labels".into()]),
                ("csv-summary".into(), vec!["csv".into()]),
            ],
        };
        assert_eq!(h.candidates("/recipe cl", 10), (8, vec!["classify".into()]));
        assert_eq!(
            h.candidates("/recipe classify text=hi ", 25),
            (25, vec!["labels=".into()])
        );
        assert_eq!(h.candidates("/mo", 3), (0, vec!["/model".to_string()]));
        assert_eq!(
            h.candidates("/approve a", 10),
            (9, vec!["auto".into(), "ask".into()])
        );
        assert_eq!(h.candidates("use wr", 6), (4, vec!["write_file".into()]));
        assert_eq!(
            h.candidates("summarise re", 12),
            (10, vec!["read_file".into(), "readme.md".into()])
        );
        assert_eq!(
            h.candidates("open notes/t", 12),
            (5, vec!["notes/todo.md".into()])
        );
        assert_eq!(h.candidates("open no", 7), (5, vec!["notes/".into()]));
        // Nothing outside the workspace.
        assert!(h.candidates("open ../", 8).1.is_empty());
        assert!(h.candidates("open /et", 8).1.is_empty());
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_text();
        for (c, _, _) in COMMANDS {
            assert!(h.contains(c), "{c} missing from help");
        }
    }

    #[test]
    fn transcripts_are_markdown_without_escapes() {
        let md = transcript_markdown(
            "s1",
            &[TranscriptTurn {
                goal: "count \u{1b}[31mfiles".into(),
                run_id: "r1".into(),
                status: "finished".into(),
                answer: Some("3 files".into()),
                steps: vec![
                    TranscriptStep {
                        thought: "list them".into(),
                        tool: Some("list_dir".into()),
                        args: Some(serde_json::json!({"path": "."})),
                        observation: "a\nb\nc".into(),
                    },
                    TranscriptStep {
                        thought: "done".into(),
                        tool: Some("finish".into()),
                        args: Some(serde_json::json!({"answer": "3 files"})),
                        observation: String::new(),
                    },
                ],
            }],
        );
        assert!(md.starts_with("# agent session s1\n"), "{md}");
        assert!(md.contains("## 1. count files"), "{md}");
        assert!(md.contains("`list_dir`"), "{md}");
        assert!(md.contains("```text\na\nb\nc\n```"), "{md}");
        assert!(md.contains("**Answer:**\n\n3 files"), "{md}");
        assert!(!md.contains('\u{1b}'));
    }
}
