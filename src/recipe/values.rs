//! Parameter values: binding what was given (on the command line, by the
//! model's tool call, pinned by a parent recipe) to the declared
//! parameters, each turned into its type, and rendering the templates with
//! them (minijinja, strict about undefined names, per field after the YAML
//! was parsed).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::RecipeError;
use super::format::{InputType, Parameter, Recipe, Requirement};

/// Where values the caller did not give come from.
pub trait Provide {
    /// The content of the file a `file` parameter names.
    fn read_file(&self, path: &str) -> Result<String, String>;
    /// Ask a person for a `user_prompt` parameter; `None` when nobody can
    /// answer here.
    fn ask(&self, param: &Parameter) -> Option<String>;
}

/// The bound values of one use of a recipe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    /// What templates see, typed (a file parameter's content).
    pub context: BTreeMap<String, Value>,
    /// As given, for the journal and listings (a file parameter's path).
    pub shown: BTreeMap<String, String>,
}

/// The template environment every recipe field renders in.
pub(crate) fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env
}

/// `value` as `param`'s type; the error names the parameter and says
/// what is expected.
pub fn coerce(param: &Parameter, value: &Value) -> Result<Value, String> {
    let k = &param.key;
    let text = match value {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let wrong = |what: &str| {
        format!(
            "parameter `{k}` ({}): {} is not {what}",
            param.input_type.as_str(),
            match value {
                Value::String(s) => format!("`{s}`"),
                other => other.to_string(),
            }
        )
    };
    let Some(text) = text else {
        return Err(wrong("a single value"));
    };
    match param.input_type {
        InputType::String | InputType::File => match value {
            Value::String(s) => Ok(Value::String(s.clone())),
            _ => Ok(Value::String(text)),
        },
        InputType::Number => {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(json!(i));
            }
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| json!(f))
                .ok_or_else(|| wrong("a number"))
        }
        InputType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(json!(true)),
            "false" | "no" | "0" => Ok(json!(false)),
            _ => Err(wrong("true or false")),
        },
        InputType::Date => chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(|d| json!(d.format("%Y-%m-%d").to_string()))
            .map_err(|_| wrong("a date (YYYY-MM-DD)")),
        InputType::Select => {
            if param.options.contains(&text) {
                Ok(json!(text))
            } else {
                Err(wrong(&format!("one of: {}", param.options.join(", "))))
            }
        }
    }
}

impl Recipe {
    /// Bind `given` values, with `pinned` ones winning (a parent recipe's
    /// `values`), defaults for the rest and `provide` for files and
    /// questions. An unknown, missing or ill-typed value is an error that
    /// names the parameter.
    pub fn bind(
        &self,
        given: &BTreeMap<String, Value>,
        pinned: &BTreeMap<String, Value>,
        provide: &dyn Provide,
    ) -> Result<Values, RecipeError> {
        let mut problems = Vec::new();
        let keys: Vec<&str> = self.parameters.iter().map(|p| p.key.as_str()).collect();
        for key in given.keys().chain(pinned.keys()) {
            if self.parameter(key).is_none() {
                problems.push(if keys.is_empty() {
                    format!("unknown parameter `{key}`: this recipe takes no parameters")
                } else {
                    format!(
                        "unknown parameter `{key}`: this recipe takes {}",
                        keys.join(", ")
                    )
                });
            }
        }
        let mut values = Values::default();
        for param in &self.parameters {
            let k = &param.key;
            let raw = match pinned.get(k).or_else(|| given.get(k)) {
                Some(v) => Some(v.clone()),
                None => match (&param.default, param.requirement) {
                    (Some(d), _) => Some(d.clone()),
                    (None, Requirement::UserPrompt) => match provide.ask(param) {
                        Some(answer) => Some(Value::String(answer)),
                        None => {
                            problems.push(format!(
                                "parameter `{k}` is asked of the user, and nobody can answer here: pass it with --param {k}=VALUE"
                            ));
                            None
                        }
                    },
                    (None, _) => {
                        problems.push(format!(
                            "missing required parameter `{k}`{}: pass --param {k}=VALUE",
                            if param.description.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", param.description)
                            }
                        ));
                        None
                    }
                },
            };
            let Some(raw) = raw else { continue };
            let typed = match coerce(param, &raw) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let shown = match &typed {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let seen = if param.input_type == InputType::File {
                match provide.read_file(&shown) {
                    Ok(text) => Value::String(text),
                    Err(e) => {
                        problems.push(format!("parameter `{k}` (file): {e}"));
                        continue;
                    }
                }
            } else {
                typed
            };
            values.context.insert(k.clone(), seen);
            values.shown.insert(k.clone(), shown);
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(RecipeError::Values(problems))
        }
    }
}

/// Render the prose `source` (the field `place`) with `context`, trimmed.
pub fn render(place: &str, source: &str, context: &Value) -> Result<String, RecipeError> {
    render_exact(place, source, context).map(|s| s.trim().to_string())
}

/// [`render`] without trimming: a check's `contains: " x"`, a pinned value
/// and code keep their spaces.
pub fn render_exact(place: &str, source: &str, context: &Value) -> Result<String, RecipeError> {
    environment()
        .render_str(source, context)
        .map_err(|e| RecipeError::Render {
            place: place.to_string(),
            detail: crate::errors::chain(&e),
        })
}

/// `key=value` pairs from the command line or the REPL, as given values.
pub fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, Value>, RecipeError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(RecipeError::Values(vec![format!(
                "`{pair}` is not key=value: write --param KEY=VALUE"
            )]));
        };
        if out
            .insert(k.trim().to_string(), Value::String(v.to_string()))
            .is_some()
        {
            return Err(RecipeError::Values(vec![format!(
                "parameter `{}` is given twice",
                k.trim()
            )]));
        }
    }
    Ok(out)
}
