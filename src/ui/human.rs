//! The human transcript: thought, action and observation of each step, then
//! how the run ended and what was done. Colour goes through `anstream`,
//! which drops it when `NO_COLOR` is set or stdout is not a terminal; the
//! spinner (step, elapsed time, tokens/s) goes to stderr through `indicatif`,
//! which hides itself when stderr is not a terminal. All text that came from
//! a model or a tool is already free of terminal escapes (see
//! [`crate::sanitize`]); it is stripped again here because this is the last
//! place before the terminal.

use std::io::Write;
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use indicatif::{ProgressBar, ProgressStyle};

use super::{Renderer, Verbosity};
use crate::agent::Event;
use crate::agent::plan::PlanStep;
use crate::memory::RunStatus;
use crate::sanitize::{first_lines, observation, one_line_end, strip_terminal_escapes};

const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();
const THOUGHT: Style = Style::new().italic();
const TOOL: Style = AnsiColor::Cyan.on_default().bold();
const ERR: Style = AnsiColor::Red.on_default().bold();
const OK: Style = AnsiColor::Green.on_default().bold();
const WARN: Style = AnsiColor::Yellow.on_default().bold();

/// Renders events for a person.
pub struct Human {
    out: anstream::AutoStream<std::io::Stdout>,
    verbosity: Verbosity,
    spinner: Option<ProgressBar>,
    step_started: Instant,
    step_tokens: usize,
    streamed: String,
}

impl Human {
    /// A transcript on stdout.
    pub fn new(verbosity: Verbosity) -> Self {
        Self {
            out: anstream::AutoStream::auto(std::io::stdout()),
            verbosity,
            spinner: None,
            step_started: Instant::now(),
            step_tokens: 0,
            streamed: String::new(),
        }
    }

    fn line(&mut self, text: &str) {
        if let Some(s) = &self.spinner {
            s.suspend(|| {
                let _ = writeln!(self.out, "{text}");
            });
        } else {
            let _ = writeln!(self.out, "{text}");
        }
    }

    fn stop_spinner(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
    }

    fn quiet(&self) -> bool {
        self.verbosity == Verbosity::Quiet
    }
}

