//! `[llm]` section of the config: the local model, the escalation policy, redaction.

use std::path::PathBuf;

use serde::Deserialize;

/// When a question may go to the cloud model.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscalationPolicy {
    /// Never: everything is answered locally.
    Never,
    /// Only when the person asks for it.
    OnRequest,
    /// When the local answer is not good enough (low confidence, rejected twice by the
    /// reviewer), for deep tasks, or when asked.
    #[default]
    Auto,
}

/// The language models.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Local model name (`smollm2-135m`, `qwen2.5-0.5b`); `linepilot model list` shows them.
    #[serde(default = "default_local_model")]
    pub local_model: String,
    /// Where local models live (default: `$LINEPILOT_MODEL_DIR`, else
    /// `~/.local/share/linepilot/models`).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Inference threads: the gateway shares its cores with ingest, so 1 by default.
    /// `linepilot run` and `demo` size candle's matrix-product pool with it
    /// (`CANDLE_NUM_THREADS`, unless the environment already sets it).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// When to escalate to the cloud model.
    #[serde(default)]
    pub escalation: EscalationPolicy,
    /// Escalate (policy `auto`) when the local answer's mean token log-probability is below this.
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f32,
    /// Extra words to redact before anything goes to the cloud (site, asset and tag
    /// names are always redacted).
    #[serde(default)]
    pub redact: Vec<String>,
    /// `[llm.cloud]`: the cloud Qwen model; without it everything is answered locally.
    #[serde(default)]
    pub cloud: Option<crate::llm::cloud::CloudConfig>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            local_model: default_local_model(),
            model_dir: None,
            threads: default_threads(),
            escalation: EscalationPolicy::default(),
            min_confidence: default_min_confidence(),
            redact: Vec::new(),
            cloud: None,
        }
    }
}

impl LlmConfig {
    /// Problems a loaded section can still have: (key, message).
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if crate::llm::local::registry::spec(&self.local_model).is_err() {
            let known: Vec<&str> = crate::llm::local::MODELS.iter().map(|m| m.name).collect();
            out.push((
                "local_model",
                format!("unknown model `{}`, expected one of {}", self.local_model, known.join(", ")),
            ));
        }
        if self.threads == 0 || self.threads > 64 {
            out.push(("threads", "threads must be between 1 and 64".to_string()));
        }
        if !self.min_confidence.is_finite() || self.min_confidence > 0.0 {
            out.push(("min_confidence", "min_confidence is a log-probability: 0 or less".to_string()));
        }
        if let Some(c) = &self.cloud {
            for (k, msg) in c.check() {
                out.push((cloud_key(k), msg));
            }
        }
        out
    }

    /// The model directory in force.
    pub fn model_dir(&self) -> PathBuf {
        self.model_dir.clone().unwrap_or_else(crate::llm::local::registry::default_model_dir)
    }
}

/// `cloud.<key>` for a key of the cloud section (the loader reports paths from `[llm]`).
fn cloud_key(k: &'static str) -> &'static str {
    match k {
        "base_url" => "cloud.base_url",
        "model" => "cloud.model",
        "api_key_env" => "cloud.api_key_env",
        "api_key_file" => "cloud.api_key_file",
        "timeout" => "cloud.timeout",
        "connect_timeout" => "cloud.connect_timeout",
        "max_retries" => "cloud.max_retries",
        "retry_initial_backoff" => "cloud.retry_initial_backoff",
        "retry_max_backoff" => "cloud.retry_max_backoff",
        "max_tokens" => "cloud.max_tokens",
        "daily_token_budget" => "cloud.daily_token_budget",
        "breaker_failure_threshold" => "cloud.breaker_failure_threshold",
        "breaker_cooldown" => "cloud.breaker_cooldown",
        _ => "cloud",
    }
}

fn default_local_model() -> String {
    crate::llm::local::registry::DEFAULT_MODEL.to_string()
}
fn default_threads() -> usize {
    1
}
fn default_min_confidence() -> f32 {
    -1.5
}
