//! Model roles end to end with scripted models, each a script of its own:
//! planning goes to `smart`, steps to `default`, summaries to `fast`; an
//! invalid action sends the next step to `smart` and a step that works
//! brings it back; the cost account is in `run_finished`, `runs show` and
//! eval reports. And the configuration errors: an unknown role, a role
//! naming an unknown model, local models that do not fit in memory.

use crate::common::{TestEnv, action, events, finished, run_stdout};
use serde_json::{Value, json};

fn finish(answer: &str) -> String {
    action("finish", json!({"answer": answer}))
}

/// The cost entry of the model whose name ends with `script`.
fn cost_of<'a>(end: &'a Value, script: &str) -> &'a Value {
    end["cost"]
        .as_array()
        .unwrap_or_else(|| panic!("no cost in {end}"))
        .iter()
        .find(|c| c["model"].as_str().unwrap().ends_with(script))
        .unwrap_or_else(|| panic!("no cost for {script} in {end}"))
}

/// `agent run "Write hi to a.txt"` with `default` answering as given and a
/// smart model that writes a.txt (once); its events.
fn write_hi_with_a_smart_model(env: &TestEnv, default: &[&str]) -> Vec<Value> {
    let default = env.script("default", default);
    let smart = env.script(
        "smart",
        &[&action(
            "write_file",
            json!({"path": "a.txt", "content": "hi"}),
        )],
    );
    let args = [
        "run", "--json", "--yes", "--model", &default, "--smart", &smart,
    ];
    let out = run_stdout(env, &[&args[..], &["Write hi to a.txt"]].concat(), 0);
    events(&out)
}

