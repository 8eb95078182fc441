//! Ingest: protocol sources (OPC UA, Modbus, MQTT) turn traffic into samples
//! and send them through **one bounded channel** into the store.
//!
//! - [`Sink`]: what a source holds to send samples. `send` waits while the
//!   channel is full, so when the store is slower the sources slow down and
//!   memory stays bounded; `try_send` is for sources that must not wait (an
//!   MQTT event loop) and counts what it drops.
//! - [`writer`]: the one task that drains the channel into `Store::write_async`,
//!   coalescing batches into larger group commits.
//! - [`health`]: per-source status (connected, last error, last sample time,
//!   counters) for `/healthz` and `linepilot status`.
//! - [`supervise`]: starts every configured source with its tags, restarts a
//!   source whose task ends with an error, with backoff, and records the comms
//!   loss (a bad-quality sample per tag and an event).

pub mod deadband;
pub mod health;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Config, SourceConfig, TagConfig};
use crate::domain::{Event, EventKind, Quality, Sample, SeriesId, SeriesKey, Timestamp, Value, ValueKind};

use crate::store::{Store, StoreError};

pub use health::{Health, SourceHealth, SourceState};
pub use sink::{writer, Sink};

/// Why a source's connection ended.
#[derive(Debug, Error)]
pub enum IngestError {
    /// The peer could not be reached or the connection broke.
    #[error("connection: {0}")]
    Connection(String),
    /// The peer answered in a way the source cannot work with.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The source's configuration cannot be used (reported at start).
    #[error("configuration: {0}")]
    Config(String),
    /// The store refused the samples.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The daemon is shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// A configured tag bound to its series in the store.
#[derive(Clone, Debug)]
pub struct BoundTag {
    /// The tag's configuration (name, address, type, unit ...).
    pub tag: TagConfig,
    /// Its series.
    pub series: SeriesId,
}

impl BoundTag {
    /// A sample of this tag with a value of its kind (converted if needed); a
    /// value that does not convert (text where a number is configured, a
    /// float too large for an integer) becomes a `BAD_DECODING` sample.
    pub fn sample(&self, ts: Timestamp, value: Value, quality: Quality) -> Sample {
        match coerce(value, self.tag.value_type) {
            Some(value) => Sample { series: self.series, ts, value, quality },
            None => self.bad(ts, Quality::BAD_DECODING),
        }
    }

    /// A bad-quality sample (the value carries no information) at `ts`.
    pub fn bad(&self, ts: Timestamp, quality: Quality) -> Sample {
        Sample { series: self.series, ts, value: zero(self.tag.value_type), quality }
    }
}

/// Converts a decoded value to the series' kind; `None` when it does not convert.
pub fn coerce(v: Value, kind: ValueKind) -> Option<Value> {
    Some(match (v, kind) {
        (Value::F64(x), ValueKind::F64) => Value::F64(x),
        (Value::I64(x), ValueKind::F64) => Value::F64(x as f64),
        (Value::Bool(b), ValueKind::F64) => Value::F64(b as u8 as f64),
        (Value::F64(x), ValueKind::I64) if x.is_finite() && x.abs() < 9.2e18 => Value::I64(x.round() as i64),
        (Value::F64(_), ValueKind::I64) => return None,
        (Value::I64(x), ValueKind::I64) => Value::I64(x),
        (Value::Bool(b), ValueKind::I64) => Value::I64(b as i64),
        (Value::Bool(b), ValueKind::Bool) => Value::Bool(b),
        (Value::I64(x), ValueKind::Bool) => Value::Bool(x != 0),
        (Value::F64(x), ValueKind::Bool) => Value::Bool(x != 0.0),
        (Value::Str(s), ValueKind::Str) => Value::Str(s),
        (Value::F64(x), ValueKind::Str) => Value::Str(x.to_string()),
        (Value::I64(x), ValueKind::Str) => Value::Str(x.to_string()),
        (Value::Bool(b), ValueKind::Str) => Value::Str(b.to_string()),
        (Value::Str(s), ValueKind::F64) => Value::F64(s.trim().parse().ok()?),
        (Value::Str(s), ValueKind::I64) => Value::I64(s.trim().parse().ok()?),
        (Value::Str(s), ValueKind::Bool) => match s.trim() {
            "true" | "TRUE" | "True" | "1" | "on" => Value::Bool(true),
            "false" | "FALSE" | "False" | "0" | "off" => Value::Bool(false),
            _ => return None,
        },
    })
}

/// A PLC `REAL` (f32) as the decimal it shows (21.7, not 21.700000762939453):
/// the shortest decimal that reads back as the same f32.
pub fn plc_real(x: f32) -> f64 {
    if !x.is_finite() {
        return x as f64;
    }
    x.to_string().parse().unwrap_or(x as f64)
}

/// A zero of a kind: the value of a bad-quality sample.
pub fn zero(kind: ValueKind) -> Value {
    match kind {
        ValueKind::F64 => Value::F64(0.0),
        ValueKind::I64 => Value::I64(0),
        ValueKind::Bool => Value::Bool(false),
        ValueKind::Str => Value::Str(String::new()),
    }
}

/// Everything a source task gets.
#[derive(Clone)]
pub struct SourceCtx {
    /// The source's configuration.
    pub config: SourceConfig,
    /// Its tags, bound to their series.
    pub tags: Arc<Vec<BoundTag>>,
    /// Where samples go.
    pub sink: Sink,
    /// Its health record.
    pub health: Arc<SourceHealth>,
    /// The store (for events).
    pub store: Arc<Store>,
    /// Turns true when the daemon shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl SourceCtx {
    /// The source id.
    pub fn id(&self) -> &str {
        self.config.id()
    }

