//! The flag groups shared by the commands that run the agent, declared once
//! and flattened into each (`#[command(flatten)]`): which model, which
//! budgets, who approves, and the strategy. `agent run`, `agent chat`,
//! `agent runs resume` and `agent eval` take the groups that apply to them,
//! so a flag means the same thing, with the same help, everywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use crate::agent::Strategy;
use crate::agent::approval::Policy;
use crate::config::{ConfigLayer, OneOrMany};
use crate::model::roles::{RoleEntry, RoleSpec};

/// Which model answers.
#[derive(Debug, Clone, Default, Args)]
pub struct ModelFlags {
    /// Model: a short name (`agent model list`), a .gguf path, hf:OWNER/REPO/FILE.gguf,
    /// scripted:FILE.yaml, or the served model id with --endpoint.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Engine for local models: auto, llama.cpp or mistral.rs.
    #[arg(long, value_name = "ENGINE")]
    pub engine: Option<String>,
    /// A LoRA adapter on the local model: a PEFT folder (adapter_config.json
    /// and adapter_model.safetensors), with an optional scale (default 1).
    /// Repeatable; replaces the config's `lora:` list.
    #[arg(long, value_name = "PATH[:SCALE]")]
    pub lora: Vec<String>,
    /// Sample N candidate actions per step (at `sample_temperature`, 0.7 by
    /// default) and take the one more than half agree on, else the greedy
    /// one; N model calls per step. 1 (the default) is greedy alone.
    #[arg(long, value_name = "N")]
    pub samples: Option<u32>,
    /// The model for planning, replanning and the step after the default
    /// model stumbles (an invalid or repeated action, a finish that failed
    /// its checks); any model reference.
    #[arg(long, value_name = "MODEL")]
    pub smart: Option<String>,
    /// The model for history summaries and end-of-run reflections.
    #[arg(long, value_name = "MODEL")]
    pub fast: Option<String>,
}

/// How much a run may spend.
#[derive(Debug, Clone, Default, Args)]
pub struct BudgetFlags {
    /// Most steps a run may take.
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u32>,
    /// Most tokens (prompt + completion, all steps) a run may spend.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// Wall-clock limit of a run: seconds, or with a unit (90s, 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<u64>,
}

/// Who approves tool calls.
#[derive(Debug, Clone, Default, Args)]
pub struct ApprovalFlags {
    /// Never ask anything (no approvals, no `ask_human`): continuous mode.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approval policy for every tool class: auto, ask (refused when nobody
    /// can answer), deny. A deny in the config still applies.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub approve: Option<Policy>,
}

/// How a run pursues its goal.
#[derive(Debug, Clone, Default, Args)]
pub struct StrategyFlag {
    /// Strategy: react (think, act, observe) or plan (plan, a ReAct loop per step, replan).
    #[arg(long, value_enum, default_value_t = Strategy::React)]
    pub agent: Strategy,
}

/// The settings a session is opened with: model, budgets and workspace,
/// layered over the config files.
#[derive(Debug, Clone, Default, Args)]
pub struct RunOptions {
    #[command(flatten)]
    pub model: ModelFlags,
    #[command(flatten)]
    pub budgets: BudgetFlags,
    /// The only directory tools may see (created if missing).
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workspace: Option<PathBuf>,
}

impl RunOptions {
    /// Options with only these budgets (commands that keep their model).
    pub fn budgets(budgets: BudgetFlags) -> Self {
        Self {
            budgets,
            ..Self::default()
        }
    }

    /// The flags as a config layer, with the flag name of each key set.
    pub fn layer(&self) -> (ConfigLayer, BTreeMap<&'static str, String>) {
        let mut names = BTreeMap::new();
        let mut note = |key: &'static str, set: bool, flag: &str| {
            if set {
                names.insert(key, flag.to_string());
            }
        };
        let (m, b) = (&self.model, &self.budgets);
        note("model", m.model.is_some(), "--model");
        note("endpoint", m.endpoint.is_some(), "--endpoint");
        note("engine", m.engine.is_some(), "--engine");
        note("lora", !m.lora.is_empty(), "--lora");
        note("samples", m.samples.is_some(), "--samples");
        let roles: BTreeMap<String, RoleEntry> = [("smart", &m.smart), ("fast", &m.fast)]
            .into_iter()
            .filter_map(|(role, model)| {
                Some((role.to_string(), RoleEntry(RoleSpec::named(model.clone()?))))
            })
            .collect();
        let flags: Vec<&str> = [("--smart", &m.smart), ("--fast", &m.fast)]
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .map(|(f, _)| f)
            .collect();
        note("models", !flags.is_empty(), &flags.join(", "));
        note("max_steps", b.max_steps.is_some(), "--max-steps");
        note("max_tokens", b.max_tokens.is_some(), "--max-tokens");
        note("timeout_secs", b.timeout.is_some(), "--timeout");
        note("workspace", self.workspace.is_some(), "--workspace");
        let layer = ConfigLayer {
            model: m.model.clone(),
            endpoint: m.endpoint.clone(),
            engine: m.engine.clone(),
            lora: (!m.lora.is_empty()).then(|| OneOrMany::Many(m.lora.clone())),
            samples: m.samples,
            models: (!roles.is_empty()).then_some(roles),
            max_steps: b.max_steps,
            max_tokens: b.max_tokens,
            timeout_secs: b.timeout,
            workspace: self.workspace.clone(),
            ..ConfigLayer::default()
        };
        (layer, names)
    }
}

/// Parse `90`, `90s`, `10m`, `1h` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use seconds or 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use s, m or h")),
    };
    if secs == 0 {
        return Err("the timeout must be at least 1 second".into());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("").is_err());
    }
}
