//! `[llm.cloud]`: where the cloud model is, how the gateway authenticates, and how much it may use.
//!
//! ```toml
//! [llm.cloud]
//! base_url = "https://dashscope.aliyuncs.com/compatible-mode/v1"
//! model = "qwen-plus"                  # or "qwen-max"
//! api_key_env = "DASHSCOPE_API_KEY"    # or: api_key_file = "/run/credentials/linepilot.service/qwen_api_key"
//! timeout = "60s"
//! connect_timeout = "10s"
//! max_retries = 3                      # on 429 (honouring Retry-After), 5xx and connect errors
//! retry_initial_backoff = "500ms"
//! retry_max_backoff = "30s"
//! max_tokens = 1024
//! daily_token_budget = 500000          # prompt + completion tokens per UTC day
//! breaker_failure_threshold = 5
//! breaker_cooldown = "60s"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::units::HumanDuration;

/// The cloud Qwen model, spoken to over the OpenAI-compatible chat completions API.
///
/// The API key never goes in the config text: it is read from the environment variable
/// `api_key_env` or, when given, from the file `api_key_file` (e.g. a systemd credential).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Base URL of the OpenAI-compatible API; the client appends `/chat/completions`.
    /// DashScope's compatible mode by default (`https://dashscope-intl.aliyuncs.com/compatible-mode/v1`
    /// outside mainland China). `https://` is required except for a loopback host.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Model name sent with each request, e.g. `qwen-plus` or `qwen-max`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Environment variable that holds the API key (used when `api_key_file` is not given).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// File that holds the API key (e.g. `/run/credentials/linepilot.service/qwen_api_key` from
    /// systemd `LoadCredential`); trailing whitespace is trimmed. Takes precedence over `api_key_env`.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Longest time one request may take, from connecting until the last byte of the answer
    /// (streamed or not). A timed-out request is not retried: the caller falls back instead.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Longest time to establish the connection (TCP and TLS); a failed connect is retried.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Retries after the first attempt on 429, 5xx and connect errors (never on other 4xx,
    /// and never once part of a streamed answer has been handed to the caller).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; it doubles with each further retry, with random jitter.
    #[serde(default = "default_retry_initial_backoff")]
    pub retry_initial_backoff: HumanDuration,
    /// Longest wait between two attempts. A `Retry-After` longer than this ends the request
    /// with a rate-limit error rather than waiting.
    #[serde(default = "default_retry_max_backoff")]
    pub retry_max_backoff: HumanDuration,
    /// Largest number of completion tokens asked for per answer, unless the caller asks for fewer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Tokens (prompt plus completion) the gateway may use per UTC day; requests are refused
    /// before they are sent once it is used up.
    #[serde(default = "default_daily_token_budget")]
    pub daily_token_budget: u64,
    /// Consecutive failed attempts (5xx, 429, timeouts, connect errors, broken streams) that
    /// open the circuit breaker: while open, requests fail at once without being sent.
    #[serde(default = "default_breaker_failure_threshold")]
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before one trial request is let through (half-open).
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown: HumanDuration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            base_url: default_base_url(),
            model: default_model(),
            api_key_env: default_api_key_env(),
            api_key_file: None,
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            max_retries: default_max_retries(),
            retry_initial_backoff: default_retry_initial_backoff(),
            retry_max_backoff: default_retry_max_backoff(),
            max_tokens: default_max_tokens(),
            daily_token_budget: default_daily_token_budget(),
            breaker_failure_threshold: default_breaker_failure_threshold(),
            breaker_cooldown: default_breaker_cooldown(),
        }
    }
}

fn default_base_url() -> String {
    "https://dashscope.aliyuncs.com/compatible-mode/v1".to_string()
}
fn default_model() -> String {
    "qwen-plus".to_string()
}
fn default_api_key_env() -> String {
    "DASHSCOPE_API_KEY".to_string()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_initial_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_retry_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_tokens() -> u32 {
    1024
}
fn default_daily_token_budget() -> u64 {
    500_000
}
fn default_breaker_failure_threshold() -> u32 {
    5
}
fn default_breaker_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Most retries accepted: more only delays the fallback to the local model.
const MAX_RETRIES_LIMIT: u32 = 10;

impl CloudConfig {
    /// Checks every setting; problems come back as (key, message), like the other sections.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if let Err(e) = check_base_url(&self.base_url) {
            errs.push(("base_url", e));
        }
        if self.model.is_empty() || self.model.contains(char::is_whitespace) {
            errs.push(("model", format!("model `{}` must be a model name such as `qwen-plus`", self.model)));
        }
        if !is_env_name(&self.api_key_env) {
            errs.push((
                "api_key_env",
                format!(
                    "`{}` is not an environment variable name (letters, digits, `_`); put the key in the environment or in `api_key_file`, not here",
                    self.api_key_env
                ),
            ));
        }
        if let Some(path) = &self.api_key_file {
            if path.as_os_str().is_empty() {
                errs.push(("api_key_file", "api_key_file must name a file".to_string()));
            }
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("retry_initial_backoff", self.retry_initial_backoff),
            ("retry_max_backoff", self.retry_max_backoff),
            ("breaker_cooldown", self.breaker_cooldown),
        ] {
            if d.0.is_zero() {
                errs.push((key, format!("{key} must be more than 0")));
            }
        }
        if self.retry_max_backoff.0 < self.retry_initial_backoff.0 {
            errs.push(("retry_max_backoff", "retry_max_backoff must be at least retry_initial_backoff".to_string()));
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            errs.push(("max_retries", format!("max_retries {} is more than {MAX_RETRIES_LIMIT}", self.max_retries)));
        }
        if self.max_tokens == 0 {
            errs.push(("max_tokens", "max_tokens must be more than 0".to_string()));
        }
        if self.daily_token_budget == 0 {
            errs.push((
                "daily_token_budget",
                "daily_token_budget must be more than 0 (to keep the cloud model out, set the router's escalation to never)"
                    .to_string(),
            ));
        }
        if self.breaker_failure_threshold == 0 {
            errs.push(("breaker_failure_threshold", "breaker_failure_threshold must be at least 1".to_string()));
        }
        errs
    }
}

