//! Built-in host tools: `finish` (end the run with an answer) and
//! `ask_human` (ask the user a question; registered only in interactive runs,
//! so a `--yes` or piped run can never block on a question).

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use serde_json::json;

use super::{Tool, ToolClass, ToolContext, ToolError, ToolSpec};

/// The name of the tool that ends a run.
pub const FINISH: &str = "finish";

static FINISH_SPEC: LazyLock<ToolSpec> = LazyLock::new(|| {
    ToolSpec {
    name: FINISH.into(),
    description: "End the run and give the user the final answer (or explain why the goal cannot be reached).".into(),
    args_schema: json!({
        "type": "object",
        "properties": {"answer": {"type": "string", "description": "The complete answer for the user."}},
        "required": ["answer"],
        "additionalProperties": false
    }),
    class: ToolClass::Internal,
    source: "builtin".into(),
}
});

/// `finish(answer)`: the agent loop ends the run when this returns.
#[derive(Debug, Default)]
pub struct Finish;

#[async_trait]
impl Tool for Finish {
    fn spec(&self) -> &ToolSpec {
        &FINISH_SPEC
    }

    async fn call(&self, args: serde_json::Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        args.get("answer")
            .and_then(|a| a.as_str())
            .map(str::to_string)
            .ok_or_else(|| ToolError::Observation("`finish` needs {\"answer\": string}".into()))
    }
}

/// `finish(answer)` whose answer must match a recipe's `response` schema:
/// a constraining backend can only write such an answer, and any other is
/// refused by the registry's argument check with the reason, like a bad
/// argument of any tool. The run's answer is the value as JSON text.
pub struct StructuredFinish {
    spec: ToolSpec,
}

impl StructuredFinish {
    /// `finish` with `answer` of `schema`.
    pub fn new(schema: serde_json::Value) -> Self {
        Self {
            spec: ToolSpec {
                name: FINISH.into(),
                description: "End the run and give the final answer, as data of the required shape (or explain why the goal cannot be reached within it).".into(),
                args_schema: json!({
                    "type": "object",
                    "properties": {"answer": schema},
                    "required": ["answer"],
                    "additionalProperties": false
                }),
                class: ToolClass::Internal,
                source: "builtin".into(),
            },
        }
    }
}

#[async_trait]
impl Tool for StructuredFinish {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: serde_json::Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        args.get("answer")
            .map(|a| a.to_string())
            .ok_or_else(|| ToolError::Observation("`finish` needs {\"answer\": ...}".into()))
    }
}

/// Where `ask_human` gets its answers: the terminal in the CLI, a queue in tests.
#[async_trait]
pub trait Human: Send + Sync {
    /// Show `question` and wait for the answer; `None` if the user declined.
    async fn ask(&self, question: &str) -> Result<Option<String>, ToolError>;
}

static ASK_SPEC: LazyLock<ToolSpec> = LazyLock::new(|| ToolSpec {
    name: "ask_human".into(),
    description: "Ask the user a question when you cannot proceed without their input.".into(),
    args_schema: json!({
        "type": "object",
        "properties": {"question": {"type": "string"}},
        "required": ["question"],
        "additionalProperties": false
    }),
    class: ToolClass::Human,
    source: "builtin".into(),
});

/// `ask_human(question)`.
pub struct AskHuman {
    human: Arc<dyn Human>,
}

impl AskHuman {
    /// Ask through `human`.
    pub fn new(human: Arc<dyn Human>) -> Self {
        Self { human }
    }
}

#[async_trait]
impl Tool for AskHuman {
    fn spec(&self) -> &ToolSpec {
        &ASK_SPEC
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let question = args
            .get("question")
            .and_then(|q| q.as_str())
            .unwrap_or_default();
        tokio::select! {
            answer = self.human.ask(question) => match answer? {
                Some(a) if !a.trim().is_empty() => Ok(format!("The user answered: {a}")),
                _ => Ok("The user gave no answer; decide for yourself or finish.".into()),
            },
            _ = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Canned(&'static str);

    #[async_trait]
    impl Human for Canned {
        async fn ask(&self, _q: &str) -> Result<Option<String>, ToolError> {
            Ok(Some(self.0.to_string()))
        }
    }

    #[tokio::test]
    async fn finish_returns_the_answer_and_ask_relays_the_user() {
        let ctx = ToolContext::default();
        assert_eq!(
            Finish.call(json!({"answer": "42"}), &ctx).await.unwrap(),
            "42"
        );
        let ask = AskHuman::new(Arc::new(Canned("blue")));
        assert_eq!(
            ask.call(json!({"question": "colour?"}), &ctx)
                .await
                .unwrap(),
            "The user answered: blue"
        );
    }
}
