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

use parking_lot::Mutex;

use super::alarms::AlarmEngine;
use super::detect::{AnomalyKind, SignalDetector, SignalParams};
use super::pca::{PcaDetector, PcaParams, PcaUpdate, Statistic};
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
    /// Time of the first good sample (0: none yet).
    first_ts: i64,
}

/// A tag's detector learns this long from its first sample before it may raise
/// anomalies (a fast tag passes the detector's own sample count in seconds).
pub const LEARNING_NS: i64 = 10 * 60 * 1_000_000_000;

/// Anomalies of one asset's tags that start within this time of the previous
/// one belong to the same episode: one event when it opens, one when it ends.
pub const EPISODE_GAP_NS: i64 = 10 * 60 * 1_000_000_000;

/// The open anomaly episode of an asset.
#[derive(Debug)]
struct Episode {
    started: i64,
    /// Last tag start in it.
    last: i64,
    /// Tag → (highest score, test that gave it).
    tags: Vec<(String, f64, Option<AnomalyKind>)>,
}

impl Episode {
    fn add(&mut self, tag: &str, score: f64, kind: Option<AnomalyKind>, ts: i64) {
        self.last = self.last.max(ts);
        match self.tags.iter_mut().find(|t| t.0 == tag) {
            Some(t) if score > t.1 => {
                t.1 = score;
                t.2 = kind;
            }
            Some(_) => {}
            None => self.tags.push((tag.to_string(), score, kind)),
        }
    }

    /// The event that closes the episode, with every tag's share of the scores.
    fn closing(&self, asset: &str) -> Event {
        let mut tags = self.tags.clone();
        tags.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = tags.iter().map(|t| t.1).sum::<f64>().max(1e-12);
        let contributions: Vec<serde_json::Value> = tags
            .iter()
            .map(|(t, sc, k)| serde_json::json!({ "tag": t, "share": sc / total, "score": sc, "test": k }))
            .collect();
        let most: Vec<String> =
            tags.iter().take(3).map(|(t, sc, _)| format!("{t} {:.0}%", 100.0 * sc / total)).collect();
        let minutes = (self.last - self.started) as f64 / 60e9;
        Event {
            id: 0,
            ts: self.last,
            asset: Some(asset.to_string()),
            kind: EventKind::Anomaly,
            severity: 300,
            message: format!(
                "{asset}: anomaly episode over after {minutes:.1} min on {} tag(s); most: {}",
                tags.len(),
                most.join(", ")
            ),
            details: serde_json::json!({
                "phase": "ended",
                "started": self.started,
                "last": self.last,
                "score": tags.first().map(|t| t.1),
                "contributions": contributions,
            }),
        }
    }
}

/// Seconds between the rows an asset group's multivariate detector sees: each row
/// holds the latest value of every numeric tag of the asset at that moment.
pub const GROUP_ROW_INTERVAL_NS: i64 = 10_000_000_000;

/// Numeric tags an asset needs for a multivariate detector.
const GROUP_MIN_TAGS: usize = 3;

/// The multivariate detector of one asset: rows of sample-and-hold values.
#[derive(Debug)]
struct AssetGroup {
    asset: String,
    /// Tag name per column.
    tags: Vec<String>,
    held: Vec<Option<f64>>,
    /// Start of the row being filled (ns, a multiple of the interval); 0 before the first sample.
    row_ts: i64,
    detector: PcaDetector,
}

impl AssetGroup {
    /// Holds `x` in `col` at `ts`; returns an anomaly event when the rows completed
    /// before `ts` raise one.
    fn on_value(&mut self, col: usize, ts: i64, x: f64) -> Option<Event> {
        let slot = ts - ts.rem_euclid(GROUP_ROW_INTERVAL_NS);
        let mut event = None;
        if self.row_ts == 0 {
            self.row_ts = slot;
        } else if slot > self.row_ts {
            // Close the row (one row per interval, even when several passed without samples).
            if let PcaUpdate::Scored { anomaly: Some(a), .. } = self.detector.update(self.row_ts, &self.held) {
                event = Some(group_event(self, a));
            }
            self.row_ts = slot;
        }
        if let Some(h) = self.held.get_mut(col) {
            *h = Some(x);
        }
        event
    }
}

