//! The analytics stage of the daemon: it reads every batch the store has made
//! durable and runs the streaming detectors on it, writing what they find to the
//! event log. Ingest never waits for it: the writer offers each committed batch
//! and skips analysis of a batch (counted) when the stage is behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::detect::{AnomalyKind, SignalDetector, SignalParams};
use crate::domain::{Event, EventKind, Sample, SeriesId, Value, ValueKind};
use crate::ingest::BoundTag;
use crate::store::Store;

/// Batches the writer may queue for the stage before it skips analysis.
pub const COMMITTED_QUEUE_BATCHES: usize = 256;

/// Counters of the stage, for `/healthz` and tests.
#[derive(Debug, Default)]
pub struct AnalyticsHealth {
    batches: AtomicU64,
    samples: AtomicU64,
    events: AtomicU64,
    skipped_batches: AtomicU64,
    event_errors: AtomicU64,
}

/// A copy of [`AnalyticsHealth`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnalyticsSnapshot {
    /// Committed batches analysed.
    pub batches: u64,
    /// Samples in them.
    pub samples: u64,
    /// Events written (anomalies ...).
    pub events: u64,
    /// Committed batches not analysed because the stage was behind.
    pub skipped_batches: u64,
    /// Events the event log refused.
    pub event_errors: u64,
}

impl AnalyticsHealth {
    /// The counters now.
    pub fn snapshot(&self) -> AnalyticsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AnalyticsSnapshot {
            batches: g(&self.batches),
            samples: g(&self.samples),
            events: g(&self.events),
            skipped_batches: g(&self.skipped_batches),
            event_errors: g(&self.event_errors),
        }
    }
}

/// The writer's side of the committed-batch queue.
#[derive(Clone)]
pub struct CommittedTx {
    tx: mpsc::Sender<Vec<Sample>>,
    health: Arc<AnalyticsHealth>,
}

impl CommittedTx {
    /// Offers a durable batch; counts it as skipped when the stage is behind.
    pub fn offer(&self, samples: Vec<Sample>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(samples) {
            self.health.skipped_batches.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The queue between the writer and the stage.
pub fn committed_queue(health: Arc<AnalyticsHealth>) -> (CommittedTx, mpsc::Receiver<Vec<Sample>>) {
    let (tx, rx) = mpsc::channel(COMMITTED_QUEUE_BATCHES);
    (CommittedTx { tx, health }, rx)
}

/// One numeric tag under watch.
#[derive(Debug)]
struct Watched {
    tag: String,
    asset: String,
    unit: String,
    detector: SignalDetector,
}

/// The detectors of every numeric tag; pure and sample-driven, so the daemon runs it
/// on committed batches and an offline replay of a stored range runs the same code.
#[derive(Debug)]
pub struct Analytics {
    watched: HashMap<SeriesId, Watched>,
}

impl Analytics {
    /// A detector with `params` on every `f64` tag.
    pub fn new(tags: &[BoundTag], params: SignalParams) -> Analytics {
        let watched = tags
            .iter()
            .filter(|t| t.tag.value_type == ValueKind::F64)
            .map(|t| {
                let w = Watched {
                    tag: t.tag.name.clone(),
                    asset: t.tag.asset.clone(),
                    unit: t.tag.unit.clone(),
                    detector: SignalDetector::new(params),
                };
                (t.series, w)
            })
            .collect();
        Analytics { watched }
    }

    /// Number of tags watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Learns a batch of committed samples (each series in time order) and returns
    /// the events it gives: an `anomaly` event where an anomaly episode starts.
    /// Samples of bad quality are not learnt (a comms loss is not an anomaly of the process).
    pub fn on_batch(&mut self, samples: &[Sample]) -> Vec<Event> {
        let mut events = Vec::new();
        for s in samples {
            let Some(w) = self.watched.get_mut(&s.series) else { continue };
            if !s.quality.is_good() {
                continue;
            }
            let x = match s.value {
                Value::F64(x) => x,
                Value::I64(x) => x as f64,
                _ => continue,
            };
            let before = w.detector.baseline();
            let v = w.detector.update(x);
            if v.start {
                events.push(anomaly_event(w, s.ts, x, v.score, v.kind, before));
            }
        }
        events
    }
}

fn anomaly_event(
    w: &Watched,
    ts: i64,
    value: f64,
    score: f64,
    kind: Option<AnomalyKind>,
    baseline: Option<(f64, f64)>,
) -> Event {
    let what = match kind {
        Some(AnomalyKind::Level) => "is far from its usual level",
        Some(AnomalyKind::Step) => "jumped from the previous sample",
        Some(AnomalyKind::ChangePoint) => "shifted and stayed shifted (change point)",
        Some(AnomalyKind::Pattern) => "shows a pattern not seen before",
        None => "is anomalous",
    };
    let unit = if w.unit.is_empty() { String::new() } else { format!(" {}", w.unit) };
    let base = baseline
        .map(|(level, scale)| format!(" (baseline {level:.4}{unit}, usual spread {scale:.4}{unit})"))
        .unwrap_or_default();
    // Scores are relative to the test's threshold: 1 at the threshold.
    let severity = if score >= 4.0 {
        700
    } else if score >= 2.0 {
        500
    } else {
        300
    };
    Event {
        id: 0,
        ts,
        asset: Some(w.asset.clone()),
        kind: EventKind::Anomaly,
        severity,
        message: format!("{} {what}: {value:.4}{unit}{base}", w.tag),
        details: serde_json::json!({
            "tag": w.tag,
            "test": kind,
            "score": score,
            "value": value,
            "unit": w.unit,
            "baseline": baseline.map(|b| b.0),
            "scale": baseline.map(|b| b.1),
            "started": ts,
            "contributions": [{ "tag": w.tag, "share": 1.0 }],
        }),
    }
}

/// Runs the stage until the writer is gone: analyses every committed batch and
/// appends the events to the store's event log.
pub async fn run(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Vec<Sample>>,
    mut analytics: Analytics,
    health: Arc<AnalyticsHealth>,
) {
    info!(tags = analytics.watched(), "Analytics stage running");
    while let Some(batch) = rx.recv().await {
        health.batches.fetch_add(1, Ordering::Relaxed);
        health.samples.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let events = analytics.on_batch(&batch);
        if events.is_empty() {
            continue;
        }
        let n = events.len() as u64;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.events().append_many(&events)).await {
            Ok(Ok(_)) => {
                health.events.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                health.event_errors.fetch_add(n, Ordering::Relaxed);
                warn!(error = %e, events = n, "The event log refused analytics events");
            }
            Err(e) => {
                health.event_errors.fetch_add(n, Ordering::Relaxed);
                warn!(error = %e, "Writing analytics events failed");
            }
        }
    }
    info!("Analytics stage stopped");
}
