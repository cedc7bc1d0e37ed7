//! `agent run --agent plan` end to end with scripted models: a plan followed
//! to the end, a revision after a stuck step, the bound on revisions, and a
//! run resumed in the middle of a plan step.
//!
//! A scripted model answers every request in order, whoever asks: the
//! planner, each step's ReAct loop, and the replanner after each step.

use crate::common::{TestEnv, action, events, finished, run_stdout};
use serde_json::{Value, json};

fn plan(steps: &[&str]) -> String {
    let steps: Vec<Value> = steps
        .iter()
        .map(|d| json!({"description": d, "success_criterion": format!("{d} is done")}))
        .collect();
    json!({"thought": "plan it", "steps": steps}).to_string()
}

fn keep() -> String {
    json!({"thought": "on track", "decision": "keep"}).to_string()
}

fn revise(steps: &[&str]) -> String {
    let steps: Vec<Value> = steps
        .iter()
        .map(|d| json!({"description": d, "success_criterion": "done"}))
        .collect();
    json!({"thought": "try another way", "decision": "revise", "steps": steps}).to_string()
}

fn done(answer: &str) -> String {
    json!({"thought": "goal reached", "decision": "finish", "answer": answer}).to_string()
}

fn finish(answer: &str) -> String {
    action("finish", json!({"answer": answer}))
}

fn of_type<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["type"] == kind).collect()
}

#[test]
fn a_plan_is_followed_to_the_end_and_each_step_is_a_journaled_run() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &plan(&["write hi to a.txt", "say what a.txt holds"]),
            // The first step's criterion names a.txt, which did not exist:
            // writing it ends the step, with no `finish` from its loop, and
            // the plan goes on to step 2 without asking the replanner (a
            // replanner call here would take the next answer as its own).
            &action("write_file", json!({"path": "a.txt", "content": "hi"})),
            // Step 2 is about a file: its first action may not be `finish`
            // (the result would be made up), so it reads a.txt, which ends
            // it; the last step goes to the replanner.
            &finish("a.txt holds hi"),
            &action("read_file", json!({"path": "a.txt"})),
            &done("a.txt now holds: hi"),
        ],
    );
    let out = run_stdout(
        &env,
        &["run", "--agent", "plan", "--json", "--model", &model, "g"],
        0,
    );
    let ev = events(&out);
    let created = of_type(&ev, "plan_created");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["steps"].as_array().unwrap().len(), 2);
    assert_eq!(
        created[0]["steps"][0]["success_criterion"],
        "write hi to a.txt is done"
    );
    let started = of_type(&ev, "plan_step_started");
    let ended = of_type(&ev, "plan_step_finished");
    assert_eq!(started.len(), 2);
    assert_eq!(ended.len(), 2);
    assert_eq!(ended[0]["status"], "finished");
    assert_eq!(ended[0]["steps"], 1);
    assert!(
        ended[0]["result"].as_str().unwrap().starts_with(
            "Done (write hi to a.txt is done). The last action, write_file, returned:"
        ),
        "{}",
        ended[0]
    );
    assert_eq!(ended[1]["steps"], 2);
    let refused = of_type(&ev, "invalid_output");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("`finish` is not offered at this step: this plan step works on files"),
        "{}",
        refused[0]
    );
    // The steps' own ReAct events are there, but only one run start and end.
    assert_eq!(of_type(&ev, "run_started").len(), 1);
    assert_eq!(of_type(&ev, "run_finished").len(), 1);
    assert!(of_type(&ev, "step").len() >= 2);
    let end = finished(&ev);
    assert_eq!(end["status"], "finished");
    assert_eq!(end["answer"], "a.txt now holds: hi");
    assert_eq!(end["steps"], 3, "the run counts every step's ReAct steps");
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("a.txt")).unwrap(),
        "hi"
    );

    // Each plan step is an ordinary run in the journal, named after the plan run.
    let run_id = ev[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(started[1]["run_id"], format!("{run_id}.s2"));
    let shown = run_stdout(
        &env,
        &["runs", "show", "--json", &format!("{run_id}.s1")],
        0,
    );
    let shown: Value = serde_json::from_slice(&shown).unwrap();
    assert_eq!(shown["run"]["status"], "finished");
    assert_eq!(shown["steps"][0]["tool"], "write_file");
    assert!(
        shown["run"]["goal"]
            .as_str()
            .unwrap()
            .contains("Do only step 1 now: write hi to a.txt")
    );
    // The plan run itself shows its steps' runs, in order.
    let shown = run_stdout(&env, &["runs", "show", "--json", &run_id], 0);
    let shown: Value = serde_json::from_slice(&shown).unwrap();
    let children = shown["children"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    assert_eq!(children[0]["run"]["id"], format!("{run_id}.s1"));
    assert_eq!(children[0]["steps"][0]["tool"], "write_file");
    env.agent()
        .args(["runs", "show", &run_id])
        .assert()
        .success()
        .stdout(predicates::str::contains(format!("plan step {run_id}.s2")));
}

#[test]
fn a_stuck_step_leads_to_a_revision_that_reaches_the_goal() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &plan(&["read notes.txt"]),
            // The step's loop gets stuck: three invalid outputs in a row.
            "not json",
            "still not json",
            "[]",
            &revise(&["answer from what is known"]),
            &finish("notes.txt does not exist"),
            &done("There are no notes."),
        ],
    );
    let out = run_stdout(
        &env,
        &["run", "--agent", "plan", "--json", "--model", &model, "g"],
        0,
    );
    let ev = events(&out);
    let ended = of_type(&ev, "plan_step_finished");
    assert_eq!(ended[0]["status"], "stopped");
    assert!(
        ended[0]["result"].as_str().unwrap().contains("invalid"),
        "{}",
        ended[0]
    );
    assert!(
        of_type(&ev, "notice")
            .iter()
            .any(|n| n["message"].as_str().unwrap().contains("replanning"))
    );
    let revised = of_type(&ev, "plan_revised");
    assert_eq!(revised.len(), 1);
    assert_eq!(revised[0]["revision"], 1);
    assert_eq!(revised[0]["done"], 1);
    assert_eq!(
        revised[0]["steps"][1]["description"],
        "answer from what is known"
    );
    assert_eq!(ended[1]["status"], "finished");
    assert_eq!(finished(&ev)["answer"], "There are no notes.");
}

