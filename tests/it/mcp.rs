//! agent's MCP client against a server written with the official Python
//! SDK (the `mcp` package from PyPI, installed once by
//! tools/peers/mcp-python.sh): tools listed and called (structured output,
//! text with terminal escapes, an error result), a server that exits
//! mid-call and is started again once, one that never answers, one that
//! floods, one that writes what is not MCP onto the transport, a server over
//! streamable HTTP, only the named environment passed through, approvals (`ask` by
//! default, the taint rule after a server's output), and no server left
//! behind when agent is killed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{TestEnv, action, events};
use serde_json::{Value, json};

/// The venv's python with the `mcp` package.
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("sh")
            .arg(root.join("tools/peers/mcp-python.sh"))
            .output()
            .expect("run tools/peers/mcp-python.sh");
        assert!(
            out.status.success(),
            "cannot install the MCP Python SDK from PyPI: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A config with the fixture server as `fixture` (and `extra` YAML lines).
fn configure(env: &TestEnv, server: &str, extra: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/server.py");
    env.config(&format!(
        "memory:\n  reflect: false\nmcp:\n  - name: fixture\n    command: '{}'\n    args: ['{}']\n    timeout_secs: 4\n{server}{extra}",
        python().display(),
        script.display()
    ));
}

fn run(env: &TestEnv, responses: &[String], args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let model = env.script(
        "m",
        &responses.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = env
        .agent()
        .args(["run", "--json", "--model", &model])
        .args(args)
        .arg("use the fixture server")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    (out.status.code(), events(&out.stdout))
}

fn observations(ev: &[Value]) -> Vec<(String, String, bool)> {
    ev.iter()
        .filter(|e| e["type"] == "observation")
        .map(|e| {
            (
                e["tool"].as_str().unwrap_or("").to_string(),
                e["observation"].as_str().unwrap_or("").to_string(),
                e["is_error"] == true,
            )
        })
        .collect()
}

fn finish() -> String {
    action("finish", json!({"answer": "done"}))
}

#[test]
fn tools_are_listed_and_called_with_their_output_made_safe() {
    let env = TestEnv::new();
    configure(&env, "", "");
    let (code, ev) = run(
        &env,
        &[
            action("fixture.add", json!({"a": 2, "b": 3})),
            action("fixture.shout", json!({"text": "hi"})),
            action("fixture.fail", json!({"reason": "no"})),
            action("fixture.env", json!({})),
            finish(),
        ],
        &["--yes"],
    );
    assert_eq!(code, Some(0), "{ev:#?}");
    let tools = ev[0]["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("fixture.add")) && tools.contains(&json!("fixture.hang")));
    let obs = observations(&ev);
    assert!(obs[0].1.contains("\"sum\": 5"), "{obs:?}");
    assert!(
        obs[1].1.starts_with("HI!") && !obs[1].1.contains('\x1b'),
        "{obs:?}"
    );
    assert!(
        obs[2].2 && obs[2].1.contains("fixture.fail returned an error"),
        "{obs:?}"
    );
    // Only PATH (and what Python sets itself) reached the server.
    let seen: Vec<&str> = obs[3].1.lines().next().unwrap().split(' ').collect();
    assert!(
        seen.contains(&"PATH") && !seen.contains(&"AGENT_HOME") && !seen.contains(&"HOME"),
        "{seen:?}"
    );
    // `agent mcp list` and `agent mcp call` see the same server.
    let out = env.agent().args(["mcp", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("fixture  running  (unsandboxed process") && listed.contains("fixture.add"),
        "{listed}"
    );
    let out = env
        .agent()
        .args(["mcp", "call", "fixture", "add", r#"{"a": 1, "b": 2}"#])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"sum\": 3"));
    // The transcript marks a call to a server's tool as unsandboxed.
    let model = env.script(
        "h",
        &[&action("fixture.add", json!({"a": 1, "b": 1})), &finish()],
    );
    let out = env
        .agent()
        .args(["run", "--yes", "--model", &model, "add"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript
            .contains("→ fixture.add {\"a\":1,\"b\":1} (MCP server `fixture`, not sandboxed)"),
        "{transcript}"
    );
}

#[test]
fn a_crashed_server_is_started_again_once_per_run() {
    let env = TestEnv::new();
    configure(&env, "", "");
    let (code, ev) = run(
        &env,
        &[
            action("fixture.crash", json!({})),
            action("fixture.add", json!({"a": 1, "b": 1})),
            action("fixture.crash", json!({})),
            action("fixture.shout", json!({"text": "again"})),
            finish(),
        ],
        &["--yes"],
    );
    assert_eq!(code, Some(0), "{ev:#?}");
    let obs = observations(&ev);
    assert!(
        obs[0].2 && obs[0].1.contains("failed during `crash`"),
        "{obs:?}"
    );
    assert!(obs[1].1.contains("\"sum\": 2"), "started again: {obs:?}");
    assert!(obs[2].2, "{obs:?}");
    assert!(
        obs[3].2 && obs[3].1.contains("failed twice in this run"),
        "{obs:?}"
    );
}

#[test]
fn a_server_that_never_answers_times_out_floods_or_writes_garbage_is_contained() {
    let env = TestEnv::new();
    configure(&env, "", "");
    let started = Instant::now();
    let (code, ev) = run(
        &env,
        &[
            action("fixture.hang", json!({})),
            action("fixture.flood", json!({})),
            action("fixture.garbage", json!({})),
            action("fixture.add", json!({"a": 1, "b": 2})),
            finish(),
        ],
        &["--yes"],
    );
    assert_eq!(code, Some(0), "{ev:#?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let obs = observations(&ev);
    assert!(
        obs[0].2 && obs[0].1.contains("did not answer `hang` within 4 s"),
        "{obs:?}"
    );
    // The flood reached the model capped (observation_chars, 4000 by default).
    assert!(obs[1].1.len() < 6000, "{}", obs[1].1.len());
    // A line that is not MCP on the transport is skipped: the call gets
    // its answer, and the server still answers the next one.
    assert!(obs[2].1.starts_with("after the garbage"), "{obs:?}");
    assert!(obs[3].1.contains("\"sum\": 3"), "{obs:?}");
}

#[test]
fn mcp_tools_ask_by_default_and_their_output_taints_the_run() {
    // Nobody can answer: `ask` refuses and says so.
    let env = TestEnv::new();
    configure(&env, "", "");
    let (_, ev) = run(
        &env,
        &[action("fixture.add", json!({"a": 1, "b": 1})), finish()],
        &[],
    );
    let obs = observations(&ev);
    assert!(obs[0].1.contains("needs approval"), "{obs:?}");
    // A server the user trusts runs, and what it returned taints the run:
    // a write after it asks (and is refused here).
    let env = TestEnv::new();
    configure(&env, "    approve: auto\n", "");
    let (_, ev) = run(
        &env,
        &[
            action("fixture.add", json!({"a": 1, "b": 1})),
            action("write_file", json!({"path": "a.txt", "content": "2"})),
            finish(),
        ],
        &[],
    );
    let obs = observations(&ev);
    assert!(obs[0].1.contains("\"sum\": 2"), "{obs:?}");
    assert!(
        obs[1].1.contains("needs approval") && obs[1].1.contains("fixture.add"),
        "{obs:?}"
    );
    assert!(!env.workspace.join("a.txt").exists());
}

#[test]
fn no_server_outlives_agent_killed_with_sigkill() {
    let env = TestEnv::new();
    configure(&env, "", "");
    let model = env.script("m", &[&action("fixture.hang", json!({}))]);
    let mut child = env
        .agent_std()
        .args(["run", "--json", "--yes", "--model", &model, "hang"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent = child.id();
    // Wait for the server process under agent.
    let server = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(pid) = children_running(agent, "server.py").first() {
                break *pid;
            }
            assert!(Instant::now() < deadline, "the server never started");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    unsafe {
        libc::kill(agent as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{server}")).exists() && !is_zombie(server) {
        assert!(
            Instant::now() < deadline,
            "the MCP server {server} outlived agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes whose parent is `parent` and whose command line holds `needle`.
fn children_running(parent: u32, needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmd).contains(needle)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn a_server_over_streamable_http_is_used_the_same_way() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/server.py");
    let mut server = std::process::Command::new(python())
        .arg(&script)
        .args(["--http", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the HTTP server never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let env = TestEnv::new();
    env.config(&format!(
        "memory:\n  reflect: false\nmcp:\n  - name: remote\n    url: 'http://127.0.0.1:{port}/mcp'\n    approve: auto\n    timeout_secs: 10\n"
    ));
    let model = env.script(
        "m",
        &[&action("remote.add", json!({"a": 20, "b": 22})), &finish()],
    );
    let out = env
        .agent()
        .args(["run", "--json", "--yes", "--model", &model, "add"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let ev = events(&out.stdout);
    let obs = observations(&ev);
    assert!(
        obs[0].1.contains("\"sum\": 42"),
        "{obs:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token variable that is not set is said, and the server left out.
    env.config(&format!(
        "mcp:\n  - name: remote\n    url: 'http://127.0.0.1:{port}/mcp'\n    token_env: NO_SUCH_TOKEN\n"
    ));
    let out = env.agent().args(["mcp", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("its token variable `NO_SUCH_TOKEN` is not set"),
        "{text}"
    );
}
