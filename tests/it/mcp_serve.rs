//! `agent mcp serve` driven by the official MCP Python SDK's client (the
//! `mcp` package from PyPI, tests/fixtures/mcp/client.py): the sandboxed
//! tools listed with their classes and called (read and write a workspace
//! file, sandboxed Python), escapes refused (`../`, absolute paths, a
//! symlink out of the workspace, a write to a git hook), a recipe called as
//! a tool with agent's model, `--read-only` and `--plugin` narrowing what
//! is offered, each call journaled in a run `agent runs list` shows, and
//! streamable HTTP on loopback with a bearer token.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use crate::common::{TestEnv, action, run_stdout, shared_cache};
use serde_json::{Value, json};

/// Start `agent mcp serve ARGS` over stdio from the Python SDK's client in
/// `env` (cwd: its root, so `./recipes/` is the project's), run `ops`, and
/// return a result per op.
fn over_stdio(env: &TestEnv, args: &[&str], ops: Value) -> Vec<Value> {
    let mut server = vec![
        assert_cmd::cargo::cargo_bin("agent").display().to_string(),
        "mcp".into(),
        "serve".into(),
    ];
    server.extend(args.iter().map(|a| a.to_string()));
    let spec = json!({
        "stdio": server,
        "env": {
            "PATH": std::env::var("PATH").unwrap_or_default(),
            "HOME": env.root.path(),
            "AGENT_HOME": env.home,
            "AGENT_CACHE_DIR": shared_cache(),
            "AGENT_WORKSPACE": env.workspace,
            "NO_COLOR": "1",
        },
    });
    drive(env, &spec, &ops)
}

