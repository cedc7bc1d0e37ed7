use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::format::Parameter;
use super::*;

struct NoOne;

impl Provide for NoOne {
    fn read_file(&self, path: &str) -> Result<String, String> {
        if path == "in.txt" {
            Ok("file text".into())
        } else {
            Err(format!("{path} does not exist"))
        }
    }
    fn ask(&self, _param: &Parameter) -> Option<String> {
        None
    }
}

fn problems(yaml: &str) -> String {
    match Recipe::parse(yaml, "t.yaml") {
        Ok(_) => panic!("expected {yaml} to be refused"),
        Err(e) => e.to_string(),
    }
}

fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

const GOOD: &str = r#"
version: "1.0.0"
title: T
description: d
instructions: Be brief about {{ topic }}.
prompt: Write {{ n }} lines about {{ topic }} on {{ day }} ({{ loud }}, {{ style }}) from {{ src }}.
parameters:
  - {key: topic, input_type: string, requirement: required, description: what}
  - {key: n, input_type: number, requirement: optional, default: 3, description: how many}
  - {key: day, input_type: date, requirement: required, description: when}
  - {key: loud, input_type: boolean, requirement: optional, default: false, description: how}
  - {key: style, input_type: select, requirement: optional, default: plain, options: [plain, fancy], description: s}
  - {key: src, input_type: file, requirement: required, description: input}
"#;

#[test]
fn a_recipe_renders_typed_values_and_file_contents() {
    let r = Recipe::parse(GOOD, "t.yaml").unwrap();
    let values = r
        .bind(
            &given(&[
                ("topic", "owls"),
                ("day", "2026-12-01"),
                ("src", "in.txt"),
                ("n", "5"),
            ]),
            &BTreeMap::new(),
            &NoOne,
        )
        .unwrap();
    let rendered = r.render(&values).unwrap();
    assert_eq!(
        rendered.goal,
        "Write 5 lines about owls on 2026-12-01 (False, plain) from file text."
    );
    assert_eq!(
        rendered.instructions.as_deref(),
        Some("Be brief about owls.")
    );
    assert_eq!(values.shown["src"], "in.txt", "the journal keeps the path");
    assert_eq!(values.context["n"], json!(5));
}

#[test]
fn bad_values_are_named() {
    let r = Recipe::parse(GOOD, "t.yaml").unwrap();
    let bind = |pairs: &[(&str, &str)]| {
        r.bind(&given(pairs), &BTreeMap::new(), &NoOne)
            .unwrap_err()
            .to_string()
    };
    let base = [("topic", "owls"), ("day", "2026-12-01"), ("src", "in.txt")];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.retain(|(k, _)| *k != extra.0);
        v.push(extra);
        v
    };
    let e = bind(&with(("n", "many")));
    assert!(
        e.contains("parameter `n` (number): `many` is not a number"),
        "{e}"
    );
    let e = bind(&with(("day", "tomorrow")));
    assert!(e.contains("`day`") && e.contains("YYYY-MM-DD"), "{e}");
    let e = bind(&with(("style", "loud")));
    assert!(
        e.contains("`style`") && e.contains("one of: plain, fancy"),
        "{e}"
    );
    let e = bind(&with(("loud", "maybe")));
    assert!(e.contains("`loud`") && e.contains("true or false"), "{e}");
    let e = bind(&with(("colour", "red")));
    assert!(e.contains("unknown parameter `colour`"), "{e}");
    let e = bind(&[("day", "2026-12-01"), ("src", "in.txt")]);
    assert!(
        e.contains("missing required parameter `topic` (what)"),
        "{e}"
    );
    let e = bind(&with(("src", "gone.txt")));
    assert!(e.contains("`src` (file): gone.txt does not exist"), "{e}");
}

#[test]
fn pinned_values_win_over_given_ones() {
    let r = Recipe::parse(GOOD, "t.yaml").unwrap();
    let pinned: BTreeMap<String, Value> = [("topic".to_string(), json!("cats"))].into();
    let v = r
        .bind(
            &given(&[("topic", "owls"), ("day", "2026-12-01"), ("src", "in.txt")]),
            &pinned,
            &NoOne,
        )
        .unwrap();
    assert_eq!(v.context["topic"], json!("cats"));
    // And a pinned parameter is not a required argument of the tool.
    let schema = r.args_schema(&pinned);
    let topic = schema["properties"]["topic"]["description"]
        .as_str()
        .unwrap();
    assert!(
        topic.contains("pinned by the recipe to \"cats\""),
        "{schema}"
    );
    assert_eq!(schema["properties"]["n"]["type"], "number");
    assert_eq!(schema["required"], json!(["day", "src"]));
}

