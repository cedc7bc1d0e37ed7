//! Tools: what the agent can do. One trait for every tool (built-in host tools
//! and WASM plugin tools alike) and the registry the agent loop dispatches
//! through and builds its action schema from.
//!
//! Errors come in two kinds, as in codex: a [`ToolError::Observation`] is told
//! to the model (bad arguments, file not found) and the run goes on; a
//! [`ToolError::Fatal`] means the machinery itself is broken (sandbox cannot
//! start, store unwritable) and the run stops.

pub mod builtin;
pub mod memory;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What a tool may touch; approvals and reporting key off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolClass {
    /// Touches nothing outside the agent (finish, recall).
    Internal,
    /// Reads the workspace.
    Read,
    /// Writes the workspace.
    Write,
    /// Runs code.
    Execute,
    /// Talks to the network.
    Network,
    /// Talks to the human.
    Human,
}

/// The public description of a tool: what the model sees and the action
/// schema is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// One sentence on what it does.
    pub description: String,
    /// JSON Schema of its arguments object.
    pub args_schema: serde_json::Value,
    /// What it may touch.
    pub class: ToolClass,
    /// Where it comes from: `builtin` or the plugin's name.
    pub source: String,
}

/// Per-call context handed to a tool.
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    /// Cancelled when the user interrupts the step.
    pub cancel: CancellationToken,
    /// The run making the call (None outside a run, e.g. in benchmarks).
    pub run_id: Option<String>,
    /// Its step.
    pub step: Option<u32>,
    /// The run's taint: what untrusted content it has read. Tools that
    /// hand the model such content without a class that says so (a kb
    /// passage, a memory written after a web read) mark it here.
    pub taint: Taint,
}

/// What untrusted content a run has read (a web page, a workspace file, a
/// kb passage, code output, a memory stored after such a read), shared by
/// the loop and the tools of one run.
///
/// It is sticky (security case 39): once marked it stays marked for the
/// rest of the run, across internal steps, refusals, invalid outputs, plan
/// steps and resumes (the loop keeps it in the run's journal record), until
/// a person approves a risky action. Whatever the model writes while it is
/// marked may carry that content's words, so approvals ask before writes,
/// code and network calls, and memories stored meanwhile say where their
/// words may come from.
#[derive(Debug, Clone, Default)]
pub struct Taint(Arc<Mutex<Option<String>>>);

impl Taint {
    /// A taint cell starting at `source` (None: clean).
    pub fn new(source: Option<String>) -> Self {
        Self(Arc::new(Mutex::new(source)))
    }

    /// The run read untrusted content from `source` (a tool and its URL,
    /// path or query). The latest source is the one named.
    pub fn mark(&self, source: impl Into<String>) {
        *self.lock() = Some(source.into());
    }

    /// What untrusted content the run has read, if any.
    pub fn source(&self) -> Option<String> {
        self.lock().clone()
    }

    /// A person approved a risky action: they saw it and took the risk.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A panic while holding it cannot leave the Option half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A tool failure.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Told to the model as the observation; the run goes on.
    #[error("{0}")]
    Observation(String),
    /// The tool machinery is broken; the run stops.
    #[error("{0}")]
    Fatal(String),
    /// The call was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
}

/// Something the agent can do.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Its description, arguments schema and class.
    fn spec(&self) -> &ToolSpec;
    /// Run it with arguments already checked against `spec().args_schema`.
    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError>;
}

/// Error building a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Two tools with one name.
    #[error(
        "tool `{name}` is offered by both `{first}` and `{second}`; tool names must be unique (remove or rename one plugin)"
    )]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    /// A name the action schema cannot carry.
    #[error(
        "tool name `{0}` is invalid: use 1-64 characters from a-z, 0-9 and `_`, starting with a letter (and at most one `.` between a prefix and a name)"
    )]
    BadName(String),
    /// An arguments schema that is not an object schema or does not compile.
    #[error("tool `{name}` has an invalid arguments schema: {reason}")]
    BadSchema { name: String, reason: String },
}

struct Entry {
    tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
}

/// The live set of tools, in registration order.
#[derive(Default)]
pub struct ToolRegistry {
    entries: BTreeMap<String, Entry>,
    order: Vec<String>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.order)
            .finish()
    }
}

/// True for names the action schema and the model can carry safely: a-z,
/// 0-9 and `_`, starting with a letter, with one `.` between a prefix and
/// a name allowed (`SERVER.TOOL` for an MCP server's tools).
pub fn valid_tool_name(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    name.len() <= 64
        && match name.split_once('.') {
            Some((prefix, rest)) => part(prefix) && part(rest),
            None => part(name),
        }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a tool; refuses duplicates, bad names and bad schemas.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let spec = tool.spec().clone();
        if !valid_tool_name(&spec.name) {
            return Err(RegistryError::BadName(spec.name));
        }
        if let Some(existing) = self.entries.get(&spec.name) {
            return Err(RegistryError::Duplicate {
                name: spec.name.clone(),
                first: existing.tool.spec().source.clone(),
                second: spec.source,
            });
        }
        if spec.args_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(RegistryError::BadSchema {
                name: spec.name,
                reason: "the top level must be `{\"type\": \"object\", ...}`".into(),
            });
        }
        let validator =
            jsonschema::validator_for(&spec.args_schema).map_err(|e| RegistryError::BadSchema {
                name: spec.name.clone(),
                reason: e.to_string(),
            })?;
        self.order.push(spec.name.clone());
        self.entries.insert(spec.name, Entry { tool, validator });
        Ok(())
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.entries.get(name).map(|e| &e.tool)
    }

    /// Specs of every tool, in registration order.
    pub fn specs(&self) -> Vec<&ToolSpec> {
        self.order
            .iter()
            .filter_map(|n| self.entries.get(n))
            .map(|e| e.tool.spec())
            .collect()
    }

    /// Every tool, in registration order.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.order
            .iter()
            .filter_map(|n| self.entries.get(n))
            .map(|e| e.tool.clone())
            .collect()
    }

    /// Names of every tool, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.order.iter().map(String::as_str).collect()
    }

    /// Check `args` against the tool's schema; the message says what to fix.
    pub fn check_args(&self, name: &str, args: &serde_json::Value) -> Result<(), String> {
        let Some(entry) = self.entries.get(name) else {
            return Err(format!(
                "unknown tool `{name}`; available tools: {}",
                self.names().join(", ")
            ));
        };
        let problems: Vec<String> = entry
            .validator
            .iter_errors(args)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("at `{path}`: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "invalid arguments for `{name}`: {}. Expected arguments schema: {}",
                problems.join("; "),
                entry.tool.spec().args_schema
            ))
        }
    }
}