/// Run the Python SDK's client against `spec` with `ops`.
fn drive(env: &TestEnv, spec: &Value, ops: &Value) -> Vec<Value> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/client.py");
    let out = assert_cmd::Command::new(super::mcp::python())
        .arg(script)
        .arg(spec.to_string())
        .arg(ops.to_string())
        .current_dir(env.root.path())
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the client printed no results ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn listed(result: &Value) -> Vec<&str> {
    result["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tool list: {result}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

fn called(result: &Value) -> (bool, &str) {
    assert!(result.get("exception").is_none(), "{result}");
    (result["is_error"] == true, result["text"].as_str().unwrap())
}

/// The journal's runs, newest first.
fn runs(env: &TestEnv) -> Vec<Value> {
    serde_json::from_slice(&run_stdout(env, &["runs", "list", "--json"], 0)).unwrap()
}

#[test]
fn an_mcp_client_gets_the_sandboxed_tools_and_cannot_leave_the_workspace() {
    let env = TestEnv::new();
    std::fs::write(
        env.workspace.join("notes.txt"),
        "hello from the workspace\n",
    )
    .unwrap();
    let secret = env.root.path().join("secret.txt");
    std::fs::write(&secret, "outside secret").unwrap();
    std::os::unix::fs::symlink(&secret, env.workspace.join("link.txt")).unwrap();
    let results = over_stdio(
        &env,
        &["--no-recipes"],
        json!([
            ["list"],
            ["call", "read_file", {"path": "notes.txt"}],
            ["call", "write_file", {"path": "out/made.txt", "content": "made over MCP"}],
            ["call", "run_python", {"code": "print(sum(range(10)))"}],
            ["call", "read_file", {"path": "../secret.txt"}],
            ["call", "read_file", {"path": secret.display().to_string()}],
            ["call", "read_file", {"path": "link.txt"}],
            ["call", "write_file", {"path": ".git/hooks/pre-commit", "content": "rm -rf ~"}],
            ["call", "read_file", {"file": "notes.txt"}],
        ]),
    );
    let tools = listed(&results[0]);
    for t in ["read_file", "write_file", "list_files", "run_python"] {
        assert!(tools.contains(&t), "{tools:?}");
    }
    assert!(!tools.iter().any(|t| t.starts_with("recipe_")), "{tools:?}");
    let read = &results[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "read_file")
        .unwrap();
    assert_eq!(read["annotations"]["readOnlyHint"], true, "{read}");
    assert!(
        read["description"]
            .as_str()
            .unwrap()
            .contains("sandboxed plugin `files`"),
        "{read}"
    );
    assert_eq!(called(&results[1]), (false, "hello from the workspace\n"));
    assert!(!called(&results[2]).0, "{}", results[2]);
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("out/made.txt")).unwrap(),
        "made over MCP"
    );
    let (failed, out) = called(&results[3]);
    assert!(!failed && out.trim() == "45", "{out}");
    // Out of the workspace: `..`, an absolute path, a symlink, a git hook.
    for (i, words) in [
        (4, "`..` is not allowed"),
        (5, "absolute paths are not allowed"),
        (6, "the sandbox refused"),
        (7, "only a person at the approval prompt"),
    ] {
        let (failed, out) = called(&results[i]);
        assert!(failed && out.contains(words), "call {i}: {out}");
        assert!(!out.contains("outside secret"), "{out}");
    }
    assert!(!env.workspace.join(".git/hooks/pre-commit").exists());
    let (failed, out) = called(&results[8]);
    assert!(
        failed && out.contains("invalid arguments for `read_file`"),
        "{out}"
    );

    // One run journals the session, a step per call that ran or was refused.
    let all = runs(&env);
    assert_eq!(all.len(), 1, "{all:?}");
    let served = &all[0];
    assert_eq!(served["status"], "finished");
    assert_eq!(served["settings"]["mcp"]["transport"], "stdio");
    assert_eq!(
        served["settings"]["mcp"]["clients"][0],
        "python-sdk-client 2.3.0"
    );
    let list = String::from_utf8(run_stdout(&env, &["runs", "list"], 0)).unwrap();
    assert!(
        list.contains("[mcp stdio: python-sdk-client 2.3.0]"),
        "{list}"
    );
    let id = served["id"].as_str().unwrap();
    let shown: Value =
        serde_json::from_slice(&run_stdout(&env, &["runs", "show", id, "--json"], 0)).unwrap();
    let steps = shown["steps"].as_array().unwrap();
    let tools: Vec<&str> = steps.iter().map(|s| s["tool"].as_str().unwrap()).collect();
    assert_eq!(
        tools,
        [
            "read_file",
            "write_file",
            "run_python",
            "read_file",
            "read_file",
            "read_file",
            "write_file"
        ]
    );
    assert_eq!(steps[0]["args"], json!({"path": "notes.txt"}));
    assert_eq!(steps[0]["thought"], "called by python-sdk-client 2.3.0");
    assert!(
        steps[0]["note"]
            .as_str()
            .unwrap()
            .starts_with("25 bytes returned"),
        "{}",
        steps[0]
    );
    assert_eq!(steps[6]["outcome"], "denied");
    // Nothing to resume in a served session.
    let out = env.agent().args(["runs", "resume", id]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to resume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_recipe_is_a_tool_that_runs_with_agents_model() {
    let env = TestEnv::new();
    env.config("memory:\n  reflect: false\n");
    let recipes = env.root.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join("greet.yaml"),
        "title: Greet\ndescription: Write a greeting for someone to greeting.txt.\nprompt: Write a greeting for {{ name }} to greeting.txt.\nparameters:\n  - {key: name, description: who to greet}\nplugins: [files]\nretry:\n  max_retries: 0\n  checks:\n    - {type: file, path: greeting.txt, contains: '{{ name }}'}\n    - {type: python, code: \"assert open('greeting.txt').read().startswith('Hello')\"}\n",
    )
    .unwrap();
    let model = env.script(
        "m",
        &[
            &action(
                "write_file",
                json!({"path": "greeting.txt", "content": "Hello, Ada!"}),
            ),
            &action("finish", json!({"answer": "greeted Ada"})),
        ],
    );
    let results = over_stdio(
        &env,
        // Only the files plugin is offered; the recipe's Python check
        // still runs in the code sandbox.
        &["--model", &model, "--recipe", "greet", "--plugin", "files"],
        json!([["list"], ["call", "recipe_greet", {"name": "Ada"}]]),
    );
    let tools = listed(&results[0]);
    assert!(
        tools.contains(&"recipe_greet") && tools.contains(&"read_file"),
        "{tools:?}"
    );
    let greet = results[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "recipe_greet")
        .unwrap();
    assert_eq!(greet["schema"]["required"], json!(["name"]), "{greet}");
    let (failed, out) = called(&results[1]);
    assert!(
        !failed && out.contains("finished") && out.contains("greeted Ada"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("greeting.txt")).unwrap(),
        "Hello, Ada!"
    );
    // The recipe's run is the session's child, `SESSION.r1`.
    let all = runs(&env);
    let id = all[0]["id"].as_str().unwrap();
    assert!(all[0]["settings"]["mcp"].is_object(), "{all:?}");
    let shown: Value =
        serde_json::from_slice(&run_stdout(&env, &["runs", "show", id, "--json"], 0)).unwrap();
    let child = &shown["children"][0]["run"];
    assert_eq!(child["id"], format!("{id}.r1"), "{shown}");
    assert_eq!(child["status"], "finished");
    assert_eq!(child["settings"]["recipe"]["name"], "greet");
}

#[test]
fn read_only_and_plugin_choice_and_denied_tools_narrow_what_is_offered() {
    let env = TestEnv::new();
    env.config("approvals:\n  network: deny\n");
    let results = over_stdio(
        &env,
        &["--read-only", "--no-recipes"],
        json!([["list"], ["call", "write_file", {"path": "x.txt", "content": "x"}]]),
    );
    let mut tools = listed(&results[0]);
    tools.sort();
    // No write or code tool; the network tools are denied by the policy.
    assert_eq!(tools, ["list_files", "read_file", "search_files"]);
    let read = results[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "read_file")
        .unwrap();
    assert!(
        read["description"]
            .as_str()
            .unwrap()
            .contains("--read-only: its write and code tools are not offered"),
        "{read}"
    );
    let (failed, out) = called(&results[1]);
    assert!(
        failed && out.contains("offers no tool `write_file`"),
        "{out}"
    );
    assert!(!env.workspace.join("x.txt").exists());

    let results = over_stdio(
        &env,
        &["--plugin", "code", "--no-recipes"],
        json!([["list"]]),
    );
    assert_eq!(listed(&results[0]), ["run_python"]);

    // A plugin or recipe that is not there is named.
    for (flag, name, words) in [
        ("--plugin", "shell", "no plugin `shell`"),
        ("--recipe", "nope", "no recipe `nope`"),
    ] {
        let out = env
            .agent()
            .args(["mcp", "serve", flag, name])
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(1) && err.contains(words), "{err}");
    }
}