#[test]
fn a_user_prompt_parameter_with_nobody_to_ask_is_an_error() {
    let r = Recipe::parse(
        "title: t\nprompt: '{{ who }}'\nparameters: [{key: who, requirement: user_prompt}]",
        "t",
    )
    .unwrap();
    let e = r
        .bind(&BTreeMap::new(), &BTreeMap::new(), &NoOne)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`who` is asked of the user") && e.contains("--param who="),
        "{e}"
    );
}

#[test]
fn every_invalid_recipe_is_refused_with_the_key_named() {
    let cases: &[(&str, &str)] = &[
        ("title: t", "neither `prompt` nor `instructions`"),
        (
            "title: t\nprompt: '{{ x }}'",
            "uses `x`, which is not a declared parameter",
        ),
        (
            "title: t\nprompt: hi\nparameters: [{key: x}]",
            "parameter `x` is declared but no template uses it",
        ),
        (
            "title: t\nprompt: '{{ x }}'\nparameters: [{key: x, requirement: optional}]",
            "optional but has no `default`",
        ),
        (
            "title: t\nprompt: '{{ x }}'\nparameters: [{key: x, input_type: file, default: a.txt}]",
            "cannot have a `default`",
        ),
        (
            "title: t\nprompt: '{{ x }}'\nparameters: [{key: x, input_type: select}]",
            "needs `options`",
        ),
        (
            "title: t\nprompt: '{{ x }}'\nparameters: [{key: x, input_type: number, default: lots}]",
            "the default of parameter `x` (number)",
        ),
        (
            "title: t\nprompt: '{{ x'",
            "`prompt` is not a valid template",
        ),
        (
            "title: t\nprompt: hi\ncolour: red",
            "unknown field `colour`",
        ),
        (
            "title: t\nprompt: hi\nextensions: [{type: stdio, cmd: npx}]",
            "`extensions`",
        ),
        (
            "title: t\nprompt: hi\nsettings: {goose_provider: openai}",
            "`settings.goose_provider`",
        ),
        (
            "title: t\nprompt: hi\nretry: {max_retries: 1, checks: [{type: shell, command: 'make test'}]}",
            "never run on the host shell",
        ),
        (
            "title: t\nprompt: hi\nretry: {max_retries: 1, checks: [{type: file, path: a}], on_failure: 'rm -rf x'}",
            "`retry.on_failure` is a string",
        ),
        (
            "title: t\nprompt: hi\nresponse: {json_schema: {type: 12}}",
            "`response.json_schema` is not a valid JSON schema",
        ),
        ("title: t\nkind: chain", "needs `steps:`"),
        (
            "title: t\nkind: chain\nsteps: [{name: a, prompt: hi, samples: 1, select: vote}]",
            "`steps.a.select` needs `samples` of 2",
        ),
        (
            "title: t\nkind: chain\nsteps: [{name: a, prompt: '{{ b }}'}, {name: b, prompt: hi}]",
            "`steps.a.prompt` uses `b`",
        ),
        (
            "title: t\nkind: chain\nplugins: [files]\nsteps: [{name: a, prompt: hi}]",
            "`plugins` does not apply to a chain",
        ),
        (
            "title: t\nprompt: hi\nsettings: {agent: swarm}",
            "`settings.agent`",
        ),
    ];
    for (yaml, expected) in cases {
        let e = problems(yaml);
        assert!(
            e.contains(expected),
            "{yaml}\n=> {e}\n(expected {expected})"
        );
    }
}

