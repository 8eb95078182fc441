//! Per-source health: connection state, last error, last sample, counters.
//! Shown in `/healthz` and by `linepilot status`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::SourceKind;
use crate::domain::{Sample, Timestamp};

/// A source's connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Connecting (or reconnecting).
    Connecting,
    /// Connected and reading.
    Connected,
    /// The connection is lost; retrying with backoff.
    Down,
    /// Stopped (daemon shutting down).
    Stopped,
}

/// Counts of one send.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Samples.
    pub samples: u64,
    /// Of which not good quality.
    pub bad: u64,
    /// Newest source timestamp.
    pub last_ts: Timestamp,
}

impl Tally {
    /// Counts `samples`.
    pub fn of(samples: &[Sample]) -> Tally {
        let mut t = Tally::default();
        for s in samples {
            t.samples += 1;
            t.bad += (!s.quality.is_good()) as u64;
            t.last_ts = t.last_ts.max(s.ts);
        }
        t
    }
}

/// The health of one source.
pub struct SourceHealth {
    id: String,
    kind: Option<SourceKind>,
    tags: usize,
    status: Mutex<Status>,
    samples: AtomicU64,
    bad_samples: AtomicU64,
    dropped: AtomicU64,
    stored: AtomicU64,
    errors: AtomicU64,
    malformed: AtomicU64,
    suppressed: AtomicU64,
    polled: AtomicU64,
    reconnects: AtomicU64,
    last_sample_ts: AtomicI64,
    last_stored_at: AtomicI64,
}

#[derive(Clone, Debug)]
struct Status {
    state: SourceState,
    since: Timestamp,
    last_error: Option<String>,
    last_error_at: Option<Timestamp>,
}

/// A copy of a source's health, as `/healthz` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Source id.
    pub id: String,
    /// Protocol.
    pub kind: String,
    /// Configured tags.
    pub tags: usize,
    /// Connection state.
    pub state: SourceState,
    /// Since when (ns).
    pub since: Timestamp,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it happened (ns).
    pub last_error_at: Option<Timestamp>,
    /// Newest source timestamp sent (ns; 0: none yet).
    pub last_sample_ts: Timestamp,
    /// When samples of this source were last made durable (ns; 0: never).
    pub last_stored_at: Timestamp,
    /// Samples sent into the store channel.
    pub samples: u64,
    /// Of which durable in the store.
    pub stored_samples: u64,
    /// Of which not good quality.
    pub bad_samples: u64,
    /// Samples dropped because the channel was full.
    pub dropped: u64,
    /// Errors (connection, protocol, store).
    pub errors: u64,
    /// Malformed payloads (MQTT) or undecodable values.
    pub malformed: u64,
    /// Samples held back because they stayed within their tag's deadband.
    pub deadband_suppressed: u64,
    /// Tags read by polling instead of a subscription (OPC UA).
    pub polled_tags: u64,
    /// Reconnections.
    pub reconnects: u64,
}

impl SourceHealth {
    fn new(id: &str, kind: Option<SourceKind>, tags: usize) -> SourceHealth {
        SourceHealth {
            id: id.to_string(),
            kind,
            tags,
            status: Mutex::new(Status {
                state: SourceState::Connecting,
                since: crate::domain::now_ns(),
                last_error: None,
                last_error_at: None,
            }),
            samples: AtomicU64::new(0),
            bad_samples: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            polled: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_sample_ts: AtomicI64::new(0),
            last_stored_at: AtomicI64::new(0),
        }
    }

    /// A record that belongs to no registry (sinks used outside a source).
    pub fn detached() -> Arc<SourceHealth> {
        Arc::new(SourceHealth::new("", None, 0))
    }

    /// Sets the state; an error message is kept as the last error and counted.
    pub fn set_state(&self, state: SourceState, error: Option<String>) {
        let mut s = self.status.lock();
        if s.state != state {
            s.state = state;
            s.since = crate::domain::now_ns();
        }
        if let Some(e) = error {
            s.last_error = Some(e);
            s.last_error_at = Some(crate::domain::now_ns());
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection state.
    pub fn state(&self) -> SourceState {
        self.status.lock().state
    }

    /// Records an error that does not change the state (a Modbus exception, a bad payload).
    pub fn error(&self, message: String) {
        let mut s = self.status.lock();
        s.last_error = Some(message);
        s.last_error_at = Some(crate::domain::now_ns());
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// How many of the source's tags are read by polling (OPC UA: `mode = "poll"`,
    /// or nodes the server would not monitor).
    pub fn set_polled(&self, n: usize) {
        self.polled.store(n as u64, Ordering::Relaxed);
    }

    /// Counts samples held back by the tags' deadbands.
    pub fn count_suppressed(&self, n: u64) {
        self.suppressed.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a malformed payload or an undecodable value.
    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reconnection.
    pub fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts samples sent into the channel.
    pub fn count(&self, t: Tally) {
        self.samples.fetch_add(t.samples, Ordering::Relaxed);
        self.bad_samples.fetch_add(t.bad, Ordering::Relaxed);
        self.last_sample_ts.fetch_max(t.last_ts, Ordering::Relaxed);
    }

    /// Counts samples dropped because the channel was full.
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn stored(&self, at: Timestamp, samples: u64) {
        self.stored.fetch_add(samples, Ordering::Relaxed);
        self.last_stored_at.store(at, Ordering::Relaxed);
    }

    pub(crate) fn store_error(&self, message: &str) {
        self.error(format!("store: {message}"));
    }

    /// A copy for display.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.status.lock().clone();
        Snapshot {
            id: self.id.clone(),
            kind: self.kind.map(|k| k.to_string()).unwrap_or_default(),
            tags: self.tags,
            state: s.state,
            since: s.since,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            last_sample_ts: self.last_sample_ts.load(Ordering::Relaxed),
            last_stored_at: self.last_stored_at.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            stored_samples: self.stored.load(Ordering::Relaxed),
            bad_samples: self.bad_samples.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            deadband_suppressed: self.suppressed.load(Ordering::Relaxed),
            polled_tags: self.polled.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// The health of every source, in config order.
#[derive(Default)]
pub struct Health {
    sources: Mutex<Vec<Arc<SourceHealth>>>,
}

impl Health {
    /// Adds a source.
    pub fn register(&self, id: &str, kind: SourceKind, tags: usize) -> Arc<SourceHealth> {
        let h = Arc::new(SourceHealth::new(id, Some(kind), tags));
        self.sources.lock().push(h.clone());
        h
    }

    /// Every source's snapshot.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        self.sources.lock().iter().map(|h| h.snapshot()).collect()
    }

    /// True when every source is connected (or there are none).
    pub fn all_connected(&self) -> bool {
        self.sources.lock().iter().all(|h| h.state() == SourceState::Connected)
    }
}