#[test]
fn revisions_are_bounded() {
    let env = TestEnv::new();
    let mut script = vec![plan(&["try"])];
    for _ in 0..4 {
        script.push(finish("no luck"));
        script.push(revise(&["try again"]));
    }
    let refs: Vec<&str> = script.iter().map(String::as_str).collect();
    let model = env.script("s", &refs);
    let out = run_stdout(
        &env,
        &["run", "--agent", "plan", "--json", "--model", &model, "g"],
        3,
    );
    let ev = events(&out);
    assert_eq!(of_type(&ev, "plan_revised").len(), 3);
    assert_eq!(of_type(&ev, "plan_step_started").len(), 4);
    let end = finished(&ev);
    assert_eq!(end["status"], "stopped");
    assert!(end["reason"].as_str().unwrap().contains("3 times"), "{end}");
}

#[test]
fn a_resumed_plan_run_continues_inside_its_current_step() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            // A criterion without a file name: the step's model ends it.
            &plan(&["write hi", "report"]),
            &action("write_file", json!({"path": "a.txt", "content": "hi"})),
            // After the resume:
            &finish("wrote a.txt"),
            &keep(),
            &finish("reported"),
            &done("all done"),
        ],
    );
    // One step of budget: the first plan step is cut off after its first action.
    let out = run_stdout(
        &env,
        &[
            "run",
            "--agent",
            "plan",
            "--json",
            "--max-steps",
            "1",
            "--model",
            &model,
            "g",
        ],
        3,
    );
    let ev = events(&out);
    let end = finished(&ev);
    assert_eq!(end["status"], "budget_exhausted");
    assert_eq!(end["steps"], 1);
    let run_id = ev[0]["run_id"].as_str().unwrap().to_string();

    let out = run_stdout(
        &env,
        &["runs", "resume", "--json", "--max-steps", "10", &run_id],
        0,
    );
    let ev = events(&out);
    assert_eq!(ev[0]["type"], "run_started");
    assert_eq!(ev[0]["resumed_after"], 1);
    // No new plan: the run goes on with step 1 in the same child run.
    assert!(of_type(&ev, "plan_created").is_empty());
    let started = of_type(&ev, "plan_step_started");
    assert_eq!(started[0]["number"], 1);
    assert_eq!(started[0]["run_id"], format!("{run_id}.s1"));
    assert_eq!(started[1]["number"], 2);
    let end = finished(&ev);
    assert_eq!(end["status"], "finished");
    assert_eq!(end["answer"], "all done");
    assert_eq!(end["steps"], 3);
    // The file was written once (the write was not repeated).
    let shown = run_stdout(
        &env,
        &["runs", "show", "--json", &format!("{run_id}.s1")],
        0,
    );
    let shown: Value = serde_json::from_slice(&shown).unwrap();
    let tools: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tool"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(tools, ["write_file", "finish"]);
}