fn group_event(g: &AssetGroup, a: super::pca::PcaAnomaly) -> Event {
    let s = &a.score;
    let (stat, value, limit) = match s.statistic {
        Statistic::T2 => ("T²", s.t2, s.t2_limit),
        Statistic::Spe => ("SPE", s.spe, s.spe_limit),
    };
    let contributions: Vec<serde_json::Value> = s
        .contributions
        .iter()
        .take(5)
        .filter_map(|&(c, share)| g.tags.get(c).map(|t| serde_json::json!({ "tag": t, "share": share })))
        .collect();
    let named: Vec<String> = s
        .contributions
        .iter()
        .take(3)
        .filter_map(|&(c, share)| g.tags.get(c).map(|t| format!("{t} {:.0}%", share * 100.0)))
        .collect();
    Event {
        id: 0,
        ts: a.started,
        asset: Some(g.asset.clone()),
        kind: EventKind::Anomaly,
        severity: if value >= 3.0 * limit { 700 } else { 500 },
        message: format!(
            "{}: the tags no longer move together as usual ({stat} {value:.1}, limit {limit:.1}); most: {}",
            g.asset,
            named.join(", ")
        ),
        details: serde_json::json!({
            "test": "multivariate",
            "statistic": stat,
            "score": value / limit.max(1e-12),
            "value": value,
            "limit": limit,
            "started": a.started,
            "contributions": contributions,
        }),
    }
}

/// The detectors of every numeric tag, the multivariate detector of every asset
/// with enough numeric tags, and the alarm engine; driven by committed samples
/// (and a clock for the alarms' delays), so the daemon runs it live and an
/// offline replay of a stored range runs the same code.
#[derive(Debug)]
pub struct Analytics {
    watched: HashMap<SeriesId, Watched>,
    groups: Vec<AssetGroup>,
    /// Series → (group, column).
    group_of: HashMap<SeriesId, (usize, usize)>,
    alarms: Option<Arc<Mutex<AlarmEngine>>>,
    /// Open anomaly episode per asset.
    episodes: HashMap<String, Episode>,
    /// Machine state per asset (state-change events).
    line_state: Option<super::state::LineState>,
}

impl Analytics {
    /// A detector with `params` on every `f64` tag, a PCA detector per asset with at
    /// least three of them, and `alarms` when given.
    pub fn new(tags: &[BoundTag], params: SignalParams, alarms: Option<Arc<Mutex<AlarmEngine>>>) -> Analytics {
        let mut by_asset: Vec<(String, Vec<&BoundTag>)> = Vec::new();
        for t in tags.iter().filter(|t| t.tag.value_type == ValueKind::F64) {
            match by_asset.iter_mut().find(|(a, _)| *a == t.tag.asset) {
                Some((_, v)) => v.push(t),
                None => by_asset.push((t.tag.asset.clone(), vec![t])),
            }
        }
        let mut groups = Vec::new();
        let mut group_of = HashMap::new();
        for (asset, members) in by_asset.into_iter().filter(|(_, m)| m.len() >= GROUP_MIN_TAGS) {
            let Ok(detector) = PcaDetector::new(members.len(), PcaParams::default()) else {
                warn!(asset = %asset, tags = members.len(), "No multivariate detector for this asset");
                continue;
            };
            for (c, t) in members.iter().enumerate() {
                group_of.insert(t.series, (groups.len(), c));
            }
            groups.push(AssetGroup {
                asset,
                tags: members.iter().map(|t| t.tag.name.clone()).collect(),
                held: vec![None; members.len()],
                row_ts: 0,
                detector,
            });
        }
        let watched = tags
            .iter()
            .filter(|t| t.tag.value_type == ValueKind::F64)
            .map(|t| {
                let w = Watched {
                    tag: t.tag.name.clone(),
                    asset: t.tag.asset.clone(),
                    unit: t.tag.unit.clone(),
                    detector: SignalDetector::new(params),
                    first_ts: 0,
                };
                (t.series, w)
            })
            .collect();
        Analytics { watched, groups, group_of, alarms, episodes: HashMap::new(), line_state: None }
    }

