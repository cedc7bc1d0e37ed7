//! Prompt templates: YAML files in `prompts/`, embedded in the binary, rendered
//! with minijinja. A file of the same name in the user's prompts directory
//! wins, so prompts can be tuned without rebuilding.
//!
//! A template follows CRISPE: `capacity` (role), `insight` (context),
//! `statement` (task), `personality` (style), `experiment` (how to try and
//! recover), plus `output_format`, optional few-shot `examples` and
//! `tool_hints` (when to use which tool, shown for the tools a run has); its
//! `messages` map holds the Jinja templates that turn those parts and the
//! caller's values into chat messages. Unknown fields are errors, and a
//! missing message names the file and the message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Built-in templates: (name, YAML).
const EMBEDDED: &[(&str, &str)] = &[
    ("react", include_str!("../prompts/react.yaml")),
    ("summarise", include_str!("../prompts/summarise.yaml")),
    ("reflect", include_str!("../prompts/reflect.yaml")),
    ("plan", include_str!("../prompts/plan.yaml")),
    ("replan", include_str!("../prompts/replan.yaml")),
];

/// One parsed template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    pub description: String,
    #[serde(default)]
    pub capacity: String,
    #[serde(default)]
    pub insight: String,
    #[serde(default)]
    pub statement: String,
    #[serde(default)]
    pub personality: String,
    #[serde(default)]
    pub experiment: String,
    #[serde(default)]
    pub output_format: String,
    #[serde(default)]
    pub examples: Vec<Example>,
    /// Tool name → when to use that tool; a template shows the hints of
    /// the tools the run has (`tool_names`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_hints: BTreeMap<String, String>,
    /// Message name → Jinja template.
    pub messages: BTreeMap<String, String>,
}

/// A worked example, shown when the tool it `requires` is available: the
/// goal, then either one `action` (and its `observation`) or several
/// `steps`, then the `final` action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub requires: String,
    pub goal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<String>,
    #[serde(default)]
    pub steps: Vec<ExampleStep>,
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_action: Option<String>,
}

/// One action of a worked example and what it returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleStep {
    pub action: String,
    pub observation: String,
}

/// Where a template came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    Embedded,
    User(PathBuf),
}

/// A template problem.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("no prompt named `{name}`; available: {available}")]
    Unknown { name: String, available: String },
    #[error("cannot read prompt file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid prompt file {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("prompt `{name}` ({origin}) has no `messages.{message}` template")]
    MissingMessage {
        name: String,
        origin: String,
        message: String,
    },
    #[error("cannot render `messages.{message}` of prompt `{name}` ({origin}): {detail}")]
    Render {
        name: String,
        origin: String,
        message: String,
        detail: String,
    },
}

/// A loaded template with its origin.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    pub source: PromptSource,
    pub template: PromptTemplate,
    /// The YAML text it was parsed from.
    pub text: String,
}

impl Prompt {
    fn origin(&self) -> String {
        match &self.source {
            PromptSource::Embedded => "built-in".into(),
            PromptSource::User(p) => p.display().to_string(),
        }
    }

    /// Render `messages.<message>` with the template's CRISPE parts and `ctx`.
    pub fn render(&self, message: &str, ctx: &serde_json::Value) -> Result<String, PromptError> {
        let Some(source) = self.template.messages.get(message) else {
            return Err(PromptError::MissingMessage {
                name: self.name.clone(),
                origin: self.origin(),
                message: message.into(),
            });
        };
        let render_err = |detail: String| PromptError::Render {
            name: self.name.clone(),
            origin: self.origin(),
            message: message.into(),
            detail,
        };
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        let mut values =
            serde_json::to_value(&self.template).map_err(|e| render_err(e.to_string()))?;
        if let (Some(base), Some(extra)) = (values.as_object_mut(), ctx.as_object()) {
            base.remove("messages");
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        env.render_str(source, values)
            .map(|s| s.trim().to_string())
            .map_err(|e| {
                let mut detail = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    detail.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                render_err(detail)
            })
    }
}

/// Built-in templates plus the user's overrides.
#[derive(Debug, Clone)]
pub struct PromptLibrary {
    user_dir: PathBuf,
}

impl PromptLibrary {
    /// Templates with overrides from `user_dir`.
    pub fn new(user_dir: &Path) -> Self {
        Self {
            user_dir: user_dir.to_path_buf(),
        }
    }

