//! agent: an autonomous agent for the terminal.
//!
//! A person gives a goal; the agent thinks, picks one action, runs it, reads
//! the result, and decides again, until the goal is met or a budget runs out.
//!
//! ```text
//!  cli (clap, flag groups in cli::flags) ── config (defaults < file < AGENT_* < flags)
//!      │ run, runs resume, chat (REPL), recipe, eval, bench
//!      ▼
//!  cli::context (the one composition root) ── opens config, store, journal;
//!      │   builds tools (plugins, memory, kb, finish, ask_human), the models
//!      │   by role (model::roles: default now, smart/fast/judge on first use),
//!      │   the approver (agent::approval), the memory hook and Ctrl-C
//!      ├──► mcp::serve (`agent mcp serve`) ── the same plugin and recipe tools
//!      │        to MCP clients (stdio | HTTP on loopback, token); each call
//!      │        passes the approval policies (a Gate) and is a journaled step
//!      ▼
//!  agent::recipe ── a recipe (crate::recipe: the YAML file, typed values,
//!      │   the search path) as runs, from the session's parts: an agent run
//!      │   per attempt (instructions, plugin subset, response schema as
//!      │   `finish`'s, sub-recipes as tools → child runs, sandboxed checks
//!      │   then a retry), or a chain of model steps (samples, vote, judge)
//!      ▼
//!  agent::strategy ── Strategy::React | Strategy::Plan → Agent
//!      │   agent::run   the lifecycle both share: start, budgets, the model
//!      │                call with its deadline, the end (StopKind, reflection,
//!      │                RunFinished)
//!      │   react        one step: prompt ─► model ─► action ─► tool ─► observation
//!      │   plan         planner ─► (review) ─► a ReAct child run per step ─► replanner
//!      │   conversation earlier REPL exchanges, as messages before the goal
//!      │   approval     per-class policies, "always", the run's sticky taint
//!      │                (tools::Taint), writes to .git files always ask
//!      │   guard        repetition and invalid-output limits
//!      │ uses
//!      │   prompt   templates from prompts/*.yaml (user overrides win)
//!      │   model    ModelBackend: llama.cpp | mistral.rs GGUF | OpenAI-compatible | scripted;
//!      │            lora: PEFT adapters checked against the GGUF, written as
//!      │            one GGUF LoRA for llama.cpp (q/k rows permuted for llama);
//!      │            roles: a model per role, each call metered into the
//!      │            run's CostAccount (react escalates to smart after a
//!      │            bad step; plan asks smart; summaries ask fast)
//!      │   action   JSON schema "oneOf the live tools" + tolerant parse (json_extract)
//!      │   tools    ToolRegistry: finish, ask_human, memory, WASM plugins (plugin host;
//!      │            plugin::protect puts back what a call changed in .git),
//!      │            MCP servers' tools (mcp: stdio processes, `ask` by default)
//!      │   sanitize escapes stripped, observations capped head + tail
//!      ▼
//!  memory::journal (sled) ── every step committed and flushed before the next,
//!      │   with the messages its model was given (dataset: `runs export`)
//!      │   sessions the REPL's saved conversations
//!  memory::longterm, kb ── remember / recall / kb_search tools, `agent memory|kb`
//!      │   index    one sled tree each: BM25 (forward index in sled, postings
//!      │            in memory) + vectors (int8 scan in the vecscan crate, exact
//!      │            re-score), fused by reciprocal rank
//!      │   embed    MiniLM via candle (fetched on first use) | OpenAI endpoint
//!      │
//!  agent::events ──► ui::human (transcript, spinner, plan text) | ui::jsonl (--json)
//!                     ui::approve and the REPL's plan reviewer ask at the terminal
//!
//!  eval ── runs challenge suites through agent::strategy, grades the workspace
//!           (read through `confined`: no link is followed; Python run sandboxed)
//! ```
//!
//! The floors: `cli` and `ui` on top; `eval`, then `agent`, below them; the
//! rest (model, memory, kb, tools, plugin, mcp, prompt, recipe, action,
//! sanitize, confined) at the bottom, with `config` beside `cli` (it reads the approval policy types
//! of `agent::approval`). Imports only go down: nothing below `cli` and `ui`
//! reaches into them, and `memory` knows nothing of the agent (its hook into
//! the loop is `agent::recall`).
//!
//! The agent core never prints: it sends [`agent::Event`]s and the UI shows
//! them. One cancellation token travels from Ctrl-C to the model call and the
//! tool call.

pub mod action;
pub mod agent;
pub mod cli;
pub mod config;
pub mod confined;
pub mod dataset;
pub mod errors;
pub mod eval;
pub mod json_extract;
pub mod kb;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod paths;
pub mod plugin;
pub mod prompt;
pub mod recipe;
pub mod sanitize;
pub mod tools;
pub mod ui;
