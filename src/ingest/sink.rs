//! The one bounded channel from the sources into the store, and the writer
//! task that drains it.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::deadband::Deadband;
use super::health::{SourceHealth, Tally};
use super::BoundTag;
use crate::domain::Sample;
use crate::store::Store;

/// A batch from one source.
pub struct Batch {
    samples: Vec<Sample>,
    health: Arc<SourceHealth>,
}

/// The channel's sending side, one per source (cheap to clone).
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Batch>,
    health: Option<Arc<SourceHealth>>,
    deadband: Option<Arc<Mutex<Deadband>>>,
}

/// The channel is closed: the daemon is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct Closed;

impl Sink {
    /// A channel holding at most `capacity` batches, and its receiving end for [`writer`].
    pub fn channel(capacity: usize) -> (Sink, mpsc::Receiver<Batch>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Sink { tx, health: None, deadband: None }, rx)
    }

    /// The same channel, counting into `health`.
    pub fn for_source(&self, health: Arc<SourceHealth>) -> Sink {
        Sink { tx: self.tx.clone(), health: Some(health), deadband: None }
    }

    /// The same sink, holding back samples of `tags` that stay within their
    /// tag's `deadband`, else `default` (no filter when no tag has one).
    pub fn with_deadband(mut self, tags: &[BoundTag], default: Option<f64>) -> Sink {
        self.deadband = Deadband::for_tags(tags, default).map(|d| Arc::new(Mutex::new(d)));
        self
    }

    /// Applies the deadband; counts what it holds back.
    fn filter(&self, samples: &mut Vec<Sample>) {
        if let Some(db) = &self.deadband {
            let n = db.lock().retain(samples);
            if n > 0 {
                if let Some(h) = &self.health {
                    h.count_suppressed(n);
                }
            }
        }
    }

    /// Sends samples, waiting while the channel is full (backpressure).
    pub async fn send(&self, mut samples: Vec<Sample>) -> Result<(), Closed> {
        self.filter(&mut samples);
        if samples.is_empty() {
            return Ok(());
        }
        let health = self.health.clone().unwrap_or_else(SourceHealth::detached);
        let tally = Tally::of(&samples);
        self.tx.send(Batch { samples, health: health.clone() }).await.map_err(|_| Closed)?;
        health.count(tally);
        Ok(())
    }

    /// Sends samples if there is room; otherwise drops them and counts the drop.
    pub fn try_send(&self, mut samples: Vec<Sample>) -> Result<(), Closed> {
        self.filter(&mut samples);
        if samples.is_empty() {
            return Ok(());
        }
        let health = self.health.clone().unwrap_or_else(SourceHealth::detached);
        let tally = Tally::of(&samples);
        match self.tx.try_send(Batch { samples, health: health.clone() }) {
            Ok(()) => {
                health.count(tally);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                health.count_dropped(tally.samples);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }
}

/// Drains the channel into the store until every sender is gone, coalescing
/// what has queued up (up to `max_batch` samples) into one durable write.
///
/// With `committed`, every durable batch is also offered to the analytics stage;
/// when the stage lags, the batch is skipped for analytics (and counted), never
/// for the store: ingest does not wait for analytics.
pub async fn writer(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Batch>,
    max_batch: usize,
    committed: Option<crate::analytics::stage::CommittedTx>,
) {
    while let Some(first) = rx.recv().await {
        let mut sources = vec![(first.health, first.samples.len() as u64)];
        let mut samples = first.samples;
        while samples.len() < max_batch {
            match rx.try_recv() {
                Ok(b) => {
                    sources.push((b.health, b.samples.len() as u64));
                    samples.extend(b.samples);
                }
                Err(_) => break,
            }
        }
        let n = samples.len();
        let copy = committed.as_ref().map(|_| samples.clone());
        match store.write_async(samples).await {
            Ok(()) => {
                debug!(samples = n, "ingest batch stored");
                if let (Some(tx), Some(copy)) = (&committed, copy) {
                    tx.offer(copy);
                }
                let now = crate::domain::now_ns();
                for (h, n) in &sources {
                    h.stored(now, *n);
                }
            }
            Err(e) => {
                warn!(error = %e, samples = n, "the store refused an ingest batch");
                for (h, _) in &sources {
                    h.store_error(&e.to_string());
                }
            }
        }
    }
}
