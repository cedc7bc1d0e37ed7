//! Actions: the JSON schema of "one valid action" built from the live tool
//! registry, and parsing of what the model wrote.
//!
//! Every step the model must answer with exactly one
//! `{"thought": "...", "tool": "NAME", "args": {...}}`. The schema is a
//! `oneOf` with one branch per registered tool (its `tool` a `const`, its
//! `args` that tool's own schema), so a backend that constrains decoding
//! (mistral.rs with llguidance, servers honouring `response_format`) can only
//! produce a valid action. `thought` comes first so the model reasons before
//! it picks, and is length-capped so a small model cannot ramble away its
//! token budget.
//!
//! Parsing is strict first; for unconstrained backends it then tolerates the
//! usual wrappers (code fences, prose around the object, `action`/`arguments`
//! spellings, arguments given as a JSON string; the spans come from
//! [`crate::json_extract`]). Whatever it cannot read
//! becomes a message the model can act on, never a crash.

use serde_json::{Map, Value, json};

use crate::json_extract;
use crate::tools::ToolSpec;

/// Longest model output considered as an action at all; anything longer is
/// refused before parsing (a 10 MB "argument" never reaches a tool).
pub const MAX_ACTION_BYTES: usize = 256 * 1024;

/// Longest `thought` the schema allows, in characters.
pub const MAX_THOUGHT_CHARS: u64 = 600;

/// One action chosen by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub thought: String,
    pub tool: String,
    pub args: Value,
}

/// Build the schema of one valid action over `tools`, with every string
/// argument capped at `max_string_chars`.
///
/// The cap is what one step can write anyway (derived from the step's token
/// limit): without it a small model that starts repeating itself inside a
/// string runs into the token limit and leaves truncated JSON; with it, a
/// constraining backend closes the string and the action stays whole (the
/// loop then tells the model its argument reached the limit).
pub fn action_schema(tools: &[&ToolSpec], max_string_chars: u64) -> Value {
    let branches: Vec<Value> = tools
        .iter()
        .map(|t| {
            let mut args = t.args_schema.clone();
            cap_strings(&mut args, max_string_chars);
            json!({
                "type": "object",
                "properties": {
                    "thought": {"type": "string", "maxLength": MAX_THOUGHT_CHARS.min(max_string_chars)},
                    "tool": {"const": t.name},
                    "args": args,
                },
                "required": ["thought", "tool", "args"],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({"type": "object", "oneOf": branches})
}

/// `schema` (an [`action_schema`]) without the branch of tool `name`; as
/// it is when that would leave no branch.
pub fn without_tool(schema: &Value, name: &str) -> Value {
    let mut out = schema.clone();
    if let Some(Value::Array(branches)) = out.get_mut("oneOf") {
        let kept: Vec<Value> = branches
            .iter()
            .filter(|b| b.pointer("/properties/tool/const") != Some(&json!(name)))
            .cloned()
            .collect();
        if !kept.is_empty() {
            *branches = kept;
        }
    }
    out
}

/// Set `maxLength` (at most `cap`) on every string schema inside `schema`.
fn cap_strings(schema: &mut Value, cap: u64) {
    let Value::Object(map) = schema else { return };
    if map.get("type").and_then(Value::as_str) == Some("string") {
        let current = map
            .get("maxLength")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        map.insert("maxLength".into(), json!(current.min(cap)));
    }
    for key in ["properties", "patternProperties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(|c| cap_strings(c, cap));
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get_mut(key) {
            cap_strings(child, cap);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(|c| cap_strings(c, cap));
        }
    }
}

/// Names of the string arguments (top level) whose value is `cap` characters
/// long: the grammar may have cut them.
pub fn strings_at_cap(args: &Value, cap: u64) -> Vec<String> {
    let Some(map) = args.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(_, v)| v.as_str().is_some_and(|s| s.chars().count() as u64 >= cap))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A compact, readable form of an arguments schema for the prompt:
/// `path: string, content: string, max_bytes?: integer`. Far fewer tokens
/// than the JSON schema (prompt processing is the slow part of a step on a
/// CPU), while constrained decoding still enforces the exact schema.
pub fn signature(schema: &Value) -> String {
    fn type_of(s: &Value) -> String {
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            return values
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("|");
        }
        if let Some(c) = s.get("const") {
            return c.to_string();
        }
        match s.get("type") {
            Some(Value::String(t)) if t == "array" => {
                format!(
                    "{}[]",
                    s.get("items").map(type_of).unwrap_or_else(|| "any".into())
                )
            }
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("|"),
            _ => "any".into(),
        }
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    props
        .iter()
        .map(|(name, s)| {
            let optional = if required.contains(&name.as_str()) {
                ""
            } else {
                "?"
            };
            format!("{name}{optional}: {}", type_of(s))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the output is not an action; the text is shown to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "your output was empty; answer with one JSON object {{\"thought\", \"tool\", \"args\"}}"
    )]
    Empty,
    #[error(
        "your output was {0} bytes, over the {MAX_ACTION_BYTES}-byte limit for one action; keep arguments short (write large content in several steps)"
    )]
    TooLarge(usize),
    #[error(
        "your output is not valid JSON ({0}); answer with exactly one JSON object {{\"thought\", \"tool\", \"args\"}}"
    )]
    NotJson(String),
    #[error(
        "your output is JSON but {0}; answer with {{\"thought\": string, \"tool\": string, \"args\": object}}"
    )]
    WrongShape(String),
}