#[test]
fn a_replanner_that_finishes_before_the_goals_outputs_exist_is_kept_going() {
    let env = TestEnv::new();
    let step = |d: &str, c: &str| json!({"description": d, "success_criterion": c});
    // The first criterion names no file: the step's model ends it, and the
    // replanner reviews it.
    let plan = json!({"thought": "two files", "steps": [
        step("write hi to a.txt", "the greeting is written"),
        step("write bye to b.txt", "b.txt holds bye"),
    ]})
    .to_string();
    let model = env.script(
        "s",
        &[
            &plan,
            &action("write_file", json!({"path": "a.txt", "content": "hi"})),
            &finish("wrote the greeting"),
            // Too early: b.txt is not written yet.
            &done("both written"),
            &action("write_file", json!({"path": "b.txt", "content": "bye"})),
        ],
    );
    let out = run_stdout(
        &env,
        &[
            "run",
            "--agent",
            "plan",
            "--json",
            "--model",
            &model,
            "Write hi to a.txt and write bye to b.txt",
        ],
        0,
    );
    let ev = events(&out);
    let notice = of_type(&ev, "notice")
        .into_iter()
        .find(|n| n["message"].as_str().unwrap().contains("would finish"))
        .expect("a notice that the plan goes on");
    assert!(
        notice["message"]
            .as_str()
            .unwrap()
            .contains("b.txt does not exist yet; going on with step 2"),
        "{notice}"
    );
    let end = finished(&ev);
    assert_eq!(end["status"], "finished", "{end}");
    // Both outputs there: the plan ends without asking the replanner again.
    assert!(
        end["answer"]
            .as_str()
            .unwrap()
            .starts_with("a.txt, b.txt exist as the goal asks. Done (b.txt holds bye)."),
        "{end}"
    );
    // The second step ended when its file existed, without a `finish`.
    assert_eq!(end["steps"], 3);
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("b.txt")).unwrap(),
        "bye"
    );
}

#[test]
fn a_plan_that_would_finish_with_the_goals_output_missing_gets_a_step_for_it() {
    let env = TestEnv::new();
    let plan = json!({"thought": "one step", "steps": [
        {"description": "think about it", "success_criterion": "it is thought through"}
    ]})
    .to_string();
    let model = env.script(
        "s",
        &[
            &plan,
            &finish("thought about it"),
            // Too early: out.txt is not written, and no step is left.
            &done("done"),
            &action("write_file", json!({"path": "out.txt", "content": "hi"})),
        ],
    );
    let out = run_stdout(
        &env,
        &[
            "run",
            "--agent",
            "plan",
            "--json",
            "--model",
            &model,
            "Write hi to out.txt",
        ],
        0,
    );
    let ev = events(&out);
    let revised = of_type(&ev, "plan_revised");
    assert_eq!(revised.len(), 1, "{ev:?}");
    assert!(
        revised[0]["steps"][1]["description"]
            .as_str()
            .unwrap()
            .contains("out.txt does not exist yet"),
        "{}",
        revised[0]
    );
    assert_eq!(finished(&ev)["status"], "finished");
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("out.txt")).unwrap(),
        "hi"
    );
}