    /// The stage as the daemon runs it for `config`: detectors on `tags` with the default
    /// parameters, the alarm engine (returned too, for the alarm API) and machine states.
    pub fn for_config(config: &crate::config::Config, tags: &[BoundTag]) -> (Analytics, Arc<Mutex<AlarmEngine>>) {
        let alarms = Arc::new(Mutex::new(AlarmEngine::for_bound_tags(config, tags)));
        let series_of = |name: &str| tags.iter().find(|t| t.tag.name == name).map(|t| t.series);
        let analytics = Analytics::new(tags, SignalParams::default(), Some(alarms.clone()))
            .with_line_state(super::state::LineState::new(config, series_of));
        (analytics, alarms)
    }

    /// Also tracks the machine state of every asset that has a `state` config,
    /// storing each transition as a `state_change` event.
    pub fn with_line_state(mut self, line_state: super::state::LineState) -> Analytics {
        self.line_state = Some(line_state);
        self
    }

    /// Advances the alarms' clock to `now` (on-delays, flatline, shelving expiry).
    pub fn tick(&mut self, now: i64) -> Vec<Event> {
        let mut events = self.alarms.as_ref().map(|a| a.lock().tick(now)).unwrap_or_default();
        self.close_episodes(now, &mut events);
        events
    }

    /// Closes the episodes quiet since `now - EPISODE_GAP_NS`.
    fn close_episodes(&mut self, now: i64, events: &mut Vec<Event>) {
        let done: Vec<String> =
            self.episodes.iter().filter(|(_, e)| now - e.last > EPISODE_GAP_NS).map(|(a, _)| a.clone()).collect();
        for asset in done {
            if let Some(e) = self.episodes.remove(&asset) {
                events.push(e.closing(&asset));
            }
        }
    }

    /// Number of tags watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Learns a batch of committed samples (each series in time order) and returns
    /// the events it gives: alarm transitions; an `anomaly` event where an asset's
    /// anomaly episode opens (the tag that opened it) and one when it ends (every
    /// tag that took part, with its share); multivariate anomalies per asset.
    /// Samples of bad quality are not learnt (a comms loss is not an anomaly of the process).
    pub fn on_batch(&mut self, samples: &[Sample]) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(ls) = &mut self.line_state {
            for s in samples {
                events.extend(ls.on_sample(s));
            }
        }
        if let Some(a) = &self.alarms {
            let mut engine = a.lock();
            for s in samples {
                events.extend(engine.on_sample(s));
            }
        }
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
            if w.first_ts == 0 {
                w.first_ts = s.ts;
            }
            let before = w.detector.baseline();
            let v = w.detector.update(x);
            if v.start && s.ts - w.first_ts >= LEARNING_NS {
                match self.episodes.get_mut(&w.asset) {
                    Some(e) if s.ts - e.last <= EPISODE_GAP_NS => e.add(&w.tag, v.score, v.kind, s.ts),
                    _ => {
                        if let Some(old) = self.episodes.remove(&w.asset) {
                            events.push(old.closing(&w.asset));
                        }
                        let mut e = Episode { started: s.ts, last: s.ts, tags: Vec::new() };
                        e.add(&w.tag, v.score, v.kind, s.ts);
                        self.episodes.insert(w.asset.clone(), e);
                        events.push(anomaly_event(w, s.ts, x, v.score, v.kind, before));
                    }
                }
            }
            if let Some(&(g, c)) = self.group_of.get(&s.series) {
                events.extend(self.groups[g].on_value(c, s.ts, x));
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
        Some(AnomalyKind::Seasonal) => "is unusual for this point of its cycle",
        Some(AnomalyKind::Sequence) => "changed shape (many sequences not seen before)",
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
            "phase": "started",
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
