//! A chain recipe's run: its steps in order, each one prompt rendered with
//! the parameters and the earlier steps' outputs, one model call per
//! sample (constrained to the step's JSON schema where it has one, then
//! parsed and validated), and the answer picked by vote or by a judge
//! prompt when there are several. No tools are called. Each step is
//! committed to the journal as it ends, so a resumed chain takes the
//! outputs it has and goes on from the first step it lacks.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{RecipeKit, RecipeOutcome};
use crate::agent::events::Event;
use crate::agent::react::AgentError;
use crate::agent::run::{Clock, Ending, ask_model, check_budgets};
use crate::agent::vote;
use crate::memory::journal::{StepOutcome, Votes, now_rfc3339};
use crate::memory::{RunRecord, StepRecord, StopKind};
use crate::model::{ChatMessage, CompletionRequest, Usage};
use crate::recipe::format::{ChainStep, Select};
use crate::recipe::{Loaded, Values};

/// Tokens one answer of a step may take.
const STEP_TOKENS: usize = 512;

/// Run (or resume, after `committed` steps) the chain `loaded` as `run`.
pub(super) async fn run(
    kit: &Arc<RecipeKit>,
    loaded: &Loaded,
    values: &Values,
    mut run: RunRecord,
    committed: Vec<StepRecord>,
    cancel: &CancellationToken,
) -> Result<RecipeOutcome, AgentError> {
    let parts = kit.parts_for(loaded, values, &run)?;
    let life = parts.lifecycle();
    let resumed = (!committed.is_empty()).then_some(committed.len() as u32);
    run.steps = committed.len() as u32;
    let clock = life.start(&mut run, resumed)?;
    let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
    for (step, record) in loaded.recipe.steps.iter().zip(&committed) {
        outputs.insert(step.name.clone(), parse_recorded(step, &record.observation));
    }
    let instructions = match &loaded.recipe.instructions {
        Some(t) => {
            let ctx = serde_json::to_value(&values.context).unwrap_or_default();
            Some(crate::recipe::values::render("instructions", t, &ctx).map_err(super::setup)?)
        }
        None => None,
    };
    let mut ending = None;
    for (i, step) in loaded.recipe.steps.iter().enumerate().skip(committed.len()) {
        if let Some(stop) = check_budgets(&parts.settings, &run, &clock, cancel) {
            ending = Some(Ok(stop));
            break;
        }
        match one_step(
            &parts,
            i as u32 + 1,
            step,
            instructions.as_deref(),
            values,
            &outputs,
            &clock,
            cancel,
        )
        .await
        {
            Ok((record, output)) => {
                run.steps = record.index;
                run.usage += record.usage;
                run.updated_at = now_rfc3339();
                run.elapsed_ms = clock.elapsed_ms();
                if let Err(e) = parts.journal.commit_step(&run, &record) {
                    ending = Some(Err(AgentError::from(e)));
                    break;
                }
                let _ = parts.events.send(Event::Observation {
                    step: record.index,
                    tool: Some(step.name.clone()),
                    observation: record.observation.clone(),
                    is_error: false,
                    tool_ms: 0,
                });
                outputs.insert(step.name.clone(), output);
            }
            Err(stop) => {
                ending = Some(Ok(stop));
                break;
            }
        }
    }
    let ending = ending.unwrap_or_else(|| {
        let last = loaded
            .recipe
            .steps
            .last()
            .and_then(|s| outputs.get(&s.name))
            .map(answer_text)
            .unwrap_or_default();
        Ok(Ending::finished(
            last,
            "every step of the chain gave its output",
        ))
    });
    let steps_done = outputs.len();
    life.conclude(&mut run, ending, &clock, async |run, ending| {
        let summary = format!(
            "{} of {} chain steps done",
            steps_done,
            loaded.recipe.steps.len()
        );
        life.announce_end(run, ending, &[], summary).await;
        Ok(())
    })
    .await?;
    let answer = (run.status == crate::memory::RunStatus::Finished)
        .then(|| Value::Object(outputs.into_iter().collect()));
    Ok(RecipeOutcome {
        run,
        attempts: 1,
        checks: Vec::new(),
        answer,
    })
}

/// The text of an output (a JSON output as JSON).
fn answer_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An output read back from the journal.
fn parse_recorded(step: &ChainStep, observation: &str) -> Value {
    if step.output.schema().is_some() || (step.samples > 1 && step.select.is_none()) {
        serde_json::from_str(observation).unwrap_or_else(|_| Value::String(observation.into()))
    } else {
        Value::String(observation.into())
    }
}

