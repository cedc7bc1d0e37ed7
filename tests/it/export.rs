//! `agent runs export` from journals made by scripted runs: SFT records
//! with the exact prompt of each step (checked against a schema), the
//! steps left out and why, a planted key and a secret environment value
//! absent, observations left out on request, and a preference pair from a
//! person's refusal at the approval prompt followed by an accepted action.

use std::time::Duration;

use crate::common::{TestEnv, action, run_stdout};
use serde_json::{Value, json};

const KEY: &str = "sk-live-ABCDEFGHIJKLMNOPQRSTUV";
const TOKEN: &str = "tok-abcdef123456";

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `agent runs export ARGS` in `env` with the secret in its environment:
/// (records, summary).
fn export(env: &TestEnv, args: &[&str]) -> (Vec<Value>, Value) {
    let file = env.root.path().join("data.jsonl");
    let out = env
        .agent()
        .env("MY_SERVICE_TOKEN", TOKEN)
        .args(["runs", "export", "--json", "-o"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(KEY) && !text.contains(TOKEN),
        "a secret left: {text}"
    );
    (lines(&text), summary)
}

/// What every SFT record looks like.
fn sft_schema() -> Value {
    let message = json!({
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"enum": ["system", "user", "assistant"]},
            "content": {"type": "string"}
        },
        "additionalProperties": false
    });
    json!({
        "type": "object",
        "required": ["messages", "metadata"],
        "additionalProperties": false,
        "properties": {
            "messages": {"type": "array", "minItems": 3, "items": message},
            "metadata": {
                "type": "object",
                "required": ["run_id", "step", "status", "model", "source"],
                "properties": {"step": {"type": "integer", "minimum": 1}}
            }
        }
    })
}

#[test]
fn sft_records_carry_each_steps_prompt_and_action_and_no_secret() {
    let env = TestEnv::new();
    env.config("memory:\n  reflect: false\nrepeat_resamples: 0\n");
    std::fs::write(
        env.workspace.join("creds.txt"),
        format!("the key is {KEY} and the token {TOKEN}\n"),
    )
    .unwrap();
    let read = action("read_file", json!({"path": "creds.txt"}));
    let model = env.script(
        "m",
        &[
            "this is not an action",
            &read,
            &read,
            &action("write_file", json!({"path": "out.txt", "content": "done"})),
            &action("finish", json!({"answer": "wrote out.txt"})),
        ],
    );
    let out = env
        .agent()
        .env("MY_SERVICE_TOKEN", TOKEN)
        .args([
            "run",
            "--json",
            "--yes",
            "--model",
            &model,
            "Read creds.txt, then write done to out.txt",
        ])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (records, summary) = export(&env, &["--status", "finished"]);
    let schema = jsonschema::validator_for(&sft_schema()).unwrap();
    for r in &records {
        let errors: Vec<String> = schema.iter_errors(r).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}: {r}");
    }
    // Five steps: the invalid one and the repeat are left out.
    let tools: Vec<String> = records
        .iter()
        .map(|r| {
            let last = r["messages"].as_array().unwrap().last().unwrap();
            assert_eq!(last["role"], "assistant");
            let action: Value = serde_json::from_str(last["content"].as_str().unwrap()).unwrap();
            action["tool"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(tools, ["read_file", "write_file", "finish"]);
    assert_eq!(summary["records"], 3, "{summary}");
    assert_eq!(
        summary["left_out"],
        json!({"invalid_output": 1, "repeated": 1})
    );
    assert_eq!(summary["runs"], 1);
    assert!(summary["tokens"].as_u64().unwrap() > 100, "{summary}");
    assert!(
        summary["redacted_secrets"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    // The prompt is the one the model was given at that step: the system
    // message with the tools, the goal, then the history up to it.
    let write = &records[1];
    assert_eq!(write["metadata"]["step"], 4);
    let messages = write["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("read_file")
    );
    assert!(
        messages[1]["content"]
            .as_str()
            .unwrap()
            .contains("Read creds.txt, then write done")
    );
    let history: String = messages[2..messages.len() - 1]
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(history.contains("this is not an action"), "{history}");
    assert!(
        history.contains("[redacted secret]") && history.contains("[redacted: $MY_SERVICE_TOKEN]"),
        "{history}"
    );
    // The same journal, the tools' output left out on request.
    let (records, summary) = export(&env, &["--redact-observations"]);
    let history: String = records[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        history.contains("the output of read_file is left out") && !history.contains("the key is"),
        "{history}"
    );
    assert!(
        summary["redacted_observations"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    // A filter that matches nothing exports nothing, and says so.
    let (records, summary) = export(&env, &["--since", "2999-01-01"]);
    assert!(records.is_empty());
    assert_eq!(summary["runs"], 0);
    // Bad input is named.
    let out = env
        .agent()
        .args(["runs", "export", "--since", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("YYYY-MM-DD"));
    let out = env
        .agent()
        .args(["runs", "export", "--status", "done"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a run status"));
}

#[test]
fn a_refusal_at_the_approval_prompt_then_an_accepted_action_is_a_preference_pair() {
    let env = TestEnv::new();
    env.config("memory:\n  reflect: false\napprovals:\n  write: ask\n");
    let model = env.script(
        "m",
        &[
            &action(
                "write_file",
                json!({"path": "../notes.txt", "content": "x"}),
            ),
            &action("write_file", json!({"path": "notes.txt", "content": "x"})),
            &action("finish", json!({"answer": "wrote notes.txt"})),
        ],
    );
    let mut cmd = env.agent_std();
    cmd.args(["run", "--model", &model, "Write notes.txt"]);
    let mut run = super::repl::Pty::spawn(cmd);
    run.expect("approve> ", Duration::from_secs(120));
    run.line("n");
    run.expect("approve> ", Duration::from_secs(60));
    run.line("y");
    assert!(run.wait(Duration::from_secs(60)).success());

    let (records, summary) = export(&env, &["--format", "preference"]);
    assert_eq!(records.len(), 1, "{records:?}");
    let pair = &records[0];
    let said = |side: &str| -> Value {
        let m = &pair[side].as_array().unwrap()[0];
        assert_eq!(m["role"], "assistant");
        serde_json::from_str(m["content"].as_str().unwrap()).unwrap()
    };
    assert_eq!(said("rejected")["args"]["path"], "../notes.txt");
    assert_eq!(said("chosen")["args"]["path"], "notes.txt");
    // The prompt is the refused step's: the goal, no history yet.
    let prompt = pair["prompt"].as_array().unwrap();
    assert_eq!(prompt.len(), 2, "{prompt:?}");
    assert_eq!(pair["metadata"]["source"], "approval");
    assert_eq!(pair["metadata"]["step"], 1);
    assert_eq!(summary["records"], 1);
    // The steps themselves say who decided.
    let id = pair["metadata"]["run_id"].as_str().unwrap();
    let shown: Value =
        serde_json::from_slice(&run_stdout(&env, &["runs", "show", id, "--json"], 0)).unwrap();
    assert_eq!(shown["steps"][0]["person"], "declined");
    assert_eq!(shown["steps"][1]["person"], "approved");
}
