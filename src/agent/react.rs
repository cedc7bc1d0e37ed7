//! The ReAct loop: render the prompt, ask the model for exactly one action
//! (constrained to the live tool schema), check it, dispatch it, record the
//! observation, and repeat until `finish`, a budget, a guard, an error or the
//! user ends the run.
//!
//! Every step is committed to the [`RunJournal`] (and flushed) before its
//! observation event is sent and before the next step starts, so the journal
//! is always a prefix of what happened and a run can resume from it. The
//! chat history is append-only (system, the earlier exchanges of a
//! conversation when there are any, goal, then assistant/observation
//! pairs), which lets engines with a prefix cache reuse earlier work; when the
//! history outgrows the context budget the oldest steps are left out and the
//! goal message says how many.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::conversation;
use super::events::Event;
use super::guard::{LoopGuard, Verdict, action_key};
use super::hooks::{Approval, ApprovalRequest, Approver, MemoryHook};
use super::run::{Clock, Ending, Lifecycle, ask_model, check_budgets};
use crate::action::{self, Action};
use crate::memory::journal::{StepOutcome, now_rfc3339};
use crate::memory::{RunJournal, RunRecord, StepRecord, StopKind, StoreError};
use crate::model::{self, ChatMessage, CompletionRequest, MESSAGE_OVERHEAD, ModelBackend, Usage};
use crate::prompt::{Prompt, PromptError, PromptLibrary};
use crate::sanitize;
use crate::tools::builtin::FINISH;
use crate::tools::{ToolClass, ToolContext, ToolError, ToolRegistry};

/// Limits of one run (taken from its journal record, so a resumed run keeps them).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub max_steps: u32,
    pub max_tokens: u64,
    pub step_tokens: u32,
    pub timeout: Duration,
    pub model_timeout: Duration,
    pub temperature: f32,
    pub observation_chars: usize,
    /// Context window used when the model does not report one.
    pub context_tokens: usize,
}

/// Failures that stop the agent from even recording a run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The agent was asked for with parts missing (a programming error
    /// reported instead of a panic).
    #[error("cannot build the agent: {0}")]
    Setup(String),
}

/// Runs goals with the ReAct strategy.
pub struct ReactAgent {
    pub model: Arc<dyn ModelBackend>,
    pub tools: Arc<ToolRegistry>,
    /// The step prompt (`react`).
    pub prompt: Prompt,
    /// The compaction prompt (`summarise`).
    pub summarise: Prompt,
    pub journal: RunJournal,
    pub events: UnboundedSender<Event>,
    pub settings: AgentSettings,
    /// Asked before each tool call; `None` approves everything (`--yes`).
    pub approver: Option<Arc<dyn Approver>>,
    /// Long-term memory; `None` runs without it.
    pub memory: Option<Arc<dyn MemoryHook>>,
}

/// Messages of one step's history entry, with their token count cached.
struct HistoryEntry {
    step: StepRecord,
    assistant: String,
    observation: String,
    tokens: usize,
}

/// Most characters of a raw model output kept in the history.
const RAW_IN_HISTORY: usize = 2000;

impl ReactAgent {
    /// An agent with the `react` and `summarise` prompts from `prompts`, no
    /// approver (everything approved) and no long-term memory.
    pub fn new(
        model: Arc<dyn ModelBackend>,
        tools: Arc<ToolRegistry>,
        prompts: &PromptLibrary,
        journal: RunJournal,
        events: UnboundedSender<Event>,
        settings: AgentSettings,
    ) -> Result<Self, AgentError> {
        Ok(Self {
            model,
            tools,
            prompt: prompts.load("react")?,
            summarise: prompts.load("summarise")?,
            journal,
            events,
            settings,
            approver: None,
            memory: None,
        })
    }

    fn emit(&self, event: Event) {
        // A closed channel means no one is watching; the run goes on.
        let _ = self.events.send(event);
    }

