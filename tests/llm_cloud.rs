//! The cloud client against a local server that speaks the OpenAI chat completions API (the
//! real endpoint is not reachable from here): a small axum server on loopback, port 0, that
//! checks the bearer key and the request shape as the API does, and plays a script of answers
//! per test: plain and streamed answers (split at awkward byte boundaries), tool calls, 429
//! with `Retry-After`, 5xx until the breaker opens, slow answers, malformed event streams, 401.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use linepilot::llm::cloud::{BreakerState, CloudClient, CloudConfig, CloudError, CompletionOptions, ToolChoice};
use linepilot::llm::{ChatMessage, FinishReason, Role, ToolCall, ToolDefinition, Usage};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const KEY: &str = "sk-test-0123456789abcdef";

/// One scripted answer.
enum Reply {
    /// A JSON body with a status and extra headers.
    Json { status: u16, body: Value, headers: Vec<(&'static str, String)> },
    /// An event stream sent in these chunks, `gap` apart.
    Sse { chunks: Vec<Vec<u8>>, gap: Duration },
    /// A normal answer, after `delay`.
    Slow { delay: Duration, body: Value },
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    authorization: Option<String>,
    accept: Option<String>,
    body: Value,
}

struct Script {
    key: String,
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

struct TestServer {
    base_url: String,
    script: Arc<Script>,
    _dir: tempfile::TempDir,
    key_file: PathBuf,
}

impl TestServer {
    /// A server that accepts `KEY` and plays `replies` in order (a 500 once they run out).
    async fn start(replies: Vec<Reply>) -> TestServer {
        TestServer::start_with_key(KEY, replies).await
    }

    async fn start_with_key(key: &str, replies: Vec<Reply>) -> TestServer {
        let script = Arc::new(Script {
            key: key.to_string(),
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().route("/v1/chat/completions", post(chat_completions)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("qwen_api_key");
        // As systemd credentials and `echo` leave it: with a trailing newline.
        std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
        TestServer { base_url: format!("http://{addr}/v1"), script, _dir: dir, key_file }
    }

    /// A client config for this server; the keys in `extra` (TOML) replace or add to the defaults.
    fn config(&self, extra: &str) -> CloudConfig {
        let base = format!(
            "base_url = \"{}\"\nmodel = \"qwen-max\"\napi_key_file = \"{}\"\nretry_initial_backoff = \"10ms\"\n\
             retry_max_backoff = \"200ms\"\ntimeout = \"5s\"",
            self.base_url,
            self.key_file.display()
        );
        let mut table: toml::Table = toml::from_str(&base).expect("base config");
        table.extend(toml::from_str::<toml::Table>(extra).expect("extra config"));
        toml::Value::Table(table).try_into().expect("config")
    }

    fn client(&self, extra: &str) -> CloudClient {
        CloudClient::new(self.config(extra)).expect("client")
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().expect("lock").clone()
    }
}

async fn chat_completions(State(script): State<Arc<Script>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = header("authorization");
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script.seen.lock().expect("lock").push(Seen {
        authorization: authorization.clone(),
        accept: header("accept"),
        body: parsed.clone(),
    });
    // What the API checks before it answers: the key, then the request's shape.
    let expected = format!("Bearer {}", script.key);
    if authorization.as_deref() != Some(expected.as_str()) {
        let given = authorization.unwrap_or_default();
        let given = given.strip_prefix("Bearer ").unwrap_or(&given);
        return json_reply(
            401,
            &json!({"error": {"code": "invalid_api_key", "message": format!("Incorrect API key provided: {given}")}}),
            &[],
        );
    }
    let shape_ok = parsed["model"].is_string()
        && parsed["messages"].as_array().is_some_and(|m| !m.is_empty())
        && parsed["messages"].as_array().is_some_and(|m| m.iter().all(|x| x["role"].is_string()));
    if !shape_ok {
        return json_reply(
            400,
            &json!({"error": {"code": "invalid_request_error", "message": "bad request body"}}),
            &[],
        );
    }
    let next = script.replies.lock().expect("lock").pop_front();
    match next {
        None => json_reply(500, &json!({"error": {"message": "test script exhausted"}}), &[]),
        Some(Reply::Json { status, body, headers }) => json_reply(status, &body, &headers),
        Some(Reply::Slow { delay, body }) => {
            tokio::time::sleep(delay).await;
            json_reply(200, &body, &[])
        }
        Some(Reply::Sse { chunks, gap }) => {
            let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
                let chunk = it.next()?;
                tokio::time::sleep(gap).await;
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), it))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .expect("response")
        }
    }
}

fn json_reply(status: u16, body: &Value, headers: &[(&'static str, String)]) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from(body.to_string())).expect("response")
}

/// A non-streamed answer as the API sends it.
fn answer(text: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_795_910_400, "model": "qwen-max",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}
    })
}

fn ok(text: &str, prompt_tokens: u32, completion_tokens: u32) -> Reply {
    Reply::Json { status: 200, body: answer(text, prompt_tokens, completion_tokens), headers: vec![] }
}

fn status(code: u16, message: &str) -> Reply {
    Reply::Json { status: code, body: json!({"error": {"code": "x", "message": message}}), headers: vec![] }
}

/// An event stream of these chunk objects, with a keep-alive comment and CRLF line ends, then `[DONE]`.
fn sse_text(chunks: &[Value]) -> String {
    let mut s = String::from(": keep-alive\r\n\r\n");
    for c in chunks {
        s.push_str(&format!("data: {c}\r\n\r\n"));
    }
    s.push_str("data: [DONE]\r\n\r\n");
    s
}

/// Splits `bytes` into pieces of 1, 2, 3, 5, 7 and 11 bytes in turn.
/// Splits `bytes` into chunks of 1, 2, 3, 5, 7, 11, ... bytes, and always also inside the
/// first multi-byte character and between the first CR and its LF (whatever the JSON
/// layout puts where).
fn split_awkwardly(bytes: &[u8]) -> Vec<Vec<u8>> {
    let sizes = [1, 2, 3, 5, 7, 11];
    let mut forced: Vec<usize> = Vec::new();
    if let Some(i) = bytes.iter().position(|&b| b >= 0xC0) {
        forced.push(i + 1);
    }
    if let Some(i) = bytes.windows(2).position(|w| w == b"\r\n") {
        forced.push(i + 1);
    }
    let mut out = Vec::new();
    let mut at = 0;
    for i in 0.. {
        if at >= bytes.len() {
            break;
        }
        let mut end = (at + sizes[i % sizes.len()]).min(bytes.len());
        if let Some(&f) = forced.iter().filter(|&&f| f > at && f < end).min() {
            end = f;
        }
        out.push(bytes[at..end].to_vec());
        at = end;
    }
    out
}

fn text_chunk(text: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "model": "qwen-max",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

fn finish_chunk(reason: &str) -> Value {
    json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn usage_chunk(p: u32, c: u32) -> Value {
    json!({"id": "c", "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You explain line events in two sentences."),
        ChatMessage::user("Why did the filler stop at 10:42?"),
    ]
}

/// Runs a streamed request and collects the deltas handed over.
async fn stream(
    client: &CloudClient,
    opts: &CompletionOptions,
) -> (Result<linepilot::llm::Completion, CloudError>, Vec<String>) {
    let (tx, mut rx) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(d) = rx.recv().await {
            got.push(d);
        }
        got
    });
    let result = client.complete_streaming(&conversation(), opts, tx).await;
    (result, collector.await.expect("collector"))
}

fn read_tag_tool() -> ToolDefinition {
    ToolDefinition {
        name: "read_tag".into(),
        description: "Latest value of a tag".into(),
        parameters: json!({"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]}),
    }
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn plain_answer_with_key_from_file_usage_and_request_shape() {
    let server = TestServer::start(vec![ok("Bowl pressure fell below 2.0 bar.", 21, 8)]).await;
    let client = server.client("");
    let opts = CompletionOptions { max_tokens: Some(200), temperature: Some(0.2), ..Default::default() };
    let done = client.complete(&conversation(), &opts).await.expect("answer");
    assert_eq!(done.text, "Bowl pressure fell below 2.0 bar.");
    assert_eq!(done.model, "qwen-max");
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(done.usage, Usage { prompt_tokens: 21, completion_tokens: 8 });
    assert!(done.tool_calls.is_empty());

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    // The key from the file, newline trimmed, as a bearer token.
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(seen[0].accept.as_deref(), Some("application/json"));
    let body = &seen[0].body;
    assert_eq!(body["model"], "qwen-max");
    assert_eq!(body["stream"], false);
    assert_eq!(body["max_tokens"], 200);
    assert!((body["temperature"].as_f64().expect("temperature") - 0.2).abs() < 1e-6);
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "You explain line events in two sentences."}));
    assert_eq!(body["messages"][1]["role"], Role::User.as_str());
    assert!(body.get("tools").is_none() && body.get("stream_options").is_none(), "{body}");

    let st = client.status();
    assert_eq!((st.requests_total, st.failures_total, st.retries_total), (1, 0, 0));
    assert_eq!((st.prompt_tokens_total, st.completion_tokens_total, st.tokens_used_today), (21, 8, 29));
    assert_eq!(st.breaker, BreakerState::Closed);
}

#[tokio::test]
async fn api_key_from_environment_variable() {
    let var = "LINEPILOT_TEST_QWEN_KEY_ENV";
    std::env::set_var(var, format!("  {KEY}  "));
    let server = TestServer::start(vec![ok("ok", 1, 1)]).await;
    let mut cfg = server.config(&format!("api_key_env = \"{var}\""));
    cfg.api_key_file = None;
    let client = CloudClient::new(cfg).expect("client");
    client.complete(&conversation(), &CompletionOptions::default()).await.expect("answer");
    assert_eq!(server.seen()[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
}

#[tokio::test]
async fn missing_key_fails_at_build_without_a_request() {
    let server = TestServer::start(vec![]).await;
    let mut cfg = server.config("api_key_env = \"LINEPILOT_TEST_QWEN_KEY_UNSET\"");
    cfg.api_key_file = None;
    let err = CloudClient::new(cfg).expect_err("no key");
    assert!(matches!(err, CloudError::MissingApiKey(ref m) if m.contains("LINEPILOT_TEST_QWEN_KEY_UNSET")), "{err}");
    let mut cfg = server.config("");
    cfg.api_key_file = Some(server.key_file.with_file_name("absent"));
    assert!(matches!(CloudClient::new(cfg), Err(CloudError::MissingApiKey(_))));
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn streamed_answer_split_at_awkward_byte_boundaries() {
    let pieces = ["Filler 2 stopped: ", "bowl pressure 压力 fell to ", "1.8 bar ✓ ", "at 10:42."];
    let mut chunks: Vec<Value> = pieces.iter().map(|p| text_chunk(p)).collect();
    chunks.push(finish_chunk("stop"));
    chunks.push(usage_chunk(40, 17));
    let text = sse_text(&chunks);
    let split = split_awkwardly(text.as_bytes());
    // The split must cut inside a multi-byte character and between a CR and its LF.
    let mut at = 0;
    let (mut cut_in_char, mut cut_in_crlf) = (false, false);
    for c in &split[..split.len() - 1] {
        at += c.len();
        cut_in_char |= !text.is_char_boundary(at);
        cut_in_crlf |= text.as_bytes()[at - 1] == b'\r' && text.as_bytes()[at] == b'\n';
    }
    assert!(cut_in_char && cut_in_crlf, "the split does not test what it should");

    let server = TestServer::start(vec![Reply::Sse { chunks: split, gap: Duration::from_millis(1) }]).await;
    let client = server.client("");
    let (result, deltas) = stream(&client, &CompletionOptions::default()).await;
    let done = result.expect("answer");
    let whole: String = pieces.concat();
    assert_eq!(deltas.concat(), whole);
    assert!(deltas.len() >= pieces.len(), "deltas {deltas:?}");
    assert_eq!(done.text, whole);
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(done.usage, Usage { prompt_tokens: 40, completion_tokens: 17 });
    let seen = server.seen();
    assert_eq!(seen[0].body["stream"], true);
    assert_eq!(seen[0].body["stream_options"], json!({"include_usage": true}));
    assert_eq!(seen[0].accept.as_deref(), Some("text/event-stream"));
    assert_eq!(client.status().tokens_used_today, 57);
}

#[tokio::test]
async fn streamed_tool_call_assembled_from_fragments() {
    let frag = |index: u32, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut f = json!({"arguments": args});
        if let Some(n) = name {
            f["name"] = json!(n);
        }
        let mut call = json!({"index": index, "type": "function", "function": f});
        if let Some(id) = id {
            call["id"] = json!(id);
        }
        json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]})
    };
    let chunks = vec![
        text_chunk("Let me check. "),
        frag(0, Some("call_7"), Some("read_tag"), ""),
        frag(0, None, None, "{\"tag\": \"fil"),
        frag(1, Some("call_8"), Some("read_tag"), "{\"tag\": \"capper.torque\"}"),
        frag(0, None, None, "ler.bowl_pressure\"}"),
        finish_chunk("tool_calls"),
        usage_chunk(55, 31),
    ];
    let split = split_awkwardly(sse_text(&chunks).as_bytes());
    let server = TestServer::start(vec![Reply::Sse { chunks: split, gap: Duration::ZERO }]).await;
    let client = server.client("");
    let opts = CompletionOptions { tools: vec![read_tag_tool()], ..Default::default() };
    let (result, deltas) = stream(&client, &opts).await;
    let done = result.expect("answer");
    assert_eq!(deltas.concat(), "Let me check. ");
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        done.tool_calls,
        [
            ToolCall {
                id: "call_7".into(),
                name: "read_tag".into(),
                arguments: r#"{"tag": "filler.bowl_pressure"}"#.into()
            },
            ToolCall { id: "call_8".into(), name: "read_tag".into(), arguments: r#"{"tag": "capper.torque"}"#.into() },
        ]
    );
    let args: Value = serde_json::from_str(&done.tool_calls[0].arguments).expect("arguments are JSON");
    assert_eq!(args["tag"], "filler.bowl_pressure");
    // The tool definition went out as the API expects it, schema untouched.
    let body = &server.seen()[0].body;
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "read_tag");
    assert_eq!(body["tools"][0]["function"]["parameters"], read_tag_tool().parameters);
    assert_eq!(body["tool_choice"], "auto");
}

