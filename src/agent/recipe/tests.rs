//! The recipe kit in process, with a recording scripted model: what the
//! model is shown (instructions, earlier chain outputs, the judge's
//! candidates), the depth limit and the budget a called recipe gets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::agent::AgentSettings;
use crate::memory::{RunJournal, Store};
use crate::model::Role;
use crate::model::roles::RoleModels;
use crate::model::scripted::ScriptedBackend;
use crate::recipe::format::Parameter;
use crate::recipe::{Provide, Recipe, Source};

struct Given;

impl Provide for Given {
    fn read_file(&self, path: &str) -> Result<String, String> {
        Err(format!("no {path}"))
    }
    fn ask(&self, _p: &Parameter) -> Option<String> {
        None
    }
}

struct Kit {
    _dir: tempfile::TempDir,
    kit: Arc<RecipeKit>,
    model: Arc<ScriptedBackend>,
}

fn agent_settings() -> AgentSettings {
    AgentSettings {
        max_steps: 10,
        max_tokens: 1_000_000,
        step_tokens: 256,
        timeout: Duration::from_secs(60),
        model_timeout: Duration::from_secs(10),
        temperature: 0.0,
        samples: 1,
        sample_temperature: 0.7,
        past_examples: 0,
        repeat_resamples: 0,
        observation_chars: 4000,
        context_tokens: 8192,
        workspace: None,
        instructions: None,
    }
}

fn kit(responses: &[&str]) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let journal = RunJournal::new(&store).unwrap();
    let model = Arc::new(ScriptedBackend::from_texts(responses.to_vec()).recording());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let parts = AgentParts::new(
        &RoleModels::single(model.clone()),
        Arc::new(ToolRegistry::new()),
        journal,
        tx,
        agent_settings(),
    );
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let settings = RunSettings {
        model: "scripted".into(),
        max_steps: 10,
        max_tokens: 1_000_000,
        timeout_secs: 60,
        workspace: ws.display().to_string(),
        ..Default::default()
    };
    let kit = Arc::new(RecipeKit {
        parts,
        settings,
        tools: Vec::new(),
        checker: None,
        prompts: PromptLibrary::new(&dir.path().join("prompts")),
        plans: None,
        library: Library::new(dir.path(), dir.path()),
        open_model: None,
        opened: Default::default(),
    });
    Kit {
        _dir: dir,
        kit,
        model,
    }
}

fn loaded(yaml: &str) -> Loaded {
    Loaded {
        name: "t".into(),
        source: Source::Path,
        path: None,
        recipe: Recipe::parse(yaml, "t.yaml").unwrap(),
    }
}

fn values(l: &Loaded, pairs: &[(&str, &str)]) -> Values {
    let given = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    l.recipe.bind(&given, &BTreeMap::new(), &Given).unwrap()
}

