//! The OpenAI chat completions wire format (as Qwen's compatible mode speaks it): the request
//! body, the non-streamed answer, and the assembly of a streamed answer from its chunks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::CloudError;
use crate::llm::chat::{ChatMessage, Completion, FinishReason, ToolCall, ToolDefinition, Usage};

/// Request body of `POST {base_url}/chat/completions`.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'a str>,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Serialize)]
pub struct WireMessage<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

#[derive(Debug, Serialize)]
pub struct WireTool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
pub struct WireFunction<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub parameters: &'a Value,
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

impl<'a> WireMessage<'a> {
    pub fn from_chat(m: &'a ChatMessage) -> WireMessage<'a> {
        WireMessage { role: m.role.as_str(), content: &m.content }
    }
}

impl<'a> WireTool<'a> {
    pub fn from_definition(t: &'a ToolDefinition) -> WireTool<'a> {
        WireTool {
            kind: "function",
            function: WireFunction { name: &t.name, description: &t.description, parameters: &t.parameters },
        }
    }
}

// ---------------------------------------------------------------------------
// Answers

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireCall>,
}

#[derive(Debug, Deserialize)]
struct WireCall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// `{"error": {"code": ..., "message": ...}}`, as OpenAI and DashScope send it.
#[derive(Debug, Deserialize)]
pub struct WireError {
    #[serde(default)]
    code: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl WireError {
    fn into_error(self) -> CloudError {
        let code = match self.code {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => self.kind.unwrap_or_else(|| "unknown".to_string()),
            Some(other) => other.to_string(),
        };
        CloudError::Api { code, message: self.message.unwrap_or_default() }
    }
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => {
            tracing::warn!(finish_reason = s, "Cloud model answer stopped by its content filter");
            FinishReason::Stop
        }
        _ => FinishReason::Stop,
    }
}

/// Rough token count of text whose usage the API did not report (about 4 bytes a token for
/// English, 1-2 characters for Chinese: count characters / 2 to stay on the safe side).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(2)).unwrap_or(u32::MAX)
}

/// Parses a non-streamed answer.
pub fn parse_response(body: &[u8], default_model: &str, prompt: &str) -> Result<Completion, CloudError> {
    let r: Response = serde_json::from_slice(body).map_err(|e| CloudError::MalformedResponse(e.to_string()))?;
    if let Some(e) = r.error {
        return Err(e.into_error());
    }
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| CloudError::MalformedResponse("answer has no choices".to_string()))?;
    let message = choice.message.ok_or_else(|| CloudError::MalformedResponse("choice has no message".into()))?;
    let text = message.content.unwrap_or_default();
    let mut tool_calls = Vec::with_capacity(message.tool_calls.len());
    for (i, c) in message.tool_calls.into_iter().enumerate() {
        let f = c.function.ok_or_else(|| CloudError::MalformedResponse(format!("tool call {i} has no function")))?;
        let name = f.name.filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| CloudError::MalformedResponse(format!("tool call {i} has no function name")))?;
        tool_calls.push(ToolCall { id: c.id.unwrap_or_default(), name, arguments: f.arguments.unwrap_or_default() });
    }
    let usage = match r.usage {
        Some(u) => Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens },
        None => Usage { prompt_tokens: estimate_tokens(prompt), completion_tokens: estimate_tokens(&text) },
    };
    let finish = match choice.finish_reason.as_deref() {
        Some(s) => finish_reason(s),
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    Ok(Completion {
        text,
        model: r.model.unwrap_or_else(|| default_model.to_string()),
        finish_reason: finish,
        usage,
        confidence: None,
        tool_calls,
    })
}

