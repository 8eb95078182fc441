//! The daemon: opens the store, registers configured tags, serves the API,
//! and shuts down cleanly on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tracing::{info, warn};

pub mod demo;

use crate::config::Config;
use crate::domain::SeriesKey;
use crate::store::{Store, StoreArgs, StoreError};

/// Batches the ingest channel holds before sources have to wait.
const INGEST_CHANNEL_BATCHES: usize = 1024;
/// Largest group of samples the ingest writer makes durable at once.
const INGEST_MAX_BATCH: usize = 50_000;

/// Failures of `linepilot run`.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The store did not open.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
}

/// Overrides from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
}

/// Opens the store of `config` (with `data_dir` override) and registers every
/// configured tag as a series, so a configured tag keeps its name and kind.
pub fn open_store(config: &Config, data_dir: Option<PathBuf>, background: bool) -> Result<Store, StoreError> {
    let mut sc = config.store.clone();
    if let Some(d) = data_dir {
        sc.data_dir = d;
    }
    let mut args = StoreArgs::new(sc);
    args.background = background;
    let store = Store::open(args)?;
    let keys: Vec<_> = config.tags.iter().map(|t| (SeriesKey::new(t.name.clone()), t.value_type)).collect();
    if !keys.is_empty() {
        store.resolve(&keys)?;
    }
    Ok(store)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config, opts: RunOptions) -> Result<(), ServiceError> {
    let store = Arc::new(tokio::task::block_in_place(|| open_store(&config, opts.data_dir.clone(), true))?);
    let addr = opts.listen.clone().unwrap_or_else(|| config.api.listen.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServiceError::Listen { addr: addr.clone(), source })?;
    let local: SocketAddr = listener.local_addr().map_err(ServiceError::Serve)?;
    // One JSON line on stdout so that scripts and tests can find the port,
    // and the same in the data dir so that `linepilot query` finds the daemon.
    let announce =
        serde_json::json!({ "listen": local.to_string(), "data_dir": store.paths().root(), "pid": std::process::id() });
    println!("{announce}");
    if let Err(e) = std::fs::write(store.paths().root().join("daemon.json"), announce.to_string()) {
        warn!(error = %e, "Could not write daemon.json; `linepilot query` will use [api] listen");
    }
    info!(listen = %local, tags = config.tags.len(), "linepilot running");
    audit(
        &store,
        format!("linepilot {} started, API on {local}", env!("CARGO_PKG_VERSION")),
        serde_json::json!({ "listen": local.to_string(), "tags": config.tags.len(), "pid": std::process::id() }),
    );
    // Sources → one bounded channel → the writer → the store.
    let health = Arc::new(crate::ingest::Health::default());
    let (sink, rx) = crate::ingest::Sink::channel(INGEST_CHANNEL_BATCHES);
    let tags = Arc::new(crate::ingest::bind_all_tags(&config, &store)?);
    // Committed batches → the analytics stage → events.
    let analytics_health = Arc::new(crate::analytics::stage::AnalyticsHealth::default());
    let (committed, committed_rx) = crate::analytics::stage::committed_queue(analytics_health.clone());
    let (analytics, alarms) = crate::analytics::stage::Analytics::for_config(&config, &tags);
    let stage =
        tokio::spawn(crate::analytics::stage::run(store.clone(), committed_rx, analytics, analytics_health.clone()));
    let writer = tokio::spawn(crate::ingest::writer(store.clone(), rx, INGEST_MAX_BATCH, Some(committed)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sources = crate::ingest::supervise(&config, store.clone(), sink, health.clone(), stop_rx.clone())?;
    let config = Arc::new(config);
    let explainer = tokio::spawn(crate::agents::explain::run(store.clone(), config.clone(), stop_rx.clone()));
    let llm = config.llm.as_ref().map(|l| crate::llm::service::Llm::start(&config, l));
    let reporter =
        tokio::spawn(crate::agents::report::run(store.clone(), config.clone(), llm.clone(), stop_rx.clone()));
    let mut app = crate::api::router(
        crate::api::ApiState {
            store: store.clone(),
            ingest: health,
            tags,
            config: config.clone(),
            analytics: analytics_health,
            llm: llm.clone(),
        },
        config.api.max_body_bytes.0 as usize,
    )
    .merge(crate::api::alarms::router(crate::api::alarms::AlarmApi::new(alarms, store.clone())));
    if let Some(llm) = llm {
        app = app.merge(crate::api::llm::router(llm));
    }
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(ServiceError::Serve)?;
    info!("Shutting down");
    let _ = stop_tx.send(true);
    for t in sources {
        let _ = t.await;
    }
    // Every sink is gone with its source: the writer drains what is queued and ends,
    // and with it the analytics stage.
    let _ = explainer.await;
    let _ = reporter.await;
    let _ = writer.await;
    let _ = stage.await;
    audit(&store, "linepilot stopped cleanly".to_string(), serde_json::json!({}));
    let s = store.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || s.close()).await {
        warn!(error = %e, "Store close did not finish cleanly");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Writes an audit line to the event log (failures are logged, never fatal).
fn audit(store: &Store, message: String, details: serde_json::Value) {
    let ev = crate::domain::Event {
        id: 0,
        ts: crate::domain::now_ns(),
        asset: None,
        kind: crate::domain::EventKind::Audit,
        severity: 0,
        message,
        details,
    };
    if let Err(e) = store.events().append(&ev) {
        warn!(error = %e, "Could not write audit event");
    }
}