fn call(id: &str) -> Call {
    Call {
        id: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_instructions_are_in_the_system_message_and_the_prompt_is_the_goal() {
    let k = kit(&[r#"{"thought": "t", "tool": "finish", "args": {"answer": "ok"}}"#]);
    let l = loaded(
        "title: t\ninstructions: Answer in {{ lang }}.\nprompt: Greet {{ who }}.\nparameters: [{key: lang}, {key: who}]",
    );
    let v = values(&l, &[("lang", "French"), ("who", "Ada")]);
    let out = k
        .kit
        .run(&l, &v, call("r1"), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Finished);
    let seen = k.model.seen();
    assert_eq!(seen[0][0].role, Role::System);
    assert!(
        seen[0][0].content.ends_with(
            "Instructions for this task (from the recipe the user runs):\nAnswer in French."
        ),
        "{}",
        seen[0][0].content
    );
    assert!(
        seen[0][1].content.contains("Goal: Greet Ada."),
        "{:?}",
        seen[0][1]
    );
    let recorded = out.run.settings.recipe.unwrap();
    assert_eq!(recorded.params["who"], "Ada");
    assert_eq!(recorded.instructions.as_deref(), Some("Answer in French."));
}

#[tokio::test]
async fn a_chain_shows_each_step_the_outputs_before_it_and_a_judge_picks() {
    let k = kit(&[
        "Owls hunt at night.",
        r#"{"title": "A"}"#,
        r#"{"title": "B"}"#,
        r#"{"best": 2}"#,
    ]);
    let l = loaded(
        r#"
title: t
kind: chain
instructions: You write about {{ topic }}.
parameters: [{key: topic}]
steps:
  - {name: fact, prompt: "One fact about {{ topic }}."}
  - name: title
    prompt: "A title for: {{ fact }}"
    output: {json_schema: {type: object, properties: {title: {type: string}}, required: [title]}}
    samples: 2
    select: judge
"#,
    );
    let v = values(&l, &[("topic", "owls")]);
    let out = k
        .kit
        .run(&l, &v, call("c1"), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Finished, "{:?}", out.run);
    assert_eq!(
        out.answer,
        Some(json!({"fact": "Owls hunt at night.", "title": {"title": "B"}}))
    );
    let seen = k.model.seen();
    assert_eq!(seen[0][0].content, "You write about owls.");
    assert!(
        seen[1][1]
            .content
            .starts_with("A title for: Owls hunt at night.")
    );
    assert!(seen[1][1].content.contains("matching this schema"));
    // The judge saw both candidates.
    let judge = &seen[3][1].content;
    assert!(
        judge.contains(r#"Answer 1: {"title":"A"}"#)
            && judge.contains(r#"Answer 2: {"title":"B"}"#),
        "{judge}"
    );
    // Samples vary: drawn above temperature 0.
    assert!(k.model.temperatures()[1] > 0.0);
    let steps = k.kit.parts.journal.steps("c1").unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].votes.as_ref().unwrap().chosen, "judge: answer 2");
}

#[tokio::test]
async fn a_sample_cut_off_at_the_cap_is_asked_again_without_its_runaway_text() {
    let runaway = format!(r#"{{"label": "{}"#, "Mammal-Rod ".repeat(300));
    let k = kit(&[&runaway, r#"{"label": "spam"}"#]);
    let l = loaded(
        r#"
title: t
kind: chain
steps:
  - name: label
    prompt: "Label it."
    output: {json_schema: {type: object, properties: {label: {type: string}}, required: [label]}}
"#,
    );
    let v = values(&l, &[]);
    let out = k
        .kit
        .run(&l, &v, call("c1"), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Finished, "{:?}", out.run);
    assert_eq!(out.answer, Some(json!({"label": {"label": "spam"}})));
    let seen = k.model.seen();
    let again = &seen[1];
    assert!(
        again.iter().all(|m| !m.content.contains("Mammal-Rod")),
        "the runaway answer was shown back: {again:?}"
    );
    assert!(
        again
            .last()
            .is_some_and(|m| m.content.contains("was cut off")),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_resumed_chain_keeps_the_outputs_it_has() {
    let k = kit(&["first", "second"]);
    let l = loaded(
        "title: t\nkind: chain\nsteps:\n  - {name: a, prompt: one}\n  - {name: b, prompt: 'two after {{ a }}'}",
    );
    let v = values(&l, &[]);
    let done = k
        .kit
        .run(&l, &v, call("c1"), &CancellationToken::new())
        .await
        .unwrap();
    // Pretend the process died after step 1: drop step 2 and resume.
    let mut run = done.run.clone();
    run.status = RunStatus::Running;
    run.steps = 1;
    let steps: Vec<StepRecord> = k.kit.parts.journal.steps("c1").unwrap()[..1].to_vec();
    let k2 = kit(&["again"]);
    let again = RecipeKit {
        parts: AgentParts {
            journal: k.kit.parts.journal.clone(),
            ..k2.kit.parts.clone()
        },
        settings: k2.kit.settings.clone(),
        tools: Vec::new(),
        checker: None,
        prompts: k2.kit.prompts.clone(),
        plans: None,
        library: k2.kit.library.clone(),
        open_model: None,
        opened: Default::default(),
    };
    let out = Arc::new(again)
        .resume(&l, &v, run, steps, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.answer, Some(json!({"a": "first", "b": "again"})));
    // Only step 2 was asked again, with step 1's output.
    let seen = k2.model.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0][0].content, "two after first");
}

#[tokio::test]
async fn a_recipe_tool_refuses_past_the_depth_limit_and_shares_the_budget() {
    let k = kit(&[r#"{"thought": "t", "tool": "finish", "args": {"answer": "child done"}}"#]);
    let l = loaded("title: t\nprompt: Do {{ x }}.\nparameters: [{key: x}]");
    let deep = tool::RecipeTool::new(
        tool::Target::Kit(Arc::downgrade(&k.kit)),
        l.clone(),
        "recipe_t".into(),
        None,
        BTreeMap::new(),
        MAX_DEPTH,
    );
    let e = deep
        .call(json!({"x": "it"}), &ToolContext::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only 3 deep"), "{e}");
    // A parent run with 4 of 10 steps used: the child may take 10 - 4 - 2.
    let mut parent = RunRecord::new("p".into(), "g".into(), k.kit.settings.clone());
    parent.steps = 4;
    k.kit.parts.journal.put_run(&parent).unwrap();
    let shallow = tool::RecipeTool::new(
        tool::Target::Kit(Arc::downgrade(&k.kit)),
        l,
        "recipe_t".into(),
        None,
        BTreeMap::new(),
        0,
    );
    let ctx = ToolContext {
        run_id: Some("p".into()),
        step: Some(5),
        ..Default::default()
    };
    let out = shallow.call(json!({"x": "it"}), &ctx).await.unwrap();
    assert!(out.contains("child done") && out.contains("p.r5"), "{out}");
    let child = k.kit.parts.journal.get("p.r5").unwrap().unwrap();
    assert_eq!(child.settings.max_steps, 4);
    assert_eq!(child.settings.recipe.unwrap().depth, 1);
    // A bad argument is told to the model, naming it.
    let e = shallow
        .call(json!({"y": 1}), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown parameter `y`") && e.contains("missing required parameter `x`"),
        "{e}"
    );
}

#[tokio::test]
async fn a_resumed_retry_belongs_to_its_recipe_run() {
    let k = kit(&[r#"{"thought": "t", "tool": "finish", "args": {"answer": "second try"}}"#]);
    let l = loaded("title: t\nprompt: Do it.");
    let v = values(&l, &[]);
    // Attempt 1 ended unverified; attempt 2 was interrupted before a step.
    let mut first = RunRecord::new("b".into(), "Do it.".into(), k.kit.settings.clone());
    first.status = RunStatus::Unverified;
    k.kit.parts.journal.put_run(&first).unwrap();
    let mut settings = k.kit.settings.clone();
    settings.recipe = Some(RecipeRun {
        name: "t".into(),
        attempt: 2,
        ..Default::default()
    });
    let second = RunRecord::new("b.a2".into(), "Do it. (retry)".into(), settings);
    k.kit.parts.journal.put_run(&second).unwrap();
    let out = k
        .kit
        .resume(&l, &v, second, Vec::new(), &CancellationToken::new())
        .await
        .unwrap();
    // The recipe run `b` now says how the whole ended.
    assert_eq!(out.run.id, "b");
    assert_eq!(out.run.status, RunStatus::Finished);
    assert_eq!(out.attempts, 2);
    let stored = k.kit.parts.journal.get("b").unwrap().unwrap();
    assert_eq!(stored.answer.as_deref(), Some("second try"));
    assert!(
        stored
            .stop_reason
            .unwrap()
            .starts_with("attempt 2 (run b.a2)")
    );
}

/// Records which runs ended with a reflection.
#[derive(Default)]
struct Reflections(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl crate::agent::MemoryHook for Reflections {
    async fn recall(&self, _q: &str, _b: usize) -> Vec<crate::agent::Recalled> {
        Vec::new()
    }
    async fn run_ended(
        &self,
        run: &RunRecord,
        _steps: &[StepRecord],
        _model: &dyn crate::model::ModelBackend,
    ) {
        self.0.lock().unwrap().push(run.id.clone());
    }
}

#[tokio::test]
async fn only_an_attempt_whose_checks_pass_leaves_a_lesson() {
    let finish = r#"{"thought": "t", "tool": "finish", "args": {"answer": "done"}}"#;
    let l = loaded(
        "title: t\nprompt: Do it.\nretry: {max_retries: 1, checks: [{type: file, path: out.txt, contains: ok}]}",
    );
    for (present, expected) in [(false, 0), (true, 1)] {
        let mut k = kit(&[finish, finish]);
        let memory = Arc::new(Reflections::default());
        let kit = Arc::get_mut(&mut k.kit).unwrap();
        kit.parts.memory = Some(memory.clone());
        if present {
            std::fs::write(Path::new(&kit.settings.workspace).join("out.txt"), "ok").unwrap();
        }
        let v = values(&l, &[]);
        let out = k
            .kit
            .run(&l, &v, call("r"), &CancellationToken::new())
            .await
            .unwrap();
        let want = if present {
            RunStatus::Finished
        } else {
            RunStatus::Unverified
        };
        assert_eq!(out.run.status, want);
        assert_eq!(
            memory.0.lock().unwrap().len(),
            expected,
            "present: {present}"
        );
    }
}
