//! `POST /api/v1/llm/complete`: a conversation answered by the router (local model
//! first, cloud Qwen when the policy says so). If the client goes away, the generation
//! is cancelled at its next token: the handler's future is dropped, and with it the
//! worker's reply channel.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::llm::local::{GenerateOptions, Sampling};
use crate::llm::router::{Ask, Task};
use crate::llm::service::{Llm, LocalState};
use crate::llm::ChatMessage;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Token limit of the answer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[serde(default)]
    pub temperature: f32,
    /// Nucleus mass.
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Sampler seed.
    #[serde(default)]
    pub seed: u64,
    /// A JSON schema the local answer must match.
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
    /// `deep` for tasks that need long reasoning.
    #[serde(default)]
    pub deep: bool,
    /// The person asks for the cloud model.
    #[serde(default)]
    pub escalate: bool,
}

fn default_max_tokens() -> usize {
    256
}
fn default_top_p() -> f32 {
    0.95
}

/// The routes.
pub fn router(llm: Llm) -> Router {
    Router::new().route("/api/v1/llm/complete", post(complete)).with_state(llm)
}

async fn complete(State(llm): State<Llm>, Json(req): Json<CompleteRequest>) -> Response {
    if req.messages.is_empty() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "messages must not be empty"}))).into_response();
    }
    let Some(router) = llm.router() else {
        let (code, msg) = match llm.local_state() {
            LocalState::Loading => (StatusCode::SERVICE_UNAVAILABLE, "the local model is still loading".to_string()),
            LocalState::Failed { message } => (StatusCode::SERVICE_UNAVAILABLE, message),
            LocalState::Ready => (StatusCode::INTERNAL_SERVER_ERROR, "no router".to_string()),
        };
        return (code, Json(json!({ "error": msg }))).into_response();
    };
    let ask = Ask {
        messages: req.messages,
        local: GenerateOptions {
            max_tokens: req.max_tokens.clamp(1, 4096),
            sampling: Sampling { temperature: req.temperature, top_p: req.top_p, seed: req.seed },
            json_schema: req.json_schema,
        },
        task: if req.deep { Task::Deep } else { Task::Routine },
        user_requested: req.escalate,
        review_rejections: 0,
    };
    match router.answer(ask).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}