/// One step: its samples, each parsed, and the one picked.
#[allow(clippy::too_many_arguments)]
async fn one_step(
    parts: &crate::agent::AgentParts,
    index: u32,
    step: &ChainStep,
    instructions: Option<&str>,
    values: &Values,
    outputs: &BTreeMap<String, Value>,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<(StepRecord, Value), Ending> {
    let mut ctx = serde_json::to_value(&values.context).unwrap_or_default();
    if let Some(map) = ctx.as_object_mut() {
        for (k, v) in outputs {
            map.insert(k.clone(), v.clone());
        }
    }
    let prompt =
        crate::recipe::values::render(&format!("steps.{}.prompt", step.name), &step.prompt, &ctx)
            .map_err(|e| Ending::new(StopKind::Failed, e.to_string()))?;
    let schema = step.output.schema().cloned();
    let mut user = prompt.clone();
    if let Some(schema) = &schema {
        user.push_str(&format!(
            "\n\nAnswer with one JSON value matching this schema, and nothing else: {schema}"
        ));
    }
    let mut messages = Vec::new();
    if let Some(i) = instructions {
        messages.push(ChatMessage::system(i));
    }
    messages.push(ChatMessage::user(&user));
    let settings = &parts.settings;
    let temperature = if step.samples > 1 {
        settings.sample_temperature.max(0.3)
    } else {
        settings.temperature
    };
    let _ = parts.events.send(Event::Thinking { step: index });
    let mut usage = Usage::default();
    let mut raws = Vec::new();
    let mut parsed: Vec<Option<Value>> = Vec::new();
    let mut problems = Vec::new();
    let validator = schema
        .as_ref()
        .and_then(|s| jsonschema::validator_for(s).ok());
    for _ in 0..step.samples {
        // One more try for an answer that does not parse (an endpoint that
        // ignores the schema), told why.
        let mut request_messages = messages.clone();
        let mut value = None;
        for _attempt in 0..2 {
            let request = CompletionRequest {
                messages: request_messages.clone(),
                max_tokens: STEP_TOKENS,
                temperature,
                json_schema: schema.clone(),
            };
            let sink = |t: &str| {
                let _ = parts.events.send(Event::Token {
                    step: index,
                    text: t.to_string(),
                });
            };
            let completion = ask_model(
                parts.model.as_ref(),
                request,
                &sink,
                settings,
                clock,
                cancel,
            )
            .await?;
            usage += completion.usage;
            let text = completion.text.trim().to_string();
            match parse(&text, validator.as_ref()) {
                Ok(v) => {
                    raws.push(text);
                    value = Some(v);
                    break;
                }
                Err(why) if completion.usage.completion_tokens >= STEP_TOKENS as u64 => {
                    // A runaway answer, cut off at the cap: showing it back
                    // would fill the context with it, so the step is asked
                    // again with a note instead.
                    problems.push(format!("cut off after {STEP_TOKENS} tokens ({why})"));
                    request_messages = messages.clone();
                    request_messages.push(ChatMessage::user(format!(
                        "An earlier answer ran past {STEP_TOKENS} tokens and was cut off. \
                         Answer briefly, with only the JSON value."
                    )));
                    raws.push(text);
                }
                Err(why) => {
                    problems.push(why.clone());
                    request_messages.push(ChatMessage::assistant(&text));
                    request_messages.push(ChatMessage::user(format!(
                        "That answer is not valid: {why}. Answer again with only the JSON value."
                    )));
                    raws.push(text);
                }
            }
        }
        parsed.push(value);
    }
    let valid: Vec<&Value> = parsed.iter().flatten().collect();
    if valid.is_empty() {
        return Err(Ending::new(
            StopKind::Failed,
            format!(
                "chain step `{}` got no valid answer: {}",
                step.name,
                problems.last().cloned().unwrap_or_default()
            ),
        ));
    }
    let (output, votes) = if step.samples == 1 {
        (valid[0].clone(), None)
    } else {
        match step.select {
            None => (
                Value::Array(valid.iter().map(|v| (*v).clone()).collect()),
                None,
            ),
            Some(Select::Vote) => {
                let keys: Vec<Option<String>> =
                    parsed.iter().map(|p| p.as_ref().map(canonical)).collect();
                let (ballots, invalid) = vote::tally(&keys);
                let winner = ballots
                    .first()
                    .map(|b| b.action.clone())
                    .unwrap_or_default();
                let output = valid
                    .iter()
                    .find(|v| canonical(v) == winner)
                    .map(|v| (*v).clone())
                    .unwrap_or(Value::Null);
                let majority = vote::majority(&ballots, step.samples).is_some();
                let votes = Votes {
                    samples: step.samples,
                    temperature,
                    ballots,
                    invalid,
                    chosen: if majority { "majority" } else { "plurality" }.into(),
                };
                (output, Some(votes))
            }
            Some(Select::Judge) => {
                let pick = judge(parts, &prompt, &valid, &mut usage, clock, cancel).await?;
                let keys: Vec<Option<String>> =
                    parsed.iter().map(|p| p.as_ref().map(canonical)).collect();
                let (ballots, invalid) = vote::tally(&keys);
                let votes = Votes {
                    samples: step.samples,
                    temperature,
                    ballots,
                    invalid,
                    chosen: format!("judge: answer {}", pick + 1),
                };
                (valid[pick].clone(), Some(votes))
            }
        }
    };
    let how = match (step.samples, step.select) {
        (1, _) => String::new(),
        (n, None) => format!(" ({n} samples, all kept)"),
        (n, Some(Select::Vote)) => format!(" ({n} samples, vote)"),
        (n, Some(Select::Judge)) => format!(" ({n} samples, judged)"),
    };
    let _ = parts.events.send(Event::Step {
        step: index,
        thought: format!("chain step `{}`{how}", step.name),
        tool: step.name.clone(),
        args: json!({}),
    });
    let record = StepRecord {
        index,
        raw_output: raws.join("\n---\n"),
        thought: Some(format!("chain step {}", step.name)),
        tool: None,
        args: None,
        observation: answer_text(&output),
        outcome: StepOutcome::Ok,
        note: None,
        usage,
        model_ms: 0,
        tool_ms: 0,
        at: now_rfc3339(),
        votes,
        escalated: None,
        person: None,
        untrusted: false,
    };
    Ok((record, output))
}

/// A model prompt that picks the best of `candidates` (0-based), asked of
/// the `judge` role (the default model unless one is configured).
async fn judge(
    parts: &crate::agent::AgentParts,
    prompt: &str,
    candidates: &[&Value],
    usage: &mut Usage,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<usize, Ending> {
    let listed: Vec<String> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| format!("Answer {}: {}", i + 1, answer_text(c)))
        .collect();
    let n = candidates.len();
    let request = CompletionRequest {
        messages: vec![
            ChatMessage::system(
                "You judge answers. Pick the one answer that best does what the task asks: correct, complete, and in the asked form.",
            ),
            ChatMessage::user(format!(
                "Task:\n{prompt}\n\n{}\n\nWhich answer is best? Reply as JSON: {{\"best\": <its number, 1 to {n}>}}",
                listed.join("\n\n")
            )),
        ],
        max_tokens: 32,
        temperature: 0.0,
        json_schema: Some(json!({
            "type": "object",
            "properties": {"best": {"type": "integer", "minimum": 1, "maximum": n}},
            "required": ["best"],
            "additionalProperties": false
        })),
    };
    let judge = parts.roles.get(crate::model::roles::ModelRole::Judge);
    let completion = ask_model(
        judge.as_ref(),
        request,
        &|_| {},
        &parts.settings,
        clock,
        cancel,
    )
    .await?;
    *usage += completion.usage;
    let best = crate::json_extract::first::<Value>(&completion.text)
        .ok()
        .and_then(|v| v.get("best").and_then(Value::as_u64))
        .filter(|b| (1..=n as u64).contains(b))
        .unwrap_or(1);
    Ok(best as usize - 1)
}

/// `text` as the step's output: JSON valid for `validator` when there is
/// one, else the text.
fn parse(text: &str, validator: Option<&jsonschema::Validator>) -> Result<Value, String> {
    let Some(validator) = validator else {
        return if text.is_empty() {
            Err("the answer is empty".into())
        } else {
            Ok(Value::String(text.to_string()))
        };
    };
    let value: Value = serde_json::from_str(text)
        .or_else(|_| crate::json_extract::first::<Value>(text))
        .map_err(|e| format!("it is not JSON ({e})"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .take(3)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at `{at}`: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(format!(
            "it does not match the schema: {}",
            errors.join("; ")
        ))
    }
}

/// A value as comparable text: object keys sorted, strings trimmed.
fn canonical(v: &Value) -> String {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, norm(v))).collect();
                json!(sorted)
            }
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            Value::String(s) => Value::String(s.trim().to_string()),
            other => other.clone(),
        }
    }
    norm(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_compared_with_sorted_keys_and_trimmed_strings() {
        assert_eq!(
            canonical(&json!({"b": 1, "a": " x "})),
            canonical(&json!({"a": "x", "b": 1}))
        );
        assert_ne!(canonical(&json!({"a": "x"})), canonical(&json!({"a": "y"})));
    }

    #[test]
    fn an_answer_must_parse_and_match_its_schema() {
        let schema = json!({"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]});
        let v = jsonschema::validator_for(&schema).unwrap();
        assert_eq!(
            parse(r#"{"label": "spam"}"#, Some(&v)).unwrap(),
            json!({"label": "spam"})
        );
        assert!(parse("spam", Some(&v)).unwrap_err().contains("not JSON"));
        assert!(
            parse(r#"{"tag": 1}"#, Some(&v))
                .unwrap_err()
                .contains("schema")
        );
        assert_eq!(parse(" hi ", None).unwrap(), json!(" hi "));
    }
}
