//! The integration tests that drive the real `agent` binary with scripted
//! models, local servers and fixtures, as one test binary: each file of
//! tests/ once linked wasmtime, llama.cpp and mistral.rs again, which cost
//! minutes on 2 cores. The tests that load real models or start a peer
//! server (model_e2e, local_model, endpoint_peer) stay binaries of their
//! own, so that they do not run at the same time as each other (each holds
//! a model in memory and keeps both cores busy).

#[path = "../common/mod.rs"]
mod common;

mod agent_run;
mod eval;
mod export;
mod kb;
mod lora;
mod mcp;
mod mcp_serve;
mod memory;
mod openai;
mod plan;
mod plugins;
mod recipes;
pub(crate) mod repl;
mod roles;
mod security;
