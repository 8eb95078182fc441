//! [`CloudClient`]: one chat completion from the cloud model, streamed or not, with retries,
//! the circuit breaker and the daily token budget around each request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::breaker::{Breaker, BreakerState};
use super::budget::Budget;
use super::config::CloudConfig;
use super::error::CloudError;
use super::retry::{backoff, jitter, parse_retry_after};
use super::sse::SseParser;
use super::wire::{parse_response, Request, StreamAssembly, StreamOptions, WireMessage, WireTool};
use crate::llm::chat::{ChatMessage, Completion, ToolDefinition};

/// Largest non-streamed answer body read.
const MAX_BODY_BYTES: usize = 8 << 20;
/// Largest single event of a streamed answer.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// Characters of an error body kept in an error.
const EXCERPT_CHARS: usize = 300;

/// Whether and how the model may call tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the API's default when tools are given).
    #[default]
    Auto,
    /// The model must answer in text.
    None,
    /// The model must call a tool.
    Required,
}

/// Per-request settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompletionOptions {
    /// Most completion tokens; the config's `max_tokens` when not given (and its cap).
    pub max_tokens: Option<u32>,
    /// Sampling temperature; the API's default when not given.
    pub temperature: Option<f32>,
    /// Functions the model may call; their JSON schemas are passed through as they are.
    pub tools: Vec<ToolDefinition>,
    /// How the model may use `tools` (sent only with tools).
    pub tool_choice: ToolChoice,
}

/// A cheap snapshot of the client for health checks and metrics
/// (`linepilot_llm_cloud_<field>` counters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloudStatus {
    /// The configured model.
    pub model: String,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// Prompt plus completion tokens used today (UTC).
    pub tokens_used_today: u64,
    /// The daily token budget.
    pub daily_token_budget: u64,
    /// HTTP requests sent (every attempt, retries included).
    pub requests_total: u64,
    /// Attempts that failed (any error after the request was sent).
    pub failures_total: u64,
    /// Attempts that were retries.
    pub retries_total: u64,
    /// Requests refused unsent because the budget was used up.
    pub budget_refusals_total: u64,
    /// Requests refused unsent because the breaker was open.
    pub breaker_refusals_total: u64,
    /// Prompt tokens of all answers.
    pub prompt_tokens_total: u64,
    /// Completion tokens of all answers.
    pub completion_tokens_total: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    budget_refusals: AtomicU64,
    breaker_refusals: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The API key; never printed.
struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// From `api_key_file` when given, else from the environment variable `api_key_env`.
    fn read(cfg: &CloudConfig) -> Result<ApiKey, CloudError> {
        let key = match &cfg.api_key_file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                CloudError::MissingApiKey(format!("cannot read api_key_file `{}`: {e}", path.display()))
            })?,
            None => std::env::var(&cfg.api_key_env).map_err(|_| {
                CloudError::MissingApiKey(format!(
                    "environment variable `{}` (api_key_env) is not set or not UTF-8",
                    cfg.api_key_env
                ))
            })?,
        };
        let key = key.trim();
        if key.is_empty() {
            let from = match &cfg.api_key_file {
                Some(p) => format!("api_key_file `{}`", p.display()),
                None => format!("environment variable `{}`", cfg.api_key_env),
            };
            return Err(CloudError::MissingApiKey(format!("{from} is empty")));
        }
        Ok(ApiKey(key.to_string()))
    }

    fn header(&self) -> Result<HeaderValue, CloudError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| CloudError::MissingApiKey("the API key has characters not allowed in a header".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// The cloud model client; cheap to clone (one connection pool, breaker and budget shared).
#[derive(Clone, Debug)]
pub struct CloudClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: CloudConfig,
    url: String,
    http: reqwest::Client,
    key: ApiKey,
    auth: HeaderValue,
    breaker: Breaker,
    budget: Budget,
    counters: Counters,
}

impl CloudConfig {
    /// Checks the settings, reads the API key and builds the client (no request is sent).
    pub fn build(&self) -> Result<CloudClient, CloudError> {
        CloudClient::new(self.clone())
    }
}

