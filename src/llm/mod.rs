//! The language models the agents speak through: a local quantized model run with
//! candle (`local`), cloud Qwen over an OpenAI-compatible API (`cloud`), and the
//! router that decides which one answers (`router`).
//!
//! `chat` holds the vocabulary both sides share: messages, requests and answers.

pub mod chat;
pub mod cloud;
pub mod config;
pub mod local;
pub mod redact;
pub mod router;
pub mod service;

pub use chat::{ChatMessage, Completion, Confidence, FinishReason, Role, ToolCall, ToolDefinition, Usage};