/// WriteFile as plan mode ran it on 2026-12-02: step 1 wrote output.txt,
/// and steps 2 and 3 went on until the time ran out. Once the goal's
/// outputs are there and pass their checks, the plan ends; a goal that
/// asks for more after them ("then read it back") goes on.
#[test]
fn a_plan_ends_when_the_goals_outputs_are_done() {
    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &plan(&[
                "write Washington to output.txt",
                "check output.txt",
                "report",
            ]),
            &action(
                "write_file",
                json!({"path": "output.txt", "content": "Washington"}),
            ),
        ],
    );
    let goal = "Write the word Washington to a file called output.txt";
    let ev = plan_run(&env, &model, goal);
    assert_eq!(of_type(&ev, "plan_step_started").len(), 1, "{ev:?}");
    let end = finished(&ev);
    assert_eq!(end["status"], "finished", "{end}");
    assert!(
        end["answer"]
            .as_str()
            .unwrap()
            .starts_with("output.txt exists as the goal asks."),
        "{end}"
    );

    let env = TestEnv::new();
    let model = env.script(
        "s",
        &[
            &plan(&["write hi to a.txt", "read a.txt back"]),
            &action("write_file", json!({"path": "a.txt", "content": "hi"})),
            &action("read_file", json!({"path": "a.txt"})),
            &done("a.txt holds hi"),
        ],
    );
    let goal = "Write hi to a.txt, then read it back";
    let ev = plan_run(&env, &model, goal);
    assert_eq!(of_type(&ev, "plan_step_started").len(), 2, "{ev:?}");
    assert_eq!(finished(&ev)["answer"], "a.txt holds hi");
}

/// A plan that ran out of steps with the goal's output still wrong gets a
/// step for what is missing, as a finish does, while revisions remain.
#[test]
fn a_plan_that_runs_out_with_the_output_wrong_gets_a_step_for_it() {
    let env = TestEnv::new();
    std::fs::write(env.workspace.join("in.txt"), "Hello World!\n").unwrap();
    let model = env.script(
        "s",
        &[
            &plan(&["think it through"]),
            &action(
                "write_file",
                json!({"path": "out.txt", "content": ">>> content <<<"}),
            ),
            &finish("wrote it"),
            // The plan is out of steps: keep would end it.
            &keep(),
            &action(
                "write_file",
                json!({"path": "out.txt", "content": "Hello World!"}),
            ),
        ],
    );
    let goal = "Read the file called in.txt and write its content to a file called out.txt";
    let ev = plan_run(&env, &model, goal);
    let revised = of_type(&ev, "plan_revised");
    assert_eq!(revised.len(), 1, "{ev:?}");
    assert!(
        revised[0]["steps"][1]["description"]
            .as_str()
            .unwrap()
            .contains("out.txt does not hold the text of in.txt"),
        "{}",
        revised[0]
    );
    assert_eq!(finished(&ev)["status"], "finished");
}

/// The events of `agent run --agent plan --json` of `goal` with `model`,
/// which must exit 0.
fn plan_run(env: &TestEnv, model: &str, goal: &str) -> Vec<Value> {
    let out = run_stdout(
        env,
        &["run", "--agent", "plan", "--json", "--model", model, goal],
        0,
    );
    events(&out)
}

/// FixBug under plan-and-execute: what the goal states the code returns
/// is run before the plan ends, and a result that differs becomes a step.
#[test]
fn a_plan_runs_the_result_its_goal_states_before_it_ends() {
    let env = TestEnv::new();
    std::fs::write(
        env.workspace.join("stats.py"),
        "def average(numbers):\n    return sum(numbers) / (len(numbers) - 1)\n",
    )
    .unwrap();
    let plan = json!({"thought": "fix it", "steps": [
        {"description": "fix average in stats.py", "success_criterion": "stats.py is fixed"}
    ]})
    .to_string();
    let model = env.script(
        "s",
        &[
            &plan,
            &action(
                "write_file",
                json!({"path": "stats.py", "content": "def average(numbers):\n    return sum(numbers) / (len(numbers) + 1)\n"}),
            ),
            // The outputs are there, but the stated result is not: the
            // plan does not end, and a finish gets a step.
            &done("fixed"),
            &action(
                "write_file",
                json!({"path": "stats.py", "content": "def average(numbers):\n    return sum(numbers) / len(numbers)\n"}),
            ),
        ],
    );
    let goal = "The function average in stats.py has a bug: average([2, 4, 6]) should return 4 but it does not. Fix the bug and save the fixed code in stats.py";
    let out = run_stdout(
        &env,
        &[
            "run", "--agent", "plan", "--json", "--yes", "--model", &model, goal,
        ],
        0,
    );
    let ev = events(&out);
    let revised = of_type(&ev, "plan_revised");
    assert_eq!(revised.len(), 1, "{ev:?}");
    assert!(
        revised[0]["steps"][1]["description"]
            .as_str()
            .unwrap()
            .contains("average([2, 4, 6]) with stats.py returns 3.0"),
        "{}",
        revised[0]
    );
    assert_eq!(finished(&ev)["status"], "finished");
}