/// A tool call being assembled from stream fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Builds the final answer from the chunks of a stream.
#[derive(Debug, Default)]
pub struct StreamAssembly {
    model: Option<String>,
    text: String,
    calls: BTreeMap<u32, PartialCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamAssembly {
    /// Takes one event's data; returns the text it adds (empty if none).
    pub fn apply(&mut self, data: &str) -> Result<String, CloudError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(String::new());
        }
        if self.done {
            return Err(CloudError::MalformedStream("data after [DONE]".to_string()));
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            let excerpt: String = data.chars().take(80).collect();
            CloudError::MalformedStream(format!("event is not a chat completion chunk ({e}): {excerpt}"))
        })?;
        if let Some(e) = chunk.error {
            return Err(e.into_error());
        }
        if chunk.model.is_some() {
            self.model = chunk.model;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens });
        }
        let mut added = String::new();
        for choice in chunk.choices {
            if let Some(delta) = choice.delta {
                if let Some(c) = delta.content {
                    added.push_str(&c);
                }
                for (pos, frag) in delta.tool_calls.into_iter().enumerate() {
                    let index = frag.index.unwrap_or(pos as u32);
                    let call = self.calls.entry(index).or_default();
                    if let Some(id) = frag.id.filter(|id| !id.is_empty()) {
                        if call.id.is_empty() {
                            call.id = id;
                        }
                    }
                    if let Some(f) = frag.function {
                        if let Some(name) = f.name.filter(|n| !n.is_empty()) {
                            // Some servers repeat the whole name in each fragment, others split it.
                            if call.name != name {
                                call.name.push_str(&name);
                            }
                        }
                        if let Some(args) = f.arguments {
                            call.arguments.push_str(&args);
                        }
                    }
                }
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.finish = Some(finish_reason(reason));
            }
        }
        self.text.push_str(&added);
        Ok(added)
    }

    /// True once `[DONE]` arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The answer so far, for a stream that ended (`[DONE]` or a finish reason), or that the
    /// caller cancelled (`cancelled`). Tokens the API did not report are estimated.
    pub fn finish(self, default_model: &str, prompt: &str, cancelled: bool) -> Result<Completion, CloudError> {
        let finish_reason = if cancelled {
            FinishReason::Cancelled
        } else {
            match (self.finish, self.done) {
                (Some(f), _) => f,
                (None, true) if !self.calls.is_empty() => FinishReason::ToolCalls,
                (None, true) => FinishReason::Stop,
                (None, false) => {
                    return Err(CloudError::MalformedStream("stream ended before the answer did".to_string()))
                }
            }
        };
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, c) in self.calls {
            if c.name.is_empty() && !cancelled {
                return Err(CloudError::MalformedStream(format!("tool call {index} has no function name")));
            }
            tool_calls.push(ToolCall { id: c.id, name: c.name, arguments: c.arguments });
        }
        let usage = self.usage.unwrap_or_else(|| {
            let args: usize = tool_calls.iter().map(|c| c.arguments.len() + c.name.len()).sum();
            Usage {
                prompt_tokens: estimate_tokens(prompt),
                completion_tokens: estimate_tokens(&self.text).saturating_add(u32::try_from(args / 2).unwrap_or(0)),
            }
        });
        Ok(Completion {
            text: self.text,
            model: self.model.unwrap_or_else(|| default_model.to_string()),
            finish_reason,
            usage,
            confidence: None,
            tool_calls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_streamed_answer_with_tool_call() {
        let body = br#"{"id":"x","model":"qwen-plus","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_tag","arguments":"{\"tag\":\"filler.bowl_pressure\"}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        let c = parse_response(body, "fallback", "").unwrap();
        assert_eq!(c.text, "");
        assert_eq!(c.model, "qwen-plus");
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(c.usage, Usage { prompt_tokens: 12, completion_tokens: 7 });
        assert_eq!(
            c.tool_calls,
            [ToolCall {
                id: "call_1".into(),
                name: "read_tag".into(),
                arguments: r#"{"tag":"filler.bowl_pressure"}"#.into()
            }]
        );
    }

    #[test]
    fn non_streamed_errors_are_typed() {
        assert!(matches!(parse_response(b"<html>", "m", ""), Err(CloudError::MalformedResponse(_))));
        assert!(matches!(parse_response(br#"{"choices":[]}"#, "m", ""), Err(CloudError::MalformedResponse(_))));
        let e = parse_response(br#"{"error":{"code":"Throttling","message":"slow down"}}"#, "m", "").unwrap_err();
        assert!(matches!(e, CloudError::Api { ref code, .. } if code == "Throttling"), "{e:?}");
    }

    #[test]
    fn stream_assembles_text_tool_calls_and_usage() {
        let mut a = StreamAssembly::default();
        let chunks = [
            r#"{"model":"qwen-max","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Checking "}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"read_","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"tag","arguments":"{\"tag\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"oee","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"arguments":"\"x\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":9}}"#,
            "[DONE]",
        ];
        let mut text = String::new();
        for c in chunks {
            text.push_str(&a.apply(c).unwrap());
        }
        assert_eq!(text, "Checking ");
        assert!(a.is_done());
        let c = a.finish("m", "", false).unwrap();
        assert_eq!(c.model, "qwen-max");
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(c.usage, Usage { prompt_tokens: 30, completion_tokens: 9 });
        let calls: Vec<(&str, &str, &str)> =
            c.tool_calls.iter().map(|t| (t.id.as_str(), t.name.as_str(), t.arguments.as_str())).collect();
        assert_eq!(calls, [("call_a", "read_tag", r#"{"tag":"x"}"#), ("call_b", "oee", "{}")]);
    }

    #[test]
    fn stream_problems_are_typed() {
        let mut a = StreamAssembly::default();
        assert!(matches!(a.apply(r#"{"choices":[{"delta":{"content":"ok"#), Err(CloudError::MalformedStream(_))));
        let mut a = StreamAssembly::default();
        a.apply(r#"{"choices":[{"delta":{"content":"half"}}]}"#).unwrap();
        assert!(matches!(a.finish("m", "", false), Err(CloudError::MalformedStream(_))));
        let mut a = StreamAssembly::default();
        let e = a.apply(r#"{"error":{"code":"InternalError","message":"boom"}}"#).unwrap_err();
        assert!(matches!(e, CloudError::Api { .. }));
        let mut a = StreamAssembly::default();
        a.apply("[DONE]").unwrap();
        assert!(a.apply(r#"{"choices":[]}"#).is_err());
    }

    #[test]
    fn missing_usage_is_estimated() {
        let mut a = StreamAssembly::default();
        a.apply(r#"{"choices":[{"delta":{"content":"abcdefgh"},"finish_reason":"stop"}]}"#).unwrap();
        let c = a.finish("qwen-plus", "0123456789", false).unwrap();
        assert_eq!(c.usage, Usage { prompt_tokens: 5, completion_tokens: 4 });
        assert_eq!(c.model, "qwen-plus");
    }
}