#[test]
fn a_goose_recipe_with_supported_keys_parses_unchanged() {
    let goose = r###"
version: 1.0.0
title: Code Review Assistant
description: Automated code review
author:
  contact: someone
instructions: You are a code reviewer of {{ language }} code.
prompt: Review the code in {{ path }}
extensions: []
activities:
  - Review my last commit
parameters:
  - key: language
    input_type: string
    requirement: optional
    default: Rust
    description: The language
  - key: path
    input_type: string
    requirement: required
    description: What to review
settings:
  temperature: 0.2
  max_turns: 12
response:
  json_schema:
    type: object
    properties:
      issues: {type: array, items: {type: string}}
    required: [issues]
retry:
  max_retries: 2
  timeout_seconds: 60
  checks:
    - type: file
      path: review.md
      contains: "##"
"###;
    let r = Recipe::parse(goose, "goose.yaml").unwrap();
    assert_eq!(r.settings.max_steps, Some(12));
    let v = r
        .bind(&given(&[("path", "src/")]), &BTreeMap::new(), &NoOne)
        .unwrap();
    assert_eq!(r.render(&v).unwrap().goal, "Review the code in src/");
    // goose's desktop format nests the recipe.
    let desktop = format!("name: x\nisGlobal: true\nrecipe:\n{}", indent(goose));
    Recipe::parse(&desktop, "desktop.yaml").unwrap();
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[test]
fn checks_and_pinned_values_render_with_the_parameters() {
    let r = Recipe::parse(
        "title: t\nprompt: 'write {{ out }}'\nparameters: [{key: out}]\nretry: {max_retries: 1, checks: [{type: file, path: '{{ out }}', contains: x}]}\nsub_recipes: [{name: child, path: c.yaml, values: {target: '{{ out }}.bak'}}]",
        "t",
    )
    .unwrap();
    let v = r
        .bind(&given(&[("out", "a.md")]), &BTreeMap::new(), &NoOne)
        .unwrap();
    match &r.rendered_checks(&v).unwrap()[0] {
        Check::File { path, .. } => assert_eq!(path, "a.md"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.pinned(&r.sub_recipes[0], &v).unwrap()["target"],
        json!("a.md.bak")
    );
}

#[test]
fn the_built_in_recipes_and_the_new_template_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new(dir.path(), dir.path());
    let listed = lib.list();
    assert!(listed.len() >= 5);
    for l in &listed {
        assert_eq!(l.source, Source::Builtin);
        if let Err(e) = &l.recipe {
            panic!("built-in {}: {e}", l.name);
        }
    }
    Recipe::parse(&library::template("demo"), "new").unwrap();
}

#[test]
fn the_search_path_prefers_the_project_then_the_user_then_built_ins() {
    let project = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("recipes")).unwrap();
    std::fs::create_dir_all(config.path().join("recipes")).unwrap();
    std::fs::write(
        project.path().join("recipes/classify.yaml"),
        "title: mine\nprompt: hi",
    )
    .unwrap();
    std::fs::write(
        config.path().join("recipes/other.yml"),
        "title: o\nprompt: hi",
    )
    .unwrap();
    std::fs::write(config.path().join("recipes/broken.yaml"), "title: b").unwrap();
    let lib = Library::new(project.path(), config.path());
    let l = lib.load("classify").unwrap();
    assert_eq!(
        (l.source, l.recipe.title.as_str()),
        (Source::Project, "mine")
    );
    assert_eq!(lib.load("other").unwrap().source, Source::User);
    assert_eq!(lib.load("csv-summary").unwrap().source, Source::Builtin);
    let listed = lib.list();
    let broken = listed.iter().find(|l| l.name == "broken").unwrap();
    assert!(broken.recipe.is_err());
    // The user's own: the folders' recipes, not the built-in ones.
    let own: Vec<String> = lib.own().into_iter().map(|l| l.name).collect();
    assert_eq!(own, ["classify", "broken", "other"]);
    let e = lib.load("nope").unwrap_err().to_string();
    assert!(
        e.contains("no recipe `nope`") && e.contains("csv-summary"),
        "{e}"
    );
}

#[test]
fn checks_keep_their_spaces_and_on_failure_is_a_checked_template() {
    let r = Recipe::parse(
        "title: t\nprompt: 'write {{ out }}'\nparameters: [{key: out}]\nretry: {max_retries: 1, checks: [{type: file, path: '{{ out }}', contains: ' - item'}], on_failure: {type: python, code: \"import os\\nos.remove('{{ out }}')\"}}",
        "t",
    )
    .unwrap();
    let v = r
        .bind(&given(&[("out", "a.md")]), &BTreeMap::new(), &NoOne)
        .unwrap();
    match &r.rendered_checks(&v).unwrap()[0] {
        Check::File { contains, .. } => assert_eq!(contains.as_deref(), Some(" - item")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.rendered_on_failure(&v).unwrap().as_deref(),
        Some("import os\nos.remove('a.md')")
    );
    let e = problems(
        "title: t\nprompt: hi\nretry: {max_retries: 1, checks: [{type: file, path: a}], on_failure: {type: python, code: 'print({{ nope }})'}}",
    );
    assert!(e.contains("`retry.on_failure.code` uses `nope`"), "{e}");
}
