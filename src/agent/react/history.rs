//! The ReAct loop's history: each committed step as a pair of messages
//! (the model's action, the observation) with its token count, the newest
//! entries that fit the budget, and the running summary that stands in for
//! older steps once the context is nearly full (compaction).

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{AgentError, ReactAgent};
use crate::memory::journal::StepOutcome;
use crate::memory::{RunRecord, StepRecord};
use crate::model::roles::ModelRole;
use crate::model::{self, ChatMessage, CompletionRequest, MESSAGE_OVERHEAD, Usage};
use crate::prompt::PromptError;
use crate::sanitize;

/// Messages of one step's history entry, with their token count cached.
pub(super) struct HistoryEntry {
    pub(super) step: StepRecord,
    pub(super) assistant: String,
    pub(super) observation: String,
    pub(super) tokens: usize,
}

/// Most characters of a raw model output kept in the history.
const RAW_IN_HISTORY: usize = 2000;

impl ReactAgent {
    /// A step as history messages. An observation too large for half the
    /// history budget is cut further (head and tail), so one huge page can
    /// never push everything else out or overflow the context.
    pub(super) fn history_entry(
        &self,
        step: &StepRecord,
        history_budget: usize,
    ) -> Result<HistoryEntry, AgentError> {
        let assistant = sanitize::cap_head_tail(step.raw_output.trim(), RAW_IN_HISTORY);
        let max_tokens = (history_budget / 2).max(64);
        // Outside data is shown without its lines that give orders
        // (measured, 2026-12-02: told beside the line that it is data, the
        // 1.5B model still tried to write HACKED and delete the notes, four
        // times, and gave up on the summary). The journal keeps it whole.
        let shown = step
            .untrusted
            .then(|| crate::agent::verify::withhold_injected(&step.observation))
            .flatten()
            .unwrap_or_else(|| step.observation.clone());
        let mut observation_text = shown.clone();
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
            let tokens = model::count_tokens(self.parts.model.as_ref(), &assistant)
                + model::count_tokens(self.parts.model.as_ref(), &observation)
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
            observation_text = sanitize::cap_head_tail(&shown, keep.max(200));
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
    pub(super) async fn compact(
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
                // Summaries are the fast model's (model roles); one opened
                // on first use loads outside the call's limit.
                let fast = self.parts.roles.get(ModelRole::Fast);
                let ready = fast.ready(cancel).await;
                match tokio::time::timeout(self.parts.settings.model_timeout, async {
                    ready?;
                    fast.complete(request, &|_: &str| {}, cancel).await
                })
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
pub(super) struct Summary {
    /// History entries `0..covers` are summarised.
    pub(super) covers: usize,
    pub(super) text: String,
    /// What producing the latest summary cost.
    pub(super) usage: Usage,
}

/// Tokens reserved in the prompt for the summary of compacted steps.
pub(super) const SUMMARY_TOKENS: usize = 300;

/// How many of the newest entries fit `budget` tokens.
pub(super) fn fit_newest(history: &[HistoryEntry], budget: usize) -> usize {
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

pub(super) fn committed_steps(history: &[HistoryEntry]) -> Vec<&StepRecord> {
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
