//! The recipe file: its keys (goose's where they fit), parsing with errors
//! that name the key, and the checks a recipe must pass before anything
//! runs (every template parses and uses only declared names, every
//! declared parameter is used, the kinds and types are consistent).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RecipeError;

/// What a recipe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A whole agent run toward the rendered prompt.
    #[default]
    Agent,
    /// Prompt → model → parser steps, without the agent loop or tools.
    Chain,
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    #[default]
    String,
    Number,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// A path; the file's content is what templates see.
    File,
    /// One of `options`.
    Select,
}

impl InputType {
    /// The name in the recipe file.
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Date => "date",
            InputType::File => "file",
            InputType::Select => "select",
        }
    }
}

/// Whether a parameter must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    #[default]
    Required,
    /// Has a default.
    Optional,
    /// Asked at the REPL when not given; an error where nobody can answer.
    UserPrompt,
}

/// One declared parameter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub key: String,
    #[serde(default)]
    pub input_type: InputType,
    #[serde(default)]
    pub requirement: Requirement,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// `settings:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A model reference or a role (`default`, `smart`, `fast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "max_turns")]
    pub max_steps: Option<u32>,
    /// `react` or `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// goose's provider and model keys: named in an error (they name a
    /// goose provider's model, not one agent can open).
    #[serde(default, skip_serializing)]
    pub goose_provider: Option<Value>,
    #[serde(default, skip_serializing)]
    pub goose_model: Option<Value>,
}

/// `response:`: the final answer's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub json_schema: Value,
}

/// One entry of `sub_recipes:`: offered to the run as a tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubRecipe {
    pub name: String,
    pub path: String,
    /// Pinned parameter values: they win over the model's arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// goose's; calls run one at a time here anyway.
    #[serde(default, skip_serializing)]
    pub sequential_when_repeated: Option<bool>,
}

/// A check after the run. Never a host shell command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// Python run in the `code` plugin's sandbox, in the workspace; it
    /// passes when it ends without an exception (an `assert` fails it).
    Python { code: String },
    /// A workspace file, read by the host.
    File {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contains: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_contains: Option<String>,
        /// A regular expression some part of the file must match.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matches: Option<String>,
    },
    /// goose's shell check: refused by [`Recipe::validate`].
    Shell {
        #[serde(default)]
        command: String,
    },
}

/// `retry:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_retries: u32,
    pub checks: Vec<Check>,
    /// Python run in the sandbox before each retry (to clean up). goose's
    /// is a shell command string: refused with a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Value>,
    /// goose's time limits: accepted; each check is bounded by the code
    /// plugin's own limits.
    #[serde(default, skip_serializing)]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing)]
    pub on_failure_timeout_seconds: Option<u64>,
}

/// What a chain step's output is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    /// `text`.
    Kind(String),
    /// `{json_schema: ...}`: constrained to it, parsed and validated.
    Schema { json_schema: Value },
}

impl Default for Output {
    fn default() -> Self {
        Output::Kind("text".into())
    }
}

impl Output {
    /// The schema, for a JSON step.
    pub fn schema(&self) -> Option<&Value> {
        match self {
            Output::Schema { json_schema } => Some(json_schema),
            Output::Kind(_) => None,
        }
    }
}

/// How one answer is picked from several samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The answer most samples agree on (parsed values compared).
    Vote,
    /// A model prompt picks one.
    Judge,
}

/// One step of a `kind: chain` recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainStep {
    pub name: String,
    pub prompt: String,
    #[serde(default)]
    pub output: Output,
    #[serde(default = "one")]
    pub samples: u32,
    /// Without it, a step with several samples returns them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Select>,
}

fn one() -> u32 {
    1
}

/// A recipe, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub settings: Settings,
    /// Which plugins or tools the run may use (names), within what the
    /// config allows; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_recipes: Vec<SubRecipe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ChainStep>,
    /// goose's example prompts for its desktop app: kept, shown by `show`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<String>,
    /// goose's author block: informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Value>,
    /// goose's MCP extensions: only an empty list is accepted.
    #[serde(default, skip_serializing)]
    pub extensions: Option<Vec<Value>>,
}

/// Most samples one chain step may ask for.
pub const MAX_SAMPLES: u32 = 9;