/// `https://host[:port][/path]`, or `http://` to a loopback host (a test server, a local proxy).
fn check_base_url(s: &str) -> Result<(), String> {
    let (scheme, rest) =
        s.split_once("://").ok_or_else(|| format!("bad base_url `{s}`: expected https://host[:port]/path"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if rest.contains(['?', '#']) || authority.contains('@') {
        return Err(format!("bad base_url `{s}`: no query, fragment or user name allowed (the key comes from api_key_env or api_key_file)"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("bad base_url `{s}`: missing or bad host"));
    }
    if let Some((_, port)) = authority.rsplit_once(':').filter(|_| !authority.ends_with(']')) {
        if port.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
            return Err(format!("bad base_url `{s}`: port `{port}` is not a number 1..=65535"));
        }
    }
    match scheme {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "bad base_url `{s}`: plain http would send the API key in clear text; use https:// (http:// only to a loopback host)"
            ))
        }
        other => return Err(format!("bad base_url `{s}`: scheme `{other}` is not supported, use https://")),
    }
    if rest.trim_end_matches('/').ends_with("/chat/completions") {
        return Err(format!(
            "bad base_url `{s}`: give the base URL without `/chat/completions` (the client appends it)"
        ));
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cfg: &CloudConfig) -> Vec<&'static str> {
        cfg.check().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn defaults_parse_and_pass() {
        let cfg: CloudConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, CloudConfig::default());
        assert_eq!(cfg.model, "qwen-plus");
        assert_eq!(cfg.api_key_env, "DASHSCOPE_API_KEY");
        assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    }

    #[test]
    fn durations_and_unknown_keys() {
        let cfg: CloudConfig =
            toml::from_str("model = \"qwen-max\"\ntimeout = \"90s\"\nbreaker_cooldown = \"2m\"").unwrap();
        assert_eq!(cfg.timeout.0, Duration::from_secs(90));
        assert_eq!(cfg.breaker_cooldown.0, Duration::from_secs(120));
        let err = toml::from_str::<CloudConfig>("api_key = \"sk-123\"").unwrap_err().to_string();
        assert!(err.contains("unknown field `api_key`"), "{err}");
    }

    #[test]
    fn base_urls() {
        assert!(check_base_url("https://dashscope.aliyuncs.com/compatible-mode/v1").is_ok());
        assert!(check_base_url("http://127.0.0.1:8080/v1").is_ok());
        assert!(check_base_url("http://[::1]:8080/v1").is_ok());
        assert!(check_base_url("http://localhost/v1").is_ok());
        assert!(check_base_url("http://10.0.0.7/v1").unwrap_err().contains("clear text"));
        assert!(check_base_url("ftp://host/v1").is_err());
        assert!(check_base_url("dashscope.aliyuncs.com").is_err());
        assert!(check_base_url("https://u:p@host/v1").is_err());
        assert!(check_base_url("https://host:99999/v1").is_err());
        assert!(check_base_url("https://host/v1/chat/completions").unwrap_err().contains("appends"));
    }

    #[test]
    fn bad_settings_are_named() {
        let cfg = CloudConfig {
            model: "qwen plus".into(),
            api_key_env: "sk-abc123".into(),
            timeout: HumanDuration(Duration::ZERO),
            retry_initial_backoff: HumanDuration(Duration::from_secs(5)),
            retry_max_backoff: HumanDuration(Duration::from_secs(1)),
            max_retries: 50,
            daily_token_budget: 0,
            breaker_failure_threshold: 0,
            ..CloudConfig::default()
        };
        assert_eq!(
            keys(&cfg),
            [
                "model",
                "api_key_env",
                "timeout",
                "retry_max_backoff",
                "max_retries",
                "daily_token_budget",
                "breaker_failure_threshold"
            ]
        );
    }
}
