//! `--lora` and `lora:` refusals that need no model: each a clear error
//! before anything is loaded. (The adapter on the real model is covered by
//! `tests/lora_reference.rs` and `tests/model_e2e.rs`.)

use crate::common::{TestEnv, action};
use serde_json::json;

fn agent_err(env: &TestEnv, args: &[&str]) -> String {
    let out = env.agent().args(args).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An adapter folder with the two PEFT files (contents unchecked here).
fn peft_folder(env: &TestEnv) -> String {
    let dir = env.root.path().join("adapter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"r": 2, "lora_alpha": 4}"#,
    )
    .unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), b"").unwrap();
    dir.display().to_string()
}

#[test]
fn a_missing_adapter_folder_is_named_with_what_it_needs() {
    let env = TestEnv::new();
    // Refused before the model file is read.
    let gguf = env.root.path().join("m.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    let model = gguf.display().to_string();
    let missing = env.root.path().join("nowhere").display().to_string();
    let err = agent_err(
        &env,
        &["run", "--model", &model, "--lora", &missing, "Say x"],
    );
    assert!(
        err.contains("nowhere") && err.contains("not a PEFT adapter folder"),
        "{err}"
    );
    let folder = env.root.path().join("empty");
    std::fs::create_dir_all(&folder).unwrap();
    let err = agent_err(
        &env,
        &[
            "run",
            "--model",
            &model,
            "--lora",
            &folder.display().to_string(),
            "Say x",
        ],
    );
    assert!(err.contains("it has no adapter_config.json"), "{err}");
}

#[test]
fn adapters_are_refused_for_models_they_cannot_apply_to() {
    let env = TestEnv::new();
    let adapter = peft_folder(&env);
    let model = env.script("m", &[&action("finish", json!({"answer": "x"}))]);
    let err = agent_err(
        &env,
        &["run", "--model", &model, "--lora", &adapter, "Say x"],
    );
    assert!(err.contains("not to a scripted model"), "{err}");
    let err = agent_err(
        &env,
        &[
            "run",
            "--endpoint",
            "http://127.0.0.1:9/v1",
            "--model",
            "served",
            "--lora",
            &adapter,
            "Say x",
        ],
    );
    assert!(
        err.contains("LoRA adapters apply to local GGUF models"),
        "{err}"
    );
    // Refused before the file is even read.
    let gguf = env.root.path().join("m.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    let err = agent_err(
        &env,
        &[
            "run",
            "--engine",
            "mistral.rs",
            "--model",
            &gguf.display().to_string(),
            "--lora",
            &adapter,
            "Say x",
        ],
    );
    assert!(
        err.contains("run on the llama.cpp engine") && err.contains("--engine llama.cpp"),
        "{err}"
    );
}

#[test]
fn a_bad_lora_entry_in_the_config_names_the_key() {
    let env = TestEnv::new();
    env.config("lora: [\"adapters/tone:-2\"]\n");
    let err = agent_err(&env, &["config", "show"]);
    assert!(
        err.contains("lora") && err.contains("adapters/tone:-2") && err.contains("scale"),
        "{err}"
    );
    env.config(&format!("lora: {}\n", peft_folder(&env)));
    let shown = crate::common::stdout(&env, &["config", "show"]);
    assert!(shown.contains("adapter:1"), "{shown}");
}
