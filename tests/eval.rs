//! `agent eval` end to end on the suite in tests/challenges, with scripted
//! models: challenges that pass and fail, python grading, a timeout, an LLM
//! challenge skipped, the web fixture server, the plan strategy, repeats,
//! and the transcripts kept in the journal.
//!
//! A scripted model answers requests in order across the whole suite, so
//! each test selects challenges with `--filter` and runs them one at a time.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use common::{TestEnv, action};
use serde_json::{Value, json};

fn suite() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/challenges")
}

fn finish(answer: &str) -> String {
    action("finish", json!({"answer": answer}))
}

fn write(path: &str, content: &str) -> String {
    action("write_file", json!({"path": path, "content": content}))
}

/// Run `agent eval` on the suite; returns (exit code, JSON report).
fn eval(env: &TestEnv, model: &str, extra: &[&str]) -> (i32, Value) {
    let suite = suite();
    let mut args = vec!["eval", suite.to_str().unwrap(), "--json", "--model", model];
    args.extend_from_slice(extra);
    let out = env.agent().args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn result<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["challenge"] == name)
        .unwrap_or_else(|| panic!("no result for {name}: {report}"))
}

#[test]
fn file_challenges_pass_and_fail_and_their_runs_are_in_the_journal() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            // WriteFile: done right.
            &write("output.txt", "Washington"),
            &finish("wrote it"),
            // ReadFile: claims success without writing anything.
            &finish("done"),
        ],
    );
    let (code, report) = eval(
        &env,
        &model,
        &["--filter", "WriteFile", "--filter", "ReadFile"],
    );
    assert_eq!(
        code, 3,
        "a failed challenge makes the exit code 3: {report}"
    );
    let w = result(&report, "WriteFile");
    assert_eq!(w["result"], "passed", "{w}");
    assert_eq!(w["steps"], 2);
    assert!(w["tokens"].as_u64().unwrap() > 0);
    assert!(w["stop_reason"].as_str().unwrap().starts_with("finished"));
    let r = result(&report, "ReadFile");
    assert_eq!(r["result"], "failed");
    assert!(
        r["grade"]["outputs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("output.txt"),
        "{r}"
    );
    let t = &report["totals"];
    assert_eq!(
        (t["passed"].as_u64(), t["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["results"].as_array().unwrap().len(), 2);

    // The transcript of each attempt is an ordinary run.
    let run_id = w["run_id"].as_str().unwrap();
    let shown = env
        .agent()
        .args(["runs", "show", "--json", run_id])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        shown["run"]["goal"],
        "Write the word Washington to a file called output.txt"
    );
    assert_eq!(shown["steps"][0]["tool"], "write_file");
}

#[test]
fn the_read_file_challenge_gets_its_input_file_and_the_table_has_totals() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &action("read_file", json!({"path": "file_to_read.txt"})),
            &write("output.txt", "Hello World!\n"),
            &finish("copied"),
        ],
    );
    let suite = suite();
    let out = env
        .agent()
        .args([
            "eval",
            suite.to_str().unwrap(),
            "--model",
            &model,
            "--filter",
            "readfile",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    let header = table.lines().next().unwrap();
    for column in [
        "challenge",
        "result",
        "steps",
        "tokens",
        "seconds",
        "stop reason",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.contains("ReadFile") && table.contains("passed"),
        "{table}"
    );
    assert!(
        table.contains("1 passed, 0 failed, 0 skipped of 1"),
        "{table}"
    );
}

#[test]
fn python_grading_runs_the_challenges_test_code_in_the_workspace() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &write(
                "sample_code.py",
                "def multiply_int(num, multiplier):\n    return num * multiplier\n",
            ),
            &finish("wrote sample_code.py"),
            // Second attempt: a wrong function.
            &write(
                "sample_code.py",
                "def multiply_int(num, multiplier):\n    return num + multiplier\n",
            ),
            &finish("wrote sample_code.py"),
        ],
    );
    let (code, report) = eval(&env, &model, &["--filter", "CodeFunction", "--repeat", "2"]);
    assert_eq!(code, 3);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["attempt"], 1);
    assert_eq!(results[0]["result"], "passed", "{}", results[0]);
    assert_eq!(results[0]["grade"]["outputs"][0]["source"], "test.py");
    assert!(
        results[0]["grade"]["outputs"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Output: all tests passed")
    );
    assert_eq!(results[1]["attempt"], 2);
    assert_eq!(results[1]["result"], "failed");
    let content = results[1]["grade"]["outputs"][0]["content"]
        .as_str()
        .unwrap();
    assert!(
        content.starts_with("Error:") && content.contains("AssertionError"),
        "{content}"
    );
}