    /// Records a comms loss: every tag gets a `quality` sample at `ts` (so a
    /// chart shows the gap), the health says down, and an event is logged.
    pub async fn comms_lost(&self, ts: Timestamp, quality: Quality, reason: &str) {
        self.health.set_state(SourceState::Down, Some(reason.to_string()));
        let bad: Vec<Sample> = self.tags.iter().map(|t| t.bad(ts, quality)).collect();
        if !bad.is_empty() {
            let _ = self.sink.send(bad).await;
        }
        self.event(ts, 2, format!("{}: connection lost: {reason}", self.id()), serde_json::json!({ "reason": reason }));
    }

    /// Records that the connection is back.
    pub fn comms_restored(&self, ts: Timestamp) {
        let was_down = self.health.state() == SourceState::Down;
        self.health.set_state(SourceState::Connected, None);
        if was_down {
            self.event(ts, 0, format!("{}: connection restored", self.id()), serde_json::json!({}));
        }
    }

    fn event(&self, ts: Timestamp, severity: u16, message: String, mut details: serde_json::Value) {
        details["source"] = serde_json::json!(self.id());
        let ev = Event { id: 0, ts, asset: None, kind: EventKind::Comms, severity, message, details };
        if let Err(e) = self.store.events().append(&ev) {
            warn!(error = %e, source = self.id(), "could not write a comms event");
        }
    }

    /// Whether the daemon is shutting down.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps `d`, or returns `Err(Shutdown)` as soon as the daemon stops.
    pub async fn sleep(&mut self, d: Duration) -> Result<(), IngestError> {
        if self.stopping() {
            return Err(IngestError::Shutdown);
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.shutdown.changed() => Err(IngestError::Shutdown),
        }
    }
}

/// Exponential backoff with jitter: 0.5 s doubling to `max`, reset on success.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at 500 ms.
    pub fn new(max: Duration) -> Backoff {
        Backoff { next: Duration::from_millis(500), max }
    }

    /// The delay before the next attempt (±20 % jitter, so many sources do not reconnect in step).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = 0.8 + 0.4 * fastrand_f64();
        d.mul_f64(jitter)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }
}

fn fastrand_f64() -> f64 {
    // Jitter only: the low bits of the clock are random enough and need no dependency.
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (n % 1000) as f64 / 1000.0
}

/// Binds each configured tag of `source` to its series.
pub fn bind_tags(config: &Config, store: &Store, source: &str) -> Result<Vec<BoundTag>, StoreError> {
    bind(store, config.tags.iter().filter(|t| t.source.as_deref() == Some(source)).collect())
}

