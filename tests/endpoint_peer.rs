//! `agent run --endpoint` against a real OpenAI-compatible server that we
//! did not write: llama-cpp-python's (`python -m llama_cpp.server`), on
//! 127.0.0.1, serving the small test model.
//!
//! The server is installed by the test set-up (`tools/peers/llama-cpp-python.sh`,
//! once per cache: it builds llama.cpp from source) into
//! `AGENT_PEERS_DIR` (default: `~/.cache/agent/peers`). If it cannot be
//! installed (no PyPI, no compiler) the test says so and skips; it never
//! fakes a pass.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestEnv, run_json, run_stdout};

/// The reference's python, installing it on first use.
fn peer_python() -> Result<PathBuf, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/peers/llama-cpp-python.sh");
    // The script's own default (~/.cache/agent/peers, or AGENT_PEERS_DIR)
    // is shared with the engine benchmark, so the reference is built once.
    let out = Command::new("sh")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start llama-cpp-python's server on `gguf`; returns it and its base URL
/// once `/v1/models` answers.
/// The server's log goes to `log` (a file: llama.cpp writes hundreds of
/// kilobytes while loading, which would fill and block a pipe).
fn start_server(python: &PathBuf, gguf: &str, log: &Path) -> (Server, String) {
    let port = free_port();
    let log_file = std::fs::File::create(log).expect("create the server log");
    let child = Command::new(python)
        .args([
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--model_alias",
            "smol",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "8192",
        ])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start llama_cpp.server");
    let mut server = Server(child);
    let base = format!("http://127.0.0.1:{port}/v1");
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("llama_cpp.server exited ({status}): {}", log_tail(log));
        }
        let ok = reqwest::blocking::get(format!("{base}/models"))
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            return (server, base);
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "llama_cpp.server did not answer within 3 minutes: {}",
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The last lines of the server's log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn endpoint_runs_against_llama_cpp_pythons_server() {
    let python = match peer_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!(
                "SKIPPED endpoint_runs_against_llama_cpp_pythons_server: the reference server could not be installed: {why}"
            );
            return;
        }
    };
    let env = TestEnv::new();
    run_stdout(&env, &["model", "pull", "smollm2-135m"], 0);
    let info = run_stdout(&env, &["model", "info", "smollm2-135m", "--json"], 0);
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    let gguf = info["cached"]
        .as_str()
        .expect("the model is cached")
        .to_string();
    let log = env.root.path().join("llama-cpp-server.log");
    let (_server, base) = start_server(&python, &gguf, &log);

    // This server answers the OpenAI `json_schema` form with an error; the
    // backend must move on to a form it takes and finish the run normally.
    let run = run_json(
        &env,
        &[
            "--endpoint",
            &base,
            "--model",
            "smol",
            "--max-steps",
            "2",
            "Write the word hello to hello.txt",
        ],
        Duration::from_secs(600),
    );
    let end = run.end();
    assert_ne!(
        end["status"],
        "failed",
        "{end}\n{}\nserver log:\n{}",
        run.stderr,
        log_tail(&log)
    );
    assert!(
        !run.steps().is_empty(),
        "no step was taken: {:?}",
        run.events
    );
    assert!(
        end["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
        "{end}"
    );
}