impl CloudClient {
    /// Checks `cfg`, reads the API key and builds the HTTP client (no request is sent).
    pub fn new(cfg: CloudConfig) -> Result<CloudClient, CloudError> {
        let problems = cfg.check();
        if !problems.is_empty() {
            let text: Vec<String> = problems.into_iter().map(|(k, m)| format!("{k}: {m}")).collect();
            return Err(CloudError::Config(text.join("; ")));
        }
        let key = ApiKey::read(&cfg)?;
        let auth = key.header()?;
        let tls = tls_config(cfg.base_url.starts_with("https://"))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(cfg.connect_timeout.0)
            .timeout(cfg.timeout.0)
            .user_agent(concat!("linepilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CloudError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        let url = format!("{}/chat/completions", cfg.base_url.trim_end_matches('/'));
        Ok(CloudClient {
            inner: Arc::new(Inner {
                url,
                http,
                key,
                auth,
                breaker: Breaker::new(cfg.breaker_failure_threshold, cfg.breaker_cooldown.0),
                budget: Budget::new(cfg.daily_token_budget),
                counters: Counters::default(),
                cfg,
            }),
        })
    }

    /// The configured model name.
    pub fn model(&self) -> &str {
        &self.inner.cfg.model
    }

    /// One answer, not streamed.
    pub async fn complete(&self, messages: &[ChatMessage], opts: &CompletionOptions) -> Result<Completion, CloudError> {
        self.inner.run(messages, opts, None).await
    }

    /// One answer, streamed: each piece of text is sent to `deltas` as it arrives, and the whole
    /// answer (with tool calls, assembled from their fragments) is returned at the end. If the
    /// receiver is dropped the request stops and the answer so far comes back with
    /// `FinishReason::Cancelled`. Once text has been sent the request is not retried.
    pub async fn complete_streaming(
        &self,
        messages: &[ChatMessage],
        opts: &CompletionOptions,
        deltas: mpsc::Sender<String>,
    ) -> Result<Completion, CloudError> {
        self.inner.run(messages, opts, Some(&deltas)).await
    }

    /// Breaker state, today's tokens and the counters.
    pub fn status(&self) -> CloudStatus {
        let i = &self.inner;
        let c = &i.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CloudStatus {
            model: i.cfg.model.clone(),
            breaker: i.breaker.state(Instant::now()),
            tokens_used_today: i.budget.used_today(SystemTime::now()),
            daily_token_budget: i.budget.limit(),
            requests_total: get(&c.requests),
            failures_total: get(&c.failures),
            retries_total: get(&c.retries),
            budget_refusals_total: get(&c.budget_refusals),
            breaker_refusals_total: get(&c.breaker_refusals),
            prompt_tokens_total: get(&c.prompt_tokens),
            completion_tokens_total: get(&c.completion_tokens),
        }
    }
}

impl Inner {
    async fn run(
        &self,
        messages: &[ChatMessage],
        opts: &CompletionOptions,
        deltas: Option<&mpsc::Sender<String>>,
    ) -> Result<Completion, CloudError> {
        if let Err(e) = self.budget.check(SystemTime::now()) {
            bump(&self.counters.budget_refusals, 1);
            return Err(CloudError::BudgetExhausted { used: e.used, budget: e.budget });
        }
        let body = self.request_body(messages, opts, deltas.is_some())?;
        let prompt: String = messages.iter().map(|m| m.content.as_str()).collect();
        let started = Instant::now();
        let mut retry = 0u32;
        let mut emitted = false;
        loop {
            let permit = match self.breaker.try_acquire(Instant::now()) {
                Ok(p) => p,
                Err(retry_in) => {
                    bump(&self.counters.breaker_refusals, 1);
                    return Err(CloudError::CircuitOpen { retry_in });
                }
            };
            bump(&self.counters.requests, 1);
            let outcome = self.attempt(body.clone(), &prompt, deltas, &mut emitted).await;
            let err = match outcome {
                Ok(done) => {
                    permit.success();
                    self.account(&done);
                    debug!(
                        model = %done.model,
                        prompt_tokens = done.usage.prompt_tokens,
                        completion_tokens = done.usage.completion_tokens,
                        latency_ms = started.elapsed().as_millis() as u64,
                        attempts = retry + 1,
                        "Cloud answer"
                    );
                    return Ok(done);
                }
                Err(e) => e,
            };
            bump(&self.counters.failures, 1);
            if err.is_endpoint_failure() {
                permit.failure(Instant::now());
            } else {
                permit.success();
            }
            let breaker_open = self.breaker.state(Instant::now()) == BreakerState::Open;
            if !err.is_retryable() || emitted || retry >= self.cfg.max_retries || breaker_open {
                warn!(error = %err, kind = err.kind(), attempts = retry + 1, "Cloud request failed");
                return Err(err);
            }
            let mut wait = backoff(retry, self.cfg.retry_initial_backoff.0, self.cfg.retry_max_backoff.0, jitter());
            if let CloudError::RateLimited { retry_after: Some(after) } = err {
                if after > self.cfg.retry_max_backoff.0 {
                    warn!(
                        retry_after_s = after.as_secs(),
                        "Cloud rate limit asks for a longer wait than retry_max_backoff"
                    );
                    return Err(err);
                }
                wait = wait.max(after);
            }
            warn!(error = %err, kind = err.kind(), retry = retry + 1, wait_ms = wait.as_millis() as u64, "Cloud request failed, retrying");
            bump(&self.counters.retries, 1);
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    fn request_body(
        &self,
        messages: &[ChatMessage],
        opts: &CompletionOptions,
        stream: bool,
    ) -> Result<Bytes, CloudError> {
        let has_tools = !opts.tools.is_empty();
        let req = Request {
            model: &self.cfg.model,
            messages: messages.iter().map(WireMessage::from_chat).collect(),
            max_tokens: opts.max_tokens.map_or(self.cfg.max_tokens, |n| n.clamp(1, self.cfg.max_tokens)),
            temperature: opts.temperature,
            tools: opts.tools.iter().map(WireTool::from_definition).collect(),
            tool_choice: has_tools.then_some(match opts.tool_choice {
                ToolChoice::Auto => "auto",
                ToolChoice::None => "none",
                ToolChoice::Required => "required",
            }),
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
        };
        serde_json::to_vec(&req)
            .map(Bytes::from)
            .map_err(|e| CloudError::Config(format!("cannot encode the request: {e}")))
    }

    /// One HTTP request and its answer.
    async fn attempt(
        &self,
        body: Bytes,
        prompt: &str,
        deltas: Option<&mpsc::Sender<String>>,
        emitted: &mut bool,
    ) -> Result<Completion, CloudError> {
        let accept = if deltas.is_some() { "text/event-stream" } else { "application/json" };
        let mut resp = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // The body only explains the status: a failure to read it is not the error to report.
            let text = read_limited(&mut resp, 4096).await.unwrap_or_default();
            let body_excerpt = self.excerpt(&text);
            return Err(match status.as_u16() {
                401 | 403 => CloudError::Unauthorized { status: status.as_u16(), body_excerpt },
                429 => CloudError::RateLimited { retry_after },
                s => CloudError::Http { status: s, body_excerpt },
            });
        }
        let is_event_stream = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
        match deltas {
            Some(tx) if is_event_stream => self.read_stream(resp, prompt, tx, emitted).await,
            _ => {
                // Not streamed, or a server that answered a stream request in one piece.
                let body = read_limited(&mut resp, MAX_BODY_BYTES).await.map_err(|e| self.transport_error(&e))?;
                let done = parse_response(&body, &self.cfg.model, prompt)?;
                if let Some(tx) = deltas {
                    if !done.text.is_empty() {
                        *emitted = true;
                        // A receiver that went away has nothing left to miss.
                        let _ = tx.send(done.text.clone()).await;
                    }
                }
                Ok(done)
            }
        }
    }

    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        prompt: &str,
        tx: &mpsc::Sender<String>,
        emitted: &mut bool,
    ) -> Result<Completion, CloudError> {
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut answer = StreamAssembly::default();
        let mut events = Vec::new();
        while !answer.is_done() {
            let chunk = tokio::select! {
                c = resp.chunk() => c.map_err(|e| self.transport_error(&e))?,
                () = tx.closed() => return answer.finish(&self.cfg.model, prompt, true),
            };
            let Some(chunk) = chunk else { break };
            parser.push(&chunk, &mut events)?;
            for ev in events.drain(..) {
                if ev.event.as_deref() == Some("error") {
                    return Err(CloudError::Api {
                        code: "stream_error".into(),
                        message: self.excerpt(ev.data.as_bytes()),
                    });
                }
                let text = answer.apply(&ev.data)?;
                if text.is_empty() {
                    continue;
                }
                *emitted = true;
                if tx.send(text).await.is_err() {
                    return answer.finish(&self.cfg.model, prompt, true);
                }
            }
        }
        answer.finish(&self.cfg.model, prompt, false)
    }

    fn account(&self, done: &Completion) {
        let (p, c) = (u64::from(done.usage.prompt_tokens), u64::from(done.usage.completion_tokens));
        self.budget.record(SystemTime::now(), p + c);
        bump(&self.counters.prompt_tokens, p);
        bump(&self.counters.completion_tokens, c);
    }

    fn transport_error(&self, e: &reqwest::Error) -> CloudError {
        if e.is_connect() {
            CloudError::Connect(error_chain(e))
        } else if e.is_timeout() {
            CloudError::Timeout { after: self.cfg.timeout.0 }
        } else {
            CloudError::Transport(error_chain(e))
        }
    }

    /// The start of an error body as text, with the key removed should the server echo it.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = text.replace(&self.key.0, "<redacted>");
        let mut out: String = text.trim().chars().take(EXCERPT_CHARS).collect();
        if text.trim().chars().count() > EXCERPT_CHARS {
            out.push('…');
        }
        out
    }
}

/// The body, or its first `limit` bytes.
async fn read_limited(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// An error and its sources on one line (reqwest's own message names only the outer layer).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// rustls with the ring provider and the system's trusted roots (needed for https only).
fn tls_config(https: bool) -> Result<rustls::ClientConfig, CloudError> {
    let mut roots = rustls::RootCertStore::empty();
    if https {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(CloudError::Config(
                "https needs the system's trusted certificates and none were found (install ca-certificates)".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CloudError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_never_printed() {
        let k = ApiKey("sk-secret-123".into());
        assert!(!format!("{k:?}").contains("sk-secret"));
        let h = k.header().unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("sk-secret"));
    }

    #[test]
    fn key_with_a_newline_inside_is_refused() {
        assert!(matches!(ApiKey("sk\nx".into()).header(), Err(CloudError::MissingApiKey(_))));
    }

    #[test]
    fn error_chain_names_the_sources() {
        let io = std::io::Error::other("inner cause");
        let outer = CloudError::Config("x".into());
        assert_eq!(error_chain(&io), "inner cause");
        assert_eq!(error_chain(&outer), "cloud model: x");
    }
}