/// Indent every line after the first by `indent`; on a terminal, long lines
/// are also wrapped at word boundaries to its width, so a narrow window keeps
/// the hanging indent instead of breaking at column 0.
fn indented(text: &str, indent: &str) -> String {
    let width = stdout_width();
    text.lines()
        .flat_map(|l| match width {
            Some(w) => wrap(l, w.saturating_sub(indent.chars().count()).max(20)),
            None => vec![l.to_string()],
        })
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

/// Columns of the terminal on `fd`, if it is one.
fn terminal_width(fd: libc::c_int) -> Option<usize> {
    // SAFETY: TIOCGWINSZ only writes the winsize struct passed to it.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// Width for wrapping the transcript: only when stdout is a terminal (piped
/// output keeps one line per line, for grep).
fn stdout_width() -> Option<usize> {
    terminal_width(1)
}

/// Break `line` into pieces of at most `width` characters, at spaces when it can.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut len = 0;
    for word in line.split(' ') {
        let wlen = word.chars().count();
        if len > 0 && len + 1 + wlen > width {
            out.push(std::mem::take(&mut current));
            len = 0;
        }
        if len > 0 {
            current.push(' ');
            len += 1;
        }
        // A word longer than the line is cut.
        let mut chars = word.chars().peekable();
        while chars.peek().is_some() {
            if len == width {
                out.push(std::mem::take(&mut current));
                len = 0;
            }
            let c = chars.next().unwrap_or(' ');
            current.push(c);
            len += 1;
        }
    }
    out.push(current);
    out
}

/// The `thought` of an action the model is still writing: the JSON string
/// value decoded as far as it has streamed (`None` before it begins).
pub fn partial_thought(streamed: &str) -> Option<String> {
    let key = streamed.find("\"thought\"")?;
    let rest = streamed[key + 9..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push(' '),
                Some('t') => out.push(' '),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(c) if hex.len() == 4 => out.push(c),
                        _ => break,
                    }
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

impl Renderer for Human {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                run_id,
                goal,
                model,
                tools,
                resumed_after,
                recipe,
            } => {
                if self.quiet() {
                    return;
                }
                let how = match resumed_after {
                    Some(n) => format!("resuming run {run_id} after step {n}"),
                    None => format!("run {run_id}"),
                };
                let goal = strip_terminal_escapes(goal);
                self.line(&format!(
                    "{BOLD}▶ {how}{BOLD:#} {DIM}· model {model} · tools: {}{DIM:#}",
                    tools.join(", ")
                ));
                if let Some(recipe) = recipe {
                    self.line(&format!(
                        "{BOLD}  recipe:{BOLD:#} {}",
                        strip_terminal_escapes(recipe)
                    ));
                }
                self.line(&format!(
                    "{BOLD}  goal:{BOLD:#} {}",
                    indented(&goal, "        ")
                ));
            }
            Event::Thinking { step } => {
                self.step_started = Instant::now();
                self.step_tokens = 0;
                self.streamed.clear();
                if self.quiet() {
                    return;
                }
                let spinner = ProgressBar::new_spinner();
                spinner.set_style(
                    ProgressStyle::with_template("{spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                spinner.set_message(format!("step {step} · thinking"));
                spinner.enable_steady_tick(Duration::from_millis(120));
                self.spinner = Some(spinner);
            }
            Event::Token { step, text } => {
                self.step_tokens += 1;
                // Kept whole for -v; otherwise only while the thought streams.
                if self.verbosity == Verbosity::Verbose || self.streamed.len() < 64 * 1024 {
                    self.streamed.push_str(text);
                }
                if let Some(s) = &self.spinner {
                    let secs = self.step_started.elapsed().as_secs_f64();
                    let rate = if secs > 0.0 {
                        self.step_tokens as f64 / secs
                    } else {
                        0.0
                    };
                    let head = format!("step {step} · {secs:.1} s · {rate:.1} tok/s");
                    // The thought as the model writes it, as much as fits the line.
                    let room = terminal_width(2)
                        .unwrap_or(80)
                        .saturating_sub(head.chars().count() + 6);
                    let message = match partial_thought(&self.streamed) {
                        Some(t) if room >= 10 && !t.trim().is_empty() => {
                            format!("{head} · {}", one_line_end(&t, room))
                        }
                        _ => format!("{head} · thinking"),
                    };
                    s.set_message(message);
                }
            }
            Event::Step {
                step,
                thought,
                tool,
                args,
            } => {
                self.stop_spinner();
                if self.quiet() {
                    return;
                }
                let secs = self.step_started.elapsed().as_secs_f64();
                if !thought.is_empty() {
                    let thought = strip_terminal_escapes(thought);
                    self.line(&format!(
                        "{DIM}[{step}]{DIM:#} {THOUGHT}{}{THOUGHT:#} {DIM}({secs:.1} s){DIM:#}",
                        indented(&thought, "    ")
                    ));
                }
                let args = observation(&args.to_string(), 300);
                // Only an MCP server's tools have a `.` (`SERVER.TOOL`):
                // they run outside the sandbox, and the transcript says so.
                let outside = match tool.split_once('.') {
                    Some((server, _)) => format!(
                        " {DIM}(MCP server `{}`, not sandboxed){DIM:#}",
                        strip_terminal_escapes(server)
                    ),
                    None => String::new(),
                };
                self.line(&format!("    {TOOL}→ {tool}{TOOL:#} {args}{outside}"));
            }
            Event::InvalidOutput { step, error, raw } => {
                self.stop_spinner();
                if self.quiet() {
                    return;
                }
                self.line(&format!(
                    "{DIM}[{step}]{DIM:#} {WARN}✗ invalid output:{WARN:#} {}",
                    strip_terminal_escapes(error)
                ));
                if self.verbosity == Verbosity::Verbose {
                    self.line(&format!(
                        "    {DIM}{}{DIM:#}",
                        indented(&strip_terminal_escapes(raw), "    ")
                    ));
                }
            }
            Event::Observation {
                observation,
                is_error,
                tool,
                ..
            } => {
                // Rejected output was shown by its `InvalidOutput` event already.
                if self.quiet()
                    || tool.as_deref() == Some("finish")
                    || (tool.is_none() && *is_error)
                {
                    return;
                }
                let text = strip_terminal_escapes(observation);
                let body = if self.verbosity == Verbosity::Verbose {
                    text
                } else {
                    first_lines(&text, 6, 160)
                };
                let (mark, style) = if *is_error {
                    ("✗", ERR)
                } else {
                    ("←", DIM)
                };
                self.line(&format!(
                    "    {style}{mark}{style:#} {}",
                    indented(&body, "      ")
                ));
            }
            Event::Notice { message, .. } => {
                if self.quiet() {
                    return;
                }
                self.line(&format!(
                    "    {WARN}!{WARN:#} {}",
                    strip_terminal_escapes(message)
                ));
            }
            Event::PlanCreated { .. }
            | Event::PlanRevised { .. }
            | Event::PlanStepStarted { .. }
            | Event::PlanStepFinished { .. } => {
                self.stop_spinner();
                if !self.quiet()
                    && let Some(text) = plan_text(event)
                {
                    self.line(&text);
                }
            }
            Event::RunFinished {
                run_id,
                status,
                answer,
                reason,
                steps,
                usage,
                elapsed_ms,
                summary,
                cost,
            } => {
                self.stop_spinner();
                let secs = *elapsed_ms as f64 / 1000.0;
                // With several models (roles), what each cost.
                if (cost.len() > 1 || cost.iter().any(|c| c.money.is_some())) && !self.quiet() {
                    let mut out = anstream::AutoStream::auto(std::io::stderr());
                    for c in cost {
                        let _ = writeln!(
                            out,
                            "{DIM}cost: {}{DIM:#}",
                            strip_terminal_escapes(&c.line())
                        );
                    }
                }
                if let Some(answer) = answer.as_ref().filter(|_| *status != RunStatus::Unverified) {
                    let answer = strip_terminal_escapes(answer);
                    if self.quiet() {
                        self.line(&answer);
                        return;
                    }
                    self.line(&format!("{OK}✔ finished{OK:#} {DIM}in {steps} steps, {secs:.1} s, {} tokens · run {run_id}{DIM:#}", usage.total()));
                    self.line(&answer);
                    return;
                }
                let style = if *status == RunStatus::Failed {
                    ERR
                } else {
                    WARN
                };
                let word = match status {
                    RunStatus::BudgetExhausted => "budget exhausted",
                    RunStatus::Cancelled => "cancelled",
                    RunStatus::Failed => "failed",
                    RunStatus::Unverified => "unverified",
                    _ => "stopped",
                };
                let reason = strip_terminal_escapes(reason);
                let mut out = anstream::AutoStream::auto(std::io::stderr());
                let _ = writeln!(
                    out,
                    "{style}■ {word}:{style:#} {reason} {DIM}(after {steps} steps, {secs:.1} s, {} tokens · run {run_id}){DIM:#}",
                    usage.total()
                );
                if let Some(answer) = answer {
                    // What the agent claimed, said to be unchecked.
                    let _ = writeln!(
                        out,
                        "{BOLD}Its answer (not verified):{BOLD:#} {}",
                        strip_terminal_escapes(answer)
                    );
                }
                if !self.quiet() {
                    let _ = writeln!(
                        out,
                        "{BOLD}What was done:{BOLD:#}\n{}",
                        strip_terminal_escapes(summary)
                    );
                    if matches!(
                        status,
                        RunStatus::BudgetExhausted | RunStatus::Cancelled | RunStatus::Failed
                    ) {
                        let _ = writeln!(
                            out,
                            "{DIM}Continue it with: agent runs resume {run_id}{DIM:#}"
                        );
                    }
                }
            }
            Event::RecipeFinished {
                run_id,
                recipe,
                status,
                attempts,
                checks,
                answer: _,
            } => {
                self.stop_spinner();
                if self.quiet() {
                    return;
                }
                let mut out = anstream::AutoStream::auto(std::io::stderr());
                for c in checks {
                    let (mark, style) = if c.passed { ("✔", OK) } else { ("✘", ERR) };
                    let detail = if c.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", strip_terminal_escapes(&c.detail))
                    };
                    let _ = writeln!(
                        out,
                        "{style}{mark}{style:#} {}{detail}",
                        strip_terminal_escapes(&c.check)
                    );
                }
                let tries = if *attempts == 1 {
                    "1 attempt".to_string()
                } else {
                    format!("{attempts} attempts")
                };
                let _ = writeln!(
                    out,
                    "{DIM}recipe {} {} after {tries} · run {run_id}{DIM:#}",
                    strip_terminal_escapes(recipe),
                    status.as_str()
                );
            }
        }
    }

    fn close(&mut self) {
        self.stop_spinner();
        let _ = self.out.flush();
    }
}

