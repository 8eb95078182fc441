//! The language models inside the daemon: the local model is loaded on a blocking
//! thread after start (the API is up meanwhile), the cloud client built, and the router
//! that answers `POST /api/v1/llm/complete` made once both are known. Health shows
//! each part, including a missing model with the command that fetches it.

use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use super::cloud::{CloudClient, CloudStatus};
use super::config::LlmConfig;
use super::local::{LocalModel, LocalWorker, WorkerStatus};
use super::redact::{NameKind, Redactor};
use super::router::{Router, RouterStatus};
use crate::config::Config;

/// Where the local model is.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LocalState {
    /// Being loaded.
    Loading,
    /// Loaded and serving.
    Ready,
    /// Could not be loaded; `message` says why (and which command fetches it).
    Failed {
        /// Why.
        message: String,
    },
}

/// The daemon's language models.
#[derive(Clone)]
pub struct Llm {
    inner: Arc<RwLock<Inner>>,
}

struct Inner {
    state: LocalState,
    router: Option<Router>,
    local: Option<LocalWorker>,
    cloud: Option<CloudClient>,
    cloud_error: Option<String>,
}

/// Health of the language models.
#[derive(Clone, Debug, Serialize)]
pub struct LlmHealth {
    /// The local model's state.
    pub local: LocalState,
    /// The local worker's queue and counters.
    pub worker: Option<WorkerStatus>,
    /// The cloud client's breaker, budget and counters.
    pub cloud: Option<CloudStatus>,
    /// Why there is no cloud client although one is configured.
    pub cloud_error: Option<String>,
    /// The router's escalation counters.
    pub router: Option<RouterStatus>,
}

/// Names redacted before anything goes to the cloud: the site, assets (ids and names),
/// tags and the configured extra words.
pub fn redactor_for(config: &Config, llm: &LlmConfig) -> Redactor {
    let mut names: Vec<(NameKind, &str)> = vec![(NameKind::Site, config.site.name.as_str())];
    for a in &config.assets {
        names.push((NameKind::Asset, a.id.as_str()));
        names.push((NameKind::Asset, a.name.as_str()));
    }
    for t in &config.tags {
        names.push((NameKind::Tag, t.name.as_str()));
    }
    for w in &llm.redact {
        names.push((NameKind::Word, w.as_str()));
    }
    Redactor::new(names)
}

impl Llm {
    /// Starts loading the models of `llm` in the background.
    pub fn start(config: &Config, llm: &LlmConfig) -> Llm {
        let (cloud, cloud_error) = match &llm.cloud {
            Some(c) => match c.build() {
                Ok(client) => (Some(client), None),
                Err(e) => {
                    tracing::warn!(error = %e, "Cloud model not available; answering locally");
                    (None, Some(e.to_string()))
                }
            },
            None => (None, None),
        };
        let this = Llm {
            inner: Arc::new(RwLock::new(Inner {
                state: LocalState::Loading,
                router: None,
                local: None,
                cloud: cloud.clone(),
                cloud_error,
            })),
        };
        let inner = this.inner.clone();
        let (name, dir, threads) = (llm.local_model.clone(), llm.model_dir(), llm.threads);
        let (policy, min_conf) = (llm.escalation, llm.min_confidence);
        let redactor = redactor_for(config, llm);
        std::thread::Builder::new()
            .name("llm-load".into())
            .spawn(move || {
                let loaded = LocalModel::load_named(&dir, &name, threads).and_then(LocalWorker::spawn);
                let mut g = inner.write();
                match loaded {
                    Ok(worker) => {
                        g.state = LocalState::Ready;
                        g.local = Some(worker.clone());
                        g.router = Some(Router::new(Some(worker), cloud, policy, min_conf, redactor));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, model = %name, "Local model not loaded");
                        g.state = LocalState::Failed { message: e.to_string() };
                        // The cloud alone can still answer, if there is one.
                        if cloud.is_some() {
                            g.router = Some(Router::new(None, cloud, policy, min_conf, redactor));
                        }
                    }
                }
            })
            .map_err(|e| tracing::error!(error = %e, "Cannot start the model loader"))
            .ok();
        this
    }

    /// The router, once the models are known.
    pub fn router(&self) -> Option<Router> {
        self.inner.read().router.clone()
    }

    /// The local model's state.
    pub fn local_state(&self) -> LocalState {
        self.inner.read().state.clone()
    }

    /// Health for `/healthz`.
    pub fn health(&self) -> LlmHealth {
        let g = self.inner.read();
        LlmHealth {
            local: g.state.clone(),
            worker: g.local.as_ref().map(LocalWorker::status),
            cloud: g.cloud.as_ref().map(CloudClient::status),
            cloud_error: g.cloud_error.clone(),
            router: g.router.as_ref().map(Router::status),
        }
    }
}