    /// Load `name`, the user's file winning over the built-in one.
    pub fn load(&self, name: &str) -> Result<Prompt, PromptError> {
        let user_path = self.user_dir.join(format!("{name}.yaml"));
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid_name && user_path.is_file() {
            let text = std::fs::read_to_string(&user_path).map_err(|source| PromptError::Read {
                path: user_path.clone(),
                source,
            })?;
            let template = serde_yaml::from_str(&text).map_err(|e| PromptError::Parse {
                origin: user_path.display().to_string(),
                message: e.to_string(),
            })?;
            return Ok(Prompt {
                name: name.into(),
                source: PromptSource::User(user_path),
                template,
                text,
            });
        }
        let Some((_, text)) = EMBEDDED.iter().find(|(n, _)| *n == name) else {
            return Err(PromptError::Unknown {
                name: name.into(),
                available: self.names().join(", "),
            });
        };
        let template = serde_yaml::from_str(text).map_err(|e| PromptError::Parse {
            origin: format!("built-in {name}"),
            message: e.to_string(),
        })?;
        Ok(Prompt {
            name: name.into(),
            source: PromptSource::Embedded,
            template,
            text: text.to_string(),
        })
    }

    /// Names of every available template (built-in and user), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
        if let Ok(entries) = std::fs::read_dir(&self.user_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "yaml")
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                {
                    names.push(stem.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_react_renders_tools_goal_and_observation() {
        let dir = tempfile::tempdir().unwrap();
        let lib = PromptLibrary::new(dir.path());
        let p = lib.load("react").unwrap();
        assert_eq!(p.source, PromptSource::Embedded);
        let tools = json!([{"name": "finish", "description": "End the run.", "args_schema": {"type": "object"}, "signature": "answer: string"}]);
        let system = p
            .render("system", &json!({"tools": tools, "tool_names": ["finish"]}))
            .unwrap();
        assert!(
            system.contains("- finish(answer: string): End the run."),
            "{system}"
        );
        assert!(system.contains("\"thought\""));
        // The default prompt carries no examples (see prompts/react.yaml).
        assert!(!system.contains("Examples:"), "{system}");
        let goal = p
            .render(
                "goal",
                &json!({"goal": "count files", "omitted": 0, "summary": null}),
            )
            .unwrap();
        assert_eq!(goal, "Goal: count files");
        let obs = p
            .render(
                "observation",
                &json!({"tool": "t", "observation": "o", "is_error": true, "note": null}),
            )
            .unwrap();
        assert!(obs.starts_with("Observation from t (error):"), "{obs}");
    }

    #[test]
    fn user_file_wins_and_bad_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("react.yaml"),
            "description: mine\nmessages:\n  system: hello {{ who }}\n",
        )
        .unwrap();
        let lib = PromptLibrary::new(dir.path());
        let p = lib.load("react").unwrap();
        assert!(matches!(p.source, PromptSource::User(_)));
        assert_eq!(
            p.render("system", &json!({"who": "you"})).unwrap(),
            "hello you"
        );
        let missing = p.render("goal", &json!({})).unwrap_err().to_string();
        assert!(
            missing.contains("messages.goal") && missing.contains("react.yaml"),
            "{missing}"
        );
        let undefined = p.render("system", &json!({})).unwrap_err().to_string();
        assert!(
            undefined.contains("who") || undefined.contains("undefined"),
            "{undefined}"
        );

        std::fs::write(
            dir.path().join("react.yaml"),
            "description: x\nmesages: {}\n",
        )
        .unwrap();
        let e = lib.load("react").unwrap_err().to_string();
        assert!(e.contains("react.yaml") && e.contains("mesages"), "{e}");
    }

    #[test]
    fn examples_show_only_when_their_tool_is_available() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EMBEDDED[0].1;
        let start = embedded.find("\nexamples:").unwrap();
        let end = embedded.find("\nmessages:").unwrap();
        let text = format!(
            "{}\nexamples:\n  - {{requires: finish, goal: G1, action: A1}}\n  - {{requires: write_file, goal: G2, action: A2}}\n  - requires: finish\n    goal: G3\n    steps: [{{action: S1, observation: O1}}, {{action: S2, observation: O2}}]\n    final: F3\n{}",
            &embedded[..start],
            &embedded[end..]
        );
        std::fs::write(dir.path().join("react.yaml"), text).unwrap();
        let p = PromptLibrary::new(dir.path()).load("react").unwrap();
        let tools =
            json!([{"name": "finish", "description": "d", "args_schema": {}, "signature": ""}]);
        let system = p
            .render("system", &json!({"tools": tools, "tool_names": ["finish"]}))
            .unwrap();
        assert!(system.contains("Goal: G1\nA1"), "{system}");
        assert!(!system.contains("G2"), "{system}");
        assert!(system.contains("Goal: G3\nS1\nO1\nS2\nO2\nF3"), "{system}");
        std::fs::write(
            dir.path().join("react.yaml"),
            format!(
                "{}\nexamples:\n  - {{requires: finish, goal: G, acton: typo}}\n{}",
                &embedded[..start],
                &embedded[end..]
            ),
        )
        .unwrap();
        let e = PromptLibrary::new(dir.path())
            .load("react")
            .unwrap_err()
            .to_string();
        assert!(e.contains("acton"), "{e}");
    }

    #[test]
    fn unknown_names_list_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let e = PromptLibrary::new(dir.path())
            .load("nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("react"), "{e}");
    }
}
