//! Helpers for integration tests: a temporary home, workspace and store for
//! each test, a shared cache (models and compiled plugins are expensive), and
//! a command builder for the real `agent` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// One test's private world.
pub struct TestEnv {
    pub root: TempDir,
    pub home: PathBuf,
    pub workspace: PathBuf,
}

/// The cache shared by every test of one target dir (models, compiled plugins).
pub fn shared_cache() -> PathBuf {
    let dir = std::env::var_os("AGENT_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-cache"));
    std::fs::create_dir_all(&dir).expect("create shared cache");
    dir
}

/// Hold this while a test runs a real model. llama.cpp's CPU threads spin
/// at every barrier of a forward pass; two models sharing the 2 cores of a
/// CI machine (4 spinning threads) each wait out whole time slices, and on
/// 2026-12-01 the small model's first step took over 300 s that way instead
/// of 13 s. Tests of one binary run in parallel; binaries run one at a time.
pub fn one_model_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves it poisoned; the next one
    // still runs alone.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TestEnv {
    /// A fresh home and workspace.
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let home = root.path().join("home");
        let workspace = root.path().join("ws");
        std::fs::create_dir_all(&workspace).expect("workspace");
        Self {
            root,
            home,
            workspace,
        }
    }

    /// `agent` with this env's home, the shared cache, no colour, run in the root.
    pub fn agent(&self) -> Command {
        let mut cmd = Command::cargo_bin("agent").expect("agent binary");
        self.configure(&mut cmd);
        cmd
    }

    /// The same environment on a std command (for spawning and killing).
    pub fn agent_std(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("agent"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("AGENT_HOME", &self.home)
            .env("AGENT_CACHE_DIR", shared_cache())
            .env("AGENT_WORKSPACE", &self.workspace)
            .env("NO_COLOR", "1")
            .current_dir(self.root.path());
        cmd
    }

    fn configure(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("AGENT_HOME", &self.home)
            .env("AGENT_CACHE_DIR", shared_cache())
            .env("AGENT_WORKSPACE", &self.workspace)
            .env("NO_COLOR", "1")
            .current_dir(self.root.path());
    }

    /// Write a scripted-model file with these raw responses; returns `scripted:PATH`.
    pub fn script(&self, name: &str, responses: &[&str]) -> String {
        let yaml =
            serde_yaml::to_string(&serde_json::json!({ "responses": responses })).expect("yaml");
        self.script_yaml(name, &yaml)
    }

    /// Write a scripted-model file from YAML text; returns `scripted:PATH`.
    pub fn script_yaml(&self, name: &str, yaml: &str) -> String {
        let path = self.root.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write script");
        format!("scripted:{}", path.display())
    }

    /// Write the user's config file.
    pub fn config(&self, yaml: &str) -> PathBuf {
        let dir = self.home.join("config");
        std::fs::create_dir_all(&dir).expect("config dir");
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml).expect("config");
        path
    }
}

/// A valid action as the model would write it.
pub fn action(tool: &str, args: serde_json::Value) -> String {
    serde_json::json!({"thought": format!("use {tool}"), "tool": tool, "args": args}).to_string()
}

/// Parse `--json` output into events.
pub fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The `run_finished` event.
pub fn finished(events: &[serde_json::Value]) -> &serde_json::Value {
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "run_finished")
        .expect("a run_finished event")
}

/// Run `agent ARGS` in `env`, expect success, return stdout as text.
pub fn stdout(env: &TestEnv, args: &[&str]) -> String {
    let out = env
        .agent()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).expect("utf-8 stdout")
}

/// Run `agent ARGS` in `env`, expect exit `code`, return stdout (e.g. the
/// `--json` events, for [`events`]).
pub fn run_stdout(env: &TestEnv, args: &[&str], code: i32) -> Vec<u8> {
    env.agent()
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .stdout
        .clone()
}

/// What a `agent run --json` with a real model left: its exit code, its
/// events and its stderr (for failure messages).
pub struct JsonRun {
    pub code: Option<i32>,
    pub events: Vec<serde_json::Value>,
    pub stderr: String,
}

impl JsonRun {
    /// The `run_finished` event.
    pub fn end(&self) -> &serde_json::Value {
        finished(&self.events)
    }

    /// The `step` events, each checked to be a whole action (a tool name and
    /// an argument object).
    pub fn steps(&self) -> Vec<&serde_json::Value> {
        let steps: Vec<&serde_json::Value> =
            self.events.iter().filter(|e| e["type"] == "step").collect();
        for step in &steps {
            assert!(
                step["tool"].is_string() && step["args"].is_object(),
                "not a whole action: {step}"
            );
        }
        steps
    }
}

/// Run `agent run --json ARGS` in `env`, whatever its exit code, allowing
/// it `timeout` (real models are slow on a busy CI machine).
pub fn run_json(env: &TestEnv, args: &[&str], timeout: std::time::Duration) -> JsonRun {
    let out = env
        .agent()
        .arg("run")
        .arg("--json")
        .args(args)
        .timeout(timeout)
        .output()
        .expect("run agent");
    JsonRun {
        code: out.status.code(),
        events: events(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parse JSON-lines text (e.g. `--json` listings).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    events(text.as_bytes())
}

/// The observation of step `n` in `--json` events.
pub fn observation(ev: &[serde_json::Value], n: u64) -> String {
    ev.iter()
        .find(|e| e["type"] == "observation" && e["step"] == n)
        .and_then(|e| e["observation"].as_str())
        .unwrap_or_else(|| panic!("no observation for step {n}: {ev:?}"))
        .to_string()
}