#[test]
fn a_challenge_that_runs_out_of_time_fails_as_timed_out() {
    let env = TestEnv::new();
    let model = env.script_yaml(
        "s",
        "responses:\n  - text: '{\"thought\": \"t\", \"tool\": \"finish\", \"args\": {\"answer\": \"late\"}}'\n    delay_ms: 10000\n",
    );
    let started = std::time::Instant::now();
    let (code, report) = eval(&env, &model, &["--filter", "WriteFile", "--timeout", "1"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the timeout was not enforced"
    );
    assert_eq!(code, 3);
    let w = result(&report, "WriteFile");
    assert_eq!(w["result"], "failed");
    assert_eq!(w["timed_out"], true);
    assert_eq!(w["stop_reason"], "timed out after 1 s");
}

#[test]
fn llm_judged_challenges_are_skipped_without_a_judge() {
    let env = TestEnv::new();
    let model = env.script("s", &[]);
    let (code, report) = eval(&env, &model, &["--filter", "JudgeSummary"]);
    assert_eq!(code, 0, "a skipped challenge is not a failure: {report}");
    let j = result(&report, "JudgeSummary");
    assert_eq!(j["result"], "skipped");
    assert!(j["stop_reason"].as_str().unwrap().contains("judge"));
    assert_eq!(report["totals"]["skipped"], 1);
    assert_eq!(report["totals"]["pass_rate"], 0.0);
}

#[test]
fn a_judge_model_grades_llm_challenges() {
    let env = TestEnv::new();
    let summary = "The launch moves to March because the supplier is late. Anna owns the schedule.";
    let model = env.script(
        "s",
        &[
            &write("summary.txt", summary),
            &finish("done"),
            &write("summary.txt", "Nothing happened."),
            &finish("done"),
        ],
    );
    let judge = env.script("judge", &["1", "0"]);
    let (code, report) = eval(
        &env,
        &model,
        &[
            "--filter",
            "JudgeSummary",
            "--repeat",
            "2",
            "--judge",
            &judge,
        ],
    );
    assert_eq!(code, 3);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["result"], "passed", "{}", results[0]);
    assert_eq!(results[1]["result"], "failed");
    assert!(
        results[1]["grade"]["outputs"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("scored it 0.00"),
        "{}",
        results[1]
    );
}

/// Serve tests/challenges/fixture_site on the address WebPrice's task names.
fn fixture_server() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:18765")
        .expect("port 18765 (the WebPrice challenge's fixture server) is in use");
    let server = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let file = suite()
                .join("fixture_site")
                .join(path.trim_start_matches('/'));
            let (status, body) = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => ("200 OK", body),
                _ => ("404 Not Found", b"not found".to_vec()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    listener
}

#[test]
fn the_web_challenge_reads_the_fixture_server_and_the_plan_strategy_solves_it() {
    let _server = fixture_server();
    let env = TestEnv::new();
    env.config("plugins:\n  overrides:\n    web:\n      allow_local: ['127.0.0.1:18765']\n");
    let plan = json!({"thought": "t", "steps": [
        {"description": "read the page", "success_criterion": "the price is known"},
        {"description": "write the price to price.txt", "success_criterion": "price.txt holds it"}
    ]})
    .to_string();
    let model = env.script(
        "s",
        &[
            &plan,
            &action(
                "fetch_page",
                json!({"url": "http://127.0.0.1:18765/book.html"}),
            ),
            &finish("The book costs £25.89"),
            &json!({"thought": "t", "decision": "keep"}).to_string(),
            &write("price.txt", "£25.89"),
            &finish("wrote price.txt"),
            &json!({"thought": "t", "decision": "finish", "answer": "£25.89"}).to_string(),
        ],
    );
    let (code, report) = eval(&env, &model, &["--filter", "web", "--agent", "plan"]);
    assert_eq!(report["strategy"], "plan");
    let w = result(&report, "WebPrice");
    assert_eq!(code, 0, "{w}");
    assert_eq!(w["result"], "passed");
    assert_eq!(w["steps"], 4, "the plan's ReAct steps are counted: {w}");
    // The page the agent fetched really came from the fixture server.
    let run_id = w["run_id"].as_str().unwrap();
    let shown = env
        .agent()
        .args(["runs", "show", "--json", &format!("{run_id}.s1")])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(
        shown["steps"][0]["observation"]
            .as_str()
            .unwrap()
            .contains("£25.89"),
        "{shown}"
    );
}

#[test]
fn parallel_attempts_share_one_model_and_overlap() {
    let env = TestEnv::new();
    // Three slow answers, each a different one: if every attempt had its own
    // model they would all replay the first.
    let response = |answer: &str| {
        format!(
            "  - text: '{}'\n    delay_ms: 2000\n",
            finish(answer).replace('\'', "''")
        )
    };
    let yaml = format!(
        "responses:\n{}{}{}",
        response("a"),
        response("b"),
        response("c")
    );
    let model = env.script_yaml("s", &yaml);
    let started = std::time::Instant::now();
    let (_, report) = eval(
        &env,
        &model,
        &["--filter", "WriteFile", "--repeat", "3", "--parallel", "3"],
    );
    let wall = started.elapsed().as_secs_f64();
    let results = report["results"].as_array().unwrap();
    let attempts: Vec<u64> = results
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3], "results come back in order");
    let mut answers: Vec<&str> = results
        .iter()
        .map(|r| r["answer"].as_str().unwrap())
        .collect();
    answers.sort();
    assert_eq!(answers, ["a", "b", "c"], "{report}");
    let summed = report["totals"]["seconds"].as_f64().unwrap();
    assert!(
        wall < summed * 0.8,
        "attempts did not overlap: {wall:.1} s wall for {summed:.1} s of attempts"
    );
}

#[test]
fn a_filter_that_matches_nothing_names_the_challenges() {
    let env = TestEnv::new();
    let model = env.script("s", &[]);
    let suite = suite();
    let out = env
        .agent()
        .args([
            "eval",
            suite.to_str().unwrap(),
            "--model",
            &model,
            "--filter",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WriteFile") && err.contains("nope"), "{err}");
}