    /// The system message and the action schema, as the model will get them.
    pub fn render_system(&self) -> Result<(String, serde_json::Value), AgentError> {
        let specs = self.tools.specs();
        let tools: Vec<_> = specs
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "description": s.description,
                    "args_schema": s.args_schema,
                    "signature": crate::action::signature(&s.args_schema),
                })
            })
            .collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let system = self
            .prompt
            .render("system", &json!({"tools": tools, "tool_names": names}))?;
        Ok((
            system,
            action::action_schema(&specs, self.max_string_chars()),
        ))
    }

    /// Drive `run` (new, or resumed with its committed `steps`) to its end.
    pub async fn drive(
        &self,
        mut run: RunRecord,
        steps: Vec<StepRecord>,
        cancel: &CancellationToken,
    ) -> Result<RunRecord, AgentError> {
        let resumed_after = (!steps.is_empty() || run.steps > 0).then_some(steps.len() as u32);
        run.steps = steps.len() as u32;
        let life = self.lifecycle();
        let clock = life.start(&mut run, resumed_after)?;
        let ending = match self.steps(&mut run, steps, &clock, cancel).await {
            Ok(ending) => ending,
            Err(e) => {
                // Try to record the failure; the store may be what failed.
                let ending = Ending::new(StopKind::Failed, e.to_string());
                if life.record_end(&mut run, &ending, &clock).is_ok() {
                    self.announce(&run, ending).await;
                }
                return Err(e);
            }
        };
        life.record_end(&mut run, &ending, &clock)?;
        self.announce(&run, ending).await;
        Ok(run)
    }

    fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            model: &self.model,
            tools: &self.tools,
            journal: &self.journal,
            events: &self.events,
            memory: self.memory.as_ref(),
            settings: &self.settings,
        }
    }

    /// Reflect and announce the end, with the run's steps.
    async fn announce(&self, run: &RunRecord, ending: Ending) {
        let steps = self.journal.steps(&run.id).unwrap_or_default();
        let summary = summarize(&steps);
        self.lifecycle()
            .announce_end(run, ending, &steps, summary)
            .await;
    }

    async fn steps(
        &self,
        run: &mut RunRecord,
        committed: Vec<StepRecord>,
        clock: &Clock,
        cancel: &CancellationToken,
    ) -> Result<Ending, AgentError> {
        let (system, schema) = self.render_system()?;
        let context = self
            .model
            .context_length()
            .unwrap_or(self.settings.context_tokens);
        // The conversation this run continues gets at most a quarter of
        // the window; what it does not use goes to the history.
        let earlier =
            conversation::earlier_messages(&run.earlier, self.model.as_ref(), context / 4);
        let fixed_tokens = model::count_tokens(self.model.as_ref(), &system)
            + 2 * MESSAGE_OVERHEAD
            + 32
            + earlier.tokens;
        let history_budget =
            context.saturating_sub(fixed_tokens + self.settings.step_tokens as usize);
        let mut guard = LoopGuard::new();
        let mut history: Vec<HistoryEntry> = Vec::with_capacity(committed.len());
        for step in &committed {
            match (&step.tool, &step.args, step.outcome) {
                (_, _, StepOutcome::InvalidOutput) | (None, _, _) | (_, None, _) => {
                    guard.invalid();
                }
                (Some(tool), Some(args), _) => {
                    guard.check(step.index, &action_key(tool, args));
                }
            }
            history.push(self.history_entry(step, history_budget)?);
        }
        // What the last step read from outside (a web page, a file), when it
        // did: approvals ask after it, and memories stored next say so.
        let mut untrusted_source: Option<String> = None;
        let mut summary = Summary::default();

        loop {
            let index = run.steps + 1;
            if let Some(ending) = check_budgets(&self.settings, run, clock, cancel) {
                return Ok(ending);
            }
            let remaining = clock.remaining();

            // Messages: system, the conversation so far, goal, then the
            // newest history that fits;
            // older steps are compacted into a summary in the goal message.
            let mut keep = fit_newest(&history, history_budget);
            if keep < history.len() {
                keep = fit_newest(&history, history_budget.saturating_sub(SUMMARY_TOKENS));
            }
            let omitted = history.len() - keep;
            if omitted > summary.covers {
                summary = self
                    .compact(run, &committed_steps(&history), &summary, omitted, cancel)
                    .await;
                run.usage += summary.usage;
                self.emit(Event::Notice {
                    step: index,
                    message: format!("context nearly full: the first {omitted} steps were compacted into a summary"),
                });
            }
            let goal_msg = self.prompt.render(
                "goal",
                &json!({"goal": run.goal, "omitted": omitted, "summary": (omitted > 0).then_some(&summary.text)}),
            )?;
            let mut messages = vec![ChatMessage::system(system.clone())];
            messages.extend(earlier.messages.iter().cloned());
            messages.push(ChatMessage::user(goal_msg));
            for entry in &history[omitted..] {
                messages.push(ChatMessage::assistant(entry.assistant.clone()));
                messages.push(ChatMessage::user(entry.observation.clone()));
            }
            if let Some(memory) = &self.memory {
                let latest = history.last().map(|h| h.observation.as_str()).unwrap_or("");
                let query = format!("{}\n{}", run.goal, sanitize::cap_head_tail(latest, 1000));
                let recalled = memory.recall(&query, (context / 8).min(600)).await;
                if !recalled.is_empty() {
                    let items: Vec<_> = recalled
                        .iter()
                        .map(|r| json!({"text": r.text, "source": r.source}))
                        .collect();
                    let text = self
                        .prompt
                        .render("recalled", &json!({"memories": items}))?;
                    if let Some(last) = messages.last_mut() {
                        last.content.push_str("\n\n");
                        last.content.push_str(&text);
                    }
                }
            }

            // Ask the model.
            self.emit(Event::Thinking { step: index });
            let request = CompletionRequest {
                messages,
                max_tokens: self.settings.step_tokens as usize,
                temperature: self.settings.temperature,
                json_schema: Some(schema.clone()),
            };
            let events = self.events.clone();
            let sink = move |text: &str| {
                let _ = events.send(Event::Token {
                    step: index,
                    text: text.to_string(),
                });
            };
            let model_started = Instant::now();
            let completion = match ask_model(
                self.model.as_ref(),
                request,
                &sink,
                &self.settings,
                clock,
                cancel,
            )
            .await
            {
                Ok(c) => c,
                Err(ending) => return Ok(ending),
            };
            let model_ms = model_started.elapsed().as_millis() as u64;
            run.usage += completion.usage;

            let mut step = StepRecord {
                index,
                raw_output: completion.text.clone(),
                thought: None,
                tool: None,
                args: None,
                observation: String::new(),
                outcome: StepOutcome::Ok,
                note: None,
                usage: completion.usage,
                model_ms,
                tool_ms: 0,
                at: now_rfc3339(),
            };
            let mut ending = None;

            let checked = self.check_action(&completion.text).map_err(|error| {
                // Output that stops at the token limit is cut, not malformed:
                // say so, so the model writes less instead of the same again.
                if completion.usage.completion_tokens >= self.settings.step_tokens as u64 {
                    format!(
                        "your action was cut off at the limit of {} tokens for one step, so it is incomplete ({error}). \
                         Keep the thought short and write long content in several smaller steps (e.g. append_file)",
                        self.settings.step_tokens
                    )
                } else {
                    error
                }
            });
            match checked {
                Err(error) => {
                    step.outcome = StepOutcome::InvalidOutput;
                    step.observation =
                        sanitize::observation(&error, self.settings.observation_chars);
                    self.emit(Event::InvalidOutput {
                        step: index,
                        error: error.clone(),
                        raw: sanitize::cap_head_tail(
                            &sanitize::strip_terminal_escapes(&completion.text),
                            500,
                        ),
                    });
                    if let Some(reason) = guard.invalid() {
                        ending = Some(Ending::new(
                            StopKind::Guard,
                            format!("{reason} (last error: {error})"),
                        ));
                    }
                }
                Ok(action) => {
                    step.thought = Some(sanitize::strip_terminal_escapes(&action.thought));
                    step.tool = Some(action.tool.clone());
                    step.args = Some(action.args.clone());
                    self.emit(Event::Step {
                        step: index,
                        thought: step.thought.clone().unwrap_or_default(),
                        tool: action.tool.clone(),
                        args: action.args.clone(),
                    });
                    let verdict = match guard.check(index, &action_key(&action.tool, &action.args))
                    {
                        Verdict::Run if action.tool != FINISH => match self
                            .approve(index, &action, untrusted_source.is_some())
                            .await
                        {
                            Approval::Approve => Verdict::Run,
                            Approval::Deny(reason) => {
                                step.outcome = StepOutcome::Denied;
                                step.observation =
                                    sanitize::observation(&reason, self.settings.observation_chars);
                                Verdict::Nudge(String::new())
                            }
                            Approval::Feedback(words) => {
                                step.outcome = StepOutcome::Denied;
                                step.observation = sanitize::observation(
                                    &format!(
                                        "The user did not approve this action and said: {words}"
                                    ),
                                    self.settings.observation_chars,
                                );
                                Verdict::Nudge(String::new())
                            }
                        },
                        other => other,
                    };
                    match verdict {
                        Verdict::Nudge(message) if message.is_empty() => {}
                        Verdict::Run => {
                            let tool_started = Instant::now();
                            let result = self
                                .call_tool(
                                    &action,
                                    ToolContext {
                                        cancel: cancel.child_token(),
                                        run_id: Some(run.id.clone()),
                                        step: Some(index),
                                        untrusted_source: untrusted_source.clone(),
                                    },
                                    remaining.saturating_sub(model_started.elapsed()),
                                )
                                .await;
                            step.tool_ms = tool_started.elapsed().as_millis() as u64;
                            match result {
                                Ok(output) if action.tool == FINISH => {
                                    step.observation = "The run is finished.".into();
                                    ending = Some(Ending::finished(
                                        output,
                                        "the agent finished the goal",
                                    ));
                                }
                                Ok(output) => {
                                    step.observation = sanitize::observation(
                                        &output,
                                        self.settings.observation_chars,
                                    );
                                    let cut = action::strings_at_cap(
                                        &action.args,
                                        self.max_string_chars(),
                                    );
                                    if !cut.is_empty() {
                                        step.note = Some(format!(
                                            "the argument(s) {} reached the limit of {} characters for one action and may be cut; \
                                             add the rest with another action (e.g. append_file)",
                                            cut.join(", "),
                                            self.max_string_chars()
                                        ));
                                    }
                                }
                                Err(ToolError::Observation(msg)) => {
                                    step.outcome = StepOutcome::ToolError;
                                    step.observation = sanitize::observation(
                                        &msg,
                                        self.settings.observation_chars,
                                    );
                                }
                                Err(ToolError::Cancelled) => {
                                    step.outcome = StepOutcome::ToolError;
                                    step.observation =
                                        "The action was cancelled by the user.".into();
                                    ending = Some(Ending::cancelled());
                                }
                                Err(ToolError::Fatal(msg)) => {
                                    step.outcome = StepOutcome::ToolError;
                                    step.observation = sanitize::observation(
                                        &msg,
                                        self.settings.observation_chars,
                                    );
                                    ending = Some(Ending::new(
                                        StopKind::Failed,
                                        format!("tool `{}` failed: {msg}", action.tool),
                                    ));
                                }
                            }
                        }
                        Verdict::Nudge(message) => {
                            step.outcome = StepOutcome::Repeated;
                            step.observation =
                                "Not run again: this repeats an earlier action.".into();
                            step.note = Some(message.clone());
                            self.emit(Event::Notice {
                                step: index,
                                message,
                            });
                        }
                        Verdict::Stop(reason) => {
                            step.outcome = StepOutcome::Repeated;
                            step.observation = "Not run: the agent is repeating itself.".into();
                            ending = Some(Ending::new(StopKind::Guard, reason));
                        }
                    }
                }
            }

            // Commit before anyone hears of the result.
            run.steps = index;
            run.elapsed_ms = clock.elapsed_ms();
            run.updated_at = now_rfc3339();
            self.journal.commit_step(run, &step)?;
            self.emit(Event::Observation {
                step: index,
                tool: step.tool.clone(),
                observation: step.observation.clone(),
                is_error: step.outcome != StepOutcome::Ok,
                tool_ms: step.tool_ms,
            });
            let read_outside = step.outcome == StepOutcome::Ok
                && step
                    .tool
                    .as_deref()
                    .and_then(|t| self.tools.get(t))
                    .is_some_and(|t| {
                        matches!(t.spec().class, ToolClass::Read | ToolClass::Network)
                    });
            untrusted_source = read_outside.then(|| untrusted_label(&step));
            history.push(self.history_entry(&step, history_budget)?);
            if let Some(ending) = ending {
                return Ok(ending);
            }
        }
    }

    async fn approve(&self, step: u32, action: &Action, after_untrusted: bool) -> Approval {
        let (Some(approver), Some(tool)) = (&self.approver, self.tools.get(&action.tool)) else {
            return Approval::Approve;
        };
        approver
            .approve(&ApprovalRequest {
                step,
                spec: tool.spec(),
                args: &action.args,
                after_untrusted,
            })
            .await
    }

    /// The longest string argument one step can write (see [`action::action_schema`]).
    fn max_string_chars(&self) -> u64 {
        u64::from(self.settings.step_tokens) * 3 / 2
    }

    /// Parse the output and check the action against the registry.
    fn check_action(&self, text: &str) -> Result<Action, String> {
        let action = action::parse(text).map_err(|e| e.to_string())?;
        self.tools.check_args(&action.tool, &action.args)?;
        Ok(action)
    }

    async fn call_tool(
        &self,
        action: &Action,
        ctx: ToolContext,
        remaining: Duration,
    ) -> Result<String, ToolError> {
        let Some(tool) = self.tools.get(&action.tool) else {
            return Err(ToolError::Observation(format!(
                "unknown tool `{}`",
                action.tool
            )));
        };
        match tokio::time::timeout(
            remaining.max(Duration::from_millis(1)),
            tool.call(action.args.clone(), &ctx),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => {
                ctx.cancel.cancel();
                Err(ToolError::Observation(
                    "the run's time budget ran out while the tool was working".into(),
                ))
            }
        }
    }

    /// A step as history messages. An observation too large for half the
    /// history budget is cut further (head and tail), so one huge page can
    /// never push everything else out or overflow the context.
    fn history_entry(
        &self,
        step: &StepRecord,
        history_budget: usize,
    ) -> Result<HistoryEntry, AgentError> {
        let assistant = sanitize::cap_head_tail(step.raw_output.trim(), RAW_IN_HISTORY);
        let max_tokens = (history_budget / 2).max(64);
        let mut observation_text = step.observation.clone();
        for _ in 0..4 {
            let observation = self.prompt.render(
                "observation",
                &json!({
                    "tool": step.tool.clone().unwrap_or_else(|| "agent".into()),
                    "observation": observation_text,
                    "is_error": step.outcome != StepOutcome::Ok,
                    "note": step.note,
                }),
            )?;
            let tokens = model::count_tokens(self.model.as_ref(), &assistant)
                + model::count_tokens(self.model.as_ref(), &observation)
                + 2 * MESSAGE_OVERHEAD;
            if tokens <= max_tokens || observation_text.len() <= 200 {
                return Ok(HistoryEntry {
                    step: step.clone(),
                    assistant,
                    observation,
                    tokens,
                });
            }
            let chars = observation_text.chars().count();
            let keep = (chars as f64 * max_tokens as f64 / tokens as f64 * 0.85) as usize;
            observation_text = sanitize::cap_head_tail(&step.observation, keep.max(200));
        }
        let observation = sanitize::cap_head_tail(&observation_text, 200);
        let tokens = max_tokens;
        Ok(HistoryEntry {
            step: step.clone(),
            assistant,
            observation,
            tokens,
        })
    }

    /// Summarise history entries `summary.covers..upto` into the running
    /// summary with the `summarise` prompt. If the model cannot (an error,
    /// an empty answer), a plain list of the steps' actions and first result
    /// lines stands in, so compaction never fails a run.
    async fn compact(
        &self,
        run: &RunRecord,
        steps: &[&StepRecord],
        previous: &Summary,
        upto: usize,
        cancel: &CancellationToken,
    ) -> Summary {
        let new_steps = &steps[previous.covers.min(upto)..upto];
        let items: Vec<_> = new_steps
            .iter()
            .map(|s| {
                let action = match (&s.tool, &s.args) {
                    (Some(t), Some(a)) => format!("{t} {}", sanitize::cap_head_tail(&a.to_string(), 200)),
                    _ => "(invalid output)".into(),
                };
                json!({"index": s.index, "action": action, "result": sanitize::cap_head_tail(&s.observation, 400)})
            })
            .collect();
        let fallback = || {
            let mut text = previous.text.clone();
            for s in new_steps {
                let line = summarize(std::slice::from_ref(*s));
                text.push_str(if text.is_empty() { "" } else { " " });
                text.push_str(&line);
            }
            sanitize::cap_head_tail(&text, SUMMARY_TOKENS * 3)
        };
        let ctx = json!({"goal": run.goal, "previous": previous.text, "steps": items});
        let rendered = (|| -> Result<Vec<ChatMessage>, PromptError> {
            let prompt = &self.summarise;
            Ok(vec![
                ChatMessage::system(prompt.render("system", &ctx)?),
                ChatMessage::user(prompt.render("user", &ctx)?),
            ])
        })();
        let mut usage = Usage::default();
        let text = match rendered {
            Ok(messages) => {
                let request = CompletionRequest {
                    messages,
                    max_tokens: SUMMARY_TOKENS,
                    temperature: 0.0,
                    json_schema: None,
                };
                match tokio::time::timeout(
                    self.settings.model_timeout,
                    self.model.complete(request, &|_: &str| {}, cancel),
                )
                .await
                {
                    Ok(Ok(c)) if !c.text.trim().is_empty() => {
                        usage = c.usage;
                        sanitize::cap_head_tail(
                            &sanitize::strip_terminal_escapes(c.text.trim()),
                            SUMMARY_TOKENS * 4,
                        )
                    }
                    _ => fallback(),
                }
            }
            Err(_) => fallback(),
        };
        Summary {
            covers: upto,
            text,
            usage,
        }
    }
}

