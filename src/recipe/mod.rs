//! Recipes: reusable YAML files that say what to run and how, with typed
//! parameters. An agent recipe is a whole agent run toward its rendered
//! prompt (instructions, settings, a subset of the plugins, a response
//! schema, sub-recipes offered as tools, checks with retries); a chain
//! recipe is prompt → model → parser steps without the agent loop.
//!
//! This module owns the file: its format and checks ([`format`]), the
//! values of its parameters and rendering ([`values`]), and where recipes
//! are found ([`library`]). Running one is `agent::recipe`'s.

pub mod format;
pub mod library;
pub mod values;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use format::{Check, Kind, Recipe};
pub use library::{Library, Listed, Loaded, Source};
pub use values::{Provide, Values};

/// What is wrong with a recipe or its values.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read the recipe {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} is not a valid recipe:\n  - {}", problems.join("\n  - "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
    #[error("no recipe `{what}` ({known})")]
    NotFound { what: String, known: String },
    #[error("sub-recipe `{name}`: {detail}")]
    Sub { name: String, detail: String },
    #[error("{}", .0.join("; "))]
    Values(Vec<String>),
    #[error("cannot render `{place}`: {detail}")]
    Render { place: String, detail: String },
}

/// What a run keeps of the recipe it runs (in its settings, so a resume
/// builds the same run and `agent runs list` can say which recipe it was).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecipeRun {
    /// The recipe's name.
    pub name: String,
    /// Its file, or `builtin:NAME`.
    pub location: String,
    /// The parameters as given (a file parameter's path).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The rendered instructions, shown to the model with the tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The final answer's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// The plugins and tools the run may use (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<String>>,
    /// How deep in sub-recipe calls (0: run by a person).
    #[serde(default)]
    pub depth: u32,
    /// Which try this run is (1 first; a retry after failed checks is 2...).
    #[serde(default = "first")]
    pub attempt: u32,
}

fn first() -> u32 {
    1
}

impl RecipeRun {
    /// `name key=value ...`, for listings.
    pub fn label(&self) -> String {
        let mut out = self.name.clone();
        for (k, v) in &self.params {
            out.push_str(&format!(" {k}={}", crate::sanitize::one_line(v, 40)));
        }
        out
    }
}

/// An agent recipe's text for one use: what the agent is asked and the
/// instructions it works under.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The goal of the run (the prompt; the instructions when there is no
    /// prompt).
    pub goal: String,
    /// The instructions, when there is also a prompt.
    pub instructions: Option<String>,
}

impl Recipe {
    /// The goal and instructions of an agent recipe with `values`.
    pub fn render(&self, values: &Values) -> Result<Rendered, RecipeError> {
        let ctx = serde_json::to_value(&values.context).unwrap_or_default();
        let instructions = match &self.instructions {
            Some(t) => Some(values::render("instructions", t, &ctx)?),
            None => None,
        };
        match &self.prompt {
            Some(p) => Ok(Rendered {
                goal: values::render("prompt", p, &ctx)?,
                instructions: instructions.filter(|i| !i.is_empty()),
            }),
            None => Ok(Rendered {
                goal: instructions.unwrap_or_default(),
                instructions: None,
            }),
        }
    }

    /// The retry checks, rendered with `values`.
    pub fn rendered_checks(&self, values: &Values) -> Result<Vec<Check>, RecipeError> {
        let ctx = serde_json::to_value(&values.context).unwrap_or_default();
        let Some(retry) = &self.retry else {
            return Ok(Vec::new());
        };
        let r = |place: String, s: &str| values::render_exact(&place, s, &ctx);
        let opt = |place: String, s: &Option<String>| -> Result<Option<String>, RecipeError> {
            s.as_deref().map(|s| r(place, s)).transpose()
        };
        retry
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(match c {
                    Check::Python { code } => Check::Python {
                        code: r(format!("retry.checks[{i}].code"), code)?,
                    },
                    Check::File {
                        path,
                        contains,
                        not_contains,
                        matches,
                    } => Check::File {
                        path: r(format!("retry.checks[{i}].path"), path)?,
                        contains: opt(format!("retry.checks[{i}].contains"), contains)?,
                        not_contains: opt(format!("retry.checks[{i}].not_contains"), not_contains)?,
                        matches: opt(format!("retry.checks[{i}].matches"), matches)?,
                    },
                    Check::Shell { command } => Check::Shell {
                        command: command.clone(),
                    },
                })
            })
            .collect()
    }

    /// The code of `retry.on_failure`, rendered with `values` (the format
    /// checks that it is `{type: python, code}`).
    pub fn rendered_on_failure(&self, values: &Values) -> Result<Option<String>, RecipeError> {
        let ctx = serde_json::to_value(&values.context).unwrap_or_default();
        match self.on_failure_code() {
            Some(code) => Ok(Some(values::render_exact(
                "retry.on_failure.code",
                code,
                &ctx,
            )?)),
            None => Ok(None),
        }
    }

    /// The pinned values of sub-recipe `sub`, string values rendered with
    /// the parent's `values`.
    pub fn pinned(
        &self,
        sub: &format::SubRecipe,
        values: &Values,
    ) -> Result<BTreeMap<String, Value>, RecipeError> {
        let ctx = serde_json::to_value(&values.context).unwrap_or_default();
        sub.values
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => Value::String(values::render_exact(
                        &format!("sub_recipes.{}.values.{k}", sub.name),
                        s,
                        &ctx,
                    )?),
                    other => other.clone(),
                };
                Ok((k.clone(), v))
            })
            .collect()
    }

    /// The JSON schema of the arguments a tool call of this recipe takes:
    /// its parameters, the `pinned` ones optional and said to be replaced
    /// (the author's pins win over the model's arguments).
    pub fn args_schema(&self, pinned: &BTreeMap<String, Value>) -> Value {
        use format::{InputType, Requirement};
        let mut props = serde_json::Map::new();
        let mut required = Vec::new();
        for p in &self.parameters {
            let mut schema = match p.input_type {
                InputType::Number => serde_json::json!({"type": "number"}),
                InputType::Boolean => serde_json::json!({"type": "boolean"}),
                InputType::Select => serde_json::json!({"type": "string", "enum": p.options}),
                InputType::Date => {
                    serde_json::json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})
                }
                InputType::File | InputType::String => serde_json::json!({"type": "string"}),
            };
            let mut description = p.description.clone();
            if p.input_type == InputType::File {
                description = format!("{description} (a file in the workspace)")
                    .trim()
                    .to_string();
            }
            if let Some(pin) = pinned.get(&p.key) {
                description =
                    format!("pinned by the recipe to {pin}; a value given here is replaced");
            }
            if !description.is_empty() {
                schema["description"] = Value::String(description);
            }
            if p.default.is_none()
                && p.requirement != Requirement::Optional
                && !pinned.contains_key(&p.key)
            {
                required.push(p.key.clone());
            }
            props.insert(p.key.clone(), schema);
        }
        serde_json::json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }
}

#[cfg(test)]
mod tests;