/// Parse strictly: the whole output must be exactly the action object.
pub fn parse_strict(text: &str) -> Result<Action, ParseError> {
    precheck(text)?;
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ParseError::WrongShape("not an object".into()));
    };
    let allowed = ["thought", "tool", "args"];
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ParseError::WrongShape(format!(
            "has an unexpected field `{extra}`"
        )));
    }
    shape(map, false)
}

/// Parse strictly, then tolerantly (for backends that do not constrain).
pub fn parse(text: &str) -> Result<Action, ParseError> {
    let strict = match parse_strict(text) {
        Ok(a) => return Ok(a),
        Err(e @ (ParseError::Empty | ParseError::TooLarge(_))) => return Err(e),
        Err(e) => e,
    };
    // Try each top-level-looking object in the text, first that fits wins.
    for candidate in json_extract::objects(text) {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(candidate)
            && let Ok(action) = shape(map, true)
        {
            return Ok(action);
        }
    }
    Err(strict)
}

fn precheck(text: &str) -> Result<(), ParseError> {
    if text.len() > MAX_ACTION_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(())
}

fn shape(mut map: Map<String, Value>, tolerant: bool) -> Result<Action, ParseError> {
    let take =
        |map: &mut Map<String, Value>, names: &[&str]| names.iter().find_map(|n| map.remove(*n));
    let tool_names: &[&str] = if tolerant {
        &["tool", "action", "name", "tool_name"]
    } else {
        &["tool"]
    };
    let args_names: &[&str] = if tolerant {
        &["args", "arguments", "action_input", "input", "parameters"]
    } else {
        &["args"]
    };
    let tool = match take(&mut map, tool_names) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => {
            return Err(ParseError::WrongShape(
                "`tool` is not a tool name string".into(),
            ));
        }
        None => return Err(ParseError::WrongShape("has no `tool` field".into())),
    };
    let thought = match take(&mut map, &["thought", "thoughts", "reasoning"]) {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ParseError::WrongShape("`thought` is not a string".into())),
        None if tolerant => String::new(),
        None => return Err(ParseError::WrongShape("has no `thought` field".into())),
    };
    let args = match take(&mut map, args_names) {
        Some(Value::Object(o)) => Value::Object(o),
        Some(Value::String(s)) if tolerant => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(o)) => Value::Object(o),
            _ => return Err(ParseError::WrongShape("`args` is not an object".into())),
        },
        Some(Value::Null) | None if tolerant => Value::Object(Map::new()),
        Some(_) => return Err(ParseError::WrongShape("`args` is not an object".into())),
        None => return Err(ParseError::WrongShape("has no `args` field".into())),
    };
    Ok(Action {
        thought,
        tool,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolClass;

    fn spec(name: &str, args: Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: "d".into(),
            args_schema: args,
            class: ToolClass::Internal,
            source: "builtin".into(),
        }
    }

    #[test]
    fn a_tool_can_be_left_out_of_a_step_s_schema() {
        let finish = spec(
            "finish",
            json!({"type": "object", "properties": {"answer": {"type": "string"}}}),
        );
        let read = spec("read_file", json!({"type": "object"}));
        let s = action_schema(&[&finish, &read], 100);
        let acting = without_tool(&s, "finish");
        let v = jsonschema::validator_for(&acting).unwrap();
        assert!(!v.is_valid(&json!({"thought": "t", "tool": "finish", "args": {"answer": "x"}})));
        assert!(v.is_valid(&json!({"thought": "t", "tool": "read_file", "args": {}})));
        // Never an empty choice.
        let only = action_schema(&[&finish], 100);
        assert_eq!(without_tool(&only, "finish"), only);
    }

    #[test]
    fn schema_has_one_branch_per_tool_with_const_names() {
        let a = spec(
            "finish",
            json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}),
        );
        let b = spec(
            "read_file",
            json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        );
        let s = action_schema(&[&a, &b], 1000);
        let branches = s["oneOf"].as_array().unwrap();
        assert_eq!(branches.len(), 2);
        assert_eq!(branches[1]["properties"]["tool"]["const"], "read_file");
        assert_eq!(branches[0]["properties"]["args"]["required"][0], "answer");
        // The schema accepts a valid action and rejects a wrong tool.
        let v = jsonschema::validator_for(&s).unwrap();
        assert!(v.is_valid(&json!({"thought": "t", "tool": "finish", "args": {"answer": "x"}})));
        assert!(!v.is_valid(&json!({"thought": "t", "tool": "rm_rf", "args": {}})));
        assert!(!v.is_valid(&json!({"thought": "t", "tool": "finish", "args": {}})));
        // String arguments are capped so one action always fits one step.
        assert_eq!(
            branches[0]["properties"]["args"]["properties"]["answer"]["maxLength"],
            1000
        );
        assert!(!v.is_valid(
            &json!({"thought": "t", "tool": "finish", "args": {"answer": "x".repeat(1001)}})
        ));
        assert_eq!(
            strings_at_cap(&json!({"answer": "x".repeat(1000), "n": 1}), 1000),
            vec!["answer"]
        );
    }

    #[test]
    fn signatures_are_compact_and_mark_optional_arguments() {
        let schema = json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "lines": {"type": "array", "items": {"type": "integer"}},
                "mode": {"enum": ["a", "b"]}
            },
            "required": ["path"]
        });
        assert_eq!(
            signature(&schema),
            r#"path: string, lines?: integer[], mode?: "a"|"b""#
        );
        assert_eq!(signature(&json!({"type": "object"})), "");
    }

    #[test]
    fn strict_parse_accepts_exactly_the_object() {
        let a =
            parse_strict(r#" {"thought":"t","tool":"finish","args":{"answer":"42"}} "#).unwrap();
        assert_eq!(
            (a.tool.as_str(), a.args["answer"].as_str()),
            ("finish", Some("42"))
        );
        assert!(matches!(
            parse_strict(r#"{"thought":"t","tool":"x","args":{},"extra":1}"#),
            Err(ParseError::WrongShape(_))
        ));
        assert!(matches!(
            parse_strict(r#"{"thought":"t","tool":"x","args":"#),
            Err(ParseError::NotJson(_))
        ));
    }

    #[test]
    fn tolerant_parse_reads_fences_prose_and_aliases() {
        let text = "Sure! Here is my action:\n```json\n{\"thought\": \"look {here}\", \"action\": \"read_file\", \"arguments\": \"{\\\"path\\\": \\\"a.txt\\\"}\"}\n```";
        let a = parse(text).unwrap();
        assert_eq!(a.tool, "read_file");
        assert_eq!(a.args, json!({"path": "a.txt"}));
        assert_eq!(a.thought, "look {here}");
    }

    #[test]
    fn truncated_empty_and_huge_outputs_are_errors_not_panics() {
        assert!(matches!(
            parse(r#"{"thought": "I will", "tool": "fin"#),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(parse("   "), Err(ParseError::Empty));
        let huge = format!(
            r#"{{"thought":"t","tool":"write_file","args":{{"content":"{}"}}}}"#,
            "x".repeat(10 * 1024 * 1024)
        );
        assert!(matches!(parse(&huge), Err(ParseError::TooLarge(_))));
        assert!(matches!(parse("[1, 2]"), Err(ParseError::WrongShape(_))));
        assert!(matches!(
            parse(r#"{"thought":"t","tool":7,"args":{}}"#),
            Err(ParseError::WrongShape(_))
        ));
    }
}
