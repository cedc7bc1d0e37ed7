//! `agent eval` end to end on the suite in tests/challenges, with scripted
//! models: challenges that pass and fail, python grading, a timeout, an LLM
//! challenge skipped, the web fixture server, the plan strategy, repeats,
//! and the transcripts kept in the journal.
//!
//! A scripted model answers requests in order across the whole suite, so
//! each test selects challenges with `--filter` and runs them one at a time.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use crate::common::{TestEnv, action};
use serde_json::{Value, json};

fn suite() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/challenges")
}

/// A `sample_code.py` that passes the CodeFunction challenge.
const MULTIPLY: &str = "def multiply_int(num, multiplier):\n    return num * multiplier\n";

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
            &write("sample_code.py", MULTIPLY),
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
            // "price.txt holds it": writing it ends the step.
            &write("price.txt", "£25.89"),
            &json!({"thought": "t", "decision": "finish", "answer": "£25.89"}).to_string(),
        ],
    );
    let (code, report) = eval(&env, &model, &["--filter", "web", "--agent", "plan"]);
    assert_eq!(report["strategy"], "plan");
    let w = result(&report, "WebPrice");
    assert_eq!(code, 0, "{w}");
    assert_eq!(w["result"], "passed");
    assert_eq!(w["steps"], 3, "the plan's ReAct steps are counted: {w}");
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
    // Six slow answers, each a different one: if every attempt had its own
    // model they would all replay the first two. (Each attempt finishes
    // twice: the first finish is refused, output.txt is missing, and the
    // second ends the attempt unverified with its answer.)
    let response = |answer: &str| {
        format!(
            "  - text: '{}'\n    delay_ms: 1000\n",
            finish(answer).replace('\'', "''")
        )
    };
    let yaml = format!(
        "responses:\n{}",
        ["a", "b", "c", "d", "e", "f"].map(response).concat()
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
    answers.dedup();
    assert_eq!(
        answers.len(),
        3,
        "each attempt drew its own answers: {report}"
    );
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

/// Security case 38: the model plants links in its workspace and code that
/// would act on the host; the grader follows no link out of the workspace,
/// writes the challenge's test over a planted link (not through it), and
/// runs the model's code only inside the sandbox.
#[cfg(unix)]
#[test]
fn case_38_the_grader_follows_no_link_and_runs_model_code_only_in_the_sandbox() {
    let env = TestEnv::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "Washington").unwrap();
    let target = outside.path().join("test.py");
    std::fs::write(&target, "original").unwrap();
    let marker = outside.path().join("ran-on-the-host");
    // A relative link climbs out of the temporary workspace to the root.
    let up = |p: &std::path::Path| format!("{}{}", "../".repeat(30), p.display());
    let link = |name: &str, to: &std::path::Path| {
        action(
            "run_python",
            json!({"code": format!("import os\nos.symlink({:?}, {name:?})\nprint('linked')", up(to))}),
        )
    };
    let sample = format!(
        "try:\n    open({:?}, 'w').write('escaped')\nexcept OSError:\n    pass\n\ndef multiply_int(num, multiplier):\n    return num * multiplier\n",
        marker.display().to_string()
    );
    let model = env.script(
        "s",
        &[
            // WriteFile: output.txt is a link to a host file holding the answer
            // (the agent refuses the first finish too: a link is no output).
            &link("output.txt", &secret),
            &finish("wrote it"),
            &finish("wrote it"),
            // CodeFunction: test.py is a link to a host file; the sample
            // code writes a marker outside the workspace when it can.
            &link("test.py", &target),
            &write("sample_code.py", &sample),
            &finish("wrote sample_code.py"),
        ],
    );
    let (_, report) = eval(
        &env,
        &model,
        &["--filter", "WriteFile", "--filter", "CodeFunction"],
    );
    let write_file = result(&report, "WriteFile");
    assert_eq!(write_file["result"], "failed", "{write_file}");
    let reason = write_file["grade"]["outputs"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("symbolic link"), "{reason}");

    let code = result(&report, "CodeFunction");
    assert_eq!(code["result"], "passed", "the real test ran: {code}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
    assert!(
        !marker.exists(),
        "model-written code ran on the host during grading"
    );
}

/// Host grading stays available, behind a flag that warns.
#[test]
fn unsafe_host_grading_is_explicit_and_warns() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &write("sample_code.py", MULTIPLY),
            &finish("wrote sample_code.py"),
        ],
    );
    let suite = suite();
    let out = env
        .agent()
        .args([
            "eval",
            suite.to_str().unwrap(),
            "--json",
            "--model",
            &model,
            "--filter",
            "CodeFunction",
            "--unsafe-host-grading",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--unsafe-host-grading") && stderr.contains("outside the sandbox"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result(&report, "CodeFunction")["result"],
        "passed",
        "{report}"
    );
}