/// The running summary of compacted steps.
#[derive(Debug, Default, Clone)]
struct Summary {
    /// History entries `0..covers` are summarised.
    covers: usize,
    text: String,
    /// What producing the latest summary cost.
    usage: Usage,
}

/// Tokens reserved in the prompt for the summary of compacted steps.
const SUMMARY_TOKENS: usize = 300;

/// How many of the newest entries fit `budget` tokens.
fn fit_newest(history: &[HistoryEntry], budget: usize) -> usize {
    let mut used = 0;
    let mut keep = 0;
    for entry in history.iter().rev() {
        if used + entry.tokens > budget {
            break;
        }
        used += entry.tokens;
        keep += 1;
    }
    keep
}

fn committed_steps(history: &[HistoryEntry]) -> Vec<&StepRecord> {
    history.iter().map(|h| &h.step).collect()
}

/// A step-by-step account of what a run did, for the end of a run.
pub fn summarize(steps: &[StepRecord]) -> String {
    if steps.is_empty() {
        return "No steps were taken.".into();
    }
    let lines: Vec<String> = steps
        .iter()
        .map(|s| {
            let action = match (&s.tool, &s.args) {
                (Some(t), Some(a)) => {
                    format!("{t} {}", sanitize::one_line(&a.to_string(), 120))
                }
                _ => "(invalid output)".into(),
            };
            let result = match s.outcome {
                StepOutcome::Ok => "ok".to_string(),
                StepOutcome::ToolError => {
                    format!("error: {}", sanitize::one_line(&s.observation, 160))
                }
                StepOutcome::InvalidOutput => {
                    format!("rejected: {}", sanitize::one_line(&s.observation, 160))
                }
                StepOutcome::Repeated => "repeat, not run".to_string(),
                StepOutcome::Denied => {
                    format!("not approved: {}", sanitize::one_line(&s.observation, 160))
                }
            };
            format!("{}. {action} → {result}", s.index)
        })
        .collect();
    lines.join("\n")
}

/// How a step that read outside content names its source: the tool, and
/// the URL, path or query it was given (`fetch_page https://…`).
fn untrusted_label(step: &StepRecord) -> String {
    let tool = step.tool.as_deref().unwrap_or("a tool");
    let arg = step.args.as_ref().and_then(|a| {
        ["url", "path", "query"]
            .iter()
            .find_map(|k| a.get(*k).and_then(|v| v.as_str()))
    });
    match arg {
        // The model wrote the argument: no terminal escapes in what lists show.
        Some(a) => format!("{tool} {}", sanitize::one_line(a, 200)),
        None => tool.to_string(),
    }
}

#[cfg(test)]
mod tests;