/// Binds every configured tag to its series, in config order.
pub fn bind_all_tags(config: &Config, store: &Store) -> Result<Vec<BoundTag>, StoreError> {
    bind(store, config.tags.iter().collect())
}

fn bind(store: &Store, tags: Vec<&TagConfig>) -> Result<Vec<BoundTag>, StoreError> {
    let keys: Vec<_> = tags.iter().map(|t| (SeriesKey::new(t.name.clone()), t.value_type)).collect();
    let ids = store.resolve(&keys)?;
    Ok(tags.into_iter().zip(ids).map(|(t, series)| BoundTag { tag: t.clone(), series }).collect())
}

/// The protocol drivers: a source task runs until shutdown (Ok) or until its
/// connection cannot be kept (Err: the supervisor records it and restarts it
/// after a backoff).
async fn run_source(ctx: SourceCtx) -> Result<(), IngestError> {
    match &ctx.config {
        SourceConfig::OpcUa(_) => opcua::run(ctx).await,
        SourceConfig::Modbus(_) => modbus::run(ctx).await,
        SourceConfig::Mqtt(_) => mqtt::run(ctx).await,
    }
}

/// Starts every configured source under supervision. Returns the health
/// registry and the tasks (they end when `shutdown` turns true).
pub fn supervise(
    config: &Config,
    store: Arc<Store>,
    sink: Sink,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StoreError> {
    let mut tasks = Vec::new();
    for source in &config.sources {
        let tags = Arc::new(bind_tags(config, &store, source.id())?);
        let h = health.register(source.id(), source.kind(), tags.len());
        let ctx = SourceCtx {
            config: source.clone(),
            sink: sink.for_source(h.clone()).with_deadband(&tags, source_deadband(source)),
            tags,
            health: h,
            store: store.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.push(tokio::spawn(supervise_one(ctx)));
    }
    Ok(tasks)
}

/// A source-wide deadband for tags without their own.
fn source_deadband(source: &SourceConfig) -> Option<f64> {
    match source {
        SourceConfig::OpcUa(c) => c.deadband,
        _ => None,
    }
}

async fn supervise_one(mut ctx: SourceCtx) {
    let mut backoff = Backoff::new(Duration::from_secs(30));
    info!(source = ctx.id(), kind = %ctx.config.kind(), tags = ctx.tags.len(), "source starting");
    loop {
        ctx.health.set_state(SourceState::Connecting, None);
        let run = tokio::spawn(run_source(ctx.clone()));
        let result = match run.await {
            Ok(r) => r,
            Err(e) => Err(IngestError::Protocol(format!("source task failed: {e}"))),
        };
        match result {
            Ok(()) | Err(IngestError::Shutdown) => break,
            Err(e) => {
                let reason = e.to_string();
                warn!(source = ctx.id(), error = %reason, "source stopped; restarting after a backoff");
                ctx.health.count_reconnect();
                ctx.comms_lost(crate::domain::now_ns(), Quality::BAD_COMMS, &reason).await;
                let delay = backoff.next_delay();
                if ctx.sleep(delay).await.is_err() {
                    break;
                }
            }
        }
    }
    ctx.health.set_state(SourceState::Stopped, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_to_the_series_kind_or_not_at_all() {
        assert_eq!(coerce(Value::I64(3), ValueKind::F64), Some(Value::F64(3.0)));
        assert_eq!(coerce(Value::F64(2.6), ValueKind::I64), Some(Value::I64(3)));
        assert_eq!(coerce(Value::Str(" 4.5 ".into()), ValueKind::F64), Some(Value::F64(4.5)));
        assert_eq!(coerce(Value::Str("off".into()), ValueKind::Bool), Some(Value::Bool(false)));
        // Text that is not a number, and floats no integer can hold, do not pass as good data.
        assert_eq!(coerce(Value::Str("n/a".into()), ValueKind::F64), None);
        assert_eq!(coerce(Value::Str("maybe".into()), ValueKind::Bool), None);
        assert_eq!(coerce(Value::F64(f64::NAN), ValueKind::I64), None);
        assert_eq!(coerce(Value::F64(1e30), ValueKind::I64), None);
    }
}