#[tokio::test]
async fn non_streamed_tool_call() {
    let body = json!({
        "id": "chatcmpl-2", "model": "qwen-max",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "read_tag", "arguments": "{\"tag\":\"filler.speed\"}"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    });
    let server = TestServer::start(vec![Reply::Json { status: 200, body, headers: vec![] }]).await;
    let client = server.client("");
    let opts =
        CompletionOptions { tools: vec![read_tag_tool()], tool_choice: ToolChoice::Required, ..Default::default() };
    let done = client.complete(&conversation(), &opts).await.expect("answer");
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        done.tool_calls,
        [ToolCall { id: "call_1".into(), name: "read_tag".into(), arguments: r#"{"tag":"filler.speed"}"#.into() }]
    );
    assert_eq!(server.seen()[0].body["tool_choice"], "required");
}

#[tokio::test]
async fn rate_limited_then_success_honours_retry_after() {
    let limited = Reply::Json {
        status: 429,
        body: json!({"error": {"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"}}),
        headers: vec![("retry-after", "1".to_string())],
    };
    let server = TestServer::start(vec![limited, ok("fine now", 5, 2)]).await;
    let client = server.client("retry_max_backoff = \"5s\"");
    let t = Instant::now();
    let done = client.complete(&conversation(), &CompletionOptions::default()).await.expect("answer");
    let waited = t.elapsed();
    assert_eq!(done.text, "fine now");
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, before Retry-After");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(server.seen().len(), 2);
    let st = client.status();
    assert_eq!((st.requests_total, st.failures_total, st.retries_total), (2, 1, 1));
    assert_eq!(st.breaker, BreakerState::Closed);
}

#[tokio::test]
async fn retry_after_longer_than_max_backoff_gives_up_at_once() {
    let limited = Reply::Json {
        status: 429,
        body: json!({"error": {"message": "quota"}}),
        headers: vec![("retry-after", "120".to_string())],
    };
    let server = TestServer::start(vec![limited, ok("never asked", 1, 1)]).await;
    let client = server.client("");
    let t = Instant::now();
    let err = client.complete(&conversation(), &CompletionOptions::default()).await.expect_err("rate limited");
    assert!(matches!(err, CloudError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(120)), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn server_errors_open_the_breaker_and_a_trial_closes_it() {
    let replies = vec![status(500, "a"), status(502, "b"), status(503, "c"), ok("back", 3, 3)];
    let server = TestServer::start(replies).await;
    let client = server.client("max_retries = 1\nbreaker_failure_threshold = 3\nbreaker_cooldown = \"400ms\"");
    let opts = CompletionOptions::default();

    // First call: 500, retried, 502.
    let err = client.complete(&conversation(), &opts).await.expect_err("5xx");
    assert!(matches!(err, CloudError::Http { status: 502, .. }), "{err}");
    assert_eq!(client.status().breaker, BreakerState::Closed);
    // Second call: 503 is the third failure in a row; the breaker opens and it is not retried.
    let err = client.complete(&conversation(), &opts).await.expect_err("5xx");
    assert!(
        matches!(err, CloudError::Http { status: 503, ref body_excerpt } if body_excerpt.contains("\"c\"")),
        "{err}"
    );
    assert_eq!(client.status().breaker, BreakerState::Open);
    // Third call: refused unsent.
    let err = client.complete(&conversation(), &opts).await.expect_err("open");
    assert!(matches!(err, CloudError::CircuitOpen { retry_in } if retry_in <= Duration::from_millis(400)), "{err}");
    assert!(err.is_refusal());
    assert_eq!(server.seen().len(), 3);

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(client.status().breaker, BreakerState::HalfOpen);
    let done = client.complete(&conversation(), &opts).await.expect("trial succeeds");
    assert_eq!(done.text, "back");
    let st = client.status();
    assert_eq!(st.breaker, BreakerState::Closed);
    assert_eq!((st.requests_total, st.failures_total, st.retries_total, st.breaker_refusals_total), (4, 3, 1, 1));
}

#[tokio::test]
async fn slow_answer_times_out_and_is_not_retried() {
    let slow = Reply::Slow { delay: Duration::from_secs(3), body: answer("too late", 1, 1) };
    let server = TestServer::start(vec![slow, ok("unused", 1, 1)]).await;
    let client = server.client("timeout = \"300ms\"\nmax_retries = 2");
    let t = Instant::now();
    let err = client.complete(&conversation(), &CompletionOptions::default()).await.expect_err("timeout");
    let took = t.elapsed();
    assert!(matches!(err, CloudError::Timeout { after } if after == Duration::from_millis(300)), "{err}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(server.seen().len(), 1);
    assert_eq!(client.status().failures_total, 1);
}

#[tokio::test]
async fn stalled_stream_times_out_after_the_first_delta() {
    let mut text = sse_text(&[text_chunk("Part one. "), text_chunk("Part two."), finish_chunk("stop")]).into_bytes();
    let tail = text.split_off(text.len() / 2);
    // The first half arrives at once, the rest after the client's timeout.
    let server =
        TestServer::start(vec![Reply::Sse { chunks: vec![text, tail], gap: Duration::from_millis(800) }]).await;
    let client = server.client("timeout = \"1s\"\nmax_retries = 2");
    let (result, deltas) = stream(&client, &CompletionOptions::default()).await;
    let err = result.expect_err("timeout");
    assert!(matches!(err, CloudError::Timeout { .. }), "{err}");
    assert_eq!(deltas, ["Part one. "]);
    assert_eq!(server.seen().len(), 1, "a stream that handed text over is not retried");
}

#[tokio::test]
async fn malformed_event_is_a_typed_error() {
    let mut text = sse_text(&[text_chunk("Hel")]);
    text.insert_str(
        text.find("data: [DONE]").expect("done"),
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"\r\n\r\n",
    );
    let server =
        TestServer::start(vec![Reply::Sse { chunks: split_awkwardly(text.as_bytes()), gap: Duration::ZERO }]).await;
    let client = server.client("");
    let (result, deltas) = stream(&client, &CompletionOptions::default()).await;
    let err = result.expect_err("malformed");
    assert!(matches!(err, CloudError::MalformedStream(ref m) if m.contains("not a chat completion chunk")), "{err}");
    assert_eq!(deltas, ["Hel"]);
}

#[tokio::test]
async fn invalid_utf8_and_truncated_streams_are_typed_errors() {
    let bad_bytes = b"data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n".to_vec();
    let truncated = "data: {\"choices\":[{\"delta\":{\"content\":\"Hal\"}}]}\n\ndata: {\"choices\":[{\"delta\"";
    let server = TestServer::start(vec![
        Reply::Sse { chunks: vec![bad_bytes], gap: Duration::ZERO },
        Reply::Sse { chunks: vec![truncated.as_bytes().to_vec()], gap: Duration::ZERO },
    ])
    .await;
    let client = server.client("");
    let (result, _) = stream(&client, &CompletionOptions::default()).await;
    assert!(matches!(result, Err(CloudError::MalformedStream(ref m)) if m.contains("UTF-8")), "{result:?}");
    let (result, deltas) = stream(&client, &CompletionOptions::default()).await;
    assert!(matches!(result, Err(CloudError::MalformedStream(ref m)) if m.contains("ended")), "{result:?}");
    assert_eq!(deltas, ["Hal"]);
}

#[tokio::test]
async fn wrong_key_is_unauthorized_not_retried_and_not_echoed() {
    let server = TestServer::start_with_key("sk-the-right-one", vec![]).await;
    let client = server.client("max_retries = 3");
    let err = client.complete(&conversation(), &CompletionOptions::default()).await.expect_err("401");
    match &err {
        CloudError::Unauthorized { status, body_excerpt } => {
            assert_eq!(*status, 401);
            assert!(body_excerpt.contains("Incorrect API key provided: <redacted>"), "{body_excerpt}");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(!err.to_string().contains(KEY) && !format!("{err:?}").contains(KEY));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(client.status().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let server = TestServer::start(vec![status(400, "Range of max_tokens should be [1, 8192]")]).await;
    let client = server.client("max_retries = 3\nbreaker_failure_threshold = 1");
    let err = client.complete(&conversation(), &CompletionOptions::default()).await.expect_err("400");
    assert!(matches!(err, CloudError::Http { status: 400, ref body_excerpt } if body_excerpt.contains("max_tokens")));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(client.status().breaker, BreakerState::Closed, "a 400 is an answer from a healthy endpoint");
}

#[tokio::test]
async fn budget_exhausted_refuses_before_sending() {
    let server = TestServer::start(vec![ok("first", 40, 20), ok("second", 1, 1)]).await;
    let client = server.client("daily_token_budget = 50");
    client.complete(&conversation(), &CompletionOptions::default()).await.expect("first answer");
    let err = client.complete(&conversation(), &CompletionOptions::default()).await.expect_err("budget");
    assert!(matches!(err, CloudError::BudgetExhausted { used: 60, budget: 50 }), "{err}");
    assert!(err.is_refusal());
    assert_eq!(server.seen().len(), 1, "nothing sent once the budget is used up");
    let st = client.status();
    assert_eq!((st.tokens_used_today, st.daily_token_budget, st.budget_refusals_total), (60, 50, 1));
}

#[tokio::test]
async fn dropped_receiver_cancels_the_stream() {
    let chunks: Vec<Value> = (0..40).map(|i| text_chunk(&format!("word{i} "))).collect();
    let text = sse_text(&chunks);
    let pieces: Vec<Vec<u8>> = text.split_inclusive("\r\n\r\n").map(|s| s.as_bytes().to_vec()).collect();
    let server = TestServer::start(vec![Reply::Sse { chunks: pieces, gap: Duration::from_millis(20) }]).await;
    let client = server.client("");
    let (tx, mut rx) = mpsc::channel(1);
    let reader = tokio::spawn(async move {
        let first = rx.recv().await;
        drop(rx);
        first
    });
    let t = Instant::now();
    let done = client.complete_streaming(&conversation(), &CompletionOptions::default(), tx).await.expect("answer");
    assert_eq!(reader.await.expect("reader").as_deref(), Some("word0 "));
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    assert!(done.text.starts_with("word0 ") && !done.text.contains("word39"), "{}", done.text);
    assert!(t.elapsed() < Duration::from_millis(600), "the stream ran on after the caller left: {:?}", t.elapsed());
    assert!(client.status().tokens_used_today > 0, "cancelled answers still count against the budget");
}

#[tokio::test]
async fn connect_errors_are_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let server = TestServer::start(vec![]).await;
    let mut cfg = server.config("max_retries = 2");
    cfg.base_url = format!("http://127.0.0.1:{port}/v1");
    let client = CloudClient::new(cfg).expect("client");
    let err = client.complete(&conversation(), &CompletionOptions::default()).await.expect_err("refused");
    assert!(matches!(err, CloudError::Connect(_)), "{err}");
    let st = client.status();
    assert_eq!((st.requests_total, st.failures_total, st.retries_total), (3, 3, 2));
}
