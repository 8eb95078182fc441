//! `[api]` section of the config.

use serde::Deserialize;

/// The HTTP API.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the HTTP API listens on; `linepilot run --listen` overrides it.
    /// Loopback by default: expose it deliberately.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted by `POST /api/v2/write`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: crate::config::units::ByteSize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: default_listen(), max_body_bytes: default_max_body_bytes() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:7878".to_string()
}
fn default_max_body_bytes() -> crate::config::units::ByteSize {
    crate::config::units::ByteSize(64 * 1024 * 1024)
}