#[test]
fn an_invalid_action_sends_the_next_step_to_smart_and_a_working_step_brings_it_back() {
    let env = TestEnv::new();
    let ev =
        write_hi_with_a_smart_model(&env, &["this is not an action", &finish("a.txt holds hi")]);
    let notices: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "notice")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        notices.iter().any(
            |n| n.starts_with("this step goes to the smart model scripted:")
                && n.ends_with("smart.yaml: the step before wrote an invalid action")
        ),
        "{notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("the smart model's step worked: back to the default model")),
        "{notices:?}"
    );
    let end = finished(&ev);
    assert_eq!(end["status"], "finished");
    assert_eq!(end["steps"], 3);
    // Two calls on the default model, one on the smart one, each with its
    // tokens; the totals add up to the run's usage.
    let (d, s) = (cost_of(end, "default.yaml"), cost_of(end, "smart.yaml"));
    assert_eq!(
        (d["calls"].as_u64(), s["calls"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(d["roles"], json!(["default"]));
    assert_eq!(s["roles"], json!(["smart"]));
    let tokens =
        |c: &Value| c["prompt_tokens"].as_u64().unwrap() + c["completion_tokens"].as_u64().unwrap();
    let usage = &end["usage"];
    assert_eq!(
        tokens(d) + tokens(s),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // The journal has it too: which model took step 2 and why, and the cost.
    let run_id = end["run_id"].as_str().unwrap();
    let shown = String::from_utf8(run_stdout(&env, &["runs", "show", run_id], 0)).unwrap();
    assert!(
        shown.contains("# taken by the smart model scripted:")
            && shown.contains("the step before wrote an invalid action"),
        "{shown}"
    );
    assert!(
        shown.contains("cost     scripted:") && shown.contains("(smart): 1 call,"),
        "{shown}"
    );
    let json: Value =
        serde_json::from_slice(&run_stdout(&env, &["runs", "show", run_id, "--json"], 0)).unwrap();
    assert_eq!(
        json["run"]["cost"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
}

#[test]
fn a_finish_that_fails_its_checks_also_sends_the_next_step_to_smart() {
    let env = TestEnv::new();
    let ev = write_hi_with_a_smart_model(&env, &[&finish("done"), &finish("a.txt holds hi")]);
    assert!(
        ev.iter().any(|e| e["type"] == "notice"
            && e["step"] == 2
            && e["message"]
                .as_str()
                .unwrap()
                .ends_with("the step before claimed the goal was done and its checks failed")),
        "{ev:?}"
    );
    let end = finished(&ev);
    assert_eq!(end["status"], "finished");
    assert_eq!(cost_of(end, "smart.yaml")["calls"], 1);
}

#[test]
fn planning_goes_to_smart_and_the_steps_to_default() {
    let env = TestEnv::new();
    let plan = json!({"thought": "plan it", "steps": [
        {"description": "write hi to a.txt", "success_criterion": "a.txt exists"}
    ]})
    .to_string();
    let done = json!({"thought": "goal reached", "decision": "finish", "answer": "a.txt holds hi"})
        .to_string();
    let smart = env.script("planner", &[&plan, &done]);
    let default = env.script(
        "steps",
        &[&action(
            "write_file",
            json!({"path": "a.txt", "content": "hi"}),
        )],
    );
    let out = run_stdout(
        &env,
        &[
            "run",
            "--agent",
            "plan",
            "--json",
            "--yes",
            "--model",
            &default,
            "--smart",
            &smart,
            // More after the output: the replanner is asked at the end.
            "Write hi to a.txt, then tell me what it holds",
        ],
        0,
    );
    let end = finished(&events(&out)).clone();
    assert_eq!(end["status"], "finished", "{end}");
    assert_eq!(cost_of(&end, "planner.yaml")["calls"], 2);
    assert_eq!(cost_of(&end, "planner.yaml")["roles"], json!(["smart"]));
    assert_eq!(cost_of(&end, "steps.yaml")["calls"], 1);
}

#[test]
fn history_summaries_go_to_fast() {
    let env = TestEnv::new();
    let big: String = (0..6000)
        .map(|i| format!("line {i} of a very long document\n"))
        .collect();
    std::fs::write(env.workspace.join("big.txt"), &big).unwrap();
    // The default script holds only actions: were a summary asked of it,
    // it would take an action's place and the run would not finish.
    let mut steps: Vec<String> = (0..10)
        .map(|i| action("read_file", json!({"path": "big.txt", "offset": i * 1000})))
        .collect();
    steps.push(finish("read it all"));
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let default = env.script("default", &steps);
    let summaries: Vec<String> = (0..10)
        .map(|i| format!("summary {i}: read big.txt in parts"))
        .collect();
    let summaries: Vec<&str> = summaries.iter().map(String::as_str).collect();
    let fast = env.script("fast", &summaries);
    let out = env
        .agent()
        .env("AGENT_CONTEXT_TOKENS", "1024")
        .env("AGENT_STEP_TOKENS", "128")
        .args([
            "run",
            "--json",
            "--max-tokens",
            "10000000",
            "--model",
            &default,
            "--fast",
            &fast,
            "read the big file",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let ev = events(&out);
    let end = finished(&ev);
    assert_eq!(end["steps"], 11, "{end}");
    let fast_cost = cost_of(end, "fast.yaml");
    assert!(fast_cost["calls"].as_u64().unwrap() >= 1, "{end}");
    assert_eq!(fast_cost["roles"], json!(["fast"]));
    assert_eq!(cost_of(end, "default.yaml")["calls"], 11);
}

#[test]
fn eval_reports_the_cost_of_each_model_with_its_roles() {
    let env = TestEnv::new();
    let suite = env.root.path().join("suite");
    let dir = suite.join("1_hi");
    std::fs::create_dir_all(dir.join("artifacts_out")).unwrap();
    std::fs::write(
        dir.join("data.json"),
        json!({
            "name": "Hi", "category": ["files"], "task": "Write hi to a.txt",
            "cutoff": 60, "ground": {"answer": "hi", "should_contain": ["hi"],
            "should_not_contain": [], "files": ["a.txt"], "eval": {"type": "file"}}
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("artifacts_out/a.txt"), "hi").unwrap();
    let default = env.script("default", &["not an action", &finish("done")]);
    let smart = env.script(
        "smart",
        &[&action(
            "write_file",
            json!({"path": "a.txt", "content": "hi"}),
        )],
    );
    let out = env
        .agent()
        .args([
            "eval",
            suite.to_str().unwrap(),
            "--json",
            "--model",
            &default,
            "--smart",
            &smart,
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["totals"]["passed"], 1, "{report}");
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{report}");
    assert!(
        models
            .iter()
            .any(|m| m["roles"] == json!(["smart"]) && m["calls"] == 1)
    );
    assert_eq!(
        report["results"][0]["cost"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn an_unknown_role_or_model_is_refused_before_anything_runs() {
    let env = TestEnv::new();
    env.config("models:\n  clever: smollm2-135m\n");
    let out = env
        .agent()
        .args(["run", "--json", "g"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model role `clever`; the roles are default, smart, fast, judge"),
        "{err}"
    );

    let env = TestEnv::new();
    let default = env.script("default", &[&finish("x")]);
    let out = env
        .agent()
        .args([
            "run", "--json", "--model", &default, "--smart", "gpt-17", "g",
        ])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gpt-17") && err.contains("smollm2-135m"),
        "{err}"
    );
    // Nothing ran: no run was recorded.
    let runs = String::from_utf8(run_stdout(&env, &["runs", "list", "--json"], 0)).unwrap();
    assert_eq!(runs.trim(), "[]", "{runs}");

    // A model entry with a bad price says which role.
    let env = TestEnv::new();
    env.config("models:\n  smart:\n    model: smollm2-135m\n    price_in: -1\n");
    let out = env
        .agent()
        .args(["run", "--json", "g"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the `smart` role has a price"), "{err}");
}

/// A GGUF header shaped like a tiny llama model (no weights: the memory
/// check reads only the header).
fn tiny_gguf(path: &std::path::Path) {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let kvs: [(&str, Option<&str>, u32); 6] = [
        ("general.architecture", Some("llama"), 0),
        ("llama.context_length", None, 4096),
        ("llama.block_count", None, 2),
        ("llama.embedding_length", None, 64),
        ("llama.attention.head_count", None, 4),
        ("llama.attention.head_count_kv", None, 2),
    ];
    b.extend((kvs.len() as u64).to_le_bytes());
    for (key, text, n) in kvs {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        match text {
            Some(t) => {
                b.extend(8u32.to_le_bytes());
                b.extend((t.len() as u64).to_le_bytes());
                b.extend(t.as_bytes());
            }
            None => {
                b.extend(4u32.to_le_bytes());
                b.extend(n.to_le_bytes());
            }
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn local_models_that_do_not_fit_together_are_refused_with_what_each_needs() {
    let env = TestEnv::new();
    let (a, b) = (
        env.root.path().join("a.gguf"),
        env.root.path().join("b.gguf"),
    );
    tiny_gguf(&a);
    tiny_gguf(&b);
    // Each needs about 66 MB (a 64 MB compute buffer, a 1 MB KV cache and
    // the file, rounded up).
    env.config("memory_limit_mb: 100\n");
    let out = env
        .agent()
        .args([
            "run",
            "--json",
            "--model",
            a.to_str().unwrap(),
            "--fast",
            b.to_str().unwrap(),
            "g",
        ])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("do not fit in memory")
            && err.contains("a.gguf needs about 66 MB")
            && err.contains("b.gguf needs about 66 MB")
            && err.contains("(131 MB together), and the limit is 100 MB (memory_limit_mb: 100)"),
        "{err}"
    );
    // One of them alone fits; loading it is what fails then (no weights).
    let out = env
        .agent()
        .args(["run", "--json", "--model", a.to_str().unwrap(), "g"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("do not fit"), "{all}");
}
