//! The OpenAI-compatible backend against a mock server on 127.0.0.1 that
//! records every request: streaming, the request's schema and key, retries,
//! cancellation, timeouts and the mapping of server errors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::model::openai::{OpenAiBackend, OpenAiConfig, RetryPolicy};
use agent::model::{ChatMessage, CompletionRequest, ModelBackend, ModelError, Usage};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What the mock answers to one request.
enum Reply {
    /// 200 with these SSE payloads, `delay` apart.
    Sse {
        events: Vec<String>,
        delay: Duration,
    },
    /// A status with headers and a body.
    Status {
        code: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, then close the connection without answering.
    Hangup,
    /// Read the request, then say nothing for this long.
    Stall(Duration),
}

#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Mock {
    async fn start(replies: Vec<Reply>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let queue = queue.clone();
                tokio::spawn(async move { serve(sock, seen, queue).await });
            }
        });
        Self { base, seen }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<Recorded>>>,
    queue: Arc<Mutex<VecDeque<Reply>>>,
) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut tmp).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Recorded {
        path,
        headers,
        body,
    });
    let reply = queue.lock().unwrap().pop_front();
    match reply {
        Some(Reply::Sse { events, delay }) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for e in events {
                if sock
                    .write_all(format!("data: {e}\n\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = sock.flush().await;
                tokio::time::sleep(delay).await;
            }
        }
        Some(Reply::Status {
            code,
            headers,
            body,
        }) => {
            let mut r = format!(
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                r.push_str(&format!("{k}: {v}\r\n"));
            }
            r.push_str("\r\n");
            r.push_str(&body);
            let _ = sock.write_all(r.as_bytes()).await;
        }
        Some(Reply::Hangup) => return,
        Some(Reply::Stall(d)) => {
            tokio::time::sleep(d).await;
            return;
        }
        None => {
            let _ = sock
                .write_all(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    }
    let _ = sock.shutdown().await;
}

fn delta(text: &str) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}).to_string()
}

fn usage_event(p: u64, c: u64) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}).to_string()
}

fn ok_stream(pieces: &[&str]) -> Reply {
    let mut events: Vec<String> = pieces.iter().map(|p| delta(p)).collect();
    events.push(usage_event(12, pieces.len() as u64));
    events.push("[DONE]".into());
    Reply::Sse {
        events,
        delay: Duration::from_millis(5),
    }
}

fn status(code: u16, body: Value) -> Reply {
    Reply::Status {
        code,
        headers: vec![],
        body: body.to_string(),
    }
}

fn config(base: &str) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(
        base,
        "test-model",
        "AGENT_TEST_OPENAI_KEY_THAT_IS_NEVER_SET",
    );
    c.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    };
    c.request_timeout = Duration::from_secs(20);
    c
}

fn request(schema: Option<Value>) -> CompletionRequest {
    CompletionRequest {
        messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hi")],
        max_tokens: 64,
        temperature: 0.0,
        json_schema: schema,
    }
}

async fn complete(
    backend: &OpenAiBackend,
    req: CompletionRequest,
) -> (Result<agent::model::Completion, ModelError>, Vec<String>) {
    let tokens = Mutex::new(Vec::new());
    let sink = |t: &str| tokens.lock().unwrap().push(t.to_string());
    let r = backend
        .complete(req, &sink, &CancellationToken::new())
        .await;
    (r, tokens.into_inner().unwrap())
}

