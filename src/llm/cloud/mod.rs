//! Cloud Qwen over the OpenAI-compatible chat completions API (DashScope's compatible mode, or
//! any server that speaks the same API).
//!
//! [`CloudClient::complete`] and [`CloudClient::complete_streaming`] send one conversation and
//! return a [`Completion`](crate::llm::Completion) with usage and tool calls. Around each request:
//! the daily token budget (refused unsent when used up), the circuit breaker (refused unsent
//! while open), a total timeout, and retries with exponential backoff and jitter on 429
//! (honouring `Retry-After`), 5xx and connect errors. [`CloudClient::status`] is a cheap snapshot
//! for health and metrics. The API key comes from an environment variable or a file named in
//! [`CloudConfig`], is sent only as `Authorization: Bearer`, and is never logged.
//!
//! Files: `config` (the `[llm.cloud]` section), `client` (requests, retries), `wire` (the JSON
//! of requests, answers and stream chunks), `sse` (event-stream decoding), `breaker`, `budget`,
//! `retry` (backoff, `Retry-After`), `error`.

mod breaker;
mod budget;
mod client;
mod config;
mod error;
mod retry;
pub mod sse;
mod wire;

pub use breaker::BreakerState;
pub use client::{CloudClient, CloudStatus, CompletionOptions, ToolChoice};
pub use config::CloudConfig;
pub use error::CloudError;