/// `ask_human` on the terminal: the question on stderr, the answer read with
/// rustyline (line editing; Ctrl-C or Ctrl-D declines).
pub struct TerminalHuman;

#[async_trait::async_trait]
impl crate::tools::builtin::Human for TerminalHuman {
    async fn ask(&self, question: &str) -> Result<Option<String>, crate::tools::ToolError> {
        let question = strip_terminal_escapes(question);
        let joined = tokio::task::spawn_blocking(move || {
            let mut editor = rustyline::DefaultEditor::new().map_err(|e| e.to_string())?;
            let mut err = anstream::AutoStream::auto(std::io::stderr());
            let _ = writeln!(err, "{WARN}? the agent asks:{WARN:#} {question}");
            match editor.readline("answer> ") {
                Ok(line) => Ok(Some(line)),
                Err(
                    rustyline::error::ReadlineError::Interrupted
                    | rustyline::error::ReadlineError::Eof,
                ) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        match joined {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(crate::tools::ToolError::Observation(format!(
                "could not read the user's answer: {e}"
            ))),
            Err(e) => Err(crate::tools::ToolError::Fatal(format!(
                "terminal input task failed: {e}"
            ))),
        }
    }
}

/// The transcript text of a plan event (`None` for other events).
fn plan_text(event: &Event) -> Option<String> {
    let list = |steps: &[PlanStep], from: usize| {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mark = if i < from { " (done)" } else { "" };
                format!(
                    "  {}. {}{mark}\n     done when: {}",
                    i + 1,
                    strip_terminal_escapes(&s.description),
                    strip_terminal_escapes(&s.success_criterion)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    match event {
        Event::PlanCreated { steps, .. } => Some(format!("Plan:\n{}", list(steps, 0))),
        Event::PlanRevised {
            revision,
            thought,
            done,
            steps,
        } => Some(format!(
            "Plan revised ({revision}): {}\n{}",
            strip_terminal_escapes(thought),
            list(steps, *done)
        )),
        Event::PlanStepStarted {
            number,
            of,
            description,
            run_id,
            ..
        } => Some(format!(
            "── step {number} of {of}: {} ({run_id})",
            strip_terminal_escapes(description)
        )),
        Event::PlanStepFinished {
            number,
            status,
            result,
            steps,
            ..
        } => Some(format!(
            "── step {number} {} after {steps} steps: {}",
            status.as_str(),
            observation(result, 300)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn the_thought_is_read_while_it_streams() {
        assert_eq!(partial_thought("{\"thou"), None);
        assert_eq!(partial_thought("{\"thought\": \"I sh"), Some("I sh".into()));
        assert_eq!(
            partial_thought("{\"thought\":\"say \\\"hi\\\"\\nnow\", \"tool\": \"x\""),
            Some("say \"hi\" now".into())
        );
        assert_eq!(
            partial_thought("{\"thought\": \"caf\\u00e9 \\u00"),
            Some("café ".into())
        );
    }

    #[test]
    fn long_lines_wrap_at_words_to_the_width() {
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 10), vec![""]);
        for piece in wrap(&"word ".repeat(50), 23) {
            assert!(piece.chars().count() <= 23, "{piece}");
        }
    }
}