#[tokio::test]
async fn tokens_stream_in_order_and_the_request_carries_schema_and_key() {
    let pieces = ["{\"thought\":", " \"hi\",", " \"tool\": \"finish\"}"];
    let mut events: Vec<String> = pieces.iter().map(|p| delta(p)).collect();
    events.push(usage_event(12, 3));
    events.push("[DONE]".into());
    let mock = Mock::start(vec![Reply::Sse {
        events,
        delay: Duration::from_millis(150),
    }])
    .await;
    let mut cfg = config(&mock.base);
    cfg.api_key = Some("sk-test-123".into());
    let backend = OpenAiBackend::new(cfg).unwrap();
    let schema =
        json!({"type": "object", "properties": {"tool": {"type": "string"}}, "required": ["tool"]});

    let started = Instant::now();
    let first_at = Mutex::new(None);
    let tokens = Mutex::new(Vec::new());
    let sink = |t: &str| {
        first_at.lock().unwrap().get_or_insert(started.elapsed());
        tokens.lock().unwrap().push(t.to_string());
    };
    let done = backend
        .complete(
            request(Some(schema.clone())),
            &sink,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let total = started.elapsed();

    assert_eq!(tokens.into_inner().unwrap(), pieces);
    assert_eq!(done.text, pieces.concat());
    assert_eq!(
        done.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 3
        }
    );
    // The first token was handed on while the server was still sending.
    let first = first_at.into_inner().unwrap().unwrap();
    assert!(
        total - first >= Duration::from_millis(250),
        "first token at {first:?}, done at {total:?}"
    );

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-123"));
    assert_eq!(r.body["model"], "test-model");
    assert_eq!(r.body["stream"], true);
    assert_eq!(r.body["stream_options"]["include_usage"], true);
    assert_eq!(
        r.body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(
        r.body["messages"][1],
        json!({"role": "user", "content": "hi"})
    );
    assert_eq!(r.body["response_format"]["type"], "json_schema");
    assert_eq!(r.body["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(r.body["response_format"]["json_schema"]["strict"], true);
}

#[tokio::test]
async fn an_unset_key_variable_means_no_authorization_header() {
    let mock = Mock::start(vec![ok_stream(&["ok"])]).await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert_eq!(r.unwrap().text, "ok");
    let reqs = mock.requests();
    assert!(reqs[0].header("authorization").is_none());
    assert!(
        reqs[0].body.get("response_format").is_none(),
        "no schema, no response_format"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_then_succeeds() {
    let mock = Mock::start(vec![
        Reply::Status {
            code: 429,
            headers: vec![("Retry-After", "1".into())],
            body: "{}".into(),
        },
        ok_stream(&["a", "b"]),
    ])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let started = Instant::now();
    let (r, tokens) = complete(&backend, request(None)).await;
    assert_eq!(r.unwrap().text, "ab");
    assert_eq!(tokens, ["a", "b"]);
    assert_eq!(mock.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured"
    );
}

#[tokio::test]
async fn persistent_429_becomes_rate_limited_after_the_retries() {
    let busy = || Reply::Status {
        code: 429,
        headers: vec![("Retry-After", "0".into())],
        body: "{}".into(),
    };
    let mock = Mock::start(vec![busy(), busy(), busy(), busy()]).await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(
        matches!(
            r,
            Err(ModelError::RateLimited {
                retry_after_secs: Some(0)
            })
        ),
        "{r:?}"
    );
    assert_eq!(mock.requests().len(), 3, "one try and two retries");
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_at_once() {
    let mock = Mock::start(vec![Reply::Status {
        code: 429,
        headers: vec![("Retry-After", "3600".into())],
        body: "{}".into(),
    }])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(
        matches!(
            r,
            Err(ModelError::RateLimited {
                retry_after_secs: Some(3600)
            })
        ),
        "{r:?}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_and_hangups_are_retried() {
    let mock = Mock::start(vec![
        status(503, json!({"error": {"message": "loading"}})),
        Reply::Hangup,
        ok_stream(&["fine"]),
    ])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert_eq!(r.unwrap().text, "fine");
    assert_eq!(mock.requests().len(), 3);

    let mock = Mock::start(vec![
        status(500, json!({"error": {"message": "boom"}})),
        status(500, json!({"error": {"message": "boom"}})),
        status(500, json!({"error": {"message": "boom"}})),
    ])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(
        matches!(&r, Err(ModelError::BadResponse(m)) if m.contains("500") && m.contains("boom")),
        "{r:?}"
    );
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn a_404_is_model_not_found_without_retries() {
    let mock = Mock::start(vec![status(
        404,
        json!({"error": {"message": "The model `test-model` does not exist"}}),
    )])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(
        matches!(&r, Err(ModelError::ModelNotFound(m)) if m.contains("test-model")),
        "{r:?}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_endpoint_unreachable_at_once() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let backend = OpenAiBackend::new(config(&base)).unwrap();
    let started = Instant::now();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(
        matches!(&r, Err(ModelError::EndpointUnreachable { url, .. }) if *url == base),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn context_overflow_is_context_too_long_with_the_numbers() {
    let mock = Mock::start(vec![status(
        400,
        json!({"error": {"message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4936 in the messages, 64 in the completion).", "code": "context_length_exceeded"}}),
    )])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(
        matches!(
            r,
            Err(ModelError::ContextTooLong {
                limit: 4096,
                requested: 5000
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_server_rejecting_each_schema_form_is_asked_again_without_it() {
    let mock = Mock::start(vec![
        status(
            400,
            json!({"error": {"message": "response_format of type json_schema is not supported"}}),
        ),
        status(
            422,
            json!({"error": {"message": "response_format.schema: extra fields not permitted"}}),
        ),
        ok_stream(&["{}"]),
        ok_stream(&["{}"]),
    ])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(Some(json!({"type": "object"})))).await;
    assert_eq!(r.unwrap().text, "{}");
    // What worked is remembered: the next request goes without a schema at once.
    let (r, _) = complete(&backend, request(Some(json!({"type": "object"})))).await;
    assert_eq!(r.unwrap().text, "{}");
    let reqs = mock.requests();
    assert_eq!(reqs[0].body["response_format"]["type"], "json_schema");
    assert_eq!(reqs[1].body["response_format"]["type"], "json_object");
    assert!(reqs[2].body.get("response_format").is_none());
    assert!(reqs[3].body.get("response_format").is_none());
    assert_eq!(reqs.len(), 4);
}

#[tokio::test]
async fn a_500_naming_the_schema_moves_to_json_object_with_the_schema_and_remembers_it() {
    // llama-cpp-python's server answers the OpenAI form with a 500.
    let mock = Mock::start(vec![
        status(
            500,
            json!({"error": {"message": "1 validation error for response_format: json_schema"}}),
        ),
        ok_stream(&["{\"a\":1}"]),
        ok_stream(&["{\"a\":2}"]),
    ])
    .await;
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(Some(schema.clone()))).await;
    assert_eq!(r.unwrap().text, "{\"a\":1}");
    // A second backend for the same endpoint in this process knows too.
    let again = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&again, request(Some(schema.clone()))).await;
    assert_eq!(r.unwrap().text, "{\"a\":2}");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].body["response_format"]["type"], "json_schema");
    for r in &reqs[1..] {
        assert_eq!(r.body["response_format"]["type"], "json_object");
        assert_eq!(r.body["response_format"]["schema"], schema);
    }
}

#[tokio::test]
async fn without_usage_the_deltas_are_counted() {
    let events = vec![delta("a"), delta("b"), delta("c"), "[DONE]".to_string()];
    let mock = Mock::start(vec![Reply::Sse {
        events,
        delay: Duration::ZERO,
    }])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    let c = r.unwrap();
    assert_eq!(c.usage.completion_tokens, 3);
    assert!(c.usage.prompt_tokens > 0, "prompt tokens are estimated");
}

#[tokio::test]
async fn garbage_in_the_stream_is_bad_response() {
    let mock = Mock::start(vec![Reply::Sse {
        events: vec!["not json at all".into()],
        delay: Duration::ZERO,
    }])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(matches!(r, Err(ModelError::BadResponse(_))), "{r:?}");
}

#[tokio::test]
async fn cancellation_stops_a_stream_promptly() {
    let events: Vec<String> = (0..50).map(|i| delta(&format!("t{i} "))).collect();
    let mock = Mock::start(vec![Reply::Sse {
        events,
        delay: Duration::from_millis(100),
    }])
    .await;
    let backend = OpenAiBackend::new(config(&mock.base)).unwrap();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let sink = move |_: &str| c2.cancel();
    let started = Instant::now();
    let r = backend.complete(request(None), &sink, &cancel).await;
    assert!(matches!(r, Err(ModelError::Cancelled)), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let mock = Mock::start(vec![Reply::Stall(Duration::from_secs(10))]).await;
    let mut cfg = config(&mock.base);
    cfg.request_timeout = Duration::from_millis(400);
    let backend = OpenAiBackend::new(cfg).unwrap();
    let started = Instant::now();
    let (r, _) = complete(&backend, request(None)).await;
    assert!(matches!(r, Err(ModelError::Timeout(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// An endpoint can take a role beside a local (here scripted) default
/// model: the step after a refused finish goes to it, with the role's model
/// id and key, and its calls are priced in the cost account.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_takes_the_smart_role_and_its_calls_are_priced() {
    let write = json!({"thought": "write it", "tool": "write_file", "args": {"path": "a.txt", "content": "hi"}}).to_string();
    let mock = Mock::start(vec![ok_stream(&[&write])]).await;
    let env = crate::common::TestEnv::new();
    env.config(&format!(
        "models:\n  smart:\n    model: served-smart\n    endpoint: {}\n    api_key_env: ROLE_KEY\n    price_in: 1000\n    price_out: 2000\n",
        mock.base
    ));
    let finish =
        |a: &str| json!({"thought": "t", "tool": "finish", "args": {"answer": a}}).to_string();
    let model = env.script("default", &[&finish("done"), &finish("a.txt holds hi")]);
    let out = tokio::task::spawn_blocking(move || {
        let out = env
            .agent()
            .env("ROLE_KEY", "sk-role")
            .args([
                "run",
                "--json",
                "--yes",
                "--model",
                &model,
                "Write hi to a.txt",
            ])
            .output()
            .unwrap();
        (env, out)
    })
    .await
    .unwrap();
    let (env, out) = out;
    let ev = crate::common::events(&out.stdout);
    let end = crate::common::finished(&ev);
    assert_eq!(end["status"], "finished", "{end}");
    assert_eq!(
        std::fs::read_to_string(env.workspace.join("a.txt")).unwrap(),
        "hi"
    );
    let seen = mock.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["model"], "served-smart");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-role"));
    let smart = end["cost"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["roles"] == json!(["smart"]))
        .unwrap_or_else(|| panic!("{end}"));
    // 12 prompt tokens at 1000 and 1 completion token at 2000 per million.
    assert_eq!(smart["prompt_tokens"], 12);
    assert_eq!(smart["completion_tokens"], 1);
    let money = smart["money"].as_f64().unwrap();
    assert!(
        (money - (12.0 * 1000.0 + 2000.0) / 1e6).abs() < 1e-9,
        "{smart}"
    );
}