/// `pytest` challenges are graded in the sandbox by agent's own runner:
/// test functions and `Test*` classes; a test that needs pytest fixtures
/// fails with a reason that names the way out.
#[test]
fn pytest_challenges_run_in_the_sandbox() {
    let env = TestEnv::new();
    let suite = tempfile::tempdir().unwrap();
    let make = |dir: &str, name: &str, tests: &str| {
        let c = suite.path().join(dir);
        std::fs::create_dir_all(c.join("custom_python")).unwrap();
        std::fs::write(
            c.join("data.json"),
            json!({
                "name": name, "category": ["coding"], "task": "Write calc.py with add(a, b).",
                "cutoff": 60, "dependencies": [],
                "ground": {"answer": "", "should_contain": [], "should_not_contain": [],
                           "files": [], "eval": {"type": "pytest"}},
                "info": {}
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(c.join("custom_python/test_calc.py"), tests).unwrap();
    };
    make(
        "1_plain",
        "Plain",
        "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\
         class TestMore:\n    def test_zero(self):\n        assert add(0, 0) == 0\n\n    \
         def test_neg(self):\n        assert add(-1, 1) == 0\n",
    );
    make(
        "2_fixture",
        "Fixture",
        "from calc import add\n\ndef test_tmp(tmp_path):\n    assert add(1, 1) == 2\n",
    );
    let calc = write("calc.py", "def add(a, b):\n    return a + b\n");
    let model = env.script("s", &[&calc, &finish("done"), &calc, &finish("done")]);
    let out = env
        .agent()
        .args([
            "eval",
            suite.path().to_str().unwrap(),
            "--json",
            "--model",
            &model,
        ])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let plain = result(&report, "Plain");
    assert_eq!(plain["result"], "passed", "{plain}");
    let shown = plain["grade"]["outputs"][0]["content"].as_str().unwrap();
    assert!(shown.contains("3 passed, 0 failed"), "{shown}");
    let fixture = result(&report, "Fixture");
    assert_eq!(fixture["result"], "failed", "{fixture}");
    let shown = fixture["grade"]["outputs"][0]["content"].as_str().unwrap();
    assert!(
        shown.contains("needs pytest fixtures") && shown.contains("--unsafe-host-grading"),
        "{shown}"
    );
}

#[test]
fn the_report_counts_unverified_runs_and_compare_judges_a_change_by_the_suite() {
    let env = TestEnv::new();
    // Before: ReadFile claims success twice without writing output.txt.
    let before = env.script(
        "before",
        &[
            &write("output.txt", "Washington"),
            &finish("wrote it"),
            &finish("done"),
            &finish("done, really"),
        ],
    );
    let (_, a) = eval(
        &env,
        &before,
        &["--filter", "WriteFile", "--filter", "ReadFile"],
    );
    let r = result(&a, "ReadFile");
    assert_eq!(
        (r["result"].as_str(), r["status"].as_str()),
        (Some("failed"), Some("unverified")),
        "{r}"
    );
    let t = &a["totals"];
    assert_eq!(t["unverified"], 1, "{t}");
    assert_eq!(t["passed_finished"], 1, "{t}");
    assert_eq!(
        t["finished_failed"], 0,
        "a refused claim is not a finished failure: {t}"
    );
    assert_eq!(a["challenges"].as_array().unwrap().len(), 2, "{a}");

    // After: both done right.
    let after = env.script(
        "after",
        &[
            &write("output.txt", "Washington"),
            &finish("wrote it"),
            &action("read_file", json!({"path": "file_to_read.txt"})),
            &write("output.txt", "Hello World!"),
            &finish("copied"),
        ],
    );
    let (code, b) = eval(
        &env,
        &after,
        &["--filter", "WriteFile", "--filter", "ReadFile"],
    );
    assert_eq!(code, 0, "{b}");
    let dir = tempfile::tempdir().unwrap();
    let (a_file, b_file) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a_file, a.to_string()).unwrap();
    std::fs::write(&b_file, b.to_string()).unwrap();
    let out = env
        .agent()
        .args(["eval", "--compare"])
        .arg(&a_file)
        .arg(&b_file)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("better in B: ReadFile"), "{table}");
    assert!(!table.contains("worse in B"), "{table}");
    assert!(table.contains("over the 2 challenges both ran"), "{table}");

    // A file that is not a report is refused with what to do.
    std::fs::write(&b_file, "not json").unwrap();
    let out = env
        .agent()
        .args(["eval", "--compare"])
        .arg(&a_file)
        .arg(&b_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agent eval DIR --json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_proves_every_grader_of_the_suite_and_names_one_that_passes_a_wrong_answer() {
    let env = TestEnv::new();
    let out = env
        .agent()
        .args(["eval", suite().to_str().unwrap(), "--check", "--json"])
        .output()
        .unwrap();
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(out.status.code(), Some(0), "{checks:#}");
    let checks = checks.as_array().unwrap();
    let proved: Vec<_> = checks
        .iter()
        .filter(|c| c["skipped"].is_null() && c["problems"].as_array().unwrap().is_empty())
        .collect();
    assert!(
        proved.len() >= 15,
        "the suite has at least 15 offline challenges: {checks:?}"
    );
    // Every proved grader failed at least the untouched workspace and one wrong attempt.
    assert!(
        proved.iter().all(|c| c["graded"].as_u64().unwrap() >= 3),
        "{checks:?}"
    );

    // A grader that a wrong answer satisfies is named.
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("1_sum");
    for sub in ["artifacts_out", "artifacts_wrong/prefix"] {
        std::fs::create_dir_all(c.join(sub)).unwrap();
    }
    std::fs::write(
        c.join("data.json"),
        r#"{"name": "Sum", "task": "Write 1+11 to sum.txt", "ground": {"eval": {"type": "file"}, "files": ["sum.txt"], "should_contain": ["12"]}}"#,
    )
    .unwrap();
    std::fs::write(c.join("artifacts_out/sum.txt"), "12").unwrap();
    std::fs::write(c.join("artifacts_wrong/prefix/sum.txt"), "123").unwrap();
    let out = env
        .agent()
        .args(["eval", dir.path().to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("FAILED  Sum: wrong attempt `prefix` passes"),
        "{text}"
    );
}
