//! agent: an autonomous agent for the terminal.
//!
//! A person gives a goal; the agent thinks, picks one action, runs it, reads
//! the result, and decides again, until the goal is met or a budget runs out.
//!
//! ```text
//!  cli (clap) ── config (defaults < file < AGENT_* < flags), paths
//!      │ goal, settings
//!      ▼
//!  agent::react ── one step: prompt ─► model ─► action ─► tool ─► observation
//!      │   prompt   templates from prompts/*.yaml (user overrides win)
//!      │   model    ModelBackend: mistral.rs GGUF | OpenAI-compatible | scripted
//!      │   action   JSON schema "oneOf the live tools" + strict/tolerant parse
//!      │   guard    repetition and invalid-output limits; budgets
//!      │   tools    ToolRegistry: finish, ask_human, WASM plugins (plugin host)
//!      │   sanitize escapes stripped, observations capped head + tail
//!      │   recall   memory::hook: relevant memories into the prompt, as data
//!      │            with their source; a reflection stored when the run ends
//!      ▼
//!  memory::journal (sled) ── every step committed and flushed before the next
//!      │
//!  memory::longterm, kb ── remember / recall / kb_search tools, `agent memory|kb`
//!      │   index    one sled tree each: BM25 (forward index in sled, postings
//!      │            in memory) + vectors (int8 scan in the vecscan crate, exact
//!      │            re-score), fused by reciprocal rank
//!      │   embed    MiniLM via candle (fetched on first use) | OpenAI endpoint
//!      │
//!  agent::events ──► ui::human (transcript, spinner) | ui::jsonl (--json)
//! ```
//!
//! The agent core never prints: it sends [`agent::Event`]s and the UI shows
//! them. One cancellation token travels from Ctrl-C to the model call and the
//! tool call.

pub mod action;
pub mod agent;
pub mod cli;
pub mod config;
pub mod errors;
pub mod eval;
pub mod json_extract;
pub mod kb;
pub mod memory;
pub mod model;
pub mod paths;
pub mod plugin;
pub mod prompt;
pub mod sanitize;
pub mod tools;
pub mod ui;