impl Recipe {
    /// Parse YAML (or JSON) text; `origin` names it in errors. goose's
    /// desktop format (the recipe under `recipe:`) is read too.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RecipeError> {
        let bad = |problems: Vec<String>| RecipeError::Invalid {
            origin: origin.to_string(),
            problems,
        };
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| bad(vec![format!("not valid YAML: {e}")]))?;
        if let Some(inner) = value.get("recipe").filter(|r| r.is_mapping()).cloned()
            && value.get("title").is_none()
        {
            value = inner;
        }
        if !value.is_mapping() {
            return Err(bad(vec![
                "a recipe is a mapping with at least `title` and `prompt` (or `instructions`)"
                    .into(),
            ]));
        }
        let recipe: Recipe = serde_yaml::from_value(value).map_err(|e| {
            let mut message = e.to_string();
            if message.contains("unknown field") {
                message.push_str(" (see `agent recipe new NAME` for every key)");
            }
            bad(vec![message])
        })?;
        let problems = recipe.problems();
        if problems.is_empty() {
            Ok(recipe)
        } else {
            Err(bad(problems))
        }
    }

    /// The parameter `key`.
    pub fn parameter(&self, key: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.key == key)
    }

    /// The templates of the recipe, as (where, source).
    pub fn templates(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(t) = &self.instructions {
            out.push(("instructions".to_string(), t.as_str()));
        }
        if let Some(t) = &self.prompt {
            out.push(("prompt".to_string(), t.as_str()));
        }
        for step in &self.steps {
            out.push((format!("steps.{}.prompt", step.name), step.prompt.as_str()));
        }
        out
    }

    /// The code of `retry.on_failure`, when it is `{type: python, code}`.
    pub fn on_failure_code(&self) -> Option<&str> {
        self.retry
            .as_ref()?
            .on_failure
            .as_ref()?
            .get("code")
            .and_then(Value::as_str)
    }

    /// The templated fields besides the prompts: the checks' paths,
    /// texts and code, `retry.on_failure`'s code, and the sub-recipes'
    /// pinned string values.
    pub fn check_templates(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(code) = self.on_failure_code() {
            out.push(("retry.on_failure.code".to_string(), code));
        }
        if let Some(retry) = &self.retry {
            for (i, check) in retry.checks.iter().enumerate() {
                match check {
                    Check::Python { code } => {
                        out.push((format!("retry.checks[{i}].code"), code.as_str()))
                    }
                    Check::File {
                        path,
                        contains,
                        not_contains,
                        matches,
                    } => {
                        out.push((format!("retry.checks[{i}].path"), path.as_str()));
                        for (key, v) in [
                            ("contains", contains),
                            ("not_contains", not_contains),
                            ("matches", matches),
                        ] {
                            if let Some(v) = v {
                                out.push((format!("retry.checks[{i}].{key}"), v.as_str()));
                            }
                        }
                    }
                    Check::Shell { .. } => {}
                }
            }
        }
        for sub in &self.sub_recipes {
            for (key, v) in &sub.values {
                if let Value::String(s) = v {
                    out.push((format!("sub_recipes.{}.values.{key}", sub.name), s.as_str()));
                }
            }
        }
        out
    }

    /// Everything wrong with the recipe, each naming its key.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.title.trim().is_empty() {
            p.push("`title` is empty: give the recipe a short title".into());
        }
        if let Some(ext) = &self.extensions
            && !ext.is_empty()
        {
            p.push("`extensions` (goose's MCP servers, run as host commands) cannot run here: agent's tools are sandboxed WASM plugins; list the plugins the recipe may use under `plugins:` (`agent plugin list` names them)".into());
        }
        if self.settings.goose_provider.is_some() || self.settings.goose_model.is_some() {
            p.push("`settings.goose_provider` / `settings.goose_model` name a goose provider's model: use `settings.model` with a model agent can open (`agent model list`) or a role (default, smart, fast)".into());
        }
        if let Some(t) = self.settings.temperature
            && !(0.0..=2.0).contains(&t)
        {
            p.push(format!(
                "`settings.temperature` is {t}: use a value from 0 to 2"
            ));
        }
        if self.settings.max_steps == Some(0) {
            p.push("`settings.max_steps` is 0: a run needs at least 1 step".into());
        }
        if let Some(a) = &self.settings.agent
            && a != "react"
            && a != "plan"
        {
            p.push(format!("`settings.agent` is `{a}`: use `react` or `plan`"));
        }
        match self.kind {
            Kind::Agent => {
                if self.instructions.is_none() && self.prompt.is_none() {
                    p.push("the recipe has neither `prompt` nor `instructions`: give at least one (the prompt is what the agent is asked to do)".into());
                }
                if !self.steps.is_empty() {
                    p.push("`steps` belongs to `kind: chain` recipes: add `kind: chain`, or remove `steps`".into());
                }
            }
            Kind::Chain => {
                if self.steps.is_empty() {
                    p.push(
                        "a `kind: chain` recipe needs `steps:` (each `{name, prompt, output}`)"
                            .into(),
                    );
                }
                if self.prompt.is_some() {
                    p.push(
                        "`prompt` is for agent recipes: a chain's prompts are its steps' `prompt`s"
                            .into(),
                    );
                }
                for (key, set) in [
                    ("sub_recipes", !self.sub_recipes.is_empty()),
                    ("retry", self.retry.is_some()),
                    ("response", self.response.is_some()),
                    ("plugins", self.plugins.is_some()),
                ] {
                    if set {
                        p.push(format!("`{key}` does not apply to a chain (a chain calls no tools and runs no agent loop): remove it, or make the recipe `kind: agent`"));
                    }
                }
            }
        }
        self.parameter_problems(&mut p);
        self.template_problems(&mut p);
        if let Some(r) = &self.response
            && let Err(e) = jsonschema::validator_for(&r.json_schema)
        {
            p.push(format!(
                "`response.json_schema` is not a valid JSON schema: {e}"
            ));
        }
        let mut names = BTreeSet::new();
        for s in &self.sub_recipes {
            if !crate::tools::valid_tool_name(&s.name) || s.name.contains('.') {
                p.push(format!("sub-recipe name `{}` is not a valid tool name: use a-z, 0-9 and `_`, starting with a letter", s.name));
            }
            if !names.insert(s.name.as_str()) {
                p.push(format!("sub-recipe `{}` is listed twice", s.name));
            }
            if s.path.trim().is_empty() {
                p.push(format!("sub-recipe `{}` has no `path`", s.name));
            }
        }
        if let Some(retry) = &self.retry {
            if retry.checks.is_empty() {
                p.push("`retry.checks` is empty: give at least one check (`{type: file, path, contains}` or `{type: python, code}`)".into());
            }
            for (i, check) in retry.checks.iter().enumerate() {
                match check {
                    Check::Shell { .. } => p.push(format!("`retry.checks[{i}]` is a shell check: checks never run on the host shell; use `{{type: python, code: ...}}` (run in the sandbox, with the workspace) or `{{type: file, path, contains | not_contains | matches}}`")),
                    Check::File { contains: None, not_contains: None, matches: None, .. } => {}
                    Check::File { matches: Some(re), .. } => {
                        if let Err(e) = regex_lite(re) {
                            p.push(format!("`retry.checks[{i}].matches` is not a valid pattern: {e}"));
                        }
                    }
                    _ => {}
                }
            }
            match &retry.on_failure {
                None => {}
                Some(Value::String(_)) => p.push("`retry.on_failure` is a string (goose runs it as a shell command): agent never runs the host shell; give `{type: python, code: ...}` to clean up in the sandbox".into()),
                Some(v) if !serde_json::from_value::<Check>(v.clone()).is_ok_and(|c| matches!(c, Check::Python { .. })) => {
                    p.push("`retry.on_failure` must be `{type: python, code: ...}`".into());
                }
                Some(_) => {}
            }
        }
        let mut step_names = BTreeSet::new();
        for step in &self.steps {
            if !is_identifier(&step.name) {
                p.push(format!(
                    "chain step name `{}` must be a name templates can use (letters, digits, `_`)",
                    step.name
                ));
            }
            if !step_names.insert(step.name.as_str()) {
                p.push(format!("chain step `{}` is named twice", step.name));
            }
            if self.parameter(&step.name).is_some() {
                p.push(format!("chain step `{}` has a parameter's name", step.name));
            }
            if let Output::Kind(k) = &step.output
                && k != "text"
            {
                p.push(format!(
                    "`steps.{}.output` is `{k}`: use `text` or `{{json_schema: ...}}`",
                    step.name
                ));
            }
            if let Some(schema) = step.output.schema()
                && let Err(e) = jsonschema::validator_for(schema)
            {
                p.push(format!(
                    "`steps.{}.output.json_schema` is not a valid JSON schema: {e}",
                    step.name
                ));
            }
            if step.samples == 0 || step.samples > MAX_SAMPLES {
                p.push(format!(
                    "`steps.{}.samples` is {}: use 1 to {MAX_SAMPLES}",
                    step.name, step.samples
                ));
            }
            if step.select.is_some() && step.samples < 2 {
                p.push(format!(
                    "`steps.{}.select` needs `samples` of 2 or more",
                    step.name
                ));
            }
        }
        p
    }

    fn parameter_problems(&self, p: &mut Vec<String>) {
        let mut keys = BTreeSet::new();
        for param in &self.parameters {
            let k = &param.key;
            if !is_identifier(k) {
                p.push(format!(
                    "parameter `{k}`: a key is letters, digits and `_`, not starting with a digit"
                ));
            }
            if !keys.insert(k.as_str()) {
                p.push(format!("parameter `{k}` is declared twice"));
            }
            if param.requirement == Requirement::Optional && param.default.is_none() {
                p.push(format!("parameter `{k}` is optional but has no `default`: give one, or make it `required`"));
            }
            if param.input_type == InputType::File && param.default.is_some() {
                p.push(format!("parameter `{k}` is a file and cannot have a `default` (a recipe must not read a file nobody named)"));
            }
            if param.input_type == InputType::Select && param.options.is_empty() {
                p.push(format!("parameter `{k}` is a select and needs `options`"));
            }
            if param.input_type != InputType::Select && !param.options.is_empty() {
                p.push(format!(
                    "parameter `{k}` has `options` but is not `input_type: select`"
                ));
            }
            if let Some(default) = &param.default
                && param.input_type != InputType::File
                && let Err(e) = super::values::coerce(param, default)
            {
                p.push(format!("the default of {e}"));
            }
        }
    }

    fn template_problems(&self, p: &mut Vec<String>) {
        let declared: BTreeSet<&str> = self.parameters.iter().map(|q| q.key.as_str()).collect();
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut earlier_steps: BTreeSet<&str> = BTreeSet::new();
        let env = super::values::environment();
        let mut check = |place: &str, source: &str, also: &BTreeSet<&str>, p: &mut Vec<String>| {
            match env.template_from_str(source) {
                Err(e) => p.push(format!("`{place}` is not a valid template: {e}")),
                Ok(t) => {
                    for name in t.undeclared_variables(false) {
                        if !declared.contains(name.as_str()) && !also.contains(name.as_str()) {
                            let known: Vec<&str> =
                                declared.iter().chain(also.iter()).copied().collect();
                            p.push(format!(
                                "`{place}` uses `{name}`, which is not a declared parameter{}: declare it under `parameters:` or fix the name",
                                if known.is_empty() { String::new() } else { format!(" (known: {})", known.join(", ")) }
                            ));
                        }
                        used.insert(name);
                    }
                }
            }
        };
        let none = BTreeSet::new();
        if let Some(t) = &self.instructions {
            check("instructions", t, &none, p);
        }
        if let Some(t) = &self.prompt {
            check("prompt", t, &none, p);
        }
        for (place, source) in self.check_templates() {
            check(&place, source, &none, p);
        }
        for step in &self.steps {
            check(
                &format!("steps.{}.prompt", step.name),
                &step.prompt,
                &earlier_steps,
                p,
            );
            earlier_steps.insert(step.name.as_str());
        }
        for param in &self.parameters {
            if !used.contains(&param.key) {
                p.push(format!(
                    "parameter `{}` is declared but no template uses it: use it (`{{{{ {} }}}}`) or remove it",
                    param.key, param.key
                ));
            }
        }
    }
}

/// Letters, digits and `_`, not starting with a digit.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compile `pattern` the way a file check will.
pub(crate) fn regex_lite(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| e.to_string())
}
