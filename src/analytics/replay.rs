//! The analytics stage over history already in the store: a backfill or an
//! `import` bypasses the daemon's live stage, so its alarms, anomalies and machine
//! state changes are found afterwards by running the very same [`Analytics`] over
//! the stored range, one simulated second at a time, and appending the events.

use crate::analytics::stage::Analytics;
use crate::config::Config;
use crate::domain::{Event, Sample, Timestamp};
use crate::store::Store;

const SECOND: i64 = 1_000_000_000;
/// Samples are read and merged in windows of this length.
const CHUNK: i64 = 10 * 60 * SECOND;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The event log refused the events.
    #[error(transparent)]
    Events(#[from] crate::store::events::EventLogError),
}

/// What a replay found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplayStats {
    /// Samples analysed.
    pub samples: u64,
    /// Events appended, by kind name.
    pub events: std::collections::BTreeMap<String, u64>,
}

/// Runs the analytics of `config` over the store's samples in `[from, to)` as the
/// daemon would have live (each second's samples as one batch, then the alarm
/// clock ticked), appends every event to the event log and returns the counts.
/// `progress(fraction)` is called after each window.
pub fn replay(
    store: &Store,
    config: &Config,
    from: Timestamp,
    to: Timestamp,
    mut progress: impl FnMut(f64),
) -> Result<ReplayStats, ReplayError> {
    let tags = crate::ingest::bind_all_tags(config, store)?;
    let (mut analytics, _) = Analytics::for_config(config, &tags);
    let mut stats = ReplayStats::default();
    let mut window_start = from;
    let mut second = from - from.rem_euclid(SECOND) + SECOND;
    while window_start < to {
        let window_end = (window_start + CHUNK).min(to);
        let mut samples: Vec<Sample> = Vec::new();
        for t in &tags {
            let p = store.range(t.series, window_start, window_end)?;
            samples.extend((0..p.len()).map(|i| Sample {
                series: t.series,
                ts: p.ts[i],
                value: p.values.get(i),
                quality: p.quality_at(i),
            }));
        }
        samples.sort_by_key(|s| s.ts);
        stats.samples += samples.len() as u64;
        let mut events: Vec<Event> = Vec::new();
        let mut batch_start = 0;
        for (i, s) in samples.iter().enumerate() {
            while s.ts >= second {
                events.extend(analytics.on_batch(&samples[batch_start..i]));
                batch_start = i;
                events.extend(analytics.tick(second));
                second += SECOND;
            }
        }
        events.extend(analytics.on_batch(&samples[batch_start..]));
        while second <= window_end {
            events.extend(analytics.tick(second));
            second += SECOND;
        }
        for e in &events {
            *stats.events.entry(e.kind.as_str().to_string()).or_default() += 1;
        }
        if !events.is_empty() {
            store.events().append_many(&events)?;
        }
        window_start = window_end;
        progress((window_start - from) as f64 / (to - from).max(1) as f64);
    }
    Ok(stats)
}
