//! A recipe offered to a run as a tool: a recipe's `sub_recipes` entry, or
//! (with `recipe_tools` on) every recipe on the search path as
//! `recipe_NAME`. The tool's arguments are the recipe's parameters less
//! the pinned ones; a call is a child run (`PARENT.rSTEP`) with a share of
//! the caller's budgets, one level deeper, that starts from the caller's
//! taint and hands its own back, its actions asked of the same approver.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use serde_json::Value;

use super::{Call, MAX_DEPTH, RecipeKit};
use crate::memory::RunStatus;
use crate::memory::journal::new_run_id;
use crate::recipe::Loaded;
use crate::recipe::format::Parameter;
use crate::tools::{Tool, ToolClass, ToolContext, ToolError, ToolSpec};

/// Where a recipe tool finds the kit that runs it: the recipe run that
/// offers it, or a session's slot, filled once the session's parts exist
/// (the tools are gathered before the models are open).
#[derive(Clone)]
pub enum Target {
    Kit(Weak<RecipeKit>),
    Slot(Slot),
}

/// A session's kit, set by the session each time it builds parts.
pub type Slot = Arc<Mutex<Option<Arc<RecipeKit>>>>;

/// One recipe as a tool.
pub struct RecipeTool {
    spec: ToolSpec,
    target: Target,
    loaded: Loaded,
    pinned: BTreeMap<String, Value>,
    /// The depth of the run that offers it.
    depth: u32,
    /// The caller is not a run with a budget to share (an MCP client):
    /// each call has the session's budgets.
    own_budget: bool,
}

impl RecipeTool {
    /// `loaded` offered under `name` (`recipe_` is not added), with
    /// `pinned` values, to a run at `depth`.
    pub fn new(
        target: Target,
        loaded: Loaded,
        name: String,
        description: Option<String>,
        pinned: BTreeMap<String, Value>,
        depth: u32,
    ) -> Self {
        let recipe = &loaded.recipe;
        let what = description
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| {
                if recipe.description.trim().is_empty() {
                    recipe.title.clone()
                } else {
                    recipe.description.clone()
                }
            });
        let spec = ToolSpec {
            name,
            description: format!(
                "Run the recipe `{}`: {} It runs on its own and returns its answer.",
                loaded.name,
                what.trim()
            ),
            args_schema: recipe.args_schema(&pinned),
            // The call itself touches nothing; what the recipe's run does
            // is approved action by action.
            class: ToolClass::Internal,
            source: format!("recipe:{}", loaded.name),
        };
        Self {
            spec,
            target,
            loaded,
            pinned,
            depth,
            own_budget: false,
        }
    }

    /// Each call gets the session's budgets instead of a share of the
    /// calling run's (`agent mcp serve`, whose journaled session is not a
    /// run with budgets).
    pub fn with_own_budget(mut self) -> Self {
        self.own_budget = true;
        self
    }

    fn kit(&self) -> Option<Arc<RecipeKit>> {
        match &self.target {
            Target::Kit(weak) => weak.upgrade(),
            Target::Slot(slot) => slot.lock().ok().and_then(|s| s.clone()),
        }
    }
}

/// File parameters of a tool call are read from the workspace.
struct Workspace(PathBuf);

impl crate::recipe::Provide for Workspace {
    fn read_file(&self, path: &str) -> Result<String, String> {
        let dir = crate::confined::Confined::open(&self.0).map_err(|e| e.to_string())?;
        let bytes = dir
            .read_head(std::path::Path::new(path.trim_start_matches("./")), 1 << 20)
            .map_err(|e| format!("cannot read {path} in the workspace: {e}"))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn ask(&self, _param: &Parameter) -> Option<String> {
        None
    }
}

#[async_trait]
impl Tool for RecipeTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let name = &self.loaded.name;
        let Some(kit) = self.kit() else {
            return Err(ToolError::Fatal(format!(
                "the recipe `{name}` cannot run: its session is gone"
            )));
        };
        if self.depth + 1 > MAX_DEPTH {
            return Err(ToolError::Observation(format!(
                "recipes may call recipes only {MAX_DEPTH} deep; do this part yourself"
            )));
        }
        let given: BTreeMap<String, Value> = args
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let ws = PathBuf::from(&kit.settings.workspace);
        let values = self
            .loaded
            .recipe
            .bind(&given, &self.pinned, &Workspace(ws))
            .map_err(|e| ToolError::Observation(format!("recipe `{name}`: {e}")))?;
        // Its share of the caller's budgets: what the caller has left,
        // less the step the caller needs to finish.
        let parent = match &ctx.run_id {
            Some(_) if self.own_budget => None,
            Some(id) => kit
                .parts
                .journal
                .get(id)
                .map_err(|e| ToolError::Fatal(e.to_string()))?,
            None => None,
        };
        let limits = parent.as_ref().map(|p| {
            let s = &p.settings;
            (
                s.max_steps.saturating_sub(p.steps + 2),
                s.max_tokens.saturating_sub(p.usage.total()),
                s.timeout_secs.saturating_sub(p.elapsed_ms / 1000),
            )
        });
        if let Some((0, _, _) | (_, 0, _) | (_, _, 0)) = limits {
            return Err(ToolError::Observation(format!(
                "not enough budget is left to run the recipe `{name}`; finish with what you have"
            )));
        }
        let id = match (&ctx.run_id, ctx.step) {
            (Some(run), Some(step)) => format!("{run}.r{step}"),
            _ => new_run_id(),
        };
        let call = Call {
            id,
            depth: self.depth + 1,
            limits,
            tainted: ctx.taint.source(),
        };
        let outcome = kit
            .run(&self.loaded, &values, call, &ctx.cancel)
            .await
            .map_err(|e| ToolError::Observation(format!("recipe `{name}` could not run: {e}")))?;
        let run = &outcome.run;
        // What the child read, the caller has now read (case 39).
        if let Some(source) = &run.tainted {
            ctx.taint.mark(source.clone());
        }
        let answer = match &outcome.answer {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        match run.status {
            RunStatus::Finished => Ok(format!(
                "The recipe `{name}` finished (run {}): {answer}",
                run.id
            )),
            RunStatus::Cancelled => Err(ToolError::Cancelled),
            status => Err(ToolError::Observation(format!(
                "The recipe `{name}` ended {} (run {}): {}{}",
                status.as_str(),
                run.id,
                run.stop_reason.clone().unwrap_or_default(),
                if answer.is_empty() {
                    String::new()
                } else {
                    format!(". Its answer: {answer}")
                }
            ))),
        }
    }
}
