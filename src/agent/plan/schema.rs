//! What the planner and the replanner may answer: the JSON schemas their
//! output is constrained to, and the tolerant parsing and checks of what
//! came back (an unconstrained backend may wrap the object in prose).

use serde::Deserialize;
use serde_json::{Value, json};

use super::state::PlanStep;
use crate::json_extract;
use crate::sanitize;

/// Longest description or criterion the schema allows, in characters.
const MAX_STEP_CHARS: u64 = 160;
/// Longest planner thought, in characters (short: the steps carry the plan).
const MAX_PLAN_THOUGHT_CHARS: u64 = 200;

/// The replanner's choice.
pub(super) enum Decision {
    Keep,
    Revise(String, Vec<PlanStep>),
    Finish(String),
}

#[derive(Deserialize)]
struct PlanOutput {
    #[serde(default)]
    thought: String,
    steps: Vec<PlanStep>,
}

#[derive(Deserialize)]
struct ReplanOutput {
    #[serde(default)]
    thought: String,
    decision: String,
    #[serde(default)]
    steps: Option<Vec<PlanStep>>,
    #[serde(default)]
    answer: Option<String>,
}

fn steps_schema(max: usize) -> Value {
    json!({
        "type": "array",
        "minItems": 1,
        "maxItems": max,
        "items": {
            "type": "object",
            "properties": {
                "description": {"type": "string", "maxLength": MAX_STEP_CHARS},
                "success_criterion": {"type": "string", "maxLength": MAX_STEP_CHARS},
            },
            "required": ["description", "success_criterion"],
            "additionalProperties": false,
        }
    })
}

fn thought_schema() -> Value {
    json!({"type": "string", "maxLength": MAX_PLAN_THOUGHT_CHARS})
}

/// The schema of a plan with at most `max` steps.
pub fn plan_schema(max: usize) -> Value {
    json!({
        "type": "object",
        "properties": {"thought": thought_schema(), "steps": steps_schema(max)},
        "required": ["thought", "steps"],
        "additionalProperties": false,
    })
}

/// The schema of a replanner decision; `revise` only while revisions remain.
pub fn replan_schema(allow_revise: bool, max: usize) -> Value {
    let mut branches = vec![
        json!({
            "type": "object",
            "properties": {"thought": thought_schema(), "decision": {"const": "keep"}},
            "required": ["thought", "decision"],
            "additionalProperties": false,
        }),
        json!({
            "type": "object",
            "properties": {
                "thought": thought_schema(),
                "decision": {"const": "finish"},
                "answer": {"type": "string"},
            },
            "required": ["thought", "decision", "answer"],
            "additionalProperties": false,
        }),
    ];
    if allow_revise {
        branches.insert(
            1,
            json!({
                "type": "object",
                "properties": {
                    "thought": thought_schema(),
                    "decision": {"const": "revise"},
                    "steps": steps_schema(max),
                },
                "required": ["thought", "decision", "steps"],
                "additionalProperties": false,
            }),
        );
    }
    json!({"type": "object", "oneOf": branches})
}

fn check_steps(steps: Vec<PlanStep>, max: usize) -> Result<Vec<PlanStep>, String> {
    if steps.is_empty() {
        return Err("the plan has no steps".into());
    }
    if steps.len() > max {
        return Err(format!(
            "the plan has {} steps; at most {max} are allowed",
            steps.len()
        ));
    }
    if steps.iter().any(|s| s.description.trim().is_empty()) {
        return Err("a step has an empty description".into());
    }
    Ok(steps
        .into_iter()
        .map(|s| PlanStep {
            description: sanitize::strip_terminal_escapes(s.description.trim()),
            success_criterion: sanitize::strip_terminal_escapes(s.success_criterion.trim()),
        })
        .collect())
}

pub(super) fn parse_plan(text: &str, max: usize) -> Result<(String, Vec<PlanStep>), String> {
    let out: PlanOutput =
        json_extract::first(text).map_err(|e| format!("not a plan object: {e}"))?;
    Ok((out.thought, check_steps(out.steps, max)?))
}

pub(super) fn parse_decision(text: &str, max: usize) -> Result<Decision, String> {
    let out: ReplanOutput =
        json_extract::first(text).map_err(|e| format!("not a decision object: {e}"))?;
    match out.decision.as_str() {
        "keep" => Ok(Decision::Keep),
        "finish" => match out.answer {
            Some(a) if !a.trim().is_empty() => Ok(Decision::Finish(a)),
            _ => Err("`finish` needs a non-empty `answer`".into()),
        },
        "revise" => {
            let steps = out
                .steps
                .ok_or_else(|| "`revise` needs the new `steps`".to_string())?;
            Ok(Decision::Revise(out.thought, check_steps(steps, max)?))
        }
        other => Err(format!(
            "unknown decision `{other}`; use keep, revise or finish"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_strictly_or_from_a_wrapped_object_and_are_bounded() {
        let text = r#"Sure! {"thought": "t", "steps": [{"description": "a", "success_criterion": "b"}]} ok"#;
        let (thought, steps) = parse_plan(text, 3).unwrap();
        assert_eq!(thought, "t");
        assert_eq!(steps[0].description, "a");
        let too_many = json!({"thought": "", "steps": vec![json!({"description": "x", "success_criterion": "y"}); 4]});
        assert!(
            parse_plan(&too_many.to_string(), 3)
                .unwrap_err()
                .contains("at most 3")
        );
        assert!(parse_plan(r#"{"thought": "", "steps": []}"#, 3).is_err());
        assert!(parse_plan("no json here", 3).is_err());
    }

    #[test]
    fn decisions_need_their_fields() {
        assert!(matches!(
            parse_decision(r#"{"thought": "", "decision": "keep"}"#, 3),
            Ok(Decision::Keep)
        ));
        assert!(parse_decision(r#"{"thought": "", "decision": "finish"}"#, 3).is_err());
        assert!(parse_decision(r#"{"thought": "", "decision": "revise"}"#, 3).is_err());
        assert!(parse_decision(r#"{"thought": "", "decision": "maybe"}"#, 3).is_err());
        match parse_decision(
            r#"{"thought": "t", "decision": "finish", "answer": "42"}"#,
            3,
        ) {
            Ok(Decision::Finish(a)) => assert_eq!(a, "42"),
            _ => panic!("expected finish"),
        }
    }

    #[test]
    fn the_replan_schema_drops_revise_when_no_revision_is_left() {
        let with = replan_schema(true, 4).to_string();
        let without = replan_schema(false, 4).to_string();
        assert!(with.contains("\"revise\""));
        assert!(!without.contains("\"revise\""));
    }
}