/// A running `agent mcp serve --listen ...`, stopped with SIGTERM on drop.
struct HttpServer {
    child: std::process::Child,
    url: String,
}

impl HttpServer {
    fn start(env: &TestEnv, args: &[&str]) -> Self {
        let mut child = env
            .agent_std()
            .args(["mcp", "serve", "--no-recipes", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("MCP_TOKEN", "s3cret-token")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server ended before it listened")
                .unwrap();
            if let Some(at) = line.find("listening at ") {
                let rest = &line[at + "listening at ".len()..];
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep reading its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }

    /// Stop it as a service manager would, and wait.
    fn stop(mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().ok().and_then(|s| s.code())
    }
}

/// One raw HTTP request to `url` with extra `headers`; the status code.
fn status_of(url: &str, headers: &[&str]) -> u16 {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn over_http_it_listens_on_loopback_and_checks_the_bearer_token() {
    let env = TestEnv::new();
    std::fs::write(env.workspace.join("notes.txt"), "over http").unwrap();
    // Another machine could reach these: refused before anything starts.
    for (args, words) in [
        (vec!["--listen", "0.0.0.0:0"], "not a loopback address"),
        (
            vec!["--listen", "0.0.0.0:0", "--allow-remote"],
            "needs a bearer token",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--token-env", "NOT_SET_ANYWHERE"],
            "NOT_SET_ANYWHERE",
        ),
    ] {
        let out = env
            .agent()
            .args(["mcp", "serve"])
            .args(&args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1) && err.contains(words),
            "{args:?}: {err}"
        );
    }

    let server = HttpServer::start(&env, &["--token-env", "MCP_TOKEN"]);
    let results = drive(
        &env,
        &json!({"url": server.url, "token": "s3cret-token"}),
        &json!([["call", "read_file", {"path": "notes.txt"}]]),
    );
    assert_eq!(called(&results[0]), (false, "over http"));
    let results = drive(
        &env,
        &json!({"url": server.url, "token": "wrong"}),
        &json!([["call", "read_file", {"path": "notes.txt"}]]),
    );
    assert!(results[0].get("exception").is_some(), "{results:?}");
    assert_eq!(status_of(&server.url, &[]), 401);
    // A web page may not call local tools, whatever token it holds.
    assert_eq!(
        status_of(
            &server.url,
            &[
                "Authorization: Bearer s3cret-token",
                "Origin: http://evil.example"
            ]
        ),
        403
    );
    assert_eq!(server.stop(), Some(0));
    let all = runs(&env);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["steps"], 1);
    assert_eq!(all[0]["stop_reason"], "the server was stopped");
    assert!(
        all[0]["settings"]["mcp"]["transport"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{}",
        all[0]
    );
}
