//! Chat vocabulary shared by the local model, the cloud client and the router.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the gateway (never from plant data).
    System,
    /// The person asking, or the tool results the agent runtime hands over.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in chat templates and in the OpenAI wire format.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What it says.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: Role::System, content: content.into() }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: Role::User, content: content.into() }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: Role::Assistant, content: content.into() }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn (a stop token, or the API said `stop`).
    Stop,
    /// The token limit was reached.
    Length,
    /// The model asked for a tool call.
    ToolCalls,
    /// The caller went away or cancelled.
    Cancelled,
}

/// Token counts of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (for the local model: including a cached prefix).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// How sure the model was of the tokens it chose: the router escalates on low values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Mean natural-log probability of the chosen tokens (0 is certain).
    pub mean_logprob: f32,
    /// The lowest log probability among the chosen tokens.
    pub min_logprob: f32,
}

/// One finished answer, from either model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The text of the answer.
    pub text: String,
    /// Which model wrote it (`smollm2-135m`, `qwen-plus`, ...).
    pub model: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Token log-probabilities, where the model gives them (the local model always does).
    pub confidence: Option<Confidence>,
    /// Functions the model asked the caller to run (with `finish_reason` `ToolCalls`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// A function the caller offers the model (OpenAI `tools` with `type = "function"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The function's name, as the model will call it.
    pub name: String,
    /// What the function does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// One call of a tool the model asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which a tool result refers to.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments as the model wrote them: a JSON object in text, not yet checked against
    /// the tool's schema (the agent runtime parses and checks it).
    pub arguments: String,
}
