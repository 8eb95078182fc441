//! What can go wrong talking to the cloud model.

use std::time::Duration;

use thiserror::Error;

use super::sse::SseError;

/// Errors of the cloud client. The router tells a refusal that costs nothing
/// ([`CloudError::BudgetExhausted`], [`CloudError::CircuitOpen`]) from a failed request with
/// [`CloudError::is_refusal`].
#[derive(Debug, Error)]
pub enum CloudError {
    /// The settings cannot work (bad base URL, no trusted roots for https).
    #[error("cloud model: {0}")]
    Config(String),
    /// No API key: the environment variable is unset or empty, or the key file cannot be read.
    #[error("cloud model: no API key: {0}")]
    MissingApiKey(String),
    /// The endpoint refused the key (401 or 403).
    #[error("cloud model: the API key was refused (HTTP {status}): {body_excerpt}")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The start of the answer's body.
        body_excerpt: String,
    },
    /// Today's token budget is used up; nothing was sent.
    #[error("cloud model: daily token budget used up ({used} of {budget} tokens today, UTC)")]
    BudgetExhausted {
        /// Tokens used today.
        used: u64,
        /// The daily budget.
        budget: u64,
    },
    /// The circuit breaker is open after repeated failures; nothing was sent.
    #[error("cloud model: circuit breaker open after repeated failures, next trial in {:.1} s", retry_in.as_secs_f64())]
    CircuitOpen {
        /// Time until the breaker lets a trial request through.
        retry_in: Duration,
    },
    /// 429 on the last attempt, or a `Retry-After` longer than the client will wait.
    #[error("cloud model: rate limited (HTTP 429){}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// The request took longer than the configured timeout.
    #[error("cloud model: no complete answer within {} ms", after.as_millis())]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// Any other HTTP error status (5xx after the retries, or a 4xx such as 400).
    #[error("cloud model: HTTP {status}: {body_excerpt}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body_excerpt: String,
    },
    /// The endpoint could not be reached (DNS, TCP, TLS).
    #[error("cloud model: cannot connect: {0}")]
    Connect(String),
    /// The connection failed after the request was sent.
    #[error("cloud model: transport error: {0}")]
    Transport(String),
    /// The event stream is not what the API sends: bad bytes, bad JSON, or it ended early.
    #[error("cloud model: malformed event stream: {0}")]
    MalformedStream(String),
    /// A non-streamed answer that is not the API's JSON.
    #[error("cloud model: malformed answer: {0}")]
    MalformedResponse(String),
    /// The API reported an error inside an answer with status 200 (e.g. in the event stream).
    #[error("cloud model: API error {code}: {message}")]
    Api {
        /// The API's error code or type.
        code: String,
        /// The API's message.
        message: String,
    },
}

impl From<SseError> for CloudError {
    fn from(e: SseError) -> Self {
        CloudError::MalformedStream(e.to_string())
    }
}

impl CloudError {
    /// True for refusals that sent nothing and cost nothing (budget, breaker): the router falls
    /// back to the local model without counting a cloud failure.
    pub fn is_refusal(&self) -> bool {
        matches!(self, CloudError::BudgetExhausted { .. } | CloudError::CircuitOpen { .. })
    }

    /// Whether another attempt may succeed: 429, 5xx and connect errors.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            CloudError::RateLimited { .. } | CloudError::Connect(_) => true,
            CloudError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether the failure says the endpoint is unwell (counts toward opening the breaker);
    /// a 400 or 401 is an answer from a healthy endpoint.
    pub(crate) fn is_endpoint_failure(&self) -> bool {
        match self {
            CloudError::RateLimited { .. }
            | CloudError::Timeout { .. }
            | CloudError::Connect(_)
            | CloudError::Transport(_)
            | CloudError::MalformedStream(_)
            | CloudError::MalformedResponse(_)
            | CloudError::Api { .. } => true,
            CloudError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// A short stable name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CloudError::Config(_) => "config",
            CloudError::MissingApiKey(_) => "missing_api_key",
            CloudError::Unauthorized { .. } => "unauthorized",
            CloudError::BudgetExhausted { .. } => "budget_exhausted",
            CloudError::CircuitOpen { .. } => "circuit_open",
            CloudError::RateLimited { .. } => "rate_limited",
            CloudError::Timeout { .. } => "timeout",
            CloudError::Http { .. } => "http",
            CloudError::Connect(_) => "connect",
            CloudError::Transport(_) => "transport",
            CloudError::MalformedStream(_) => "malformed_stream",
            CloudError::MalformedResponse(_) => "malformed_response",
            CloudError::Api { .. } => "api",
        }
    }
}
